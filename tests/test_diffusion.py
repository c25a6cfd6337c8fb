"""Score-based diffusion: SDEs, denoising score matching, samplers, likelihoods.

Every check uses Gaussian data N(m, S) (non-diagonal S), whose noised marginals
are Gaussian, N(alpha_t m, alpha_t^2 S + sigma_t^2 I), so the exact score is
known in closed form and no training is needed. The schedules below are
written out from Song et al., "Score-based generative modeling through
stochastic differential equations", ICLR (2021), Appendix B (eqs. 23-30),
independently of dynjax's implementation.
"""

import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats

import dynjax


# --- references (Song et al. 2021, Appendix B), T = 1 -----------------------

DEFAULTS = {
    "vp": {"beta_min": 0.1, "beta_max": 20.0},
    "subvp": {"beta_min": 0.1, "beta_max": 20.0},
    "ve": {"sigma_min": 0.01, "sigma_max": 50.0},
}
# Schedules whose prior matches p_T to < 1e-4 nats for the data below: with
# them the model density is the data density itself.
LONG = {
    "vp": {"beta_min": 0.1, "beta_max": 40.0},
    "subvp": {"beta_min": 0.1, "beta_max": 40.0},
    "ve": {"sigma_min": 0.01, "sigma_max": 1e4},
}
KINDS = ("vp", "subvp", "ve")
# d = 5 repeats the d = 2 checks with a compiled program of its own (~3 s of CPU
# each): run by CI, deselected by `-m "not slow"`.
DIMS = (2, pytest.param(5, marks=pytest.mark.slow))


def make_sde(kind, params):
    cls = {"vp": dynjax.VPSDE, "subvp": dynjax.SubVPSDE, "ve": dynjax.VESDE}[kind]
    return cls(**params)


def song(kind, params, t):
    """`(f(t), g(t)^2, alpha_t, sigma_t^2, prior variance)` for drift `f(t) x`."""
    if kind in ("vp", "subvp"):
        b0, b1 = params["beta_min"], params["beta_max"]
        beta = b0 + t * (b1 - b0)
        B = b0 * t + 0.5 * t**2 * (b1 - b0)  # int_0^t beta
        if kind == "vp":  # eq. 29 (DDPM)
            return -0.5 * beta, beta, jnp.exp(-0.5 * B), 1 - jnp.exp(-B), 1.0
        g2 = beta * (1 - jnp.exp(-2 * B))  # eq. 30 (sub-VP)
        return -0.5 * beta, g2, jnp.exp(-0.5 * B), (1 - jnp.exp(-B)) ** 2, 1.0
    s0, s1 = params["sigma_min"], params["sigma_max"]
    sigma = s0 * (s1 / s0) ** t  # eq. 29 (SMLD)
    g2 = sigma**2 * 2 * jnp.log(s1 / s0)
    return 0.0 * t, g2, 1.0 + 0.0 * t, sigma**2 - s0**2, s1**2


def gaussian_data(d):
    if d == 2:
        return np.array([1.0, -0.5]), np.array([[1.0, 0.6], [0.6, 0.8]])
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return rng.normal(size=d), Q @ np.diag(np.linspace(0.3, 2.0, d)) @ Q.T


class GaussianScore(eqx.Module):
    """The exact score of the noised Gaussian data, `-Sigma_t^{-1}(x - alpha_t m)`,
    plus a constant `shift` (zero by default).

    The schedule's parameters and the shift are array leaves, so one compiled
    verb serves every schedule of a kind and every shift."""

    m: jax.Array
    U: jax.Array
    lam: jax.Array
    params: dict
    shift: jax.Array
    kind: str = eqx.field(static=True)

    def __init__(self, kind, params, m, S, shift=None):
        lam, U = np.linalg.eigh(S)
        self.m, self.U, self.lam = jnp.asarray(m), jnp.asarray(U), jnp.asarray(lam)
        self.params = {k: jnp.asarray(v) for k, v in params.items()}
        self.shift = jnp.zeros_like(self.m) if shift is None else jnp.asarray(shift)
        self.kind = kind

    def __call__(self, t, x):
        _, _, alpha, sigma2, _ = song(self.kind, self.params, t)
        var = alpha**2 * self.lam + sigma2
        return -self.U @ ((self.U.T @ (x - alpha * self.m)) / var) + self.shift


