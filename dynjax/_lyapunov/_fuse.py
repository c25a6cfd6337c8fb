"""Evaluate a function with its matrix products that share an operand merged.

The tangent step of a network `f(h) = -h + J tanh(h)` evaluates `J @ tanh(h)`
(the primal) and `J @ (sech^2(h) * V)` (the k tangents): two products that each
read all of `J`, which is the cost (memory bound on GPUs; on CPU the separate
matrix-vector product costs a third of the 10-column one). Merged, they are one
product `J @ [tanh(h), sech^2(h) * V]` that reads `J` once.

`fused_call(fn, *args)` traces `fn` to a jaxpr, groups the `dot_general`s that
share the same left operand, contraction, precision and dtypes, and evaluates
the jaxpr with each group computed as one `dot_general` on the concatenated
right operands. Any system benefits, without special cases: the merge is found
in the computation itself, not in the class that wrote it. Everything else is
evaluated primitive by primitive, so `jit`, `vmap` and `grad` of the result work
as for `fn`.

A group is formed greedily and a product joins it only if no chain of
dependencies connects the two, counting the groups already formed as single
nodes: `A tanh(B x) + B tanh(A x)` has a product with `A` that feeds one with
`B` and the converse, and merging both pairs would make each merged product wait
for the other. The merge is an optimization and may only ever fall back: if the
rewrite fails for any reason, `fn(*args)` is evaluated as written (and an error
of `fn` itself propagates unchanged).

On CPU the right operand of a large product is also padded with zero columns to
a multiple of 8 (`_pad_width`): XLA's CPU matrix product (Eigen) runs full
panels of 8 columns fast and a remainder slowly, so `(1000 x 1000) @ (1000 x 11)`
takes longer than `@ (1000 x 16)`. The padded columns are sliced off; the
result is bitwise the same.
"""

import heapq
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

# Work bound of the grouping (node visits of the dependency searches, summed
# over all candidates). A vector field's jaxpr has tens to a few thousand
# equations and a handful of products, far below this; past it the products
# not yet grouped stay separate, so planning never costs more than a few tenths
# of a second of tracing.
_MAX_VISITS = 200_000


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
    """What products must share to be merged, or `None` if not mergeable.

    Same left operand (the variable, not a literal), one contracted axis, no
    batch axes, and the same precision, preferred element type, right-operand
    dtype and output sharding, so that the concatenated right operands need no
    promotion and the merged product is the same operation as each of them.
    """
    if eqn.primitive.name != "dot_general":
        return None
    (lc, _), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars
    if lb or rb or len(lc) != 1 or isinstance(lhs, Literal):
        return None
    if set(eqn.params) - {
        "dimension_numbers",
        "precision",
        "preferred_element_type",
        "out_sharding",
    }:
        return None  # a parameter this module does not know how to carry over
    if eqn.params.get("out_sharding") is not None:
        return None
    return (
        lhs,
        tuple(lc),
        eqn.params.get("precision"),
        eqn.params.get("preferred_element_type"),
        rhs.aval.dtype,
        eqn.outvars[0].aval.dtype,
    )


class _Graph:
    """The equations' dependencies, with groups of equations contracted to one
    node (a union of members)."""

    def __init__(self, eqns):
        producer = {}
        self.succ = [set() for _ in eqns]
        last_effect = None
        for i, eqn in enumerate(eqns):
            for v in eqn.invars:
                if not isinstance(v, Literal) and v in producer:
                    self.succ[producer[v]].add(i)
            for v in eqn.outvars:
                producer[v] = i
            if eqn.effects:  # effects keep their order
                if last_effect is not None:
                    self.succ[last_effect].add(i)
                last_effect = i
        self.members = {i: [i] for i in range(len(eqns))}
        self.group = list(range(len(eqns)))
        self.visits = 0

    def reaches(self, a, b):
        """Whether a path leads from group `a` to group `b` (`None`: too costly
        to find out)."""
        stack = list(self.members[a])
        seen = {a}
        while stack:
            i = stack.pop()
            for j in self.succ[i]:
                g = self.group[j]
                if g == b:
                    return True
                if g not in seen:
                    seen.add(g)
                    stack.extend(self.members[g])
                    self.visits += len(self.members[g])
            self.visits += 1
            if self.visits > _MAX_VISITS:
                return None
        return False

    def merge(self, a, b):
        for i in self.members[b]:
            self.group[i] = a
        self.members[a] += self.members.pop(b)

    def order(self):
        """The groups in a dependency order (earliest first member first)."""
        preds = {g: set() for g in self.members}
        for i, succ in enumerate(self.succ):
            for j in succ:
                if self.group[i] != self.group[j]:
                    preds[self.group[j]].add(self.group[i])
        succs = {g: set() for g in self.members}
        for g, ps in preds.items():
            for p in ps:
                succs[p].add(g)
        count = {g: len(ps) for g, ps in preds.items()}
        heap = [(min(self.members[g]), g) for g, c in count.items() if c == 0]
        heapq.heapify(heap)
        order = []
        while heap:
            _, g = heapq.heappop(heap)
            order.append(g)
            for s in succs[g]:
                count[s] -= 1
                if count[s] == 0:
                    heapq.heappush(heap, (min(self.members[s]), s))
        if len(order) != len(self.members):  # pragma: no cover - by construction
            raise RuntimeError("fused_call: dependency cycle")
        return order


