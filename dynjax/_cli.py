"""The `dynjax` command line: `dynjax systems`, `dynjax simulate`, `dynjax demo`.

`simulate` and `demo` switch on JAX's persistent compilation cache in a user
cache directory (`$XDG_CACHE_HOME/dynjax/jax`, by default `~/.cache/dynjax/jax`),
so a second run loads its compiled programs instead of compiling them again.
`--no-cache` or the environment variable `DYNJAX_NO_CACHE=1` turns it off. The
library itself never switches the cache on.
"""

import argparse
import difflib
import inspect
import os
import sys
import time


_NO_CACHE_ENV = "DYNJAX_NO_CACHE"


def _catalogue() -> dict[str, type]:
    from . import systems
    from ._system import AbstractSystem

    return {
        name: obj
        for name, obj in sorted(vars(systems).items())
        if inspect.isclass(obj) and issubclass(obj, AbstractSystem)
    }


def _lookup(name: str) -> type:
    catalogue = _catalogue()
    folded = {k.lower(): k for k in catalogue}
    if name.lower() in folded:
        return catalogue[folded[name.lower()]]
    close = difflib.get_close_matches(name.lower(), list(folded), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(folded[c] for c in close)}?" if close else ""
    raise SystemExit(
        f"dynjax: unknown system {name!r}.{hint} Run `dynjax systems` to list the "
        "catalogue."
    )


def _instance(cls, **params):
    """`cls(**params)`, with a fixed key for systems drawn at random; `None` if the
    system needs arguments the command line cannot give (arrays)."""
    import jax.random as jr

    try:
        return cls(**params)
    except TypeError:
        pass
    try:
        return cls(key=jr.key(0), **params)
    except TypeError:
        return None


def _describe(cls) -> tuple[str, str, str]:
    import dataclasses

    import numpy as np

    from ._system import AbstractFlow, AbstractMap

    kind = (
        "flow"
        if issubclass(cls, AbstractFlow)
        else "map"
        if issubclass(cls, AbstractMap)
        else "driven map"
    )
    system = _instance(cls)
    if system is None:
        return kind, "-", "(needs arguments, see its docstring)"
    params = []
    for field in dataclasses.fields(system):
        value = getattr(system, field.name)
        if field.metadata.get("static", False):
            params.append(f"{field.name}={value}")
            continue
        array = np.asarray(value)
        if array.ndim == 0:
            params.append(f"{field.name}={float(array):.6g}")
        else:
            params.append(f"{field.name}:{array.shape}")
    return kind, str(system.d), ", ".join(params)


def _cmd_systems(ns) -> int:
    if ns.name is not None:
        cls = _lookup(ns.name)
        kind, d, params = _describe(cls)
        print(f"{cls.__name__} ({kind}, d={d})\n  parameters: {params}")
        if cls.state_names is not None:
            print(f"  state: ({', '.join(cls.state_names)})")
        print()
        print(inspect.getdoc(cls))
        return 0
    rows = [(name, *_describe(cls)) for name, cls in _catalogue().items()]
    width = max(len(r[0]) for r in rows)
    print(f"{'system':<{width}}  {'kind':<10}  {'d':>4}  parameters")
    for name, kind, d, params in rows:
        print(f"{name:<{width}}  {kind:<10}  {d:>4}  {params}")
    print(f"\n{len(rows)} systems. `dynjax systems NAME` shows one with its reference.")
    return 0


# ------------------------------------------------------------------ set-up


def cache_dir(environ=None) -> str | None:
    """Where the command line keeps JAX's persistent compilation cache.

    `$XDG_CACHE_HOME/dynjax/jax` (default `~/.cache/dynjax/jax`), or `None` when
    the environment variable `DYNJAX_NO_CACHE` is set to anything but `0` or the
    empty string.
    """
    environ = os.environ if environ is None else environ
    if environ.get(_NO_CACHE_ENV, "") not in ("", "0"):
        return None
    base = environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "dynjax", "jax")


def _setup(ns) -> None:
    import jax

    if not ns.float32:
        jax.config.update("jax_enable_x64", True)
    path = None if ns.no_cache else cache_dir()
    if path is not None:
        # Every program is cached: the command line runs many small ones, whose
        # compile times (0.1 to 1 s each) add up to most of a run.
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _check(result, what: str) -> None:
    """`throw=True`, outside the compiled program.

    The command line calls verbs with `throw=False` and raises here: a compiled
    program that raises at run time holds a host callback, and JAX's persistent
    cache does not store programs with host callbacks.
    """
    from ._results import RESULTS

    if result != RESULTS.successful:
        raise SystemExit(f"dynjax: {what} failed. {RESULTS[result]}")


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return os.path.abspath(path)


