"""Normal forms of the codimension-one bifurcations of equilibria.

The one-dimensional normal forms (saddle-node, transcritical, pitchfork) are
given a second, linear and stable coordinate `y' = -y`, so that they are
planar systems (`d = 2`) whose `y`-direction has exponent `-1`; the
bifurcation happens in `x` alone. See Strogatz (1994), chapters 3 and 8, and
Guckenheimer & Holmes (1983), section 3.4.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .._misc import as_param
from .._system import AbstractFlow
from ._common import guard


class SaddleNodeNormalForm(AbstractFlow):
    r"""Normal form of the saddle-node (fold) bifurcation, with a stable `y`.

    $$\dot x = \mu - x^2, \quad \dot y = -y.$$

    For `mu > 0` there are two equilibria `(±sqrt(mu), 0)` (`+`: stable node,
    `-`: saddle); they collide at `mu = 0` and disappear for `mu < 0`.
    Default `mu=1`.

    State `(x, y)`, `d = 2`.

    **Reference:** S. H. Strogatz, *Nonlinear Dynamics and Chaos*
    (Addison-Wesley, 1994), section 3.1.
    """

    mu: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 2
    state_names = ("x", "y")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y = x
        return jnp.stack([self.mu - x_**2, -y])

    def equilibria(self) -> Float[Array, "2 2"]:
        """`(sqrt(mu), 0)` and `(-sqrt(mu), 0)`. Raises at run time if `mu < 0`."""
        mu = guard(
            self.mu,
            self.mu < 0,
            "SaddleNodeNormalForm: no equilibria for "
            "mu < 0 (they appear at the fold mu = 0).",
        )
        r = jnp.sqrt(mu)
        return jnp.stack([jnp.stack([r, 0 * r]), jnp.stack([-r, 0 * r])])

    def default_x0(self) -> State:
        """`(0, 0.5)`."""
        return jnp.array([0.0, 0.5], dtype=self.mu.dtype)


class TranscriticalNormalForm(AbstractFlow):
    r"""Normal form of the transcritical bifurcation, with a stable `y`.

    $$\dot x = \mu x - x^2, \quad \dot y = -y.$$

    Equilibria `(0, 0)` and `(mu, 0)` exchange stability at `mu = 0`.
    Default `mu=1`.

    State `(x, y)`, `d = 2`.

    **Reference:** S. H. Strogatz, *Nonlinear Dynamics and Chaos*
    (Addison-Wesley, 1994), section 3.2.
    """

    mu: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 2
    state_names = ("x", "y")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y = x
        return jnp.stack([self.mu * x_ - x_**2, -y])

    def equilibria(self) -> Float[Array, "2 2"]:
        """`(0, 0)` and `(mu, 0)`."""
        zero = jnp.zeros_like(self.mu)
        return jnp.stack([jnp.stack([zero, zero]), jnp.stack([self.mu, zero])])

    def default_x0(self) -> State:
        """`(0.1, 0.5)`."""
        return jnp.array([0.1, 0.5], dtype=self.mu.dtype)


class PitchforkNormalForm(AbstractFlow):
    r"""Normal form of the supercritical pitchfork bifurcation, with a stable `y`.

    $$\dot x = \mu x - x^3, \quad \dot y = -y.$$

    The origin is an equilibrium for every `mu`; for `mu > 0` it is unstable
    and the stable pair `(±sqrt(mu), 0)` exists. Default `mu=1`.

    State `(x, y)`, `d = 2`.

    **Reference:** S. H. Strogatz, *Nonlinear Dynamics and Chaos*
    (Addison-Wesley, 1994), section 3.4.
    """

    mu: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 2
    state_names = ("x", "y")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y = x
        return jnp.stack([self.mu * x_ - x_**3, -y])

    def equilibria(self) -> Float[Array, "3 2"]:
        """`(0, 0)`, `(sqrt(mu), 0)`, `(-sqrt(mu), 0)`.

        Raises at run time if `mu < 0` (then only the origin exists).
        """
        mu = guard(
            self.mu,
            self.mu < 0,
            "PitchforkNormalForm: for mu < 0 the origin "
            "is the only equilibrium; (±sqrt(mu), 0) needs mu >= 0.",
        )
        r = jnp.sqrt(mu)
        zero = 0 * r
        return jnp.stack(
            [jnp.stack([zero, zero]), jnp.stack([r, zero]), jnp.stack([-r, zero])]
        )

    def default_x0(self) -> State:
        """`(0.1, 0.5)`."""
        return jnp.array([0.1, 0.5], dtype=self.mu.dtype)


class HopfNormalForm(AbstractFlow):
    r"""Normal form of the Hopf bifurcation in Cartesian coordinates.

    $$\dot x = \mu x - \omega y - \beta x (x^2 + y^2), \quad
    \dot y = \omega x + \mu y - \beta y (x^2 + y^2),$$

    that is `r' = mu r - beta r^3`, `theta' = omega` in polar coordinates. For
    `beta > 0` the bifurcation at `mu = 0` is supercritical: for `mu > 0` the
    origin is an unstable focus surrounded by a stable limit cycle of radius
    `sqrt(mu / beta)` and angular frequency `omega`. Defaults
    `mu=1, omega=1, beta=1`.

    State `(x, y)`, `d = 2`.

    **References:** J. Guckenheimer and P. Holmes, *Nonlinear Oscillations,
    Dynamical Systems, and Bifurcations of Vector Fields* (Springer, 1983),
    section 3.4; S. H. Strogatz, *Nonlinear Dynamics and Chaos* (1994),
    section 8.2.
    """

    mu: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    omega: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    beta: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 2
    state_names = ("x", "y")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y = x
        r2 = x_**2 + y**2
        return jnp.stack(
            [
                self.mu * x_ - self.omega * y - self.beta * x_ * r2,
                self.omega * x_ + self.mu * y - self.beta * y * r2,
            ]
        )

    def equilibria(self) -> Float[Array, "1 2"]:
        """The origin."""
        return jnp.zeros((1, 2), dtype=self.mu.dtype)

    def limit_cycle_radius(self) -> Float[Array, ""]:
        """`sqrt(mu / beta)`. Raises at run time if `mu / beta < 0` (no cycle)."""
        q = self.mu / self.beta
        q = guard(q, q < 0, "HopfNormalForm: no limit cycle for mu / beta < 0.")
        return jnp.sqrt(q)

    def default_x0(self) -> State:
        """`(0.1, 0)`, near the unstable focus."""
        return jnp.array([0.1, 0.0], dtype=self.mu.dtype)
