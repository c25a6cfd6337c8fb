"""Lyapunov spectra of recurrent networks: dynjax against PyTorch loops.

Prints one table per cell: the time of the k leading Lyapunov exponents of a batch
of input sequences, compile time beside run time, the accuracy against a float64
reference, the agreement with dynjax, and the ratio (torch loop time / this row's
time) against each torch loop measured in the same run. Times are medians of
several interleaved rounds (every row timed once per round, so other load on the
machine hits every row alike) after a warm-up, with `block_until_ready`; JAX's
compile time is the first call minus the median; "cpu s" is the process CPU time.

    python benchmarks/rnn_lyapunov.py                 # the spec below, ~6 min
    python benchmarks/rnn_lyapunov.py --intervals 2,4,8 --householder  # ~10 min
    python benchmarks/rnn_lyapunov.py --quick         # small sizes, ~1.5 min
    python benchmarks/rnn_lyapunov.py --cells vanilla --steps 200 --skip autograd

Problem (the defaults): `dynjax.rnn.VanillaRNN` (tanh, `init="normal"`, recurrent
gain 1.5) and `dynjax.rnn.LSTM` (`init="uniform"`, PyTorch's initialization; the
state is `concat(h, c)`, so `d = 2N`) with `N = 256` hidden units, input size 32,
a batch of 16 sequences of `T = 1000` Gaussian input vectors (`N(0, 1)`), the
`k = 64` leading exponents, float32, every run from `h = 0` and the same random
orthonormal tangent frame (dynjax's, `key(0)`), QR every step.

Rows (the same weights and inputs in all: the dynjax cell's arrays are copied
into torch):

1. dynjax: `eqx.filter_jit(jax.vmap(lambda x, h0: dynjax.lyapunov_spectrum(cell,
   h0, k=64, inputs=x).exponents))` (the cell is an argument of the jitted
   function). With `--intervals 2,5`, also rows with `interval=n`
   (re-orthonormalization every n steps: fewer QRs, the same exponents up to
   rounding while the growth within an interval spreads moderately). With
   `--householder`, a row with dynjax's former QR for these blocks (LAPACK's
   Householder QR, `jnp.linalg.qr`) patched in, for comparison.
2. torch, hand-derived Jacobians, as users write it today (the loops of
   LyapunovAutoEncode / lyapunov-hyperopt, batched): per step the batch of
   Jacobians (vanilla: `diag(1 - h'^2) W`; LSTM: the block Jacobian of `(h, c)`
   with PyTorch's gate order `(i, f, g, o)`), `torch.bmm` with the tangent block,
   `torch.linalg.qr`, and the sum of `log |diag R|` (sorted at the end, as
   dynjax returns the exponents).
3. torch, the same loop with autograd Jacobians
   (`torch.func.vmap(torch.func.jacrev(step))`).

Accuracy: "error" is the largest deviation over the batch and the k exponents
from the hand-derived torch loop run in float64 (same weights and inputs, cast);
"vs dynjax" the largest deviation from dynjax's exponents (the agreement check:
the run reports DISAGREE above `--tol`).

Torch runs `--threads` threads (default: the number of cores). `OMP_WAIT_POLICY`
is left as set in the environment (unset: libgomp's default); on the 2-core
machine of `benchmarks/README.md` `PASSIVE` made torch's QR about 3x slower.
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np

import dynjax  # noqa: E402

# The random orthonormal frame every dynjax run starts from (key(0)); the torch
# loops start from the same one, so all rows compute the same numbers.
from dynjax._lyapunov._spectrum import initial_frame  # noqa: E402


try:
    import torch
except Exception as e:  # pragma: no cover
    torch = None
    TORCH_MISSING = repr(e)[:80]
else:
    TORCH_MISSING = None


ROWS = []
HAND = "hand-derived Jacobians, bmm + QR every step"
AUTOGRAD = "autograd Jacobians (vmap(jacrev)), bmm + QR"


def row(case, lib, config, *, fn=None, first=None, **extra):
    """One table row; `fn` (a call returning the exponents) is timed by `settle`."""
    ROWS.append(
        dict(case=case, lib=lib, config=config, fn=fn, compile_s=first, **extra)
    )


def warm(fn):
    """The first call (for JAX: compilation and one run): its time and output."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def settle(repeats):
    """Time every pending row's function, interleaved round by round; the median
    over rounds. The compile time is the first call minus the median."""
    pending = [rw for rw in ROWS if rw["fn"] is not None]
    times = {id(rw): [] for rw in pending}
    cpu = {id(rw): [] for rw in pending}
    for _ in range(repeats):
        for rw in pending:
            t0, c0 = time.perf_counter(), time.process_time()
            rw["fn"]()
            times[id(rw)].append(time.perf_counter() - t0)
            cpu[id(rw)].append(time.process_time() - c0)
    for rw in pending:
        rw["run_s"] = statistics.median(times[id(rw)])
        rw["cpu_s"] = statistics.median(cpu[id(rw)])
        rw["spread"] = (min(times[id(rw)]), max(times[id(rw)]))
        if rw["compile_s"] is not None:
            rw["compile_s"] = max(rw["compile_s"] - rw["run_s"], 0.0)
        rw["fn"] = None


