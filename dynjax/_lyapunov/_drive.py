"""The loops of the Benettin QR method: two drivers with one meaning.

A run is: a transient (the state alone), `n_warmup` QR blocks whose `log R_ii`
are discarded (the tangent block aligns with the Oseledets subspaces), `n_full`
accumulated blocks of `interval` steps, and, if the step count is not a multiple
of `interval`, one last accumulated block of `rem` steps. Every block ends with
a QR factorization `W = Q R`; the exponents are the accumulated `log R_ii` over
the accumulated time.

- `run_fixed`: run lengths are Python ints, compiled into `lax.scan`s. It keeps
  every block's `log R_ii` (finite-time exponents and covariant vectors need
  them) and is reverse-differentiable. Used under an outer trace (`jit`,
  `grad`), where the lengths are baked into the caller's program anyway.
- `run_dynamic`: run lengths are traced integers, so a new `t_total` or
  `n_steps` reuses the compiled program; the loops are `while` loops, so the
  program is compiled once with one copy of every loop body (the fixed driver
  compiles the block body once per phase). It keeps the running sums only at
  `n_history` rows. Used for eager calls (and under `vmap` or forward-mode
  differentiation of them).

Both compute the same numbers in the same order of operations per block; the
sums over blocks are added in a different grouping, so they agree to rounding.

Two orderings of the tangent work, in both drivers (`method`):

- `"matrix-free"`: the `(d, k)` tangent block is propagated with the state,
  step by step (`_tangent.tangent_block`), then factorized;
- `"jacobian"`: per chunk of `P` blocks, the orbit alone (sequential, cheap),
  every block's `(d, d)` propagator at once (vectorized), then only the chain of
  small QR factorizations in sequence (`_qr.qr_chain`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._misc import input_slice
from .._results import RESULTS
from .._scan import scan
from ._qr import COLLAPSE_RTOL, householder, qr_chain, qr_positive, safe_log
from ._tangent import (
    block_propagators,
    block_starts,
    state_block,
    state_steps,
    tangent_block,
    tangent_steps,
    TangentFlow,
)


# Flows: a direction whose part orthogonal to the leading ones falls below
# 100 eps of its norm within one block is swamped by rounding (a flow's
# propagator is invertible, so it never collapses genuinely).
_FLOW_RTOL = 100.0
# Blocks of propagators held at once by the Jacobian method: `P * d * d` floats
# at most `_JACOBIAN_CHUNK_ELEMENTS` (8 MB in float64), and `P` a power of two
# (no remainder loops, see `_scan.scan_prefix`) of at most `_JACOBIAN_MAX_P`:
# the dynamic driver computes the last chunk's propagators whole, so a smaller
# `P` wastes less (at most `P - 1` propagators, 0.35 ms for Lorenz on the
# 2-core CPU of benchmarks/README.md) and a larger one loops less.
_JACOBIAN_CHUNK_ELEMENTS = 2**20
_JACOBIAN_MAX_P = 2048


def collapse_rtol(tangent) -> float:
    """The rounding level below which a QR column counts as collapsed."""
    return _FLOW_RTOL if isinstance(tangent, TangentFlow) else COLLAPSE_RTOL


def chunk_blocks(d: int, n_max: int | None = None) -> int:
    """The Jacobian method's chunk size `P` (a power of two)."""
    P = max(1, min(_JACOBIAN_MAX_P, _JACOBIAN_CHUNK_ELEMENTS // (d * d)))
    P = 2 ** int(math.floor(math.log2(P)))
    if n_max is not None:
        P = min(P, 2 ** int(math.ceil(math.log2(max(n_max, 1)))))
    return P


def blocks_code(state_ok, diags, code, is_flow: bool, interval: int):
    """Promote the blocks' failure (if any) to the carried result code.

    `state_ok` (shape `(n,)`) says whether the state is finite at the end of each
    block and `diags` (shape `(n, k)`) holds each block's `R_ii`, with `0` where
    a direction collapsed to rounding level (`_qr`). Checked vectorized over
    blocks, outside the sequential loops.

    - a non-finite state: `nonfinite_state` (flows) or `map_escaped` (maps);
    - a non-finite `R_ii`: `nonfinite_tangent` (flows) or `nonfinite_tangent_map`;
    - a collapsed direction: for a flow, rounding (`degenerate_tangent`: its
      propagator is invertible); for a map re-orthonormalized every step, a
      genuine collapse within one step (the exponent is `-inf`, not a failure);
      for a map with `interval > 1` undecidable (`degenerate_tangent_map`).
    """
    R = RESULTS
    if is_flow:
        codes = (R.nonfinite_state, R.nonfinite_tangent, R.degenerate_tangent)
    else:
        codes = (R.map_escaped, R.nonfinite_tangent_map, R.degenerate_tangent_map)
    # The cause first: a non-finite state makes the tangents non-finite too, an
    # overflowing tangent block may also have an underflowed (collapsed) column.
    new = R.where(jnp.any(diags == 0), codes[2], R.successful)
    if not is_flow and interval == 1:
        new = R.successful
    new = R.where(jnp.all(jnp.isfinite(diags)), new, codes[1])
    new = R.where(jnp.all(state_ok), new, codes[0])
    return R.where(code == R.successful, new, code)


def state_code(x, code, is_flow: bool):
    """`code` updated with a non-finite state after the transient."""
    bad = RESULTS.nonfinite_state if is_flow else RESULTS.map_escaped
    return RESULTS.where(
        (code == RESULTS.successful) & ~jnp.all(jnp.isfinite(x)), bad, code
    )


def row_ends(n_acc, n_rows: int):
    """`ceil((i + 1) n_acc / n_rows)` for `i < n_rows`: the number of accumulated
    blocks at the end of each history row (rows repeat when `n_acc < n_rows`).

    Exact in 32-bit integers for any `n_acc`: with `n_acc = a n_rows + b`,
    `(i + 1) n_acc / n_rows = (i + 1) a + (i + 1) b / n_rows`.
    """
    # NumPy for a Python int (the fixed driver indexes with the result).
    xp = np if isinstance(n_acc, (int, np.integer)) else jnp
    i1 = xp.arange(1, n_rows + 1)
    a, b = n_acc // n_rows, n_acc % n_rows
    return i1 * a + (i1 * b + n_rows - 1) // n_rows


def row_steps(ends, n_full, rem, interval):
    """The accumulated steps at the end of each row (the last block may be short)."""
    xp = np if isinstance(ends, np.ndarray) else jnp
    return xp.minimum(ends, n_full) * interval + xp.where(ends > n_full, rem, 0)


# --------------------------------------------------------------------------
# Fixed lengths (Python ints): lax.scan, per-block outputs, reverse-mode grads.


def _hold(x, flag):
    """`x`, with gradients stopped where `flag` (a window start) holds."""
    return jnp.where(flag, jax.lax.stop_gradient(x), x)


def _blocks_fixed(
    tangent, time, x, Q, code, us, n_blocks, interval, dt, args, method, hold, store_qr
):
    """`n_blocks` blocks of `interval` steps, each closed by a QR.

    Returns the final carry `(time, x, Q, code)` and, per block, `log R_ii` and
    (if `store_qr`, matrix-free only) the block's `(time, x, Q)` at its start and
    its `R`. `hold` (bool, `(n_blocks,)`) stops gradients at block starts.
    """
    is_flow = isinstance(tangent, TangentFlow)
    rtol = collapse_rtol(tangent)
    if us is not None:
        us = jax.tree.map(lambda a: a.reshape(n_blocks, interval, *a.shape[1:]), us)
    if method == "matrix-free":

        def body(carry, xs):
            us_block, hold_j = xs
            time, x, Q = carry
            x, Q = _hold(x, hold_j), _hold(Q, hold_j)
            start = (time, x, Q)
            time, x, W = tangent_block(
                tangent, time, x, Q, us_block, interval, dt, args
            )
            Q_next, R = qr_positive(W, rtol, complete=not is_flow)
            out = (jnp.all(jnp.isfinite(x)), jnp.diagonal(R))
            return (time, x, Q_next), (out, (*start, R) if store_qr else None)

        (time, x, Q), ((state_ok, diags), qr) = scan(
            body, (time, x, Q), (us, hold), length=n_blocks
        )
        code = blocks_code(state_ok, diags, code, is_flow, interval)
        return (time, x, Q, code), (safe_log(diags), qr)
    if store_qr:
        raise ValueError("store_qr needs method='matrix-free'.")

    P = chunk_blocks(x.shape[0], n_blocks)
    n_full, rest = divmod(n_blocks, P)

    def chunk(carry, xs, nb):
        us_chunk, hold_chunk = xs
        time, x, Q, code = carry
        (time, x), (t_starts, x_starts) = block_starts(
            tangent, time, x, us_chunk, nb, interval, dt, args, hold=hold_chunk
        )
        Ps = block_propagators(
            tangent, t_starts, x_starts, us_chunk, interval, dt, args
        )
        Q, diags = qr_chain(Ps, Q, hold=hold_chunk, rtol=rtol)
        x_ends = jnp.concatenate([x_starts[1:], x[None]])
        state_ok = jnp.all(jnp.isfinite(x_ends), axis=1)
        code = blocks_code(state_ok, diags, code, is_flow, interval)
        return (time, x, Q, code), (safe_log(diags), None)

    carry = (time, x, Q, code)
    outs = []
    split = lambda a, n: a.reshape(n, P, *a.shape[1:])  # noqa: E731
    if n_full:
        xs = jax.tree.map(lambda a: split(a[: n_full * P], n_full), (us, hold))
        carry, out = jax.lax.scan(lambda c, xs: chunk(c, xs, P), carry, xs)
        outs.append(jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), out))
    if rest:
        xs = jax.tree.map(lambda a: a[n_full * P :], (us, hold))
        carry, out = chunk(carry, xs, rest)
        outs.append(out)
    out = jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
    return carry, out


