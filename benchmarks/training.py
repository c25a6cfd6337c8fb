"""Training steps per second: `dynjax.train` with and without the sharpness probe
against a plain optax loop in JAX, and against PyTorch (issue 14, item 8).

Prints one table: steps per second, compile time beside run time, CPU time,
each row's time relative to the plain JAX loop (the overhead), and its
throughput relative to the faster PyTorch row; then the agreement checks.
Every row is timed once per round, in interleaved rounds (so other load on the
machine hits every row alike; each round starts one row later), after a
warm-up call, with `block_until_ready`; "run s" is the median over rounds,
"best s" the fastest round, "cpu s" the median process CPU time, and "/plain"
the median over rounds of the row's time over the plain loop's time in the
same round (a paired ratio: slow drifts of the machine's load cancel). The
probe's overhead is also given from CPU times (paired the same way), which
other processes' load disturbs less than wall time on a shared machine.
Compile time: for the plain loop, `jax.jit`'s `lower(...).compile()`; for
`dynjax.train`, which compiles one chunk of `chunk_size` steps whatever the
number of steps, a first one-chunk call minus a second one.

    python benchmarks/training.py               # 1000 steps a call, ~10 min on 2 cores
    python benchmarks/training.py --quick       # 100 steps, 3 rounds (~1.5 min)
    python benchmarks/training.py --eta 0.05    # below the edge of stability
    python benchmarks/training.py --profile     # what a probe costs, in gradients
    python benchmarks/training.py --skip variants,torch --steps 300 --repeats 15
                                                # the overhead alone, more rounds

Problem (the defaults), the setup of Cohen et al. (ICLR 2021) on a dataset that
ships with scikit-learn: the 8x8 digits (`sklearn.datasets.load_digits`, all
1797 images, pixels / 16), one-hot targets, the loss
`0.5 * mean_i sum_c (f(x_i)_c - y_ic)^2`, `f = eqx.nn.MLP(64, 10, 200, 2,
activation=jnp.tanh)` (55 210 parameters, `key(0)`), full-batch gradient
descent `optax.sgd(eta)` with `eta = 0.1` (`--eta`), float32 (x64 off), 1000
steps a call (`--steps`). The sharpness rises from 11 at initialization to
`2 / eta = 20` by about step 500 (progressive sharpening), then hovers there
while the loss keeps falling with spikes: the second half of the run is at the
edge of stability.

Rows:

1. JAX, plain: the textbook loop, `jax.jit` of a `lax.scan` over steps of
   `jax.value_and_grad`, `optimizer.update`, `optax.apply_updates` (the data
   an argument of the jitted function); the losses are its output. The
   baseline for the overhead.
2. `dynjax.train(loss, params, optax.sgd(eta), n, data=(x, y), ...)` without
   probes (`progress=False`, `chunk_size=100`; `record_every` = the last probe
   step, so that the checks below have the parameters there: two records a
   run).
3. The same with `probes=(dynjax.SharpnessProbe(every=10),)` (the default
   `iterations=1`, whose Hessian-vector product (HVP) is fused with the step's
   gradient in full-batch training); with `iterations=3` and `iterations=10`;
   and with `SharpnessProbe(every=10, batch_size=...)`, a probe on its own batch
   whose HVP is not fused: `batch_size=1797` (all the samples in a random order:
   the same sharpness as the full batch, so this row shows what the fusion
   saves) and minibatches of 256 (`--probe-batch`).
4. PyTorch: `torch.nn.Sequential(Linear, Tanh, Linear, Tanh, Linear)` holding
   the equinox MLP's initial weights, `torch.optim.SGD(lr=eta)`, the full
   batch, a Python loop (`zero_grad`, forward, `backward`, `step`), at the
   number of cores and at 1 thread (`--threads`); `OMP_WAIT_POLICY=PASSIVE`
   unless set otherwise (as in `benchmarks/aelle.py`).

Agreement checks ("DISAGREE" and exit status 1 beyond the tolerance; lines
marked "note" are reported, not checked):
- the probes do not change the run: every `dynjax.train` row's loss curve
  equals the one without probes (exactly);
- loss curves from the same initial weights, relative to the torch float64
  run's loss: dynjax, the plain JAX loop, torch float32 and torch float64,
  over the steps before the edge of stability (before the accurate probe,
  `iterations=10`, first sees `eta * S / 2 >= 0.9`), within `--tol-loss`
  (1e-5). Every float32 run here differs from float64 by a few 1e-7 there:
  the loss sums 17 970 squares and each step's gradient sums 1797 per-sample
  terms in float32 (relative rounding of order 1e-7 to 1e-6 per step) while
  gradient descent below the edge of stability does not amplify
  perturbations. At the edge of stability the dynamics is unstable along the
  top Hessian direction, so rounding differences grow there (reported); the
  check over the whole run is that dynjax's largest deviation from float64 is
  at most 10 times torch float32's (the same rounding, amplified alike);
- sharpness at the last probe step (`n - 10`): the accurate probe
  (`iterations=10`) within `--tol-sharpness` (5 %) of `dynjax.sharpness(...,
  iterations=50)` (Lanczos to convergence, residual printed) at the parameters
  of that step; the other rows' errors are reported (power iteration
  converges like `(lambda_2 / lambda_1)^k`, and the top eigenvalues are close:
  the ratio is printed); the fused and the not-fused probe on all samples agree
  at every probe within 1e-3 (float32 rounding of a different summation order).
  The stability ratio `eta * S / 2` is printed (near 1 at the edge of
  stability), not checked.
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np


# (see the docstring; set before torch starts its thread pool)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import dynjax  # noqa: E402


try:
    import torch
except Exception as e:  # pragma: no cover
    torch = None
    TORCH_MISSING = repr(e)[:80]
else:
    TORCH_MISSING = None


ROWS = []
CHECKS = []  # (label, value, tolerance or None)


def row(lib, config, *, fn=None, compile_s=None, note=""):
    """One table row; `fn` (one run of `n` steps) is timed by `settle`."""
    ROWS.append(dict(lib=lib, config=config, fn=fn, compile_s=compile_s, note=note))


def timed(fn):
    """One call: its wall time and output."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def settle(repeats):
    """Time every pending row's function, interleaved round by round (in a
    rotated order): the median and the best over rounds, and each round's time
    (for ratios within a round)."""
    pending = [rw for rw in ROWS if rw["fn"] is not None]
    for rw in pending:
        rw["times"], rw["cpu"] = [], []
    for i in range(repeats):
        # (each round starts one row later, so that no row always follows the same
        # one: torch's threads, for instance)
        for rw in pending[i % len(pending) :] + pending[: i % len(pending)]:
            t0, c0 = time.perf_counter(), time.process_time()
            rw["fn"]()
            rw["times"].append(time.perf_counter() - t0)
            rw["cpu"].append(time.process_time() - c0)
    for rw in pending:
        rw["run_s"] = statistics.median(rw["times"])
        rw["best_s"] = min(rw["times"])
        rw["cpu_s"] = statistics.median(rw["cpu"])
        rw["fn"] = None