# --- problem ------------------------------------------------------------------------


def make_cell(name, args):
    key = jax.random.key(args.seed)
    if name == "vanilla":
        cell = dynjax.rnn.VanillaRNN(
            args.hidden, args.input_size, gain=args.gain, key=key
        )
    else:
        cell = dynjax.rnn.LSTM(args.hidden, args.input_size, init="uniform", key=key)

    def f32(a):
        return a.astype(jnp.float32) if eqx.is_inexact_array(a) else a

    return jax.tree.map(f32, cell)


def problem(cell, args):
    """Inputs `(batch, T, m)`, initial states `(batch, d)` (zeros) and the initial
    tangent frame `(d, k)`, float32 NumPy."""
    rng = np.random.default_rng(args.seed)
    xs = rng.standard_normal((args.batch, args.steps, args.input_size))
    h0 = np.zeros((args.batch, cell.d))
    Q0 = np.asarray(initial_frame(None, cell.d, args.k, jnp.float32))
    return xs.astype(np.float32), h0.astype(np.float32), Q0


# --- dynjax -------------------------------------------------------------------------


def dynjax_runner(cell, xs, h0, k, interval=None):
    """The jitted, vmapped spectrum, compiled ahead of time (so that a later
    patch of the engine cannot retrace it); returns the call and the time to
    trace and compile."""

    @eqx.filter_jit
    def spectra(cell, xs, h0):
        def one(x, h):
            return dynjax.lyapunov_spectrum(
                cell, h, k=k, inputs=x, interval=interval
            ).exponents

        return jax.vmap(one)(xs, h0)

    xs, h0 = jnp.asarray(xs), jnp.asarray(h0)
    t0 = time.perf_counter()
    compiled = spectra.lower(cell, xs, h0).compile()
    compile_s = time.perf_counter() - t0

    def run():
        return np.asarray(jax.block_until_ready(compiled(cell, xs, h0)))

    return run, compile_s


def _patch_householder():
    """Route dynjax's re-orthonormalization to `householder` (its QR for these
    blocks before CholeskyQR2); returns the undo."""
    from dynjax._lyapunov import _drive, _qr

    original = _drive.qr_positive

    def qr(W, rtol=_qr.COLLAPSE_RTOL, complete=True):
        return _qr.householder(W, rtol)

    def undo():
        _drive.qr_positive = original
        jax.clear_caches()

    # (the engine's inner jitted functions cache their traces: retrace)
    jax.clear_caches()
    _drive.qr_positive = qr
    return undo


# --- torch ----------------------------------------------------------------------------


def torch_weights(cell, dtype):
    t = lambda a: torch.from_numpy(np.array(a)).to(dtype)  # noqa: E731
    if isinstance(cell, dynjax.rnn.VanillaRNN):
        return dict(W=t(cell.W), U=t(cell.U), b=t(cell.b))
    return dict(W_ih=t(cell.weight_ih), W_hh=t(cell.weight_hh), b=t(cell.bias))


def vanilla_step(p, h, u):
    """`h' = tanh(W h + U u + b)` on a batch `(B, N)` or one state `(N,)`."""
    return torch.tanh(h @ p["W"].T + u @ p["U"].T + p["b"])


def vanilla_jacobian(p, h, u):
    """`(h', J)` with the hand-derived `J = diag(1 - h'^2) W`, batched."""
    h_next = vanilla_step(p, h, u)
    return h_next, (1 - h_next * h_next)[:, :, None] * p["W"]


def lstm_step(p, x, u):
    """The LSTM on `x = concat(h, c)` (batched or not), PyTorch's gate order."""
    N = x.shape[-1] // 2
    h, c = x[..., :N], x[..., N:]
    i, f, g, o = (u @ p["W_ih"].T + h @ p["W_hh"].T + p["b"]).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return torch.cat([h, c], dim=-1)


