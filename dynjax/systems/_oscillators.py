import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .._misc import as_param
from .._system import AbstractFlow
from ._common import guard


class Duffing(AbstractFlow):
    r"""The periodically forced Duffing oscillator (non-autonomous).

    $$\ddot x + \delta \dot x + \alpha x + \beta x^3 = \gamma \cos(\omega t),$$

    as the first-order system on the state `(x, v)`, `v = x'`:

    $$\dot x = v, \quad \dot v = -\delta v - \alpha x - \beta x^3
    + \gamma \cos(\omega t).$$

    Defaults `delta=0.05, alpha=0, beta=1, gamma=7.5, omega=1` are Ueda's
    chaotic "Japanese attractor" (`x'' + k x' + x^3 = B cos t`, `k=0.05`,
    `B=7.5`). For the double-well (Holmes) case use `alpha=-1, beta=1,
    delta=0.25, gamma=0.3, omega=1`. The vector field depends on `t`, so there
    are no equilibria; use `dynjax.autonomize` for an autonomous version.

    State `(x, v)`, `d = 2`.

    **References:** Y. Ueda, "Randomly transitional phenomena in the system
    governed by Duffing's equation", J. Stat. Phys. 20, 181-196 (1979);
    J. Guckenheimer and P. Holmes, *Nonlinear Oscillations, Dynamical Systems,
    and Bifurcations of Vector Fields* (Springer, 1983), section 2.2.
    """

    delta: Float[Array, ""] = eqx.field(converter=as_param, default=0.05)
    alpha: Float[Array, ""] = eqx.field(converter=as_param, default=0.0)
    beta: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    gamma: Float[Array, ""] = eqx.field(converter=as_param, default=7.5)
    omega: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 2
    state_names = ("x", "v")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del args
        x_, v = x
        force = self.gamma * jnp.cos(self.omega * t)
        return jnp.stack(
            [v, -self.delta * v - self.alpha * x_ - self.beta * x_**3 + force]
        )

    def default_x0(self) -> State:
        """`(2.5, 0)`, inside Ueda's chaotic attractor's range."""
        return jnp.array([2.5, 0.0], dtype=self.delta.dtype)


class VanDerPol(AbstractFlow):
    r"""The van der Pol oscillator.

    $$\dot x = y, \quad \dot y = \mu (1 - x^2) y - x.$$

    Default `mu=1`: a stable limit cycle of amplitude about 2 around the
    unstable equilibrium at the origin (the only equilibrium).

    State `(x, y)`, `d = 2`.

    **Reference:** B. van der Pol, "On relaxation-oscillations", Phil. Mag. 2,
    978-992 (1926).
    """

    mu: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 2
    state_names = ("x", "y")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y = x
        return jnp.stack([y, self.mu * (1 - x_**2) * y - x_])

    def equilibria(self) -> Float[Array, "1 2"]:
        """The origin."""
        return jnp.zeros((1, 2), dtype=self.mu.dtype)

    def default_x0(self) -> State:
        """`(2, 0)`, close to the limit cycle."""
        return jnp.array([2.0, 0.0], dtype=self.mu.dtype)


class FitzHughNagumo(AbstractFlow):
    r"""The FitzHugh-Nagumo model of an excitable neuron.

    $$\dot v = v - v^3 / 3 - w + I, \quad \dot w = \epsilon (v + a - b w).$$

    Defaults `a=0.7, b=0.8, epsilon=0.08` (FitzHugh's values) and `I=0.5`
    (the resting state is unstable: relaxation oscillations).

    State `(v, w)`, `d = 2`.

    **References:** R. FitzHugh, "Impulses and physiological states in
    theoretical models of nerve membrane", Biophys. J. 1, 445-466 (1961);
    J. Nagumo, S. Arimoto and S. Yoshizawa, Proc. IRE 50, 2061-2070 (1962);
    E. M. Izhikevich and R. FitzHugh, "FitzHugh-Nagumo model", Scholarpedia
    1(9):1349 (2006) for this form and parameters.
    """

    a: Float[Array, ""] = eqx.field(converter=as_param, default=0.7)
    b: Float[Array, ""] = eqx.field(converter=as_param, default=0.8)
    epsilon: Float[Array, ""] = eqx.field(converter=as_param, default=0.08)
    I: Float[Array, ""] = eqx.field(converter=as_param, default=0.5)  # noqa: E741
    d = 2
    state_names = ("v", "w")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        v, w = x
        return jnp.stack(
            [v - v**3 / 3 - w + self.I, self.epsilon * (v + self.a - self.b * w)]
        )

    def default_x0(self) -> State:
        """`(-1, 1)`."""
        return jnp.array([-1.0, 1.0], dtype=self.a.dtype)


