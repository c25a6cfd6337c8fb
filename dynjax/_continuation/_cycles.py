"""`dynjax.cycle_continuation`: branches of periodic orbits (limit cycles) of flows in
one parameter, from a Hopf point or a known orbit, with their Floquet multipliers
and the bifurcations of cycles (fold, branch point, period doubling, torus)."""

from collections.abc import Callable
from typing import Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Complex, Float, Int

from .._custom_types import Args
from .._periodic._poincare import _defaults
from .._periodic._shooting import _flow_map, _integrate_at, PeriodicOrbit
from .._results import is_traced, raise_if_failed, RESULTS
from .._system._base import AbstractFlow
from .._system._checks import conform
from .._system._coordinates import state_difference
from ._arclength import (
    arclength,
    ArclengthOptions,
    correct,
    initial_tangent,
    sign_changes,
)
from ._branch import (
    _combine,
    _pair_product,
    Bifurcations,
    Branch,
    floats_as_arrays,
    scalar_parameter,
)


# Test functions, in this order, and their kinds in `Bifurcations` (indices into
# `_branch._NAMES`): fold, branch_point, flip, neimark_sacker.
_KINDS = (0, 1, 3, 4)


class CycleBranch(eqx.Module):
    """A branch of periodic orbits returned by `dynjax.cycle_continuation`.

    `N` slots, the first `n_points` used (the rest `NaN`), in order along the
    branch.

    **Attributes:**

    - `parameter`: shape `(N,)`, the parameter along the branch.
    - `period`: shape `(N,)`, the period `T` (time units of the flow).
    - `states`: shape `(N, d)`, a point `x0` on each cycle (`phi_T(x0) = x0`).
    - `tangents`: shape `(N, d+2)`, the unit tangent of the branch in
        `z = (x0, T, p)`.
    - `multipliers`: shape `(N, d-1)`, complex, dimensionless: the nontrivial
        Floquet multipliers, sorted by decreasing modulus. They are the
        eigenvalues of `Q^T M Q`, `M = D phi_T(x0)` the monodromy matrix and `Q` an
        orthonormal basis of the hyperplane orthogonal to `f(x0)` (the linearized
        Poincaré map), so the trivial multiplier 1 (eigenvector `f(x0)`) is
        removed exactly rather than guessed as "the one closest to 1".
    - `monodromy`: shape `(N, d, d)`, `M`.
    - `stable`: shape `(N,)`, orbital stability: all `|multipliers| < 1`.
    - `n_unstable`: shape `(N,)`, the number of nontrivial multipliers outside the
        unit circle (`-1` in unused slots).
    - `amplitude`: shape `(N,)`, `max_t |x(t) - mean_t x(t)|` (Euclidean norm,
        mean over `orbits`): the radius of a circular cycle.
    - `orbits`: shape `(N, n_save, d)`, each cycle sampled at `n_save` times
        equally spaced over one period (from `states`), for plotting.
    - `n_points`: the number of points on the branch.
    - `bifurcations`: a `dynjax.Bifurcations`: kinds `"fold"` (fold of cycles,
        a multiplier 1 of multiplicity two), `"branch_point"`, `"flip"` (period
        doubling, a multiplier -1) and `"neimark_sacker"` (torus, a pair
        `exp(+-i theta)`, `theta` in `frequency`), `state` a point on the cycle.
    - `bifurcation_period`: shape `(K,)`, the period of the cycle at each
        bifurcation point (`NaN` in unused slots).
    - `result`: `RESULTS.successful`, or why the branch ended early.
    """

    parameter: Float[Array, " N"]
    period: Float[Array, " N"]
    states: Float[Array, "N d"]
    tangents: Float[Array, "N d+2"]
    multipliers: Complex[Array, "N d-1"]
    monodromy: Float[Array, "N d d"]
    stable: Bool[Array, " N"]
    n_unstable: Int[Array, " N"]
    amplitude: Float[Array, " N"]
    orbits: Float[Array, "N n_save d"]
    n_points: Int[Array, ""]
    bifurcations: Bifurcations
    bifurcation_period: Float[Array, " K"]
    result: RESULTS


# --- the problem F(x0, T, p) = 0 ----------------------------------------------------


