"""Continuation: dynjax against PyDSTool (PyCont) and pycont-lite.

Prints one markdown table. Cases:

1. **Lorenz C+ through its Hopf point.** `sigma = 10, beta = 8/3`; the branch of
   equilibria `C+ = (sqrt(beta (rho - 1)), sqrt(beta (rho - 1)), rho - 1)` from
   `rho = 10` forward to `rho = 30`, with the subcritical Hopf point at
   `rho_H = sigma (sigma + beta + 3) / (sigma - beta - 1) = 24.7368...`
   (Strogatz, *Nonlinear Dynamics and Chaos*, section 9.2) located on the way.
   Every library gets the same start, initial step `1e-2`, largest step `0.5`
   (arclength) and Newton tolerance `1e-10`:

   - dynjax: `dynjax.continuation(Lorenz(...), "rho", x0, 10.0,
     direction="forward", p_max=30.0, ds_max=0.5)` in float64 (one compiled loop;
     Hopf points refined by Newton's method on `F = 0, J v = i omega v`).
     "compile" is the first call minus the median of the later ones.
   - PyDSTool 0.91.0 (PyCont, pure Python; `EP-C` curve, `LocBifPoints="all"`,
     stops at the `rho <= 30` domain boundary). PyDSTool 0.91.0 (2020, the last
     release) imports the `parser` module (removed in Python 3.10) and
     `numpy.int` / `numpy.Inf` (removed in NumPy 1.24 / 2.0), while JAX needs
     NumPy >= 2: it runs in a subprocess under its own Python 3.9 environment,
     given by `--pydstool-python` (or `$PYDSTOOL_PYTHON`); see
     `benchmarks/README.md`. Its "compile" is the import and the building of
     the generator and the continuation class; "first result" adds the first
     `forward()`.
   - pycont-lite 0.6.0 (`pycont.arclengthContinuation`, matrix-free
     Newton-Krylov with finite-difference Jacobian-vector products, Hopf points
     by Jacobi-Davidson on the eigenvalues nearest the imaginary axis). It runs
     in this process (NumPy 2 and SciPy are enough). Its Hopf detection asks
     `scipy.sparse.linalg.eigs` for `max(1, d - 2)` eigenvalues, which for
     `d = 3` is one eigenvalue of a complex pair (here the one with
     `Im < 0`), filtered out, so `initializeBranch` fails with `IndexError:
     index -1 is out of bounds`; the Lorenz field is therefore padded with two
     decoupled coordinates `du/dt = -100 u` (`d = 5`, three eigenvalues
     tracked), which leave the branch and its Hopf point unchanged.

   Error: `|rho - rho_H|` of the located Hopf point. Points: points on the
   branch (pycont-lite: over both pieces it splits the branch into at the Hopf
   point).

2. **The Hopf point over 64 values of sigma.** `sigma` in `[8, 20]`, `p_max =
   40` (`rho_H` runs from 24.70 to 31.4). dynjax: the single-instance call
   under `eqx.filter_vmap` over a batch of Lorenz systems (one compiled loop for
   the batch; every lane runs until the slowest is done), and the same call in
   a Python loop. Peers: a Python loop over the 64 values, timed once (each
   call is a fresh continuation, so there is nothing to warm up). Error: the
   largest `|rho - rho_H(sigma)|`.

3. **Two-parameter stability charts, 64 x 64.** The Brusselator
   `x' = a - (b + 1) x + x^2 y, y' = b x - x^2 y` over `a in [0.5, 2]`,
   `b in [0.5, 5]` from `x0 = (1, 1)`: its equilibrium `(a, b/a)` is stable iff
   `b < 1 + a^2` (Hopf; Prigogine and Lefever 1968). Lorenz C+ over
   `sigma in [5, 20]`, `rho in [2, 40]` from `x0 = 1.05 C+(rho)`: stable iff
   `rho < rho_H(sigma)`. dynjax: `dynjax.stability_chart` (if this dynjax has
   none, the rows are skipped with a message). Peer: a Python loop over the
   grid, `scipy.optimize.root` (`hybr`, with the analytic Jacobian) and
   `numpy.linalg.eigvals` per grid point. Error: grid points whose stability
   disagrees with the closed form (points on the boundary itself not counted).

Times are medians over `--repeats` calls after a warm-up call, with
`block_until_ready`. The last column is dynjax's time over the peer's (below 1:
dynjax is faster), for the steady run and, in its note, for the first result.

    python benchmarks/continuation.py --pydstool-python ~/.venv-pydstool/bin/python
    python benchmarks/continuation.py           # no PyDSTool rows; ~7 min on 2 cores
    python benchmarks/continuation.py --quick   # 8-value sweep, 16 x 16 charts
    python benchmarks/continuation.py --skip sweep-peers,chart

This file also runs as the PyDSTool worker (`--worker pydstool`, under Python
3.9; it then imports neither JAX nor dynjax and prints one JSON line).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np


SIGMA, BETA = 10.0, 8.0 / 3.0
RHO0, RHO1 = 10.0, 30.0
DS, DS_MIN, DS_MAX = 1e-2, 1e-6, 0.5
TOL = 1e-10
MAX_POINTS = 200
SWEEP_RHO1 = 40.0
SWEEP_SIGMA = (8.0, 20.0)


def rho_hopf(sigma, beta=BETA):
    """The Hopf point of C+- (closed form)."""
    return sigma * (sigma + beta + 3.0) / (sigma - beta - 1.0)


def c_plus(rho, beta=BETA):
    r = np.sqrt(beta * (rho - 1.0))
    return np.array([r, r, rho - 1.0])


def sweep_sigmas(n):
    return np.linspace(*SWEEP_SIGMA, n)


# --- PyDSTool (worker: Python 3.9, NumPy < 1.24; no JAX here) ----------------------


def pydstool_worker(repeats, n_sweep):
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        import PyDSTool as dst
    t_import = time.perf_counter() - t0

    def build(sigma, rho1):
        DSargs = dst.args(name="lorenz")
        DSargs.pars = {"sigma": sigma, "beta": BETA, "rho": RHO0}
        DSargs.pdomain = {"rho": [0.0, rho1]}
        DSargs.varspecs = {
            "x": "sigma*(y-x)",
            "y": "x*(rho-z)-y",
            "z": "x*y-beta*z",
        }
        x0 = c_plus(RHO0)
        DSargs.ics = {"x": x0[0], "y": x0[1], "z": x0[2]}
        return dst.ContClass(dst.Generator.Vode_ODEsystem(DSargs))

    def curve(PC, name):
        a = dst.args(name=name, type="EP-C")
        a.freepars = ["rho"]
        a.StepSize, a.MinStepSize, a.MaxStepSize = DS, DS_MIN, DS_MAX
        a.MaxNumPoints = 2 * MAX_POINTS
        a.FuncTol = a.VarTol = a.TestTol = TOL
        a.LocBifPoints = "all"
        a.StopAtPoints = ["B"]
        a.SaveEigen = True
        PC.newCurve(a)
        with contextlib.redirect_stdout(io.StringIO()):
            PC[name].forward()
        # (Not getSpecialPoint("H1"): it came back None for one or two of the 64
        # sweep values, whose curves had found their Hopf point.)
        found = PC[name].BifPoints["H"].found
        return (
            (float(found[0].X["rho"]) if found else np.nan),
            len(PC[name].sol),
            (float(found[0].l1) if found else np.nan),
        )

    t0 = time.perf_counter()
    PC = build(SIGMA, RHO1)
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    rho, n, l1 = curve(PC, "EQ0")
    t_first = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        PC = build(SIGMA, RHO1)  # (a fresh one: curves pile up in a ContClass)
        t0 = time.perf_counter()
        rho, n, l1 = curve(PC, "EQ")
        times.append(time.perf_counter() - t0)
    out = dict(
        version=importlib.metadata.version("PyDSTool"),
        python=platform.python_version(),
        numpy=np.__version__,
        import_s=t_import,
        setup_s=t_setup,
        first_s=t_first,
        run_s=statistics.median(times),
        rho=rho,
        n=n,
        l1=l1,
    )
    if n_sweep:
        t0 = time.perf_counter()
        found = [curve(build(s, SWEEP_RHO1), "SW")[0] for s in sweep_sigmas(n_sweep)]
        out["sweep_s"] = time.perf_counter() - t0
        out["sweep_rho"] = found
    print("PYDSTOOL_RESULT " + json.dumps(out))


def run_pydstool(python, repeats, n_sweep):
    """Runs the worker under `python`; its result, or the reason there is none."""
    cmd = [python, os.path.abspath(__file__), "--worker", "pydstool"]
    cmd += ["--repeats", str(repeats), "--sweep-n", str(n_sweep)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, repr(e)[:120]
    for line in p.stdout.splitlines():
        if line.startswith("PYDSTOOL_RESULT "):
            return json.loads(line.split(" ", 1)[1]), None
    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
    return None, tail[0][:160]


if __name__ == "__main__" and "--worker" in sys.argv:
    _p = argparse.ArgumentParser()
    _p.add_argument("--worker")
    _p.add_argument("--repeats", type=int, default=5)
    _p.add_argument("--sweep-n", type=int, default=0)
    _a = _p.parse_args()
    pydstool_worker(_a.repeats, _a.sweep_n)
    sys.exit(0)


# --- the main process -----------------------------------------------------------

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


jax.config.update("jax_enable_x64", True)

_t0 = time.perf_counter()
import dynjax  # noqa: E402


DYNJAX_IMPORT_S = time.perf_counter() - _t0

try:
    _t0 = time.perf_counter()
    import pycont
except Exception as e:  # pragma: no cover
    pycont = None
    PYCONT_MISSING = repr(e)[:80]
else:
    PYCONT_IMPORT_S = time.perf_counter() - _t0
    PYCONT_MISSING = None

ROWS = []


def row(case, lib, config, **kw):
    ROWS.append(dict(case=case, lib=lib, config=config, **kw))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- case 1 and 2: dynjax -----------------------------------------------------------


def dynjax_branch(system, rho1):
    return dynjax.continuation(
        system,
        "rho",
        jnp.asarray(c_plus(RHO0)),
        RHO0,
        direction="forward",
        p_max=rho1,
        ds=DS,
        ds_min=1e-8,
        ds_max=DS_MAX,
        n_points=MAX_POINTS,
        rtol=TOL,
    )


def first_hopf(branch):
    """The parameter of the first Hopf point (NaN if none), per batch lane."""
    kind = np.asarray(branch.bifurcations.kind)
    par = np.asarray(branch.bifurcations.parameter)
    is_h = kind == 2
    first = np.argmax(is_h, axis=-1)
    val = np.take_along_axis(par, first[..., None], -1)[..., 0]
    return np.where(is_h.any(-1), val, np.nan)


def case_dynjax(repeats, n_sweep):
    system = dynjax.systems.Lorenz(sigma=SIGMA, rho=RHO0, beta=BETA)
    run = lambda: jax.block_until_ready(dynjax_branch(system, RHO1))  # noqa: E731
    branch, first = timed(run)
    steady = median_time(run, repeats)
    rho = float(first_hopf(branch))
    l1 = float(branch.bifurcations.lyapunov_coefficient[0])
    row(
        "Lorenz C+, rho 10 -> 30",
        "dynjax",
        "continuation, float64",
        compile_s=first - steady,
        run_s=steady,
        first_s=first,
        rho=rho,
        error=abs(rho - rho_hopf(SIGMA)),
        n=int(branch.n_points),
        note=f"import {DYNJAX_IMPORT_S:.2f} s; l1 = {l1:.3g}",
    )
    if not n_sweep:
        return
    sigmas = sweep_sigmas(n_sweep)
    systems = eqx.filter_vmap(
        lambda s: dynjax.systems.Lorenz(sigma=s, rho=RHO0, beta=BETA)
    )(jnp.asarray(sigmas))
    batched = eqx.filter_jit(eqx.filter_vmap(lambda s: dynjax_branch(s, SWEEP_RHO1)))
    go = lambda: jax.block_until_ready(batched(systems))  # noqa: E731
    branches, first = timed(go)
    steady = median_time(go, repeats)
    found = first_hopf(branches)
    row(
        f"Hopf point over {n_sweep} sigma values",
        "dynjax",
        "eqx.filter_vmap(continuation)",
        compile_s=first - steady,
        run_s=steady,
        first_s=first,
        rho=np.nan,
        error=float(np.max(np.abs(found - rho_hopf(sigmas)))),
        n=int(np.max(np.asarray(branches.n_points))),
        note=f"{int(np.sum(np.isfinite(found)))}/{n_sweep} found; n = longest",
    )
    # The single-system call, once per sigma (no vmap; compiled once for all).
    one = lambda s: first_hopf(jax.block_until_ready(dynjax_branch(s, SWEEP_RHO1)))  # noqa: E731
    lorenz = [dynjax.systems.Lorenz(sigma=s, rho=RHO0, beta=BETA) for s in sigmas]
    _, first = timed(lambda: one(lorenz[0]))
    loop = lambda: np.array([one(s) for s in lorenz])  # noqa: E731
    found, first_loop = timed(loop)
    steady = median_time(loop, max(1, min(repeats, 3)))
    row(
        f"Hopf point over {n_sweep} sigma values",
        "dynjax",
        "Python loop of continuation",
        compile_s=first - steady / n_sweep,
        run_s=steady,
        first_s=first + first_loop,
        rho=np.nan,
        error=float(np.max(np.abs(found - rho_hopf(sigmas)))),
        n=np.nan,
        note=f"{int(np.sum(np.isfinite(found)))}/{n_sweep} found",
    )


# --- case 1 and 2: pycont-lite --------------------------------------------------------


def pycont_run(sigma, rho1):
    """pycont-lite on the Lorenz field padded to d = 5 (see the module docstring)."""

    def G(u, p):
        x, y, z = u[:3]
        f = [sigma * (y - x), x * (p - z) - y, x * y - BETA * z]
        return np.concatenate([f, -100.0 * u[3:]])

    u0 = np.concatenate([c_plus(RHO0), [0.0, 0.0]])
    sp = {
        "tolerance": TOL,
        "initial_directions": "increase_p",
        "param_max": rho1,
        "hopf_detection": True,
        "limit_cycle_continuation": False,
    }
    # (scipy's Newton-Krylov prints its iterations and warns of 0/0 at convergence.)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = pycont.arclengthContinuation(
            G, u0, RHO0, DS_MIN, DS_MAX, DS, MAX_POINTS, solver_parameters=sp,
            verbosity="off",
        )  # fmt: skip
    hopf = [e.p for e in res.events if e.kind == "HB"]
    n = sum(len(b.p_path) for b in res.branches if not b.is_lc)
    return (hopf[0] if hopf else np.nan), n


def case_pycont(repeats, n_sweep):
    if pycont is None:
        row("Lorenz C+, rho 10 -> 30", "pycont-lite", "not installed",
            note=PYCONT_MISSING)  # fmt: skip
        return
    (rho, n), first = timed(lambda: pycont_run(SIGMA, RHO1))
    steady = median_time(lambda: pycont_run(SIGMA, RHO1), repeats)
    row(
        "Lorenz C+, rho 10 -> 30",
        "pycont-lite " + pycont.__version__,
        "d padded to 5, FD Newton-Krylov",
        compile_s=PYCONT_IMPORT_S,
        run_s=steady,
        first_s=PYCONT_IMPORT_S + first,
        rho=rho,
        error=abs(rho - rho_hopf(SIGMA)),
        n=n,
        note="compile = import",
    )
    if not n_sweep or "sweep-peers" in SKIP:
        return
    sigmas = sweep_sigmas(n_sweep)
    found, t = timed(lambda: [pycont_run(s, SWEEP_RHO1)[0] for s in sigmas])
    found = np.asarray(found)
    row(
        f"Hopf point over {n_sweep} sigma values",
        "pycont-lite " + pycont.__version__,
        "Python loop, timed once",
        compile_s=np.nan,
        run_s=t,
        first_s=t,
        rho=np.nan,
        error=float(np.nanmax(np.abs(found - rho_hopf(sigmas)))),
        n=np.nan,
        note=f"{int(np.sum(np.isfinite(found)))}/{n_sweep} found",
    )


def case_pydstool(python, repeats, n_sweep):
    if not python:
        row("Lorenz C+, rho 10 -> 30", "PyDSTool", "skipped",
            note="no --pydstool-python / $PYDSTOOL_PYTHON (see README)")  # fmt: skip
        return
    n_sweep = 0 if "sweep-peers" in SKIP else n_sweep
    out, why = run_pydstool(python, repeats, n_sweep)
    if out is None:
        row("Lorenz C+, rho 10 -> 30", "PyDSTool", "failed", note=why)
        return
    lib = f"PyDSTool {out['version']}"
    row(
        "Lorenz C+, rho 10 -> 30",
        lib,
        f"PyCont EP-C, Python {out['python']}",
        compile_s=out["import_s"] + out["setup_s"],
        run_s=out["run_s"],
        first_s=out["import_s"] + out["setup_s"] + out["first_s"],
        rho=out["rho"],
        error=abs(out["rho"] - rho_hopf(SIGMA)),
        n=out["n"],
        note=f"compile = import + setup; subprocess; l1 = {out['l1']:.3g}",
    )
    if n_sweep:
        sigmas = sweep_sigmas(n_sweep)
        found = np.asarray(out["sweep_rho"], dtype=float)
        row(
            f"Hopf point over {n_sweep} sigma values",
            lib,
            "Python loop, timed once",
            compile_s=np.nan,
            run_s=out["sweep_s"],
            first_s=out["sweep_s"],
            rho=np.nan,
            error=float(np.nanmax(np.abs(found - rho_hopf(sigmas)))),
            n=np.nan,
            note=f"{int(np.sum(np.isfinite(found)))}/{n_sweep} found",
        )


# --- case 3: stability charts -----------------------------------------------------


def brusselator_field(u, a, b):
    x, y = u
    return np.array([a - (b + 1) * x + x * x * y, b * x - x * x * y])


def brusselator_jac(u, a, b):
    x, y = u
    return np.array([[-(b + 1) + 2 * x * y, x * x], [b - 2 * x * y, -x * x]])


def lorenz_field(u, sigma, rho):
    x, y, z = u
    return np.array([sigma * (y - x), x * (rho - z) - y, x * y - BETA * z])


def lorenz_jac(u, sigma, rho):
    x, y, z = u
    return np.array([[-sigma, sigma, 0.0], [rho - z, -1.0, -x], [y, x, -BETA]])


def lorenz_x0(sigma, rho, xp=np):
    """The Newton start: C+ moved by 5 % (so that Newton has work to do)."""
    r = xp.sqrt(BETA * (rho - 1.0))
    return 1.05 * xp.stack([r, r, rho - 1.0])


# name, system, parameter names, axes, x0 (array or function of the parameters),
# field and Jacobian for the scipy loop, and the signed distance to the stability
# boundary (negative: stable; closed forms).
CHARTS = {
    "brusselator": dict(
        title="Brusselator (a, b) chart",
        system=lambda: dynjax.systems.Brusselator(),
        names=("a", "b"),
        axes=((0.5, 2.0), (0.5, 5.0)),
        x0=np.array([1.0, 1.0]),
        field=brusselator_field,
        jac=brusselator_jac,
        gap=lambda a, b: b - 1.0 - a**2,
    ),
    "lorenz": dict(
        title="Lorenz C+ (sigma, rho) chart",
        system=lambda: dynjax.systems.Lorenz(beta=BETA),
        names=("sigma", "rho"),
        axes=((5.0, 20.0), (2.0, 40.0)),
        x0=lorenz_x0,
        field=lorenz_field,
        jac=lorenz_jac,
        gap=lambda s, r: r - rho_hopf(s),
    ),
}


def chart_errors(spec, stable, p1, p2):
    """Grid points whose stability disagrees with the closed form (points on the
    boundary itself, neutral, are not counted)."""
    gap = spec["gap"](p1[:, None], p2[None, :])
    return int(np.sum((stable != (gap < 0)) & (np.abs(gap) > 1e-9)))


def chart_scipy(spec, p1, p2):
    """The peer: a Python loop over the grid, `scipy.optimize.root` (MINPACK
    `hybr`, analytic Jacobian) and `numpy.linalg.eigvals` per point."""
    import scipy.optimize

    f, J = spec["field"], spec["jac"]
    x0 = spec["x0"]
    stable = np.zeros((len(p1), len(p2)), bool)
    for i, u in enumerate(p1):
        for j, v in enumerate(p2):
            start = x0(u, v) if callable(x0) else x0
            # (MINPACK's relative `xtol` left at its default: at 1e-10 hybr often
            # reports "not making good progress" on a converged root; the residual
            # decides.)
            sol = scipy.optimize.root(f, start, args=(u, v), jac=J, method="hybr")
            found = np.max(np.abs(f(sol.x, u, v))) < 1e-8
            lam = np.linalg.eigvals(J(sol.x, u, v))
            stable[i, j] = found and np.all(lam.real < 0)
    return stable


def stability_chart_fn():
    fn, how = getattr(dynjax, "stability_chart", None), "stability_chart"
    if fn is None:  # landed in dynjax/_continuation/_chart.py before its export
        try:
            from dynjax._continuation._chart import stability_chart as fn
        except ImportError:
            fn = None
        how = "_continuation._chart.stability_chart (not exported yet)"
    return fn, how


def case_chart(key, n, repeats):
    spec = CHARTS[key]
    p1, p2 = (np.linspace(lo, hi, n) for lo, hi in spec["axes"])
    name = f"{spec['title']}, {n} x {n}"
    fn, how = stability_chart_fn()
    if fn is None:
        row(name, "dynjax", "skipped",
            note="this dynjax has no stability_chart yet")  # fmt: skip
    else:
        system = spec["system"]()
        x0 = spec["x0"]
        if callable(x0):
            f0 = x0
            x0 = lambda u, v: f0(u, v, jnp)  # noqa: E731
            how += ", x0(p1, p2)"
        else:
            x0 = jnp.asarray(x0)

        def go():
            return jax.block_until_ready(
                fn(system, spec["names"], jnp.asarray(p1), jnp.asarray(p2), x0)
            )

        chart, first = timed(go)
        steady = median_time(go, repeats)
        ok = np.asarray(chart.converged)
        stable = ok & (np.asarray(chart.n_unstable) == 0)
        row(
            name,
            "dynjax",
            how,
            compile_s=first - steady,
            run_s=steady,
            first_s=first,
            rho=np.nan,
            error=chart_errors(spec, stable, p1, p2),
            n=n * n,
            note=f"{int(ok.sum())} converged",
        )
    if "chart-peer" in SKIP:
        return
    stable, first = timed(lambda: chart_scipy(spec, p1, p2))
    steady = median_time(lambda: chart_scipy(spec, p1, p2), max(1, min(repeats, 3)))
    row(
        name,
        "scipy " + __import__("scipy").__version__,
        "loop: root(hybr) + eigvals",
        compile_s=np.nan,
        run_s=steady,
        first_s=first,
        rho=np.nan,
        error=chart_errors(spec, stable, p1, p2),
        n=n * n,
        note="",
    )


# --- the table ------------------------------------------------------------------


def fmt(v, spec):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec)


def table():
    head = ("case", "library", "configuration", "compile s", "run s", "Hopf rho",
            "error", "points", "dynjax/peer", "note")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rw in ROWS:
        ratio, note = "-", rw.get("note", "")
        base = next(
            (r for r in ROWS if r["case"] == rw["case"] and r["lib"] == "dynjax"),
            None,
        )
        if (
            rw["lib"] != "dynjax"
            and base is not None
            and base.get("run_s") is not None
            and rw.get("run_s") is not None
        ):
            ratio = f"{base['run_s'] / rw['run_s']:.3g}"
            note += f"; first result {base['first_s'] / rw['first_s']:.3g}"
        err = rw.get("error")
        err = fmt(err, "d" if isinstance(err, (int, np.integer)) else ".2e")
        cells = (
            rw["case"],
            rw["lib"],
            rw["config"],
            fmt(rw.get("compile_s"), ".2f"),
            fmt(rw.get("run_s"), ".4f"),
            fmt(rw.get("rho"), ".10f"),
            err,
            fmt(rw.get("n"), "d") if isinstance(rw.get("n"), int) else "-",
            ratio,
            note.lstrip("; "),
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


SKIP = set()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    p.add_argument("--quick", action="store_true", help="8-value sweep, 16 x 16 chart")
    p.add_argument("--sweep-n", type=int, default=64, help="sigma values (case 2)")
    p.add_argument("--chart-n", type=int, default=64, help="chart grid side (case 3)")
    p.add_argument(
        "--pydstool-python",
        default=os.environ.get("PYDSTOOL_PYTHON"),
        help="a Python (3.9) with PyDSTool 0.91.0, NumPy < 1.24, SciPy < 1.11",
    )
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated: pydstool, pycont, sweep, sweep-peers, chart (both), "
        "brusselator, lorenz, chart-peer",
    )
    args = p.parse_args(argv)
    SKIP.update(s for s in args.skip.split(",") if s)
    if args.quick:
        args.sweep_n, args.chart_n = 8, 16
    n_sweep = 0 if "sweep" in SKIP else args.sweep_n
    print(
        f"dynjax {dynjax.__version__}, jax {jax.__version__}, device "
        f"{jax.devices()[0].platform}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}"
    )
    print(f"rho_H = {rho_hopf(SIGMA):.12f} (closed form)")
    case_dynjax(args.repeats, n_sweep)
    if "pycont" not in SKIP:
        case_pycont(args.repeats, n_sweep)
    if "pydstool" not in SKIP:
        case_pydstool(args.pydstool_python, args.repeats, n_sweep)
    for key in CHARTS:
        if "chart" not in SKIP and key not in SKIP:
            case_chart(key, args.chart_n, args.repeats)
    print()
    print(table())


if __name__ == "__main__":
    main()
