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
2. RandomRateNetwork d = 1000, g = 2, k = 10 (memory bound): dynjax in float64
   and float32 against lyapax (float64). No published reference: the error
   column is the deviation of the leading exponent from dynjax float64.
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


def row(case, lib, config, compile_s, run_s, error, ratio_to=None, note=""):
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
        )
    )


def timed(fn, repeats):
    """(first-call time minus one run, median run time, last output)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    run = statistics.median(runs)
    return max(first - run, 0.0), run, out


# --- Lorenz ------------------------------------------------------------------


def lorenz_case(args):
    dt, n_steps, interval = 0.01, args.lorenz_steps, 10
    n_transient = 1000  # 10 time units
    x0 = jnp.array([1.0, 1.0, 1.0])
    case = f"Lorenz full spectrum, {n_steps} RK4 steps dt={dt}"
    lorenz = systems.Lorenz()

    for method in ("matrix-free", "jacobian"):

        def run(method=method):
            return dynjax.lyapunov_spectrum(
                lorenz, x0, dt=dt, n_steps=n_steps, interval=interval,
                transient=n_transient * dt, tangent_warmup=0, method=method,
            ).exponents

        c, r, out = timed(run, args.repeats)
        err = float(np.max(np.abs(np.asarray(out) - LORENZ_REF)))
        name = "dynjax" if method == "matrix-free" else "dynjax (method='jacobian')"
        row(case, name, f"QR every {interval}", c, r, err, "dynjax")

    try:
        import lyapax
        import lyapax.systems
    except Exception as e:  # pragma: no cover
        row(case, "lyapax", "missing", None, None, None, note=repr(e)[:60])
    else:
        for renorm in (interval, 1):
            problem = lyapax.ode_problem(lyapax.systems.lorenz(), state0=x0, dt=dt)
            f = jax.jit(
                lambda renorm=renorm: lyapax.lyapunov_spectrum(
                    problem, n_steps=n_steps, renorm_every=renorm,
                    t_transient=n_transient * dt,
                ).exponents
            )
            c, r, out = timed(f, args.repeats)
            err = float(np.max(np.abs(np.asarray(out) - LORENZ_REF)))
            note = "same settings" if renorm == interval else "lyapax default renorm_every=1"
            row(case, "lyapax", f"QR every {renorm}", c, r, err, "dynjax", note)

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
            row(case, "dysts", "backward-Euler tangents, QR every step", 0.0, r, err,
                "dynjax", note)

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
                ode.set_integrator("dopri5", first_step=dt, max_step=dt, atol=1e-3, rtol=1e-3)
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
            row(case, "jitcode", f"dopri5 step<=dt, QR every {interval}", compile_s,
                statistics.median(runs), err, "dynjax", "compiled C")


# --- random rate network -------------------------------------------------------


def rate_network_case(args):
    d, k, dt, n_steps, interval = args.rrn_d, 10, 0.05, args.rrn_steps, 10
    case = f"RandomRateNetwork d={d} g=2 k={k}, {n_steps} RK4 steps dt={dt}"
    net = systems.RandomRateNetwork(d, 2.0, key=jax.random.key(0))
    x0 = net.default_x0() * 10
    results = {}
    for dtype in (jnp.float64, jnp.float32):
        net_t = jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, net)

        def run(net_t=net_t, dtype=dtype):
            return dynjax.lyapunov_spectrum(
                net_t, x0.astype(dtype), k=k, dt=dt, n_steps=n_steps,
                interval=interval, transient=0.0, tangent_warmup=0,
            ).exponents

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c, r, out = timed(run, args.repeats)
        results[dtype] = np.asarray(out, dtype=np.float64)
        err = float(abs(results[dtype][0] - results[jnp.float64][0]))
        row(case, "dynjax", jnp.dtype(dtype).name, c, r, err, "dynjax")
    try:
        import lyapax
        import lyapax.systems
    except Exception as e:  # pragma: no cover
        row(case, "lyapax", "missing", None, None, None, note=repr(e)[:60])
    else:
        J = net.J

        def rhs(h):
            return -h + J @ jnp.tanh(h)

        problem = lyapax.ode_problem(rhs, state0=x0, dt=dt)
        f = jax.jit(
            lambda: lyapax.lyapunov_spectrum(
                problem, n_steps=n_steps, k=k, renorm_every=interval
            ).exponents
        )
        c, r, out = timed(f, args.repeats)
        err = float(abs(np.asarray(out)[0] - results[jnp.float64][0]))
        row(case, "lyapax", "float64", c, r, err, "dynjax")


# --- vmapped sweep -------------------------------------------------------------


def sweep_case(args):
    n, dt, n_steps = args.sweep_n, 0.01, args.sweep_steps
    case = f"vmapped sweep: {n} Lorenz rho values, {n_steps} steps each"
    rhos = jnp.linspace(20.0, 200.0, n)
    x0 = jnp.array([1.0, 1.0, 1.0])

    @eqx.filter_jit
    def sweep(rhos):
        return eqx.filter_vmap(
            lambda rho: dynjax.lyapunov_spectrum(
                systems.Lorenz(rho=rho), x0, dt=dt, n_steps=n_steps, interval=10,
                transient=1.0, tangent_warmup=0,
            ).exponents
        )(rhos)

    c, r, out = timed(lambda: sweep(rhos), args.repeats)
    # Liouville: every spectrum sums to -(sigma + 1 + beta)
    err = float(np.max(np.abs(np.asarray(out).sum(axis=1) + 11.0 + 8.0 / 3.0)))
    row(case, "dynjax", f"{n / r:.0f} spectra/s", c, r, err, "dynjax",
        "error: max |sum + 13.667|")
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
    c, r, out = timed(lambda: f(rhos), args.repeats)
    err = float(np.max(np.abs(np.asarray(out).sum(axis=1) + 11.0 + 8.0 / 3.0)))
    row(case, "lyapax", f"{n / r:.0f} spectra/s", c, r, err, "dynjax",
        "error: max |sum + 13.667|")


def print_table():
    base = {}
    for rw in ROWS:
        if rw["lib"] == "dynjax" and rw["case"] not in base and rw["run_s"]:
            base[rw["case"]] = rw["run_s"]
    header = f"{'library':<28}{'configuration':<40}{'compile s':>10}{'run s':>10}{'error':>11}{'peer/dynjax':>13}  note"
    current = None
    for rw in ROWS:
        if rw["case"] != current:
            current = rw["case"]
            print()
            print(current)
            print(header)
            print("-" * len(header))
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        ratio = None
        if rw["run_s"] and rw["case"] in base:
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
    p.add_argument("--skip", default="", help="comma-separated: dysts,jitcode,lorenz,rrn,sweep")
    p.add_argument("--lorenz-steps", type=int, default=100_000)
    p.add_argument("--dysts-steps", type=int, default=20_000)
    p.add_argument("--rrn-d", type=int, default=1000)
    p.add_argument("--rrn-steps", type=int, default=200)
    p.add_argument("--sweep-n", type=int, default=256)
    p.add_argument("--sweep-steps", type=int, default=10_000)
    args = p.parse_args(argv)
    args.skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.lorenz_steps, args.dysts_steps = 10_000, 2_000
        args.rrn_d, args.rrn_steps = 200, 50
        args.sweep_n, args.sweep_steps = 16, 1000
        args.repeats = 3
    jax.config.update("jax_enable_x64", True)
    dev = jax.devices()[0]
    print(
        f"dynjax {dynjax.__version__}, jax {jax.__version__}, device {dev.device_kind} "
        f"({dev.platform}), {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    )
    if "lorenz" not in args.skip:
        lorenz_case(args)
    if "rrn" not in args.skip:
        rate_network_case(args)
    if "sweep" not in args.skip:
        sweep_case(args)
    print_table()


if __name__ == "__main__":
    sys.exit(main())
