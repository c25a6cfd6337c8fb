"""Depth as time: mean-field signal propagation, the depth exponent of sampled deep
networks, residual stacks as Euler maps, the order/chaos phase diagram (float64).

References: SciPy quadrature (`integrate.quad`, `integrate.dblquad`) of the Gaussian
integrals with `optimize.brentq` for the fixed points; closed forms for erf networks
(the arcsine kernel, Williams 1997) and ReLU networks (`E[relu(u)^2] = q / 2`); the
exact ordered phase at `sigma_b^2 = 0` (`q* = 0`, `chi_1 = sigma_w^2 tanh'(0)^2`);
a NumPy propagation of one sampled network; `scipy.integrate.solve_ivp` (DOP853,
rtol = atol = 1e-12) for the neural ODE; central finite differences for gradients.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np
import pytest
from jax.scipy.special import erf
from scipy import integrate, optimize

import dynjax
from dynjax import depth_lyapunov, signal_propagation
from dynjax.rnn import DeepStack, residual_stack


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# SciPy references for tanh networks.


def _gauss(f):
    """`E[f(z)]`, `z ~ N(0, 1)`, by adaptive quadrature."""
    value, _ = integrate.quad(
        lambda z: f(z) * np.exp(-0.5 * z * z),
        -np.inf,
        np.inf,
        epsabs=1e-14,
        epsrel=1e-13,
        limit=400,
    )
    return value / np.sqrt(2 * np.pi)


def _gauss2(f1, f2, q, c):
    """`E[f1(u1) f2(u2)]`, `(u1, u2)` Gaussian with variances `q`, correlation `c`."""
    s, r = np.sqrt(q), np.sqrt(1 - c * c)

    def integrand(z2, z1):
        weight = np.exp(-0.5 * (z1 * z1 + z2 * z2)) / (2 * np.pi)
        return f1(s * z1) * f2(s * (c * z1 + r * z2)) * weight

    value, _ = integrate.dblquad(
        integrand, -10, 10, -10, 10, epsabs=1e-13, epsrel=1e-12
    )
    return value


def _sech2(x):
    e = np.exp(-2 * np.abs(x))
    return 4 * e / (1 + e) ** 2


def _tanh_q_star(sw2, sb2):
    def g(q):
        return sw2 * _gauss(lambda z: np.tanh(np.sqrt(q) * z) ** 2) + sb2 - q

    if sb2 == 0 and sw2 <= 1:
        return 0.0  # the only fixed point (the map is below the diagonal)
    lo = 1e-10 if sb2 == 0 else 0.0  # g > 0 there; g < 0 at sw2 + sb2 + 1
    return optimize.brentq(g, lo, sw2 + sb2 + 1, xtol=1e-15, rtol=1e-14)


def _tanh_chi_1(sw2, sb2):
    q = _tanh_q_star(sw2, sb2)
    return sw2 * _gauss(lambda z: _sech2(np.sqrt(q) * z) ** 2)


# (a) The mean-field quantities.


@pytest.mark.parametrize(
    "sw2, sb2", [(1.2, 0.0), (3.0, 0.3), (1.5, 0.05), (4.0, 0.0), (0.8, 0.5)]
)
def test_tanh_fixed_point_and_slopes_match_scipy(sw2, sb2):
    sp = signal_propagation(sw2, sb2)
    q = _tanh_q_star(sw2, sb2)
    np.testing.assert_allclose(sp.q_star, q, rtol=1e-9, atol=1e-13)
    chi_1 = sw2 * _gauss(lambda z: _sech2(np.sqrt(q) * z) ** 2)
    np.testing.assert_allclose(sp.chi_1, chi_1, rtol=1e-9)
    np.testing.assert_allclose(sp.depth_exponent, 0.5 * np.log(chi_1), atol=1e-9)
    # xi_q: the slope of the variance map at q*, chi_1 + sigma_w^2 E[phi'' phi]
    # (Schoenholz et al. 2017, eq. 5); tanh'' = -2 tanh sech^2.
    slope = chi_1 + sw2 * _gauss(
        lambda z: -2 * np.tanh(np.sqrt(q) * z) ** 2 * _sech2(np.sqrt(q) * z)
    )
    np.testing.assert_allclose(sp.xi_q, -1 / np.log(slope), rtol=1e-8)
    assert bool(sp.chaotic) == (chi_1 > 1)
    assert sp.phase == ("chaotic" if chi_1 > 1 else "ordered")
    if chi_1 > 1:
        # c* is a fixed point of the correlation map (2-D quadrature in SciPy) and
        # chi_c its slope sigma_w^2 E[phi'(u1) phi'(u2)] there.
        c = float(sp.c_star)
        assert 0 <= c < 1
        C = (sw2 * _gauss2(np.tanh, np.tanh, q, c) + sb2) / q
        assert abs(C - c) < 1e-9
        chi_c = sw2 * _gauss2(_sech2, _sech2, q, c)
        np.testing.assert_allclose(sp.chi_c, chi_c, rtol=1e-8)
        np.testing.assert_allclose(sp.xi_c, -1 / np.log(chi_c), rtol=1e-7)
        if sb2 == 0:
            assert c == 0.0  # odd phi without bias: c* = 0 by symmetry
    else:
        assert float(sp.c_star) == 1.0
        np.testing.assert_allclose(sp.chi_c, chi_1, rtol=1e-12)
        np.testing.assert_allclose(sp.xi_c, -1 / np.log(chi_1), rtol=1e-9)


@pytest.mark.parametrize("sw2, sb2", [(1.5, 0.1), (4.0, 0.2), (9.0, 0.0)])
def test_erf_network_closed_forms(sw2, sb2):
    # Williams (1997): E[erf(u1) erf(u2)] = (2/pi) arcsin(2 q c / (1 + 2 q)),
    # E[erf'(u)^2] = (4/pi) / sqrt(1 + 4 q), E[erf'(u1) erf'(u2)] =
    # (4/pi) / sqrt((1 + 2q)^2 - (2 q c)^2).
    def V(q):
        return sw2 * 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)) + sb2

    lo = 1e-10 if sb2 == 0 else 0.0
    q = optimize.brentq(lambda q: V(q) - q, lo, sw2 + sb2 + 1, xtol=1e-15)
    chi_1 = sw2 * 4 / np.pi / np.sqrt(1 + 4 * q)
    slope = sw2 * 4 / np.pi / ((1 + 2 * q) * np.sqrt(1 + 4 * q))
    sp = signal_propagation(sw2, sb2, activation=erf)
    np.testing.assert_allclose(sp.q_star, q, rtol=1e-10)
    np.testing.assert_allclose(sp.chi_1, chi_1, rtol=1e-10)
    np.testing.assert_allclose(sp.xi_q, -1 / np.log(slope), rtol=1e-9)
    if chi_1 > 1:

        def C(c):
            return (sw2 * 2 / np.pi * np.arcsin(2 * q * c / (1 + 2 * q)) + sb2) / q

        c = 0.0 if sb2 == 0 else optimize.brentq(lambda c: C(c) - c, 0, 0.999999)
        chi_c = sw2 * 4 / np.pi / np.sqrt((1 + 2 * q) ** 2 - (2 * q * c) ** 2)
        np.testing.assert_allclose(sp.c_star, c, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(sp.chi_c, chi_c, rtol=1e-9)
    else:
        assert float(sp.c_star) == 1.0


def test_relu_closed_forms_and_no_fixed_point():
    # E[relu(u)^2] = q / 2 and E[relu'(u)^2] = 1 / 2: q* = sigma_b^2 /
    # (1 - sigma_w^2 / 2), chi_1 = sigma_w^2 / 2, for sigma_w^2 < 2.
    for sw2, sb2 in [(1.0, 0.1), (1.9, 0.2), (1.0, 0.0)]:
        sp = signal_propagation(sw2, sb2, activation=jax.nn.relu)
        np.testing.assert_allclose(
            sp.q_star, sb2 / (1 - sw2 / 2), rtol=1e-10, atol=1e-15
        )
        np.testing.assert_allclose(sp.chi_1, sw2 / 2, rtol=1e-10)
        assert float(sp.c_star) == 1.0 and sp.phase == "ordered"
    # sigma_w^2 > 2: the variance grows without bound.
    sp = signal_propagation(2.5, 0.3, activation=jax.nn.relu, throw=False)
    assert sp.result == dynjax.RESULTS.no_variance_fixed_point
    assert np.isnan(sp.q_star) and np.isnan(sp.chi_1)
    sp = signal_propagation(2.5, 0.0, activation=jax.nn.relu, throw=False)
    assert sp.result == dynjax.RESULTS.no_variance_fixed_point
    with pytest.raises(eqx.EquinoxRuntimeError, match="no stable fixed point"):
        signal_propagation(2.5, 0.3, activation=jax.nn.relu)


# (b) The critical line.


def test_zero_bias_is_exactly_ordered_below_one_and_critical_at_one():
    # sigma_b^2 = 0, sigma_w^2 < 1: q* = 0, chi_1 = sigma_w^2 tanh'(0)^2 = sigma_w^2.
    for sw2 in (0.3, 0.9):
        sp = signal_propagation(sw2, 0.0)
        assert float(sp.q_star) < 1e-12
        np.testing.assert_allclose(sp.chi_1, sw2, rtol=1e-10)
        np.testing.assert_allclose(sp.xi_c, -1 / np.log(sw2), rtol=1e-9)

    def chi_minus_one(sw2):
        return float(signal_propagation(sw2, 0.0).chi_1) - 1.0

    root = optimize.brentq(chi_minus_one, 0.5, 1.5, xtol=1e-10)
    assert abs(root - 1.0) < 1e-3


def test_critical_point_at_small_bias():
    # The critical sigma_w^2 at sigma_b^2 = 0.05 for tanh: dynjax's chi_1 against
    # SciPy's (brentq on both), and the value quoted in the literature following
    # Schoenholz et al. (2017), about 1.76 (which the SciPy calculation confirms).
    def dynjax_chi(sw2):
        return float(signal_propagation(sw2, 0.05).chi_1) - 1.0

    ours = optimize.brentq(dynjax_chi, 1.5, 2.0, xtol=1e-12)
    reference = optimize.brentq(
        lambda sw2: _tanh_chi_1(sw2, 0.05) - 1.0, 1.5, 2.0, xtol=1e-12
    )
    assert abs(ours - reference) < 1e-8
    assert abs(reference - 1.76) < 5e-3


# (c) Transformations: grad, vmap, jit.


def test_gradients_match_finite_differences():
    def f(sw2, sb2):
        sp = signal_propagation(sw2, sb2)
        return jnp.stack([sp.q_star, sp.chi_1, sp.c_star, sp.chi_c])

    jac = jax.jit(jax.jacrev(f, argnums=(0, 1)))  # one compilation for all points
    h = 1e-6
    for sw2, sb2 in [(3.0, 0.3), (1.5, 0.05)]:
        J = jac(sw2, sb2)
        fd_w = (f(sw2 + h, sb2) - f(sw2 - h, sb2)) / (2 * h)
        fd_b = (f(sw2, sb2 + h) - f(sw2, sb2 - h)) / (2 * h)
        np.testing.assert_allclose(J[0], fd_w, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(J[1], fd_b, rtol=1e-6, atol=1e-8)
    # At q* = 0 (ordered, no bias) q* ~ sigma_b^2 / (1 - sigma_w^2): dq*/dsigma_b^2 =
    # 2 at sigma_w^2 = 0.5, where sqrt(q) has an infinite slope.
    np.testing.assert_allclose(jac(0.5, 0.0)[1][0], 2.0, rtol=1e-8)


def test_vmap_over_a_grid_is_one_call():
    ws = jnp.array([0.5, 1.2, 1.76, 3.0])
    bs = jnp.array([0.0, 0.05, 0.3])
    W, B = jnp.meshgrid(ws, bs)
    grid = jax.jit(jax.vmap(jax.vmap(lambda w, b: signal_propagation(w, b))))(W, B)
    assert grid.chi_1.shape == (3, 4)
    for i, b in enumerate(np.asarray(bs)):
        for j, w in enumerate(np.asarray(ws)):
            np.testing.assert_allclose(
                grid.chi_1[i, j], _tanh_chi_1(float(w), float(b)), rtol=1e-9
            )
    phases = grid.phase
    assert phases.shape == (3, 4)
    assert phases[0, 0] == "ordered" and phases[2, 3] == "chaotic"


# (d) The measured depth exponent.


@pytest.mark.parametrize("sw2, sb2", [(1.2, 0.0), (3.0, 0.3)])
def test_depth_exponent_of_wide_tanh_stacks_matches_mean_field(sw2, sb2):
    res = depth_lyapunov(sw2, sb2, width=1000, depth=200, key=jr.key(0))
    assert res.per_layer.shape == (180,)
    np.testing.assert_allclose(res.exponent, jnp.mean(res.per_layer), rtol=1e-12)
    predicted = 0.5 * np.log(_tanh_chi_1(sw2, sb2))  # SciPy, not dynjax
    assert abs(float(res.exponent) - predicted) < 0.02
    assert float(res.stderr) < 0.005


def test_narrow_stack_growth_by_hand_in_numpy():
    # Width 1: the tangent is a number, and layer l stretches it by exactly
    # |tanh'(a_l) W_l|, a_l = W_l x_{l-1} + b_l; the network is replayed in NumPy
    # from the layers' weights.
    sw2, sb2, depth, transient = 2.0, 0.3, 40, 5
    key = jr.key(3)
    x0 = jnp.array([0.4])
    res = depth_lyapunov(
        sw2, sb2, width=1, depth=depth, transient=transient, key=key, x0=x0
    )
    stack = DeepStack(sw2, sb2, 1)
    keys = DeepStack.keys(jr.split(key, 3)[0], depth)
    x, growth = 0.4, []
    for u in keys:
        W, b = (np.asarray(a) for a in stack.layer(u))
        a = W[0, 0] * x + b[0]
        growth.append(np.log(abs((1 - np.tanh(a) ** 2) * W[0, 0])))
        x = np.tanh(a)
    np.testing.assert_allclose(res.per_layer, growth[transient:], rtol=1e-10)
    # The same network as a driven map: dynjax.trajectory replays it.
    traj = dynjax.trajectory(stack, x0, inputs=keys)
    np.testing.assert_allclose(traj.xs[-1, 0], x, rtol=1e-12)


def test_layer_weights_have_the_stated_variances():
    stack = DeepStack(2.0, 0.5, 1000)
    W, b = stack.layer(DeepStack.keys(jr.key(1), 1)[0])
    assert W.shape == (1000, 1000) and b.shape == (1000,)
    # Var(W_ij) = sigma_w^2 / N: 1e6 samples, relative standard error 1.4e-3.
    np.testing.assert_allclose(np.var(W) * 1000, 2.0, rtol=7e-3)
    np.testing.assert_allclose(np.var(b), 0.5, rtol=0.25)
    assert abs(float(np.mean(W))) < 5 * np.sqrt(2.0 / 1000 / 1e6)


# (e) Residual stacks are Euler maps of neural ODEs.


def test_residual_stack_converges_to_the_neural_ode_at_first_order():
    A = np.array([[0.5, -1.2, 0.3], [1.0, 0.2, -0.7], [-0.4, 0.9, 0.1]])
    c = np.array([0.1, -0.2, 0.3])
    h0 = np.array([0.5, -0.3, 0.8])

    def f(h):
        return jnp.tanh(jnp.asarray(A) @ h + jnp.asarray(c))

    ref = integrate.solve_ivp(
        lambda t, h: np.tanh(A @ h + c),
        (0.0, 1.0),
        h0,
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
    ).y[:, -1]
    depths = np.array([16, 32, 64, 128, 256, 512])
    errors = []
    for L in depths:
        stack = residual_stack(f, int(L))
        out = dynjax.trajectory(stack, jnp.asarray(h0), n_steps=int(L)).xs[-1]
        errors.append(np.linalg.norm(np.asarray(out) - ref))
    slope = np.polyfit(np.log(depths), np.log(errors), 1)[0]
    assert abs(slope + 1) < 0.2
    # One layer by hand: h + f(h) / L.
    stack = residual_stack(f, 4)
    np.testing.assert_allclose(
        stack.step(0, jnp.asarray(h0)), h0 + np.tanh(A @ h0 + c) / 4, rtol=1e-14
    )


def test_residual_stack_of_a_time_dependent_flow():
    # dh/dt = -t h: h(1) = h0 exp(-1/2); layer l evaluates f at t = l / L.
    flow = dynjax.Flow(lambda t, h, p: -t * h, d=1)
    errors = []
    for L in (20, 40, 80, 160):
        out = dynjax.trajectory(residual_stack(flow, L), jnp.ones(1), n_steps=L)
        by_hand = np.prod([1 - (n / L) / L for n in range(L)])
        np.testing.assert_allclose(out.xs[-1, 0], by_hand, rtol=1e-12)
        errors.append(abs(float(out.xs[-1, 0]) - np.exp(-0.5)))
    slope = np.polyfit(np.log([20, 40, 80, 160]), np.log(errors), 1)[0]
    assert abs(slope + 1) < 0.2


def test_residual_stack_of_an_mlp_is_differentiable():
    mlp = eqx.nn.MLP(3, 3, 8, 2, activation=jnp.tanh, key=jr.key(0))
    h0 = jnp.array([0.2, -0.1, 0.4])

    def loss(mlp):
        out = dynjax.trajectory(residual_stack(mlp, 10), h0, n_steps=10).xs[-1]
        return jnp.sum(out**2)

    grads = eqx.filter_grad(loss)(mlp)
    g = grads.layers[0].bias
    e = jnp.zeros(8).at[0].set(1e-6)

    def bump(sign):
        bias = mlp.layers[0].bias + sign * e
        return eqx.tree_at(lambda m: m.layers[0].bias, mlp, bias)

    fd = (loss(bump(1.0)) - loss(bump(-1.0))) / 2e-6
    np.testing.assert_allclose(g[0], fd, rtol=1e-6)


# (f) Bad input.


def test_bad_input_errors():
    with pytest.raises(ValueError, match="`sigma_w2` >= 0"):
        signal_propagation(-1.0, 0.1)
    with pytest.raises(ValueError, match="`sigma_b2` >= 0"):
        signal_propagation(1.0, float("nan"))
    with pytest.raises(ValueError, match="must be even"):
        signal_propagation(1.0, 0.1, n_quadrature=65)
    with pytest.raises(ValueError, match="`n_quadrature` >= 16"):
        signal_propagation(1.0, 0.1, n_quadrature=8)
    with pytest.raises(ValueError, match="`activation`"):
        signal_propagation(1.0, 0.1, activation="tanh")
    with pytest.raises(ValueError, match="scalar variances"):
        signal_propagation(jnp.ones(3), 0.1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="`sigma_w2` >= 0"):
        jax.vmap(lambda w: signal_propagation(w, 0.1).chi_1)(jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="`width` >= 1"):
        depth_lyapunov(1.0, 0.1, width=0, depth=50, key=jr.key(0))
    with pytest.raises(ValueError, match="`width` to be an int"):
        DeepStack(1.0, 0.1, 2.5)
    with pytest.raises(ValueError, match="`sigma_b2` >= 0"):
        DeepStack(1.0, -0.1, 10)
    with pytest.raises(ValueError, match="`depth` >= 21"):
        depth_lyapunov(1.0, 0.1, width=10, depth=20, key=jr.key(0))
    with pytest.raises(ValueError, match=r"`x0` of shape \(width,\)"):
        depth_lyapunov(1.0, 0.1, width=10, depth=30, key=jr.key(0), x0=jnp.ones(3))
    with pytest.raises(ValueError, match="`depth` >= 1"):
        residual_stack(jnp.tanh, 0)
    with pytest.raises(ValueError, match="a dynjax flow or a callable"):
        residual_stack(3.0, 10)
    with pytest.raises(ValueError, match="`quantity` must be one of"):
        dynjax.plot.signal_phase_diagram([1.0, 2.0], [0.0, 0.1], quantity="q")
    with pytest.raises(ValueError, match="`sigma_b2` must be a 1-D array"):
        dynjax.plot.signal_phase_diagram([1.0, 2.0], [-0.1, 0.1])


# The phase diagram.


def _crossings(contour, y):
    """The x where the contour's polylines cross the horizontal line at `y`."""
    xs = []
    for path in contour.get_paths():
        for line in path.to_polygons(closed_only=False):
            for (x0, y0), (x1, y1) in zip(line[:-1], line[1:]):
                if (y0 - y) * (y1 - y) <= 0 and y0 != y1:
                    xs.append(x0 + (y - y0) / (y1 - y0) * (x1 - x0))
    return np.unique(np.round(xs, 12))  # a vertex on the line ends two segments


