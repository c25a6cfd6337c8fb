import math
from fractions import Fraction

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from diffrax._root_finder import use_stepsize_tol  # the sentinel diffeqsolve resolves
from jaxtyping import Array, Float

from .._custom_types import Args, IntScalarLike, RealScalarLike, State, StateLike
from .._misc import as_param
from .._results import raise_if_failed, RESULTS
from .._system import AbstractFlow, AbstractMap
from .._system._checks import conform


_DIRECTIONS = (1, -1, 0)
# The thickness of the plane in ulps of the (relative) event value: values within
# it are on the plane, and leaving it is not a crossing.
_THICKNESS = 1e4
# Samples of the dense interpolant per step: K + 1 points determine a polynomial of
# degree <= K exactly, and every diffrax ODE solver's interpolant has degree <= 7.
_K = 8


def _bernstein_restrictions(K: int, pieces: int) -> np.ndarray:
    """The linear maps from K + 1 equispaced samples of a polynomial of degree <= K
    on [0, 1] to its Bernstein coefficients on each of `pieces` equal sub-intervals.

    Computed exactly in rational arithmetic; shape (pieces, K + 1, K + 1).
    """
    nodes = [Fraction(i, K) for i in range(K + 1)]

    def mul(p, q):
        out = [Fraction(0)] * (len(p) + len(q) - 1)
        for a, pa in enumerate(p):
            for b, qb in enumerate(q):
                out[a + b] += pa * qb
        return out

    # Power coefficients of each Lagrange basis polynomial L_i(theta).
    lagrange = []
    for i, xi in enumerate(nodes):
        p = [Fraction(1)]
        for k, xk in enumerate(nodes):
            if k != i:
                p = mul(p, [-xk / (xi - xk), 1 / (xi - xk)])
        lagrange.append(p)
    out = np.zeros((pieces, K + 1, K + 1))
    for j in range(pieces):
        for i, p in enumerate(lagrange):
            # theta = (j + u) / pieces: power coefficients in u.
            q = [Fraction(0)] * (K + 1)
            shift = [Fraction(1)]
            for m, pm in enumerate(p):
                for r, sr in enumerate(shift):
                    q[r] += pm * sr
                shift = mul(shift, [Fraction(j, pieces), Fraction(1, pieces)])
            # power -> Bernstein: c_k = sum_{m <= k} C(k, m) / C(K, m) a_m
            for k in range(K + 1):
                c = sum(
                    (Fraction(math.comb(k, m), math.comb(K, m)) * q[m])
                    for m in range(k + 1)
                )
                out[j, k, i] = float(c)
    return out


# Interior Bernstein coefficients (the end ones are the samples themselves) on each
# sub-interval, (K, K - 1, K + 1), and on the whole step, (K - 1, K + 1).
_RESTRICT = _bernstein_restrictions(_K, _K)[:, 1:-1, :]
_WHOLE = _bernstein_restrictions(_K, 1)[0, 1:-1, :]


def _prepare(solver, controller):
    """Trace-time checks and the settings `diffrax.diffeqsolve` would apply."""
    interpolation = solver.interpolation_cls
    module = getattr(interpolation, "__module__", "") or ""
    if not module.startswith("diffrax."):
        raise ValueError(
            "Crossings are located on the solver's dense interpolant, which must be a "
            f"polynomial of degree <= {_K} in time, as for every diffrax ODE solver "
            f"(Tsit5, Dopri5, Dopri8, Kvaerno5, ...); {type(solver).__name__}'s "
            f"interpolation {interpolation!r} is not one of diffrax's. Use a diffrax "
            "solver."
        )
    if not isinstance(controller, dfx.AbstractAdaptiveStepSizeController):
        raise ValueError(
            "Crossing detection needs an adaptive step size controller (e.g. "
            "`diffrax.PIDController(rtol=1e-10, atol=1e-12)`), got "
            f"{type(controller).__name__}."
        )
    controller = controller.wrap(1)
    if isinstance(solver, dfx.AbstractRungeKutta) and solver.scan_kind is None:
        # As `diffrax.ForwardMode`: a plain loop over the stages (forward-mode
        # differentiable, and faster than the checkpointed default).
        solver = eqx.tree_at(
            lambda s: s.scan_kind, solver, "lax", is_leaf=lambda v: v is None
        )
    if isinstance(solver, dfx.AbstractImplicitSolver):
        # As `diffeqsolve`: an implicit solver's root finder takes the controller's
        # tolerances where it was built with `use_stepsize_tol`.
        names = [
            a
            for a in ("rtol", "atol", "norm")
            if getattr(solver.root_finder, a) is use_stepsize_tol
        ]
        if names:
            solver = eqx.tree_at(
                lambda s: tuple(getattr(s.root_finder, a) for a in names),
                solver,
                tuple(getattr(controller, a) for a in names),
            )
    return solver, controller