def run_fixed(
    tangent,
    state,
    dt,
    inputs,
    args,
    *,
    n_transient: int,
    n_warmup: int,
    interval: int,
    n_blocks: int,
    remainder: int,
    method: str,
    hold_every: int,
    store_qr: bool = False,
):
    """Transient, warm-up and accumulated blocks with lengths fixed at trace time.

    `hold_every`: gradients are stopped at the start of the first accumulated
    block (`0`), of every `hold_every`-th accumulated block (a window of a
    finite-time exponent, `> 0`), or never (`-1`).

    Returns `(state, cum, steps, code, (log_r, qr))`: the state after the run,
    the running log-sums after each accumulated block (shape `(n, k)`), the
    accumulated steps after each block, the result code, per-block `log R_ii`
    and (if `store_qr`) per-block `(time, x, Q)` at the block start and `R`.
    """
    is_flow = isinstance(tangent, TangentFlow)
    x, Q, time = state.x, state.Q, state.time
    code = RESULTS.successful
    pos = 0

    def take(n):
        nonlocal pos
        out = jax.tree.map(lambda a: a[pos : pos + n], inputs)
        pos += n
        return out

    if n_transient > 0:
        time, x = state_block(
            tangent, time, x, take(n_transient), n_transient, dt, args
        )
        code = state_code(x, code, is_flow)
    if n_warmup > 0:
        no_hold = jnp.zeros((n_warmup,), bool)
        (time, x, Q, code), _ = _blocks_fixed(
            tangent,
            time,
            x,
            Q,
            code,
            take(n_warmup * interval),
            n_warmup,
            interval,
            dt,
            args,
            method,
            no_hold,
            False,
        )
    log_rs, counts, qrs = [], [], []
    acc_blocks = 0
    for n_b, length in ((n_blocks, interval), (1 if remainder else 0, remainder)):
        if n_b == 0:
            continue
        index = acc_blocks + jnp.arange(n_b)
        if hold_every > 0:
            hold = index % hold_every == 0
        else:
            hold = (index == 0) & (hold_every == 0)
        acc_blocks += n_b
        (time, x, Q, code), (log_r, qr) = _blocks_fixed(
            tangent,
            time,
            x,
            Q,
            code,
            take(n_b * length),
            n_b,
            length,
            dt,
            args,
            method,
            hold,
            store_qr,
        )
        log_rs.append(log_r)
        counts.append(jnp.full(n_b, length))
        if store_qr:
            qrs.append(qr)
    k = Q.shape[1]
    if log_rs:
        log_r = jnp.concatenate(log_rs)
        count = jnp.concatenate(counts)
    else:
        log_r = jnp.zeros((0, k), x.dtype)
        count = jnp.zeros((0,), jnp.int32)
    cum = state.log_sums + jnp.cumsum(log_r, axis=0)
    steps = jnp.cumsum(count)
    n_acc = n_blocks * interval + remainder
    new_state = type(state)(
        x=x,
        Q=Q,
        log_sums=cum[-1] if n_acc else state.log_sums,
        time=time,
        elapsed=state.elapsed + dt * n_acc,
        num_steps=state.num_steps + n_acc,
    )
    qr = jax.tree.map(lambda *a: jnp.concatenate(a), *qrs) if qrs else None
    return new_state, cum, steps, code, (log_r, qr)


