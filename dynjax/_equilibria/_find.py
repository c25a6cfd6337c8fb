import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from .._custom_types import Args, RealScalarLike
from .._results import raise_if_failed, RESULTS
from .._system._checks import check_finite, conform
from .._system._coordinates import _periods_array, state_difference
from .._system._jacobian import differentiation_mode
from ._linearize import _evolution


class Equilibria(eqx.Module):
    """Equilibria or fixed points returned by `dynjax.find_equilibria`.

    With `n` guesses, the first `count` rows of `points` are the distinct points
    found (in the order of the first guess that reached each); the remaining rows
    repeat the first point so that every array stays finite. Use `unique` outside
    `jit` to get just the distinct points.

    On periodic coordinates (`system.coordinate_periods`) `points` and `roots`
    are reduced into the fundamental domain `[0, P)`, and two roots that differ
    by a multiple of `P` are the same point. A point on the seam may come back as
    `0` or just below `P` (a root at `-1e-15` reduces to `P - 1e-15`): compare
    points with `dynjax.state_difference`.

    **Attributes:**

    - `points`: shape `(n, d)`, distinct points first.
    - `mask`: shape `(n,)`, `True` for the first `count` rows.
    - `count`: the number of distinct points.
    - `minimal_period`: shape `(n,)`, for maps the least `q` dividing `period` with
        `F^q(x) = x` (modulo the periods of periodic coordinates; 1 for flows).
    - `roots`: shape `(n, d)`, the end point of Newton's method from each guess
        (non-finite end points are replaced by 0; see `residuals`).
    - `converged`: shape `(n,)`, whether each guess converged to a root.
    - `residuals`: shape `(n,)`, the max-norm of `f(root)` (flows) or of the
        wrapped difference `dynjax.state_difference(system, F^p(root), root)`
        (maps) per guess; `inf` where Newton's end point is not finite.
    - `index`: shape `(n,)`, the row of `points` each guess converged to (`-1` if
        it did not converge).
    - `results`: per-guess `dynjax.RESULTS`: `successful` (converged to a regular
        root), `singular_jacobian` (converged to a degenerate root) or
        `not_converged`.
    - `result`: `successful` if some guess converged to a regular root; otherwise
        `singular_jacobian` if some converged to a degenerate one; otherwise
        `not_converged` (no guess converged; the smallest residual says how close
        the best one came).
    - `num_steps`: shape `(n,)`, Newton iterations per guess.
    """

    points: Float[Array, "n d"]
    mask: Bool[Array, " n"]
    count: Int[Array, ""]
    minimal_period: Int[Array, " n"]
    roots: Float[Array, "n d"]
    converged: Bool[Array, " n"]
    residuals: Float[Array, " n"]
    index: Int[Array, " n"]
    results: RESULTS
    result: RESULTS
    num_steps: Int[Array, " n"]

    @property
    def unique(self) -> np.ndarray:
        """The distinct points, shape `(count, d)`, as a NumPy array (outside `jit`)."""
        return np.asarray(self.points)[: int(self.count)]


def _residual_fn(system, t, args, period):
    F, is_map = _evolution(system, t, args, period)
    if is_map:
        # Wrapped on periodic coordinates, so that `F^p(x) = x + m P` is a root. The
        # wrap is a locally constant shift (`jnp.round` has a zero derivative), so
        # Newton's Jacobian is that of `F^p(x) - x`.
        return lambda x, _: state_difference(system, F(x), x)
    return lambda x, _: F(x)


def _reduce(system, x):
    """`x` reduced into `[0, P)` on periodic coordinates (unchanged elsewhere)."""
    periods = _periods_array(system, x.shape[-1], x.dtype)
    if periods is None:
        return x
    safe = jnp.where(periods > 0, periods, 1.0)
    reduced = jnp.mod(x, safe)
    # `mod(-1e-17, P)` rounds to `P`.
    reduced = jnp.where(reduced >= safe, reduced - safe, reduced)
    return jnp.where(periods > 0, reduced, x)


