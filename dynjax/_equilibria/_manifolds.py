import math
from collections.abc import Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, StateLike
from .._results import RESULTS
from .._system import AbstractFlow, AbstractMap
from .._system._checks import conform
from .._system._jacobian import dense_jacobian


class Manifold(eqx.Module):
    """A one-dimensional invariant manifold, returned by `dynjax.stable_manifold`
    and `dynjax.unstable_manifold`.

    **Attributes:**

    - `x_star`: the saddle, shape `(d,)`.
    - `branches`: the two branches, shape `(2, n_points, d)`; branch 0 leaves
        `x_star` along `+eigenvector`, branch 1 along `-eigenvector`; row 0 of each
        is `x_star +- eps eigenvector`, and points are ordered away from `x_star`.
    - `ts`: the parameter of each point. Grown in time (the default): the
        integration time, shape `(n_points,)`, negative for stable manifolds (which
        are grown backward in time). Grown by arclength (`arclength=` or `box=`):
        the arclength along each branch from its row 0, shape `(2, n_points)`,
        equally spaced from 0 to the branch's length (where it left the box, came
        to rest at an equilibrium, or reached `arclength`).
    - `eigenvalue`: the eigenvalue whose eigenvector spans the manifold's tangent.
    - `eigenvector`: the unit eigenvector (real), shape `(d,)`.
    - `result`: a `dynjax.RESULTS` code.
    - `stable`: `True` for a stable manifold, `False` for an unstable one.
    """

    x_star: Float[Array, " d"]
    branches: Float[Array, "2 n d"]
    ts: Float[Array, " n"] | Float[Array, "2 n"]
    eigenvalue: Float[Array, ""]
    eigenvector: Float[Array, " d"]
    result: RESULTS
    stable: bool = eqx.field(static=True, default=False)


def _direction(flow, x_star, unstable, args):
    """The real eigenvalue and unit eigenvector spanning the 1-D manifold."""
    J = dense_jacobian(lambda x: flow.vector_field(0.0, x, args), x_star)
    lam, V = jnp.linalg.eig(J)
    re = jnp.real(lam)
    mask = jnp.where(unstable, re > 0, re < 0)
    count = jnp.sum(mask)
    idx = jnp.argmax(jnp.where(mask, jnp.abs(re), -jnp.inf))
    eigenvalue = re[idx]
    v = jnp.real(V[:, idx])
    v = v / jnp.linalg.norm(v)
    v = v * jnp.where(v[jnp.argmax(jnp.abs(v))] < 0, -1.0, 1.0)  # canonical sign
    real_and_simple = (count == 1) & (
        jnp.abs(jnp.imag(lam[idx])) <= 1e-12 * (1 + jnp.abs(lam[idx]))
    )
    x_star = eqx.error_if(
        x_star,
        ~real_and_simple,
        "The requested manifold is not one-dimensional: this point does not have "
        "exactly one real eigenvalue of the requested kind (Re > 0 for "
        "`unstable_manifold`, Re < 0 for `stable_manifold`; check "
        "`dynjax.linearize(system, x_star)`). Only 1-D manifolds are grown.",
    )
    return x_star, eigenvalue, v


def _combine(results, ys):
    """One result for both branches: the first failure, else non-finite points."""
    first, second = (
        jax.tree.map(lambda r: r[i], results)
        for i in range(2)  # per branch
    )
    result = RESULTS.where(first != RESULTS.successful, first, second)
    return RESULTS.where(
        (result == RESULTS.successful) & ~jnp.all(jnp.isfinite(ys)),
        RESULTS.nonfinite_state,
        result,
    )


@eqx.filter_jit
def _grow(
    flow,
    x_star,
    unstable,
    t_end,
    n_points,
    eps,
    args,
    solver,
    controller,
    max_steps,
    throw,
):
    x_star, eigenvalue, v = _direction(flow, x_star, unstable, args)
    sign = jnp.where(unstable, 1.0, -1.0)
    ts = sign * jnp.linspace(0.0, t_end, n_points)
    term = dfx.ODETerm(lambda t, y, a: flow.vector_field(t, y, a))

    def branch(s):
        sol = dfx.diffeqsolve(
            term,
            solver,
            0.0,
            ts[-1],
            None,
            x_star + s * eps * v,
            args=args,
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=False,
        )
        return sol.ys, RESULTS.promote(sol.result)

    ys, results = jax.vmap(branch)(jnp.array([1.0, -1.0]))
    result = _combine(results, ys)
    if throw:
        ys = result.error_if(ys, result != RESULTS.successful)
    return x_star, ys, ts, eigenvalue, v, result


