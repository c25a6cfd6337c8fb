from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._custom_types import Args, Inputs, RealScalarLike, StateLike
from ._misc import check_inputs, input_at, is_concrete
from ._results import raise_if_failed, RESULTS
from ._system import AbstractDrivenMap, AbstractFlow, AbstractMap, AbstractSystem
from ._system._checks import conform


class Trajectory(eqx.Module):
    """A trajectory returned by `dynjax.trajectory`.

    **Attributes:**

    - `ts`: the save times (flows) or iteration indices (maps), shape `(T,)`.
    - `xs`: the states at `ts`, shape `(T, d)`; `xs[0]` is the initial state for
        maps and driven maps, and for flows whenever `ts[0] == t0`.
    - `result`: a `dynjax.RESULTS` code; `successful` unless `throw=False` and
        the integration failed or the state became non-finite.
    - `stats`: solver statistics (for flows, diffrax's `num_steps`,
        `num_accepted_steps`, `num_rejected_steps`, `max_steps`, and `t_stop`,
        the time the integration reached, and `size_at_stop`, the largest
        `|x_i|` there: after a finite-time blow-up, where it stopped).
    """

    ts: Float[Array, " T"] | Int[Array, " T"]
    xs: Float[Array, "T d"]
    result: RESULTS
    stats: dict[str, Any]


def _default_controller(dtype) -> dfx.PIDController:
    if jnp.finfo(dtype).bits >= 64:
        return dfx.PIDController(rtol=1e-8, atol=1e-10)
    return dfx.PIDController(rtol=1e-5, atol=1e-7)


def _finish(ts, xs, result, stats, is_flow: bool) -> Trajectory:
    nonfinite = jnp.any(~jnp.isfinite(xs))
    bad = RESULTS.nonfinite_state if is_flow else RESULTS.map_escaped
    result = RESULTS.where((result == RESULTS.successful) & nonfinite, bad, result)
    return Trajectory(ts=ts, xs=xs, result=result, stats=stats)


# A solve that stops early with the state grown by this factor (relative to
# 1 + |x0|) has blown up: the step size collapsed towards a singularity.
_BLOW_UP = 1e6


# Dense output holds every step's interpolant (`max_steps * d` times the
# solver's stage count): used instead of `SaveAt(ts=...)` only up to this many
# floats.
_DENSE_MAX_FLOATS = 2**22


def _cacheable(x0, max_steps: int, adjoint) -> bool:
    """Whether to save through dense output, so that the compiled program has no
    host callback (diffrax checks `SaveAt(ts=...)` at run time with one) and JAX's
    persistent compilation cache can keep it: only when that cache is switched
    on (`jax_compilation_cache_dir`, as `dynjax demo` does), the dense buffer is
    small, and the adjoint can differentiate dense output. The values are the
    same (the same interpolant, evaluated at `ts`); filling the dense buffer
    costs run time (Lorenz, 5461 steps: 12 ms against 7 ms)."""
    return (
        bool(jax.config.jax_compilation_cache_dir)
        and max_steps * x0.size * 16 <= _DENSE_MAX_FLOATS
        and isinstance(
            adjoint,
            (dfx.RecursiveCheckpointAdjoint, dfx.ForwardMode, dfx.DirectAdjoint),
        )
    )


