"""`dynjax.orbit_diagram`: the attractor's points against a parameter, for maps and
(through a Poincaré section) flows; its periods, period doublings and Feigenbaum
ratios."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._custom_types import Args, RealScalarLike, StateLike
from .._periodic._poincare import poincare_map, PoincareMap
from .._results import is_traced, raise_if_failed, RESULTS
from .._system._base import AbstractFlow, AbstractMap, AbstractSystem
from .._system._checks import conform
from .._system._coordinates import _periods_array, state_difference, state_labels
from ._branch import scalar_parameter


class OrbitDiagram(eqx.Module):
    """The points of the attractor at each parameter value, returned by
    `dynjax.orbit_diagram`.

    **Attributes:**

    - `values`: shape `(P,)`, the parameter values.
    - `points`: shape `(P, n_keep, d)`: for a map, the states `x_n` for
        `n_transient < n <= n_transient + n_keep`; for a flow, the successive
        crossings with the Poincaré section after `n_transient` crossings. Rows
        from a failure on (see `result`) are `NaN`.
    - `escaped`: shape `(P,)`, whether the orbit became non-finite (escaped to
        infinity or left the map's domain) at that value.
    - `result`: a `dynjax.RESULTS` code per value, shape `(P,)`: `successful`,
        `map_escaped` (maps), or the Poincaré section's failure (flows:
        `nonfinite_state`, `no_crossing` when the orbit stopped crossing the
        section, e.g. after settling on an equilibrium, `max_steps_reached`, ...).
    - `parameter_name`, `state_names`, `coordinate_periods`: for labels, and for
        differences of states on periodic coordinates.
    """

    values: Float[Array, " P"]
    points: Float[Array, "P n d"]
    escaped: Bool[Array, " P"]
    result: RESULTS
    parameter_name: str = eqx.field(static=True)
    state_names: tuple[str, ...] = eqx.field(static=True)
    coordinate_periods: tuple[float | None, ...] | None = eqx.field(static=True)

    def periods(
        self, *, tol: float = 1e-6, max_period: int | None = None
    ) -> Int[Array, " P"]:
        """The period of the attractor at each value: the smallest `p` with
        `|x_{n+p} - x_n| <= tol (1 + max_{n,i} |x_{n,i}|)` for every kept `n` (max
        norm; on a periodic coordinate the difference is wrapped and its size
        counts as its period).

        **Arguments:**

        - `tol`: the relative tolerance of a return. An orbit near a period
            doubling converges slowly (its multiplier is near `-1`), so a point
            within about `n_transient^{-1}` of one in parameter may read as the
            doubled period or as `0`.
        - `max_period`: the longest period looked for (default and largest
            allowed: `n_keep // 2`, so that every return is seen at least
            `n_keep - max_period >= max_period` times).

        **Returns:**

        Shape `(P,)`, int: the period (in iterations of the map, or crossings of
        the section); `0` where none up to `max_period` was found (chaotic or
        quasi-periodic, or not converged); `-1` where the orbit failed
        (`result` not `successful`).

        **Raises:**

        `ValueError` if `max_period` is not in `[1, n_keep // 2]`.
        """
        max_period = _max_period(max_period, self.points.shape[1])
        geometry = _Geometry(self.coordinate_periods)
        return _periods(geometry, self.points, self.result, tol, max_period)


class _Geometry(eqx.Module):
    """What a period test needs of the state space: its periodic coordinates
    (read by `state_difference`)."""

    coordinate_periods: tuple[float | None, ...] | None = eqx.field(static=True)


def _max_period(max_period, n_keep):
    limit = n_keep // 2
    if max_period is None:
        max_period = limit
    if not isinstance(max_period, int) or not 1 <= max_period <= limit:
        raise ValueError(
            f"`max_period` must be an int in [1, n_keep // 2 = {limit}] (a period p "
            "is accepted only after n_keep - p >= p returns agree), got "
            f"{max_period!r}; keep more points (`n_keep`) to detect longer periods."
        )
    return max_period


def _period_of(geometry, xs, tol, max_period):
    """The smallest `p <= max_period` with every `|x_{n+p} - x_n| <= tol scale`
    (`0` if none): `xs` has shape `(n, d)`."""
    n = xs.shape[0]
    size = jnp.max(jnp.abs(xs), axis=0)
    periods = _periods_array(geometry, xs.shape[1], xs.dtype)
    if periods is not None:  # (an angle's size is its period, not its lift's)
        size = jnp.where(periods > 0, periods, size)
    thr = tol * (1 + jnp.max(size))
    idx = jnp.arange(n)
    ps = jnp.arange(1, max_period + 1)

    def err(p):
        shifted = jnp.roll(xs, -p, axis=0)
        diff = jnp.max(jnp.abs(state_difference(geometry, shifted, xs)), axis=1)
        return jnp.max(jnp.where(idx < n - p, diff, 0.0))

    errs = jax.vmap(err)(ps)
    ok = errs <= thr
    return jnp.where(jnp.any(ok), ps[jnp.argmax(ok)], 0)


@eqx.filter_jit
def _periods(geometry, points, result, tol, max_period):
    per = jax.vmap(lambda xs: _period_of(geometry, xs, tol, max_period))(points)
    return jnp.where(result == RESULTS.successful, per, -1)


# --- the sweep -----------------------------------------------------------------


class _Sweep(eqx.Module):
    """A map (or the Poincaré map of a flow) whose parameter is set by `at`."""

    system: AbstractSystem  # a map, or a PoincareMap around the flow
    where: Callable = eqx.field(static=True)
    args: Args

    @property
    def is_flow(self) -> bool:
        return isinstance(self.system, PoincareMap)

    def at(self, value):
        return eqx.tree_at(self.where, self.system, value)

    def step(self, system, n, x, failed):
        """`(next state, result)`; after a failure the state stays `NaN` and a
        Poincaré search stops at once (its `t_max` set to 0)."""
        if self.is_flow:
            system = eqx.tree_at(
                lambda s: s.t_max, system, jnp.where(failed, 0.0, system.t_max)
            )
            _, y, r = system.crossing(x, self.args)
        else:
            y = system.step(n, x, self.args)
            r = RESULTS.where(
                jnp.all(jnp.isfinite(y)), RESULTS.successful, RESULTS.map_escaped
            )
        return y, r


def _orbit(sweep, value, x0, n_transient, n_keep):
    """The kept states `(n_keep, d)` and the result at one parameter value."""
    system = sweep.at(value)

    def body(carry, n):
        x, result = carry
        failed = result != RESULTS.successful
        y, r = sweep.step(system, n, x, failed)
        result = RESULTS.where(failed, result, r)
        y = jnp.where(result == RESULTS.successful, y, jnp.nan)
        return (y, result), y

    carry = (x0, RESULTS.successful)
    if n_transient > 0:
        carry, _ = jax.lax.scan(
            lambda c, n: (body(c, n)[0], None), carry, jnp.arange(n_transient)
        )
    (_, result), xs = jax.lax.scan(body, carry, n_transient + jnp.arange(n_keep))
    return xs, result


@eqx.filter_jit
def _diagram(sweep, values, x0s, n_transient, n_keep):
    return eqx.filter_vmap(lambda v, x0: _orbit(sweep, v, x0, n_transient, n_keep))(
        values, x0s
    )


class _OfFlow(eqx.Module):
    where: Callable = eqx.field(static=True)

    def __call__(self, poincare):
        return self.where(poincare.flow)


def _escape_codes(result):
    return (
        (result == RESULTS.map_escaped)
        | (result == RESULTS.nonfinite_state)
        | (result == RESULTS.blow_up)
    )


def _first_failure(result):
    """The code of the first failed value (a scalar `RESULTS`)."""
    failed = result != RESULTS.successful
    i = jnp.argmax(failed)
    return jax.tree.map(lambda a: a[i], result)


def _setup(
    verb,
    system,
    parameter,
    x0,
    values,
    args,
    plane,
    direction,
    t_max,
    solver,
    stepsize_controller,
    max_steps,
):
    """Checks; the `_Sweep`, the values and the initial states in one dtype."""
    if not isinstance(system, (AbstractFlow, AbstractMap)) or isinstance(
        system, PoincareMap
    ):
        raise ValueError(
            f"`{verb}` takes a map or a flow (with `plane=`); got "
            f"{type(system).__name__}. A driven map needs its input fixed first; for "
            "a Poincaré map pass the flow itself and `plane`."
        )
    is_flow = isinstance(system, AbstractFlow)
    if is_flow and plane is None:
        raise ValueError(
            f"`{verb}` of a flow samples its attractor on a Poincaré section: give "
            "`plane=(normal, offset)`, the hyperplane `normal . x = offset`, e.g. "
            "`(jnp.array([0., 1., 0.]), 0.)` for y = 0."
        )
    if not is_flow and plane is not None:
        raise ValueError("`plane` is for flows; a map's orbit is sampled directly.")
    # (Selectors that compare equal across calls, so that a repeated sweep reuses
    # the compiled program; a `lambda` passed in is reused only if it is the same
    # object.)
    where = scalar_parameter(system, parameter)
    x0 = jnp.asarray(x0)
    values = jnp.asarray(values)
    if values.ndim != 1 or values.shape[0] < 1:
        raise ValueError(
            f"`values` must be a 1-D array of parameter values, got shape "
            f"{values.shape}."
        )
    P = values.shape[0]
    if x0.ndim == 2:
        if x0.shape[0] != P:
            raise ValueError(
                f"`x0` must have shape (d,) (one start for every value) or (P, d) = "
                f"({P}, d) (one per value), got {x0.shape}."
            )
        system, first, args = conform(system, x0[0], verb=verb, args=args)
        x0s = x0.astype(first.dtype)
    else:
        system, first, args = conform(system, x0, verb=verb, args=args)
        x0s = jnp.broadcast_to(first, (P,) + first.shape)
    dtype = first.dtype
    if is_flow:
        # (`poincare_map` checks the plane and the direction.)
        mapped = poincare_map(
            system,
            plane,
            direction=direction,
            t_max=t_max,
            solver=solver,
            stepsize_controller=stepsize_controller,
            max_steps=max_steps,
            throw=False,
        )
        mapped = eqx.tree_at(lambda s: s.t_max, mapped, mapped.t_max.astype(dtype))
        sweep = _Sweep(mapped, _OfFlow(where), args)
    else:
        sweep = _Sweep(system, where, args)
    name = parameter if isinstance(parameter, str) else "parameter"
    geometry = dict(
        parameter_name=name,
        state_names=state_labels(system, x0s.shape[-1]),
        coordinate_periods=system.coordinate_periods,
    )
    return sweep, values.astype(dtype), x0s, geometry


def _check_counts(**counts):
    for name, (n, low) in counts.items():
        if not isinstance(n, int) or n < low:
            raise ValueError(f"`{name}` must be an int >= {low}, got {n!r}.")


def orbit_diagram(
    system: AbstractSystem,
    parameter: str | Callable,
    values: Float[ArrayLike, " P"],
    x0: StateLike,
    *,
    n_transient: int = 1000,
    n_keep: int = 200,
    plane=None,
    direction: int = 1,
    t_max: RealScalarLike = 100.0,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 2**14,
    args: Args = None,
    throw: bool = True,
) -> OrbitDiagram:
    r"""The orbit diagram (bifurcation diagram of the attractor): the points of the
    attractor reached from `x0` at each parameter value.

    For a **map** `x_{n+1} = G(n, x_n; p)`, at every value `p` of `values` the
    orbit of `x0` is iterated `n_transient` times (from step index `n = 0`),
    discarded, and the next `n_keep` states kept. For a **flow**, the same is
    done with its Poincaré map on the section `normal . x = offset`
    (`dynjax.poincare_map`): the kept points are `n_keep` successive crossings
    after `n_transient` crossings, located on the solver's dense output so that
    none is skipped. A stable period-`k` orbit
    shows as `k` points, a chaotic attractor as a band (May 1976; Feigenbaum
    1978). All values run in one compiled call, vmapped over `values`
    (`eqx.filter_vmap` of `eqx.tree_at(parameter, system, p)`); for flows the
    lanes of the vmap advance crossing by crossing together, so a sweep costs
    about the slowest lane's integration per crossing. A new sweep with the
    same shapes and options reuses the compiled program (for a `parameter`
    given as a function, if it is the same function object).

    An orbit that becomes non-finite (it escaped) or, for a flow, stops
    crossing the section within `t_max` (e.g. it settled on an equilibrium) is
    reported per value in `escaped` and `result`, its points `NaN` from the
    failure on.

    **Arguments:**

    - `system`: a dynjax map, or an autonomous flow (then `plane` is required).
    - `parameter`: the name of a scalar field of `system` (`"r"`), or a function
        selecting it (`lambda s: s.r`), as in `dynjax.continuation`.
    - `values`: shape `(P,)`, the parameter values.
    - `x0`: the initial state, shape `(d,)` (the same at every value) or `(P, d)`
        (one per value).
    - `n_transient`: iterations (maps) or crossings (flows) discarded.
    - `n_keep`: iterations or crossings kept.
    - `plane`: flows only: `(normal, offset)`, the section `normal . x = offset`.
    - `direction`, `t_max`, `solver`, `stepsize_controller`, `max_steps`: flows
        only, the Poincaré section's options (see `dynjax.poincare_section`):
        crossings with `normal . f > 0` (`+1`), `< 0` (`-1`) or both (`0`); the
        longest time to wait for one crossing; the diffrax integration (default
        `Tsit5` with `PIDController(rtol=1e-11, atol=1e-12)` in float64;
        a looser controller makes long sweeps cheaper).
    - `args`: the system's run-time arguments.
    - `throw`: raise if the orbit failed at any value (the message lists them);
        with `False`, read `escaped` and `result`.

    **Returns:**

    A `dynjax.OrbitDiagram`: `points` of shape `(P, n_keep, d)` in `x0`'s dtype;
    `OrbitDiagram.periods()` gives the period at each value.

    **Raises:**

    `ValueError` for a parameter that is not a scalar field of `system`, `values`
    that are not 1-D, an `x0` of the wrong shape, a flow without `plane` (or a
    map with one), a driven map, or negative counts; with `throw`, an
    `equinox.EquinoxRuntimeError` (the `RESULTS` message and the failed values)
    if some orbit failed.

    !!! Example

        ```python
        logistic = dynjax.systems.Logistic()
        diagram = dynjax.orbit_diagram(logistic, "r", jnp.linspace(2.8, 4.0, 1000),
                                       jnp.array([0.4]))
        dynjax.plot.orbit_diagram(diagram)
        ```

    **References:** R. M. May, *Simple mathematical models with very complicated
    dynamics*, Nature 261, 459 (1976); M. J. Feigenbaum, *Quantitative
    universality for a class of nonlinear transformations*, J. Stat. Phys. 19, 25
    (1978); S. H. Strogatz, *Nonlinear Dynamics and Chaos* (1994), sections 10.2
    and 12.3.
    """
    _check_counts(n_transient=(n_transient, 0), n_keep=(n_keep, 1))
    sweep, values, x0s, geometry = _setup(
        "orbit_diagram",
        system,
        parameter,
        x0,
        values,
        args,
        plane,
        direction,
        t_max,
        solver,
        stepsize_controller,
        max_steps,
    )
    points, result = _diagram(sweep, values, x0s, n_transient, n_keep)
    if throw:
        points = _raise(result, values, points)
    return OrbitDiagram(
        values=values,
        points=points,
        escaped=_escape_codes(result),
        result=result,
        **geometry,
    )


def _raise(result, values, value):
    """`throw=True` for per-value results: the first failure's message and the
    values that failed."""
    first = _first_failure(result)

    def details(_):
        failed = np.asarray(result != RESULTS.successful)
        bad = np.asarray(values)[failed]
        shown = ", ".join(f"{v:.8g}" for v in bad[:8])
        more = f" and {bad.size - 8} more" if bad.size > 8 else ""
        return (
            f"(At {bad.size} of {failed.size} parameter values: {shown}{more}. Pass "
            "`throw=False` to get the per-value mask `escaped` and `result`.)"
        )

    # (Under a trace `raise_if_failed` attaches the first failure to `value`.)
    return raise_if_failed(first, value, details)


# --- period doublings -----------------------------------------------------------


class PeriodDoublings(eqx.Module):
    """Successive period doublings located by `dynjax.period_doublings`.

    **Attributes:**

    - `parameter`: shape `(K,)`, the parameter of the `k`-th doubling (the period
        goes from `p0 2^(k-1)` to `p0 2^k`), `NaN` where it was not bracketed.
    - `bracket`: shape `(K, 2)`, the final bisection interval around each.
    - `base_period`: `p0`, the period at `values[0]`.
    - `found`: shape `(K,)`.
    - `result`: `successful`, or `not_converged` if a doubling was not bracketed
        by `values` (or `values[0]` is not periodic).
    """

    parameter: Float[Array, " K"]
    bracket: Float[Array, "K 2"]
    base_period: Int[Array, ""]
    found: Bool[Array, " K"]
    result: RESULTS


@eqx.filter_jit
def _doublings(
    sweep, geometry, values, x0s, n_doublings, n_transient, n_keep, tol, n_bisect
):
    max_period = n_keep // 2
    xs, res = eqx.filter_vmap(lambda v, x0: _orbit(sweep, v, x0, n_transient, n_keep))(
        values, x0s
    )
    per = _periods(geometry, xs, res, tol, max_period)
    p0 = per[0]
    ks = jnp.arange(1, n_doublings + 1)
    # Before the k-th doubling: a period in [1, p0 2^(k-1)].
    limits = p0 * 2 ** (ks - 1)

    def below(period, limit):
        return (period >= 1) & (period <= limit)

    # The k-th doubling's bracket: the first grid value with period p0 2^k, and
    # the last one before it with period p0 2^(k-1) (values in between may read
    # 0: not converged, near the doubling).
    P = values.shape[0]
    idx = jnp.arange(P)
    is_hi = per[None, :] == 2 * limits[:, None]  # (K, P)
    i_hi = jnp.argmax(is_hi, axis=1)
    is_lo = (per[None, :] == limits[:, None]) & (idx[None, :] < i_hi[:, None])
    i_lo = P - 1 - jnp.argmax(is_lo[:, ::-1], axis=1)
    ordered = jnp.concatenate([jnp.array([True]), i_hi[1:] > i_hi[:-1]])
    found = (p0 >= 1) & jnp.any(is_hi, axis=1) & jnp.any(is_lo, axis=1) & ordered
    found = jnp.cumprod(found).astype(bool)  # (after a gap, no later doubling)
    i_lo = jnp.where(found, i_lo, 0)
    i_hi = jnp.where(found, i_hi, 1)
    lo, hi = values[i_lo], values[i_hi]
    x_start = x0s[i_lo]

    def period_at(value, x0):
        orbit, r = _orbit(sweep, value, x0, n_transient, n_keep)
        per = _period_of(geometry, orbit, tol, max_period)
        return jnp.where(r == RESULTS.successful, per, -1)

    def bisect(lo, hi, limit, x0):
        def body(_, c):
            lo, hi = c
            mid = 0.5 * (lo + hi)
            ok = below(period_at(mid, x0), limit)
            return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

        return jax.lax.fori_loop(0, n_bisect, body, (lo, hi))

    lo, hi = jax.vmap(bisect)(lo, hi, limits, x_start)
    nan = jnp.asarray(jnp.nan, values.dtype)
    parameter = jnp.where(found, 0.5 * (lo + hi), nan)
    bracket = jnp.where(found[:, None], jnp.stack([lo, hi], axis=1), nan)
    result = RESULTS.where(jnp.all(found), RESULTS.successful, RESULTS.not_converged)
    return PeriodDoublings(parameter, bracket, p0, found, result)


def period_doublings(
    system: AbstractSystem,
    parameter: str | Callable,
    values: Float[ArrayLike, " P"],
    x0: StateLike,
    *,
    n_doublings: int,
    n_transient: int = 2**17,
    n_keep: int | None = None,
    tol: float = 1e-6,
    n_bisect: int = 32,
    plane=None,
    direction: int = 1,
    t_max: RealScalarLike = 100.0,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 2**14,
    args: Args = None,
    throw: bool = True,
) -> PeriodDoublings:
    r"""Locate the successive period doublings of the attractor from its orbit
    diagram, by bisection on its period.

    The orbit diagram over the increasing grid `values` (as `dynjax.orbit_diagram`)
    gives the period `p(v)` of the attractor at each value
    (`OrbitDiagram.periods`); with `p0 = p(values[0])`, the `k`-th doubling is
    bracketed by the first grid interval where `p` leaves `[1, p0 2^(k-1)]`, and
    located by `n_bisect` bisections of that interval on the same test, each trial
    value iterated afresh from `x0`. Everything runs in one compiled call (the
    grid vmapped, then the `K` bisections vmapped).

    The accuracy is set by the transient, not by `n_bisect`: at a doubling the
    cycle's multiplier is `-1`, so nearby the orbit converges slowly, and a
    value below the doubling by less than about
    `log(amplitude / tol) / (n |d mu / dp|)` (`n` the transient in periods of
    the cycle) has not settled and reads as doubled: the located values lie
    slightly below the true ones, by an amount that falls as `1 / n_transient`.
    For the logistic map with the defaults (grid spacing `5e-4` from 2.9) the
    first five doublings come out low by `6e-5` (`r_1 = 3`) down to `1.3e-6`
    (`r_5`), and the Feigenbaum ratios from them agree with those of the
    published values to `0.03 %` (0.4 s once compiled, on 2 CPU cores). This is
    the experiment by which Feigenbaum (1978) found his constant; for one
    doubling to high accuracy, continue the cycle and locate its flip point with
    `dynjax.continuation(..., period=...)` instead.

    **Arguments:**

    - `system`, `parameter`, `x0`, `args`, and for flows `plane`, `direction`,
        `t_max`, `solver`, `stepsize_controller`, `max_steps`: as in
        `dynjax.orbit_diagram`.
    - `values`: shape `(P,)`, an increasing grid fine enough that successive
        doublings fall in different intervals (they accumulate geometrically,
        at the rate `1 / 4.669...`).
    - `n_doublings`: `K`, the number of doublings to locate.
    - `n_transient`: iterations (or crossings) discarded at every trial value.
    - `n_keep`: iterations (or crossings) in which the period is read (default
        `p0`-independent `2^(K+2)`; periods up to `n_keep // 2` are detected, so a
        cascade starting from period `p0` needs `n_keep >= p0 2^(K+1)`).
    - `tol`: the relative tolerance of a return (`OrbitDiagram.periods`).
    - `n_bisect`: bisection steps per doubling.
    - `throw`: raise if a doubling is not bracketed by `values`.

    **Returns:**

    A `dynjax.PeriodDoublings`; `dynjax.feigenbaum_ratios(doublings.parameter)`
    gives the ratios of successive intervals.

    **Raises:**

    `ValueError` as `dynjax.orbit_diagram`, or for `values` that are not
    increasing; with `throw`, an `equinox.EquinoxRuntimeError` if a doubling was
    not bracketed.

    **References:** M. J. Feigenbaum, *Quantitative universality for a class of
    nonlinear transformations*, J. Stat. Phys. 19, 25 (1978); S. H. Strogatz,
    *Nonlinear Dynamics and Chaos* (1994), sections 10.2 and 10.6.
    """
    _check_counts(
        n_doublings=(n_doublings, 1),
        n_transient=(n_transient, 0),
        n_bisect=(n_bisect, 0),
    )
    if n_keep is None:
        n_keep = 2 ** (n_doublings + 2)
    _check_counts(n_keep=(n_keep, 2))
    sweep, values, x0s, geometry = _setup(
        "period_doublings",
        system,
        parameter,
        x0,
        values,
        args,
        plane,
        direction,
        t_max,
        solver,
        stepsize_controller,
        max_steps,
    )
    if values.shape[0] < 2 or (
        not is_traced(values) and not bool(jnp.all(jnp.diff(values) > 0))
    ):
        raise ValueError(
            "`values` must be an increasing grid of at least two parameter values."
        )
    geo = _Geometry(geometry["coordinate_periods"])
    out = _doublings(
        sweep, geo, values, x0s, n_doublings, n_transient, n_keep, tol, n_bisect
    )
    if throw:

        def details(d):
            missing = [k + 1 for k, f in enumerate(np.asarray(d.found)) if not f]
            return (
                f"(Period at values[0]: {int(d.base_period)}; doublings {missing} "
                "were not bracketed: extend `values` or refine the grid near the "
                "accumulation point, or ask for fewer `n_doublings`.)"
            )

        param = raise_if_failed(out.result, out, details).parameter
        out = eqx.tree_at(lambda d: d.parameter, out, param)
    return out


def feigenbaum_ratios(doublings: Float[ArrayLike, " K"]) -> Float[Array, " K-2"]:
    r"""The ratios of successive period-doubling intervals,

    $$\delta_k = \frac{r_k - r_{k-1}}{r_{k+1} - r_k}, \qquad k = 2, \ldots, K-1,$$

    which tend to Feigenbaum's constant `4.6692016...` for every smooth
    unimodal map with a quadratic maximum (Feigenbaum 1978).

    **Arguments:**

    - `doublings`: shape `(K,)`, `K >= 3`, the parameters `r_1 < r_2 < ...` of
        successive doublings (e.g. `dynjax.period_doublings(...).parameter`).

    **Returns:**

    Shape `(K - 2,)`: `delta_2, ..., delta_{K-1}`.

    **Raises:**

    `ValueError` if `doublings` is not 1-D with at least 3 values.

    **Reference:** M. J. Feigenbaum, *Quantitative universality for a class of
    nonlinear transformations*, J. Stat. Phys. 19, 25 (1978).
    """
    r = jnp.asarray(doublings)
    if r.ndim != 1 or r.shape[0] < 3:
        raise ValueError(
            "`feigenbaum_ratios` needs at least three successive doublings (a 1-D "
            f"array), got shape {r.shape}."
        )
    gaps = jnp.diff(r)
    return gaps[:-1] / gaps[1:]
