"""`dynjax.plot`: what is drawn (artists), checked against the dynamics in NumPy."""

import types

import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import dynjax
from dynjax.systems import Henon, Logistic, Lorenz, VanDerPol


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _henon_numpy(x, n, a=1.4, b=0.3):
    # Henon (1976): x' = 1 - a x^2 + y, y' = b x
    out = [np.asarray(x, dtype=float)]
    for _ in range(n):
        x = out[-1]
        out.append(np.array([1 - a * x[0] ** 2 + x[1], b * x[0]]))
    return np.stack(out)


def _logistic_numpy(x, n, r):
    out = [float(x)]
    for _ in range(n):
        out.append(r * out[-1] * (1 - out[-1]))
    return np.array(out)


def test_attractor_map_as_points_labelled_with_state_names():
    henon = Henon()
    x0 = jnp.array([0.1, 0.0])
    sol = dynjax.trajectory(henon, x0, n_steps=30)  # short: chaos amplifies rounding
    ax = dynjax.plot.attractor(sol, system=henon)
    (line,) = ax.lines
    assert line.get_linestyle() == "None"  # no lines between iterates
    assert line.get_marker() not in (None, "None", "")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
    np.testing.assert_allclose(line.get_xydata(), _henon_numpy(x0, 30), atol=1e-8)
    # Without the system: integer iteration indices still mark a map; names x[i].
    ax = dynjax.plot.attractor(sol)
    assert ax.lines[0].get_linestyle() == "None"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x[0]", "x[1]")
    ax = dynjax.plot.attractor(sol, labels=("u", "v"))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("u", "v")
    with pytest.raises(ValueError, match="`labels` must be 2 strings"):
        dynjax.plot.attractor(sol, labels=("u",))
    with pytest.raises(ValueError, match="two state indices"):
        dynjax.plot.attractor(sol, dims=(0, 2))


def test_attractor_flow_as_line_default_dims_x_z():
    lorenz = Lorenz()
    sol = dynjax.trajectory(lorenz, jnp.ones(3), t1=1.0, n_save=11)
    ax = dynjax.plot.attractor(sol, system=lorenz)
    (line,) = ax.lines
    assert line.get_linestyle() == "-"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "z")
    np.testing.assert_array_equal(line.get_xydata(), np.asarray(sol.xs)[:, [0, 2]])


def test_attractor_one_dimensional_map_is_its_return_map():
    logistic = Logistic(r=3.9)
    sol = dynjax.trajectory(logistic, jnp.array([0.2]), n_steps=50)
    ax = dynjax.plot.attractor(sol, system=logistic)
    xy = ax.lines[0].get_xydata()
    assert ax.lines[0].get_linestyle() == "None"
    # every point (x_n, x_{n+1}) lies on the parabola r x (1 - x) (May 1976)
    np.testing.assert_allclose(xy[:, 1], 3.9 * xy[:, 0] * (1 - xy[:, 0]), atol=1e-12)
    assert ax.get_xlabel() == "$x_n$" and ax.get_ylabel() == "$x_{n+1}$"


def test_time_series_of_a_map():
    logistic = Logistic(r=3.9)
    sol = dynjax.trajectory(logistic, jnp.array([0.2]), n_steps=20)
    ax = dynjax.plot.time_series(sol, system=logistic)
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), np.arange(21))
    np.testing.assert_allclose(
        line.get_ydata(), _logistic_numpy(0.2, 20, 3.9), rtol=1e-9, atol=1e-12
    )
    assert line.get_marker() not in (None, "None", "")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("n", "x")


def test_cobweb_vertices_alternate_between_graph_and_diagonal():
    r = 3.7
    logistic = Logistic(r=r)
    sol = dynjax.trajectory(logistic, jnp.array([0.3]), n_steps=30)
    ax = dynjax.plot.cobweb(logistic, sol)
    graph, diagonal, stair = ax.lines[:3]
    gx, gy = graph.get_xdata(), graph.get_ydata()
    np.testing.assert_allclose(gy, r * gx * (1 - gx), atol=1e-12)
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())
    sx, sy = stair.get_xdata(), stair.get_ydata()
    assert len(sx) == 2 * 30 + 1
    # (x0, x0) -> (x0, x1) -> (x1, x1) -> ...: even vertices on y = x, odd on y = F(x)
    np.testing.assert_allclose(sy[0::2], sx[0::2], atol=1e-15)
    np.testing.assert_allclose(sy[1::2], r * sx[1::2] * (1 - sx[1::2]), atol=1e-12)
    np.testing.assert_allclose(sx[0::2], _logistic_numpy(0.3, 30, r), atol=1e-9)
    with pytest.raises(ValueError, match="one-dimensional maps"):
        dynjax.plot.cobweb(Henon(), dynjax.trajectory(Henon(), jnp.zeros(2), n_steps=3))


