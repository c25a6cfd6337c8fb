"""AeLLE populations: networks trained and spectra per second, dynjax against PyTorch.

Prints one table per cell type (GRU, and LSTM with `--cells gru,lstm`): networks
trained per second and Lyapunov spectra per second, compile time beside run time,
the throughput ratio (dynjax / torch) against the torch loop measured in the same
run, and the agreement checks below. Times are medians of several interleaved
rounds (every row timed once per round, so other load on the machine hits every
row alike) after a warm-up, with `block_until_ready`; JAX's compile time is the
first call minus the median; "cpu s" is the process CPU time of a round.

    python benchmarks/aelle.py                   # P = 64 networks, 300 steps (~10 min)
    python benchmarks/aelle.py --quick           # small sizes, a smoke test (~1 min)
    python benchmarks/aelle.py --networks 256    # a bigger population
    python benchmarks/aelle.py --cells gru,lstm     # LSTM populations too
    python benchmarks/aelle.py --profile         # where dynjax's time goes

Problem (the defaults): `dynjax.aelle.SequentialDigits(mode="row")` (scikit-learn's
8x8 digits row by row: T = 8 steps of m = 8 pixels, 10 classes, 1347 train and
450 test images), hidden size N = 64, float32. Network i has every recurrent
weight and bias drawn from `U(-p_i, p_i)` with `p_i ~ U[0.04, 0.4]` and an Adam
learning rate `lr_i` log-uniform in `[1e-3, 3e-2]` (the spread of
`dynjax.aelle.train_population`, Vogt et al. 2022), drawn by NumPy from `--seed`.

1. Training (networks per second). Each network: `--steps` (300) Adam steps on
   minibatches of `--batch` (64) training images (drawn without replacement within
   a minibatch), cross-entropy of a linear readout of the last step's hidden
   state, the gradient clipped to global norm 1, then its test accuracy and loss.
   - dynjax: `dynjax.aelle.train_stack(task, kind=..., hidden_size=64,
     init_scale=p, learning_rates=lr, n_steps=300, batch_size=64)`: the P
     networks (`--networks`, default 64) in one compiled program.
   - torch, as the LyapunovAutoEncode reference code trains (one network at a
     time, a Python loop over steps): `torch.nn.GRU` / `torch.nn.LSTM`
     (`batch_first=True`) and `torch.nn.Linear` on the last step,
     `torch.optim.Adam(lr=lr_i)`, `torch.nn.CrossEntropyLoss`,
     `torch.nn.utils.clip_grad_norm_(..., 1.0)`, batches by `torch.randperm`;
     `--torch-networks` networks (the first ones' `p_i, lr_i`) are timed and the
     time per network extrapolated.
2. Spectra (spectra per second): the full spectrum (`k = d`: 64 for the GRU, 128
   for the LSTM, whose state is `(h, c)`) of each trained dynjax network on 15
   input streams (`--sequences`) of 600 steps (held-out digits concatenated in
   time), 500 warm-up steps then 100 accumulated (`--warmup`, `--length`), QR
   every step, the mean over the streams: AeLLE's reference settings.
   - dynjax: `dynjax.aelle.stack_spectra(stack, inputs, warmup=500)` on the
     trained stack (tangents by `jax.jvp`, vmapped over networks and streams).
   - torch, as the reference code (`calc_LEs_an`) computes spectra: one network at
     a time, batched over the 15 streams, the hand-derived Jacobian (GRU:
     `dh'/dh = diag(1-z) dn/dh + diag(z) + diag(h-n) dz/dh`; LSTM: the block
     Jacobian of `(h', c')`), `torch.bmm` with the tangent block and
     `torch.linalg.qr` every step (also during the warm-up, which the
     reference does without QR: 500 unnormalized steps underflow in float32),
     `log |diag R|` summed over the last 100 steps; the trained dynjax networks'
     weights copied in, the same inputs and the same initial frame (dynjax's
     `key(0)` frame). `--torch-networks` networks timed, extrapolated.

Agreement checks (printed; "DISAGREE" and exit status 1 beyond `--tol`):
- forward: the first `--torch-networks` trained dynjax networks copied into
  `torch.nn.GRU`/`LSTM` + `Linear` give the same test loss (float32 rounding);
- training: torch networks trained with the same `p_i, lr_i` (other random
  draws and minibatches) reach accuracies in the same range as dynjax's;
- spectra: the torch loop's spectra of the same networks (float32) against
  dynjax's (`|difference| / max(1, |lambda|)` within `--tol`, over all exponents
  and over the `--lead` leading ones), and both against the torch loop in
  float64. dynjax returns `-inf` for a direction that contracts below 8 eps of
  its norm within one step (`dynjax.lyapunov_spectrum`'s collapse rule; in
  float32 a contraction by about 1e-6): such exponents are left out of the
  comparison and listed with the float64 loop's values there.

Each torch loop is one row per thread count in `--threads` (default: the
number of cores, and 1), with `OMP_WAIT_POLICY=PASSIVE` unless set otherwise (on
this shared 2-core machine libgomp's default spinning made torch's training loop
3x to 10x slower); the ratio is against the fastest torch row of the table.
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np


# (see the docstring's last paragraph; set before torch starts its thread pool)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import dynjax  # noqa: E402
import dynjax.aelle as aelle  # noqa: E402

# The random orthonormal frame every dynjax spectrum starts from (`key(0)`); the
# torch loop starts from the same one, so both compute the same numbers.
from dynjax._lyapunov._spectrum import initial_frame  # noqa: E402


try:
    import torch
except Exception as e:  # pragma: no cover
    torch = None
    TORCH_MISSING = repr(e)[:80]
else:
    TORCH_MISSING = None


ROWS = []
CHECKS = []  # (label, value, tolerance or None)


def row(case, lib, config, *, fn=None, first=None, units=None, **extra):
    """One table row. `fn` is timed by `settle`; `units` is how many networks (or
    spectra) one call of `fn` produces."""
    ROWS.append(
        dict(
            case=case,
            lib=lib,
            config=config,
            fn=fn,
            compile_s=first,
            units=units,
            **extra,
        )
    )


def warm(fn):
    """The first call (for JAX: tracing, compilation and one run): time, output."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def settle(repeats):
    """Time every pending row's function, interleaved round by round; the median
    over rounds (a row over 20 s a call is timed once: it averages over many
    steps already). The compile time is the first call minus the median."""
    pending = [rw for rw in ROWS if rw["fn"] is not None]
    times = {id(rw): [] for rw in pending}
    cpu = {id(rw): [] for rw in pending}
    for i in range(repeats):
        for rw in pending:
            if i >= 1 and times[id(rw)][0] > 20.0:
                continue  # a slow row (over 20 s a call) is timed once
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