def lstm_jacobian(p, x, u):
    """`(x', J)` with the hand-derived block Jacobian of `(h', c')` w.r.t. `(h, c)`
    (as in LyapunovAutoEncode / lyapunov-hyperopt):

        dc'/dh = diag(c s_f (1 - s_f)) W_hf + diag(g s_i (1 - s_i)) W_hi
                 + diag(s_i (1 - g^2)) W_hg,          dc'/dc = diag(s_f),
        dh'/dh = diag(tanh(c') s_o (1 - s_o)) W_ho + diag(s_o (1 - tanh^2 c')) dc'/dh,
        dh'/dc = diag(s_o (1 - tanh^2 c') s_f),

    with `s_* = sigmoid` of the gate pre-activations, `g = tanh` of its own."""
    N = x.shape[-1] // 2
    h, c = x[:, :N], x[:, N:]
    zi, zf, zg, zo = (u @ p["W_ih"].T + h @ p["W_hh"].T + p["b"]).chunk(4, dim=-1)
    Wi, Wf, Wg, Wo = p["W_hh"].chunk(4, dim=0)
    si, sf, so, g = (
        torch.sigmoid(zi),
        torch.sigmoid(zf),
        torch.sigmoid(zo),
        torch.tanh(zg),
    )
    c_new = sf * c + si * g
    tc = torch.tanh(c_new)
    h_new = so * tc
    dc_dh = (
        (c * sf * (1 - sf))[:, :, None] * Wf
        + (g * si * (1 - si))[:, :, None] * Wi
        + (si * (1 - g * g))[:, :, None] * Wg
    )
    dh_dc_new = so * (1 - tc * tc)
    dh_dh = (tc * so * (1 - so))[:, :, None] * Wo + dh_dc_new[:, :, None] * dc_dh
    J = torch.cat(
        [
            torch.cat([dh_dh, torch.diag_embed(dh_dc_new * sf)], dim=2),
            torch.cat([dc_dh, torch.diag_embed(sf)], dim=2),
        ],
        dim=1,
    )
    return torch.cat([h_new, c_new], dim=-1), J


def autograd_jacobian(step):
    """`(x', J)` with `J` from `torch.func.jacrev`, vmapped over the batch."""
    jac = torch.func.vmap(torch.func.jacrev(step, argnums=1), in_dims=(None, 0, 0))

    def f(p, x, u):
        return step(p, x, u), jac(p, x, u)

    return f


def torch_runner(cell, xs, h0, Q0, jacobian, dtype):
    p = torch_weights(cell, dtype)
    xs_t = torch.from_numpy(xs).to(dtype)
    h0_t = torch.from_numpy(h0).to(dtype)
    Q0_t = torch.from_numpy(Q0).to(dtype)

    def run(steps=None):
        T = xs.shape[1] if steps is None else steps
        with torch.no_grad():
            x = h0_t
            Q = Q0_t.expand(xs.shape[0], -1, -1)
            sums = torch.zeros(xs.shape[0], Q0.shape[1], dtype=dtype)
            for t in range(T):
                x, J = jacobian(p, x, xs_t[:, t])
                Q, R = torch.linalg.qr(torch.bmm(J, Q))
                sums += torch.log(torch.abs(torch.diagonal(R, dim1=1, dim2=2)))
        # (descending, as dynjax returns them)
        return -np.sort(-(sums / T).numpy(), axis=1)

    return run


# --- the case -------------------------------------------------------------------------


def cell_case(name, args):
    cell = make_cell(name, args)
    xs, h0, Q0 = problem(cell, args)
    case = (
        (f"VanillaRNN (tanh, gain {args.gain:g})" if name == "vanilla" else "LSTM")
        + f", N={args.hidden}, d={cell.d}, k={args.k}, batch {args.batch}, "
        f"T={args.steps}, input size {args.input_size}, float32"
    )
    ref = None
    if torch is not None and "reference" not in args.skip:
        jac = vanilla_jacobian if name == "vanilla" else lstm_jacobian
        ref = torch_runner(cell, xs, h0, Q0, jac, torch.float64)()
    outs = {}

    def add(lib, config, fn, first, out, key=None):
        error = None if ref is None else float(np.max(np.abs(out - ref)))
        row(case, lib, config, fn=fn, first=first, error=error, out=out)
        if key is not None:
            outs[key] = out

    def dynjax_row(lib, config, key=None, **kwargs):
        run, compile_s = dynjax_runner(cell, xs, h0, args.k, **kwargs)
        first, out = warm(run)
        add(lib, config, run, compile_s + first, out, key)

    dynjax_row("dynjax", "vmap(lyapunov_spectrum), QR every step", "dynjax")
    for n in args.intervals:
        dynjax_row("dynjax", f"interval={n} (QR every {n} steps)", interval=n)
    if args.householder:
        undo = _patch_householder()
        try:
            dynjax_row("dynjax (before)", "QR by Householder (jnp.linalg.qr)")
        finally:
            undo()
    if torch is None:
        row(case, "torch", "missing", note=TORCH_MISSING)
        return
    step = vanilla_step if name == "vanilla" else lstm_step
    hand = vanilla_jacobian if name == "vanilla" else lstm_jacobian
    loops = [("hand", HAND, hand), ("autograd", AUTOGRAD, autograd_jacobian(step))]
    for key, config, jacobian in loops:
        if key in args.skip:
            continue
        run = torch_runner(cell, xs, h0, Q0, jacobian, torch.float32)
        run(steps=20)  # warm-up (torch compiles nothing)
        out = run()
        add("torch", config, run, None, out, key)
    for rw in ROWS:
        if rw["case"] == case and "dynjax" in outs:
            rw["vs_dynjax"] = float(np.max(np.abs(rw["out"] - outs["dynjax"])))


