import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike, State
from .._misc import as_param
from .._system import AbstractFlow
from ._common import as_inexact, check_size


class Lorenz96(AbstractFlow):
    r"""The Lorenz-96 model on a ring of `N` sites.

    $$\dot x_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F,
    \qquad i = 1, \dots, N \ (\text{indices mod } N).$$

    Defaults `N=40, F=8` (Lorenz & Emanuel's configuration; chaotic for
    `F >~ 5`). The uniform state `x_i = F` is an equilibrium.

    `N` is static (a Python int >= 4) and fixes `d = N`.

    **References:** E. N. Lorenz, "Predictability: a problem partly solved",
    Proc. ECMWF Seminar on Predictability (1996); E. N. Lorenz and K. A.
    Emanuel, "Optimal sites for supplementary weather observations", J. Atmos.
    Sci. 55, 399-414 (1998).
    """

    N: int = eqx.field(static=True, default=40)
    F: Float[Array, ""] = eqx.field(converter=as_param, default=8.0)

    def __check_init__(self):
        check_size(self.N, "Lorenz96", 4)

    @property
    def d(self) -> int:
        return self.N

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        # jnp.roll(x, -1)[i] = x[i+1], jnp.roll(x, 2)[i] = x[i-2].
        return (jnp.roll(x, -1) - jnp.roll(x, 2)) * jnp.roll(x, 1) - x + self.F

    def equilibria(self) -> Float[Array, "1 N"]:
        """The uniform state `x_i = F`."""
        return jnp.full((1, self.N), self.F)

    def default_x0(self) -> State:
        """`x_i = F` with `x_1` raised by 0.01: leaves the unstable equilibrium."""
        return jnp.full((self.N,), self.F).at[0].add(0.01)


class Kuramoto(AbstractFlow):
    r"""The Kuramoto model of `N` coupled phase oscillators.

    $$\dot\theta_i = \omega_i + \frac{K}{N} \sum_{j=1}^N \sin(\theta_j - \theta_i),$$

    evaluated in `O(N)` through the order parameter
    `r e^{i psi} = (1/N) sum_j e^{i theta_j}`:
    `theta_i' = omega_i + K r sin(psi - theta_i)`.

    **Arguments:**

    - `omega`: the natural frequencies, shape `(N,)`, `N >= 1`; fixes `d = N`.
    - `K`: the coupling strength, default `1.0`. For frequencies drawn from a
      density `g` (symmetric, unimodal), incoherence loses stability at
      `K_c = 2 / (pi g(0))` (e.g. `K_c = 2 gamma` for a Lorentzian of
      half-width `gamma`).

    **References:** Y. Kuramoto, "Self-entrainment of a population of coupled
    non-linear oscillators", Lecture Notes in Physics 39, 420-422 (1975);
    S. H. Strogatz, "From Kuramoto to Crawford", Physica D 143, 1-20 (2000).
    """

    omega: Float[Array, " N"] = eqx.field(converter=as_param)
    K: Float[Array, ""] = eqx.field(converter=as_param)
    N: int = eqx.field(static=True)

    def __init__(self, omega, K=1.0):
        shape = jnp.shape(omega)
        if len(shape) != 1 or shape[0] == 0:
            raise ValueError(
                f"Kuramoto needs `omega`, the natural frequencies, as a 1-D array of "
                f"shape (N,) with N >= 1, got shape {shape}."
            )
        self.omega = as_inexact(omega)
        self.K = K
        self.N = shape[0]

    @property
    def d(self) -> int:
        return self.N

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        c, s = jnp.mean(jnp.cos(x)), jnp.mean(jnp.sin(x))
        # (1/N) sum_j sin(theta_j - theta_i) = S cos(theta_i) - C sin(theta_i).
        return self.omega + self.K * (s * jnp.cos(x) - c * jnp.sin(x))

    def order_parameter(self, x: State) -> Float[Array, ""]:
        """The synchrony `r = |(1/N) sum_j exp(i theta_j)|`, in `[0, 1]`."""
        return jnp.hypot(jnp.mean(jnp.cos(x)), jnp.mean(jnp.sin(x)))

    def default_x0(self) -> State:
        """Phases spread evenly over `[0, pi)`, `theta_i = pi i / N`."""
        return jnp.pi * jnp.arange(self.N, dtype=self.omega.dtype) / self.N


class RandomRateNetwork(AbstractFlow):
    r"""The random rate network of Sompolinsky, Crisanti and Sommers.

    $$\dot h_i = -h_i + \sum_{j=1}^N J_{ij} \tanh(h_j), \qquad
    J_{ij} \sim \mathcal N(0, g^2 / N) \text{ i.i.d.}$$

    For `N -> infinity` the origin is stable for `g < 1` and the network is
    chaotic for `g > 1`. Default `g=2` (chaotic).

    **Arguments:**

    - `N`: the number of units (static, `>= 1`), default 200; `d = N`.
    - `g`: the gain, default `2.0`.
    - `key`: a `jax.random` key; the same key gives the same `J`.

    `J` (shape `(N, N)`) is the parameter the dynamics use (differentiate or
    train it); `g` records the gain it was drawn with. Changing `g` afterwards
    does not rescale `J`: build a new network instead.

    **Reference:** H. Sompolinsky, A. Crisanti and H. J. Sommers, "Chaos in
    random neural networks", Phys. Rev. Lett. 61, 259-262 (1988).
    """

    J: Float[Array, "N N"] = eqx.field(converter=as_param)
    g: Float[Array, ""] = eqx.field(converter=as_param)
    N: int = eqx.field(static=True)

    def __init__(self, N: int = 200, g=2.0, *, key: PRNGKeyArray):
        check_size(N, "RandomRateNetwork", 1)
        self.N = N
        self.g = g
        g = jnp.asarray(g, dtype=jnp.result_type(float))
        z = jax.random.normal(key, (N, N), dtype=jnp.result_type(float))
        self.J = g * z / jnp.sqrt(N)

    @property
    def d(self) -> int:
        return self.N

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        return -x + self.J @ jnp.tanh(x)

    def equilibria(self) -> Float[Array, "1 N"]:
        """The origin (an equilibrium for every `J`)."""
        return jnp.zeros((1, self.N), dtype=self.J.dtype)

    def default_x0(self) -> State:
        """A deterministic small state, `h_i = 0.1 sin(i + 1)`."""
        return 0.1 * jnp.sin(jnp.arange(1, self.N + 1, dtype=self.J.dtype))
