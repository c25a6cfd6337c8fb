"""jaxtyping aliases used across dynjax.

Shapes use the names `d` (state dimension), `k` (number of tangent directions),
`m` (input dimension of a driven system) and `T` (time points or steps).
"""

from typing import Any

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree


State = Float[Array, " d"]
StateLike = Float[ArrayLike, " d"]
# A driven map's input: any pytree; `Inputs` has a leading time axis on every leaf.
Input = PyTree[Any]
Inputs = PyTree[Any]
Tangents = Float[Array, "d k"]
Args = PyTree[Any]
Params = PyTree[Any]
RealScalarLike = float | int | Float[ArrayLike, ""] | Int[ArrayLike, ""]
IntScalarLike = int | Int[ArrayLike, ""]
BoolScalarLike = bool | Bool[ArrayLike, ""]