def block(x):
    return jax.block_until_ready(x)


def with_threads(fn, threads):
    """`fn` run with torch limited to `threads` threads."""

    def run():
        torch.set_num_threads(threads)
        return fn()

    return run


# --- problem ------------------------------------------------------------------------


def hyperparameters(n, seed):
    """Initialization scales `p ~ U[0.04, 0.4]` and learning rates log-uniform in
    `[1e-3, 3e-2]`, float32 NumPy."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.04, 0.4, n)
    lr = np.exp(rng.uniform(np.log(1e-3), np.log(3e-2), n))
    return p.astype(np.float32), lr.astype(np.float32)


def spectrum_inputs(task, n_sequences, n_time, seed):
    """`n_sequences` streams of `n_time` steps: held-out images drawn at random and
    concatenated in time (as `dynjax.aelle.population_spectra`), float32 NumPy."""
    x, _ = task.test_set()
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed + 1)
    per = -(-n_time // x.shape[1])
    idx = rng.integers(0, x.shape[0], (n_sequences, per))
    streams = x[idx].reshape(n_sequences, per * x.shape[1], x.shape[2])
    return np.ascontiguousarray(streams[:, :n_time])


def state_size(kind, hidden):
    return 2 * hidden if kind == "lstm" else hidden


# --- torch: models ------------------------------------------------------------------


def torch_model(kind, input_size, hidden, n_classes):
    rnn_cls = torch.nn.GRU if kind == "gru" else torch.nn.LSTM

    class Model(torch.nn.Module):
        """The reference code's `RNNModel`: one recurrent layer, a linear readout
        of the last step."""

        def __init__(self):
            super().__init__()
            self.rnn = rnn_cls(input_size, hidden, batch_first=True)
            self.readout = torch.nn.Linear(hidden, n_classes)

        def forward(self, x):
            return self.readout(self.rnn(x)[0][:, -1])

    return Model()


def torch_from_dynjax(cell, kind):
    """A torch model holding a dynjax cell's weights (gate orders agree: GRU
    `(r, z, n)`, LSTM `(i, f, g, o)`; dynjax's GRU bias is torch's `b_ih` plus
    `b_hh` for r and z, its `bias_n` torch's `b_hh` for n)."""
    N, m = cell.hidden_size, cell.input_size
    out = cell.readout.weight.shape[0]
    model = torch_model(kind, m, N, out)
    t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
    bias_hh = np.zeros(model.rnn.bias_hh_l0.shape, np.float32)
    if kind == "gru":
        bias_hh[2 * N :] = np.asarray(cell.bias_n)
    with torch.no_grad():
        model.rnn.weight_ih_l0.copy_(t(cell.weight_ih))
        model.rnn.weight_hh_l0.copy_(t(cell.weight_hh))
        model.rnn.bias_ih_l0.copy_(t(cell.bias))
        model.rnn.bias_hh_l0.copy_(torch.from_numpy(bias_hh))
        model.readout.weight.copy_(t(cell.readout.weight))
        model.readout.bias.copy_(t(cell.readout.bias))
    return model


