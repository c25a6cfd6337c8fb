from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp

from .._custom_types import Args, IntScalarLike, Params, RealScalarLike, State
from .._misc import as_param, params_to_arrays
from ._base import AbstractFlow, AbstractMap


class Autonomized(AbstractFlow):
    """The autonomous flow on `z = (t, x)` with `dz/dt = (1, f(t, x))`.

    Built by `dynjax.autonomize`; holds the original flow as a field.
    """

    flow: AbstractFlow

    @property
    def d(self) -> int | None:
        return None if self.flow.d is None else self.flow.d + 1

    @property
    def state_names(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        names = self.flow.state_names
        return None if names is None else ("t", *names)

    @property
    def coordinate_periods(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        periods = self.flow.coordinate_periods
        return None if periods is None else (None, *periods)

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t
        dx = self.flow.vector_field(x[0], x[1:], args)
        return jnp.concatenate([jnp.ones((1,), dx.dtype), dx])


def autonomize(flow: AbstractFlow) -> Autonomized:
    """Turn a non-autonomous flow into an autonomous one of one more dimension.

    `dx/dt = f(t, x)` becomes `dz/dt = g(z)` on `z = (s, x)` with
    `g(z) = (1, f(s, x))`; the new coordinate `s` carries the time, so
    `s(t) = t`. Start it with `z0 = (t0, x0)`.

    **Arguments:**

    - `flow`: any dynjax flow.

    **Returns:**

    An `Autonomized` flow of dimension `flow.d + 1` whose vector field ignores `t`.
    """
    if not isinstance(flow, AbstractFlow):
        raise ValueError(
            f"`autonomize` takes a flow (an `AbstractFlow`), got {type(flow).__name__}."
        )
    return Autonomized(flow)


class FirstOrder(AbstractFlow):
    """A higher-order ODE `x^(n) = g(t, x, x', ..., x^(n-1), params)` as a flow.

    The state is `(x, x', ..., x^(n-1))`, each block of dimension `dim`. Built by
    `dynjax.first_order`.
    """

    g: Callable
    params: Params
    order: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    @property
    def d(self) -> int:
        return self.order * self.dim

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del args
        blocks = x.reshape(self.order, self.dim)
        derivatives = [b[0] for b in blocks] if self.dim == 1 else list(blocks)
        highest = jnp.reshape(jnp.asarray(self.g(t, *derivatives, self.params)), -1)
        return jnp.concatenate([x[self.dim :], highest.astype(x.dtype)])


def first_order(g: Callable, order: int, params: Params = None, *, dim: int = 1):
    """Reduce an order-`n` ODE to a first-order flow.

    `x^(n) = g(t, x, x', ..., x^(n-1), params)` becomes `dy/dt = (y_2, ..., y_n,
    g(t, y_1, ..., y_n, params))` on `y = (x, x', ..., x^(n-1))`.

    **Arguments:**

    - `g`: the highest derivative, called as `g(t, x, x', ..., x^(n-1), params)`.
        With `dim=1` each argument is a scalar; otherwise an array of shape `(dim,)`.
    - `order`: the order `n >= 1` of the ODE.
    - `params`: a pytree of parameters passed to `g` (differentiable).
    - `dim`: the dimension of `x` (default 1, a scalar ODE).

    **Returns:**

    A `FirstOrder` flow of dimension `order * dim`.

    !!! Example

        `x''' + 2 x'' - x' + 5 x = cos t` is
        `first_order(lambda t, x, dx, ddx, p: jnp.cos(t) - 2 * ddx + dx - 5 * x, 3)`.
    """
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"`order` must be a positive integer, got {order!r}.")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"`dim` must be a positive integer, got {dim!r}.")
    return FirstOrder(g, params_to_arrays(params), order, dim)


class EulerMap(AbstractMap):
    """The explicit Euler map of a flow, `x_{n+1} = x_n + h f(n h, x_n)`.

    Built by `dynjax.euler_map`; holds the flow as a field. Gradient descent on
    a loss `L` is the Euler map of the gradient flow `dx/dt = -grad L(x)`.
    """

    flow: AbstractFlow
    h: float = eqx.field(converter=as_param)

    @property
    def d(self) -> int | None:
        return self.flow.d

    @property
    def state_names(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.flow.state_names

    @property
    def coordinate_periods(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.flow.coordinate_periods

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        return x + self.h * self.flow.vector_field(n * self.h, x, args)


def euler_map(flow: AbstractFlow, h: RealScalarLike) -> EulerMap:
    """The explicit Euler discretization of a flow with step `h`.

    **Arguments:**

    - `flow`: any dynjax flow.
    - `h`: the step size (differentiable field of the result).

    **Returns:**

    An `EulerMap`, the map `x -> x + h f(n h, x)`.
    """
    if not isinstance(flow, AbstractFlow):
        raise ValueError(
            f"`euler_map` takes a flow (an `AbstractFlow`), got {type(flow).__name__}."
        )
    return EulerMap(flow, h)
