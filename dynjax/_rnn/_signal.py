r"""Depth as time: signal propagation through deep random networks.

A deep fully connected network with random weights is a dynamical system whose time
is the layer index. In the limit of infinite width its preactivations are Gaussian,
and two numbers evolve deterministically from layer to layer (Poole et al. 2016,
Schoenholz et al. 2017): the variance `q` of one input's preactivations and the
correlation `c` between two inputs'. `signal_propagation` computes their fixed
points and slopes (the mean-field theory); `depth_lyapunov` measures the depth
Lyapunov exponent of one sampled network with dynjax's Lyapunov engine, the layers'
random weights being the driving input of a driven map (`DeepStack`);
`residual_stack` is a residual network `h + (1/L) f(h)` as the Euler map of the
neural ODE `dh/dt = f(h)`.

Gaussian expectations use the trapezoidal rule on `z in [-8.5, 8.5]` (an even
number of nodes, none at 0). For integrands analytic in a strip, such as
`tanh(sqrt(q) z)^2`, it converges exponentially; Gauss-Hermite rules with as many
nodes spread them over `|z| < sqrt(4 n)` and are 1e4 times less accurate at `q = 3`
(measured with `n = 128`). The derivative with respect to a variance is
Price's theorem, `d/dq E[f(sqrt(q) z)] = E[f''(sqrt(q) z)] / 2`, so `q = 0` and
`c = 1` are regular points (the square roots there have infinite slopes).
"""

import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._custom_types import Args, Input, RealScalarLike, State
from .._results import raise_if_failed, RESULTS
from .._system import AbstractDrivenMap, AbstractFlow, euler_map, EulerMap, Flow


_HALF_WIDTH = 8.5  # 2 P(z > 8.5) = 1.9e-17
_PRE_ITERATIONS = 64  # variance-map iterations from q0 before Newton's method
_MAX_STEPS = 256


# Gaussian expectations.


@functools.lru_cache(maxsize=16)
def _nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(-_HALF_WIDTH, _HALF_WIDTH, n)
    w = np.exp(-0.5 * z**2)
    return z, w / w.sum()


def _second(f: Callable) -> Callable:
    return jax.grad(jax.grad(f))


def _std(q):
    # sqrt(q), and at q = 0 the limit q -> 0+: the nodes stay off the kink of a
    # ReLU-like activation (E[relu'(u)^2] = 1/2 for every q > 0, not relu'(0)^2).
    return jnp.sqrt(jnp.maximum(q, jnp.finfo(q.dtype).tiny))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _mean1(f: Callable, n: int, q):
    """`E[f(u)]` with `u ~ N(0, q)`; `f` maps a scalar to a scalar."""
    z, w = _nodes(n)
    u = _std(q) * jnp.asarray(z, q.dtype)
    return jnp.dot(jnp.asarray(w, q.dtype), jax.vmap(f)(u))


@_mean1.defjvp
def _mean1_jvp(f, n, primals, tangents):
    (q,), (dq,) = primals, tangents
    return _mean1(f, n, q), 0.5 * _mean1(_second(f), n, q) * dq


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _mean2(f: Callable, g: Callable, n: int, q, c):
    """`E[f(u1) g(u2)]` with `(u1, u2)` Gaussian, variances `q`, correlation `c`."""
    z, w = _nodes(n)
    z, w = jnp.asarray(z, q.dtype), jnp.asarray(w, q.dtype)
    s = _std(q)
    c = jnp.clip(c, -1.0, 1.0)
    u1 = s * z
    u2 = s * (c * z[:, None] + jnp.sqrt(1.0 - c**2) * z[None, :])
    fg = jax.vmap(f)(u1)[:, None] * jax.vmap(jax.vmap(g))(u2)
    return w @ fg @ w


