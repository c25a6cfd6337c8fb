"""Neural ODE training steps and diffusion sampling: dynjax against torchdiffeq.

Prints two tables: the time of one training step of a neural ODE, and reverse-SDE
samples per second of a score-based diffusion model. Times are medians of several
rounds after a warm-up, every row timed once per round (interleaved, so other load
on the machine hits every library alike), with `block_until_ready`; JAX's compile
time separately (the first call minus the median); the process CPU time beside the
wall time. Each row carries the ratio (torch time / this row's time) against the
torch row of the same kind measured in the same run.

    python benchmarks/neural_ode.py            # default sizes, ~2 min on 2 cores
    python benchmarks/neural_ode.py --quick    # small sizes, a smoke test
    python benchmarks/neural_ode.py --full     # every solver/adjoint/path pairing
    python benchmarks/neural_ode.py --skip diffusion --batch 32
    python benchmarks/neural_ode.py --skip diffusion --hairer-dt0  # diffrax rows too

Cases:

1. Neural ODE training step. The same MLP vector field in both libraries,
   `f(t, y) = MLP(y)` (d = 2 inputs and outputs, 2 hidden layers of width 64,
   softplus; autonomous), float32, with the same weights (torch's initialisation
   copied into the equinox MLP). A batch of 256 initial states is solved over
   `t in [0, 1]`, saved at 10 times, with Dopri5 at `rtol = atol = 1e-6`; one
   training step is the forward solve, the mean squared error against fixed
   targets (a damped linear spiral from the same initial states), the backward
   pass and an Adam update (learning rate 1e-3). Every row trains its own copy of
   the model from the same weights, one step per round.

   - dynjax: `dynjax.NeuralODE(2, func=...)` called on the `(256, 2)` batch,
     which it solves as one ODE (shared steps, as torchdiffeq; its first step
     the `PIDController`'s own choice), with
     `diffrax.RecursiveCheckpointAdjoint()` (the default) or
     `diffrax.BacksolveAdjoint()`; Dopri5, and Tsit5 (torchdiffeq has none).
     With `--full` also `__call__` vmapped over the batch (one solve per sample,
     its own step sizes).
   - torchdiffeq: `odeint` (backpropagation through the solver's operations, the
     counterpart of `RecursiveCheckpointAdjoint`) and `odeint_adjoint` (the
     continuous adjoint, the counterpart of `BacksolveAdjoint`),
     `method="dopri5"`. torchdiffeq solves the batch as ONE ODE on a `(256, 2)`
     state: one step-size sequence for the whole batch, chosen by the RMS norm of
     the error over all 512 components.
   - diffrax + equinox directly (not dynjax's API), as a reference for what
     dynjax's API costs: the batch as one ODE on a `(256, 2)` state, as
     torchdiffeq does (diffrax's `PIDController` uses the same RMS error norm),
     with `dt0=None` as a diffrax user writes it (diffrax 0.7.2 then starts at
     0.01) or, with `--hairer-dt0`, the controller's own first step (as
     `NeuralODE`).

   Accuracy: the forward solutions at the initial weights, against a float64
   reference (torchdiffeq `dopri8` at `rtol = atol = 1e-12` on a float64 copy of
   the model), and against torchdiffeq's float32 solution ("vs torch"). Steps: the
   forward solve's steps (accepted + rejected), from diffrax's `stats` with the
   same settings as the row's solve, and from counting torch's function
   evaluations (Dopri5 with FSAL: `2 + 6 * steps`; `odeint_adjoint`'s backward
   solves each of the 9 intervals between save times afresh).

2. Reverse-SDE sampling: an MLP score network `s(t, x) = MLP([t, x])` (3 inputs, 2
   outputs, 2 hidden layers of width 64, softplus; untrained: the time is what is
   measured, and the samples are far from any data) and the VP SDE (beta 0.1 to
   20, T = 1), 1000 Euler-Maruyama steps from T to t_min = 1e-3, 1024 samples
   (`--samples`), float32. dynjax: `dynjax.reverse_sde_sample` (diffrax, one
   solve per sample, vmapped) with its default `brownian="increments"`
   (`UnsafeBrownianPath`: a fresh normal increment per step) and with
   `brownian="tree"` (a `VirtualBrownianTree`). Peers: diffrax directly with
   `UnsafeBrownianPath` (what the default runs, without dynjax's checks), the
   Euler-Maruyama recursion as a `lax.scan` with `jax.random.normal` (plain JAX),
   and as a torch loop with `torch.randn` (same weights). The sample mean and
   standard deviation are printed as a consistency check: all rows agree within
   sampling error.

Torch runs `--threads` threads (default 2, this machine's core count), with
`OMP_WAIT_POLICY=PASSIVE` unless set otherwise (see below).
"""