@eqx.filter_jit
def _grow_arclength(
    flow,
    x_star,
    unstable,
    length_max,
    lower,
    upper,
    n_points,
    eps,
    args,
    solver,
    controller,
    root_finder,
    max_steps,
    throw,
):
    x_star, eigenvalue, v = _direction(flow, x_star, unstable, args)
    x_star = eqx.error_if(
        x_star,
        ~jnp.all((x_star > lower) & (x_star < upper)),
        "`x_star` lies outside `box`: a manifold is grown from the saddle until it "
        "leaves the box, so the box must contain the saddle.",
    )
    sign = jnp.where(unstable, 1.0, -1.0)

    def speed(y, a):
        return jnp.linalg.norm(flow.vector_field(0.0, y, a))

    def tangent(s, y, a):
        del s
        args, _ = a
        f = flow.vector_field(0.0, y, args)
        norm = jnp.linalg.norm(f)
        return sign * f / jnp.where(norm > 0, norm, 1.0)

    # diffrax calls event conditions with keywords `t`, `y`, `args`, ...
    def margin(t, y, args, **kwargs):  # positive inside the box
        del t, args, kwargs
        return jnp.min(jnp.minimum(y - lower, upper - y))

    def slowed(t, y, args, **kwargs):  # negative near an equilibrium
        del t, kwargs
        args, rest = args
        return speed(y, args) - rest

    term = dfx.ODETerm(tangent)
    event = dfx.Event((margin, slowed), root_finder=root_finder, direction=False)

    def branch(s):
        y0 = x_star + s * eps * v
        a = (args, 0.5 * speed(y0, args))
        first = dfx.diffeqsolve(
            term,
            solver,
            0.0,
            length_max,
            None,
            y0,
            args=a,
            saveat=dfx.SaveAt(t1=True),
            stepsize_controller=controller,
            max_steps=max_steps,
            event=event,
            throw=False,
        )
        # Second pass to the stopping length, saving at equal arclength steps.
        length = first.ts[-1]
        length = jnp.where(jnp.isfinite(length), length, length_max)
        ss = jnp.linspace(0.0, length, n_points)
        second = dfx.diffeqsolve(
            term,
            solver,
            0.0,
            length,
            None,
            y0,
            args=a,
            saveat=dfx.SaveAt(ts=ss),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=False,
        )
        # A stop at an event is the intended end of the branch, not a failure.
        first_result = RESULTS.promote(first.result)
        result = RESULTS.where(
            (first_result == RESULTS.successful)
            | (first_result == RESULTS.event_occurred),
            RESULTS.promote(second.result),
            first_result,
        )
        return second.ys, ss, result

    ys, ss, results = jax.vmap(branch)(jnp.array([1.0, -1.0]))
    result = _combine(results, ys)
    if throw:
        ys = result.error_if(ys, result != RESULTS.successful)
    return x_star, ys, ss, eigenvalue, v, result


def _check_box(box, d):
    """`box` as two arrays of lower and upper bounds (None: unbounded)."""
    try:
        pairs = [(None, None) if pair is None else tuple(pair) for pair in box]
    except TypeError:
        pairs = None
    if pairs is None or len(pairs) != d or any(len(p) != 2 for p in pairs):
        raise ValueError(
            f"`box` must give one (min, max) pair per coordinate (d = {d}), e.g. "
            f"((-3, 3), (-2, 2)) for a planar flow; use None for an unbounded "
            f"coordinate. Got {box!r}."
        )
    lower, upper = [], []
    for lo, hi in pairs:
        lo = -float("inf") if lo is None else float(lo)
        hi = float("inf") if hi is None else float(hi)
        if not lo < hi:
            raise ValueError(f"Each `box` pair must have min < max, got ({lo}, {hi}).")
        lower.append(lo)
        upper.append(hi)
    return lower, upper