def _dedup(system, roots, ok, tol):
    n = roots.shape[0]
    scale = 1.0 + jnp.max(jnp.abs(roots), axis=1)
    # Chunked pairwise distances would save memory; n^2 scalars is fine for n ~ 1e4.
    diff = state_difference(system, roots[:, None, :], roots[None, :, :])
    dist = jnp.max(jnp.abs(diff), axis=-1)
    close = (dist <= tol * jnp.maximum(scale[:, None], scale[None, :])) & ok[None, :]
    earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)
    # The representative of i is the first converged j (j <= i) close to it.
    first = jnp.argmax(close | ~ok[:, None] & jnp.eye(n, dtype=bool), axis=1)
    is_rep = ok & ~jnp.any(close & earlier, axis=1)
    count = jnp.sum(is_rep)
    order = jnp.argsort(~is_rep, stable=True)  # representatives first
    rank = jnp.zeros(n, int).at[order].set(jnp.arange(n))
    index = jnp.where(ok, rank[first], -1)
    points = roots[order]
    fill = jnp.where(count > 0, points[0], jnp.zeros_like(points[0]))
    mask = jnp.arange(n) < count
    points = jnp.where(mask[:, None], points, fill)
    return points, mask, count, index, order


@eqx.filter_jit
def _find(
    system,
    guesses,
    t,
    args,
    period,
    solver,
    max_steps,
    dedup_tol,
    singular_tol,
    matrix_free,
    linear_solver,
    rtol,
    atol,
):
    fn = _residual_fn(system, t, args, period)
    # A system that forward mode cannot go through (a `jax.custom_vjp`) is
    # solved by Levenberg-Marquardt with reverse-mode Jacobians (optimistix's
    # Newton only linearizes in forward mode). Decided here, at trace time.
    mode = differentiation_mode(
        lambda x: fn(x, None), guesses[0], what="dynjax.find_equilibria"
    )
    if solver is None:
        lin = (
            lx.AutoLinearSolver(well_posed=None)
            if linear_solver is None
            else linear_solver
        )
        if mode == "reverse":
            solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol, linear_solver=lin)
        else:
            solver = optx.Newton(rtol=rtol, atol=atol, linear_solver=lin)
    options = dict(jac="bwd") if mode == "reverse" else {}
    jac = jax.jacrev if mode == "reverse" else jax.jacfwd

    def one(x0):
        sol = optx.root_find(
            fn, solver, x0, max_steps=max_steps, throw=False, options=options
        )
        x = sol.value
        r = fn(x, None)
        res = jnp.max(jnp.abs(r))
        ok = (
            (sol.result == optx.RESULTS.successful)
            & jnp.all(jnp.isfinite(x))
            & jnp.isfinite(res)
        )
        if matrix_free:
            singular = jnp.array(False)
        else:
            J = jac(lambda y: fn(y, None))(jnp.where(jnp.isfinite(x), x, 0.0))
            s = jnp.linalg.svd(J, compute_uv=False)
            singular = s[-1] <= singular_tol * jnp.maximum(s[0], 1.0)
        # Degeneracy is a property of a root: only a converged guess can have it.
        singular = ok & singular
        results = RESULTS.where(
            ok,
            RESULTS.where(singular, RESULTS.singular_jacobian, RESULTS.successful),
            RESULTS.not_converged,
        )
        return x, res, ok, singular, results, sol.stats["num_steps"]

    roots, residuals, ok, singular, results, num_steps = jax.vmap(one)(guesses)
    roots = _reduce(system, jnp.where(jnp.isfinite(roots), roots, 0.0))
    residuals = jnp.where(jnp.isfinite(residuals), residuals, jnp.inf)
    points, mask, count, index, order = _dedup(system, roots, ok, dedup_tol)
    if period > 1:
        F, _ = _evolution(system, t, args, 1)

        def minimal(x):
            def body(carry, q):
                y, found = carry
                y = F(y)
                gap = jnp.max(jnp.abs(state_difference(system, y, x)))
                hit = (period % q == 0) & (gap <= dedup_tol * (1 + jnp.max(jnp.abs(x))))
                found = jnp.where((found == 0) & hit, q, found)
                return (y, found), None

            (_, found), _ = jax.lax.scan(
                body, (x, jnp.array(0)), jnp.arange(1, period + 1)
            )
            return jnp.where(found == 0, period, found)

        minimal_period = jax.vmap(minimal)(points)
    else:
        minimal_period = jnp.ones(points.shape[0], int)
    result = RESULTS.where(
        jnp.any(ok & ~singular),
        RESULTS.successful,
        RESULTS.where(
            jnp.any(singular), RESULTS.singular_jacobian, RESULTS.not_converged
        ),
    )
    return Equilibria(
        points=points,
        mask=mask,
        count=count,
        minimal_period=minimal_period,
        roots=roots,
        converged=ok,
        residuals=residuals,
        index=index,
        results=results,
        result=result,
        num_steps=num_steps,
    )


