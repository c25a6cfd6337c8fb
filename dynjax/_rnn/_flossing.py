"""Gradient flossing: a loss on the leading finite-time Lyapunov exponents."""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._custom_types import Args
from .._lyapunov import finite_time_lyapunov
from .._results import raise_if_failed, RESULTS
from .._system import AbstractDrivenMap
from ._spectrum import _check_cell, _initial_states, _sequence_shape


def flossing_loss(
    cell: AbstractDrivenMap,
    inputs: PyTree[Array],
    h0: Float[Array, "*batch d"] | None = None,
    *,
    k: int,
    target: float | Float[Array, " k"] = 0.0,
    warmup: int = 0,
    n_windows: int = 1,
    base: Literal["e"] | float = "e",
    args: Args = None,
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> Float[Array, ""]:
    r"""The gradient-flossing loss: the k leading finite-time exponents pushed
    towards a target.

    Gradients through `T` steps of backpropagation are products of `T`
    hidden-state Jacobians, whose singular values grow or shrink like
    `exp(lambda_i T)` (see `dynjax.gradient_propagation`): positive exponents
    explode gradients, negative ones make them vanish. Gradient flossing
    (Engelken 2023) regularizes the `k` leading finite-time Lyapunov exponents
    towards zero, so that `k` directions of the gradient neither explode nor
    vanish over long horizons:

    $$L = \frac{1}{B\, W} \sum_{b, w} \sum_{i=1}^{k} \big(\lambda_i^{(b, w)} -
    \text{target}_i\big)^2,$$

    where `lambda^{(b, w)}` are the exponents of sequence `b` over window `w`
    (nats per step, or the unit of `base`), computed by QR after every step
    along the input-driven trajectory (`dynjax.finite_time_lyapunov`). The loss
    is differentiable with respect to the cell's weights: `jax.grad` flows
    through the hidden states and the chain of QR factorizations of each
    window, with the window's start state and tangent frame held fixed
    (`gradient="per_window"`), so a window of `tau` steps costs about three
    times its forward pass (`O(tau d^2 k)`) and its gradient grows at most like
    `exp(lambda_1 tau)`: keep windows short (tens to a few hundred steps) for
    chaotic networks. Add it to a task loss (`task + alpha * flossing`) or use
    it alone before training ("pre-flossing"), e.g. with `dynjax.fit`.

    **Arguments:**

    - `cell`: a driven map (a `dynjax.rnn` cell or any `AbstractDrivenMap`).
    - `inputs`: input sequences, shape `(batch, T, m)`, `(batch, T)` or a
        pytree with leading axes `(batch, T)`, drawn from the task.
    - `h0`: the initial state, `(d,)` or `(batch, d)` (default zeros).
    - `k`: the number of leading exponents regularized, `1 <= k <= d`.
    - `target`: the target exponent(s), a scalar or shape `(k,)` (default 0).
    - `warmup`: leading steps of each sequence over which the state and frame
        evolve without entering the loss (default 0).
    - `n_windows`: the `T - warmup` remaining steps are cut into `n_windows`
        windows of `(T - warmup) // n_windows` steps (a remainder is unused).
    - `base`, `args`, `key`: as for `dynjax.rnn_spectrum`.
    - `throw`: if `True` (default), a non-finite state or tangent raises; if
        `False` the loss is then `nan`. Inside `dynjax.fit` pass `throw=False`:
        `fit` stops on a non-finite loss and keeps the last finite model
        (`RESULTS.nonfinite_loss`), where a raised error would end the run.

    **Returns:**

    The loss, a scalar in squared nats per step (squared bits with `base=2`).

    **Raises:**

    `ValueError` for inputs without a `(batch, T)` lead, windows shorter than a
    step, `k` outside `[1, d]`, a `target` that is neither a scalar nor of shape
    `(k,)`, or a mismatched `h0`; `equinox.EquinoxRuntimeError` (with
    `throw=True`) if a state or tangent becomes non-finite.

    **References:**

    R. Engelken, "Gradient flossing: improving gradient descent through dynamic
    control of Jacobians", NeurIPS (2023).
    """
    verb = "flossing_loss"
    _check_cell(cell, verb)
    batch, n_time = _sequence_shape(inputs, verb, batched=True, cell=cell)
    if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1:
        raise ValueError(f"`n_windows` must be an int >= 1, got {n_windows!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an int >= 0, got {warmup!r}.")
    tau = (n_time - warmup) // n_windows
    if tau < 1:
        raise ValueError(
            f"`{n_windows}` windows after `warmup={warmup}` do not fit in T={n_time} "
            "steps: pass longer sequences, fewer windows or a smaller `warmup`."
        )
    if jnp.shape(target) not in ((), (k,)):
        raise ValueError(
            f"`target` must be a scalar or have shape (k,) = ({k},), got shape "
            f"{jnp.shape(target)}."
        )
    h0, _ = _initial_states(cell, h0, batch, verb)

    def one(h, xs):
        xs = jax.tree.map(lambda a: a[: warmup + n_windows * tau], xs)
        return finite_time_lyapunov(
            cell,
            h,
            tau=tau,
            n_windows=n_windows,
            k=k,
            inputs=xs,
            args=args,
            base=base,
            transient=0,
            tangent_warmup=warmup,
            interval=1,
            key=key,
            method="matrix-free",
            throw=False,
        )

    out = eqx.filter_vmap(one)(h0, inputs)  # exponents: (batch, n_windows, k)
    target = jnp.broadcast_to(jnp.asarray(target, out.exponents.dtype), (k,))
    loss = jnp.mean(jnp.sum((out.exponents - target) ** 2, axis=-1))
    failed = jnp.any(out.result != RESULTS.successful)
    if throw:
        first = jnp.argmax(out.result != RESULTS.successful)
        code = jax.tree.map(lambda c: c[first], out.result)
        return raise_if_failed(code, loss)
    return jnp.where(failed, jnp.nan, loss)
