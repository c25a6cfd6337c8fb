"""`dynjax.train`: the instrumented optax loop (issue 14, items 3, 6, 7)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import dynjax


def _mse(model, batch):
    x, y = batch
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def _regression(n=200, m=10, c=3, seed=0):
    kx, kw = jax.random.split(jax.random.key(seed))
    X = jax.random.normal(kx, (n, m))
    Y = jnp.sin(X @ jax.random.normal(kw, (m, c)))
    return X, Y


def _mlp(m=10, c=3, width=64, depth=2, seed=2):
    return eqx.nn.MLP(m, c, width, depth, activation=jnp.tanh, key=jax.random.key(seed))


def _dense_top_eigenvalue(loss, params, data):
    """The top eigenvalue of the dense Hessian (`jax.hessian` on the flattened
    float leaves, `numpy.linalg.eigvalsh`): an independent reference."""
    floats, static = eqx.partition(params, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(floats)
    H = jax.hessian(lambda v: loss(eqx.combine(unravel(v), static), data))(flat)
    return np.linalg.eigvalsh(np.asarray(H))[-1]


@pytest.mark.parametrize("eta, n_steps, iterations", [(0.5, 1500, 3), (0.25, 3000, 1)])
def test_edge_of_stability(eta, n_steps, iterations):
    """Cohen et al. (ICLR 2021), Section 3: under full-batch gradient descent on
    an MSE loss the sharpness rises (progressive sharpening) until it reaches
    2 / eta, then hovers there while the loss keeps decreasing, non-monotonically.
    The threshold 2 / eta is the linear-stability bound of gradient descent
    (|1 - eta lambda| < 1), not a fitted value."""
    data = _regression()
    threshold = 2 / eta
    out = dynjax.train(
        _mse,
        _mlp(),
        optax.sgd(eta),
        n_steps,
        data=data,
        key=jax.random.key(0),
        probes=(dynjax.SharpnessProbe(every=10, iterations=iterations),),
        learning_rate=eta,
        record_every=500,
        progress=False,
    )
    S = np.asarray(out.sharpness)
    L = np.asarray(out.losses)
    assert out.result == dynjax.RESULTS.successful and out.n_steps == n_steps
    # Progressive sharpening: it starts well below the threshold (converged
    # Lanczos at the initial parameters, checked against the dense Hessian in
    # test_training_maps.py; the first probes are still warming up).
    assert dynjax.sharpness(_mse, _mlp(), data).value < 0.5 * threshold
    i = int(np.argmax(S > 0.9 * threshold))
    assert S[i] > 0.9 * threshold
    t_eos = int(out.sharpness_steps[i])
    assert t_eos < n_steps // 4
    # At the edge: within 10 % of 2 / eta for most of the remaining steps ...
    near = np.abs(S[i:] - threshold) / threshold < 0.1
    assert near.mean() > 0.8
    np.testing.assert_allclose(np.asarray(out.stability_ratio), eta * S / 2, rtol=1e-12)
    assert np.median(np.asarray(out.stability_ratio)[i:]) == pytest.approx(1, abs=0.1)
    # ... while the loss decreases, non-monotonically.
    assert L[-1] < 0.1 * L[t_eos]
    assert np.sum(np.diff(L[t_eos:]) > 0) > 0.05 * (n_steps - t_eos)


def test_sharpness_probe_matches_dense_hessian():
    """With as many Lanczos steps as parameters the probe is exact: it equals the
    dense Hessian's top eigenvalue at every probed step (recorded parameters)."""
    data = _regression(n=40, m=3, c=1)
    model = _mlp(m=3, c=1, width=6, depth=1)
    p = ravel_pytree(eqx.filter(model, eqx.is_inexact_array))[0].size
    out = dynjax.train(
        _mse,
        model,
        optax.sgd(0.1),
        30,
        data=data,
        key=jax.random.key(1),
        probes=(dynjax.SharpnessProbe(every=10, iterations=p),),
        record_every=10,
        progress=False,
    )
    np.testing.assert_array_equal(out.sharpness_steps, [0, 10, 20])
    np.testing.assert_array_equal(out.record_steps, [0, 10, 20])
    floats, static = eqx.partition(model, eqx.is_inexact_array)
    unravel = ravel_pytree(floats)[1]
    for theta, s in zip(out.thetas, out.sharpness):
        params = eqx.combine(unravel(theta), static)
        assert s == pytest.approx(_dense_top_eigenvalue(_mse, params, data), rel=1e-8)


