import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Complex, Float, Int

from .._custom_types import Args, RealScalarLike, StateLike
from .._system import AbstractDrivenMap, AbstractFlow, AbstractMap, AbstractSystem
from .._system._checks import check_state, conform
from .._system._jacobian import dense_jacobian


class Stability(eqx.Enumeration):
    """The linear stability class of an equilibrium (flows) or fixed point (maps).

    For flows the eigenvalues `lambda` of the Jacobian are compared with the
    imaginary axis (`Re lambda < 0` is stable); for maps with the unit circle
    (`|lambda| < 1` is stable). "Focus" means that at least one complex pair is
    present (spiralling), "node" that all eigenvalues are real.
    """

    stable_node = "stable node"
    unstable_node = "unstable node"
    stable_focus = "stable focus"
    unstable_focus = "unstable focus"
    saddle = "saddle"
    saddle_focus = "saddle-focus"
    center = "center"
    non_hyperbolic = "non-hyperbolic"


class Linearization(eqx.Module):
    """The linearization of a system at an equilibrium or fixed point.

    Returned by `dynjax.linearize`.

    **Attributes:**

    - `x_star`: the point linearized at, shape `(d,)`.
    - `jacobian`: the Jacobian `Df(x*)` (flows) or `DF^p(x*)` (maps, period `p`).
    - `eigenvalues`: complex, shape `(d,)`, sorted by decreasing growth
        (real part for flows, modulus for maps).
    - `eigenvectors`: complex, shape `(d, d)`, column `i` belongs to eigenvalue `i`.
    - `stability`: a `dynjax.Stability` item; `dynjax.Stability[lin.stability]`
        gives its name as a string.
    - `n_stable`, `n_unstable`, `n_center`: dimensions of the stable, unstable and
        center eigenspaces.
    - `is_hyperbolic`: `n_center == 0`.
    - `is_map`: whether the classification is relative to the unit circle.
    """

    x_star: Float[Array, " d"]
    jacobian: Float[Array, "d d"]
    eigenvalues: Complex[Array, " d"]
    eigenvectors: Complex[Array, "d d"]
    stability: Stability
    n_stable: Int[Array, ""]
    n_unstable: Int[Array, ""]
    n_center: Int[Array, ""]
    is_hyperbolic: Bool[Array, ""]
    is_map: bool = eqx.field(static=True)

    @property
    def stability_name(self) -> str:
        """The stability class as a string (outside `jit`)."""
        return Stability[self.stability]


def _growth(eigenvalues, is_map):
    if is_map:
        return jnp.log(jnp.abs(eigenvalues))
    return jnp.real(eigenvalues)


def _classify(eigenvalues, is_map: bool, tol):
    g = _growth(eigenvalues, is_map)
    n_unstable = jnp.sum(g > tol)
    n_stable = jnp.sum(g < -tol)
    n_center = eigenvalues.shape[0] - n_unstable - n_stable
    complex_ = jnp.any(jnp.abs(jnp.imag(eigenvalues)) > tol)
    # A center: every eigenvalue on the axis/circle and none at 0 (flows) or 1 (maps).
    at_origin = jnp.abs(eigenvalues - (1.0 if is_map else 0.0)) <= tol
    all_center = n_center == eigenvalues.shape[0]
    center = all_center & ~jnp.any(at_origin) & complex_
    S = Stability
    hyperbolic_class = jnp.where(
        n_unstable == 0,
        jnp.where(complex_, S.stable_focus._value, S.stable_node._value),
        jnp.where(
            n_stable == 0,
            jnp.where(complex_, S.unstable_focus._value, S.unstable_node._value),
            jnp.where(complex_, S.saddle_focus._value, S.saddle._value),
        ),
    )
    value = jnp.where(
        n_center > 0,
        jnp.where(center, S.center._value, S.non_hyperbolic._value),
        hyperbolic_class,
    )
    stability = S.saddle  # any item; replace its value below
    stability = eqx.tree_at(lambda s: s._value, stability, value.astype(jnp.int32))
    return stability, n_stable, n_unstable, n_center


