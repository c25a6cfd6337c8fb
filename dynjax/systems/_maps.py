import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, IntScalarLike, State
from .._misc import as_param
from .._system import AbstractMap
from ._common import guard


class Henon(AbstractMap):
    r"""The Hénon map.

    $$x_{n+1} = 1 - a x_n^2 + y_n, \quad y_{n+1} = b x_n.$$

    Defaults `a=1.4, b=0.3` (the classic strange attractor; largest Lyapunov
    exponent about 0.419). Fixed points: `x* = (-(1 - b) ± sqrt((1 - b)^2 +
    4a)) / (2a)`, `y* = b x*`.

    State `(x, y)`, `d = 2`.

    **Reference:** M. Hénon, "A two-dimensional mapping with a strange
    attractor", Commun. Math. Phys. 50, 69-77 (1976).
    """

    a: Float[Array, ""] = eqx.field(converter=as_param, default=1.4)
    b: Float[Array, ""] = eqx.field(converter=as_param, default=0.3)
    d = 2
    state_names = ("x", "y")

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n, args
        x_, y = x
        return jnp.stack([1 - self.a * x_**2 + y, self.b * x_])

    def fixed_points(self) -> Float[Array, "2 2"]:
        """The two fixed points, `+` root first.

        Raises at run time if `a = 0` or `(1 - b)^2 + 4a < 0`.
        """
        disc = (1 - self.b) ** 2 + 4 * self.a
        bad = (disc < 0) | (self.a == 0)
        disc = guard(
            disc,
            bad,
            "Henon: closed-form fixed points need a != 0 and (1 - b)^2 + 4a >= 0.",
        )
        xs = (-(1 - self.b) + jnp.array([1.0, -1.0]) * jnp.sqrt(disc)) / (2 * self.a)
        return jnp.stack([xs, self.b * xs], axis=1)

    def default_x0(self) -> State:
        """`(0, 0)`, in the basin of the attractor."""
        return jnp.zeros(2, dtype=self.a.dtype)


class Logistic(AbstractMap):
    r"""The logistic map.

    $$x_{n+1} = r x_n (1 - x_n).$$

    Default `r=4` (fully chaotic on `[0, 1]`, Lyapunov exponent `log 2`).
    Fixed points `0` and `1 - 1/r`.

    State `(x,)`, `d = 1`.

    **Reference:** R. M. May, "Simple mathematical models with very complicated
    dynamics", Nature 261, 459-467 (1976).
    """

    r: Float[Array, ""] = eqx.field(converter=as_param, default=4.0)
    d = 1
    state_names = ("x",)

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n, args
        return self.r * x * (1 - x)

    def fixed_points(self) -> Float[Array, "2 1"]:
        """`0` and `1 - 1/r`. Raises at run time if `r = 0`."""
        r = guard(self.r, self.r == 0, "Logistic: for r = 0 the only fixed point is 0.")
        return jnp.stack([jnp.zeros_like(r), 1 - 1 / r])[:, None]

    def default_x0(self) -> State:
        """`(0.4,)`."""
        return jnp.array([0.4], dtype=self.r.dtype)


class Tent(AbstractMap):
    r"""The tent map.

    $$x_{n+1} = \mu \min(x_n, 1 - x_n).$$

    Default `mu=2` (chaotic on `[0, 1]`, Lyapunov exponent `log 2`). Fixed
    points `0` and `mu / (1 + mu)`.

    In binary floating point, `mu = 2` doubles and shifts the mantissa, so every
    orbit collapses to `0` after about 53 (float64) or 24 (float32) steps. Use
    `mu` slightly below 2 (e.g. `1.9999`) for long orbits.

    State `(x,)`, `d = 1`.

    **Reference:** H. G. Schuster and W. Just, *Deterministic Chaos*, 4th ed.
    (Wiley, 2005), section 2.1.
    """

    mu: Float[Array, ""] = eqx.field(converter=as_param, default=2.0)
    d = 1
    state_names = ("x",)

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n, args
        return self.mu * jnp.minimum(x, 1 - x)

    def fixed_points(self) -> Float[Array, "2 1"]:
        """`0` and `mu / (1 + mu)` (the latter is a fixed point for `mu > 1`)."""
        return jnp.stack([jnp.zeros_like(self.mu), self.mu / (1 + self.mu)])[:, None]

    def default_x0(self) -> State:
        """`(0.2137,)`."""
        return jnp.array([0.2137], dtype=self.mu.dtype)


class StandardMap(AbstractMap):
    r"""The Chirikov standard map (kicked rotor).

    $$p_{n+1} = p_n + K \sin\theta_n, \quad \theta_{n+1} = \theta_n + p_{n+1}.$$

    Default `K=0.971635`, Greene's critical value at which the last
    rotational invariant circle (golden-mean winding) breaks up and chaos
    becomes global. With `wrap=True` (default) both coordinates are taken
    modulo `2 pi` into `[0, 2 pi)` (the map on the torus); with `wrap=False`
    the map acts on the plane (the lift), which is smooth everywhere. The
    Jacobian is the same either way. Fixed points (both cases): `(0, 0)`
    (hyperbolic for `K > 0`) and `(pi, 0)` (elliptic for `0 < K < 4`).

    `wrap` is static. State `(theta, p)`, `d = 2`.

    **References:** B. V. Chirikov, "A universal instability of many-dimensional
    oscillator systems", Phys. Rep. 52, 263-379 (1979); J. M. Greene, "A method
    for determining a stochastic transition", J. Math. Phys. 20, 1183-1201
    (1979).
    """

    K: Float[Array, ""] = eqx.field(converter=as_param, default=0.971635)
    wrap: bool = eqx.field(static=True, default=True)
    d = 2
    state_names = ("theta", "p")
    coordinate_periods = (2 * math.pi, 2 * math.pi)

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n, args
        theta, p = x
        p_next = p + self.K * jnp.sin(theta)
        theta_next = theta + p_next
        out = jnp.stack([theta_next, p_next])
        if self.wrap:
            out = jnp.mod(out, 2 * jnp.pi)
        return out

    def fixed_points(self) -> Float[Array, "2 2"]:
        """`(0, 0)` and `(pi, 0)`."""
        pi = jnp.asarray(jnp.pi, dtype=self.K.dtype)
        return jnp.stack([jnp.stack([0 * pi, 0 * pi]), jnp.stack([pi, 0 * pi])])

    def default_x0(self) -> State:
        """`(0.1, 0)`, in the chaotic layer around the hyperbolic point."""
        return jnp.array([0.1, 0.0], dtype=self.K.dtype)


