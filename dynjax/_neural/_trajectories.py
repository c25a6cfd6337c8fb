"""Fitting a flow (a neural ODE, or any dynjax flow) to observed trajectories."""

import math
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._custom_types import RealScalarLike
from .._system import AbstractFlow
from .._system._checks import conform
from .._training import fit, FitResult
from ._ode import (
    check_times,
    check_vector_field,
    lift_of,
    NeuralODE,
    predict,
    solve_options,
)


class _TrajectoryLoss(eqx.Module):
    """`loss(model, batch, key)` for `dynjax.fit`: solve from each trajectory's
    first state up to `t_end`, compare at the times `ts[1:] <= t_end` (the length
    curriculum's window). A Module whose `ts` and `t_end` are arrays, so that
    both stages of the curriculum (and later calls with the same shapes) share
    one compilation."""

    ts: Float[Array, " T"]
    t_end: Float[Array, ""]
    loss: Callable | None = eqx.field(static=True)
    solver: dfx.AbstractSolver
    controller: dfx.AbstractStepSizeController
    adjoint: dfx.AbstractAdjoint
    dt0: RealScalarLike | None
    max_steps: int = eqx.field(static=True)

    def __call__(self, model, batch, key):
        del key
        # Times after the window are saved at `t_end` (diffrax accepts repeated
        # save times) and weighted out.
        saves = jnp.minimum(self.ts, self.t_end)

        # The minibatch is one ODE on a (batch_size, d) state (shared steps; see
        # `NeuralODE.__call__`). throw=False: a failed solve gives `inf` states,
        # hence a non-finite loss, which `dynjax.fit` reports with its step. (The
        # first time is the initial condition, reproduced exactly.)
        pred = predict(
            model,
            saves,
            batch[:, 0],
            self.solver,
            self.controller,
            self.adjoint,
            self.dt0,
            self.max_steps,
            False,
        )
        pred, target = pred[:, 1:], batch[:, 1:]
        inside = (self.ts[1:] <= self.t_end)[None, :, None]
        if self.loss is None:  # mean squared error over the window
            squares = jnp.where(inside, (pred - target) ** 2, 0.0)
            count = jnp.sum(inside) * pred.shape[0] * pred.shape[2]
            return jnp.sum(squares) / count
        return self.loss(jnp.where(inside, pred, target), target)


def _check_data(ys, ts, data_size) -> Array:
    ys = jnp.asarray(ys)
    if ys.ndim != 3:
        hint = (
            " For one trajectory pass `ys[None]`."
            if ys.ndim == 2 and ys.shape[0] == ts.shape[0]
            else ""
        )
        raise ValueError(
            f"`ys` must have shape (batch, len(ts), d) = (batch, {ts.shape[0]}, "
            f"{data_size}), got {ys.shape}.{hint}"
        )
    if ys.shape[1] != ts.shape[0]:
        raise ValueError(
            f"`ys` has {ys.shape[1]} time points per trajectory (axis 1) but `ts` "
            f"has {ts.shape[0]}; pass `ys` of shape (batch, {ts.shape[0]}, "
            f"{data_size}) observed at `ts`."
        )
    if data_size is not None and ys.shape[2] != data_size:
        raise ValueError(
            f"`ys` has {ys.shape[2]} coordinates (axis 2) but the model's data has "
            f"{data_size}; build the model with that data size or pass "
            f"`ys[..., :{data_size}]`-shaped data."
        )
    if ys.shape[0] < 1:
        raise ValueError("`ys` holds no trajectory (batch axis of size 0).")
    if not jnp.issubdtype(ys.dtype, jnp.inexact):
        ys = ys.astype(jnp.result_type(float))
    if not isinstance(ys, jax.core.Tracer):
        bad = ~np.isfinite(np.asarray(ys))
        if bad.any():
            b, t, _ = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"`ys` contains {int(bad.sum())} non-finite value(s) (NaN or inf), "
                f"the first in trajectory {b} at time index {t}. Drop those "
                "trajectories or fill the gaps (e.g. by interpolation) before "
                "fitting."
            )
    return ys


