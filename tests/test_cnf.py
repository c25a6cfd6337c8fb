"""`dynjax.CNF` and `dynjax.fit_density` (issue 11: continuous normalizing flows,
Chen et al. 2018; FFJORD, Grathwohl et al. 2019). Float64 unless stated."""

import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats

import dynjax


class _LinearField(eqx.Module):
    """f(t, x) = A x: the CNF with a closed-form density."""

    A: jax.Array

    def __call__(self, t, x):
        return self.A @ x


_A = np.array([[-0.3, 0.8, 0.1], [-0.5, 0.2, -0.4], [0.3, 0.6, -0.7]])


def _linear_cnf(A=_A, T=1.0):
    return dynjax.CNF(A.shape[0], func=_LinearField(jnp.asarray(A)), T=T)


def _linear_log_prob(A, T, x):
    # Reference: x(T) = expm(A T) x, and log p(x) = log N(x(T); 0, I) + T tr(A).
    z = scipy.linalg.expm(A * T) @ x
    base = scipy.stats.multivariate_normal(np.zeros(len(x)), np.eye(len(x)))
    return base.logpdf(z) + T * np.trace(A)


def _mlp_cnf(d=3, seed=0, width=16):
    return dynjax.CNF(d, key=jax.random.key(seed), width=width, depth=2)


_X3 = np.array([0.4, -0.7, 0.25])


def test_linear_log_prob_is_closed_form():
    T = 0.6
    cnf = _linear_cnf(T=T)
    rng = np.random.default_rng(0)
    for x in rng.normal(size=(3, 3)):
        lp = cnf.log_prob(jnp.asarray(x))
        assert lp.dtype == jnp.float64
        np.testing.assert_allclose(lp, _linear_log_prob(_A, T, x), rtol=0, atol=1e-6)


def test_linear_sample_is_pushforward_and_trajectory_applies():
    # Samples are expm(-A T) z for the documented base draw z = normal(key, (n, d)).
    cnf, key = _linear_cnf(T=0.6), jax.random.key(7)
    xs = cnf.sample(key, 6)
    z = np.asarray(jax.random.normal(key, (6, 3), jnp.float64))
    ref = z @ scipy.linalg.expm(-0.6 * _A).T
    np.testing.assert_allclose(xs, ref, rtol=0, atol=1e-7)
    # A CNF is an AbstractFlow: dynjax.trajectory transports x to z = expm(A T) x.
    traj = dynjax.trajectory(cnf, jnp.asarray(_X3), t1=0.6, n_save=2)
    np.testing.assert_allclose(
        traj.xs[-1], scipy.linalg.expm(0.6 * _A) @ _X3, rtol=0, atol=1e-7
    )


def test_mlp_log_prob_matches_liouville_reference():
    # Independent reference for a nonlinear field: SciPy (DOP853, 1e-12) integrates
    # x and the propagator Phi' = J(t, x) Phi; then log p(x) = log N(x(T)) +
    # log|det Phi(T)| (the change of variables, no trace integral involved).
    cnf = _mlp_cnf()
    d = 3
    f = jax.jit(lambda t, x: cnf.func(t, x))
    jac = jax.jit(jax.jacfwd(lambda t, x: cnf.func(t, x), argnums=1))

    def rhs(t, y):
        x, Phi = y[:d], y[d:].reshape(d, d)
        return np.concatenate(
            [np.asarray(f(t, x)), (np.asarray(jac(t, x)) @ Phi).ravel()]
        )

    y0 = np.concatenate([_X3, np.eye(d).ravel()])
    sol = scipy.integrate.solve_ivp(
        rhs, (0.0, 1.0), y0, method="DOP853", rtol=1e-12, atol=1e-12
    )
    zT, Phi = sol.y[:d, -1], sol.y[d:, -1].reshape(d, d)
    ref = scipy.stats.multivariate_normal(np.zeros(d), np.eye(d)).logpdf(zT)
    ref += np.linalg.slogdet(Phi)[1]
    assert abs(np.linalg.slogdet(Phi)[1]) > 0.01  # the flow is not volume-preserving
    np.testing.assert_allclose(cnf.log_prob(jnp.asarray(_X3)), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("probe, n_probes", [("rademacher", 1), ("gaussian", 4)])
def test_hutchinson_is_unbiased(probe, n_probes):
    # Acceptance 5a: the mean of 400 independent Hutchinson estimates (one key
    # each) is within 4 standard errors of the exact log-likelihood.
    cnf = _mlp_cnf()
    x = jnp.asarray(_X3)
    exact = cnf.log_prob(x)
    n = 400
    keys = jax.random.split(jax.random.key(1), n)
    fn = lambda k: cnf.log_prob(  # noqa: E731
        x, trace="hutchinson", key=k, n_probes=n_probes, probe=probe
    )
    est = np.asarray(jax.vmap(fn)(keys))
    se = est.std(ddof=1) / np.sqrt(n)
    assert se > 1e-4  # the estimator is stochastic here, so the check can fail
    assert abs(est.mean() - exact) < 4 * se, (est.mean(), exact, se)


def test_hutchinson_forward_and_reverse_modes_agree():
    # Same key = same probes: one jvp per probe and one shared vjp give the same
    # estimate (both equal eps . J eps).
    cnf, x, key = _mlp_cnf(), jnp.asarray(_X3), jax.random.key(5)
    kw = dict(trace="hutchinson", key=key, n_probes=3)
    fwd = cnf.log_prob(x, mode="forward", **kw)
    rev = cnf.log_prob(x, mode="reverse", **kw)
    np.testing.assert_allclose(fwd, rev, rtol=0, atol=1e-9)
    assert abs(fwd - cnf.log_prob(x)) > 1e-6  # an estimate, not the exact value


def test_float32_path():
    # float32 is the norm in training: a float32 model on float32 data runs with
    # no warning, to float32-sized errors against the float64 model.
    cnf = _mlp_cnf()
    x = jnp.asarray(_X3)
    cnf32 = jax.tree.map(
        lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, cnf
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        lp32 = cnf32.log_prob(x.astype(jnp.float32))
    assert lp32.dtype == jnp.float32 and np.isfinite(lp32)
    np.testing.assert_allclose(lp32, cnf.log_prob(x), rtol=0, atol=1e-4)


def test_vmap_and_jit():
    # jit(vmap(log_prob)) equals eager calls one sample at a time.
    cnf = _mlp_cnf()
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)))
    one_by_one = np.array([cnf.log_prob(x) for x in xs])
    batched = eqx.filter_jit(lambda m, x: jax.vmap(m.log_prob)(x))(cnf, xs)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12)


