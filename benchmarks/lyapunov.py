"""Lyapunov spectra: dynjax against lyapax, dysts and jitcode, side by side.

Prints one table: wall time after compilation (median of several runs, with
`block_until_ready`), compile time separately, the error against the reference,
and the ratio (peer time / dynjax time) for each peer measured in the same run.

    python benchmarks/lyapunov.py            # full sizes (as in benchmarks/README.md)
    python benchmarks/lyapunov.py --quick    # small sizes, a smoke test
    python benchmarks/lyapunov.py --skip dysts,jitcode

Cases (all peers use the same step size `dt` and step count):

1. Lorenz (10, 28, 8/3), full spectrum, RK4 with dt = 0.01, QR every 10 steps.
   Reference: (0.9056, 0, -14.5723) (Sprott 2003); the error column is the
   largest absolute deviation over the three exponents.
2. RandomRateNetwork d = 1000, g = 2, k = 10 (one large matrix product per
   Runge-Kutta stage): dynjax in float64 and float32 against lyapax in both. No
   published reference: the error column is the deviation of the leading
   exponent from dynjax float64.
3. A vmapped sweep of 256 Lorenz rho values (spectra per second).

Peers that fail to import are reported as missing. Runs on CPU or GPU (whatever
JAX picks); the peers dysts and jitcode are CPU/NumPy/C.
"""

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np


