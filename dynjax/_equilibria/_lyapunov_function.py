from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._custom_types import Args, StateLike
from .._system import AbstractFlow, AbstractMap
from .._system._checks import conform


class LyapunovCheck(eqx.Module):
    """The verdict of `dynjax.check_lyapunov_function` on a set of samples.

    **Attributes:**

    - `is_lyapunov`: all three conditions hold on every sample.
    - `v_star`: `V(x*)` (should be 0).
    - `positive`: `V(x) > 0` at every sample away from `x*`.
    - `decreasing`: `dV/dt <= 0` (or `< 0` with `strict=True`) at every sample
        away from `x*`; for maps `V(F(x)) - V(x)` replaces `dV/dt`.
    - `min_v`, `argmin_v`: the smallest `V` over the samples away from `x*`, and
        where (the worst positivity violation if `min_v <= 0`).
    - `max_dv`, `argmax_dv`: the largest `dV/dt` away from `x*`, and where (the
        worst decrease violation).
    - `values`, `derivatives`: `V` and `dV/dt` at every sample.
    """

    is_lyapunov: Bool[Array, ""]
    v_star: Float[Array, ""]
    positive: Bool[Array, ""]
    decreasing: Bool[Array, ""]
    min_v: Float[Array, ""]
    argmin_v: Float[Array, " d"]
    max_dv: Float[Array, ""]
    argmax_dv: Float[Array, " d"]
    values: Float[Array, " n"]
    derivatives: Float[Array, " n"]


def _lie_derivative(system, V, x, args):
    if isinstance(system, AbstractFlow):
        v, dv = jax.jvp(V, (x,), (system.vector_field(0.0, x, args),))
        return v, dv
    return V(x), V(system.step(0, x, args)) - V(x)


@eqx.filter_jit
def _check(system, V, x_star, samples, args, strict, exclude_radius, tol):
    v_star = V(x_star)
    values, derivatives = jax.vmap(lambda x: _lie_derivative(system, V, x, args))(
        samples
    )
    away = jnp.linalg.norm(samples - x_star, axis=1) > exclude_radius
    v_masked = jnp.where(away, values, jnp.inf)
    dv_masked = jnp.where(away, derivatives, -jnp.inf)
    i = jnp.argmin(v_masked)
    j = jnp.argmax(dv_masked)
    positive = v_masked[i] > 0
    decreasing = dv_masked[j] < 0 if strict else dv_masked[j] <= tol
    is_lyapunov = (jnp.abs(v_star) <= tol) & positive & decreasing
    return LyapunovCheck(
        is_lyapunov=is_lyapunov,
        v_star=v_star,
        positive=positive,
        decreasing=decreasing,
        min_v=v_masked[i],
        argmin_v=samples[i],
        max_dv=dv_masked[j],
        argmax_dv=samples[j],
        values=values,
        derivatives=derivatives,
    )


def _system_check(system):
    if not isinstance(system, (AbstractFlow, AbstractMap)):
        raise ValueError(
            "Lyapunov functions are checked for autonomous flows or maps; got "
            f"{type(system).__name__}."
        )


def check_lyapunov_function(
    system,
    V: Callable[[Array], Array],
    x_star: StateLike,
    samples: Float[Array, "n d"],
    *,
    strict: bool = False,
    exclude_radius: float = 1e-12,
    tol: float = 0.0,
    args: Args = None,
) -> LyapunovCheck:
    r"""Check a Lyapunov candidate `V` for an equilibrium on samples of state space.

    Lyapunov's direct method: `x*` is stable if `V(x*) = 0`, `V(x) > 0` for
    `x != x*`, and `dV/dt = grad V(x) . f(x) <= 0` near `x*` (asymptotically stable
    with `< 0`, LaSalle's principle covering `<= 0` with no invariant set inside
    `{dV/dt = 0}` but `x*`). The Lie derivative is one `jax.jvp` per sample,
    vmapped. For a map the decrease condition is `V(F(x)) - V(x) <= 0`.

    This is a sampled check, not a proof: it reports the worst sample for each
    condition, so a violation comes with the point that violates it.

    **Arguments:**

    - `system`: an autonomous dynjax flow or map.
    - `V`: the candidate, a function (or callable Module) `V(x) -> scalar`.
    - `x_star`: the equilibrium, shape `(d,)`.
    - `samples`: points to check, shape `(n, d)` (e.g. a flattened `meshgrid`).
    - `strict`: require `dV/dt < 0` instead of `<= 0`.
    - `exclude_radius`: samples within this distance of `x*` are not checked for
        positivity and decrease (where both vanish).
    - `tol`: tolerance for `V(x*) = 0` and for `dV/dt <= 0` (not for strict).
    - `args`: run-time arguments of the system.

    **Returns:**

    A `dynjax.LyapunovCheck`.

    !!! Example

        ```python
        f = dynjax.Flow(lambda t, x, p: jnp.stack([x[1] - x[0]**3, -x[0]]), d=2)
        chk = dynjax.check_lyapunov_function(f, lambda x: x @ x, jnp.zeros(2), grid)
        chk.is_lyapunov  # True: dV/dt = -2 x^4 <= 0
        ```

    **Reference:** H. K. Khalil, *Nonlinear Systems*, 3rd ed. (2002), Theorems 4.1
    and 4.4 (LaSalle).
    """
    _system_check(system)
    system, x_star, args = conform(
        system, x_star, verb="check_lyapunov_function", args=args, name="x_star"
    )
    samples = jnp.asarray(samples, dtype=x_star.dtype)
    if samples.ndim != 2 or samples.shape[1] != x_star.shape[0]:
        raise ValueError(
            f"`samples` must have shape (n, {x_star.shape[0]}), one state per row; "
            f"got {samples.shape}."
        )
    return _check(system, V, x_star, samples, args, strict, exclude_radius, tol)


