"""Lyapunov spectra against independently derived values (issue 4, acceptance 1).

References:
- Linear systems: the exponents of x' = A x are the real parts of the eigenvalues
  of A, and of x_{n+1} = A x_n the logs of their moduli (Oseledets 1968; e.g.
  Pikovsky & Politi, "Lyapunov Exponents", CUP 2016, ch. 2). Expected values
  come from `numpy.linalg.eigvals`.
- Lorenz (10, 28, 8/3): (0.9056, 0, -14.5723), J. C. Sprott, "Chaos and
  Time-Series Analysis", OUP 2003, Appendix A; D. Viswanath, PhD thesis, Cornell
  1998 (lambda_1 = 0.9056). The sum equals the constant trace -(sigma + 1 + beta).
- Henon (1.4, 0.3): (0.41922, -1.62319), Sprott 2003, Appendix A; their sum is
  log|det J| = log 0.3 exactly.
- Logistic map r = 4: ln 2 (conjugacy to the tent map; Ulam & von Neumann 1947).
- Arnold cat map: +-ln((3 + sqrt 5)/2), the log-eigenvalues of [[2, 1], [1, 1]].
- Rossler (0.2, 0.2, 5.7): lambda_1 = 0.0714, Sprott 2003, Appendix A.
- Sum of all exponents over a window = (1/T) int tr Df(x(t)) dt along the same
  orbit (Liouville's formula), the trace computed by `dynjax.jacobian` on an
  orbit from `dynjax.trajectory` (diffrax Tsit5), not by the Lyapunov code.
"""

import diffrax as dfx
import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax import systems


LORENZ_REF = np.array([0.9056, 0.0, -14.5723])
HENON_REF = np.array([0.41922, -1.62319])


# One jitted entry per configuration, shared by the tests below (no recompiles
# when only array values such as the matrix A change).
@eqx.filter_jit
def _linear_map_spectrum(A):
    return dynjax.lyapunov_spectrum(
        systems.LinearMap(A), jnp.zeros(A.shape[0]), n_steps=20_000, transient=0
    ).exponents


@eqx.filter_jit
def _linear_flow_spectrum(A):
    return dynjax.lyapunov_spectrum(
        systems.Linear(A),
        jnp.zeros(A.shape[0]),
        dt=0.01,
        t_total=200.0,
        transient=0,
        tangent_warmup=1000,  # 100 time units: alignment error exp(-0.2 * 100)
    ).exponents


@pytest.fixture(scope="module")
def lorenz_full():
    return dynjax.lyapunov_spectrum(
        systems.Lorenz(), jnp.array([1.0, 1.0, 1.0]), dt=0.01, t_total=2000.0
    )


def test_linear_map_non_normal():
    A = jnp.array([[1.5, 2.0, 0.3], [0.0, 0.8, -1.0], [0.2, 0.0, 0.3]])
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(np.asarray(A)))))[::-1]
    np.testing.assert_allclose(_linear_map_spectrum(A), expected, rtol=1e-3)


def test_linear_flow_with_rotation():
    # Non-normal, with a complex pair -0.4 +- 1.5i (normal within its block).
    A = jnp.array(
        [
            [0.3, 1.0, 0.5, 0.0],
            [0.0, -0.4, 1.5, 0.3],
            [0.0, -1.5, -0.4, 0.2],
            [0.0, 0.0, 0.0, -1.2],
        ]
    )
    expected = np.sort(np.linalg.eigvals(np.asarray(A)).real)[::-1]
    np.testing.assert_allclose(_linear_flow_spectrum(A), expected, rtol=1e-3)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(
    entries=st.lists(st.floats(-1.5, 1.5), min_size=9, max_size=9),
)
def test_property_random_linear_maps(entries):
    A = np.array(entries).reshape(3, 3)
    mu = np.linalg.eigvals(A)
    hypothesis.assume(np.all(np.abs(mu) > 0.05))
    logs = np.sort(np.log(np.abs(mu)))[::-1]
    # Well-posed cases: no eigenvalue near 0 or on the unit circle (rtol is
    # relative), and distinct moduli separated (or exactly equal, for a complex
    # pair), so that 20_000 iterations converge to 1e-3.
    hypothesis.assume(np.all(np.abs(mu) > 0.05) and np.all(np.abs(logs) > 0.1))
    gaps = np.abs(np.diff(logs))
    hypothesis.assume(np.all((gaps > 0.05) | (gaps < 1e-12)))
    # A defective A (a Jordan block, e.g. [[a, 0], [1, a]]) grows like n a^n:
    # its exponents converge like log(n) / n, too slowly for 1e-3.
    hypothesis.assume(np.linalg.cond(np.linalg.eig(A)[1]) < 1e6)
    np.testing.assert_allclose(_linear_map_spectrum(jnp.asarray(A)), logs, rtol=1e-3)


