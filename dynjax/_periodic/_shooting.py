import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, Complex, Float, Int

from .._custom_types import Args, RealScalarLike, StateLike
from .._results import raise_if_failed, RESULTS
from .._system import AbstractFlow, state_difference
from .._system._checks import conform
from ._poincare import _defaults, _next_crossing, _prepare


class PeriodicOrbit(eqx.Module):
    """A periodic orbit returned by `dynjax.find_periodic_orbit`.

    **Attributes:**

    - `x0`: a point on the orbit, shape `(d,)`: its crossing with the hyperplane
        through the cut (the guess, unless that lay on a fast stretch; see
        `dynjax.find_periodic_orbit`) orthogonal to the flow.
    - `period`: the period `T` (positive).
    - `multipliers`: the Floquet multipliers (eigenvalues of the monodromy matrix),
        complex, shape `(d,)`, sorted by decreasing modulus.
    - `trivial_index`: the index in `multipliers` of the trivial multiplier (the
        one closest to 1, which belongs to the direction of the flow).
    - `monodromy`: the monodromy matrix `D phi_T(x0)`, shape `(d, d)`.
    - `xs`: `n_save` states equally spaced in time over one period, shape
        `(n_save, d)` (`xs[0] = x0`), for plotting.
    - `residual`: the max-norm of the closure `phi_T(x0) - x0` over one period
        (wrapped on periodic coordinates).
    - `period_guess`: the period the solve started from (the estimate from the
        returns to a section when no guess was given).
    - `result`: a `dynjax.RESULTS` code.
    - `num_steps`: iterations of the (globalized) shooting solve.
    """

    x0: Float[Array, " d"]
    period: Float[Array, ""]
    multipliers: Complex[Array, " d"]
    trivial_index: Int[Array, ""]
    monodromy: Float[Array, "d d"]
    xs: Float[Array, "n d"]
    residual: Float[Array, ""]
    period_guess: Float[Array, ""]
    result: RESULTS
    num_steps: Int[Array, ""]

    @property
    def nontrivial_multipliers(self) -> Complex[Array, " d-1"]:
        """The `d - 1` multipliers other than the trivial one."""
        keep = jnp.arange(self.multipliers.shape[0]) != self.trivial_index
        return self.multipliers[jnp.nonzero(keep, size=self.multipliers.shape[0] - 1)]

    @property
    def is_stable(self):
        """Orbital stability: every nontrivial multiplier inside the unit circle."""
        return jnp.all(jnp.abs(self.nontrivial_multipliers) < 1)


def _flow_map(flow, x, t1, args, solver, controller, max_steps):
    """`phi_{t1}(x)`, differentiable in forward mode with respect to `x` and `t1`."""
    term = dfx.ODETerm(lambda t, y, a: flow.vector_field(t, y, a))
    sol = dfx.diffeqsolve(
        term,
        solver,
        0.0,
        t1,
        None,
        x,
        args=args,
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=dfx.ForwardMode(),
        throw=False,
    )
    return sol.ys[-1], sol.result


# The shooting residual where an integration failed.
_BIG = 1e10
# Samples of the guessed trajectory from which the cut of the orbit is chosen.
_ANCHOR_SAMPLES = 64


def _integrate_at(flow, x, ts, args, solver, controller, max_steps):
    """The trajectory from `x` at the times `ts` (`ts[0]` the start) and the
    worst result code.

    One `diffeqsolve` per interval (`SaveAt(t1=True)`) in a `lax.scan`, not one
    with `SaveAt(ts=...)`: diffrax checks `ts` at run time with a host callback,
    which would keep the whole compiled verb out of JAX's persistent
    compilation cache. Forward-mode differentiable (`ForwardMode`), so
    `jax.jacfwd` through it gives the variational equation.
    """
    term = dfx.ODETerm(lambda t, y, a: flow.vector_field(t, y, a))

    def segment(carry, interval):
        y, result = carry
        t0, t1 = interval
        sol = dfx.diffeqsolve(
            term,
            solver,
            t0,
            t1,
            None,
            y,
            args=args,
            saveat=dfx.SaveAt(t1=True),
            stepsize_controller=controller,
            max_steps=max_steps,
            adjoint=dfx.ForwardMode(),
            throw=False,
        )
        code = RESULTS.promote(sol.result)
        result = RESULTS.where(result == RESULTS.successful, code, result)
        y = sol.ys[-1]
        return (y, result), y

    (_, result), ys = jax.lax.scan(segment, (x, RESULTS.successful), (ts[:-1], ts[1:]))
    return jnp.concatenate([x[None], ys]), result