def marginal_cov(kind, params, S, t):
    _, _, alpha, sigma2, _ = song(kind, params, t)
    return float(alpha), float(alpha) ** 2 * S + float(sigma2) * np.eye(len(S))


def sqrtm(A):
    lam, U = np.linalg.eigh(A)
    return U @ np.diag(np.sqrt(lam)) @ U.T


def transport(kind, params, m, S, t_from, t_to):
    """The exact probability-flow map from time `t_from` to `t_to`: affine,
    `x -> mu_to + Sigma_to^{1/2} Sigma_from^{-1/2} (x - mu_from)` (the
    covariances commute, so this solves the linear ODE)."""
    a0, C0 = marginal_cov(kind, params, S, t_from)
    a1, C1 = marginal_cov(kind, params, S, t_to)
    A = sqrtm(C1) @ np.linalg.inv(sqrtm(C0))
    return lambda x: a1 * m + (x - a0 * m) @ A.T


def model_gaussian(kind, params, m, S, t_min):
    """The density of the prior pulled back by the exact transport from T to
    t_min: Gaussian, `N(mu_tmin - A^{-1} mu_T, p^2 A^{-2})` with
    `A = Sigma_T^{1/2} Sigma_tmin^{-1/2}`."""
    a0, C0 = marginal_cov(kind, params, S, t_min)
    a1, C1 = marginal_cov(kind, params, S, 1.0)
    prior_var = song(kind, params, 1.0)[4]
    A_inv = sqrtm(C0) @ np.linalg.inv(sqrtm(C1))
    mean = a0 * m - A_inv @ (a1 * m)
    return scipy.stats.multivariate_normal(mean, prior_var * A_inv @ A_inv.T)


# --- the SDEs -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sde_coefficients_and_marginals(kind):
    # float64. Drift, diffusion and marginals against Song et al. App. B; the
    # marginals also against the moment ODEs of dx = f x dt + g dW,
    # alpha' = f alpha and v' = 2 f v + g^2 (v = sigma^2), integrated by SciPy.
    params = DEFAULTS[kind]
    sde = make_sde(kind, params)
    ts = np.linspace(0.0, 1.0, 11)
    x = jnp.array([0.7, -1.3])
    for t in ts:
        f, g2, alpha, sigma2, _ = song(kind, params, t)
        np.testing.assert_allclose(sde.drift(t, x), f * x, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(sde.diffusion(t) ** 2, g2, rtol=1e-12, atol=1e-14)
        a, s = sde.marginal(t)
        np.testing.assert_allclose(a, alpha, rtol=1e-12)
        np.testing.assert_allclose(s**2, sigma2, rtol=1e-12, atol=1e-14)

    def moments(t, y):
        f = float(sde.drift(t, jnp.ones(1))[0])
        g2 = float(sde.diffusion(t)) ** 2
        return [f * y[0], 2 * f * y[1] + g2]

    sol = scipy.integrate.solve_ivp(
        moments, (0.0, 1.0), [1.0, 0.0], "DOP853", ts, rtol=1e-12, atol=1e-12
    )
    alpha, sigma = jax.vmap(sde.marginal)(jnp.asarray(ts))
    np.testing.assert_allclose(alpha, sol.y[0], rtol=1e-8)
    np.testing.assert_allclose(sigma**2, sol.y[1], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_prior(kind):
    # float64. log-density against scipy; draws: variance within 4 s.e.
    params = DEFAULTS[kind]
    sde = make_sde(kind, params)
    prior_var = song(kind, params, 1.0)[4]
    x = jnp.array([0.3, -2.0, 1.5])
    expected = scipy.stats.multivariate_normal(np.zeros(3), prior_var).logpdf(x)
    np.testing.assert_allclose(sde.prior_log_prob(x), expected, rtol=1e-12)
    n, d = 4000, 3
    keys = jax.random.split(jax.random.key(0), n)
    z = jax.vmap(lambda k: sde.prior_sample(k, d))(keys)
    assert z.shape == (n, d) and z.dtype == jnp.float64
    var = np.var(np.asarray(z), axis=0)
    assert np.all(np.abs(var - prior_var) < 4 * prior_var * np.sqrt(2 / n))


def test_forward_terms_reach_the_marginal():
    # float64. `sde.terms` (shared by every SDE; sub-VP has the richest g)
    # integrated by diffrax (Euler-Maruyama, 200 steps, a VirtualBrownianTree)
    # from a fixed x0 to t = 0.5: mean and variance of 2000 x 3 coordinates
    # against alpha_t x0 and sigma_t^2 (App. B) within 4 s.e.
    kind = "subvp"
    params = DEFAULTS[kind]
    sde = make_sde(kind, params)
    x0 = jnp.array([1.0, -2.0, 0.5])
    t1, n = 0.5, 2000

    def one(key):
        bm = dfx.VirtualBrownianTree(0.0, t1, tol=t1 / 400, shape=(3,), key=key)
        sol = dfx.diffeqsolve(
            sde.terms(bm), dfx.Euler(), 0.0, t1, t1 / 200, x0, max_steps=300
        )
        return sol.ys[-1]

    xs = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), n)))
    _, _, alpha, sigma2, _ = song(kind, params, t1)
    z = (xs - float(alpha) * np.asarray(x0)) / np.sqrt(float(sigma2))
    assert np.all(np.abs(z.mean(0)) < 4 / np.sqrt(n))
    assert np.abs(z.var() - 1) < 4 * np.sqrt(2 / (3 * n))