@hypothesis.settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.filter_too_much],
)
@hypothesis.given(
    lam=st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3),
    V=st.lists(st.floats(-1.0, 1.0), min_size=9, max_size=9),
)
def test_property_random_linear_flows(lam, V):
    lam = np.sort(np.array(lam))[::-1]
    V = np.array(V).reshape(3, 3) + 2 * np.eye(3)
    hypothesis.assume(np.all(np.abs(np.diff(lam)) > 0.2) and np.all(np.abs(lam) > 0.1))
    hypothesis.assume(np.linalg.cond(V) < 20)
    A = V @ np.diag(lam) @ np.linalg.inv(V)
    expected = np.sort(np.linalg.eigvals(A).real)[::-1]
    np.testing.assert_allclose(
        _linear_flow_spectrum(jnp.asarray(A)), expected, rtol=1e-3
    )


@pytest.mark.slow
def test_lorenz_reference(lorenz_full):
    lam = np.asarray(lorenz_full.exponents)
    assert abs(lam[0] - LORENZ_REF[0]) < 0.01
    assert abs(lam[1] - LORENZ_REF[1]) < 0.005
    assert abs(lam[2] - LORENZ_REF[2]) < 0.02
    sigma, beta = 10.0, 8.0 / 3.0
    assert abs(lam.sum() + (sigma + 1 + beta)) < 1e-3
    assert lorenz_full.result == dynjax.RESULTS.successful
    # history: the running estimate, last row is the answer
    np.testing.assert_allclose(lorenz_full.history[-1], lam)
    # 1000 rows evenly spaced over the 20_000 QR blocks (every 20th block)
    assert lorenz_full.history.shape == (1000, 3)
    np.testing.assert_allclose(
        lorenz_full.times, 0.01 * 10 * 20 * np.arange(1, 1001), rtol=1e-12
    )


def test_lorenz_k_less_than_d(lorenz_full):
    # Same orbit, fewer tangents: the leading exponents agree (the estimates
    # differ only by the O(1/T) memory of the initial tangent block).
    x0 = jnp.array([1.0, 1.0, 1.0])
    for k in (1, 2):
        res = dynjax.lyapunov_spectrum(
            systems.Lorenz(), x0, k=k, dt=0.01, t_total=2000.0
        )
        np.testing.assert_allclose(res.exponents, lorenz_full.exponents[:k], atol=2e-3)


def test_henon_and_max_lyapunov():
    henon = systems.Henon()
    res = dynjax.lyapunov_spectrum(henon, henon.default_x0(), n_steps=200_000)
    np.testing.assert_allclose(res.exponents, HENON_REF, atol=3e-3)
    # the sum is log|det J| = log b exactly at every step
    np.testing.assert_allclose(res.exponents.sum(), np.log(0.3), rtol=1e-9)
    top = dynjax.max_lyapunov(henon, henon.default_x0(), n_steps=200_000)
    assert top.exponents.shape == (1,)
    assert abs(top.exponents[0] - HENON_REF[0]) < 3e-3


def test_logistic_r4_and_bits():
    res = dynjax.lyapunov_spectrum(
        systems.Logistic(r=4.0), jnp.array([0.3]), n_steps=200_000
    )
    assert abs(res.exponents[0] - np.log(2.0)) < 3e-3
    bits = dynjax.lyapunov_spectrum(
        systems.Logistic(r=4.0), jnp.array([0.3]), n_steps=200_000, base=2
    )
    # 1 bit per iteration (the doubling map in disguise)
    assert abs(bits.exponents[0] - 1.0) < 3e-3 / np.log(2)


def test_cat_map():
    cat = systems.CatMap()
    res = dynjax.lyapunov_spectrum(cat, cat.default_x0(), n_steps=2000)
    phi2 = np.log((3 + np.sqrt(5)) / 2)
    np.testing.assert_allclose(res.exponents, [phi2, -phi2], atol=1e-6)


@pytest.mark.slow
def test_rossler_largest():
    res = dynjax.max_lyapunov(
        systems.Rossler(),
        jnp.array([1.0, 1.0, 0.0]),
        dt=0.05,
        t_total=20_000.0,
        interval=4,
        transient=100.0,
    )
    assert abs(res.exponents[0] - 0.0714) < 5e-3


