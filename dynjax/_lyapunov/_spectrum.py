"""Lyapunov spectra by the Benettin / Shimada-Nagashima QR method.

`lyapunov_spectrum` validates its options in Python (`_layout`: every size is a
Python int there), then runs one compiled function. Eager calls pass the run
lengths as traced integers (`_drive.run_dynamic`), so a new `t_total` or
`n_steps` reuses the compiled program; calls under an outer trace (`jit`,
`grad`) bake them in (`_drive.run_fixed`), as the outer program does anyway.
"""

import functools
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
from .._misc import check_inputs, input_at, is_concrete, progress_bar
from .._results import raise_if_failed, RESULTS
from .._system import AbstractDrivenMap, AbstractFlow, AbstractSystem
from .._system._checks import check_state, conform, evolution_spec
from .._system._jacobian import (
    check_reverse_differentiable,
    differentiation_mode,
    tracer_kinds,
)
from ._drive import row_ends, row_steps, run_dynamic, run_fixed
from ._fuse import merge_default
from ._tangent import tangent_system


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
        unit time (flows) or per iteration (maps), in nats or bits (`base`). A
        direction of a map that collapses within one step (a singular Jacobian,
        or a contraction below about `8 eps` per step) has exponent `-inf`.
    - `history`: the running estimate at `n_history` points evenly spaced over
        the accumulated blocks, shape `(n_history, k)`; columns in the order of
        `exponents` (so `history[-1] == exponents`). When the run has fewer QR
        blocks than `n_history`, points repeat. Plot it with
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


# The default method is the Jacobian one for d <= 4 and intervals >= 4 steps.
_JACOBIAN_MAX_D = 4
_JACOBIAN_MIN_INTERVAL = 4
_N_HISTORY = 1000


@functools.lru_cache(maxsize=64)
def _numpy_frame(seed: tuple, d: int, k: int, dtype) -> np.ndarray:
    # (NumPy in the cache: a JAX array made under a trace would be a tracer.)
    rng = np.random.default_rng(np.asarray(seed, np.uint64))
    Q, R = np.linalg.qr(rng.normal(size=(d, k)))
    Q = Q * np.where(np.diagonal(R) < 0, -1.0, 1.0)[None, :]
    Q = Q.astype(dtype)
    Q.flags.writeable = False
    return Q


def initial_frame(key, d: int, k: int, dtype):
    """The random orthonormal `(d, k)` tangent block a run starts from.

    A random start: coordinate vectors can be invariant (e.g. for a diagonal
    linear system) and would then never align with the leading Oseledets
    directions. For a concrete key (or none: `key(0)`) it is drawn and
    factorized in NumPy, outside the compiled program (no QR to compile);
    under a trace the key is returned and `_fresh_state` draws it with JAX.
    """
    if key is None:
        seed = (0,)
    elif isinstance(key, jax.core.Tracer):
        return key
    else:
        seed = tuple(int(v) for v in np.asarray(jr.key_data(key)).ravel())
    return jnp.asarray(_numpy_frame(seed, d, k, jnp.dtype(dtype)))


def _fresh_state(x0, k: int, frame, time0) -> LyapunovState:
    if jnp.issubdtype(frame.dtype, jax.dtypes.prng_key):
        Q0, R = jnp.linalg.qr(jr.normal(frame, (x0.shape[0], k), dtype=x0.dtype))
        Q0 = Q0 * jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0).astype(x0.dtype)
    else:
        Q0 = frame.astype(x0.dtype)
    return LyapunovState(
        x=x0,
        Q=Q0,
        log_sums=jnp.zeros(k, x0.dtype),
        time=time0,
        elapsed=jnp.zeros((), x0.dtype),
        num_steps=jnp.zeros((), jnp.int32),
    )


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


_GRADIENTS = {"after_warmup": 0, "full": -1}