import argparse
import copy
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np


# OpenMP threads that spin while waiting (libgomp's default) slow torch down by
# 3x to 20x when the cores are shared with other processes (JAX's own threads
# included); passive waiting is torch's best setting on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import diffrax as dfx  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import optax  # noqa: E402

import dynjax  # noqa: E402


try:
    import torch
    import torchdiffeq
except Exception as e:  # pragma: no cover
    torch = None
    TORCH_MISSING = repr(e)[:80]
else:
    TORCH_MISSING = None


WIDTH, DEPTH, D = 64, 2, 2
RTOL = ATOL = 1e-6
LR = 1e-3
ROWS = []


def row(case, lib, config, *, fn=None, first=None, run_s=None, ref=None, **extra):
    """One table row. `fn` is timed by `settle`; `ref` names the torch row (lib,
    config) whose time is divided by this one's."""
    ROWS.append(
        dict(
            case=case,
            lib=lib,
            config=config,
            fn=fn,
            compile_s=first,
            run_s=run_s,
            ref=ref,
            **extra,
        )
    )


def block(x):
    return jax.block_until_ready(x)


def warm(fn):
    """The first call (for JAX: compilation and one run): its time."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def settle(repeats):
    """Time every pending row's function, interleaved round by round (so other
    load on the machine hits every library alike); the median over rounds. The
    compile time is the first call minus the median (JAX rows only)."""
    pending = [rw for rw in ROWS if rw["fn"] is not None]
    times = {id(rw): [] for rw in pending}
    cpu = {id(rw): [] for rw in pending}
    for i in range(repeats):
        for rw in pending:
            if i >= 3 and times[id(rw)][0] > 1.0:
                continue  # a slow row (over a second) is timed three times
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


# --- problem data ---------------------------------------------------------------


def problem(batch, n_save):
    """Initial states, save times and targets (a damped linear spiral
    `dy/dt = A y`, exact solution by eigendecomposition), float32 NumPy."""
    rng = np.random.default_rng(0)
    y0 = rng.standard_normal((batch, D)).astype(np.float32)
    ts = np.linspace(0.0, 1.0, n_save).astype(np.float32)
    a, w = -0.1, 2.0  # A = [[a, w], [-w, a]]
    c, s = np.cos(w * ts), np.sin(w * ts)
    rot = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)  # (T, 2, 2)
    ys = np.exp(a * ts)[:, None, None] * np.einsum("tij,bj->tbi", rot, y0)
    return y0, ts, ys.transpose(1, 0, 2).astype(np.float32)  # ys: (batch, T, d)


def torch_field(seed=0, in_size=D):
    """The torch MLP (`in_size` inputs, `D` outputs) as a vector field `(t, y)`,
    with a counter of its evaluations."""

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layers, size = [], in_size
            for _ in range(DEPTH):
                layers += [torch.nn.Linear(size, WIDTH), torch.nn.Softplus()]
                size = WIDTH
            layers.append(torch.nn.Linear(size, D))
            self.net = torch.nn.Sequential(*layers)
            self.nfe = 0

        def forward(self, t, y):
            self.nfe += 1
            return self.net(y)

    torch.manual_seed(seed)
    return Field()


def jax_mlp_from_torch(field, in_size=D, dtype=jnp.float32):
    """An `eqx.nn.MLP` with the torch module's weights (both store `(out, in)`)."""
    mlp = eqx.nn.MLP(
        in_size, D, WIDTH, DEPTH, jax.nn.softplus, key=jax.random.key(0), dtype=dtype
    )
    linears = [m for m in field.net if isinstance(m, torch.nn.Linear)]
    leaves = []
    for lin in linears:
        leaves += [
            jnp.asarray(lin.weight.detach().numpy(), dtype),
            jnp.asarray(lin.bias.detach().numpy(), dtype),
        ]

    def where(m):
        return [x for lay in m.layers for x in (lay.weight, lay.bias)]

    return eqx.tree_at(where, mlp, leaves)


