"""Periodic points and equilibria on periodic (angle) coordinates.

The standard map in dynjax's convention is `p' = p + K sin(theta)`,
`theta' = theta + p'`, state `(theta, p)` on the torus `[0, 2 pi)^2`. Greene's
form (J. M. Greene, "A method for determining a stochastic transition",
J. Math. Phys. 20, 1183-1201 (1979); written out in J. D. Meiss, "Visual
explorations of dynamics: the standard map", Pramana 70, 965-988 (2008), eq. (1))
is `y' = y - (k / 2 pi) sin(2 pi x)`, `x' = x + y'` on the unit torus. With
`theta = 2 pi x + pi`, `p = 2 pi y` and `K = k` the two are the same map
(`-sin(theta - pi) = sin(theta)`), so Greene's critical `k = 0.971635` is
dynjax's default `K`, and Greene's symmetry lines `x = 0`, `x = 1/2` are
dynjax's `theta = pi`, `theta = 0`.

Two references, both independent of dynjax, are checked against each other and
against `find_equilibria`:

1. Greene's symmetry-line reduction: a symmetric orbit has a point on a line
   fixed by one of the map's reversors, which turns `F^p(x) = x + 2 pi m` into
   one scalar equation (solved with `scipy.optimize.brentq`). The period-3 point
   `(0, 1.7774)` quoted in the issue is the point on `theta = 0` of the rotation
   number 1/3 orbit: `3 a + K sin(a) = 2 pi`, `a = 1.77740...`.
2. A brute-force enumeration with NumPy: `scipy.optimize.fsolve` on
   `F^p(x) - x - 2 pi (m, 0)` for every winding `m` from a dense grid of
   guesses, deduplicated modulo `2 pi`.

Counts on the torus (both references agree): 6 period-2 points (the 2 fixed
points and the 4 points of the rotation-1/2 orbits) and 14 period-3 points (the
2 fixed points and the 12 points of the rotation-1/3 and 2/3 orbits, two orbits
each). The issue's count of 15 period-3 points is not reproduced by either
reference; 14 is what is tested.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq, fsolve

import dynjax
from dynjax import RESULTS
from dynjax.systems import StandardMap


K = 0.971635  # Greene (1979)
TWO_PI = 2 * np.pi


def _wrapped(a, b, period=TWO_PI):
    d = np.asarray(a) - np.asarray(b)
    return d - period * np.round(d / period)


def _step(x, k=K):
    theta, p = x
    p = p + k * np.sin(theta)
    return np.array([theta + p, p])


def _iterate(x, n, k=K):
    for _ in range(n):
        x = _step(x, k)
    return x


def _orbit(x, n):
    out = [np.asarray(x, float)]
    for _ in range(n - 1):
        out.append(_step(out[-1]))
    return [np.mod(y, TWO_PI) for y in out]


def _same_set(found, expected, tol, period=TWO_PI):
    found = np.asarray(found)
    expected = np.asarray(expected)
    assert len(found) == len(expected), (len(found), len(expected))
    for e in expected:
        dist = np.max(np.abs(_wrapped(found, e, period)), axis=-1)
        assert np.min(dist) < tol, (e, found)


def _unique_mod(points, tol=1e-7):
    out = []
    for x in points:
        if not any(np.max(np.abs(_wrapped(x, q))) < tol for q in out):
            out.append(np.mod(x, TWO_PI))
    return np.array(out)


def _symmetry_reference(period):
    """Greene's symmetric orbits of the standard map (reference 1)."""
    fixed = [np.array([0.0, 0.0]), np.array([np.pi, 0.0])]
    if period == 2:
        # On theta = 0: (0, c) -> (c, c) -> (2 c + K sin c, c + K sin c) closes
        # (m = 1) iff sin c = 0: c = pi, for every K.
        # On the line p = 2 theta (fixed by the reversor theta -> -theta,
        # p -> p - K sin theta followed by the map's inverse): the orbit
        # (t, 2 t) -> (2 pi - t, 2 pi - 2 t) with 4 t + K sin t = 2 pi.
        t = brentq(lambda t: 4 * t + K * np.sin(t) - TWO_PI, 0.0, np.pi)
        seeds = [np.array([0.0, np.pi]), np.array([t, 2 * t])]
    elif period == 3:
        # On theta = 0: (0, a) -> (a, a) -> (2 a + K sin a, a + K sin a), and the
        # orbit is symmetric iff theta_2 = 2 pi - a: 3 a + K sin a = 2 pi.
        # On theta = pi: (pi, b) -> (pi + b, b) -> (pi + 2 b - K sin b, ...),
        # symmetric iff 3 b - K sin b = 2 pi. Their images under
        # (theta, p) -> (-theta, -p) (which conjugates F to itself) are the
        # rotation-2/3 orbits through (0, 2 pi - a) and (pi, 2 pi - b).
        a = brentq(lambda a: 3 * a + K * np.sin(a) - TWO_PI, 0.0, np.pi)
        b = brentq(lambda b: 3 * b - K * np.sin(b) - TWO_PI, 0.0, np.pi)
        seeds = [
            np.array([0.0, a]),
            np.array([0.0, TWO_PI - a]),
            np.array([np.pi, b]),
            np.array([np.pi, TWO_PI - b]),
        ]
    pts = fixed + [y for s in seeds for y in _orbit(s, period)]
    for x in pts:  # each is a period-p point of the lift, up to a winding
        assert np.max(np.abs(_wrapped(_iterate(x, period), x))) < 1e-12
    return _unique_mod(pts)


