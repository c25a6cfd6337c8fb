"""Training in continuous time: gradient flow vs. gradient descent, and SGD's
stochastic modified equation (issue 14, items 1 and 5). All in float64."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from dynjax._training._continuous import (
    _build_sme,
    _solve_sme,
    gd_flow_distance,
    gradient_flow_trajectory,
    sgd_sde,
)


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _spd(eigenvalues, seed):
    """A non-diagonal SPD matrix with the given eigenvalues."""
    d = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q @ np.diag(eigenvalues) @ q.T


def _quadratic(H):
    H = jnp.asarray(H)

    def loss(params, batch):
        del batch
        w = params["w"]
        return 0.5 * w @ (H @ w)

    return loss


E0 = np.array([1.0, -0.5, 0.3])


# --- gradient flow ---------------------------------------------------------------


def test_gradient_flow_equals_matrix_exponential():
    H = _spd([0.5, 1.0, 2.0], seed=0)
    sol = gradient_flow_trajectory(
        _quadratic(H), {"w": jnp.asarray(E0)}, t1=3.0, n_save=7
    )
    ref = np.stack([scipy.linalg.expm(-H * t) @ E0 for t in np.asarray(sol.ts)])
    np.testing.assert_allclose(sol.thetas, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sol.params["w"], ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        sol.losses, 0.5 * np.einsum("ti,ij,tj->t", ref, H, ref), rtol=1e-6
    )
    np.testing.assert_allclose(sol.ts, np.linspace(0, 3, 7), rtol=1e-14)


def test_gradient_flow_stiff():
    # Condition number 1e4: the explicit solver needs ~lambda_max * t1 steps.
    H = _spd([1.0, 100.0, 1e4], seed=1)
    params = {"w": jnp.asarray(E0)}
    ts = np.array([0.0, 0.01, 0.1, 1.0, 2.0])
    ref = np.stack([scipy.linalg.expm(-H * t) @ E0 for t in ts])
    stiff = gradient_flow_trajectory(_quadratic(H), params, ts=ts, stiff=True)
    explicit = gradient_flow_trajectory(_quadratic(H), params, ts=ts)
    np.testing.assert_allclose(stiff.thetas, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(explicit.thetas, ref, rtol=0, atol=1e-6)
    # (Stability, not accuracy, bounds the explicit steps: |1 - h lambda| ~ 1.)
    assert int(stiff.stats["num_steps"]) * 10 < int(explicit.stats["num_steps"])


def test_gradient_flow_gradient_wrt_initial_parameters():
    # J(theta(t)) = 1/2 e0^T expm(-H t) H expm(-H t) e0, so its gradient in e0 is
    # H expm(-2 H t) e0 (H symmetric). Reverse mode through the solve.
    H = _spd([0.5, 1.0, 2.0], seed=2)
    t = 1.5

    def final_loss(w):
        return gradient_flow_trajectory(_quadratic(H), {"w": w}, t1=t, n_save=2).losses[
            -1
        ]

    grad = jax.grad(final_loss)(jnp.asarray(E0))
    ref = H @ scipy.linalg.expm(-2 * t * H) @ E0
    np.testing.assert_allclose(grad, ref, rtol=0, atol=1e-6)


def _gd_flow_reference(H, eta, n_steps, modified=False):
    """|(I - eta H)^k e0 - expm(-A k eta) e0|, A = H (+ eta/2 H^2 if modified)."""
    A = H + eta / 2 * H @ H if modified else H
    M = np.eye(len(E0)) - eta * H
    out = []
    for k in range(n_steps + 1):
        gd = np.linalg.matrix_power(M, k) @ E0
        flow = scipy.linalg.expm(-A * k * eta) @ E0
        out.append(np.linalg.norm(gd - flow))
    return np.array(out)


TIGHT = dict(rtol=1e-12, atol=1e-14)


def test_gd_flow_distance():
    # Against the exact iterates: GD (I - eta H)^k e0, the flow expm(-H k eta) e0,
    # the modified flow expm(-(H + eta H^2 / 2) k eta) e0 (numpy/scipy, 1e-8).
    # Backward error analysis: at fixed t, GD - flow = O(eta) (halving eta halves
    # it), with leading term -(eta t / 2) H^2 expm(-H t) e0 (expand
    # (1 - eta lambda)^(t / eta) = exp(-lambda t - eta lambda^2 t / 2 + ...));
    # GD - modified flow = O(eta^2) (Barrett & Dherin 2021).
    H = _spd([0.5, 1.0, 2.0], seed=3)
    params = {"w": jnp.asarray(E0)}
    t = 1.0
    lead = np.linalg.norm(t / 2 * H @ H @ scipy.linalg.expm(-H * t) @ E0)
    plain = []
    for eta in (0.02, 0.01):
        n = round(t / eta)
        d = gd_flow_distance(_quadratic(H), params, eta, n, **TIGHT)
        assert d.shape == (n + 1,)
        np.testing.assert_allclose(d, _gd_flow_reference(H, eta, n), atol=1e-8)
        np.testing.assert_allclose(d[-1] / eta, lead, rtol=3 * eta)
        plain.append(float(d[-1]))
    assert abs(plain[0] / plain[1] - 2) < 0.05
    eta, n = 0.02, 50
    d = gd_flow_distance(_quadratic(H), params, eta, n, modified=True, **TIGHT)
    np.testing.assert_allclose(d, _gd_flow_reference(H, eta, n, True), atol=1e-8)
    assert d[-1] < 2 * eta * plain[0]  # (O(eta^2) against O(eta))


# --- SGD: the stochastic modified equation and the iterates --------------------------
#
# Issue 14 item 5: J = 1/2 theta^T H theta with isotropic gradient noise of variance
# s^2, realised by per-sample losses l_i = 1/2 theta^T H theta - z_i^T theta with
# the z_i exactly centred and whitened (Z^T Z / N = s^2 I). A single-sample gradient
# is H theta - z_i: noise of covariance s^2 I in every eigendirection of H.
# Stationary variance along the eigenvector of lambda (the Ornstein-Uhlenbeck
# process du = -lambda u dt + sqrt(eta) s dW, e.g. Gardiner, *Stochastic Methods*,
# 4th ed. (2009); the AR(1) recursion u <- (1 - eta lambda) u + eta xi for SGD):
#   SME (OU):  eta s^2 / (2 lambda);   SGD:  eta s^2 / (lambda (2 - eta lambda)).

LAMBDAS = np.array([1.0, 3.0])
Q = _rotation(0.6)
H2 = Q @ np.diag(LAMBDAS) @ Q.T
S = 0.5  # noise standard deviation
N_SAMPLES = 16


def _whitened(n, d, s, seed, covariance=None):
    """n samples in R^d, exactly centred, with empirical covariance (1/n
    normalisation) exactly `s^2 I` (or `covariance`)."""
    z = np.random.default_rng(seed).normal(size=(n, d))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / n)).T
    target = s**2 * np.eye(d) if covariance is None else covariance
    return z @ np.linalg.cholesky(target).T


Z = _whitened(N_SAMPLES, 2, S, seed=5)


def _per_sample_quadratic(H):
    H = jnp.asarray(H)

    def loss(theta, z):
        # mean over the batch of 1/2 theta^T H theta - z_i^T theta
        return jnp.mean(0.5 * theta @ (H @ theta) - z @ theta)

    return loss


def _stationary_variance(thetas, basis):
    """Per-eigendirection E[u^2] (the mean is 0) with its standard error, from
    independent chains (axis 0) of correlated samples (axis 1): each chain's
    time average is one independent estimate (batch means), so the standard
    error is honest whatever the autocorrelation within a chain."""
    u = thetas @ basis  # (chains, samples, d)
    per_chain = np.mean(u**2, axis=1)  # (chains, d)
    mean = per_chain.mean(0)
    se = per_chain.std(0, ddof=1) / np.sqrt(per_chain.shape[0])
    return mean, se


def test_data_is_exactly_whitened():
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-15)
    np.testing.assert_allclose(Z.T @ Z / N_SAMPLES, S**2 * np.eye(2), atol=1e-15)


def test_sgd_sde_stationary_variance_is_ornstein_uhlenbeck():
    eta = 0.02  # default dt0 = eta / 10: Euler-Maruyama bias lambda dt / 2 <= 0.3 %
    burn_in, t1, n_paths = 5.0, 30.0, 128  # burn-in: exp(-2 lambda_min 5) ~ 5e-5
    keys = jax.random.split(jax.random.key(0), n_paths)
    paths = eqx.filter_vmap(
        lambda k: sgd_sde(
            _per_sample_quadratic(H2),
            jnp.zeros(2),
            eta,
            data=Z,
            key=k,
            t1=t1,
            n_save=61,  # every 0.5 time units
            brownian="increments",
        )
    )(keys)
    assert paths.thetas.shape == (n_paths, 61, 2)
    keep = np.asarray(paths.ts[0]) >= burn_in
    mean, se = _stationary_variance(np.asarray(paths.thetas)[:, keep], Q)
    ou = eta * S**2 / (2 * LAMBDAS)
    assert np.all(se < 0.05 * ou)  # (the test resolves the variance to 5 %)
    assert np.all(np.abs(mean - ou) < 4 * se), (mean, ou, se)
    # The losses are J(theta) at the saved times.
    th = np.asarray(paths.thetas[3])
    np.testing.assert_allclose(
        paths.losses[3], 0.5 * np.einsum("ti,ij,tj->t", th, H2, th), rtol=1e-10
    )


def test_sgd_sde_correlated_noise_full_covariance():
    # Correlated gradient noise Cov = S_c, H diagonal: the stationary covariance
    # P solves H P + P H = eta S_c, the continuous Lyapunov equation (solved by
    # SciPy); its off-diagonal element eta S_12 / (l1 + l2) is what the full
    # factor adds over the diagonal one (which gives 0; the factors themselves
    # are checked in test_noise_factor_is_minibatch_gradient_covariance).
    Hd = np.diag(LAMBDAS)
    Sc = S**2 * np.array([[1.0, 0.8], [0.8, 1.0]])
    z = _whitened(N_SAMPLES, 2, S, seed=6, covariance=Sc)
    eta, burn_in, t1, n_paths = 0.02, 5.0, 30.0, 128
    keys = jax.random.split(jax.random.key(1), n_paths)
    paths = eqx.filter_vmap(
        lambda k: sgd_sde(
            _per_sample_quadratic(Hd),
            jnp.zeros(2),
            eta,
            data=z,
            key=k,
            t1=t1,
            n_save=61,
            brownian="increments",
        )
    )(keys)
    keep = np.asarray(paths.ts[0]) >= burn_in
    th = np.asarray(paths.thetas)[:, keep]
    per_chain = np.einsum("psi,psj->pij", th, th) / th.shape[1]
    cov = per_chain.mean(0)
    se = per_chain.std(0, ddof=1) / np.sqrt(n_paths)
    P = scipy.linalg.solve_continuous_lyapunov(Hd, eta * Sc)
    np.testing.assert_array_less(np.abs(cov - P), 4 * se)
    assert P[0, 1] > 10 * se[0, 1]  # (the check tells full from diagonal)


def _sgd_chains(eta, n_chains, n_burn, n_keep, every, seed):
    """Plain SGD with minibatches of one sample drawn uniformly from Z:
    theta <- theta - eta (H theta - z_i). Returns (chains, samples, 2)."""
    H = jnp.asarray(H2)
    z = jnp.asarray(Z)

    def chain(key):
        def step(theta, k):
            i = jax.random.randint(k, (), 0, N_SAMPLES)
            theta = theta - eta * (H @ theta - z[i])
            return theta, theta

        k_burn, k_keep = jax.random.split(key)
        theta, _ = jax.lax.scan(step, jnp.zeros(2), jax.random.split(k_burn, n_burn))
        _, thetas = jax.lax.scan(step, theta, jax.random.split(k_keep, n_keep))
        return thetas[::every]

    keys = jax.random.split(jax.random.key(seed), n_chains)
    return np.asarray(jax.jit(jax.vmap(chain))(keys))


def test_sgd_iterates_stationary_variance_small_learning_rate():
    # eta lambda <= 0.006: SGD's exact variance and the OU value differ by
    # eta lambda / 2 <= 0.3 %, below the sampling error; both must hold.
    eta = 0.002
    thetas = _sgd_chains(eta, n_chains=1000, n_burn=2500, n_keep=10000, every=25,
                         seed=2)  # fmt: skip
    mean, se = _stationary_variance(thetas, Q)
    ou = eta * S**2 / (2 * LAMBDAS)
    exact = eta * S**2 / (LAMBDAS * (2 - eta * LAMBDAS))
    assert np.all(np.abs(exact - ou) < se)
    assert np.all(se < 0.03 * ou)
    assert np.all(np.abs(mean - ou) < 4 * se), (mean, ou, se)
    assert np.all(np.abs(mean - exact) < 4 * se), (mean, exact, se)


def test_sgd_iterates_stationary_variance_large_learning_rate():
    # eta lambda = 0.5 and 1.5: SGD's variance is 4/3 and 4 times the OU value;
    # the exact formula holds, the first-order one visibly does not.
    eta = 0.5
    thetas = _sgd_chains(eta, n_chains=200, n_burn=100, n_keep=1000, every=2,
                         seed=3)  # fmt: skip
    mean, se = _stationary_variance(thetas, Q)
    ou = eta * S**2 / (2 * LAMBDAS)
    exact = eta * S**2 / (LAMBDAS * (2 - eta * LAMBDAS))
    assert np.all(np.abs(mean - exact) < 4 * se), (mean, exact, se)
    assert np.all(np.abs(mean - ou) > 10 * se)


# --- the noise factor, paths, gradients ----------------------------------------------


def _logistic(w, batch):
    x, y = batch
    s = 2 * y - 1
    return jnp.mean(jnp.logaddexp(0.0, -s * (x @ w)))


def _logistic_data(n=7, p=3, seed=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p)), (rng.uniform(size=n) < 0.5).astype(np.float64)


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_noise_factor_is_minibatch_gradient_covariance(covariance, replace):
    # Per-sample gradients of the logistic loss by hand:
    # grad l_i = -s_i sigmoid(-s_i x_i.w) x_i. Sigma = c Cov_i / B, with the
    # finite-population factor c = (N - B) / (N - 1) without replacement
    # (Cochran, *Sampling Techniques*, 3rd ed. (1977), Chapter 2).
    x, y = _logistic_data()
    n, p = x.shape
    w = np.array([0.3, -0.7, 0.2])
    eta, B = 0.05, 3
    s = 2 * y - 1
    m = s * (x @ w)
    G = (-s / (1 + np.exp(m)))[:, None] * x
    c = 1.0 if replace else (n - B) / (n - 1)
    sigma = c / B * np.cov(G.T, bias=True)
    sme, theta0 = _build_sme(
        _logistic, jnp.asarray(w), eta, (x, y), B, covariance, replace
    )
    np.testing.assert_allclose(theta0, w)
    np.testing.assert_allclose(
        sme.drift(0.0, theta0, None), -G.mean(0), rtol=1e-12, atol=1e-14
    )
    L = sme.diffusion(0.0, theta0, None)
    if covariance == "full":
        assert L.shape == (p, n)  # (p x N: no p x p matrix)
        np.testing.assert_allclose(L @ L.T, eta * sigma, rtol=1e-10, atol=1e-16)
    else:
        np.testing.assert_allclose(
            L.as_matrix(), np.diag(np.sqrt(eta * np.diag(sigma))), rtol=1e-10
        )


def test_sgd_sde_tree_is_one_path_per_key():
    # A VirtualBrownianTree fixes the Brownian path by the key: refining dt0
    # converges to one path (Euler-Maruyama has strong order 1 for additive
    # noise), while another key gives another path.
    def final(key, dt0, eta=0.1, data=Z):
        return sgd_sde(
            _per_sample_quadratic(H2), jnp.zeros(2), eta, data=data, key=key,
            ts=np.array([1.0]), dt0=dt0,
        ).thetas[-1]  # fmt: skip

    k1, k2 = jax.random.split(jax.random.key(3))
    a, b = final(k1, 0.01), final(k1, 0.0025)
    size = _solve_sme._cached._cache_size()
    other = final(k2, 0.0025)
    spread = np.sqrt(0.1 * S**2 / (2 * LAMBDAS.min()))
    assert np.linalg.norm(a - b) < 0.05 * spread
    assert np.linalg.norm(b - other) > 0.05 * spread
    # No recompilation for a new key, learning rate, data values or an equal
    # re-definition of the loss (the same step grid).
    final(k2, 0.0025, eta=0.2, data=2 * Z)
    assert _solve_sme._cached._cache_size() == size


def test_sgd_sde_derivative_in_learning_rate():
    # With theta(0) = 0, linear drift and additive noise sqrt(eta) sigma dW, every
    # Euler-Maruyama iterate is proportional to sqrt(eta) on a fixed Brownian
    # path: d theta / d eta = theta / (2 eta). Forward mode (with independent
    # increments; the learning rate traced, so `dt0` is given).
    eta = 0.1

    def final(eta):
        return sgd_sde(
            _per_sample_quadratic(H2), jnp.zeros(2), eta, data=Z,
            key=jax.random.key(4), ts=np.array([0.2]), dt0=0.01,
            brownian="increments",
        ).thetas[-1]  # fmt: skip

    theta, tangent = jax.jvp(final, (eta,), (1.0,))
    assert np.linalg.norm(theta) > 0
    np.testing.assert_allclose(tangent, theta / (2 * eta), rtol=1e-10)


# --- bad input -----------------------------------------------------------------------


def test_errors():
    H = _spd([0.5, 1.0], seed=9)
    loss = _per_sample_quadratic(H)
    theta = jnp.zeros(2)
    key = jax.random.key(0)
    kw = dict(data=Z, key=key, t1=1.0)

    def vector_loss(params, batch):
        return params["w"] ** 2

    with pytest.raises(ValueError, match="real scalar"):
        gradient_flow_trajectory(vector_loss, {"w": jnp.ones(3)}, t1=1.0)
    with pytest.raises(ValueError, match="real scalar"):
        sgd_sde(lambda t, b: t * jnp.mean(b), theta, 0.1, **kw)
    with pytest.raises(ValueError, match="same leading"):
        sgd_sde(_logistic, jnp.zeros(3), 0.1, data=(np.ones((7, 3)), np.ones(6)),
                key=key, t1=1.0)  # fmt: skip
    for eta in (-0.1, 0.0, np.nan):
        with pytest.raises(ValueError, match="learning_rate"):
            sgd_sde(loss, theta, eta, **kw)
        with pytest.raises(ValueError, match="learning_rate"):
            gd_flow_distance(_quadratic(H), {"w": jnp.ones(2)}, eta, 5)
    with pytest.raises(ValueError, match=r"batch_size.*\[1, 16\]"):
        sgd_sde(loss, theta, 0.1, batch_size=17, **kw)
    with pytest.raises(ValueError, match="covariance"):
        sgd_sde(loss, theta, 0.1, covariance="lowrank", **kw)
    with pytest.raises(ValueError, match="brownian"):
        sgd_sde(loss, theta, 0.1, brownian="bridge", **kw)
    with pytest.raises(ValueError, match="needs `data=`"):
        sgd_sde(loss, theta, 0.1, data=None, key=key, t1=1.0)
    with pytest.raises(ValueError, match="mean of per-sample"):
        sgd_sde(lambda t, z: jnp.sum(0.5 * t @ t - z @ t), jnp.ones(2), 0.1, **kw)
    with pytest.raises(ValueError, match="strictly increasing"):
        sgd_sde(loss, theta, 0.1, data=Z, key=key, ts=np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="n_steps"):
        gd_flow_distance(_quadratic(H), {"w": jnp.ones(2)}, 0.1, 0)
    with pytest.raises(ValueError, match="t1"):
        gradient_flow_trajectory(_quadratic(H), {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="dt0"):
        jax.grad(lambda e: sgd_sde(loss, theta, e, **kw).thetas.sum())(0.1)