# --- output ---------------------------------------------------------------------------


def print_table(tol):
    current = None
    disagree = []
    for rw in ROWS:
        if rw["case"] != current:
            current = rw["case"]
            print()
            print(current)
            header = (
                f"{'library':<17}{'configuration':<46}{'compile s':>10}{'run s':>9}"
                f"{'cpu s':>9}{'hand/this':>10}{'autograd/this':>14}{'error':>10}"
                f"{'vs dynjax':>11}"
            )
            print(header)
            print("-" * len(header))
        if rw.get("run_s") is None:
            print(f"{rw['lib']:<17}{rw['config']:<46}  {rw.get('note', '')}")
            continue

        def fmt(v, f):
            width = f.split(".")[0]
            return format("-", ">" + width) if v is None else format(v, f)

        def ratio(config):
            peer = [
                r.get("run_s")
                for r in ROWS
                if r["case"] == current
                and r["lib"] == "torch"
                and r["config"] == config
            ]
            return peer[0] / rw["run_s"] if peer and peer[0] else None

        vs = rw.get("vs_dynjax")
        print(
            f"{rw['lib']:<17}{rw['config']:<46}{fmt(rw['compile_s'], '10.2f')}"
            f"{rw['run_s']:9.3f}{rw['cpu_s']:9.3f}{fmt(ratio(HAND), '10.2f')}"
            f"{fmt(ratio(AUTOGRAD), '14.2f')}{fmt(rw['error'], '10.1e')}"
            f"{fmt(vs, '11.1e')}"
        )
        if vs is not None and rw["lib"] == "torch" and not vs <= tol:
            disagree.append(f"{current}: {rw['config']} differs by {vs:.2e}")
    print()
    for line in disagree:
        print(f"DISAGREE (tolerance {tol:g}): {line}")
    if not disagree:
        print(f"agreement: every torch loop within {tol:g} of dynjax's exponents")
    return not disagree


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--cells", default="vanilla,lstm")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--gain", type=float, default=1.5, help="VanillaRNN's gain g")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--intervals", default="", help="extra dynjax rows: e.g. 2,5")
    p.add_argument("--householder", action="store_true", help="+ former QR row")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--tol", type=float, default=1e-3, help="agreement tolerance")
    p.add_argument(
        "--skip", default="", help="comma-separated: hand,autograd,reference"
    )
    args = p.parse_args(argv)
    args.skip = set(filter(None, args.skip.split(",")))
    args.intervals = [int(n) for n in filter(None, args.intervals.split(","))]
    if args.quick:
        args.hidden, args.steps, args.k, args.batch, args.repeats = 64, 100, 40, 4, 2
    warnings.filterwarnings("ignore", message=".*float32.*")
    if torch is not None:
        torch.set_num_threads(args.threads)
    dev = jax.devices()[0]
    print(
        f"dynjax {dynjax.__version__}, jax {jax.__version__}, equinox "
        f"{eqx.__version__}, device {dev.device_kind} ({dev.platform}), "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}"
    )
    if torch is not None:
        print(
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
        )
    print(f"load average before: {os.getloadavg()}")
    for name in args.cells.split(","):
        if name not in ("vanilla", "lstm"):
            raise SystemExit(f"--cells takes vanilla and/or lstm, got {name!r}")
        cell_case(name, args)
        settle(args.repeats)
    ok = print_table(args.tol)
    print(f"load average after: {os.getloadavg()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
