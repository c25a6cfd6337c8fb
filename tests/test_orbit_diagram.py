"""Orbit diagrams, attractor periods, period doublings and Feigenbaum ratios (issue
15), and the bifurcation plots, checked against analytic cycles, published
doubling values, NumPy iterations and SciPy's event location."""

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
import scipy.integrate

import dynjax
from dynjax._continuation import _orbit_diagram as od
from dynjax._continuation._orbit_diagram import (
    feigenbaum_ratios,
    orbit_diagram,
    period_doublings,
)
from dynjax.systems import Henon, Logistic, Rossler


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


X0 = jnp.array([0.4])

# Successive period doublings of the logistic map: r_1 = 3 and r_2 = 1 + sqrt(6)
# exactly; r_3 = 3.5440903, r_4 = 3.5644073, r_5 = 3.5687594 from K. T. Alligood,
# T. D. Sauer and J. A. Yorke, *Chaos: An Introduction to Dynamical Systems*
# (Springer, 1996), p. 504 (S. H. Strogatz, *Nonlinear Dynamics and Chaos*
# (1994), section 10.2, lists 3.54409, 3.5644, 3.568759).
R_DOUBLINGS = np.array([3.0, 1 + np.sqrt(6), 3.5440903, 3.5644073, 3.5687594])
FEIGENBAUM_DELTA = 4.669201609


def _logistic_cycle(r, q):
    """The real points of least period `q` of `x -> r x (1 - x)` in (0, 1): the
    real roots of the polynomial `f^q(x) - x` (NumPy), polished by Newton's method
    on the composition, less those of shorter period."""
    P = np.polynomial.Polynomial
    f = P([0.0, r, -r])
    g = P([0.0, 1.0])
    for _ in range(q):
        g = f(g)
    roots = (g - P([0.0, 1.0])).roots()
    x = np.unique(roots[np.abs(roots.imag) < 1e-6].real)
    x = x[(x > 0) & (x < 1)]
    for _ in range(8):
        y, dy = x.copy(), np.ones_like(x)
        for _ in range(q):
            y, dy = r * y * (1 - y), r * (1 - 2 * y) * dy
        x = x - (y - x) / (dy - 1)

    def least_period(x):
        y = x
        for p in range(1, q + 1):
            y = r * y * (1 - y)
            if abs(y - x) < 1e-9:
                return p

    return np.array([v for v in x if least_period(v) == q])


def test_logistic_periods_and_points():
    values = jnp.array([2.8, 3.2, 3.5, 3.55, 3.9])
    diagram = orbit_diagram(Logistic(), "r", values, X0, n_transient=2000, n_keep=64)
    assert diagram.points.shape == (5, 64, 1)
    assert diagram.points.dtype == jnp.float64
    # Period 1 below r_1 = 3, 2 up to 1 + sqrt 6, 4 up to r_3 = 3.544, 8 up to
    # r_4 = 3.5644 (Strogatz, section 10.2); chaos at 3.9.
    np.testing.assert_array_equal(diagram.periods(), [1, 2, 4, 8, 0])
    assert not np.any(diagram.escaped)
    pts = np.asarray(diagram.points[..., 0])
    # r = 2.8: the fixed point 1 - 1/r.
    np.testing.assert_allclose(pts[0], 1 - 1 / 2.8, atol=1e-12)
    # r = 3.2: the 2-cycle (r + 1 +- sqrt((r - 3)(r + 1))) / (2 r) (Strogatz,
    # Example 10.3.2).
    r = 3.2
    two = (r + 1 + np.array([-1, 1]) * np.sqrt((r - 3) * (r + 1))) / (2 * r)
    np.testing.assert_allclose(np.unique(pts[1].round(10)), two, atol=1e-9)
    # r = 3.5: the stable 4-cycle, among the roots of f^4(x) = x (NumPy).
    four = _logistic_cycle(3.5, 4)
    seen = np.unique(pts[2].round(9))
    assert seen.size == 4
    assert np.max(np.min(np.abs(seen[:, None] - four[None, :]), axis=1)) < 1e-9
    # r = 3.9: a band inside the absorbing interval [f(f(1/2)), f(1/2)] =
    # [r^2 (4 - r) / 16, r / 4] that fills most of it.
    r = 3.9
    lo, hi = r**2 * (4 - r) / 16, r / 4
    assert np.all((pts[4] >= lo - 1e-12) & (pts[4] <= hi + 1e-12))
    assert np.ptp(pts[4]) > 0.8 * (hi - lo)


