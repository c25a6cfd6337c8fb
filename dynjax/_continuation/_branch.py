"""`dynjax.continuation`: branches of equilibria (flows) and fixed or period-p points
(maps) in one parameter, with their codimension-one bifurcations."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Complex, Float, Int

from .._custom_types import Args, StateLike
from .._results import raise_if_failed, RESULTS
from .._system._base import AbstractFlow, AbstractMap, AbstractSystem
from .._system._checks import conform
from ._arclength import (
    arclength,
    ArclengthBranch,
    ArclengthOptions,
    augmented_jacobian,
    correct,
    initial_tangent,
    sign_changes,
    tangent,
)


# Kinds of bifurcation points, by index. Codimension one on branches of equilibria
# / fixed points (the first five; on branches of cycles "fold", "branch_point",
# "flip" and "neimark_sacker" refer to the multipliers of the cycle), then the
# codimension-two points found on curves of codimension-one points.
_NAMES = (
    "fold",
    "branch_point",
    "hopf",
    "flip",
    "neimark_sacker",
    "cusp",
    "bogdanov_takens",
    "bautin",
    "zero_hopf",
)


class Bifurcations(eqx.Module):
    """The bifurcation points located on a `dynjax.Branch` (`K` slots, the first
    `n` used, in order along the branch).

    **Attributes:**

    - `kind`: shape `(K,)`, an index into `("fold", "branch_point", "hopf",
        "flip", "neimark_sacker", "cusp", "bogdanov_takens", "bautin",
        "zero_hopf")`, `-1` in unused slots; `names` gives strings. On a branch
        of periodic orbits "fold", "branch_point", "flip" (period doubling) and
        "neimark_sacker" (torus) refer to the cycle's Floquet multipliers.
    - `parameter`: shape `(K,)`, the parameter value.
    - `state`: shape `(K, d)`, the equilibrium or fixed point there.
    - `frequency`: shape `(K,)`: Hopf, the angular frequency `omega` of the
        crossing pair `+-i omega`; Neimark-Sacker, the angle `theta` of the
        multipliers `exp(+-i theta)`; `NaN` otherwise.
    - `lyapunov_coefficient`: shape `(K,)`, the first Lyapunov coefficient `l1`
        of a Hopf point (negative: supercritical, a stable cycle is born;
        positive: subcritical), normalized as in
        `dynjax.first_lyapunov_coefficient`; `NaN` otherwise. Not differentiated:
        its gradient is zero (it needs eigenvector derivatives; use finite
        differences); `parameter`, `state` and `frequency` are differentiable.
    - `index`: shape `(K,)`, the point lies between branch points `index` and
        `index + 1`.
    - `converged`: shape `(K,)`, whether the defining system was solved.
    - `n`: the number of points found.
    """

    kind: Int[Array, " K"]
    parameter: Float[Array, " K"]
    state: Float[Array, "K d"]
    frequency: Float[Array, " K"]
    lyapunov_coefficient: Float[Array, " K"]
    index: Int[Array, " K"]
    converged: Bool[Array, " K"]
    n: Int[Array, ""]

    @property
    def names(self) -> list[str]:
        """The kinds of the `n` points found, as strings."""
        return [_NAMES[int(k)] for k in np.asarray(self.kind)[: int(self.n)]]


class Branch(eqx.Module):
    """A branch of equilibria or fixed points returned by `dynjax.continuation`.

    **Attributes:**

    - `parameter`: shape `(N,)`, the parameter along the branch, `NaN` beyond
        `n_points`.
    - `states`: shape `(N, d)`.
    - `eigenvalues`: shape `(N, d)`, complex: of the Jacobian (flows) or the
        multipliers of the period-`p` map (maps), sorted by decreasing real part
        (flows) or modulus (maps).
    - `stable`: shape `(N,)`: all `Re lambda < 0` (flows) or `|mu| < 1` (maps).
    - `n_unstable`: shape `(N,)`, the number of unstable eigenvalues.
    - `n_points`: the number of points on the branch.
    - `bifurcations`: a `dynjax.Bifurcations`.
    - `result`: `RESULTS.successful`, or why the branch ended early.
    - `period`: for maps, the period `p` of the points (`G^p(x) = x`); 1 for flows.
    """

    parameter: Float[Array, " N"]
    states: Float[Array, "N d"]
    tangents: Float[Array, "N d+1"]
    eigenvalues: Complex[Array, "N d"]
    stable: Bool[Array, " N"]
    n_unstable: Int[Array, " N"]
    n_points: Int[Array, ""]
    bifurcations: Bifurcations
    result: RESULTS
    period: int = eqx.field(static=True, default=1)


# --- the problem F(x, p) = 0 ------------------------------------------------------


class _Field(eqx.Module):
    """Selects a field by name; compares by the name, so that a verb called again
    with the same parameter name reuses its compilation (a lambda would not)."""

    name: str = eqx.field(static=True)

    def __call__(self, system):
        return getattr(system, self.name)


def _where(parameter) -> Callable:
    if isinstance(parameter, str):
        return _Field(parameter)
    if callable(parameter):
        return parameter
    raise ValueError(
        "`parameter` must be the name of a field of the system (e.g. 'rho') or a "
        f"function selecting it (`lambda s: s.rho`), got {parameter!r}."
    )


def floats_as_arrays(tree, dtype):
    """Python `float` fields (e.g. `mu: float = 0.0` in a user's system) as arrays:
    a compiled verb then reuses its compilation for other values, as it does for
    array fields."""
    return jax.tree.map(
        lambda leaf: jnp.asarray(leaf, dtype) if type(leaf) is float else leaf, tree
    )


def scalar_parameter(system, parameter) -> Callable:
    """The selector of `parameter` (a field name or a function), checked to pick a
    scalar float leaf of `system`; `ValueError` saying what is wrong otherwise."""
    where = _where(parameter)
    try:
        leaf = where(system)
    except (AttributeError, KeyError) as e:
        raise ValueError(
            f"{type(system).__name__} has no parameter {parameter!r}: {e}"
        ) from None
    if not (eqx.is_array(leaf) or isinstance(leaf, float)) or jnp.shape(leaf) != ():
        raise ValueError(
            f"The parameter {parameter!r} must be a scalar float field, got {leaf!r}."
        )
    return where


class _Problem(eqx.Module):
    system: AbstractSystem
    where: Callable = eqx.field(static=True)
    period: int = eqx.field(static=True)
    args: Args

    @property
    def is_map(self) -> bool:
        return isinstance(self.system, AbstractMap)

    def at(self, p):
        return eqx.tree_at(self.where, self.system, p)

    def evolve(self, x, p):
        """The vector field (flows) or the `period`-fold map (maps)."""
        s = self.at(p)
        if not self.is_map:
            return s.vector_field(0.0, x, self.args)

        def body(y, n):
            return s.step(n, y, self.args), None

        return jax.lax.scan(body, x, jnp.arange(self.period))[0]

    def residual(self, z, system=None):
        prob = self if system is None else eqx.tree_at(lambda q: q.system, self, system)
        x, p = z[:-1], z[-1]
        out = prob.evolve(x, p)
        return out - x if prob.is_map else out

    def jacobian(self, x, p):
        """`Df` (flows) or `D(G^period)` (maps) at `(x, p)`."""
        return jax.jacfwd(lambda y: self.evolve(y, p))(x)


def _F(z, problem):
    return problem.residual(z)


def _sort(lam, is_map):
    key = jnp.abs(lam) if is_map else jnp.real(lam)
    return lam[jnp.argsort(-key)]


def _pair_product(lam, is_map):
    """`prod_{i<j} (l_i + l_j)` (flows) or `prod_{i<j} (l_i l_j - 1)` (maps): real,
    zero iff a pair sums to 0 (Hopf or neutral saddle) / multiplies to 1."""
    n = lam.shape[0]
    i, j = jnp.triu_indices(n, 1)
    terms = lam[i] * lam[j] - 1 if is_map else lam[i] + lam[j]
    # (Scaled to avoid overflow: only the sign is used.)
    terms = terms / jnp.maximum(jnp.abs(terms), 1e-300) ** 0.5 if n > 4 else terms
    return jnp.real(jnp.prod(terms))


def _test_functions(problem, z, t):
    """The five test functions at a point with tangent `t`: fold, branch point,
    Hopf, flip, Neimark-Sacker (NaN where not applicable)."""
    x, p = z[:-1], z[-1]
    J = problem.jacobian(x, p)
    lam = jnp.linalg.eigvals(J)
    nan = jnp.array(jnp.nan, z.dtype)
    fold = t[-1]
    bp = jnp.linalg.det(augmented_jacobian(_F, z, t, problem))
    if problem.is_map:
        flip = jnp.linalg.det(J + jnp.eye(J.shape[0], dtype=J.dtype))
        ns = _pair_product(lam, True)
        return jnp.stack([fold, bp, nan, flip, ns]), lam
    hopf = _pair_product(lam, False)
    return jnp.stack([fold, bp, hopf, nan, nan]), lam


# --- location ----------------------------------------------------------------------


def _bisect(problem, z, t, s_hi, which, opts, n_iter=60):
    """Bisection in the arclength `s` in `[0, s_hi]` on test function `which`,
    between the branch point `z` (tangent `t`) and the next one."""

    def psi(s):
        # (At a branch point itself the corrector's Jacobian is singular: where
        # the correction fails, the prediction is used, O(s^2) off the branch.)
        zc, ok, _ = correct(_F, z + s * t, t, problem, opts)
        zc = jnp.where(ok, zc, z + s * t)
        tc = tangent(_F, zc, t, problem)
        return _test_functions(problem, zc, tc)[0][which], zc

    f0 = psi(jnp.zeros((), z.dtype))[0]

    def body(_, carry):
        lo, hi, flo = carry
        mid = 0.5 * (lo + hi)
        fm = psi(mid)[0]
        same = jnp.sign(fm) == jnp.sign(flo)
        return (
            jnp.where(same, mid, lo),
            jnp.where(same, hi, mid),
            jnp.where(same, fm, flo),
        )

    lo, hi, _ = jax.lax.fori_loop(0, n_iter, body, (jnp.zeros_like(s_hi), s_hi, f0))
    return psi(0.5 * (lo + hi))[1]


def _stop(tree):
    """`stop_gradient` on the array leaves of `tree` (a system may hold functions)."""
    return jax.tree.map(
        lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, tree
    )


def _ift_step(G, w, system):
    """`w - pinv(G_w) G(w, system)` at a solution `w` of `G(w, system) = 0`: equal
    to `w` (to rounding), with the implicit-function derivative
    `dw/dsystem = -pinv(G_w) G_system` (least squares for an overdetermined `G`).
    The pseudo-inverse is finite where `G_w` is singular (an unused or failed
    slot), so no NaN leaks into the cotangents of the others."""
    w = jax.lax.stop_gradient(w)
    finite = jnp.all(jnp.isfinite(w))
    w = jnp.where(finite, w, 0.0)  # (NaN partials would poison every cotangent)
    Gw = jax.jacfwd(G)(w, _stop(system))
    Gw = jnp.where(jnp.all(jnp.isfinite(Gw)), Gw, 0.0)
    step = jnp.linalg.pinv(Gw) @ G(w, system)
    return jnp.where(finite & jnp.all(jnp.isfinite(step)), w - step, jnp.nan)


def _refine(problem, system, z, kind, opts):
    """Newton on the defining system of a fold / Hopf / flip / Neimark-Sacker
    point from the bisected `z` (differentiable in `system` by the implicit
    function theorem). Returns `(z, frequency, converged)`."""
    z = jax.lax.stop_gradient(z)
    x, p = z[:-1], z[-1]
    n = x.shape[0]
    J = problem.jacobian(x, p)
    lam, V = jnp.linalg.eig(J)
    solver = optx.Newton(rtol=opts.rtol, atol=opts.atol, linear_solver=lx.LU())
    dtype = z.dtype

    def jac_of(prob, y, q):
        return prob.jacobian(y, q)

    def with_system(a):
        return eqx.tree_at(lambda q: q.system, problem, a)

    if kind == "branch_point":
        # F = 0 and a left null vector phi of [F_x F_p]: overdetermined (a branch
        # point is of codimension two in general; it persists by symmetry), solved
        # by Levenberg-Marquardt from the bisected point.
        Fz = jax.jacfwd(_F)(z, problem)
        _, _, vt = jnp.linalg.svd(Fz.T, full_matrices=True)
        phi0 = vt[-1]

        def R(w, a):
            prob = with_system(a)
            zz, phi = w[: n + 1], w[n + 1 :]
            Jz = jax.jacfwd(lambda y: prob.residual(y))(zz)
            return jnp.concatenate(
                [prob.residual(zz), Jz.T @ phi, (jnp.dot(phi, phi) - 1.0)[None]]
            )

        lm = optx.LevenbergMarquardt(rtol=opts.rtol, atol=opts.atol)
        w0 = jax.lax.stop_gradient(jnp.concatenate([z, phi0]))
        system_ = _stop(system)
        sol = optx.least_squares(
            R, lm, w0, system_, max_steps=10 * opts.max_newton, throw=False
        )
        ok = (sol.result == optx.RESULTS.successful) & (
            jnp.linalg.norm(R(sol.value, system_)) < 1e3 * opts.atol
        )
        w = _ift_step(R, sol.value, system)
        return w[: n + 1], jnp.array(jnp.nan, dtype), ok

    if kind in ("fold", "flip"):
        target = 1.0 if kind == "fold" else -1.0
        i = (
            jnp.argmin(jnp.abs(lam - target))
            if problem.is_map
            else jnp.argmin(jnp.abs(lam))
        )
        v0 = jnp.real(V[:, i])
        v0 = v0 / jnp.linalg.norm(v0)
        shift = 0.0 if not problem.is_map else (-1.0 if kind == "fold" else 1.0)

        def G(w, a):
            prob = with_system(a)
            y, q, v = w[:n], w[n], w[n + 1 :]
            A = jac_of(prob, y, q) + shift * jnp.eye(n, dtype=dtype)
            return jnp.concatenate(
                [prob.residual(w[: n + 1]), A @ v, (jnp.dot(v0, v) - 1.0)[None]]
            )

        w0 = jax.lax.stop_gradient(jnp.concatenate([z, v0]))
        sol = optx.root_find(
            G,
            solver,
            w0,
            _stop(system),
            max_steps=opts.max_newton,
            throw=False,
        )
        ok = sol.result == optx.RESULTS.successful
        w = _ift_step(G, sol.value, system)
        return w[: n + 1], jnp.array(jnp.nan, dtype), ok

    # Hopf (flows: J v = i omega v) or Neimark-Sacker (maps: J v = e^{i theta} v).
    if kind == "hopf":
        i = jnp.argmin(jnp.where(jnp.imag(lam) > 0, jnp.abs(jnp.real(lam)), jnp.inf))
        freq0 = jnp.imag(lam[i])
    else:
        i = jnp.argmin(jnp.where(jnp.imag(lam) > 0, jnp.abs(jnp.abs(lam) - 1), jnp.inf))
        freq0 = jnp.angle(lam[i])
    v = V[:, i]
    c = jnp.real(v) / jnp.linalg.norm(jnp.real(v))
    v = v / jnp.dot(c, v)  # c . vr = 1, c . vi = 0
    w0 = jnp.concatenate([z, freq0[None], jnp.real(v), jnp.imag(v)])
    w0 = jax.lax.stop_gradient(w0)

    def G(w, a):
        prob = with_system(a)
        y, q, f = w[:n], w[n], w[n + 1]
        vr, vi = w[n + 2 : 2 * n + 2], w[2 * n + 2 :]
        A = jac_of(prob, y, q)
        if kind == "hopf":
            e1, e2 = A @ vr + f * vi, A @ vi - f * vr
        else:
            co, si = jnp.cos(f), jnp.sin(f)
            e1 = A @ vr - co * vr + si * vi
            e2 = A @ vi - si * vr - co * vi
        norm = jnp.stack([jnp.dot(c, vr) - 1.0, jnp.dot(c, vi)])
        return jnp.concatenate([prob.residual(w[: n + 1]), e1, e2, norm])

    sol = optx.root_find(
        G,
        solver,
        w0,
        _stop(system),
        max_steps=opts.max_newton,
        throw=False,
    )
    ok = sol.result == optx.RESULTS.successful
    w = _ift_step(G, sol.value, system)
    return w[: n + 1], jnp.abs(w[n + 1]), ok


def first_lyapunov_coefficient(f, x, omega) -> Float[Array, ""]:
    r"""The first Lyapunov coefficient of a Hopf point of `dx/dt = f(x)`.

    $$l_1 = \frac{1}{2\omega}\,\mathrm{Re}\big[\langle p, C(q,q,\bar q)\rangle
    - 2\langle p, B(q, A^{-1}B(q,\bar q))\rangle
    + \langle p, B(\bar q, (2i\omega I - A)^{-1}B(q,q))\rangle\big]$$

    with `A = Df(x)`, `A q = i omega q`, `A^T p = -i omega p`, normalized by
    `<q, q> = 1` and `<p, q> = 1` (`<a, b> = conj(a) . b`), and `B`, `C` the
    second and third derivatives of `f` (by nested `jax.jvp`). Kuznetsov,
    *Elements of Applied Bifurcation Theory* (3rd ed., 2004), eq. (3.20) and
    section 10.2; the normalization is MatCont's. Only the sign is independent
    of the normalization: with this one, the Hopf normal form
    `z' = (mu + i omega) z + c z |z|^2` (`z = x + i y`) has `l1 = 2 Re(c) / omega`,
    e.g. `-2 beta / omega` for `dynjax.systems.HopfNormalForm`.
    """
    A = jax.jacfwd(f)(x)
    n = x.shape[0]
    lam, V = jnp.linalg.eig(A)
    i = jnp.argmin(jnp.abs(lam - 1j * omega))
    q = V[:, i] / jnp.linalg.norm(V[:, i])
    lamT, W = jnp.linalg.eig(A.T)
    k = jnp.argmin(jnp.abs(lamT + 1j * omega))
    p = W[:, k]
    p = p / jnp.conj(jnp.vdot(p, q))  # <p, q> = conj(p) . q = 1

    def d2(a, b):
        return jax.jvp(lambda y: jax.jvp(f, (y,), (a,))[1], (x,), (b,))[1]

    def d3(a, b, c):
        def inner(y):
            return jax.jvp(lambda u: jax.jvp(f, (u,), (a,))[1], (y,), (b,))[1]

        return jax.jvp(inner, (x,), (c,))[1]

    def B(u, v):
        ur, ui, vr, vi = jnp.real(u), jnp.imag(u), jnp.real(v), jnp.imag(v)
        return d2(ur, vr) - d2(ui, vi) + 1j * (d2(ur, vi) + d2(ui, vr))

    def C(u, v, w):
        parts = [(jnp.real(a), jnp.imag(a)) for a in (u, v, w)]
        total = 0.0
        for ia, fa in enumerate((1.0, 1j)):
            for ib, fb in enumerate((1.0, 1j)):
                for ic, fc in enumerate((1.0, 1j)):
                    total = total + fa * fb * fc * d3(
                        parts[0][ia], parts[1][ib], parts[2][ic]
                    )
        return total

    qb = jnp.conj(q)
    eye = jnp.eye(n, dtype=A.dtype)
    h11 = jnp.linalg.solve(A.astype(q.dtype), B(q, qb))
    h20 = jnp.linalg.solve((2j * omega * eye - A).astype(q.dtype), B(q, q))
    val = (
        jnp.vdot(p, C(q, q, qb)) - 2 * jnp.vdot(p, B(q, h11)) + jnp.vdot(p, B(qb, h20))
    )
    return jnp.real(val) / (2 * omega)


# --- the verb ----------------------------------------------------------------------


def _combine(back, fwd):
    """One branch from the two half-branches: `back` reversed (its tangents turned
    round), then `fwd` without its first point (shared)."""
    N = back.zs.shape[0]
    j = jnp.arange(2 * N - 1)
    nb, nf = back.n, fwd.n
    from_back = j < nb - 1
    ib = jnp.clip(nb - 1 - j, 0, N - 1)
    jf = j - (nb - 1)
    from_fwd = (~from_back) & (jf < nf)
    iff = jnp.clip(jf, 0, N - 1)
    zs = jnp.where(
        from_back[:, None],
        back.zs[ib],
        jnp.where(from_fwd[:, None], fwd.zs[iff], jnp.nan),
    )
    ts = jnp.where(
        from_back[:, None],
        -back.tangents[ib],
        jnp.where(from_fwd[:, None], fwd.tangents[iff], jnp.nan),
    )
    return zs, ts, nb + nf - 1


def _start(problem, x0, p0, opts, sign):
    """Correct `x0` at fixed `p0`; the unit tangent there, and whether the point is
    regular (`[F_x F_p]` of full rank `d`, so the tangent is unique)."""
    solver = optx.Newton(rtol=opts.rtol, atol=opts.atol, linear_solver=lx.LU())
    start = optx.root_find(
        lambda x, a: a.residual(jnp.concatenate([x, p0[None]])),
        solver,
        x0,
        problem,
        max_steps=opts.max_newton,
        throw=False,
    )
    ok = start.result == optx.RESULTS.successful
    # (Newton fails where F_x is singular; a start that is already a solution is
    # kept, so that a singular start is reported as such.)
    z_given = jnp.concatenate([x0, p0[None]])
    solved = jnp.max(jnp.abs(_F(z_given, problem))) <= opts.atol
    x = jnp.where(ok | ~solved, start.value, x0)
    ok = ok | solved
    z0 = jnp.concatenate([x, p0[None]])
    t0 = initial_tangent(_F, z0, problem, sign)
    sv = jnp.linalg.svd(jax.jacfwd(_F)(z0, problem), compute_uv=False)
    eps = jnp.finfo(z0.dtype).eps
    regular = sv[-1] > 1e3 * eps * jnp.maximum(sv[0], 1.0)
    return z0, t0, ok, regular


def _switch_start(problem, z_b, t_other, opts):
    """Step `ds` off the branch point `z_b` along the other branch's tangent and
    correct there (Keller 1977)."""
    z_pred = z_b + opts.ds * t_other
    z0, ok, _ = correct(_F, z_pred, t_other, problem, opts)
    t0 = tangent(_F, z0, t_other, problem)
    return z0, t0, ok & jnp.all(jnp.isfinite(t0)), jnp.array(True)


@eqx.filter_jit
def _continuation(problem, x0, p0, opts, direction, max_bifurcations, switch=None):
    dtype = x0.dtype
    # Derivatives flow only through the final defining-system solves (implicit
    # function theorem); the loop, SVD and eig see a stop-gradient copy.
    grad_system = problem.system
    problem = _stop(problem)
    # (The start is a guess, corrected: the located points do not depend on it.)
    x0, p0 = jax.lax.stop_gradient((x0, p0))
    sign = 1.0 if direction != "backward" else -1.0
    if switch is None:
        z0, t0, start_ok, regular = _start(problem, x0, p0, opts, sign)
        fwd = arclength(_F, z0, t0, problem, opts)
        if direction == "both":
            back = arclength(_F, z0, -t0, problem, opts)
        else:
            back = eqx.tree_at(lambda b: b.n, fwd, jnp.array(1))
    else:
        # From a branch point `(x0, p0)`: `switch` is the other branch's tangent
        # there. Each direction starts one step off the branch point (a first
        # prediction onto the branch point itself could turn onto the known
        # branch), the backward start stored in front of its points.
        z_b = jnp.concatenate([x0, p0[None]])
        t_b = sign * switch
        z0, t0, start_ok, regular = _switch_start(problem, z_b, t_b, opts)
        fwd = arclength(_F, z0, t0, problem, opts)
        if direction == "both":
            zm, tm, ok_m, _ = _switch_start(problem, z_b, -t_b, opts)
            back = arclength(_F, zm, tm, problem, opts)
            start_ok = start_ok & ok_m
            N = back.zs.shape[0]
            back = ArclengthBranch(
                zs=jnp.concatenate([z0[None], back.zs[:-1]]),
                tangents=jnp.concatenate([-t0[None], back.tangents[:-1]]),
                n=jnp.minimum(back.n + 1, N),
                stopped=back.stopped,
            )
        else:
            back = eqx.tree_at(lambda b: b.n, fwd, jnp.array(1))
    zs, ts, n = _combine(back, fwd)
    zs = jax.lax.stop_gradient(zs)
    ts = jax.lax.stop_gradient(ts)
    N = zs.shape[0]
    valid = jnp.arange(N) < n
    safe_z = jnp.where(valid[:, None], zs, z0)
    safe_t = jnp.where(valid[:, None], ts, t0)
    psi, lam = jax.vmap(lambda z, t: _test_functions(problem, z, t))(safe_z, safe_t)
    lam = jax.vmap(lambda ev: _sort(ev, problem.is_map))(lam)
    if problem.is_map:
        unstable = jnp.sum(jnp.abs(lam) > 1, axis=1)
    else:
        unstable = jnp.sum(jnp.real(lam) > 0, axis=1)

    # Candidate intervals, per kind; a Hopf / NS candidate needs a complex pair
    # at the crossing (else it is a neutral saddle), a branch point is not a fold.
    changes = jax.vmap(lambda v: sign_changes(v, n), in_axes=1)(psi)  # (5, N-1)
    K = max_bifurcations
    flat = changes.reshape(-1)
    order = jnp.argsort(
        jnp.where(flat, jnp.tile(jnp.arange(N - 1), 5), 2 * N), stable=True
    )[:K]
    found = flat[order]
    kinds = order // (N - 1)
    index = order % (N - 1)

    def locate(kind, k):
        z, t = safe_z[k], safe_t[k]
        s_hi = jnp.dot(t, safe_z[k + 1] - z)
        return _bisect(problem, z, t, s_hi, kind, opts)

    located = jax.vmap(locate)(kinds, index)

    def refine_one(kind, z):
        branches = []
        for name in ("fold", "branch_point", "hopf", "flip", "neimark_sacker"):
            if (name in ("hopf",) and problem.is_map) or (
                name in ("flip", "neimark_sacker") and not problem.is_map
            ):
                branches.append(
                    lambda z: (z, jnp.array(jnp.nan, dtype), jnp.array(True))
                )
            else:
                branches.append(
                    lambda z, name=name: _refine(problem, grad_system, z, name, opts)
                )
        return jax.lax.switch(kind, branches, z)

    refined, freq, converged = jax.vmap(refine_one)(kinds, located)
    # (Where the defining system was not solved, the bisected point stands.)
    refined = jnp.where(converged[:, None], refined, located)
    # Hopf: keep only crossings of a complex pair; first Lyapunov coefficient.
    if not problem.is_map:

        def l1_of(z, w, kind):
            f = lambda x: problem.evolve(x, z[-1])  # noqa: E731
            return jax.lax.cond(
                (kind == 2) & (w > 1e-8),
                lambda: first_lyapunov_coefficient(f, z[:-1], w),
                lambda: jnp.array(jnp.nan, dtype),
            )

        # (Not differentiated: eig has no eigenvector derivatives.)
        l1 = jax.vmap(l1_of)(
            jax.lax.stop_gradient(refined),
            jax.lax.stop_gradient(jnp.nan_to_num(freq)),
            kinds,
        )
        real_pair = (kinds == 2) & ~(jnp.nan_to_num(freq) > 1e-8)
        found = found & ~real_pair
    else:
        l1 = jnp.full((K,), jnp.nan, dtype)
        real_pair = (kinds == 4) & ~(jnp.nan_to_num(freq) > 1e-8)
        found = found & ~real_pair
    # A branch through a pitchfork after switching turns in the parameter at the
    # branch point itself: a fold in the same step as a branch point is that
    # branch point.
    near = jnp.abs(index[:, None] - index[None, :]) <= 1
    at_bp = jnp.any(found[None, :] & (kinds[None, :] == 1) & near, axis=1)
    found = found & ~((kinds == 0) & at_bp)
    # Compact the found ones to the front.
    keep = jnp.argsort(~found, stable=True)
    nan = jnp.nan
    bif = Bifurcations(
        kind=jnp.where(found[keep], kinds[keep], -1),
        parameter=jnp.where(found[keep], refined[keep, -1], nan),
        state=jnp.where(found[keep][:, None], refined[keep, :-1], nan),
        frequency=jnp.where(found[keep], freq[keep], nan),
        lyapunov_coefficient=jnp.where(found[keep], l1[keep], nan),
        index=jnp.where(found[keep], index[keep], -1),
        converged=found[keep] & converged[keep],
        n=jnp.sum(found),
    )
    stopped_early = (fwd.stopped == 1) | (back.stopped == 1)
    result = RESULTS.where(
        ~start_ok,
        RESULTS.continuation_start_failed,
        RESULTS.where(
            ~regular,
            RESULTS.continuation_singular_start,
            RESULTS.where(
                stopped_early, RESULTS.continuation_step_collapsed, RESULTS.successful
            ),
        ),
    )
    return Branch(
        parameter=jnp.where(valid, zs[:, -1], jnp.nan),
        states=zs[:, :-1],
        tangents=ts,
        eigenvalues=jnp.where(valid[:, None], lam, jnp.nan),
        stable=valid & (unstable == 0),
        n_unstable=jnp.where(valid, unstable, -1),
        n_points=n,
        bifurcations=bif,
        result=result,
        period=problem.period,
    )


def continuation(
    system: AbstractSystem,
    parameter: str | Callable,
    x0: StateLike,
    p0: float,
    *,
    period: int = 1,
    ds: float = 1e-2,
    ds_min: float = 1e-8,
    ds_max: float = 0.1,
    p_min: float = -jnp.inf,
    p_max: float = jnp.inf,
    n_points: int = 200,
    direction: Literal["both", "forward", "backward"] = "both",
    max_bifurcations: int = 16,
    rtol: float | None = None,
    atol: float | None = None,
    max_newton: int = 20,
    args: Args = None,
    throw: bool = True,
) -> Branch:
    r"""Continue a branch of equilibria (flows) or fixed / period-`p` points (maps)
    in one parameter, and locate its bifurcations.

    Pseudo-arclength continuation of `F(x, p) = 0`, with `F = f(x; p)` for a flow
    and `F = G^period(x; p) - x` for a map: from the point `x0` corrected at `p0`,
    a tangent predictor `z + h t` (`z = (x, p)`) and a Newton corrector
    (optimistix) on `[F(z); t . (z - z_pred)] = 0`, so folds are passed through;
    the step `h` (arclength in `z`) adapts (doubled to `ds_max` after a quick
    correction, halved after a failed one). It runs as one compiled loop in both
    directions (`direction="both"`), up to `n_points` points each way, within
    `[p_min, p_max]`.

    Along the branch the test functions of Kuznetsov (2004, section 10.2) are
    evaluated at every point, and each sign change is located by bisection in
    arclength (every trial point corrected onto the branch), then refined by
    Newton's method on the defining system (differentiable in the system's
    parameters by the implicit function theorem):

    - fold: the tangent's parameter component (`F = 0, F_x v = 0, |v| = 1`);
    - branch point (transcritical / pitchfork): `det [F_z; t^T]`; refined by
        Levenberg-Marquardt on `F = 0, [F_x F_p]^T phi = 0, |phi| = 1`;
    - Hopf (flows): `prod_{i<j} (lambda_i + lambda_j)`, kept where a complex pair
        crosses (not a neutral saddle); defining system `F = 0, J v = i omega v`;
        with its first Lyapunov coefficient;
    - flip (maps): `det(J + I)`; Neimark-Sacker (maps):
        `prod_{i<j} (mu_i mu_j - 1)` with a complex pair on the unit circle.

    **Arguments:**

    - `system`: a dynjax flow or map (autonomous).
    - `parameter`: the name of a scalar field of `system` (`"rho"`), or a
        function selecting it (`lambda s: s.rho`), used with `eqx.tree_at`.
    - `x0`: a state near a point of the branch at `p0`, shape `(d,)`.
    - `p0`: the starting parameter value.
    - `period`: for maps, continue period-`period` points (`G^period(x) = x`).
    - `ds`, `ds_min`, `ds_max`: initial, smallest and largest step (arclength).
    - `p_min`, `p_max`: stop when the parameter leaves this interval.
    - `n_points`: points per direction (the branch has up to `2 n_points - 1`).
    - `direction`: `"both"`, `"forward"` (increasing parameter first) or
        `"backward"`.
    - `max_bifurcations`: slots for bifurcation points.
    - `rtol`, `atol`: Newton tolerances (default `1e-10, 1e-12` in float64,
        `1e-5, 1e-6` in float32; continuation is meant for float64: in float32
        the corrector often cannot reach them and the start fails).
    - `max_newton`: Newton steps per correction.
    - `args`: the system's run-time arguments.
    - `throw`: raise if the start does not converge or the step collapses.

    **Returns:**

    A `dynjax.Branch` (points, eigenvalues, stability, `bifurcations`).

    **Raises:**

    `ValueError` if `parameter` is not a scalar field, `period < 1`, a flow is
    given `period`, or `system` is a driven map; at run time (with `throw`,
    `equinox.EquinoxRuntimeError`) if `x0` is not near a point of the branch at
    `p0` (the message gives the residual at `x0`), if `(x0, p0)` is a singular point
    where branches cross (no unique tangent: start off it, or use
    `dynjax.switch_branch`), or if the step collapses.

    **References:** H. B. Keller, *Numerical solution of bifurcation and nonlinear
    eigenvalue problems* (1977); Yu. A. Kuznetsov, *Elements of Applied
    Bifurcation Theory*, 3rd ed. (Springer, 2004), chapter 10; W. Govaerts,
    *Numerical Methods for Bifurcations of Dynamical Equilibria* (SIAM, 2000).
    """
    problem, x0, opts = _prepare(
        system, parameter, x0, period, direction, ds, ds_min, ds_max, p_min, p_max,
        n_points, rtol, atol, max_newton, args, "continuation",
    )  # fmt: skip
    if isinstance(p0, (int, float)) and not p_min <= p0 <= p_max:
        raise ValueError(
            f"The start `p0 = {p0}` lies outside `[p_min, p_max] = [{p_min}, "
            f"{p_max}]`: the branch would end at its first point. Widen the bounds "
            "or start inside them."
        )
    p0 = jnp.asarray(p0, x0.dtype)
    branch = _continuation(problem, x0, p0, opts, direction, max_bifurcations)
    return _maybe_throw(branch, problem, x0, p0, throw, "continuation")


def _prepare(
    system, parameter, x0, period, direction, ds, ds_min, ds_max, p_min, p_max,
    n_points, rtol, atol, max_newton, args, verb,
):  # fmt: skip
    if not isinstance(system, (AbstractFlow, AbstractMap)):
        raise ValueError(
            f"`{verb}` takes a flow or a map; a driven map has no equilibria "
            "without fixing its input."
        )
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"`period` must be a positive int, got {period!r}.")
    if period != 1 and isinstance(system, AbstractFlow):
        raise ValueError("`period` is for maps; a flow's equilibria have none.")
    if direction not in ("both", "forward", "backward"):
        raise ValueError(
            f"`direction` must be 'both', 'forward' or 'backward', got {direction!r}."
        )
    where = scalar_parameter(system, parameter)
    system, x0, args = conform(system, x0, verb=verb, args=args)
    system = floats_as_arrays(system, x0.dtype)
    f64 = jnp.finfo(x0.dtype).bits >= 64
    # (Steps and bounds as arrays: another `p_max` or `ds_max` reuses the
    # compilation. The tolerances configure optimistix's solvers: static.)
    traced = lambda v: jnp.asarray(v, x0.dtype)  # noqa: E731
    opts = ArclengthOptions(
        ds=traced(ds),
        ds_min=traced(ds_min),
        ds_max=traced(ds_max),
        n_points=n_points,
        max_newton=max_newton,
        rtol=(1e-10 if f64 else 1e-5) if rtol is None else rtol,
        atol=(1e-12 if f64 else 1e-6) if atol is None else atol,
        lower=traced(p_min),
        upper=traced(p_max),
    )
    return _Problem(system, where, period, args), x0, opts


def _maybe_throw(branch, problem, x0, p0, throw, verb):
    if not throw:
        return branch

    def details(_):
        code = int(np.asarray(branch.result._value))
        if code == int(np.asarray(RESULTS.continuation_singular_start._value)):
            return ""
        if code == int(np.asarray(RESULTS.continuation_start_failed._value)) and (
            verb == "continuation"
        ):
            z = jnp.concatenate([x0, jnp.reshape(p0, (1,))])
            r = float(jnp.max(jnp.abs(problem.residual(z))))
            return (
                f"In `dynjax.continuation`: the residual max|F(x0, p0)| at the given "
                f"`x0` is {r:.3g} "
                f"({'f(x0)' if not problem.is_map else 'G^p(x0) - x0'}). Give an "
                "`x0` closer to an equilibrium / fixed point at `p0`, raise "
                "`max_newton`, or run in float64 (float32 tolerances are often out "
                "of reach for the corrector)."
            )
        if code == int(np.asarray(RESULTS.continuation_start_failed._value)):
            return (
                "In `dynjax.switch_branch`: the correction one step `ds` along the "
                "other branch failed. Lower `ds`, or raise `max_newton`."
            )
        return f"In `dynjax.{verb}`."

    return eqx.tree_at(
        lambda b: b.parameter,
        branch,
        raise_if_failed(branch.result, branch.parameter, details),
    )


# --- branch switching --------------------------------------------------------------


def _other_tangent(problem, z, t_known):
    """The tangent of the second branch through the branch point `z`: the roots of
    the algebraic branching equation `c11 a^2 + 2 c12 a b + c22 b^2 = 0`, with
    `c_ij = psi . F_zz[q_i, q_j]` on the null space `{q_1, q_2}` of `F_z` and
    `psi` its left null vector (Keller 1977; Seydel 2010, section 5.5); the root
    less parallel to the known branch's tangent `t_known`. Returns the tangent and
    the discriminant ratio (negative: no real second branch)."""
    Fz = jax.jacfwd(_F)(z, problem)
    u, _, vt = jnp.linalg.svd(Fz, full_matrices=True)
    q, psi = vt[-2:], u[:, -1]

    def d2(a, b):
        inner = lambda y: jax.jvp(lambda w: _F(w, problem), (y,), (a,))[1]  # noqa: E731
        return jax.jvp(inner, (z,), (b,))[1]

    C = jnp.stack([jnp.stack([psi @ d2(qi, qj) for qj in q]) for qi in q])
    C = 0.5 * (C + C.T)
    lam, U = jnp.linalg.eigh(C)  # v^T C v = 0 at v = U (sqrt|l1|, +-sqrt|l0|)
    a, b = jnp.sqrt(jnp.abs(lam[1])), jnp.sqrt(jnp.abs(lam[0]))
    roots = jnp.stack([U @ jnp.stack([a, b]), U @ jnp.stack([a, -b])]) @ q
    roots = roots / jnp.linalg.norm(roots, axis=1, keepdims=True)
    t = roots[jnp.argmin(jnp.abs(roots @ t_known))]
    ref = jnp.where(jnp.abs(t[-1]) > 1e-8, t[-1], t[jnp.argmax(jnp.abs(t))])
    t = t * jnp.where(ref >= 0, 1.0, -1.0)
    scale = jnp.maximum(jnp.max(jnp.abs(lam)), jnp.finfo(z.dtype).tiny)
    return t, lam[0] * lam[1] / scale**2


@eqx.filter_jit
def _switch(problem, z, t_known, opts, direction, max_bifurcations):
    t, disc = _other_tangent(_stop(problem), jax.lax.stop_gradient(z), t_known)
    branch = _continuation(
        problem, z[:-1], z[-1], opts, direction, max_bifurcations, switch=t
    )
    return branch, disc


def switch_branch(
    system: AbstractSystem,
    parameter: str | Callable,
    branch: Branch,
    k: int,
    *,
    ds: float = 1e-2,
    ds_min: float = 1e-8,
    ds_max: float = 0.1,
    p_min: float = -jnp.inf,
    p_max: float = jnp.inf,
    n_points: int = 200,
    direction: Literal["both", "forward", "backward"] = "both",
    max_bifurcations: int = 16,
    rtol: float | None = None,
    atol: float | None = None,
    max_newton: int = 20,
    args: Args = None,
    throw: bool = True,
) -> Branch:
    r"""Continue the other branch through a branch point, or the period-doubled
    branch born at a flip, of a branch computed by `dynjax.continuation`.

    At a branch point `z* = (x*, p*)` of `F(x, p) = 0` the Jacobian `F_z` has a
    two-dimensional null space `{q_1, q_2}`, and the tangents of the branches
    through `z*` are the roots `t = a q_1 + b q_2` of the algebraic branching
    equation `psi . F_zz[t, t] = 0` (`psi` the left null vector). The root less
    parallel to the known branch is taken, a step `ds` is made along it, corrected
    onto the new branch, and the new branch is continued as by
    `dynjax.continuation` (in both directions by default, so through the branch
    point: a pitchfork's two halves are one branch). At a flip (period-doubling)
    point of period-`p` points of a map the same construction is applied to
    `G^{2p}(x) - x = 0`, where the period-`p` branch and the period-`2p` branch
    cross: the result is a branch of period-`2p` points (`Branch.period == 2p`).

    **Arguments:**

    - `system`, `parameter`, `args`: as given to `dynjax.continuation` for
        `branch`.
    - `branch`: a `dynjax.Branch` from `dynjax.continuation` (or from this
        function).
    - `k`: the index of the bifurcation point in `branch.bifurcations` (see
        `branch.bifurcations.names`); a `"branch_point"` or a `"flip"`.
    - `ds`: the first step off the branch point (arclength), and the initial step
        of the continuation; the remaining keywords are those of
        `dynjax.continuation`.

    **Returns:**

    A `dynjax.Branch` of the new branch, with its own bifurcation points (the
    branch point itself is found again on it).

    **Raises:**

    `ValueError` if `k` is not a located branch point or flip of `branch`, or the
    branching equation has no real second root there (an isolated point); at run
    time (`equinox.EquinoxRuntimeError`, with `throw`) if the correction after the
    first step fails (lower `ds`).

    **References:** H. B. Keller, *Numerical solution of bifurcation and nonlinear
    eigenvalue problems* (1977); R. Seydel, *Practical Bifurcation and Stability
    Analysis*, 3rd ed. (Springer, 2010), section 5.5; Yu. A. Kuznetsov, *Elements
    of Applied Bifurcation Theory*, 3rd ed. (2004), section 10.2.3.
    """
    bif = branch.bifurcations
    n = int(bif.n)
    if not isinstance(k, (int, np.integer)) or not 0 <= k < n:
        raise ValueError(
            f"`k` must index one of the {n} bifurcation points of the branch "
            f"({bif.names}), got {k!r}."
        )
    name = bif.names[k]
    if name not in ("branch_point", "flip"):
        hint = {
            "fold": "a fold has one branch through it: `dynjax.continuation` passes it",
            "hopf": "the periodic orbits born at a Hopf point are continued by "
            "`dynjax.cycle_continuation`",
        }.get(name, "")
        raise ValueError(
            f"`switch_branch` starts from a 'branch_point' or a 'flip'; point {k} "
            f"is a {name!r}" + (f" ({hint})." if hint else ".")
        )
    if not bool(bif.converged[k]):
        raise ValueError(
            f"Bifurcation point {k} was not located to full accuracy (its defining "
            "system did not converge); continue the branch with a smaller `ds_max` "
            "and try again."
        )
    period = branch.period * (2 if name == "flip" else 1)
    z = jnp.concatenate([bif.state[k], bif.parameter[k][None]])
    problem, x, opts = _prepare(
        system, parameter, z[:-1], period, direction, ds, ds_min, ds_max, p_min,
        p_max, n_points, rtol, atol, max_newton, args, "switch_branch",
    )  # fmt: skip
    z = jnp.concatenate([x, z[-1:].astype(x.dtype)])
    t_known = branch.tangents[int(bif.index[k])].astype(x.dtype)
    new, disc = _switch(problem, z, t_known, opts, direction, max_bifurcations)
    if float(disc) > 1e-6:
        raise ValueError(
            f"At bifurcation point {k} the branching equation has no real second "
            "root (an isolated solution, not a crossing of two branches)."
        )
    return _maybe_throw(new, problem, x, z[-1], throw, "switch_branch")
