"""`dynjax.fit` (the optax training engine) and the divergence machinery shared by
CNFs and the probability-flow ODE."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import dynjax
from dynjax._neural import divergence, integrate_divergence, sample_probes
from dynjax._training import _fit


def _regression(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=n)
    return jnp.asarray(X), jnp.asarray(y)


def _mse(model, batch, key):
    X, y = batch
    return jnp.mean((jax.vmap(model)(X)[:, 0] - y) ** 2)


def _linear(key):
    return eqx.nn.Linear(3, 1, key=key)


class _Traces:
    n = 0


def _make_loss():
    # A fresh function object on every call, as when a notebook cell is re-run.
    def loss(model, batch, key):
        _Traces.n += 1  # runs at trace time only
        return _mse(model, batch, key) * _SCALE

    return loss


_SCALE = 1.0


def test_full_batch_gd_reaches_least_squares():
    # Reference: NumPy's least-squares solution of the same problem.
    X, y = _regression()
    A = np.hstack([np.asarray(X), np.ones((X.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(A, np.asarray(y), rcond=None)
    out = dynjax.fit(_mse, _linear(jax.random.key(0)), optax.sgd(0.3), data=(X, y),
                     n_steps=2000, key=jax.random.key(1), progress=False)  # fmt: skip
    np.testing.assert_allclose(out.model.weight[0], coef[:3], rtol=1e-8)
    np.testing.assert_allclose(out.model.bias[0], coef[3], rtol=1e-8)
    residual = A @ coef - np.asarray(y)
    np.testing.assert_allclose(out.losses[-1], np.mean(residual**2), rtol=1e-10)
    assert out.n_steps == 2000 and out.losses.shape == (2000,)
    assert out.result == dynjax.RESULTS.successful and out.stopped_at == -1


def test_resume_and_chunking_reproduce_one_run():
    X, y = _regression()
    kw = dict(data=(X, y), batch_size=16, progress=False)
    model, key = _linear(jax.random.key(0)), jax.random.key(3)
    whole = dynjax.fit(_mse, model, optax.adam(1e-2), n_steps=250, key=key, **kw)
    part = dynjax.fit(_mse, model, optax.adam(1e-2), n_steps=130, key=key,
                      chunk_size=7, **kw)  # fmt: skip
    rest = dynjax.fit(_mse, None, optax.adam(1e-2), n_steps=120, resume=part, **kw)
    np.testing.assert_array_equal(rest.losses, whole.losses)
    np.testing.assert_array_equal(rest.model.weight, whole.model.weight)
    assert rest.n_steps == 250


def test_minibatches_are_drawn_without_replacement():
    # With batch_size = N every batch is a permutation of the data, so the loss
    # of a permutation-invariant objective is the full-batch loss.
    X, y = _regression(n=20)
    model = _linear(jax.random.key(0))
    full = dynjax.fit(_mse, model, optax.sgd(0.0), data=(X, y), n_steps=3,
                      key=jax.random.key(1), progress=False)  # fmt: skip
    perm = dynjax.fit(_mse, model, optax.sgd(0.0), data=(X, y), batch_size=20,
                      n_steps=3, key=jax.random.key(1), progress=False)  # fmt: skip
    np.testing.assert_allclose(perm.losses, full.losses, rtol=1e-12)


def test_one_compilation_for_any_number_of_steps():
    X, y = _regression()
    opt, loss = optax.adam(1e-2), _make_loss()
    model = _linear(jax.random.key(0))
    dynjax.fit(loss, model, opt, data=(X, y), n_steps=35, chunk_size=10,
               key=jax.random.key(1), progress=False)  # fmt: skip
    n = _Traces.n
    dynjax.fit(loss, model, opt, data=(X, y), n_steps=53, chunk_size=10,
               key=jax.random.key(2), progress=False)  # fmt: skip
    assert n >= 1 and _Traces.n == n


def test_nonfinite_update_stops_with_last_finite_model():
    X, y = _regression()
    model, key = _linear(jax.random.key(0)), jax.random.key(1)
    lr = lambda count: jnp.where(count >= 37, jnp.nan, 1e-2)  # noqa: E731
    with pytest.warns(RuntimeWarning, match="non-finite at step 37"):
        out = dynjax.fit(_mse, model, optax.adam(lr), data=(X, y), n_steps=300,
                         chunk_size=16, key=key, progress=False)  # fmt: skip
    assert out.stopped_at == 37 and out.n_steps == 38
    assert out.result == dynjax.RESULTS.nonfinite_loss
    ref = dynjax.fit(_mse, model, optax.adam(1e-2), data=(X, y), n_steps=37,
                     key=key, progress=False)  # fmt: skip
    np.testing.assert_array_equal(out.model.weight, ref.model.weight)
    np.testing.assert_array_equal(out.losses[:37], ref.losses)


def test_nan_loss_stops_at_its_step():
    X, y = _regression()

    def loss(model, batch, key):  # NaN once the bias passes 0.2 (it starts at 0)
        value = _mse(model, batch, key)
        return jnp.where(model.bias[0] > 0.2, jnp.nan, value)

    model = eqx.tree_at(lambda m: m.bias, _linear(jax.random.key(0)), jnp.zeros(1))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = dynjax.fit(loss, model, optax.sgd(0.05), data=(X, y), n_steps=500,
                         key=jax.random.key(1), progress=False)  # fmt: skip
    stop = out.stopped_at
    assert 0 < stop < 500 and np.isnan(out.losses[-1]) and out.n_steps == stop + 1
    assert np.all(np.isfinite(out.losses[:-1]))
    # The model returned is the last one whose loss was finite: the one reached by
    # `stop - 1` updates (the update that pushed the bias past 0.2 is undone).
    ref = dynjax.fit(_mse, model, optax.sgd(0.05), data=(X, y), n_steps=stop - 1,
                     key=jax.random.key(1), progress=False)  # fmt: skip
    np.testing.assert_array_equal(out.model.bias, ref.model.bias)
    np.testing.assert_array_equal(out.model.weight, ref.model.weight)
    assert out.model.bias[0] <= 0.2
    assert np.isfinite(loss(out.model, (X, y), None))


def test_interrupt_keeps_completed_chunks(monkeypatch):
    X, y = _regression()
    real, calls = _fit._chunk, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(_fit, "_chunk", interrupted)
    model, key = _linear(jax.random.key(0)), jax.random.key(1)
    with pytest.raises(dynjax.FitInterrupted) as info:
        dynjax.fit(_mse, model, optax.adam(1e-2), data=(X, y), n_steps=100,
                   chunk_size=10, key=key, progress=False)  # fmt: skip
    done = info.value.result
    assert done.n_steps == 20
    monkeypatch.setattr(_fit, "_chunk", real)
    rest = dynjax.fit(_mse, None, optax.adam(1e-2), data=(X, y), n_steps=80,
                      chunk_size=10, resume=done, progress=False)  # fmt: skip
    whole = dynjax.fit(_mse, model, optax.adam(1e-2), data=(X, y), n_steps=100,
                       key=key, progress=False)  # fmt: skip
    np.testing.assert_array_equal(rest.losses, whole.losses)


def test_bad_input():
    X, y = _regression()
    model, key, opt = _linear(jax.random.key(0)), jax.random.key(1), optax.sgd(0.1)
    with pytest.raises(ValueError, match="non-finite value.*sample 5"):
        dynjax.fit(_mse, model, opt, data=(X.at[5, 1].set(jnp.nan), y), n_steps=1,
                   key=key)  # fmt: skip
    with pytest.raises(ValueError, match="same leading"):
        dynjax.fit(_mse, model, opt, data=(X, y[:10]), n_steps=1, key=key)
    with pytest.raises(ValueError, match=r"`batch_size` must be an int in \[1, 64\]"):
        dynjax.fit(_mse, model, opt, data=(X, y), batch_size=65, n_steps=1, key=key)
    with pytest.raises(ValueError, match="key="):
        dynjax.fit(_mse, model, opt, data=(X, y), n_steps=1)
    with pytest.raises(ValueError, match="n_steps"):
        dynjax.fit(_mse, model, opt, data=(X, y), n_steps=-1, key=key)


def test_save_load_round_trip(tmp_path):
    model = eqx.nn.MLP(2, 2, 8, 2, key=jax.random.key(0))
    path = tmp_path / "model.eqx"
    dynjax.save_model(path, model)
    loaded = dynjax.load_model(path, eqx.nn.MLP(2, 2, 8, 2, key=jax.random.key(9)))
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(a, b)


# --- divergence ------------------------------------------------------------


def test_exact_divergence_matches_analytic():
    # f(x) = (sin x0 x1, x1^3, exp(x2)): div = x1 cos(x0 x1) + 3 x1^2 + exp(x2).
    f = lambda x: jnp.array([jnp.sin(x[0] * x[1]), x[1] ** 3, jnp.exp(x[2])])  # noqa
    x = jnp.array([0.3, -1.2, 0.4])
    expect = -1.2 * np.cos(-0.36) + 3 * 1.44 + np.exp(0.4)
    np.testing.assert_allclose(divergence(f, x), expect, rtol=1e-12)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_hutchinson_mean_and_variance(mode):
    # For eps with i.i.d. Rademacher entries, E[eps^T A eps] = tr A and
    # Var = 1/2 sum_{i != j} (A_ij + A_ji)^2 (Hutchinson 1989); Gaussian probes
    # have Var = 1/2 ||A + A^T||_F^2.
    A = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4)))
    f, x, n = (lambda z: A @ z), jnp.zeros(4), 20000
    S = np.asarray(A + A.T)
    var_r = 0.5 * (np.sum(S**2) - np.sum(np.diag(S) ** 2))
    var_g = 0.5 * np.sum(S**2)
    for kind, var in (("rademacher", var_r), ("gaussian", var_g)):
        eps = sample_probes(jax.random.key(1), n, 4, jnp.float64, kind)
        single = jax.vmap(
            lambda e: divergence(f, x, trace="hutchinson", probes=e[None], mode=mode)
        )(eps)
        se = np.sqrt(var / n)
        assert abs(float(jnp.mean(single)) - float(jnp.trace(A))) < 4 * se
        np.testing.assert_allclose(np.var(single), var, rtol=0.05)


def test_integrate_divergence_linear_flow():
    # dx/dt = A x: x(T) = expm(A T) x0 and the integrated divergence is T tr A
    # (Liouville); backwards from T returns to x0 with -T tr A.
    A = np.array([[-0.5, 1.0, 0.2], [-2.0, 0.3, 0.0], [0.1, 0.4, -1.0]])
    x0 = jnp.array([0.3, -0.2, 1.0])
    vf = lambda t, x, a: jnp.asarray(A) @ x  # noqa: E731
    z, ell, result = integrate_divergence(vf, x0, 0.0, 1.5)
    assert result == dynjax.RESULTS.successful
    np.testing.assert_allclose(
        z, scipy.linalg.expm(1.5 * A) @ np.asarray(x0), rtol=1e-7
    )
    np.testing.assert_allclose(ell, 1.5 * np.trace(A), rtol=1e-7)
    back, ell_b, _ = integrate_divergence(vf, z, 1.5, 0.0)
    np.testing.assert_allclose(back, x0, rtol=1e-7)
    np.testing.assert_allclose(ell_b, -1.5 * np.trace(A), rtol=1e-7)
    # Hutchinson: one probe per solve, unbiased over keys.
    keys = jax.random.split(jax.random.key(0), 400)
    ells = jax.vmap(lambda k: integrate_divergence(vf, x0, 0.0, 1.5, trace="hutchinson",
                                                   key=k)[1])(keys)  # fmt: skip
    se = np.std(ells) / np.sqrt(len(keys))
    assert abs(np.mean(ells) - 1.5 * np.trace(A)) < 4 * se


def test_equal_definitions_share_one_compilation():
    # Loss and optimizer are compared by value (code, closure, globals read): an
    # equal re-definition reuses the compilation, a different one recompiles, and
    # a reassigned global is seen (no stale program).
    global _SCALE
    X, y = _regression()
    model, kw = _linear(jax.random.key(0)), dict(data=(X, y), progress=False)
    first = dynjax.fit(_make_loss(), model, optax.adam(3e-3), n_steps=5,
                       key=jax.random.key(1), **kw)  # fmt: skip
    n = _Traces.n
    again = dynjax.fit(_make_loss(), model, optax.adam(3e-3), n_steps=5,
                       key=jax.random.key(1), **kw)  # fmt: skip
    assert _Traces.n == n
    np.testing.assert_array_equal(again.losses, first.losses)
    dynjax.fit(_make_loss(), model, optax.adam(1e-3), n_steps=5,
               key=jax.random.key(1), **kw)  # fmt: skip
    assert _Traces.n > n
    n = _Traces.n
    _SCALE = 2.0
    try:
        scaled = dynjax.fit(_make_loss(), model, optax.adam(3e-3), n_steps=1,
                            key=jax.random.key(1), **kw)  # fmt: skip
    finally:
        _SCALE = 1.0
    assert _Traces.n > n
    np.testing.assert_allclose(scaled.losses[0], 2 * first.losses[0], rtol=1e-12)


def _mse_with_aux(model, batch, key):
    X, y = batch
    residual = jax.vmap(model)(X)[:, 0] - y
    value = jnp.mean(residual**2)
    return value, {"value": value, "max": jnp.max(jnp.abs(residual))}


def test_aux_is_stacked_over_steps_and_resumed():
    X, y = _regression()
    kw = dict(data=(X, y), batch_size=16, progress=False, has_aux=True)
    model, key = _linear(jax.random.key(0)), jax.random.key(3)
    whole = dynjax.fit(_mse_with_aux, model, optax.adam(1e-2), n_steps=50, key=key,
                       chunk_size=8, **kw)  # fmt: skip
    assert whole.aux["max"].shape == (50,)
    np.testing.assert_array_equal(whole.aux["value"], whole.losses)
    plain = dynjax.fit(_mse, model, optax.adam(1e-2), n_steps=50, key=key,
                       data=(X, y), batch_size=16, progress=False)  # fmt: skip
    np.testing.assert_array_equal(plain.losses, whole.losses)
    assert plain.aux is None
    part = dynjax.fit(_mse_with_aux, model, optax.adam(1e-2), n_steps=20, key=key,
                      chunk_size=8, **kw)  # fmt: skip
    rest = dynjax.fit(_mse_with_aux, None, optax.adam(1e-2), n_steps=30,
                      resume=part, chunk_size=8, **kw)  # fmt: skip
    np.testing.assert_array_equal(rest.aux["max"], whole.aux["max"])
