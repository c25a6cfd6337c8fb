import warnings

import jax
import jax.numpy as jnp
import numpy as np


def check_inputs(inputs, name: str = "inputs"):
    """A driven map's input sequence: any pytree whose leaves share a leading axis.

    As in `jax.lax.scan`, leaf `a` holds the input at step `n` in `a[n]`: a
    `(T, m)` array of vectors, a `(T,)` array of scalars or token ids, a
    `(T, p, q)` array of matrices, or a dict of such arrays. Python lists and
    NumPy arrays become JAX arrays; dtypes are kept (integer token ids stay
    integers).

    Returns `(inputs, T)`. Raises `ValueError` (trace time) if there are no
    leaves, a leaf has no leading axis, or the leading axes differ.
    """
    if inputs is None:
        raise ValueError(
            f"A driven map needs its input sequence: pass `{name}=`, a pytree of "
            "arrays whose leading axis is time (one row per step), e.g. an array of "
            "shape (T, m), (T,) or a dict of such arrays."
        )
    if isinstance(inputs, (list, tuple)) and all(
        isinstance(leaf, (int, float, complex, np.number))
        for leaf in jax.tree.leaves(inputs)
    ):
        inputs = np.asarray(inputs)  # a nested list of numbers is one array
    inputs = jax.tree.map(jnp.asarray, inputs)
    leaves = jax.tree.leaves(inputs)
    if not leaves:
        raise ValueError(f"`{name}` has no arrays; pass at least one input array.")
    for path, leaf in jax.tree_util.tree_flatten_with_path(inputs)[0]:
        if leaf.ndim == 0:
            where = jax.tree_util.keystr(path) or "itself"
            raise ValueError(
                f"`{name}` leaf {where} is a scalar; every input array needs a "
                "leading time axis (one entry per step), e.g. shape (T,) or (T, m)."
            )
    lengths = {leaf.shape[0] for leaf in leaves}
    if len(lengths) != 1:
        shapes = jax.tree.map(lambda a: a.shape, inputs)
        raise ValueError(
            f"The arrays in `{name}` must share their leading (time) axis; got "
            f"shapes {shapes}."
        )
    return inputs, lengths.pop()


def input_at(inputs, n):
    """The input at step `n` (a pytree with the time axis removed)."""
    return jax.tree.map(lambda a: a[n], inputs)


def input_slice(inputs, start, length: int):
    """Steps `start, ..., start + length - 1` of an input pytree (`start` may be
    traced)."""
    if inputs is None:
        return None
    return jax.tree.map(
        lambda a: jax.lax.dynamic_slice_in_dim(a, start, length, axis=0), inputs
    )


def is_concrete(x) -> bool:
    """True if `x` is a Python or NumPy number (known at trace time)."""
    return isinstance(x, (int, float, np.ndarray, np.number)) and not isinstance(
        x, jax.core.Tracer
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


def progress_bar(**kwargs):
    """A tqdm bar: a widget in Jupyter when ipywidgets is installed, text otherwise.

    (`tqdm.auto` warns "IProgress not found" in a notebook without ipywidgets and
    falls back to the text bar; the fallback is fine, so the warning is dropped.)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm
    return tqdm(**kwargs)
