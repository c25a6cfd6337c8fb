"""Codimension-two continuation: curves of folds and of Hopf points of equilibria in
two parameters, with the codimension-two points on them (cusp, Bogdanov-Takens,
Bautin, zero-Hopf)."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Complex, Float, Int

from .._custom_types import Args
from .._results import raise_if_failed, RESULTS
from .._system._base import AbstractFlow, AbstractMap, AbstractSystem
from .._system._checks import conform
from ._arclength import (
    arclength,
    ArclengthBranch,
    ArclengthOptions,
    correct,
    initial_tangent,
    sign_changes,
)
from ._branch import (
    _combine,
    _NAMES,
    _Problem,
    _stop,
    Bifurcations,
    Branch,
    first_lyapunov_coefficient,
    floats_as_arrays,
    scalar_parameter,
)


class BifurcationCurve(eqx.Module):
    """A curve of fold or Hopf points in two parameters, returned by
    `dynjax.fold_curve` and `dynjax.hopf_curve`.

    **Attributes:**

    - `kind`: `"fold"` or `"hopf"` (static).
    - `parameter1`, `parameter2`: shape `(N,)`, the two parameters along the curve,
        `NaN` beyond `n_points`.
    - `states`: shape `(N, d)`, the equilibrium at each point.
    - `eigenvalues`: shape `(N, d)`, complex, of the Jacobian, sorted by decreasing
        real part.
    - `kappa`: shape `(N,)`, Hopf curves: `kappa = lambda_1 lambda_2` for the
        eigenvalue pair with `lambda_1 + lambda_2 = 0`: `omega^2 > 0` at a Hopf
        point (eigenvalues `+-i omega`), `< 0` at a neutral saddle (`+-sqrt(-kappa)`,
        not a bifurcation); it passes through 0 at a Bogdanov-Takens point. `NaN`
        on fold curves.
    - `frequency`: shape `(N,)`, `omega = sqrt(kappa)` where `kappa > 0`, else `NaN`.
    - `neutral_saddle`: shape `(N,)`, Hopf curves: `kappa < 0` (the defining system
        continues through a Bogdanov-Takens point onto neutral saddles, which are not
        Hopf points). `False` on fold curves.
    - `n_points`: the number of points on the curve.
    - `bifurcations`: a `dynjax.Bifurcations` of the codimension-two points found
        ("cusp", "bogdanov_takens" on fold curves; "bogdanov_takens", "bautin",
        "zero_hopf" on Hopf curves). Its `parameter` is the first parameter; the
        second is `bifurcation_parameter2`. `frequency` is `omega` at a zero-Hopf
        point of a Hopf curve.
    - `bifurcation_parameter2`: shape `(K,)`, the second parameter of each point of
        `bifurcations` (`NaN` in unused slots).
    - `result`: `RESULTS.successful`, or why the curve ended early.
    """

    kind: str = eqx.field(static=True)
    parameter1: Float[Array, " N"]
    parameter2: Float[Array, " N"]
    states: Float[Array, "N d"]
    eigenvalues: Complex[Array, "N d"]
    kappa: Float[Array, " N"]
    frequency: Float[Array, " N"]
    neutral_saddle: Bool[Array, " N"]
    n_points: Int[Array, ""]
    bifurcations: Bifurcations
    bifurcation_parameter2: Float[Array, " K"]
    result: RESULTS


# --- the two parameters -----------------------------------------------------------


class _Pair(eqx.Module):
    """Selects the two parameters (a pair of leaves for `eqx.tree_at`)."""

    first: Callable = eqx.field(static=True)
    second: Callable = eqx.field(static=True)

    def __call__(self, system):
        return (self.first(system), self.second(system))


def _pair(system, parameters) -> _Pair:
    if not isinstance(parameters, (tuple, list)) or len(parameters) != 2:
        raise ValueError(
            "`parameters` must be a pair of field names or selectors, e.g. "
            f"('a', 'b') or (lambda s: s.a, lambda s: s.b), got {parameters!r}."
        )
    wheres = []
    for parameter in parameters:
        wheres.append(scalar_parameter(system, parameter))
    pair = _Pair(*wheres)
    try:
        moved = eqx.tree_at(pair, system, (jnp.array(1.0), jnp.array(2.0)))
        distinct = float(wheres[0](moved)) == 1.0 and float(wheres[1](moved)) == 2.0
    except ValueError:
        distinct = False
    if not distinct:
        raise ValueError(
            f"The two `parameters` must be two distinct fields, got {parameters!r}."
        )
    return pair


# --- the defining systems -----------------------------------------------------------


def _bialternate(A: Float[Array, "n n"]) -> Float[Array, "m m"]:
    """`2A (.) I`, the bialternate product: the matrix of `X -> A X + X A^T` on
    antisymmetric `X` (coordinates `X[p, q]`, `p > q`, `m = n (n-1) / 2`). Its
    eigenvalues are the sums `lambda_i + lambda_j`, `i < j` (Kuznetsov 2004,
    section 10.2.2)."""
    n = A.shape[0]
    p, q = np.tril_indices(n, -1)
    m = p.shape[0]
    E = np.zeros((m, n, n))
    E[np.arange(m), p, q] = 1.0
    E[np.arange(m), q, p] = -1.0
    E = jnp.asarray(E, A.dtype)
    image = A @ E + E @ A.T  # (m, n, n): the image of basis element k
    return image[:, p, q].T


class _Curve(eqx.Module):
    """The minimally augmented defining system of a fold (`M = J`) or Hopf
    (`M = 2J (.) I`) curve in `z = (x, p1, p2)`: `[f(x, p); g(x, p)] = 0`, where
    `[[M, b], [c^T, 0]] [v; g] = [0; 1]` (Govaerts 2000, chapter 4)."""

    problem: _Problem
    kind: str = eqx.field(static=True)
    b: Float[Array, " m"]
    c: Float[Array, " m"]

    @staticmethod
    def split(z):
        return z[:-2], (z[-2], z[-1])

    def with_system(self, system):
        return eqx.tree_at(lambda c: c.problem.system, self, system)

    def matrix(self, x, p):
        J = self.problem.jacobian(x, p)
        return J if self.kind == "fold" else _bialternate(J)

    def bordered(self, M):
        """`(v, w, g)`: right and left bordered vectors and the test function `g`."""
        m = M.shape[0]
        zero = jnp.zeros((1, 1), M.dtype)
        A = jnp.block([[M, self.b[:, None]], [self.c[None, :], zero]])
        e = jnp.zeros(m + 1, M.dtype).at[-1].set(1.0)
        vg = jnp.linalg.solve(A, e)
        wh = jnp.linalg.solve(A.T, e)
        return vg[:-1], wh[:-1], vg[-1]

    def residual(self, z):
        x, p = self.split(z)
        M = self.matrix(x, p)
        m = M.shape[0]
        zero = jnp.zeros((1, 1), M.dtype)
        A = jnp.block([[M, self.b[:, None]], [self.c[None, :], zero]])
        e = jnp.zeros(m + 1, M.dtype).at[-1].set(1.0)
        g = jnp.linalg.solve(A, e)[-1]
        return jnp.concatenate([self.problem.evolve(x, p), g[None]])


def _F(z, curve):
    return curve.residual(z)


def _second_derivative(f, x, u, v):
    return jax.jvp(lambda y: jax.jvp(f, (y,), (u,))[1], (x,), (v,))[1]


def _kappa(lam):
    """`Re(lambda_i lambda_j)` of the pair with the smallest `|lambda_i + lambda_j|`."""
    i, j = np.triu_indices(lam.shape[0], 1)
    k = jnp.argmin(jnp.abs(lam[i] + lam[j]))
    return jnp.real(lam[i][k] * lam[j][k])


# Test functions along each kind of curve, with the kinds they detect.
_TESTS = {
    "fold": ("bogdanov_takens", "cusp"),
    "hopf": ("bogdanov_takens", "bautin", "zero_hopf"),
}


def _test_functions(curve, z):
    """The codimension-two test functions at `z` (see `_TESTS`), the eigenvalues of
    `J` and `kappa` (Hopf curves)."""
    x, p = curve.split(z)
    J = curve.problem.jacobian(x, p)
    lam = jnp.linalg.eigvals(J)
    nan = jnp.array(jnp.nan, z.dtype)
    if curve.kind == "fold":
        # v, w: right and left null vectors of J (continuous along the curve, as
        # the borders are fixed). Bogdanov-Takens: <w, v> = 0 (the zero eigenvalue
        # is double); cusp: the (unnormalized) quadratic normal-form coefficient
        # <w, B(v, v)> = 0.
        v, w, _ = curve.bordered(J)
        f = lambda y: curve.problem.evolve(y, p)  # noqa: E731
        cusp = jnp.dot(w, _second_derivative(f, x, v, v))
        return jnp.stack([jnp.dot(w, v), cusp]), lam, nan
    kappa = _kappa(lam)
    f = lambda y: curve.problem.evolve(y, p)  # noqa: E731
    l1 = jax.lax.cond(
        kappa > 0,
        lambda: first_lyapunov_coefficient(f, x, jnp.sqrt(jnp.abs(kappa))),
        lambda: nan,
    )
    # det J = kappa * (product of the other eigenvalues): zero-Hopf where another
    # eigenvalue crosses 0 (the ratio is regular at a Bogdanov-Takens point).
    zero_hopf = jnp.linalg.det(J) / kappa
    return jnp.stack([kappa, l1, zero_hopf]), lam, kappa


def _refine(curve, system, z, name, opts):
    """Newton on the defining system of a codimension-two point from the bisected
    `z`, differentiable in `system` (implicit function theorem). Returns
    `(z, converged)`."""
    z = jax.lax.stop_gradient(z)
    if name == "bautin":
        # (l1 needs eigenvectors, which have no derivatives here: the bisected
        # point stands.)
        return z, jnp.array(True)

    def G(y, s):
        cv = curve.with_system(s)
        x, p = cv.split(y)
        J = cv.problem.jacobian(x, p)
        if cv.kind == "fold":
            v, w, _ = cv.bordered(J)
            if name == "bogdanov_takens":
                extra = jnp.dot(w, v)
            else:
                f = lambda u: cv.problem.evolve(u, p)  # noqa: E731
                extra = jnp.dot(w, _second_derivative(f, x, v, v))
        else:
            # Bogdanov-Takens and zero-Hopf on a Hopf curve: det J = 0.
            extra = jnp.linalg.det(J)
        return jnp.concatenate([cv.residual(y), extra[None]])

    solver = optx.Newton(rtol=opts.rtol, atol=opts.atol, linear_solver=lx.LU())
    frozen = _stop(system)
    sol = optx.root_find(G, solver, z, frozen, max_steps=opts.max_newton, throw=False)
    ok = (
        (sol.result == optx.RESULTS.successful)
        & jnp.all(jnp.isfinite(sol.value))
        & (jnp.linalg.norm(sol.value - z) < opts.ds_max)
    )
    z_star = jnp.where(ok, sol.value, z)
    # The derivative by the implicit function theorem, as one Newton step from the
    # solution (its value is z_star exactly): dz = -G_z^{-1} dG. (Not through
    # optimistix's own rule, which rejects the non-finite Jacobian of an unused
    # slot; here that slot gets the identity.)
    Gz = jax.jacfwd(G)(z_star, frozen)
    Gz = jnp.where(
        ok & jnp.all(jnp.isfinite(Gz)), Gz, jnp.eye(z.shape[0], dtype=z.dtype)
    )
    r = G(z_star, system)
    return z_star - jnp.linalg.solve(Gz, r - jax.lax.stop_gradient(r)), ok


def _bisect(curve, z, t, f0, s_hi, which, opts, n_iter=60):
    """Bisection in arclength `s in [0, s_hi]` on test function `which` (value `f0`
    at `z`), every trial point corrected onto the curve; returns the last trial
    point (inside the final bracket) and its test-function value. One trial per
    iteration, traced once."""

    def body(_, carry):
        lo, hi, flo, _, _ = carry
        mid = 0.5 * (lo + hi)
        zc, ok, _ = correct(_F, z + mid * t, t, curve, opts)
        zc = jnp.where(ok, zc, z + mid * t)
        fm = _test_functions(curve, zc)[0][which]
        same = jnp.sign(fm) == jnp.sign(flo)
        return (
            jnp.where(same, mid, lo),
            jnp.where(same, hi, mid),
            jnp.where(same, fm, flo),
            zc,
            fm,
        )

    init = (jnp.zeros_like(s_hi), s_hi, f0, z, f0)
    return jax.lax.fori_loop(0, n_iter, body, init)[-2:]


def _clip(half: ArclengthBranch, lower, upper):
    """Cut a half-curve at its first point with the first parameter outside
    `[lower, upper]`; returns it and whether the cut shortened it."""
    N = half.zs.shape[0]
    p1 = half.zs[:, -2]
    valid = jnp.arange(N) < half.n
    outside = valid & ((p1 < lower) | (p1 > upper))
    first = jnp.where(jnp.any(outside), jnp.argmax(outside), half.n)
    n = jnp.maximum(first, 1)
    return eqx.tree_at(lambda h: h.n, half, n.astype(half.n.dtype)), n < half.n


@eqx.filter_jit
def _curve(problem, kind, z0, opts, bounds1, direction, max_bifurcations):
    dtype = z0.dtype
    # Derivatives flow only through the final defining-system solves of the
    # codimension-two points; everything else sees a stop-gradient copy.
    dynamic, static = eqx.partition(problem, eqx.is_inexact_array)
    grad_system = problem.system
    problem = eqx.combine(jax.lax.stop_gradient(dynamic), static)
    z0 = jax.lax.stop_gradient(z0)
    # Borders: the singular vectors of M's smallest singular value at the start.
    x, p = _Curve.split(z0)
    J = problem.jacobian(x, p)
    U, _, Vt = jnp.linalg.svd(J if kind == "fold" else _bialternate(J))
    curve = _Curve(problem, kind, U[:, -1], Vt[-1])
    # Correct the start at fixed p2: (x, p1) with [f; g] = 0.
    solver = optx.Newton(rtol=opts.rtol, atol=opts.atol, linear_solver=lx.LU())
    start = optx.root_find(
        lambda y, cv: cv.residual(jnp.concatenate([y, z0[-1:]])),
        solver,
        z0[:-1],
        curve,
        max_steps=opts.max_newton,
        throw=False,
    )
    start_ok = (start.result == optx.RESULTS.successful) & jnp.all(
        jnp.isfinite(start.value)
    )
    z0 = jnp.concatenate([start.value, z0[-1:]])
    sign = 1.0 if direction != "backward" else -1.0
    t0 = initial_tangent(_F, z0, curve, sign)
    fwd = arclength(_F, z0, t0, curve, opts)
    if direction == "both":
        back = arclength(_F, z0, -t0, curve, opts)
    else:
        back = eqx.tree_at(lambda b: b.n, fwd, jnp.array(1))
    fwd, cut_f = _clip(fwd, *bounds1)
    back, cut_b = _clip(back, *bounds1)
    zs, ts, n = _combine(back, fwd)
    N = zs.shape[0]
    valid = jnp.arange(N) < n
    safe_z = jnp.where(valid[:, None], zs, z0)
    safe_t = jnp.where(valid[:, None], ts, t0)
    psi, lam, kappa = jax.vmap(lambda z: _test_functions(curve, z))(safe_z)
    lam = jax.vmap(lambda ev: ev[jnp.argsort(-jnp.real(ev), stable=True)])(lam)

    names = _TESTS[kind]
    T = len(names)
    changes = jax.vmap(lambda v: sign_changes(v, n), in_axes=1)(psi)  # (T, N-1)
    K = max_bifurcations
    flat = changes.reshape(-1)
    order = jnp.argsort(
        jnp.where(flat, jnp.tile(jnp.arange(N - 1), T), 2 * N), stable=True
    )[:K]
    found = flat[order]
    which = order // (N - 1)
    index = order % (N - 1)

    def locate(w, k):
        z, t = safe_z[k], safe_t[k]
        s_hi = jnp.dot(t, safe_z[k + 1] - z)
        return _bisect(curve, z, t, psi[k, w], s_hi, w, opts)

    located, at_root = jax.vmap(locate)(which, index)
    # A sign change through a pole (l1 ~ 1/omega at a Bogdanov-Takens point, or
    # ~ 1/lambda at a zero-Hopf point) is no root: there the bisected value grows.
    ends = jnp.minimum(jnp.abs(psi[index, which]), jnp.abs(psi[index + 1, which]))
    found = found & (jnp.abs(at_root) <= ends)

    def refine_one(w, z):
        branches = [
            lambda z, name=name: _refine(curve, grad_system, z, name, opts)
            for name in names
        ]
        return jax.lax.switch(w, branches, z)

    refined, converged = jax.vmap(refine_one)(which, located)
    refined = jnp.where(converged[:, None], refined, located)
    kappa_at = jax.vmap(
        lambda z: _kappa(jnp.linalg.eigvals(curve.problem.jacobian(*curve.split(z))))
    )(jax.lax.stop_gradient(refined))
    freq = jnp.full((K,), jnp.nan, dtype)
    if kind == "hopf":
        # Zero-Hopf needs a Hopf pair (kappa > 0) at the point, and a real
        # eigenvalue at 0 (not the pair itself passing 0: Bogdanov-Takens).
        zh = which == names.index("zero_hopf")
        found = found & ~(zh & ~(kappa_at > 0))
        freq = jnp.where(zh, jnp.sqrt(jnp.abs(kappa_at)), freq)
    kinds = jnp.asarray([_NAMES.index(name) for name in names])[which]
    keep = jnp.argsort(~found, stable=True)
    fk = found[keep]
    nan = jnp.nan
    bif = Bifurcations(
        kind=jnp.where(fk, kinds[keep], -1),
        parameter=jnp.where(fk, refined[keep, -2], nan),
        state=jnp.where(fk[:, None], refined[keep, :-2], nan),
        frequency=jnp.where(fk, freq[keep], nan),
        lyapunov_coefficient=jnp.full((K,), nan, dtype),
        index=jnp.where(fk, index[keep], -1),
        converged=fk & converged[keep],
        n=jnp.sum(found),
    )
    stopped_early = ((fwd.stopped == 1) & ~cut_f) | ((back.stopped == 1) & ~cut_b)
    result = RESULTS.where(
        ~start_ok,
        RESULTS.not_converged,
        RESULTS.where(stopped_early, RESULTS.continuation_step_collapsed,
                      RESULTS.successful),
    )  # fmt: skip
    if kind == "hopf":
        kappa = jnp.where(valid, kappa, nan)
        frequency = jnp.where(kappa > 0, jnp.sqrt(jnp.abs(kappa)), nan)
        neutral = valid & (kappa < 0)
    else:
        kappa = jnp.full((N,), nan, dtype)
        frequency = kappa
        neutral = jnp.zeros((N,), bool)
    return BifurcationCurve(
        kind=kind,
        parameter1=jnp.where(valid, zs[:, -2], nan),
        parameter2=jnp.where(valid, zs[:, -1], nan),
        states=jnp.where(valid[:, None], zs[:, :-2], nan),
        eigenvalues=jnp.where(valid[:, None], lam, nan),
        kappa=kappa,
        frequency=frequency,
        neutral_saddle=neutral,
        n_points=n,
        bifurcations=bif,
        bifurcation_parameter2=jnp.where(fk, refined[keep, -1], nan),
        result=result,
    )


def _concrete_int(value):
    try:
        return int(np.asarray(value))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _codim2(
    kind, system, parameters, branch, k, *, ds, ds_min, ds_max, bounds, n_points,
    direction, max_bifurcations, rtol, atol, max_newton, args, throw,
):  # fmt: skip
    verb = f"{kind}_curve"
    if not isinstance(system, AbstractFlow):
        kinds = "flips / Neimark-Sacker points" if kind == "hopf" else "folds"
        raise ValueError(
            f"`{verb}` takes a flow (curves of equilibria's bifurcations); curves of "
            f"a map's {kinds} are not implemented."
            if isinstance(system, AbstractMap)
            else f"`{verb}` takes a flow, got {type(system).__name__}."
        )
    if not isinstance(branch, Branch):
        raise ValueError(
            f"`branch` must be a `dynjax.Branch` from `dynjax.continuation` in the "
            f"first parameter, got {type(branch).__name__}."
        )
    if direction not in ("both", "forward", "backward"):
        raise ValueError(
            f"`direction` must be 'both', 'forward' or 'backward', got {direction!r}."
        )
    try:
        (lo1, hi1), (lo2, hi2) = bounds
    except (TypeError, ValueError):
        raise ValueError(
            f"`bounds` must be ((p1_min, p1_max), (p2_min, p2_max)), got {bounds!r}."
        ) from None
    pair = _pair(system, parameters)
    bif = branch.bifurcations
    K = bif.kind.shape[0]
    if not isinstance(k, (int, np.integer)) or not -K <= k < K:
        raise ValueError(f"`k` must be an int index into the branch's bifurcations "
                         f"(0 <= k < {K}), got {k!r}.")  # fmt: skip
    want = _NAMES.index(kind)
    found, n = _concrete_int(bif.kind[k]), _concrete_int(bif.n)
    if found is not None and n is not None and (found != want or k >= n):
        have = bif.names if _concrete_int(bif.n) is not None else []
        raise ValueError(
            f"`{verb}` starts from a {kind} point, but bifurcation {k} of the branch "
            f"is {_NAMES[found] if 0 <= found < len(_NAMES) else 'unused'} (the "
            f"branch has {have}). Pass the index of a {kind}."
        )
    d = bif.state.shape[-1]
    if kind == "hopf" and d < 2:
        raise ValueError("A Hopf point needs a state of dimension d >= 2.")
    system, x, args = conform(system, bif.state[k], verb=verb, args=args)
    system = floats_as_arrays(system, x.dtype)
    dtype = x.dtype
    f64 = jnp.finfo(dtype).bits >= 64
    opts = ArclengthOptions(
        ds=ds,
        ds_min=ds_min,
        ds_max=ds_max,
        n_points=n_points,
        max_newton=max_newton,
        rtol=(1e-10 if f64 else 1e-5) if rtol is None else rtol,
        atol=(1e-12 if f64 else 1e-6) if atol is None else atol,
        lower=lo2,
        upper=hi2,
    )
    problem = _Problem(system, pair, 1, args)
    p1 = jnp.asarray(bif.parameter[k], dtype)
    p2 = jnp.asarray(pair.second(system), dtype)
    z0 = jnp.concatenate([x, p1[None], p2[None]])
    out = _curve(problem, kind, z0, opts, (lo1, hi1), direction, max_bifurcations)
    if throw:
        out = eqx.tree_at(
            lambda c: c.parameter1,
            out,
            raise_if_failed(
                out.result,
                out.parameter1,
                lambda _: (
                    f"In `dynjax.{verb}`: the correction of the starting {kind} point "
                    "(the start, when the curve has one point) or a step failed. "
                    "Check that the branch was computed for this system, raise "
                    "`max_newton` or lower `ds_min`, or run in float64."
                ),
            ),
        )
    return out


def fold_curve(
    system: AbstractSystem,
    parameters: tuple[str | Callable, str | Callable],
    branch: Branch,
    k: int,
    *,
    ds: float = 1e-2,
    ds_min: float = 1e-8,
    ds_max: float = 0.1,
    bounds: tuple = ((-jnp.inf, jnp.inf), (-jnp.inf, jnp.inf)),
    n_points: int = 200,
    direction: Literal["both", "forward", "backward"] = "both",
    max_bifurcations: int = 8,
    rtol: float | None = None,
    atol: float | None = None,
    max_newton: int = 20,
    args: Args = None,
    throw: bool = True,
) -> BifurcationCurve:
    r"""Continue a fold (saddle-node) point of equilibria in two parameters, and
    locate the cusp and Bogdanov-Takens points on the fold curve.

    The curve is the solution set of the minimally augmented system (Govaerts
    2000, section 4.3) in `z = (x, p1, p2)`:

    $$f(x; p_1, p_2) = 0, \qquad g(x; p_1, p_2) = 0, \qquad
    \begin{bmatrix} f_x & b \\ c^T & 0 \end{bmatrix}
    \begin{bmatrix} v \\ g \end{bmatrix} = \begin{bmatrix} 0 \\ 1 \end{bmatrix},$$

    `g = 0` exactly where `f_x` is singular; the borders `b`, `c` are the left and
    right singular vectors of `f_x`'s smallest singular value at the start (fixed
    along the curve, which is valid while the null vectors do not turn by about
    90 degrees from them). It is traced by the pseudo-arclength continuation of
    `dynjax.continuation`, from fold `k` of `branch` (corrected at fixed `p2`).

    With `v` and `w` (from the transposed bordered system) the right and left null
    vectors of `f_x` on the curve, continuous along it, the test functions are
    (Kuznetsov 2004, section 10.3.1; MatCont):

    - Bogdanov-Takens: `<w, v>` (the zero eigenvalue becomes double);
    - cusp: `<w, B(v, v)>`, the quadratic normal-form coefficient
        `a = <w, B(v, v)> / (2 <w, v>)` without its normalization (which breaks
        down at a Bogdanov-Takens point), `B` the second derivative of `f`.

    Each sign change is located by bisection in arclength, then refined by
    Newton's method on `[f; g; test] = 0` (square), differentiable in the system's
    parameters by the implicit function theorem.

    **Arguments:**

    - `system`: a dynjax flow (autonomous), the one `branch` was computed for.
    - `parameters`: a pair of two distinct scalar float fields, as names
        (`("mu", "lam")`) or selectors (`lambda s: s.mu`); the first is the
        parameter of `branch`.
    - `branch`: a `dynjax.Branch` from `dynjax.continuation(system, parameters[0],
        ...)`.
    - `k`: the index of the starting point in `branch.bifurcations`.
    - `ds`, `ds_min`, `ds_max`: initial, smallest and largest step (arclength in
        `(x, p1, p2)`).
    - `bounds`: `((p1_min, p1_max), (p2_min, p2_max))`; the curve ends where it
        leaves them.
    - `n_points`: points per direction (the curve has up to `2 n_points - 1`).
    - `direction`: `"both"`, `"forward"` (increasing `p2` first) or `"backward"`.
    - `max_bifurcations`: slots for codimension-two points.
    - `rtol`, `atol`, `max_newton`: Newton tolerances and steps per correction
        (defaults as in `dynjax.continuation`).
    - `args`: the system's run-time arguments.
    - `throw`: raise if the start does not converge or the step collapses.

    **Returns:**

    A `dynjax.BifurcationCurve` with `kind="fold"`.

    **Raises:**

    `ValueError` if `system` is not a flow, `parameters` is not a pair of distinct
    scalar float fields, `branch` is not a `dynjax.Branch`, bifurcation `k` is not
    a fold, or `bounds` / `direction` are malformed; at run time (with `throw`) if
    the start does not converge or the step collapses.

    **References:** W. Govaerts, *Numerical Methods for Bifurcations of Dynamical
    Equilibria* (SIAM, 2000), chapter 4; Yu. A. Kuznetsov, *Elements of Applied
    Bifurcation Theory*, 3rd ed. (Springer, 2004), sections 8.2-8.4 and 10.3;
    A. Dhooge, W. Govaerts, Yu. A. Kuznetsov, "MATCONT: a MATLAB package for
    numerical bifurcation analysis of ODEs", ACM TOMS 29 (2003) 141-164.
    """
    return _codim2(
        "fold", system, parameters, branch, k, ds=ds, ds_min=ds_min, ds_max=ds_max,
        bounds=bounds, n_points=n_points, direction=direction,
        max_bifurcations=max_bifurcations, rtol=rtol, atol=atol,
        max_newton=max_newton, args=args, throw=throw,
    )  # fmt: skip


def hopf_curve(
    system: AbstractSystem,
    parameters: tuple[str | Callable, str | Callable],
    branch: Branch,
    k: int,
    *,
    ds: float = 1e-2,
    ds_min: float = 1e-8,
    ds_max: float = 0.1,
    bounds: tuple = ((-jnp.inf, jnp.inf), (-jnp.inf, jnp.inf)),
    n_points: int = 200,
    direction: Literal["both", "forward", "backward"] = "both",
    max_bifurcations: int = 8,
    rtol: float | None = None,
    atol: float | None = None,
    max_newton: int = 20,
    args: Args = None,
    throw: bool = True,
) -> BifurcationCurve:
    r"""Continue a Hopf point of equilibria in two parameters, and locate the
    Bogdanov-Takens, Bautin and zero-Hopf points on the Hopf curve.

    The curve is the solution set of the minimally augmented system with the
    bialternate product (Govaerts 2000, section 4.4; Kuznetsov 2004, section
    10.3.2) in `z = (x, p1, p2)`:

    $$f(x; p_1, p_2) = 0, \qquad g(x; p_1, p_2) = 0, \qquad
    \begin{bmatrix} 2 f_x \odot I & b \\ c^T & 0 \end{bmatrix}
    \begin{bmatrix} v \\ g \end{bmatrix} = \begin{bmatrix} 0 \\ 1 \end{bmatrix},$$

    where `2A (.) I` (size `d(d-1)/2`) has the eigenvalues `lambda_i + lambda_j`,
    `i < j`: `g = 0` where two eigenvalues sum to 0, a Hopf pair `+-i omega` or a
    neutral saddle `+-mu` (reported in `kappa` and `neutral_saddle`; the curve
    continues through the Bogdanov-Takens point where one turns into the other).
    Borders and continuation as in `dynjax.fold_curve`, from Hopf point `k` of
    `branch`. Test functions:

    - Bogdanov-Takens: `kappa = lambda_1 lambda_2` of the pair (`omega^2`);
    - Bautin (generalized Hopf): the first Lyapunov coefficient `l1`
        (`dynjax.first_lyapunov_coefficient`, where `kappa > 0`);
    - zero-Hopf (fold-Hopf): `det f_x / kappa` (another eigenvalue crosses 0),
        kept where `kappa > 0` at the point.

    Bogdanov-Takens and zero-Hopf points are refined by Newton's method on
    `[f; g; det f_x] = 0` (differentiable in the system's parameters); a Bautin
    point is the bisected one (the derivative of `l1` needs eigenvector
    derivatives).

    **Arguments:**

    - `system`: a dynjax flow (autonomous), the one `branch` was computed for.
    - `parameters`: a pair of two distinct scalar float fields, as names
        (`("mu", "lam")`) or selectors (`lambda s: s.mu`); the first is the
        parameter of `branch`.
    - `branch`: a `dynjax.Branch` from `dynjax.continuation(system, parameters[0],
        ...)`.
    - `k`: the index of the starting point in `branch.bifurcations`.
    - `ds`, `ds_min`, `ds_max`: initial, smallest and largest step (arclength in
        `(x, p1, p2)`).
    - `bounds`: `((p1_min, p1_max), (p2_min, p2_max))`; the curve ends where it
        leaves them.
    - `n_points`: points per direction (the curve has up to `2 n_points - 1`).
    - `direction`: `"both"`, `"forward"` (increasing `p2` first) or `"backward"`.
    - `max_bifurcations`: slots for codimension-two points.
    - `rtol`, `atol`, `max_newton`: Newton tolerances and steps per correction
        (defaults as in `dynjax.continuation`).
    - `args`: the system's run-time arguments.
    - `throw`: raise if the start does not converge or the step collapses.

    **Returns:**

    A `dynjax.BifurcationCurve` with `kind="hopf"`, with `kappa`, `frequency` and
    `neutral_saddle` along the curve.

    **Raises:**

    `ValueError` as `dynjax.fold_curve` (with "Hopf" for "fold"), and if `d < 2`.

    **References:** Yu. A. Kuznetsov, *Elements of Applied Bifurcation Theory*, 3rd
    ed. (Springer, 2004), sections 8.3-8.5 and 10.3.2; W. Govaerts, *Numerical
    Methods for Bifurcations of Dynamical Equilibria* (SIAM, 2000), chapter 4;
    A. Dhooge, W. Govaerts, Yu. A. Kuznetsov, ACM TOMS 29 (2003) 141-164.
    """
    return _codim2(
        "hopf", system, parameters, branch, k, ds=ds, ds_min=ds_min, ds_max=ds_max,
        bounds=bounds, n_points=n_points, direction=direction,
        max_bifurcations=max_bifurcations, rtol=rtol, atol=atol,
        max_newton=max_newton, args=args, throw=throw,
    )  # fmt: skip
