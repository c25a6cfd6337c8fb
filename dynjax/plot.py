"""Matplotlib helpers for dynjax results (public namespace `dynjax.plot`).

Axes are labelled with the system's coordinate names (`state_names`, e.g. `x`,
`y`, `z` for Lorenz; `x[0]`, `x[1]`, ... when a system has none). Orbits of maps
are drawn as points, orbits of flows as lines. matplotlib is imported on first
use, so `import dynjax` does not pay for it.
"""

import equinox as eqx
import jax
import numpy as np


def _new_axes(ax, figsize):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
    return ax


def _labels(system, labels, d: int) -> tuple[str, ...]:
    """`labels` if given, else the system's `state_names`, else `x[i]`."""
    if labels is not None:
        labels = tuple(labels)
        if len(labels) != d or not all(isinstance(n, str) for n in labels):
            raise ValueError(
                f"`labels` must be {d} strings, one per coordinate; got {labels!r}."
            )
        return labels
    if system is None:
        return tuple(f"x[{i}]" for i in range(d))
    from ._system._coordinates import state_labels

    return state_labels(system, d)


def _is_discrete(system, trajectory) -> bool:
    if system is not None:
        from ._system import AbstractFlow

        return not isinstance(system, AbstractFlow)
    return np.issubdtype(np.asarray(trajectory.ts).dtype, np.integer)


