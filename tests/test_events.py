"""Event detection: Poincare sections find every crossing inside long steps.

The references are closed forms. A field that a Runge-Kutta method integrates
exactly (a polynomial solution of degree <= 4) gives a zero error estimate, so the
step size controller grows the steps without bound and several crossings fall
inside one step: each test first checks with plain diffrax that this happens,
then that `dynjax.poincare_section` still finds every crossing at its exact time.
"""

import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax import RESULTS


def _cubic(t, x, p):
    # x(t) = (t + 6)(t + 2)(t - 2) = t^3 + 6 t^2 - 4 t - 24, x(-8) = -120
    return jnp.ones_like(x) * (3 * t**2 + 12 * t - 4)


def _parabola(t, x, p):
    # x(t) = (t - 10)(t - 10.5), x(0) = 105
    return jnp.ones_like(x) * (2 * t - 20.5)


def _ball(t, x, p):
    # a ball thrown up: height x[0], velocity x[1], gravity 1
    return jnp.array([x[1], -1.0])


def _steps(f, x0, t0, t1):
    """The steps `(starts, ends)` plain diffrax takes for `f` (default controller)."""
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, a: f(t, y, None)),
        dfx.Tsit5(),
        t0,
        t1,
        None,
        jnp.asarray(x0, float),
        saveat=dfx.SaveAt(steps=True),
        stepsize_controller=dfx.PIDController(rtol=1e-11, atol=1e-12),
    )
    ends = np.asarray(sol.ts)
    ends = ends[np.isfinite(ends)]
    return np.r_[t0, ends[:-1]], ends


def _holds(steps, *times):
    """Whether one step holds all `times`."""
    starts, ends = steps
    return bool(np.any((starts <= min(times)) & (max(times) < ends)))