class _CycleProblem(eqx.Module):
    """`F(x0, T, p) = [phi_T(x0; p) - x0; (x0 - ref) . n]` with the phase condition's
    reference `ref` on the last accepted cycle and `n` the unit flow there."""

    system: AbstractFlow
    where: Callable = eqx.field(static=True)
    args: Args
    solver: dfx.AbstractSolver
    controller: dfx.AbstractStepSizeController
    max_steps: int = eqx.field(static=True)
    ref: Float[Array, " d"]
    normal: Float[Array, " d"]

    def at(self, p):
        return eqx.tree_at(self.where, self.system, p)

    def field(self, x, p):
        return self.at(p).vector_field(0.0, x, self.args)

    def flow(self, x, T, p):
        y, result = _flow_map(
            self.at(p), x, T, self.args, self.solver, self.controller, self.max_steps
        )
        ok = result == dfx.RESULTS.successful
        return jnp.where(ok, y, jnp.nan)

    def residual(self, z):
        d = self.ref.shape[0]
        x, T, p = z[:d], z[d], z[d + 1]
        gap = state_difference(self.system, self.flow(x, T, p), x)
        phase = jnp.dot(state_difference(self.system, x, self.ref), self.normal)
        return jnp.concatenate([gap, phase[None]])


def _F(z, problem):
    return problem.residual(z)


def _update(problem, z):
    """The phase condition moved to the cycle `z`: the hyperplane through its point
    orthogonal to the flow there (a Poincaré-type condition that stays valid
    however much the cycle grows, as long as steps are small)."""
    d = problem.ref.shape[0]
    x, p = z[:d], z[d + 1]
    f = problem.field(x, p)
    n = f / jnp.linalg.norm(f)
    return eqx.tree_at(lambda q: (q.ref, q.normal), problem, (x, n))


def _poincare_multipliers(problem, z, M):
    """The nontrivial multipliers: eigenvalues of `Q^T M Q`, `Q` an orthonormal basis
    of `f(x0)^perp`."""
    d = M.shape[0]
    f = problem.field(z[:d], z[d + 1])
    Q, _ = jnp.linalg.qr(f[:, None], mode="complete")
    P = Q[:, 1:].T @ M @ Q[:, 1:]
    return jnp.linalg.eigvals(P), P


def _evaluate(problem, z, t_prev):
    """At the cycle `z`: the unit tangent oriented along `t_prev`, the fold, branch
    point, flip and Neimark-Sacker test functions, the nontrivial multipliers and
    the monodromy matrix, from one Jacobian `F_z` (one variational solve)."""
    d = problem.ref.shape[0]
    Fz = jax.jacfwd(_F)(z, problem)
    e = jnp.zeros(d + 2, z.dtype).at[-1].set(1.0)
    t = jnp.linalg.solve(jnp.concatenate([Fz, t_prev[None, :]]), e)
    t = t / jnp.linalg.norm(t)
    A = jnp.concatenate([Fz, t[None, :]])
    M = Fz[:d, :d] + jnp.eye(d, dtype=z.dtype)
    mu, P = _poincare_multipliers(problem, z, M)
    fold = t[-1]
    bp = jnp.linalg.det(A)
    flip = jnp.linalg.det(P + jnp.eye(d - 1, dtype=z.dtype))
    ns = _pair_product(mu, True) if d > 2 else jnp.ones((), z.dtype)
    return t, jnp.stack([fold, bp, flip, ns]), mu, M


def _bisect(problem, z, t, s_hi, f0, which, active, opts, n_iter):
    """Bisection in the arclength `s` in `[0, s_hi]` on test function `which`
    (`f0` its value at `s = 0`) between branch point `z` (tangent `t`, reference
    at `z`) and the next one, every trial point corrected onto the branch.
    Returns the last trial point (within `2^-n_iter s_hi` of the zero), its
    nontrivial multipliers and whether its correction converged. No iteration
    where not `active` (vmapped, the loop ends at once when no slot is)."""

    def psi(s):
        zc, ok, _ = correct(_F, z + s * t, t, problem, opts)
        zc = jnp.where(ok, zc, z + s * t)
        _, tests, mu, _ = _evaluate(problem, zc, t)
        return tests[which], zc, mu, ok

    def body(carry):
        i, lo, hi, flo, _ = carry
        mid = 0.5 * (lo + hi)
        fm, *point = psi(mid)
        same = jnp.sign(fm) == jnp.sign(flo)
        return (
            i + 1,
            jnp.where(same, mid, lo),
            jnp.where(same, hi, mid),
            jnp.where(same, fm, flo),
            point,
        )

    d = z.shape[0] - 2
    point = [z, jnp.zeros((d - 1,), jnp.result_type(z.dtype, 1j)), jnp.array(False)]
    init = (jnp.array(0), jnp.zeros_like(s_hi), s_hi, f0, point)
    return jax.lax.while_loop(lambda c: active & (c[0] < n_iter), body, init)[4]