class Autonomous(eqx.Module):
    """`(t, y) -> mlp(y)`: the vector field handed to `dynjax.NeuralODE(func=...)`."""

    mlp: eqx.nn.MLP

    def __call__(self, t, y):
        return self.mlp(y)


# --- the JAX sides ----------------------------------------------------------------


# `--hairer-dt0` (diffrax (direct) rows): pass `dt0` from diffrax's own initial-step
# algorithm (Hairer, Norsett and Wanner, Section II.4; torchdiffeq's too), as
# `NeuralODE` does by default. diffrax 0.7.2's `diffeqsolve(dt0=None)` wraps the
# terms (`WrapTerm`) before it asks the controller, whose `_select_initial_step`
# then falls back to 0.01 for any term that is not an `ODETerm`.
HAIRER_DT0 = [False]


def solve_dynjax(model, ts, y0s, solver, adjoint):
    """dynjax's public path: `NeuralODE.__call__` on the batch (one ODE)."""
    controller = dfx.PIDController(rtol=RTOL, atol=ATOL)
    return model(
        ts, y0s, solver=solver, stepsize_controller=controller, adjoint=adjoint
    )


def solve_dynjax_vmap(model, ts, y0s, solver, adjoint):
    """`NeuralODE.__call__` vmapped over the batch (one solve per sample)."""
    controller = dfx.PIDController(rtol=RTOL, atol=ATOL)
    return jax.vmap(
        lambda y0: model(
            ts, y0, solver=solver, stepsize_controller=controller, adjoint=adjoint
        )
    )(y0s)


# The next functions are diffrax + equinox directly, not dynjax: a reference for
# what dynjax's API costs, and the torchdiffeq semantics (the batch as one ODE).


def _raw_solve(mlp, ts, y0, solver, adjoint, batched, hairer=None):
    def field(t, y, mlp):
        return jax.vmap(mlp)(y) if batched else mlp(y)

    hairer = HAIRER_DT0[0] if hairer is None else hairer
    dt0 = None
    if hairer:
        term = dfx.ODETerm(field)
        controller = dfx.PIDController(rtol=RTOL, atol=ATOL)
        order = solver.error_order(term)
        t1, _ = controller.init(term, ts[0], ts[-1], y0, None, mlp, solver.func, order)
        dt0 = jax.lax.stop_gradient(t1 - ts[0])
    return dfx.diffeqsolve(
        dfx.ODETerm(field),
        solver,
        ts[0],
        ts[-1],
        dt0,
        y0,
        args=mlp,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=dfx.PIDController(rtol=RTOL, atol=ATOL),
        adjoint=adjoint,
        max_steps=4096,
    )


def solve_raw_vmap(mlp, ts, y0s, solver, adjoint):
    """diffrax directly, one solve per sample vmapped."""
    return jax.vmap(lambda y0: _raw_solve(mlp, ts, y0, solver, adjoint, False).ys)(y0s)


def solve_raw_batched(mlp, ts, y0s, solver, adjoint):
    """diffrax directly, the batch as one ODE on a `(batch, d)` state (as
    torchdiffeq)."""
    return jnp.swapaxes(_raw_solve(mlp, ts, y0s, solver, adjoint, True).ys, 0, 1)


@eqx.filter_jit
def raw_steps(mlp, ts, y0s, solver, batched, hairer):
    """Forward steps (accepted + rejected) of the raw solves: per sample, or one;
    `hairer`: with the controller's initial step (as `NeuralODE`)."""
    adjoint = dfx.RecursiveCheckpointAdjoint()
    if batched:
        sol = _raw_solve(mlp, ts, y0s, solver, adjoint, True, hairer)
        return sol.stats["num_steps"]
    return jax.vmap(
        lambda y0: _raw_solve(mlp, ts, y0, solver, adjoint, False, hairer).stats[
            "num_steps"
        ]
    )(y0s)


