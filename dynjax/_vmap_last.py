"""`vmap` with the batch axis kept last, for many copies of a tiny system on CPU.

`jax.vmap` is free to move the batch axis, and for small states it moves it to
the front: a batch of Lorenz states becomes a `(B, 3)` array, and every `x[0]`
in the vector field reads a stride-3 column. XLA's CPU code for such arrays does
not vectorize across the batch. With the batch axis last, `(3, B)`, each
component is one contiguous vector and every operation in the system is a
vectorized loop over `B` (measured: the Jacobian method's block propagators for
Lorenz, 10^4 blocks of 10 RK4 steps, 6.7 ms with `jax.vmap` and 3.2 ms written
by hand with the batch last).

`vmap_last(fn)` traces `fn` for one unbatched call and evaluates its jaxpr with
every batched value carrying a trailing batch axis, one rule per primitive:
elementwise operations, slicing, reshaping, broadcasting, concatenation,
reductions over leading axes, matrix products, `cond` on a batched predicate and
nested calls.

The rewrite is an optimization and may only ever fall back: `Unsupported` is the
only exception it raises (at trace time), so that callers can use `jax.vmap`
instead. It is raised for a primitive without a rule, for effects and callbacks
(`pure_callback`, `io_callback`, `debug_callback`: they are never re-batched),
for anything that goes wrong inside the rewrite, and when the unrolled program
would be large (`vmap_last_cost` above `_MAX_OPS`: the rewrite then costs more
compile time and memory than it saves). Every operation is an ordinary JAX
operation, so `jit`, `vmap` and differentiation of the result work as for `fn`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal


class Unsupported(Exception):
    """`vmap_last` cannot (or should not) rewrite `fn`; use `jax.vmap`."""


# Primitives applied elementwise (with NumPy broadcasting of the operands).
_ELEMENTWISE = frozenset(
    """
    abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp
    convert_element_type copy cos cosh div eq erf erf_inv erfc exp exp2
    expm1 floor ge gt imag integer_pow is_finite le lgamma log log1p logistic lt
    max min mul ne neg nextafter not or pow real reduce_precision rem round rsqrt
    select_n sign sin sinh sqrt square sub tan tanh xor
    """.split()
)
# Primitives that only move components (references, at trace time).
_STRUCTURAL = frozenset(
    "broadcast_in_dim concatenate reshape slice split squeeze stack transpose".split()
)
_REDUCE_OPS = {
    "reduce_sum": jax.lax.add,
    "reduce_max": jax.lax.max,
    "reduce_min": jax.lax.min,
    "reduce_prod": jax.lax.mul,
}
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
}

# A batched value of shape `s` is held as a NumPy object array of shape `s`
# whose elements are the `(B,)` vectors of each component; slicing, stacking,
# reshaping and transposing then move references at trace time, and XLA sees
# only elementwise operations on contiguous vectors. Values with more
# components than this are not split (`Unsupported`).
_MAX_COMPONENTS = 256

# The cost bound: the most vector operations (`vmap_last_cost` of one call) the
# unrolled program may have; above it `Unsupported`. Measured on the shared
# 2-core CPU of benchmarks/README.md (float64, jax 0.10.2, min of 20 runs):
# `_propagators_batch_last` (2000 blocks of 10 RK4 steps) against `jax.vmap` of
# `jax.jacfwd`, forward run time, and compile time and peak RSS
# (`/usr/bin/time -v`) of `jax.jit(jax.grad)` of the summed squared propagators:
#
#     field (cost)           run ms          grad compile s     grad peak MB
#                            vmap -> last    vmap -> last       vmap -> last
#     Lorenz (351)           0.88 -> 0.56     3.7 -> 5.2        430 -> 505
#     HenonHeiles (529)      1.21 -> 0.81     3.6 -> 7.9        453 -> 562
#     Lorenz84 (547)         1.18 -> 0.98     3.9 -> 9.6        461 -> 546
#     Lorenz96, d=4 (669)   11.2  -> 1.41     2.0 -> 9.3        407 -> 696
#     MLP width 4 (859)      3.61 -> 4.64     0.8 -> 3.1        399 -> 473
#     DoublePendulum (1179) 29.0  -> 85.8    12.6 -> 48.3       873 -> 1800
#     MLP width 8 (1411)     7.3  -> 9.9      0.6 -> 3.3        381 -> 521
#
# (MLP: `eqx.nn.MLP(3, 3, width, depth=2)` as the field of a 3-D flow.) Up to
# about a thousand operations the rewrite pays at run time (1.2x to 8x, also
# under grad) for fields that index their components (an MLP, which does not,
# gains nothing at any size: 1.3x slower at width 4), and costs at most ~7 s of
# compile time and ~300 MB more under grad; above it, it stops paying and its
# compile time and memory grow with the program (DoublePendulum: 3x slower, 4x
# the compile time, twice the memory). Through the whole `lyapunov_spectrum`
# under `jax.grad` (MLP width 8, 100 blocks), the batch-last program compiled in
# 44 s at 1.5 GB against 26 s at 1.0 GB through `jax.vmap` (matrix-free: 24 s,
# 0.9 GB); before products with an unbatched operand became one `dot_general`,
# the same did not finish in 600 s (the issue: > 5 GB).
_MAX_OPS = 1024


def _objects(shape, items):
    """An object array of `shape` holding `items` (arrays stored as they are)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out.reshape(shape)