def _manifold(
    flow,
    x_star,
    unstable,
    t_end,
    arclength,
    box,
    n_points,
    eps,
    args,
    solver,
    stepsize_controller,
    max_steps,
    throw,
):
    if isinstance(flow, AbstractMap):
        raise ValueError(
            "Manifolds of map fixed points are not supported; pass a flow."
        )
    if not isinstance(flow, AbstractFlow):
        raise ValueError("Invariant manifolds need a flow (an `AbstractFlow`).")
    if not isinstance(n_points, int) or n_points < 2:
        raise ValueError(f"`n_points` must be an int >= 2, got {n_points!r}.")
    by_arclength = arclength is not None or box is not None
    if by_arclength and t_end is not None:
        raise ValueError(
            "Pass `t_end` (grow the manifold for a time) or `arclength`/`box` (grow "
            "it by arclength), not both."
        )
    if t_end is None:
        t_end = 10.0
    if isinstance(t_end, (int, float)) and not t_end > 0:
        raise ValueError(f"`t_end` must be positive, got {t_end}.")
    if isinstance(arclength, (int, float)) and not arclength > 0:
        raise ValueError(f"`arclength` must be positive, got {arclength}.")
    verb = "unstable_manifold" if unstable else "stable_manifold"
    flow, x_star, args = conform(flow, x_star, verb=verb, args=args, name="x_star")
    dtype = x_star.dtype
    double = jnp.finfo(dtype).bits >= 64
    if eps is None:
        eps = (1e-7 if double else 1e-3) * (1.0 + jnp.max(jnp.abs(x_star)))
    solver = dfx.Tsit5() if solver is None else solver
    user_controller = stepsize_controller
    if stepsize_controller is None:
        if double:
            stepsize_controller = dfx.PIDController(rtol=1e-11, atol=1e-13)
        else:
            stepsize_controller = dfx.PIDController(rtol=1e-6, atol=1e-8)
    if not by_arclength:
        out = _grow(
            flow,
            x_star,
            jnp.asarray(unstable),
            jnp.asarray(t_end, dtype),
            n_points,
            jnp.asarray(eps, dtype),
            args,
            solver,
            stepsize_controller,
            max_steps,
            throw,
        )
        return Manifold(*out, stable=not unstable)
    d = x_star.shape[0]
    lower, upper = _check_box([None] * d if box is None else box, d)
    if arclength is None:
        if not all(map(math.isfinite, lower + upper)):
            raise ValueError(
                "`box` has an unbounded coordinate: give `arclength=`, the largest "
                "length a branch may grow to."
            )
        arclength = 10 * math.dist(lower, upper)
    tol = 1e-10 if double else 1e-5
    if user_controller is None and all(map(math.isfinite, lower + upper)):
        # The events are tested at step ends: a step of arclength h moves the
        # curve at most h, so bounding h by 1/32 of the box's smallest width
        # leaves only excursions out of the box shallower than about
        # h^2 kappa / 8 (kappa the curvature) unnoticed.
        width = min(b - a for a, b in zip(lower, upper))
        stepsize_controller = eqx.tree_at(
            lambda c: c.dtmax,
            stepsize_controller,
            width / 32,
            is_leaf=lambda x: x is None,
        )
    out = _grow_arclength(
        flow,
        x_star,
        jnp.asarray(unstable),
        jnp.asarray(arclength, dtype),
        jnp.asarray(lower, dtype),
        jnp.asarray(upper, dtype),
        n_points,
        jnp.asarray(eps, dtype),
        args,
        solver,
        stepsize_controller,
        optx.Newton(rtol=tol, atol=tol),
        max_steps,
        throw,
    )
    return Manifold(*out, stable=not unstable)