def test_lyapunov_convergence_draws_reference_lines():
    # A duck-typed result: only `times` and `history` are read.
    times = np.array([1.0, 10.0, 100.0])
    history = np.array([[1.2, 0.1, -14.0], [0.95, 0.02, -14.5], [0.91, 0.0, -14.57]])
    result = types.SimpleNamespace(times=times, history=history)
    reference = [0.9056, 0.0, -14.5723]  # Sprott (2003), Lorenz
    ax = dynjax.plot.lyapunov_convergence(result, reference=reference)
    curves, refs = ax.lines[:3], ax.lines[3:]
    assert len(refs) == 3
    for curve, ref, value in zip(curves, refs, reference):
        assert ref.get_linestyle() == "--"
        assert ref.get_color() == curve.get_color()
        np.testing.assert_allclose(ref.get_ydata(), value)
    with pytest.raises(ValueError, match="one value per exponent"):
        dynjax.plot.lyapunov_convergence(result, reference=[0.9, 0.0])


def _legend_outside_axes(ax):
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    return legend.x0 >= axes.x1


def test_phase_portrait_trajectory_colour_labels_and_legend():
    vdp = VanDerPol()
    ax = dynjax.plot.phase_portrait(
        vdp,
        (-3, 3),
        (-3, 3),
        trajectories=jnp.array([[0.5, 0.0]]),
        equilibria=jnp.zeros((1, 2)),
        n_grid=15,
    )
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
    labels = ax.get_legend_handles_labels()[1]
    assert "x' = 0" in labels and "y' = 0" in labels and "trajectory" in labels
    assert _legend_outside_axes(ax)
    traj = [ln for ln in ax.lines if ln.get_label() == "trajectory"]
    assert len(traj) == 1
    colour = matplotlib.colors.to_rgba(traj[0].get_color())
    others = [
        matplotlib.colors.to_rgba(c)
        for ln in ax.lines
        if ln.get_color() != traj[0].get_color()
        for c in (ln.get_color(), ln.get_markeredgecolor())
    ] + [matplotlib.colors.to_rgba(c) for c in ("tab:blue", "tab:red")]
    assert colour not in others  # distinct from manifolds, markers, nullclines
    # The drawn trajectory is the Van der Pol orbit (ends near the limit cycle,
    # amplitude about 2: van der Pol 1926).
    end = traj[0].get_xydata()[-1]
    assert 1.0 < np.hypot(*end) < 3.0


def test_phase_portrait_grows_saddle_manifolds_to_the_box():
    # x' = x, y' = -y + x^2: W^u = {y = x^2 / 3}, W^s = {x = 0}
    flow = dynjax.Flow(
        lambda t, x, p: jnp.stack([x[0], -x[1] + x[0] ** 2]),
        d=2,
        state_names=("u", "v"),
    )
    ax = dynjax.plot.phase_portrait(
        flow,
        (-2, 2),
        (-1, 3),
        equilibria=jnp.zeros((1, 2)),
        saddle_manifolds=True,
        n_grid=11,
        nullclines=False,
    )
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("u", "v")
    red = matplotlib.colors.to_rgba("tab:red")
    blue = matplotlib.colors.to_rgba("tab:blue")
    curves = [
        ln for ln in ax.lines if ln.get_linestyle() == "-" and len(ln.get_xdata())
    ]
    unstable = [
        ln.get_xydata()
        for ln in curves
        if matplotlib.colors.to_rgba(ln.get_color()) == red
    ]
    stable = [
        ln.get_xydata()
        for ln in curves
        if matplotlib.colors.to_rgba(ln.get_color()) == blue
    ]
    assert len(unstable) == 2 and len(stable) == 2
    for b in unstable:
        np.testing.assert_allclose(b[:, 1], b[:, 0] ** 2 / 3, atol=1e-9)
    assert sorted(b[-1, 0] for b in unstable) == pytest.approx([-2.0, 2.0], abs=1e-8)
    for b in stable:
        np.testing.assert_allclose(b[:, 0], 0.0, atol=1e-12)
    assert sorted(b[-1, 1] for b in stable) == pytest.approx([-1.0, 3.0], abs=1e-8)
    assert _legend_outside_axes(ax)