def test_grad_matches_finite_differences():
    # Fixed steps: log_prob is then a smooth function of the parameters, and the
    # gradient (through the solver and the exact trace) must match central
    # differences of it.
    cnf, x = _mlp_cnf(d=2), jnp.asarray(_X3[:2])
    kw = dict(stepsize_controller=dfx.ConstantStepSize(), dt0=0.1)
    grads = eqx.filter_grad(lambda m: m.log_prob(x, **kw))(cnf)
    layers = cnf.func.mlp.layers
    where = [(lambda m: m.func.mlp.layers[0].weight, (1, 2)),
             (lambda m: m.func.mlp.layers[1].bias, (3,))]  # fmt: skip
    for get, index in where:
        h = 1e-5

        def shifted(s, get=get, index=index):
            leaf = get(cnf)
            return eqx.tree_at(get, cnf, leaf.at[index].add(s)).log_prob(x, **kw)

        fd = (shifted(h) - shifted(-h)) / (2 * h)
        assert abs(fd) > 1e-3
        np.testing.assert_allclose(get(grads)[index], fd, rtol=1e-6)
    assert layers[0].weight.shape == (16, 3)  # time is the extra input


def test_fit_density_loss_is_mean_nll():
    # The loss of the first step is the negative mean of the closed-form linear
    # log-density. With A's off-diagonal part antisymmetric, eps^T A eps = tr(A)
    # for every Rademacher probe, so the Hutchinson loss (one key per sample per
    # step) equals it too. (The exact trace is trained in the 2-D Gaussian test.)
    A = np.array([[-0.4, 0.7], [-0.7, 0.3]])
    cnf = _linear_cnf(A)
    data = np.random.default_rng(2).normal(size=(32, 2))
    ref = -np.mean([_linear_log_prob(A, 1.0, x) for x in data])
    out = dynjax.fit_density(cnf, data, optax.sgd(1e-2), n_steps=2,
                             trace="hutchinson", key=jax.random.key(0),
                             progress=False)  # fmt: skip
    assert isinstance(out, dynjax.FitResult) and out.n_steps == 2
    np.testing.assert_allclose(out.losses[0], ref, rtol=0, atol=1e-6)
    # One SGD step along -grad(NLL) lowers the loss.
    assert out.losses[1] < out.losses[0]
    assert not np.allclose(out.model.func.A, A)


def _gaussian_data(m, S, n, seed):
    # Samples whitened to have exactly mean m and covariance S, so that the
    # best Gaussian fit to them is N(m, S) itself (no sampling error in the
    # reference).
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, len(m)))
    u -= u.mean(0)
    u = u @ np.linalg.inv(np.linalg.cholesky(np.cov(u.T, bias=True))).T
    return m + u @ np.linalg.cholesky(S).T


