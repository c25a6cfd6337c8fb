import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Complex, Float, Int

from .._custom_types import Args, RealScalarLike, StateLike
from .._results import RESULTS
from .._system import AbstractFlow
from .._system._checks import conform


class PeriodicOrbit(eqx.Module):
    """A periodic orbit returned by `dynjax.find_periodic_orbit`.

    **Attributes:**

    - `x0`: a point on the orbit, shape `(d,)`.
    - `period`: the period `T`.
    - `multipliers`: the Floquet multipliers (eigenvalues of the monodromy matrix),
        complex, shape `(d,)`, sorted by decreasing modulus.
    - `trivial_index`: the index in `multipliers` of the trivial multiplier (the
        one closest to 1, which belongs to the direction of the flow).
    - `monodromy`: the monodromy matrix `D phi_T(x0)`, shape `(d, d)`.
    - `xs`: `n_save` states equally spaced in time over one period, shape
        `(n_save, d)` (`xs[0] = x0`), for plotting.
    - `residual`: the max-norm of `phi_T(x0) - x0`.
    - `result`: a `dynjax.RESULTS` code.
    - `num_steps`: Newton iterations.
    """

    x0: Float[Array, " d"]
    period: Float[Array, ""]
    multipliers: Complex[Array, " d"]
    trivial_index: Int[Array, ""]
    monodromy: Float[Array, "d d"]
    xs: Float[Array, "n d"]
    residual: Float[Array, ""]
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


@eqx.filter_jit
def _find_orbit(
    flow,
    x0,
    period_guess,
    n_segments,
    args,
    solver,
    root_finder,
    controller,
    ode_max_steps,
    max_steps,
    n_save,
    throw,
):
    d = x0.shape[0]
    m = n_segments
    ref = x0
    f_ref = flow.vector_field(0.0, ref, args)
    f_ref = f_ref / jnp.linalg.norm(f_ref)

    def segment(x, T):
        return _flow_map(flow, x, T / m, args, solver, controller, ode_max_steps)[0]

    # Initial multiple-shooting nodes: the guessed trajectory at T k / m.
    if m == 1:
        nodes = x0[None]
    else:

        def advance(x, _):
            y = segment(x, period_guess)
            return y, x

        _, nodes = jax.lax.scan(advance, x0, None, length=m)
    y0 = jnp.concatenate([nodes.reshape(-1), jnp.reshape(period_guess, (1,))])

    def residual(y, _):
        X = y[:-1].reshape(m, d)
        T = y[-1]
        ends = jax.vmap(lambda x: segment(x, T))(X)
        gaps = ends - jnp.roll(X, -1, axis=0)
        phase = jnp.dot(X[0] - ref, f_ref)  # x0 stays on the plane through the guess
        return jnp.concatenate([gaps.reshape(-1), phase[None]])

    sol = optx.root_find(residual, root_finder, y0, max_steps=max_steps, throw=False)
    X = sol.value[:-1].reshape(m, d)
    x_star = X[0]
    T = sol.value[-1]
    ts = jnp.linspace(0.0, T, n_save)
    term = dfx.ODETerm(lambda t, y, a: flow.vector_field(t, y, a))

    def orbit(x):
        sol_ = dfx.diffeqsolve(
            term,
            solver,
            0.0,
            T,
            None,
            x,
            args=args,
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=controller,
            max_steps=ode_max_steps,
            throw=False,
            adjoint=dfx.ForwardMode(),
        )
        return sol_.ys[-1], (sol_.ys, sol_.result)

    # One solve gives the samples and, through its tangents (the variational
    # equation), the monodromy matrix.
    M, (xs, ode_result) = jax.jacfwd(orbit, has_aux=True)(x_star)
    res = jnp.max(jnp.abs(xs[-1] - x_star))
    mu = jnp.linalg.eigvals(M)
    mu = mu[jnp.argsort(-jnp.abs(mu), stable=True)]
    trivial = jnp.argmin(jnp.abs(mu - 1.0))
    speed = jnp.linalg.norm(flow.vector_field(0.0, x_star, args))
    scale = 1.0 + jnp.max(jnp.abs(x_star))
    ok = (
        (sol.result == optx.RESULTS.successful)
        & (T > 1e-6 * period_guess)  # not the trivial solution T = 0
        & jnp.isfinite(res)
        & (speed > 1e-6 * scale)  # not collapsed onto an equilibrium
    )
    result = RESULTS.where(ok, RESULTS.successful, RESULTS.not_converged)
    ode_result = RESULTS.promote(ode_result)
    result = RESULTS.where(ode_result == RESULTS.successful, result, ode_result)
    # `throw` is traced, so both settings share one compilation.
    x_star = result.error_if(x_star, throw & (result != RESULTS.successful))
    return PeriodicOrbit(
        x0=x_star,
        period=T,
        multipliers=mu,
        trivial_index=trivial,
        monodromy=M,
        xs=xs,
        residual=res,
        result=result,
        num_steps=sol.stats["num_steps"],
    )