def test_lyapunov_probe_quadratic():
    """For J = 1/2 e^T H e, gradient descent is the linear map I - eta H, whose
    largest Lyapunov exponent is max_i log|1 - eta lambda_i| (here from the
    eigenvalue with 1 - eta lambda < -1: an unstable, oscillating direction);
    the warm-started probe converges to it."""
    lam = np.array([3.0, 1.0, 0.5])
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    H = jnp.asarray(Q @ np.diag(lam) @ Q.T)
    eta = 0.7  # 1 - 0.7 * 3 = -1.1

    def loss(p, _):
        return 0.5 * p @ H @ p

    out = dynjax.train(
        loss,
        jnp.array([1e-3, 0.0, 0.0]),
        optax.sgd(eta),
        50,
        probes=(dynjax.LyapunovProbe(every=10, window=20),),
        key=jax.random.key(0),
        progress=False,
    )
    expected = np.max(np.log(np.abs(1 - eta * lam)))
    np.testing.assert_array_equal(out.lyapunov_steps, [0, 10, 20, 30, 40])
    assert out.lyapunov[-1] == pytest.approx(expected, abs=1e-6)
    # The run itself is gradient descent, (I - eta H)^k e0.
    e = np.array([1e-3, 0.0, 0.0])
    for _ in range(50):
        e = e - eta * np.asarray(H) @ e
    np.testing.assert_allclose(ravel_pytree(out.params)[0], e, rtol=1e-10)


def test_projection_and_records():
    data = _regression(n=50)
    model = _mlp(width=8, depth=1)
    kw = dict(data=data, batch_size=10, key=jax.random.key(3), progress=False)
    full = dynjax.train(_mse, model, optax.sgd(0.05), 25, record_every=4, **kw)
    proj = dynjax.train(
        _mse, model, optax.sgd(0.05), 25, record_every=4, projection=2, **kw
    )
    np.testing.assert_array_equal(full.record_steps, np.arange(0, 25, 4))
    assert full.projection is None and full.thetas.shape == (7, 10 * 8 + 8 + 8 * 3 + 3)
    np.testing.assert_allclose(proj.thetas, full.thetas @ proj.projection.T, rtol=1e-12)
    np.testing.assert_allclose(full.losses, proj.losses, rtol=0)
    # Plain SGD's update is -eta * gradient.
    assert np.all(np.asarray(full.grad_norms) > 0)
    np.testing.assert_allclose(full.update_norms, 0.05 * np.asarray(full.grad_norms))