def test_matches_numpy_iteration_per_value_start_and_selector():
    # (P, d) starts, a selector function and a 2-D map, against NumPy loops.
    henon = Henon()
    values = jnp.array([0.2, 0.9, 1.4])
    x0 = jnp.array([[0.1, 0.0], [0.0, 0.1], [0.2, -0.1]])
    n_transient, n_keep = 20, 10
    diagram = orbit_diagram(
        henon, lambda s: s.a, values, x0, n_transient=n_transient, n_keep=n_keep
    )
    for i, a in enumerate(np.asarray(values)):
        x = np.asarray(x0[i])
        out = []
        for n in range(n_transient + n_keep):
            x = np.array([1 - a * x[0] ** 2 + x[1], 0.3 * x[0]])
            if n >= n_transient:
                out.append(x)
        np.testing.assert_allclose(diagram.points[i], np.array(out), atol=1e-9)
    assert diagram.parameter_name == "parameter"
    assert diagram.state_names == ("x", "y")


def test_escaped_orbits_are_reported_per_value():
    # For r > 4 the maximum r/4 exceeds 1, so an orbit from x0 = 0.4 leaves
    # [0, 1] and runs to -infinity (x -> r x (1 - x) < x for x < 0).
    values = jnp.array([3.5, 4.2, 2.5])
    diagram = orbit_diagram(Logistic(), "r", values, X0, throw=False)
    np.testing.assert_array_equal(diagram.escaped, [False, True, False])
    np.testing.assert_array_equal(
        diagram.result == dynjax.RESULTS.map_escaped, [False, True, False]
    )
    np.testing.assert_array_equal(
        diagram.result == dynjax.RESULTS.successful, [True, False, True]
    )
    assert np.all(np.isnan(diagram.points[1]))
    assert np.all(np.isfinite(diagram.points[jnp.array([0, 2])]))
    np.testing.assert_array_equal(diagram.periods(), [4, -1, 1])
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"escaped.*4\.2.*throw=False"):
        orbit_diagram(Logistic(), "r", values, X0)


def test_periodic_coordinates_rational_rotations():
    # The lift x -> x + omega of a rotation, declared 1-periodic: rotation by p/q
    # in lowest terms has least period q; an irrational rotation has none.
    rotation = dynjax.Map(
        lambda n, x, p: x + p["omega"], {"omega": 0.0}, d=1, coordinate_periods=(1.0,)
    )
    values = jnp.array([1 / 3, 1 / 4, 2 / 5, 3 / 7, np.sqrt(2) - 1])
    diagram = orbit_diagram(
        rotation, lambda s: s.params["omega"], values, jnp.array([0.1]), n_keep=40
    )
    np.testing.assert_array_equal(diagram.periods(), [3, 4, 5, 7, 0])
    # Without the period the lift is never periodic.
    plain = dynjax.Map(lambda n, x, p: x + p["omega"], {"omega": 0.0}, d=1)
    diagram = orbit_diagram(
        plain, lambda s: s.params["omega"], values, jnp.array([0.1]), n_keep=40
    )
    np.testing.assert_array_equal(diagram.periods(), [0, 0, 0, 0, 0])