# --------------------------------------------------------------------------
# Traced lengths: while loops, history rows, one compile for every length.


def _pad_inputs(inputs, n: int):
    """Inputs padded with `n` repeats of the last row (slices past the end of a
    sequence must not be shifted back by `dynamic_slice`'s clamping)."""
    return jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], n, axis=0)]), inputs
    )


def run_dynamic(
    tangent,
    state,
    dt,
    inputs,
    args,
    counts,
    *,
    interval: int,
    method: str,
    ends,
    acc_offset,
    hold_first: bool,
    input_offset,
):
    """The run with traced lengths (see the module docstring).

    `counts` holds traced integers `transient`, `warmup`, `full`, `rem`. The
    history rows end after `ends[i]` accumulated blocks of the whole run
    (`row_ends`, computed outside), of which this call does blocks
    `acc_offset + 1, ..., acc_offset + n_acc` (a chunk of a progress-bar run);
    rows ending inside this call are filled, the others are returned as `NaN`.
    A driven map's inputs are read from step `input_offset` on.

    Returns `(state, row_sums, code)`: the state after the run, the running
    log-sums at the rows' ends (shape `(n_rows, k)`), and the result code.
    """
    is_flow = isinstance(tangent, TangentFlow)
    rtol = collapse_rtol(tangent)
    n_tr, n_wu = counts["transient"], counts["warmup"]
    n_full, rem = counts["full"], counts["rem"]
    x, Q, time = state.x, state.Q, state.time
    k = Q.shape[1]
    code = RESULTS.successful
    n_blocks = n_wu + n_full  # blocks of `interval` steps
    n_acc = n_full + (rem > 0).astype(n_full.dtype)
    # Row `i` ends after `ends[i]` accumulated blocks of the whole run; in this
    # call's numbering (warm-up blocks first) that is block `g_end[i] - 1`.
    g_end = ends - acc_offset + n_wu
    in_call = (ends > acc_offset) & (ends <= acc_offset + n_acc)
    sums = jnp.full((ends.shape[0], k), jnp.nan, x.dtype)

    time, x = state_steps(tangent, time, x, inputs, input_offset, n_tr, dt, args)
    code = state_code(x, code, is_flow)
    log_sums = state.log_sums

    def tail(carry):
        # The last, short block of `rem` steps (matrix-free for both methods).
        time, x, Q, log_sums, code, sums = carry
        s0 = input_offset + n_tr + n_blocks * interval
        if hold_first:
            x, Q = _hold(x, n_full == 0), _hold(Q, n_full == 0)
        time, x, W = tangent_steps(tangent, time, x, Q, inputs, s0, rem, dt, args)
        Q, R = householder(W, rtol)  # (cheaper to compile than Gram-Schmidt)
        diag = jnp.diagonal(R)
        code = blocks_code(
            jnp.all(jnp.isfinite(x))[None], diag[None], code, is_flow, interval
        )
        log_sums = log_sums + safe_log(diag)
        sums = jnp.where((in_call & (g_end == n_blocks + 1))[:, None], log_sums, sums)
        return time, x, Q, log_sums, code, sums

    carry = (time, x, Q, log_sums, code, sums)
    if method == "matrix-free":
        # The last, short block is one more block of the loop (length `rem`).
        carry = _matrix_free_rows(
            tangent, carry, dt, inputs, args, input_offset + n_tr, n_wu, n_blocks,
            rem, interval, g_end, in_call, hold_first, rtol, is_flow,
        )  # fmt: skip
    else:
        carry = _jacobian_chunks(
            tangent, carry, dt, inputs, args, input_offset + n_tr, n_wu, n_blocks,
            interval, g_end, in_call, hold_first, rtol, is_flow,
        )  # fmt: skip
        carry = jax.lax.cond(rem > 0, tail, lambda c: c, carry)
    time, x, Q, log_sums, code, sums = carry
    n_steps = n_full * interval + rem
    new_state = type(state)(
        x=x,
        Q=Q,
        log_sums=log_sums,
        time=time,
        elapsed=state.elapsed + dt * n_steps.astype(x.dtype),
        num_steps=state.num_steps + n_steps.astype(state.num_steps.dtype),
    )
    return new_state, sums, code


