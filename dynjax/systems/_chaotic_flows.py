import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .._misc import as_param
from .._system import AbstractFlow
from ._common import guard


class Lorenz(AbstractFlow):
    r"""The Lorenz system.

    $$\dot x = \sigma (y - x), \quad \dot y = x (\rho - z) - y, \quad
    \dot z = x y - \beta z.$$

    Defaults `sigma=10, rho=28, beta=8/3` give the classic butterfly attractor,
    with Lyapunov spectrum about `(0.9056, 0, -14.5723)`. For `rho > 1` the
    equilibria are the origin and
    `C± = (±sqrt(beta (rho - 1)), ±sqrt(beta (rho - 1)), rho - 1)`.

    State `(x, y, z)`, `d = 3`.

    **Example:**

    ```python
    system = dynjax.systems.Lorenz(rho=28.0)
    sol = dynjax.trajectory(system, system.default_x0(), t1=10.0)
    ```

    **Reference:** E. N. Lorenz, "Deterministic nonperiodic flow",
    J. Atmos. Sci. 20, 130-141 (1963).
    """

    sigma: Float[Array, ""] = eqx.field(converter=as_param, default=10.0)
    rho: Float[Array, ""] = eqx.field(converter=as_param, default=28.0)
    beta: Float[Array, ""] = eqx.field(converter=as_param, default=8.0 / 3.0)
    d = 3
    state_names = ("x", "y", "z")

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

    def equilibria(self) -> Float[Array, "3 3"]:
        """The closed-form equilibria: the origin and `C±` (rows).

        Raises at run time if `rho < 1` (then `C±` are not real).
        """
        arg = guard(
            self.beta * (self.rho - 1),
            self.beta * (self.rho - 1) < 0,
            "Lorenz: C± = (±sqrt(beta(rho-1)), ...) is not real for beta(rho-1) < 0; "
            "only the origin is an equilibrium there.",
        )
        c = jnp.sqrt(arg)
        return jnp.stack(
            [
                jnp.zeros(3, dtype=c.dtype),
                jnp.stack([c, c, self.rho - 1]),
                jnp.stack([-c, -c, self.rho - 1]),
            ]
        )

    def default_x0(self) -> State:
        """`(1, 1, 1)`: close to the origin, so the orbit falls onto the attractor."""
        return jnp.ones(3, dtype=self.rho.dtype)


class Rossler(AbstractFlow):
    r"""The Rössler system.

    $$\dot x = -y - z, \quad \dot y = x + a y, \quad \dot z = b + z (x - c).$$

    Defaults `a=0.2, b=0.2, c=5.7` (Rössler's chaotic "spiral" attractor).
    For `c^2 >= 4ab` the equilibria are
    `x± = (c ± sqrt(c^2 - 4ab)) / 2`, `y± = -x± / a`, `z± = x± / a`.

    State `(x, y, z)`, `d = 3`.

    **Reference:** O. E. Rössler, "An equation for continuous chaos",
    Phys. Lett. A 57, 397-398 (1976).
    """

    a: Float[Array, ""] = eqx.field(converter=as_param, default=0.2)
    b: Float[Array, ""] = eqx.field(converter=as_param, default=0.2)
    c: Float[Array, ""] = eqx.field(converter=as_param, default=5.7)
    d = 3
    state_names = ("x", "y", "z")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y, z = x
        return jnp.stack([-y - z, x_ + self.a * y, self.b + z * (x_ - self.c)])

    def equilibria(self) -> Float[Array, "2 3"]:
        """The two equilibria `(x±, -x±/a, x±/a)`, `+` root first.

        Raises at run time if `c^2 < 4ab` (no real equilibria).
        """
        disc = self.c**2 - 4 * self.a * self.b
        disc = guard(disc, disc < 0, "Rossler: no real equilibria for c^2 < 4ab.")
        xs = (self.c + jnp.array([1.0, -1.0]) * jnp.sqrt(disc)) / 2
        return jnp.stack([xs, -xs / self.a, xs / self.a], axis=1)

    def default_x0(self) -> State:
        """`(1, 1, 0)`, which falls onto the attractor within one turn."""
        return jnp.array([1.0, 1.0, 0.0], dtype=self.a.dtype)


