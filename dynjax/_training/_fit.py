"""The optax training engine behind every dynjax verb that trains a model."""

import functools
import types
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._misc import progress_bar
from .._results import RESULTS
from .._system._checks import user_stacklevel


class FitResult(eqx.Module):
    """The outcome of `dynjax.fit` (and of the verbs built on it).

    **Attributes:**

    - `model`: the trained model (a Module of the same structure as the one
        passed in). After a stop it is the last model whose loss was finite:
        after a non-finite loss at step `stopped_at`, the model step
        `stopped_at - 1` was evaluated at (the update that produced the failing
        model is undone); after a non-finite gradient or update, the model step
        `stopped_at` was evaluated at.
    - `losses`: the training loss at every step done, shape `(n_steps,)`, in
        the loss's own units (the loss is evaluated before that step's update).
        After a non-finite loss the last entry is that loss.
    - `opt_state`: the optax state that goes with `model`.
    - `key`: the PRNG key the next step would use.
    - `n_steps`: the number of steps run (the length of `losses`, the failing
        step included), an `int`.
    - `result`: `RESULTS.successful`, or `RESULTS.nonfinite_loss`.
    - `stopped_at`: the 0-based global step whose loss or gradient was
        non-finite, or `-1`.
    - `aux`: with `has_aux=True`, the loss's auxiliary output at every step
        done, stacked along a leading axis of length `n_steps` (e.g. each
        network's loss in a population); `None` otherwise.

    Pass it back as `dynjax.fit(..., resume=result)` to continue training:
    model, optimizer state, key and loss history carry on.
    """

    model: PyTree
    losses: Float[Array, " n"]
    opt_state: PyTree
    key: PRNGKeyArray
    n_steps: int
    result: RESULTS
    stopped_at: int
    aux: PyTree = None


class FitInterrupted(KeyboardInterrupt):
    """Raised when `dynjax.fit` is interrupted (Ctrl-C).

    Its `result` attribute is the `dynjax.FitResult` of every chunk of steps
    that completed, so `dynjax.fit(..., resume=exc.result)` continues the run
    and nothing is lost.
    """

    def __init__(self, result: FitResult):
        super().__init__(
            "Training interrupted; the completed steps are in `exc.result` "
            "(continue with `dynjax.fit(..., resume=exc.result)`)."
        )
        self.result = result


# --- compile-cache keys by value --------------------------------------------------
#
# `eqx.filter_jit` keys its cache on static arguments by equality, and functions
# compare by identity: `optax.adam(1e-3)` written again in a notebook cell, or the
# same loss lambda re-run, would recompile. `_ByValue` compares a function by its
# code, defaults, closure contents and the globals it reads (recursively), so equal
# definitions share one compilation. Small arrays and equinox Modules compare by
# value too; anything else (large arrays, other objects) by identity, as before.

_SCALARS = (type(None), bool, int, float, complex, str, bytes, np.generic)
_ARRAY_BY_VALUE = 4096  # arrays up to this size compare by value


def _value_key(obj, seen: frozenset = frozenset(), depth: int = 0):
    if isinstance(obj, _SCALARS):
        return (type(obj), obj.item() if isinstance(obj, np.generic) else obj)
    if id(obj) in seen or depth > 32:
        return ("ref", id(obj))
    seen = seen | {id(obj)}

    def key(x):
        return _value_key(x, seen, depth + 1)

    if type(obj) in (tuple, list) or (
        isinstance(obj, tuple) and hasattr(obj, "_fields")
    ):
        return (type(obj), tuple(key(x) for x in obj))
    if type(obj) is dict:
        return (dict, tuple(sorted((repr(k), key(v)) for k, v in obj.items())))
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        cells = tuple(key(c.cell_contents) for c in obj.__closure__ or ())
        names = tuple(
            (n, key(obj.__globals__[n])) for n in code.co_names if n in obj.__globals__
        )
        return (
            "fn",
            code,
            key(obj.__defaults__),
            key(obj.__kwdefaults__),
            cells,
            names,
        )
    if isinstance(obj, functools.partial):
        return ("partial", key(obj.func), key(obj.args), key(obj.keywords))
    if isinstance(obj, types.MethodType):
        return ("method", key(obj.__func__), key(obj.__self__))
    if isinstance(obj, (jax.Array, np.ndarray)) and not isinstance(
        obj, jax.core.Tracer
    ):
        if obj.size <= _ARRAY_BY_VALUE:  # (a constant baked into the program)
            return ("array", obj.shape, obj.dtype.name, np.asarray(obj).tobytes())
        return ("ref", id(obj))
    if isinstance(obj, eqx.Module):
        leaves, treedef = jax.tree.flatten(obj)
        return ("module", treedef, tuple(key(x) for x in leaves))
    return ("ref", id(obj))