def _matrix_free_rows(
    tangent, carry, dt, inputs, args, s_first, n_wu, n_blocks, rem, interval,
    g_end, in_call, hold_first, rtol, is_flow,
):  # fmt: skip
    """Blocks `0 .. n_blocks - 1` (warm-up first) and, if `rem > 0`, a last block
    of `rem` steps, row by row: a `scan` over the history rows (nested on CPU),
    each a `while` loop over its blocks."""
    n_all = n_blocks + (rem > 0).astype(n_blocks.dtype)

    def block(b, carry):
        time, x, Q, log_sums, code = carry
        if hold_first:
            x, Q = _hold(x, b == n_wu), _hold(Q, b == n_wu)
        s0 = s_first + b * interval
        length = jnp.where(b == n_blocks, rem, interval)
        time, x, W = tangent_steps(tangent, time, x, Q, inputs, s0, length, dt, args)
        Q, R = qr_positive(W, rtol, complete=not is_flow)
        diag = jnp.diagonal(R)
        code = blocks_code(
            jnp.all(jnp.isfinite(x))[None], diag[None], code, is_flow, interval
        )
        log_sums = log_sums + jnp.where(b >= n_wu, safe_log(diag), 0.0)
        return time, x, Q, log_sums, code

    # Row i covers this call's blocks [begin_i, end_i): rows ending outside the
    # call are empty, and the blocks after the last row ending in it (none, when
    # the call is the whole run) run in an extra final row.
    ends = jnp.clip(jnp.where(in_call, g_end, 0), 0, n_all)
    ends = jax.lax.cummax(ends)
    ends = jnp.concatenate([ends, n_all[None]])
    begins = jnp.concatenate([jnp.zeros((1,), ends.dtype), ends[:-1]])
    time, x, Q, log_sums, code, sums = carry

    def row(c, be):
        begin, end = be
        c = jax.lax.fori_loop(begin, end, block, c)
        return c, c[3]

    (time, x, Q, log_sums, code), row_sums = scan(
        row, (time, x, Q, log_sums, code), (begins, ends)
    )
    sums = jnp.where(in_call[:, None], row_sums[:-1], sums)
    return time, x, Q, log_sums, code, sums


