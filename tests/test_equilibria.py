"""Equilibria, fixed points, linearization, step-size bounds, linear modes, manifolds.

References are derived by hand in each test (closed-form equilibria and
characteristic polynomials solved with numpy, scipy's expm, exact invariant curves).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.linalg
from scipy.integrate import solve_ivp

import dynjax
from dynjax import RESULTS, Stability
from dynjax.systems import Henon, Linear, Logistic, Lorenz


def _name(lin):
    return Stability[lin.stability]


# ---------------------------------------------------------------- Lorenz (acc. 1)


def _lorenz_charpoly_roots(sigma, rho, beta, at_origin):
    if at_origin:
        # det(J - l I) = -(l + beta) (l^2 + (sigma + 1) l + sigma (1 - rho))
        quad = np.roots([1.0, sigma + 1.0, sigma * (1.0 - rho)])
        return np.concatenate([quad, [-beta]])
    # l^3 + (sigma + beta + 1) l^2 + beta (sigma + rho) l + 2 sigma beta (rho - 1)
    return np.roots(
        [1.0, sigma + beta + 1.0, beta * (sigma + rho), 2 * sigma * beta * (rho - 1)]
    )


def _sorted(z):
    z = np.asarray(z)
    return z[np.lexsort((np.round(z.imag, 8), np.round(z.real, 8)))]


@pytest.fixture(scope="module")
def lorenz_guesses():
    return jax.random.uniform(
        jax.random.key(0), (1000, 3), minval=-30.0, maxval=30.0, dtype=jnp.float64
    )


def test_lorenz_rho28_all_equilibria_and_classes(lorenz_guesses):
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0
    lorenz = Lorenz(sigma=sigma, rho=rho, beta=beta)
    eq = dynjax.find_equilibria(lorenz, lorenz_guesses)
    assert eq.result == RESULTS.successful
    assert int(eq.count) == 3
    c = np.sqrt(beta * (rho - 1))
    expected = np.array([[0, 0, 0], [c, c, rho - 1], [-c, -c, rho - 1]])
    found = eq.unique
    for e in expected:
        assert np.min(np.max(np.abs(found - e), axis=1)) < 1e-9
    assert np.all(np.asarray(eq.residuals)[np.asarray(eq.converged)] < 1e-8)
    # every converged guess is assigned to one of the three points
    idx = np.asarray(eq.index)[np.asarray(eq.converged)]
    assert set(idx.tolist()) == {0, 1, 2}

    lin0 = dynjax.linearize(lorenz, jnp.zeros(3))
    assert _name(lin0) == "saddle"
    assert (int(lin0.n_unstable), int(lin0.n_stable)) == (1, 2)
    np.testing.assert_allclose(
        _sorted(lin0.eigenvalues),
        _sorted(_lorenz_charpoly_roots(sigma, rho, beta, True)),
        rtol=1e-10,
    )
    for e in expected[1:]:
        lin = dynjax.linearize(lorenz, jnp.asarray(e))
        assert _name(lin) == "saddle-focus"
        assert int(lin.n_unstable) == 2 and bool(lin.is_hyperbolic)
        np.testing.assert_allclose(
            _sorted(lin.eigenvalues),
            _sorted(_lorenz_charpoly_roots(sigma, rho, beta, False)),
            rtol=1e-10,
        )


def test_linearize_vmap_over_points_and_parameters():
    lorenz = Lorenz()
    c = np.sqrt(8.0 / 3.0 * 27.0)
    pts = jnp.array([[0.0, 0.0, 0.0], [c, c, 27.0], [-c, -c, 27.0]])
    batched = eqx.filter_vmap(lambda p: dynjax.linearize(lorenz, p))(pts)
    for k in range(3):
        single = dynjax.linearize(lorenz, pts[k])
        np.testing.assert_allclose(
            batched.eigenvalues[k], single.eigenvalues, rtol=1e-12
        )
        assert int(batched.stability._value[k]) == int(single.stability._value)
    # over a parameter: the origin loses stability at rho = 1 (pitchfork)
    rhos = jnp.array([0.5, 0.9, 1.1, 2.0])
    n_unstable = jax.vmap(
        lambda r: dynjax.linearize(Lorenz(rho=r), jnp.zeros(3)).n_unstable
    )(rhos)
    np.testing.assert_array_equal(n_unstable, [0, 0, 1, 1])


def test_lorenz_rho15_stable_and_rho05_node(lorenz_guesses):
    lorenz = Lorenz(rho=15.0)
    eq = dynjax.find_equilibria(lorenz, lorenz_guesses[:200])
    assert int(eq.count) == 3
    c = np.sqrt(8.0 / 3.0 * 14.0)
    lin = dynjax.linearize(lorenz, jnp.array([c, c, 14.0]))
    assert _name(lin) == "stable focus"
    assert int(lin.n_unstable) == 0
    np.testing.assert_allclose(
        _sorted(lin.eigenvalues),
        _sorted(_lorenz_charpoly_roots(10.0, 15.0, 8.0 / 3.0, False)),
        rtol=1e-10,
    )
    assert np.all(np.real(_lorenz_charpoly_roots(10.0, 15.0, 8.0 / 3.0, False)) < 0)

    lorenz = Lorenz(rho=0.5)
    eq = dynjax.find_equilibria(lorenz, lorenz_guesses[:200])
    assert int(eq.count) == 1
    np.testing.assert_allclose(eq.unique[0], 0.0, atol=1e-12)
    lin = dynjax.linearize(lorenz, jnp.zeros(3))
    assert _name(lin) == "stable node"
    np.testing.assert_allclose(
        _sorted(lin.eigenvalues),
        _sorted(_lorenz_charpoly_roots(10.0, 0.5, 8.0 / 3.0, True)),
        rtol=1e-10,
    )


def test_find_equilibria_jit_vmap_no_retrace(lorenz_guesses):
    # Same shapes, new values: the compiled solve is reused.
    counter = {"n": 0}

    def f(t, x, p):
        counter["n"] += 1
        return jnp.stack(
            [p * (x[1] - x[0]), x[0] * (28.0 - x[2]) - x[1], x[0] * x[1] - 8 / 3 * x[2]]
        )

    flow = dynjax.Flow(f, 10.0, d=3)
    dynjax.find_equilibria(flow, lorenz_guesses[:50])
    n = counter["n"]
    flow2 = eqx.tree_at(lambda s: s.params, flow, jnp.asarray(12.0))
    eq = dynjax.find_equilibria(flow2, lorenz_guesses[50:100])
    assert counter["n"] == n  # no retrace
    assert int(eq.count) == 3


# ------------------------------------------------------------------ maps (acc. 2)


def test_henon_fixed_points_closed_form_and_eigenvalues():
    a, b = 1.4, 0.3
    henon = Henon(a=a, b=b)
    guesses = jax.random.uniform(jax.random.key(1), (64, 2), minval=-2, maxval=2)
    eq = dynjax.find_equilibria(henon, guesses)
    assert int(eq.count) == 2
    xs = (-(1 - b) + np.array([1.0, -1.0]) * np.sqrt((1 - b) ** 2 + 4 * a)) / (2 * a)
    expected = np.stack([xs, b * xs], axis=1)
    found = eq.unique[np.argsort(-eq.unique[:, 0])]
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-14)
    for x, y in expected:
        lin = dynjax.linearize(henon, jnp.array([x, y]))
        # DF = [[-2 a x, 1], [b, 0]]: l^2 + 2 a x l - b = 0
        roots = np.roots([1.0, 2 * a * x, -b])
        np.testing.assert_allclose(_sorted(lin.eigenvalues), _sorted(roots), rtol=1e-12)
        assert _name(lin) == "saddle"
        assert bool(lin.is_map)


def test_logistic_period_two_closed_form():
    r = 3.2
    logistic = Logistic(r=r)
    guesses = jnp.linspace(0.01, 0.99, 40)[:, None]
    eq = dynjax.find_equilibria(logistic, guesses, period=2)
    pts = eq.unique[:, 0]
    periods = np.asarray(eq.minimal_period)[: int(eq.count)]
    p2 = np.sort(pts[periods == 2])
    expected = np.sort(
        (r + 1 + np.array([-1, 1]) * np.sqrt((r + 1) * (r - 3))) / (2 * r)
    )
    np.testing.assert_allclose(p2, expected, rtol=1e-12)
    p1 = np.sort(pts[periods == 1])
    np.testing.assert_allclose(p1, [0.0, 1 - 1 / r], atol=1e-12)
    # multiplier of the 2-cycle: F'(p) F'(q) = -r^2 + 2 r + 4 = 0.16
    lin = dynjax.linearize(logistic, jnp.array([p2[0]]), period=2)
    np.testing.assert_allclose(
        np.real(lin.eigenvalues[0]), -(r**2) + 2 * r + 4, rtol=1e-10
    )
    assert _name(lin) == "stable node"


def test_map_classes_unit_circle():
    def rot(th, rad):
        return rad * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])

    cases = {
        "stable focus": rot(0.7, 0.9),
        "unstable focus": rot(0.7, 1.1),
        "center": rot(0.7, 1.0),
        "stable node": np.diag([0.5, -0.2]),
        "saddle": np.diag([2.0, 0.5]),
        "non-hyperbolic": np.diag([1.0, 0.5]),
    }
    for name, A in cases.items():
        lin = dynjax.linearize(dynjax.systems.LinearMap(A), jnp.zeros(2))
        assert _name(lin) == name, name


def test_flow_classes_planar():
    cases = {
        "stable node": [[-1.0, 0.0], [0.0, -3.0]],
        "unstable node": [[1.0, 0.0], [1.0, 3.0]],
        "stable focus": [[-0.5, 2.0], [-2.0, -0.5]],
        "unstable focus": [[0.5, 2.0], [-2.0, 0.5]],
        "saddle": [[1.0, 0.0], [0.0, -1.0]],
        "center": [[0.0, 1.0], [-1.0, 0.0]],
        "non-hyperbolic": [[0.0, 0.0], [0.0, -1.0]],
    }
    for name, A in cases.items():
        lin = dynjax.linearize(Linear(np.array(A)), jnp.zeros(2))
        assert _name(lin) == name, name
        assert bool(lin.is_hyperbolic) == (name not in ("center", "non-hyperbolic"))
    lin = dynjax.linearize(Linear(np.array(cases["center"])), jnp.zeros(2))
    assert int(lin.n_center) == 2


# ---------------------------------------------------------- high dimension (d=1000)


def test_find_equilibria_d1000_matrix_free():
    N = 1000
    k1, k2 = jax.random.split(jax.random.key(3))
    J = 0.5 * jax.random.normal(k1, (N, N)) / np.sqrt(N)  # ||J|| ~ 1 < contraction
    h0 = jax.random.normal(k2, (N,))
    # Place the (unique, since x -> J tanh(x) + b contracts) equilibrium at h0.
    b = h0 - J @ jnp.tanh(h0)
    net = dynjax.Flow(lambda t, h, p: -h + p[0] @ jnp.tanh(h) + p[1], (J, b), d=N)
    guesses = jax.random.normal(jax.random.key(4), (2, N))
    eq = dynjax.find_equilibria(
        net, guesses, linear_solver=lx.GMRES(rtol=1e-12, atol=1e-12, restart=50)
    )
    assert int(eq.count) == 1
    np.testing.assert_allclose(eq.unique[0], h0, atol=1e-8)
    assert np.all(np.asarray(eq.residuals) < 1e-9)


# ------------------------------------------------------------- bad input (acc. 8)


def test_singular_jacobian_code():
    # x' = x^2, y' = -y: the origin is a degenerate (saddle-node) equilibrium.
    flow = dynjax.Flow(lambda t, x, p: jnp.stack([x[0] ** 2, -x[1]]), d=2)
    guesses = jnp.array([[0.5, 1.0], [-0.3, 2.0]])
    eq = dynjax.find_equilibria(flow, guesses, throw=False)
    assert eq.result == RESULTS.singular_jacobian
    assert bool(jnp.all(eq.results == RESULTS.singular_jacobian))
    with pytest.raises(eqx.EquinoxRuntimeError, match="singular"):
        dynjax.find_equilibria(flow, guesses)


def test_not_converged_code():
    # x' = x^2 + 1 has no real equilibrium.
    flow = dynjax.Flow(lambda t, x, p: x**2 + 1.0, d=1)
    eq = dynjax.find_equilibria(flow, jnp.array([[0.3], [2.0]]), throw=False)
    assert eq.result == RESULTS.not_converged
    assert not bool(jnp.any(eq.converged))
    assert int(eq.count) == 0
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge"):
        dynjax.find_equilibria(flow, jnp.array([[0.3]]))


def test_no_guess_converged_is_not_singular():
    # x' = x^2 + 1 has no real root. From x = 0 the Jacobian 2x vanishes: Newton
    # cannot step, which is a failure to converge, not a degenerate root.
    flow = dynjax.Flow(lambda t, x, p: x**2 + 1.0, d=1)
    guesses = jnp.array([[0.0], [0.3], [-2.0]])
    eq = dynjax.find_equilibria(flow, guesses, throw=False)
    assert eq.result == RESULTS.not_converged
    assert bool(jnp.all(eq.results == RESULTS.not_converged))
    # |x^2 + 1| >= 1 everywhere: the best residual cannot be below 1
    best = float(jnp.min(eq.residuals))
    assert best >= 1.0
    i = int(jnp.argmin(eq.residuals))
    with pytest.raises(eqx.EquinoxRuntimeError) as err:
        dynjax.find_equilibria(flow, guesses)
    msg = str(err.value)
    assert "singular" not in msg
    assert (
        f"No guess converged to an equilibrium: the smallest residual |f(x)| = "
        f"{best:.3g} was reached from guess {i}" in msg
    )
    # A degenerate root (x' = x^2, y' = -y at the origin) is named as such.
    saddle_node = dynjax.Flow(lambda t, x, p: jnp.stack([x[0] ** 2, -x[1]]), d=2)
    with pytest.raises(
        eqx.EquinoxRuntimeError, match="2 of 2 guesses converged, all to degenerate"
    ):
        dynjax.find_equilibria(saddle_node, jnp.array([[0.5, 1.0], [-0.3, 2.0]]))
    # exp(x) + 3 overflows from x = 800: no finite residual to report
    with pytest.raises(eqx.EquinoxRuntimeError, match="diverged to a non-finite"):
        dynjax.find_equilibria(
            dynjax.Map(lambda n, x, p: jnp.exp(x) + 3.0, d=1), jnp.array([[800.0]])
        )
    # under jit the run-time values are unknown: the code's message only
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge"):
        eqx.filter_jit(lambda g: dynjax.find_equilibria(flow, g).points)(guesses)


def test_bad_shapes_and_systems():
    lorenz = Lorenz()
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        dynjax.find_equilibria(lorenz, jnp.zeros(3))
    with pytest.raises(ValueError, match="d=3"):
        dynjax.find_equilibria(lorenz, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="period"):
        dynjax.find_equilibria(lorenz, jnp.zeros((4, 3)), period=2)
    with pytest.raises(ValueError, match="positive int"):
        dynjax.find_equilibria(Henon(), jnp.zeros((4, 2)), period=0)
    driven = dynjax.DrivenMap(lambda x, u, p: jnp.tanh(x + u), d=2)
    with pytest.raises(ValueError, match="driven map"):
        dynjax.find_equilibria(driven, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="driven map"):
        dynjax.linearize(driven, jnp.zeros(2))
    with pytest.raises(ValueError, match="dimension"):
        dynjax.linearize(lorenz, jnp.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        dynjax.find_equilibria(lorenz, jnp.array([[jnp.nan, 0.0, 0.0]]))


# ------------------------------------------------------- max_stable_step (acc. 5)


def _euler_norm(A, h, n):
    flow = Linear(A)
    traj = dynjax.trajectory(
        dynjax.euler_map(flow, h), jnp.ones(A.shape[0]), n_steps=n, throw=False
    )
    return float(jnp.linalg.norm(traj.xs[-1]))


@pytest.mark.parametrize(
    "A, h_expected",
    [
        # real eigenvalues -1, -4 (non-normal): 2 / rho = 0.5
        (np.array([[-1.0, 5.0], [0.0, -4.0]]), 0.5),
        # -1 +- 3i: -2 Re l / |l|^2 = 2 / 10
        (np.array([[-1.0, 3.0], [-3.0, -1.0]]), 0.2),
    ],
)
def test_max_stable_step_iterating(A, h_expected):
    res = dynjax.max_stable_step(Linear(A), jnp.zeros(2))
    np.testing.assert_allclose(res.h_max, h_expected, rtol=1e-12)
    assert _euler_norm(A, 0.99 * float(res.h_max), 20000) < 1e-6
    assert _euler_norm(A, 1.01 * float(res.h_max), 20000) > 1e6


def test_max_learning_rate_quadratic():
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    H = Q @ np.diag([0.3, 1.0, 2.0, 5.0, 8.0]) @ Q.T

    def loss(x, args):
        return 0.5 * x @ H @ x

    eta = float(dynjax.max_learning_rate(loss, jnp.zeros(5)))
    np.testing.assert_allclose(eta, 2 / 8.0, rtol=1e-12)
    grad_flow = Linear(-H)
    np.testing.assert_allclose(
        dynjax.max_stable_step(grad_flow, jnp.zeros(5)).h_max, eta, rtol=1e-12
    )
    for factor, converges in [(0.99, True), (1.01, False)]:
        x = np.ones(5)
        for _ in range(3000):
            x = x - factor * eta * H @ x
        assert (np.linalg.norm(x) < 1e-6) == converges


def test_max_stable_step_errors():
    with pytest.raises(eqx.EquinoxRuntimeError, match="not a stable equilibrium"):
        dynjax.max_stable_step(Linear(np.diag([1.0, -1.0])), jnp.zeros(2))
    res = dynjax.max_stable_step(
        Linear(np.diag([1.0, -1.0])), jnp.zeros(2), throw=False
    )
    assert float(res.h_max) == 0.0
    with pytest.raises(ValueError, match="euler"):
        dynjax.max_stable_step(Linear(-np.eye(2)), jnp.zeros(2), method="rk4")
    with pytest.raises(ValueError, match="takes a flow"):
        dynjax.max_stable_step(Henon(), jnp.zeros(2))


# ------------------------------------------------------------------- linear modes


def test_linear_modes_and_exact_flow():
    A = np.array([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.0], [0.0, 1.0, -3.0]])
    sys_ = Linear(A)
    x0 = jnp.array([1.0, -0.5, 2.0])
    modes = dynjax.linear_modes(sys_, x0)
    # eigenvalues -0.5 +- 2i, -3 (block triangular)
    np.testing.assert_allclose(np.sort(modes.decay_rates), [0.5, 0.5, 3.0], rtol=1e-12)
    np.testing.assert_allclose(np.sort(modes.frequencies), [0.0, 2.0, 2.0], atol=1e-12)
    ts = jnp.linspace(0.0, 3.0, 7)
    exact = np.stack(
        [scipy.linalg.expm(t * A) @ np.asarray(x0) for t in np.asarray(ts)]
    )
    np.testing.assert_allclose(
        dynjax.linear_flow(sys_, x0, ts), exact, rtol=1e-10, atol=1e-13
    )
    np.testing.assert_allclose(
        np.stack([modes.evaluate(t) for t in ts]), exact, rtol=1e-10, atol=1e-13
    )


# ------------------------------------------------------------ manifolds (acc. 6)


def test_planar_saddle_manifolds_exact_curves():
    # x' = x, y' = -y + x^2: W^u = {y = x^2 / 3}, W^s = {x = 0},
    # tangent to (1, 0) and (0, 1).
    flow = dynjax.Flow(lambda t, x, p: jnp.stack([x[0], -x[1] + x[0] ** 2]), d=2)
    wu = dynjax.unstable_manifold(flow, jnp.zeros(2), t_end=17.5, n_points=351)
    b = np.asarray(wu.branches)
    assert np.max(np.abs(b[..., 0])) > 1.0  # grown to a macroscopic size
    np.testing.assert_allclose(b[..., 1], b[..., 0] ** 2 / 3, atol=1e-9, rtol=1e-9)
    np.testing.assert_allclose(np.abs(wu.eigenvector), [1.0, 0.0], atol=1e-14)
    np.testing.assert_allclose(wu.eigenvalue, 1.0, rtol=1e-12)
    assert np.all(np.sign(b[0, 1:, 0]) == 1) and np.all(np.sign(b[1, 1:, 0]) == -1)
    ws = dynjax.stable_manifold(flow, jnp.zeros(2), t_end=17.5, n_points=351)
    s = np.asarray(ws.branches)
    assert np.max(np.abs(s[..., 1])) > 1.0
    np.testing.assert_allclose(s[..., 0], 0.0, atol=1e-12)
    assert float(ws.ts[-1]) < 0


def test_pendulum_saddle_manifolds_tangent_to_eigenvectors():
    b = 0.3
    pend = dynjax.Flow(
        lambda t, x, b: jnp.stack([x[1], -jnp.sin(x[0]) - b * x[1]]), b, d=2
    )
    x_star = jnp.array([np.pi, 0.0])
    # J = [[0, 1], [1, -b]]: eigenvalues l = (-b +- sqrt(b^2 + 4)) / 2, vectors (1, l)
    for grow, sign, t_end in [
        (dynjax.unstable_manifold, 1, 20.0),
        (dynjax.stable_manifold, -1, 16.0),
    ]:
        lam = (-b + sign * np.sqrt(b**2 + 4)) / 2
        v = np.array([1.0, lam]) / np.hypot(1.0, lam)
        m = grow(pend, x_star, t_end=t_end, n_points=1201)
        np.testing.assert_allclose(m.eigenvalue, lam, rtol=1e-12)
        dots = []
        for branch in np.asarray(m.branches):
            # secant from x* to a point at distance ~1e-3: direction error O(1e-3)
            dist = np.linalg.norm(branch - np.asarray(x_star), axis=1)
            assert dist.max() > 1.0
            k = np.argmin(np.abs(dist - 1e-3))
            u = (branch[k] - np.asarray(x_star)) / dist[k]
            dots.append(u @ v)
        # the two branches leave along +v and -v
        np.testing.assert_allclose(np.abs(dots), 1.0, atol=1e-5)
        assert dots[0] * dots[1] < 0


def _dist_to_polyline(q, P):
    a, b = P[:-1], P[1:]
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", q - a, ab) / np.einsum("ij,ij->i", ab, ab), 0, 1)
    return np.min(np.linalg.norm(a + t[:, None] * ab - q, axis=1))


def test_lorenz_origin_unstable_manifold_invariant():
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0
    lorenz = Lorenz()
    wu = dynjax.unstable_manifold(
        lorenz, jnp.zeros(3), t_end=1.6, eps=1e-6, n_points=32001
    )
    # tangent: the unstable eigenvector of the hand-derived Jacobian
    J0 = np.array([[-sigma, sigma, 0], [rho, -1, 0], [0, 0, -beta]])
    w, V = np.linalg.eig(J0)
    v = np.real(V[:, np.argmax(w.real)])
    assert abs(abs(np.asarray(wu.eigenvector) @ v) / np.linalg.norm(v) - 1) < 1e-12
    P = np.asarray(wu.branches[0])
    assert np.linalg.norm(P[-1]) > 10  # reaches the attractor scale

    # Flow points of the curve forward with an independent integrator (scipy):
    # they must land back on the curve.
    def rhs(t, x):
        return [
            sigma * (x[1] - x[0]),
            x[0] * (rho - x[2]) - x[1],
            x[0] * x[1] - beta * x[2],
        ]

    worst = 0.0
    for i in [16000, 20000, 24000, 26000]:
        q = solve_ivp(rhs, (0, 0.2), P[i], method="DOP853", rtol=1e-13, atol=1e-13).y[
            :, -1
        ]
        worst = max(worst, _dist_to_polyline(q, P))
    assert worst < 1e-6


def test_manifold_errors():
    # The Lorenz origin's stable manifold is 2-D.
    with pytest.raises(eqx.EquinoxRuntimeError, match="not one-dimensional"):
        # (same static configuration as the test above: no recompilation)
        dynjax.stable_manifold(Lorenz(), jnp.zeros(3), t_end=1.6, n_points=32001)
    with pytest.raises(ValueError, match="flow"):
        dynjax.unstable_manifold(Henon(), jnp.zeros(2))
    with pytest.raises(ValueError, match="n_points"):
        dynjax.unstable_manifold(Lorenz(), jnp.zeros(3), n_points=1)


# ------------------------------------------------------------------ phase portrait


def test_phase_portrait_marks_classes_and_nullclines():
    import matplotlib
    import matplotlib.contour

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pend = dynjax.Flow(
        lambda t, x, b: jnp.stack([x[1], -jnp.sin(x[0]) - b * x[1]]), 0.3, d=2
    )
    eq = np.array([[0.0, 0.0], [np.pi, 0.0], [-np.pi, 0.0]])
    ax = dynjax.plot.phase_portrait(pend, (-4, 4), (-3, 3), equilibria=eq, n_grid=21)
    labels = ax.get_legend_handles_labels()[1]
    assert "stable focus" in labels and "saddle" in labels
    markers = [ln for ln in ax.lines if ln.get_marker() in ("o", "X")]
    xy = sorted(tuple(np.round(np.ravel(ln.get_xydata()), 6)) for ln in markers)
    assert xy == sorted(tuple(np.round(e, 6)) for e in eq)
    # the y' = 0 nullcline of the pendulum is y = -sin(x) / b: check a contour vertex
    contours = [
        c for c in ax.collections if isinstance(c, matplotlib.contour.ContourSet)
    ]
    assert len(contours) == 2
    x_null, y_null = [
        np.concatenate([p.vertices for p in c.get_paths() if len(p.vertices)])
        for c in contours
    ]
    np.testing.assert_allclose(x_null[:, 1], 0.0, atol=1e-9)  # x' = y = 0
    # y' = -sin(x) - b y vanishes on the contour, up to linear interpolation
    # on the 21-point grid (spacing 0.4): error <= 0.4^2 / 8 * max|f_xx| = 0.02
    assert np.max(np.abs(np.sin(y_null[:, 0]) + 0.3 * y_null[:, 1])) < 0.02
    assert len(y_null) > 20
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="planar"):
        dynjax.plot.phase_portrait(Lorenz(), (-1, 1), (-1, 1))


# ------------------------------------------------------- gradients and float32


def test_equilibrium_gradient_implicit():
    # d x_+ / d rho for C+ = sqrt(beta (rho - 1)): beta / (2 sqrt(beta (rho - 1)))
    g = jnp.array([[8.0, 8.0, 26.0]])

    def x_plus(rho):
        return dynjax.find_equilibria(Lorenz(rho=rho), g).points[0, 0]

    beta = 8.0 / 3.0
    np.testing.assert_allclose(
        jax.grad(x_plus)(28.0), beta / (2 * np.sqrt(beta * 27.0)), rtol=1e-8
    )


def test_float32_runs_and_warns():
    with jax.enable_x64(False):
        guesses = jax.random.uniform(
            jax.random.key(0), (100, 3), jnp.float32, minval=-30, maxval=30
        )
        with pytest.warns(UserWarning, match="float32"):
            eq = dynjax.find_equilibria(Lorenz(), guesses)
        assert eq.points.dtype == jnp.float32
        assert int(eq.count) == 3
        c = np.sqrt(8.0 / 3.0 * 27.0)
        found = eq.unique[np.argsort(eq.unique[:, 0])]
        np.testing.assert_allclose(
            found, [[-c, -c, 27], [0, 0, 0], [c, c, 27]], rtol=1e-5, atol=1e-5
        )
