import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, StateLike
from .._results import RESULTS
from .._system import AbstractFlow, AbstractMap
from .._system._checks import conform


class Manifold(eqx.Module):
    """A one-dimensional invariant manifold, returned by `dynjax.stable_manifold`
    and `dynjax.unstable_manifold`.

    **Attributes:**

    - `x_star`: the saddle, shape `(d,)`.
    - `branches`: the two branches, shape `(2, n_points, d)`; branch 0 leaves
        `x_star` along `+eigenvector`, branch 1 along `-eigenvector`; row 0 of each
        is `x_star +- eps eigenvector`, and points are ordered away from `x_star`.
    - `ts`: the integration time of each point, shape `(n_points,)` (negative for
        stable manifolds, which are grown backward in time).
    - `eigenvalue`: the eigenvalue whose eigenvector spans the manifold's tangent.
    - `eigenvector`: the unit eigenvector (real), shape `(d,)`.
    - `result`: a `dynjax.RESULTS` code.
    """

    x_star: Float[Array, " d"]
    branches: Float[Array, "2 n d"]
    ts: Float[Array, " n"]
    eigenvalue: Float[Array, ""]
    eigenvector: Float[Array, " d"]
    result: RESULTS


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
    J = jax.jacfwd(lambda x: flow.vector_field(0.0, x, args))(x_star)
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
    ok = jnp.all(results._value == RESULTS.successful._value) & jnp.all(
        jnp.isfinite(ys)
    )
    result = RESULTS.where(ok, RESULTS.successful, RESULTS.nonfinite_state)
    if throw:
        ys = result.error_if(ys, result != RESULTS.successful)
    return Manifold(x_star, ys, ts, eigenvalue, v, result)


def _manifold(
    flow,
    x_star,
    unstable,
    t_end,
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
    if isinstance(t_end, (int, float)) and not t_end > 0:
        raise ValueError(f"`t_end` must be positive, got {t_end}.")
    verb = "unstable_manifold" if unstable else "stable_manifold"
    flow, x_star, args = conform(flow, x_star, verb=verb, args=args, name="x_star")
    double = jnp.finfo(x_star.dtype).bits >= 64
    if eps is None:
        eps = (1e-7 if double else 1e-3) * (1.0 + jnp.max(jnp.abs(x_star)))
    solver = dfx.Tsit5() if solver is None else solver
    if stepsize_controller is None:
        if jnp.finfo(x_star.dtype).bits >= 64:
            stepsize_controller = dfx.PIDController(rtol=1e-11, atol=1e-13)
        else:
            stepsize_controller = dfx.PIDController(rtol=1e-6, atol=1e-8)
    return _grow(
        flow,
        x_star,
        jnp.asarray(unstable),
        jnp.asarray(t_end, x_star.dtype),
        n_points,
        jnp.asarray(eps, x_star.dtype),
        args,
        solver,
        stepsize_controller,
        max_steps,
        throw,
    )


_DOC = r"""The one-dimensional {kind} manifold of a saddle of a flow.

    `W^{s_or_u}(x*)` is tangent at `x*` to the eigenvector `v` of the single
    {kind} eigenvalue. Both branches are grown from `x* +- eps v` by integrating
    {direction} in time for `t_end` time units with diffrax; the linear
    approximation error at the start is `O(eps^2)`, and it is damped by the
    {damp} directions as the curve grows.

    **Arguments:**

    - `flow`: a dynjax flow.
    - `x_star`: a saddle (an equilibrium with exactly one real {kind} eigenvalue).
    - `t_end`: integration time of each branch.
    - `n_points`: points saved per branch (equally spaced in time).
    - `eps`: initial offset along the eigenvector (default
        `1e-7 (1 + max|x*|)` in float64, `1e-3 (1 + max|x*|)` in float32).
    - `args`, `solver`, `stepsize_controller`, `max_steps`: the diffrax integration
        (default `Tsit5`, `PIDController(rtol=1e-11, atol=1e-13)` in float64).
    - `throw`: raise on integration failure (otherwise reported in `result`).
        A point whose {kind} manifold is not 1-D always raises.

    **Returns:**

    A `dynjax.Manifold` with both branches.

    **Reference:** S. H. Strogatz, *Nonlinear Dynamics and Chaos*, Section 6.3;
    B. Krauskopf et al., "A survey of methods for computing (un)stable manifolds
    of vector fields", Int. J. Bifurcation Chaos 15, 763-791 (2005).
    """


def unstable_manifold(
    flow: AbstractFlow,
    x_star: StateLike,
    *,
    t_end: RealScalarLike = 10.0,
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
    t_end: RealScalarLike = 10.0,
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
        n_points,
        eps,
        args,
        solver,
        stepsize_controller,
        max_steps,
        throw,
    )


unstable_manifold.__doc__ = _DOC.format(
    kind="unstable", direction="forward", damp="stable", s_or_u="u"
)
stable_manifold.__doc__ = _DOC.format(
    kind="stable", direction="backward", damp="unstable", s_or_u="s"
)
