"""Matplotlib helpers for dynjax results (public namespace `dynjax.plot`)."""

import matplotlib.pyplot as plt
import numpy as np


def attractor(trajectory, *, dims=(0, 2), ax=None, **plot_kwargs):
    """Plot a trajectory projected onto two state coordinates.

    **Arguments:**

    - `trajectory`: a `dynjax.Trajectory`.
    - `dims`: the two state indices to plot (default `(0, 2)`, the Lorenz butterfly).
    - `ax`: a matplotlib Axes; a new figure is made if `None`.
    - `plot_kwargs`: passed to `ax.plot`.

    **Returns:**

    The Axes.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    xs = np.asarray(trajectory.xs)
    i, j = dims
    ax.plot(xs[:, i], xs[:, j], **{"lw": 0.4, **plot_kwargs})
    ax.set_xlabel(f"x[{i}]")
    ax.set_ylabel(f"x[{j}]")
    return ax


def lyapunov_convergence(result, ax=None):
    """Plot the running Lyapunov exponent estimates against accumulated time.

    A converged run shows flat curves at the right; drifting curves mean the run
    should be continued (`dynjax.lyapunov_spectrum(..., state=result.state)`).

    **Arguments:**

    - `result`: a `dynjax.LyapunovResult`.
    - `ax`: a matplotlib Axes; a new figure is made if `None`.

    **Returns:**

    The Axes, with one line per exponent (in the order of `result.exponents`).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    times = np.asarray(result.times)
    history = np.asarray(result.history)
    for i in range(history.shape[1]):
        ax.plot(times, history[:, i], lw=1.0, label=f"$\\lambda_{{{i + 1}}}$")
    ax.axhline(0.0, color="0.6", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("accumulated time")
    ax.set_ylabel("running estimate")
    ax.legend(loc="best", fontsize="small")
    return ax


_CLASS_MARKERS = {
    "stable node": ("o", "black", "black"),
    "stable focus": ("o", "tab:blue", "tab:blue"),
    "unstable node": ("o", "black", "white"),
    "unstable focus": ("o", "tab:blue", "white"),
    "saddle": ("X", "tab:red", "tab:red"),
    "saddle-focus": ("X", "tab:purple", "tab:purple"),
    "center": ("s", "tab:green", "white"),
    "non-hyperbolic": ("D", "tab:gray", "white"),
}


def phase_portrait(
    system,
    xlim,
    ylim,
    *,
    ax=None,
    trajectories=(),
    t1=20.0,
    equilibria=(),
    manifolds=(),
    orbits=(),
    nullclines=True,
    density=1.2,
    n_grid=41,
    args=None,
):
    """Phase portrait of a planar flow: vector field, nullclines, trajectories,
    equilibria marked by stability class, invariant manifolds and periodic orbits.

    **Arguments:**

    - `system`: a dynjax flow with `d = 2` (autonomous; evaluated at `t = 0`).
    - `xlim`, `ylim`: `(min, max)` of the two axes.
    - `ax`: a matplotlib Axes; a new figure is made if `None`.
    - `trajectories`: initial states (shape `(2,)` each, or an `(n, 2)` array),
        integrated with `dynjax.trajectory` for `t1` time units and drawn.
    - `t1`: duration of each trajectory.
    - `equilibria`: points (an `(n, 2)` array) or a `dynjax.Equilibria` result;
        each is classified with `dynjax.linearize` and marked by class
        (filled: stable, hollow: unstable, cross: saddle).
    - `manifolds`: `dynjax.Manifold` results (both branches are drawn; stable
        manifolds in blue, unstable in red).
    - `orbits`: `dynjax.PeriodicOrbit` results, drawn as closed curves.
    - `nullclines`: draw the `x'` = 0 and `y'` = 0 curves (zero contours of each
        component of the vector field).
    - `density`: streamplot density.
    - `n_grid`: grid points per axis for the streamplot and nullclines.
    - `args`: run-time arguments of the system.

    **Returns:**

    The Axes.
    """
    import jax
    import jax.numpy as jnp

    from ._equilibria import Equilibria, linearize
    from ._evolve import trajectory as _trajectory
    from ._system import AbstractFlow

    if not isinstance(system, AbstractFlow):
        raise ValueError("`phase_portrait` draws a flow (an `AbstractFlow`).")
    if system.d not in (None, 2):
        raise ValueError(
            f"`phase_portrait` draws planar flows (d = 2); this system has d = "
            f"{system.d}. Project a trajectory with `dynjax.plot.attractor` instead."
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    xs = np.linspace(*xlim, n_grid)
    ys = np.linspace(*ylim, n_grid)
    X, Y = np.meshgrid(xs, ys)
    pts = jnp.asarray(np.stack([X.ravel(), Y.ravel()], axis=1), dtype=float)
    F = np.asarray(jax.vmap(lambda x: system.vector_field(0.0, x, args))(pts))
    U, V = F[:, 0].reshape(X.shape), F[:, 1].reshape(X.shape)
    speed = np.hypot(U, V)
    ax.streamplot(
        X,
        Y,
        U,
        V,
        density=density,
        color=np.log1p(speed),
        cmap="Greys",
        linewidth=0.6,
        arrowsize=0.8,
    )
    if nullclines:
        ax.contour(
            X, Y, U, levels=[0.0], colors="tab:orange", linewidths=1.0, linestyles="--"
        )
        ax.contour(
            X, Y, V, levels=[0.0], colors="tab:green", linewidths=1.0, linestyles="--"
        )
        ax.plot([], [], "--", color="tab:orange", lw=1, label="x' = 0")
        ax.plot([], [], "--", color="tab:green", lw=1, label="y' = 0")
    x0s = np.asarray(trajectories, dtype=float).reshape(-1, 2)
    for x0 in x0s:
        traj = _trajectory(
            system, jnp.asarray(x0), t1=t1, n_save=1001, args=args, throw=False
        )
        path = np.asarray(traj.xs)
        ax.plot(path[:, 0], path[:, 1], color="tab:blue", lw=1.0)
        ax.plot(*x0, ".", color="tab:blue")
    for m in manifolds:
        stable = float(np.asarray(m.ts)[-1]) < 0
        color = "tab:blue" if stable else "tab:red"
        for branch in np.asarray(m.branches):
            ax.plot(branch[:, 0], branch[:, 1], color=color, lw=1.6)
        ax.plot(
            [],
            [],
            color=color,
            lw=1.6,
            label="stable manifold" if stable else "unstable manifold",
        )
    for orbit in orbits:
        path = np.asarray(orbit.xs)
        ax.plot(
            path[:, 0],
            path[:, 1],
            color="tab:purple",
            lw=2.0,
            label=f"periodic orbit, T = {float(orbit.period):.4g}",
        )
    if isinstance(equilibria, Equilibria):
        equilibria = equilibria.unique
    labelled = set()
    for x_star in np.asarray(equilibria, dtype=float).reshape(-1, 2):
        name = linearize(system, jnp.asarray(x_star), args=args).stability_name
        marker, edge, face = _CLASS_MARKERS[name]
        ax.plot(
            *x_star,
            marker=marker,
            ms=9,
            mec=edge,
            mfc=face,
            mew=1.5,
            ls="none",
            label=None if name in labelled else name,
            zorder=5,
        )
        labelled.add(name)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    return ax