def block(x):
    return jax.block_until_ready(x)


# --- problem ------------------------------------------------------------------------


def digits():
    """The 1797 8x8 digits, pixels / 16, and one-hot targets, float32 NumPy."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[d.target]
    return x, y


def make_problem(seed):
    model = eqx.nn.MLP(64, 10, 200, 2, activation=jnp.tanh, key=jax.random.key(seed))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(params, batch):
        x, y = batch
        f = jax.vmap(eqx.combine(params, static))(x)
        return 0.5 * jnp.mean(jnp.sum((f - y) ** 2, axis=-1))

    return model, params, loss


def plain_loop(loss, optimizer, n_steps):
    """The textbook JAX loop: one `jax.jit` of a `lax.scan` over optax steps."""

    @jax.jit
    def run(params, opt_state, data):
        def step(carry, _):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss)(params, data)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), value

        (params, opt_state), losses = jax.lax.scan(
            step, (params, opt_state), None, length=n_steps
        )
        return params, losses

    return run


# --- torch ----------------------------------------------------------------------------


def torch_mlp(model, dtype):
    """`Sequential(Linear, Tanh, Linear, Tanh, Linear)` holding the equinox MLP's
    weights (both store `weight` as (out, in))."""
    layers = []
    for i, layer in enumerate(model.layers):
        lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.array(layer.weight)))
            lin.bias.copy_(torch.from_numpy(np.array(layer.bias)))
        layers.append(lin)
        if i < len(model.layers) - 1:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def torch_train(model, x, y, eta, n_steps, dtype=None):
    """Full-batch SGD in a Python loop; returns the per-step losses (before each
    update, as `dynjax.train` records them)."""
    dtype = torch.float32 if dtype is None else dtype
    net = torch_mlp(model, dtype)
    x = torch.from_numpy(x).to(dtype)
    y = torch.from_numpy(y).to(dtype)
    opt = torch.optim.SGD(net.parameters(), lr=eta)
    losses = torch.empty(n_steps, dtype=dtype)
    for i in range(n_steps):
        opt.zero_grad(set_to_none=True)
        value = 0.5 * ((net(x) - y) ** 2).sum(dim=1).mean()
        value.backward()
        opt.step()
        losses[i] = value.detach()
    return losses.numpy()


# --- the benchmark --------------------------------------------------------------------


def benchmark(args):
    x_np, y_np = digits()
    data = (jnp.asarray(x_np), jnp.asarray(y_np))
    n_samples = x_np.shape[0]
    model, params, loss = make_problem(args.seed)
    flat0, unravel = jax.flatten_util.ravel_pytree(params)
    eta, n, every, chunk = args.eta, args.steps, 10, 100
    optimizer = optax.sgd(eta)
    last_probe = every * ((n - 1) // every)
    key = jax.random.key(args.seed + 1)
    print(
        f"\nproblem: digits (N={n_samples}, 64 -> 10), MLP width 200 depth 2 tanh "
        f"(p={flat0.shape[0]}), MSE on one-hot targets, full-batch GD eta={eta} "
        f"(2/eta = {2 / eta:g}), {n} steps a call, float32"
    )

    # 1. The plain JAX loop; compile time: lowering and compiling ahead of time.
    opt_state0 = optimizer.init(params)
    t0 = time.perf_counter()
    run_plain = plain_loop(loss, optimizer, n).lower(params, opt_state0, data).compile()
    compile_s = time.perf_counter() - t0

    def plain():
        return block(run_plain(params, opt_state0, data))

    plain_losses = np.asarray(plain()[1])  # (warm-up)
    row("jax", "plain loop: jit(scan(value_and_grad, sgd))", fn=plain,
        compile_s=compile_s)  # fmt: skip

    # 2-3. dynjax.train. It compiles one chunk of `chunk_size` steps whatever
    # `n_steps` is: compile time = a first one-chunk call minus a second one.
    def train_fn(probes, steps=n):
        def fn():
            tr = dynjax.train(loss, params, optimizer, steps, data=data, key=key,
                              probes=probes, record_every=max(last_probe, 1),
                              learning_rate=eta, chunk_size=chunk,
                              progress=False)  # fmt: skip
            return block(tr)

        return fn

    def sharp(**kw):
        return (dynjax.SharpnessProbe(every, **kw),)

    variants = [
        ("no probes", (), ""),
        ("SharpnessProbe(every=10)", sharp(), "the default: 1 fused HVP a probe"),
        ("SharpnessProbe(every=10, iterations=3)", sharp(iterations=3),
         "1 fused + 2 HVPs"),
        ("SharpnessProbe(every=10, iterations=10)", sharp(iterations=10),
         "1 fused + 9 HVPs"),
        (f"SharpnessProbe(every=10, batch_size={n_samples})",
         sharp(batch_size=n_samples), "all samples, 1 HVP, not fused"),
        (f"SharpnessProbe(every=10, batch_size={args.probe_batch})",
         sharp(batch_size=args.probe_batch), "minibatches, 1 HVP, not fused"),
    ]  # fmt: skip
    if "variants" in args.skip:
        variants = variants[:2]
    trajectories = {}
    for config, probes, note in variants:
        first, _ = timed(train_fn(probes, chunk))
        again, _ = timed(train_fn(probes, chunk))
        fn = train_fn(probes)
        trajectories[config] = fn()  # (warm-up)
        row("dynjax", f"train, {config}", fn=fn, compile_s=first - again, note=note)

    # 4. torch
    torch_losses = None
    if torch is None:
        row("torch", "missing", note=TORCH_MISSING)
    elif "torch" not in args.skip:
        for threads in args.threads:

            def fn(threads=threads):
                torch.set_num_threads(threads)
                return torch_train(model, x_np, y_np, eta, n)

            torch_losses = fn()  # (warm-up)
            row("torch", f"Python loop, SGD, {threads} thread(s)", fn=fn)
    settle(args.repeats)
    checks(args, trajectories, plain_losses, torch_losses, model, loss, data,
           flat0, unravel, last_probe)  # fmt: skip


def checks(args, trajectories, plain_losses, torch_losses, model, loss, data,
           flat0, unravel, last_probe):  # fmt: skip
    """The agreement checks of the docstring, appended to `CHECKS`."""
    eta, n = args.eta, args.steps
    x_np, y_np = (np.array(a) for a in data)
    n_samples = x_np.shape[0]
    tr0 = trajectories["no probes"]
    fused = trajectories["SharpnessProbe(every=10)"]
    # (without the variants: the default probe is checked, and marks the onset)
    accurate = trajectories.get("SharpnessProbe(every=10, iterations=10)", fused)
    unfused = trajectories.get(f"SharpnessProbe(every=10, batch_size={n_samples})")
    dyn_losses = np.asarray(tr0.losses)
    CHECKS.append(
        (
            "dynjax.train's recorded initial parameters against "
            "ravel_pytree(params), max |difference|",
            float(np.max(np.abs(np.asarray(tr0.thetas[0]) - np.asarray(flat0)))),
            0.0,
        )
    )
    for config, tr in trajectories.items():
        if config != "no probes":
            CHECKS.append(
                (
                    f"train with {config}: loss curve against train without "
                    "probes (the probes do not change the run), max |difference|",
                    float(np.max(np.abs(np.asarray(tr.losses) - dyn_losses))),
                    0.0,
                )
            )

    # The onset of the edge of stability, from the accurate probe.
    ratio = np.asarray(accurate.stability_ratio)
    s_steps = np.asarray(accurate.sharpness_steps)
    above = np.nonzero(ratio >= 0.9)[0]
    onset = int(s_steps[above[0]]) if above.size else n
    if onset == 0:  # (unstable from the start: check the first probe interval)
        onset = 10
    half = ratio[len(ratio) // 2 :]
    print(
        f"\nedge of stability (SharpnessProbe(every=10, iterations=10)): eta*S/2 "
        f"first >= 0.9 at step {onset if onset < n else 'never'}; over the last "
        f"half of the run min {half.min():.3f}, median {np.median(half):.3f}, "
        f"max {half.max():.3f}"
    )

    # Loss curves.
    curves = {"dynjax.train": dyn_losses, "plain JAX loop": plain_losses}
    if torch_losses is not None:
        curves["torch float32"] = torch_losses
        torch.set_num_threads(max(args.threads))
        curves["torch float64"] = torch_train(model, x_np, y_np, eta, n, torch.float64)
        ref = curves["torch float64"]
    else:
        ref = dyn_losses
    pairs = [("dynjax.train", "plain JAX loop")]
    if torch_losses is not None:
        pairs += [
            ("dynjax.train", "torch float32"),
            ("dynjax.train", "torch float64"),
            ("torch float32", "torch float64"),
        ]
    dev = {}
    for a, b in pairs:
        diff = np.abs(curves[a] - curves[b]) / np.abs(ref)
        dev[a, b] = float(np.max(diff))
        CHECKS.append(
            (
                f"loss curves, steps 0-{onset - 1} (before the edge of stability): "
                f"{a} vs {b}, max |difference| / loss",
                float(np.max(diff[:onset])),
                args.tol_loss,
            )
        )
        if onset < n:
            CHECKS.append(
                (
                    f"loss curves, steps {onset}-{n - 1} (at the edge of stability: "
                    f"rounding differences grow): {a} vs {b}, max |difference| / loss",
                    float(np.max(diff[onset:])),
                    None,
                )
            )
    if torch_losses is not None:
        CHECKS.append(
            (
                "loss curves, whole run: dynjax float32's largest deviation from "
                "torch float64 over torch float32's (float32 rounding amplified "
                "alike), ratio",
                dev["dynjax.train", "torch float64"]
                / max(dev["torch float32", "torch float64"], 1e-7),
                10.0,
            )
        )
    last = slice(3 * n // 4, n)
    print(
        f"mean loss over steps {3 * n // 4}-{n - 1}: "
        + ", ".join(f"{k} {np.mean(v[last]):.5f}" for k, v in curves.items())
        + f"; at step {n - 1}: "
        + ", ".join(f"{k} {v[-1]:.5f}" for k, v in curves.items())
    )

    # Sharpness at the last probe step, against Lanczos to convergence.
    at = np.nonzero(np.asarray(tr0.record_steps) == last_probe)[0]
    theta = unravel(jnp.asarray(tr0.thetas[at[-1]]))
    top = dynjax.sharpness(loss, theta, data, iterations=50)
    s_ref = float(top.value)
    # (the second eigenvalue: the top one of H - s1 u u^T, a deflated loss)
    u = jax.flatten_util.ravel_pytree(top.vector)[0]

    def deflated(p, batch):
        return (
            loss(p, batch)
            - 0.5 * s_ref * jnp.vdot(u, jax.flatten_util.ravel_pytree(p)[0]) ** 2
        )

    s2 = float(dynjax.sharpness(deflated, theta, data, iterations=50).value)
    final = float(dynjax.sharpness(loss, tr0.params, data, iterations=50).value)
    print(
        f"Hessian at step {last_probe} (dynjax.sharpness, 50 Lanczos steps): "
        f"lambda_1 = {s_ref:.5f} (residual {float(top.residual):.1e}), eta*S/2 = "
        f"{eta * s_ref / 2:.4f}; lambda_2 = {s2:.5f} (lambda_2 / lambda_1 = "
        f"{s2 / s_ref:.3f}); at the final parameters (step {n}): {final:.5f}, "
        f"eta*S/2 = {eta * final / 2:.4f}"
    )
    for config, tr in trajectories.items():
        if tr.sharpness.size == 0:
            continue
        s = float(tr.sharpness[-1])  # (at step `last_probe`)
        CHECKS.append(
            (
                f"{config}: sharpness at step {last_probe}, {s:.5f}, against "
                f"dynjax.sharpness, {s_ref:.5f}: |difference| / S (eta*S/2 = "
                f"{eta * s / 2:.3f})",
                abs(s - s_ref) / abs(s_ref),
                args.tol_sharpness if "iterations=10" in config else None,
            )
        )
    if unfused is None:
        return
    a, b = np.asarray(fused.sharpness), np.asarray(unfused.sharpness)
    CHECKS.append(
        (
            "sharpness, every probe: fused HVP (full batch) against not fused "
            f"(batch_size={n_samples}: the same samples permuted), max "
            "|difference| / S",
            float(np.max(np.abs(a - b)[1:] / np.abs(b[1:]))),
            1e-3,
        )
    )


def profile(args):
    """The costs the sharpness probe adds, per call, in units of one gradient:
    a forward pass, a gradient, a gradient with the Hessian-vector product fused
    (`jax.jvp` of `jax.value_and_grad`, the probe's first product in full-batch
    training) and a Hessian-vector product alone (`jax.jvp` of `jax.grad`); and
    the overhead they predict for a probe every 10 steps."""
    x_np, y_np = digits()
    data = (jnp.asarray(x_np), jnp.asarray(y_np))
    _, params, loss = make_problem(args.seed)
    flat0, unravel = jax.flatten_util.ravel_pytree(params)

    def flat_loss(theta, d):
        return loss(unravel(theta), d)

    vg = jax.value_and_grad(flat_loss)
    v0 = jax.random.normal(jax.random.key(2), flat0.shape, flat0.dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    fns = {
        "forward pass (the loss)": lambda t, v, d: flat_loss(t, d),
        "value_and_grad (one step's gradient)": lambda t, v, d: vg(t, d),
        "jvp(value_and_grad): gradient and HVP fused": lambda t, v, d: jax.jvp(
            lambda s: vg(s, d), (t,), (v,)
        ),
        "HVP alone: jvp(grad)": lambda t, v, d: jax.jvp(
            lambda s: jax.grad(flat_loss)(s, d), (t,), (v,)
        )[1],
    }
    fns = {k: jax.jit(f) for k, f in fns.items()}
    times = {k: [] for k in fns}
    for f in fns.values():
        block(f(flat0, v0, data))
    reps = 20
    for _ in range(args.repeats + 2):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                out = f(flat0, v0, data)
            block(out)
            times[k].append((time.perf_counter() - t0) / reps)
    print(
        f"\nprofile (data an argument; best and median of {args.repeats + 2} rounds "
        f"of {reps} calls, interleaved; p = {flat0.shape[0]})"
    )
    grad = min(times["value_and_grad (one step's gradient)"])
    for k, ts in times.items():
        print(
            f"  {k:<50}{1e3 * min(ts):8.2f} ms best {1e3 * statistics.median(ts):8.2f}"
            f" ms median {min(ts) / grad:6.2f} gradients"
        )
    fused = min(times["jvp(value_and_grad): gradient and HVP fused"])
    hvp = min(times["HVP alone: jvp(grad)"])
    print(
        f"  -> a probe every 10 steps adds {(fused - grad) / grad / 10:.1%} of a "
        f"gradient step fused, {hvp / grad / 10:.1%} not fused (iterations=1; "
        f"each further iteration {hvp / grad / 10:.1%})"
    )
    # Matrix-product flops of a gradient: the forward products, and twice as
    # many backward (weights and inputs, except the first layer's inputs).
    n, widths = x_np.shape[0], (64, 200, 200, 10)
    fwd = sum(2 * n * a * b for a, b in zip(widths[:-1], widths[1:]))
    flops = 3 * fwd - 2 * n * widths[0] * widths[1]
    print(
        f"  -> the gradient: {flops / 1e6:.0f} Mflop of matrix products, "
        f"{flops / grad / 1e9:.0f} Gflop/s"
    )
    if torch is None:
        return
    for threads in args.threads:
        torch.set_num_threads(threads)
        net = torch_mlp(make_problem(args.seed)[0], torch.float32)
        xt, yt = torch.from_numpy(x_np), torch.from_numpy(y_np)

        def torch_step():
            net.zero_grad(set_to_none=True)
            (0.5 * ((net(xt) - yt) ** 2).sum(dim=1).mean()).backward()

        torch_step()
        ts = []
        for _ in range(args.repeats + 2):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch_step()
            ts.append((time.perf_counter() - t0) / reps)
        print(
            f"  torch forward + backward, {threads} thread(s){'':<19}"
            f"{1e3 * min(ts):8.2f} ms best {1e3 * statistics.median(ts):8.2f} ms "
            f"median {min(ts) / grad:6.2f} gradients, {flops / min(ts) / 1e9:.0f} "
            "Gflop/s"
        )


# --- output ---------------------------------------------------------------------------


def print_table(args):
    n = args.steps
    plain = next(rw for rw in ROWS if rw["lib"] == "jax")

    def vs_plain(rw):
        """The median over rounds of this row's time over the plain loop's in the
        same round (paired: slow drifts of the machine's load cancel)."""
        return statistics.median(a / b for a, b in zip(rw["times"], plain["times"]))

    torch_rates = [
        n / rw["run_s"] for rw in ROWS if rw["lib"] == "torch" and rw.get("run_s")
    ]
    best_torch = max(torch_rates) if torch_rates else None
    header = (
        f"{'library':<8}{'configuration':<56}{'compile s':>10}{'run s':>8}"
        f"{'best s':>8}{'cpu s':>8}{'steps/s':>9}{'/plain':>8}{'/torch':>8}  note"
    )
    print()
    print(header)
    print("-" * len(header))
    for rw in ROWS:
        if rw.get("run_s") is None:
            print(f"{rw['lib']:<8}{rw['config']:<56}  {rw['note']}")
            continue
        rate = n / rw["run_s"]
        compile_s = "-" if rw["compile_s"] is None else f"{rw['compile_s']:.2f}"
        to_torch = "-" if best_torch is None else f"{rate / best_torch:.2f}"
        print(
            f"{rw['lib']:<8}{rw['config']:<56}{compile_s:>10}{rw['run_s']:8.3f}"
            f"{rw['best_s']:8.3f}{rw['cpu_s']:8.3f}{rate:9.1f}{vs_plain(rw):8.3f}"
            f"{to_torch:>8}  {rw['note']}"
        )
    print(
        f"(run s: median of {args.repeats} rounds; best s: the fastest round; "
        "/plain: the median over rounds of the run time over the plain loop's in "
        "the same round, so 1.30 = 30 % extra; /torch: steps per second over the "
        "faster torch row's)"
    )
    dyn = {rw["config"]: rw for rw in ROWS if rw["lib"] == "dynjax"}
    base = dyn["train, no probes"]
    probe = dyn["train, SharpnessProbe(every=10)"]
    over = vs_plain(probe) - 1
    cpu_over = statistics.median(a / b for a, b in zip(probe["cpu"], plain["cpu"])) - 1
    for rw in (plain, base, probe):
        rounds = ", ".join(f"{t:.2f}" for t in rw["times"])
        print(f"rounds, {rw['lib']} {rw['config']}: {rounds} s")
    print(
        f"\noverhead of train with SharpnessProbe(every=10) against the plain loop: "
        f"{over:+.1%} (paired median; target <= +30 %: "
        f"{'met' if over <= 0.30 else 'NOT met'}; best round against best round "
        f"{probe['best_s'] / plain['best_s'] - 1:+.1%}; CPU time, paired median "
        f"{cpu_over:+.1%}); of which train without probes {vs_plain(base) - 1:+.1%}"
    )
    if best_torch is not None:
        print(
            f"dynjax.train without probes / torch (faster row), steps per second: "
            f"{n / base['run_s'] / best_torch:.2f}; the plain JAX loop / torch: "
            f"{n / plain['run_s'] / best_torch:.2f}"
        )
    print()
    ok = True
    for label, value, tol in CHECKS:
        if tol is None:
            print(f"note (not checked): {label}: {value:.3g}")
        elif value <= tol:
            print(f"check: {label}: {value:.2e} (within {tol:g})")
        else:
            ok = False
            print(f"DISAGREE: {label}: {value:.2e} > {tol:g}")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="100 steps, 2 rounds")
    p.add_argument("--steps", type=int, default=1000, help="steps per timed call")
    p.add_argument("--eta", type=float, default=0.1, help="learning rate")
    p.add_argument("--probe-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads",
        default=f"{os.cpu_count()},1",
        help="torch thread counts, one torch row each (default: the cores, and 1)",
    )
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated: variants (the probe rows other than the default), torch",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol-loss", type=float, default=1e-5)
    p.add_argument("--tol-sharpness", type=float, default=0.05)
    p.add_argument(
        "--profile", action="store_true", help="only: where the probe's time goes"
    )
    args = p.parse_args(argv)
    args.threads = sorted({int(t) for t in args.threads.split(",")}, reverse=True)
    args.skip = set(filter(None, args.skip.split(",")))
    if args.skip - {"variants", "torch"}:
        raise SystemExit(f"--skip takes variants and/or torch, got {args.skip}")
    if args.quick:
        args.steps, args.repeats = 100, 3
    warnings.filterwarnings("ignore", message=".*float32.*")
    dev = jax.devices()[0]
    print(
        f"dynjax {dynjax.__version__}, jax {jax.__version__}, equinox "
        f"{eqx.__version__}, optax {optax.__version__}, device {dev.device_kind} "
        f"({dev.platform}), {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, x64 {jax.config.jax_enable_x64}"
    )
    if torch is not None:
        print(
            f"torch {torch.__version__} (threads {args.threads}), "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
        )
    print(f"load average before: {os.getloadavg()}")
    if args.profile:
        profile(args)
        print(f"\nload average after: {os.getloadavg()}")
        return 0
    benchmark(args)
    ok = print_table(args)
    print(f"\nload average after: {os.getloadavg()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