def jax_trainer(solve, model, ts, y0s, ys, solver, adjoint):
    """A stateful `step()` closure: one jitted training step (loss, gradient, Adam
    update) on its own copy of the model."""
    optimizer = optax.adam(LR)
    ts, y0s, ys = jnp.asarray(ts), jnp.asarray(y0s), jnp.asarray(ys)

    @eqx.filter_jit
    def train_step(model, opt_state, y0s, ys):
        def loss_fn(model):
            return jnp.mean((solve(model, ts, y0s, solver, adjoint) - ys) ** 2)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, loss

    state = [model, optimizer.init(eqx.filter(model, eqx.is_inexact_array))]

    def step():
        state[0], state[1], loss = train_step(state[0], state[1], y0s, ys)
        return float(block(loss))

    return step


@eqx.filter_jit
def _forward(solve, model, ts, y0s, solver):
    return solve(model, ts, y0s, solver, dfx.RecursiveCheckpointAdjoint())


def forward(solve, model, ts, y0s, solver):
    return np.asarray(_forward(solve, model, ts, y0s, solver))


# --- the torch sides --------------------------------------------------------------


def torch_trainer(field, y0, ts, ys, adjoint):
    field = copy.deepcopy(field)
    opt = torch.optim.Adam(field.parameters(), lr=LR)
    y0_t, ts_t = torch.from_numpy(y0), torch.from_numpy(ts)
    ys_t = torch.from_numpy(ys.transpose(1, 0, 2).copy())  # (T, batch, d)
    odeint = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    counts = {}

    def step():
        opt.zero_grad()
        field.nfe = 0
        pred = odeint(field, y0_t, ts_t, rtol=RTOL, atol=ATOL, method="dopri5")
        counts["forward"] = field.nfe
        loss = torch.mean((pred - ys_t) ** 2)
        loss.backward()
        counts["backward"] = field.nfe - counts["forward"]
        opt.step()
        return float(loss.detach())

    return step, counts


def torch_forward(field, y0, ts, dtype, method, tol):
    field = copy.deepcopy(field).to(dtype)
    field.nfe = 0
    with torch.no_grad():
        out = torchdiffeq.odeint(
            field,
            torch.from_numpy(y0).to(dtype),
            torch.from_numpy(ts).to(dtype),
            rtol=tol,
            atol=tol,
            method=method,
        )
    return out.numpy().transpose(1, 0, 2), field.nfe


# --- case 1: training step ----------------------------------------------------------


