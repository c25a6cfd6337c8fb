import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from .._custom_types import Args, RealScalarLike
from .._results import RESULTS
from .._system._checks import conform
from ._linearize import _evolution


class Equilibria(eqx.Module):
    """Equilibria or fixed points returned by `dynjax.find_equilibria`.

    With `n` guesses, the first `count` rows of `points` are the distinct points
    found (in the order of the first guess that reached each); the remaining rows
    repeat the first point so that every array stays finite. Use `unique` outside
    `jit` to get just the distinct points.

    **Attributes:**

    - `points`: shape `(n, d)`, distinct points first.
    - `mask`: shape `(n,)`, `True` for the first `count` rows.
    - `count`: the number of distinct points.
    - `minimal_period`: shape `(n,)`, for maps the least `q` dividing `period` with
        `F^q(x) = x` (1 for flows).
    - `roots`: shape `(n, d)`, the end point of Newton's method from each guess.
    - `converged`: shape `(n,)`, whether each guess converged to a root.
    - `residuals`: shape `(n,)`, the max-norm of `f(root)` (flows) or
        `F^p(root) - root` (maps) per guess.
    - `index`: shape `(n,)`, the row of `points` each guess converged to (`-1` if
        it did not converge).
    - `results`: per-guess `dynjax.RESULTS` (`successful`, `not_converged`,
        `singular_jacobian`).
    - `result`: `successful` if some guess converged to a regular root; otherwise
        `singular_jacobian` if some converged to a degenerate one; otherwise
        `not_converged`.
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
        return lambda x, _: F(x) - x
    return lambda x, _: F(x)


def _dedup(roots, ok, tol):
    n = roots.shape[0]
    scale = 1.0 + jnp.max(jnp.abs(roots), axis=1)
    # Chunked pairwise distances would save memory; n^2 scalars is fine for n ~ 1e4.
    dist = jnp.max(jnp.abs(roots[:, None, :] - roots[None, :, :]), axis=-1)
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
    throw,
):
    fn = _residual_fn(system, t, args, period)

    def one(x0):
        sol = optx.root_find(fn, solver, x0, max_steps=max_steps, throw=False)
        x = sol.value
        r = fn(x, None)
        res = jnp.max(jnp.abs(r))
        ok = (sol.result == optx.RESULTS.successful) & jnp.all(jnp.isfinite(x))
        if matrix_free:
            singular = jnp.array(False)
        else:
            J = jax.jacfwd(lambda y: fn(y, None))(jnp.where(jnp.isfinite(x), x, 0.0))
            s = jnp.linalg.svd(J, compute_uv=False)
            singular = s[-1] <= singular_tol * jnp.maximum(s[0], 1.0)
        results = RESULTS.where(
            singular,
            RESULTS.singular_jacobian,
            RESULTS.where(ok, RESULTS.successful, RESULTS.not_converged),
        )
        return x, res, ok, singular, results, sol.stats["num_steps"]

    roots, residuals, ok, singular, results, num_steps = jax.vmap(one)(guesses)
    roots = jnp.where(jnp.isfinite(roots), roots, 0.0)
    residuals = jnp.where(jnp.isfinite(residuals), residuals, jnp.inf)
    points, mask, count, index, order = _dedup(roots, ok, dedup_tol)
    if period > 1:
        F, _ = _evolution(system, t, args, 1)

        def minimal(x):
            def body(carry, q):
                y, found = carry
                y = F(y)
                hit = (period % q == 0) & (
                    jnp.max(jnp.abs(y - x)) <= dedup_tol * (1 + jnp.max(jnp.abs(x)))
                )
                found = jnp.where((found == 0) & hit, q, found)
                return (y, found), None

            (_, found), _ = jax.lax.scan(
                body, (x, jnp.array(0)), jnp.arange(1, period + 1)
            )
            return jnp.where(found == 0, period, found)

        minimal_period = jax.vmap(minimal)(points)
    else:
        minimal_period = jnp.ones(points.shape[0], int)
    any_regular = jnp.any(ok & ~singular)
    any_singular = jnp.any(ok & singular) | jnp.any(singular)
    result = RESULTS.where(
        any_regular,
        RESULTS.successful,
        RESULTS.where(any_singular, RESULTS.singular_jacobian, RESULTS.not_converged),
    )
    if throw:
        points = result.error_if(points, result != RESULTS.successful)
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
        in `result`.

    **Returns:**

    A `dynjax.Equilibria`.

    !!! Example

        ```python
        lorenz = dynjax.systems.Lorenz()
        guesses = jax.random.uniform(key, (1000, 3), minval=-30, maxval=30)
        eq = dynjax.find_equilibria(lorenz, guesses)
        eq.unique  # the origin and C+-
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
    _evolution(system, t, args, period)  # structural checks
    system, _, args = conform(
        system, guesses[0], verb="find_equilibria", args=args, t=t, name="guesses[0]"
    )
    guesses = eqx.error_if(
        guesses,
        jnp.any(~jnp.isfinite(guesses)),
        "`guesses` contain non-finite values (NaN or inf); pass finite guesses.",
    )
    double = jnp.finfo(guesses.dtype).bits >= 64
    rtol = (1e-10 if double else 1e-4) if rtol is None else rtol
    atol = (1e-10 if double else 1e-4) if atol is None else atol
    matrix_free = linear_solver is not None and not isinstance(
        linear_solver, (lx.LU, lx.QR, lx.SVD, lx.AutoLinearSolver, lx.Cholesky)
    )
    if solver is None:
        lin = (
            lx.AutoLinearSolver(well_posed=None)
            if linear_solver is None
            else linear_solver
        )
        solver = optx.Newton(rtol=rtol, atol=atol, linear_solver=lin)
    elif linear_solver is not None:
        raise ValueError("Pass either `solver` or `linear_solver`, not both.")
    return _find(
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
        throw,
    )