def test_jit_vmap_grad_and_no_recompile(monkeypatch):
    # A stable fixed point x* = 1 - 1/r: d x* / d r = 1 / r^2.
    values = jnp.array([2.5, 2.8])

    def last(v):
        return orbit_diagram(Logistic(), "r", v, X0, n_keep=4).points[:, -1, 0]

    np.testing.assert_allclose(jax.jit(last)(values), 1 - 1 / values, atol=1e-12)
    jac = jax.jacfwd(last)(values)
    np.testing.assert_allclose(jac, np.diag(1 / values**2), atol=1e-9)
    grad = jax.grad(lambda v: jnp.sum(last(v)))(values)
    np.testing.assert_allclose(grad, 1 / values**2, atol=1e-9)
    # vmap over a batch of sweeps equals one sweep over their concatenation.
    grid = jnp.array([[2.5, 3.2], [3.5, 2.9]])
    batched = jax.vmap(lambda v: orbit_diagram(Logistic(), "r", v, X0).points)(grid)
    flat = orbit_diagram(Logistic(), "r", grid.reshape(-1), X0).points
    np.testing.assert_allclose(batched.reshape(flat.shape), flat, atol=1e-14)
    # A new sweep of the same shape reuses the compiled program.
    traces = []
    orbit = od._orbit

    def counting(*a, **k):
        traces.append(1)
        return orbit(*a, **k)

    monkeypatch.setattr(od, "_orbit", counting)
    for v in ([2.1, 2.2, 2.3], [3.1, 3.2, 3.3], [3.6, 3.7, 3.8]):
        orbit_diagram(Logistic(), "r", jnp.array(v), X0, n_transient=7, n_keep=5)
    assert len(traces) <= 1


def test_feigenbaum_ratio_from_orbit_diagram():
    # Issue 15, item 3: the successive doublings located on the orbit diagram
    # give the Feigenbaum ratio within 2 % of 4.6692.
    grid = jnp.linspace(2.9, 3.5695, 1400)  # spacing 4.8e-4 < r_5 - r_4
    found = period_doublings(
        Logistic(), "r", grid, X0, n_doublings=5, n_transient=2**15
    )
    assert int(found.base_period) == 1
    assert np.all(found.found)
    r = np.asarray(found.parameter)
    # Each doubling near the published value; the transient's slow convergence
    # at a doubling biases the located value low, by ~1 / n_transient.
    np.testing.assert_allclose(r, R_DOUBLINGS, atol=5e-4)
    assert np.all(r <= R_DOUBLINGS + 1e-7)
    assert np.all(np.diff(np.asarray(found.bracket), axis=1) < 1e-9)
    deltas = np.asarray(feigenbaum_ratios(found.parameter))
    assert deltas.shape == (3,)
    np.testing.assert_allclose(deltas[-1], FEIGENBAUM_DELTA, rtol=0.02)
    # Each ratio also agrees with the one from the published doublings.
    published = np.diff(R_DOUBLINGS)[:-1] / np.diff(R_DOUBLINGS)[1:]
    np.testing.assert_allclose(deltas, published, rtol=2e-3)


def test_period_doublings_not_bracketed():
    grid = jnp.linspace(2.9, 3.5, 200)  # holds r_1 and r_2 only
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"doublings \[3\] were not"):
        period_doublings(Logistic(), "r", grid, X0, n_doublings=3, n_transient=4096)
    out = period_doublings(
        Logistic(), "r", grid, X0, n_doublings=3, n_transient=4096, throw=False
    )
    np.testing.assert_array_equal(out.found, [True, True, False])
    assert np.isnan(out.parameter[2])
    assert out.result == dynjax.RESULTS.not_converged
    # (A short transient: low by ~log(1e4) / n_transient, see `period_doublings`.)
    np.testing.assert_allclose(out.parameter[:2], R_DOUBLINGS[:2], atol=5e-3)