def fit_trajectories(
    model: AbstractFlow,
    ts: Float[ArrayLike, " T"],
    ys: Float[ArrayLike, "batch T data_size"],
    optimizer: optax.GradientTransformation,
    *,
    n_steps: int,
    key: PRNGKeyArray | None = None,
    batch_size: int | None = None,
    curriculum: tuple[float, float] | None = (0.1, 0.5),
    loss: str | Callable = "mse",
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    adjoint: dfx.AbstractAdjoint | None = None,
    dt0: RealScalarLike | None = None,
    max_steps: int = 4096,
    chunk_size: int = 100,
    progress: bool = True,
    resume: FitResult | None = None,
) -> FitResult:
    r"""Fit a flow to observed trajectories.

    Each trajectory `ys[i]`, observed at the times `ts`, is predicted by solving
    the model from its first observation `ys[i, 0]` at `ts[0]`
    (`NeuralODE.__call__`: lift, diffrax solve, read-out) and the loss compares
    the prediction with `ys[i]` at `ts[1:]` (mean squared error by default; the
    first time is the initial condition, reproduced exactly). Each minibatch is
    solved as one ODE on a `(batch_size, d)` state with shared adaptive steps,
    as `NeuralODE.__call__` does for a batch (there: the trade-off; gradients
    equal those of per-sample solves within the solver's tolerance). Training runs
    on `dynjax.fit`: compiled chunks of optax steps, a minibatch of
    `batch_size` trajectories drawn by key at each step, a tqdm bar, a stop at
    the first non-finite loss or gradient with the step reported and the last
    model whose loss was finite returned.

    **Length curriculum.** Fitting whole long trajectories from a random
    initialisation often lands in a poor local minimum (the predicted and the
    observed trajectories drift apart early and the loss landscape is rough).
    With `curriculum=(fraction, share)` the first `round(share * n_steps)`
    steps fit only the first `ceil(fraction * T)` time points (at least 2) of
    every trajectory, and the remaining steps the whole of it (Kidger 2021,
    Section 2.4; diffrax's neural ODE example); `None` fits whole trajectories
    from the start. The two stages are two `dynjax.fit` calls, the second
    resuming the first (optimizer state and loss history carry on; the losses
    of the first stage are over its shorter window). The first stage solves up
    to the window's last time only and weights the later times out, so both
    stages share one compilation.

    A model other than a `NeuralODE` is any dynjax flow whose data is its state
    (its floating parameters are fitted: e.g. a catalogue system's
    coefficients).

    **Arguments:**

    - `model`: a `dynjax.NeuralODE` (or any `dynjax.AbstractFlow`).
    - `ts`: the observation times, shape `(T,)`, `T >= 2`, strictly increasing.
    - `ys`: the observed trajectories, shape `(batch, T, data_size)`, finite.
        Their floating dtype is the computation's (the model's parameters are
        cast to it, as in every dynjax verb).
    - `optimizer`: any `optax.GradientTransformation`.
    - `n_steps`: the total number of optimizer steps (both stages).
    - `key`: a `jax.random.key` for the minibatches (required unless `resume`).
    - `batch_size`: trajectories per step (`None`: all of them).
    - `curriculum`: `(fraction, share)` with `0 < fraction <= 1` and
        `0 <= share <= 1` (default `(0.1, 0.5)`), or `None`.
    - `loss`: `"mse"` (the mean over the trajectories, the stage's window of
        times after the first, and the coordinates), or a function
        `loss(pred, target) -> scalar` of two arrays of shape
        `(batch_size, T - 1, data_size)` (the times after the first). In the
        curriculum's first stage, `pred` equals `target` after the window (no
        error there: a mean is then diluted by the window's share of `T - 1`).
    - `solver`, `stepsize_controller`, `adjoint`, `dt0`, `max_steps`: the solve,
        as in `NeuralODE.__call__` (default `Tsit5`, a PID controller at
        `rtol=1e-6, atol=1e-8` in float64 (`1e-4, 1e-6` in float32),
        `RecursiveCheckpointAdjoint`; with `dt0=None` a `PIDController` picks
        the first step from the ODE, Hairer, Norsett and Wanner's algorithm).
        `max_steps` counts the steps of one minibatch's solve. A failed solve is
        a non-finite loss, which stops the training.
    - `chunk_size`, `progress`: as in `dynjax.fit`.
    - `resume`: a `FitResult` of an earlier call to continue from: `n_steps`
        more steps on whole trajectories (no curriculum).

    **Returns:**

    A `dynjax.FitResult`: the trained `model`, the `losses` of every step (shape
    `(n_steps,)`, or fewer after a stop), `stopped_at` (the 0-based step whose
    loss or gradient was non-finite, else -1), `result`.

    **Raises:**

    `ValueError` if `ts` is not a 1-D, finite, strictly increasing array of at
    least two times (`t1 <= t0`); if `ys` is not `(batch, len(ts), data_size)`
    or holds NaN or inf; if the model's vector field does not return its state's
    shape; for a bad `curriculum` or `loss`; and `dynjax.fit`'s own errors
    (`batch_size`, `n_steps`).

    !!! Example

        ```python
        model = dynjax.NeuralODE(2, key=jax.random.key(0))
        out = dynjax.fit_trajectories(model, ts, ys, optax.adam(3e-3),
                                      n_steps=2000, batch_size=32,
                                      key=jax.random.key(1))
        out.model, out.losses
        ```

    **References:** R. T. Q. Chen, Y. Rubanova, J. Bettencourt and D. Duvenaud,
    "Neural Ordinary Differential Equations", NeurIPS 2018; P. Kidger, *On
    Neural Differential Equations*, PhD thesis, University of Oxford, 2021.
    """
    if not isinstance(model, AbstractFlow):
        raise ValueError(
            f"`model` must be a dynjax flow (a `dynjax.NeuralODE` or another "
            f"`AbstractFlow`), got {type(model).__name__}."
        )
    if isinstance(loss, str):
        if loss != "mse":
            raise ValueError(
                f"`loss` must be 'mse' or a function `loss(pred, target) -> "
                f"scalar`, got {loss!r}."
            )
        loss_fn = None
    elif callable(loss):
        loss_fn = loss
    else:
        raise ValueError(
            f"`loss` must be 'mse' or a callable, got {type(loss).__name__}."
        )
    if curriculum is not None:
        try:
            fraction, share = (float(c) for c in curriculum)
        except (TypeError, ValueError):
            raise ValueError(
                f"`curriculum` must be a pair (fraction, share) or None, got "
                f"{curriculum!r}."
            ) from None
        if not (0 < fraction <= 1 and 0 <= share <= 1):
            raise ValueError(
                "`curriculum=(fraction, share)` needs 0 < fraction <= 1 (the part "
                "of each trajectory fitted first) and 0 <= share <= 1 (the part "
                f"of `n_steps` spent on it), got {curriculum!r}."
            )
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
        raise ValueError(f"`n_steps` must be an int >= 0, got {n_steps!r}.")
    data_size = model.data_size if isinstance(model, NeuralODE) else model.d
    ts_in = jnp.asarray(ts)
    if ts_in.ndim != 1:
        raise ValueError(f"`ts` must be a 1-D array of times, got shape {ts_in.shape}.")
    ys = _check_data(ys, ts_in, data_size)
    check_vector_field(model, ys.dtype)
    model, _, _ = conform(
        model,
        lift_of(model)(ys[0, 0]),
        verb="fit_trajectories",
        name="ys[0, 0]",
        warn_float32=False,
    )
    ts = check_times(ts_in, ys.dtype)
    solver, stepsize_controller, adjoint = solve_options(
        solver, stepsize_controller, adjoint, dt0, ys.dtype
    )

    def stage_loss(length):
        return _TrajectoryLoss(
            ts,
            ts[length - 1],
            loss_fn,
            solver,
            stepsize_controller,
            adjoint,
            dt0,
            max_steps,
        )

    options = dict(batch_size=batch_size, chunk_size=chunk_size, progress=progress)
    n_len = ts.shape[0]
    first = n_len
    n_first = 0
    if curriculum is not None and resume is None:
        first = min(n_len, max(2, math.ceil(fraction * n_len)))
        n_first = int(round(share * n_steps))
    if first < n_len and n_first > 0:
        result = fit(
            stage_loss(first),
            model,
            optimizer,
            data=ys,
            n_steps=n_first,
            key=key,
            **options,
        )
        if result.stopped_at >= 0 or n_first == n_steps:
            return result
        resume, key = result, None
    else:
        n_first = 0
    return fit(
        stage_loss(n_len),
        model if resume is None else resume.model,
        optimizer,
        data=ys,
        n_steps=n_steps - n_first,
        key=key,
        resume=resume,
        **options,
    )