def test_compiles_once_and_resumes():
    """Issue item 6: an optax chain (clipping + Adam with a schedule) compiles
    once; new data of the same shapes, more steps and a resumed run do not
    retrace; resuming equals one uninterrupted run."""
    # The compiled chunk's cache (`eqx.filter_jit` over `jax.jit`) gains one
    # entry for this problem and none after; inside it the loss is traced three
    # times (its gradient; the sharpness probe's first Hessian-vector product
    # and those of its Lanczos loop).
    from dynjax._training._train import _chunk

    # One structural check (`jax.eval_shape`) and three traces in the chunk.
    loss = eqx.debug.assert_max_traces(_mse, max_traces=4)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 100)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    model = _mlp(width=16, depth=1)
    probes = (dynjax.SharpnessProbe(every=7, iterations=2),)
    kw = dict(batch_size=16, probes=probes, chunk_size=20, progress=False)
    kw.update(record_every=3, learning_rate=schedule)
    data1, data2 = _regression(seed=0), _regression(seed=1)
    size = _chunk._cached._cache_size()
    whole = dynjax.train(loss, model, opt, 50, data=data1, key=jax.random.key(4), **kw)
    assert _chunk._cached._cache_size() == size + 1
    part = dynjax.train(loss, model, opt, 27, data=data1, key=jax.random.key(4), **kw)
    part = dynjax.train(loss, None, opt, 23, data=data1, resume=part, **kw)
    other = dynjax.train(loss, model, opt, 40, data=data2, key=jax.random.key(5), **kw)
    # No retrace: not for a resumed run, new data or another n_steps.
    assert _chunk._cached._cache_size() == size + 1
    assert other.losses.shape == (40,)
    for name in ("losses", "grad_norms", "update_norms", "record_steps", "thetas",
                 "sharpness_steps", "sharpness", "stability_ratio"):  # fmt: skip
        np.testing.assert_allclose(
            getattr(part, name), getattr(whole, name), rtol=1e-12, atol=1e-14
        )
    assert part.n_steps == 50
    np.testing.assert_allclose(
        ravel_pytree(eqx.filter(part.params, eqx.is_inexact_array))[0],
        ravel_pytree(eqx.filter(whole.params, eqx.is_inexact_array))[0],
        rtol=1e-12,
    )
    # Full-batch steps of the chain equal a hand-written optax loop (to 1e-7:
    # optax evaluates the schedule in float32, whose last bit differs between
    # the compiled loop and eager calls).
    full = dynjax.train(_mse, model, opt, 5, data=data1, progress=False)
    params, state = eqx.filter(model, eqx.is_inexact_array), None
    static = eqx.filter(model, eqx.is_inexact_array, inverse=True)
    state = opt.init(params)
    for k in range(5):
        value, g = jax.value_and_grad(lambda p: _mse(eqx.combine(p, static), data1))(
            params
        )
        assert full.losses[k] == pytest.approx(float(value), rel=1e-7)
        u, state = opt.update(g, state, params)
        params = optax.apply_updates(params, u)
    np.testing.assert_allclose(
        ravel_pytree(eqx.filter(full.params, eqx.is_inexact_array))[0],
        ravel_pytree(params)[0],
        rtol=1e-7,
        atol=1e-8,
    )


def test_nonfinite_loss_stops():
    """Issue item 7: a diverging run stops at the first non-finite loss. For
    J = 1/2 lam e^2 and eta lam = 3, e_k = (-2)^k e0 overflows float64 at a step
    computed here independently in NumPy; the trajectory so far is returned."""
    lam, eta = 1.0, 3.0

    def loss(p, _):
        return 0.5 * lam * jnp.sum(p**2)

    e, k_nan = np.float64(1.0), None
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(2000):
            if not np.isfinite(0.5 * lam * e**2):
                k_nan = k
                break
            last_finite = e
            e = e - eta * lam * e
    with pytest.warns(RuntimeWarning, match=f"non-finite at step {k_nan}"):
        out = dynjax.train(
            loss, jnp.array([1.0]), optax.sgd(eta), 2000, chunk_size=64, progress=False
        )
    assert out.result == dynjax.RESULTS.nonfinite_loss
    assert out.stopped_at == k_nan and out.n_steps == k_nan + 1
    assert out.losses.shape == (k_nan + 1,)
    assert np.all(np.isfinite(out.losses[:-1])) and not np.isfinite(out.losses[-1])
    assert float(out.params[0]) == last_finite


