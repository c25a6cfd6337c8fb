import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Args, RealScalarLike, StateLike
from ._base import AbstractDrivenMap, AbstractFlow, AbstractMap, AbstractSystem
from ._checks import conform


def jacobian(
    system: AbstractSystem,
    x: StateLike,
    t: RealScalarLike = 0.0,
    *,
    u=None,
    args: Args = None,
) -> Float[Array, "d d"]:
    """The d x d Jacobian of a system's evolution law at a state.

    For a flow this is `Df(t, x) = d f / d x`; for a map `DF(n, x)` with `n = t`;
    for a driven map `DF(x, u)` at the input `u`. Computed in forward mode with
    `jax.jacfwd` (d Jacobian-vector products), which suits square Jacobians.

    **Arguments:**

    - `system`: a flow, map or driven map.
    - `x`: the state, of shape `(d,)`.
    - `t`: the time (flows) or iteration index (maps). Ignored by driven maps.
    - `u`: the input, required for a driven map.
    - `args`: run-time arguments passed to the system.

    **Returns:**

    The Jacobian `J[i, j] = d(dx_i/dt) / d x_j` (or `d x_{n+1, i} / d x_{n, j}`).
    """
    if isinstance(system, AbstractDrivenMap) and u is None:
        raise ValueError(
            "The Jacobian of a driven map depends on the input: pass `u=` with "
            "the input at which to linearize."
        )
    if u is not None:
        u = jax.tree.map(jnp.asarray, u)
    system, x, args = conform(system, x, verb="jacobian", args=args, u=u, t=t, name="x")
    if isinstance(system, AbstractFlow):
        return jax.jacfwd(lambda y: system.vector_field(t, y, args))(x)
    if isinstance(system, AbstractMap):
        return jax.jacfwd(lambda y: system.step(t, y, args))(x)
    if isinstance(system, AbstractDrivenMap):
        return jax.jacfwd(lambda y: system.step(y, u, args))(x)
    raise TypeError(
        f"`system` must be a dynjax flow, map or driven map, got {type(system)}."
    )