@_mean2.defjvp
def _mean2_jvp(f, g, n, primals, tangents):
    # Price's theorem: dE/dSigma_11 = E[f'' g] / 2, dE/dSigma_22 = E[f g''] / 2,
    # dE/dSigma_12 = E[f' g'], with Sigma_11 = Sigma_22 = q and Sigma_12 = q c.
    q, c = primals
    dq, dc = tangents
    df, dg = jax.grad(f), jax.grad(g)
    cross = _mean2(df, dg, n, q, c)
    d_q = 0.5 * (_mean2(_second(f), g, n, q, c) + _mean2(f, _second(g), n, q, c))
    return _mean2(f, g, n, q, c), (d_q + c * cross) * dq + q * cross * dc


# Checks.


def _check_variance(x, name: str, verb: str):
    """`x` checked to be finite and >= 0: `ValueError` for a concrete value,
    `eqx.error_if` for a traced one."""

    def message(got: str) -> str:
        return (
            f"`{verb}` needs `{name}` >= 0 (a variance) and finite, got {got}. Pass "
            "the variance itself, e.g. `sigma_w2=1.5` for weights of standard "
            "deviation sqrt(1.5 / width)."
        )

    if isinstance(x, jax.core.Tracer):
        bad = ~(jnp.isfinite(x) & (x >= 0))
        return eqx.error_if(x, bad, message("a negative or non-finite value"))
    value = np.asarray(x)
    if not np.all(np.isfinite(value) & (value >= 0)):
        raise ValueError(message(repr(x)))
    return x