def training_case(args):
    y0, ts, ys = problem(args.batch, args.n_save)
    case = (
        f"neural ODE training step: batch {args.batch}, d={D}, MLP {WIDTH}x{DEPTH} "
        f"softplus, t in [0, 1] saved at {args.n_save} times, rtol=atol={RTOL:g}, "
        "float32"
    )
    if torch is None:
        row(case, "torchdiffeq", "missing", note=TORCH_MISSING)
        return
    field = torch_field()
    mlp = jax_mlp_from_torch(field)

    ref, _ = torch_forward(field, y0, ts, torch.float64, "dopri8", 1e-12)
    torch_fwd, nfe = torch_forward(field, y0, ts, torch.float32, "dopri5", RTOL)
    torch_steps = (nfe - 2) // 6

    def err(out):
        return float(np.max(np.abs(np.asarray(out, np.float64) - ref)))

    def vs_torch(out):
        return float(np.max(np.abs(np.asarray(out, np.float64) - torch_fwd)))

    solvers = {"Dopri5": dfx.Dopri5(), "Tsit5": dfx.Tsit5()}
    adjoints = {
        "RecursiveCheckpoint": (dfx.RecursiveCheckpointAdjoint(), "odeint"),
        "Backsolve": (dfx.BacksolveAdjoint(), "odeint_adjoint"),
    }
    # (library, how, solver, adjoint): the default set keeps the run near 3 minutes
    # on 2 cores (each configuration compiles for 5 to 15 s); --full adds the rest.
    raw = "one ODE, dt0=" + ("PID init" if HAIRER_DT0[0] else "None")
    configs = [
        ("dynjax", "NeuralODE, batch", "Dopri5", "RecursiveCheckpoint"),
        ("dynjax", "NeuralODE, batch", "Dopri5", "Backsolve"),
        ("dynjax", "NeuralODE, batch", "Tsit5", "RecursiveCheckpoint"),
        ("diffrax (direct)", raw, "Dopri5", "RecursiveCheckpoint"),
        ("diffrax (direct)", raw, "Dopri5", "Backsolve"),
    ]
    if args.quick:
        del configs[2]
    if args.full:
        configs += [
            ("dynjax", "NeuralODE, batch", "Tsit5", "Backsolve"),
            ("dynjax", "NeuralODE, vmap", "Dopri5", "RecursiveCheckpoint"),
            ("dynjax", "NeuralODE, vmap", "Dopri5", "Backsolve"),
            ("diffrax (direct)", raw, "Tsit5", "RecursiveCheckpoint"),
            ("diffrax (direct)", raw, "Tsit5", "Backsolve"),
        ]
    configs = [
        c
        for c in configs
        if c[2] in args.solvers
        and c[3] in args.adjoints
        and not (c[0] != "dynjax" and "raw" in args.skip)
    ]
    y0_j, ts_j = jnp.asarray(y0), jnp.asarray(ts)
    forward_cache = {}
    for lib, how, sname, aname in configs:
        solver = solvers[sname]
        adjoint, peer = adjoints[aname]
        batched = "vmap" not in how
        if lib == "dynjax":
            model = dynjax.NeuralODE(D, func=Autonomous(mlp))
            solve = solve_dynjax if batched else solve_dynjax_vmap
        else:
            model, solve = mlp, (solve_raw_batched if batched else solve_raw_vmap)
        # The forward solution at the initial weights (the adjoint plays no part)
        # through the row's own path, and the forward steps from diffrax's stats
        # with the same settings (NeuralODE: the controller's initial step).
        hairer = lib == "dynjax" or HAIRER_DT0[0]
        fkey = (lib, batched, sname)
        if fkey not in forward_cache:
            out = forward(solve, model, ts_j, y0_j, solver)
            n = np.asarray(raw_steps(mlp, ts_j, y0_j, solver, batched, hairer))
            steps = f"{int(n)}" if batched else f"max {n.max()}, mean {n.mean():.1f}"
            forward_cache[fkey] = (err(out), vs_torch(out), steps)
        error, diff, steps = forward_cache[fkey]
        step = jax_trainer(solve, model, ts, y0, ys, solver, adjoint)
        first = warm(step)
        row(
            case,
            lib,
            f"{how}, {sname}, {aname}",
            fn=step,
            first=first,
            ref=("torchdiffeq", f"{peer}, dopri5"),
            error=error,
            vs_torch=diff,
            steps=steps,
        )
    if "torch" in args.skip:
        return
    for aname in args.adjoints:
        peer = adjoints[aname][1]
        step, counts = torch_trainer(field, y0, ts, ys, peer == "odeint_adjoint")
        step()  # warm-up
        steps = f"{torch_steps}"
        if peer == "odeint_adjoint":
            # the backward pass solves each of the n_save - 1 intervals afresh
            bwd = (counts["backward"] - 2 * (len(ts) - 1)) // 6
            steps += f" (backward {bwd})"
        row(
            case,
            "torchdiffeq",
            f"{peer}, dopri5",
            fn=step,
            error=err(torch_fwd),
            vs_torch=0.0,
            steps=steps,
        )


# --- case 2: reverse-SDE sampling ---------------------------------------------------


class ScoreNet(eqx.Module):
    """`s(t, x) = MLP([t, x])`."""

    mlp: eqx.nn.MLP

    def __call__(self, t, x):
        return self.mlp(jnp.concatenate([jnp.reshape(t, (1,)).astype(x.dtype), x]))