class Chen(AbstractFlow):
    r"""The Chen system, a dual of the Lorenz system.

    $$\dot x = a (y - x), \quad \dot y = (c - a) x - x z + c y, \quad
    \dot z = x y - b z.$$

    Defaults `a=35, b=3, c=28` (chaotic double-scroll attractor). Equilibria:
    the origin and `(±sqrt(b (2c - a)), ±sqrt(b (2c - a)), 2c - a)`.

    State `(x, y, z)`, `d = 3`.

    **Reference:** G. Chen and T. Ueta, "Yet another chaotic attractor",
    Int. J. Bifurcation Chaos 9, 1465-1466 (1999).
    """

    a: Float[Array, ""] = eqx.field(converter=as_param, default=35.0)
    b: Float[Array, ""] = eqx.field(converter=as_param, default=3.0)
    c: Float[Array, ""] = eqx.field(converter=as_param, default=28.0)
    d = 3
    state_names = ("x", "y", "z")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y, z = x
        return jnp.stack(
            [
                self.a * (y - x_),
                (self.c - self.a) * x_ - x_ * z + self.c * y,
                x_ * y - self.b * z,
            ]
        )

    def equilibria(self) -> Float[Array, "3 3"]:
        """The origin and the two symmetric equilibria (rows).

        Raises at run time if `b (2c - a) < 0`.
        """
        arg = self.b * (2 * self.c - self.a)
        arg = guard(arg, arg < 0, "Chen: nontrivial equilibria need b(2c - a) >= 0.")
        q = jnp.sqrt(arg)
        z = 2 * self.c - self.a
        return jnp.stack(
            [jnp.zeros(3, dtype=q.dtype), jnp.stack([q, q, z]), jnp.stack([-q, -q, z])]
        )

    def default_x0(self) -> State:
        """`(-10, 0, 37)`, near the attractor."""
        return jnp.array([-10.0, 0.0, 37.0], dtype=self.a.dtype)


class Chua(AbstractFlow):
    r"""Chua's circuit with a smooth cubic nonlinearity (dimensionless).

    $$\dot x = \alpha (y - \phi(x)), \quad \dot y = x - y + z, \quad
    \dot z = -\beta y, \qquad \phi(x) = x^3 / 16 - x / 6.$$

    The piecewise-linear Chua diode is replaced by the cubic `phi`, which keeps
    the vector field smooth (so Jacobians and continuation are well defined).
    Defaults `alpha=10, beta=16` give a double-scroll chaotic attractor (we
    measured a largest Lyapunov exponent of about 0.4). Equilibria: the origin
    and `(±sqrt(8/3), 0, ∓sqrt(8/3))` (the roots of `phi`).

    State `(x, y, z)`, `d = 3`.

    **References:** A. I. Khibnik, D. Roose and L. O. Chua, "On periodic orbits
    and homoclinic bifurcations in Chua's circuit with a smooth nonlinearity",
    Int. J. Bifurcation Chaos 3, 363-384 (1993); Y. A. Kuznetsov, *Elements of
    Applied Bifurcation Theory* (Springer, 1998), which uses the same form.
    """

    alpha: Float[Array, ""] = eqx.field(converter=as_param, default=10.0)
    beta: Float[Array, ""] = eqx.field(converter=as_param, default=16.0)
    d = 3
    state_names = ("x", "y", "z")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y, z = x
        phi = x_**3 / 16 - x_ / 6
        return jnp.stack([self.alpha * (y - phi), x_ - y + z, -self.beta * y])

    def equilibria(self) -> Float[Array, "3 3"]:
        """The origin and `(±sqrt(8/3), 0, ∓sqrt(8/3))` (rows)."""
        q = jnp.sqrt(jnp.asarray(8.0 / 3.0, dtype=self.alpha.dtype))
        zero = jnp.zeros_like(q)
        return jnp.stack(
            [
                jnp.stack([zero, zero, zero]),
                jnp.stack([q, zero, -q]),
                jnp.stack([-q, zero, q]),
            ]
        )

    def default_x0(self) -> State:
        """`(0.5, 0, 0)`, which falls onto the double scroll."""
        return jnp.array([0.5, 0.0, 0.0], dtype=self.alpha.dtype)