def _check_int(value, name: str, verb: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{verb}` needs `{name}` to be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{verb}` needs `{name}` >= {minimum}, got {value}.")
    return int(value)


def _check_quadrature(n) -> int:
    n = _check_int(n, "n_quadrature", "signal_propagation", 16)
    if n % 2:
        raise ValueError(
            f"`n_quadrature` must be even (no node at z = 0, so that the kink of "
            f"ReLU-like activations is integrated exactly), got {n}; pass {n + 1}."
        )
    return n


def _check_activation(activation, verb: str) -> None:
    if not callable(activation):
        raise ValueError(
            f"`{verb}` needs `activation`, a function of one scalar (e.g. "
            f"`jnp.tanh`, `jax.nn.relu`), got {activation!r}."
        )


# Mean-field theory.


class SignalPropagation(eqx.Module):
    r"""The mean-field quantities of a deep random network, from `signal_propagation`.

    Every attribute has the shape of the broadcast `(sigma_w2, sigma_b2)` (a scalar
    for one network; `jax.vmap` adds leading axes), dtype of the variances.

    **Attributes:**

    - `sigma_w2`, `sigma_b2`: the weight and bias variances.
    - `q_star`: `q*`, the stable fixed point of the variance map (the preactivation
        variance deep in the network).
    - `chi_1`: `chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]`, the mean squared singular
        value of one layer's Jacobian; `< 1` ordered, `> 1` chaotic.
    - `c_star`: `c*`, the stable fixed point of the correlation map: `1` in the
        ordered phase, `< 1` in the chaotic phase (`0` for odd activations without
        bias).
    - `chi_c`: the slope of the correlation map at `c*` (`= chi_1` when `c* = 1`).
    - `xi_q`, `xi_c`: the depth scales (in layers) over which `q` and `c` approach
        their fixed points, `-1 / log(slope)`; `inf` at criticality.
    - `depth_exponent`: `log(chi_1) / 2`, the predicted depth Lyapunov exponent in
        nats per layer (the growth rate of an infinitesimal perturbation of the
        input; compare with `depth_lyapunov`).
    - `chaotic`: `chi_1 > 1`, a boolean array.
    - `phase` (property): `"ordered"`, `"chaotic"` or `"critical"`, outside `jit`.
    - `result`: a `dynjax.RESULTS` code; `no_variance_fixed_point` where the
        variance map has no stable fixed point (the other attributes are then NaN).
    """

    sigma_w2: Float[Array, "*batch"]
    sigma_b2: Float[Array, "*batch"]
    q_star: Float[Array, "*batch"]
    chi_1: Float[Array, "*batch"]
    c_star: Float[Array, "*batch"]
    chi_c: Float[Array, "*batch"]
    xi_q: Float[Array, "*batch"]
    xi_c: Float[Array, "*batch"]
    depth_exponent: Float[Array, "*batch"]
    chaotic: Bool[Array, "*batch"]
    result: RESULTS

    @property
    def phase(self):
        """`"ordered"` (`chi_1 < 1`), `"chaotic"` (`chi_1 > 1`) or `"critical"`
        (`chi_1 == 1`): a `str` for one network, a NumPy array of them for a grid.
        Not available under `jit`."""
        chi = np.asarray(self.chi_1)
        names = np.select([chi > 1, chi < 1], ["chaotic", "ordered"], "critical")
        return str(names) if names.ndim == 0 else names


def _solve_q(activation, sw2, sb2, q0, n, tol):
    def V(q, args):
        sw2, sb2 = args
        return sw2 * _mean1(lambda x: activation(x) ** 2, n, q) + sb2

    args = (sw2, sb2)
    q_start = jax.lax.fori_loop(
        0, _PRE_ITERATIONS, lambda _, q: V(q, args), jnp.asarray(q0, sw2.dtype)
    )
    q_start = jax.lax.stop_gradient(jnp.where(jnp.isfinite(q_start), q_start, q0))
    sol = optx.root_find(
        lambda q, args: V(q, args) - q,
        optx.Newton(rtol=tol, atol=tol),
        q_start,
        args,
        options={"lower": jnp.zeros((), sw2.dtype)},
        max_steps=_MAX_STEPS,
        throw=False,
    )
    # Where Newton's method fails the iterate may still be a fixed point (ReLU at
    # sigma_w^2 = 2, where every q is one and the derivative of V(q) - q is 0):
    # keep it then; the checks below judge it. (Gradients flow through the
    # successful solves, by implicit differentiation.)
    q = jnp.where(sol.result == optx.RESULTS.successful, sol.value, q_start)
    value, slope = jax.jvp(lambda q: V(q, args), (q,), (jnp.ones_like(q),))
    ok = (
        jnp.isfinite(q)
        & (q >= 0)
        & (jnp.abs(value - q) <= 100 * tol * (1 + q))
        & (slope <= 1 + math.sqrt(tol))
    )
    return q, slope, ok


def _solve_c(activation, sw2, sb2, q, chaotic, n, tol):
    # In the chaotic phase c = 1 is unstable and the correlation map, convex and
    # increasing on [0, 1] (its Mehler series in c has non-negative coefficients)
    # with C(0) >= 0, has one more fixed point c* in [0, 1): Newton's method from
    # c = 0 climbs to it monotonically. Ordered points solve 1 - c = 0 instead
    # (c* = 1), which keeps their gradients finite.
    q_safe = jnp.where(q > 0, q, 1.0)

    def h(c, args):
        sw2, sb2, q, chaotic = args
        C = (sw2 * _mean2(activation, activation, n, q, c) + sb2) / q
        return jnp.where(chaotic, C - c, 1.0 - c)

    sol = optx.root_find(
        h,
        optx.Newton(rtol=tol, atol=tol),
        jnp.where(chaotic, 0.0, 1.0).astype(q.dtype),
        (sw2, sb2, q_safe, chaotic),
        options={"lower": jnp.zeros((), q.dtype), "upper": jnp.ones((), q.dtype)},
        max_steps=_MAX_STEPS,
        throw=False,
    )
    # Near criticality c* is ill-conditioned (the slope of C(c) - c vanishes) and
    # Newton's iterates may wander within rounding of it without meeting the
    # step criterion: accept any point whose residual is at rounding level.
    c = sol.value
    args = (sw2, sb2, q_safe, chaotic)
    dphi = jax.grad(activation)
    chi_c = sw2 * _mean2(dphi, dphi, n, q_safe, c)
    ok = (jnp.abs(h(c, args)) <= 100 * tol) & (chi_c <= 1 + math.sqrt(tol))
    return c, chi_c, ok


def _depth_scale(slope):
    # -1 / log(slope) for a stable slope in [0, 1]; inf at 1.
    return jnp.where(slope >= 1, jnp.inf, -1.0 / jnp.log(jnp.minimum(slope, 1.0)))


@eqx.filter_jit
def _signal(activation, sw2, sb2, q0, n):
    tol = float(jnp.finfo(sw2.dtype).eps) ** 0.75
    q, slope_q, ok = _solve_q(activation, sw2, sb2, q0, n, tol)
    dphi = jax.grad(activation)
    chi_1 = sw2 * _mean1(lambda x: dphi(x) ** 2, n, q)
    chaotic = chi_1 > 1
    c_star, chi_c, ok_c = _solve_c(activation, sw2, sb2, q, chaotic, n, tol)
    c_star = jnp.where(chaotic, c_star, 1.0)
    chi_c = jnp.where(chaotic, chi_c, chi_1)
    ok = ok & (ok_c | ~chaotic)
    nan = jnp.full_like(q, jnp.nan)
    out = SignalPropagation(
        sigma_w2=sw2,
        sigma_b2=sb2,
        q_star=jnp.where(ok, q, nan),
        chi_1=jnp.where(ok, chi_1, nan),
        c_star=jnp.where(ok, c_star, nan),
        chi_c=jnp.where(ok, chi_c, nan),
        xi_q=jnp.where(ok, _depth_scale(slope_q), nan),
        xi_c=jnp.where(ok, _depth_scale(chi_c), nan),
        depth_exponent=jnp.where(ok, 0.5 * jnp.log(chi_1), nan),
        chaotic=chaotic & ok,
        result=RESULTS.where(ok, RESULTS.successful, RESULTS.no_variance_fixed_point),
    )
    return out


def signal_propagation(
    sigma_w2: RealScalarLike,
    sigma_b2: RealScalarLike,
    *,
    activation: Callable = jnp.tanh,
    q0: RealScalarLike = 1.0,
    n_quadrature: int = 128,
    throw: bool = True,
) -> SignalPropagation:
    r"""Mean-field signal propagation through a deep random network.

    Layer `l` of a fully connected network of width `N -> inf` computes
    `h^l = W^l phi(h^{l-1}) + b^l` with `W_ij ~ N(0, sigma_w^2 / N)` and
    `b_i ~ N(0, sigma_b^2)`. Its preactivations are Gaussian, with variance `q_l`
    and, between two inputs, correlation `c_l`, which follow the maps (Poole et
    al. 2016, `z, z_1, z_2` independent standard normal)

    $$q_{l+1} = \sigma_w^2\, \mathbb{E}_z\!\left[\phi(\sqrt{q_l}\, z)^2\right]
        + \sigma_b^2, \qquad
    c_{l+1} = \frac{\sigma_w^2\, \mathbb{E}[\phi(u_1)\phi(u_2)] + \sigma_b^2}{q^*},$$

    with `u_1 = sqrt(q*) z_1`, `u_2 = sqrt(q*) (c_l z_1 + sqrt(1 - c_l^2) z_2)`.
    The variance map is iterated from `q0` and its stable fixed point `q*` polished
    by Newton's method (`optimistix.Newton`; with `sigma_b^2 = 0` the approach to
    `q* = 0` is only algebraic near `sigma_w^2 = 1`, where Newton's method still
    converges). Then

    $$\chi_1 = \sigma_w^2\, \mathbb{E}\!\left[\phi'(\sqrt{q^*} z)^2\right],\qquad
    \chi_c = \sigma_w^2\, \mathbb{E}[\phi'(u_1)\phi'(u_2)]\big|_{c^*},\qquad
    \xi_c = -1/\log\chi_c,\quad \xi_q = -1/\log\, \partial_q q_{l+1}|_{q^*}$$

    (Schoenholz et al. 2017). `c = 1` is a fixed point of the correlation map with
    slope `chi_1`: stable in the ordered phase (`chi_1 < 1`, `c* = 1`, nearby inputs
    converge), unstable in the chaotic phase (`chi_1 > 1`, where `c* < 1` is found
    by Newton's method from `c = 0`). An infinitesimal perturbation of the input
    grows by `sqrt(chi_1)` per layer: the depth Lyapunov exponent is
    `log(chi_1) / 2` nats per layer. `phi'` and `phi''` come from `jax.grad`, so
    any differentiable activation works.

    Everything is `jnp`: a phase diagram over a grid is one `jax.vmap` (pass
    `throw=False` to get the failures as `result` codes), and `jax.grad` works
    (implicit differentiation of the fixed points).

    **Arguments:**

    - `sigma_w2`: the weight variance `sigma_w^2 >= 0` (times `1 / N`), a scalar.
    - `sigma_b2`: the bias variance `sigma_b^2 >= 0`, a scalar.
    - `activation`: `phi`, a differentiable function of one scalar (default
        `jnp.tanh`).
    - `q0`: the variance of the first layer's preactivations, where the variance
        map starts (default `1.0`). For `tanh` the stable `q*` does not depend on
        it; an activation with several stable fixed points gives the one whose
        basin holds `q0`.
    - `n_quadrature`: the number of nodes per dimension of the Gaussian
        expectations (even, default 128; the correlation map uses its square).
        Expectations of `tanh` are accurate to 1e-14 for `q* <= 3` and 1e-7 at
        `q* = 10`.
    - `throw`: if `True` (default), a failure raises an error; otherwise it is
        reported in `result`.

    **Returns:**

    A `dynjax.SignalPropagation` (shapes: scalars; units: variances, layers,
    nats per layer).

    **Raises:**

    `ValueError` for a negative or non-finite variance, an odd or small
    `n_quadrature`, or an `activation` that is not callable; with `throw=True`,
    `equinox.EquinoxRuntimeError` (`no_variance_fixed_point`) where the variance
    grows without bound (e.g. ReLU with `sigma_w^2 > 2`).

    !!! Example

        ```python
        sp = dynjax.signal_propagation(1.5, 0.05)
        sp.chi_1, sp.phase                 # about 0.94, "ordered"
        grid = jax.vmap(jax.vmap(
            lambda w, b: dynjax.signal_propagation(w, b, throw=False).chi_1,
            (0, None)), (None, 0))(jnp.linspace(0.5, 4, 50), jnp.linspace(0, 1, 40))
        ```

    **References:**

    B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein and S. Ganguli, "Exponential
    expressivity in deep neural networks through transient chaos", NeurIPS (2016).
    S. S. Schoenholz, J. Gilmer, S. Ganguli and J. Sohl-Dickstein, "Deep
    information propagation", ICLR (2017).
    """
    verb = "signal_propagation"
    _check_activation(activation, verb)
    n = _check_quadrature(n_quadrature)
    sigma_w2 = _check_variance(sigma_w2, "sigma_w2", verb)
    sigma_b2 = _check_variance(sigma_b2, "sigma_b2", verb)
    q0 = _check_variance(q0, "q0", verb)
    dtype = jnp.result_type(sigma_w2, sigma_b2, float)
    sw2, sb2 = jnp.asarray(sigma_w2, dtype), jnp.asarray(sigma_b2, dtype)
    if sw2.shape != () or sb2.shape != ():
        raise ValueError(
            f"`{verb}` takes scalar variances (got shapes {sw2.shape} and "
            f"{sb2.shape}); for a grid, `jax.vmap` it."
        )
    out = _signal(activation, sw2, sb2, jnp.asarray(q0, dtype), n)
    if throw:
        q_star = raise_if_failed(
            out.result,
            out.q_star,
            lambda _: f"(sigma_w2={sigma_w2}, sigma_b2={sigma_b2}, q0={q0})",
        )
        out = eqx.tree_at(lambda r: r.q_star, out, q_star)
    return out


# A sampled network.


def _as_key(u):
    u = jnp.asarray(u)
    if jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
        return u
    return jr.wrap_key_data(u)


class DeepStack(AbstractDrivenMap):
    r"""A deep random fully connected network as a driven map (depth as time).

    Layer `l` is `x_l = phi(W_l x_{l-1} + b_l)` with `W_l ~ N(0, sigma_w^2 / N)`
    (shape `(N, N)`) and `b_l ~ N(0, sigma_b^2)`, drawn from the layer's own PRNG
    key: the input sequence of the driven map is the sequence of keys, so a
    network of any depth is a `lax.scan` that never holds more than one layer's
    weights (width 1000 and depth 200 would be 1.6 GB at once). Each input `u` is
    a key's data, `jax.random.key_data(key)` (shape `(2,)`, `uint32`, for the
    default implementation); `keys(key, depth)` makes the sequence. Every dynjax
    verb for driven maps applies: `dynjax.trajectory(stack, x0,
    inputs=stack.keys(key, L))` propagates an input, `dynjax.lyapunov_spectrum(
    stack, x0, k=1, inputs=...)` measures the depth exponent.

    The state is the layer's activity `x_l` (post-activation), shape `(width,)`;
    `x0` is the network's input.

    **Arguments:**

    - `sigma_w2`, `sigma_b2`: the weight and bias variances (fields,
        differentiable).
    - `width`: `N`, a Python int >= 1.
    - `activation`: `phi`, elementwise (default `jnp.tanh`).

    **Raises:**

    `ValueError` for a negative variance or a `width` that is not an int >= 1.
    """

    sigma_w2: Float[Array, ""]
    sigma_b2: Float[Array, ""]
    width: int = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        sigma_w2: RealScalarLike,
        sigma_b2: RealScalarLike,
        width: int,
        *,
        activation: Callable = jnp.tanh,
    ):
        _check_activation(activation, "DeepStack")
        self.width = _check_int(width, "width", "DeepStack", 1)
        self.sigma_w2 = jnp.asarray(
            _check_variance(sigma_w2, "sigma_w2", "DeepStack"), float
        )
        self.sigma_b2 = jnp.asarray(
            _check_variance(sigma_b2, "sigma_b2", "DeepStack"), float
        )
        self.activation = activation

    @property
    def d(self) -> int:
        return self.width

    @staticmethod
    def keys(key: PRNGKeyArray, depth: int) -> Array:
        """The input sequence of a network of `depth` layers: `depth` independent
        keys' data, shape `(depth, 2)` (`uint32`)."""
        depth = _check_int(depth, "depth", "DeepStack.keys", 1)
        return jr.key_data(jr.split(key, depth))

    def layer(self, u: Input, dtype=None) -> tuple[Array, Array]:
        """The weights `(W, b)` of the layer driven by `u`, shapes `(N, N)` and
        `(N,)`."""
        dtype = self.sigma_w2.dtype if dtype is None else dtype
        kw, kb = jr.split(_as_key(u))
        N = self.width
        W = jr.normal(kw, (N, N), dtype) * jnp.sqrt(self.sigma_w2 / N).astype(dtype)
        b = jr.normal(kb, (N,), dtype) * jnp.sqrt(self.sigma_b2).astype(dtype)
        return W, b

    def step(self, x: State, u: Input, args: Args = None) -> State:
        del args
        if x.shape != (self.width,):
            raise ValueError(
                f"`DeepStack` has width {self.width}, so its state has shape "
                f"({self.width},); got {x.shape}."
            )
        W, b = self.layer(u, x.dtype)
        return self.activation(W @ x + b)