# --- the start ---------------------------------------------------------------------


def _hopf_start(problem, x_h, p_h, omega, eps, opts):
    """A corrected cycle of amplitude ~`eps` near the Hopf point `(x_h, p_h)` with
    frequency `omega`, and the unit tangent pointing to growing amplitude.

    Predictor `x0 = x_h + eps Re q`, `T = 2 pi / omega`, `p = p_h`, with
    `A q = i omega q`, `|q| = 1`, `Re q . Im q = 0` (Kuznetsov 2004, section 10.2);
    corrected with the component of `x0 - x_h` along `Re q` held at `eps`."""
    d = x_h.shape[0]
    A = jax.jacfwd(lambda x: problem.field(x, p_h))(x_h)
    lam, V = jnp.linalg.eig(A)
    i = jnp.argmin(jnp.abs(lam - 1j * omega))
    q = V[:, i]
    # Rotate q so that Re q and Im q are orthogonal (|Re q| >= |Im q|).
    angle = -0.5 * jnp.angle(jnp.sum(q * q))
    q = q * jnp.exp(1j * angle)
    q = q / jnp.linalg.norm(q)
    u = jnp.real(q) / jnp.linalg.norm(jnp.real(q))
    T0 = 2 * jnp.pi / omega
    z_pred = jnp.concatenate([x_h + eps * u, jnp.stack([T0, p_h])])
    problem = _update(problem, z_pred)
    e = jnp.concatenate([u, jnp.zeros((2,), x_h.dtype)])
    z0, ok, _ = correct(_F, z_pred, e, problem, opts)
    # (A Hopf point of another system or parameter has no eigenvalue i omega.)
    f_h = problem.field(x_h, p_h)
    scale = 1 + jnp.max(jnp.abs(x_h))
    is_hopf = (jnp.abs(lam[i] - 1j * omega) <= 1e-6 * (1 + omega)) & (
        jnp.max(jnp.abs(f_h)) <= 1e-6 * scale
    )
    problem = _update(problem, z0)
    t0 = initial_tangent(_F, z0, problem, 1.0)
    grow = jnp.dot(t0[:d], z0[:d] - x_h)
    t0 = jnp.where(grow >= 0, t0, -t0)
    return z0, t0, ok & is_hopf & (omega > 0)


def _orbit_start(problem, x0, T0, p0, opts, sign):
    """The orbit `(x0, T0)` corrected at fixed `p0`, and its tangent."""
    d = x0.shape[0]
    z_pred = jnp.concatenate([x0, jnp.stack([T0, p0])])
    problem = _update(problem, z_pred)
    e = jnp.zeros((d + 2,), x0.dtype).at[-1].set(1.0)
    z0, ok, _ = correct(_F, z_pred, e, problem, opts)
    problem = _update(problem, z0)
    t0 = initial_tangent(_F, z0, problem, sign)
    return z0, t0, ok


# --- the verb ----------------------------------------------------------------------