def _evolution(system: AbstractSystem, t, args, period: int):
    if isinstance(system, AbstractFlow):
        if period != 1:
            raise ValueError(
                "`period` is for maps (period-p points); a flow's periodic orbits are "
                "found with `dynjax.find_periodic_orbit`."
            )
        return lambda x: system.vector_field(t, x, args), False
    if isinstance(system, AbstractMap):

        def F(x):
            for k in range(period):
                x = system.step(t + k, x, args)
            return x

        return F, True
    if isinstance(system, AbstractDrivenMap):
        raise ValueError(
            "A driven map has no equilibria without fixing its input: wrap it as an "
            "autonomous `dynjax.Map(lambda n, x, p: driven.step(x, u, None))` at a "
            "constant input `u`."
        )
    raise ValueError(
        f"`system` must be a dynjax flow or map, got {type(system).__name__}."
    )


@eqx.filter_jit
def _linearize(system, x_star, t, args, period, tol):
    f, is_map = _evolution(system, t, args, period)
    J = dense_jacobian(f, x_star, "dynjax.linearize")
    eigenvalues, eigenvectors = jnp.linalg.eig(J)
    order = jnp.argsort(-_growth(eigenvalues, is_map), stable=True)
    eigenvalues = eigenvalues[order]
    eigenvectors = eigenvectors[:, order]
    stability, n_s, n_u, n_c = _classify(eigenvalues, is_map, tol)
    return Linearization(
        x_star=x_star,
        jacobian=J,
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        stability=stability,
        n_stable=n_s,
        n_unstable=n_u,
        n_center=n_c,
        is_hyperbolic=n_c == 0,
        is_map=is_map,
    )


def linearize(
    system: AbstractSystem,
    x_star: StateLike,
    *,
    t: RealScalarLike = 0.0,
    period: int = 1,
    args: Args = None,
    tol: float = 1e-8,
) -> Linearization:
    r"""Linearize a system at an equilibrium or fixed point and classify it.

    The Jacobian `J = Df(x*)` (flow) or `J = D(F^p)(x*)` (map, period `p`) is formed
    with `jax.jacfwd` and diagonalized with `jnp.linalg.eig`. Each eigenvalue is
    stable, unstable or center:

    - flows: `Re lambda < -tol`, `Re lambda > tol`, `|Re lambda| <= tol`;
    - maps: `log|lambda| < -tol`, `> tol`, `|log|lambda|| <= tol`.

    The class (a `dynjax.Stability` item) is: *stable/unstable node* (all
    eigenvalues stable/unstable and real), *stable/unstable focus* (same, with a
    complex pair), *saddle* (both kinds, all real), *saddle-focus* (both kinds, a
    complex pair; needs `d >= 3`), *center* (every eigenvalue on the axis/circle,
    in complex pairs: the linearization cannot decide stability, the nonlinear
    terms do), *non-hyperbolic* (any other case with an eigenvalue on the
    axis/circle). By Hartman-Grobman, hyperbolic classes are also the classes of
    the nonlinear system near `x*`.

    **Arguments:**

    - `system`: a dynjax flow or map.
    - `x_star`: the equilibrium or fixed point, shape `(d,)`. It is not checked to
        be one; find it with `dynjax.find_equilibria`.
    - `t`: the time (flows) or iteration index (maps) of the linearization.
    - `period`: for maps, linearize `F^p` (the product of the Jacobians along a
        period-`p` orbit). On periodic coordinates (`coordinate_periods`) this is
        also the Jacobian of a winding orbit `F^p(x) = x + m P`, and it is the same
        whether or not the map reduces its output modulo `P` (the reduction is a
        locally constant shift).
    - `args`: run-time arguments passed to the system.
    - `tol`: the width of the band around the imaginary axis / unit circle counted
        as "on" it.

    **Returns:**

    A `dynjax.Linearization`.

    !!! Example

        ```python
        lin = dynjax.linearize(dynjax.systems.Lorenz(), jnp.zeros(3))
        dynjax.Stability[lin.stability]  # 'saddle'
        ```

    **Reference:** P. Hartman, "A lemma in the theory of structural stability of
    differential equations", Proc. AMS 11, 610-620 (1960); S. H. Strogatz,
    *Nonlinear Dynamics and Chaos*, 2nd ed., Sections 5.2 and 6.3.
    """
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"`period` must be a positive int, got {period!r}.")
    _evolution(system, t, args, period)  # structural checks first
    system, x_star, args = conform(
        system, x_star, verb="linearize", args=args, t=t, name="x_star"
    )
    return _linearize(system, x_star, t, args, period, tol)