def diffusion_case(args):
    n, n_steps, t_min = args.samples, args.sde_steps, 1e-3
    case = (
        f"reverse-SDE sampling: VP SDE, MLP score {WIDTH}x{DEPTH} softplus, d={D}, "
        f"{n_steps} Euler-Maruyama steps, {n} samples, float32"
    )
    if torch is None:
        row(case, "torch", "missing", note=TORCH_MISSING)
        return
    field = torch_field(seed=1, in_size=D + 1)  # the time is the first input
    score = ScoreNet(jax_mlp_from_torch(field, in_size=D + 1))
    beta_min, beta_max, T = 0.1, 20.0, 1.0
    key = jax.random.key(0)

    def summary(xs):
        xs = np.asarray(xs, np.float64)
        return f"mean {xs.mean():+.3f}, std {xs.std():.3f}"

    if hasattr(dynjax, "reverse_sde_sample"):
        sde = dynjax.VPSDE(beta_min, beta_max, T)
        for brownian in ("increments", "tree"):

            def sample_dynjax(brownian=brownian):
                out = dynjax.reverse_sde_sample(
                    score,
                    sde,
                    key,
                    n,
                    D,
                    n_steps=n_steps,
                    t_min=t_min,
                    dtype=jnp.float32,
                    brownian=brownian,
                )
                return block(out.xs)

            first = warm(sample_dynjax)
            xs = sample_dynjax()
            config = f"reverse_sde_sample, brownian='{brownian}'"
            if brownian == "increments":
                config = "reverse_sde_sample, 'increments' (default)"
            row(
                case,
                "dynjax",
                config,
                fn=sample_dynjax,
                first=first,
                ref=("torch", "Euler-Maruyama loop"),
                n=n,
                note=summary(xs),
            )
    else:
        row(case, "dynjax", "missing", note="dynjax.reverse_sde_sample not exported")

    # diffrax directly, as dynjax's default runs it: `UnsafeBrownianPath` (a fresh
    # normal increment per step; valid for fixed steps and no backpropagation).
    @jax.jit
    def sample_unsafe(key):
        k0, k1 = jax.random.split(key)
        ts = jnp.linspace(T, t_min, n_steps + 1, dtype=jnp.float32)

        def drift(t, x, args):
            beta = beta_min + (beta_max - beta_min) * t / T
            return -0.5 * beta * x - beta * score(t, x)

        def noise(t, x, args):
            g = jnp.sqrt(beta_min + (beta_max - beta_min) * t / T)
            return lx.DiagonalLinearOperator(jnp.broadcast_to(g, x.shape))

        def one(x, k):
            bm = dfx.UnsafeBrownianPath(jax.ShapeDtypeStruct(x.shape, x.dtype), k)
            terms = dfx.MultiTerm(dfx.ODETerm(drift), dfx.ControlTerm(noise, bm))
            return dfx.diffeqsolve(
                terms,
                dfx.Euler(),
                T,
                t_min,
                None,
                x,
                saveat=dfx.SaveAt(t1=True),
                stepsize_controller=dfx.StepTo(ts=ts),
                adjoint=dfx.ForwardMode(),  # UnsafeBrownianPath refuses the default
                max_steps=n_steps,
            ).ys[0]

        x = jax.random.normal(k0, (n, D), jnp.float32)
        return jax.vmap(one)(x, jax.random.split(k1, n))

    # The same Euler-Maruyama recursion in plain JAX, batch-first.
    @jax.jit
    def sample_scan(key):
        k0, k1 = jax.random.split(key)
        dt = (T - t_min) / n_steps
        ts = jnp.linspace(T, t_min, n_steps + 1, dtype=jnp.float32)[:-1]
        noise_keys = jax.random.split(k1, n_steps)

        def em(x, inp):
            t, k = inp
            beta = beta_min + (beta_max - beta_min) * t / T
            s = jax.vmap(score, in_axes=(None, 0))(t, x)
            drift = -0.5 * beta * x - beta * s
            z = jax.random.normal(k, x.shape, x.dtype)
            return x - drift * dt + jnp.sqrt(beta * dt) * z, None

        x = jax.random.normal(k0, (n, D), jnp.float32)
        return jax.lax.scan(em, x, (ts, noise_keys))[0]

    peers = [
        ("diffrax (direct)", "vmap, UnsafeBrownianPath", sample_unsafe),
        ("JAX (lax.scan)", "batch-first, jax.random.normal", sample_scan),
    ]
    if "raw" in args.skip:
        peers = []
    for lib, config, sample in peers:

        def run(sample=sample):
            return block(sample(key))

        first = warm(run)
        row(
            case,
            lib,
            config,
            fn=run,
            first=first,
            ref=("torch", "Euler-Maruyama loop"),
            n=n,
            note=summary(run()),
        )
    if torch is None or "torch" in args.skip:
        return

    def sample_torch():
        gen = torch.Generator().manual_seed(0)
        dt = (T - t_min) / n_steps
        ts = torch.linspace(T, t_min, n_steps + 1)[:-1]
        with torch.no_grad():
            x = torch.randn(n, D, generator=gen)
            for t in ts:
                beta = beta_min + (beta_max - beta_min) * t / T
                s = field.net(torch.cat([t.expand(n, 1), x], dim=1))
                drift = -0.5 * beta * x - beta * s
                z = torch.randn(n, D, generator=gen)
                x = x - drift * dt + torch.sqrt(beta * dt) * z
        return x.numpy()

    xs = sample_torch()
    row(
        case,
        "torch",
        "Euler-Maruyama loop",
        fn=sample_torch,
        n=n,
        note=summary(xs),
    )