class _ByValue:
    """A static jit argument compared by `_value_key` (it keeps `obj` alive, so the
    identities inside the key stay unique)."""

    def __init__(self, obj):
        self.obj = obj
        try:
            self._key = _value_key(obj)
            hash(self._key)
        except Exception:  # (an unhashable part: fall back to identity)
            self._key = ("ref", id(obj))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _ByValue) and self._key == other._key


def _nan_like(shape, dtype):
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.full(shape, jnp.nan, dtype)
    return jnp.zeros(shape, dtype)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


@eqx.filter_jit
def _chunk(params, static, opt_state, prev, key, data, start, n_active, loss,
           optimizer, batch_size, chunk_size, has_aux=False):  # fmt: skip
    """`chunk_size` training steps as one `lax.scan`; steps `>= n_active` and the
    steps after a non-finite loss are skipped (one compilation for every chunk).
    `prev` is the (parameters, optimizer state) before the last update."""
    n_data = None if data is None else jax.tree.leaves(data)[0].shape[0]

    loss, optimizer = loss.obj, optimizer.obj

    def loss_of(p, batch, k):
        return loss(eqx.combine(p, static), batch, k)

    def take(k):
        if data is None or batch_size is None:
            return data
        idx = jax.random.choice(k, n_data, (batch_size,), replace=False)
        return jax.tree.map(lambda a: a[idx], data)

    def step(carry, i):
        params, opt_state, prev, key, stop = carry

        def run(_):
            new_key, k_batch, k_loss = jax.random.split(key, 3)
            out, grads = eqx.filter_value_and_grad(loss_of, has_aux=has_aux)(
                params, take(k_batch), k_loss
            )
            value, aux = out if has_aux else (out, None)
            updates, state = optimizer.update(grads, opt_state, params)
            new_params = eqx.apply_updates(params, updates)
            loss_ok = jnp.isfinite(value)
            # (A finite gradient can still give a non-finite update: a NaN schedule.)
            ok = loss_ok & _all_finite(grads) & _all_finite(new_params)
            # Keep the last model whose loss was finite: after a non-finite loss,
            # the one before the last update (`prev`); after a non-finite
            # gradient or update, the current one.
            p, s, prev_ = jax.lax.cond(
                ok,
                lambda _: (new_params, state, (params, opt_state)),
                lambda _: jax.lax.cond(
                    loss_ok,
                    lambda _: (params, opt_state, prev),
                    lambda _: (*prev, prev),
                    None,
                ),
                None,
            )
            stop_ = jnp.where(ok, stop, start + i).astype(stop.dtype)
            value = value.astype(jnp.result_type(float))
            return (p, s, prev_, new_key, stop_), (value, aux)

        def skip(_):
            nan = jnp.array(jnp.nan, jnp.result_type(float))
            aux = None
            if has_aux:
                spec = jax.eval_shape(lambda: loss_of(params, take(key), key)[1])
                aux = jax.tree.map(lambda a: _nan_like(a.shape, a.dtype), spec)
            return (params, opt_state, prev, key, stop), (nan, aux)

        active = (i < n_active) & (stop < 0)
        return jax.lax.cond(active, run, skip, None)

    stop0 = jnp.array(-1, dtype=jnp.int32)
    carry = (params, opt_state, prev, key, stop0)
    (params, opt_state, prev, key, stop), values = jax.lax.scan(
        step, carry, jnp.arange(chunk_size)
    )
    return params, opt_state, prev, key, stop, values


def _check_data(data):
    if data is None:
        return None, None
    data = jax.tree.map(jnp.asarray, data)
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError(
            "`data` has no arrays; pass arrays with a leading sample axis."
        )
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ValueError(
            "Every leaf of `data` needs the same leading (sample) axis, got shapes "
            f"{[leaf.shape for leaf in leaves]}."
        )
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not isinstance(
            leaf, jax.core.Tracer
        ):
            bad = ~np.isfinite(np.asarray(leaf))
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                where = jax.tree_util.keystr(path) or ""
                raise ValueError(
                    f"`data`{where} contains {int(bad.sum())} non-finite value(s) "
                    f"(NaN or inf), the first in sample {row}. Remove or impute "
                    "those samples before training."
                )
    return data, sizes.pop()


