import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from .._custom_types import Args, IntScalarLike, RealScalarLike, State, StateLike
from .._misc import as_param
from .._results import RESULTS
from .._system import AbstractFlow, AbstractMap
from .._system._checks import conform


_DIRECTIONS = {1: True, -1: False, 0: None}


def _next_crossing(
    flow, x, t0, normal, offset, direction, t_max, args, solver, controller, max_steps
):
    """Integrate from `(t0, x)` to the next crossing of `normal . x = offset`."""
    tol = 1e-12 if jnp.finfo(x.dtype).bits >= 64 else 1e-5
    # Relative event values, so that the root finder's tolerance is relative too.
    scale = 1 + jnp.abs(offset) + jnp.max(jnp.abs(x))
    # The event value at the start: the side of the plane `x` is on; if `x` is on
    # the plane (as after a crossing, up to the root finder's residual), the side
    # the flow is heading to, so that leaving the plane does not count as a crossing.
    side = (jnp.dot(normal, x) - offset) / scale
    on_plane = jnp.abs(side) <= 1e3 * tol
    heading = jnp.sign(jnp.dot(normal, flow.vector_field(t0, x, args)))
    s0 = jnp.where(on_plane, heading, jnp.sign(side))
    s0 = jnp.where(s0 == 0, 1.0, s0)

    def cond_fn(t, y, args, **kwargs):
        del args, kwargs
        value = (jnp.dot(normal, y) - offset) / scale
        return jnp.where(t == 0, s0, value)  # `t` is the local time

    event = dfx.Event(
        cond_fn,
        root_finder=optx.Newton(rtol=tol, atol=tol),
        direction=_DIRECTIONS[direction],
    )
    # Integrate in the local time s = t - t0, so that the event time is resolved to
    # `tol` however late the crossing happens.
    term = dfx.ODETerm(lambda s, y, a: flow.vector_field(a[0] + s, y, a[1]))
    sol = dfx.diffeqsolve(
        term,
        solver,
        0.0,
        t_max,
        None,
        x,
        args=(t0, args),
        saveat=dfx.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
        event=event,
        adjoint=dfx.ForwardMode(),
        throw=False,
    )
    crossed = jax.tree.leaves(sol.event_mask)[0]
    result = RESULTS.promote(sol.result)
    finished = (result == RESULTS.successful) | (result == RESULTS.event_occurred)
    result = RESULTS.where(
        finished,
        RESULTS.where(crossed, RESULTS.successful, RESULTS.no_crossing),
        result,
    )
    return t0 + sol.ts[-1], sol.ys[-1], result


def _defaults(dtype, solver, controller):
    solver = dfx.Tsit5() if solver is None else solver
    if controller is None:
        if jnp.finfo(dtype).bits >= 64:
            controller = dfx.PIDController(rtol=1e-11, atol=1e-12)
        else:
            controller = dfx.PIDController(rtol=1e-6, atol=1e-7)
    return solver, controller


def _check_plane(plane, d):
    try:
        normal, offset = plane
    except (TypeError, ValueError):
        raise ValueError(
            "`plane` must be a pair `(normal, offset)` describing the hyperplane "
            "`normal . x = offset`, e.g. `(jnp.array([0., 1., 0.]), 0.0)` for y = 0."
        ) from None
    normal = jnp.asarray(normal, dtype=jnp.result_type(float))
    if normal.ndim != 1 or (d is not None and normal.shape[0] != d):
        raise ValueError(
            f"The plane's normal must have shape ({d},) (the state dimension), got "
            f"{normal.shape}."
        )
    return normal, jnp.asarray(offset, dtype=normal.dtype)


def _check_direction(direction):
    if direction not in _DIRECTIONS:
        raise ValueError(
            f"`direction` must be +1 (crossings with normal . f > 0), -1 (normal . f "
            f"< 0) or 0 (both), got {direction!r}."
        )