class _Layout(eqx.Module):
    """The validated static configuration of a run (everything but lengths)."""

    verb: str = eqx.field(static=True)
    k: int = eqx.field(static=True)
    interval: int = eqx.field(static=True)
    log_base: float = eqx.field(static=True)
    method: str = eqx.field(static=True)
    merge: bool = eqx.field(static=True)
    n_history: int = eqx.field(static=True)
    # Gradients are stopped at the first accumulated block (0), at every
    # `hold_every`-th one (> 0, finite-time windows), or never (-1).
    hold_every: int = eqx.field(static=True)
    # A step size known at trace time is kept as a Python float, a compile-time
    # constant that XLA folds into the Runge-Kutta stages (Lorenz, 1e5 steps:
    # 35 ms instead of 58 ms for a traced step size).
    dt_value: float | None = eqx.field(static=True)
    is_flow: bool = eqx.field(static=True)
    is_driven: bool = eqx.field(static=True)


def _shape(x) -> tuple[int, ...]:
    return tuple(getattr(x, "shape", np.shape(x)))


def _layout(
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
    method,
    gradient="after_warmup",
    n_history=_N_HISTORY,
    args=None,
    key=None,
    verb="lyapunov_spectrum",
    hold_every=None,
    fixed=None,
):
    """Validate a run in Python: `(layout, counts, dynamic)`.

    `counts` holds the run lengths as Python ints (`transient`, `warmup`,
    `full`, `rem`). `dynamic` says whether they are passed to the compiled
    program as traced integers (eager calls, also under `vmap` or forward-mode
    differentiation) or baked in (under an outer `jit` or reverse-mode
    differentiation, which a `while` loop would not support); `fixed=True`
    forces the latter.
    """
    if not isinstance(system, AbstractSystem):
        raise ValueError(
            f"`system` must be a dynjax flow, map or driven map, got {type(system)}."
        )
    is_flow = isinstance(system, AbstractFlow)
    is_driven = isinstance(system, AbstractDrivenMap)
    shape = _shape(x0)
    if len(shape) != 1:
        check_state(x0, system.d)  # raises the standard message
    d = shape[0]
    if system.d is not None and d != system.d:
        check_state(x0, system.d)
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
    if gradient not in _GRADIENTS:
        raise ValueError(
            f"`gradient` must be one of {sorted(_GRADIENTS)}, got {gradient!r}."
        )
    if hold_every is None:
        hold_every = _GRADIENTS[gradient]
    n_history = _check_int("n_history", n_history, 1)
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
            if not (np.isfinite(t_total) and t_total > 0):
                raise ValueError(f"`t_total` must be a positive time, got {t_total}.")
            n_steps = max(1, round(float(t_total) / float(dt)))
        interval = 10 if interval is None else interval
        dt_value = float(dt) if is_concrete(dt) else None
        if transient is None:
            transient = 10.0
        if not (np.isfinite(transient) and transient >= 0):
            raise ValueError(
                f"`transient` (a time, for flows) must be >= 0, got {transient}."
            )
        if transient and dt_value is None:
            raise ValueError("With a traced `dt`, pass `transient=0`.")
        n_transient = round(float(transient) / dt_value) if transient else 0
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
        dt_value = 1.0
        interval = 1 if interval is None else interval
        if is_driven:
            transient = 0 if transient is None else transient
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
        _, n_inputs = check_inputs(inputs)
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
    kinds = tracer_kinds((system, x0, args, dt, state, key, inputs))
    differentiated = bool(kinds & {"forward", "reverse"})
    if "reverse" in kinds:
        # `jax.grad` cannot go through a `lax.while_loop` in the system: say so
        # here, naming the loop, rather than in JAX's transpose machinery.
        x_spec = jax.ShapeDtypeStruct((d,), jnp.result_type(x0))
        u_spec = None
        if is_driven:
            u_spec = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype),
                check_inputs(inputs)[0],
            )

        def fn(xu):  # (the input traced too, so that it is a value, not a spec)
            x, u = xu
            return evolution_spec(system, x, u=u, args=args)[1](x)

        check_reverse_differentiable(fn, (x_spec, u_spec), f"dynjax.{verb}")
    if method is None:
        # Measured on CPU (benchmarks/lyapunov.py, 1e5 steps): Lorenz with QR
        # every 10 steps, 3.4x to 4x faster with the Jacobian method (k = 3);
        # earlier measurements (before the batch-last propagators): Henon with
        # QR every step 1.4x slower (the sequential QR chain is then the whole
        # cost), Lorenz96 with d = 8 1.8x slower (d x d propagators).
        # Under `vmap` the batch already vectorizes the matrix-free steps; the
        # Jacobian method is 1.1x faster there (256 vmapped Lorenz spectra) but
        # holds a chunk of propagators per batch member, so memory would grow
        # with the batch: matrix-free stays the default. Under differentiation
        # the parallel-in-time ordering does not pay: its vectorized
        # propagators are differentiated as a whole (an MLP field's gradient
        # compiled for minutes and took gigabytes), so matrix-free runs.
        small = d <= _JACOBIAN_MAX_D and interval >= _JACOBIAN_MIN_INTERVAL
        plain = "batch" not in kinds and not differentiated
        method = "jacobian" if small and plain else "matrix-free"
    if method not in ("jacobian", "matrix-free"):
        raise ValueError(
            f"`method` must be 'jacobian', 'matrix-free' or None, got {method!r}."
        )
    dynamic = not (kinds & {"reverse", "trace"}) and not fixed
    layout = _Layout(
        verb=verb,
        k=k,
        interval=interval,
        log_base=log_base,
        method=method,
        merge=merge_default(),
        n_history=n_history,
        hold_every=hold_every if differentiated else -1,
        dt_value=dt_value,
        is_flow=is_flow,
        is_driven=is_driven,
    )
    counts = dict(
        transient=n_transient,
        warmup=n_warmup,
        full=n_steps // interval,
        rem=n_steps % interval,
    )
    return layout, counts, dynamic


