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
"""

import jax
import jax.numpy as jnp
from jax.extend.core import Literal


# Merge by default: on the 2-core CPU of benchmarks/README.md the merged product
# made the d = 1000, k = 10 rate network 27% (float64) and 18% (float32) faster,
# and on GPUs the separate matrix-vector product is memory bound. Set to False to
# compare (benchmarks/lyapunov.py reports both).
ENABLED: bool = True


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
    out = jax.lax.dot_general(
        lhs,
        jnp.concatenate(flats, axis=1),
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


def fused_call(fn, *args):
    """`fn(*args)` with independent matrix products sharing an operand merged."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    out_tree = jax.tree.structure(out_shape)
    jaxpr = closed.jaxpr
    eqns = jaxpr.eqns
    groups = _groups(eqns)
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
        if len(members) == 1:
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