@pytest.mark.slow
def test_fit_density_recovers_2d_gaussian():
    # Acceptance 5b: a CNF fitted by maximum likelihood to samples of N(m, S)
    # (non-diagonal S) recovers log N(x; m, S) (SciPy) within 0.05 nats: the mean
    # absolute error over a grid of points within 2 sigma (Mahalanobis radius 2),
    # evaluated with the default adaptive solver; trained with fixed steps.
    m = np.array([0.5, -0.3])
    S = np.array([[1.0, 0.6], [0.6, 0.8]])
    data = _gaussian_data(m, S, 4096, seed=0)
    cnf = dynjax.CNF(2, key=jax.random.key(0), width=16, depth=2)
    n_steps = 600
    opts = dict(stepsize_controller=dfx.ConstantStepSize(), dt0=0.25, throw=False)
    out = dynjax.fit_density(
        cnf,
        data,
        optax.adam(optax.cosine_decay_schedule(1e-2, n_steps)),
        n_steps=n_steps,
        batch_size=256,
        key=jax.random.key(1),
        log_prob_options=opts,
        chunk_size=n_steps,
        progress=False,
    )
    assert out.result == dynjax.RESULTS.successful
    g = np.linspace(-2, 2, 9)
    U = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    U = U[np.linalg.norm(U, axis=1) <= 2]
    X = m + U @ np.linalg.cholesky(S).T
    lp = np.asarray(jax.vmap(out.model.log_prob)(jnp.asarray(X)))
    ref = scipy.stats.multivariate_normal(m, S).logpdf(X)
    mae = np.mean(np.abs(lp - ref))
    assert mae < 0.05, mae


def test_bad_input():
    cnf = _linear_cnf()
    x = jnp.asarray(_X3)
    opt = optax.sgd(1e-2)
    data = np.zeros((8, 3))
    with pytest.raises(ValueError, match="non-finite"):
        dynjax.fit_density(cnf, data.copy() + np.nan, opt, n_steps=1,
                           key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match=r"dimension 2 .* d=3"):
        dynjax.fit_density(cnf, np.zeros((8, 2)), opt, n_steps=1,
                           key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match=r"shape \(n, d\).*data\[:, None\]"):
        cnf1 = dynjax.CNF(1, func=_LinearField(jnp.eye(1)))
        dynjax.fit_density(cnf1, np.zeros(8), opt, n_steps=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`trace` must be"):
        cnf.log_prob(x, trace="stochastic")
    with pytest.raises(ValueError, match="`trace` must be"):
        dynjax.fit_density(cnf, data, opt, n_steps=1, trace="hutch",
                           key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match="key"):
        cnf.log_prob(x, trace="hutchinson")
    with pytest.raises(ValueError, match="probe"):
        cnf.log_prob(x, trace="hutchinson", key=jax.random.key(0), probe="normal")
    with pytest.raises(ValueError, match="dimension 2 but the system has"):
        cnf.log_prob(x[:2])
    with pytest.raises(ValueError, match="non-finite"):
        cnf.log_prob(x.at[0].set(np.nan))
    with pytest.raises(ValueError, match=r"shape \(3,\).*data_size=3"):
        dynjax.CNF(3, func=_LinearField(jnp.ones((2, 3))))
    with pytest.raises(ValueError, match="key="):
        dynjax.CNF(3)
    with pytest.raises(ValueError, match="`T` must be"):
        dynjax.CNF(3, key=jax.random.key(0), T=0.0)
    with pytest.raises(ValueError, match="`n` must be"):
        cnf.sample(jax.random.key(0), 0)


class _TimeConcatMLP(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, x):
        return self.mlp(jnp.concatenate([x, t[None]]))


def test_func_called_as_mlp_of_x_says_how_to_wrap_it():
    # A bare eqx.nn.MLP is called as mlp(x), not func(t, x).
    mlp = eqx.nn.MLP(2, 2, 8, 1, key=jax.random.key(0))
    match = r"(?s)func\(t, x\)`, with a scalar time.*MLP.__call__.*jnp.concatenate"
    with pytest.raises(ValueError, match=match):
        dynjax.CNF(2, func=mlp)
    # The wrapping the message suggests builds a CNF whose field is the MLP's.
    mlp3 = eqx.nn.MLP(3, 2, 8, 1, key=jax.random.key(0))
    cnf = dynjax.CNF(2, func=_TimeConcatMLP(mlp3))
    x, t = jnp.array([0.3, -0.2]), jnp.asarray(0.5)
    np.testing.assert_array_equal(
        cnf.vector_field(t, x), mlp3(jnp.array([0.3, -0.2, 0.5]))
    )