def _conform(system, x0, args, inputs, layout):
    """Outside `jit`: the entry check of every verb (`conform`), so that the
    compiled program holds no run-time check of the inputs."""
    if layout.is_driven:
        inputs, _ = check_inputs(inputs)
    u0 = input_at(inputs, 0) if layout.is_driven else None
    system, x0, args = conform(system, x0, verb=layout.verb, args=args, u=u0)
    return system, x0, args, inputs


def _throw(result):
    """`throw=True`: raise on failure, outside the compiled program."""
    exponents = raise_if_failed(result.result, result.exponents)
    if exponents is result.exponents:
        return result
    return eqx.tree_at(lambda r: r.exponents, result, exponents)


def _prepare(system, x0, args, inputs, state, key, dt, solver, layout):
    """Inside `jit`: build the tangent system, the step size and the initial
    state (the inputs were conformed by `_conform`)."""
    u0 = input_at(inputs, 0) if layout.is_driven else None
    # Forward-mode tangents unless the system cannot be forward-differentiated
    # (a `jax.custom_vjp` inside): then reverse mode; neither raises one error.
    _, fn = evolution_spec(system, x0, u=u0, args=args)
    mode = differentiation_mode(fn, x0, what=f"dynjax.{layout.verb}")
    tangent = tangent_system(system, solver, layout.merge, mode)
    if layout.is_flow:
        time0 = jnp.zeros((), x0.dtype)
        if layout.dt_value is not None:
            dt = layout.dt_value
        else:
            dt = jnp.asarray(dt, dtype=x0.dtype)
            dt = eqx.error_if(dt, ~(dt > 0), "`dt` must be a positive step size.")
    else:
        time0 = jnp.zeros((), jnp.int32)
        dt = 1
    if state is None:
        if key is None:
            key = initial_frame(None, x0.shape[0], layout.k, x0.dtype)
        state = _fresh_state(x0, layout.k, key, time0)
    else:
        state = eqx.tree_at(
            lambda s: (s.x, s.Q, s.log_sums, s.elapsed),
            state,
            (
                check_state(state.x, x0.shape[0], "state.x").astype(x0.dtype),
                state.Q.astype(x0.dtype),
                state.log_sums.astype(x0.dtype),
                state.elapsed.astype(x0.dtype),
            ),
        )
    return tangent, state, dt, args, inputs


