"""Fixed and slow points of a recurrent network at a constant input.

Sussillo & Barak (2013) open the black box of a trained recurrent network by
finding the points where its state barely moves at a constant input, and
linearizing the network there. FixedPointFinder (Golub & Sussillo 2018) made the
recipe standard: sample initial states from the network's own trajectories,
minimize the speed from all of them at once, keep the slow ones, drop duplicates
and far-away outliers, and classify each by the eigenvalues of its Jacobian.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Complex, Float, Int, PRNGKeyArray

from .._custom_types import Args, Input
from .._equilibria._linearize import _classify, _growth, Stability
from .._evolve import Trajectory
from .._results import raise_if_failed, RESULTS
from .._system import AbstractDrivenMap
from .._system._checks import cast_floats, check_finite, conform
from .._system._coordinates import state_difference
from .._system._jacobian import dense_jacobian, differentiation_mode


_TRUST_REGION = (
    optx.LevenbergMarquardt,
    optx.IndirectLevenbergMarquardt,
    optx.Dogleg,
)
_STABILITY_ITEMS = (
    Stability.stable_node,
    Stability.unstable_node,
    Stability.stable_focus,
    Stability.unstable_focus,
    Stability.saddle,
    Stability.saddle_focus,
    Stability.center,
    Stability.non_hyperbolic,
)


class SlowPoints(eqx.Module):
    """Fixed and slow points returned by `dynjax.find_slow_points`.

    With `n` guesses, the first `count` rows of the per-point arrays (`points`,
    `q`, `jacobians`, ...) are the distinct points kept, sorted by increasing
    `q`; the remaining rows repeat the first kept point so that every array stays
    finite under `jit`. Outside `jit`, `unique` and `stability_names` give just
    the kept points.

    **Attributes (per kept point; shape `(n, ...)`, valid where `mask`):**

    - `points`: the points `h*`, shape `(n, d)`, in the state's units.
    - `q`: the speed `q(h*) = |F(h*, u) - h*|^2 / 2`, shape `(n,)`, in squared
        state units per step squared.
    - `guess_index`: the guess each point was reached from, shape `(n,)`.
    - `jacobians`: `DF(h*, u)` (with respect to the state), shape `(n, d, d)`.
    - `eigenvalues`: complex, shape `(n, d)`, sorted by decreasing modulus.
    - `eigenvectors`: complex, shape `(n, d, d)`; column `i` of `[k]` belongs to
        `eigenvalues[k, i]`.
    - `stability`: a batched `dynjax.Stability` item, shape `(n,)`, relative to
        the unit circle (`stable node`/`stable focus`: every `|lambda| < 1`;
        `saddle`/`saddle-focus`: some inside, some outside; ...); see
        `dynjax.linearize`.
    - `n_unstable`: the number of eigenvalues with `|lambda| > 1` (the unstable
        directions; a saddle between two attractors typically has one), shape
        `(n,)`.
    - `n_center`: the number on the unit circle (within `stability_tol`).
    - `is_stable`: kept and every `|lambda| < 1`, shape `(n,)`.
    - `mask`: `True` for the first `count` rows.

    **Attributes (per guess and totals):**

    - `count`: the number of points kept.
    - `optimized`: the end point of the minimization from each guess, shape
        `(n, d)` (non-finite end points replaced by 0).
    - `optimized_q`: `q` at each end point, shape `(n,)` (`inf` if non-finite).
    - `index`: the row of `points` each guess ended at (its duplicate's
        representative for a merged one), or `-1` if it was rejected as too fast
        or as an outlier; shape `(n,)`.
    - `n_too_fast`: guesses whose end point has `q > tol` (or is not finite).
    - `n_outliers`: slow end points farther than `outlier_scale` times the
        guesses' mean distance from their centroid.
    - `n_duplicates`: slow, non-outlying end points within `dedup_tol` of a
        slower one. `count + n_too_fast + n_outliers + n_duplicates = n`.
    - `num_steps`: the optimizer's iterations per guess, shape `(n,)`.
    - `result`: `RESULTS.successful` if some point was kept, else
        `RESULTS.not_converged`.
    """

    points: Float[Array, "n d"]
    q: Float[Array, " n"]
    guess_index: Int[Array, " n"]
    jacobians: Float[Array, "n d d"]
    eigenvalues: Complex[Array, "n d"]
    eigenvectors: Complex[Array, "n d d"]
    stability: Stability
    n_unstable: Int[Array, " n"]
    n_center: Int[Array, " n"]
    is_stable: Bool[Array, " n"]
    mask: Bool[Array, " n"]
    count: Int[Array, ""]
    optimized: Float[Array, "n d"]
    optimized_q: Float[Array, " n"]
    index: Int[Array, " n"]
    n_too_fast: Int[Array, ""]
    n_outliers: Int[Array, ""]
    n_duplicates: Int[Array, ""]
    num_steps: Int[Array, " n"]
    result: RESULTS

    @property
    def unique(self) -> np.ndarray:
        """The kept points, shape `(count, d)`, as a NumPy array (outside `jit`)."""
        return np.asarray(self.points)[: int(self.count)]

    @property
    def stability_names(self) -> list[str]:
        """The stability class of each kept point, as strings (outside `jit`)."""
        is_item = [np.asarray(self.stability == item) for item in _STABILITY_ITEMS]
        names = []
        for k in range(int(self.count)):
            i = next(i for i, hit in enumerate(is_item) if hit[k])
            names.append(Stability[_STABILITY_ITEMS[i]])
        return names


def _speed_fn(cell, u, args):
    def residual(h, _):
        # Wrapped on periodic coordinates (if the cell declares any).
        return state_difference(cell, cell.step(h, u, args), h)

    return residual


def _dedup(cell, points, candidate, q, tol):
    """Greedy deduplication in order of increasing `q`: a candidate is kept unless
    a kept point lies within `tol` (max-norm); a merged one points to the first
    kept point within `tol`. Returns `(keep, rep)` in the original order, `rep[i]`
    being the guess index of the representative (or -1). Distances are wrapped on
    periodic coordinates (`dynjax.state_difference`)."""
    n = points.shape[0]
    order = jnp.argsort(jnp.where(candidate, q, jnp.inf), stable=True)

    def body(i, carry):
        keep, rep = carry
        j = order[i]
        # (One row of distances per step: memory O(n d), not O(n^2 d).)
        gap = state_difference(cell, points, points[j])
        close = jnp.max(jnp.abs(gap), axis=1) <= tol
        near_kept = keep & close
        is_new = candidate[j] & ~jnp.any(near_kept)
        first = jnp.argmax(near_kept[order])  # the slowest kept point close by
        rep_j = jnp.where(candidate[j], jnp.where(is_new, j, order[first]), -1).astype(
            rep.dtype
        )
        return keep.at[j].set(is_new), rep.at[j].set(rep_j)

    keep0 = jnp.zeros(n, bool)
    rep0 = jnp.full(n, -1, dtype=jnp.int32)
    return jax.lax.fori_loop(0, n, body, (keep0, rep0))


@eqx.filter_jit
def _find_slow(
    cell, u, guesses, args, solver, max_steps, tol, dedup_tol, outlier_scale,
    stability_tol,
):  # fmt: skip
    fn = _speed_fn(cell, u, args)
    mode = differentiation_mode(
        lambda h: fn(h, None), guesses[0], what="dynjax.find_slow_points"
    )
    reverse = mode == "reverse" and isinstance(solver, optx.AbstractGaussNewton)
    options = dict(jac="bwd") if reverse else {}

    def one(h0):
        sol = optx.least_squares(
            fn, solver, h0, max_steps=max_steps, throw=False, options=options
        )
        h = sol.value
        finite = jnp.all(jnp.isfinite(h))
        h = jnp.where(finite, h, 0.0)
        q = 0.5 * jnp.sum(fn(h, None) ** 2)
        q = jnp.where(finite & jnp.isfinite(q), q, jnp.inf)
        return h, q, sol.stats["num_steps"]

    ends, qs, num_steps = jax.vmap(one)(guesses)
    n = guesses.shape[0]
    slow = qs <= tol
    # FixedPointFinder's distance outliers: the distance from the guesses'
    # centroid, in units of the guesses' mean distance from it (`outlier_scale`
    # is `inf` for "keep all").
    centroid = jnp.mean(guesses, axis=0)
    spread = jnp.mean(jnp.linalg.norm(guesses - centroid, axis=1))
    distance = jnp.linalg.norm(ends - centroid, axis=1)
    inside = (spread == 0) | jnp.isinf(outlier_scale)
    inside = inside | (distance <= outlier_scale * spread)
    candidate = slow & inside
    keep, rep = _dedup(cell, ends, candidate, qs, dedup_tol)
    count = jnp.sum(keep)

    # Kept points first, by increasing q; the remaining rows repeat the first.
    order = jnp.argsort(jnp.where(keep, qs, jnp.inf), stable=True)
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    index = jnp.where(rep >= 0, rank[jnp.maximum(rep, 0)], -1)
    mask = jnp.arange(n) < count
    guess_index = jnp.where(mask, order, order[0])
    points = ends[guess_index]
    q = qs[guess_index]

    def linearize(h):
        J = dense_jacobian(
            lambda y: cell.step(y, u, args), h, "dynjax.find_slow_points"
        )
        lam, V = jnp.linalg.eig(J)
        sort = jnp.argsort(-_growth(lam, True), stable=True)
        lam, V = lam[sort], V[:, sort]
        stability, _, n_u, n_c = _classify(lam, True, stability_tol)
        return J, lam, V, stability, n_u, n_c

    J, lam, V, stability, n_u, n_c = jax.vmap(linearize)(points)
    result = RESULTS.where(count > 0, RESULTS.successful, RESULTS.not_converged)
    return SlowPoints(
        points=points,
        q=q,
        guess_index=guess_index,
        jacobians=J,
        eigenvalues=lam,
        eigenvectors=V,
        stability=stability,
        n_unstable=n_u,
        n_center=n_c,
        is_stable=mask & (n_u == 0) & (n_c == 0),
        mask=mask,
        count=count,
        optimized=ends,
        optimized_q=qs,
        index=index,
        n_too_fast=jnp.sum(~slow),
        n_outliers=jnp.sum(slow & ~inside),
        n_duplicates=jnp.sum(candidate) - count,
        num_steps=num_steps,
        result=result,
    )


def _failure_details(sp: SlowPoints, tol, max_steps) -> str:
    qs = np.asarray(sp.optimized_q)
    n_outliers = int(sp.n_outliers)
    if n_outliers:
        return (
            f"{n_outliers} of {qs.shape[0]} guesses reached a point with q <= tol = "
            f"{tol:.3g}, but every one of them lies farther than `outlier_scale` "
            "times the guesses' mean distance from their centroid. Pass a larger "
            "`outlier_scale` (or `None`) to keep them, or guesses that cover them."
        )
    if not np.isfinite(qs).any():
        return (
            "The minimization of q(h) = |F(h, u) - h|^2 / 2 ended at a non-finite "
            "state from every guess; check the cell's weights and the input `u`."
        )
    i = int(np.argmin(qs))
    return (
        f"No guess reached q <= tol = {tol:.3g}: the smallest q was {qs[i]:.3g}, "
        f"from guess {i}. The network may have only slow points (not fixed points) "
        f"at this input: raise `tol` to keep them; or raise `max_steps` (now "
        f"{max_steps}), or give more guesses (`dynjax.sample_guesses`)."
    )


def _check_input(cell, u) -> None:
    if u is None:
        raise ValueError(
            "`find_slow_points` needs the constant input `u` at which to look for "
            "slow points: one step's input, e.g. `jnp.zeros(m)` for 'no input'."
        )
    input_size = getattr(cell, "input_size", None)
    if isinstance(input_size, int) and getattr(cell, "vocab_size", None) is None:
        shape = jnp.shape(u)
        if shape != (input_size,):
            raise ValueError(
                f"`u` must be one step's input, of shape ({input_size},) (the "
                f"cell's input_size), got shape {shape}. `find_slow_points` holds "
                "the input constant; pass e.g. `jnp.zeros(input_size)`, or one row "
                "`inputs[t]` of an input sequence."
            )


def find_slow_points(
    cell: AbstractDrivenMap,
    u: Input,
    guesses: Float[Array, "n d"],
    *,
    args: Args = None,
    tol: float | None = None,
    dedup_tol: float = 1e-3,
    outlier_scale: float | None = 10.0,
    max_steps: int = 256,
    rtol: float | None = None,
    atol: float | None = None,
    solver: optx.AbstractLeastSquaresSolver | optx.AbstractMinimiser | None = None,
    stability_tol: float = 1e-8,
    throw: bool = True,
) -> SlowPoints:
    r"""Find the fixed and slow points of a recurrent network at a constant input.

    For a driven map `h_{t+1} = F(h_t, u_{t+1})` held at a constant input `u`,
    the speed of a state `h` is

    $$q(h) = \tfrac12 \lVert F(h, u) - h \rVert^2 ,$$

    zero at fixed points and small at slow points (Sussillo & Barak 2013, for
    maps). From every guess, in one compiled `vmap`ped call, `q` is minimized
    by Levenberg-Marquardt on the residual `r(h) = F(h, u) - h`
    (`optimistix.LevenbergMarquardt`): a least-squares problem whose zero
    residual at a fixed point makes its Gauss-Newton steps converge
    quadratically there (like Newton's method on `r = 0`), while the damping
    keeps every step a descent step on `q`, so guesses far from any fixed
    point still end at a local minimum of `q`: a slow point. (First-order
    minimization of `q`, FixedPointFinder's Adam, or BFGS on `q`, work with
    the condition number of `J^T J`, the square of that of `J`; pass
    `solver=optx.BFGS(...)` to use a minimizer instead.)

    Then, as in FixedPointFinder (Golub & Sussillo 2018):

    1. end points with `q > tol` are rejected (`n_too_fast`);
    2. outliers are rejected (`n_outliers`): end points farther from the
        guesses' centroid than `outlier_scale` times the guesses' mean
        (Euclidean) distance from it;
    3. duplicates are merged (`n_duplicates`): in order of increasing `q`, a
        point within `dedup_tol` (max-norm, in state units) of a point already
        kept is merged into it;
    4. each kept point is linearized: the Jacobian `DF(h*, u)` with respect to
        the state (`jax.jacfwd`, or `jax.jacrev` where forward mode cannot go
        through the cell), its eigenvalues (`jnp.linalg.eig`), and the class
        relative to the unit circle (`dynjax.Stability`, as in
        `dynjax.linearize` for maps): stable if every `|lambda| < 1`, a saddle
        with `n_unstable` directions if some `|lambda| > 1`.

    **Arguments:**

    - `cell`: a driven map (`dynjax.rnn.VanillaRNN`, `GRU`, `LSTM`, `Cell`, a
        `dynjax.DrivenMap`). The state is the whole state (`concat(h, c)` for an
        LSTM).
    - `u`: the constant input, one step's input (shape `(m,)` for a cell with
        vector inputs, e.g. `jnp.zeros(m)`; a token id for a cell with a
        vocabulary).
    - `guesses`: initial states, shape `(n, d)`; e.g.
        `dynjax.sample_guesses(trajectory.xs, n, key, noise=...)`.
    - `args`: run-time arguments of the cell.
    - `tol`: the largest `q` kept (squared state units per step squared);
        default `1e-12` in float64 (FixedPointFinder's default) and `1e-8` in
        float32. Raise it to keep slow points that are not fixed points.
    - `dedup_tol`: the max-norm distance under which two points are one
        (default `1e-3` state units, FixedPointFinder's `tol_unique`).
    - `outlier_scale`: the outlier cutoff in units of the guesses' mean
        distance from their centroid (default 10, FixedPointFinder's
        `outlier_distance_scale`); `None` keeps outliers. With identical
        guesses (zero spread) nothing is an outlier.
    - `max_steps`: the optimizer's iteration budget per guess (a guess that
        runs out is judged by the `q` it reached).
    - `rtol`, `atol`: the optimizer's tolerances (ignored when `solver` is
        given); default `1e-10` in float64, `1e-5` in float32.
    - `solver`: any `optimistix.AbstractLeastSquaresSolver` (on the residual)
        or `optimistix.AbstractMinimiser` (on the sum of squares); default
        `optimistix.LevenbergMarquardt(rtol, atol)`, or `optimistix.BFGS(rtol,
        atol)` for a float32 state while `jax_enable_x64` is on (optimistix's
        trust-region solvers cannot run in that mix).
    - `stability_tol`: eigenvalues with `|log|lambda|| <= stability_tol` count
        as on the unit circle (`n_center`).
    - `throw`: raise if no point was kept; with `False` that is reported in
        `result`.

    **Returns:**

    A `dynjax.SlowPoints`.

    **Raises:**

    - `ValueError` (before compiling) if `cell` is not a driven map, `u` is
        missing or (for a cell with `input_size`) not of shape `(input_size,)`,
        `guesses` is not 2-D or its feature size is not the cell's state size
        `d`, a tolerance is not positive, or a trust-region `solver`
        (Levenberg-Marquardt, Dogleg) is given a float32 state under
        `jax_enable_x64`.
    - `equinox.EquinoxRuntimeError` (with `throw=True`) if no point was kept
        (the message gives the smallest `q` reached, or the number of outliers);
        also for non-finite guesses.

    !!! Example

        ```python
        sol = dynjax.trajectory(cell, jnp.zeros(cell.d), inputs=inputs)
        guesses = dynjax.sample_guesses(sol.xs, 512, key, noise=0.1)
        sp = dynjax.find_slow_points(cell, jnp.zeros(cell.input_size), guesses)
        sp.unique, sp.stability_names, sp.n_unstable[: sp.count]
        ```

    **References:** D. Sussillo and O. Barak, "Opening the black box:
    low-dimensional dynamics in high-dimensional recurrent neural networks",
    Neural Computation 25, 626-649 (2013); M. D. Golub and D. Sussillo,
    "FixedPointFinder: a Tensorflow toolbox for identifying and characterizing
    fixed points in recurrent neural networks", J. Open Source Softw. 3, 1003
    (2018); J. J. Moré, "The Levenberg-Marquardt algorithm: implementation and
    theory", Lecture Notes in Mathematics 630, 105-116 (1978).
    """
    if not isinstance(cell, AbstractDrivenMap):
        raise ValueError(
            f"`find_slow_points` takes a driven map (a recurrent cell), got "
            f"{type(cell).__name__}. For an autonomous flow or map use "
            "`dynjax.find_equilibria`."
        )
    _check_input(cell, u)
    guesses = jnp.asarray(guesses)
    if not jnp.issubdtype(guesses.dtype, jnp.inexact):
        guesses = guesses.astype(jnp.result_type(float))
    if guesses.ndim != 2 or guesses.shape[0] == 0:
        raise ValueError(
            f"`guesses` must have shape (n, d) with n >= 1, one initial state per "
            f"row; got shape {guesses.shape}. For one guess `h` pass `h[None]`; "
            "from trajectories use `dynjax.sample_guesses(xs, n, key)`."
        )
    if cell.d is not None and guesses.shape[1] != cell.d:
        raise ValueError(
            f"`guesses` have {guesses.shape[1]} features but the cell's state has "
            f"d={cell.d} (for an LSTM, d = 2 hidden_size: concat(h, c)). Pass "
            f"guesses of shape (n, {cell.d})."
        )
    for name, value in (("dedup_tol", dedup_tol), ("tol", tol)):
        if value is not None and not float(value) > 0:
            raise ValueError(f"`{name}` must be positive, got {value!r}.")
    if outlier_scale is not None and not float(outlier_scale) > 0:
        raise ValueError(
            f"`outlier_scale` must be positive or None, got {outlier_scale!r}."
        )
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
    dtype = guesses.dtype
    double = jnp.finfo(dtype).bits >= 64
    tol = (1e-12 if double else 1e-8) if tol is None else tol
    # optimistix's trust-region solvers (Levenberg-Marquardt, Dogleg) start their
    # step size in the default float dtype, so a float32 state under
    # `jax_enable_x64` mixes dtypes inside their linear solve.
    mixed = dtype != jnp.result_type(float)
    if solver is None:
        rtol = (1e-10 if double else 1e-5) if rtol is None else rtol
        atol = (1e-10 if double else 1e-5) if atol is None else atol
        if mixed:
            solver = optx.BFGS(rtol=rtol, atol=atol)
        else:
            solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol)
    elif mixed and isinstance(solver, _TRUST_REGION):
        raise ValueError(
            f"`solver={type(solver).__name__}(...)` cannot run on a {dtype} state "
            "while `jax_enable_x64` is on (optimistix starts its trust region in "
            "float64). Pass float64 guesses, or a line-search solver such as "
            "`optimistix.BFGS` (the default in this case)."
        )
    u, _ = cast_floats(jax.tree.map(jnp.asarray, u), dtype)
    cell, _, args = conform(
        cell, guesses[0], verb="find_slow_points", args=args, u=u, name="guesses[0]"
    )
    guesses = check_finite(
        guesses,
        "`guesses` contain non-finite values (NaN or inf); pass finite guesses.",
    )
    # Tolerances as arrays: a new value does not recompile.
    tols = [jnp.asarray(v, dtype) for v in (tol, dedup_tol, stability_tol)]
    scale = jnp.asarray(jnp.inf if outlier_scale is None else outlier_scale, dtype)
    sp = _find_slow(
        cell, u, guesses, args, solver, max_steps, *tols[:2], scale, tols[2],
    )  # fmt: skip
    if throw:
        points = raise_if_failed(
            sp.result, sp.points, lambda _: _failure_details(sp, tol, max_steps)
        )
        sp = eqx.tree_at(lambda s: s.points, sp, points)
    return sp


def sample_guesses(
    states,
    n: int,
    key: PRNGKeyArray,
    *,
    noise: float = 0.0,
) -> Float[Array, "n d"]:
    """Initial guesses for `find_slow_points`, sampled from visited states.

    Draws `n` states uniformly from `states` (without replacement when there are
    at least `n`, else with replacement) and adds independent Gaussian noise of
    standard deviation `noise` to every coordinate, as FixedPointFinder's
    `sample_states` does (Golub & Sussillo 2018): the network's fixed and slow
    points lie near the states its trajectories visit, and the noise lets the
    search also reach unstable points (saddles), which trajectories only pass by.

    **Arguments:**

    - `states`: visited states, an array of shape `(..., d)` (e.g. `(T, d)` from
        `dynjax.trajectory(cell, h0, inputs=...).xs`, or `(batch, T, d)` from a
        vmapped one), or a `dynjax.Trajectory`.
    - `n`: the number of guesses (a Python int).
    - `key`: a `jax.random` key.
    - `noise`: the standard deviation of the added noise, in state units
        (default 0; FixedPointFinder's examples use 0.1 to 0.5 for `tanh` units).

    **Returns:**

    The guesses, shape `(n, d)`, in the dtype of `states`.

    **Raises:** `ValueError` if `states` has no rows or is not at least 1-D with a
    feature axis, `n` is not a positive int, or `noise` is negative.

    **Reference:** M. D. Golub and D. Sussillo, "FixedPointFinder", J. Open
    Source Softw. 3, 1003 (2018).
    """
    if isinstance(states, Trajectory):
        states = states.xs
    states = jnp.asarray(states)
    if not jnp.issubdtype(states.dtype, jnp.inexact):
        states = states.astype(jnp.result_type(float))
    if states.ndim < 2 or states.shape[-1] == 0 or states.size == 0:
        raise ValueError(
            f"`states` must have shape (..., d) with at least one state, e.g. (T, d) "
            f"or (batch, T, d); got shape {states.shape}."
        )
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"`n` must be a positive Python int, got {n!r}.")
    if not isinstance(noise, jax.core.Tracer) and not float(noise) >= 0:
        raise ValueError(f"`noise` must be >= 0 (a standard deviation), got {noise!r}.")
    pool = states.reshape(-1, states.shape[-1])
    k_pick, k_noise = jr.split(key)
    rows = jr.choice(k_pick, pool.shape[0], (n,), replace=n > pool.shape[0])
    eps = jr.normal(k_noise, (n, pool.shape[1]), pool.dtype)
    return pool[rows] + jnp.asarray(noise, pool.dtype) * eps