def _jacobian_chunks(
    tangent, carry, dt, inputs, args, s_first, n_wu, n_blocks, interval,
    g_end, in_call, hold_first, rtol, is_flow,
):  # fmt: skip
    """Blocks `0 .. n_blocks - 1` in chunks of `P`: the orbit, the propagators
    (vectorized over the chunk), the QR chain; the last chunk runs its orbit and
    chain only over its valid blocks (`scan_prefix`)."""
    d = carry[1].shape[0]
    P = chunk_blocks(d)
    padded = None if inputs is None else _pad_inputs(inputs, P * interval)

    def chunk(c, carry):
        time, x, Q, log_sums, code, sums = carry
        b0 = c * P
        n_valid = jnp.minimum(P, n_blocks - b0)
        g = b0 + jnp.arange(P)
        hold = (g == n_wu) if hold_first else None
        us = input_slice(padded, s_first + b0 * interval, P * interval)
        if us is not None:
            us = jax.tree.map(lambda a: a.reshape(P, interval, *a.shape[1:]), us)
        (time, x), (t_starts, x_starts) = block_starts(
            tangent, time, x, us, P, interval, dt, args, hold=hold, n_valid=n_valid
        )
        Ps = block_propagators(tangent, t_starts, x_starts, us, interval, dt, args)
        Q, diags = qr_chain(Ps, Q, n_valid=n_valid, hold=hold, rtol=rtol)
        valid = jnp.arange(P) < n_valid
        x_ends = jnp.concatenate([x_starts[1:], x[None]])
        state_ok = jnp.all(jnp.isfinite(x_ends), axis=1) | ~valid
        diags_ok = jnp.where(valid[:, None], diags, 1.0)
        code = blocks_code(state_ok, diags_ok, code, is_flow, interval)
        logs = jnp.where((valid & (g >= n_wu))[:, None], safe_log(diags_ok), 0.0)
        # (A scan, not `jnp.cumsum`: XLA compiles a cumulative sum on CPU as a
        # reduce-window, 3x slower to compile and 2x slower to run.)
        cum = jax.lax.scan(lambda c, row: (c + row, c + row), log_sums, logs)[1]
        idx = g_end - 1 - b0
        here = in_call & (idx >= 0) & (idx < n_valid)
        sums = jnp.where(here[:, None], cum[jnp.clip(idx, 0, P - 1)], sums)
        return time, x, Q, cum[-1], code, sums

    n_chunks = (n_blocks + P - 1) // P
    return jax.lax.fori_loop(0, n_chunks, chunk, carry)
