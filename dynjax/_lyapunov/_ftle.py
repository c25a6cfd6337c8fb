"""Finite-time Lyapunov exponents over consecutive windows."""

from typing import Literal

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, Inputs, StateLike
from .._misc import is_concrete
from .._results import raise_if_failed, RESULTS
from .._system import AbstractFlow, AbstractSystem
from ._spectrum import (
    _conform,
    _layout,
    _prepare,
    initial_frame,
    LyapunovState,
    run_fixed_layout,
)


class FiniteTimeLyapunov(eqx.Module):
    """The result of `dynjax.finite_time_lyapunov`.

    **Attributes:**

    - `exponents`: shape `(n_windows, k)`, the exponents over each window of
        length `tau`. Column `i` follows the `i`-th Gram-Schmidt direction (the
        `i`-th exponent once the tangents are aligned); rows are not sorted, since
        sorting each window would bias the window average upwards.
    - `times`: the accumulated time at the end of each window, shape `(n_windows,)`.
    - `tau`: the window length actually used (a whole number of steps).
    - `state`: a `dynjax.LyapunovState`, to continue (`lyapunov_spectrum(...,
        state=)`).
    - `result`: a `dynjax.RESULTS` code.
    """

    exponents: Float[Array, "n k"]
    times: Float[Array, " n"]
    tau: Float[Array, ""]
    state: LyapunovState
    result: RESULTS


@eqx.filter_jit
def _ftle(system, x0, args, inputs, state, key, dt, solver, counts, layout, windows):
    tangent, state0, dt, args, inputs = _prepare(
        system, x0, args, inputs, state, key, dt, solver, layout
    )
    state1, _, steps, code, (log_r, _) = run_fixed_layout(
        tangent, state0, dt, inputs, args, counts, layout, remainder=0
    )
    blocks_per_window = counts["full"] // windows
    tau = dt * (blocks_per_window * layout.interval)
    sums = log_r.reshape(windows, blocks_per_window, -1).sum(axis=1)
    exponents = sums / tau / layout.log_base
    times = state0.elapsed + dt * steps.astype(state0.elapsed.dtype)
    return FiniteTimeLyapunov(
        exponents=exponents,
        times=times[blocks_per_window - 1 :: blocks_per_window],
        tau=jnp.asarray(tau, state0.elapsed.dtype),
        state=state1,
        result=code,
    )


_FTLE_GRADIENTS = ("per_window", "after_warmup", "full")