class MaxStableStep(eqx.Module):
    """The explicit-Euler step-size bound returned by `dynjax.max_stable_step`.

    **Attributes:**

    - `h_max`: the largest stable step; Euler iteration is asymptotically stable
        for `0 < h < h_max`.
    - `limiting_eigenvalue`: the eigenvalue of the Jacobian that sets the bound.
    - `eigenvalues`: all eigenvalues of the Jacobian at `x*`.
    """

    h_max: Float[Array, ""]
    limiting_eigenvalue: Complex[Array, ""]
    eigenvalues: Complex[Array, " d"]


@eqx.filter_jit
def _max_stable_step(flow, x_star, t, args, throw):
    J = dense_jacobian(lambda x: flow.vector_field(t, x, args), x_star)
    lam = jnp.linalg.eigvals(J)
    re = jnp.real(lam)
    # |1 + h lambda|^2 < 1  <=>  h (2 Re lambda + h |lambda|^2) < 0  <=>
    # h < -2 Re lambda / |lambda|^2  (for Re lambda < 0).
    bounds = jnp.where(re < 0, -2 * re / jnp.abs(lam) ** 2, 0.0)
    i = jnp.argmin(bounds)
    h_max = bounds[i]
    if throw:
        h_max = eqx.error_if(
            h_max,
            jnp.any(re >= 0),
            "`x_star` is not a stable equilibrium (an eigenvalue has Re >= 0), so no "
            "Euler step keeps it stable. Check `x_star` with `dynjax.linearize`.",
        )
    return MaxStableStep(h_max=h_max, limiting_eigenvalue=lam[i], eigenvalues=lam)


def max_stable_step(
    flow: AbstractFlow,
    x_star: StateLike,
    *,
    method: str = "euler",
    t: RealScalarLike = 0.0,
    args: Args = None,
    throw: bool = True,
) -> MaxStableStep:
    r"""The largest explicit Euler step that keeps a stable equilibrium stable.

    The Euler map `x -> x + h f(x)` has Jacobian `I + h J` at `x*`, with eigenvalues
    `1 + h lambda`. The fixed point stays stable iff `|1 + h lambda| < 1` for every
    eigenvalue `lambda` of `J`, i.e.

    $$h < h_{\max} = \min_\lambda \frac{-2\,\mathrm{Re}\,\lambda}{|\lambda|^2},$$

    exactly, complex eigenvalues included. For real negative eigenvalues this is
    `2 / rho` with `rho` the spectral radius of `J`. Gradient descent with learning
    rate `h` on a loss `L` is the Euler map of the gradient flow `dx/dt = -grad L`,
    whose Jacobian is `-Hess L`: for a quadratic with largest curvature `L_max`
    this gives `h_max = 2 / L_max` (see `dynjax.max_learning_rate`).

    **Arguments:**

    - `flow`: a dynjax flow.
    - `x_star`: a stable equilibrium of it.
    - `method`: the explicit scheme; only `"euler"` is supported.
    - `t`, `args`: time and run-time arguments of the vector field.
    - `throw`: raise if `x_star` is not stable (some `Re lambda >= 0`); with
        `throw=False` the returned `h_max` is then `0`.

    **Returns:**

    A `dynjax.MaxStableStep` (`h_max`, `limiting_eigenvalue`, `eigenvalues`).

    !!! Example

        ```python
        flow = dynjax.Flow(lambda t, x, A: A @ x, jnp.diag(jnp.array([-1.0, -4.0])))
        dynjax.max_stable_step(flow, jnp.zeros(2)).h_max  # 0.5 = 2 / 4
        ```

    **Reference:** E. Hairer and G. Wanner, *Solving Ordinary Differential
    Equations II*, Section IV.2 (stability function `R(z) = 1 + z` of Euler).
    """
    if method != "euler":
        raise ValueError(
            f"Unknown `method={method!r}`: only 'euler' (the explicit Euler map, as "
            "in gradient descent) is supported."
        )
    if not isinstance(flow, AbstractFlow):
        raise ValueError(
            "`max_stable_step` takes a flow; for a map, the stability of its fixed "
            "points is `dynjax.linearize(map, x_star)`."
        )
    flow, x_star, args = conform(
        flow, x_star, verb="max_stable_step", args=args, t=t, name="x_star"
    )
    return _max_stable_step(flow, x_star, t, args, throw)


