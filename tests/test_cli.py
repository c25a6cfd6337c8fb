"""The command line: catalogue listing and the demo."""

import numpy as np

from dynjax._cli import main


def test_demo_writes_figure_and_reports_equilibria(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path), "--t1", "5", "--t-lyapunov", "200"]
    assert main(argv) == 0
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


def test_systems_lists_catalogue(capsys):
    assert main(["systems"]) == 0
    out = capsys.readouterr().out
    assert "Lorenz" in out and "sigma=10, rho=28, beta=2.66667" in out
    assert main(["systems", "Lorenz"]) == 0
    assert 'Lorenz, "Deterministic nonperiodic flow"' in capsys.readouterr().out


def test_simulate_map_writes_figure_and_final_state(tmp_path, capsys):
    out = tmp_path / "henon.png"
    assert main(["simulate", "henon", "--points", "21", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    import dynjax

    x = np.asarray(dynjax.systems.Henon().default_x0(), dtype=float)
    for _ in range(20):  # Henon (1976): x' = 1 - a x^2 + y, y' = b x
        x = np.array([1 - 1.4 * x[0] ** 2 + x[1], 0.3 * x[0]])
    printed = capsys.readouterr().out
    assert f"Henon: 21 states, final state {np.array2string(x, precision=6)}" in printed