def _samples(flow, x, ts, args, solver, controller, max_steps):
    """The trajectory from `x` at the times `ts` (non-finite where it failed)."""
    ys, result = _integrate_at(flow, x, ts, args, solver, controller, max_steps)
    return jnp.where(result == RESULTS.successful, ys, jnp.nan)


def _stop(tree):
    """`lax.stop_gradient` on the array leaves of a pytree (functions pass)."""
    return jax.tree.map(
        lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, tree
    )


def _relax(flow, x0, args, solver, controller, ode_max_steps, max_period, returns):
    """Follow the trajectory from `x0` through successive returns to the hyperplane
    through the current point orthogonal to the flow; stop once two successive
    return times agree to 1e-6 (relative) or after `returns` returns.

    Returns `(x, T, result)`: the last return point and return time.
    """
    dtype = x0.dtype
    scale = 1 + jnp.max(jnp.abs(x0))

    def section(x):
        f = flow.vector_field(jnp.zeros((), dtype), x, args)
        speed = jnp.linalg.norm(f)
        normal = f / jnp.where(speed > 0, speed, 1)
        return normal, jnp.dot(normal, x), speed

    def cond_fn(carry):
        k, _, T_prev, T, result = carry
        settled = (k >= 2) & (jnp.abs(T - T_prev) <= 1e-6 * T)
        return (k < returns) & (result == RESULTS.successful) & ~settled

    def body_fn(carry):
        k, x, _, T, _ = carry
        normal, offset, speed = section(x)
        t, y, result = _next_crossing(
            flow,
            x,
            jnp.zeros((), dtype),
            normal,
            offset,
            1,
            max_period,
            args,
            solver,
            controller,
            ode_max_steps,
        )
        # At rest on an equilibrium there is no section and no period.
        result = RESULTS.where(speed > 1e-10 * scale, result, RESULTS.period_collapsed)
        return k + 1, y, T, t, result

    init = (jnp.array(0), x0, jnp.zeros((), dtype), jnp.zeros((), dtype))
    _, x, _, T, result = jax.lax.while_loop(
        cond_fn, body_fn, init + (RESULTS.successful,)
    )
    return x, T, result


@eqx.filter_custom_jvp
def _implicit_root(y, fn, inputs):
    """The root `y` of `fn(y, inputs) = 0`, differentiated by the implicit function
    theorem: `dy = -J^+ d(fn)`, `J = d(fn)/dy` at the root.

    `J^+` is a pseudo-inverse, so that a family of orbits (a conservative system)
    gives the least-norm derivative rather than a division by zero. Only the
    tangent needs `J`, so an undifferentiated call costs nothing.
    """
    del fn, inputs
    return y


@_implicit_root.def_jvp
def _implicit_root_jvp(primals, tangents):
    y, fn, inputs = primals
    _, t_fn, t_inputs = tangents
    jac = jax.jacfwd(fn)(y, inputs)
    _, r_dot = eqx.filter_jvp(lambda f, i: f(y, i), (fn, inputs), (t_fn, t_inputs))
    y_dot = lx.linear_solve(lx.MatrixLinearOperator(jac), r_dot, lx.SVD()).value
    return y, -y_dot


