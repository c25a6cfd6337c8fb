"""Invariant manifolds grown by arclength until they leave a box.

The time-parametrised growth is tested in tests/test_equilibria.py.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

import dynjax


# x' = x, y' = -y + x^2: W^u(0) = {y = x^2 / 3} exactly (substitute y = c x^2:
# 2 c x^2 = -c x^2 + x^2), W^s(0) = {x = 0}.
QUADRATIC = dynjax.Flow(lambda t, x, p: jnp.stack([x[0], -x[1] + x[0] ** 2]), d=2)
EPS = 1e-7  # the default offset at the origin in float64


def _parabola_length(x):
    # arclength of y = x^2 / 3 from 0 to x > 0: int sqrt(1 + (2s/3)^2) ds
    u = 2 * x / 3
    return 0.75 * (u * np.sqrt(1 + u**2) + np.arcsinh(u))


def _chord_length(points):
    return np.sum(np.linalg.norm(np.diff(points, axis=0), axis=1))


def test_quadratic_saddle_grown_to_the_box():
    box = ((-2.0, 2.0), (-1.0, 3.0))
    wu = dynjax.unstable_manifold(QUADRATIC, jnp.zeros(2), box=box, n_points=801)
    b = np.asarray(wu.branches)
    assert not wu.stable and wu.ts.shape == (2, 801)
    np.testing.assert_allclose(b[..., 1], b[..., 0] ** 2 / 3, atol=1e-10)
    # each branch leaves through the sides x = +-2 (where y = 4/3 < 3)
    np.testing.assert_allclose(b[:, -1], [[2.0, 4 / 3], [-2.0, 4 / 3]], atol=1e-9)
    expected = _parabola_length(2.0) - _parabola_length(EPS)
    np.testing.assert_allclose(wu.ts[:, -1], expected, rtol=1e-9)
    # equally spaced in arclength: the polyline's length matches, and every
    # chord is ts[1] long (the curvature is at most 2/3, so chords of 3e-3
    # differ from arcs by < 1e-7 relative).
    for branch, ts in zip(b, np.asarray(wu.ts)):
        np.testing.assert_allclose(np.diff(ts), expected / 800, rtol=1e-12)
        chords = np.linalg.norm(np.diff(branch, axis=0), axis=1)
        np.testing.assert_allclose(chords, expected / 800, rtol=1e-6)

    ws = dynjax.stable_manifold(QUADRATIC, jnp.zeros(2), box=box, n_points=801)
    s = np.asarray(ws.branches)
    assert ws.stable
    np.testing.assert_allclose(s[..., 0], 0.0, atol=1e-13)
    # canonical sign: branch 0 leaves along +e_y, to y = 3; branch 1 to y = -1
    np.testing.assert_allclose(s[:, -1, 1], [3.0, -1.0], atol=1e-9)
    np.testing.assert_allclose(ws.ts[:, -1], [3.0 - EPS, 1.0 - EPS], rtol=1e-9)


def test_quadratic_saddle_grown_to_a_length():
    wu = dynjax.unstable_manifold(QUADRATIC, jnp.zeros(2), arclength=1.5, n_points=801)
    np.testing.assert_allclose(wu.ts[:, -1], 1.5, rtol=1e-12)
    # the end point is where the parabola's arclength (from x = eps) is 1.5
    x_end = brentq(
        lambda x: _parabola_length(x) - _parabola_length(EPS) - 1.5, 0, 2, xtol=1e-14
    )
    b = np.asarray(wu.branches)
    np.testing.assert_allclose(b[:, -1, 0], [x_end, -x_end], atol=1e-9)
    np.testing.assert_allclose(_chord_length(b[0]), 1.5, rtol=1e-6)


def test_linear_saddle_manifolds_are_eigenvector_lines():
    # A = [[0, 1], [1, 0]]: eigenvalues +-1, eigenvectors (1, 1) and (1, -1).
    saddle = dynjax.systems.Linear(jnp.array([[0.0, 1.0], [1.0, 0.0]]))
    box = ((-1.0, 2.0), (-3.0, 3.0))
    wu = dynjax.unstable_manifold(saddle, jnp.zeros(2), box=box, n_points=101)
    ws = dynjax.stable_manifold(saddle, jnp.zeros(2), box=box, n_points=101)
    u, s = np.asarray(wu.branches), np.asarray(ws.branches)
    np.testing.assert_allclose(u[..., 1], u[..., 0], atol=1e-12)
    np.testing.assert_allclose(s[..., 1], -s[..., 0], atol=1e-12)
    np.testing.assert_allclose(u[:, -1], [[2.0, 2.0], [-1.0, -1.0]], atol=1e-9)
    np.testing.assert_allclose(s[:, -1], [[2.0, -2.0], [-1.0, 1.0]], atol=1e-9)
    # arclength along a straight line is the distance travelled
    np.testing.assert_allclose(
        wu.ts[:, -1], np.sqrt(2) * np.array([2.0, 1.0]) - EPS, rtol=1e-9
    )


def _dist_to_polyline(q, P):
    a, b = P[:-1], P[1:]
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", q - a, ab) / np.einsum("ij,ij->i", ab, ab), 0, 1)
    return np.min(np.linalg.norm(a + t[:, None] * ab - q, axis=1))


def test_pendulum_unstable_manifold_stops_at_the_foci():
    # Damped pendulum x'' = -sin x - b x': the unstable manifold of the saddle
    # (pi, 0) spirals into the stable foci (0, 0) and (2 pi, 0); it has finite
    # length, and growth stops there instead of exhausting max_steps. (The box
    # holds the overshoots past 0 and 2 pi; |y| <= 2 by energy: E = y^2/2 - cos x
    # decreases from E(saddle) = 1.)
    b = 0.3
    pend = dynjax.Flow(
        lambda t, x, b: jnp.stack([x[1], -jnp.sin(x[0]) - b * x[1]]), b, d=2
    )
    wu = dynjax.unstable_manifold(
        pend, jnp.array([np.pi, 0.0]), box=((-3.0, 9.3), (-3.0, 3.0)), n_points=4001
    )
    P = np.asarray(wu.branches)
    ends = sorted(P[:, -1, 0])
    np.testing.assert_allclose(ends, [0.0, 2 * np.pi], atol=1e-5)
    np.testing.assert_allclose(P[:, -1, 1], 0.0, atol=1e-5)

    # Invariance against an independent integrator: flowing points of the curve
    # forward with SciPy lands them back on the curve.
    def rhs(t, x):
        return [x[1], -np.sin(x[0]) - b * x[1]]

    for i in [1000, 2000, 3000]:
        q = solve_ivp(
            rhs, (0, 0.3), P[0, i], method="DOP853", rtol=1e-13, atol=1e-13
        ).y[:, -1]
        # chords of ~3.3e-3 (length ~13 / 4000) miss an arc of curvature <~ 2 by
        # at most 3.3e-3^2 * 2 / 8 = 2.7e-6
        assert _dist_to_polyline(q, P[0]) < 5e-6


def test_arclength_errors():
    with pytest.raises(ValueError, match="not both"):
        dynjax.unstable_manifold(QUADRATIC, jnp.zeros(2), t_end=5.0, arclength=1.0)
    with pytest.raises(ValueError, match="one \\(min, max\\) pair per coordinate"):
        dynjax.unstable_manifold(QUADRATIC, jnp.zeros(2), box=((-1, 1),))
    with pytest.raises(ValueError, match="min < max"):
        dynjax.unstable_manifold(QUADRATIC, jnp.zeros(2), box=((1, -1), (-1, 1)))
    with pytest.raises(ValueError, match="unbounded coordinate"):
        dynjax.unstable_manifold(QUADRATIC, jnp.zeros(2), box=((-1, 1), None))
    with pytest.raises(ValueError, match="`arclength` must be positive"):
        dynjax.unstable_manifold(QUADRATIC, jnp.zeros(2), arclength=-1.0)
    with pytest.raises(eqx.EquinoxRuntimeError, match="outside `box`"):
        dynjax.unstable_manifold(
            QUADRATIC, jnp.zeros(2), box=((1.0, 2.0), (-1.0, 1.0)), n_points=801
        )