class LyapunovNetwork(eqx.Module):
    r"""A positive-definite network `V(x) = |phi(x) - phi(x*)|^2 + eps |x - x*|^2`.

    `phi` is an `equinox.nn.MLP`. `V(x*) = 0` and `V(x) >= eps |x - x*|^2 > 0`
    hold by construction, so only the decrease condition is learned.
    """

    phi: eqx.nn.MLP
    x_star: Float[Array, " d"]
    eps: float = eqx.field(static=True)

    def __call__(self, x):
        dphi = self.phi(x) - self.phi(self.x_star)
        dx = x - self.x_star
        return jnp.sum(dphi**2) + self.eps * jnp.sum(dx**2)


class LearnedLyapunov(eqx.Module):
    """A learned Lyapunov function and its certificate, from
    `dynjax.learn_lyapunov_function`.

    **Attributes:**

    - `V`: the trained `dynjax.LyapunovNetwork` (callable `V(x)`).
    - `level`: `c`; the sublevel set `{V < c}` around `x*` lies inside the region,
        and `dV/dt < 0` was verified on every grid point of it (except within
        `exclude_radius` of `x*`). `0` if nothing could be certified.
    - `certified`: `level > 0`.
    - `losses`: the training loss per step.
    - `grid_size`: points per dimension of the verification grid.
    """

    V: LyapunovNetwork
    level: Float[Array, ""]
    certified: Bool[Array, ""]
    losses: Float[Array, " steps"]
    grid_size: int = eqx.field(static=True)

    def contains(self, x) -> Bool[Array, ""]:
        """Whether `x` lies in the certified sublevel set `{V(x) < level}`."""
        return self.V(x) < self.level


def _grid(lo, hi, n):
    axes = [jnp.linspace(a, b, n) for a, b in zip(lo, hi)]
    mesh = jnp.meshgrid(*axes, indexing="ij")
    return jnp.stack([m.reshape(-1) for m in mesh], axis=1)


def _boundary_mask(points, lo, hi):
    return jnp.any(jnp.isclose(points, lo) | jnp.isclose(points, hi), axis=1)


@eqx.filter_jit
def _certify(system, V, x_star, lo, hi, n, args, exclude_radius, safety):
    pts = _grid(lo, hi, n)
    values, dv = jax.vmap(lambda x: _lie_derivative(system, V, x, args))(pts)
    away = jnp.linalg.norm(pts - x_star, axis=1) > exclude_radius
    bad = away & (dv >= 0)
    on_boundary = _boundary_mask(pts, lo, hi)
    # {V < c} must avoid every bad point and stay off the boundary of the region.
    c = jnp.minimum(
        jnp.min(jnp.where(bad, values, jnp.inf)),
        jnp.min(jnp.where(on_boundary, values, jnp.inf)),
    )
    return safety * c