def _brute_force_reference(period, n_grid=24):
    """All period-p points by fsolve from a grid, every winding (reference 2)."""
    # |p_p - p_0| = K |sum sin(theta_k)| <= p K < 2 pi: p never winds, and theta
    # winds m times with 0 <= m <= p (a shift p -> p + 2 pi adds p to m).
    g = np.linspace(0.0, TWO_PI, n_grid, endpoint=False) + 0.05
    found = []
    for m in range(period + 1):
        shift = np.array([TWO_PI * m, 0.0])
        for a in g:
            for b in g:

                def r(x):
                    return _iterate(x, period) - x - shift

                x, _, ier, _ = fsolve(r, [a, b], full_output=True, xtol=1e-13)
                if ier == 1 and np.max(np.abs(r(x))) < 1e-10:
                    found.append(x)
    return _unique_mod(found)


@pytest.fixture(scope="module")
def guess_grid():
    g = np.linspace(0.0, TWO_PI, 30, endpoint=False)
    return jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))


@pytest.mark.parametrize("period, count", [(2, 6), (3, 14)])
def test_references_agree(period, count):
    sym = _symmetry_reference(period)
    brute = _brute_force_reference(period)
    assert len(sym) == count
    _same_set(brute, sym, 1e-9)


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("period, count", [(2, 6), (3, 14)])
def test_standard_map_all_periodic_points(guess_grid, wrap, period, count):
    eq = dynjax.find_equilibria(StandardMap(wrap=wrap), guess_grid, period=period)
    found = eq.unique
    assert int(eq.count) == count
    # in the fundamental domain, and exactly the reference set (modulo 2 pi)
    assert np.all((found >= 0) & (found < TWO_PI))
    _same_set(found, _symmetry_reference(period), 1e-8)
    # the fixed points have minimal period 1, all others `period`
    minimal = np.asarray(eq.minimal_period)[:count]
    is_fixed = np.max(np.abs(_wrapped(_iterate(found.T, 1).T, found)), axis=1) < 1e-8
    assert is_fixed.sum() == 2
    np.testing.assert_array_equal(minimal, np.where(is_fixed, 1, period))
    assert np.all(np.asarray(eq.residuals)[np.asarray(eq.converged)] < 1e-10)


def test_published_period3_point_converges():
    # (theta, p) = (0, 1.7774): the rotation-1/3 orbit on the symmetry line
    # theta = 0, 3 a + K sin a = 2 pi (see the module docstring).
    a = brentq(lambda a: 3 * a + K * np.sin(a) - TWO_PI, 0.0, np.pi)
    assert abs(a - 1.7774) < 1e-4
    guess = jnp.array([[0.0, 1.7774]])
    for wrap in (True, False):
        system = StandardMap(wrap=wrap)
        eq = dynjax.find_equilibria(system, guess, period=3)
        assert eq.result == RESULTS.successful
        x = eq.unique[0]
        np.testing.assert_allclose(_wrapped(x, [0.0, a]), 0.0, atol=1e-12)
        assert int(eq.minimal_period[0]) == 3
        # On the lift it is a winding orbit: F^3(x) = x + (2 pi, 0).
        np.testing.assert_allclose(
            _iterate(np.asarray(x), 3) - x, [TWO_PI, 0.0], atol=1e-12
        )
        # The Jacobian of F^3 (Greene's residue R = (2 - tr M) / 4) is the product
        # of the one-step Jacobians along the orbit, wrapped or not.
        M = np.eye(2)
        for y in _orbit(np.asarray(x), 3):
            c = K * np.cos(y[0])
            M = np.array([[1 + c, 1.0], [c, 1.0]]) @ M
        lin = dynjax.linearize(system, x, period=3)
        np.testing.assert_allclose(lin.jacobian, M, rtol=1e-12, atol=1e-12)


