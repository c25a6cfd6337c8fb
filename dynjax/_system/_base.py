import abc
from typing import ClassVar

import equinox as eqx

from .._custom_types import Args, Input, IntScalarLike, RealScalarLike, State


class AbstractSystem(eqx.Module):
    """Base class of everything that evolves.

    The state of every dynjax system is a 1-D array of shape `(d,)`. A system
    exposes its dimension as `d` (an `int`), or `None` when the dimension is
    only known from the initial state passed to a verb (the plain-function
    wrappers `dynjax.Flow`, `dynjax.Map`, `dynjax.DrivenMap` built without `d=`).

    Parameters are fields of the Module, so `jax.grad`, `eqx.filter_vmap` and
    `eqx.tree_at` act on them directly.

    Subclasses are either abstract (`AbstractFlow`, `AbstractMap`,
    `AbstractDrivenMap`) or final (`dynjax.systems.Lorenz`, ...).

    Two optional class attributes describe the state space; a final system sets
    them as class attributes (`state_names = ("x", "y", "z")`), the
    plain-function wrappers take them as keyword arguments:

    - `state_names`: a tuple of `d` strings naming the coordinates, used to label
        plots (default `None`: `x[0]`, `x[1]`, ...).
    - `coordinate_periods`: a tuple of `d` entries, each `None` (an ordinary
        coordinate) or a positive period `P` (an angle-like coordinate living on a
        circle of circumference `P`, e.g. `2 pi`). Every verb that compares two
        states (residuals of period-p points, deduplication, orbit closure,
        Poincaré maps) uses the wrapped difference `dynjax.state_difference`, so
        that points are found across the seam and winding orbits
        (`F^p(x) = x + m P`) are periodic orbits. Default `None`: no periodic
        coordinate.
    """

    d: eqx.AbstractVar[int | None]
    state_names: ClassVar[tuple[str, ...] | None] = None
    coordinate_periods: ClassVar[tuple[float | None, ...] | None] = None


class AbstractFlow(AbstractSystem):
    """A continuous-time system `dx/dt = f(t, x, args)`.

    Subclasses implement `vector_field`. Trajectories are integrated with diffrax;
    Lyapunov exponents are in natural-log units per unit time.
    """

    @abc.abstractmethod
    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        """The time derivative `dx/dt` at time `t` and state `x`.

        **Arguments:**

        - `t`: the time, a scalar.
        - `x`: the state, of shape `(d,)`.
        - `args`: optional run-time arguments, passed through by every verb.

        **Returns:**

        `dx/dt`, of shape `(d,)`.
        """


class AbstractMap(AbstractSystem):
    """A discrete-time system `x_{n+1} = F(n, x_n, args)`.

    Subclasses implement `step`. Trajectories run as a `lax.scan`; Lyapunov
    exponents are in natural-log units per iteration.
    """

    @abc.abstractmethod
    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        """The next state `x_{n+1}` from the iteration index `n` and state `x_n`.

        **Arguments:**

        - `n`: the iteration index (autonomous maps ignore it).
        - `x`: the state, of shape `(d,)`.
        - `args`: optional run-time arguments, passed through by every verb.

        **Returns:**

        `x_{n+1}`, of shape `(d,)`.
        """


class AbstractDrivenMap(AbstractSystem):
    """A discrete-time system driven by inputs, `x_{n+1} = F(x_n, u_n, args)`.

    This is the shape of a recurrent neural network: `u_n` is the input at step
    `n`, of shape `(m,)`. Every verb that evolves a driven map takes the input
    sequence as `inputs=`: any pytree of arrays whose leading axis is time, as
    in `jax.lax.scan` (a `(T, m)` array of vectors, a `(T,)` array of scalars or
    integer token ids, `(T, p, q)` matrices, a dict of such arrays); `u_n` is
    the pytree with that axis removed.
    """

    @abc.abstractmethod
    def step(self, x: State, u: Input, args: Args = None) -> State:
        """The next state from the current state `x` and the input `u`.

        **Arguments:**

        - `x`: the state, of shape `(d,)`.
        - `u`: the input at this step (one time slice of the input pytree, e.g.
            shape `(m,)`).
        - `args`: optional run-time arguments, passed through by every verb.

        **Returns:**

        The next state, of shape `(d,)`.
        """