class PoincareSection(eqx.Module):
    """Successive crossings returned by `dynjax.poincare_section`.

    **Attributes:**

    - `points`: the crossing states, shape `(n_crossings, d)`; they satisfy
        `normal . x = offset`.
    - `times`: the crossing times, shape `(n_crossings,)`.
    - `return_times`: times between successive crossings (the first is measured
        from `t0`), shape `(n_crossings,)`.
    - `result`: a `dynjax.RESULTS` code (`no_crossing` if some crossing was not
        found within `t_max`).
    """

    points: Float[Array, "n d"]
    times: Float[Array, " n"]
    return_times: Float[Array, " n"]
    result: RESULTS


@eqx.filter_jit
def _section(
    flow,
    x0,
    t0,
    normal,
    offset,
    n,
    direction,
    t_max,
    args,
    solver,
    controller,
    max_steps,
    throw,
):
    def body(carry, _):
        t, x, result = carry
        t_next, x_next, r = _next_crossing(
            flow,
            x,
            t,
            normal,
            offset,
            direction,
            t_max,
            args,
            solver,
            controller,
            max_steps,
        )
        result = RESULTS.where(result == RESULTS.successful, r, result)
        return (t_next, x_next, result), (t_next, x_next, t_next - t)

    (_, _, result), (times, points, returns) = jax.lax.scan(
        body, (t0, x0, RESULTS.successful), None, length=n
    )
    # `throw` is traced, so both settings share one compilation.
    points = result.error_if(points, throw & (result != RESULTS.successful))
    return PoincareSection(
        points=points, times=times, return_times=returns, result=result
    )


def poincare_section(
    flow: AbstractFlow,
    x0: StateLike,
    plane,
    n_crossings: int,
    *,
    direction: int = 1,
    t0: RealScalarLike = 0.0,
    t_max: RealScalarLike = 100.0,
    args: Args = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 2**14,
    throw: bool = True,
) -> PoincareSection:
    r"""Successive crossings of a trajectory with a hyperplane (a Poincaré section).

    The section is `Sigma = {x : n . x = c}`. Each crossing is located by a
    `diffrax.Event` whose condition `n . x - c` changes sign, refined to the
    crossing time with `optimistix.Newton` on the solver's dense interpolant; the
    crossings are a `lax.scan`, each restarting from the previous one.

    **Arguments:**

    - `flow`: a dynjax flow.
    - `x0`: the initial state, shape `(d,)` (not counted as a crossing, even if
        on the plane).
    - `plane`: `(normal, offset)`: the hyperplane `normal . x = offset`.
    - `n_crossings`: the number of crossings to record.
    - `direction`: `+1` records crossings with `n . f > 0`, `-1` those with
        `n . f < 0`, `0` both.
    - `t0`: the initial time.
    - `t_max`: the longest time to wait for each crossing.
    - `args`, `solver`, `stepsize_controller`, `max_steps`: the diffrax
        integration (default `Tsit5`, `PIDController(rtol=1e-11, atol=1e-12)` in
        float64); `max_steps` is per crossing.
    - `throw`: raise if a crossing is missing; otherwise report `no_crossing`.

    **Returns:**

    A `dynjax.PoincareSection`.

    !!! Example

        ```python
        rossler = dynjax.systems.Rossler()
        sec = dynjax.poincare_section(rossler, rossler.default_x0(),
                                      (jnp.array([0.0, 1.0, 0.0]), 0.0), 200,
                                      direction=-1)
        ```

    **Reference:** H. Poincaré, *Les méthodes nouvelles de la mécanique
    céleste* (1899); S. H. Strogatz, *Nonlinear Dynamics and Chaos*, Section 8.7.
    """
    if not isinstance(flow, AbstractFlow):
        raise ValueError("`poincare_section` takes a flow (an `AbstractFlow`).")
    if not isinstance(n_crossings, int) or n_crossings < 1:
        raise ValueError(f"`n_crossings` must be a positive int, got {n_crossings!r}.")
    _check_direction(direction)
    flow, x0, args = conform(flow, x0, verb="poincare_section", args=args, t=t0)
    normal, offset = _check_plane(plane, x0.shape[0])
    solver, controller = _defaults(x0.dtype, solver, stepsize_controller)
    t0 = jnp.asarray(t0, dtype=x0.dtype)
    t_max = jnp.asarray(t_max, dtype=x0.dtype)
    return _section(
        flow,
        x0,
        t0,
        normal.astype(x0.dtype),
        offset.astype(x0.dtype),
        n_crossings,
        direction,
        t_max,
        args,
        solver,
        controller,
        max_steps,
        jnp.asarray(throw),
    )