class DepthLyapunov(eqx.Module):
    """The measured depth Lyapunov exponent of a sampled network, from
    `depth_lyapunov`.

    **Attributes:**

    - `exponent`: the mean log growth per layer of an infinitesimal perturbation
        of the input, in nats per layer, over the measured layers (after the
        transient): compare with `signal_propagation(...).depth_exponent`.
    - `per_layer`: the log growth of each measured layer, shape
        `(depth - transient,)` (its mean is `exponent`).
    - `stderr`: the standard error of `exponent`, `std(per_layer) /
        sqrt(depth - transient)` (layers are nearly independent at large width;
        NaN for a single measured layer).
    - `result`: a `dynjax.RESULTS` code.
    """

    exponent: Float[Array, ""]
    per_layer: Float[Array, " L"]
    stderr: Float[Array, ""]
    result: RESULTS


def depth_lyapunov(
    sigma_w2: RealScalarLike,
    sigma_b2: RealScalarLike,
    *,
    width: int,
    depth: int,
    key: PRNGKeyArray,
    activation: Callable = jnp.tanh,
    x0: Float[Array, " N"] | None = None,
    transient: int = 20,
    throw: bool = True,
) -> DepthLyapunov:
    r"""The depth Lyapunov exponent of one sampled deep random network.

    A `dynjax.rnn.DeepStack` of `width` units and `depth` layers is driven by one
    PRNG key per layer (its weights are drawn inside the `lax.scan`, one layer at a
    time), and `dynjax.finite_time_lyapunov` with `k = 1` and windows of one layer
    propagates the input and a tangent vector (`jax.jvp`) through it: layer `l`
    contributes `log |J_l v| / |v|`, with `J_l = diag(phi'(h_l)) W_l` and `v` the
    normalized tangent. The first `transient` layers only propagate (the variance
    settles at `q*` and the tangent aligns); the mean over the remaining
    `depth - transient` layers is the exponent, which approaches the mean-field
    `log(chi_1) / 2` (`signal_propagation`) as the width grows.

    **Arguments:**

    - `sigma_w2`, `sigma_b2`: the weight and bias variances (>= 0).
    - `width`: `N`, an int >= 1.
    - `depth`: the number of layers, an int > `transient`.
    - `key`: a PRNG key; it determines the network, the input (if `x0` is `None`)
        and the initial tangent.
    - `activation`: `phi`, elementwise (default `jnp.tanh`).
    - `x0`: the network's input, shape `(width,)`. Default: drawn so that the first
        layer's preactivations already have the fixed-point variance `q*` of
        `signal_propagation` (`x0 = phi(sqrt(q*) z)`), so that no layers are spent
        on the variance's transient.
    - `transient`: layers discarded before measuring (default 20); with an input
        far from `q*`, take several `xi_q` of `signal_propagation`.
    - `throw`: if `True` (default), a failure raises an error; otherwise it is
        reported in `result`.

    **Returns:**

    A `dynjax.DepthLyapunov` (nats per layer).

    **Raises:**

    `ValueError` for a negative variance, `width < 1`, `depth <= transient`,
    `transient < 0` or an `x0` of the wrong shape.

    !!! Example

        ```python
        res = dynjax.depth_lyapunov(3.0, 0.3, width=1000, depth=200, key=key)
        res.exponent   # about 0.043; the mean field's log(chi_1) / 2 is 0.046
        ```

    **References:** as `signal_propagation`; the engine is `dynjax.lyapunov_spectrum`
    (Benettin et al. 1980).
    """
    from .._lyapunov import finite_time_lyapunov

    verb = "depth_lyapunov"
    width = _check_int(width, "width", verb, 1)
    transient = _check_int(transient, "transient", verb, 0)
    depth = _check_int(depth, "depth", verb, transient + 1)
    stack = DeepStack(sigma_w2, sigma_b2, width, activation=activation)
    k_net, k_x0, k_tangent = jr.split(key, 3)
    if x0 is None:
        q_star = signal_propagation(
            stack.sigma_w2, stack.sigma_b2, activation=activation
        ).q_star
        x0 = activation(jnp.sqrt(q_star) * jr.normal(k_x0, (width,), q_star.dtype))
    x0 = jnp.asarray(x0)
    if x0.shape != (width,):
        raise ValueError(
            f"`{verb}` needs `x0` of shape (width,) = ({width},), got {x0.shape}."
        )
    ftle = finite_time_lyapunov(
        stack,
        x0,
        tau=1,
        n_windows=depth - transient,
        k=1,
        transient=transient,
        inputs=stack.keys(k_net, depth),
        key=k_tangent,
        throw=throw,
    )
    per_layer = ftle.exponents[:, 0]
    n = per_layer.shape[0]
    stderr = jnp.std(per_layer) / math.sqrt(n) if n > 1 else jnp.nan * per_layer[0]
    return DepthLyapunov(
        exponent=jnp.mean(per_layer),
        per_layer=per_layer,
        stderr=stderr,
        result=ftle.result,
    )