def _failure_details(eq: Equilibria, system, is_map, period, max_steps) -> str:
    """What went wrong, from concrete values (called only on failure, outside jit)."""
    residuals = np.asarray(eq.residuals)
    roots = np.asarray(eq.roots)
    converged = np.asarray(eq.converged)
    n = residuals.shape[0]
    g, what = "f(x)", "an equilibrium"
    if is_map:
        g = "F(x) - x" if period == 1 else f"F^{period}(x) - x"
        what = "a fixed point" if period == 1 else f"a period-{period} point"
    if converged.any():
        i = int(np.flatnonzero(converged)[0])
        return (
            f"{int(converged.sum())} of {n} guesses converged, all to degenerate "
            f"roots (e.g. x = {np.array2string(roots[i], precision=6)} from guess "
            f"{i}). Give guesses near other roots, or check the parameters: a "
            "degenerate root is a bifurcation point or lies on a continuum of roots."
        )
    if not np.isfinite(residuals).any():
        return (
            f"No guess converged to {what}: Newton's method diverged to a "
            f"non-finite value from {'the' if n == 1 else f'all {n}'} "
            f"guess{'' if n == 1 else 'es'}. Give guesses "
            f"closer to {what}, or check the system for overflow."
        )
    i = int(np.argmin(residuals))
    hint = (
        f"Try more or better-spread guesses or a larger `max_steps` (now "
        f"{max_steps}), or check that {what} exists for these parameters."
    )
    if is_map and system.coordinate_periods is None:
        hint += (
            " If some coordinates are angles, declare `coordinate_periods` on the "
            "system so that `F^p(x) = x` is solved modulo the period (orbits that "
            "wind around the circle)."
        )
    return (
        f"No guess converged to {what}: the smallest residual "
        f"|{g}| = {residuals[i]:.3g} was reached from guess {i} (ending at "
        f"x = {np.array2string(roots[i], precision=6)}). {hint}"
    )