def test_non_autonomous_cubic_three_crossings_in_one_step():
    steps = _steps(_cubic, [-120.0], -8.0, 12.0)
    assert _holds(steps, -6.0, -2.0)  # plain step-end signs would see no change
    cubic = dynjax.Flow(_cubic, d=1)
    plane = (jnp.array([1.0]), 0.0)
    x0 = jnp.array([-120.0])
    both = dynjax.poincare_section(cubic, x0, plane, 3, direction=0, t0=-8.0)
    assert both.result == RESULTS.successful
    np.testing.assert_allclose(both.times, [-6.0, -2.0, 2.0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(both.points, 0.0, atol=1e-9)
    np.testing.assert_allclose(both.return_times, [2.0, 4.0, 4.0], atol=1e-10)
    # x' = 3 t^2 + 12 t - 4 is 32 at t = -6 and 2 (upward), -16 at t = -2.
    up = dynjax.poincare_section(cubic, x0, plane, 2, direction=1, t0=-8.0)
    np.testing.assert_allclose(up.times, [-6.0, 2.0], rtol=0, atol=1e-10)
    down = dynjax.poincare_section(cubic, x0, plane, 1, direction=-1, t0=-8.0)
    np.testing.assert_allclose(down.times, [-2.0], rtol=0, atol=1e-10)
    # After the last root x grows for ever: a further crossing is reported missing.
    more = dynjax.poincare_section(
        cubic, x0, plane, 4, direction=0, t0=-8.0, t_max=50.0, throw=False
    )
    assert more.result == RESULTS.no_crossing
    np.testing.assert_allclose(more.times[:3], [-6.0, -2.0, 2.0], atol=1e-10)


def test_thrown_ball_crosses_a_height_twice():
    # y(t) = t - t^2 / 2 = 0.3 at t = 1 -/+ sqrt(0.4), with velocity +/- sqrt(0.4);
    # the steps grow tenfold each (the method is exact), so a root search that is
    # not bracketed leaves the step.
    ball = dynjax.Flow(_ball, d=2)
    plane = (jnp.array([1.0, 0.0]), 0.3)
    x0 = jnp.array([0.0, 1.0])
    r = math.sqrt(0.4)
    both = dynjax.poincare_section(ball, x0, plane, 2, direction=0)
    np.testing.assert_allclose(both.times, [1 - r, 1 + r], rtol=0, atol=1e-10)
    np.testing.assert_allclose(both.points, [[0.3, r], [0.3, -r]], atol=1e-10)
    up = dynjax.poincare_section(ball, x0, plane, 1, direction=1)
    np.testing.assert_allclose(up.times, [1 - r], rtol=0, atol=1e-10)
    down = dynjax.poincare_section(ball, x0, plane, 1, direction=-1)
    np.testing.assert_allclose(down.times, [1 + r], rtol=0, atol=1e-10)


def test_dip_below_the_plane_inside_one_long_step():
    # After a slow stretch the steps are long; x dips below 0 between t = 10 and
    # 10.5, inside one step, and comes back: both ends of that step are above.
    steps = _steps(_parabola, [105.0], 0.0, 30.0)
    assert _holds(steps, 10.0, 10.5)
    flow = dynjax.Flow(_parabola, d=1)
    plane = (jnp.array([1.0]), 0.0)
    x0 = jnp.array([105.0])
    both = dynjax.poincare_section(flow, x0, plane, 2, direction=0)
    np.testing.assert_allclose(both.times, [10.0, 10.5], rtol=0, atol=1e-10)
    up = dynjax.poincare_section(flow, x0, plane, 1, direction=1)
    np.testing.assert_allclose(up.times, [10.5], rtol=0, atol=1e-10)


def test_grazing_pair_found_and_near_miss_not_counted():
    # x(t) = (t - 10.25)^2 - delta: a pair of crossings 2 sqrt(delta) apart around
    # the minimum, inside one long step, where the step-end values and most
    # samples are positive; with delta < 0 the minimum misses the plane.
    plane = (jnp.array([1.0]), 0.0)

    def field(t, x, p):
        return jnp.ones_like(x) * 2 * (t - 10.25)

    flow = dynjax.Flow(field, d=1)
    for delta in (1e-2, 1e-6):
        x0 = jnp.array([10.25**2 - delta])
        sec = dynjax.poincare_section(flow, x0, plane, 2, direction=0)
        s = math.sqrt(delta)
        np.testing.assert_allclose(
            sec.times, [10.25 - s, 10.25 + s], rtol=0, atol=1e-10
        )
    miss = dynjax.poincare_section(
        flow,
        jnp.array([10.25**2 + 1e-9]),
        plane,
        1,
        direction=0,
        t_max=30.0,
        throw=False,
    )
    assert miss.result == RESULTS.no_crossing


def test_vmap_and_forward_derivative_of_the_crossing_time():
    # A ball thrown up with speed v crosses y = 0.3 upwards at t = v - sqrt(v^2 -
    # 0.6); dt/dv = 1 - v / sqrt(v^2 - 0.6).
    ball = dynjax.Flow(_ball, d=2)
    plane = (jnp.array([1.0, 0.0]), 0.3)

    def first(v):
        sec = dynjax.poincare_section(ball, jnp.stack([0.0, v]), plane, 1)
        return sec.times[0]

    vs = jnp.array([1.0, 1.5, 2.0])
    np.testing.assert_allclose(
        jax.vmap(first)(vs), vs - jnp.sqrt(vs**2 - 0.6), rtol=0, atol=1e-10
    )
    _, dt = jax.jvp(first, (1.5,), (1.0,))
    np.testing.assert_allclose(dt, 1 - 1.5 / math.sqrt(1.5**2 - 0.6), rtol=1e-8)


def test_event_errors():
    ball = dynjax.Flow(_ball, d=2)
    plane = (jnp.array([1.0, 0.0]), 0.3)
    x0 = jnp.array([0.0, 1.0])
    with pytest.raises(ValueError, match="adaptive step size controller"):
        dynjax.poincare_section(
            ball, x0, plane, 1, stepsize_controller=dfx.ConstantStepSize()
        )
    # The ball rises to 0.5 only: a plane at 0.6 is never crossed.
    high = (jnp.array([1.0, 0.0]), 0.6)
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not cross"):
        dynjax.poincare_section(ball, x0, high, 1, t_max=5.0)
    # A crossing budget too small to reach it is reported, not skipped.
    sec = dynjax.poincare_section(
        ball, x0, plane, 1, max_steps=1, throw=False, direction=-1
    )
    assert sec.result == RESULTS.max_steps_reached


def test_missing_crossings_are_nan_and_the_error_counts_them():
    # A ball thrown from (0, 1) peaks at y = 1/2: it crosses y = 0.3 twice and
    # never y = 0.6. Asking for three crossings of y = 0.3: two are found, the
    # third row is NaN (not the state where the search stopped).
    ball = dynjax.Flow(lambda t, x, p: jnp.stack([x[1], -jnp.ones_like(x[1])]), d=2)
    plane = (jnp.array([1.0, 0.0]), 0.3)
    sec = dynjax.poincare_section(
        ball, jnp.array([0.0, 1.0]), plane, 3, direction=0, t_max=5.0, throw=False
    )
    assert sec.result == dynjax.RESULTS.no_crossing
    np.testing.assert_allclose(
        sec.times[:2], [1 - np.sqrt(0.4), 1 + np.sqrt(0.4)], rtol=1e-10
    )
    assert np.all(np.isnan(np.asarray(sec.points[2])))
    assert np.isnan(float(sec.times[2]))
    with pytest.raises(eqx.EquinoxRuntimeError, match="2 of 3 crossings were found"):
        dynjax.poincare_section(
            ball, jnp.array([0.0, 1.0]), plane, 3, direction=0, t_max=5.0
        )
