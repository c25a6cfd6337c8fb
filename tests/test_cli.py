"""The command line: catalogue listing, `simulate` (options, what is drawn), the
demo, and the persistent compilation cache.

Commands run in-process (`main([...])`) with `--no-cache`, so the tests never
write to the user's cache; the figures are caught as they are saved and their
artists inspected.
"""

import os
import subprocess
import sys

import jax
import matplotlib
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dynjax._cli as cli
from dynjax._cli import cache_dir, main


matplotlib.use("Agg")


@pytest.fixture
def figures(monkeypatch):
    """The figures the command saves, by file name."""
    saved = {}
    save = cli._save

    def spy(fig, path):
        saved[os.path.basename(path)] = fig
        return save(fig, path)

    monkeypatch.setattr(cli, "_save", spy)
    return saved


def _final_state(out: str) -> np.ndarray:
    line = next(x for x in out.splitlines() if "final state" in x)
    return np.array(line.split("[")[1].split("]")[0].split(), dtype=float)


def _lorenz(t, x, sigma=10.0, rho=28.0, beta=8.0 / 3.0):
    return [
        sigma * (x[1] - x[0]),
        x[0] * (rho - x[2]) - x[1],
        x[0] * x[1] - beta * x[2],
    ]


def _legend_outside_axes(ax):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(ax.figure)  # the command closed the figure
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    return legend.x0 >= ax.get_window_extent(renderer).x1


@pytest.mark.slow  # 20 to 40 s on 2 cores: the whole tour, compiled
def test_demo_writes_figures_and_reports_equilibria(tmp_path, capsys, figures):
    argv = ["demo", "--out", str(tmp_path), "--t1", "5", "--t-lyapunov", "200"]
    assert main([*argv, "--no-cache"]) == 0
    out = capsys.readouterr().out
    for name in [
        "lorenz_attractor.png",
        "lorenz_lyapunov.png",
        "vanderpol_phase_portrait.png",
    ]:
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in out
    # Lorenz spectrum (Sprott 2003: 0.9056, 0, -14.5723) and its exact sum
    # -(sigma + 1 + beta); a short average, so loose tolerances.
    line = next(x for x in out.splitlines() if x.strip().startswith("exponents"))
    exponents = np.array(line.split("[")[1].split("]")[0].split(), dtype=float)
    np.testing.assert_allclose(exponents, [0.9056, 0.0, -14.5723], atol=0.08)
    np.testing.assert_allclose(exponents.sum(), -(10 + 1 + 8 / 3), atol=1e-3)
    # Van der Pol, mu = 1: period 6.6633 (e.g. Strogatz, sec. 7.5; Grimshaw 1990).
    assert "limit cycle: period 6.663" in out
    assert "unstable focus" in out
    # Eigenvalues at the origin: -beta and (-(sigma+1) ± sqrt((sigma+1)^2 +
    # 4 sigma (rho-1))) / 2 (Strogatz, Nonlinear Dynamics and Chaos, sec. 9.2).
    s, r, b = 10.0, 28.0, 8.0 / 3.0
    disc = np.sqrt((s + 1) ** 2 + 4 * s * (r - 1))
    for value in [(-(s + 1) + disc) / 2, (-(s + 1) - disc) / 2, -b]:
        assert f"{value:.3f}" in out

    # What was drawn: state names on the axes; the convergence figure carries
    # Sprott's values as dashed lines; the phase portrait's legend is outside.
    (ax,) = figures["lorenz_attractor.png"].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "z")
    (ax,) = figures["lorenz_lyapunov.png"].axes
    dashed = sorted(
        float(ln.get_ydata()[0]) for ln in ax.lines if ln.get_linestyle() == "--"
    )
    np.testing.assert_allclose(dashed, sorted([0.9056, 0.0, -14.5723]))
    (ax,) = figures["vanderpol_phase_portrait.png"].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
    assert _legend_outside_axes(ax)
    # the command line never switches the persistent cache on with --no-cache,
    # and the library never does
    assert jax.config.jax_compilation_cache_dir is None


def test_systems_lists_catalogue_with_state_names(capsys):
    assert main(["systems"]) == 0
    out = capsys.readouterr().out
    assert "Lorenz" in out and "sigma=10, rho=28, beta=2.66667" in out
    assert main(["systems", "Lorenz"]) == 0
    out = capsys.readouterr().out
    assert 'Lorenz, "Deterministic nonperiodic flow"' in out
    assert "state: (x, y, z)" in out
    assert main(["systems", "StandardMap"]) == 0
    assert "state: (theta, p)" in capsys.readouterr().out


def test_simulate_flow_param_transient_and_file_name(
    tmp_path, monkeypatch, capsys, figures
):
    monkeypatch.chdir(tmp_path)
    argv = ["simulate", "lorenz", "--param", "rho=35", "--transient", "1"]
    assert main([*argv, "--t1", "1", "--points", "101", "--no-cache"]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "dynjax_output" / "lorenz_rho=35.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and str(png) in out
    assert "Lorenz: 101 states" in out
    # rho = 35 reached the system: SciPy at high accuracy (t = 2 is short
    # enough for chaos to amplify the 1e-8 tolerance only ~10x)
    ref = solve_ivp(
        lambda t, x: _lorenz(t, x, rho=35.0),
        (0, 2),
        [1.0, 1.0, 1.0],
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
        dense_output=True,
    )
    np.testing.assert_allclose(_final_state(out), ref.y[:, -1], rtol=1e-5, atol=1e-5)
    (ax,) = figures["lorenz_rho=35.png"].axes
    (line,) = ax.lines
    assert line.get_linestyle() == "-"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "z")
    assert "rho=35" in ax.get_title()
    # the transient t < 1 was discarded: the line starts at the state at t = 1
    np.testing.assert_allclose(
        line.get_xydata()[[0, -1]], ref.sol([1.0, 2.0])[[0, 2]].T, rtol=1e-5, atol=1e-5
    )