def torch_data(task):
    x_train = torch.from_numpy(np.asarray(task.data.train_inputs, np.float32))
    y_train = torch.from_numpy(np.asarray(task.data.train_labels, np.int64))
    x_test = torch.from_numpy(np.asarray(task.data.test_inputs, np.float32))
    y_test = torch.from_numpy(np.asarray(task.data.test_labels, np.int64))
    return x_train, y_train, x_test, y_test


def torch_evaluate(model, x_test, y_test):
    with torch.no_grad():
        logits = model(x_test)
        loss = torch.nn.functional.cross_entropy(logits, y_test)
        accuracy = (logits.argmax(-1) == y_test).float().mean()
    return float(accuracy), float(loss)


def torch_train(kind, task, data, hidden, p, lr, n_steps, batch, seed):
    """One network, the reference code's loop: init `U(-p, p)`, Adam, cross-entropy,
    gradient clipping; then its test accuracy and loss."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = torch_model(kind, task.input_size, hidden, task.n_classes)
    with torch.no_grad():
        for w in model.rnn.parameters():
            w.uniform_(-float(p), float(p))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(lr))
    criterion = torch.nn.CrossEntropyLoss()
    n_train = x_train.shape[0]
    for _ in range(n_steps):
        idx = torch.randperm(n_train)[:batch]
        optimizer.zero_grad()
        loss = criterion(model(x_train[idx]), y_train[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return torch_evaluate(model, x_test, y_test)


# --- torch: spectra -----------------------------------------------------------------


def torch_weights(cell, kind, dtype):
    t = lambda a: torch.from_numpy(np.array(a)).to(dtype)  # noqa: E731
    w = dict(W_ih=t(cell.weight_ih), W_hh=t(cell.weight_hh), b=t(cell.bias))
    if kind == "gru":
        w["b_n"] = t(cell.bias_n)
    return w


def gru_jacobian(w, h, u):
    """`(h', J)` for a batch of states `(B, N)`, `J = dh'/dh` hand-derived:
    `dz/dh = diag(z (1-z)) W_hz`, `dr/dh = diag(r (1-r)) W_hr`,
    `dn/dh = diag(1-n^2) (diag(r) W_hn + diag(W_hn h + b_hn) dr/dh)`,
    `dh'/dh = diag(1-z) dn/dh + diag(z) + diag(h-n) dz/dh`."""
    gi = u @ w["W_ih"].T + w["b"]
    gh = h @ w["W_hh"].T
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    h_n = h_n + w["b_n"]
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    h_new = n + z * (h - n)
    W_r, W_z, W_n = w["W_hh"].chunk(3, dim=0)
    a = (1 - z) * (1 - n * n)
    J = (
        (a * r)[:, :, None] * W_n
        + (a * h_n * r * (1 - r))[:, :, None] * W_r
        + ((h - n) * z * (1 - z))[:, :, None] * W_z
        + torch.diag_embed(z)
    )
    return h_new, J


def lstm_jacobian(w, x, u):
    """`(x', J)` on `x = concat(h, c)`, the block Jacobian hand-derived (gate order
    `(i, f, g, o)`, `s = sigmoid`):
    `dc'/dh = diag(c s_f') W_f + diag(g s_i') W_i + diag(s_i (1-g^2)) W_g`,
    `dc'/dc = diag(s_f)`, `dh'/dh = diag(tanh(c') s_o') W_o + diag(s_o (1 -
    tanh^2 c')) dc'/dh`, `dh'/dc = diag(s_o (1 - tanh^2 c') s_f)`."""
    N = x.shape[-1] // 2
    h, c = x[:, :N], x[:, N:]
    zi, zf, zg, zo = (u @ w["W_ih"].T + h @ w["W_hh"].T + w["b"]).chunk(4, dim=-1)
    W_i, W_f, W_g, W_o = w["W_hh"].chunk(4, dim=0)
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
        (c * sf * (1 - sf))[:, :, None] * W_f
        + (g * si * (1 - si))[:, :, None] * W_i
        + (si * (1 - g * g))[:, :, None] * W_g
    )
    a = so * (1 - tc * tc)
    dh_dh = (tc * so * (1 - so))[:, :, None] * W_o + a[:, :, None] * dc_dh
    J = torch.cat(
        [
            torch.cat([dh_dh, torch.diag_embed(a * sf)], dim=2),
            torch.cat([dc_dh, torch.diag_embed(sf)], dim=2),
        ],
        dim=1,
    )
    return torch.cat([h_new, c_new], dim=-1), J


def torch_spectrum(cell, kind, xs, Q0, warmup, dtype=None):
    """The mean spectrum over the streams `xs` `(B, T, m)` of one network, the
    reference code's loop batched over the streams: Jacobian, `bmm`, QR every
    step; `log |diag R|` summed after `warmup` steps."""
    dtype = torch.float32 if dtype is None else dtype
    w = torch_weights(cell, kind, dtype)
    jacobian = gru_jacobian if kind == "gru" else lstm_jacobian
    xs_t = torch.from_numpy(xs).to(dtype)
    B, T = xs.shape[:2]
    with torch.no_grad():
        x = torch.zeros(B, Q0.shape[0], dtype=dtype)
        Q = torch.from_numpy(Q0).to(dtype).expand(B, -1, -1)
        sums = torch.zeros(B, Q0.shape[1], dtype=dtype)
        for t in range(T):
            x, J = jacobian(w, x, xs_t[:, t])
            Q, R = torch.linalg.qr(torch.bmm(J, Q))
            if t >= warmup:
                sums += torch.log(torch.abs(torch.diagonal(R, dim1=1, dim2=2)))
    exponents = -np.sort(-(sums / (T - warmup)).numpy().astype(np.float64), axis=1)
    return exponents.mean(axis=0)


# --- one cell type ------------------------------------------------------------------


def cell_case(kind, task, args):
    P, S, N = args.networks, args.steps, args.hidden
    d = state_size(kind, N)
    p, lr = hyperparameters(P, args.seed)
    name = kind.upper()
    n_torch = min(args.torch_networks, P)
    train_case = (
        f"training: {name} N={N}, sequential digits (T={task.n_steps}, "
        f"m={task.input_size}, {task.n_classes} classes), {S} Adam steps of batch "
        f"{args.batch}, clip 1.0, float32"
    )
    key = jax.random.key(args.seed)

    def train_dynjax():
        stack = aelle.train_stack(
            task,
            kind=kind,
            hidden_size=N,
            init_scale=p,
            learning_rates=lr,
            key=key,
            n_steps=S,
            batch_size=args.batch,
            progress=False,
        )
        return block(stack)

    first, stack = warm(train_dynjax)
    acc = np.asarray(stack.accuracy)
    row(
        train_case,
        "dynjax",
        f"train_stack, {P} networks in one program",
        fn=train_dynjax,
        first=first,
        units=P,
        note=accuracy_note(acc),
    )
    if torch is not None:
        data = torch_data(task)

        def train_torch():
            return [
                torch_train(
                    kind, task, data, N, p[i], lr[i], S, args.batch, args.seed + i
                )
                for i in range(n_torch)
            ]

        for threads in args.threads:
            fn = with_threads(train_torch, threads)
            torch_out = fn()  # also the warm-up
            torch_acc = np.array([a for a, _ in torch_out])
            row(
                train_case,
                "torch",
                f"loop, one network at a time, {threads} thread(s)",
                fn=fn,
                units=n_torch,
                note=accuracy_note(torch_acc),
            )
        # Forward agreement: the trained dynjax networks in torch.
        x_test, y_test = data[2], data[3]
        diffs = []
        for i in range(n_torch):
            model = torch_from_dynjax(stack.network(i), kind)
            a, loss = torch_evaluate(model, x_test, y_test)
            diffs.append(abs(loss - float(stack.test_loss[i])))
        CHECKS.append(
            (
                f"{name} forward: test loss of {n_torch} trained dynjax networks "
                "recomputed by torch, max |difference|",
                max(diffs),
                1e-4,
            )
        )
        pairs = ", ".join(f"{acc[i]:.3f}/{torch_acc[i]:.3f}" for i in range(n_torch))
        CHECKS.append(
            (
                f"{name} training: test accuracy dynjax/torch at the same (p, lr) "
                f"[{pairs}]; max |difference|",
                float(np.max(np.abs(acc[:n_torch] - torch_acc))),
                None,
            )
        )

    # Spectra of the trained networks.
    n_time = args.warmup + args.length
    xs = spectrum_inputs(task, args.sequences, n_time, args.seed)
    Q0 = np.asarray(initial_frame(None, d, d, jnp.float32))
    spec_case = (
        f"spectra: the {P} trained {name}s, d={d}, k={d}, {args.sequences} streams "
        f"of {args.warmup} warm-up + {args.length} steps, QR every step, float32"
    )
    xs_j = jnp.asarray(xs)

    def spectra_dynjax():
        return block(aelle.stack_spectra(stack, xs_j, warmup=args.warmup))

    first, spectra = warm(spectra_dynjax)
    spectra = np.asarray(spectra, np.float64)
    lead_min, lead_max = spectra[:, 0].min(), spectra[:, 0].max()
    row(
        spec_case,
        "dynjax",
        f"stack_spectra, {P} networks in one program",
        fn=spectra_dynjax,
        first=first,
        units=P,
        note=f"lambda_1 in [{lead_min:+.4f}, {lead_max:+.4f}]",
    )
    if torch is None:
        row(spec_case, "torch", "missing", note=TORCH_MISSING)
        return
    cells = [stack.network(i) for i in range(n_torch)]

    def spectra_torch():
        return [torch_spectrum(c, kind, xs, Q0, args.warmup) for c in cells]

    for threads in args.threads:
        fn = with_threads(spectra_torch, threads)
        torch_spectra = np.array(fn())
        row(
            spec_case,
            "torch",
            f"loop, hand Jacobians, bmm + QR, {threads} thread(s)",
            fn=fn,
            units=n_torch,
            note="",
        )
    ref = np.array(
        [torch_spectrum(c, kind, xs, Q0, args.warmup, torch.float64) for c in cells]
    )
    lead = min(args.lead, d)
    mine = spectra[:n_torch]
    # dynjax sets an exponent to -inf when its direction collapses below 8 eps
    # of its norm within one step (float32: a contraction by 1e-6); compared on
    # the finite ones, the others listed with the float64 values there.
    finite = np.isfinite(mine)
    for label, sl in ((f"all {d}", slice(None)), (f"leading {lead}", slice(0, lead))):
        ok = finite[:, sl]
        scale = np.maximum(1.0, np.abs(ref[:, sl]))
        diff = np.abs(torch_spectra[:, sl] - mine[:, sl]) / scale
        CHECKS.append(
            (
                f"{name} spectra ({label} exponents, {n_torch} networks, finite in "
                "dynjax): torch float32 vs dynjax, max |difference| / max(1, |l|)",
                float(np.max(diff[ok])),
                args.tol,
            )
        )
        for who, vals in (("dynjax", mine), ("torch", torch_spectra)):
            CHECKS.append(
                (
                    f"{name} spectra ({label}, finite in dynjax): {who} float32 vs "
                    "the torch loop in float64, max |difference|",
                    float(np.max(np.abs(vals[:, sl] - ref[:, sl])[ok])),
                    None,
                )
            )
    if not finite.all():
        CHECKS.append(
            (
                f"{name} spectra: {int((~finite).sum())} of {finite.size} exponents "
                "-inf in dynjax (a direction collapsed in float32 within one step); "
                f"float64 values there: {ref[~finite].min():.2f} to "
                f"{ref[~finite].max():.2f}; torch float32 there: "
                f"{torch_spectra[~finite].min():.2f} to "
                f"{torch_spectra[~finite].max():.2f}; largest such float64 value",
                float(ref[~finite].max()),
                None,
            )
        )


def accuracy_note(acc):
    return (
        f"test accuracy min {acc.min():.3f}, median {np.median(acc):.3f}, "
        f"max {acc.max():.3f}"
    )


# --- profile ------------------------------------------------------------------------


def gru_flops(kind, N, m, c, T, batch):
    """Floating-point operations of one training step of one network: the matrix
    products of the forward pass (`2 G N (N + m)` per sample and step, `G` = 3
    gates for the GRU, 4 for the LSTM, and the readout), times 3 for forward and
    backward."""
    G = 3 if kind == "gru" else 4
    forward = batch * (T * 2 * G * N * (N + m) + 2 * N * c)
    return 3 * forward


def profile(kind, task, args):
    """Where dynjax's time goes, in a fresh process (so that first calls compile):
    `train_stack`'s three parts (building the cells, `dynjax.fit`, the test-set
    evaluation), a second population (new learning rates), the achieved
    floating-point rate against torch's, and the spectra's per-step cost against
    the QR factorizations alone (LAPACK through XLA, and torch's)."""
    from dynjax._aelle import _population as pop

    P, S, N = args.networks, args.steps, args.hidden
    p, lr = hyperparameters(P, args.seed)
    p, lr = jnp.asarray(p), jnp.asarray(lr)
    key = jax.random.key(args.seed)
    print(f"\nprofile: {kind.upper()}, N={N}, {P} networks, {S} steps")

    def timed(label, fn, per=None, unit=""):
        t0 = time.perf_counter()
        out = block(fn())
        dt = time.perf_counter() - t0
        extra = "" if per is None else f"   {dt / per[0] * per[1]:10.3f} {unit}"
        print(f"  {label:<64}{dt:9.3f} s{extra}")
        return out, dt

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(P))
    per_step = (P * S, 1e3)
    for when in ("first call", "again"):
        cells, _ = timed(
            f"build the cells (eager filter_vmap), {when}",
            lambda: pop._make_cells(kind, N, task, keys, p),
        )
        res, t_fit = timed(
            f"dynjax.fit, {S} steps, {when}",
            lambda: dynjax.fit(
                pop._stack_loss(task, args.batch),
                cells,
                pop.population_adam(lr, 1.0),
                n_steps=S,
                key=key,
                progress=False,
                has_aux=True,
            ),
            per_step,
            "ms per network-step",
        )
        timed(
            f"test-set evaluation (eager filter_vmap), {when}",
            lambda: pop._evaluate(task, res.model),
        )
    kw = dict(
        kind=kind, hidden_size=N, n_steps=S, batch_size=args.batch, progress=False
    )
    stack, t_stack = timed(
        "train_stack, the same population",
        lambda: aelle.train_stack(task, init_scale=p, learning_rates=lr, key=key, **kw),
        per_step,
        "ms per network-step",
    )
    timed(
        "train_stack, new learning rates (recompiles: they are constants)",
        lambda: aelle.train_stack(
            task, init_scale=p, learning_rates=lr * 1.01, key=key, **kw
        ),
    )
    flops = gru_flops(
        kind, N, task.input_size, task.n_classes, task.n_steps, args.batch
    )
    big = jnp.ones((2048, 2048), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(big).block_until_ready()
    _, t_mm = timed("JAX: one (2048, 2048) @ (2048, 2048) product", lambda: matmul(big))
    print(f"  {'-> GFLOP/s (one large product)':<64}{2 * 2048**3 / t_mm / 1e9:9.1f}")
    G = 3 if kind == "gru" else 4
    a = jnp.ones((P, args.batch, N), jnp.float32)
    b = jnp.ones((P, N, G * N), jnp.float32)
    bmm = jax.jit(lambda a, b: jnp.einsum("pbn,pnm->pbm", a, b))
    bmm(a, b).block_until_ready()
    reps = 200
    _, t_b = timed(
        f"JAX: {reps} batched products {P} x ({args.batch}, {N}) @ ({N}, {G * N})",
        lambda: [bmm(a, b) for _ in range(reps)][-1],
    )
    print(
        f"  {'-> GFLOP/s (one step of every network, recurrent product)':<64}"
        f"{reps * 2 * P * args.batch * N * G * N / t_b / 1e9:9.1f}"
    )
    print(
        f"  {'-> dynjax.fit: GFLOP/s (matrix products, forward + backward)':<64}"
        f"{flops * P * S / t_fit / 1e9:9.1f}"
    )
    if torch is not None:
        data = torch_data(task)
        for threads in args.threads:
            torch.set_num_threads(threads)
            torch_train(kind, task, data, N, p[0], lr[0], 5, args.batch, 0)
            _, t = timed(
                f"torch, one network, {S} steps, {threads} thread(s)",
                lambda: torch_train(kind, task, data, N, p[0], lr[0], S, args.batch, 0),
                (S, 1e3),
                "ms per network-step",
            )
            print(f"  {'-> GFLOP/s':<64}{flops * S / t / 1e9:9.1f}")

    # Spectra.
    d = state_size(kind, N)
    B, n_time = args.sequences, args.warmup + args.length
    xs = spectrum_inputs(task, B, n_time, args.seed)
    xs_j = jnp.asarray(xs)
    per = (P * B * n_time, 1e6)
    for when in ("first call", "again"):
        timed(
            f"stack_spectra, {when}",
            lambda: aelle.stack_spectra(stack, xs_j, warmup=args.warmup),
            per,
            "us per network-stream-step",
        )
    jitted = eqx.filter_jit(aelle.stack_spectra)
    for when in ("first call", "again"):
        timed(
            f"eqx.filter_jit(stack_spectra) (compiled once), {when}",
            lambda: jitted(stack, xs_j, warmup=args.warmup),
            per,
            "us per network-stream-step",
        )
    W = jax.random.normal(jax.random.key(1), (P * B, d, d), jnp.float32)

    @jax.jit
    def qr_steps(W):
        def body(V, _):
            Q, R = jnp.linalg.qr(V)
            return Q + 0.1 * V, None  # (not orthonormal: a fresh factorization)

        return jax.lax.scan(body, W, None, length=n_time)[0]

    qr_steps(W).block_until_ready()
    timed(
        f"JAX: jnp.linalg.qr alone, {P * B} blocks ({d}, {d}) x {n_time} steps",
        lambda: qr_steps(W),
        per,
        "us per block",
    )
    if torch is not None:
        Wt = torch.from_numpy(np.asarray(W[:B]))
        cells = [stack.network(0)]
        Q0 = np.asarray(initial_frame(None, d, d, jnp.float32))
        for threads in args.threads:
            torch.set_num_threads(threads)

            def torch_qr():
                V = Wt
                for _ in range(n_time):
                    Q, R = torch.linalg.qr(V)
                    V = Q + 0.1 * V
                return V

            torch_qr()
            timed(
                f"torch: torch.linalg.qr alone, {B} blocks x {n_time} steps, "
                f"{threads} thr.",
                torch_qr,
                (B * n_time, 1e6),
                "us per block",
            )
            timed(
                f"torch: the spectrum loop, 1 network, {threads} thread(s)",
                lambda: torch_spectrum(cells[0], kind, xs, Q0, args.warmup),
                (B * n_time, 1e6),
                "us per stream-step",
            )


# --- output ---------------------------------------------------------------------------


def print_table():
    current = None
    for rw in ROWS:
        if rw["case"] != current:
            current = rw["case"]
            unit = "networks/s" if current.startswith("training") else "spectra/s"
            print()
            print(current)
            header = (
                f"{'library':<9}{'configuration':<50}{'compile s':>10}{'run s':>9}"
                f"{'cpu s':>9}{'n':>5}{unit:>12}{'dynjax/torch':>14}  note"
            )
            print(header)
            print("-" * len(header))
        if rw.get("run_s") is None:
            print(f"{rw['lib']:<9}{rw['config']:<50}  {rw.get('note', '')}")
            continue
        rate = rw["units"] / rw["run_s"]
        # (against the fastest torch row of the case)
        peers = [
            r["units"] / r["run_s"]
            for r in ROWS
            if r["case"] == current and r["lib"] == "torch" and r.get("run_s")
        ]
        ratio = rate / max(peers) if peers else None
        compile_s = "-" if rw["compile_s"] is None else f"{rw['compile_s']:.2f}"
        ratio_s = "-" if ratio is None else f"{ratio:.2f}"
        print(
            f"{rw['lib']:<9}{rw['config']:<50}{compile_s:>10}{rw['run_s']:9.3f}"
            f"{rw['cpu_s']:9.3f}{rw['units']:5d}{rate:12.3f}{ratio_s:>14}  {rw['note']}"
        )
    print()
    ok = True
    for label, value, tol in CHECKS:
        if tol is None:
            print(f"check: {label}: {value:.2e}")
        elif value <= tol:
            print(f"check: {label}: {value:.2e} (within {tol:g})")
        else:
            ok = False
            print(f"DISAGREE: {label}: {value:.2e} > {tol:g}")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--cells", default="gru", help="comma-separated: gru,lstm")
    p.add_argument("--networks", type=int, default=64, help="P, dynjax's population")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--torch-networks", type=int, default=4, help="networks timed")
    p.add_argument("--sequences", type=int, default=15)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--threads",
        default=f"{os.cpu_count()},1",
        help="torch thread counts, one torch row each (default: the cores, and 1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-3, help="spectra agreement")
    p.add_argument("--lead", type=int, default=10, help="leading exponents checked")
    p.add_argument(
        "--profile", action="store_true", help="only: where dynjax's time goes"
    )
    args = p.parse_args(argv)
    args.threads = sorted({int(n) for n in args.threads.split(",")}, reverse=True)
    if args.quick:
        args.networks, args.steps, args.torch_networks = 8, 50, 2
        args.warmup, args.length, args.repeats = 50, 20, 2
    warnings.filterwarnings("ignore", message=".*float32.*")
    dev = jax.devices()[0]
    print(
        f"dynjax {dynjax.__version__}, jax {jax.__version__}, equinox "
        f"{eqx.__version__}, device {dev.device_kind} ({dev.platform}), "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, x64 "
        f"{jax.config.jax_enable_x64}"
    )
    if torch is not None:
        print(
            f"torch {torch.__version__} (threads {args.threads}), "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
        )
    print(f"load average before: {os.getloadavg()}")
    task = aelle.SequentialDigits(mode="row")
    if args.profile:
        for kind in args.cells.split(","):
            profile(kind, task, args)
        print(f"\nload average after: {os.getloadavg()}")
        return 0
    for kind in args.cells.split(","):
        if kind not in ("gru", "lstm"):
            raise SystemExit(f"--cells takes gru and/or lstm, got {kind!r}")
        cell_case(kind, task, args)
        settle(args.repeats)
    ok = print_table()
    print(f"\nload average after: {os.getloadavg()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
