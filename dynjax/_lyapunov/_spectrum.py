"""Lyapunov spectra by the Benettin / Shimada-Nagashima QR method."""

import math
from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, Shaped

from .._custom_types import Args, Inputs, State, StateLike, Tangents
from .._misc import check_inputs, input_at, is_concrete
from .._results import RESULTS
from .._scan import scan
from .._system import AbstractDrivenMap, AbstractFlow, AbstractSystem
from .._system._checks import check_state, conform
from ._fuse import merge_default
from ._qr import qr_chain, qr_positive
from ._tangent import (
    AbstractTangentSystem,
    block_propagators,
    block_starts,
    state_block,
    tangent_block,
    tangent_system,
)


class LyapunovState(eqx.Module):
    """Everything needed to continue a Lyapunov computation.

    Pass it back as `state=` to resume: the continued run is the same
    computation as one uninterrupted run.

    **Attributes:**

    - `x`: the current state, shape `(d,)`.
    - `Q`: the current orthonormal tangent block, shape `(d, k)`, in the
        (unsorted) order in which the log-sums are accumulated.
    - `log_sums`: the accumulated `sum log R_ii`, natural log, shape `(k,)`.
    - `time`: the system's current time (flows) or iteration index (maps).
    - `elapsed`: the time (or number of iterations) over which `log_sums` was
        accumulated; the transient and the tangent warm-up are excluded.
    - `num_steps`: the number of accumulated steps.
    """

    x: State
    Q: Tangents
    log_sums: Float[Array, " k"]
    time: Shaped[Array, ""]
    elapsed: Float[Array, ""]
    num_steps: Int[Array, ""]


class LyapunovResult(eqx.Module):
    """The result of `dynjax.lyapunov_spectrum` (and `dynjax.max_lyapunov`).

    **Attributes:**

    - `exponents`: the Lyapunov exponents, sorted descending, shape `(k,)`; per
        unit time (flows) or per iteration (maps), in nats or bits (`base`).
    - `history`: the running estimate after each re-orthonormalization, shape
        `(n_qr, k)`; columns in the order of `exponents` (so
        `history[-1] == exponents`). Plot it with
        `dynjax.plot.lyapunov_convergence` to judge convergence.
    - `times`: the elapsed (accumulated) time at each row of `history`.
    - `state`: a `dynjax.LyapunovState`; pass it as `state=` to continue the run.
    - `result`: a `dynjax.RESULTS` code.
    - `stats`: `num_steps` (accumulated steps in this call), `num_qr`
        (re-orthonormalizations), `num_transient_steps`, `num_warmup_steps`.
    """

    exponents: Float[Array, " k"]
    history: Float[Array, "n k"]
    times: Float[Array, " n"]
    state: LyapunovState
    result: RESULTS
    stats: dict[str, Any]


class LyapunovInterrupted(KeyboardInterrupt):
    """Raised when a chunked (`progress=...`) run is interrupted (Ctrl-C).

    Its `result` attribute is the `dynjax.LyapunovResult` of every chunk that
    completed, so `exc.result.state` resumes the run and nothing is lost.
    """

    def __init__(self, result: LyapunovResult):
        super().__init__(
            "Lyapunov computation interrupted; the completed part is in "
            "`exc.result` (resume with `state=exc.result.state`)."
        )
        self.result = result


def _blocks_code(state_ok, diags, code):
    """Promote the first failing QR block's failure to the carried result code.

    `state_ok` (shape `(n,)`) says whether the state is finite at the end of
    each block and `diags` (shape `(n, k)`) holds each block's `R_ii`. Checked
    after the loop, vectorized over blocks, so that the sequential loop holds
    only the QR (a non-finite block leaves non-finite `R_ii`).

    A diagonal entry `R_ii` below `100 eps max_j R_jj` is rounding noise: the
    i-th direction was swamped by the leading ones between two QRs, so its
    exponent would be meaningless (degenerate_tangent).
    """
    rtol = 100 * jnp.finfo(diags.dtype).eps
    tiny = jnp.finfo(diags.dtype).tiny
    bad_state = ~state_ok
    bad_tangent = ~jnp.all(jnp.isfinite(diags), axis=1)
    floor = jnp.maximum(rtol * jnp.max(diags, axis=1, keepdims=True), tiny)
    degenerate = jnp.any(diags <= floor, axis=1)
    bad = bad_state | bad_tangent | degenerate
    first = jnp.argmax(bad)
    new = RESULTS.where(
        bad_state[first],
        RESULTS.nonfinite_state,
        RESULTS.where(
            bad_tangent[first],
            RESULTS.nonfinite_tangent,
            RESULTS.degenerate_tangent,
        ),
    )
    new = RESULTS.where(jnp.any(bad), new, RESULTS.successful)
    return RESULTS.where(code == RESULTS.successful, new, code)