def _unstack(x, size):
    """The `size` rows of `x` (leading axis) as a list, by one `split`: its
    transpose is one concatenation, where per-row slices would transpose to
    `size` zero-padded copies of the whole array."""
    if size == 1:
        return [x[0]]
    return [p[0] for p in jax.lax.split(x, (1,) * size, axis=0)]


def _split(x, shape):
    """A batched array of `shape + (B,)` as an object array of `(B,)` vectors."""
    size = math.prod(shape)
    if not 0 < size <= _MAX_COMPONENTS:
        raise Unsupported(f"a batched value of shape {shape}")
    return _objects(shape, _unstack(x.reshape(size, x.shape[-1]), size))


def _components(x, shape, dtype=None):
    """An unbatched array as an object array of 0-d arrays."""
    x = jnp.asarray(x, dtype=dtype)
    size = math.prod(shape)
    if size > _MAX_COMPONENTS:
        raise Unsupported(f"an operand of shape {shape}")
    if not shape:
        return _objects((), [x])
    if size == 0:
        raise Unsupported(f"an empty operand of shape {shape}")
    return _objects(shape, _unstack(x.reshape(size), size))


def _join(obj, n):
    """An object array of `(B,)` vectors (or 0-d arrays) as one `(..., B)` array."""
    flat = [jnp.broadcast_to(e, (n,)) for e in obj.reshape(-1)]
    if not flat:
        raise Unsupported("an empty batched value")
    return jnp.stack(flat, axis=0).reshape(*obj.shape, n)


def _elementwise(prim, params, operands, out_shape):
    """`prim` applied component by component (operands broadcast as NumPy does:
    jaxprs allow rank-0 and size-1 operands)."""
    operands = [np.broadcast_to(o, out_shape) for o in operands]
    items = []
    for idx in np.ndindex(*out_shape):
        args = [o[idx] for o in operands]
        n = max((jnp.shape(a)[0] for a in args if jnp.ndim(a)), default=None)
        if n is not None:
            args = [a if jnp.ndim(a) else jnp.broadcast_to(a, (n,)) for a in args]
        items.append(prim.bind(*args, **params))
    return _objects(out_shape, items)


def _reduce(op, obj, axes):
    keep = [i for i in range(obj.ndim) if i not in axes]
    moved = np.transpose(obj, (*keep, *axes))
    m = math.prod(obj.shape[i] for i in axes)
    rows = moved.reshape(-1, m)
    items = []
    for r in range(rows.shape[0]):
        acc = rows[r, 0]
        for c in range(1, m):
            acc = op(acc, rows[r, c])
        items.append(acc)
    return _objects([obj.shape[i] for i in keep], items)


def _structural(name, params, objs, out_shape):
    """Rules that only rearrange components."""
    if name == "stack":
        return np.stack(objs, axis=params["axis"])
    if name == "concatenate":
        return np.concatenate(objs, axis=params["dimension"])
    if name == "slice":
        strides = params["strides"] or (1,) * len(out_shape)
        return objs[0][
            tuple(
                slice(a, b, c)
                for a, b, c in zip(
                    params["start_indices"], params["limit_indices"], strides
                )
            )
        ]
    if name == "squeeze":
        return np.squeeze(objs[0], axis=tuple(params["dimensions"]))
    if name == "transpose":
        return np.transpose(objs[0], params["permutation"])
    if name == "broadcast_in_dim":
        dims = params["broadcast_dimensions"]
        shape = params["shape"]
        expanded = [1] * len(shape)
        for i, dim in enumerate(dims):
            expanded[dim] = objs[0].shape[i]
        return np.broadcast_to(objs[0].reshape(expanded), shape)
    if name == "reshape" and params.get("dimensions") is None:
        return objs[0].reshape(params["new_sizes"])
    raise Unsupported(f"{name} with {params}")