def _legend_outside(ax):
    """A legend to the right of the axes, so that it never covers the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            fontsize="small",
            frameon=False,
        )


def attractor(
    trajectory, *, system=None, labels=None, dims=None, ax=None, **plot_kwargs
):
    """Plot a trajectory projected onto two state coordinates.

    Orbits of flows are drawn as lines; orbits of maps as points (markers, no
    connecting lines: consecutive iterates of a map are not neighbours in state
    space). The orbit of a one-dimensional map is drawn as its return map, the
    points `(x_n, x_{n+1})`.

    **Arguments:**

    - `trajectory`: a `dynjax.Trajectory`, `xs` of shape `(T, d)`.
    - `system`: the system that produced it; gives the axis labels
        (`state_names`) and whether it is a map. Without it, an integer `ts`
        (iteration indices) marks a map and the axes read `x[i]`.
    - `labels`: `d` coordinate names, overriding the system's.
    - `dims`: the two state indices to plot (default `(0, 2)` for `d >= 3`, the
        Lorenz butterfly; `(0, 1)` for `d = 2`).
    - `ax`: a matplotlib Axes; a new figure is made if `None`.
    - `plot_kwargs`: passed to `ax.plot`.

    **Returns:**

    The Axes.

    **Raises:**

    `ValueError` if `dims` are not two coordinates of the state, or `labels` has
    the wrong length.
    """
    ax = _new_axes(ax, (5, 4))
    xs = np.asarray(trajectory.xs)
    d = xs.shape[1]
    names = _labels(system, labels, d)
    discrete = _is_discrete(system, trajectory)
    style = (
        {"ls": "none", "marker": ".", "ms": 1.5, "mew": 0} if discrete else {"lw": 0.4}
    )
    if d == 1:
        if dims is not None:
            raise ValueError("A one-dimensional state has no `dims` to choose.")
        ax.plot(xs[:-1, 0], xs[1:, 0], **{**style, **plot_kwargs})
        ax.set_xlabel(f"${names[0]}_n$" if discrete else names[0])
        ax.set_ylabel(f"${names[0]}_{{n+1}}$" if discrete else names[0])
        return ax
    if dims is None:
        dims = (0, 2) if d >= 3 else (0, 1)
    if len(dims) != 2 or not all(0 <= int(k) < d for k in dims):
        raise ValueError(f"`dims` must be two state indices in [0, {d}), got {dims!r}.")
    i, j = (int(k) for k in dims)
    ax.plot(xs[:, i], xs[:, j], **{**style, **plot_kwargs})
    ax.set_xlabel(names[i])
    ax.set_ylabel(names[j])
    return ax


def time_series(trajectory, *, system=None, labels=None, dims=None, ax=None):
    """Plot state coordinates against time (flows) or iteration index (maps).

    **Arguments:**

    - `trajectory`: a `dynjax.Trajectory`.
    - `system`, `labels`: the coordinate names, as in `attractor`.
    - `dims`: the coordinates to draw (default: all, up to 8).
    - `ax`: a matplotlib Axes; a new figure is made if `None`.

    **Returns:**

    The Axes, with one line per coordinate (maps: points joined by thin lines).
    """
    ax = _new_axes(ax, (6, 3))
    ts = np.asarray(trajectory.ts)
    xs = np.asarray(trajectory.xs)
    names = _labels(system, labels, xs.shape[1])
    discrete = _is_discrete(system, trajectory)
    dims = range(min(xs.shape[1], 8)) if dims is None else dims
    style = {"marker": ".", "ms": 3, "lw": 0.4} if discrete else {"lw": 0.8}
    for i in dims:
        ax.plot(ts, xs[:, i], label=names[i], **style)
    ax.set_xlabel("n" if discrete else "t")
    if len(dims) == 1:
        ax.set_ylabel(names[dims[0]])
    else:
        _legend_outside(ax)
    return ax


@eqx.filter_jit
def _map_on_grid(system, points, args):
    return jax.vmap(lambda x: system.step(0, x[None], args)[0])(points)


def cobweb(system, trajectory, *, ax=None, xlim=None, n_grid=400, args=None):
    """Cobweb (staircase) diagram of an orbit of a one-dimensional map.

    Draws the graph `x_{n+1} = F(x_n)`, the diagonal `x_{n+1} = x_n`, and the
    orbit as the staircase `(x_0, x_0) -> (x_0, x_1) -> (x_1, x_1) -> (x_1, x_2)
    -> ...`: vertical segments end on the graph, horizontal ones on the
    diagonal. Fixed points are where the graph crosses the diagonal.

    **Arguments:**

    - `system`: a dynjax map with `d = 1`, evaluated at step index 0
        (autonomous).
    - `trajectory`: its `dynjax.Trajectory` (e.g.
        `dynjax.trajectory(system, x0, n_steps=50)`).
    - `ax`: a matplotlib Axes; a new figure is made if `None`.
    - `xlim`: the interval on which `F` is drawn (default: the orbit's range,
        padded by 5%).
    - `n_grid`: points at which `F` is evaluated.
    - `args`: run-time arguments of the map.

    **Returns:**

    The Axes; its lines are, in order, the graph of `F`, the diagonal and the
    staircase.

    **Raises:**

    `ValueError` if `system` is not a one-dimensional map.

    **Reference:** S. H. Strogatz, *Nonlinear Dynamics and Chaos*
    (Addison-Wesley, 1994), section 10.1.
    """
    import jax.numpy as jnp

    from ._system import AbstractMap

    xs = np.asarray(trajectory.xs)
    if not isinstance(system, AbstractMap) or xs.shape[1] != 1:
        raise ValueError(
            "`cobweb` draws orbits of one-dimensional maps (an `AbstractMap` with "
            f"d = 1); got {type(system).__name__} with states of shape "
            f"{xs.shape[1:]}. Use `dynjax.plot.attractor` for other systems."
        )
    ax = _new_axes(ax, (4.5, 4.5))
    orbit = xs[:, 0]
    if xlim is None:
        lo, hi = float(orbit.min()), float(orbit.max())
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        xlim = (lo - pad, hi + pad)
    grid = np.linspace(*xlim, n_grid)
    graph = np.asarray(_map_on_grid(system, jnp.asarray(grid, orbit.dtype), args))
    name = _labels(system, None, 1)[0]
    ax.plot(
        grid, graph, color="tab:blue", lw=1.2, label=f"${name}_{{n+1}} = F({name}_n)$"
    )
    ax.plot(
        xlim, xlim, color="0.5", lw=0.8, ls="--", label=f"${name}_{{n+1}} = {name}_n$"
    )
    stair_x = np.repeat(orbit, 2)[:-1]
    stair_y = np.concatenate([[orbit[0]], np.repeat(orbit[1:], 2)])
    ax.plot(stair_x, stair_y, color="tab:red", lw=0.6, label="orbit")
    ax.plot(orbit[:1], orbit[:1], "o", color="tab:red", ms=4)
    ax.set_xlim(*xlim)
    ax.set_xlabel(f"${name}_n$")
    ax.set_ylabel(f"${name}_{{n+1}}$")
    _legend_outside(ax)
    return ax


def lyapunov_convergence(result, *, reference=None, ax=None):
    """Plot the running Lyapunov exponent estimates against accumulated time.

    A converged run shows flat curves at the right; drifting curves mean the run
    should be continued (`dynjax.lyapunov_spectrum(..., state=result.state)`).

    **Arguments:**

    - `result`: a `dynjax.LyapunovResult`.
    - `reference`: known exponents (e.g. published values), one per curve, drawn
        as dashed horizontal lines in the colour of their curve; `None` draws the
        zero line only.
    - `ax`: a matplotlib Axes; a new figure is made if `None`.

    **Returns:**

    The Axes, with one line per exponent (in the order of `result.exponents`),
    then one dashed line per reference value.

    **Raises:**

    `ValueError` if `reference` does not have one value per exponent.
    """
    ax = _new_axes(ax, (5, 3.5))
    times = np.asarray(result.times)
    history = np.asarray(result.history)
    k = history.shape[1]
    if reference is not None:
        reference = np.asarray(reference, dtype=float).reshape(-1)
        if reference.shape != (k,):
            raise ValueError(
                f"`reference` needs one value per exponent ({k}), got "
                f"{reference.shape[0]}."
            )
    curves = [
        ax.plot(times, history[:, i], lw=1.0, label=f"$\\lambda_{{{i + 1}}}$")[0]
        for i in range(k)
    ]
    if reference is None:
        ax.axhline(0.0, color="0.6", lw=0.6, ls="--")
    else:
        for i, (curve, value) in enumerate(zip(curves, reference)):
            ax.axhline(
                value,
                color=curve.get_color(),
                lw=0.8,
                ls="--",
                label="reference" if i == 0 else None,
            )
    ax.set_xscale("log")
    ax.set_xlabel("accumulated time")
    ax.set_ylabel("running estimate")
    _legend_outside(ax)
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
# User trajectories get a colour no other element of a phase portrait uses.
_TRAJECTORY_COLOR = "tab:brown"
_MANIFOLD_COLORS = {True: "tab:blue", False: "tab:red"}  # stable, unstable


@eqx.filter_jit
def _field_on_grid(system, points, args):
    # One compiled program rather than one per primitive, op by op.
    return jax.vmap(lambda x: system.vector_field(0.0, x, args))(points)


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
    saddle_manifolds=False,
    orbits=(),
    nullclines=True,
    density=1.2,
    n_grid=41,
    labels=None,
    args=None,
):
    """Phase portrait of a planar flow: vector field, nullclines, trajectories,
    equilibria marked by stability class, invariant manifolds and periodic orbits.

    The legend sits to the right of the axes (outside the data, which the
    streamlines fill); save with `fig.savefig(path, bbox_inches="tight")` to
    keep it in the image. Axes are labelled with the system's `state_names`.

    **Arguments:**

    - `system`: a dynjax flow with `d = 2` (autonomous; evaluated at `t = 0`).
    - `xlim`, `ylim`: `(min, max)` of the two axes.
    - `ax`: a matplotlib Axes; a new figure is made if `None`.
    - `trajectories`: initial states (shape `(2,)` each, or an `(n, 2)` array),
        integrated with `dynjax.trajectory` for `t1` time units and drawn in brown,
        a colour no other element uses, with a dot at the start.
    - `t1`: duration of each trajectory, in the system's time units (default
        `20.0`).
    - `equilibria`: points (an `(n, 2)` array) or a `dynjax.Equilibria` result;
        each is classified with `dynjax.linearize` and marked by class
        (filled: stable, hollow: unstable, cross: saddle).
    - `manifolds`: `dynjax.Manifold` results (both branches are drawn; stable
        manifolds in blue, unstable in red).
    - `saddle_manifolds`: also grow the stable and unstable manifolds of every
        saddle among `equilibria`, by arclength until they leave the plotted box
        (`dynjax.stable_manifold(..., box=(xlim, ylim))`); default `False`.
    - `orbits`: `dynjax.PeriodicOrbit` results, drawn as closed purple curves.
    - `nullclines`: draw the nullclines (zero contours of each component of the
        vector field), dashed orange and green; default `True`.
    - `density`: streamplot density (default `1.2`).
    - `n_grid`: grid points per axis for the streamplot and nullclines (default
        `41`).
    - `labels`: the two coordinate names, overriding the system's.
    - `args`: run-time arguments of the system.

    **Returns:**

    The `matplotlib.axes.Axes` drawn on (`ax`, or the one of a new 6.5 x 4.5 inch
    figure: `ax.figure`).

    **Raises:**

    `ValueError` if `system` is not a planar flow.
    """
    import jax.numpy as jnp

    from ._equilibria import Equilibria, linearize, stable_manifold, unstable_manifold
    from ._evolve import trajectory as _trajectory
    from ._system import AbstractFlow

    if not isinstance(system, AbstractFlow):
        raise ValueError("`phase_portrait` draws a flow (an `AbstractFlow`).")
    if system.d not in (None, 2):
        raise ValueError(
            f"`phase_portrait` draws planar flows (d = 2); this system has d = "
            f"{system.d}. Project a trajectory with `dynjax.plot.attractor` instead."
        )
    names = _labels(system, labels, 2)
    ax = _new_axes(ax, (6.5, 4.5))
    xs = np.linspace(*xlim, n_grid)
    ys = np.linspace(*ylim, n_grid)
    X, Y = np.meshgrid(xs, ys)
    pts = jnp.asarray(np.stack([X.ravel(), Y.ravel()], axis=1), dtype=float)
    F = np.asarray(_field_on_grid(system, pts, args))
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
        ax.plot([], [], "--", color="tab:orange", lw=1, label=f"{names[0]}' = 0")
        ax.plot([], [], "--", color="tab:green", lw=1, label=f"{names[1]}' = 0")
    x0s = np.asarray(trajectories, dtype=float).reshape(-1, 2)
    for n, x0 in enumerate(x0s):
        traj = _trajectory(
            system, jnp.asarray(x0), t1=t1, n_save=1001, args=args, throw=False
        )
        path = np.asarray(traj.xs)
        ax.plot(
            path[:, 0],
            path[:, 1],
            color=_TRAJECTORY_COLOR,
            lw=1.0,
            label="trajectory" if n == 0 else None,
        )
        ax.plot(*x0, ".", color=_TRAJECTORY_COLOR)
    if isinstance(equilibria, Equilibria):
        equilibria = equilibria.unique
    equilibria = np.asarray(equilibria, dtype=float).reshape(-1, 2)
    classes = [
        linearize(system, jnp.asarray(x_star), args=args).stability_name
        for x_star in equilibria
    ]
    manifolds = list(manifolds)
    if saddle_manifolds:
        box = (tuple(xlim), tuple(ylim))
        for x_star, name in zip(equilibria, classes):
            inside = xlim[0] < x_star[0] < xlim[1] and ylim[0] < x_star[1] < ylim[1]
            if name == "saddle" and inside:
                for grow in (stable_manifold, unstable_manifold):
                    manifolds.append(
                        grow(system, jnp.asarray(x_star), box=box, args=args)
                    )
    drawn = set()
    for m in manifolds:
        color = _MANIFOLD_COLORS[m.stable]
        label = "stable manifold" if m.stable else "unstable manifold"
        for branch in np.asarray(m.branches):
            ax.plot(
                branch[:, 0],
                branch[:, 1],
                color=color,
                lw=1.6,
                label=None if label in drawn else label,
            )
            drawn.add(label)
    for orbit in orbits:
        path = np.asarray(orbit.xs)
        ax.plot(
            path[:, 0],
            path[:, 1],
            color="tab:purple",
            lw=2.0,
            label=f"periodic orbit, T = {float(orbit.period):.4g}",
        )
    labelled = set()
    for x_star, name in zip(equilibria, classes):
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
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    _legend_outside(ax)
    return ax


def slow_points(
    result,
    states=None,
    *,
    components=(0, 1),
    ax=None,
    unstable_modes=True,
    mode_length=None,
    max_trajectories=20,
):
    """Slow points and trajectories of a network in its top principal components.

    The principal components are those of the visited `states` (PCA by the SVD
    of the centred states, as in Sussillo & Barak 2013, Fig. 2): the plane (or
    space) in which the network's trajectories vary most. Trajectories are drawn
    as thin grey lines; each point of `result` is marked by its stability class
    with the markers of `phase_portrait` (filled: stable, hollow: unstable,
    cross: saddle); through each unstable point its unstable eigen-directions
    (the real parts of the eigenvectors with `|lambda| > 1`) are drawn as short
    red segments: along them the state leaves the saddle towards the attractors
    it separates.

    **Arguments:**

    - `result`: a `dynjax.SlowPoints` (from `dynjax.find_slow_points`).
    - `states`: visited states of shape `(T, d)` (one trajectory), `(B, T, d)`
        (a batch) or a `dynjax.Trajectory`; the PCA is fitted to them. `None`
        fits it to the slow points (needs at least two) and draws no
        trajectories.
    - `components`: two or three principal-component indices, 0-based, by
        decreasing variance (default `(0, 1)`); three give a 3-D plot.
    - `ax`: a matplotlib Axes (a 3-D one for three components); a new figure is
        made if `None`.
    - `unstable_modes`: draw the unstable directions of unstable points
        (default `True`).
    - `mode_length`: the half-length of those segments, in state units
        (default: a quarter of the states' root-mean-square distance from
        their mean).
    - `max_trajectories`: draw at most this many of a batch of trajectories
        (all are used for the PCA).

    **Returns:**

    The Axes. Its x and y (and z) labels read `PC1 (62% var.)` etc.: the
    fraction of the variance of `states` along each component.

    **Raises:**

    `ValueError` if `components` are not 2 or 3 distinct indices below
    `min(d, number of states)`, or `states` do not have the points' dimension.

    **Reference:** D. Sussillo and O. Barak, "Opening the black box:
    low-dimensional dynamics in high-dimensional recurrent neural networks",
    Neural Computation 25, 626-649 (2013).
    """
    from ._evolve import Trajectory

    count = int(result.count)
    points = np.asarray(result.points)[:count]
    d = np.asarray(result.points).shape[1]
    names = result.stability_names
    if isinstance(states, Trajectory):
        states = states.xs
    data = points if states is None else np.asarray(states, dtype=float)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[-1] != d:
        raise ValueError(
            f"`states` must have shape (T, {d}) or (B, T, {d}) (the points' "
            f"dimension d={d}), got {np.shape(states)}."
        )
    flat = data.reshape(-1, d)
    components = tuple(int(c) for c in components)
    n_pc = min(d, flat.shape[0])
    if (
        len(components) not in (2, 3)
        or len(set(components)) != len(components)
        or not all(0 <= c < n_pc for c in components)
    ):
        raise ValueError(
            f"`components` must be 2 or 3 distinct principal-component indices in "
            f"[0, {n_pc}), got {components!r}."
        )
    mean = flat.mean(axis=0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[list(components)].T  # (d, k)
    explained = s**2 / max(np.sum(s**2), np.finfo(float).tiny)

    def project(x):
        return (np.asarray(x) - mean) @ basis

    three_d = len(components) == 3
    if ax is None:
        import matplotlib.pyplot as plt

        kw = {"projection": "3d"} if three_d else {}
        _, ax = plt.subplots(figsize=(5.5, 4.5), subplot_kw=kw)
    if states is not None:
        for k, path in enumerate(data[:max_trajectories]):
            p = project(path)
            ax.plot(*p.T, color="0.6", lw=0.5, label="trajectory" if k == 0 else None)
    if mode_length is None:
        mode_length = 0.25 * np.sqrt(np.mean(np.sum((flat - mean) ** 2, axis=1)))
    n_unstable = np.asarray(result.n_unstable)[:count]
    vectors = np.asarray(result.eigenvectors)[:count]
    drawn_mode = False
    for x_star, name, n_u, V in zip(points, names, n_unstable, vectors):
        if not unstable_modes:
            break
        for j in range(int(n_u)):
            v = np.real(V[:, j])
            v = v / max(np.linalg.norm(v), np.finfo(float).tiny)
            seg = project(
                np.stack([x_star - mode_length * v, x_star + mode_length * v])
            )
            ax.plot(
                *seg.T,
                color="tab:red",
                lw=1.0,
                label=None if drawn_mode else "unstable direction",
            )
            drawn_mode = True
    labelled = set()
    for x_star, name in zip(points, names):
        marker, edge, face = _CLASS_MARKERS[name]
        ax.plot(
            *project(x_star)[:, None],
            marker=marker,
            ms=8,
            mec=edge,
            mfc=face,
            mew=1.5,
            ls="none",
            label=None if name in labelled else name,
            zorder=5,
        )
        labelled.add(name)
    setters = (ax.set_xlabel, ax.set_ylabel) + ((ax.set_zlabel,) if three_d else ())
    for set_label, c in zip(setters, components):
        set_label(f"PC{c + 1} ({100 * explained[c]:.0f}% var.)")
    _legend_outside(ax)
    return ax


_SIGNAL_QUANTITIES = {
    "chi_1": r"$\chi_1$",
    "depth_exponent": r"depth exponent $\frac{1}{2}\log\chi_1$ (nats/layer)",
    "xi_c": r"correlation depth $\xi_c$ (layers)",
}


@eqx.filter_jit
def _signal_on_grid(activation, w, b, n_quadrature):
    from ._rnn._signal import signal_propagation

    def one(w, b):
        return signal_propagation(
            w, b, activation=activation, n_quadrature=n_quadrature, throw=False
        )

    return jax.vmap(one)(w, b)


def signal_phase_diagram(
    sigma_w2,
    sigma_b2,
    *,
    activation=None,
    quantity="chi_1",
    ax=None,
    n_quadrature=64,
):
    r"""Order/chaos phase diagram of deep random networks over a
    `(sigma_w^2, sigma_b^2)` grid.

    Each grid point is one `dynjax.signal_propagation` (mean-field theory, one
    `jax.vmap` over the grid); the chosen quantity is drawn as an image and the
    critical line `chi_1 = 1` (the edge of chaos: ordered below it, chaotic above)
    as a black contour (Poole et al. 2016, Fig. 4; Schoenholz et al. 2017, Fig. 1).
    Points without a stable variance fixed point (e.g. ReLU with `sigma_w^2 > 2`)
    are left blank.

    **Arguments:**

    - `sigma_w2`: the weight variances, a 1-D increasing array (the x axis).
    - `sigma_b2`: the bias variances, a 1-D increasing array (the y axis).
    - `activation`: `phi` (default `jnp.tanh`).
    - `quantity`: the image: `"chi_1"` (default; a diverging colour map centred
        on 1), `"depth_exponent"` (`log(chi_1) / 2`, nats per layer, centred on 0)
        or `"xi_c"` (the correlation depth scale, in layers, log colour scale).
    - `ax`: a matplotlib Axes; a new 5.5 x 4 inch figure is made if `None`.
    - `n_quadrature`: nodes per dimension of the Gaussian expectations (default
        64, for speed: for `tanh` about 1e-9 at `q* = 1.5` and 1e-6 at `q* = 3`;
        `signal_propagation`'s 128 give 1e-14 there).

    **Returns:**

    The Axes (`ax.figure` is its figure). `ax.collections[0]` is the image (a
    `QuadMesh` of shape `(len(sigma_b2), len(sigma_w2))`), `ax.collections[1]`
    the contour set of `chi_1 = 1` (drawn when the grid has points on both sides
    of it; its legend entry sits above the axes); the colour bar is on the
    figure.

    **Raises:**

    `ValueError` for grids that are not 1-D with at least two values, negative
    variances, or an unknown `quantity`.
    """
    import jax.numpy as jnp
    import matplotlib.colors as mcolors

    if quantity not in _SIGNAL_QUANTITIES:
        raise ValueError(
            f"`quantity` must be one of {sorted(_SIGNAL_QUANTITIES)}, got {quantity!r}."
        )
    grids = []
    for name, g in (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
        g = np.asarray(g, dtype=float)
        if g.ndim != 1 or g.size < 2 or not np.all(np.isfinite(g) & (g >= 0)):
            raise ValueError(
                f"`{name}` must be a 1-D array of at least two finite variances "
                f">= 0 (a grid axis), got {np.asarray(g)!r}."
            )
        grids.append(g)
    W, B = np.meshgrid(*grids)
    phi = jnp.tanh if activation is None else activation

    dtype = jnp.result_type(float)
    w, b = jnp.asarray(W.ravel(), dtype), jnp.asarray(B.ravel(), dtype)
    out = _signal_on_grid(phi, w, b, n_quadrature)
    chi = np.asarray(out.chi_1).reshape(W.shape)
    Z = np.asarray(getattr(out, quantity)).reshape(W.shape)
    finite = Z[np.isfinite(Z)]
    if quantity == "xi_c":
        positive = finite[finite > 0]
        lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
        norm = mcolors.LogNorm(vmin=lo, vmax=max(hi, lo * 1.01))
        cmap = "viridis"
    else:
        centre = 1.0 if quantity == "chi_1" else 0.0
        span = np.max(np.abs(finite - centre)) if finite.size else 1.0
        span = span if span > 0 else 1.0
        norm = mcolors.TwoSlopeNorm(centre, centre - span, centre + span)
        cmap = "RdBu_r"
    ax = _new_axes(ax, (5.5, 4))
    mesh = ax.pcolormesh(
        W, B, np.ma.masked_invalid(Z), shading="nearest", norm=norm, cmap=cmap
    )
    ax.figure.colorbar(mesh, ax=ax, label=_SIGNAL_QUANTITIES[quantity])
    if np.nanmin(chi) < 1 < np.nanmax(chi):
        ax.contour(W, B, chi, levels=[1.0], colors="k", linewidths=1.5)
        ax.plot([], [], color="k", lw=1.5, label=r"$\chi_1 = 1$ (edge of chaos)")
        # Above the axes: the colour bar takes the space on the right.
        ax.legend(
            loc="lower left",
            bbox_to_anchor=(0.0, 1.01),
            borderaxespad=0.0,
            fontsize="small",
            frameon=False,
        )
    ax.set_xlabel(r"$\sigma_w^2$")
    ax.set_ylabel(r"$\sigma_b^2$")
    return ax


def _performance_norm(performance):
    import matplotlib.colors as mcolors

    lo, hi = float(np.min(performance)), float(np.max(performance))
    return mcolors.Normalize(lo, hi if hi > lo else lo + 1.0)


def spectra_by_performance(
    spectra, performance, *, ax=None, cmap="viridis", label="performance"
):
    """Lyapunov spectra of a population of networks, coloured by performance.

    One line per network, exponent `lambda_i` against its index `i` (1 = the
    largest), coloured by the network's performance, with a colour bar. The best
    networks are drawn last (on top). `-inf` exponents (collapsed directions) are
    left out of the lines.

    **Arguments:**

    - `spectra`: shape `(n, L)`, one spectrum per row.
    - `performance`: shape `(n,)`.
    - `ax`: a matplotlib Axes; a new 5 x 3.5 inch figure is made if `None`.
    - `cmap`: the colour map (default `"viridis"`).
    - `label`: the colour bar's label (default `"performance"`).

    **Returns:**

    The Axes. `ax.collections[0]` is the `LineCollection` of the `n` spectra, its
    colour array the performances (in drawing order, best last); the colour bar
    is on the figure.

    **Raises:**

    `ValueError` for spectra that are not `(n, L)` (ragged: interpolate them
    first), hold NaN or `+inf`, or a `performance` of another length.
    """
    from matplotlib.collections import LineCollection

    from ._aelle._analysis import check_performance, check_spectra

    x = check_spectra(spectra)
    perf = check_performance(performance, x.shape[0])
    order = np.argsort(perf, kind="stable")
    index = np.arange(1, x.shape[1] + 1)
    y = np.where(np.isfinite(x), x, np.nan)[order]
    segments = [np.column_stack([index, row]) for row in y]
    lines = LineCollection(
        segments, array=perf[order], cmap=cmap, norm=_performance_norm(perf), lw=0.8
    )
    ax = _new_axes(ax, (5, 3.5))
    ax.add_collection(lines)
    finite = y[np.isfinite(y)]
    pad = 0.05 * (np.ptp(finite) if finite.size and np.ptp(finite) > 0 else 1.0)
    ax.set_xlim(index[0] - 0.5, index[-1] + 0.5)
    if finite.size:
        ax.set_ylim(finite.min() - pad, finite.max() + pad)
    ax.axhline(0.0, color="0.5", lw=0.6, ls=":")
    ax.figure.colorbar(lines, ax=ax, label=label)
    ax.set_xlabel("exponent index $i$")
    ax.set_ylabel(r"$\lambda_i$")
    return ax


def latent_space(latents, performance, *, ax=None, cmap="viridis", label="performance"):
    """An AeLLE latent space in its first two principal components, coloured by
    performance.

    The latent vectors are centred and projected on the two leading right
    singular vectors of the centred matrix (principal component analysis); the
    axis labels give each component's share of the variance. Good and bad
    networks separating in this plane is the point of AeLLE (Vogt, Zheng &
    Shlizerman 2022, Fig. 3).

    **Arguments:**

    - `latents`: shape `(n, latent_size)` (`model.encode(spectra)`), at least two
        latent dimensions.
    - `performance`: shape `(n,)`.
    - `ax`, `cmap`, `label`: as in `spectra_by_performance`.

    **Returns:**

    The Axes. `ax.collections[0]` is the scatter of the `n` networks (offsets the
    two principal coordinates, colour array the performances); the colour bar is
    on the figure.

    **Raises:**

    `ValueError` if `latents` is not `(n, k)` with `n >= 2`, `k >= 2`, finite, or
    `performance` is not `(n,)`.
    """
    from ._aelle._analysis import check_performance

    z = np.asarray(latents, dtype=float)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 2 or not np.all(np.isfinite(z)):
        raise ValueError(
            "`latents` must be a finite array (n, k) with n >= 2 networks and k >= 2 "
            f"latent dimensions; got shape {z.shape}."
        )
    perf = check_performance(performance, z.shape[0])
    centred = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:2].T
    explained = s**2 / max(np.sum(s**2), np.finfo(float).tiny)
    ax = _new_axes(ax, (5, 4))
    points = ax.scatter(
        pcs[:, 0], pcs[:, 1], c=perf, cmap=cmap, norm=_performance_norm(perf), s=14
    )
    ax.figure.colorbar(points, ax=ax, label=label)
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.0f}% var.)")
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.0f}% var.)")
    return ax


def roc_curves(results, *, ax=None):
    """ROC curves of the AeLLE latent classifier and the baselines on the test
    networks, each with its AUC in the legend.

    **Arguments:**

    - `results`: a `dynjax.aelle.ClassifierComparison`
        (`dynjax.aelle.compare_classifiers`).
    - `ax`: a matplotlib Axes; a new 5 x 4 inch figure is made if `None`.

    **Returns:**

    The Axes: one line per classifier (in `results.auc` order, the latent
    classifier first and thicker), labelled `"name (AUC = 0.93)"`, and the
    chance diagonal (dashed, unlabelled); legend outside the axes.
    """
    from ._aelle._analysis import roc_curve

    ax = _new_axes(ax, (5, 4))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
    for n, (name, auc) in enumerate(results.auc.items()):
        fpr, tpr, _ = roc_curve(results.scores[name], results.labels)
        ax.plot(fpr, tpr, lw=2.0 if n == 0 else 1.2, label=f"{name} (AUC = {auc:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    _legend_outside(ax)
    return ax


def training_dynamics(trajectory, *, axes=None, learning_rate=None, projection=None):
    """Training seen as a dynamical system: loss, sharpness against `2 / eta`, and
    the parameter path in two dimensions.

    Three panels: (1) the loss against the step (log scale); (2) the sharpness
    probes against the step with the edge-of-stability line `2 / eta` (Cohen et
    al., 2021: full-batch gradient descent is linearly stable while the
    sharpness is below it); (3) the recorded parameters projected on their first
    two principal components (computed from at most 1000 evenly spaced records),
    or on `projection`, coloured by step.

    **Arguments:**

    - `trajectory`: a `dynjax.TrainingTrajectory` (`dynjax.train`).
    - `axes`: three matplotlib Axes; a new 13 x 3.6 inch figure is made if `None`.
    - `learning_rate`: the learning rate for the `2 / eta` line (a number, or a
        schedule `step -> eta`); default: none drawn unless the trajectory has a
        `stability_ratio` (then `2 / eta = 2 sharpness / (eta sharpness)`).
    - `projection`: a `(2, r)` matrix applied to the recorded rows instead of
        principal components.

    **Returns:**

    The three Axes. On the sharpness panel the probes are the first line and
    `2 / eta`, when known, the second (dashed).

    **Raises:**

    `ValueError` if `axes` is not three Axes, or `projection` is not `(2, r)`.
    """
    from matplotlib.collections import LineCollection

    new = axes is None
    if new:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes = list(np.ravel(axes))
    if len(axes) != 3:
        raise ValueError(f"`axes` must be three Axes, got {len(axes)}.")
    ax_loss, ax_sharp, ax_path = axes

    losses = np.asarray(trajectory.losses, float)
    steps = np.arange(losses.shape[0])
    # (A diverging run's last finite losses, ~1e306, overflow a log axis.)
    shown = np.where(np.abs(losses) < 1e200, losses, np.nan)
    ax_loss.plot(steps, shown, lw=0.8)
    if np.all(shown[np.isfinite(shown)] > 0):
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")

    s_steps = np.asarray(trajectory.sharpness_steps)
    sharp = np.asarray(trajectory.sharpness)
    ax_sharp.plot(s_steps, sharp, lw=1.0, label="sharpness")
    threshold = None
    if learning_rate is not None:
        if callable(learning_rate):
            etas = np.asarray(jax.vmap(learning_rate)(np.asarray(s_steps)))
        else:
            etas = np.full(s_steps.shape, float(learning_rate))
        threshold = 2 / etas
    elif trajectory.stability_ratio is not None and sharp.size:
        ratio = np.asarray(trajectory.stability_ratio)
        with np.errstate(divide="ignore", invalid="ignore"):
            threshold = np.where(ratio != 0, sharp / ratio, np.nan)
    if threshold is not None and s_steps.size:
        ax_sharp.plot(s_steps, threshold, ls="--", color="k", lw=1.0, label="2 / eta")
    ax_sharp.set_xlabel("step")
    ax_sharp.set_ylabel("top Hessian eigenvalue")
    if s_steps.size:
        ax_sharp.legend(frameon=False)

    thetas = np.asarray(trajectory.thetas)
    r_steps = np.asarray(trajectory.record_steps)
    if projection is not None:
        projection = np.asarray(projection)
        if projection.ndim != 2 or projection.shape != (2, thetas.shape[1]):
            raise ValueError(
                f"`projection` must have shape (2, {thetas.shape[1]}), got "
                f"{projection.shape}."
            )
        xy = thetas @ projection.T
        labels = ("direction 1", "direction 2")
    elif thetas.shape[0] >= 2:
        # Principal directions from the Gram matrix of at most 1000 evenly spaced
        # records (cheap however many parameters: an SVD of a (3000, 55000)
        # record matrix takes minutes), then every record projected on them.
        centred = thetas - thetas.mean(0)
        rows = centred[
            np.linspace(0, len(centred) - 1, min(len(centred), 1000)).astype(int)
        ]
        evals, evecs = np.linalg.eigh(rows @ rows.T)
        evals, evecs = evals[::-1], evecs[:, ::-1]
        top = evals[:2] > evals[0] * 1e-12 if evals[0] > 0 else np.zeros(2, bool)
        directions = (evecs[:, :2][:, top].T @ rows) / np.sqrt(evals[:2][top])[:, None]
        xy = centred @ directions.T
        xy = np.column_stack([xy, np.zeros((len(xy), 2 - xy.shape[1]))])
        var = np.clip(evals, 0, None) / max(np.sum(np.clip(evals, 0, None)), 1e-300)
        labels = tuple(f"PC{i + 1} ({100 * var[i]:.0f}% var.)" for i in range(2))
    else:
        xy = np.zeros((thetas.shape[0], 2))
        labels = ("PC1", "PC2")
    if xy.shape[0] >= 2:
        segments = np.stack([xy[:-1], xy[1:]], axis=1)
        lines = LineCollection(segments, array=r_steps[1:], cmap="viridis", lw=1.2)
        ax_path.add_collection(lines)
        ax_path.autoscale()
        ax_path.figure.colorbar(lines, ax=ax_path, label="step")
    ax_path.scatter(xy[:1, 0], xy[:1, 1], color="k", s=12, zorder=3)
    ax_path.set_xlabel(labels[0])
    ax_path.set_ylabel(labels[1])
    if new:
        ax_path.figure.tight_layout()
    return axes


def orbit_diagram(diagram, *, coordinate=0, ax=None, **plot_kwargs):
    """Plot an orbit diagram: the attractor's points against the parameter.

    Every kept point of `dynjax.orbit_diagram` is drawn as a small dot at
    `(value, x[coordinate])`: a period-`k` orbit shows as `k` dots above its
    value, a chaotic attractor as a band. Values where the orbit failed
    (`diagram.escaped` or another `result`) have no points.

    **Arguments:**

    - `diagram`: a `dynjax.OrbitDiagram`, `points` of shape `(P, n_keep, d)`.
    - `coordinate`: the state coordinate drawn (for a flow, of the section's
        points).
    - `ax`: a matplotlib Axes; a new figure is made if `None`.
    - `plot_kwargs`: passed to `ax.plot`.

    **Returns:**

    The Axes; its one line holds the points `(values[i], points[i, n,
    coordinate])`, value by value (`NaN` where the orbit failed, not drawn). The
    x-axis is labelled with the parameter's name, the y-axis with the coordinate's.

    **Raises:**

    `ValueError` if `coordinate` is not a state index.

    **Reference:** R. M. May, *Simple mathematical models with very complicated
    dynamics*, Nature 261, 459 (1976), Fig. 2.
    """
    points = np.asarray(diagram.points)
    d = points.shape[2]
    if not (isinstance(coordinate, (int, np.integer)) and 0 <= coordinate < d):
        raise ValueError(
            f"`coordinate` must be a state index in [0, {d}), got {coordinate!r}."
        )
    ax = _new_axes(ax, (6, 4))
    values = np.asarray(diagram.values)
    xs = np.repeat(values, points.shape[1])
    ys = points[:, :, coordinate].reshape(-1)
    style = {"ls": "none", "marker": ".", "ms": 0.8, "mew": 0, "color": "k"}
    ax.plot(xs, ys, **{**style, **plot_kwargs})
    ax.set_xlabel(diagram.parameter_name)
    ax.set_ylabel(diagram.state_names[coordinate])
    return ax


_BIFURCATION_MARKERS = {
    "fold": "s",
    "branch_point": "D",
    "hopf": "*",
    "flip": "o",
    "neimark_sacker": "^",
    "cusp": "v",
    "bogdanov_takens": "P",
    "bautin": "X",
    "zero_hopf": "h",
}
_BIFURCATION_LABELS = {
    "fold": "fold",
    "branch_point": "branch point",
    "hopf": "Hopf",
    "flip": "flip",
    "neimark_sacker": "Neimark-Sacker",
    "cusp": "cusp",
    "bogdanov_takens": "Bogdanov-Takens",
    "bautin": "Bautin",
    "zero_hopf": "zero-Hopf",
}


def _stability_runs(stable, index, bif_param, bif_state, param, state):
    """The branch cut into runs of equal stability, each run's line joined to the
    next at the bifurcation point located between them (else, or where that
    point is not finite, at the midpoint)."""
    n = stable.shape[0]
    cuts = [i for i in range(n - 1) if stable[i] != stable[i + 1]]
    joins = {}
    for i in cuts:
        at = [
            k
            for k in range(index.shape[0])
            if index[k] == i and np.isfinite(bif_param[k]) and np.isfinite(bif_state[k])
        ]
        if at:
            joins[i] = (bif_param[at[0]], bif_state[at[0]])
        else:
            joins[i] = (
                0.5 * (param[i] + param[i + 1]),
                0.5 * (state[i] + state[i + 1]),
            )
    starts = [0] + [i + 1 for i in cuts]
    ends = cuts + [n - 1]
    runs = []
    for a, b in zip(starts, ends):
        xs, ys = list(param[a : b + 1]), list(state[a : b + 1])
        if a - 1 in joins:
            xs.insert(0, joins[a - 1][0])
            ys.insert(0, joins[a - 1][1])
        if b in joins:
            xs.append(joins[b][0])
            ys.append(joins[b][1])
        runs.append((bool(stable[a]), np.array(xs), np.array(ys)))
    return runs


def bifurcation_diagram(
    branches, *, coordinate=0, ax=None, system=None, parameter="parameter"
):
    """Plot branches of equilibria or fixed points from `dynjax.continuation` and
    branches of periodic orbits from `dynjax.cycle_continuation`: stable parts
    solid, unstable parts dashed, bifurcation points marked and named.

    **Arguments:**

    - `branches`: a `dynjax.Branch` or `dynjax.CycleBranch`, or a sequence of them
        (each in its own colour). A branch of cycles is drawn as two lines, the
        maximum and the minimum of `coordinate` over each cycle.
    - `coordinate`: the state coordinate drawn against the parameter.
    - `ax`: a matplotlib Axes; a new figure is made if `None`.
    - `system`: the system continued; gives the y-axis label (`state_names`).
    - `parameter`: the x-axis label (e.g. the parameter's name).

    **Returns:**

    The Axes. Its lines are, branch by branch, the runs of equal stability in
    order along the branch (solid `"-"`: stable, dashed `"--"`: unstable; each
    run holds its points and ends at the bifurcation point located between it
    and the next run, or at their midpoint if none was, so the curve is
    unbroken), then that branch's bifurcation
    points, one line of markers per kind, labelled with the kind for the
    legend; each point is also named by a text annotation (`ax.texts`). The
    legend, inside the axes, shows the kinds and the two line styles.

    **Raises:**

    `ValueError` if `coordinate` is not a state index or `branches` holds
    something other than `dynjax.Branch`es and `dynjax.CycleBranch`es.

    **Reference:** Yu. A. Kuznetsov, *Elements of Applied Bifurcation Theory*,
    3rd ed. (Springer, 2004), chapter 10 (the conventions of AUTO and MatCont).
    """
    from matplotlib.lines import Line2D

    from ._continuation import Branch, CycleBranch

    if isinstance(branches, (Branch, CycleBranch)):
        branches = [branches]
    branches = list(branches)
    if not branches or not all(isinstance(b, (Branch, CycleBranch)) for b in branches):
        raise ValueError(
            "`branches` must be a `dynjax.Branch` / `dynjax.CycleBranch` or a "
            "sequence of them (the results of `dynjax.continuation`, "
            "`dynjax.switch_branch`, `dynjax.cycle_continuation`)."
        )
    d = branches[0].states.shape[1]
    if not (isinstance(coordinate, (int, np.integer)) and 0 <= coordinate < d):
        raise ValueError(
            f"`coordinate` must be a state index in [0, {d}), got {coordinate!r}."
        )
    ax = _new_axes(ax, (6, 4))
    colors = [f"C{i}" for i in range(10)]
    kinds_seen = []
    placed = []
    for j, branch in enumerate(branches):
        color = colors[j % len(colors)]
        n = int(branch.n_points)
        param = np.asarray(branch.parameter)[:n]
        stable = np.asarray(branch.stable)[:n]
        bif = branch.bifurcations
        names = bif.names
        m = len(names)
        bp = np.asarray(bif.parameter)[:m]
        index = np.asarray(bif.index)[:m]
        if isinstance(branch, CycleBranch):
            # A cycle is drawn by the max and the min of the coordinate over it;
            # its bifurcations on the max, at the nearer point of the interval.
            orbit = np.asarray(branch.orbits)[:n, :, coordinate]
            extremes = [orbit.max(axis=1), orbit.min(axis=1)]
            bs = extremes[0][np.clip(index, 0, max(n - 1, 0))]
        else:
            extremes = [np.asarray(branch.states)[:n, coordinate]]
            bs = np.asarray(bif.state)[:m, coordinate]
        for e, state in enumerate(extremes):
            anchor = bs if e == 0 else extremes[1][np.clip(index, 0, max(n - 1, 0))]
            for is_stable, xs, ys in _stability_runs(
                stable, index, bp, anchor, param, state
            ):
                ax.plot(xs, ys, color=color, lw=1.3, ls="-" if is_stable else "--")
        for kind in _BIFURCATION_MARKERS:
            sel = [k for k in range(m) if names[k] == kind]
            if not sel:
                continue
            ax.plot(
                bp[sel],
                bs[sel],
                ls="none",
                marker=_BIFURCATION_MARKERS[kind],
                ms=6,
                mfc="white",
                mec="k",
                zorder=3,
                label=_BIFURCATION_LABELS[kind],
            )
            if kind not in kinds_seen:
                kinds_seen.append(kind)
        for k in range(m):
            # (Names of points at the same place are stacked, not overprinted; a
            # point found again on another branch is named once.)
            here = [
                name
                for name, q in placed
                if np.allclose(q, (bp[k], bs[k]), rtol=1e-3, atol=1e-3)
            ]
            if names[k] in here:
                continue
            same = len(here)
            placed.append((names[k], (bp[k], bs[k])))
            ax.annotate(
                _BIFURCATION_LABELS[names[k]],
                (bp[k], bs[k]),
                textcoords="offset points",
                xytext=(4, 4 + 8 * same),
                fontsize="x-small",
            )
    handles = [
        Line2D([], [], color="0.3", ls="-", label="stable"),
        Line2D([], [], color="0.3", ls="--", label="unstable"),
    ] + [
        Line2D(
            [],
            [],
            ls="none",
            marker=_BIFURCATION_MARKERS[kind],
            mfc="white",
            mec="k",
            label=_BIFURCATION_LABELS[kind],
        )
        for kind in kinds_seen
    ]
    # (Inside the axes: a legend outside is clipped by a plain `savefig`.)
    ax.legend(handles=handles, loc="best", fontsize="small", framealpha=0.8)
    ax.set_xlabel(parameter)
    ax.set_ylabel(_labels(system, None, d)[coordinate])
    return ax


def two_parameter_diagram(curves=(), *, chart=None, ax=None, parameters=None):
    """Plot a two-parameter bifurcation diagram: curves of fold / Hopf points from
    `dynjax.fold_curve` / `dynjax.hopf_curve` with their codimension-two points,
    over a stability chart from `dynjax.stability_chart`.

    **Arguments:**

    - `curves`: a `dynjax.BifurcationCurve` or a sequence of them, drawn as
        `(parameter1, parameter2)`: fold curves solid, Hopf curves dashed; the
        neutral-saddle part of a Hopf curve (`kappa < 0`, not a bifurcation) is
        not drawn.
    - `chart`: a `dynjax.StabilityChart` on the same two parameters in the same
        order, drawn as the number of unstable eigenvalues (grey, outside the
        colour bar's classes: Newton did not converge there).
    - `ax`: a matplotlib Axes; a new figure is made if `None`.
    - `parameters`: the two axis labels.

    **Returns:**

    The Axes: the chart (a `QuadMesh`, with a colour bar), then per curve its line
    and one line of markers per kind of codimension-two point, each named by a
    text annotation (`ax.texts`).

    **Raises:**

    `ValueError` if `curves` holds something other than `dynjax.BifurcationCurve`s
    or `chart` is not a `dynjax.StabilityChart`.

    **Reference:** Yu. A. Kuznetsov, *Elements of Applied Bifurcation Theory*,
    3rd ed. (Springer, 2004), chapters 8 and 10.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from ._continuation import BifurcationCurve, StabilityChart

    if isinstance(curves, BifurcationCurve):
        curves = [curves]
    curves = list(curves)
    if not all(isinstance(c, BifurcationCurve) for c in curves):
        raise ValueError(
            "`curves` must be a `dynjax.BifurcationCurve` or a sequence of them (the "
            "results of `dynjax.fold_curve` / `dynjax.hopf_curve`)."
        )
    if chart is not None and not isinstance(chart, StabilityChart):
        raise ValueError("`chart` must be a `dynjax.StabilityChart`.")
    ax = _new_axes(ax, (6, 4.5))
    if chart is not None:
        n_unstable = np.asarray(chart.n_unstable).astype(float)
        top = int(max(n_unstable.max(), 1))
        colours = ["#f7f7f7"] + [
            plt.get_cmap("Reds")(0.35 + 0.5 * k / top) for k in range(1, top + 1)
        ]
        cmap = ListedColormap(colours).with_extremes(bad="0.6")
        norm = BoundaryNorm(np.arange(-0.5, top + 1.5), cmap.N)
        values = np.ma.masked_where(~np.asarray(chart.converged), n_unstable)
        mesh = ax.pcolormesh(
            np.asarray(chart.parameter1),
            np.asarray(chart.parameter2),
            values.T,
            cmap=cmap,
            norm=norm,
            shading="nearest",
        )
        colourbar = ax.figure.colorbar(mesh, ax=ax, ticks=range(top + 1))
        colourbar.set_label("unstable eigenvalues")
    named = []
    for j, curve in enumerate(curves):
        n = int(curve.n_points)
        p1 = np.asarray(curve.parameter1)[:n].copy()
        p2 = np.asarray(curve.parameter2)[:n].copy()
        hide = np.asarray(curve.neutral_saddle)[:n]
        p1[hide], p2[hide] = np.nan, np.nan
        label = "fold" if curve.kind == "fold" else "Hopf"
        ax.plot(
            p1, p2, color=f"C{j % 10}", ls="-" if curve.kind == "fold" else "--",
            lw=1.5, label=label,
        )  # fmt: skip
        bif = curve.bifurcations
        names = bif.names
        q1 = np.asarray(bif.parameter)[: len(names)]
        q2 = np.asarray(curve.bifurcation_parameter2)[: len(names)]
        for kind in _BIFURCATION_MARKERS:
            sel = [k for k in range(len(names)) if names[k] == kind]
            if sel:
                ax.plot(
                    q1[sel], q2[sel], ls="none", marker=_BIFURCATION_MARKERS[kind],
                    ms=7, mfc="white", mec="k", zorder=3,
                    label=_BIFURCATION_LABELS[kind],
                )  # fmt: skip
        for k in range(len(names)):
            if any(
                name == names[k] and np.allclose(q, (q1[k], q2[k]), atol=1e-6)
                for name, q in named
            ):
                continue
            named.append((names[k], (q1[k], q2[k])))
            ax.annotate(
                _BIFURCATION_LABELS[names[k]],
                (q1[k], q2[k]),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize="x-small",
            )
    if curves:
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # (a point shared by two curves: once)
        ax.legend(
            unique.values(), unique.keys(), loc="best", fontsize="small",
            framealpha=0.8,
        )  # fmt: skip
    if parameters is not None:
        ax.set_xlabel(parameters[0])
        ax.set_ylabel(parameters[1])
    return ax