def _qr_scan(
    tangent, time, x, Q, code, us, n_blocks, interval, dt, args, method, store_qr=False
):
    """`n_blocks` blocks of `interval` tangent steps, each closed by a QR.

    Returns the final carry `(time, x, Q, code)` and, per block, `log R_ii` and
    (if `store_qr`, matrix-free only) the block's `(time, x, Q)` at its start and
    its `R`.

    `method="matrix-free"` propagates the `(d, k)` block step by step with
    vmapped jvps. `method="jacobian"` (small `d`) first runs the orbit alone, then
    forms the `(d, d)` propagator of every block at once (vectorized over
    blocks), so that only the `(d, k)` product and the QR remain sequential; it
    is the same computation in a different order.
    """
    if us is not None:
        us = jax.tree.map(lambda a: a.reshape(n_blocks, interval, *a.shape[1:]), us)
    if store_qr and method != "matrix-free":
        raise ValueError("store_qr needs method='matrix-free'.")
    if method == "matrix-free":

        def body(carry, us_block):
            time, x, Q = carry
            start = (time, x, Q)
            time, x, W = tangent_block(
                tangent, time, x, Q, us_block, interval, dt, args
            )
            Q_next, R = qr_positive(W)
            out = (jnp.all(jnp.isfinite(x)), jnp.diagonal(R))
            return (time, x, Q_next), (out, (*start, R) if store_qr else None)

        (time, x, Q), ((state_ok, diags), qr) = scan(
            body, (time, x, Q), us, length=n_blocks
        )
        code = _blocks_code(state_ok, diags, code)
        return (time, x, Q, code), (jnp.log(diags), qr)

    d = x.shape[0]
    per_chunk = max(1, min(n_blocks, _JACOBIAN_CHUNK_ELEMENTS // (d * d)))
    n_full, rest = divmod(n_blocks, per_chunk)

    def chunk(carry, us_chunk, nb):
        time, x, Q, code = carry
        (time, x), (t_starts, x_starts) = block_starts(
            tangent, time, x, us_chunk, nb, interval, dt, args
        )
        P = block_propagators(tangent, t_starts, x_starts, us_chunk, interval, dt, args)

        Q, diags = qr_chain(P, Q)
        x_ends = jnp.concatenate([x_starts[1:], x[None]])
        code = _blocks_code(jnp.all(jnp.isfinite(x_ends), axis=1), diags, code)
        return (time, x, Q, code), (jnp.log(diags), None)

    carry = (time, x, Q, code)
    outs = []
    if n_full:
        us_full = None
        if us is not None:
            us_full = jax.tree.map(
                lambda a: a[: n_full * per_chunk].reshape(
                    n_full, per_chunk, *a.shape[1:]
                ),
                us,
            )
        carry, out = jax.lax.scan(
            lambda c, u: chunk(c, u, per_chunk), carry, us_full, length=n_full
        )
        outs.append(jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), out))
    if rest:
        us_rest = jax.tree.map(lambda a: a[n_full * per_chunk :], us)
        carry, out = chunk(carry, us_rest, rest)
        outs.append(out)
    out = jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
    return carry, out


# Floats of block propagators (blocks * d * d) per chunk of the Jacobian method:
# bounds its memory (8 MB in float64) while keeping the vectorized part large.
_JACOBIAN_CHUNK_ELEMENTS = 2**20
# The default method is the Jacobian one for d <= 4 and intervals >= 4 steps.
_JACOBIAN_MAX_D = 4
_JACOBIAN_MIN_INTERVAL = 4


