"""Input-driven spectra, gradient propagation and gradient flossing of RNNs.

References: the mean-field largest exponent of random tanh networks (Molgedey,
Schuchhardt & Schuster, Phys. Rev. Lett. 69, 3717 (1992)), computed here by
Gauss-Hermite quadrature with NumPy and compared with the values quoted in the
issue; linear maps (exponents `log |eig W|`, Oseledets); the determinant of a
product of Jacobians; singular values of dense products (NumPy SVD); finite
differences for gradients.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import dynjax


def _mean_field_lyapunov(g: float) -> float:
    """`1/2 log(g^2 E[tanh'(sqrt(q) z)^2])` at the fixed point of
    `q = g^2 E[tanh(sqrt(q) z)^2]` (discrete time), by NumPy quadrature."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    q = 1.0
    for _ in range(5000):
        q = g**2 * np.sum(w * np.tanh(np.sqrt(q) * z) ** 2)
    return 0.5 * np.log(g**2 * np.sum(w * (1 - np.tanh(np.sqrt(q) * z) ** 2) ** 2))


@pytest.mark.parametrize("g, quoted", [(1.5, 0.0652), (2.0, 0.1547), (3.0, 0.3102)])
def test_mean_field_quadrature_matches_quoted(g, quoted):
    # The values (Molgedey et al. 1992 formula) against our quadrature.
    assert _mean_field_lyapunov(g) == pytest.approx(quoted, abs=1e-4)


def _population(g: float, n: int, N: int = 1000, seed: int = 0):
    keys = jr.split(jr.key(seed), n)
    return eqx.filter_vmap(
        lambda key: dynjax.rnn.VanillaRNN(N, 1, gain=g, use_bias=False, key=key)
    )(keys)


@pytest.mark.slow
@pytest.mark.parametrize("g", [1.5, 2.0, 3.0])
def test_random_tanh_network_matches_mean_field(g):
    # h_{t+1} = tanh(W h_t), W ~ N(0, g^2/N), N = 1000: the largest exponent of
    # a population of 4 networks (one vmapped call) against mean-field theory.
    N, T = 1000, 5000
    cells = _population(g, 4, N)
    h0 = jr.normal(jr.key(1), (N,))
    inputs = jnp.zeros((1, T, 1))

    @eqx.filter_vmap
    def top(cell):
        return dynjax.rnn_spectrum(cell, inputs, h0, k=1, warmup=500).mean[0]

    lam = np.asarray(top(cells))
    assert np.mean(lam) == pytest.approx(_mean_field_lyapunov(g), abs=0.01)


@pytest.mark.slow
def test_stable_random_network_exponent_is_log_spectral_radius():
    # g = 0.8: the origin is a stable fixed point, so the largest exponent is
    # log of the spectral radius of W (its Jacobian there).
    N = 1000
    cell = dynjax.rnn.VanillaRNN(N, 1, gain=0.8, use_bias=False, key=jr.key(3))
    res = dynjax.rnn_spectrum(
        cell, jnp.zeros((1, 12_000, 1)), jr.normal(jr.key(4), (N,)), k=1, warmup=2000
    )
    radius = np.max(np.abs(np.linalg.eigvals(np.asarray(cell.W))))
    assert float(res.mean[0]) == pytest.approx(np.log(radius), abs=1e-3)


def _linear_cell(N=6, m=3, key=jr.key(0)):
    return dynjax.rnn.VanillaRNN(N, m, activation=lambda a: a, gain=1.1, key=key)


def test_linear_rnn_exponents_are_log_abs_eigenvalues_whatever_the_inputs():
    cell = _linear_cell()
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(np.asarray(cell.W)))))[::-1]
    xs = jr.normal(jr.key(1), (2, 10_000, 3))
    a = dynjax.rnn_spectrum(cell, xs, warmup=200)
    b = dynjax.rnn_spectrum(cell, 100.0 * xs[::-1], warmup=200)
    np.testing.assert_allclose(a.mean, expected, atol=2e-3)
    # The tangent dynamics of a linear map ignore the state and the inputs.
    np.testing.assert_allclose(a.exponents, b.exponents[::-1], atol=1e-12)


def test_rnn_spectrum_is_lyapunov_spectrum_per_sequence_in_bits():
    cell = dynjax.rnn.GRU(5, 2, key=jr.key(0))
    xs = jr.normal(jr.key(1), (3, 400, 2))
    h0 = 0.1 * jr.normal(jr.key(2), (3, 5))
    res = dynjax.rnn_spectrum(cell, xs, h0, k=3, warmup=100, base=2)
    for b in range(3):
        one = dynjax.lyapunov_spectrum(
            cell, h0[b], k=3, inputs=xs[b], transient=0, tangent_warmup=100
        )
        np.testing.assert_allclose(res.exponents[b], one.exponents / np.log(2), 1e-10)
    np.testing.assert_allclose(res.mean, np.mean(res.exponents, axis=0), 1e-12)
    np.testing.assert_allclose(res.std, np.std(res.exponents, axis=0), 1e-12)