def _finish(state, row_sums, row_steps_, elapsed0, dt, code, stats, layout):
    """The result from the running log-sums at the history rows.

    In NumPy when the values are concrete (an eager call: nothing to compile),
    otherwise in JAX.
    """
    concrete = not any(
        isinstance(leaf, jax.core.Tracer)
        for leaf in jax.tree.leaves((row_sums, elapsed0, dt))
    )
    xp = np if concrete else jnp
    if concrete:
        elapsed0, dt = float(elapsed0), float(dt)
    row_sums = xp.asarray(row_sums)
    dtype = row_sums.dtype
    times = (elapsed0 + dt * xp.asarray(row_steps_)).astype(dtype)
    history = row_sums / times[:, None] / layout.log_base
    if concrete:
        order = np.argsort(-history[-1], stable=True)
    else:
        order = _descending_order(history[-1])
    history = history[:, order]
    exponents = history[-1]
    if concrete:  # (NumPy to JAX once, no eager JAX indexing)
        history, times, exponents = jax.device_put((history, times, exponents))
    return LyapunovResult(
        exponents=exponents,
        history=history,
        times=times,
        state=state,
        result=code,
        stats=stats,
    )


def _descending_order(v):
    """`argsort(-v)`, stable, by ranks (`k^2` comparisons): XLA compiles its sort
    on CPU into a large kernel, this into a few small ones."""
    k = v.shape[0]
    i = jnp.arange(k)
    before = (v[None, :] > v[:, None]) | (
        (v[None, :] == v[:, None]) & (i[None, :] < i[:, None])
    )
    rank = jnp.sum(before, axis=1)
    return jnp.sum(jnp.where(rank[None, :] == i[:, None], i[None, :], 0), axis=1)


def _stats(counts, interval, include_prelude=True):
    return {
        "num_steps": counts["full"] * interval + counts["rem"],
        "num_qr": counts["full"] + (counts["rem"] > 0),
        "num_transient_steps": counts["transient"] if include_prelude else 0,
        "num_warmup_steps": counts["warmup"] * interval if include_prelude else 0,
    }


def _as_counts(counts):
    """Integer counts as one int32 array (one transfer to the device, cached);
    unpack them inside `jit` with `_unpack`."""
    names = sorted(counts)
    return _counts_on_device(tuple(int(counts[n]) for n in names))


@functools.lru_cache(maxsize=256)
def _counts_on_device(values: tuple):
    return jax.device_put(np.asarray(values, np.int32))


def _unpack(values, names):
    """`_as_counts`'s array as a dict of traced scalars (inside `jit`)."""
    return {name: values[i] for i, name in enumerate(sorted(names))}


_COUNTS = ("transient", "warmup", "full", "rem")


def _traced_run(system, x0, args, inputs, state, key, dt, solver, counts, ends,
                offsets, layout, hold_first):  # fmt: skip
    """`run_dynamic` from the inputs of a compiled entry (inside `jit`):
    `(state0, dt, state1, row_sums, code)`."""
    tangent, state0, dt, args, inputs = _prepare(
        system, x0, args, inputs, state, key, dt, solver, layout
    )
    offsets = _unpack(offsets, ("acc", "input"))
    state1, row_sums, code = run_dynamic(
        tangent,
        state0,
        dt,
        inputs,
        args,
        _unpack(counts, _COUNTS),
        interval=layout.interval,
        method=layout.method,
        ends=ends,
        acc_offset=offsets["acc"],
        hold_first=hold_first,
        input_offset=offsets["input"],
    )
    return state0, jnp.asarray(dt, state0.elapsed.dtype), state1, row_sums, code


@eqx.filter_jit
def _spectrum_dynamic(
    system, x0, args, inputs, state, key, dt, solver, counts, ends, steps, layout
):
    """An eager call's compiled program, run lengths traced (`run_dynamic`)."""
    state0, dt, state1, row_sums, code = _traced_run(
        system, x0, args, inputs, state, key, dt, solver, counts, ends,
        jnp.zeros((2,), jnp.int32), layout, layout.hold_every == 0,
    )  # fmt: skip
    return _finish(state1, row_sums, steps, state0.elapsed, dt, code, {}, layout)