def _plan(eqns):
    """The evaluation order as `(indices, rewrite)` pairs: one equation as
    written, or products to compute by `_fused_dot` (a merged group, or a lone
    product to pad); `None` if there is nothing to rewrite."""
    graph = _Graph(eqns)
    by_key = {}
    for i, eqn in enumerate(eqns):
        key = _dot_key(eqn)
        if key is not None:
            by_key.setdefault(key, []).append(i)
    merged = set()
    for members in by_key.values():
        groups = []
        for i in members:
            for g in groups:
                ab = graph.reaches(g, i)
                ba = None if ab is None else graph.reaches(i, g)
                if ab is False and ba is False:
                    graph.merge(g, i)
                    merged.add(g)
                    break
            else:
                groups.append(i)
    padded = {
        i
        for i, eqn in enumerate(eqns)
        if graph.group[i] not in merged and _paddable(eqn)
    }
    if not merged and not padded:
        return None
    rewrite = merged | padded
    return [(graph.members[g], g in rewrite) for g in graph.order()]


def _fused_dot(lhs, rhss, eqns):
    """One `dot_general` for products sharing `lhs` (columns concatenated)."""
    lc = eqns[0].params["dimension_numbers"][0][0][0]
    flats, widths, free_shapes = [], [], []
    for rhs, eqn in zip(rhss, eqns):
        rc = eqn.params["dimension_numbers"][0][1][0]
        moved = jnp.moveaxis(rhs, rc, 0)
        free_shapes.append(moved.shape[1:])
        flat = moved.reshape(moved.shape[0], -1)
        flats.append(flat)
        widths.append(flat.shape[1])
    rhs = jax.lax.concatenate(flats, 1) if len(flats) > 1 else flats[0]
    rows = lhs.size // lhs.shape[lc]
    pad = _pad_width(rhs.shape[1], lhs.shape[lc], rows)
    if pad:
        rhs = jax.lax.pad(rhs, jnp.zeros((), rhs.dtype), ((0, 0, 0), (0, pad, 0)))
    # The primitive as the equations bind it (precision, preferred element type
    # and mixed operand dtypes carried over), on the concatenated columns.
    params = dict(eqns[0].params, dimension_numbers=(((lc,), (0,)), ((), ())))
    out = eqns[0].primitive.bind(lhs, rhs, **params)
    lhs_free = out.shape[:-1]
    results, start = [], 0
    for width, free, eqn in zip(widths, free_shapes, eqns):
        piece = out[..., start : start + width].reshape(*lhs_free, *free)
        if piece.shape != eqn.outvars[0].aval.shape:  # pragma: no cover
            raise RuntimeError("fused_call: merged product has the wrong shape")
        results.append(piece)
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


def _evaluate(closed, args, order):
    jaxpr = closed.jaxpr
    eqns = jaxpr.eqns
    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for v, c in zip(jaxpr.constvars, closed.consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for members, rewrite in order:
        if not rewrite:
            (i,) = members
            eqn = eqns[i]
            params = eqn.primitive.get_bind_params(eqn.params)
            out = eqn.primitive.bind(*[read(v) for v in eqn.invars], **params)
            outs = out if eqn.primitive.multiple_results else [out]
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        else:
            group = [eqns[m] for m in members]
            outs = _fused_dot(
                read(group[0].invars[0]), [read(e.invars[1]) for e in group], group
            )
            for e, o in zip(group, outs):
                env[e.outvars[0]] = o
    return [read(v) for v in jaxpr.outvars]


def fused_call(fn, *args):
    """`fn(*args)` with products sharing an operand merged (and padded on CPU).

    **Arguments:**

    - `fn`: a function of arrays (pytrees of arrays) to arrays.
    - `*args`: its arguments.

    **Returns:**

    What `fn(*args)` returns: merged products equal the separate ones to
    rounding (the same products, summed in a different order by the matrix
    kernel); padding alone changes no bit.

    Never fails where `fn(*args)` succeeds: if tracing, planning or evaluating
    the rewrite raises, `fn(*args)` runs as written, and an error it raises
    propagates unchanged.
    """
    try:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        order = _plan(closed.jaxpr.eqns)
        if order is None:
            return fn(*args)
        outs = _evaluate(closed, jax.tree.leaves(args), order)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)
    except Exception:
        # The rewrite is an optimization: whatever went wrong (in it, or in
        # tracing `fn`), the plain call decides; an error of `fn` is raised by
        # `fn` itself, unchanged.
        return fn(*args)