def test_sde_parameter_errors():
    with pytest.raises(ValueError, match="sigma_max` must be > `sigma_min"):
        dynjax.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="beta_max` must be >= `beta_min"):
        dynjax.VPSDE(beta_min=2.0, beta_max=1.0)
    with pytest.raises(ValueError, match="`T` must be > 0"):
        dynjax.SubVPSDE(T=0.0)


# --- samplers with the exact score --------------------------------------------


@pytest.mark.slow  # (8-13 s of CPU each, 92 % of it in the Brownian tree)
@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("kind", KINDS)
def test_reverse_sde_samples_match_data(kind, d):
    # float64. 10^4 reverse-SDE samples (Euler-Maruyama, 200 steps, t_min=1e-3)
    # with the exact score. Statistic: each mean component within 4 standard
    # errors sqrt(S_ii / n) of m, each covariance entry within 4 s.e. of S, the
    # s.e. from the Wishart variance (S_ij^2 + S_ii S_jj) / n. (The exact
    # distribution of the discrete chain, by the affine moment recursion,
    # differs from N(m, S) by at most 0.5 s.e. at 200 steps: Euler's bias and the
    # prior's mismatch with p_T.)
    params = DEFAULTS[kind]
    m, S = gaussian_data(d)
    score = GaussianScore(kind, params, m, S)
    n = 10_000
    out = dynjax.reverse_sde_sample(
        score, make_sde(kind, params), jax.random.key(3), n, d, n_steps=200
    )
    xs = np.asarray(out.xs)
    assert xs.shape == (n, d) and out.xs.dtype == jnp.float64
    assert np.all(np.asarray(out.stats["num_steps"]) == 200)
    se_mean = np.sqrt(np.diag(S) / n)
    assert np.all(np.abs(xs.mean(0) - m) < 4 * se_mean)
    se_cov = np.sqrt((S**2 + np.outer(np.diag(S), np.diag(S))) / n)
    assert np.all(np.abs(np.cov(xs.T) - S) < 4 * se_cov)


@pytest.mark.slow  # (~7 s of CPU, mostly compiling the Lévy-area tree)
def test_reverse_sde_other_solver():
    # float64. Another diffrax SDE solver: SRA1 (order 1.5 for additive noise;
    # it needs space-time Lévy area, which the tree then provides), 50 steps,
    # 4000 samples of the 2-D data under the VP SDE: moments within 4 s.e. as
    # above.
    params = DEFAULTS["vp"]
    m, S = gaussian_data(2)
    score = GaussianScore("vp", params, m, S)
    n = 4000
    out = dynjax.reverse_sde_sample(
        score, dynjax.VPSDE(), jax.random.key(4), n, 2, n_steps=50, solver=dfx.SRA1()
    )
    xs = np.asarray(out.xs)
    assert np.all(np.abs(xs.mean(0) - m) < 4 * np.sqrt(np.diag(S) / n))
    se_cov = np.sqrt((S**2 + np.outer(np.diag(S), np.diag(S))) / n)
    assert np.all(np.abs(np.cov(xs.T) - S) < 4 * se_cov)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kind", KINDS)