@eqx.filter_jit
def _max_learning_rate(loss, x_star, args):
    H = jax.hessian(lambda x: loss(x, args))(x_star)
    curv = jnp.linalg.eigvalsh(0.5 * (H + H.T))
    return 2.0 / curv[-1]


def max_learning_rate(loss, x_star: StateLike, *, args: Args = None) -> Array:
    r"""The largest stable gradient-descent learning rate at a minimum, `2 / L_max`.

    Gradient descent `x -> x - eta grad L(x)` is the Euler map of the gradient
    flow with step `eta`; at a minimum the Jacobian of the flow is `-Hess L`,
    symmetric with eigenvalues `-L_i` (the curvatures), so
    `dynjax.max_stable_step` reduces to `eta_max = 2 / max_i L_i`.

    **Arguments:**

    - `loss`: a scalar function `loss(x, args)`.
    - `x_star`: a (local) minimum, shape `(d,)`.
    - `args`: passed to `loss`.

    **Returns:**

    `2 / L_max`, with `L_max` the largest eigenvalue of the Hessian at `x_star`.

    **Reference:** Y. Nesterov, *Introductory Lectures on Convex Optimization*
    (2004), Section 1.2.3.
    """
    x_star = check_state(x_star, None, "x_star")
    return _max_learning_rate(loss, x_star, args)


class LinearModes(eqx.Module):
    r"""The modal decomposition of a linear flow `dx/dt = A x`.

    `x(t) = sum_k c_k exp(lambda_k t) v_k`. Returned by `dynjax.linear_modes`.

    **Attributes:**

    - `eigenvalues`: `lambda_k`, complex, shape `(d,)`, sorted by decreasing real part.
    - `eigenvectors`: `v_k` as columns, complex, shape `(d, d)`.
    - `decay_rates`: `-Re lambda_k` (negative for growing modes).
    - `frequencies`: angular frequencies `|Im lambda_k|` (0 for real modes).
    - `coefficients`: `c = V^{-1} x0` when an initial state was given, else `None`.
    """

    eigenvalues: Complex[Array, " d"]
    eigenvectors: Complex[Array, "d d"]
    decay_rates: Float[Array, " d"]
    frequencies: Float[Array, " d"]
    coefficients: Complex[Array, " d"] | None

    def evaluate(self, t: RealScalarLike) -> Float[Array, " d"]:
        """`x(t) = V diag(exp(lambda t)) c`, the mode sum (needs `coefficients`)."""
        if self.coefficients is None:
            raise ValueError("Pass `x0=` to `dynjax.linear_modes` to evaluate modes.")
        return jnp.real(
            self.eigenvectors @ (jnp.exp(self.eigenvalues * t) * self.coefficients)
        )


def _linear_matrix(system, x_star, args):
    if not isinstance(system, AbstractFlow):
        raise ValueError("Linear modes are defined for flows `dx/dt = A x`.")
    return dense_jacobian(lambda x: system.vector_field(0.0, x, args), x_star)


@eqx.filter_jit
def _linear_modes(system, x_star, x0, args):
    A = _linear_matrix(system, x_star, args)
    lam, V = jnp.linalg.eig(A)
    order = jnp.argsort(-jnp.real(lam), stable=True)
    lam, V = lam[order], V[:, order]
    coeffs = None if x0 is None else jnp.linalg.solve(V, (x0 - x_star).astype(V.dtype))
    return LinearModes(
        eigenvalues=lam,
        eigenvectors=V,
        decay_rates=-jnp.real(lam),
        frequencies=jnp.abs(jnp.imag(lam)),
        coefficients=coeffs,
    )