class _Search(eqx.Module):
    tprev: jax.Array
    tnext: jax.Array
    y: jax.Array
    g: jax.Array  # the event value at `tprev`
    side: jax.Array  # the side of the plane at `tprev` (+1 or -1)
    solver_state: object
    controller_state: object
    made_jump: jax.Array
    num_steps: jax.Array
    pending: jax.Array  # the step [tprev, tnext] needs the careful check
    found: jax.Array  # the step [tprev, tnext] holds the crossing ...
    j: jax.Array  # ... in its sub-interval [j/K, (j+1)/K] ...
    orient: jax.Array  # ... after which the event value has this sign
    result: RESULTS


def _constant(a, dtype):
    """A constant matrix, split into row blocks of at most 512 bytes: XLA's CPU
    runtime runs a loop body's kernels in sequence (cheaply) only while every
    buffer it touches is that small (see `dynjax._scan`)."""
    a = np.asarray(a)
    rows = max(1, 512 // (a.shape[-1] * jnp.dtype(dtype).itemsize))
    return [jnp.asarray(a[i : i + rows], dtype) for i in range(0, a.shape[0], rows)]


def _matvec(blocks, v):
    return jnp.concatenate([m @ v for m in blocks])


def _carry_sign(values, first):
    """The sign of each entry, an entry of 0 taking the sign before it (`first`
    before the start)."""
    n = values.shape[-1]
    last = jax.lax.cummax(
        jnp.where(values != 0, jnp.arange(n), -1), axis=values.ndim - 1
    )
    signs = jnp.take_along_axis(jnp.sign(values), jnp.maximum(last, 0), axis=-1)
    return jnp.where(last >= 0, signs, first)


def _classify(g, side, direction, at_floor, restrict):
    """The first sub-interval of a step holding a crossing in `direction`, and the
    first one that may hide two crossings (K if none), from the event values `g`
    at the K + 1 sample times; also the side of the plane at the end of the step
    and after the crossing.

    The plane has a thickness `eta` of rounding size: a value within it keeps the
    side before it, so that leaving the plane from a crossing found on either
    side of it to rounding is not a crossing.
    """
    K = _K
    eta = _THICKNESS * jnp.finfo(g.dtype).eps * jnp.maximum(1, jnp.max(jnp.abs(g)))
    sides = _carry_sign(jnp.where(jnp.abs(g) > eta, g, 0), side)
    left, right = sides[:-1], sides[1:]
    # The sign variations of (left side, interior Bernstein coefficients, right
    # side) bound the number of crossings in the sub-interval from above, with the
    # same parity: 0 certifies none, 1 exactly one. Coefficients within the
    # thickness count as zeros (skipped): they move the polynomial by at most
    # `eta`, which cannot take a sample across the plane.
    coeffs = jnp.stack([_matvec(r, g) for r in restrict])  # (K, K - 1)
    coeffs = jnp.where(jnp.abs(coeffs) > eta, coeffs, 0)
    chain = jnp.concatenate([left[:, None], coeffs, right[:, None]], axis=1)
    chain = _carry_sign(chain, left[:, None])
    variations = jnp.sum(chain[:, 1:] != chain[:, :-1], axis=1)
    certain = variations <= 1
    up = (left < 0) & (right > 0)
    down = (left > 0) & (right < 0)
    wanted = {1: up, -1: down, 0: up | down}[direction]
    crossing = wanted & (certain | at_floor)
    unsure = ~(certain | at_floor)
    first_crossing = jnp.where(jnp.any(crossing), jnp.argmax(crossing), K)
    first_unsure = jnp.where(jnp.any(unsure), jnp.argmax(unsure), K)
    orient = right[jnp.minimum(first_crossing, K - 1)]
    return first_crossing, first_unsure, sides[-1], orient


def _interpolant(solver, dense_info, dtype):
    # Every diffrax interpolant depends on time only through the fraction theta of
    # its step (`linear_rescale(t0, t, t1)`), so it is built over [0, 1].
    return solver.interpolation_cls(
        t0=jnp.zeros((), dtype), t1=jnp.ones((), dtype), **dense_info
    )


def _sampler(solver, dense_struct, dtype):
    """`(P, A)`: the event samples at theta = 1/K, ..., (K-1)/K of a step are
    `A @ P(dense_info, normal)`, where `P` projects the dense output on the normal.

    The interpolants of diffrax are linear in their dense output, so `A` is
    computed once, at trace time, by differentiating the projected interpolant.
    """
    leaves, treedef = jax.tree.flatten(dense_struct)
    theta = np.arange(1, _K) / _K

    def samples(projected):
        interp = _interpolant(solver, jax.tree.unflatten(treedef, projected), dtype)
        return jnp.stack([interp.evaluate(th) for th in theta])

    with jax.ensure_compile_time_eval():
        zeros = [np.zeros(leaf.shape[:-1], dtype) for leaf in leaves]
        blocks = jax.jacfwd(samples)(zeros)
        A = np.concatenate([np.asarray(b).reshape(_K - 1, -1) for b in blocks], axis=1)
        probe = [np.random.default_rng(0).normal(size=z.shape) for z in zeros]
        flat = np.concatenate([p.reshape(-1) for p in probe])
        linear = np.allclose(
            np.asarray(samples([jnp.asarray(p, dtype) for p in probe])),
            A @ flat,
            rtol=1e3 * jnp.finfo(dtype).eps,
            atol=1e3 * jnp.finfo(dtype).eps,
        )
    if not linear:
        raise ValueError(
            f"The dense interpolant of {type(solver).__name__} is not linear in its "
            "dense output, so crossings cannot be located on it; use a diffrax ODE "
            "solver such as `diffrax.Tsit5()`."
        )

    def project(dense_info, normal):
        return jnp.concatenate(
            [(leaf @ normal).reshape(-1) for leaf in jax.tree.leaves(dense_info)]
        )

    return project, A


def _next_crossing(
    flow, x, t0, normal, offset, direction, t_max, args, solver, controller, max_steps
):
    """`(t, x(t), result)`: the first crossing after `(t0, x)` of `normal . x = offset`.

    Steps with `solver` and `controller` and, on every accepted step, samples the
    event value on the dense interpolant at K + 1 equispaced times. Where the
    Bernstein coefficients of the sample polynomial over the whole step all have
    the sign of the side the step starts on, the step holds no crossing. Otherwise
    the step is redone carefully: each sub-interval between two samples is checked
    the same way: it holds no crossing if its coefficients all have the sign of its
    end values (the polynomial lies in their convex hull), exactly one if they
    change sign once; if neither (two crossings or a tangency may hide there), the
    step is retried with at most half its length, down to a floor of about a
    thousand ulps of time, below which a pair of crossings cannot be told from a
    touch and counts as none. The first crossing in `direction` is refined by
    bisection in its sub-interval.
    """
    solver, controller = _prepare(solver, controller)
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    K = _K
    restrict = [_constant(r, dtype) for r in _RESTRICT]
    scale = 1 + jnp.abs(offset) + jnp.max(jnp.abs(x))

    def event(y):
        return (jnp.dot(normal, y) - offset) / scale

    # Integrate in the local time s = t - t0, so that the crossing time is resolved
    # to rounding however late it happens.
    term = dfx.ODETerm(lambda s, y, a: flow.vector_field(a[0] + s, y, a[1]))
    targs = (t0, args)
    zero = jnp.zeros((), dtype)
    # The side of the plane at the start; on the plane (as after a crossing, up to
    # rounding), the side the flow heads to, so that leaving it is not a crossing.
    g0 = event(x)
    on_plane = jnp.abs(g0) <= _THICKNESS * eps
    heading = jnp.sign(jnp.dot(normal, flow.vector_field(t0, x, args)))
    side0 = jnp.where(on_plane, heading, jnp.sign(g0))
    side0 = jnp.where(side0 == 0, 1.0, side0).astype(dtype)
    g0 = jnp.where(on_plane, zero, g0)

    error_order = solver.error_order(term)
    tnext, controller_state = controller.init(
        term, zero, t_max, x, None, targs, solver.func, error_order
    )
    tnext = jnp.minimum(tnext, t_max).astype(dtype)
    h_init = tnext
    solver_state = solver.init(term, zero, tnext, x, targs)
    dense_struct = eqx.filter_eval_shape(
        solver.step, term, zero, tnext, x, targs, solver_state, False
    )[2]
    project, A = _sampler(solver, dense_struct, dtype)
    sample = _constant(A, dtype)
    # The whole step's interior Bernstein coefficients from the end values and the
    # projected dense output.
    whole_ends = jnp.asarray(_WHOLE[:, [0, K]], dtype)
    whole_dense = _constant(_WHOLE[:, 1:K] @ A, dtype)
    whole_one = jnp.asarray(_WHOLE[:, 1:K].sum(axis=1), dtype)
    t_clip = t_max - 128 * eps * jnp.abs(t_max)
    # As `diffeqsolve`: a controller that never reports a jump (PIDController
    # returns a Python `False`) lets the solver skip its after-a-jump branch.
    jumps = eqx.filter_eval_shape(
        controller.adapt_step_size,
        zero,
        tnext,
        x,
        x,
        targs,
        x,
        error_order,
        controller_state,
    )[3]
    jumps = jumps is not False

    def step(c):
        return solver.step(
            term,
            c.tprev,
            c.tnext,
            c.y,
            targs,
            c.solver_state,
            c.made_jump if jumps else False,
        )

    def running(c):
        return (
            ~c.found
            & (c.tprev < t_max)
            & (c.num_steps < max_steps)
            & (c.result == RESULTS.successful)
        )

    def attempt(c, careful):
        y1, y_error, dense_info, solver_state, solver_result = step(c)
        y_error = jnp.where(jnp.isnan(y_error), jnp.inf, y_error)
        keep, tprev, tnext, made_jump, controller_state, controller_result = (
            controller.adapt_step_size(
                c.tprev,
                c.tnext,
                c.y,
                y1,
                targs,
                y_error,
                error_order,
                c.controller_state,
            )
        )
        # (The controller computes in the default float dtype; times stay in the
        # state's, as in `diffeqsolve`.)
        tprev, tnext = tprev.astype(dtype), tnext.astype(dtype)
        h = c.tnext - c.tprev
        z = project(dense_info, normal)
        g_end = event(y1)
        if careful:
            inner = (_matvec(sample, z) - offset) / scale
            g = jnp.concatenate([c.g[None], inner, g_end[None]])
            finite = jnp.all(jnp.isfinite(g))
            at_floor = h <= K * 1024 * eps * jnp.maximum(c.tnext, h_init)
            first_crossing, first_unsure, last_side, orient = _classify(
                g, c.side, direction, at_floor, restrict
            )
            retry = keep & finite & (first_unsure < first_crossing)
            found = keep & finite & ~retry & (first_crossing < K)
            pending = jnp.array(False)
        else:
            # Whole-step Bernstein coefficients all on the starting side: no
            # crossing. Anything else goes to the careful check.
            # (the interior ones are linear in the projected dense output `z`).
            interior = (
                whole_ends[:, 0] * c.g
                + whole_ends[:, 1] * g_end
                + (_matvec(whole_dense, z) - whole_one * offset) / scale
            )
            bernstein = jnp.concatenate([c.g[None], interior, g_end[None]])
            finite = jnp.all(jnp.isfinite(bernstein))
            clear = jnp.all(c.side * bernstein > 0)
            first_crossing = jnp.array(K)
            last_side = orient = c.side
            retry = found = jnp.array(False)
            pending = keep & finite & ~clear
        hold = retry | found | pending
        accept = keep & ~hold
        # Retry with at most half the step, and short enough that the doubtful
        # sub-interval is resolved more finely.
        if careful:
            shorter = c.tprev + h * jnp.minimum(0.5, (first_unsure + 1) / K)
            tnext = jnp.where(retry, shorter, tnext)
        tprev = jnp.where(hold, c.tprev, tprev)
        tprev = jnp.minimum(tprev, t_max)
        clip = tnext > t_clip
        tnext = jnp.where(
            clip, jnp.where(accept, t_max, tprev + 0.5 * (t_max - tprev)), tnext
        )
        # A found or pending step is redone later, so nothing advances.
        tnext = jnp.where(found | pending, c.tnext, tnext)

        def select(a, b):
            return jnp.where(accept, a, b)

        if not careful:
            g = g_end[None]
        solver_result = RESULTS.where(
            keep, RESULTS.promote(solver_result), RESULTS.successful
        )
        result = RESULTS.where(
            solver_result == RESULTS.successful,
            RESULTS.promote(controller_result),
            solver_result,
        )
        result = RESULTS.where(keep & ~finite, RESULTS.nonfinite_state, result)
        return _Search(
            tprev=tprev.astype(dtype),
            tnext=tnext.astype(dtype),
            y=select(y1, c.y),
            g=select(g[-1], c.g),
            side=select(last_side, c.side),
            solver_state=jax.tree.map(select, solver_state, c.solver_state),
            controller_state=jax.tree.map(
                lambda a, b: jnp.where(hold, b, a),
                controller_state,
                c.controller_state,
            ),
            made_jump=select(jnp.asarray(made_jump), c.made_jump),
            num_steps=c.num_steps + 1,
            pending=pending,
            found=found,
            j=jnp.minimum(first_crossing, K - 1),
            orient=orient,
            result=result,
        )

    def outer(c):
        # Steps that are clear of the plane run in a tight loop; the others are
        # redone with the careful check, outside it (a `lax.cond` inside the loop
        # would cost more than the check saves).
        c = jax.lax.while_loop(
            lambda c: running(c) & ~c.pending, lambda c: attempt(c, False), c
        )
        checked = attempt(c, True)
        return jax.tree.map(lambda a, b: jnp.where(c.pending, a, b), checked, c)

    init = _Search(
        tprev=zero,
        tnext=tnext,
        y=x,
        g=g0,
        side=side0,
        solver_state=solver_state,
        controller_state=controller_state,
        made_jump=jnp.array(False),
        num_steps=jnp.array(0),
        pending=jnp.array(False),
        found=jnp.array(False),
        j=jnp.array(0),
        orient=jnp.ones((), dtype),
        result=RESULTS.successful,
    )
    c = jax.lax.while_loop(running, outer, init)

    # Redo the step that holds the crossing (cheaper than carrying every step's
    # dense output through the loop) and refine by bisection inside its
    # sub-interval, where the oriented event value goes from negative to positive.
    # The bracket always holds the crossing, so a fixed number of halvings (to
    # rounding) is the stopping rule: Bisection's test on |f| is not meaningful at
    # rounding level, and its step-limit code is ignored. Its implicit adjoint
    # gives the derivative of the crossing time.
    interp = _interpolant(solver, step(c)[2], dtype)

    def oriented(u, _):
        return c.orient * event(interp.evaluate((c.j + u) / K))

    u = optx.root_find(
        oriented,
        optx.Bisection(rtol=0.0, atol=0.0, flip=False),
        jnp.asarray(0.5, dtype),
        options=dict(lower=zero, upper=jnp.ones((), dtype)),
        max_steps=jnp.finfo(dtype).nmant + 8,
        throw=False,
    ).value
    theta = (c.j + u) / K
    s = c.tprev + theta * (c.tnext - c.tprev)
    y = interp.evaluate(theta)
    result = RESULTS.where(
        c.found,
        RESULTS.successful,
        RESULTS.where(
            c.result != RESULTS.successful,
            c.result,
            RESULTS.where(
                c.num_steps >= max_steps, RESULTS.max_steps_reached, RESULTS.no_crossing
            ),
        ),
    )
    s = jnp.where(c.found, s, c.tprev)
    y = jnp.where(c.found, y, c.y)
    return t0 + s, y, result


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
        found within `t_max`). With `throw=False`, the rows from the first
        crossing that was not found on are `NaN`.
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
        found = result == RESULTS.successful
        return (t_next, x_next, result), (t_next, x_next, t_next - t, found)

    (_, _, result), (times, points, returns, found) = jax.lax.scan(
        body, (t0, x0, RESULTS.successful), None, length=n
    )
    # Rows from the first failed search on are not crossings: NaN, not the state
    # where the search stopped (`result` says why).
    nan = jnp.asarray(jnp.nan, points.dtype)
    points = jnp.where(found[:, None], points, nan)
    times = jnp.where(found, times, nan)
    returns = jnp.where(found, returns, nan)
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

    The section is `Sigma = {x : n . x = c}`. Crossings are sign changes of the
    event value `g = n . x - c` on the solver's dense interpolant, found so that
    none is skipped however long the steps grow. On every step `g` is sampled at
    `K + 1 = 9` equispaced times; the interpolants of diffrax's ODE solvers are
    polynomials of degree at most 7, which the samples determine exactly. The
    Bernstein coefficients of that polynomial on each eighth of the step bound it
    (it lies in their convex hull), and their sign variations bound the number of
    its roots there from above, with the same parity: an eighth whose
    coefficients keep one sign holds no crossing, one whose coefficients change
    sign once holds exactly one. An eighth where two crossings or a tangency could
    hide makes the step be retried at most half as long. The first crossing in
    `direction` is refined by bisection (`optimistix.Bisection`) inside its eighth,
    which never leaves the bracket, to rounding; the crossings are a `lax.scan`,
    each restarting from the previous one.

    The guarantee: every crossing of the interpolant is found, in time order,
    except two crossings closer together than about a thousand ulps of time,
    which cannot be told from a touch and count as none. The plane has a
    thickness of rounding size (`1e4` ulps of the event value relative to
    `1 + |c| + max|x0|`): a crossing is a passage from one side of it to the
    other, so leaving the plane from a crossing just found is not one. The
    interpolant follows the exact solution to the solver's tolerances. A
    crossing that cannot be located (the budget `max_steps` or `t_max` spent, a
    non-finite state, a failed solver step) is reported in `result`, never
    skipped silently.

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
        float64). The solver must be a diffrax ODE solver (its interpolant a
        polynomial) and the controller adaptive; `max_steps` counts the step
        attempts per crossing.
    - `throw`: raise if a crossing is missing; otherwise report it in `result`
        (`no_crossing`, `max_steps_reached`, `nonfinite_state`, ...).

    Raises `ValueError` at trace time for a plane of the wrong shape, a bad
    `direction` or `n_crossings`, a solver whose interpolant is not one of
    diffrax's, or a non-adaptive step size controller.

    **Returns:**

    A `dynjax.PoincareSection`.

    !!! Example

        ```python
        rossler = dynjax.systems.Rossler()
        sec = dynjax.poincare_section(rossler, rossler.default_x0(),
                                      (jnp.array([0.0, 1.0, 0.0]), 0.0), 200,
                                      direction=-1)
        ```

    **References:** H. Poincaré, *Les méthodes nouvelles de la mécanique
    céleste* (1899); S. H. Strogatz, *Nonlinear Dynamics and Chaos*, Section 8.7;
    L. F. Shampine, I. Gladwell and R. W. Brankin, *Reliable solution of special
    event location problems for ODEs*, ACM TOMS 17 (1991) (events on the
    interpolant, not only at step ends); J. M. Lane and R. F. Riesenfeld, *Bounds on
    a polynomial*, BIT 21 (1981) (Bernstein bounds and sign variations).
    """
    if not isinstance(flow, AbstractFlow):
        raise ValueError("`poincare_section` takes a flow (an `AbstractFlow`).")
    if not isinstance(n_crossings, int) or n_crossings < 1:
        raise ValueError(f"`n_crossings` must be a positive int, got {n_crossings!r}.")
    _check_direction(direction)
    flow, x0, args = conform(flow, x0, verb="poincare_section", args=args, t=t0)
    normal, offset = _check_plane(plane, x0.shape[0])
    solver, controller = _defaults(x0.dtype, solver, stepsize_controller)
    _prepare(solver, controller)
    t0 = jnp.asarray(t0, dtype=x0.dtype)
    t_max = jnp.asarray(t_max, dtype=x0.dtype)
    sec = _section(
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
    )
    if throw:

        def details(section):
            n_found = int(np.sum(np.isfinite(np.asarray(section.times))))
            return f"({n_found} of {n_crossings} crossings were found.)"

        points = raise_if_failed(sec.result, sec.points, details=lambda _: details(sec))
        sec = eqx.tree_at(lambda s: s.points, sec, points)
    return sec


class PoincareMap(AbstractMap):
    r"""The Poincaré (first-return) map of a flow on a hyperplane, as a map.

    `P(x)` is the next crossing of the trajectory from `x` with the section
    `normal . x = offset` in the chosen direction. The state is kept in the full
    `d` coordinates of the flow (a point of the section), so every dynjax map
    tool applies: fixed points of `P` (`dynjax.find_equilibria`) are periodic
    orbits of the flow, and `P`'s multipliers are the orbit's nontrivial Floquet
    multipliers plus one `0` (`P` flattens the off-plane direction). Crossings are
    located as in `dynjax.poincare_section`, none skipped inside a step. `P` is
    differentiable in forward mode (implicit differentiation of the crossing
    time). Built by `dynjax.poincare_map`.
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
    _prepare(solver, controller)
    return PoincareMap(
        flow, normal, offset, t_max, direction, solver, controller, max_steps, throw
    )