def learn_lyapunov_function(
    system,
    x_star: StateLike,
    region,
    *,
    key: PRNGKeyArray,
    width: int = 32,
    depth: int = 2,
    eps: float = 1e-3,
    steps: int = 2000,
    n_train: int = 1024,
    learning_rate: float = 3e-3,
    margin: float = 1e-2,
    grid_size: int = 201,
    exclude_radius: float | None = None,
    safety: float = 0.9,
    args: Args = None,
) -> LearnedLyapunov:
    r"""Learn a Lyapunov function certifying a stable equilibrium on a region.

    The candidate is `V(x) = |phi(x) - phi(x*)|^2 + eps |x - x*|^2` with `phi` an MLP
    (positive definite by construction). It is trained with `optax.adam` on the
    hinge loss of the Lie derivative,

    $$\mathcal L = \mathbb E_x \max(0, \dot V(x) + m |x - x^*|^2),$$

    at fresh uniform samples of the box each step (`m = margin`). The result is
    then certified on a `grid_size^d` grid of the box: with `B` the grid points
    (outside `exclude_radius` of `x*`) where `dV/dt >= 0`, and `dR` the grid
    points on the box's boundary, the level is

    $$c = \text{safety} \cdot \min(\min_B V, \min_{\partial R} V),$$

    so that the connected component of `{V < c}` containing `x*` stays inside the
    box and contains no grid point where `V` fails to decrease. Every trajectory
    started there stays there and converges to `x*` (an estimate of the region
    of attraction), up to what a grid can verify (this is not an SMT proof).

    **Arguments:**

    - `system`: an autonomous flow (or map; then `V(F(x)) - V(x)` is used).
    - `x_star`: the (stable) equilibrium, shape `(d,)`.
    - `region`: `(lower, upper)` corners of the box, each of shape `(d,)`.
    - `key`: PRNG key for the initialization and the samples.
    - `width`, `depth`: the MLP `phi: R^d -> R^width`.
    - `eps`: the quadratic floor of `V`.
    - `steps`, `n_train`, `learning_rate`, `margin`: training.
    - `grid_size`: verification points per dimension.
    - `exclude_radius`: a ball around `x*` not checked (default: one grid spacing),
        where `dV/dt` vanishes to rounding.
    - `safety`: the factor `< 1` applied to the certified level.
    - `args`: run-time arguments.

    **Returns:**

    A `dynjax.LearnedLyapunov`.

    **References:** S. M. Richards, F. Berkenkamp and A. Krause, "The Lyapunov
    neural network", CoRL (2018); Y.-C. Chang, N. Roohi and S. Gao, "Neural
    Lyapunov control", NeurIPS (2019).
    """
    _system_check(system)
    system, x_star, args = conform(
        system, x_star, verb="learn_lyapunov_function", args=args, name="x_star"
    )
    d = x_star.shape[0]
    try:
        lo, hi = region
    except (TypeError, ValueError):
        raise ValueError(
            "`region` must be a pair `(lower, upper)` of corners."
        ) from None
    lo = jnp.asarray(lo, x_star.dtype)
    hi = jnp.asarray(hi, x_star.dtype)
    if lo.shape != (d,) or hi.shape != (d,):
        raise ValueError(f"The corners of `region` must have shape ({d},).")
    if not bool(jnp.all(hi > lo)) or not bool(jnp.all((x_star > lo) & (x_star < hi))):
        raise ValueError(
            "`region` must be a non-empty box `lower < upper` with `x_star` inside."
        )
    if not 0 < safety <= 1:
        raise ValueError(f"`safety` must be in (0, 1], got {safety}.")
    if exclude_radius is None:
        exclude_radius = float(jnp.max(hi - lo)) / (grid_size - 1)
    k_init, k_train = jax.random.split(key)
    phi = eqx.nn.MLP(d, width, width, depth, activation=jnp.tanh, key=k_init)
    phi = jax.tree.map(
        lambda a: a.astype(x_star.dtype) if eqx.is_inexact_array(a) else a, phi
    )
    V0 = LyapunovNetwork(phi, x_star, eps)
    opt = optax.adam(learning_rate)
    losses, V = _train(system, V0, opt, lo, hi, k_train, steps, n_train, margin, args)
    level = _certify(system, V, x_star, lo, hi, grid_size, args, exclude_radius, safety)
    level = jnp.where(jnp.isfinite(level), level, 0.0)
    return LearnedLyapunov(
        V=V, level=level, certified=level > 0, losses=losses, grid_size=grid_size
    )


@eqx.filter_jit
def _train(system, V0, opt, lo, hi, key, steps, n_train, margin, args):
    params, static = eqx.partition(V0, eqx.is_inexact_array)
    params_x = params.x_star
    params = eqx.tree_at(lambda v: v.x_star, params, None)

    def loss_fn(p, xs):
        V = eqx.combine(
            eqx.tree_at(lambda v: v.x_star, p, params_x, is_leaf=lambda x: x is None),
            static,
        )
        _, dv = jax.vmap(lambda x: _lie_derivative(system, V, x, args))(xs)
        r2 = jnp.sum((xs - V.x_star) ** 2, axis=1)
        return jnp.mean(jax.nn.relu(dv + margin * r2))

    def step(carry, k):
        p, state = carry
        xs = jax.random.uniform(k, (n_train, lo.shape[0]), lo.dtype, lo, hi)
        loss, g = jax.value_and_grad(loss_fn)(p, xs)
        updates, state = opt.update(g, state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), loss

    state = opt.init(params)
    (params, _), losses = jax.lax.scan(
        step, (params, state), jax.random.split(key, steps)
    )
    params = eqx.tree_at(
        lambda v: v.x_star, params, params_x, is_leaf=lambda x: x is None
    )
    return losses, eqx.combine(params, static)