def test_rnn_spectrum_over_a_population_equals_one_network_at_a_time():
    keys = jr.split(jr.key(0), 3)
    make = lambda key: dynjax.rnn.LSTM(4, 2, key=key)  # noqa: E731
    cells = eqx.filter_vmap(make)(keys)
    xs = jr.normal(jr.key(1), (2, 300, 2))
    pop = eqx.filter_vmap(lambda c: dynjax.rnn_spectrum(c, xs, k=4).mean)(cells)
    for i, key in enumerate(keys):
        np.testing.assert_allclose(
            pop[i], dynjax.rnn_spectrum(make(key), xs, k=4).mean, atol=1e-10
        )


def _jacobians(cell, states, xs):
    return [
        np.asarray(jax.jacfwd(lambda h: cell.step(h, u))(h))
        for h, u in zip(states[:-1], xs)
    ]


def test_gradient_propagation_log_determinant_and_volume_bounds():
    # k = d: the sum of the log singular values of dh_T/dh_{T-tau} is
    # log|det| = sum over the steps of log|det J_s| (exact). For every j, the
    # sum of the first j QR estimates is at most the sum of the j largest
    # exact log singular values (NumPy SVD of the dense product, for lags
    # short enough that the product is accurate).
    N, T = 6, 40
    cell = dynjax.rnn.VanillaRNN(N, 2, gain=1.5, key=jr.key(0))
    xs = jr.normal(jr.key(1), (T, 2))
    gp = dynjax.gradient_propagation(cell, xs, jr.normal(jr.key(2), (N,)))
    J = _jacobians(cell, gp.states, xs)
    logdets = np.array([np.linalg.slogdet(j)[1] for j in J])
    expected = np.cumsum(logdets[::-1])  # lag tau: steps T, T-1, ..., T-tau+1
    np.testing.assert_allclose(gp.log_singular_values.sum(axis=1), expected, atol=1e-9)
    np.testing.assert_array_equal(gp.lags, np.arange(1, T + 1))
    B = np.eye(N)
    for tau in range(1, 6):
        B = B @ J[T - tau]
        exact = np.log(np.linalg.svd(B, compute_uv=False))
        est = np.asarray(gp.log_singular_values[tau - 1])
        assert np.all(np.cumsum(est) <= np.cumsum(exact) + 1e-10)


def test_gradient_propagation_slopes_converge_to_the_spectrum():
    N, T, k = 32, 6000, 3
    cell = dynjax.rnn.VanillaRNN(N, 1, gain=2.0, use_bias=False, key=jr.key(5))
    xs = 0.1 * jr.normal(jr.key(6), (T, 1))
    h0 = jr.normal(jr.key(7), (N,))
    gp = dynjax.gradient_propagation(cell, xs, h0, k=k)
    ell = np.asarray(gp.log_singular_values)
    slopes = (ell[-1] - ell[499]) / (T - 500)
    forward = dynjax.rnn_spectrum(cell, xs[None], h0, k=k, warmup=500).mean
    assert forward[0] > 0.05  # chaotic: the check is not about a fixed point
    np.testing.assert_allclose(slopes, forward, atol=0.02)


def test_flossing_loss_gradient_matches_finite_differences():
    N, k = 5, 2
    cell = dynjax.rnn.VanillaRNN(N, 2, gain=2.0, key=jr.key(0))
    xs = jr.normal(jr.key(1), (2, 30, 2))
    h0 = jr.normal(jr.key(2), (N,))

    def loss(W):
        c = eqx.tree_at(lambda c: c.W, cell, W)
        return dynjax.flossing_loss(c, xs, h0, k=k, target=jnp.array([0.1, -0.2]))

    W = cell.W
    grad = np.asarray(jax.grad(loss)(W))
    eps = 1e-6
    for i, j in [(0, 0), (1, 3), (4, 2), (2, 4)]:
        e = jnp.zeros_like(W).at[i, j].set(eps)
        fd = (loss(W + e) - loss(W - e)) / (2 * eps)
        assert grad[i, j] == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