def _fresh_state(x0, k: int, key, time0) -> LyapunovState:
    d = x0.shape[0]
    # A random orthonormal start: coordinate vectors can be invariant (e.g. for a
    # diagonal linear system) and would then never align with the leading
    # Oseledets directions.
    Q0, _ = qr_positive(jr.normal(key, (d, k), dtype=x0.dtype))
    return LyapunovState(
        x=x0,
        Q=Q0,
        log_sums=jnp.zeros(k, x0.dtype),
        time=time0,
        elapsed=jnp.zeros((), x0.dtype),
        num_steps=jnp.zeros((), jnp.int32),
    )


@eqx.filter_jit
def _run(
    tangent: AbstractTangentSystem,
    state: LyapunovState,
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
    store_qr: bool = False,
):
    """Transient (state only), warm-up blocks, then accumulated blocks.

    Returns `(state, cum, times, code, (log_r, qr))`: the running log-sums and
    elapsed times after each accumulated block, the result code, the per-block
    `log R_ii`, and (if `store_qr`) the per-block `(time, x, Q)` at block start
    and `R`.
    """
    x, Q, time = state.x, state.Q, state.time
    code = RESULTS.successful
    pos = 0

    def take(n):
        nonlocal pos
        if inputs is None:
            return None
        out = jax.tree.map(lambda a: a[pos : pos + n], inputs)
        pos += n
        return out

    if n_transient > 0:
        time, x = state_block(
            tangent, time, x, take(n_transient), n_transient, dt, args
        )
        code = RESULTS.where(jnp.all(jnp.isfinite(x)), code, RESULTS.nonfinite_state)
    if n_warmup > 0:
        (time, x, Q, code), _ = _qr_scan(
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
        )
    log_rs, counts, qrs = [], [], []
    for n_b, length in ((n_blocks, interval), (1 if remainder else 0, remainder)):
        if n_b == 0:
            continue
        (time, x, Q, code), (log_r, qr) = _qr_scan(
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
    times = state.elapsed + dt * jnp.cumsum(count).astype(x.dtype)
    n_acc = n_blocks * interval + remainder
    new_state = LyapunovState(
        x=x,
        Q=Q,
        log_sums=cum[-1] if n_acc else state.log_sums,
        time=time,
        elapsed=times[-1] if n_acc else state.elapsed,
        num_steps=state.num_steps + n_acc,
    )
    qr = jax.tree.map(lambda *a: jnp.concatenate(a), *qrs) if qrs else None
    return new_state, cum, times, code, (log_r, qr)


def _finish(state, cum, times, code, stats, log_base, throw) -> LyapunovResult:
    history = cum / times[:, None] / log_base
    order = jnp.argsort(-history[-1])
    history = history[:, order]
    exponents = history[-1]
    if throw:
        exponents = code.error_if(exponents, code != RESULTS.successful)
    return LyapunovResult(
        exponents=exponents,
        history=history,
        times=times,
        state=state,
        result=code,
        stats=stats,
    )


_finish_jit = eqx.filter_jit(_finish)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


class _Plan(eqx.Module):
    """The validated, static layout of a run (sizes in steps)."""

    tangent: AbstractTangentSystem
    x0: Array
    state: LyapunovState | None
    key: PRNGKeyArray
    dt_array: Array
    inputs: Any
    args: Any
    k: int = eqx.field(static=True)
    n_transient: int = eqx.field(static=True)
    n_warmup: int = eqx.field(static=True)
    interval: int = eqx.field(static=True)
    n_blocks: int = eqx.field(static=True)
    remainder: int = eqx.field(static=True)
    log_base: float = eqx.field(static=True)
    method: str = eqx.field(static=True)
    time0: Array
    # A step size known at trace time is kept as a Python float, a compile-time
    # constant that XLA folds into the Runge-Kutta stages (Lorenz, 1e5 steps:
    # 35 ms instead of 58 ms for a traced step size).
    dt_value: float | None = eqx.field(static=True)

    @property
    def dt(self):
        return self.dt_array if self.dt_value is None else self.dt_value

    def initial_state(self) -> LyapunovState:
        if self.state is not None:
            return self.state
        return _fresh_state(self.x0, self.k, self.key, self.time0)

    def run(self, *, remainder: int, method: str | None = None, **kwargs):
        """`_run` from the initial state with this plan's layout (inside `jit`)."""
        return _run(
            self.tangent,
            self.initial_state(),
            self.dt,
            self.inputs,
            self.args,
            n_transient=self.n_transient,
            n_warmup=self.n_warmup,
            interval=self.interval,
            n_blocks=self.n_blocks,
            remainder=remainder,
            method=self.method if method is None else method,
            **kwargs,
        )


def _plan(
    system,
    x0,
    *,
    k,
    dt,
    n_steps,
    t_total,
    interval,
    transient,
    tangent_warmup,
    inputs,
    base,
    solver,
    state,
    key,
    method,
    args=None,
    verb="lyapunov_spectrum",
    merge=None,
    batched=False,
) -> _Plan:
    if not isinstance(system, AbstractSystem):
        raise ValueError(
            f"`system` must be a dynjax flow, map or driven map, got {type(system)}."
        )
    is_flow = isinstance(system, AbstractFlow)
    is_driven = isinstance(system, AbstractDrivenMap)
    if is_driven:
        inputs, n_inputs = check_inputs(inputs)
    system, x0, args = conform(
        system,
        x0,
        verb=verb,
        args=args,
        u=input_at(inputs, 0) if is_driven else None,
    )
    d = x0.shape[0]
    if state is not None:
        if not isinstance(state, LyapunovState):
            raise ValueError(
                "`state` must be the `LyapunovState` of a previous result "
                "(`result.state`)."
            )
        if state.Q.shape[0] != d:
            raise ValueError(
                f"`state` is for a system of dimension {state.Q.shape[0]}, not {d}."
            )
        if k is not None and k != state.Q.shape[1]:
            raise ValueError(
                f"`k={k}` differs from the resumed state's k={state.Q.shape[1]}; "
                "omit `k` when resuming."
            )
        k = state.Q.shape[1]
    if k is None:
        k = d
    k = _check_int("k", k, 1)
    if k > d:
        raise ValueError(
            f"`k={k}` exceeds the state dimension d={d}: a d-dimensional system has "
            f"at most d Lyapunov exponents. Pass `k` between 1 and {d}."
        )
    if base == "e":
        log_base = 1.0
    elif (
        isinstance(base, (int, float))
        and not isinstance(base, bool)
        and base > 0
        and base != 1
    ):
        log_base = math.log(base)
    else:
        raise ValueError(
            f"`base` must be 'e' (nats) or a positive number such as 2 (bits), "
            f"got {base!r}."
        )
    if is_flow:
        if dt is None:
            dt = 0.01
        if is_concrete(dt) and not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"`dt` must be a positive step size, got {dt}.")
        if n_steps is not None and t_total is not None:
            raise ValueError("Pass either `n_steps` or `t_total`, not both.")
        if n_steps is None:
            if t_total is None:
                t_total = 1000.0
            if not is_concrete(dt):
                raise ValueError(
                    "With a traced `dt`, pass `n_steps` instead of `t_total`."
                )
            n_steps = max(1, round(float(t_total) / float(dt)))
        interval = 10 if interval is None else interval
        dt_concrete = is_concrete(dt)
        dt_value = float(dt) if dt_concrete else None
        dt = jnp.asarray(dt, dtype=x0.dtype)
        if not dt_concrete:
            # (A concrete dt was checked above and stays a compile-time constant,
            # which XLA folds into the Runge-Kutta stages: 35 instead of 58 ms for
            # 1e5 Lorenz steps.)
            dt = eqx.error_if(dt, ~(dt > 0), "`dt` must be a positive step size.")
        if transient is None:
            transient = 10.0
        if not (np.isfinite(transient) and transient >= 0):
            raise ValueError(
                f"`transient` (a time, for flows) must be >= 0, got {transient}."
            )
        if transient and not dt_concrete:
            raise ValueError("With a traced `dt`, pass `transient=0`.")
        n_transient = round(float(transient) / dt_value) if transient else 0
        time0 = jnp.zeros((), x0.dtype)
    else:
        if dt is not None or t_total is not None:
            raise ValueError(
                "`dt` and `t_total` are for flows; a map is iterated: pass `n_steps`."
            )
        if solver is not None:
            raise ValueError(
                "`solver` is only used for flows; a map is iterated exactly. Remove "
                "`solver=`."
            )
        dt = jnp.ones((), x0.dtype)
        dt_value = 1.0
        interval = 1 if interval is None else interval
        time0 = jnp.zeros((), jnp.int32)
        if is_driven:
            transient = 0 if transient is None else transient
            n_transient = _check_int("transient", transient, 0)
        else:
            transient = 1000 if transient is None else transient
            n_transient = _check_int("transient", transient, 0)
    interval = _check_int("interval", interval, 1)
    if tangent_warmup is None:
        tangent_warmup = 0 if is_driven else 100
    n_warmup = _check_int("tangent_warmup", tangent_warmup, 0)
    if state is not None:
        n_transient = n_warmup = 0
    if is_driven:
        used = n_transient + n_warmup * interval
        if n_steps is None:
            n_steps = n_inputs - used
        elif n_inputs != used + n_steps:
            raise ValueError(
                f"`inputs` has {n_inputs} steps but the run needs "
                f"transient + tangent_warmup * interval + n_steps = {used + n_steps}."
            )
        if n_steps < 1:
            raise ValueError(
                f"`inputs` has {n_inputs} steps, which leaves no steps after "
                f"the transient and warm-up ({used} steps); pass a longer sequence."
            )
    else:
        if inputs is not None:
            raise ValueError("`inputs` is only for driven maps (`AbstractDrivenMap`).")
        n_steps = 10_000 if n_steps is None else n_steps
    n_steps = _check_int("n_steps", n_steps, 1)
    key = jr.key(0) if key is None else key
    if state is not None:
        state = eqx.tree_at(lambda s: s.x, state, check_state(state.x, d, "state.x"))
    if method is None:
        # Measured on CPU (benchmarks/lyapunov.py, 1e5 steps): Lorenz with QR
        # every 10 steps, 3.4x to 4x faster with the Jacobian method (k = 3);
        # earlier measurements (before the batch-last propagators): Henon with
        # QR every step 1.4x slower (the sequential QR chain is then the whole
        # cost), Lorenz96 with d = 8 1.8x slower (d x d propagators).
        # Under `vmap` the batch already vectorizes the matrix-free steps; the
        # Jacobian method is 1.1x faster there (256 vmapped Lorenz spectra) but
        # holds a chunk of propagators per batch member, so memory would grow
        # with the batch: matrix-free stays the default.
        small = d <= _JACOBIAN_MAX_D and interval >= _JACOBIAN_MIN_INTERVAL
        method = "jacobian" if small and not batched else "matrix-free"
    if method not in ("jacobian", "matrix-free"):
        raise ValueError(
            f"`method` must be 'jacobian', 'matrix-free' or None, got {method!r}."
        )
    return _Plan(
        tangent=tangent_system(
            system, solver, merge_default() if merge is None else merge
        ),
        x0=x0,
        state=state,
        key=key,
        k=k,
        time0=time0,
        dt_array=dt,
        dt_value=dt_value,
        inputs=inputs,
        args=args,
        n_transient=n_transient,
        n_warmup=n_warmup,
        interval=interval,
        n_blocks=n_steps // interval,
        remainder=n_steps % interval,
        log_base=log_base,
        method=method,
    )