def find_periodic_orbit(
    flow: AbstractFlow,
    x0: StateLike,
    period_guess: RealScalarLike,
    *,
    n_segments: int = 1,
    args: Args = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 50,
    root_finder: optx.AbstractRootFinder | None = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    ode_max_steps: int = 2**14,
    n_save: int = 201,
    throw: bool = True,
) -> PeriodicOrbit:
    r"""Find a periodic orbit of an autonomous flow by (multiple) shooting.

    With `m = n_segments` nodes `X_0, ..., X_{m-1}` and the period `T` as unknowns,
    Newton's method (`optimistix.Newton`, with derivatives by forward-mode
    differentiation through `diffrax.diffeqsolve`) solves

    $$\phi_{T/m}(X_i) - X_{i+1 \bmod m} = 0, \qquad (X_0 - x_0) \cdot f(x_0) = 0,$$

    where the last (phase) condition pins `X_0` to the hyperplane through the
    guess `x0` orthogonal to the flow, removing the freedom to slide along the
    orbit. `m > 1` (multiple shooting) keeps each integration short, which helps
    for unstable orbits. The Floquet multipliers are the eigenvalues of the
    monodromy matrix `M = D phi_T(x*)` (computed with `jax.jacfwd` through the
    solve, i.e. the variational equation); one of them, the trivial multiplier,
    equals 1 (eigenvector `f(x*)`), and by Liouville's formula their product is
    `exp(int_0^T tr Df(x(t)) dt)`.

    **Arguments:**

    - `flow`: an autonomous dynjax flow.
    - `x0`: a guess of a point on the orbit, shape `(d,)`.
    - `period_guess`: a guess of the period.
    - `n_segments`: the number of shooting segments (1: single shooting).
    - `args`: run-time arguments.
    - `rtol`, `atol`: Newton tolerances (when `root_finder` is not given);
        default `1e-9` in float64, `1e-4` in float32.
    - `max_steps`: Newton iteration budget.
    - `root_finder`: any `optimistix.AbstractRootFinder`.
    - `solver`, `stepsize_controller`, `ode_max_steps`: the diffrax integration
        (default `Tsit5` with `PIDController(rtol=1e-11, atol=1e-12)` in float64).
    - `n_save`: number of states saved over one period in `PeriodicOrbit.xs`.
    - `throw`: raise on failure; otherwise report it in `result`.

    **Returns:**

    A `dynjax.PeriodicOrbit`.

    !!! Example

        ```python
        vdp = dynjax.systems.VanDerPol(mu=1.0)
        orbit = dynjax.find_periodic_orbit(vdp, jnp.array([2.0, 0.0]), 6.5)
        orbit.period  # 6.6633
        ```

    **References:** U. M. Ascher, R. M. M. Mattheij and R. D. Russell, *Numerical
    Solution of Boundary Value Problems for ODEs* (1995), Ch. 4 (multiple
    shooting); Yu. A. Kuznetsov, *Elements of Applied Bifurcation Theory*, 3rd
    ed. (2004), Section 1.5 (Floquet multipliers, Liouville's formula).
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
    flow, x0, args = conform(flow, x0, verb="find_periodic_orbit", args=args)
    if isinstance(period_guess, (int, float)) and not period_guess > 0:
        raise ValueError(f"`period_guess` must be positive, got {period_guess}.")
    period_guess = jnp.asarray(period_guess, dtype=x0.dtype)
    double = jnp.finfo(x0.dtype).bits >= 64
    rtol = (1e-9 if double else 1e-4) if rtol is None else rtol
    atol = (1e-9 if double else 1e-4) if atol is None else atol
    solver = dfx.Tsit5() if solver is None else solver
    if stepsize_controller is None:
        if jnp.finfo(x0.dtype).bits >= 64:
            stepsize_controller = dfx.PIDController(rtol=1e-11, atol=1e-12)
        else:
            stepsize_controller = dfx.PIDController(rtol=1e-6, atol=1e-7)
    if root_finder is None:
        root_finder = optx.Newton(rtol=rtol, atol=atol)
    return _find_orbit(
        flow,
        x0,
        period_guess,
        n_segments,
        args,
        solver,
        root_finder,
        stepsize_controller,
        ode_max_steps,
        max_steps,
        n_save,
        jnp.asarray(throw),
    )