class Brusselator(AbstractFlow):
    r"""The Brusselator model of an autocatalytic reaction.

    $$\dot x = a - (b + 1) x + x^2 y, \quad \dot y = b x - x^2 y.$$

    Defaults `a=1, b=3`; the unique equilibrium `(a, b/a)` loses stability in
    a Hopf bifurcation at `b = 1 + a^2`, so the defaults give a limit cycle.

    State `(x, y)`, `d = 2`.

    **Reference:** I. Prigogine and R. Lefever, "Symmetry breaking instabilities
    in dissipative systems. II", J. Chem. Phys. 48, 1695-1700 (1968).
    """

    a: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    b: Float[Array, ""] = eqx.field(converter=as_param, default=3.0)
    d = 2
    state_names = ("x", "y")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y = x
        return jnp.stack(
            [self.a - (self.b + 1) * x_ + x_**2 * y, self.b * x_ - x_**2 * y]
        )

    def equilibria(self) -> Float[Array, "1 2"]:
        """`(a, b/a)`. Raises at run time if `a = 0`."""
        a = guard(self.a, self.a == 0, "Brusselator: no equilibrium for a = 0.")
        return jnp.stack([a, self.b / a])[None]

    def default_x0(self) -> State:
        """`(1, 1)`."""
        return jnp.array([1.0, 1.0], dtype=self.a.dtype)


class LotkaVolterra(AbstractFlow):
    r"""The Lotka-Volterra predator-prey model.

    $$\dot x = \alpha x - \beta x y, \quad \dot y = \delta x y - \gamma y.$$

    `x` is the prey, `y` the predator. Defaults `alpha=beta=gamma=delta=1`,
    the nondimensional form (Murray's `u' = u (1 - v)`, `v' = a v (u - 1)` with
    `a = 1`). Orbits are closed curves around the coexistence equilibrium
    `(gamma/delta, alpha/beta)`; the other equilibrium is the origin. The
    quantity `delta x - gamma log x + beta y - alpha log y` is conserved.

    State `(x, y)`, `d = 2`.

    **References:** A. J. Lotka, *Elements of Physical Biology* (1925);
    V. Volterra, Nature 118, 558-560 (1926); J. D. Murray, *Mathematical
    Biology I*, 3rd ed. (Springer, 2002), section 3.1.
    """

    alpha: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    beta: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    gamma: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    delta: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 2
    state_names = ("x", "y")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y = x
        return jnp.stack(
            [self.alpha * x_ - self.beta * x_ * y, self.delta * x_ * y - self.gamma * y]
        )

    def equilibria(self) -> Float[Array, "2 2"]:
        """The origin and `(gamma/delta, alpha/beta)`.

        Raises at run time if `beta` or `delta` is zero.
        """
        bad = (self.beta == 0) | (self.delta == 0)
        beta = guard(
            self.beta,
            bad,
            "LotkaVolterra: no coexistence equilibrium when beta or delta is zero.",
        )
        coexist = jnp.stack([self.gamma / self.delta, self.alpha / beta])
        return jnp.stack([jnp.zeros_like(coexist), coexist])

    def conserved(self, x: State) -> Float[Array, ""]:
        """The first integral `delta x - gamma log x + beta y - alpha log y`."""
        x_, y = x
        return (
            self.delta * x_
            - self.gamma * jnp.log(x_)
            + self.beta * y
            - self.alpha * jnp.log(y)
        )

    def default_x0(self) -> State:
        """`(2, 1)`: an orbit around the coexistence equilibrium."""
        return jnp.array([2.0, 1.0], dtype=self.alpha.dtype)