# ---------------------------------------------------------------- simulate


def _settable(cls) -> dict[str, object]:
    """The constructor parameters the command line can set, with their defaults
    (a float for array parameters, a Python int or bool for static ones)."""
    import numpy as np

    system = _instance(cls)
    out = {}
    for name in inspect.signature(cls).parameters:
        if name == "key" or not hasattr(system, name):
            continue
        value = getattr(system, name)
        if isinstance(value, (bool, int, float)):
            out[name] = value
        elif np.ndim(value) == 0:
            out[name] = float(np.asarray(value))
    return out


def _parse_params(cls, items: list[str]) -> dict[str, object]:
    settable = _settable(cls)
    listed = ", ".join(settable) if settable else "none"
    params = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SystemExit(
                f"dynjax: --param takes NAME=VALUE (e.g. --param rho=35), got {item!r}."
            )
        if name not in settable:
            raise SystemExit(
                f"dynjax: {cls.__name__} has no parameter {name!r} that can be set "
                f"from the command line. Its parameters: {listed}."
            )
        default = settable[name]
        try:
            if isinstance(default, bool):
                lowered = text.strip().lower()
                if lowered not in ("true", "false", "1", "0"):
                    raise ValueError
                value = lowered in ("true", "1")
            elif isinstance(default, int):
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            kind = type(default).__name__
            raise SystemExit(
                f"dynjax: --param {name}={text!r}: {name} takes a {kind} (default "
                f"{default})."
            ) from None
        params[name] = value
    return params


def _parse_x0(text: str, d: int):
    import numpy as np

    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise SystemExit(
            f"dynjax: --x0 takes {d} comma-separated numbers, got {text!r}."
        ) from None
    if len(values) != d:
        raise SystemExit(
            f"dynjax: --x0 has {len(values)} value(s) but the state has d={d}: give "
            f"{d} comma-separated numbers (e.g. --x0 {','.join(['1'] * d)})."
        )
    return np.asarray(values)


def _changed(cls, params: dict) -> list[str]:
    """`["rho=35"]`: the parameters that differ from their defaults."""
    defaults = _settable(cls)
    return [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in params.items()
        if v != defaults[k]
    ]


_COBWEB_STEPS = 100


def _window(sol, start, stop):
    """The states `start:stop` of a trajectory."""
    return type(sol)(
        ts=sol.ts[start:stop], xs=sol.xs[start:stop], result=sol.result, stats=sol.stats
    )


def _cmd_simulate(ns) -> int:
    # (the arguments are checked before `_setup` switches global JAX options on)
    cls = _lookup(ns.name)
    params = _parse_params(cls, ns.param)
    _setup(ns)
    system = _instance(cls, **params)
    if system is None:
        raise SystemExit(
            f"dynjax: {cls.__name__} needs constructor arguments (arrays); use it "
            "from Python."
        )

    import jax.numpy as jnp
    import numpy as np

    from . import plot
    from ._evolve import trajectory
    from ._system import AbstractFlow, AbstractMap

    if not isinstance(system, (AbstractFlow, AbstractMap)):
        raise SystemExit(
            f"dynjax: {cls.__name__} is driven by inputs; use it from Python."
        )
    flow = isinstance(system, AbstractFlow)
    if flow and ns.steps is not None:
        raise SystemExit(f"dynjax: {cls.__name__} is a flow: give --t1, not --steps.")
    if not flow and (ns.t1 is not None or ns.points is not None):
        raise SystemExit(
            f"dynjax: {cls.__name__} is a map: give --steps, not --t1/--points."
        )
    d = system.d
    x0 = system.default_x0() if ns.x0 is None else _parse_x0(ns.x0, d)
    dtype = jnp.float32 if ns.float32 else jnp.float64
    x0 = jnp.asarray(x0, dtype=dtype)
    if ns.transient < 0:
        raise SystemExit("dynjax: --transient must be >= 0.")
    if flow:
        t1 = 50.0 if ns.t1 is None else ns.t1
        points = 5001 if ns.points is None else ns.points
        if not t1 > 0 or points < 2:
            raise SystemExit("dynjax: --t1 must be positive and --points >= 2.")
        ts = jnp.linspace(ns.transient, ns.transient + t1, points, dtype=dtype)
        sol = trajectory(system, x0, t1=ns.transient + t1, ts=ts, throw=False)
        kept = sol
    else:
        steps = (200 if d == 1 else 5000) if ns.steps is None else ns.steps
        transient = int(ns.transient)
        if transient != ns.transient or steps < 1:
            raise SystemExit(
                "dynjax: for a map, --steps (>= 1) and --transient are numbers of "
                "iterations (integers)."
            )
        sol = trajectory(system, x0, n_steps=transient + steps, throw=False)
        kept = _window(sol, transient, None)
    _check(sol.result, f"simulating {cls.__name__}")
    final = np.array2string(np.asarray(sol.xs[-1]), precision=6)
    print(f"{cls.__name__}: {kept.xs.shape[0]} states, final state {final}")

    plt = _mpl()
    changed = _changed(cls, params)
    tag = "_".join([cls.__name__.lower(), *changed])
    title = cls.__name__ + (f" ({', '.join(changed)})" if changed else "")
    if d == 1 and not flow:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        plot.time_series(kept, system=system, ax=left)
        plot.cobweb(system, _window(kept, 0, _COBWEB_STEPS + 1), ax=right)
        left.set_title(title)
        right.set_title(f"cobweb (first {min(_COBWEB_STEPS, steps)} steps)")
    else:
        fig, ax = plt.subplots(figsize=(5, 4))
        plot.attractor(kept, system=system, ax=ax)
        ax.set_title(title)
    out = ns.out or os.path.join("dynjax_output", f"{tag}.png")
    print(f"figure written to {_save(fig, out)}")
    return 0