@eqx.filter_jit
def _find_orbit(
    flow,
    x0,
    period_guess,
    n_segments,
    args,
    solver,
    root_finder,
    rtol,
    atol,
    controller,
    ode_max_steps,
    max_steps,
    n_save,
    max_period,
    returns,
):
    d = x0.shape[0]
    dtype = x0.dtype
    m = n_segments
    zero = jnp.zeros((), dtype)
    if period_guess is None:
        # Relax onto the attractor and estimate the period from the returns to a
        # section: no derivative flows through the guess.
        x0, period_guess, relax_result = _relax(
            _stop(flow),
            _stop(x0),
            _stop(args),
            solver,
            controller,
            ode_max_steps,
            max_period,
            returns,
        )
        # A failed relaxation leaves no usable guess; keep the solve below finite.
        period_guess = jnp.where(
            relax_result == RESULTS.successful, period_guess, jnp.ones((), dtype)
        )
        x0, period_guess = _stop((x0, period_guess))
    else:
        relax_result = RESULTS.successful

    def segment(flow, args, x, T):
        return _flow_map(flow, x, T / m, args, solver, controller, ode_max_steps)[0]

    # Where the orbit is cut (single shooting closes there, and the phase
    # condition holds there): at the guess, unless it lies on a stretch of the
    # guessed trajectory more than four times as fast as the quietest one (arc
    # length within +-T/8), which is then the cut. Cut inside a fast stretch (the
    # jump of a relaxation oscillation), the closure is a near-step function of
    # the period that no local method can follow; at a quiet one, the end of the
    # integration moves least when the period is off.
    n = _ANCHOR_SAMPLES
    ts = jnp.arange(n, dtype=dtype) * (period_guess / n)
    guessed = _samples(
        _stop(flow), _stop(x0), ts, _stop(args), solver, controller, ode_max_steps
    )
    speed = jnp.linalg.norm(
        jax.vmap(lambda x: flow.vector_field(zero, x, args))(guessed), axis=1
    )
    window = jnp.arange(-(n // 8), n // 8 + 1)
    arc = jnp.sum(speed[(jnp.arange(n)[:, None] + window) % n], axis=1)
    arc = jnp.where(jnp.isfinite(arc), arc, jnp.inf)
    k = jnp.where(arc[0] > 4 * jnp.min(arc), jnp.argmin(arc), 0)
    anchor = _stop(guessed[k])
    ref = anchor
    f_ref = flow.vector_field(zero, ref, args)
    f_ref = _stop(f_ref / jnp.linalg.norm(f_ref))

    # The period is T = T_guess exp(s): it stays positive, and a step in `s` is a
    # relative change of the period.
    def period(s):
        return period_guess * jnp.exp(s)

    def residual(y, flow_args):
        flow_, args_ = flow_args
        X = y[:-1].reshape(m, d)
        T = period(y[-1])
        ends = jax.vmap(lambda x: segment(flow_, args_, x, T))(X)
        gaps = state_difference(flow_, ends, jnp.roll(X, -1, axis=0))
        # X_0 stays on the hyperplane through the anchor orthogonal to the flow.
        phase = jnp.dot(state_difference(flow_, X[0], ref), f_ref)
        r = jnp.concatenate([gaps.reshape(-1), phase[None]])
        # A failed integration gives a large finite residual (and no tangent), which
        # the trust region rejects, instead of non-finite values that would stop
        # the linear solves.
        return jnp.where(jnp.isfinite(r), r, _BIG)

    # Initial multiple-shooting nodes: the guessed trajectory from the anchor at
    # T k / m.
    if m == 1:
        nodes = anchor[None]
    else:

        def advance(x, _):
            return segment(flow, args, x, period_guess), x

        _, nodes = jax.lax.scan(advance, anchor, None, length=m)
    y0 = _stop(jnp.concatenate([nodes.reshape(-1), jnp.zeros((1,), dtype)]))

    # The globalized solve (Levenberg-Marquardt by default) finds the root with no
    # derivatives flowing through it (optimistix differentiates a least-squares
    # solve in reverse mode, which the ODE solves do not support); the derivatives
    # of the root come from the implicit function theorem (`_implicit_root`).
    # If the guessed trajectory itself cannot be integrated, there is nothing to
    # iterate on: skip the solve (its result is then an integration failure).
    def solve():
        sol = optx.root_find(
            residual,
            root_finder,
            y0,
            args=_stop((flow, args)),
            max_steps=max_steps,
            throw=False,
        )
        return sol.value, jnp.asarray(sol.stats["num_steps"], int)

    integrable = jnp.all(jnp.isfinite(guessed)) & jnp.all(jnp.isfinite(nodes))
    root, num_steps = jax.lax.cond(integrable, solve, lambda: (y0, jnp.asarray(0, int)))
    fn = eqx.filter_closure_convert(residual, y0, (flow, args))
    y = _implicit_root(_stop(root), fn, (flow, args))
    X = y[:-1].reshape(m, d)
    x_star = X[0]
    T = period(y[-1])
    ts = jnp.linspace(0.0, T, n_save)

    def orbit(x):
        ys, result = _integrate_at(flow, x, ts, args, solver, controller, ode_max_steps)
        return ys[-1], (ys, result)

    # One solve gives the samples and, through its tangents (the variational
    # equation), the monodromy matrix.
    M, (xs, ode_result) = jax.jacfwd(orbit, has_aux=True)(x_star)
    closure = jnp.max(jnp.abs(state_difference(flow, xs[-1], x_star)))
    mu = jnp.linalg.eigvals(M)
    mu = mu[jnp.argsort(-jnp.abs(mu), stable=True)]
    trivial = jnp.argmin(jnp.abs(mu - 1.0))

    scale = 1.0 + jnp.max(jnp.abs(x_star))
    speed = jnp.linalg.norm(flow.vector_field(zero, x_star, args))
    amplitude = jnp.max(jnp.abs(state_difference(flow, xs, x_star)))
    converged = closure <= 1e3 * (atol + rtol * scale)
    # Collapsed: onto a trivial root (a point, or the period ~0), or, without
    # converging, with the period shrunk tenfold (heading to T = 0).
    collapsed = (
        (T <= 1e-6 * period_guess)
        | (speed <= 1e-6 * scale)
        | (amplitude <= 1e-6 * scale)
        | (~converged & (T <= 0.1 * period_guess))
    )
    integrated = (ode_result == RESULTS.successful) & jnp.isfinite(closure)
    result = RESULTS.where(converged, RESULTS.successful, RESULTS.shooting_diverged)
    result = RESULTS.where(collapsed, RESULTS.period_collapsed, result)
    result = RESULTS.where(integrated, result, RESULTS.shooting_integration_failed)
    result = RESULTS.where(relax_result == RESULTS.successful, result, relax_result)
    return PeriodicOrbit(
        x0=x_star,
        period=T,
        multipliers=mu,
        trivial_index=trivial,
        monodromy=M,
        xs=xs,
        residual=closure,
        period_guess=period_guess,
        result=result,
        num_steps=num_steps,
    )


def find_periodic_orbit(
    flow: AbstractFlow,
    x0: StateLike,
    period_guess: RealScalarLike | None = None,
    *,
    n_segments: int = 1,
    args: Args = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 100,
    root_finder: optx.AbstractRootFinder
    | optx.AbstractLeastSquaresSolver
    | None = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    ode_max_steps: int = 2**14,
    n_save: int = 201,
    max_period: RealScalarLike = 1e3,
    max_returns: int = 200,
    throw: bool = True,
) -> PeriodicOrbit:
    r"""Find a periodic orbit of an autonomous flow by (multiple) shooting.

    With `m = n_segments` nodes `X_0, ..., X_{m-1}` and the period `T` as unknowns,
    solves

    $$\phi_{T/m}(X_i) - X_{i+1 \bmod m} = 0, \qquad (X_0 - c) \cdot f(c) = 0,$$

    where the last (phase) condition pins `X_0` to the hyperplane through the cut
    point `c` orthogonal to the flow, removing the freedom to slide along the
    orbit. The cut is the guess `x0`, unless `x0` lies on a stretch of the guessed
    trajectory (`x0` integrated over `T_guess`) more than four times as fast, in
    arc length within `+-T_guess/8`, as its quietest stretch, which is then the
    cut: cut inside a fast stretch (the jump of a relaxation oscillation), the
    closure is a near-step function of the period that no local method can
    follow. The
    nodes start on the guessed trajectory from the cut, `T_guess / m` apart.
    Differences of states are wrapped on periodic coordinates
    (`dynjax.state_difference`), so an orbit that winds around an angle closes.
    The period is `T = T_guess exp(s)` with `s` the unknown, so it stays positive.

    The solve is globalized: `optimistix.LevenbergMarquardt` (a trust-region
    Gauss-Newton method, with Jacobians by forward-mode differentiation through
    `diffrax.diffeqsolve`) converges from guesses where plain Newton diverges or
    collapses onto an equilibrium. `jax.jvp` differentiates the orbit by the
    implicit function theorem at the root (with a pseudo-inverse, so a family of
    orbits of a conservative system gives the least-norm derivative). `m > 1`
    (multiple shooting) keeps each integration short, which helps for unstable
    orbits.

    Without `period_guess`, a stable cycle is found from any point of its basin:
    the trajectory from `x0` is followed through successive returns to the
    hyperplane through the current point orthogonal to the flow (located with the
    crossing detector of `dynjax.poincare_section`) until two return times agree
    to `1e-6` (or `max_returns` returns); the last return point and time are the
    guess.

    The Floquet multipliers are the eigenvalues of the monodromy matrix
    `M = D phi_T(x*)` (computed with `jax.jacfwd` through the solve, i.e. the
    variational equation); one of them, the trivial multiplier, equals 1
    (eigenvector `f(x*)`), and by Liouville's formula their product is
    `exp(int_0^T tr Df(x(t)) dt)`.

    **Arguments:**

    - `flow`: an autonomous dynjax flow.
    - `x0`: a guess of a point on the orbit, shape `(d,)`; without a period
        guess, any point in the basin of a stable cycle.
    - `period_guess`: a guess of the period (positive), or `None` to estimate it
        by relaxing onto a stable cycle.
    - `n_segments`: the number of shooting segments (1: single shooting).
    - `args`: run-time arguments.
    - `rtol`, `atol`: tolerances of the shooting solve; default `1e-9` in
        float64, `1e-4` in float32.
    - `max_steps`: iteration budget of the globalized solve.
    - `root_finder`: the solver of the shooting system: any
        `optimistix.AbstractRootFinder` or `optimistix.AbstractLeastSquaresSolver`
        (default `optimistix.LevenbergMarquardt(rtol, atol)`).
    - `solver`, `stepsize_controller`, `ode_max_steps`: the diffrax integration
        (default `Tsit5` with `PIDController(rtol=1e-11, atol=1e-12)` in float64).
        For very stiff cycles (relaxation oscillations, e.g. van der Pol with
        `mu` in the hundreds) pass an implicit solver with tolerances it can meet,
        e.g. `solver=diffrax.Kvaerno5()` and
        `stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10)`.
    - `n_save`: number of states saved over one period in `PeriodicOrbit.xs`.
    - `max_period`, `max_returns`: without a period guess, the longest time to
        wait for a return to the section, and the most returns followed.
    - `throw`: raise on failure; otherwise report it in `result`.

    **Returns:**

    A `dynjax.PeriodicOrbit`.

    **Raises:** `ValueError` at trace time for a map, a non-positive period guess,
    a state of the wrong shape, or a bad `n_segments` / `n_save`. At run time
    (`throw=True`), `equinox.EquinoxRuntimeError` naming the cause:
    `shooting_diverged` (no root reached: the solve stalled at a nonzero
    residual), `period_collapsed` (the period shrank towards 0 or the orbit onto
    an equilibrium), `shooting_integration_failed` (an integration over one
    period failed: stiffness or the step budget), or, without a period guess, the
    crossing search's `no_crossing` (no return within `max_period`).

    !!! Example

        ```python
        vdp = dynjax.systems.VanDerPol(mu=1.0)
        orbit = dynjax.find_periodic_orbit(vdp, jnp.array([2.0, 0.0]), 6.5)
        orbit.period  # 6.6633
        orbit = dynjax.find_periodic_orbit(vdp, jnp.array([0.1, 0.0]))  # no guess
        ```

    **References:** U. M. Ascher, R. M. M. Mattheij and R. D. Russell, *Numerical
    Solution of Boundary Value Problems for ODEs* (1995), Ch. 4 (multiple
    shooting); J. J. Moré, *The Levenberg-Marquardt algorithm: implementation and
    theory*, Lecture Notes in Math. 630 (1978); Yu. A. Kuznetsov, *Elements of
    Applied Bifurcation Theory*, 3rd ed. (2004), Section 1.5 (Floquet
    multipliers, Liouville's formula).
    """
    if not isinstance(flow, AbstractFlow):
        raise ValueError(
            "`find_periodic_orbit` takes a flow; periodic points of a map are "
            "`dynjax.find_equilibria(map, guesses, period=p)`."
        )
    if not isinstance(n_segments, int) or n_segments < 1:
        raise ValueError(f"`n_segments` must be a positive int, got {n_segments!r}.")
    if not isinstance(n_save, int) or n_save < 2:
        raise ValueError(f"`n_save` must be an int >= 2, got {n_save!r}.")
    if not isinstance(max_returns, int) or max_returns < 2:
        raise ValueError(f"`max_returns` must be an int >= 2, got {max_returns!r}.")
    flow, x0, args = conform(flow, x0, verb="find_periodic_orbit", args=args)
    if isinstance(period_guess, (int, float)) and not period_guess > 0:
        raise ValueError(
            f"`period_guess` must be positive, got {period_guess}; pass "
            "`period_guess=None` to estimate it from the returns of a stable cycle."
        )
    relaxed = period_guess is None
    if not relaxed:
        message = (
            "`period_guess` must be positive and finite; pass `period_guess=None` "
            "to estimate it from the returns of a stable cycle."
        )
        if isinstance(period_guess, jax.core.Tracer):
            period_guess = eqx.error_if(period_guess, ~(period_guess > 0), message)
        elif not (np.isfinite(np.asarray(period_guess)) and period_guess > 0):
            raise ValueError(message)
        period_guess = jnp.asarray(period_guess, dtype=x0.dtype)
    double = jnp.finfo(x0.dtype).bits >= 64
    rtol = (1e-9 if double else 1e-4) if rtol is None else rtol
    atol = (1e-9 if double else 1e-4) if atol is None else atol
    solver, stepsize_controller = _defaults(x0.dtype, solver, stepsize_controller)
    if relaxed:
        _prepare(solver, stepsize_controller)
    if root_finder is None:
        root_finder = optx.LevenbergMarquardt(rtol=rtol, atol=atol)
    orbit = _find_orbit(
        flow,
        x0,
        period_guess,
        n_segments,
        args,
        solver,
        root_finder,
        rtol,
        atol,
        stepsize_controller,
        ode_max_steps,
        max_steps,
        n_save,
        jnp.asarray(max_period, dtype=x0.dtype),
        max_returns,
    )
    if throw:

        def details(_):
            if relaxed and orbit.result == RESULTS.no_crossing:
                return (
                    "(With `period_guess=None`: the trajectory from `x0` did not "
                    "return to the hyperplane through its current point within "
                    "`max_period`, so no period could be estimated: it may settle "
                    "on an equilibrium, be chaotic, or wind around a periodic "
                    "coordinate. Pass a `period_guess`, or raise `max_period`.)"
                )
            where = (
                "the relaxation onto the attractor (`period_guess=None`, already "
                "in use) estimated"
                if relaxed
                else "from the guess"
            )
            return (
                f"(Period {float(orbit.period):.6g}; {where} "
                f"{float(orbit.period_guess):.6g}; closure residual "
                f"{float(orbit.residual):.3g} after {int(orbit.num_steps)} "
                "iterations."
                + (
                    " The cycle may be unstable or absent: give `x0` and "
                    "`period_guess` explicitly.)"
                    if relaxed
                    else ")"
                )
            )

        orbit = raise_if_failed(orbit.result, orbit, details)
    return orbit