_DOC = r"""The one-dimensional {kind} manifold of a saddle of a flow.

    `W^{s_or_u}(x*)` is tangent at `x*` to the eigenvector `v` of the single
    {kind} eigenvalue. Both branches are grown from `x* +- eps v`; the linear
    approximation error at the start is `O(eps^2)`, and it is damped by the
    {damp} directions as the curve grows. Two parametrisations:

    - **In time** (the default): each branch is integrated {direction} in time
        for `t_end` time units with diffrax, saving `n_points` equally spaced
        times.
    - **By arclength** (`arclength=` or `box=`): each branch solves
        `dx/ds = {pm} f(x) / |f(x)|`, the same curve traversed at unit speed, and
        stops at the first of three `diffrax.Event`s, each located by Newton's
        method: the curve leaves `box`; it comes to rest at another equilibrium
        (`|f|` falls to half its starting value); its length reaches `arclength`.
        A second pass saves `n_points` points equally spaced in arclength up to
        the stop, so a branch that lingers near the saddle and then races away
        is resolved evenly, and ends on the box's boundary. The events are
        tested at the ends of the solver's steps; with the default step size
        controller the steps are at most 1/32 of the box's smallest width in
        arclength, so only an excursion out of the box shallower than about
        `h^2 kappa / 8` (`h` that bound, `kappa` the curvature) can go
        unnoticed.

    The vector field is evaluated at `t = 0` (the flow should be autonomous).

    **Arguments:**

    - `flow`: a dynjax flow.
    - `x_star`: a saddle (an equilibrium with exactly one real {kind} eigenvalue),
        shape `(d,)`.
    - `t_end`: integration time of each branch (default 10; growth in time).
    - `arclength`: the largest arclength of each branch (growth by arclength;
        default with a bounded `box`: 10 times the box's diagonal).
    - `box`: `((min_0, max_0), ..., (min_{{d-1}}, max_{{d-1}}))`, one pair per
        coordinate (or `None` for an unbounded one): the branches stop where they
        leave it (growth by arclength). Must contain `x_star`.
    - `n_points`: points saved per branch.
    - `eps`: initial offset along the eigenvector (default
        `1e-7 (1 + max|x*|)` in float64, `1e-3 (1 + max|x*|)` in float32).
    - `args`, `solver`, `stepsize_controller`, `max_steps`: the diffrax integration
        (default `Tsit5`, `PIDController(rtol=1e-11, atol=1e-13)` in float64).
    - `throw`: raise on integration failure (otherwise reported in `result`).
        A point whose {kind} manifold is not 1-D, and an `x_star` outside `box`,
        always raise.

    **Returns:**

    A `dynjax.Manifold` with both branches (`ts` holds the times, or the
    arclengths of each branch).

    **Raises:**

    `ValueError` for a map, `n_points < 2`, `t_end` together with
    `arclength`/`box`, a malformed `box`, or an unbounded `box` without
    `arclength`.

    **Example:**

    ```python
    saddle = dynjax.Flow(lambda t, x, a: jnp.stack([x[0], -x[1] + x[0] ** 2]), d=2)
    wu = dynjax.{kind}_manifold(saddle, jnp.zeros(2), box=((-2, 2), (-1, 3)))
    ```

    **Reference:** S. H. Strogatz, *Nonlinear Dynamics and Chaos*, Section 6.3;
    B. Krauskopf et al., "A survey of methods for computing (un)stable manifolds
    of vector fields", Int. J. Bifurcation Chaos 15, 763-791 (2005), Section 3
    (arclength parametrisation of one-dimensional manifolds).
    """


def unstable_manifold(
    flow: AbstractFlow,
    x_star: StateLike,
    *,
    t_end: RealScalarLike | None = None,
    arclength: RealScalarLike | None = None,
    box: Sequence[tuple[float | None, float | None] | None] | None = None,
    n_points: int = 1001,
    eps: float | None = None,
    args: Args = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 2**16,
    throw: bool = True,
) -> Manifold:
    return _manifold(
        flow,
        x_star,
        True,
        t_end,
        arclength,
        box,
        n_points,
        eps,
        args,
        solver,
        stepsize_controller,
        max_steps,
        throw,
    )


def stable_manifold(
    flow: AbstractFlow,
    x_star: StateLike,
    *,
    t_end: RealScalarLike | None = None,
    arclength: RealScalarLike | None = None,
    box: Sequence[tuple[float | None, float | None] | None] | None = None,
    n_points: int = 1001,
    eps: float | None = None,
    args: Args = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 2**16,
    throw: bool = True,
) -> Manifold:
    return _manifold(
        flow,
        x_star,
        False,
        t_end,
        arclength,
        box,
        n_points,
        eps,
        args,
        solver,
        stepsize_controller,
        max_steps,
        throw,
    )


unstable_manifold.__doc__ = _DOC.format(
    kind="unstable", direction="forward", damp="stable", s_or_u="u", pm="+"
)
stable_manifold.__doc__ = _DOC.format(
    kind="stable", direction="backward", damp="unstable", s_or_u="s", pm="-"
)
