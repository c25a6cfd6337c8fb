"""`dynjax.stability_chart`: the equilibrium (flows) or fixed point (maps) and its
linear stability on a grid of two parameters, in one compiled, vmapped call."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Complex, Float, Int

from .._custom_types import Args, StateLike
from .._equilibria._linearize import _classify, _growth, Stability
from .._results import raise_if_failed, RESULTS
from .._system._base import AbstractFlow, AbstractMap, AbstractSystem
from .._system._checks import conform
from ._branch import _Problem, floats_as_arrays
from ._codim2 import _pair


class StabilityChart(eqx.Module):
    """The result of `dynjax.stability_chart` on an `(n1, n2)` grid of parameters.

    **Attributes:**

    - `parameter1`: shape `(n1,)`; `parameter2`: shape `(n2,)`; grid point `(i, j)`
        is `(parameter1[i], parameter2[j])`.
    - `states`: shape `(n1, n2, d)`, the equilibrium / fixed point found by
        Newton's method; where it did not converge, the start `x0` (finite, and
        flagged by `converged`).
    - `eigenvalues`: shape `(n1, n2, d)`, complex: of the Jacobian (flows) or of
        `D(G^period)` (maps) at `states`, sorted by decreasing real part /
        modulus.
    - `n_unstable`: shape `(n1, n2)`, the number of eigenvalues with
        `Re lambda > tol` (flows) or `log|mu| > tol` (maps); `-1` where Newton did
        not converge.
    - `stability`: a `dynjax.Stability` item whose value has shape `(n1, n2)`
        (meaningful where `converged`); `stability_names` gives strings.
    - `converged`: shape `(n1, n2)`, whether Newton's method converged to a
        finite point. Where it did not, there may be no equilibrium near `x0`.
    - `is_map`: whether stability is relative to the unit circle (static).
    - `result`: `RESULTS.successful`, or `RESULTS.not_converged` if any grid point
        did not converge.
    """

    parameter1: Float[Array, " n1"]
    parameter2: Float[Array, " n2"]
    states: Float[Array, "n1 n2 d"]
    eigenvalues: Complex[Array, "n1 n2 d"]
    n_unstable: Int[Array, "n1 n2"]
    stability: Stability
    converged: Bool[Array, "n1 n2"]
    is_map: bool = eqx.field(static=True)
    result: RESULTS

    @property
    def stability_names(self) -> np.ndarray:
        """The classes as strings, shape `(n1, n2)`, `"not converged"` where Newton
        did not converge (outside `jit`)."""
        table = np.empty(len(_STABILITY_ITEMS), dtype=object)
        for item in _STABILITY_ITEMS:
            table[int(np.asarray(item._value))] = Stability[item]
        values = np.asarray(self.stability._value)
        names = table[values]
        return np.where(np.asarray(self.converged), names, "not converged")


_STABILITY_ITEMS = tuple(
    getattr(Stability, name)
    for name in (
        "stable_node",
        "unstable_node",
        "stable_focus",
        "unstable_focus",
        "saddle",
        "saddle_focus",
        "center",
        "non_hyperbolic",
    )
)


@eqx.filter_jit
def _chart(problem, x0s, P1, P2, tol, rtol, atol, max_newton):
    solver = optx.Newton(rtol=rtol, atol=atol, linear_solver=lx.LU())

    def one(x0, p1, p2):
        p = (p1, p2)

        def R(x, prob):
            out = prob.evolve(x, p)
            return out - x if prob.is_map else out

        sol = optx.root_find(R, solver, x0, problem, max_steps=max_newton, throw=False)
        x = sol.value
        ok = (sol.result == optx.RESULTS.successful) & jnp.all(jnp.isfinite(x))
        x = jnp.where(ok, x, x0)
        lam = jnp.linalg.eigvals(problem.jacobian(x, p))
        lam = lam[jnp.argsort(-_growth(lam, problem.is_map), stable=True)]
        stability, _, n_unstable, _ = _classify(lam, problem.is_map, tol)
        return x, lam, jnp.where(ok, n_unstable, -1), stability, ok

    n1, n2 = P1.shape
    flat = lambda a: a.reshape((n1 * n2,) + a.shape[2:])  # noqa: E731
    x, lam, n_unstable, stability, ok = jax.vmap(one)(flat(x0s), flat(P1), flat(P2))
    grid = lambda a: a.reshape((n1, n2) + a.shape[1:])  # noqa: E731
    stability = eqx.tree_at(lambda s: s._value, stability, grid(stability._value))
    result = RESULTS.where(jnp.all(ok), RESULTS.successful, RESULTS.not_converged)
    return StabilityChart(
        parameter1=P1[:, 0],
        parameter2=P2[0, :],
        states=grid(x),
        eigenvalues=grid(lam),
        n_unstable=grid(n_unstable),
        stability=stability,
        converged=grid(ok),
        is_map=problem.is_map,
        result=result,
    )


def stability_chart(
    system: AbstractSystem,
    parameters: tuple[str | Callable, str | Callable],
    values1: ArrayLike,
    values2: ArrayLike,
    x0: StateLike | Callable,
    *,
    period: int = 1,
    tol: float = 1e-8,
    rtol: float | None = None,
    atol: float | None = None,
    max_newton: int = 40,
    args: Args = None,
    throw: bool = False,
) -> StabilityChart:
    r"""The equilibrium (flows) or fixed / period-`p` point (maps) and its linear
    stability at every point of a grid of two parameters, in one compiled call.

    At each grid point `(values1[i], values2[j])`, Newton's method (optimistix)
    solves `f(x) = 0` (flows) or `G^period(x) - x = 0` (maps) from `x0`; the
    Jacobian's eigenvalues are classified as in `dynjax.linearize` (a
    `dynjax.Stability` class and the number of unstable eigenvalues). The grid is
    one `vmap` of the single-point computation, so a chart of another grid of the
    same shape (and the same system class, parameter names and options) reuses
    the compilation. Grid points are independent: each Newton solve starts from
    `x0`, so where several equilibria exist the one found is the one `x0` leads
    to (give `x0` as a function of the parameters to choose).

    **Arguments:**

    - `system`: a dynjax flow or map (autonomous).
    - `parameters`: a pair of two distinct scalar float fields, as names or
        selectors (as in `dynjax.continuation`).
    - `values1`, `values2`: shapes `(n1,)` and `(n2,)`, the grid.
    - `x0`: the Newton start: an array of shape `(d,)` for every grid point, or a
        function `x0(p1, p2) -> (d,)` (vmapped over the grid, outside the compiled
        call).
    - `period`: for maps, fixed points of `G^period`.
    - `tol`: the band around the imaginary axis / unit circle counted as "on" it
        (as in `dynjax.linearize`).
    - `rtol`, `atol`, `max_newton`: Newton's tolerances (defaults `1e-10, 1e-12`
        in float64, `1e-5, 1e-6` in float32) and step budget.
    - `args`: the system's run-time arguments.
    - `throw`: raise if Newton fails at any grid point. Off by default: a chart
        usually covers regions without an equilibrium near `x0`, which are
        reported in `converged` (and `n_unstable == -1`), never as `NaN`.

    **Returns:**

    A `dynjax.StabilityChart`.

    **Raises:**

    `ValueError` if `system` is not a flow or map, `parameters` is not a pair of
    distinct scalar float fields, `values1` / `values2` are not 1-d, `period` is
    bad, or `x0` (or what it returns) is not a state of the system.

    **References:** Yu. A. Kuznetsov, *Elements of Applied Bifurcation Theory*,
    3rd ed. (Springer, 2004), sections 2.1-2.2 and chapter 8 (two-parameter
    bifurcation diagrams).
    """
    if not isinstance(system, (AbstractFlow, AbstractMap)):
        raise ValueError(
            "`stability_chart` takes a flow or a map (autonomous), got "
            f"{type(system).__name__}."
        )
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"`period` must be a positive int, got {period!r}.")
    if period != 1 and isinstance(system, AbstractFlow):
        raise ValueError("`period` is for maps; a flow's equilibria have none.")
    pair = _pair(system, parameters)
    v1, v2 = np.asarray(values1), np.asarray(values2)
    if v1.ndim != 1 or v2.ndim != 1 or v1.size == 0 or v2.size == 0:
        raise ValueError(
            "`values1` and `values2` must be non-empty 1-d arrays (the grid's axes), "
            f"got shapes {v1.shape} and {v2.shape}."
        )
    if callable(x0):
        P1, P2 = jnp.meshgrid(jnp.asarray(values1), jnp.asarray(values2), indexing="ij")
        x0s = jax.vmap(jax.vmap(x0))(P1, P2)
        x_ref = x0s[0, 0]
    else:
        x_ref = x0
    system, x_ref, args = conform(system, x_ref, verb="stability_chart", args=args)
    system = floats_as_arrays(system, x_ref.dtype)
    dtype = x_ref.dtype
    P1, P2 = jnp.meshgrid(
        jnp.asarray(values1, dtype), jnp.asarray(values2, dtype), indexing="ij"
    )
    if callable(x0):
        x0s = x0s.astype(dtype)
    else:
        x0s = jnp.broadcast_to(x_ref, P1.shape + x_ref.shape)
    f64 = jnp.finfo(dtype).bits >= 64
    problem = _Problem(system, pair, period, args)
    chart = _chart(
        problem,
        x0s,
        P1,
        P2,
        tol,
        (1e-10 if f64 else 1e-5) if rtol is None else rtol,
        (1e-12 if f64 else 1e-6) if atol is None else atol,
        max_newton,
    )
    if throw:
        chart = eqx.tree_at(
            lambda c: c.states,
            chart,
            raise_if_failed(
                chart.result,
                chart.states,
                lambda _: (
                    "In `dynjax.stability_chart`: Newton's method did not converge "
                    f"at {int(np.sum(~np.asarray(chart.converged)))} grid point(s) "
                    "(see `converged`)."
                ),
            ),
        )
    return chart