def fit(
    loss: Callable[[PyTree, PyTree, PRNGKeyArray], Float[Array, ""]],
    model: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    n_steps: int,
    key: PRNGKeyArray | None = None,
    data: PyTree | None = None,
    batch_size: int | None = None,
    chunk_size: int = 100,
    progress: bool = True,
    resume: FitResult | None = None,
    trainable: Callable[[Any], bool] | PyTree[bool] = eqx.is_inexact_array,
    has_aux: bool = False,
) -> FitResult:
    """Train a model with an optax optimizer, as compiled chunks of steps.

    Each step draws a minibatch of `batch_size` samples of `data` (without
    replacement, by a PRNG key inside the compiled loop), evaluates
    `loss(model, batch, key)` and its gradient with respect to the trainable
    leaves (`eqx.partition(model, trainable)`), and applies
    `optimizer.update` with `eqx.apply_updates`. Steps run as a `lax.scan` of
    `chunk_size` steps under `eqx.filter_jit`: one compilation however many
    steps, a tqdm bar updated between chunks.

    A non-finite loss, gradient or updated model stops the run: that step's
    update is not applied, a warning names the step, and the result holds the
    last model whose loss was finite, with `result == RESULTS.nonfinite_loss`.
    Ctrl-C raises `dynjax.FitInterrupted` whose `result` holds every completed
    chunk.

    **Arguments:**

    - `loss`: `loss(model, batch, key) -> scalar`. `batch` has the structure of
        `data` with `batch_size` rows (all of `data` if `batch_size=None`;
        `None` if `data=None`); `key` is a fresh key for the loss's own
        randomness (noise, probes, times). `loss` and `optimizer` are part of
        the compiled program; they are compared by value (code, closure and the
        globals they read, with Modules and arrays of up to 4096 entries by
        their values), so running the same cell again, or writing
        `optax.adam(1e-3)` anew, reuses the compilation.
    - `model`: any pytree, usually an equinox Module.
    - `optimizer`: any `optax.GradientTransformation` (schedules included).
    - `n_steps`: the number of steps to run (more steps on top of `resume`).
    - `key`: a `jax.random.key`; required unless `resume` is given.
    - `data`: a pytree of arrays sharing a leading sample axis `N`, or `None`.
    - `batch_size`: the minibatch size (`<= N`), or `None` for full batches.
    - `chunk_size`: steps per compiled chunk (the progress granularity).
    - `progress`: show a tqdm bar.
    - `resume`: a `FitResult` to continue from (its model, optimizer state and
        key replace `model` and `key`; losses are appended). Pass the same
        `loss`, `optimizer` and `data` as the run it continues.
    - `trainable`: a filter selecting the trained leaves (default: every float
        array). Every float array of `model` is trained unless excluded: a model
        that holds fixed constants (e.g. the `dynjax.VPSDE` inside a score
        network) should read them through `jax.lax.stop_gradient`, or pass
        `trainable` as a pytree of bools shaped like the model (as
        `eqx.partition` accepts) with `False` at those leaves.
    - `has_aux`: if `True`, `loss` returns `(value, aux)`, where `aux` is any
        pytree of arrays of fixed shapes (per-step diagnostics: accuracies, the
        losses of each member of a population); it is not differentiated and is
        returned stacked over steps as `result.aux`.

    **Returns:**

    A `dynjax.FitResult`.

    **Raises:**

    `ValueError` if `data` holds NaN or inf, leaves disagree on the sample
    axis, `batch_size > N`, `n_steps` is negative (0 returns at once) or
    `chunk_size` is not positive.

    !!! Example

        ```python
        mlp = eqx.nn.MLP(1, 1, 32, 2, key=jax.random.key(0))
        xs = jnp.linspace(-1, 1, 256)[:, None]
        loss = lambda m, x, k: jnp.mean((jax.vmap(m)(x) - jnp.sin(3 * x)) ** 2)
        out = dynjax.fit(loss, mlp, optax.adam(1e-2), data=xs, batch_size=64,
                         n_steps=2000, key=jax.random.key(1))
        out.losses[-1], out.model
        ```
    """
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
        raise ValueError(f"`n_steps` must be an int >= 0, got {n_steps!r}.")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    data, n_data = _check_data(data)
    if batch_size is not None:
        if data is None:
            raise ValueError("`batch_size` needs `data=`.")
        if (
            not isinstance(batch_size, (int, np.integer))
            or not 1 <= batch_size <= n_data
        ):
            raise ValueError(
                f"`batch_size` must be an int in [1, {n_data}] (the number of "
                f"samples), got {batch_size!r}; or None for full batches."
            )
    if resume is not None:
        model, key, opt_state = resume.model, resume.key, resume.opt_state
        losses = [np.asarray(resume.losses)]
        auxes = [] if resume.aux is None else [resume.aux]
        done = int(resume.n_steps)
    else:
        if key is None:
            raise ValueError("Pass `key=jax.random.key(...)` (or `resume=`).")
        opt_state = None
        losses = []
        auxes = []
        done = 0
    params, static = eqx.partition(model, trainable)
    if opt_state is None:
        opt_state = optimizer.init(params)
    prev = (params, opt_state)
    stop = -1
    by_value = (_ByValue(loss), _ByValue(optimizer))

    def result():
        out_losses = np.concatenate(losses) if losses else np.zeros(0)
        code = RESULTS.nonfinite_loss if stop >= 0 else RESULTS.successful
        aux = None
        if auxes:
            aux = jax.tree.map(lambda *a: jnp.concatenate(a), *auxes)
        return FitResult(
            model=eqx.combine(params, static),
            losses=jnp.asarray(out_losses),
            opt_state=opt_state,
            key=key,
            n_steps=done,
            result=code,
            stopped_at=stop,
            aux=aux,
        )

    bar = None
    if progress and n_steps > 0:
        bar = progress_bar(total=n_steps, desc="fit", unit="step")
    left = n_steps
    try:
        while left > 0:
            n = min(chunk_size, left)
            start, n_active = jnp.asarray(done), jnp.asarray(n)
            out = _chunk(params, static, opt_state, prev, key, data, start,
                         n_active, by_value[0], by_value[1], batch_size,
                         chunk_size, has_aux)  # fmt: skip
            params, opt_state, prev, key, stop_, (values, aux) = out
            stop = int(stop_)
            n_done = n if stop < 0 else stop - done + 1
            values = np.asarray(values)[:n_done]
            losses.append(values)
            if has_aux:
                auxes.append(jax.tree.map(lambda a: a[:n_done], aux))
            done += n_done
            left -= n
            if bar is not None:
                bar.update(n_done)
                finite = values[np.isfinite(values)]
                if finite.size:
                    bar.set_postfix(loss=f"{finite[-1]:.4g}")
            if stop >= 0:
                warnings.warn(
                    f"dynjax.fit: the loss, its gradient or the updated model became "
                    f"non-finite at step {stop} (loss {values[-1]}); stopped, "
                    "returning the last model whose loss was finite. Lower the "
                    "learning rate, clip gradients (`optax.clip_by_global_norm`), or "
                    "check the loss for log(0) and division by zero. If the loss "
                    "solves a differential equation (neural ODE, CNF), a failed "
                    "solve gives this too: raise `max_steps`, loosen the "
                    "tolerances, or use an implicit solver for stiff dynamics.",
                    RuntimeWarning,
                    stacklevel=user_stacklevel(),
                )
                break
    except KeyboardInterrupt:
        raise FitInterrupted(result()) from None
    finally:
        if bar is not None:
            bar.close()
    return result()


def save_model(path, model: PyTree) -> None:
    """Save a model's array leaves to `path` (`eqx.tree_serialise_leaves`).

    Only leaves are stored, not the structure: load with `dynjax.load_model`
    and a template of the same structure (build it as the original was built).
    No pickle is involved.
    """
    eqx.tree_serialise_leaves(path, model)


def load_model(path, like: PyTree) -> PyTree:
    """Load leaves saved by `dynjax.save_model` into the template `like`.

    `like` must have the structure, shapes and dtypes of the saved model (e.g.
    the same constructor call with any key). Raises the error of
    `eqx.tree_deserialise_leaves` when they differ.
    """
    return eqx.tree_deserialise_leaves(path, like)
