import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .._misc import as_param
from .._system import AbstractFlow


class Lorenz(AbstractFlow):
    r"""The Lorenz system.

    $$\dot x = \sigma (y - x), \quad \dot y = x (\rho - z) - y, \quad
    \dot z = x y - \beta z.$$

    Defaults `sigma=10, rho=28, beta=8/3` give the classic butterfly attractor,
    with Lyapunov spectrum about `(0.9056, 0, -14.5723)`. For `rho > 1` the
    equilibria are the origin and
    `C± = (±sqrt(beta (rho - 1)), ±sqrt(beta (rho - 1)), rho - 1)`.

    **Reference:** E. N. Lorenz, "Deterministic nonperiodic flow",
    J. Atmos. Sci. 20, 130-141 (1963).
    """

    sigma: Float[Array, ""] = eqx.field(converter=as_param, default=10.0)
    rho: Float[Array, ""] = eqx.field(converter=as_param, default=28.0)
    beta: Float[Array, ""] = eqx.field(converter=as_param, default=8.0 / 3.0)
    d = 3

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y, z = x
        return jnp.stack(
            [
                self.sigma * (y - x_),
                x_ * (self.rho - z) - y,
                x_ * y - self.beta * z,
            ]
        )

    def equilibria(self) -> Float[Array, "n d"]:
        """The closed-form equilibria: the origin and, for `rho > 1`, `C±`."""
        c = jnp.sqrt(self.beta * (self.rho - 1))
        return jnp.stack(
            [
                jnp.zeros(3),
                jnp.stack([c, c, self.rho - 1]),
                jnp.stack([-c, -c, self.rho - 1]),
            ]
        )