class Lorenz84(AbstractFlow):
    r"""Lorenz's 1984 low-order model of the general atmospheric circulation.

    $$\dot x = -y^2 - z^2 - a x + a F, \quad \dot y = x y - b x z - y + G, \quad
    \dot z = b x y + x z - z.$$

    Defaults `a=0.25, b=4, F=8, G=1` (chaotic). `x` is the westerly wind, `y`
    and `z` the cosine and sine phases of a chain of large-scale eddies.

    State `(x, y, z)`, `d = 3`.

    **Reference:** E. N. Lorenz, "Irregularity: a fundamental property of the
    atmosphere", Tellus A 36, 98-110 (1984).
    """

    a: Float[Array, ""] = eqx.field(converter=as_param, default=0.25)
    b: Float[Array, ""] = eqx.field(converter=as_param, default=4.0)
    F: Float[Array, ""] = eqx.field(converter=as_param, default=8.0)
    G: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 3
    state_names = ("x", "y", "z")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y, z = x
        return jnp.stack(
            [
                -(y**2) - z**2 - self.a * x_ + self.a * self.F,
                x_ * y - self.b * x_ * z - y + self.G,
                self.b * x_ * y + x_ * z - z,
            ]
        )

    def default_x0(self) -> State:
        """`(1, 1, 1)`."""
        return jnp.ones(3, dtype=self.a.dtype)


class Thomas(AbstractFlow):
    r"""Thomas' cyclically symmetric attractor.

    $$\dot x = \sin y - b x, \quad \dot y = \sin z - b y, \quad
    \dot z = \sin x - b z.$$

    Default `b=0.208186` (chaotic; `b -> 0` gives "labyrinth chaos").

    State `(x, y, z)`, `d = 3`.

    **Reference:** R. Thomas, "Deterministic chaos seen in terms of feedback
    circuits: analysis, synthesis, 'labyrinth chaos'", Int. J. Bifurcation
    Chaos 9, 1889-1905 (1999).
    """

    b: Float[Array, ""] = eqx.field(converter=as_param, default=0.208186)
    d = 3
    state_names = ("x", "y", "z")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        return jnp.sin(jnp.roll(x, -1)) - self.b * x

    def default_x0(self) -> State:
        """`(0.1, 0, 0)`."""
        return jnp.array([0.1, 0.0, 0.0], dtype=self.b.dtype)


class SprottA(AbstractFlow):
    r"""Sprott's case A, a conservative flow (a Nosé-Hoover thermostat).

    $$\dot x = y, \quad \dot y = -x + y z, \quad \dot z = 1 - y^2.$$

    No parameters and no equilibria (`z' = 0` needs `y = ±1`, but then
    `x' != 0`). Orbits starting near `(0, 5, 0)` are chaotic.

    State `(x, y, z)`, `d = 3`.

    **Reference:** J. C. Sprott, "Some simple chaotic flows", Phys. Rev. E 50,
    R647-R650 (1994).
    """

    d = 3
    state_names = ("x", "y", "z")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        x_, y, z = x
        return jnp.stack([y, -x_ + y * z, 1 - y**2])

    def default_x0(self) -> State:
        """`(0, 5, 0)`, in the chaotic sea (Sprott 1994)."""
        return jnp.array([0.0, 5.0, 0.0], dtype=jnp.result_type(float))