class PoincareMap(AbstractMap):
    r"""The Poincaré (first-return) map of a flow on a hyperplane, as a map.

    `P(x)` is the next crossing of the trajectory from `x` with the section
    `normal . x = offset` in the chosen direction. The state is kept in the full
    `d` coordinates of the flow (a point of the section), so every dynjax map
    tool applies: fixed points of `P` (`dynjax.find_equilibria`) are periodic
    orbits of the flow, and `P`'s multipliers are the orbit's nontrivial Floquet
    multipliers plus one `0` (`P` flattens the off-plane direction). `P` is
    differentiable in forward mode (implicit differentiation of the event time).
    Built by `dynjax.poincare_map`.
    """

    flow: AbstractFlow
    normal: Float[Array, " d"] = eqx.field(converter=as_param)
    offset: Float[Array, ""] = eqx.field(converter=as_param)
    t_max: Float[Array, ""] = eqx.field(converter=as_param)
    direction: int = eqx.field(static=True)
    solver: dfx.AbstractSolver
    stepsize_controller: dfx.AbstractStepSizeController
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    @property
    def d(self) -> int | None:
        return self.flow.d

    def crossing(self, x: State, args: Args = None):
        """`(return_time, P(x), result)` for one state."""
        t, y, result = _next_crossing(
            self.flow,
            x,
            jnp.zeros((), x.dtype),
            self.normal.astype(x.dtype),
            self.offset.astype(x.dtype),
            self.direction,
            self.t_max,
            args,
            self.solver,
            self.stepsize_controller,
            self.max_steps,
        )
        return t, y, result

    def return_time(self, x: State, args: Args = None) -> Float[Array, ""]:
        """The time from `x` to its next crossing."""
        return self.crossing(x, args)[0]

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n
        _, y, result = self.crossing(x, args)
        if self.throw:
            y = result.error_if(y, result != RESULTS.successful)
        return y


def poincare_map(
    flow: AbstractFlow,
    plane,
    *,
    direction: int = 1,
    t_max: RealScalarLike = 100.0,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 2**14,
    throw: bool = True,
) -> PoincareMap:
    r"""The Poincaré map of an autonomous flow on a hyperplane, as a dynjax map.

    **Arguments:**

    - `flow`: an autonomous dynjax flow.
    - `plane`: `(normal, offset)`, the section `normal . x = offset`.
    - `direction`: `+1`, `-1` or `0` (see `dynjax.poincare_section`).
    - `t_max`: the longest return time searched.
    - `solver`, `stepsize_controller`, `max_steps`: the diffrax integration.
    - `throw`: whether a missing crossing raises (otherwise the returned state is
        the end of the search, flagged only through `PoincareMap.crossing`).

    **Returns:**

    A `dynjax.PoincareMap` (an `AbstractMap` of dimension `flow.d`).

    !!! Example

        ```python
        P = dynjax.poincare_map(rossler, (jnp.array([0.0, 1.0, 0.0]), 0.0),
                                direction=-1)
        fp = dynjax.find_equilibria(P, guesses)  # period-1 orbits of the flow
        ```
    """
    if not isinstance(flow, AbstractFlow):
        raise ValueError("`poincare_map` takes a flow (an `AbstractFlow`).")
    _check_direction(direction)
    normal, offset = _check_plane(plane, flow.d)
    solver, controller = _defaults(normal.dtype, solver, stepsize_controller)
    return PoincareMap(
        flow, normal, offset, t_max, direction, solver, controller, max_steps, throw
    )