def test_simulate_map_points_x0_steps_transient(tmp_path, capsys, figures):
    out_png = tmp_path / "h.png"
    argv = ["simulate", "henon", "--param", "a=1.2", "--x0", "0.1,0.1"]
    argv += ["--steps", "40", "--transient", "10", "--out", str(out_png)]
    assert main([*argv, "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    x = np.array([0.1, 0.1])
    orbit = [x]
    for _ in range(50):  # Henon (1976): x' = 1 - a x^2 + y, y' = b x
        x = np.array([1 - 1.2 * x[0] ** 2 + x[1], 0.3 * x[0]])
        orbit.append(x)
    orbit = np.array(orbit)
    assert "Henon: 41 states" in out
    np.testing.assert_allclose(_final_state(out), orbit[-1], atol=2e-6)
    (ax,) = figures["h.png"].axes
    (line,) = ax.lines
    assert line.get_linestyle() == "None"  # a map: points, no lines
    assert line.get_marker() not in (None, "None", "")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
    np.testing.assert_allclose(line.get_xydata(), orbit[10:], atol=1e-9)


def test_simulate_one_dimensional_map_time_series_and_cobweb(tmp_path, capsys, figures):
    out_png = tmp_path / "logistic.png"
    argv = ["simulate", "logistic", "--param", "r=3.9", "--steps", "30"]
    assert main([*argv, "--out", str(out_png), "--no-cache"]) == 0
    r, x = 3.9, [0.4]  # the default x0
    for _ in range(30):
        x.append(r * x[-1] * (1 - x[-1]))
    x = np.array(x)
    np.testing.assert_allclose(_final_state(capsys.readouterr().out), x[-1], atol=2e-6)
    series, web = figures["logistic.png"].axes
    np.testing.assert_allclose(series.lines[0].get_ydata(), x, atol=1e-9)
    assert (series.get_xlabel(), series.get_ylabel()) == ("n", "x")
    stair = web.lines[2]
    sx, sy = stair.get_xdata(), stair.get_ydata()
    np.testing.assert_allclose(sy[0::2], sx[0::2])  # on the diagonal
    np.testing.assert_allclose(sy[1::2], r * sx[1::2] * (1 - sx[1::2]), atol=1e-12)
    assert web.get_xlabel() == "$x_n$"


def test_simulate_static_parameter_and_default_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["simulate", "standardmap", "--param", "wrap=false", "--steps", "5"]
    assert main([*argv, "--no-cache"]) == 0
    assert (tmp_path / "dynjax_output" / "standardmap_wrap=False.png").exists()
    # unwrapped (the lift): p' = p + K sin(theta), theta' = theta + p' (Chirikov)
    K, (th, p) = 0.971635, (0.1, 0.0)
    for _ in range(5):
        p = p + K * np.sin(th)
        th = th + p
    np.testing.assert_allclose(
        _final_state(capsys.readouterr().out), [th, p], atol=2e-6
    )


@pytest.mark.parametrize(
    "argv, match",
    [
        (["lorenz", "--param", "rhoo=35"], r"no parameter 'rhoo'.*sigma, rho, beta"),
        (["lorenz", "--param", "rho"], "NAME=VALUE"),
        (["lorenz", "--param", "rho=abc"], "rho takes a float"),
        (["standardmap", "--param", "wrap=maybe"], "wrap takes a bool"),
        (["lorenz", "--x0", "1,2"], r"2 value\(s\) but the state has d=3"),
        (["lorenz", "--x0", "1,b,3"], "3 comma-separated numbers"),
        (["lorenz", "--steps", "10"], "is a flow: give --t1"),
        (["henon", "--t1", "5"], "is a map: give --steps"),
        (["henon", "--transient", "2.5"], "integers"),
        (["linear"], "needs constructor arguments"),
        (["lorenzz"], "Did you mean Lorenz"),
    ],
)
def test_simulate_errors(argv, match):
    with pytest.raises(SystemExit, match=match):
        main(["simulate", *argv, "--no-cache"])


def test_cache_dir_follows_xdg_and_can_be_switched_off():
    home = os.path.expanduser("~")
    assert cache_dir({}) == os.path.join(home, ".cache", "dynjax", "jax")
    assert cache_dir({"XDG_CACHE_HOME": "/c"}) == os.path.join("/c", "dynjax", "jax")
    assert cache_dir({"XDG_CACHE_HOME": "/c", "DYNJAX_NO_CACHE": "0"}) is not None
    assert cache_dir({"XDG_CACHE_HOME": "/c", "DYNJAX_NO_CACHE": "1"}) is None


def test_cache_written_by_the_command_unless_switched_off(tmp_path):
    def run(cache_home, **env_extra):
        env = {k: v for k, v in os.environ.items() if k != "DYNJAX_NO_CACHE"}
        env.update(XDG_CACHE_HOME=str(cache_home), **env_extra)
        argv = ["simulate", "logistic", "--steps", "5", "--out", str(tmp_path / "f")]
        subprocess.run(
            [sys.executable, "-m", "dynjax", *argv], env=env, check=True, timeout=300
        )

    run(tmp_path / "on")
    assert len(os.listdir(tmp_path / "on" / "dynjax" / "jax")) > 0
    run(tmp_path / "off", DYNJAX_NO_CACHE="1")
    assert not (tmp_path / "off" / "dynjax").exists()  # (matplotlib uses XDG too)