@eqx.filter_jit
def _cycle_continuation(
    problem, start, eps, opts, direction, max_bifurcations, n_save, n_bisect
):
    problem, start = jax.tree.map(
        lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, (problem, start)
    )
    if start[0] == "hopf":
        _, x_h, p_h, omega = start
        z0, t0, start_ok = _hopf_start(problem, x_h, p_h, omega, eps, opts)
        direction = "forward"
    else:
        _, x0, T0, p0 = start
        sign = 1.0 if direction != "backward" else -1.0
        z0, t0, start_ok = _orbit_start(problem, x0, T0, p0, opts, sign)
    d = z0.shape[0] - 2
    dtype = z0.dtype
    if direction == "both":
        # (Both directions in one vmapped loop: one trace of the corrector.)
        both = jax.vmap(lambda t: arclength(_F, z0, t, problem, opts, _update))(
            jnp.stack([t0, -t0])
        )
        fwd = jax.tree.map(lambda a: a[0], both)
        back = jax.tree.map(lambda a: a[1], both)
    else:
        fwd = arclength(_F, z0, t0, problem, opts, update=_update)
        back = eqx.tree_at(lambda b: b.n, fwd, jnp.array(1))
    zs, ts, n = _combine(back, fwd)
    N = zs.shape[0]
    valid = jnp.arange(N) < n
    safe_z = jnp.where(valid[:, None], zs, z0)
    safe_t = jnp.where(valid[:, None], ts, t0)

    # Per point, after the loop (vmapped): test functions, multipliers, samples.
    def analyse(z, t):
        prob = _update(problem, z)
        _, psi, mu, M = _evaluate(prob, z, t)
        times = jnp.linspace(0.0, z[d], n_save)
        xs, res = _integrate_at(
            prob.at(z[-1]),
            z[:d],
            times,
            prob.args,
            prob.solver,
            prob.controller,
            prob.max_steps,
        )
        xs = jnp.where(res == RESULTS.successful, xs, jnp.nan)
        mu = mu[jnp.argsort(-jnp.abs(mu), stable=True)]
        return psi, mu, M, xs

    psi, mu, M, xs = jax.vmap(analyse)(safe_z, safe_t)
    unstable = jnp.sum(jnp.abs(mu) > 1, axis=1)
    amplitude = jnp.max(
        jnp.linalg.norm(xs - jnp.mean(xs[:, :-1], axis=1, keepdims=True), axis=2),
        axis=1,
    )

    if start[0] == "hopf":
        # The family ends where it shrinks back to its starting size after having
        # grown: at another Hopf point (past it the corrector follows the same
        # cycles shifted by half a period, with spurious test-function zeros).
        # (With large steps the branch may step over the zero amplitude: a local
        # minimum of the amplitude below a tenth of its largest so far marks it.)
        k = jnp.arange(N)
        largest = jax.lax.cummax(jnp.where(valid, amplitude, 0.0))
        grown = largest > 4 * amplitude[0]
        shrunk = valid & (k >= 2) & grown & (amplitude <= 2 * amplitude[0])
        amp = jnp.where(valid, amplitude, jnp.inf)
        before = jnp.concatenate([jnp.full((1,), jnp.inf, dtype), amp[:-1]])
        after = jnp.concatenate([amp[1:], jnp.full((1,), jnp.inf, dtype)])
        dip = valid & (k >= 2) & (amp <= before) & (amp <= after)
        dip = dip & (amp < 0.1 * largest) & grown
        n = jnp.minimum(n, jnp.min(jnp.where(shrunk | dip, k, N)) + 1)
        valid = k < n

    # Candidate intervals: sign changes of each test function.
    n_kinds = len(_KINDS)
    changes = jax.vmap(lambda v: sign_changes(v, n), in_axes=1)(psi)
    K = max_bifurcations
    flat = changes.reshape(-1)
    order = jnp.argsort(
        jnp.where(flat, jnp.tile(jnp.arange(N - 1), n_kinds), 2 * N), stable=True
    )[:K]
    found = flat[order]
    which = order // (N - 1)
    index = order % (N - 1)

    def locate(w, k, f):
        z, t = safe_z[k], safe_t[k]
        prob = _update(problem, z)
        s_hi = jnp.dot(t, safe_z[k + 1] - z)
        zb, mub, ok = _bisect(prob, z, t, s_hi, psi[k, w], w, f, opts, n_bisect)
        # Neimark-Sacker: the angle of the pair nearest the unit circle; a real
        # pair with product 1 (a neutral saddle cycle) is no bifurcation.
        on_circle = jnp.abs(jnp.abs(mub) - 1.0)
        complex_ = jnp.abs(jnp.imag(mub)) > 1e-8
        j = jnp.argmin(jnp.where(complex_, on_circle, jnp.inf))
        theta = jnp.where(complex_[j], jnp.abs(jnp.angle(mub[j])), jnp.nan)
        return zb, theta, ok

    located, theta, converged = jax.vmap(locate)(
        which, jnp.where(found, index, 0), found
    )
    kinds = jnp.asarray(_KINDS)[which]
    is_ns = which == 3
    found = found & ~(is_ns & ~jnp.isfinite(theta))
    keep = jnp.argsort(~found, stable=True)
    nan = jnp.nan
    fk = found[keep]
    bif = Bifurcations(
        kind=jnp.where(fk, kinds[keep], -1),
        parameter=jnp.where(fk, located[keep, -1], nan),
        state=jnp.where(fk[:, None], located[keep, :d], nan),
        frequency=jnp.where(fk & is_ns[keep], theta[keep], nan),
        lyapunov_coefficient=jnp.full((K,), nan, dtype),
        index=jnp.where(fk, index[keep], -1),
        converged=fk & converged[keep],
        n=jnp.sum(found),
    )
    stopped_early = (fwd.stopped == 1) | (back.stopped == 1)
    result = RESULTS.where(
        ~start_ok,
        RESULTS.not_converged,
        RESULTS.where(stopped_early, RESULTS.continuation_step_collapsed,
                      RESULTS.successful),
    )  # fmt: skip
    return CycleBranch(
        parameter=jnp.where(valid, zs[:, -1], nan),
        period=jnp.where(valid, zs[:, d], nan),
        states=zs[:, :d],
        tangents=ts,
        multipliers=jnp.where(valid[:, None], mu, nan),
        monodromy=jnp.where(valid[:, None, None], M, nan),
        stable=valid & (unstable == 0),
        n_unstable=jnp.where(valid, unstable, -1),
        amplitude=jnp.where(valid, amplitude, nan),
        orbits=jnp.where(valid[:, None, None], xs, nan),
        n_points=n,
        bifurcations=bif,
        bifurcation_period=jnp.where(fk, located[keep, d], nan),
        result=result,
    )