# Residual networks.


def _autonomous(t, h, f):
    del t
    return f(h)


def residual_stack(
    f: AbstractFlow | Callable, depth: int, *, t1: RealScalarLike = 1.0
) -> EulerMap:
    r"""A residual network `h_{l+1} = h_l + (t1 / L) f(h_l)` as the Euler map of a
    neural ODE.

    A residual stack of `L = depth` layers whose residual branches are scaled by
    `1 / L` is the explicit Euler discretization of `dh/dt = f(h)` (or `f(t, h)`,
    given as a dynjax flow)
    over `t in [0, t1]` with step `t1 / L`: its output
    `dynjax.trajectory(stack, h0, n_steps=depth).xs[-1]` tends to the flow's
    solution `h(t1)` with error `O(1 / L)` (Chen et al. 2018; Haber and Ruthotto
    2017), and every dynjax verb for maps applies to it (`lyapunov_spectrum` gives
    the per-layer exponents, `t1 / L` times the flow's). Layer `l` (0-based) uses
    `f` at time `t = l t1 / L`.

    **Arguments:**

    - `f`: the residual branch: a dynjax flow (`dynjax.AbstractFlow`, possibly
        time-dependent: build one as `dynjax.Flow(lambda t, h, p: ..., p)`), or a
        one-argument callable `f(h)` such as an `eqx.nn.MLP`, wrapped as the
        autonomous flow `dynjax.Flow(lambda t, h, f: f(h), f)` (its arrays
        stay differentiable parameters).
    - `depth`: `L`, the number of layers, an int >= 1.
    - `t1`: the time the stack spans (default `1.0`).

    **Returns:**

    A `dynjax.EulerMap` with step `t1 / depth`.

    **Raises:**

    `ValueError` if `depth` is not an int >= 1 or `f` is not callable.

    !!! Example

        ```python
        mlp = eqx.nn.MLP(4, 4, 16, 2, activation=jnp.tanh, key=key)
        stack = dynjax.rnn.residual_stack(mlp, depth=100)
        out = dynjax.trajectory(stack, h0, n_steps=100).xs[-1]
        ```

    **References:** E. Haber and L. Ruthotto, "Stable architectures for deep
    neural networks", Inverse Problems 34, 014004 (2017). R. T. Q. Chen, Y.
    Rubanova, J. Bettencourt and D. Duvenaud, "Neural ordinary differential
    equations", NeurIPS (2018).
    """
    depth = _check_int(depth, "depth", "residual_stack", 1)
    if not isinstance(f, AbstractFlow):
        if not callable(f):
            raise ValueError(
                "`residual_stack` needs `f`, a dynjax flow or a callable `f(h)`, "
                f"got {type(f).__name__}."
            )
        f = Flow(_autonomous, f)
    return euler_map(f, jnp.asarray(t1, jnp.result_type(float)) / depth)