def test_rossler_poincare_orbit_diagram():
    # Rossler with a = b = 0.2: period 1 at c = 2.5 and period 2 at c = 3.5, on a
    # section (Strogatz, Nonlinear Dynamics and Chaos (1994), section 12.3: for
    # c = 2.5, 3.5, 4, 5 the attractor has period 1, 2, 4 and is chaotic).
    plane = (jnp.array([0.0, 1.0, 0.0]), 0.0)  # y = 0, crossed with y' < 0
    x0 = jnp.array([1.0, 1.0, 0.0])
    values = jnp.array([2.5, 3.5])
    diagram = orbit_diagram(
        Rossler(), "c", values, x0, plane=plane, direction=-1, n_transient=60,
        n_keep=8,
    )  # fmt: skip
    np.testing.assert_array_equal(diagram.periods(), [1, 2])
    np.testing.assert_allclose(diagram.points[..., 1], 0.0, atol=1e-12)
    # The section points against SciPy's event location (DOP853, 1e-12) after
    # the same 60 crossings from the same start.
    for i, c in enumerate(np.asarray(values)):

        def f(t, u, c=c):
            return [-u[1] - u[2], u[0] + 0.2 * u[1], 0.2 + u[2] * (u[0] - c)]

        def event(t, u):
            return u[1]

        event.direction = -1
        sol = scipy.integrate.solve_ivp(
            f, (0, 600), np.asarray(x0), method="DOP853", rtol=1e-12, atol=1e-12,
            events=event,
        )  # fmt: skip
        ref = sol.y_events[0][60:68]
        assert ref.shape == (8, 3)
        np.testing.assert_allclose(diagram.points[i], ref, atol=1e-6)


def test_bad_input():
    lg = Logistic()
    with pytest.raises(ValueError, match="has no parameter 'rho'"):
        orbit_diagram(lg, "rho", jnp.array([3.0]), X0)
    with pytest.raises(ValueError, match="give `plane=\\(normal, offset\\)`"):
        orbit_diagram(Rossler(), "c", jnp.array([3.0]), jnp.ones(3))
    with pytest.raises(ValueError, match=r"normal must have shape \(3,\)"):
        orbit_diagram(Rossler(), "c", [3.0], jnp.ones(3), plane=(jnp.ones(2), 0.0))
    with pytest.raises(ValueError, match="`plane` is for flows"):
        orbit_diagram(lg, "r", jnp.array([3.0]), X0, plane=(jnp.ones(1), 0.0))
    with pytest.raises(ValueError, match="1-D array of parameter values"):
        orbit_diagram(lg, "r", jnp.ones((2, 2)), X0)
    with pytest.raises(ValueError, match=r"shape \(d,\) .* or \(P, d\) = \(2, d\)"):
        orbit_diagram(lg, "r", jnp.array([3.0, 3.1]), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="`n_keep` must be an int >= 1"):
        orbit_diagram(lg, "r", jnp.array([3.0]), X0, n_keep=0)
    with pytest.raises(ValueError, match="takes a map or a flow"):
        orbit_diagram(dynjax.DrivenMap(lambda x, u, p: x + u), "p", [1.0], X0)
    diagram = orbit_diagram(lg, "r", jnp.array([3.0]), X0, n_keep=10)
    with pytest.raises(ValueError, match=r"`max_period` must be an int in \[1, "):
        diagram.periods(max_period=6)
    with pytest.raises(ValueError, match="increasing grid"):
        period_doublings(lg, "r", jnp.array([3.2, 3.0]), X0, n_doublings=1)
    with pytest.raises(ValueError, match="at least three successive doublings"):
        feigenbaum_ratios(jnp.array([3.0, 3.4]))


# --- plots ---------------------------------------------------------------------


def test_plot_orbit_diagram_draws_the_points():
    values = jnp.array([2.8, 3.2, 4.2])
    diagram = orbit_diagram(Logistic(), "r", values, X0, n_keep=16, throw=False)
    ax = dynjax.plot.orbit_diagram(diagram)
    (line,) = ax.lines
    assert line.get_linestyle() == "None"
    xy = line.get_xydata()
    np.testing.assert_array_equal(xy[:, 0], np.repeat(np.asarray(values), 16))
    # The fixed point 1 - 1/r at 2.8, the analytic 2-cycle at 3.2 (Strogatz,
    # Example 10.3.2), nothing drawn for the escaped orbit at 4.2.
    np.testing.assert_allclose(xy[:16, 1], 1 - 1 / 2.8, atol=1e-12)
    two = (3.2 + 1 + np.array([-1, 1]) * np.sqrt(0.2 * 4.2)) / 6.4
    np.testing.assert_allclose(np.unique(xy[16:32, 1].round(10)), two, atol=1e-9)
    assert np.all(np.isnan(xy[32:, 1]))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("r", "x")
    with pytest.raises(ValueError, match="`coordinate` must be a state index"):
        dynjax.plot.orbit_diagram(diagram, coordinate=1)