# -------------------------------------------------------------------- demo


_LORENZ_REFERENCE = (0.9056, 0.0, -14.5723)  # Sprott (2003), Table A.1


def _cmd_demo(ns) -> int:
    _setup(ns)
    import jax.numpy as jnp
    import numpy as np

    from . import plot, systems
    from ._evolve import trajectory
    from ._system import jacobian

    out = os.path.abspath(ns.out)
    os.makedirs(out, exist_ok=True)
    print("dynjax demo: the Lorenz system (sigma=10, rho=28, beta=8/3)\n")

    lorenz = systems.Lorenz()
    x0 = jnp.array([1.0, 1.0, 1.0])
    start = time.perf_counter()
    sol = trajectory(lorenz, x0, t1=ns.t1, n_save=100 * int(ns.t1) + 1, throw=False)
    _check(sol.result, "the Lorenz trajectory")
    elapsed = time.perf_counter() - start
    xs = np.asarray(sol.xs)
    print(
        f"trajectory: t in [0, {ns.t1:g}], {int(sol.stats['num_steps'])} adaptive "
        f"Tsit5 steps, {elapsed:.2f} s including compilation"
    )
    print(f"  final state {np.array2string(xs[-1], precision=4)}")
    print(
        f"  attractor bounding box x in [{xs[:, 0].min():.1f}, {xs[:, 0].max():.1f}], "
        f"z in [{xs[:, 2].min():.1f}, {xs[:, 2].max():.1f}]"
    )
    print("equilibria (closed form) and their Jacobian eigenvalues:")
    for point in np.asarray(lorenz.equilibria()):
        eig = np.linalg.eigvals(np.asarray(jacobian(lorenz, jnp.asarray(point))))
        eig = eig[np.argsort(-eig.real)]
        print(f"  {np.array2string(point, precision=3)}: {np.round(eig, 3)}")

    plt = _mpl()
    figures = []
    fig, ax = plt.subplots(figsize=(5, 4))
    plot.attractor(sol, system=lorenz, dims=(0, 2), ax=ax)
    ax.set_title("Lorenz attractor")
    figures.append(_save(fig, os.path.join(out, "lorenz_attractor.png")))

    figures += _demo_lyapunov(lorenz, xs[-1], out, ns.t_lyapunov)
    figures += _demo_phase_portrait(out)
    print("\nfigures:")
    for path in figures:
        print(f"  {path}")
    return 0


def _demo_lyapunov(lorenz, x0, out: str, t_total: float) -> list[str]:
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    from . import plot
    from ._lyapunov import kaplan_yorke_dimension, ks_entropy, lyapunov_spectrum

    print(f"\nLyapunov spectrum (Benettin QR, RK4 dt = 0.01, T = {t_total:g}):")
    start = time.perf_counter()
    spectrum = lyapunov_spectrum(
        lorenz, jnp.asarray(x0), dt=0.01, t_total=t_total, throw=False
    )
    _check(spectrum.result, "the Lyapunov spectrum")
    exponents = np.asarray(spectrum.exponents)
    elapsed = time.perf_counter() - start
    reference = np.array(_LORENZ_REFERENCE)
    print(f"  exponents  {np.array2string(exponents, precision=4)}")
    print(f"  reference  {np.array2string(reference, precision=4)} (Sprott 2003)")
    print(
        f"  sum {exponents.sum():.4f} (exact: -(sigma + 1 + beta) = "
        f"{-(10 + 1 + 8 / 3):.4f}), Kaplan-Yorke dimension "
        f"{float(kaplan_yorke_dimension(exponents)):.4f}, KS entropy "
        f"{float(ks_entropy(exponents)):.4f} nats per unit time"
    )
    print(f"  {elapsed:.2f} s including compilation")
    fig, ax = plt.subplots(figsize=(6, 4))
    plot.lyapunov_convergence(spectrum, reference=reference, ax=ax)
    ax.set_title("Lorenz: convergence of the Lyapunov spectrum")
    return [_save(fig, os.path.join(out, "lorenz_lyapunov.png"))]