# --- output -------------------------------------------------------------------------


def print_table():
    current = None
    for rw in ROWS:
        if rw["case"] != current:
            current = rw["case"]
            training = current.startswith("neural ODE")
            print()
            print(current)
            if training:
                header = (
                    f"{'library':<18}{'configuration':<52}{'compile s':>10}"
                    f"{'step s':>9}{'torch/this':>11}{'cpu s':>9}{'error':>10}"
                    f"{'vs torch':>10}  forward steps"
                )
            else:
                header = (
                    f"{'library':<18}{'configuration':<52}{'compile s':>10}"
                    f"{'run s':>9}{'torch/this':>11}{'samples/s':>11}  note"
                )
            print(header)
            print("-" * len(header))

        def fmt(v, f):
            width = f.split(".")[0]
            return format("-", ">" + width) if v is None else format(v, f)

        ratio = None
        if rw["ref"] is not None and rw["run_s"]:
            ref = [
                r["run_s"]
                for r in ROWS
                if (r["case"], r["lib"], r["config"]) == (rw["case"], *rw["ref"])
            ]
            if ref and ref[0]:
                ratio = ref[0] / rw["run_s"]
        elif rw["run_s"]:
            ratio = 1.0
        head = (
            f"{rw['lib']:<18}{rw['config']:<52}{fmt(rw['compile_s'], '10.2f')}"
            f"{fmt(rw['run_s'], '9.4f')}{fmt(ratio, '11.2f')}"
        )
        if "error" in rw:
            print(
                f"{head}{fmt(rw.get('cpu_s'), '9.4f')}{fmt(rw['error'], '10.1e')}"
                f"{fmt(rw['vs_torch'], '10.1e')}  {rw['steps']}"
            )
        elif "n" in rw and rw["run_s"]:
            print(f"{head}{rw['n'] / rw['run_s']:11.0f}  {rw['note']}")
        else:
            print(f"{head}{'-':>11}  {rw.get('note', '')}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument(
        "--full", action="store_true", help="all solver/adjoint/path combinations"
    )
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2, help="torch's thread count")
    p.add_argument(
        "--hairer-dt0",
        action="store_true",
        help="diffrax (direct) rows: dt0 from PIDController.init on the ODETerm "
        "(torchdiffeq's choice, NeuralODE's default) instead of diffeqsolve's 0.01",
    )
    p.add_argument(
        "--skip", default="", help="comma-separated: training,diffusion,torch,raw"
    )
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--n-save", type=int, default=10)
    p.add_argument("--solvers", default="Dopri5,Tsit5")
    p.add_argument("--adjoints", default="RecursiveCheckpoint,Backsolve")
    p.add_argument("--samples", type=int, default=1024)
    p.add_argument("--sde-steps", type=int, default=1000)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*runs in float32.*")
    HAIRER_DT0[0] = args.hairer_dt0
    args.skip = set(filter(None, args.skip.split(",")))
    args.solvers = args.solvers.split(",")
    args.adjoints = args.adjoints.split(",")
    if args.quick:
        args.batch, args.samples, args.sde_steps, args.repeats = 32, 256, 100, 2
    if torch is not None:
        torch.set_num_threads(args.threads)
    dev = jax.devices()[0]
    print(
        f"dynjax {dynjax.__version__}, jax {jax.__version__}, diffrax "
        f"{dfx.__version__ if hasattr(dfx, '__version__') else '?'}, equinox "
        f"{eqx.__version__}, optax {optax.__version__}, device {dev.device_kind} "
        f"({dev.platform}), {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}"
    )
    if torch is not None:
        print(
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"torchdiffeq {torchdiffeq.__version__}"
        )
    print(
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average before: "
        f"{os.getloadavg()}"
        + (", diffrax rows: dt0 by PIDController.init" if args.hairer_dt0 else "")
    )
    if "training" not in args.skip:
        training_case(args)
        settle(args.repeats)
    if "diffusion" not in args.skip:
        diffusion_case(args)
        settle(3)
    print_table()
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    sys.exit(main())