def test_bad_input():
    data = _regression(n=20)
    model = _mlp(width=4, depth=1)
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="real scalar"):
        dynjax.train(lambda m, b: jax.vmap(m)(b[0]), model, opt, 3, data=data)
    with pytest.raises(ValueError, match="positive number"):
        dynjax.train(_mse, model, opt, 3, data=data, learning_rate=-0.1)
    with pytest.raises(ValueError, match="same leading"):
        dynjax.train(_mse, model, opt, 3, data=(data[0], data[1][:5]))
    with pytest.raises(ValueError, match="non-finite"):
        dynjax.train(_mse, model, opt, 3, data=(data[0].at[3, 0].set(jnp.nan), data[1]))
    with pytest.raises(ValueError, match=r"batch_size.*\[1, 20\]"):
        dynjax.train(
            _mse, model, opt, 3, data=data, batch_size=21, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="key"):
        dynjax.train(_mse, model, opt, 3, data=data, batch_size=5)
    with pytest.raises(ValueError, match="at most one"):
        probes = (dynjax.SharpnessProbe(), dynjax.SharpnessProbe())
        dynjax.train(
            _mse, model, opt, 3, data=data, probes=probes, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="every"):
        dynjax.SharpnessProbe(every=0)
    with pytest.raises(ValueError, match="record_every"):
        dynjax.train(_mse, model, opt, 3, data=data, record_every=0)
    with pytest.raises(ValueError, match="no floating-point"):
        dynjax.train(_mse, {"n": 3}, opt, 3, data=data)


def test_plot_training_dynamics():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _regression(n=30)
    eta = 0.3
    out = dynjax.train(
        _mse,
        _mlp(width=8, depth=1),
        optax.sgd(eta),
        40,
        data=data,
        key=jax.random.key(0),
        probes=(dynjax.SharpnessProbe(every=5),),
        learning_rate=eta,
        record_every=5,
        progress=False,
    )
    axes = dynjax.plot.training_dynamics(out)
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), out.losses)
    np.testing.assert_allclose(axes[1].lines[0].get_ydata(), out.sharpness)
    # The dashed line is 2 / eta, recovered from the stability ratio.
    np.testing.assert_allclose(axes[1].lines[1].get_ydata(), 2 / eta, rtol=1e-12)
    # The path panel: the recorded parameters on their top two principal
    # components, whose pairwise distances those of the centred records
    # projected by NumPy's SVD reproduce.
    segments = axes[2].collections[0].get_segments()
    xy = np.concatenate([segments[0][:1]] + [s[1:] for s in segments])
    centred = np.asarray(out.thetas) - np.asarray(out.thetas).mean(0)
    ref = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match=r"shape \(2, "):
        dynjax.plot.training_dynamics(out, projection=np.ones((3, 2)))
    plt.close("all")


def test_probe_failure_is_reported_and_resume_is_checked():
    """A probe of a map that is not differentiable (Adam where a second moment is
    0: a weight on a constant-zero input feature) is recorded as non-finite with
    a warning naming the fix, not dropped; `resume=` with another optimizer or
    batch size is refused."""
    x, y = _regression(n=40)
    x = x.at[:, 0].set(0.0)  # (feature 0 is always zero: its weights get no gradient)
    model = _mlp(width=4, depth=1)
    opt = optax.adam(1e-2)
    probes = dynjax.LyapunovProbe(every=5, window=3)  # (a single probe is accepted)
    with pytest.warns(RuntimeWarning, match="eps_root"):
        out = dynjax.train(_mse, model, opt, 10, data=(x, y), probes=probes,
                           progress=False)  # fmt: skip
    np.testing.assert_array_equal(out.lyapunov_steps, [0, 5])
    assert not np.all(np.isfinite(out.lyapunov))
    fixed = optax.adam(1e-2, eps_root=1e-12)
    ok = dynjax.train(_mse, model, fixed, 10, data=(x, y), probes=probes,
                      progress=False)  # fmt: skip
    assert np.all(np.isfinite(ok.lyapunov))
    with pytest.raises(ValueError, match="another `optimizer`"):
        dynjax.train(_mse, None, optax.sgd(0.1), 5, data=(x, y), probes=probes,
                     resume=ok, progress=False)  # fmt: skip
    # Probes may change on resume (they do not change the run).
    more = dynjax.train(_mse, None, fixed, 5, data=(x, y), resume=ok, progress=False)
    assert more.n_steps == 15 and more.lyapunov.shape == ok.lyapunov.shape
    with pytest.raises(ValueError, match="another `batch_size`"):
        dynjax.train(_mse, None, fixed, 5, data=(x, y), probes=probes, batch_size=4,
                     resume=ok, progress=False)  # fmt: skip