def test_probability_flow_transports_prior_quantiles(kind, d):
    # float64. probability_flow_sample maps each prior draw x_T onto its image
    # under the exact affine transport from T to t_min (the quantile map of the
    # prior onto p_{t_min} = N(alpha m, alpha^2 S + sigma^2 I)) within 1e-4.
    params = DEFAULTS[kind]
    m, S = gaussian_data(d)
    score = GaussianScore(kind, params, m, S)
    sde = make_sde(kind, params)
    tight = dfx.PIDController(rtol=1e-10, atol=1e-10)
    t_min = 1e-3
    out = dynjax.probability_flow_sample(
        score, sde, jax.random.key(5), 64, d, t_min=t_min, stepsize_controller=tight
    )
    # (the documented prior draws)
    keys = jax.random.split(jax.random.split(jax.random.key(5))[0], 64)
    x_T = jax.vmap(lambda k: sde.prior_sample(k, d))(keys)
    np.testing.assert_allclose(out.x_T, x_T, rtol=1e-14)
    expected = transport(kind, params, m, S, 1.0, t_min)(np.asarray(x_T))
    np.testing.assert_allclose(out.xs, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_dynjax_verbs_on_the_probability_flow(kind):
    # float64. With the exact score the probability-flow ODE is linear,
    # dx/dt = f x + (g^2 / 2) Sigma_t^{-1} (x - alpha_t m): linearize's Jacobian
    # and eigenvalues f + g^2 / (2 (alpha_t^2 lambda_i + sigma_t^2)) (lambda_i
    # the eigenvalues of S) against the closed form, and find_equilibria's point
    # against the solution of the linear system.
    params = DEFAULTS[kind]
    m, S = gaussian_data(5)
    score = GaussianScore(kind, params, m, S)
    flow = dynjax.ProbabilityFlow(score, make_sde(kind, params))
    t = 0.3
    f, g2, alpha, sigma2, _ = (float(v) for v in song(kind, params, t))
    lin = dynjax.linearize(flow, jnp.zeros(5), t=t)
    C_inv = np.linalg.inv(alpha**2 * S + sigma2 * np.eye(5))
    J = f * np.eye(5) + 0.5 * g2 * C_inv
    np.testing.assert_allclose(lin.jacobian, J, rtol=1e-10)
    lam = np.linalg.eigvalsh(S)
    expected = np.sort(f + g2 / (2 * (alpha**2 * lam + sigma2)))
    np.testing.assert_allclose(np.sort(lin.eigenvalues.real), expected, rtol=1e-10)
    np.testing.assert_allclose(lin.eigenvalues.imag, 0, atol=1e-10)
    if kind == "vp":  # (one kind suffices: the same code path)
        x_star = np.linalg.solve(J, 0.5 * g2 * C_inv @ (alpha * m))
        eq = dynjax.find_equilibria(flow, jnp.zeros((3, 5)), t=t)
        np.testing.assert_allclose(eq.unique[0], x_star, rtol=1e-8, atol=1e-10)

    # dynjax.trajectory (forward, t_min = 1e-5 -> T, where p_{t_min} = N(m, S)
    # to 1e-6) maps the data's quantiles m + S^{1/2} z onto the same quantiles
    # of p_T, alpha_T m + Sigma_T^{1/2} z, within 1e-4 (relative to p_T's
    # scale).
    z = np.concatenate([np.eye(5), -np.eye(5)]) * scipy.stats.norm.ppf(0.975)
    a_T, C_T = marginal_cov(kind, params, S, 1.0)
    tight = dfx.PIDController(rtol=1e-10, atol=1e-10)
    pushed = [
        dynjax.trajectory(
            flow, q, t0=1e-5, t1=1.0, n_save=2, stepsize_controller=tight
        ).xs[-1]
        for q in m + z @ sqrtm(S).T
    ]
    scale = np.sqrt(song(kind, params, 1.0)[4])  # (VE: p_T is ~ 50 wide)
    np.testing.assert_allclose(
        np.stack(pushed) / scale, (a_T * m + z @ sqrtm(C_T).T) / scale, atol=1e-4
    )


# --- likelihoods --------------------------------------------------------------


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kind", KINDS)
def test_log_likelihood_exact_trace(kind, d):
    # float64, exact trace, t_min = 1e-5. (1) Default schedules: the model
    # density (the prior pulled back by the exact transport: a Gaussian, by
    # scipy) within 1e-3 nats; bits/dim = -log p / (d ln 2). (2) Schedules
    # whose prior matches p_T (LONG): the data's own log-density,
    # scipy.stats.multivariate_normal(m, S).logpdf, within 1e-3 nats.
    m, S = gaussian_data(d)
    rng = np.random.default_rng(d)
    x = rng.multivariate_normal(m, S, size=8)
    x[-1] = m + 3.0  # a point in the tail
    for params, reference in (
        (DEFAULTS[kind], model_gaussian(kind, DEFAULTS[kind], m, S, 1e-5)),
        (LONG[kind], scipy.stats.multivariate_normal(m, S)),
    ):
        score = GaussianScore(kind, params, m, S)
        out = dynjax.probability_flow_log_likelihood(
            score, make_sde(kind, params), jnp.asarray(x)
        )
        expected = reference.logpdf(x)
        np.testing.assert_allclose(out.log_likelihood, expected, rtol=0, atol=1e-3)
        np.testing.assert_allclose(
            out.bits_per_dim, -expected / (d * np.log(2)), rtol=0, atol=1e-3
        )
        np.testing.assert_allclose(
            out.x_T, transport(kind, params, m, S, 1e-5, 1.0)(x), atol=1e-4
        )


@pytest.mark.parametrize(
    "kind, probe",
    [
        ("vp", "rademacher"),
        pytest.param("subvp", "gaussian", marks=pytest.mark.slow),
        pytest.param("ve", "rademacher", marks=pytest.mark.slow),
    ],
)
def test_log_likelihood_hutchinson(kind, probe):
    # float64, d = 5, 2048 probes per sample. With the exact score the
    # divergence integral along any path is eps^T M eps with
    # M = int J dt = (logm Sigma_T - logm Sigma_tmin) / 2, so the estimate's
    # standard error is known: sqrt(2 (|M|_F^2 - sum M_ii^2) / n_probes)
    # (Rademacher) or sqrt(2 |M|_F^2 / n_probes) (Gaussian). Each sample's
    # estimate is within 4 s.e. of the model density (scipy).
    params = DEFAULTS[kind]
    d, t_min, n_probes = 5, 1e-5, 2048
    m, S = gaussian_data(d)
    x = np.random.default_rng(1).multivariate_normal(m, S, size=4)
    out = dynjax.probability_flow_log_likelihood(
        GaussianScore(kind, params, m, S),
        make_sde(kind, params),
        jnp.asarray(x),
        trace="hutchinson",
        key=jax.random.key(6),
        n_probes=n_probes,
        probe=probe,
    )
    _, C0 = marginal_cov(kind, params, S, t_min)
    _, C1 = marginal_cov(kind, params, S, 1.0)
    M = 0.5 * (scipy.linalg.logm(C1) - scipy.linalg.logm(C0)).real
    var = 2 * np.sum(M**2)
    if probe == "rademacher":
        var -= 2 * np.sum(np.diag(M) ** 2)
    se = np.sqrt(var / n_probes)
    expected = model_gaussian(kind, params, m, S, t_min).logpdf(x)
    assert np.all(np.abs(np.asarray(out.log_likelihood) - expected) < 4 * se)
    assert np.any(np.abs(np.asarray(out.log_likelihood) - expected) > 1e-6)


# --- denoising score matching -------------------------------------------------


def dsm_minimum(kind, params, S, t_min):
    """E_t[d - sigma_t^2 E|grad log p_t|^2] = E_t tr(alpha_t^2 S Sigma_t^{-1}),
    t ~ U(t_min, 1): the loss at the exact score (Tweedie's formula)."""
    lam = np.linalg.eigvalsh(S)

    def integrand(t):
        _, _, alpha, sigma2, _ = song(kind, params, t)
        alpha, sigma2 = float(alpha), float(sigma2)
        return np.sum(alpha**2 * lam / (alpha**2 * lam + sigma2))

    value, _ = scipy.integrate.quad(integrand, t_min, 1.0, epsabs=1e-12, limit=200)
    return value / (1.0 - t_min)


def mean_sigma2(kind, params, t_min):
    value, _ = scipy.integrate.quad(
        lambda t: float(song(kind, params, t)[3]), t_min, 1.0, epsabs=1e-12
    )
    return value / (1.0 - t_min)


@pytest.mark.parametrize("kind", KINDS)
def test_score_matching_loss_at_the_exact_score(kind):
    # float64, d = 2, t_min = 1e-3, 2 * 10^4 single-sample losses (vmapped).
    # (1) At the exact score the loss is its irreducible minimum
    # E_t tr(alpha_t^2 S Sigma_t^{-1}) (scipy quad): mean within 4 s.e.
    # (2) A score shifted by a constant c costs |c|^2 E_t[sigma_t^2] more
    # (scipy quad): the paired difference (same keys) within 4 s.e.
    params = DEFAULTS[kind]
    sde = make_sde(kind, params)
    m, S = gaussian_data(2)
    score = GaussianScore(kind, params, m, S)
    n, t_min = 20_000, 1e-3
    x = jnp.asarray(np.random.default_rng(2).multivariate_normal(m, S, size=n))
    keys = jax.random.split(jax.random.key(7), n)

    def losses(model):
        loss = lambda xi, k: dynjax.score_matching_loss(  # noqa: E731
            model, sde, xi[None], k, t_min=t_min
        )
        return np.asarray(jax.vmap(loss)(x, keys))

    exact = losses(score)
    expected = dsm_minimum(kind, params, S, t_min)
    assert abs(exact.mean() - expected) < 4 * exact.std() / np.sqrt(n)
    c = jnp.array([0.3, -0.2])
    diff = losses(GaussianScore(kind, params, m, S, shift=c)) - exact
    expected_diff = float(c @ c) * mean_sigma2(kind, params, t_min)
    assert abs(diff.mean() - expected_diff) < 4 * diff.std() / np.sqrt(n)


def test_score_matching_loss_gradient():
    # float64. jax.grad of the loss with respect to the score model's mean
    # parameter against central finite differences (fixed key).
    sde = dynjax.VPSDE()
    m, S = gaussian_data(2)
    x = jnp.asarray(np.random.default_rng(3).multivariate_normal(m, S, size=64))
    key = jax.random.key(9)

    def loss(mean):
        model = GaussianScore("vp", DEFAULTS["vp"], m, S)
        model = eqx.tree_at(lambda s: s.m, model, mean)
        return dynjax.score_matching_loss(model, sde, x, key)

    mean0 = jnp.asarray(m) + 0.2
    grad = jax.grad(loss)(mean0)
    h = 1e-5
    fd = [(loss(mean0 + h * e) - loss(mean0 - h * e)) / (2 * h) for e in jnp.eye(2)]
    np.testing.assert_allclose(grad, jnp.stack(fd), rtol=1e-6)
    assert np.all(np.abs(np.asarray(grad)) > 1e-3)


# --- float32 ------------------------------------------------------------------


def test_float32():
    # float32 (x64 switched off): every verb runs and returns float32, with
    # float32-sized errors against the float64 references above.
    m, S = gaussian_data(2)
    params = DEFAULTS["vp"]
    with jax.enable_x64(False):
        sde = dynjax.VPSDE()
        score = GaussianScore("vp", params, m.astype(np.float32), S.astype(np.float32))
        # float32 is the norm for diffusion models: no verb warns.
        x = jnp.asarray(m + 0.3, dtype=jnp.float32)[None]
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            pf = dynjax.probability_flow_sample(score, sde, jax.random.key(0), 16, 2)
            sde_out = dynjax.reverse_sde_sample(
                score, sde, jax.random.key(1), 1000, 2, n_steps=100
            )
            ll = dynjax.probability_flow_log_likelihood(score, sde, x)
        loss = dynjax.score_matching_loss(score, sde, x, jax.random.key(2))
        for value in (pf.xs, sde_out.xs, ll.log_likelihood, loss):
            assert value.dtype == jnp.float32
        x_T = np.asarray(pf.x_T, dtype=np.float64)
        xs = np.asarray(pf.xs, dtype=np.float64)
        sde_xs = np.asarray(sde_out.xs, dtype=np.float64)
        ll_value = float(ll.log_likelihood[0])
    np.testing.assert_allclose(
        xs, transport("vp", params, m, S, 1.0, 1e-3)(x_T), atol=1e-3
    )
    n = sde_xs.shape[0]
    assert np.all(np.abs(sde_xs.mean(0) - m) < 4 * np.sqrt(np.diag(S) / n))
    expected = model_gaussian("vp", params, m, S, 1e-5).logpdf(m + 0.3)
    assert abs(ll_value - expected) < 1e-3


# --- bad input ----------------------------------------------------------------


def wrong_dim_score(t, x):
    return jnp.concatenate([x, x])


def test_score_output_dimension_mismatch():
    sde = dynjax.VPSDE()
    x = jnp.ones((4, 3))
    match = r"returned shape \(6,\) for data of dimension d=3.*shape \(3,\)"
    with pytest.raises(ValueError, match=match):
        dynjax.score_matching_loss(wrong_dim_score, sde, x, jax.random.key(0))
    with pytest.raises(ValueError, match=match):
        dynjax.reverse_sde_sample(wrong_dim_score, sde, jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match=match):
        dynjax.probability_flow_sample(wrong_dim_score, sde, jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match=match):
        dynjax.probability_flow_log_likelihood(wrong_dim_score, sde, x)


def test_score_model_built_for_another_dimension():
    # A network built for d=2 called with d=3 fails inside the model (a shape
    # error of its first layer); the verbs say which dimension to check.
    mlp = eqx.nn.MLP(3, 2, 8, 1, key=jax.random.key(0))
    score = lambda t, x: mlp(jnp.concatenate([x, t[None]]))  # noqa: E731
    sde = dynjax.VPSDE()
    match = (
        r"(?s)`score_model\(t, x\)` failed for a scalar time `t` and `x` of shape "
        r"\(3,\) and dtype float64.*Check that d=3.*matches the dimension"
    )
    with pytest.raises(ValueError, match=match):
        dynjax.reverse_sde_sample(score, sde, jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match=match):
        dynjax.probability_flow_log_likelihood(score, sde, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=match):
        dynjax.score_matching_loss(score, sde, jnp.ones((4, 3)), jax.random.key(0))
    # ... and run with the dimension the model was built for.
    out = dynjax.reverse_sde_sample(score, sde, jax.random.key(0), 4, 2, n_steps=5)
    assert out.xs.shape == (4, 2)


def test_bad_times():
    sde = dynjax.VESDE()
    score = lambda t, x: -x  # noqa: E731
    x = jnp.ones((4, 2))
    key = jax.random.key(0)
    for t_min in (0.0, -1e-3):
        with pytest.raises(ValueError, match="`t_min` must be > 0"):
            dynjax.score_matching_loss(score, sde, x, key, t_min=t_min)
        with pytest.raises(ValueError, match="`t_min` must be > 0"):
            dynjax.reverse_sde_sample(score, sde, key, 4, 2, t_min=t_min)
        with pytest.raises(ValueError, match="`t_min` must be > 0"):
            dynjax.probability_flow_log_likelihood(score, sde, x, t_min=t_min)
    # t_min >= T: the samplers would integrate from T "down" to a later time
    for t_min in (1.0, 2.0):
        with pytest.raises(ValueError, match="must be below the SDE's final time"):
            dynjax.reverse_sde_sample(score, sde, key, 4, 2, t_min=t_min)
        with pytest.raises(ValueError, match="must be below the SDE's final time"):
            dynjax.probability_flow_sample(score, sde, key, 4, 2, t_min=t_min)
        with pytest.raises(ValueError, match="must be below the SDE's final time"):
            dynjax.score_matching_loss(score, sde, x, key, t_min=t_min)


def test_bad_data():
    sde = dynjax.SubVPSDE()
    score = lambda t, x: -x  # noqa: E731
    x = jnp.ones((4, 2)).at[2, 1].set(jnp.nan)
    with pytest.raises(ValueError, match="non-finite values.*remove or impute"):
        dynjax.score_matching_loss(score, sde, x, jax.random.key(0))
    with pytest.raises(ValueError, match="non-finite values.*remove or impute"):
        dynjax.probability_flow_log_likelihood(score, sde, x)
    with pytest.raises(ValueError, match=r"shape \(n, d\).*x\[None\]"):
        dynjax.probability_flow_log_likelihood(score, sde, jnp.ones(2))
    with pytest.raises(ValueError, match="`n` must be a positive int"):
        dynjax.reverse_sde_sample(score, sde, jax.random.key(0), 0, 2)
    with pytest.raises(ValueError, match="`weighting` must be"):
        dynjax.score_matching_loss(score, sde, x[:2], jax.random.key(0), weighting="x")
    with pytest.raises(ValueError, match="pass `key="):
        dynjax.probability_flow_log_likelihood(score, sde, x[:2], trace="hutchinson")
    with pytest.raises(ValueError, match="`sde` must be a dynjax SDE"):
        dynjax.probability_flow_sample(score, "vp", jax.random.key(0), 4, 2)