def _trace_average(system, x0, t1):
    """(1/T) int_0^T tr Df(x(t)) dt on a Tsit5 orbit, by the trapezoid rule."""
    ts = jnp.linspace(0.0, t1, 4001)
    traj = dynjax.trajectory(system, x0, t1=t1, ts=ts)
    traces = jax.vmap(lambda x: jnp.trace(dynjax.jacobian(system, x)))(traj.xs)
    return float(jnp.trapezoid(traces, ts) / t1)


@pytest.mark.parametrize(
    "name",
    ["rossler", "lorenz", "rate_network"],
)
def test_sum_equals_trace_average(name):
    # Liouville: sum_i lambda_i(T) = (1/T) int tr Df dt on the same orbit, for any
    # window T, so a short window (before the RK4 and Tsit5 orbits separate) gives
    # a sharp test of the whole tangent + QR machinery.
    if name == "rossler":
        system, x0, t1 = systems.Rossler(), jnp.array([-3.0, 2.0, 0.05]), 40.0
    elif name == "lorenz":
        system, x0, t1 = systems.Lorenz(), jnp.array([-5.0, -6.0, 20.0]), 5.0
    else:
        system = systems.RandomRateNetwork(12, 2.0, key=jax.random.key(3))
        x0, t1 = system.default_x0() * 10, 20.0
    res = dynjax.lyapunov_spectrum(
        system, x0, dt=0.005, t_total=t1, transient=0.0, tangent_warmup=0, interval=5
    )
    expected = _trace_average(system, x0, t1)
    np.testing.assert_allclose(float(res.exponents.sum()), expected, rtol=1e-3)


def test_default_method_rule():
    # The documented default: the Jacobian method for d <= 4 with interval >= 4,
    # matrix-free otherwise (maps re-orthonormalized every step). The rule only
    # picks an ordering, so each default must equal the explicit choice exactly.
    kw = dict(n_steps=200, tangent_warmup=0)
    flow, x0 = systems.Lorenz(), jnp.array([-5.0, -6.0, 20.0])
    for method, system, x, extra in (
        ("jacobian", flow, x0, dict(transient=0.0)),
        ("matrix-free", systems.Henon(), jnp.zeros(2), dict(transient=0)),
        ("matrix-free", flow, x0, dict(transient=0.0, interval=2)),
    ):
        options = {**kw, **extra}
        default = dynjax.lyapunov_spectrum(system, x, **options)
        explicit = dynjax.lyapunov_spectrum(system, x, method=method, **options)
        np.testing.assert_array_equal(default.exponents, explicit.exponents)
    # Under vmap the batch vectorizes the matrix-free steps: it is the default.
    xs = jnp.stack([x0, x0 + 1.0])

    def batch(method):
        def one(x):
            options = dict(transient=0.0, method=method, **kw)
            return dynjax.lyapunov_spectrum(flow, x, **options).exponents

        return jax.vmap(one)(xs)

    np.testing.assert_array_equal(batch(None), batch("matrix-free"))


def test_diffrax_solver_and_jacobian_method_agree():
    # The tangent of a Runge-Kutta step is the same scheme on the variational
    # equation, so the dense-Jacobian ordering must agree with the matrix-free one
    # to rounding; a diffrax solver (Tsit5, 5th order) agrees to discretization
    # error over a window short enough that the two orbits stay together.
    x0 = jnp.array([-5.0, -6.0, 20.0])
    kw = dict(dt=0.01, t_total=5.0, transient=0.0, tangent_warmup=0)
    a = dynjax.lyapunov_spectrum(systems.Lorenz(), x0, method="matrix-free", **kw)
    b = dynjax.lyapunov_spectrum(systems.Lorenz(), x0, method="jacobian", **kw)
    c = dynjax.lyapunov_spectrum(systems.Lorenz(), x0, solver=dfx.Tsit5(), **kw)
    np.testing.assert_allclose(a.exponents, b.exponents, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.exponents, c.exponents, atol=2e-3)
    # the Liouville identity for each
    for r in (a, b, c):
        assert abs(float(r.exponents.sum()) + 13.0 + 2.0 / 3.0) < 1e-4


def test_driven_linear_map_ignores_inputs():
    # x' = A x + B u: the tangent dynamics is A whatever the input.
    A = jnp.array([[0.9, 0.4], [-0.3, 0.5]])
    B = jnp.array([[1.0], [0.5]])
    system = dynjax.DrivenMap(lambda x, u, p: p["A"] @ x + p["B"] @ u, {"A": A, "B": B})
    u = jax.random.normal(jax.random.key(0), (5000, 1))
    res = dynjax.lyapunov_spectrum(system, jnp.zeros(2), inputs=u, tangent_warmup=100)
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(np.asarray(A)))))[::-1]
    np.testing.assert_allclose(res.exponents, expected, rtol=1e-3)
    dense = dynjax.lyapunov_spectrum(
        system, jnp.zeros(2), inputs=u, tangent_warmup=100, method="jacobian"
    )
    np.testing.assert_allclose(dense.exponents, res.exponents, rtol=1e-10)