def test_torus_map_without_periods_fails_with_details():
    # The bug: the same torus map without declared periods compares
    # F^3(x) and x without wrapping, and Newton is lost at the seam.
    sm = StandardMap()
    torus = dynjax.Map(lambda n, x, p: sm.step(n, x), d=2)
    with pytest.raises(
        eqx.EquinoxRuntimeError,
        match=r"No guess converged to a period-3 point(.|\n)*coordinate_periods",
    ):
        dynjax.find_equilibria(torus, jnp.array([[0.0, 1.7774]]), period=3)
    declared = dynjax.Map(
        lambda n, x, p: sm.step(n, x), d=2, coordinate_periods=(TWO_PI, TWO_PI)
    )
    eq = dynjax.find_equilibria(declared, jnp.array([[0.0, 1.7774]]), period=3)
    assert eq.result == RESULTS.successful


def test_winding_orbit_gradient_implicit():
    # d a / d K from 3 a + K sin a = 2 pi: -sin a / (3 + K cos a).
    a = brentq(lambda a: 3 * a + K * np.sin(a) - TWO_PI, 0.0, np.pi)
    expected = -np.sin(a) / (3 + K * np.cos(a))
    for wrap in (True, False):

        def p_of_k(k):
            eq = dynjax.find_equilibria(
                StandardMap(K=k, wrap=wrap), jnp.array([[0.0, 1.7774]]), period=3
            )
            return eq.points[0, 1]

        np.testing.assert_allclose(jax.grad(p_of_k)(K), expected, rtol=1e-9)


# --------------------------------------------------------------- the circle map


def _circle_map(counter=None):
    def step(n, x, params):
        if counter is not None:
            counter["n"] += 1
        omega, k = params
        return x + omega - k / (2 * jnp.pi) * jnp.sin(2 * jnp.pi * x)

    return step


def test_circle_map_period2_winding_orbits():
    # theta' = theta + Omega - K / (2 pi) sin(2 pi theta) (Arnold's circle map, a
    # lift: the step does not reduce mod 1) with Omega = 1/2, K = 0.8, inside the
    # 1/2 Arnold tongue. Period-2 points, F^2(theta) = theta + 1:
    # {0, 1/2} for every K, and {t, 1 - t} with 2 t - K / (2 pi) sin(2 pi t) = 1/2.
    # No fixed points: |Omega| > K / (2 pi).
    counter = {"n": 0}
    omega, k = 0.5, 0.8
    circle = dynjax.Map(
        _circle_map(counter),
        (jnp.asarray(omega), jnp.asarray(k)),
        d=1,
        coordinate_periods=(1.0,),
    )
    t = brentq(lambda t: 2 * t - k / (2 * np.pi) * np.sin(2 * np.pi * t) - 0.5, 0, 0.5)
    expected = np.array([[0.0], [0.5], [t], [1 - t]])
    guesses = jnp.linspace(-1.0, 2.0, 61)[:, None]
    eq = dynjax.find_equilibria(circle, guesses, period=2)
    assert int(eq.count) == 4
    found = eq.unique
    assert np.all((found >= 0) & (found < 1))
    _same_set(found, expected, 1e-10, period=1.0)
    np.testing.assert_array_equal(np.asarray(eq.minimal_period)[:4], 2)
    # Same structure, new parameter values: no retrace. K = 0.6 moves t.
    n = counter["n"]
    circle2 = eqx.tree_at(
        lambda s: s.params, circle, (jnp.asarray(0.5), jnp.asarray(0.6))
    )
    eq2 = dynjax.find_equilibria(circle2, guesses, period=2)
    assert counter["n"] == n
    t2 = brentq(
        lambda t: 2 * t - 0.6 / (2 * np.pi) * np.sin(2 * np.pi * t) - 0.5, 0, 0.5
    )
    _same_set(eq2.unique, [[0.0], [0.5], [t2], [1 - t2]], 1e-10, period=1.0)