def find_equilibria(
    system,
    guesses: Float[Array, "n d"],
    *,
    period: int = 1,
    t: RealScalarLike = 0.0,
    args: Args = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 100,
    solver: optx.AbstractRootFinder | None = None,
    linear_solver: lx.AbstractLinearSolver | None = None,
    dedup_tol: float = 1e-6,
    singular_tol: float = 1e-7,
    throw: bool = True,
) -> Equilibria:
    r"""Find equilibria of a flow, fixed points or period-`p` points of a map.

    Solves `g(x) = 0` from every guess with Newton's method (`optimistix.Newton`),
    all guesses in one compiled, `vmap`ped call, where

    - flows: `g(x) = f(t, x)` (equilibria);
    - maps: `g(x) = F^p(x) - x` (fixed points for `p = 1`, period-`p` points;
      these include points of every period dividing `p`, see `minimal_period`).

    **Periodic coordinates.** If the system declares `coordinate_periods` (angle
    coordinates living on a circle of circumference `P`), a map's residual is the
    wrapped difference `g(x) = dynjax.state_difference(system, F^p(x), x)`, whose
    periodic components lie in `[-P/2, P/2)`. So points near the seam `0 = P`
    converge, and on a lift (a map that does not reduce its output modulo `P`)
    the winding orbits `F^p(x) = x + m P` (integer `m`) are period-`p` points.
    The wrap is a locally constant shift, so Newton's Jacobian (and the
    singularity check, and gradients through the root) are those of
    `F^p(x) - x`. Deduplication and `minimal_period` compare points with the
    wrapped difference, for flows too, and the returned `points` and `roots`
    are reduced into the fundamental domain `[0, P)` on periodic coordinates.

    A guess has converged when optimistix reports success (Cauchy termination:
    both the Newton step and `|g|` below tolerance) and the root is finite.
    Converged roots closer than `dedup_tol` (relative max-norm) are merged. A
    root where the Jacobian of `g` is numerically singular
    (`sigma_min <= singular_tol * max(sigma_max, 1)`) is flagged
    `singular_jacobian`: it is degenerate (a bifurcation point, or a non-isolated
    root), Newton converges only linearly to it and it cannot be certified.

    In high dimension pass a Krylov solver, e.g.
    `linear_solver=lineax.GMRES(rtol=1e-10, atol=1e-10)`: Newton then only uses
    Jacobian-vector products (`jax.linearize`), never a dense `d x d` Jacobian
    (FixedPointFinder-style, Golub & Sussillo 2018), and the singularity check is
    skipped.

    **Arguments:**

    - `system`: a dynjax flow or map.
    - `guesses`: initial guesses, shape `(n, d)` (one guess: `x[None]`).
    - `period`: for maps, look for points of period `p` (`F^p(x) = x`).
    - `t`: time (flows) or iteration index (maps) at which `f`/`F` is evaluated.
    - `args`: run-time arguments passed to the system.
    - `rtol`, `atol`: Newton's tolerances (ignored when `solver` is given);
        default `1e-10` in float64, `1e-4` in float32.
    - `max_steps`: the Newton iteration budget per guess.
    - `solver`: any `optimistix.AbstractRootFinder` (default `optimistix.Newton`).
    - `linear_solver`: the lineax solver inside Newton (default: dense LU).
    - `dedup_tol`: relative distance under which two roots are the same point.
    - `singular_tol`: relative smallest singular value under which the Jacobian
        is singular.
    - `throw`: raise if no guess converged to a regular root; otherwise report it
        in `result`. Called outside `jit`, the error says how close the best guess
        came (the smallest residual and the guess it came from); under `jit` or
        `vmap` it carries the `result`'s message only.

    **Returns:**

    A `dynjax.Equilibria`.

    **Raises:**

    - `ValueError` for `guesses` of the wrong shape, a non-positive `period`, a
        `period` for a flow, a driven map, or both `solver` and `linear_solver`.
    - `equinox.EquinoxRuntimeError` (with `throw=True`) if no guess converged
        (`not_converged`, with the smallest residual and its guess) or every
        converged root is degenerate (`singular_jacobian`); also for non-finite
        `guesses`.

    !!! Example

        ```python
        lorenz = dynjax.systems.Lorenz()
        guesses = jax.random.uniform(key, (1000, 3), minval=-30, maxval=30)
        eq = dynjax.find_equilibria(lorenz, guesses)
        eq.unique  # the origin and C+-

        # The standard map on the torus: period-3 points, winding orbits included.
        grid = jnp.stack(jnp.meshgrid(*2 * [jnp.linspace(0, 2 * jnp.pi, 30)]), -1)
        eq = dynjax.find_equilibria(
            dynjax.systems.StandardMap(), grid.reshape(-1, 2), period=3
        )
        eq.unique  # 14 points in [0, 2 pi)^2: 2 fixed points, 4 orbits of period 3
        ```

    **References:** D. Sussillo and O. Barak, "Opening the black box:
    low-dimensional dynamics in high-dimensional recurrent neural networks",
    Neural Comput. 25, 626-649 (2013); M. D. Golub and D. Sussillo,
    "FixedPointFinder", J. Open Source Softw. 3, 1003 (2018); C. T. Kelley,
    *Solving Nonlinear Equations with Newton's Method*, SIAM (2003).
    """
    guesses = jnp.asarray(guesses)
    if not jnp.issubdtype(guesses.dtype, jnp.inexact):
        guesses = guesses.astype(jnp.result_type(float))
    if guesses.ndim != 2:
        raise ValueError(
            f"`guesses` must have shape (n, d), one guess per row; got shape "
            f"{guesses.shape}. For a single guess `x` pass `x[None]`."
        )
    if system.d is not None and guesses.shape[1] != system.d:
        raise ValueError(
            f"`guesses` have dimension {guesses.shape[1]} but the system has d="
            f"{system.d}. Pass guesses of shape (n, {system.d})."
        )
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"`period` must be a positive int, got {period!r}.")
    _, is_map = _evolution(system, t, args, period)  # structural checks
    system, _, args = conform(
        system, guesses[0], verb="find_equilibria", args=args, t=t, name="guesses[0]"
    )
    guesses = check_finite(
        guesses,
        "`guesses` contain non-finite values (NaN or inf); pass finite guesses.",
    )
    double = jnp.finfo(guesses.dtype).bits >= 64
    rtol = (1e-10 if double else 1e-4) if rtol is None else rtol
    atol = (1e-10 if double else 1e-4) if atol is None else atol
    matrix_free = linear_solver is not None and not isinstance(
        linear_solver, (lx.LU, lx.QR, lx.SVD, lx.AutoLinearSolver, lx.Cholesky)
    )
    if solver is not None and linear_solver is not None:
        raise ValueError("Pass either `solver` or `linear_solver`, not both.")
    eq = _find(
        system,
        guesses,
        t,
        args,
        period,
        solver,
        max_steps,
        dedup_tol,
        singular_tol,
        matrix_free,
        linear_solver,
        rtol,
        atol,
    )
    if throw:
        points = raise_if_failed(
            eq.result,
            eq.points,
            lambda _: _failure_details(eq, system, is_map, period, max_steps),
        )
        eq = eqx.tree_at(lambda e: e.points, eq, points)
    return eq