def _demo_phase_portrait(out: str) -> list[str]:
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    from . import plot, systems
    from ._equilibria import find_equilibria, linearize
    from ._periodic import find_periodic_orbit

    vdp = systems.VanDerPol(mu=1.0)
    print("\nVan der Pol oscillator (mu = 1): equilibria, limit cycle, phase portrait")
    guesses = jnp.stack(jnp.meshgrid(jnp.linspace(-3, 3, 5), jnp.linspace(-3, 3, 5)))
    found = find_equilibria(vdp, guesses.reshape(2, -1).T)
    points = found.unique
    for point in points:
        lin = linearize(vdp, jnp.asarray(point))
        print(
            f"  equilibrium {np.array2string(point, precision=3)}: "
            f"{lin.stability_name}, eigenvalues "
            f"{np.round(np.asarray(lin.eigenvalues), 4)}"
        )
    orbit = find_periodic_orbit(vdp, jnp.array([2.0, 0.0]), 6.5)
    multipliers = np.abs(np.asarray(orbit.multipliers))
    print(
        f"  limit cycle: period {float(orbit.period):.4f} (Van der Pol, mu = 1: "
        f"6.6633), Floquet multipliers |m| = {np.round(np.sort(multipliers), 5)}"
    )
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    plot.phase_portrait(
        vdp,
        (-3.5, 3.5),
        (-3.5, 3.5),
        ax=ax,
        trajectories=jnp.array([[0.1, 0.0], [3.0, 3.0]]),
        equilibria=points,
        orbits=(orbit,),
    )
    ax.set_title("Van der Pol (mu = 1)")
    return [_save(fig, os.path.join(out, "vanderpol_phase_portrait.png"))]


# -------------------------------------------------------------------- main


def _add_common(p) -> None:
    p.add_argument("--float32", action="store_true", help="run in float32")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help=(
            "do not use the persistent compilation cache (also: "
            f"{_NO_CACHE_ENV}=1); by default it lives in "
            "$XDG_CACHE_HOME/dynjax/jax, else ~/.cache/dynjax/jax"
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dynjax",
        description="Differentiable dynamical systems in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("systems", help="list the catalogue, or describe one system")
    p.add_argument("name", nargs="?", default=None, help="a system to describe")
    p.set_defaults(func=_cmd_systems)

    p = sub.add_parser(
        "simulate",
        help="simulate one catalogue system, plot it",
        description=(
            "Simulate a catalogue system and plot it: flows as a line through two "
            "coordinates, maps as points, one-dimensional maps as a time series "
            "and a cobweb diagram. Axes carry the system's state names."
        ),
    )
    p.add_argument("name", help="a catalogue system, e.g. Lorenz")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a parameter (repeatable), e.g. --param rho=35",
    )
    p.add_argument(
        "--x0", default=None, metavar="A,B,...", help="initial state, d numbers"
    )
    p.add_argument("--t1", type=float, default=None, help="duration (flows; 50)")
    p.add_argument(
        "--points", type=int, default=None, help="saved states (flows; 5001)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="iterations (maps; 5000, or 200 for one-dimensional maps)",
    )
    p.add_argument(
        "--transient",
        type=float,
        default=0.0,
        help="time (flows) or iterations (maps) run first and discarded",
    )
    p.add_argument(
        "--out",
        default=None,
        help="PNG path (default dynjax_output/NAME_PARAM=VALUE.png)",
    )
    _add_common(p)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("demo", help="the tour: Lorenz trajectory, spectrum, figures")
    p.add_argument("--out", default="dynjax_output", help="folder for the figures")
    p.add_argument("--t1", type=float, default=50.0, help="trajectory length")
    p.add_argument(
        "--t-lyapunov", type=float, default=1000.0, help="Lyapunov averaging time"
    )
    _add_common(p)
    p.set_defaults(func=_cmd_demo)

    ns = parser.parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
