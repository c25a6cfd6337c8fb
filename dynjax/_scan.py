"""`jax.lax.scan`, laid out for cheap loop iterations on XLA's CPU runtime.

XLA's CPU runtime runs the kernels of a loop body one after another, at a few
nanoseconds each, only if the body has at most 8 kernels or every buffer that
it touches holds at most 512 bytes. Otherwise it schedules the kernels as a
dataflow graph on its thread pool, which costs about a microsecond per
iteration. A scan body reads its slice of `xs` from, and writes its slice of
`ys` into, arrays as long as the whole scan, so any scan body with more than 8
kernels and a stacked input or output pays the graph price on every iteration
(measured: a 3 x 3 QR chain, 1.4 us per iteration flat, 0.35 us nested).

`scan` nests the loop: an inner scan over chunks of `m` iterations whose
stacked inputs and outputs fit in 512 bytes, inside an outer scan over the
chunks, whose body is only the inner loop and its copies in and out. It is the
same computation in the same order, so results are bitwise equal to
`jax.lax.scan`.
"""

import math

import jax
import jax.numpy as jnp


# The thresholds of XLA's CPU thunk executor (`ThunkExecutor::Options`); they are
# compiled in, with no flag to change them.
_SEQUENTIAL_BYTES = 512


def _nbytes(tree) -> int:
    return sum(
        math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)
    )


def _chunk(f, init, xs) -> int:
    """The inner chunk length: the largest power of two whose stacked inputs and
    outputs fit in `_SEQUENTIAL_BYTES` (a power of two, so that it divides the
    power-of-two block counts of the Lyapunov drivers and no remainder loop is
    compiled)."""
    x_row = None if xs is None else jax.tree.map(lambda a: a[0], xs)
    _, y_row = jax.eval_shape(f, init, x_row)
    per_iteration = max(_nbytes(y_row) + _nbytes(x_row), 1)
    m = 1
    while 2 * m * per_iteration <= _SEQUENTIAL_BYTES:
        m *= 2
    return m


def scan(f, init, xs=None, length: int | None = None):
    """`jax.lax.scan(f, init, xs, length)`, nested on CPU (see the module notes)."""
    if length is None:
        length = jax.tree.leaves(xs)[0].shape[0]
    if jax.default_backend() != "cpu" or length < 4:
        return jax.lax.scan(f, init, xs, length=length)
    m = _chunk(f, init, xs)
    if m < 2 or length < 2 * m:
        return jax.lax.scan(f, init, xs, length=length)
    n_chunks, rest = divmod(length, m)

    def chunk(carry, xs_chunk):
        return jax.lax.scan(f, carry, xs_chunk, length=m)

    def head(a):
        return a[: n_chunks * m].reshape(n_chunks, m, *a.shape[1:])

    carry, ys = jax.lax.scan(
        chunk, init, None if xs is None else jax.tree.map(head, xs), length=n_chunks
    )
    ys = jax.tree.map(lambda a: a.reshape(n_chunks * m, *a.shape[2:]), ys)
    if rest:
        xs_rest = None if xs is None else jax.tree.map(lambda a: a[n_chunks * m :], xs)
        carry, ys_rest = jax.lax.scan(f, carry, xs_rest, length=rest)
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, ys_rest)
    return carry, ys


def scan_prefix(f, init, xs, n):
    """`lax.scan(f, init, xs)` over the first `n` rows of `xs` (`n` traced), and
    possibly a few more.

    The loop runs `ceil(n / m)` unmasked chunks of `m` iterations (`m` a power
    of two, see `_chunk`; on other backends `m = 1`), so up to `m - 1`
    iterations past row `n` also run. Returns `(carry, ys, n_run)`: the carry
    after `n_run = ceil(n / m) m` iterations, and `ys`, whose rows from `n` on
    (and rows never reached, which are zero) are not meaningful. Callers that
    need the carry after exactly `n` iterations read it from their own `ys` when
    `n < n_run` (e.g. the state at the start of block `n`). No masking, so the
    loop body costs what `scan`'s does. The number of rows of `xs` must be a
    multiple of `m` (the drivers use powers of two). A new `n` does not
    recompile.
    """
    length = jax.tree.leaves(xs)[0].shape[0]
    m = _chunk(f, init, xs) if jax.default_backend() == "cpu" else 1
    m = min(m, length)
    if length % m:
        raise ValueError(f"scan_prefix: {length} rows are not a multiple of {m}.")
    _, y_row = jax.eval_shape(f, init, jax.tree.map(lambda a: a[0], xs))
    ys0 = jax.tree.map(lambda s: jnp.zeros((length, *s.shape), s.dtype), y_row)

    def outer(c, state):
        carry, ys = state
        start = c * m
        xs_c = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, m), xs)
        carry, ys_c = jax.lax.scan(f, carry, xs_c)
        ys = jax.tree.map(
            lambda a, b: jax.lax.dynamic_update_slice_in_dim(a, b, start, 0), ys, ys_c
        )
        return carry, ys

    n_chunks = (n + m - 1) // m
    carry, ys = jax.lax.fori_loop(0, n_chunks, outer, (init, ys0))
    return carry, ys, n_chunks * m