@eqx.filter_jit
def _flow_trajectory(
    flow, x0, t0, t1, ts, dt0, solver, controller, max_steps, adjoint, args, dense
):
    term = dfx.ODETerm(lambda t, y, a: flow.vector_field(t, y, a))
    sol = dfx.diffeqsolve(
        term,
        solver,
        t0,
        t1,
        dt0,
        x0,
        args=args,
        # (t1 too: after a failure its slot holds the time and state reached.)
        saveat=dfx.SaveAt(dense=True, t1=True) if dense else dfx.SaveAt(ts=ts, t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=False,
    )
    result = RESULTS.promote(sol.result)
    if dense:
        t_end = sol.ts[-1]
        ys = jax.vmap(sol.evaluate)(jnp.minimum(ts, t_end))
        ys = jnp.where((ts <= t_end)[:, None], ys, jnp.inf)
        ts_out = jnp.where(ts <= t_end, ts, jnp.inf)
        sol = eqx.tree_at(
            lambda s: (s.ts, s.ys),
            sol,
            (jnp.concatenate([ts_out, t_end[None]]), jnp.concatenate([ys, sol.ys])),
        )
    reached = jnp.isfinite(sol.ts)
    last = jnp.argmax(jnp.where(reached, sol.ts, -jnp.inf))
    t_stop, x_stop = sol.ts[last], sol.ys[last]
    size = jnp.max(jnp.abs(x_stop))
    grown = ~(size <= _BLOW_UP * (1 + jnp.max(jnp.abs(x0))))  # (NaN: grown)
    stopped = (result != RESULTS.successful) & (result != RESULTS.event_occurred)
    result = RESULTS.where(stopped & grown & (t_stop < t1), RESULTS.blow_up, result)
    stats = dict(sol.stats, t_stop=t_stop, size_at_stop=size)
    return _finish(sol.ts[:-1], sol.ys[:-1], result, stats, True)


def _blow_up_details(trajectory) -> str:
    t = float(trajectory.stats["t_stop"])
    size = float(trajectory.stats["size_at_stop"])
    return (
        f"The state reached max |x_i| = {size:.3g} at t = {t:.8g}: the solution "
        f"blows up near t = {t:.4g}."
    )


def _throw(trajectory: Trajectory) -> Trajectory:
    details = _blow_up_details if "t_stop" in trajectory.stats else None

    def add_details(traj):
        if traj.result == RESULTS.blow_up and details is not None:
            return details(traj)
        return ""

    xs = raise_if_failed(trajectory.result, trajectory, add_details).xs
    return eqx.tree_at(lambda t: t.xs, trajectory, xs)


@eqx.filter_jit
def _map_trajectory(system, x0, n0, n_steps, args):
    def body(x, n):
        x_next = system.step(n, x, args)
        return x_next, x_next

    ns = n0 + jnp.arange(n_steps)
    _, xs = jax.lax.scan(body, x0, ns)
    xs = jnp.concatenate([x0[None], xs])
    ts = n0 + jnp.arange(n_steps + 1)
    return _finish(ts, xs, RESULTS.successful, {"num_steps": n_steps}, False)


@eqx.filter_jit
def _driven_trajectory(system, x0, inputs, args):
    def body(x, u):
        x_next = system.step(x, u, args)
        return x_next, x_next

    _, xs = jax.lax.scan(body, x0, inputs)
    xs = jnp.concatenate([x0[None], xs])
    n_steps = xs.shape[0] - 1
    ts = jnp.arange(n_steps + 1)
    return _finish(ts, xs, RESULTS.successful, {"num_steps": n_steps}, False)


def trajectory(
    system: AbstractSystem,
    x0: StateLike,
    *,
    t0: RealScalarLike = 0.0,
    t1: RealScalarLike | None = None,
    ts: Float[Array, " T"] | None = None,
    n_save: int = 1001,
    dt0: RealScalarLike | None = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 2**16,
    adjoint: dfx.AbstractAdjoint | None = None,
    n_steps: int | None = None,
    n0: int = 0,
    inputs: Inputs | None = None,
    args: Args = None,
    throw: bool = True,
) -> Trajectory:
    """Evolve a system from an initial state.

    - **Flows** are integrated with `diffrax.diffeqsolve` from `t0` to `t1`,
      saving at `ts` (default: `n_save` equally spaced times including both ends).
      The default solver is `diffrax.Tsit5()` with a `PIDController` at
      `rtol=1e-8, atol=1e-10` in float64 (`1e-5, 1e-7` in float32); pass
      `stepsize_controller=diffrax.ConstantStepSize()` and `dt0` for fixed steps.
    - **Maps** are iterated `n_steps` times with `jax.lax.scan`, from index `n0`.
    - **Driven maps** are iterated over `inputs`, one row per step.

    The call is compiled with `eqx.filter_jit`; it `vmap`s over initial states
    and parameters, and is differentiable with respect to both (for flows through
    diffrax's `adjoint`, by default recursive checkpointing).

    **Arguments:**

    - `system`: a dynjax flow, map or driven map.
    - `x0`: the initial state, shape `(d,)`.
    - `t0`, `t1`: start and end times (flows). `t1` may be omitted when `ts` is given.
    - `ts`: save times (flows), increasing, within `[t0, t1]`.
    - `n_save`: number of equally spaced save times when `ts` is not given.
    - `dt0`: initial (or, with a constant step size, fixed) step size.
    - `solver`, `stepsize_controller`, `max_steps`, `adjoint`: passed to diffrax.
    - `n_steps`, `n0`: number of iterations and starting index (maps).
    - `inputs`: the input sequence (driven maps): a pytree of arrays whose
        leading axis is time (`(T, m)`, `(T,)`, a dict of such arrays).
    - `args`: run-time arguments passed to the system.
    - `throw`: if `True`, a failure raises an error; otherwise it is reported in
        `Trajectory.result`.

    **Returns:**

    A `dynjax.Trajectory`.

    !!! Example

        ```python
        sol = dynjax.trajectory(dynjax.systems.Lorenz(), jnp.ones(3), t1=20.0)
        sol.xs  # (1001, 3)
        ```
    """
    if isinstance(system, AbstractDrivenMap):
        inputs, _ = check_inputs(inputs)
        u0 = input_at(inputs, 0)
    else:
        u0 = None
    system, x0, args = conform(system, x0, verb="trajectory", args=args, u=u0)
    if isinstance(system, AbstractFlow):
        if n_steps is not None or inputs is not None:
            raise ValueError(
                "`n_steps` and `inputs` are for maps; a flow takes `t1` (and "
                "optionally `ts`)."
            )
        if ts is not None:
            ts = jnp.asarray(ts, dtype=x0.dtype)
            if ts.ndim != 1 or ts.shape[0] < 1:
                raise ValueError(f"`ts` must be a non-empty 1-D array, got {ts.shape}.")
            if t1 is None:
                t1 = ts[-1]
        if t1 is None:
            raise ValueError("A flow needs an end time: pass `t1=` (or `ts=`).")
        if is_concrete(t0) and is_concrete(t1) and not t1 > t0:
            raise ValueError(
                f"`t1` must be greater than `t0` (got t0={t0}, t1={t1}). To integrate "
                "backwards in time, integrate the flow with a negated vector field."
            )
        t0 = jnp.asarray(t0, dtype=x0.dtype)
        t1 = jnp.asarray(t1, dtype=x0.dtype)
        if isinstance(t0, jax.core.Tracer) or isinstance(t1, jax.core.Tracer):
            t1 = eqx.error_if(
                t1, t1 <= t0, "`t1` must be greater than `t0`; swap them or fix `t1`."
            )
        if ts is None:
            ts = jnp.linspace(t0, t1, n_save)
        solver = dfx.Tsit5() if solver is None else solver
        if stepsize_controller is None:
            stepsize_controller = _default_controller(x0.dtype)
        if isinstance(stepsize_controller, dfx.ConstantStepSize) and dt0 is None:
            raise ValueError(
                "A constant step size needs `dt0=`: pass the fixed step size."
            )
        adjoint = dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
        if dt0 is not None:
            if is_concrete(dt0) and not (np.isfinite(dt0) and dt0 > 0):
                raise ValueError(
                    f"`dt0` must be a positive step size (the integration runs "
                    f"forward from t0 to t1), got {dt0}. To integrate backwards "
                    "in time, integrate the flow with a negated vector field."
                )
            if isinstance(dt0, jax.core.Tracer):
                dt0 = eqx.error_if(
                    dt0, ~(dt0 > 0), "`dt0` must be a positive step size."
                )
            dt0 = jnp.asarray(dt0, dtype=x0.dtype)
        out = _flow_trajectory(
            system,
            x0,
            t0,
            t1,
            ts,
            dt0,
            solver,
            stepsize_controller,
            max_steps,
            adjoint,
            args,
            _cacheable(x0, max_steps, adjoint),
        )
        return _throw(out) if throw else out
    if isinstance(system, AbstractMap):
        if n_steps is None:
            raise ValueError("A map needs the number of iterations: pass `n_steps=`.")
        if not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"`n_steps` must be an int >= 0, got {n_steps!r}.")
        out = _map_trajectory(system, x0, n0, n_steps, args)
        return _throw(out) if throw else out
    if isinstance(system, AbstractDrivenMap):
        out = _driven_trajectory(system, x0, inputs, args)
        return _throw(out) if throw else out
    raise ValueError(
        f"`system` must be a dynjax flow, map or driven map, got {type(system)}."
    )