def _dot_both(eqn, objs, n):
    """A product of two batched operands, component by component in the output
    dtype (the operands converted first, as `preferred_element_type` asks)."""
    (lc, rc), _ = eqn.params["dimension_numbers"]
    dtype = eqn.outvars[0].aval.dtype
    ops = []
    for obj, v in zip(objs, eqn.invars):
        if v.aval.dtype != dtype:
            if not (
                jnp.issubdtype(v.aval.dtype, jnp.floating)
                and jnp.issubdtype(dtype, jnp.floating)
                and jnp.finfo(v.aval.dtype).bits <= jnp.finfo(dtype).bits
            ):
                raise Unsupported(f"dot_general of {v.aval.dtype} into {dtype}")
            convert = lambda e: jax.lax.convert_element_type(e, dtype)  # noqa: E731
            obj = np.vectorize(convert, otypes=[object])(obj)
        ops.append(obj)
    lhs, rhs = ops
    lf = [i for i in range(lhs.ndim) if i not in lc]
    rf = [i for i in range(rhs.ndim) if i not in rc]
    lhs = np.transpose(lhs, (*lf, *lc)).reshape(-1, math.prod(lhs.shape[i] for i in lc))
    rhs = np.transpose(rhs, (*rf, *rc)).reshape(-1, lhs.shape[1])
    items = []
    for a in lhs:
        for b in rhs:
            acc = None
            for x, y in zip(a, b):
                x, y = jnp.broadcast_to(x, (n,)), jnp.broadcast_to(y, (n,))
                term = jax.lax.mul(x, y)
                acc = term if acc is None else jax.lax.add(acc, term)
            items.append(acc)
    return _objects(eqn.outvars[0].aval.shape, items)


def _dot_one(eqn, vals, bats, n):
    """A product with one batched operand: one `dot_general` as the equation
    binds it (dtypes, precision), with the batch as an extra free axis."""
    lhs, rhs = vals
    if bats[0]:
        lhs = _join(lhs, n)
    else:
        rhs = _join(rhs, n)
    out = eqn.primitive.bind(lhs, rhs, **eqn.params)
    if bats[0]:  # lhs free axes (the batch last among them), then rhs free axes
        n_rhs_free = rhs.ndim - len(eqn.params["dimension_numbers"][0][1])
        out = jnp.moveaxis(out, out.ndim - 1 - n_rhs_free, -1)
    return _split(out, eqn.outvars[0].aval.shape)


def _subjaxprs(params):
    for p in params.values():
        for q in p if isinstance(p, (tuple, list)) else (p,):
            if isinstance(q, ClosedJaxpr):
                yield q.jaxpr
            elif isinstance(q, Jaxpr):
                yield q


def _check_eqn(eqn):
    """Refuse effects and callbacks, here or in a nested jaxpr, batched or not."""
    name = eqn.primitive.name
    if eqn.effects or "callback" in name:
        raise Unsupported(f"{name} (effects and callbacks are not re-batched)")
    for sub in _subjaxprs(eqn.params):
        for e in sub.eqns:
            _check_eqn(e)