def finite_time_lyapunov(
    system: AbstractSystem,
    x0: StateLike,
    *,
    tau: float | int,
    n_windows: int,
    k: int | None = None,
    dt: float | None = None,
    interval: int | None = None,
    transient: float | int | None = None,
    tangent_warmup: int | None = None,
    inputs: Inputs | None = None,
    args: Args = None,
    base: Literal["e"] | float = "e",
    solver: dfx.AbstractSolver | None = None,
    state: LyapunovState | None = None,
    key: PRNGKeyArray | None = None,
    method: Literal["jacobian", "matrix-free"] | None = None,
    gradient: Literal["per_window", "after_warmup", "full"] = "per_window",
    throw: bool = True,
) -> FiniteTimeLyapunov:
    r"""Finite-time Lyapunov exponents over `n_windows` consecutive windows.

    After the transient and the tangent warm-up (so that the tangent block is
    aligned with the leading Oseledets subspace), the QR log-sums of
    `dynjax.lyapunov_spectrum` are summed window by window:

    $$\lambda_i^{(w)} = \frac{1}{\tau} \sum_{\text{blocks in window } w} \log R_{ii}.$$

    Their distribution over windows measures the fluctuations of the local
    expansion rates (its mean over windows is the Lyapunov exponent); the
    variance decays like `1/tau` for hyperbolic chaos.

    **Gradients.** By default (`gradient="per_window"`) each window's exponent
    is differentiated with the window's start state and tangent frame held
    fixed (`lax.stop_gradient`): `jax.grad` returns the mean over windows of
    `d lambda^{(w)} / d theta` at fixed `(x_w, Q_w)`, which grows at most like
    `exp(lambda_1 tau)`, not like `exp(lambda_1 T)` for the whole run (for
    Lorenz, `jax.grad` of the mean leading exponent over 20 windows of 1 time
    unit is of order 1; differentiated through the whole orbit it was -6.4e9).
    This is what gradient flossing (Engelken 2023) differentiates: it pushes the
    leading finite-time exponents of an RNN towards zero during training.
    `gradient="after_warmup"` holds only the start of the first window, and
    `gradient="full"` differentiates through the transient too (exact for
    non-chaotic systems, useless for chaotic ones).

    **Arguments:**

    - `tau`: the window length: a time for flows (rounded to a whole number of
        `interval * dt`), a number of iterations for maps (a multiple of
        `interval`).
    - `n_windows`: the number of windows.
    - `gradient`: `"per_window"` (default), `"after_warmup"` or `"full"`: what is
        held fixed when differentiating (see **Gradients**).
    - All other arguments as for `dynjax.lyapunov_spectrum`. For a driven map,
        `inputs` must have `transient + tangent_warmup * interval + n_windows *
        tau` rows.

    **Returns:**

    A `dynjax.FiniteTimeLyapunov`.

    **References:**

    R. Engelken, "Gradient flossing: improving gradient descent through dynamic
    control of Jacobians", NeurIPS (2023). H. D. I. Abarbanel, R. Brown,
    M. B. Kennel, "Variation of Lyapunov exponents on a strange attractor",
    J. Nonlinear Sci. 1, 175-199 (1991).
    """
    if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1:
        raise ValueError(f"`n_windows` must be an int >= 1, got {n_windows!r}.")
    is_flow = isinstance(system, AbstractFlow)
    step = (0.01 if dt is None else float(dt)) if is_flow else 1
    interval_ = interval if interval is not None else (10 if is_flow else 1)
    if not isinstance(interval_, int) or interval_ < 1:
        raise ValueError(f"`interval` must be an int >= 1, got {interval_!r}.")
    if not (tau > 0):
        raise ValueError(f"`tau` must be positive, got {tau}.")
    window_steps = round(float(tau) / step)
    blocks = round(window_steps / interval_)
    if blocks < 1 or (not is_flow and window_steps != blocks * interval_):
        raise ValueError(
            f"`tau={tau}` must be a positive multiple of `interval` "
            f"({interval_} steps)."
        )
    if gradient not in _FTLE_GRADIENTS:
        raise ValueError(
            f"`gradient` must be one of {_FTLE_GRADIENTS}, got {gradient!r}."
        )
    hold_every = {"per_window": blocks, "after_warmup": 0, "full": -1}[gradient]
    layout, counts, _ = _layout(
        system,
        x0,
        k=k,
        dt=dt,
        n_steps=n_windows * blocks * interval_,
        t_total=None,
        interval=interval_,
        transient=transient,
        tangent_warmup=tangent_warmup,
        inputs=inputs,
        base=base,
        solver=solver,
        state=state,
        method=method,
        args=args,
        key=key,
        verb="finite_time_lyapunov",
        hold_every=hold_every,
        fixed=True,
    )
    dt_arg = dt if (dt is not None and not is_concrete(dt)) else None
    system, x0, args, inputs = _conform(system, x0, args, inputs, layout)
    if state is None:
        key = initial_frame(key, x0.shape[0], layout.k, x0.dtype)
    out = _ftle(
        system, x0, args, inputs, state, key, dt_arg, solver, counts, layout,
        n_windows,
    )  # fmt: skip
    if throw:
        exponents = raise_if_failed(out.result, out.exponents)
        out = eqx.tree_at(lambda r: r.exponents, out, exponents)
    return out