@pytest.mark.slow
def test_flossing_brings_leading_exponents_to_zero():
    # A chaotic random tanh network (g = 3) flossed on fresh noisy inputs for
    # 200 Adam steps: its two leading exponents, measured afterwards on long
    # held-out sequences, are within 0.05 of zero.
    N, k = 64, 2
    cell = dynjax.rnn.VanillaRNN(N, 1, gain=3.0, use_bias=False, key=jr.key(0))
    held_out = 0.1 * jr.normal(jr.key(7), (4, 3000, 1))
    h0 = jr.normal(jr.key(2), (4, N))
    before = dynjax.rnn_spectrum(cell, held_out, h0, k=k, warmup=300).mean
    assert np.all(before > 0.2)

    def loss(c, batch, key):
        k1, k2 = jr.split(key)
        xs = 0.1 * jr.normal(k1, (4, 120, 1))
        return dynjax.flossing_loss(
            c, xs, jr.normal(k2, (4, N)), k=k, warmup=20, n_windows=5
        )

    fit = dynjax.fit(loss, cell, optax.adam(1e-2), n_steps=200, key=jr.key(3))
    after = dynjax.rnn_spectrum(fit.model, held_out, h0, k=k, warmup=300).mean
    np.testing.assert_allclose(after, 0.0, atol=0.05)


def test_bad_input_errors():
    cell = dynjax.rnn.VanillaRNN(8, 3, key=jr.key(0))
    xs = jnp.zeros((2, 50, 3))
    with pytest.raises(ValueError, match="exceeds the state dimension d=8"):
        dynjax.rnn_spectrum(cell, xs, k=9)
    with pytest.raises(ValueError, match="between 1 and the state dimension d=8"):
        dynjax.gradient_propagation(cell, xs[0], k=9)
    with pytest.raises(ValueError, match="exceeds the state dimension d=8"):
        dynjax.flossing_loss(cell, xs, k=9)
    with pytest.raises(ValueError, match="input"):
        dynjax.rnn_spectrum(cell, jnp.zeros((2, 50, 4)))
    with pytest.raises(ValueError, match=r"shape \(8,\) or \(2, 8\)"):
        dynjax.rnn_spectrum(cell, xs, jnp.zeros(7))
    with pytest.raises(ValueError, match=r"Add a batch axis"):
        dynjax.rnn_spectrum(cell, jnp.zeros((50,)))
    with pytest.raises(ValueError, match="leaves no step"):
        dynjax.rnn_spectrum(cell, xs, warmup=50)
    with pytest.raises(ValueError, match="driven map"):
        dynjax.rnn_spectrum(dynjax.systems.Henon(), xs)
    with pytest.raises(ValueError, match="do not fit"):
        dynjax.flossing_loss(cell, xs, k=2, warmup=40, n_windows=20)
    bad = eqx.tree_at(lambda c: c.W, cell, cell.W.at[0, 0].set(jnp.nan))
    with pytest.raises(Exception, match="non-finite"):
        dynjax.rnn_spectrum(bad, xs, k=2)


def test_batch_axis_errors_failures_and_wrappers():
    cell = dynjax.rnn.VanillaRNN(8, 3, output_size=3, key=jr.key(0))
    xs = jr.normal(jr.key(1), (4, 50, 3))
    with pytest.raises(ValueError, match=r"Add a batch axis"):
        dynjax.rnn_spectrum(cell, xs[0])
    with pytest.raises(ValueError, match=r"takes one sequence.*jax.vmap"):
        dynjax.gradient_propagation(cell, xs)
    with pytest.raises(ValueError, match=r"dynjax.rnn.Cell"):
        dynjax.rnn_spectrum(eqx.nn.GRUCell(3, 8, key=jr.key(0)), xs)
    with pytest.raises(ValueError, match=r"`target` must be a scalar or have shape"):
        dynjax.flossing_loss(cell, xs, k=2, target=jnp.zeros(3))
    with pytest.raises(ValueError, match="both `output_size=` and `key=`"):
        dynjax.rnn.Cell(eqx.nn.GRUCell(3, 8, key=jr.key(0)), output_size=3)
    # Non-finite weights: an error by default, a code or a NaN loss on request
    # (the form `dynjax.fit` stops on), never a silent -inf.
    bad = eqx.tree_at(lambda c: c.W, cell, cell.W.at[0, 0].set(jnp.nan))
    with pytest.raises(Exception, match="non-finite"):
        dynjax.gradient_propagation(bad, xs[0])
    gp = dynjax.gradient_propagation(bad, xs[0], throw=False)
    assert gp.result == dynjax.RESULTS.map_escaped
    assert np.isnan(float(dynjax.flossing_loss(bad, xs, k=2, throw=False)))
    # A wrapper without `d` takes the state size from h0: 5 decoupled units
    # h -> tanh(2 h + u) at u = 0 sit at the fixed point h* = tanh(2 h*), where
    # every exponent is log(2 (1 - h*^2)).
    h_star = 0.9575040240772687  # scipy.optimize.brentq(lambda h: tanh(2h) - h, .5, 1)
    wrapped = dynjax.DrivenMap(lambda h, u, p: jnp.tanh(2 * h + u), None)
    res = dynjax.rnn_spectrum(
        wrapped, jnp.zeros((1, 400, 5)), jnp.full(5, 0.9), k=2, warmup=50
    )
    np.testing.assert_allclose(res.mean, np.log(2 * (1 - h_star**2)), atol=1e-9)
