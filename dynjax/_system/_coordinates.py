"""The geometry of a system's state space: coordinate names and periodic coordinates."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._base import AbstractSystem


def check_coordinate_periods(periods, d: int | None):
    """Validate a `coordinate_periods` tuple at trace time (returns a tuple or None)."""
    if periods is None:
        return None
    try:
        periods = tuple(periods)
    except TypeError:
        raise ValueError(
            "`coordinate_periods` must be a tuple with one entry per coordinate, each "
            f"None or a positive period, e.g. (2 * jnp.pi, None); got {periods!r}."
        ) from None
    if d is not None and len(periods) != d:
        raise ValueError(
            f"`coordinate_periods` has {len(periods)} entries but the state has d={d} "
            "coordinates: give one entry per coordinate (None for an ordinary one)."
        )
    for p in periods:
        if p is not None and not (
            isinstance(p, (int, float)) and np.isfinite(p) and p > 0
        ):
            raise ValueError(
                "Each entry of `coordinate_periods` must be None or a positive "
                f"finite number (a Python float, e.g. 2 * math.pi), got {p!r}."
            )
    if all(p is None for p in periods):
        return None
    return tuple(None if p is None else float(p) for p in periods)


def check_state_names(names, d: int | None):
    """Validate a `state_names` tuple at trace time (returns a tuple or None)."""
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"`state_names` must be a tuple of strings, one per coordinate; got "
            f"{names!r}."
        )
    names = tuple(names)
    if d is not None and len(names) != d:
        raise ValueError(
            f"`state_names` has {len(names)} entries but the state has d={d} "
            "coordinates."
        )
    return names


def _periods_array(system: AbstractSystem, d: int, dtype):
    periods = check_coordinate_periods(system.coordinate_periods, d)
    if periods is None:
        return None
    return jnp.asarray([0.0 if p is None else p for p in periods], dtype=dtype)


def state_difference(
    system: AbstractSystem, a: Float[ArrayLike, "... d"], b: Float[ArrayLike, "... d"]
) -> Float[Array, "... d"]:
    """The difference `a - b` of two states, wrapped on periodic coordinates.

    A coordinate with period `P` (`system.coordinate_periods`) contributes the
    representative of `a_i - b_i` modulo `P` in `[-P/2, P/2)`: the signed
    distance along the circle. Other coordinates contribute `a_i - b_i`.

    **Arguments:**

    - `system`: the system whose state space `a` and `b` belong to.
    - `a`, `b`: states of shape `(..., d)` (broadcast against each other).

    **Returns:**

    The wrapped difference, of the broadcast shape.
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    diff = a - b
    periods = _periods_array(system, diff.shape[-1], diff.dtype)
    if periods is None:
        return diff
    wrapped = diff - periods * jnp.round(diff / jnp.where(periods > 0, periods, 1.0))
    return jnp.where(periods > 0, wrapped, diff)


def state_labels(system: AbstractSystem, d: int) -> tuple[str, ...]:
    """Axis labels for the coordinates: `state_names`, else `x[0]`, `x[1]`, ..."""
    names = check_state_names(system.state_names, d)
    return names if names is not None else tuple(f"x[{i}]" for i in range(d))
