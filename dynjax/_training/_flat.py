"""Flat views of parameter pytrees, so that training becomes a system on `(d,)`."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ._fit import _ByValue


def _is_float(x) -> bool:
    return eqx.is_inexact_array(x)


class Layout(eqx.Module):
    """How the float leaves of a pytree map to one flat vector, and back.

    The non-float leaves (functions, integer counters, `None`) are held in
    `others`, in leaf order; `ravel` concatenates the float leaves (cast to their
    common dtype), `unravel` splits a vector back and restores each leaf's dtype.
    Structure lives in static fields, so two layouts of the same structure
    compare equal under `eqx.filter_jit` (no recompilation).
    """

    treedef: Any = eqx.field(static=True)
    is_float: tuple[bool, ...] = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    dtypes: tuple[str, ...] = eqx.field(static=True)
    others: tuple

    def __init__(self, tree: PyTree):
        leaves, self.treedef = jax.tree.flatten(tree)
        self.is_float = tuple(_is_float(x) for x in leaves)
        floats = [x for x, f in zip(leaves, self.is_float) if f]
        self.shapes = tuple(tuple(x.shape) for x in floats)
        self.dtypes = tuple(jnp.dtype(x.dtype).name for x in floats)
        self.others = tuple(x for x, f in zip(leaves, self.is_float) if not f)

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    @property
    def dtype(self):
        if not self.dtypes:
            return jnp.dtype(jnp.result_type(float))
        return jnp.result_type(*self.dtypes)

    def ravel(self, tree: PyTree) -> Float[Array, " n"]:
        leaves = jax.tree.leaves(tree)
        floats = [x for x, f in zip(leaves, self.is_float) if f]
        if not floats:
            return jnp.zeros(0, self.dtype)
        return jnp.concatenate([jnp.ravel(x).astype(self.dtype) for x in floats])

    def unravel(self, x: Float[Array, " n"], others: tuple | None = None) -> PyTree:
        others = self.others if others is None else others
        sizes = [int(np.prod(s)) for s in self.shapes]
        pieces = jnp.split(x, np.cumsum(sizes)[:-1]) if sizes else []
        floats = iter(
            p.reshape(s).astype(dt)
            for p, s, dt in zip(pieces, self.shapes, self.dtypes)
        )
        rest = iter(others)
        leaves = [next(floats) if f else next(rest) for f in self.is_float]
        return jax.tree.unflatten(self.treedef, leaves)


class FlatLoss(eqx.Module):
    """A loss `loss(model, batch)` seen as a function of the flat vector of the
    model's float leaves: `flat(x, batch) = loss(unravel(x), batch)`."""

    loss: _ByValue = eqx.field(static=True)
    layout: Layout
    static: PyTree

    def __init__(self, loss, layout, static):
        self.loss = loss if isinstance(loss, _ByValue) else _ByValue(loss)
        self.layout = layout
        self.static = static

    @classmethod
    def from_params(cls, loss: Callable, params: PyTree) -> "FlatLoss":
        floats, static = eqx.partition(params, _is_float)
        if not jax.tree.leaves(floats):
            raise ValueError(
                "`params` has no floating-point arrays to train: pass the model "
                "or the pytree of weights (e.g. a dict of `jnp` float arrays)."
            )
        return cls(loss, Layout(floats), static)

    @property
    def size(self) -> int:
        return self.layout.size

    def ravel(self, params: PyTree) -> Float[Array, " p"]:
        return self.layout.ravel(eqx.filter(params, _is_float))

    def unravel(self, x: Float[Array, " p"]) -> PyTree:
        return eqx.combine(self.layout.unravel(x), self.static)

    def __call__(self, x: Float[Array, " p"], batch: PyTree) -> Float[Array, ""]:
        return self.loss.obj(self.unravel(x), batch)


# Losses already checked, by value (so that calling a verb again with the same
# loss and shapes does not trace the loss again).
_CHECKED: dict = {}


def check_scalar_loss(flat: FlatLoss, data: PyTree) -> None:
    """Trace-time check that the loss returns a real scalar."""
    leaves = jax.tree.leaves(data)
    key = (
        flat.loss,
        _ByValue(flat.static),
        flat.layout.treedef,
        flat.layout.shapes,
        flat.layout.dtypes,
        jax.tree.structure(data),
        tuple((tuple(jnp.shape(x)), jnp.result_type(x).name) for x in leaves),
    )
    try:
        if key in _CHECKED:
            return
    except TypeError:  # (an unhashable part: check every time)
        key = None
    x = jax.ShapeDtypeStruct((flat.size,), flat.layout.dtype)
    try:
        out = jax.eval_shape(flat, x, data)
    except Exception as e:  # (the user's loss failed on these shapes)
        raise ValueError(
            f"Calling `loss(params, batch)` failed on the parameters' and data's "
            f"shapes: {type(e).__name__}: {e}"
        ) from e
    if not (
        isinstance(out, jax.ShapeDtypeStruct)
        and out.shape == ()
        and jnp.issubdtype(out.dtype, jnp.floating)
    ):
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            "`loss(params, batch)` must return a real scalar (shape ()), got "
            f"{shape}. Reduce it, e.g. `jnp.mean(...)` over the batch."
        )
    if key is not None:
        if len(_CHECKED) > 256:
            _CHECKED.clear()
        _CHECKED[key] = True