def _r(system):
    return system.r


def _runs_match(lines, branch, stable_expected):
    """The solid / dashed lines hold the stable / unstable points of `branch`, in
    order, each run's ends being its joins to the neighbouring runs."""
    n = int(branch.n_points)
    p = np.asarray(branch.parameter[:n])
    x = np.asarray(branch.states[:n, 0])
    stable = np.asarray(branch.stable[:n])
    np.testing.assert_array_equal(stable, stable_expected(p))
    cuts = np.flatnonzero(stable[1:] != stable[:-1])
    starts, ends = np.r_[0, cuts + 1], np.r_[cuts, n - 1]
    assert len(lines) == len(starts)
    for k, (line, a, b) in enumerate(zip(lines, starts, ends)):
        assert line.get_linestyle() == ("-" if stable[a] else "--")
        xy = line.get_xydata()
        inner = xy[(1 if k > 0 else 0) : len(xy) - (1 if k < len(lines) - 1 else 0)]
        np.testing.assert_array_equal(inner, np.c_[p[a : b + 1], x[a : b + 1]])
        if k < len(lines) - 1:  # the join lies between the two runs' points
            np.testing.assert_array_equal(xy[-1], lines[k + 1].get_xydata()[0])
            assert p[b] <= xy[-1, 0] <= p[b + 1]
    return cuts


def test_plot_bifurcation_diagram_stable_solid_unstable_dashed():
    # The logistic map's fixed points 1 - 1/r (multiplier 2 - r) and 0
    # (multiplier r): they cross at r = 1 (transcritical), and 1 - 1/r flips at
    # r = 3, x = 2/3 (Strogatz, section 10.3). (One compiled continuation: the
    # same options and selector for both branches.)
    lg = Logistic()
    kw = dict(p_min=0.5, p_max=3.4, ds_max=0.05)
    nontrivial = dynjax.continuation(lg, _r, jnp.array([0.6]), 2.5, **kw)
    trivial = dynjax.continuation(lg, _r, jnp.array([0.0]), 0.8, **kw)
    ax = dynjax.plot.bifurcation_diagram(
        [nontrivial, trivial], parameter="r", system=lg
    )
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("r", "x")
    lines = ax.lines
    # Branch 1: unstable (r < 1), stable, unstable (r > 3); then its markers.
    _runs_match(lines[:3], nontrivial, lambda p: np.abs(2 - p) < 1)
    bp, flip = lines[3], lines[4]
    assert bp.get_linestyle() == "None" and bp.get_label() == "branch point"
    np.testing.assert_allclose(bp.get_xdata(), [1.0], atol=1e-3)
    assert flip.get_label() == "flip"
    np.testing.assert_allclose(flip.get_xydata(), [[3.0, 2 / 3]], atol=1e-8)
    # The stable run ends at the located flip point.
    np.testing.assert_allclose(lines[1].get_xydata()[-1], [3.0, 2 / 3], atol=1e-8)
    # Branch 2, in the next colour: stable (r < 1), unstable; its branch point.
    assert lines[5].get_color() != lines[0].get_color()
    _runs_match(lines[5:7], trivial, lambda p: p < 1)
    np.testing.assert_allclose(lines[7].get_xdata(), [1.0], atol=1e-3)
    assert len(lines) == 8
    # (The branch point, shared by both branches at (1, 0), is named once.)
    names = ["branch point", "flip"]
    assert [t.get_text() for t in ax.texts] == names
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["stable", "unstable", "branch point", "flip"]
    with pytest.raises(ValueError, match="`branches` must be a `dynjax.Branch`"):
        dynjax.plot.bifurcation_diagram([nontrivial, "branch"])
    with pytest.raises(ValueError, match="`coordinate` must be a state index"):
        dynjax.plot.bifurcation_diagram(trivial, coordinate=2)