def run_fixed_layout(tangent, state, dt, inputs, args, counts, layout, **kwargs):
    """`run_fixed` with a layout's lengths and options (keywords override)."""
    options = dict(
        n_transient=counts["transient"],
        n_warmup=counts["warmup"],
        interval=layout.interval,
        n_blocks=counts["full"],
        remainder=counts["rem"],
        method=layout.method,
        hold_every=layout.hold_every,
    )
    return run_fixed(tangent, state, dt, inputs, args, **(options | kwargs))


def _row_schedule(counts, layout):
    """The history rows' ends (on the device) and accumulated steps (NumPy)."""
    return _row_schedule_cached(
        counts["full"], counts["rem"], layout.interval, layout.n_history
    )


@functools.lru_cache(maxsize=64)
def _row_schedule_cached(n_full: int, rem: int, interval: int, n_rows: int):
    ends = row_ends(int(n_full + (rem > 0)), n_rows)
    steps = row_steps(ends, n_full, rem, interval)
    return jax.device_put(ends.astype(np.int32)), steps


@functools.lru_cache(maxsize=64)
def _row_steps_on_device(n_full: int, rem: int, interval: int, n_rows: int):
    return jax.device_put(_row_schedule_cached(n_full, rem, interval, n_rows)[1])


@eqx.filter_jit
def _spectrum_fixed(system, x0, args, inputs, state, key, dt, solver, counts, layout):
    tangent, state0, dt, args, inputs = _prepare(
        system, x0, args, inputs, state, key, dt, solver, layout
    )
    state1, cum, steps, code, _ = run_fixed_layout(
        tangent, state0, dt, inputs, args, counts, layout
    )
    n_acc = counts["full"] + (counts["rem"] > 0)
    rows = row_ends(int(n_acc), layout.n_history) - 1
    stats = _stats(counts, layout.interval)
    return _finish(
        state1, cum[rows], steps[rows], state0.elapsed, dt, code, stats, layout
    )


@eqx.filter_jit
def _piece(
    system, x0, args, inputs, state, key, dt, solver, counts, ends, offsets, layout
):
    """One compiled chunk of a progress-bar run (`run_dynamic`)."""
    _, dt, state1, row_sums, code = _traced_run(
        system, x0, args, inputs, state, key, dt, solver, counts, ends, offsets,
        layout, False,
    )  # fmt: skip
    return dt, state1, row_sums, code