def test_jacobian_method_chunks_and_inputs(monkeypatch):
    # The Jacobian method splits long runs into chunks (bounded memory), the last
    # one partial, slicing a driven map's inputs to match. A nonlinear driven map
    # (the input enters the Jacobian) with chunks of 4 blocks and 2 + 7 blocks
    # (warm-up and accumulated: three chunks, the last with one valid block)
    # must give the matrix-free numbers to rounding.
    from dynjax._lyapunov import _drive

    W = jnp.array([[1.1, -0.6], [0.7, 0.9]])
    system = dynjax.DrivenMap(lambda x, u, p: jnp.tanh(p @ x + u), W)
    monkeypatch.setattr(_drive, "_JACOBIAN_MAX_P", 4)
    # 21 steps: 7 blocks of 3; 23 steps: 7 blocks and a last block of 2 steps.
    for n_steps in (21, 23):
        u = jax.random.normal(jax.random.key(2), (2 + 2 * 3 + n_steps, 2))
        kw = dict(inputs=u, interval=3, transient=2, tangent_warmup=2)
        reference = dynjax.lyapunov_spectrum(
            system, jnp.zeros(2), method="matrix-free", **kw
        )
        chunked = dynjax.lyapunov_spectrum(
            system, jnp.zeros(2), method="jacobian", **kw
        )
        assert chunked.stats["num_qr"] == 7 + (n_steps > 21)
        assert chunked.stats["num_steps"] == n_steps
        np.testing.assert_allclose(chunked.history, reference.history, rtol=1e-12)
        np.testing.assert_allclose(chunked.state.x, reference.state.x, rtol=1e-14)


def test_tanh_rnn_sum_equals_log_det():
    # h' = tanh(W h + U u): DF = diag(1 - h'^2) W, so the sum of all exponents is
    # the average of log|det W| + sum_i log(1 - h'_i^2) along the driven orbit.
    d, m, T = 6, 2, 3000
    kW, kU, ku = jax.random.split(jax.random.key(1), 3)
    W = 0.9 * jax.random.normal(kW, (d, d)) / np.sqrt(d)
    U = jax.random.normal(kU, (d, m))
    rnn = dynjax.DrivenMap(
        lambda h, u, p: jnp.tanh(p["W"] @ h + p["U"] @ u), {"W": W, "U": U}
    )
    u = jax.random.normal(ku, (T, m))
    h0 = jnp.zeros(d)
    res = dynjax.lyapunov_spectrum(rnn, h0, inputs=u)
    traj = dynjax.trajectory(rnn, h0, inputs=u)
    hs = np.asarray(traj.xs[1:])
    expected = np.log(abs(np.linalg.det(np.asarray(W)))) + np.mean(
        np.sum(np.log1p(-(hs**2)), axis=1)
    )
    np.testing.assert_allclose(float(res.exponents.sum()), expected, rtol=1e-6)
    bits = dynjax.lyapunov_spectrum(rnn, h0, inputs=u, base=2)
    np.testing.assert_allclose(bits.exponents, res.exponents / np.log(2), rtol=1e-12)


def test_vmap_over_parameters_and_initial_states():
    x0 = jnp.array([1.0, 1.0, 1.0])

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def spectrum(rho, x0):
        return dynjax.lyapunov_spectrum(
            systems.Lorenz(rho=rho), x0, dt=0.01, t_total=5.0, transient=1.0
        ).exponents

    rhos = jnp.array([20.0, 28.0, 35.0])
    batched = eqx.filter_vmap(spectrum, in_axes=(0, None))(rhos, x0)
    looped = jnp.stack(
        [eqx.filter_vmap(spectrum, in_axes=(0, None))(r[None], x0)[0] for r in rhos]
    )
    np.testing.assert_allclose(batched, looped, rtol=1e-10)
    x0s = x0 + 0.1 * jnp.arange(4.0)[:, None]
    over_x0 = eqx.filter_vmap(spectrum, in_axes=(None, 0))(rhos[1], x0s)
    single = eqx.filter_vmap(spectrum, in_axes=(None, 0))(rhos[1], x0s[2:3])
    np.testing.assert_allclose(over_x0[2], single[0], rtol=1e-10)
    # Liouville holds for every parameter value: sum = -(sigma + 1 + beta)
    np.testing.assert_allclose(batched.sum(axis=1), -(11.0 + 8.0 / 3.0), atol=1e-4)