@eqx.filter_jit
def _run_and_finish(plan: _Plan, throw: bool) -> LyapunovResult:
    state, cum, times, code, _ = plan.run(remainder=plan.remainder)
    stats = _stats(plan, plan.n_blocks, plan.remainder, include_prelude=True)
    return _finish(state, cum, times, code, stats, plan.log_base, throw)


def _stats(plan, n_blocks, remainder, include_prelude):
    return {
        "num_steps": n_blocks * plan.interval + remainder,
        "num_qr": n_blocks + (1 if remainder else 0),
        "num_transient_steps": plan.n_transient if include_prelude else 0,
        "num_warmup_steps": plan.n_warmup * plan.interval if include_prelude else 0,
    }


def _run_chunked(plan: _Plan, args, throw: bool, progress) -> LyapunovResult:
    from tqdm.auto import tqdm

    n_chunks = 100 if progress is True else _check_int("progress", progress, 1)
    per = max(1, plan.n_blocks // n_chunks)
    total = plan.n_blocks * plan.interval + plan.remainder
    state = eqx.filter_jit(plan.initial_state)()
    inputs = plan.inputs
    pos = 0
    pieces_cum, pieces_times, code = [], [], RESULTS.successful

    def call(n_transient, n_warmup, n_blocks, remainder):
        nonlocal pos
        n_in = n_transient + (n_warmup + n_blocks) * plan.interval + remainder
        chunk_inputs = jax.tree.map(lambda a: a[pos : pos + n_in], inputs)
        pos += n_in
        return _run(
            plan.tangent,
            state,
            plan.dt,
            chunk_inputs,
            args,
            n_transient=n_transient,
            n_warmup=n_warmup,
            interval=plan.interval,
            n_blocks=n_blocks,
            remainder=remainder,
            method=plan.method,
        )

    def partial_result():
        if not pieces_cum:
            cum = jnp.zeros((0, state.Q.shape[1]), state.x.dtype)
            times = jnp.zeros((0,), state.x.dtype)
            stats = _stats(plan, 0, 0, True)
        else:
            cum = jnp.concatenate(pieces_cum)
            times = jnp.concatenate(pieces_times)
            stats = _stats(plan, blocks_done, rem_done, True)
        if cum.shape[0] == 0:
            return LyapunovResult(
                exponents=jnp.full(state.Q.shape[1], jnp.nan, state.x.dtype),
                history=cum,
                times=times,
                state=state,
                result=code,
                stats=stats,
            )
        return _finish_jit(state, cum, times, code, stats, plan.log_base, False)

    done = False
    blocks_done = rem_done = 0
    bar = tqdm(total=total, desc="Lyapunov", unit="step")
    try:
        if plan.n_transient or plan.n_warmup:
            bar.set_postfix_str("transient")
            state, _, _, c, _ = call(plan.n_transient, plan.n_warmup, 0, 0)
            code = RESULTS.where(code == RESULTS.successful, c, code)
        left = plan.n_blocks
        while True:
            n_b = min(per, left)
            rem = plan.remainder if n_b == left else 0
            state, cum, times, c, _ = call(0, 0, n_b, rem)
            code = RESULTS.where(code == RESULTS.successful, c, code)
            pieces_cum.append(cum)
            pieces_times.append(times)
            left -= n_b
            blocks_done += n_b
            rem_done += rem
            done = left == 0
            bar.update(n_b * plan.interval + rem)
            if done:
                break
    except KeyboardInterrupt:
        raise LyapunovInterrupted(partial_result()) from None
    finally:
        bar.close()
    done = True
    out = partial_result()
    if throw:
        out = eqx.tree_at(
            lambda r: r.exponents,
            out,
            code.error_if(out.exponents, code != RESULTS.successful),
        )
    return out


def lyapunov_spectrum(
    system: AbstractSystem,
    x0: StateLike,
    *,
    k: int | None = None,
    dt: float | None = None,
    n_steps: int | None = None,
    t_total: float | None = None,
    interval: int | None = None,
    transient: float | int | None = None,
    tangent_warmup: int | None = None,
    inputs: Inputs | None = None,
    args: Args = None,
    base: Literal["e"] | float = "e",
    solver: dfx.AbstractSolver | None = None,
    state: LyapunovState | None = None,
    key: PRNGKeyArray | None = None,
    method: Literal["jacobian", "matrix-free"] | None = None,
    progress: bool | int = False,
    throw: bool = True,
) -> LyapunovResult:
    r"""The k largest Lyapunov exponents of a flow, map or driven map.

    The Benettin / Shimada-Nagashima method: a `(d, k)` orthonormal block of
    tangent vectors `Q` is propagated with the state by the linearized dynamics
    (`dV/dt = Df(x) V` for flows, `V' = DF(x) V` for maps), matrix-free with
    `jax.jvp` over the k columns, and re-orthonormalized every `interval` steps by
    a reduced QR factorization `V = Q R` with `R_{ii} > 0`. The exponents are

    $$\lambda_i = \frac{1}{T} \sum_{\text{blocks}} \log R_{ii},$$

    with `T` the accumulated time (flows) or number of iterations (maps). Before
    accumulating, the state alone runs through a `transient`, then the tangents
    align with the Oseledets subspaces during `tangent_warmup` QR blocks. The
    whole run is compiled (`lax.scan`s); flows are stepped with a fixed step
    `dt` by 4th-order Runge-Kutta (state and tangents together), or by any
    diffrax `solver`. With `method="matrix-free"` the cost is proportional to
    `k`: `k < d` costs less.

    `vmap` it (with `eqx.filter_vmap`) over initial states or parameters; to shard
    a parameter sweep over several devices, place the batched parameters with a
    `jax.sharding.NamedSharding` over a `Mesh` and call the vmapped function:
    the computation runs where the data lives, with no change to this code:

    ```python
    mesh = jax.make_mesh(
        (jax.device_count(),), ("p",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    rhos = jax.device_put(rhos, NamedSharding(mesh, PartitionSpec("p")))
    spectra = eqx.filter_jit(eqx.filter_vmap(
        lambda rho: dynjax.lyapunov_spectrum(Lorenz(rho=rho), x0).exponents
    ))(rhos)
    ```

    **Gradients.** `jax.grad` of the exponents with respect to parameters (fields
    of `system`, or `args`) works through the scan and the QR. For a non-chaotic
    system (a stable fixed point or cycle) it is the derivative of the exponent.
    For a chaotic system the derivative of a long-time average does not commute
    with the limit: gradients through long runs grow like `exp(lambda_1 T)` and
    are useless. Use instead gradients of finite-time exponents over short windows
    (`dynjax.finite_time_lyapunov`), averaged over windows, as in gradient
    flossing (Engelken 2023).

    **Progress and interrupts.** `progress=True` (or a number of chunks) runs the
    accumulation as a sequence of compiled chunks and shows a tqdm bar between
    them (the chunks compile once). Ctrl-C between or during chunks raises
    `dynjax.LyapunovInterrupted`, whose `.result` holds everything completed;
    resume with `state=exc.result.state`. Not available under `jit`/`vmap`.

    **Arguments:**

    - `system`: a dynjax flow, map or driven map.
    - `x0`: the initial state, shape `(d,)`.
    - `k`: the number of exponents (default `d`, the full spectrum).
    - `dt`: the fixed step (flows; default `0.01`).
    - `n_steps`: the number of accumulated steps (default `10_000` for maps; for
        flows the default is `t_total / dt`). For driven maps it defaults to what
        the `inputs` leave after transient and warm-up.
    - `t_total`: flows only, the accumulated time instead of `n_steps` (default
        `1000.0`).
    - `interval`: the number of steps between re-orthonormalizations (default 10
        for flows, 1 for maps). Too large an interval lets tangents overflow or
        collapse, which is reported (`RESULTS.nonfinite_tangent`,
        `RESULTS.degenerate_tangent`).
    - `transient`: discarded evolution of the state alone before the tangents
        start: a time for flows (default `10.0`), iterations for maps (default
        1000; 0 for driven maps, whose transient consumes the first `inputs`).
    - `tangent_warmup`: QR blocks run but not accumulated, so the tangent block
        aligns with the leading Oseledets subspace (default 100; 0 for driven maps).
    - `inputs`: the input sequence of a driven map, shape `(T, m)` with
        `T = transient + tangent_warmup * interval + n_steps`.
    - `args`: run-time arguments passed to the system.
    - `base`: `"e"` for nats (default) or a number, e.g. `2` for bits (the
        convention of the RNN literature).
    - `solver`: flows only; `None` for the built-in fixed-step RK4, or a diffrax
        solver (e.g. `diffrax.Tsit5()`) stepped with the fixed step `dt`.
    - `state`: a `LyapunovState` from a previous result, to resume (the transient
        and warm-up are then skipped).
    - `key`: a PRNG key for the random initial tangent block (default `key(0)`).
    - `method`: how tangents are propagated; both compute the same numbers up
        to rounding.
        - `"matrix-free"`: the `(d, k)` block step by step with vmapped jvps, at
            a cost proportional to k.
        - `"jacobian"`: parallel in time. The orbit first (state only, the cheap
            sequential part), then the `d x d` propagator of every QR block at
            once (the tangent step from the identity, vectorized over blocks),
            then the chain of small QR factorizations. It forms `d x d`
            propagators whatever `k`, so it suits small `d`.
        - `None` (default): `"jacobian"` for `d <= 4` with `interval >= 4`
            (Lorenz: 3.4x to 4x faster on CPU), otherwise, and under `vmap`
            (where the batch already vectorizes the steps, and the propagators'
            memory would grow with the batch), `"matrix-free"`.
    - `progress`: `True` or a number of chunks for a tqdm progress bar.
    - `throw`: if `True`, a failure raises an error; otherwise it is reported in
        `result.result` (and the exponents are then not meaningful).

    **Returns:**

    A `dynjax.LyapunovResult`.

    !!! Example

        ```python
        res = dynjax.lyapunov_spectrum(dynjax.systems.Lorenz(), jnp.ones(3))
        res.exponents  # about (0.906, 0.0, -14.57)
        ```

    **References:**

    G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn, "Lyapunov
    characteristic exponents for smooth dynamical systems and for Hamiltonian
    systems; a method for computing all of them", Meccanica 15, 9-30 (1980).
    I. Shimada, T. Nagashima, "A numerical approach to ergodic problem of
    dissipative dynamical systems", Prog. Theor. Phys. 61, 1605-1616 (1979).
    R. Engelken, "Gradient flossing: improving gradient descent through dynamic
    control of Jacobians", NeurIPS (2023).
    """
    options = dict(
        k=k,
        dt=dt,
        n_steps=n_steps,
        t_total=t_total,
        interval=interval,
        transient=transient,
        tangent_warmup=tangent_warmup,
        inputs=inputs,
        base=base,
        solver=solver,
        state=state,
        key=key,
        method=method,
        merge=merge_default(),
        batched=_is_batched((system, x0, args)),
    )
    if progress:
        if isinstance(x0, jax.core.Tracer) or isinstance(system, jax.core.Tracer):
            raise ValueError(
                "`progress` runs compiled chunks from Python and cannot be used "
                "under `jit`/`vmap`/`grad`; pass `progress=False`."
            )
        plan = _plan(system, x0, args=args, **options)
        return _run_chunked(plan, plan.args, throw, progress)
    return _spectrum_jit(system, x0, args, throw, options)


try:  # private in jax; without it every call counts as unbatched
    from jax._src.interpreters.batching import BatchTracer as _BatchTracer
except ImportError:  # pragma: no cover
    _BatchTracer = ()


def _is_batched(tree) -> bool:
    """Whether the call is being traced by `vmap` (it picks the default method)."""
    return any(isinstance(leaf, _BatchTracer) for leaf in jax.tree.leaves(tree))


@eqx.filter_jit
def _spectrum_jit(system, x0, args, throw, options) -> LyapunovResult:
    # Validation runs at trace time, so a compiled call costs no Python-side
    # array work (about 1 ms saved per call).
    return _run_and_finish(_plan(system, x0, args=args, **options), throw)


def max_lyapunov(system: AbstractSystem, x0: StateLike, **kwargs) -> LyapunovResult:
    """The largest Lyapunov exponent: `lyapunov_spectrum` with `k=1`.

    Propagates a single tangent vector, so it costs about `1/d` of the full
    spectrum's tangent work. Takes the keyword arguments of
    `dynjax.lyapunov_spectrum` (except `k`); `result.exponents[0]` is the exponent.
    """
    if "k" in kwargs:
        raise ValueError("`max_lyapunov` always uses k=1; remove `k=`.")
    return lyapunov_spectrum(system, x0, k=1, **kwargs)