os.environ.setdefault("JAX_ENABLE_X64", "1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import dynjax  # noqa: E402
from dynjax import systems  # noqa: E402


LORENZ_REF = np.array([0.9056, 0.0, -14.5723])
ROWS = []


def row(case, lib, config, compile_s, run_s, error, ratio_to=None, note="", fn=None):
    ROWS.append(
        dict(
            case=case,
            lib=lib,
            config=config,
            compile_s=compile_s,
            run_s=run_s,
            error=error,
            ratio_to=ratio_to,
            note=note,
            fn=fn,
        )
    )


def warm(fn):
    """The first call (compilation + one run): (its time, output)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


def settle(repeats):
    """Time every pending row's function, interleaved round by round.

    Interleaving makes the ratios robust to other load on the machine: every
    library sees the same conditions. Reports the median over rounds; the
    compile time is the first call minus the median run.
    """
    pending = [rw for rw in ROWS if rw["fn"] is not None]
    times = {id(rw): [] for rw in pending}
    for _ in range(repeats):
        for rw in pending:
            t0 = time.perf_counter()
            jax.block_until_ready(rw["fn"]())
            times[id(rw)].append(time.perf_counter() - t0)
    for rw in pending:
        rw["run_s"] = statistics.median(times[id(rw)])
        rw["compile_s"] = max(rw["compile_s"] - rw["run_s"], 0.0)
        rw["fn"] = None


# --- Lorenz ------------------------------------------------------------------


def lorenz_case(args):
    dt, n_steps, interval = 0.01, args.lorenz_steps, 10
    n_transient = 1000  # 10 time units
    x0 = jnp.array([1.0, 1.0, 1.0])
    case = f"Lorenz full spectrum, {n_steps} RK4 steps dt={dt}"
    lorenz = systems.Lorenz()

    for method in ("jacobian", "matrix-free"):

        def run(method=method):
            return dynjax.lyapunov_spectrum(
                lorenz,
                x0,
                dt=dt,
                n_steps=n_steps,
                interval=interval,
                transient=n_transient * dt,
                tangent_warmup=0,
                method=method,
            ).exponents

        first, out = warm(run)
        err = float(np.max(np.abs(np.asarray(out) - LORENZ_REF)))
        default = method == "jacobian"  # the default for d <= 4
        name = "dynjax" if default else "dynjax (alternative)"
        config = f"QR every {interval}, method='{method}'"
        note = "default" if default else ""
        row(case, name, config, first, None, err, "dynjax", note, fn=run)

    try:
        import lyapax
        import lyapax.systems
    except Exception as e:  # pragma: no cover
        row(case, "lyapax", "missing", None, None, None, note=repr(e)[:60])
    else:
        for renorm in (interval, 1):
            problem = lyapax.ode_problem(lyapax.systems.lorenz(), state0=x0, dt=dt)
            f = jax.jit(
                lambda renorm=renorm: (
                    lyapax.lyapunov_spectrum(
                        problem,
                        n_steps=n_steps,
                        renorm_every=renorm,
                        t_transient=n_transient * dt,
                    ).exponents
                )
            )
            first, out = warm(f)
            err = float(np.max(np.abs(np.asarray(out) - LORENZ_REF)))
            note = (
                "same settings"
                if renorm == interval
                else "lyapax default renorm_every=1"
            )
            row(
                case,
                "lyapax",
                f"QR every {renorm}",
                first,
                None,
                err,
                "dynjax",
                note,
                f,
            )

    if "dysts" not in args.skip:
        try:
            with contextlib.redirect_stderr(None), contextlib.redirect_stdout(None):
                import dysts.flows
                from dysts.analysis import find_lyapunov_exponents
        except Exception as e:  # pragma: no cover
            row(case, "dysts", "missing", None, None, None, note=repr(e)[:60])
        else:
            model = dysts.flows.Lorenz()
            model.params["beta"] = 8.0 / 3.0
            model.ic = np.array([1.0, 1.0, 1.0])
            # dysts samples its trajectory at period / pts_per_period; choose dt=0.01
            pts = int(round(model.period / dt))
            n = args.dysts_steps
            t0 = time.perf_counter()
            lam = find_lyapunov_exponents(model, n, pts_per_period=pts)
            r = (time.perf_counter() - t0) * (n_steps / n)
            err = float(np.max(np.abs(np.asarray(lam) - LORENZ_REF)))
            note = (
                f"timed on {n} steps, scaled x{n_steps / n:g}" if n != n_steps else ""
            )
            row(
                case,
                "dysts",
                "backward-Euler tangents, QR every step",
                0.0,
                r,
                err,
                "dynjax",
                note,
            )

    if "jitcode" not in args.skip:
        try:
            import symengine
            from jitcode import jitcode_lyap, y
        except Exception as e:  # pragma: no cover
            row(case, "jitcode", "missing", None, None, None, note=repr(e)[:60])
        else:
            s, rh, b = 10.0, 28.0, 8.0 / 3.0
            f = [s * (y(1) - y(0)), y(0) * (rh - y(2)) - y(1), y(0) * y(1) - b * y(2)]
            t0 = time.perf_counter()
            cwd = os.getcwd()
            # jitcode builds with setuptools in the working directory; keep it
            # away from this repository's pyproject.toml.
            os.chdir(tempfile.mkdtemp())
            with contextlib.redirect_stderr(None), contextlib.redirect_stdout(None):
                ode = jitcode_lyap(f, n_lyap=3, verbose=False, simplify=False)
                ode.compile_C(verbose=False)
                ode.set_integrator(
                    "dopri5", first_step=dt, max_step=dt, atol=1e-3, rtol=1e-3
                )
            os.chdir(cwd)
            compile_s = time.perf_counter() - t0
            del symengine

            def run_jitcode():
                ode.set_initial_value(np.array([1.0, 1.0, 1.0]), 0.0)
                t = 0.0
                for _ in range(n_transient // interval):
                    t += interval * dt
                    ode.integrate(t)
                lyaps = np.zeros(3)
                for _ in range(n_steps // interval):
                    t += interval * dt
                    lyaps += ode.integrate(t)[1]
                return lyaps / (n_steps // interval)

            runs = []
            for _ in range(max(1, args.repeats // 2)):
                t0 = time.perf_counter()
                lam = run_jitcode()
                runs.append(time.perf_counter() - t0)
            err = float(np.max(np.abs(np.sort(lam)[::-1] - LORENZ_REF)))
            row(
                case,
                "jitcode",
                f"dopri5 step<=dt, QR every {interval}",
                compile_s,
                statistics.median(runs),
                err,
                "dynjax",
                "compiled C",
            )


# --- random rate network -------------------------------------------------------


def rate_network_case(args):
    d, k, dt, n_steps, interval = args.rrn_d, 10, 0.05, args.rrn_steps, 10
    case = f"RandomRateNetwork d={d} g=2 k={k}, {n_steps} RK4 steps dt={dt}"
    net = systems.RandomRateNetwork(d, 2.0, key=jax.random.key(0))
    x0 = net.default_x0() * 10
    results = {}
    from dynjax._lyapunov import _fuse

    default_merge = _fuse.merge_default()
    for dtype in (jnp.float64, jnp.float32):
        for merge in (default_merge, not default_merge):
            net_t = jax.tree.map(
                lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, net
            )

            @eqx.filter_jit
            def run(net_t, x0):
                return dynjax.lyapunov_spectrum(
                    net_t,
                    x0,
                    k=k,
                    dt=dt,
                    n_steps=n_steps,
                    interval=interval,
                    transient=0.0,
                    tangent_warmup=0,
                ).exponents

            import warnings

            _fuse.ENABLED = merge
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn = lambda run=run, net_t=net_t, dtype=dtype: run(  # noqa: E731
                    net_t, x0.astype(dtype)
                )
                first, out = warm(fn)
            _fuse.ENABLED = default_merge
            out = np.asarray(out, dtype=np.float64)
            results.setdefault(dtype, out)
            err = float(abs(out[0] - results[jnp.float64][0]))
            name = "dynjax" if merge == default_merge else "dynjax (alternative)"
            how = "merged" if merge else "separate"
            config = f"{jnp.dtype(dtype).name}, J products {how}"
            row(
                case,
                name,
                config,
                first,
                None,
                err,
                "dynjax",
                "default" if merge == default_merge else "",
                fn=fn,
            )
    try:
        import lyapax
        import lyapax.systems
    except Exception as e:  # pragma: no cover
        row(case, "lyapax", "missing", None, None, None, note=repr(e)[:60])
    else:
        for dtype in (jnp.float64, jnp.float32):
            J = net.J.astype(dtype)

            def rhs(h, J=J):
                return -h + J @ jnp.tanh(h)

            problem = lyapax.ode_problem(rhs, state0=x0.astype(dtype), dt=dt)
            f = jax.jit(
                lambda problem=problem: (
                    lyapax.lyapunov_spectrum(
                        problem, n_steps=n_steps, k=k, renorm_every=interval
                    ).exponents
                )
            )
            first, out = warm(f)
            out = np.asarray(out, dtype=np.float64)
            err = float(abs(out[0] - results[jnp.float64][0]))
            name = jnp.dtype(dtype).name
            ref = ("dynjax", f"{name}, J products merged")
            note = f"ratio against dynjax {name}"
            row(case, "lyapax", name, first, None, err, ref, note, fn=f)


# --- time to first result -------------------------------------------------------

_TTFR = """
import os, sys, time
os.environ["JAX_ENABLE_X64"] = "1"
t0 = time.perf_counter()
import jax, jax.numpy as jnp
x0 = jnp.ones(3)
if sys.argv[1] == "lyapax":
    import lyapax, lyapax.systems
    problem = lyapax.ode_problem(lyapax.systems.lorenz(), state0=x0, dt=0.01)
    jitted = {}
    def run(n):
        if n not in jitted:
            jitted[n] = jax.jit(lambda: lyapax.lyapunov_spectrum(
                problem, n_steps=n, renorm_every=10, t_transient=10.0).exponents)
        return jitted[n]()
else:
    import dynjax
    lorenz = dynjax.systems.Lorenz()
    def run(n):
        return dynjax.lyapunov_spectrum(lorenz, x0, dt=0.01, n_steps=n, interval=10,
                                        transient=10.0, tangent_warmup=0).exponents
t1 = time.perf_counter()
jax.block_until_ready(run(100_000)); t2 = time.perf_counter()
steady = []
for _ in range(5):
    a = time.perf_counter(); jax.block_until_ready(run(100_000))
    steady.append(time.perf_counter() - a)
steady = sorted(steady)[2]
a = time.perf_counter(); jax.block_until_ready(run(70_000))
t_new = time.perf_counter() - a
print(t1 - t0, t2 - t1, steady, t_new)
"""


def ttfr_case(args):
    """Time to first result, each library in a fresh process (no shared caches):
    import, the first call (compilation + one run), a steady call, and a call
    with a new run length (70_000 steps: dynjax reuses the compiled program,
    lyapax's jitted call compiles again)."""
    import subprocess

    case = "time to first result: Lorenz spectrum, fresh process, 1e5 RK4 steps"
    rounds = {"dynjax": [], "lyapax": []}
    for _ in range(args.repeats):
        for lib in rounds:
            out = subprocess.run(
                [sys.executable, "-c", _TTFR, lib], capture_output=True, text=True
            )
            if out.returncode:
                rounds[lib] = None
                continue
            if rounds[lib] is not None:
                rounds[lib].append([float(v) for v in out.stdout.split()[-4:]])
    base = None
    for lib, runs in rounds.items():
        if not runs:
            row(case, lib, "missing", None, None, None)
            continue
        imp, first, steady, new = (statistics.median(col) for col in zip(*runs))
        compile_s = first - steady
        if lib == "dynjax":
            base = compile_s
        ratio = None if base is None else compile_s / base
        ROWS.append(
            dict(
                case=case,
                lib=lib,
                config=f"import {imp:.2f} s, new length {new:.3f} s",
                compile_s=compile_s,
                run_s=steady,
                error=None,
                ratio_to=None,
                note=(
                    f"compile ratio {ratio:.2f}" if ratio is not None else ""
                ) + f"; first result {first:.2f} s",
                fn=None,
            )
        )


# --- vmapped sweep -------------------------------------------------------------


def sweep_case(args):
    n, dt, n_steps = args.sweep_n, 0.01, args.sweep_steps
    case = f"vmapped sweep: {n} Lorenz rho values, {n_steps} steps each"
    rhos = jnp.linspace(20.0, 200.0, n)
    x0 = jnp.array([1.0, 1.0, 1.0])

    @eqx.filter_jit
    def sweep(rhos, method):
        return eqx.filter_vmap(
            lambda rho: (
                dynjax.lyapunov_spectrum(
                    systems.Lorenz(rho=rho),
                    x0,
                    dt=dt,
                    n_steps=n_steps,
                    interval=10,
                    transient=1.0,
                    tangent_warmup=0,
                    method=method,
                ).exponents
            )
        )(rhos)

    for method in (None, "jacobian"):
        fn = lambda method=method: sweep(rhos, method)  # noqa: E731
        first, out = warm(fn)
        # Liouville: every spectrum sums to -(sigma + 1 + beta)
        err = float(np.max(np.abs(np.asarray(out).sum(axis=1) + 11.0 + 8.0 / 3.0)))
        name = "dynjax" if method is None else "dynjax (alternative)"
        config = f"{n} spectra" + ("" if method is None else f", method='{method}'")
        row(case, name, config, first, None, err, "dynjax", "SPECTRA", fn=fn)
    try:
        import lyapax
        import lyapax.systems
    except Exception:
        return

    def one(rho):
        problem = lyapax.ode_problem(lyapax.systems.lorenz(rho=rho), state0=x0, dt=dt)
        return lyapax.lyapunov_spectrum(
            problem, n_steps=n_steps, renorm_every=10, t_transient=1.0
        ).exponents

    f = jax.jit(jax.vmap(one))
    fn2 = lambda: f(rhos)  # noqa: E731
    first, out = warm(fn2)
    err = float(np.max(np.abs(np.asarray(out).sum(axis=1) + 11.0 + 8.0 / 3.0)))
    row(case, "lyapax", f"{n} spectra", first, None, err, "dynjax", "SPECTRA", fn=fn2)


# --- k < d ----------------------------------------------------------------


def partial_case(args):
    n, n_steps = 40, args.l96_steps
    case = f"Lorenz96 N={n} F=8, {n_steps} RK4 steps dt=0.01: cost against k"
    l96 = systems.Lorenz96(N=n, F=8.0)
    x0 = l96.default_x0()
    for k in (n, 10, 1):

        def run(k=k):
            return dynjax.lyapunov_spectrum(
                l96,
                x0,
                k=k,
                dt=0.01,
                n_steps=n_steps,
                transient=1.0,
                tangent_warmup=0,
            ).exponents

        first, out = warm(run)
        row(case, "dynjax", f"k={k}", first, None, None, "dynjax", "", fn=run)


def print_table():
    base = {}
    for rw in ROWS:
        if rw["lib"] == "dynjax" and rw["case"] not in base and rw["run_s"]:
            base[rw["case"]] = rw["run_s"]
    header = (
        f"{'library':<28}{'configuration':<40}{'compile s':>10}{'run s':>10}"
        f"{'error':>11}{'peer/dynjax':>13}  note"
    )
    current = None
    for rw in ROWS:
        if rw["case"] != current:
            current = rw["case"]
            print()
            print(current)
            print(header)
            print("-" * len(header))

        def fmt(v, f):
            return format("-", ">" + f.split(".")[0]) if v is None else format(v, f)

        if rw["note"] == "SPECTRA":
            n = int(rw["config"].split()[0])
            rw["note"] = f"{n / rw['run_s']:.0f} spectra/s; error: max |sum + 13.667|"
        ratio = None
        if isinstance(rw["ratio_to"], tuple):
            # against a specific dynjax row (lib, config) of the same case
            ref = [
                r["run_s"]
                for r in ROWS
                if (r["case"], r["lib"], r["config"]) == (rw["case"], *rw["ratio_to"])
            ]
            if rw["run_s"] and ref and ref[0]:
                ratio = rw["run_s"] / ref[0]
        elif rw["run_s"] and rw["case"] in base:
            ratio = rw["run_s"] / base[rw["case"]]
        print(
            f"{rw['lib']:<28}{rw['config']:<40}{fmt(rw['compile_s'], '10.2f')}"
            f"{fmt(rw['run_s'], '10.4f')}{fmt(rw['error'], '11.2e')}"
            f"{fmt(ratio, '13.2f')}  {rw['note']}"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated: ttfr,dysts,jitcode,lorenz,rrn,sweep,partial",
    )
    p.add_argument("--lorenz-steps", type=int, default=100_000)
    p.add_argument("--dysts-steps", type=int, default=2_000)
    p.add_argument("--rrn-d", type=int, default=1000)
    p.add_argument("--rrn-steps", type=int, default=200)
    p.add_argument("--sweep-n", type=int, default=256)
    p.add_argument("--sweep-steps", type=int, default=10_000)
    p.add_argument("--l96-steps", type=int, default=10_000)
    args = p.parse_args(argv)
    args.skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.lorenz_steps, args.dysts_steps = 10_000, 2_000
        args.rrn_d, args.rrn_steps = 200, 50
        args.sweep_n, args.sweep_steps = 16, 1000
        args.l96_steps = 1000
        args.repeats = 3
    jax.config.update("jax_enable_x64", True)
    dev = jax.devices()[0]
    print(
        f"dynjax {dynjax.__version__}, jax {jax.__version__}, device {dev.device_kind} "
        f"({dev.platform}), {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}"
    )
    if "ttfr" not in args.skip:
        ttfr_case(args)
    if "lorenz" not in args.skip:
        lorenz_case(args)
        settle(args.repeats)
    if "rrn" not in args.skip:
        rate_network_case(args)
        settle(args.repeats)
    if "sweep" not in args.skip:
        sweep_case(args)
        settle(args.repeats)
    if "partial" not in args.skip:
        partial_case(args)
        settle(args.repeats)
    print_table()


if __name__ == "__main__":
    sys.exit(main())