def test_phase_diagram_draws_the_critical_line():
    ws = np.linspace(0.5, 2.5, 17)  # 0.125 apart, through 1.0
    bs = np.array([0.0, 0.025, 0.05, 0.075, 0.1, 0.2, 0.3])
    ax = dynjax.plot.signal_phase_diagram(ws, bs)
    mesh, contour = ax.collections[:2]
    assert contour.levels.tolist() == [1.0]
    image = np.asarray(mesh.get_array()).reshape(len(bs), len(ws))
    np.testing.assert_allclose(image[2, 8], _tanh_chi_1(ws[8], 0.05), rtol=1e-8)
    # The critical line chi_1 = 1 meets sigma_b^2 = 0 at sigma_w^2 = 1 (exact for
    # tanh), and crosses sigma_b^2 = 0.05 near the critical 1.76 (to the linear
    # interpolation of the contour between grid points).
    at_zero = _crossings(contour, 0.0)
    assert at_zero.size and np.all(np.abs(at_zero - 1.0) < 0.01)
    at_005 = _crossings(contour, 0.05)
    assert at_005.size == 1 and abs(at_005[0] - 1.76) < 0.01
    assert ax.get_xlabel() == r"$\sigma_w^2$"
    ax = dynjax.plot.signal_phase_diagram(ws, bs, quantity="depth_exponent")
    image = np.asarray(ax.collections[0].get_array()).reshape(len(bs), len(ws))
    # (q* = 1.46 there: the plot's 64 nodes resolve it to about 1e-9.)
    np.testing.assert_allclose(
        image[6, 16], 0.5 * np.log(_tanh_chi_1(ws[16], 0.3)), atol=1e-8
    )