def test_circle_map_without_periods_reports_smallest_residual():
    # On the lift without declared periods F^2(theta) - theta
    # = 1 - K / (2 pi) (sin 2 pi theta + sin 2 pi theta_1) >= 1 - K / pi > 0:
    # no root, and the reported residual must respect that bound.
    k = 0.8
    lift = dynjax.Map(_circle_map(), (jnp.asarray(0.5), jnp.asarray(k)), d=1)
    guesses = jnp.linspace(0.0, 1.0, 20)[:, None]
    eq = dynjax.find_equilibria(lift, guesses, period=2, throw=False)
    assert eq.result == RESULTS.not_converged
    assert int(eq.count) == 0
    best = float(jnp.min(eq.residuals))
    assert best >= 1 - k / np.pi
    i = int(jnp.argmin(eq.residuals))
    with pytest.raises(eqx.EquinoxRuntimeError) as err:
        dynjax.find_equilibria(lift, guesses, period=2)
    msg = str(err.value)
    assert "No guess converged to a period-2 point" in msg
    assert f"|F^2(x) - x| = {best:.3g} was reached from guess {i}" in msg
    assert "coordinate_periods" in msg


# -------------------------------------------------- a flow with an angle coordinate


def test_pendulum_equilibria_dedup_across_the_seam():
    # theta' = omega, omega' = -sin(theta) - b omega: equilibria (k pi, 0). With
    # theta declared 2 pi-periodic there are exactly two, (0, 0) and (pi, 0),
    # whichever copy (theta = -3 pi ... 3 pi, both sides of the seam) was reached.
    def f(t, x, b):
        return jnp.stack([x[1], -jnp.sin(x[0]) - b * x[1]])

    seam = [TWO_PI - 1e-3, 1e-3]
    theta = np.concatenate([np.linspace(-3 * np.pi, 3 * np.pi, 37), seam])
    guesses = jnp.asarray(np.stack([theta, 0.1 * np.cos(theta)], axis=1))
    plain = dynjax.Flow(f, 0.3, d=2)
    angle = dynjax.Flow(f, 0.3, d=2, coordinate_periods=(TWO_PI, None))
    eq_plain = dynjax.find_equilibria(plain, guesses)
    eq = dynjax.find_equilibria(angle, guesses)
    # without the period, the copies k pi are distinct points
    assert int(eq_plain.count) > 2
    assert int(eq.count) == 2
    found = eq.unique
    assert np.all((found[:, 0] >= 0) & (found[:, 0] < TWO_PI))
    _same_set(found, [[0.0, 0.0], [np.pi, 0.0]], 1e-10)
    # guesses on either side of the seam reach the same point
    i, j = len(theta) - 2, len(theta) - 1
    assert int(eq.index[i]) == int(eq.index[j])
    # the roots are the same as without the period, up to multiples of 2 pi
    ok = np.asarray(eq.converged)
    np.testing.assert_allclose(
        _wrapped(np.asarray(eq.roots)[ok], np.asarray(eq_plain.roots)[ok]),
        0.0,
        atol=1e-10,
    )


def test_wrapped_find_under_jit_and_vmap(guess_grid):
    # jit: the same points as eagerly; vmap over K: the 1/3 orbit point on
    # theta = 0 follows 3 a + K sin a = 2 pi.
    sm = StandardMap()
    jitted = eqx.filter_jit(lambda s, g: dynjax.find_equilibria(s, g, period=2).count)(
        sm, guess_grid
    )
    assert int(jitted) == 6
    ks = jnp.array([0.8, 0.9, 1.1])

    def a_of(k):
        eq = dynjax.find_equilibria(
            StandardMap(K=k, wrap=False), jnp.array([[0.0, 1.8]]), period=3
        )
        return eq.points[0, 1]

    expected = [
        brentq(lambda a: 3 * a + k * np.sin(a) - TWO_PI, 0.0, np.pi)
        for k in np.asarray(ks)
    ]
    np.testing.assert_allclose(jax.vmap(a_of)(ks), expected, rtol=1e-10)
