"""The `dynjax` command line: `dynjax systems`, `dynjax simulate`, `dynjax demo`."""

import argparse
import difflib
import inspect
import os
import sys
import time


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


def _default_instance(cls):
    import jax.random as jr

    try:
        return cls()
    except TypeError:
        pass
    try:
        return cls(key=jr.key(0))
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
    system = _default_instance(cls)
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
        print(f"{cls.__name__} ({kind}, d={d})\n  parameters: {params}\n")
        print(inspect.getdoc(cls))
        return 0
    rows = [(name, *_describe(cls)) for name, cls in _catalogue().items()]
    width = max(len(r[0]) for r in rows)
    print(f"{'system':<{width}}  {'kind':<10}  {'d':>4}  parameters")
    for name, kind, d, params in rows:
        print(f"{name:<{width}}  {kind:<10}  {d:>4}  {params}")
    print(f"\n{len(rows)} systems. `dynjax systems NAME` shows one with its reference.")
    return 0


def _setup(float32: bool):
    import jax

    if not float32:
        jax.config.update("jax_enable_x64", True)


def _cmd_simulate(ns) -> int:
    _setup(ns.float32)
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot
    from ._evolve import trajectory
    from ._system import AbstractFlow

    cls = _lookup(ns.name)
    system = _default_instance(cls)
    if system is None:
        raise SystemExit(
            f"dynjax: {cls.__name__} needs constructor arguments; use it from Python."
        )
    x0 = jnp.asarray(system.default_x0())
    if isinstance(system, AbstractFlow):
        sol = trajectory(system, x0, t1=ns.t1, n_save=ns.points)
    else:
        sol = trajectory(system, x0, n_steps=ns.points - 1)
    import numpy as np

    final = np.array2string(np.asarray(sol.xs[-1]), precision=6)
    print(f"{cls.__name__}: {sol.xs.shape[0]} states, final state {final}")
    os.makedirs(os.path.dirname(os.path.abspath(ns.out)), exist_ok=True)
    ax = plot.attractor(sol, dims=(0, min(1, sol.xs.shape[1] - 1)))
    ax.set_title(cls.__name__)
    ax.figure.savefig(ns.out, dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    print(f"figure written to {os.path.abspath(ns.out)}")
    return 0


def _cmd_demo(ns) -> int:
    _setup(ns.float32)
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    sol = trajectory(lorenz, x0, t1=ns.t1, n_save=100 * int(ns.t1) + 1)
    sol.xs.block_until_ready()
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

    figures = []
    fig, ax = plt.subplots(figsize=(5, 4))
    plot.attractor(sol, dims=(0, 2), ax=ax)
    ax.set_title("Lorenz attractor")
    figures.append(_save(fig, out, "lorenz_attractor.png"))

    figures += _demo_lyapunov(lorenz, xs[-1], out, ns.t_lyapunov)
    figures += _demo_phase_portrait(out)
    print("\nfigures:")
    for path in figures:
        print(f"  {path}")
    return 0


def _save(fig, out: str, name: str) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(out, name)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _demo_lyapunov(lorenz, x0, out: str, t_total: float) -> list[str]:
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np

    from . import plot
    from ._lyapunov import kaplan_yorke_dimension, ks_entropy, lyapunov_spectrum

    print(f"\nLyapunov spectrum (Benettin QR, RK4 dt = 0.01, T = {t_total:g}):")
    start = time.perf_counter()
    spectrum = lyapunov_spectrum(lorenz, jnp.asarray(x0), dt=0.01, t_total=t_total)
    exponents = np.asarray(spectrum.exponents)
    elapsed = time.perf_counter() - start
    reference = np.array([0.9056, 0.0, -14.5723])  # Sprott (2003), Table A.1
    print(f"  exponents  {np.array2string(exponents, precision=4)}")
    print(f"  reference  {np.array2string(reference, precision=4)} (Sprott 2003)")
    print(
        f"  sum {exponents.sum():.4f} (exact: -(sigma + 1 + beta) = "
        f"{-(10 + 1 + 8 / 3):.4f}), Kaplan-Yorke dimension "
        f"{float(kaplan_yorke_dimension(exponents)):.4f}, KS entropy "
        f"{float(ks_entropy(exponents)):.4f} nats per unit time"
    )
    print(f"  {elapsed:.2f} s including compilation")
    fig, ax = plt.subplots(figsize=(5, 4))
    plot.lyapunov_convergence(spectrum, ax=ax)
    ax.set_title("Lorenz: convergence of the Lyapunov spectrum")
    return [_save(fig, out, "lorenz_lyapunov.png")]


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
    fig, ax = plt.subplots(figsize=(5, 4.5))
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
    return [_save(fig, out, "vanderpol_phase_portrait.png")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dynjax",
        description="Differentiable dynamical systems in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("systems", help="list the catalogue, or describe one system")
    p.add_argument("name", nargs="?", default=None, help="a system to describe")
    p.set_defaults(func=_cmd_systems)

    p = sub.add_parser("simulate", help="simulate one catalogue system, plot it")
    p.add_argument("name", help="a catalogue system, e.g. Lorenz")
    p.add_argument("--t1", type=float, default=50.0, help="end time (flows)")
    p.add_argument("--points", type=int, default=5001, help="saved states")
    p.add_argument("--out", default="dynjax_output/simulate.png", help="PNG path")
    p.add_argument("--float32", action="store_true", help="run in float32")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("demo", help="the tour: Lorenz trajectory, spectrum, figures")
    p.add_argument("--out", default="dynjax_output", help="folder for the figures")
    p.add_argument("--t1", type=float, default=50.0, help="trajectory length")
    p.add_argument(
        "--t-lyapunov", type=float, default=1000.0, help="Lyapunov averaging time"
    )
    p.add_argument("--float32", action="store_true", help="run in float32")
    p.set_defaults(func=_cmd_demo)

    ns = parser.parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