def linear_modes(
    system: AbstractFlow,
    x0: StateLike | None = None,
    *,
    x_star: StateLike | None = None,
    args: Args = None,
) -> LinearModes:
    r"""The modal decomposition of a linear flow (e.g. `dynjax.systems.Linear`).

    For `dx/dt = A (x - x*)`, with `A = V diag(lambda) V^{-1}` (`A` is the Jacobian
    at `x*`, so any linear or affine flow works, and for a nonlinear flow this is
    the decomposition of its linearization),

    $$x(t) - x^* = \sum_k c_k e^{\lambda_k t} v_k, \quad c = V^{-1}(x_0 - x^*).$$

    Each mode decays at rate `-Re lambda_k` and, if complex, rotates with angular
    frequency `|Im lambda_k|` (a spiral of period `2 pi / |Im lambda_k|`).

    **Arguments:**

    - `system`: a linear (or affine) flow.
    - `x0`: optional initial state; then `coefficients` are filled in and
        `LinearModes.evaluate(t)` gives `x(t) - x*`.
    - `x_star`: the equilibrium (default: the origin).
    - `args`: run-time arguments.

    **Returns:**

    A `dynjax.LinearModes`. Defective (non-diagonalizable) `A` has no modal
    decomposition; use `dynjax.linear_flow` (matrix exponential) instead.
    """
    d = system.d
    if x0 is not None:
        x0 = check_state(x0, d)
        d = x0.shape[0]
    if x_star is None:
        if d is None:
            raise ValueError("Pass `x0=` or `x_star=`: the system does not know `d`.")
        x_star = jnp.zeros(d, dtype=x0.dtype if x0 is not None else float)
    system, x_star, args = conform(
        system, x_star, verb="linear_modes", args=args, name="x_star"
    )
    if x0 is not None:
        x0 = x0.astype(x_star.dtype)
    return _linear_modes(system, x_star, x0, args)


@eqx.filter_jit
def _linear_flow(system, x0, ts, x_star, args):
    A = _linear_matrix(system, x_star, args)
    return jax.vmap(lambda t: x_star + jsl.expm(t * A) @ (x0 - x_star))(ts)


def linear_flow(
    system: AbstractFlow,
    x0: StateLike,
    ts: Float[Array, " T"],
    *,
    x_star: StateLike | None = None,
    args: Args = None,
) -> Float[Array, "T d"]:
    r"""The exact flow of a linear system, `x(t) = x* + expm(t A) (x0 - x*)`.

    `A` is the Jacobian of the vector field at `x*` (default: the origin), so
    this is exact for `dx/dt = A (x - x*)` (e.g. `dynjax.systems.Linear`) and is
    the linearized flow otherwise. Uses `jax.scipy.linalg.expm` (Pade scaling
    and squaring), so it needs no integrator and works for defective `A`.

    **Arguments:**

    - `system`: a linear flow.
    - `x0`: the initial state, shape `(d,)`.
    - `ts`: the times, shape `(T,)`.
    - `x_star`, `args`: equilibrium and run-time arguments.

    **Returns:**

    The states at `ts`, shape `(T, d)`.

    **Reference:** N. J. Higham, "The scaling and squaring method for the matrix
    exponential revisited", SIAM J. Matrix Anal. Appl. 26, 1179-1193 (2005).
    """
    system, x0, args = conform(system, x0, verb="linear_flow", args=args)
    x_star = jnp.zeros_like(x0) if x_star is None else check_state(x_star, x0.shape[0])
    x_star = x_star.astype(x0.dtype)
    ts = jnp.asarray(ts, dtype=x0.dtype)
    if ts.ndim != 1:
        raise ValueError(f"`ts` must be a 1-D array of times, got shape {ts.shape}.")
    return _linear_flow(system, x0, ts, x_star, args)
