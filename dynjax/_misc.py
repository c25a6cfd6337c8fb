import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array


def check_state(x0, d: int | None, name: str = "x0") -> Array:
    """Validate an initial state: structure at trace time, finiteness at run time.

    Returns `x0` as a 1-D inexact array. Raises `ValueError` for a wrong shape; a
    non-finite value raises `EquinoxRuntimeError` when the computation runs.
    """
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.inexact):
        x0 = x0.astype(jnp.result_type(float))
    if x0.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D state vector of shape (d,), got shape {x0.shape}. "
            "dynjax systems act on one state; use `eqx.filter_vmap` to batch over "
            "many initial conditions."
        )
    if d is not None and x0.shape[0] != d:
        raise ValueError(
            f"`{name}` has dimension {x0.shape[0]} but the system has dimension d={d}. "
            f"Pass a state of shape ({d},)."
        )
    x0 = eqx.error_if(
        x0,
        jnp.any(~jnp.isfinite(x0)),
        f"`{name}` contains non-finite values (NaN or inf); pass a finite state.",
    )
    return x0


def check_inputs(inputs) -> Array:
    """A driven map's input sequence as an array of shape `(T, m)` (trace time)."""
    if inputs is None:
        raise ValueError(
            "A driven map needs its input sequence: pass `inputs=` with shape "
            "(T, m), one row per step (for scalar inputs use `u[:, None]`)."
        )
    inputs = jnp.asarray(inputs)
    if inputs.ndim != 2:
        raise ValueError(
            f"`inputs` must have shape (T, m), one row per step; got shape "
            f"{inputs.shape} (for scalar inputs use `inputs[:, None]`)."
        )
    return inputs


def is_concrete(x) -> bool:
    """True if `x` is a Python or NumPy number (known at trace time)."""
    return isinstance(x, (int, float, np.ndarray, np.number)) and not isinstance(
        x, jax.core.Tracer
    )


def warn_if_float32(what: str) -> None:
    """Warn (at trace time) that `what` is unreliable in float32."""
    if not jax.config.read("jax_enable_x64"):
        warnings.warn(
            f"{what} is computed in float32 because `jax_enable_x64` is off; results "
            "may be accurate to only a few digits. Enable float64 with "
            "`jax.config.update('jax_enable_x64', True)` for reliable values.",
            stacklevel=3,
        )


def as_param(x):
    """Converter for parameter fields: numbers become (differentiable) JAX arrays."""
    if isinstance(x, (int, float, np.number, list, tuple)) and not isinstance(x, bool):
        return jnp.asarray(x, dtype=jnp.result_type(float))
    if isinstance(x, (complex, np.ndarray)):
        return jnp.asarray(x)
    return x


def params_to_arrays(params):
    """Turn the Python floats and NumPy arrays in a params pytree into JAX arrays.

    Integers and other objects are left alone, so a params pytree may carry sizes.
    """

    def convert(leaf):
        if isinstance(leaf, (float, complex, np.ndarray, np.floating)):
            return jnp.asarray(leaf)
        return leaf

    return jax.tree.map(convert, params)
