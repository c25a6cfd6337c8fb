"""Evaluate a function with its matrix products that share an operand merged.

The tangent step of a network `f(h) = -h + J tanh(h)` evaluates `J @ tanh(h)`
(the primal) and `J @ (sech^2(h) * V)` (the k tangents): two products that each
read all of `J`, which is the cost (memory bound on GPUs; on CPU the separate
matrix-vector product costs a third of the 10-column one). Merged, they are one
product `J @ [tanh(h), sech^2(h) * V]` that reads `J` once.

`fused_call(fn, *args)` traces `fn` to a jaxpr, groups the `dot_general`s that
share the same left operand and contraction and do not depend on each other,
and evaluates the jaxpr with each group computed as one `dot_general` on the
concatenated right operands. Any system benefits, without special cases: the
merge is found in the computation itself, not in the class that wrote it.
Everything else is evaluated primitive by primitive, so `jit`, `vmap` and `grad`
of the result work as for `fn`.

On CPU the right operand of a large product is also padded with zero columns to
a multiple of 8 (`_pad_width`): XLA's CPU matrix product (Eigen) runs full
panels of 8 columns fast and a remainder slowly, so `(1000 x 1000) @ (1000 x 11)`
takes longer than `@ (1000 x 16)`. The padded columns are sliced off; the
result is bitwise the same.
"""

import math

import jax
import jax.numpy as jnp
from jax.extend.core import Literal


# Merge by default: on the 2-core CPU of benchmarks/README.md the merged product
# made the d = 1000, k = 10 rate network 27% (float64) and 18% (float32) faster,
# and on GPUs the separate matrix-vector product is memory bound. Set to False to
# compare (benchmarks/lyapunov.py reports both).
ENABLED: bool = True


# Column padding on CPU (see the module docstring). Measured on the 2-core
# Xeon (AVX-512) of benchmarks/README.md, `(d x d) @ (d x n)` with n padded to the
# next multiple of 8, float64: d = 1000, n = 9..15 took 0.59 to 0.80 of the
# unpadded time (float32 0.53 to 0.88); d = 300 and d = 2000 with n = 11, 13 and
# 25 took 0.67 to 0.76; n = 17 and n <= 8 gained nothing (n <= 8 is left alone).
# Small products are left alone too.
_PAD_MULTIPLE = 8
_PAD_MIN_SIZE = 128


def _pad_width(n: int, contract: int, rows: int) -> int:
    """How many zero columns to add to an `n`-column right operand."""
    if (
        jax.default_backend() != "cpu"
        or n <= _PAD_MULTIPLE
        or min(contract, rows) < _PAD_MIN_SIZE
    ):
        return 0
    return -n % _PAD_MULTIPLE


def merge_default() -> bool:
    """Whether to merge shared matrix products (see `ENABLED`)."""
    return bool(ENABLED)


def _dot_key(eqn):
    if eqn.primitive.name != "dot_general":
        return None
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0]
    if lb or rb or len(lc) != 1 or isinstance(lhs, Literal):
        return None
    return (
        lhs,
        tuple(lc),
        eqn.params.get("precision"),
        eqn.params.get("preferred_element_type"),
    )


def _groups(eqns):
    """Lists of >= 2 independent dot_generals sharing the left operand."""
    producer = {}
    for i, eqn in enumerate(eqns):
        for v in eqn.outvars:
            producer[v] = i
    ancestors = []
    for eqn in eqns:
        anc = set()
        for v in eqn.invars:
            if not isinstance(v, Literal) and v in producer:
                j = producer[v]
                anc.add(j)
                anc |= ancestors[j]
        ancestors.append(anc)
    by_key = {}
    for i, eqn in enumerate(eqns):
        key = _dot_key(eqn)
        if key is not None:
            by_key.setdefault(key, []).append(i)
    groups = []
    for members in by_key.values():
        group = []
        for i in members:
            if all(i not in ancestors[j] and j not in ancestors[i] for j in group):
                group.append(i)
        if len(group) >= 2:
            groups.append(group)
    return groups


def _fused_dot(lhs, rhss, eqns):
    lc = eqns[0].params["dimension_numbers"][0][0][0]
    flats, widths, free_shapes = [], [], []
    for rhs, eqn in zip(rhss, eqns):
        rc = eqn.params["dimension_numbers"][0][1][0]
        moved = jnp.moveaxis(rhs, rc, 0)
        free_shapes.append(moved.shape[1:])
        flat = moved.reshape(moved.shape[0], -1)
        flats.append(flat)
        widths.append(flat.shape[1])
    params = eqns[0].params
    rhs = jnp.concatenate(flats, axis=1) if len(flats) > 1 else flats[0]
    rows = lhs.size // lhs.shape[lc]
    pad = _pad_width(rhs.shape[1], lhs.shape[lc], rows)
    if pad:
        rhs = jnp.pad(rhs, ((0, 0), (0, pad)))
    out = jax.lax.dot_general(
        lhs,
        rhs,
        (((lc,), (0,)), ((), ())),
        precision=params.get("precision"),
        preferred_element_type=params.get("preferred_element_type"),
    )
    lhs_free = out.shape[:-1]
    results, start = [], 0
    for width, free in zip(widths, free_shapes):
        results.append(out[..., start : start + width].reshape(*lhs_free, *free))
        start += width
    return results


def _paddable(eqn) -> bool:
    """Whether a lone product gains from column padding (`_pad_width`)."""
    if _dot_key(eqn) is None:
        return False
    (lc, rc), _ = eqn.params["dimension_numbers"]
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    width = math.prod(rhs) // rhs[rc[0]]
    return _pad_width(width, lhs[lc[0]], math.prod(lhs) // lhs[lc[0]]) > 0


def fused_call(fn, *args):
    """`fn(*args)` with products sharing an operand merged (and padded on CPU)."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    out_tree = jax.tree.structure(out_shape)
    jaxpr = closed.jaxpr
    eqns = jaxpr.eqns
    groups = _groups(eqns)
    grouped = {i for g in groups for i in g}
    groups += [[i] for i, eqn in enumerate(eqns) if i not in grouped and _paddable(eqn)]
    if not groups:
        return fn(*args)
    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    def ready(v):
        return isinstance(v, Literal) or v in env

    for v, c in zip(jaxpr.constvars, closed.consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, jax.tree.leaves(args)):
        env[v] = a
    group_of = {i: g for g in groups for i in g}
    pending = list(range(len(eqns)))
    while pending:
        for pos, i in enumerate(pending):
            members = group_of.get(i, [i])
            if all(ready(v) for m in members for v in eqns[m].invars):
                break
        else:  # pragma: no cover - a dependency cycle cannot arise from _groups
            raise RuntimeError("fused_call: could not schedule the computation.")
        if len(members) == 1 and i not in group_of:
            eqn = eqns[i]
            params = eqn.primitive.get_bind_params(eqn.params)
            out = eqn.primitive.bind(*[read(v) for v in eqn.invars], **params)
            outs = out if eqn.primitive.multiple_results else [out]
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
            pending.pop(pos)
        else:
            group_eqns = [eqns[m] for m in members]
            outs = _fused_dot(
                read(group_eqns[0].invars[0]),
                [read(e.invars[1]) for e in group_eqns],
                group_eqns,
            )
            for e, o in zip(group_eqns, outs):
                env[e.outvars[0]] = o
            pending = [j for j in pending if j not in members]
    return jax.tree.unflatten(out_tree, [read(v) for v in jaxpr.outvars])