def _run_chunked(system, x0, args, inputs, state, key, dt, solver, layout, counts,
                 throw, progress) -> LyapunovResult:  # fmt: skip
    """`progress=`: the run as compiled chunks (`_piece`, compiled once), a tqdm
    bar between them. The history rows are those of one uninterrupted run."""
    n_chunks = 100 if progress is True else _check_int("progress", progress, 1)
    interval = layout.interval
    n_full, rem = counts["full"], counts["rem"]
    ends_arg, row_steps_ = _row_schedule(counts, layout)
    per = max(1, n_full // n_chunks)
    total = n_full * interval + rem
    zero = dict(transient=0, warmup=0, full=0, rem=0)
    row_sums = np.full((layout.n_history, layout.k), np.nan)
    code = RESULTS.successful
    pos = 0  # input steps consumed
    acc = 0  # accumulated blocks done
    steps_done = 0
    elapsed0 = dt_used = None

    def call(piece_counts, state):
        return _piece(
            system, x0, args, inputs, state, key, dt, solver,
            _as_counts(piece_counts), ends_arg,
            _as_counts(dict(acc=acc, input=pos)), layout,
        )  # fmt: skip

    def partial_result():
        done = dict(zero, transient=counts["transient"], warmup=counts["warmup"])
        done["full"], done["rem"] = divmod(steps_done, interval)
        stats = _stats(done, interval)
        filled = ~np.isnan(row_sums[:, 0])
        if not filled.any():
            k = layout.k
            return LyapunovResult(
                exponents=jnp.full(k, jnp.nan),
                history=jnp.full((layout.n_history, k), jnp.nan),
                times=jnp.full(layout.n_history, jnp.nan),
                state=state,
                result=code,
                stats=stats,
            )
        # Rows not reached yet repeat the last completed one.
        last = np.maximum.accumulate(np.where(filled, np.arange(len(filled)), 0))
        return _finish(
            state, row_sums[last], row_steps_[last], elapsed0, dt_used, code, stats,
            layout,
        )  # fmt: skip

    bar = progress_bar(total=total, desc="Lyapunov", unit="step")
    try:
        if counts["transient"] or counts["warmup"] or state is None:
            bar.set_postfix_str("transient")
            prelude = dict(zero, transient=counts["transient"], warmup=counts["warmup"])
            _, state, _, c = call(prelude, state)
            code = RESULTS.where(code == RESULTS.successful, c, code)
            pos += counts["transient"] + counts["warmup"] * interval
            bar.set_postfix_str("")
        elapsed0 = float(state.elapsed)
        left = n_full
        while True:
            n_b = min(per, left)
            r = rem if n_b == left else 0
            dt_used, state, sums, c = call(dict(zero, full=n_b, rem=r), state)
            code = RESULTS.where(code == RESULTS.successful, c, code)
            sums = np.asarray(sums)
            row_sums = np.where(np.isnan(sums), row_sums, sums)
            left -= n_b
            acc += n_b + (r > 0)
            pos += n_b * interval + r
            steps_done += n_b * interval + r
            bar.update(n_b * interval + r)
            if left == 0:
                break
    except KeyboardInterrupt:
        raise LyapunovInterrupted(partial_result()) from None
    finally:
        bar.close()
    out = partial_result()
    return _throw(out) if throw else out


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
    gradient: Literal["after_warmup", "full"] = "after_warmup",
    n_history: int = _N_HISTORY,
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
    of `system`, or `args`) works through the scan and the QR. With the default
    `gradient="after_warmup"` the state and tangent frame at the start of the
    accumulation are held fixed (`lax.stop_gradient`): the result is the
    derivative of the accumulated exponents from that start, not through the
    transient and the warm-up, which for a chaotic system would grow like
    `exp(lambda_1 t)`. For a non-chaotic system (a stable fixed point or cycle)
    it converges to the derivative of the exponent like `1/T` (the start's
    sensitivity relaxes along the accumulation); `gradient="full"`
    differentiates through everything and gives it exactly. At a focus the two
    leading exponents are a degenerate pair (equal for the flow, and the
    finite-time estimates oscillate between them): only their sum is a smooth
    function of the parameters. For a chaotic system the derivative of a
    long-time average does not commute with the limit: gradients through long
    runs grow like `exp(lambda_1 T)` and are useless. Use gradients of
    finite-time exponents over short windows instead
    (`dynjax.finite_time_lyapunov`, which holds each window's start fixed),
    averaged over windows, as in gradient flossing (Engelken 2023). Under
    differentiation the default method is `"matrix-free"`. A system with a
    `lax.while_loop` (or a `fori_loop` with traced bounds) cannot be
    differentiated in reverse mode: `jax.grad` raises a `ValueError` naming the
    loop, and forward mode (`jax.jacfwd`) works. A system that calls a
    `jax.custom_vjp` function is linearized in reverse mode automatically.

    **Compilation.** An eager call passes the run lengths (`n_steps`,
    `t_total`, `transient`, `tangent_warmup`) to the compiled program as
    run-time values: a new length reuses the compiled program. Under an outer
    `jit` or `grad` they are compile-time constants of the outer program.
    The compiled program holds no host callbacks, so JAX's persistent
    compilation cache (`jax.config.update("jax_compilation_cache_dir", ...)`)
    keeps it across sessions.

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
    - `inputs`: the input sequence of a driven map: any pytree of arrays whose
        leading axis is time (as in `lax.scan`): `(T, m)` vectors, `(T,)` scalars
        or integer token ids, `(T, p, q)` matrices, a dict of such arrays; with
        `T = transient + tangent_warmup * interval + n_steps`.
    - `args`: run-time arguments passed to the system.
    - `base`: `"e"` for nats (default) or a number, e.g. `2` for bits (the
        convention of the RNN literature).
    - `solver`: flows only; `None` for the built-in fixed-step RK4, or a diffrax
        solver (e.g. `diffrax.Tsit5()`) stepped with the fixed step `dt`.
    - `state`: a `LyapunovState` from a previous result, to resume (the transient
        and warm-up are then skipped; the first resumed call compiles once more,
        for the state's structure).
    - `key`: a PRNG key for the random initial tangent block (default `key(0)`).
    - `method`: how tangents are propagated; both are the same computation in
        a different order, so they agree to rounding (for a chaotic system the
        rounding differences grow along the orbit, and long runs then agree
        only statistically, to the accuracy of the estimate).
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
            memory would grow with the batch) or differentiation (where the
            vectorized propagators do not pay), `"matrix-free"`.
    - `gradient`: `"after_warmup"` (default) or `"full"`; see **Gradients**.
    - `n_history`: the number of rows of `history` (default 1000).
    - `progress`: `True` or a number of chunks for a tqdm progress bar.
    - `throw`: if `True`, a failure raises an error; otherwise it is reported in
        `result.result` (and the exponents are then not meaningful).

    **Returns:**

    A `dynjax.LyapunovResult`. A map's direction that collapses within one step
    (a singular Jacobian: a dead ReLU unit, a constant coordinate; or a
    contraction below about `8 eps` relative to the direction's own length,
    the most that float64 resolves per step) has exponent `-inf`.

    **Raises:**

    `ValueError` for inconsistent options (at call time); with `throw=True`,
    `equinox.EquinoxRuntimeError` with the failure's message: a non-finite
    state (`nonfinite_state`, `map_escaped`), a tangent overflow
    (`nonfinite_tangent`, `nonfinite_tangent_map`) or a direction swamped by
    rounding (`degenerate_tangent` for flows, where it means the interval is too
    long; `degenerate_tangent_map` for maps re-orthonormalized less often than
    every step).

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
    layout, counts, dynamic = _layout(
        system,
        x0,
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
        method=method,
        gradient=gradient,
        n_history=n_history,
        args=args,
        key=key,
    )
    if not is_concrete(dt) and dt is not None:
        dt_arg = dt
    else:
        dt_arg = None
    system, x0, args, inputs = _conform(system, x0, args, inputs, layout)
    if state is None:
        key = initial_frame(key, x0.shape[0], layout.k, x0.dtype)
    if progress:
        if not dynamic or tracer_kinds((system, x0, args, state)):
            raise ValueError(
                "`progress` runs compiled chunks from Python and cannot be used "
                "under `jit`/`vmap`/`grad`; pass `progress=False`."
            )
        return _run_chunked(
            system, x0, args, inputs, state, key, dt_arg, solver, layout, counts,
            throw, progress,
        )  # fmt: skip
    if dynamic:
        ends, _ = _row_schedule(counts, layout)
        key_ = (counts["full"], counts["rem"], layout.interval, layout.n_history)
        result = _spectrum_dynamic(
            system, x0, args, inputs, state, key, dt_arg, solver,
            _as_counts(counts), ends, _row_steps_on_device(*key_), layout,
        )  # fmt: skip
        result = LyapunovResult(
            exponents=result.exponents,
            history=result.history,
            times=result.times,
            state=result.state,
            result=result.result,
            stats=_stats(counts, layout.interval),
        )
    else:
        result = _spectrum_fixed(
            system, x0, args, inputs, state, key, dt_arg, solver, counts, layout
        )
    return _throw(result) if throw else result


def max_lyapunov(system: AbstractSystem, x0: StateLike, **kwargs) -> LyapunovResult:
    """The largest Lyapunov exponent: `lyapunov_spectrum` with `k=1`.

    Propagates a single tangent vector, so it costs about `1/d` of the full
    spectrum's tangent work. Takes the keyword arguments of
    `dynjax.lyapunov_spectrum` (except `k`); `result.exponents[0]` is the exponent.
    """
    if "k" in kwargs:
        raise ValueError("`max_lyapunov` always uses k=1; remove `k=`.")
    return lyapunov_spectrum(system, x0, k=1, **kwargs)