class Ikeda(AbstractMap):
    r"""The Ikeda map (a model of light in a nonlinear optical ring cavity).

    $$x_{n+1} = a + u (x_n \cos\tau_n - y_n \sin\tau_n), \quad
    y_{n+1} = u (x_n \sin\tau_n + y_n \cos\tau_n), \quad
    \tau_n = k - \frac{p}{1 + x_n^2 + y_n^2}.$$

    Defaults `a=1, u=0.9, k=0.4, p=6` (the classic chaotic attractor), i.e.
    `z_{n+1} = a + u z_n exp(i tau_n)` with `z = x + i y`.

    State `(x, y)`, `d = 2`.

    **References:** K. Ikeda, "Multiple-valued stationary state and its
    instability of the transmitted light by a ring cavity system", Opt. Commun.
    30, 257-261 (1979); S. M. Hammel, C. K. R. T. Jones and J. V. Moloney,
    "Global dynamical behavior of the optical field in a ring cavity", J. Opt.
    Soc. Am. B 2, 552-564 (1985), for this form.
    """

    u: Float[Array, ""] = eqx.field(converter=as_param, default=0.9)
    a: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    k: Float[Array, ""] = eqx.field(converter=as_param, default=0.4)
    p: Float[Array, ""] = eqx.field(converter=as_param, default=6.0)
    d = 2
    state_names = ("x", "y")

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n, args
        x_, y = x
        tau = self.k - self.p / (1 + x_**2 + y**2)
        c, s = jnp.cos(tau), jnp.sin(tau)
        return jnp.stack(
            [self.a + self.u * (x_ * c - y * s), self.u * (x_ * s + y * c)]
        )

    def default_x0(self) -> State:
        """`(0.1, 0.1)`."""
        return jnp.array([0.1, 0.1], dtype=self.u.dtype)


class CatMap(AbstractMap):
    r"""Arnold's cat map on the unit torus.

    $$\begin{pmatrix} x_{n+1} \\ y_{n+1} \end{pmatrix} =
    \begin{pmatrix} 2 & 1 \\ 1 & 1 \end{pmatrix}
    \begin{pmatrix} x_n \\ y_n \end{pmatrix} \bmod 1.$$

    A hyperbolic (Anosov), area-preserving automorphism with Lyapunov exponents
    `±log((3 + sqrt 5) / 2)`. No parameters. Its only fixed point is the origin
    (`|det(A - I)| = 1`).

    State `(x, y)`, `d = 2`.

    **Reference:** V. I. Arnold and A. Avez, *Ergodic Problems of Classical
    Mechanics* (Benjamin, 1968).
    """

    d = 2
    state_names = ("x", "y")

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n, args
        x_, y = x
        return jnp.mod(jnp.stack([2 * x_ + y, x_ + y]), 1.0)

    def fixed_points(self) -> Float[Array, "1 2"]:
        """The origin."""
        return jnp.zeros((1, 2), dtype=jnp.result_type(float))

    def default_x0(self) -> State:
        """`(0.1234, 0.5678)`."""
        return jnp.array([0.1234, 0.5678], dtype=jnp.result_type(float))


class CircleMap(AbstractMap):
    r"""The sine circle map.

    $$\theta_{n+1} = \theta_n + \Omega - \frac{K}{2\pi} \sin(2\pi\theta_n)
    \pmod 1.$$

    Defaults `K=1` (the critical line, where the map stops being invertible)
    and `Omega=0.606661063` (golden-mean winding number at `K=1`). `wrap`
    (static, default `True`) takes the result modulo 1; `wrap=False` gives the
    lift, whose winding number is `lim theta_n / n`.

    State `(theta,)`, `d = 1`.

    **References:** S. J. Shenker, "Scaling behavior in a map of a circle onto
    itself: empirical results", Physica D 5, 405-411 (1982); M. H. Jensen,
    P. Bak and T. Bohr, Phys. Rev. Lett. 50, 1637 (1983).
    """

    K: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    Omega: Float[Array, ""] = eqx.field(converter=as_param, default=0.606661063)
    wrap: bool = eqx.field(static=True, default=True)
    d = 1
    state_names = ("theta",)

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n, args
        out = x + self.Omega - self.K / (2 * jnp.pi) * jnp.sin(2 * jnp.pi * x)
        if self.wrap:
            out = jnp.mod(out, 1.0)
        return out

    def default_x0(self) -> State:
        """`(0.1,)`."""
        return jnp.array([0.1], dtype=self.K.dtype)
