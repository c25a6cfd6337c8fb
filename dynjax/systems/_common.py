"""Helpers shared by the catalogue files."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool


def guard(x: Array, bad: Bool[ArrayLike, ""], msg: str) -> Array:
    """Return `x`, raising at run time with `msg` when `bad` holds.

    Closed forms that only exist for some parameter values (square roots of a
    negative number, a division by zero) use this instead of returning NaN.
    """
    return eqx.error_if(x, jnp.asarray(bad), msg)


def check_square(A, name: str) -> None:
    """Trace-time check that `A` is a square 2-D matrix."""
    shape = jnp.shape(A)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(
            f"`{name}` needs a square matrix `A` of shape (d, d), got shape {shape}. "
            "Pass a 2-D array with as many rows as columns."
        )


def check_size(N, name: str, minimum: int) -> None:
    """Trace-time check that a size field is a Python int of at least `minimum`."""
    if not isinstance(N, int) or isinstance(N, bool) or N < minimum:
        raise ValueError(
            f"`{name}` needs `N` to be a Python int >= {minimum}, got {N!r}. "
            "Pass the number of units as an int (it fixes the state dimension d = N)."
        )


def as_inexact(x) -> Array:
    """`x` as a JAX array, integers promoted to the default float (so it can be
    differentiated)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x
