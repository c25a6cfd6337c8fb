"""Pseudo-arclength continuation of the solution curve of `F(z) = 0`, `F: R^{m+1}
-> R^m`, as one compiled loop (Keller 1977; Kuznetsov 2004, section 10.2)."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int


class ArclengthOptions(eqx.Module):
    """Step control of the continuation (all in units of arclength in `z`)."""

    ds: float
    ds_min: float
    ds_max: float
    n_points: int = eqx.field(static=True)
    max_newton: int = eqx.field(static=True)
    rtol: float
    atol: float
    lower: float  # bounds on the last coordinate (the parameter)
    upper: float


def augmented_jacobian(F, z, t, args) -> Float[Array, "m+1 m+1"]:
    """`[F_z(z); t^T]`: square, and nonsingular at regular points and folds."""
    Fz = jax.jacfwd(F)(z, args)
    return jnp.concatenate([Fz, t[None, :]], axis=0)


def tangent(F, z, t_prev, args) -> Float[Array, " m+1"]:
    """The unit tangent at `z`, oriented along `t_prev`: `[F_z; t_prev^T] t = e`."""
    A = augmented_jacobian(F, z, t_prev, args)
    e = jnp.zeros(z.shape[0], z.dtype).at[-1].set(1.0)
    t = jnp.linalg.solve(A, e)
    return t / jnp.linalg.norm(t)


def initial_tangent(F, z, args, sign) -> Float[Array, " m+1"]:
    """The null vector of `F_z` (its last right singular vector), with the sign of
    its last (parameter) component equal to `sign` (or its first nonzero one)."""
    Fz = jax.jacfwd(F)(z, args)
    _, _, vt = jnp.linalg.svd(Fz, full_matrices=True)
    t = vt[-1]
    ref = jnp.where(jnp.abs(t[-1]) > 1e-12, t[-1], t[jnp.argmax(jnp.abs(t))])
    return t * jnp.where(ref * sign >= 0, 1.0, -1.0)


def correct(F, z_pred, t, args, opts: ArclengthOptions):
    """Newton's method on `[F(z); t . (z - z_pred)] = 0` (optimistix): the point of
    the curve on the hyperplane through the prediction orthogonal to `t`.
    Returns `(z, converged, n_steps)`."""

    def G(z, a):
        return jnp.concatenate([F(z, a), jnp.dot(t, z - z_pred)[None]])

    solver = optx.Newton(rtol=opts.rtol, atol=opts.atol, linear_solver=lx.LU())
    sol = optx.root_find(
        G, solver, z_pred, args, max_steps=opts.max_newton, throw=False
    )
    ok = (sol.result == optx.RESULTS.successful) & jnp.all(jnp.isfinite(sol.value))
    return sol.value, ok, sol.stats["num_steps"]


class ArclengthBranch(eqx.Module):
    """The raw output of `arclength`: `n` accepted points of `N` slots."""

    zs: Float[Array, "N m+1"]
    tangents: Float[Array, "N m+1"]
    n: Int[Array, ""]
    stopped: Int[Array, ""]  # 0 bounds/points reached, 1 step size collapsed


def arclength(
    F: Callable, z0: Float[Array, " m+1"], t0: Float[Array, " m+1"], args,
    opts: ArclengthOptions, update: Callable | None = None,
) -> ArclengthBranch:  # fmt: skip
    """Continue from the corrected point `z0` with unit tangent `t0`, storing up to
    `opts.n_points` points (the first is `z0`). Adaptive step: doubled (to
    `ds_max`) after a correction in at most 3 Newton steps, halved after a failed
    or too distant correction, stop below `ds_min`; a step past a bound on the
    parameter is followed by one correction at `p = bound`, the last point.

    `update(args, z)`, if given, returns the `args` to use from the accepted point
    `z` on (e.g. a phase condition's reference moved to the last point); the
    tangent at `z` is computed with them, so `t0` should be computed with
    `update(args, z0)`, which is the `args` of the first step."""
    N = opts.n_points
    dtype = z0.dtype
    zs = jnp.full((N, z0.shape[0]), jnp.nan, dtype).at[0].set(z0)
    ts = jnp.full((N, z0.shape[0]), jnp.nan, dtype).at[0].set(t0)
    # With `update`, the array leaves of `args` travel in the loop's carry.
    if update is not None:
        args = update(args, z0)
        dynamic, static = eqx.partition(args, eqx.is_array)
    else:
        dynamic, static = None, args

    e_p = jnp.zeros_like(z0).at[-1].set(1.0)

    def cond(carry):
        i, _, _, h, _, _, stopped, _, _ = carry
        return (i < N) & (stopped < 0)

    def body(carry):
        i, z, t, h, zs, ts, stopped, dyn, land = carry
        a = static if update is None else eqx.combine(dyn, static)
        # After a step past a bound, one last correction on the hyperplane
        # `p = bound` from the interpolated point lands the branch on the bound.
        landing = jnp.all(jnp.isfinite(land))
        z_pred = jnp.where(landing, land, z + h * t)
        z_new, ok, steps = correct(F, z_pred, jnp.where(landing, e_p, t), a, opts)
        z_new = jnp.where(landing, z_new.at[-1].set(land[-1]), z_new)  # (exact)
        a_new = a if update is None else update(a, z_new)
        t_new = tangent(F, z_new, t, a_new)
        # Reject a correction that went far from the prediction or turned
        # sharply (it jumped to another part of the curve).
        ok = ok & (jnp.linalg.norm(z_new - z_pred) < 0.5 * h + 10 * opts.atol)
        ok = ok & (jnp.dot(t_new, t) > 0.5)
        p = z_new[-1]
        slack = 10 * opts.atol
        inside = (p >= opts.lower - slack) & (p <= opts.upper + slack)
        accept = ok & inside
        zs = jnp.where(accept, zs.at[i].set(z_new), zs)
        ts = jnp.where(accept, ts.at[i].set(t_new), ts)
        grow = jnp.where(steps <= 3, 2.0, 1.0)
        h_next = jnp.where(ok, jnp.minimum(h * grow, opts.ds_max), h / 2)
        bound = jnp.where(p > opts.upper, opts.upper, opts.lower)
        frac = (bound - z[-1]) / (p - z[-1])
        land = jnp.where(~landing & ok & ~inside, z + frac * (z_new - z), jnp.nan)
        stopped = jnp.where(landing, 0, stopped)
        stopped = jnp.where(~landing & ~ok & (h / 2 < opts.ds_min), 1, stopped)
        i = i + accept.astype(i.dtype)
        z = jnp.where(accept, z_new, z)
        t = jnp.where(accept, t_new, t)
        if update is not None:
            dyn_new = eqx.filter(a_new, eqx.is_array)
            dyn = jax.tree.map(lambda u, v: jnp.where(accept, u, v), dyn_new, dyn)
        return i, z, t, h_next, zs, ts, stopped, dyn, land

    h0 = jnp.asarray(opts.ds, dtype)
    no_land = jnp.full_like(z0, jnp.nan)
    init = (jnp.array(1), z0, t0, h0, zs, ts, jnp.array(-1), dynamic, no_land)
    i, _, _, _, zs, ts, stopped, _, _ = jax.lax.while_loop(cond, body, init)
    return ArclengthBranch(zs, ts, i, jnp.maximum(stopped, 0))


def sign_changes(values: Float[Array, " N"], n: Int[Array, ""]) -> Bool[Array, " N-1"]:
    """`True` at `k` where `values[k]` and `values[k+1]` (both among the first `n`)
    have strictly opposite signs."""
    k = jnp.arange(values.shape[0] - 1)
    valid = k + 1 < n
    return valid & (jnp.sign(values[:-1]) * jnp.sign(values[1:]) < 0)