def _cost(jaxpr, flags):
    """The vector operations `_eval` would emit, and which outputs are batched.

    Raises `Unsupported` where `_eval` would (primitives without a rule).
    """
    batched = {v for v, f in zip(jaxpr.invars, flags) if f}
    split = set()  # unbatched operands split into components (once each)
    ops = 0
    for eqn in jaxpr.eqns:
        _check_eqn(eqn)
        name = eqn.primitive.name
        bats = [not isinstance(v, Literal) and v in batched for v in eqn.invars]
        if not any(bats):
            continue
        out_sizes = [math.prod(v.aval.shape) for v in eqn.outvars]
        if any(s > _MAX_COMPONENTS for s in out_sizes):
            raise Unsupported(f"{name} with an output of {max(out_sizes)} components")
        if name in _CALLS:
            sub = eqn.params[_CALLS[name]].jaxpr
            sub_ops, sub_flags = _cost(sub, bats)
            ops += sub_ops
            batched.update(v for v, f in zip(eqn.outvars, sub_flags) if f)
            continue
        if name == "cond":
            if not bats[0]:
                raise Unsupported("cond with an unbatched predicate")
            for branch in eqn.params["branches"]:
                ops += _cost(branch.jaxpr, bats[1:])[0]
            ops += sum(out_sizes)
            batched.update(eqn.outvars)
            continue
        if eqn.primitive.multiple_results and name != "split":
            raise Unsupported(name)
        if name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            if lb or rb:
                raise Unsupported("dot_general with batch dimensions")
            ins = [math.prod(v.aval.shape) for v in eqn.invars]
            if all(bats):
                c = math.prod(eqn.invars[0].aval.shape[i] for i in lc)
                ops += out_sizes[0] * (2 * c - 1) + sum(ins)
            else:
                ops += ins[bats.index(True)] + out_sizes[0] + 1
        elif name in _ELEMENTWISE or name in _REDUCE_OPS:
            if name in _ELEMENTWISE:
                ops += out_sizes[0]
            else:
                ops += math.prod(eqn.invars[0].aval.shape)
            for v, b in zip(eqn.invars, bats):
                if not b and not isinstance(v, Literal) and v not in split:
                    split.add(v)
                    ops += math.prod(v.aval.shape)
        elif name not in _STRUCTURAL:
            raise Unsupported(name)
        batched.update(eqn.outvars)
    out_flags = [not isinstance(v, Literal) and v in batched for v in jaxpr.outvars]
    return ops, out_flags


def _eval(jaxpr, consts, args, flags, n):
    """Evaluate `jaxpr`; batched values (`flags`) are object arrays (`_split`)."""
    env = {}
    split = {}

    def read(v):
        if isinstance(v, Literal):
            return v.val, False
        return env[v]

    def objects(v, x):
        """An unbatched operand as components (split once per variable)."""
        if isinstance(v, Literal):
            return _components(x, v.aval.shape, v.aval.dtype)
        if v not in split:
            split[v] = _components(x, v.aval.shape, v.aval.dtype)
        return split[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = (c, False)
    for v, a, f in zip(jaxpr.invars, args, flags):
        env[v] = (a, f)
    for eqn in jaxpr.eqns:
        _check_eqn(eqn)
        vals, bats = zip(*map(read, eqn.invars)) if eqn.invars else ((), ())
        params = eqn.params
        name = eqn.primitive.name
        if not any(bats):
            out = eqn.primitive.bind(*vals, **eqn.primitive.get_bind_params(params))
            outs = out if eqn.primitive.multiple_results else [out]
            for v, o in zip(eqn.outvars, outs):
                env[v] = (o, False)
            continue
        if name in _CALLS:
            closed = params[_CALLS[name]]
            outs = _eval(closed.jaxpr, closed.consts, vals, bats, n)
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
            continue
        out_shapes = [v.aval.shape for v in eqn.outvars]
        if name == "cond":
            if not bats[0]:
                raise Unsupported("cond with an unbatched predicate")
            # As `jax.vmap` does for a batched predicate: every branch, then a
            # selection (effects were refused, so evaluating all is harmless).
            results = [
                _eval(b.jaxpr, b.consts, vals[1:], bats[1:], n)
                for b in params["branches"]
            ]
            for k, (v, shape) in enumerate(zip(eqn.outvars, out_shapes)):
                cases = [
                    r[k][0] if r[k][1] else _components(r[k][0], shape) for r in results
                ]
                out = _elementwise(jax.lax.select_n_p, {}, [vals[0], *cases], shape)
                env[v] = (out, True)
            continue
        if name == "dot_general":
            (lc, rc), (lb, rb) = params["dimension_numbers"]
            if lb or rb:
                raise Unsupported("dot_general with batch dimensions")
            if all(bats):
                outs = [_dot_both(eqn, vals, n)]
            else:
                outs = [_dot_one(eqn, vals, bats, n)]
        elif name == "split":
            outs = np.split(
                vals[0] if bats[0] else objects(eqn.invars[0], vals[0]),
                np.cumsum(params["sizes"])[:-1],
                axis=params["axis"],
            )
        elif eqn.primitive.multiple_results:
            raise Unsupported(name)
        else:
            objs = [
                x if b else objects(v, x) for x, b, v in zip(vals, bats, eqn.invars)
            ]
            if name in _ELEMENTWISE:
                out = _elementwise(eqn.primitive, params, objs, out_shapes[0])
            elif name in _REDUCE_OPS:
                out = _reduce(_REDUCE_OPS[name], objs[0], tuple(params["axes"]))
            elif name in _STRUCTURAL:
                out = _structural(name, params, objs, out_shapes[0])
            else:
                raise Unsupported(name)
            outs = [out]
        for v, out in zip(eqn.outvars, outs):
            if out.shape != v.aval.shape:  # pragma: no cover - a rule is wrong
                raise Unsupported(f"{name}: shape {out.shape} != {v.aval.shape}")
            dtypes = {jnp.dtype(e.dtype) for e in out.reshape(-1)}
            if dtypes != {jnp.dtype(v.aval.dtype)}:
                raise Unsupported(f"{name}: dtypes {dtypes} != {v.aval.dtype}")
            env[v] = (out, True)
    return [read(v) for v in jaxpr.outvars]


def _specs(args, in_batched):
    if len(args) != len(in_batched):
        raise Unsupported(f"{len(args)} arguments for {len(in_batched)} flags")
    return [
        jax.ShapeDtypeStruct(a.shape[:-1] if b else a.shape, a.dtype)
        for a, b in zip(args, in_batched)
    ]


def _trace(fn, args, in_batched):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*_specs(args, in_batched))
    ops, _ = _cost(closed.jaxpr, in_batched)
    ops += sum(
        math.prod(jnp.shape(a)[:-1]) for a, b in zip(args, in_batched) if b
    ) + sum(math.prod(s.shape) for s in jax.tree.leaves(out_shape))
    return closed, out_shape, ops


