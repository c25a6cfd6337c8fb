"""Training as a dynamical system (issue 14): `GradientFlow`, `OptimizerMap`,
`StochasticOptimizerMap`, `minibatch_indices`, `sharpness` and
`max_stable_learning_rate`.

Every expected value is derived independently of dynjax: matrix powers and
`scipy.linalg.expm` for quadratic losses, eigenvalues of hand-derived companion
matrices for momentum, a Python loop of optax updates, dense Hessians from
`jax.hessian` and `numpy.linalg.eigvalsh`, power iteration written here, and a
NumPy QR product of the random matrices of linearized SGD steps.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

import dynjax


# --- a quadratic loss with a known, non-diagonal Hessian -----------------------------

# (Seed 42, not 0: with seed 0 the eigenvectors would be the columns of dynjax's
# default initial tangent frame, drawn from the same NumPy generator, and the
# Lyapunov frame would start exactly on invariant directions.)
_RNG = np.random.default_rng(42)
_Q, _ = np.linalg.qr(_RNG.normal(size=(4, 4)))
_LAMBDAS = np.array([0.5, 1.5, 3.0, 6.0])
_H = _Q @ np.diag(_LAMBDAS) @ _Q.T
_E0 = _RNG.normal(size=4)


def _quadratic(params, batch):
    # J = 1/2 e^T H e with e the concatenation of two leaves (a dict pytree, so
    # the flattening is exercised): e = (a, b.ravel()).
    e = jnp.concatenate([params["a"], params["b"].ravel()])
    return 0.5 * e @ jnp.asarray(_H) @ e


def _as_params(e):
    e = jnp.asarray(e)
    return {"a": e[:1], "b": e[1:].reshape(1, 3)}


_PARAMS = _as_params(np.zeros(4))


def test_gradient_descent_iterates_are_matrix_powers():
    # GD on J = 1/2 e^T H e is e_{k+1} = (I - eta H) e_k.
    eta = 0.2
    gd = dynjax.OptimizerMap(_quadratic, optax.sgd(eta), _PARAMS)
    assert gd.d == gd.n_params == 4
    x0 = gd.initial_state(_as_params(_E0))
    np.testing.assert_array_equal(x0, _E0)
    xs = np.asarray(dynjax.trajectory(gd, x0, n_steps=30).xs)
    M = np.eye(4) - eta * _H
    expected = np.stack([np.linalg.matrix_power(M, k) @ _E0 for k in range(31)])
    np.testing.assert_allclose(xs, expected, rtol=0, atol=1e-10)
    params, opt_state = gd.unravel(xs[30], 30)
    np.testing.assert_allclose(params["b"][0], expected[30, 1:], rtol=0, atol=1e-10)
    assert params["b"].shape == (1, 3)


def test_gradient_flow_is_a_matrix_exponential():
    flow = dynjax.GradientFlow(_quadratic, _PARAMS)
    assert flow.d == 4
    ts = np.array([0.0, 0.1, 0.5, 1.0, 3.0])
    xs = dynjax.trajectory(flow, flow.ravel(_as_params(_E0)), t1=3.0, ts=ts).xs
    expected = np.stack([scipy.linalg.expm(-_H * t) @ _E0 for t in ts])
    np.testing.assert_allclose(xs, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(flow.loss(jnp.asarray(_E0)), 0.5 * _E0 @ _H @ _E0)
    np.testing.assert_allclose(flow.unravel(jnp.asarray(_E0))["a"], _E0[:1])


def test_gradient_flow_reads_its_data():
    # For least squares J = 1/(2n) |A theta - y|^2 the field is -A^T (A theta - y)/n.
    rng = np.random.default_rng(1)
    A, y, theta = rng.normal(size=(6, 3)), rng.normal(size=6), rng.normal(size=3)

    def loss(params, batch):
        a, b = batch
        return 0.5 * jnp.mean((a @ params - b) ** 2)

    flow = dynjax.GradientFlow(loss, jnp.zeros(3), data=(A, y))
    field = flow.vector_field(0.0, jnp.asarray(theta))
    np.testing.assert_allclose(field, -A.T @ (A @ theta - y) / 6, rtol=1e-12)
    with pytest.raises(ValueError, match="reads its data from its `data` field"):
        flow.vector_field(0.0, jnp.asarray(theta), args=(A, y))


@pytest.mark.parametrize("factor, converges", [(0.99, True), (1.01, False)])
def test_gradient_descent_stability_threshold(factor, converges):
    # Along the top eigenvector the error is multiplied by |1 - eta lambda_max|
    # per step; the other components decay faster (|1 - eta lambda_i| <= 0.84), so
    # by step 590 the norm ratio over 10 steps is |1 - eta lambda_max|^10.
    lam_max = np.linalg.eigvalsh(_H)[-1]
    eta = factor * 2 / lam_max
    gd = dynjax.OptimizerMap(_quadratic, optax.sgd(eta), _PARAMS)
    xs = np.asarray(dynjax.trajectory(gd, jnp.asarray(_E0), n_steps=600).xs)
    norms = np.linalg.norm(xs, axis=1)
    rate = abs(1 - eta * lam_max)
    np.testing.assert_allclose(norms[600] / norms[590], rate**10, rtol=1e-8)
    if converges:
        assert norms[600] < 1e-4 * norms[0]
        assert np.all(np.diff(norms[100:]) < 0)
    else:
        assert norms[600] > 1e4 * norms[0]
        assert np.all(np.diff(norms[100:]) > 0)


def test_max_stable_learning_rate_is_two_over_lambda_max():
    expected = 2 / np.linalg.eigvalsh(_H)[-1]
    eta = dynjax.max_stable_learning_rate(_quadratic, _as_params(_E0))
    np.testing.assert_allclose(eta, expected, rtol=1e-6)


def test_max_stable_learning_rate_without_positive_curvature_is_inf():
    # J = -|e|^2 / 2: every eigenvalue is -1, no step size is bounded by curvature.
    eta = dynjax.max_stable_learning_rate(
        lambda p, b: -0.5 * jnp.sum(p**2), jnp.ones(5)
    )
    assert eta == np.inf


def test_gradient_descent_exponents_are_log_contraction_factors():
    # eta = 0.3 > 1/6: the factor 1 - eta * 6 = -0.8 is negative (an oscillating
    # direction); the moduli 0.85, 0.8, 0.55, 0.1 are distinct.
    eta = 0.3
    gd = dynjax.OptimizerMap(_quadratic, optax.sgd(eta), _PARAMS)
    res = dynjax.lyapunov_spectrum(gd, jnp.zeros(4), n_steps=2000)
    expected = np.sort(np.log(np.abs(1 - eta * _LAMBDAS)))[::-1]
    assert np.any(1 - eta * _LAMBDAS < 0)
    np.testing.assert_allclose(res.exponents, expected, rtol=0, atol=1e-6)


def _heavy_ball_moduli(eta, beta, lambdas):
    # optax.sgd(eta, momentum=beta): v' = g + beta v, theta' = theta - eta v'.
    # With g = lambda theta along an eigenvector, the state (theta, v) maps by
    #   [[1 - eta lambda, -eta beta], [lambda, beta]],
    # whose characteristic polynomial is z^2 - (1 + beta - eta lambda) z + beta.
    roots = [np.roots([1.0, -(1 + beta - eta * lam), beta]) for lam in lambdas]
    companions = [
        np.array([[1 - eta * lam, -eta * beta], [lam, beta]]) for lam in lambdas
    ]
    for C, r in zip(companions, roots):  # (the polynomial, checked numerically)
        np.testing.assert_allclose(np.sort_complex(np.linalg.eigvals(C)),
                                   np.sort_complex(r), atol=1e-12)  # fmt: skip
    return np.concatenate(roots), companions


def test_heavy_ball_exponents_real_roots():
    eta, beta = 0.05, 0.1
    roots, _ = _heavy_ball_moduli(eta, beta, _LAMBDAS)
    assert np.all(np.isreal(roots))
    expected = np.sort(np.log(np.abs(roots)))[::-1]
    assert np.all(np.diff(expected) < -1e-2)  # distinct moduli
    hb = dynjax.OptimizerMap(_quadratic, optax.sgd(eta, momentum=beta), _PARAMS)
    assert hb.d == 8 and hb.n_params == 4
    res = dynjax.lyapunov_spectrum(hb, jnp.zeros(8), n_steps=2000, tangent_warmup=400)
    np.testing.assert_allclose(res.exponents, expected, rtol=0, atol=1e-6)


def test_heavy_ball_exponents_complex_roots():
    # eta = beta = 0.3: lambda = 0.5 gives two real roots, lambda = 1.5, 3, 6 give
    # complex pairs of modulus sqrt(beta), so six exponents are equal.
    eta, beta = 0.3, 0.3
    roots, companions = _heavy_ball_moduli(eta, beta, _LAMBDAS)
    assert np.sum(~np.isreal(roots)) == 6
    expected = np.sort(np.log(np.abs(roots)))[::-1]
    n_steps = 10_000
    hb = dynjax.OptimizerMap(_quadratic, optax.sgd(eta, momentum=beta), _PARAMS)
    res = dynjax.lyapunov_spectrum(hb, jnp.zeros(8), n_steps=n_steps)
    # The sum of all exponents is log |det| of the map, exactly for any frame:
    # det of each companion block is beta.
    np.testing.assert_allclose(np.sum(res.exponents), 4 * np.log(beta), atol=1e-8)
    # A complex pair of modulus r rotates the frame: with C = P (r R_theta) P^{-1}
    # (real Jordan form), |C^n v| / (r^n |v|) lies within [1/kappa(P), kappa(P)],
    # so an estimate over n steps is off by up to ~log kappa(P) / n, which does not
    # decay exponentially as for distinct moduli (Benettin converges as O(1/n)
    # here). Several pairs share the modulus: allow a few times the largest bound.
    kappas = [np.linalg.cond(np.linalg.eig(C)[1]) for C in companions]
    tol = 4 * np.log(max(kappas)) / n_steps
    assert tol < 2e-3
    np.testing.assert_allclose(res.exponents, expected, rtol=0, atol=tol)
    # The two real roots are resolved exactly.
    real = np.sort(np.log(np.abs(roots[np.isreal(roots)])))[::-1]
    np.testing.assert_allclose(
        np.asarray(res.exponents)[[0, -1]], real, rtol=0, atol=1e-6
    )


def _reference_loss(params, batch):
    # Non-quadratic, with a large gradient at the start so that clipping acts.
    w = params["w"]
    return (
        jnp.sum((w - 3.0) ** 4) / 4 + jnp.sum(params["c"] ** 2) + w[0] * params["c"][1]
    )


def _adam_chain():
    schedule = optax.exponential_decay(0.1, transition_steps=5, decay_rate=0.5)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def _optax_loop(params, opt, opt_state, n):
    # The step is compiled, as the map's is: optax evaluates this schedule in
    # float32 (an int32 count divided by an int), where XLA's eager and compiled
    # `pow` differ by an ulp (4e-9 in the learning rate at step 9).
    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(_reference_loss)(params, None)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    out = [(params, opt_state)]
    for _ in range(n):
        params, opt_state = step(params, opt_state)
        out.append((params, opt_state))
    return out


def test_adam_with_clipping_and_schedule_matches_an_optax_loop():
    opt = _adam_chain()
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "c": jnp.array([1.0, 2.0])}
    expected = _optax_loop(params, opt, opt.init(params), 20)
    # Clipping is active at the start (|g| > 1), and the schedule decays.
    g0 = ravel_pytree(jax.grad(_reference_loss)(params, None))[0]
    assert np.linalg.norm(g0) > 10
    om = dynjax.OptimizerMap(_reference_loss, opt, params)
    assert om.d == 3 * om.n_params == 15  # parameters, mu, nu
    xs = dynjax.trajectory(om, om.initial_state(params), n_steps=20).xs
    for k in (1, 5, 13, 20):
        got_params, got_state = om.unravel(xs[k], k)
        want_params, want_state = expected[k]
        for got, want in zip(jax.tree.leaves((got_params, got_state)),
                             jax.tree.leaves((want_params, want_state))):  # fmt: skip
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_optimizer_map_resumes_from_a_later_step_count():
    # Integer counters start from the given opt_state: after 7 steps of a Python
    # loop, the map continues the same run.
    opt = _adam_chain()
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "c": jnp.array([1.0, 2.0])}
    expected = _optax_loop(params, opt, opt.init(params), 15)
    params7, state7 = expected[7]
    om = dynjax.OptimizerMap(_reference_loss, opt, params7, state7)
    xs = dynjax.trajectory(om, om.initial_state(params7, state7), n_steps=8).xs
    got_params, got_state = om.unravel(xs[8], 8)
    for got, want in zip(jax.tree.leaves((got_params, got_state)),
                         jax.tree.leaves(expected[15])):  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_momentum_on_an_equinox_module_matches_an_optax_loop():
    # An eqx.nn.Linear (a Module with a static field) trained by heavy ball on
    # least squares, against the equinox idiom written out.
    model = eqx.nn.Linear(3, 2, key=jax.random.key(0))
    rng = np.random.default_rng(2)
    data = (jnp.asarray(rng.normal(size=(8, 3))), jnp.asarray(rng.normal(size=(8, 2))))

    def loss(model, batch):
        return jnp.mean((jax.vmap(model)(batch[0]) - batch[1]) ** 2)

    opt = optax.sgd(0.1, momentum=0.9)
    om = dynjax.OptimizerMap(loss, opt, model, data=data)
    assert om.d == 2 * om.n_params == 16
    xs = dynjax.trajectory(om, om.initial_state(model), n_steps=25).xs
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    for _ in range(25):
        grads = eqx.filter_grad(loss)(model, data)
        updates, state = opt.update(grads, state, model)
        model = eqx.apply_updates(model, updates)
    got, got_state = om.unravel(xs[25], 25)
    assert isinstance(got, eqx.nn.Linear)
    np.testing.assert_allclose(got.weight, model.weight, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.bias, model.bias, rtol=0, atol=1e-12)
    for a, b in zip(jax.tree.leaves(got_state), jax.tree.leaves(state)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="reads its data from its `data` field"):
        dynjax.trajectory(om, xs[0], n_steps=1, args=data)


def test_multisteps_is_rejected():
    params = {"w": jnp.ones(3), "c": jnp.ones(2)}
    multi = optax.MultiSteps(optax.sgd(0.1), every_k_schedule=3)
    with pytest.raises(ValueError, match="not a step counter"):
        dynjax.OptimizerMap(_reference_loss, multi.gradient_transformation(), params)
    with pytest.raises(ValueError, match="must be an `optax.GradientTransformation`"):
        dynjax.OptimizerMap(_reference_loss, multi, params)


# --- sharpness -----------------------------------------------------------------------


def _mlp_params(seed, sizes):
    rng = np.random.default_rng(seed)
    return [
        {
            "W": jnp.asarray(rng.normal(size=(n, m)) / np.sqrt(m)),
            "b": jnp.asarray(0.1 * rng.normal(size=n)),
        }
        for m, n in zip(sizes, sizes[1:])
    ]


def _mlp_mse(params, batch):
    X, Y = batch
    h = X
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["W"].T + layer["b"])
    out = h @ params[-1]["W"].T + params[-1]["b"]
    return jnp.mean(jnp.sum((out - Y) ** 2, axis=-1))


def _mlp_data(seed, n, d_in, d_out):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d_in)), rng.normal(size=(n, d_out))
    return jnp.asarray(X), jnp.asarray(Y)


def test_sharpness_equals_dense_hessian_top_eigenvalue():
    # A 4-16-16-2 tanh MLP (386 parameters) on random data; reference: the dense
    # Hessian of the flattened loss and LAPACK's eigvalsh.
    params = _mlp_params(0, [4, 16, 16, 2])
    data = _mlp_data(1, 32, 4, 2)
    flat, unravel = ravel_pytree(params)
    assert flat.shape == (386,)
    hessian = jax.jit(jax.hessian(lambda x: _mlp_mse(unravel(x), data)))(flat)
    evals, evecs = np.linalg.eigh(np.asarray(hessian))
    assert evals[0] < 0  # indefinite: not a Gauss-Newton matrix
    out = dynjax.sharpness(_mlp_mse, params, data)
    np.testing.assert_allclose(out.value, evals[-1], rtol=1e-4)
    vector = ravel_pytree(out.vector)[0]
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-12)
    gap = evals[-1] - evals[-2]
    # Eigenvector error <= residual / gap (Davis-Kahan).
    assert out.residual < 1e-3 * gap
    alignment = abs(np.dot(vector, evecs[:, -1]))
    np.testing.assert_allclose(
        alignment, 1.0, atol=(2 * out.residual / gap) ** 2 + 1e-10
    )
    residual = np.linalg.norm(hessian @ vector - out.value * vector)
    np.testing.assert_allclose(out.residual, residual, rtol=1e-6, atol=1e-12)


def test_sharpness_vmaps_and_differentiates():
    # vmap over the data (a loss scale c: sharpness c * lambda_max), and the
    # derivative with respect to a parameter scale s against a central
    # difference of the dense Hessian's top eigenvalue.
    params, (X, Y) = _mlp_params(2, [3, 6, 2]), _mlp_data(3, 16, 3, 2)
    flat, unravel = ravel_pytree(params)

    def scaled(params, batch):
        return batch[2] * _mlp_mse(params, batch[:2])

    dense_top = jax.jit(
        lambda x: jnp.linalg.eigvalsh(
            jax.hessian(lambda z: _mlp_mse(unravel(z), (X, Y)))(x)
        )[-1]
    )
    top = dense_top(flat)
    cs = jnp.array([0.5, 1.0, 3.0])
    values = jax.vmap(lambda c: dynjax.sharpness(scaled, params, (X, Y, c)).value)(cs)
    np.testing.assert_allclose(values, cs * top, rtol=1e-8)

    def of_scale(s):
        scaled_params = jax.tree.map(lambda a: s * a, params)
        return dynjax.sharpness(_mlp_mse, scaled_params, (X, Y)).value

    h = 1e-4
    fd = (dense_top(flat * (1 + h)) - dense_top(flat * (1 - h))) / (2 * h)
    np.testing.assert_allclose(jax.jit(jax.grad(of_scale))(1.0), fd, rtol=1e-6)


def test_sharpness_at_a_saddle_is_the_top_algebraic_eigenvalue():
    # J = 1/2 e^T Q diag(-5, 1, 2) Q^T e: the largest |eigenvalue| is -5 (where
    # power iteration goes), the sharpness is 2, along Q[:, 2].
    Q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    H = Q @ np.diag([-5.0, 1.0, 2.0]) @ Q.T

    def loss(e, batch):
        return 0.5 * e @ jnp.asarray(H) @ e

    out = dynjax.sharpness(loss, jnp.array([0.3, -1.0, 2.0]))
    np.testing.assert_allclose(out.value, 2.0, rtol=1e-10)
    np.testing.assert_allclose(abs(np.dot(out.vector, Q[:, 2])), 1.0, rtol=1e-10)
    eta = dynjax.max_stable_learning_rate(loss, jnp.zeros(3))
    np.testing.assert_allclose(eta, 1.0, rtol=1e-10)


def _walk_shapes(jaxpr):
    """Every variable's shape in a jaxpr and in the jaxprs nested in it."""
    for var in list(jaxpr.invars) + list(jaxpr.constvars):
        yield var.aval.shape
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield getattr(var.aval, "shape", ())
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from _walk_shapes(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _walk_shapes(sub)


def test_sharpness_of_a_large_model_is_matrix_free():
    # An eqx.nn.MLP 16-300-300-300-1 (186 001 parameters): a dense Hessian would
    # hold 3.5e10 numbers (277 GB). Check the traced program and the compiled
    # memory, and the value against power iteration written here.
    model = eqx.nn.MLP(16, 1, 300, 3, activation=jnp.tanh, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    X, Y = _mlp_data(1, 64, 16, 1)

    def loss(params, batch):
        m = eqx.combine(params, static)
        return jnp.mean((jax.vmap(m)(batch[0]) - batch[1]) ** 2)

    flat, unravel = ravel_pytree(params)
    p = flat.shape[0]
    assert p == 186_001
    iterations = 20

    def top(flat):
        return dynjax.sharpness(
            loss, unravel(flat), (X, Y), iterations=iterations
        ).value

    sizes = [int(np.prod(s)) for s in _walk_shapes(jax.make_jaxpr(top)(flat).jaxpr)]
    # The largest array is the Lanczos basis, iterations x p.
    assert max(sizes) <= iterations * p < p * p / 10
    compiled = jax.jit(top).lower(flat).compile()
    memory = compiled.memory_analysis()
    if memory is not None:  # (not every backend reports it)
        assert memory.temp_size_in_bytes < 4 * iterations * p * 8 < p * p * 8 / 1000
    value = compiled(flat)

    gradient = jax.grad(lambda x: loss(unravel(x), (X, Y)))

    @jax.jit
    def power_iteration(v):
        def hvp(v):  # forward-over-reverse, H v = d/de grad J(x + e v)
            return jax.jvp(gradient, (flat,), (v,))[1]

        def body(_, v):
            w = hvp(v)
            return w / jnp.linalg.norm(w)

        v = jax.lax.fori_loop(0, 100, body, v / jnp.linalg.norm(v))
        w = hvp(v)
        return jnp.vdot(v, w), jnp.linalg.norm(w - jnp.vdot(v, w) * v)

    rayleigh, residual = power_iteration(jnp.ones(p))
    assert residual < 1e-3 * rayleigh  # power iteration has converged
    np.testing.assert_allclose(value, rayleigh, rtol=1e-5)


# --- SGD as a random dynamical system ------------------------------------------------
#
# Over-parameterized least squares: n = 5 examples, p = 20 parameters,
# J_batch(theta) = mean_{i in batch} 1/2 (a_i . theta - y_i)^2. Every theta with
# A theta = y is a minimum (each sample's loss is 0 there: the minimum
# interpolates). One SGD step on sample i maps the error e = theta - theta* by
# e -> (I - eta a_i a_i^T) e exactly (the loss is quadratic). Each of these
# matrices is the identity on null(A) and maps row(A) into itself, so the random
# product is block-diagonal in row(A) + null(A): p - n exponents are exactly 0
# (moving along the set of minima), and the n transverse ones are the exponents of
# the n x n random product of U^T (I - eta a_i a_i^T) U, U an orthonormal basis
# of row(A) (Chemnitz & Engel, arXiv:2407.20209).
#
# The rows and the minimum theta* are dyadic (multiples of small powers of 2), so
# A theta* = y holds exactly in floating point and theta* is an exact fixed point:
# the orbit stays there even where SGD is unstable (pinv(A) y would leave it,
# rounding errors growing like exp(lambda_1 n)).

_N, _P = 5, 20


def _least_squares():
    rng = np.random.default_rng(5)
    scales = np.array([0.25, 0.25, 0.5, 0.5, 1.0])[:, None]  # varied row norms
    A = np.round(8 * rng.normal(size=(_N, _P))) / 8 * scales
    theta_star = np.round(8 * rng.normal(size=_P)) / 8
    y = A @ theta_star
    return A, y, theta_star


def _ls_loss(params, batch):
    a, b = batch
    return jnp.mean(0.5 * (a @ params["theta"] - b) ** 2)


def _transverse_reference(A, indices, eta, warmup):
    """Benettin's QR method in NumPy on the n x n random product restricted to
    row(A), warmed up on the first `warmup` steps, accumulated over the rest."""
    U = np.linalg.svd(A)[2][:_N].T  # (p, n), orthonormal basis of row(A)
    B = A @ U  # row i: U^T a_i
    Q = np.eye(_N)
    sums = np.zeros(_N)
    for step, i in enumerate(indices):
        Q, R = np.linalg.qr(Q - eta * np.outer(B[i], B[i] @ Q))
        d = np.diag(R)
        Q = Q * np.sign(d)
        if step >= warmup:
            sums += np.log(np.abs(d))
    return np.sort(sums / (len(indices) - warmup))[::-1]


def _sgd_exponents(eta, key, warmup, n_steps):
    A, y, theta_star = _least_squares()
    sgd = dynjax.StochasticOptimizerMap(
        _ls_loss, optax.sgd(eta), {"theta": jnp.zeros(_P)}, data=(A, y)
    )
    indices = dynjax.minibatch_indices(key, _N, 1, warmup + n_steps)
    res = dynjax.lyapunov_spectrum(
        sgd, jnp.asarray(theta_star), inputs=indices, k=_P, tangent_warmup=warmup
    )
    return np.asarray(res.exponents), np.asarray(indices)[:, 0], sgd


@pytest.mark.parametrize("eta", [0.1, 0.2])
def test_sgd_exponents_at_an_interpolating_minimum(eta):
    A, y, theta_star = _least_squares()
    np.testing.assert_array_equal(A @ theta_star, y)  # (exact, see above)
    warmup, n_steps = 2000, 10_000
    exponents, indices, sgd = _sgd_exponents(eta, jax.random.key(3), warmup, n_steps)
    # theta* is a fixed point of every minibatch step.
    orbit = dynjax.trajectory(sgd, jnp.asarray(theta_star), inputs=indices[:50, None])
    np.testing.assert_array_equal(orbit.xs, np.broadcast_to(theta_star, (51, _P)))
    transverse = _transverse_reference(A, indices, eta, warmup)
    assert np.min(np.abs(transverse)) > 1e-3
    # After the warm-up the frame is aligned with row(A) + null(A), so the p - n
    # neutral exponents come out at 0 to rounding, and the rest are the
    # transverse exponents of the same realization of the minibatch noise.
    zeros = np.argsort(np.abs(exponents))[: _P - _N]
    np.testing.assert_allclose(exponents[zeros], 0.0, atol=1e-8)
    np.testing.assert_allclose(np.delete(exponents, zeros), transverse, atol=1e-8)


def _sgd_residuals(A, y, theta, eta, indices):
    """Plain SGD in NumPy; |A theta - y| after each step, stopping at 1e4 times
    the initial residual."""
    r0 = np.linalg.norm(A @ theta - y)
    out = [r0]
    for i in indices:
        theta = theta - eta * (A[i] @ theta - y[i]) * A[i]
        out.append(np.linalg.norm(A @ theta - y))
        if out[-1] > 1e4 * r0:
            break
    return np.array(out)


@pytest.mark.parametrize("eta", [0.1, 0.2])
def test_sgd_exponent_sign_predicts_convergence(eta):
    # Both learning rates are below full-batch GD's threshold 2 / lambda_max(H),
    # H = A^T A / n: GD converges at both. SGD with batch size 1 converges at
    # eta = 0.1 and escapes at eta = 0.2, as the sign of the largest transverse
    # exponent says.
    A, y, theta_star = _least_squares()
    exponents, _, _ = _sgd_exponents(eta, jax.random.key(3), 2000, 10_000)
    zeros = np.argsort(np.abs(exponents))[: _P - _N]
    top = np.max(np.delete(exponents, zeros))
    assert abs(top) > 5e-3  # a clear sign, not finite-time noise
    # Fresh minibatches (another generator) and a random small perturbation.
    rng = np.random.default_rng(11)
    theta0 = theta_star + 1e-6 * rng.normal(size=_P)
    residuals = _sgd_residuals(A, y, theta0, eta, rng.integers(0, _N, 3000))
    if top < 0:
        assert residuals[-1] < 1e-4 * residuals[0]
    else:
        assert residuals[-1] > 1e4 * residuals[0]
    # Full-batch GD is stable at both learning rates.
    lam_max = np.linalg.eigvalsh(A.T @ A / _N)[-1]
    assert eta < 2 / lam_max
    e = theta0 - theta_star
    for _ in range(3000):
        e = e - eta * A.T @ (A @ e) / _N
    assert np.linalg.norm(A @ e) < 1e-4 * residuals[0]
    if eta == 0.2:  # GD stable, SGD not
        assert top > 0


def test_minibatch_indices():
    indices = np.asarray(dynjax.minibatch_indices(jax.random.key(0), 7, 3, 2000))
    assert indices.shape == (2000, 3)
    assert np.issubdtype(indices.dtype, np.integer)
    # Distinct within a minibatch, every sample drawn about equally often
    # (3/7 of the steps each; binomial standard deviation 0.011).
    assert all(len(set(row)) == 3 for row in indices)
    counts = np.bincount(indices.ravel(), minlength=7) / 2000
    np.testing.assert_allclose(counts, 3 / 7, atol=0.05)
    # A full batch is a permutation.
    full = np.asarray(dynjax.minibatch_indices(jax.random.key(1), 7, 7, 5))
    np.testing.assert_array_equal(np.sort(full, axis=1), np.tile(np.arange(7), (5, 1)))


# --- bad input -----------------------------------------------------------------------


def _vector_loss(params, batch):
    return params * 2.0  # shape (3,), not a scalar


def test_non_scalar_loss_is_rejected():
    params = jnp.ones(3)
    data = (jnp.ones((4, 3)), jnp.ones(4))
    for build in (
        lambda: dynjax.GradientFlow(_vector_loss, params),
        lambda: dynjax.OptimizerMap(_vector_loss, optax.sgd(0.1), params),
        lambda: dynjax.StochasticOptimizerMap(
            _vector_loss, optax.sgd(0.1), params, data=data
        ),
        lambda: dynjax.sharpness(_vector_loss, params),
        lambda: dynjax.max_stable_learning_rate(_vector_loss, params),
    ):
        with pytest.raises(ValueError, match="real scalar"):
            build()


def test_params_without_float_arrays_are_rejected():
    params = {"n": jnp.arange(3), "name": "layer"}
    for build in (
        lambda: dynjax.GradientFlow(_quadratic, params),
        lambda: dynjax.OptimizerMap(_quadratic, optax.sgd(0.1), params),
        lambda: dynjax.sharpness(_quadratic, params),
    ):
        with pytest.raises(ValueError, match="no floating-point arrays"):
            build()


def test_stochastic_optimizer_map_needs_consistent_data():
    params = {"theta": jnp.zeros(3)}
    with pytest.raises(ValueError, match="needs `data=`"):
        dynjax.StochasticOptimizerMap(_ls_loss, optax.sgd(0.1), params, data=None)
    with pytest.raises(ValueError, match="same leading \\(sample\\) axis"):
        dynjax.StochasticOptimizerMap(
            _ls_loss, optax.sgd(0.1), params, data=(jnp.ones((5, 3)), jnp.ones(4))
        )


@pytest.mark.parametrize("batch_size", [0, 6])
def test_minibatch_indices_rejects_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match=r"`batch_size` must be in \[1, 5\]"):
        dynjax.minibatch_indices(jax.random.key(0), 5, batch_size, 10)


@pytest.mark.parametrize(
    "optimizer", [optax.sgd, lambda g, s, p: (g, s), "adam", optax.sgd(0.1).update]
)
def test_optimizer_map_rejects_non_optax_optimizers(optimizer):
    with pytest.raises(ValueError, match="must be an `optax.GradientTransformation`"):
        dynjax.OptimizerMap(_quadratic, optimizer, _PARAMS)


def test_sharpness_rejects_bad_iterations():
    with pytest.raises(ValueError, match="`iterations` must be a positive int"):
        dynjax.sharpness(_quadratic, _PARAMS, iterations=0)
