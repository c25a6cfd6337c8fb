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