def cycle_continuation(
    system: AbstractFlow,
    parameter: str | Callable,
    start: PeriodicOrbit | tuple[Branch, int],
    p0: float | None = None,
    *,
    ds: float = 1e-2,
    ds_min: float = 1e-8,
    ds_max: float = 0.1,
    p_min: float = -jnp.inf,
    p_max: float = jnp.inf,
    n_points: int = 100,
    direction: Literal["both", "forward", "backward"] = "both",
    max_bifurcations: int = 8,
    amplitude: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_newton: int = 20,
    args: Args = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    ode_max_steps: int = 2**14,
    n_save: int = 65,
    throw: bool = True,
) -> CycleBranch:
    r"""Continue a branch of periodic orbits (limit cycles) of an autonomous flow in
    one parameter, from a Hopf point or a known orbit, and locate the bifurcations
    of cycles.

    The unknowns are `z = (x0, T, p)`: a point on the cycle, the period and the
    parameter, solving (single shooting; Doedel, Keller & Kernevez 1991;
    Kuznetsov 2004, section 10.5)

    $$\phi_T(x_0; p) - x_0 = 0, \qquad (x_0 - x_\mathrm{ref}) \cdot
    f(x_\mathrm{ref}) = 0,$$

    with `phi` integrated by diffrax and differentiated in forward mode (the
    variational equation). The phase condition's reference `x_ref` is the point
    of the last accepted cycle, moved after every step (a moving Poincaré
    section), so it holds however much the cycle grows. The curve is followed by
    pseudo-arclength continuation in `z` (tangent predictor, Newton corrector by
    optimistix, adaptive step; as `dynjax.continuation`), one compiled loop.

    From a Hopf point `(x_H, p_H)` with `A q = i omega q`, the branch starts
    from the cycle of amplitude `amplitude` along `Re q` (corrected, the Hopf
    point itself being a degenerate cycle of amplitude 0) with period near
    `2 pi / omega`, and goes towards growing amplitude (one direction only: the
    other is the same family shifted by half a period). If the cycles shrink
    again to the starting amplitude (at a second Hopf point of the same family),
    the branch ends there.

    Along the branch the Floquet multipliers (eigenvalues of the monodromy matrix
    `M = D phi_T(x0)`; the trivial one removed by restricting `M` to the
    hyperplane orthogonal to `f(x0)`) give the stability, and sign changes of the
    test functions are located by bisection in arclength (every trial point
    corrected): fold of cycles, the tangent's parameter component; branch point,
    `det [F_z; t^T]`; flip (period doubling), `det(P + I)`; Neimark-Sacker,
    `prod_{i<j} (mu_i mu_j - 1)` over the nontrivial multipliers `mu` with a
    complex pair on the unit circle (`P` the linearized Poincaré map). Nothing is
    differentiated through the branch: its arrays are stop-gradient, so
    `jax.grad` through it gives zeros (use finite differences).

    **Arguments:**

    - `system`: an autonomous dynjax flow.
    - `parameter`: the name of a scalar field of `system` (`"rho"`), or a
        function selecting it (`lambda s: s.rho`).
    - `start`: a `dynjax.PeriodicOrbit` (from `dynjax.find_periodic_orbit` at
        parameter `p0`), or `(branch, k)`: a `dynjax.Branch` of equilibria from
        `dynjax.continuation` of the same system and parameter and the index `k`
        of a Hopf point in `branch.bifurcations`.
    - `p0`: with a `PeriodicOrbit`, the parameter value it was found at (default:
        the value in `system`); unused with a Hopf point.
    - `ds`, `ds_min`, `ds_max`: initial, smallest and largest step (arclength in
        `z`, so states, period and parameter in their own units).
    - `p_min`, `p_max`: stop when the parameter leaves this interval.
    - `n_points`: points per direction.
    - `direction`: from an orbit, `"both"`, `"forward"` (increasing parameter
        first) or `"backward"`; from a Hopf point, ignored (towards growing
        amplitude).
    - `max_bifurcations`: slots for bifurcation points.
    - `amplitude`: from a Hopf point, the amplitude of the first cycle (default
        `1e-3 (1 + max |x_H|)`).
    - `rtol`, `atol`: Newton tolerances (default `1e-9` each in float64, `1e-4`
        in float32: continuation is meant for float64). `atol` bounds the closure
        residual, which the integration error times the largest multiplier
        limits: towards a homoclinic orbit the unstable multiplier grows without
        bound (Lorenz, `rho -> 13.926`: `~1e3` at `rho = 13.97`, where the steps
        stall with the defaults; with `atol = rtol = 1e-7` the branch reaches
        `rho = 13.933`, multiplier `~2e4`).
    - `max_newton`: Newton steps per correction.
    - `args`: the system's run-time arguments.
    - `solver`, `stepsize_controller`, `ode_max_steps`: the diffrax integration
        over one period (default `Tsit5` with `PIDController(rtol=1e-11,
        atol=1e-12)` in float64).
    - `n_save`: samples per cycle in `CycleBranch.orbits` (the last repeats the
        first).
    - `throw`: raise if the start does not converge or the step collapses.

    **Returns:**

    A `dynjax.CycleBranch`: parameter, period, a point of each cycle, its
    multipliers, stability, amplitude and samples, and `bifurcations`.

    **Raises:**

    `ValueError` if `system` is not a flow of dimension `d >= 2`, `parameter` is
    not a scalar field, `start` is neither a converged `PeriodicOrbit` nor
    `(Branch, k)` with `k` a Hopf point, or an option is malformed. At run time
    (with `throw`), `equinox.EquinoxRuntimeError` if the start cannot be corrected
    onto a cycle (`not_converged`; also a Hopf point of another system) or the
    step size collapses (`continuation_step_collapsed`).

    !!! Example

        ```python
        lorenz = dynjax.systems.Lorenz(rho=40.0)
        eq = dynjax.continuation(lorenz, "rho", jnp.array([10., 10., 39.]), 40.0,
                                 p_min=10.0, direction="backward")
        cycles = dynjax.cycle_continuation(lorenz, "rho", (eq, 0), p_min=14.0)
        cycles.parameter, cycles.period, cycles.n_unstable  # rho < 24.7368
        ```

    **References:** E. Doedel, H. B. Keller and J.-P. Kernévez, "Numerical
    analysis and control of bifurcation problems (II): bifurcation in
    infinite dimensions", Int. J. Bifurcation and Chaos 1, 745-772 (1991);
    Yu. A. Kuznetsov, *Elements of Applied Bifurcation Theory*, 3rd ed.
    (Springer, 2004), section 10.5; R. Seydel, *Practical Bifurcation and
    Stability Analysis*, 3rd ed. (Springer, 2010), chapter 7.
    """
    if not isinstance(system, AbstractFlow):
        raise ValueError(
            "`cycle_continuation` takes an autonomous flow (`dynjax.Flow` or a "
            f"system from `dynjax.systems`), got {type(system).__name__}; a map's "
            "periodic points are `dynjax.continuation(map, ..., period=p)`."
        )
    if direction not in ("both", "forward", "backward"):
        raise ValueError(
            f"`direction` must be 'both', 'forward' or 'backward', got {direction!r}."
        )
    for name, value, low in (
        ("n_points", n_points, 2),
        ("max_bifurcations", max_bifurcations, 1),
        ("n_save", n_save, 2),
        ("max_newton", max_newton, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
    where = scalar_parameter(system, parameter)
    if isinstance(start, PeriodicOrbit):
        if not is_traced(start.result) and not bool(start.result == RESULTS.successful):
            raise ValueError(
                "`start` is a `PeriodicOrbit` whose solve failed (its `result` is "
                "not successful): find a converged orbit first (`throw=True` in "
                "`dynjax.find_periodic_orbit` says why it failed)."
            )
        x0 = start.x0
        p_start = where(system) if p0 is None else p0
        from_hopf = False
    elif (
        isinstance(start, tuple)
        and len(start) == 2
        and isinstance(start[0], Branch)
        and isinstance(start[1], (int, np.integer))
    ):
        branch, k = start
        bif = branch.bifurcations
        if not 0 <= k < int(bif.n):
            raise ValueError(
                f"`start=(branch, {k})`: the branch has {int(bif.n)} bifurcation "
                "points; `k` indexes `branch.bifurcations`."
            )
        if int(bif.kind[k]) != 2:
            raise ValueError(
                f"`start=(branch, {k})` is not a Hopf point: it is a "
                f"{bif.names[k]!r}. Pick the index of a 'hopf' entry of "
                "`branch.bifurcations.names`."
            )
        x0 = bif.state[k]
        from_hopf = True
    else:
        raise ValueError(
            "`start` must be a `dynjax.PeriodicOrbit` (from "
            "`dynjax.find_periodic_orbit`) or a pair `(branch, k)`: a "
            "`dynjax.Branch` and the index of a Hopf point in its "
            f"`bifurcations`; got {type(start).__name__}."
        )
    system, x0, args = conform(system, x0, verb="cycle_continuation", args=args)
    system = floats_as_arrays(system, x0.dtype)
    if x0.ndim != 1 or x0.shape[0] < 2:
        raise ValueError(
            "A flow has periodic orbits only in dimension d >= 2; got a state of "
            f"shape {x0.shape}."
        )
    dtype = x0.dtype
    if from_hopf:
        s = (
            "hopf",
            x0,
            jnp.asarray(bif.parameter[k], dtype),
            jnp.asarray(bif.frequency[k], dtype),
        )
    else:
        s = (
            "orbit",
            x0,
            jnp.asarray(start.period, dtype),
            jnp.asarray(p_start, dtype),
        )
    f64 = jnp.finfo(dtype).bits >= 64
    opts = ArclengthOptions(
        ds=jnp.asarray(ds, dtype),
        ds_min=jnp.asarray(ds_min, dtype),
        ds_max=jnp.asarray(ds_max, dtype),
        n_points=n_points,
        max_newton=max_newton,
        rtol=jnp.asarray((1e-9 if f64 else 1e-4) if rtol is None else rtol, dtype),
        atol=jnp.asarray((1e-9 if f64 else 1e-4) if atol is None else atol, dtype),
        lower=jnp.asarray(p_min, dtype),
        upper=jnp.asarray(p_max, dtype),
    )
    solver, stepsize_controller = _defaults(dtype, solver, stepsize_controller)
    d = x0.shape[0]
    problem = _CycleProblem(
        system,
        where,
        args,
        solver,
        stepsize_controller,
        ode_max_steps,
        jnp.zeros((d,), dtype),
        jnp.zeros((d,), dtype),
    )
    if amplitude is None:
        amplitude = 1e-3 * (1 + jnp.max(jnp.abs(x0)))
    eps = jnp.asarray(amplitude, dtype)
    n_bisect = 48 if f64 else 24
    branch = _cycle_continuation(
        problem,
        s,
        eps,
        opts,
        direction,
        max_bifurcations,
        n_save,
        n_bisect,
    )
    if throw:
        branch = eqx.tree_at(
            lambda b: b.parameter,
            branch,
            raise_if_failed(
                branch.result,
                branch.parameter,
                lambda _: (
                    "In `dynjax.cycle_continuation`: the correction of the start "
                    "onto a cycle, or a continuation step, failed. From an orbit, "
                    "give one found by `dynjax.find_periodic_orbit` at `p0`. From "
                    "a Hopf point, check that the branch was computed for this "
                    "system and parameter (`f(x) = 0` with an eigenvalue "
                    "`i omega` there), or try a smaller `amplitude`. Otherwise "
                    "lower `ds` and `ds_min`, raise `max_newton`, or loosen "
                    "`rtol` / `atol` to what the integration's tolerances can meet."
                ),
            ),
        )
    return branch
