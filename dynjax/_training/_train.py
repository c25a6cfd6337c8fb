"""`dynjax.train`: an optax loop compiled as chunks of steps, instrumented as a
dynamical system (sharpness, stability ratio, finite-time Lyapunov exponents)."""

import math
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .._misc import progress_bar
from .._results import RESULTS
from .._system._checks import user_stacklevel
from ._curvature import hessian_vector_product, lanczos_top
from ._fit import _ByValue, _check_data
from ._maps import _step, OptimizerMap


def _check_counts(probe, names):
    for name in names:
        v = getattr(probe, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(
                f"`{type(probe).__name__}({name}=...)` must be an int >= 1."
            )


class SharpnessProbe(eqx.Module):
    """Track the sharpness (the top Hessian eigenvalue) during `dynjax.train`.

    Every `every` steps, `iterations` Lanczos steps on Hessian-vector products of
    the loss on `batch_size` random samples (all of `data` if `None`), warm-started
    from the previous probe's vector advanced by one power step, so the estimate
    keeps improving across probes while the Hessian drifts slowly. Each
    Hessian-vector product costs about 2.5 gradients (by flop count on an MLP);
    in full-batch training probed on the full batch the first one shares the
    step's gradient pass (`jax.jvp` of `jax.value_and_grad`) and adds about 1.8.
    The default, `iterations=1`, is power iteration spread over training: cheap
    (+15 % to +32 % per step at `every=10` in `benchmarks/training.py`), but a
    Rayleigh quotient, so it reads low, by 5-8 % at the edge of stability where
    the top two eigenvalues are close, and its first values are those of a
    random start. Use 3-10 where each value must be accurate (`iterations=10`:
    about `1e-4` relative there), where the Hessian changes fast, or where a
    negative curvature could dominate (Lanczos finds the largest algebraic
    eigenvalue, power iteration the largest in magnitude); `dynjax.sharpness`
    converges at one point.
    """

    every: int = eqx.field(static=True, default=10)
    iterations: int = eqx.field(static=True, default=1)
    batch_size: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_counts(self, ("every", "iterations"))


class LyapunovProbe(eqx.Module):
    """Track the largest finite-time Lyapunov exponent of the training map.

    Every `every` steps, from the current parameters and optimizer state, the
    training map (one optimizer update, on fresh minibatches of the run's
    `batch_size`, or the full batch) is iterated `window` steps on a copy, with
    one tangent vector of the flattened (parameters, optimizer state) propagated
    by `jax.jvp` and renormalized every step; the exponent is the mean log growth
    per step, in nats per step. The tangent is warm-started from the previous
    probe's, so it stays aligned with the most unstable direction. The training
    run itself is not changed. Cost: `window` Hessian-vector-product-sized
    steps per probe.
    """

    every: int = eqx.field(static=True, default=100)
    window: int = eqx.field(static=True, default=20)

    def __check_init__(self):
        _check_counts(self, ("every", "window"))


class TrainingTrajectory(eqx.Module):
    """The outcome of `dynjax.train`: the final state and the recorded history.

    **Attributes:**

    - `params`: the final parameters (the pytree passed in, updated). After a
        stop, the last iterate whose loss was finite.
    - `opt_state`: the optax state that goes with `params`.
    - `key`: the PRNG key the next step would use.
    - `n_steps`: the number of steps run (the failing one included), an `int`.
    - `result`: `RESULTS.successful` or `RESULTS.nonfinite_loss`.
    - `stopped_at`: the 0-based step whose loss, gradient or update was
        non-finite, or `-1`.
    - `losses`, `grad_norms`, `update_norms`: per step, shape `(n_steps,)`: the
        (minibatch) loss before the step's update, the global 2-norm of its
        gradient and of the update applied.
    - `record_steps`: shape `(R,)`, the steps at which the parameters were
        recorded (every `record_every` steps, before the update).
    - `thetas`: shape `(R, p)`, the flattened parameters at those steps, or
        `(R, r)` their random projection when `projection=r`.
    - `projection`: the `(r, p)` projection matrix (Gaussian, rows scaled by
        `1/sqrt(p)`), or `None`.
    - `sharpness_steps`, `sharpness`: the probe steps and the sharpness there,
        shape `(S,)` (empty without a `SharpnessProbe`).
    - `stability_ratio`: `eta * sharpness / 2` at those steps (gradient descent is
        linearly stable below 1), when `learning_rate` was given; else `None`.
    - `lyapunov_steps`, `lyapunov`: the probe steps and the finite-time exponent
        of the training map there, in nats per step, shape `(L,)`.
    - `probe_state`: the probes' warm starts, used by `resume`.
    """

    params: PyTree
    opt_state: PyTree
    key: PRNGKeyArray
    n_steps: int
    result: RESULTS
    stopped_at: int
    losses: Float[Array, " n"]
    grad_norms: Float[Array, " n"]
    update_norms: Float[Array, " n"]
    record_steps: Int[Array, " R"]
    thetas: Float[Array, "R r"]
    projection: Float[Array, "r p"] | None
    sharpness_steps: Int[Array, " S"]
    sharpness: Float[Array, " S"]
    stability_ratio: Float[Array, " S"] | None
    lyapunov_steps: Int[Array, " L"]
    lyapunov: Float[Array, " L"]
    probe_state: tuple
    signature: tuple = eqx.field(static=True, default=())


class TrainingInterrupted(KeyboardInterrupt):
    """Raised when `dynjax.train` is interrupted (Ctrl-C). Its `trajectory`
    attribute holds every completed chunk: `dynjax.train(..., resume=exc.trajectory)`
    continues the run."""

    def __init__(self, trajectory: TrainingTrajectory):
        super().__init__(
            "Training interrupted; the completed steps are in `exc.trajectory` "
            "(continue with `dynjax.train(..., resume=exc.trajectory)`)."
        )
        self.trajectory = trajectory


def _global_norm(tree) -> Array:
    return optax.tree.norm(tree).astype(jnp.result_type(float))


def _take(key, data, batch_size):
    if data is None or batch_size is None:
        return data
    n = jax.tree.leaves(data)[0].shape[0]
    idx = jax.random.choice(key, n, (batch_size,), replace=False)
    return jax.tree.map(lambda a: a[idx], data)


@eqx.filter_jit
def _chunk(om, x, prev, key, v_sharp, v_lyap, start, n_active, batch_size,
           record_every, projection, probes, chunk_size):  # fmt: skip
    """`chunk_size` steps as one `lax.scan`; steps `>= n_active` or after a stop
    are skipped. `x` is the flat (parameters, optimizer state)."""
    sharp, lyap = probes
    p = om.n_params
    data = om.data
    dtype = x.dtype
    nan = jnp.array(jnp.nan, dtype)

    # Full-batch training probed on the full batch: the first Hessian-vector
    # product of a probe comes with the step's gradient (one forward-over-reverse
    # pass, `jax.jvp` of `jax.value_and_grad`), at about the cost of one gradient.
    shared = sharp is not None and sharp.batch_size is None and batch_size is None

    def sharpness_probe(x, key, v, hv):
        batch = _take(key, data, sharp.batch_size)

        def matvec(w):
            return hessian_vector_product(lambda y: om.flat_loss(y, batch), x[:p], w)

        hv0 = hv if shared else None
        theta, _, v_next = lanczos_top(matvec, v, sharp.iterations, hv0)
        return theta, v_next

    def lyapunov_probe(x, n, key, v):
        def body(carry, k):
            y, w, total, n = carry
            batch = _take(k, data, batch_size)
            y_next, w_next = jax.jvp(lambda z: _step(om, n, z, batch), (y,), (w,))
            norm = jnp.linalg.norm(w_next)
            return (y_next, w_next / norm, total + jnp.log(norm), n + 1), None

        keys = jax.random.split(key, lyap.window)
        (_, w, total, _), _ = jax.lax.scan(body, (x, v, jnp.zeros((), dtype), n), keys)
        return total / lyap.window, w

    def step(carry, i):
        x, prev, key, v_sharp, v_lyap, stop, buf, buf_steps, n_rec = carry
        n = start + i
        active = (i < n_active) & (stop < 0)
        key_next, k_batch, k_sharp, k_lyap = jax.random.split(key, 4)

        def run(_):
            params, opt_state = om.unravel(x, n)
            batch = _take(k_batch, data, batch_size)
            value_and_grad = jax.value_and_grad(lambda y: om.flat_loss(y, batch))
            if shared:

                def with_hvp(_):
                    (value, g), (_, hv) = jax.jvp(value_and_grad, (x[:p],), (v_sharp,))
                    return value, g, hv

                def plain(_):
                    value, g = value_and_grad(x[:p])
                    return value, g, jnp.zeros_like(g)

                probe_now = n % sharp.every == 0
                value, g, hv = jax.lax.cond(probe_now, with_hvp, plain, None)
            else:
                value, g = value_and_grad(x[:p])
                hv = jnp.zeros((p,), dtype)
            grads = om.flat_loss.layout.unravel(g)
            new, new_state, updates = om.apply(params, opt_state, grads)
            x_new = jnp.concatenate(
                [
                    om.flat_loss.ravel(new).astype(dtype),
                    om.state_layout.ravel(new_state).astype(dtype),
                ]
            )
            gnorm = jnp.linalg.norm(g).astype(dtype)
            loss_ok = jnp.isfinite(value)
            # (A non-finite gradient shows in its norm; a finite gradient can
            # still give a non-finite update, e.g. a NaN schedule.)
            ok = loss_ok & jnp.isfinite(gnorm) & jnp.all(jnp.isfinite(x_new))
            # Keep the last iterate whose loss was finite: after a non-finite
            # loss, the one before (`prev`); after a non-finite gradient or
            # update, the current one.
            x_ = jnp.where(ok, x_new, jnp.where(loss_ok, x, prev))
            prev_ = jnp.where(ok, x, prev)
            stop_ = jnp.where(ok, stop, n).astype(stop.dtype)
            out = (value.astype(dtype), gnorm, _global_norm(updates).astype(dtype))
            return (x_, prev_, key_next, stop_), out, hv

        def skip(_):
            return (x, prev, key, stop), (nan, nan, nan), jnp.zeros((p,), dtype)

        (x_new, prev_new, key_new, stop_new), (value, gnorm, unorm), hv = jax.lax.cond(
            active, run, skip, None
        )
        # Probes and records at the iterate the step's loss was evaluated at.
        do_record = active & (n % record_every == 0)

        def write(bufs):
            buf, buf_steps = bufs
            record = x[:p] if projection is None else projection @ x[:p]
            return buf.at[n_rec].set(record), buf_steps.at[n_rec].set(n)

        buf, buf_steps = jax.lax.cond(
            do_record, write, lambda bufs: bufs, (buf, buf_steps)
        )
        n_rec = n_rec + do_record.astype(n_rec.dtype)
        s_value, v_sharp_new = nan, v_sharp
        if sharp is not None:
            s_value, v_sharp_new = jax.lax.cond(
                active & (n % sharp.every == 0),
                lambda _: sharpness_probe(x, k_sharp, v_sharp, hv),
                lambda _: (nan, v_sharp),
                None,
            )
        l_value, v_lyap_new = nan, v_lyap
        if lyap is not None:
            l_value, v_lyap_new = jax.lax.cond(
                active & (n % lyap.every == 0),
                lambda _: lyapunov_probe(x, n, k_lyap, v_lyap),
                lambda _: (nan, v_lyap),
                None,
            )
        # A probe that failed (non-finite) keeps its previous warm start.
        v_sharp_new = jnp.where(
            jnp.all(jnp.isfinite(v_sharp_new)), v_sharp_new, v_sharp
        )
        v_lyap_new = jnp.where(jnp.all(jnp.isfinite(v_lyap_new)), v_lyap_new, v_lyap)
        carry = (x_new, prev_new, key_new, v_sharp_new, v_lyap_new, stop_new, buf,
                 buf_steps, n_rec)  # fmt: skip
        return carry, (value, gnorm, unorm, s_value, l_value)

    # The recorded parameters go to a buffer in the carry (updated in place), not
    # to the per-step outputs: `(chunk_size / record_every + 1, r)` floats.
    rows = math.ceil(chunk_size / record_every) + 1
    r = p if projection is None else projection.shape[0]
    buf = jnp.full((rows, r), jnp.nan, dtype)
    buf_steps = jnp.full((rows,), -1, jnp.asarray(start).dtype)
    stop0 = jnp.array(-1, jnp.int32)
    carry = (x, prev, key, v_sharp, v_lyap, stop0, buf, buf_steps, jnp.array(0))
    carry, outs = jax.lax.scan(step, carry, jnp.arange(chunk_size))
    x, prev, key, v_sharp, v_lyap, stop, buf, buf_steps, _ = carry
    value, gnorm, unorm, s_value, l_value = outs
    outs = (value, gnorm, unorm, buf_steps, buf, s_value, l_value)
    return x, prev, key, v_sharp, v_lyap, stop, outs


def _check_learning_rate(learning_rate):
    if learning_rate is None or callable(learning_rate):
        return learning_rate
    lr = np.asarray(learning_rate)
    if lr.shape != () or not np.isfinite(lr) or lr <= 0:
        raise ValueError(
            "`learning_rate` (used for the stability ratio eta * sharpness / 2) must "
            f"be a positive number or a schedule `step -> eta`, got {learning_rate!r}."
        )
    return float(lr)


def train(
    loss: Callable[[PyTree, PyTree], Float[Array, ""]],
    params: PyTree,
    optimizer: optax.GradientTransformation,
    n_steps: int,
    *,
    data: PyTree | None = None,
    batch_size: int | None = None,
    key: PRNGKeyArray | None = None,
    probes: tuple = (),
    record_every: int = 10,
    projection: int | None = None,
    learning_rate: float | Callable | None = None,
    chunk_size: int = 100,
    progress: bool = True,
    resume: TrainingTrajectory | None = None,
) -> TrainingTrajectory:
    r"""Train with any optax optimizer and record the run as a trajectory of a
    dynamical system.

    Each step draws a minibatch of `batch_size` samples of `data` (without
    replacement within the minibatch, by a PRNG key inside the compiled loop;
    the full `data` if `batch_size=None`, which makes the run gradient descent
    on the full-batch loss), evaluates `loss(params, batch)` and its gradient,
    and applies `optimizer.update` (the map `dynjax.OptimizerMap`). Steps run as
    `lax.scan` chunks of `chunk_size` under `eqx.filter_jit`: one compilation
    for the run and for later runs with new data of the same shapes (the loss
    and optimizer are compared by value, as in `dynjax.fit`); a tqdm bar
    advances between chunks.

    Recorded: the loss, gradient norm and update norm at every step; the
    flattened parameters every `record_every` steps (or their projection on
    `projection` random directions, for large models); and the probes:
    `dynjax.SharpnessProbe` (the top Hessian eigenvalue, matrix-free; with
    `learning_rate`, the stability ratio `eta * sharpness / 2`, which full-batch
    gradient descent drives to 1 at the *edge of stability*, Cohen et al. 2021)
    and `dynjax.LyapunovProbe` (the finite-time Lyapunov exponent of the
    training map).

    A non-finite loss, gradient or update stops the run: a warning names the
    step, the trajectory so far is returned with `result ==
    RESULTS.nonfinite_loss` and `stopped_at`, and `params` is the last iterate
    whose loss was finite. float32, the norm for training, is reliable here (no
    precision warning). The default `SharpnessProbe(iterations=1)` tracks the
    sharpness within a few percent (below it: a Rayleigh quotient) at the edge of
    stability; `iterations=10` gives about `1e-4` relative. Ctrl-C
    raises `dynjax.TrainingInterrupted` holding
    the completed chunks. `resume=` continues a returned trajectory (same loss,
    optimizer, data and options); the result equals one uninterrupted run.

    **Arguments:**

    - `loss`: `loss(params, batch) -> scalar`.
    - `params`: any pytree whose float arrays are trained (an equinox Module,
        a dict); `p` is their total size.
    - `optimizer`: any `optax.GradientTransformation` (chains, clipping,
        schedules), whose integer state is step counters.
    - `n_steps`: the number of steps, `>= 0` (more steps on top of `resume`).
    - `data`: a pytree of arrays with a leading sample axis `N`, or `None`.
    - `batch_size`: the minibatch size (`<= N`), or `None` for full batches.
    - `key`: a `jax.random.key`, for minibatches and the probes' random starts
        (required with minibatches unless `resume` is given; default
        `jax.random.key(0)` otherwise).
    - `probes`: a tuple of `dynjax.SharpnessProbe` and/or `dynjax.LyapunovProbe`.
    - `record_every`: record the parameters every this many steps (default 10;
        `n_steps / record_every * p` floats are kept: use `projection` for
        large models).
    - `projection`: record `P theta` (`P` of shape `(projection, p)`) instead of
        `theta`.
    - `learning_rate`: the learning rate (a number or a schedule `step -> eta`)
        for the stability ratio; it does not change the optimizer.
    - `chunk_size`: steps per compiled chunk (the progress granularity).
    - `progress`: show a tqdm bar.
    - `resume`: a `TrainingTrajectory` to continue, with the same `loss`,
        `optimizer`, `data` shapes, `batch_size` and `projection` (checked);
        `probes` and `record_every` may change.

    **Returns:**

    A `dynjax.TrainingTrajectory`.

    **Raises:**

    `ValueError` if `loss` does not return a scalar; `data` leaves disagree on
    the sample axis or hold NaN; `batch_size` is not in `[1, N]`; a `learning_rate`
    is not positive; `probes` holds something else or the same kind twice;
    `n_steps`, `record_every`, `chunk_size` or `projection` are not positive
    ints.

    **References:** J. Cohen, S. Kaur, Y. Li, J. Z. Kolter and A. Talwalkar,
    *Gradient descent on neural networks typically occurs at the edge of
    stability*, ICLR (2021); Q. Li, C. Tai and W. E, *Stochastic modified
    equations and dynamics of stochastic gradient algorithms I*, JMLR 20 (2019).
    """
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
        raise ValueError(f"`n_steps` must be an int >= 0, got {n_steps!r}.")
    for name, v in (("record_every", record_every), ("chunk_size", chunk_size)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
    if projection is not None and (
        not isinstance(projection, (int, np.integer)) or projection < 1
    ):
        raise ValueError(f"`projection` must be a positive int, got {projection!r}.")
    if isinstance(probes, (SharpnessProbe, LyapunovProbe)):
        probes = (probes,)
    sharp = lyap = None
    for probe in probes:
        if isinstance(probe, SharpnessProbe) and sharp is None:
            sharp = probe
        elif isinstance(probe, LyapunovProbe) and lyap is None:
            lyap = probe
        else:
            raise ValueError(
                "`probes` takes at most one `dynjax.SharpnessProbe` and one "
                f"`dynjax.LyapunovProbe`, got {probes!r}."
            )
    learning_rate = _check_learning_rate(learning_rate)
    data, n_data = _check_data(data)
    signature = (
        ("loss", hash(_ByValue(loss))),
        ("optimizer", hash(_ByValue(optimizer))),
        ("data", str(jax.tree.structure(data)),
         tuple((x.shape, x.dtype.name) for x in jax.tree.leaves(data))),
        ("batch_size", batch_size),
        ("projection", projection),
    )  # fmt: skip
    if resume is not None and resume.signature:
        for new, old in zip(signature, resume.signature):
            if new != old:
                raise ValueError(
                    f"`resume=` continues a run made with another `{new[0]}`: pass "
                    "the same `loss`, `optimizer`, `data` (shapes), `batch_size` "
                    "and `projection` as the run it continues (probes and "
                    "`record_every` may change)."
                )
    for size, what in ((batch_size, "batch_size"),) + (
        ((sharp.batch_size, "SharpnessProbe(batch_size)"),) if sharp else ()
    ):
        if size is None:
            continue
        if data is None:
            raise ValueError(f"`{what}` needs `data=`.")
        if not isinstance(size, (int, np.integer)) or not 1 <= size <= n_data:
            raise ValueError(
                f"`{what}` must be an int in [1, {n_data}] (the number of samples), "
                f"got {size!r}; or None for full batches."
            )

    if resume is not None:
        params, opt_state, key = resume.params, resume.opt_state, resume.key
    else:
        opt_state = None
        if key is None:
            if batch_size is not None or (sharp is not None and sharp.batch_size):
                raise ValueError(
                    "Minibatches are drawn with a key: pass `key=jax.random.key(...)` "
                    "(or `resume=`)."
                )
            key = jax.random.key(0)
    om = OptimizerMap(loss, optimizer, params, opt_state, data)
    if opt_state is None:
        opt_state = optimizer.init(eqx.filter(params, eqx.is_inexact_array))
    # Counters are derived from the global step: rebase them at step 0.
    done = 0 if resume is None else int(resume.n_steps)
    om = eqx.tree_at(
        lambda m: m.state_layout.others,
        om,
        tuple(o - done if eqx.is_array(o) else o for o in om.state_layout.others),
        is_leaf=lambda x: x is None,
    )
    x = om.initial_state(params, opt_state)
    p = om.n_params
    dtype = x.dtype

    if resume is not None:
        hist = {
            "losses": [np.asarray(resume.losses)],
            "grad_norms": [np.asarray(resume.grad_norms)],
            "update_norms": [np.asarray(resume.update_norms)],
            "record_steps": [np.asarray(resume.record_steps)],
            "thetas": [np.asarray(resume.thetas)],
            "sharpness_steps": [np.asarray(resume.sharpness_steps)],
            "sharpness": [np.asarray(resume.sharpness)],
            "lyapunov_steps": [np.asarray(resume.lyapunov_steps)],
            "lyapunov": [np.asarray(resume.lyapunov)],
        }
        P = resume.projection
        v_sharp, v_lyap = resume.probe_state
    else:
        hist = {k: [] for k in ("losses", "grad_norms", "update_norms", "record_steps",
                                "thetas", "sharpness_steps", "sharpness",
                                "lyapunov_steps", "lyapunov")}  # fmt: skip
        P = None
        k_proj, k_s, k_l = jax.random.split(jax.random.fold_in(key, 0x5EED), 3)
        if projection is not None:
            P = jax.random.normal(k_proj, (projection, p), dtype) / math.sqrt(p)
        v_sharp = jax.random.normal(k_s, (p,), dtype)
        v_sharp = v_sharp / jnp.linalg.norm(v_sharp)
        v_lyap = jax.random.normal(k_l, (x.shape[0],), dtype)
        v_lyap = v_lyap / jnp.linalg.norm(v_lyap)
    prev = x
    stop = -1
    state_step = done  # (the step the optimizer state of `x_cur` belongs to)

    def ratio(steps, values):
        if learning_rate is None:
            return None
        if callable(learning_rate):
            etas = np.asarray(jax.vmap(learning_rate)(jnp.asarray(steps)))
        else:
            etas = learning_rate
        return jnp.asarray(etas * values / 2)

    def result():
        cat = {k: (np.concatenate(v) if v else None) for k, v in hist.items()}
        r = P.shape[0] if P is not None else p
        params_, opt_state_ = om.unravel(x_cur, state_step)
        s_steps = cat["sharpness_steps"]
        s_steps = np.zeros(0, int) if s_steps is None else s_steps
        s_vals = cat["sharpness"]
        s_vals = np.zeros(0) if s_vals is None else s_vals
        return TrainingTrajectory(
            params=params_,
            opt_state=opt_state_,
            key=key,
            n_steps=done,
            result=RESULTS.nonfinite_loss if stop >= 0 else RESULTS.successful,
            stopped_at=stop,
            losses=jnp.asarray(_or(cat["losses"], np.zeros(0))),
            grad_norms=jnp.asarray(_or(cat["grad_norms"], np.zeros(0))),
            update_norms=jnp.asarray(_or(cat["update_norms"], np.zeros(0))),
            record_steps=jnp.asarray(_or(cat["record_steps"], np.zeros(0, int))),
            thetas=jnp.asarray(_or(cat["thetas"], np.zeros((0, r)))),
            projection=P,
            sharpness_steps=jnp.asarray(s_steps),
            sharpness=jnp.asarray(s_vals),
            stability_ratio=ratio(s_steps, s_vals),
            lyapunov_steps=jnp.asarray(_or(cat["lyapunov_steps"], np.zeros(0, int))),
            lyapunov=jnp.asarray(_or(cat["lyapunov"], np.zeros(0))),
            probe_state=(v_sharp, v_lyap),
            signature=signature,
        )

    x_cur = x
    warned = {"sharpness": False, "lyapunov": False}
    bar = (
        progress_bar(total=n_steps, desc="train", unit="step")
        if (progress and n_steps > 0)
        else None
    )
    left = n_steps
    try:
        while left > 0:
            n = min(chunk_size, left)
            out = _chunk(om, x_cur, prev, key, v_sharp, v_lyap, jnp.asarray(done),
                         jnp.asarray(n), batch_size, record_every, P,
                         (sharp, lyap), chunk_size)  # fmt: skip
            x_new, prev, key, v_sharp, v_lyap, stop_, outs = out
            stop = int(stop_)
            n_done = n if stop < 0 else stop - done + 1
            value, gnorm, unorm, rec_steps, records, s_value, l_value = map(
                np.asarray, outs
            )
            steps = done + np.arange(n_done)
            hist["losses"].append(value[:n_done])
            hist["grad_norms"].append(gnorm[:n_done])
            hist["update_norms"].append(unorm[:n_done])
            keep = (rec_steps >= 0) & (rec_steps < done + n_done)
            hist["record_steps"].append(rec_steps[keep])
            hist["thetas"].append(records[keep])
            for probe, values, name in ((sharp, s_value, "sharpness"),
                                        (lyap, l_value, "lyapunov")):  # fmt: skip
                if probe is None:
                    continue
                at = steps % probe.every == 0
                hist[f"{name}_steps"].append(steps[at])
                hist[name].append(values[:n_done][at])
                bad = at & ~np.isfinite(values[:n_done])
                if bad.any() and not warned[name]:
                    warned[name] = True
                    warnings.warn(
                        f"dynjax.train: the {type(probe).__name__} gave a non-finite "
                        f"value at step {int(steps[bad][0])} (recorded as such): the "
                        "training map is not differentiable there. With Adam-type "
                        "optimizers this happens where a second moment is exactly 0 "
                        "(a parameter that never had a gradient): pass `eps_root > 0`, "
                        "e.g. `optax.adam(lr, eps_root=1e-12)`.",
                        RuntimeWarning,
                        stacklevel=user_stacklevel(),
                    )
            x_cur = x_new
            done += n_done
            state_step = done
            if stop >= 0:  # (the kept iterate: before the failing step's update,
                # or the one before that after a non-finite loss)
                state_step = stop if np.isfinite(value[n_done - 1]) else stop - 1
            left -= n
            if bar is not None:
                bar.update(n_done)
                finite = value[:n_done][np.isfinite(value[:n_done])]
                if finite.size:
                    bar.set_postfix(loss=f"{finite[-1]:.4g}")
            if stop >= 0:
                warnings.warn(
                    f"dynjax.train: the loss, its gradient or the update became "
                    f"non-finite at step {stop} (loss {value[n_done - 1]}); stopped "
                    "and returned the trajectory so far, with the last parameters "
                    "whose loss was finite. Lower the learning rate (compare it "
                    "with `dynjax.max_stable_learning_rate`), or clip gradients "
                    "(`optax.clip_by_global_norm`).",
                    RuntimeWarning,
                    stacklevel=user_stacklevel(),
                )
                break
    except KeyboardInterrupt:
        raise TrainingInterrupted(result()) from None
    finally:
        if bar is not None:
            bar.close()
    return result()


def _or(x, default):
    return default if x is None else x
