import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, State
from .._misc import as_param
from .._system import AbstractFlow
from ._common import guard


class HenonHeiles(AbstractFlow):
    r"""The Hénon-Heiles Hamiltonian system.

    $$H = \tfrac12 (p_x^2 + p_y^2) + \tfrac12 (x^2 + y^2)
    + \lambda (x^2 y - y^3 / 3),$$

    $$\dot x = p_x, \quad \dot y = p_y, \quad \dot p_x = -x - 2 \lambda x y,
    \quad \dot p_y = -y - \lambda (x^2 - y^2).$$

    Default `lam=1` (the original). Equilibria (all with `p = 0`): the origin,
    `(0, 1/lam)` and `(±sqrt(3)/(2 lam), -1/(2 lam))`, the last three saddles
    at the escape energy `1/(6 lam^2)`. Chaos is widespread for energies near
    `1/8` to `1/6`.

    State `(x, y, p_x, p_y)`, `d = 4`.

    **Reference:** M. Hénon and C. Heiles, "The applicability of the third
    integral of motion: some numerical experiments", Astron. J. 69, 73-79
    (1964).
    """

    lam: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    d = 4
    state_names = ("x", "y", "p_x", "p_y")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        q1, q2, p1, p2 = x
        return jnp.stack(
            [
                p1,
                p2,
                -q1 - 2 * self.lam * q1 * q2,
                -q2 - self.lam * (q1**2 - q2**2),
            ]
        )

    def energy(self, x: State) -> Float[Array, ""]:
        """The Hamiltonian `H` (conserved)."""
        q1, q2, p1, p2 = x
        return (
            (p1**2 + p2**2) / 2
            + (q1**2 + q2**2) / 2
            + self.lam * (q1**2 * q2 - q2**3 / 3)
        )

    def equilibria(self) -> Float[Array, "4 4"]:
        """The origin and the three saddles (rows). Raises if `lam = 0`."""
        lam = guard(
            self.lam,
            self.lam == 0,
            "HenonHeiles: for lam = 0 the origin is the only equilibrium.",
        )
        zero = jnp.zeros_like(lam)
        s = jnp.sqrt(jnp.asarray(3.0, dtype=lam.dtype)) / (2 * lam)
        rows = [
            (zero, zero),
            (zero, 1 / lam),
            (s, -1 / (2 * lam)),
            (-s, -1 / (2 * lam)),
        ]
        return jnp.stack([jnp.stack([a, b, zero, zero]) for a, b in rows])

    def default_x0(self) -> State:
        """`(0, 0.1, 0.5, 0)`, energy about 0.13."""
        return jnp.array([0.0, 0.1, 0.5, 0.0], dtype=self.lam.dtype)


class DoublePendulum(AbstractFlow):
    r"""The planar double pendulum (two point masses on massless rigid rods).

    With angles `theta_i` from the downward vertical, `omega_i = theta_i'` and
    `Delta = theta_1 - theta_2`, the Euler-Lagrange equations read

    $$\begin{pmatrix} (m_1 + m_2) l_1 & m_2 l_2 \cos\Delta \\
    l_1 \cos\Delta & l_2 \end{pmatrix}
    \begin{pmatrix} \dot\omega_1 \\ \dot\omega_2 \end{pmatrix} =
    \begin{pmatrix} -m_2 l_2 \omega_2^2 \sin\Delta - (m_1 + m_2) g \sin\theta_1 \\
    l_1 \omega_1^2 \sin\Delta - g \sin\theta_2 \end{pmatrix},$$

    solved in closed form (the determinant `l_1 l_2 (m_1 + m_2 sin^2 Delta)` is
    positive). Defaults `m1=m2=1, l1=l2=1, g=9.81`. Equilibria: both rods down,
    up, or one of each (`theta_i` in `{0, pi}`, `omega = 0`).

    State `(theta_1, theta_2, omega_1, omega_2)`, `d = 4`.

    **References:** T. Shinbrot, C. Grebogi, J. Wisdom and J. A. Yorke, "Chaos
    in a double pendulum", Am. J. Phys. 60, 491-499 (1992); H. Goldstein,
    *Classical Mechanics*, 2nd ed. (1980), for the Lagrangian.
    """

    m1: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    m2: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    l1: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    l2: Float[Array, ""] = eqx.field(converter=as_param, default=1.0)
    g: Float[Array, ""] = eqx.field(converter=as_param, default=9.81)
    d = 4
    state_names = ("theta_1", "theta_2", "omega_1", "omega_2")

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        th1, th2, w1, w2 = x
        m1, m2, l1, l2, g = self.m1, self.m2, self.l1, self.l2, self.g
        delta = th1 - th2
        c, s = jnp.cos(delta), jnp.sin(delta)
        r1 = -m2 * l2 * w2**2 * s - (m1 + m2) * g * jnp.sin(th1)
        r2 = l1 * w1**2 * s - g * jnp.sin(th2)
        det = (m1 + m2) * l1 * l2 - m2 * l1 * l2 * c**2
        dw1 = (l2 * r1 - m2 * l2 * c * r2) / det
        dw2 = ((m1 + m2) * l1 * r2 - l1 * c * r1) / det
        return jnp.stack([w1, w2, dw1, dw2])

    def energy(self, x: State) -> Float[Array, ""]:
        """Kinetic plus potential energy (conserved)."""
        th1, th2, w1, w2 = x
        m1, m2, l1, l2, g = self.m1, self.m2, self.l1, self.l2, self.g
        kin = 0.5 * (m1 + m2) * l1**2 * w1**2 + 0.5 * m2 * l2**2 * w2**2
        kin = kin + m2 * l1 * l2 * w1 * w2 * jnp.cos(th1 - th2)
        pot = -(m1 + m2) * g * l1 * jnp.cos(th1) - m2 * g * l2 * jnp.cos(th2)
        return kin + pot

    def equilibria(self) -> Float[Array, "4 4"]:
        """`(0, 0)`, `(0, pi)`, `(pi, 0)`, `(pi, pi)` angles, zero velocities."""
        pi = jnp.asarray(jnp.pi, dtype=self.g.dtype)
        zero = jnp.zeros_like(pi)
        return jnp.stack(
            [
                jnp.stack([a, b, zero, zero])
                for a, b in [(zero, zero), (zero, pi), (pi, zero), (pi, pi)]
            ]
        )

    def default_x0(self) -> State:
        """Both rods horizontal-ish, `(pi/2, pi/2, 0, 0)`: a chaotic energy."""
        return jnp.array([jnp.pi / 2, jnp.pi / 2, 0.0, 0.0], dtype=self.g.dtype)