def vmap_last_cost(fn, in_batched, *args) -> int:
    """The vector operations `vmap_last(fn, in_batched)(*args)` would emit.

    `args` may be arrays or `jax.ShapeDtypeStruct`s, with the trailing batch axis
    on those flagged in `in_batched`. Traces `fn` once (no rewrite is emitted).
    The count is what the rewritten program costs to compile: one per component
    of every batched elementwise operation, reduction and scalar product, and
    per component split off or joined; moving components costs nothing.

    **Raises:**

    `Unsupported` if `vmap_last` cannot rewrite `fn` (whatever the bound).
    """
    try:
        return _trace(fn, args, in_batched)[2]
    except Unsupported:
        raise
    except Exception as e:
        raise Unsupported(f"{type(e).__name__}: {e}") from e


def vmap_last(fn, in_batched, max_ops: int | None = None):
    """`fn` mapped over a trailing axis of the arguments flagged in `in_batched`.

    **Arguments:**

    - `fn`: a function of positional arrays returning a pytree of arrays.
    - `in_batched`: a tuple of booleans, one per positional argument.
    - `max_ops`: the cost bound (`vmap_last_cost`); default `_MAX_OPS`.

    **Returns:**

    A function of the arguments with the trailing batch axis on those flagged;
    every output gets the trailing batch axis. It equals
    `jax.vmap(fn, in_axes=-1 or None, out_axes=-1)` up to rounding (products of
    one batched operand are one `dot_general`, as in `jax.vmap`; of two batched
    operands they are summed component by component).

    **Raises:**

    `Unsupported` (at trace time, and no other exception): a primitive without a
    rule, effects or callbacks, a value of more than `_MAX_COMPONENTS`
    components, a cost above `max_ops`, or any error inside the rewrite (an
    error of `fn` itself is raised again by the `jax.vmap` a caller falls back
    to).
    """
    bound = _MAX_OPS if max_ops is None else max_ops

    def mapped(*args):
        try:
            closed, out_shape, ops = _trace(fn, args, in_batched)
            if ops > bound:
                raise Unsupported(
                    f"the batch-last program would have {ops} vector operations "
                    f"(bound {bound})"
                )
            n = next(a.shape[-1] for a, b in zip(args, in_batched) if b)
            split = [
                _split(a, a.shape[:-1]) if b else a for a, b in zip(args, in_batched)
            ]
            outs = _eval(closed.jaxpr, closed.consts, split, in_batched, n)
            outs = [
                _join(o, n)
                if b
                else jnp.broadcast_to(jnp.asarray(o)[..., None], (*jnp.shape(o), n))
                for o, b in outs
            ]
            return jax.tree.unflatten(jax.tree.structure(out_shape), outs)
        except Unsupported:
            raise
        except Exception as e:
            raise Unsupported(f"{type(e).__name__}: {e}") from e

    return mapped
