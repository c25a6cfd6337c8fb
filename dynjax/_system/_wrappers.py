from collections.abc import Callable
from typing import Any

import equinox as eqx

from .._custom_types import Args, Input, IntScalarLike, Params, RealScalarLike, State
from .._misc import params_to_arrays
from ._base import AbstractDrivenMap, AbstractFlow, AbstractMap
from ._coordinates import check_coordinate_periods, check_state_names


def _no_args(system, args) -> None:
    """A plain-function wrapper passes its `params`, not `args`: refuse `args`
    rather than drop it."""
    if args is not None:
        name = type(system).__name__
        raise ValueError(
            f"`dynjax.{name}` calls its function with `params` (the wrapper's "
            f"field), not with the verb's `args`, so `args` would be ignored. "
            f"Put the values in `params` (`dynjax.{name}(f, params)`; they stay "
            "differentiable and vmappable), or subclass the abstract system to "
            "receive `args`."
        )


class Flow(AbstractFlow):
    """A flow from a plain function, `dx/dt = f(t, x, params)`.

    `params` is any pytree; its floating-point leaves are differentiable fields
    of the Module, so `jax.grad` with respect to them and `vmap` over them work.

    **Arguments:**

    - `f`: the vector field, called as `f(t, x, params)` and returning an array
        of the shape of `x`.
    - `params`: a pytree of parameters (default `None`).
    - `d`: the state dimension, if known; otherwise taken from the initial state.
    - `state_names`: optional names of the coordinates, for plot labels.
    - `coordinate_periods`: optional, one entry per coordinate: `None`, or the
        period of an angle-like coordinate (see `dynjax.AbstractSystem`).

    !!! Example

        ```python
        def f(t, x, p):
            return jnp.array([x[1], -p["omega"] ** 2 * x[0]])

        oscillator = dynjax.Flow(f, {"omega": 2.0}, d=2)
        ```
    """

    f: Callable[[RealScalarLike, State, Any], State]
    params: Params
    d: int | None = eqx.field(static=True)
    state_names: tuple[str, ...] | None = eqx.field(static=True)
    coordinate_periods: tuple[float | None, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        f,
        params=None,
        *,
        d: int | None = None,
        state_names: tuple[str, ...] | None = None,
        coordinate_periods: tuple[float | None, ...] | None = None,
    ):
        self.f = f
        self.params = params_to_arrays(params)
        self.d = d
        self.state_names = check_state_names(state_names, d)
        self.coordinate_periods = check_coordinate_periods(coordinate_periods, d)

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        _no_args(self, args)
        return self.f(t, x, self.params)


class Map(AbstractMap):
    """A map from a plain function, `x_{n+1} = F(n, x_n, params)`.

    **Arguments:**

    - `F`: the map, called as `F(n, x, params)` and returning the next state.
    - `params`: a pytree of parameters (default `None`); floating-point leaves
        are differentiable.
    - `d`: the state dimension, if known; otherwise taken from the initial state.
    - `state_names`: optional names of the coordinates, for plot labels.
    - `coordinate_periods`: optional, one entry per coordinate: `None`, or the
        period of an angle-like coordinate (see `dynjax.AbstractSystem`).
    """

    F: Callable[[IntScalarLike, State, Any], State]
    params: Params
    d: int | None = eqx.field(static=True)
    state_names: tuple[str, ...] | None = eqx.field(static=True)
    coordinate_periods: tuple[float | None, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        F,
        params=None,
        *,
        d: int | None = None,
        state_names: tuple[str, ...] | None = None,
        coordinate_periods: tuple[float | None, ...] | None = None,
    ):
        self.F = F
        self.params = params_to_arrays(params)
        self.d = d
        self.state_names = check_state_names(state_names, d)
        self.coordinate_periods = check_coordinate_periods(coordinate_periods, d)

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        _no_args(self, args)
        return self.F(n, x, self.params)


class DrivenMap(AbstractDrivenMap):
    """An input-driven map from a plain function, `x_{n+1} = F(x_n, u_n, params)`.

    The shape of a recurrent network: for a vanilla RNN,
    `F(h, u, p) = tanh(p["W"] @ h + p["U"] @ u + p["b"])`.

    **Arguments:**

    - `F`: the update, called as `F(x, u, params)`.
    - `params`: a pytree of parameters (default `None`).
    - `d`: the state dimension, if known; otherwise taken from the initial state.
    - `state_names`: optional names of the coordinates, for plot labels.
    - `coordinate_periods`: optional, one entry per coordinate: `None`, or the
        period of an angle-like coordinate (see `dynjax.AbstractSystem`).
    """

    F: Callable[[State, Input, Any], State]
    params: Params
    d: int | None = eqx.field(static=True)
    state_names: tuple[str, ...] | None = eqx.field(static=True)
    coordinate_periods: tuple[float | None, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        F,
        params=None,
        *,
        d: int | None = None,
        state_names: tuple[str, ...] | None = None,
        coordinate_periods: tuple[float | None, ...] | None = None,
    ):
        self.F = F
        self.params = params_to_arrays(params)
        self.d = d
        self.state_names = check_state_names(state_names, d)
        self.coordinate_periods = check_coordinate_periods(coordinate_periods, d)

    def step(self, x: State, u: Input, args: Args = None) -> State:
        _no_args(self, args)
        return self.F(x, u, self.params)
