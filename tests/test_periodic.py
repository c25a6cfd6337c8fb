"""Periodic orbits (shooting, Floquet multipliers) and Poincare sections/maps.

References: the van der Pol mu=1 period 6.663286859 (e.g. Strogatz, Nonlinear
Dynamics and Chaos, Sec. 7.5, numerically; M. Urabe, J. Sci. Hiroshima Univ. A
24 (1960)), Liouville's formula for the product of Floquet multipliers
(integrated here independently with scipy), the Hopf normal form's closed-form
cycle r = sqrt(mu / beta), period 2 pi / omega and multiplier exp(-2 mu T).
Periods of the van der Pol cycles (standard and Lienard forms) are recomputed
here with SciPy at 1e-12 (DOP853, or LSODA with the Jacobian for the stiff
mu = 50) as the time between upward crossings of x = 0 after a relaxation; the
pendulum's rotation period is the quadrature T = int_0^{2 pi} d theta / omega.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from scipy.integrate import quad, solve_ivp

import dynjax
from dynjax import RESULTS
from dynjax.systems import Henon, HopfNormalForm, Rossler, VanDerPol


@pytest.fixture(scope="module")
def vdp_orbit():
    return dynjax.find_periodic_orbit(VanDerPol(mu=1.0), jnp.array([2.0, 0.0]), 6.5)


def test_van_der_pol_period_and_floquet(vdp_orbit):
    orbit = vdp_orbit
    assert orbit.result == RESULTS.successful
    assert abs(float(orbit.period) - 6.6633) < 1e-3
    assert abs(float(orbit.period) - 6.663286859) < 1e-6
    mu = np.asarray(orbit.multipliers)
    trivial = mu[int(orbit.trivial_index)]
    assert abs(trivial - 1.0) < 1e-6

    # Liouville: product of multipliers = exp(int_0^T tr J dt), tr J = mu (1 - x^2).
    def rhs(t, z):
        x, y, _ = z
        return [y, (1 - x * x) * y - x, 1 - x * x]

    sol = solve_ivp(
        rhs,
        (0, float(orbit.period)),
        [*np.asarray(orbit.x0), 0.0],
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
    )
    expected = np.exp(sol.y[2, -1])
    nontrivial = np.asarray(orbit.nontrivial_multipliers)
    assert nontrivial.shape == (1,)
    assert abs(nontrivial[0] - expected) < 1e-4
    assert bool(orbit.is_stable)
    # the orbit closes, and the saved samples lie on it
    np.testing.assert_allclose(orbit.xs[-1], orbit.xs[0], atol=1e-8)


def test_hopf_limit_cycle_radius():
    mu, omega, beta = 0.5, 2.0, 2.0
    hopf = HopfNormalForm(mu=mu, omega=omega, beta=beta)
    orbit = dynjax.find_periodic_orbit(hopf, jnp.array([0.3, 0.1]), 3.0)
    radii = np.linalg.norm(np.asarray(orbit.xs), axis=1)
    np.testing.assert_allclose(radii, np.sqrt(mu / beta), atol=1e-6, rtol=0)
    np.testing.assert_allclose(orbit.period, 2 * np.pi / omega, rtol=1e-8)
    # r' = mu r - beta r^3 linearized at r*: -2 mu; multiplier exp(-2 mu T)
    nontrivial = np.asarray(orbit.nontrivial_multipliers)
    np.testing.assert_allclose(
        nontrivial, np.exp(-2 * mu * 2 * np.pi / omega), rtol=1e-6
    )


def test_periodic_orbit_errors():
    with pytest.raises(ValueError, match="takes a flow"):
        dynjax.find_periodic_orbit(Henon(), jnp.zeros(2), 1.0)
    with pytest.raises(ValueError, match="positive"):
        dynjax.find_periodic_orbit(VanDerPol(), jnp.array([2.0, 0.0]), -1.0)
    with pytest.raises(ValueError, match="dimension"):
        dynjax.find_periodic_orbit(VanDerPol(), jnp.zeros(3), 6.0)
    with pytest.raises(ValueError, match="n_segments"):
        dynjax.find_periodic_orbit(
            VanDerPol(), jnp.array([2.0, 0.0]), 6.0, n_segments=0
        )
    # For mu < 0 the Hopf normal form has no cycle (the origin is a stable focus):
    # shooting fails and names the cause (the residual stalls; raising
    # `max_steps` cannot help), with the period and residual it reached.
    hopf = HopfNormalForm(mu=-0.5, omega=2.0, beta=2.0)
    orbit = dynjax.find_periodic_orbit(hopf, jnp.array([0.3, 0.1]), 3.0, throw=False)
    assert orbit.result == RESULTS.shooting_diverged
    with pytest.raises(
        eqx.EquinoxRuntimeError, match="(?s)did not converge.*will not help.*Period"
    ):
        dynjax.find_periodic_orbit(hopf, jnp.array([0.3, 0.1]), 3.0)


# ------------------------------------------------- globalized shooting (issue 10)


def _lienard(t, x, p):
    # van der Pol in Lienard form: x' = mu (y - (x^3 / 3 - x)), y' = -x / mu
    return jnp.stack([p["mu"] * (x[1] - (x[0] ** 3 / 3 - x[0])), -x[0] / p["mu"]])


def _scipy_period(rhs, x0, t_relax, method="DOP853", **kwargs):
    """The period of the attracting cycle: the time between the last two upward
    crossings of x[0] = 0 within [0, t_relax], at rtol = atol = 1e-12."""

    def event(t, z):
        return z[0]

    event.direction = 1
    sol = solve_ivp(
        rhs,
        (0.0, t_relax),
        x0,
        method=method,
        rtol=1e-12,
        atol=1e-12,
        events=event,
        **kwargs,
    )
    crossings = np.diff(sol.t_events[0])
    # relaxed: the last two returns agree
    np.testing.assert_allclose(crossings[-1], crossings[-2], rtol=1e-9)
    return crossings[-1]


def _scipy_lienard_period(mu, t_relax):
    def rhs(t, z):
        return [mu * (z[1] - (z[0] ** 3 / 3 - z[0])), -z[0] / mu]

    def jac(t, z):
        return [[mu * (1 - z[0] ** 2), mu], [-1 / mu, 0.0]]

    return _scipy_period(rhs, [0.0, 0.678244278], t_relax, method="LSODA", jac=jac)


def _scipy_vdp_period(mu, t_relax=60.0):
    def rhs(t, z):
        return [z[1], mu * (1 - z[0] ** 2) * z[1] - z[0]]

    return _scipy_period(rhs, [2.0, 0.0], t_relax)


def test_lienard_mu50_from_a_point_on_the_fast_jump():
    # (0, 0.678244278) lies on the fast jump of the relaxation cycle: cut there,
    # the closure is a near-step function of the period and Newton went to -inf.
    T_ref = _scipy_lienard_period(50.0, 420.0)  # 82.5083339
    flow = dynjax.Flow(_lienard, {"mu": 50.0}, d=2)
    orbit = dynjax.find_periodic_orbit(flow, jnp.array([0.0, 0.678244278]), 82.685)
    assert orbit.result == RESULTS.successful
    np.testing.assert_allclose(orbit.period, T_ref, rtol=1e-8)
    assert float(orbit.residual) < 1e-8


def test_lienard_mu5_period_guess_13_percent_low():
    T_ref = _scipy_lienard_period(5.0, 80.0)  # 11.6122307
    flow = dynjax.Flow(_lienard, {"mu": 5.0}, d=2)
    guess = jnp.array([0.0, 0.678244278])
    orbit = dynjax.find_periodic_orbit(flow, guess, 0.87 * T_ref)
    np.testing.assert_allclose(orbit.period, T_ref, rtol=1e-8)
    # an integration of the guess and the orbit agree on the cycle's extent
    np.testing.assert_allclose(np.max(np.asarray(orbit.xs)[:, 0]), 2.0, atol=0.05)


def test_van_der_pol_mu3_low_guess_and_four_segments():
    T_ref = _scipy_vdp_period(3.0)  # 8.8590955
    vdp = VanDerPol(mu=3.0)
    orbit = dynjax.find_periodic_orbit(vdp, jnp.array([2.0, 0.0]), 8.0)
    np.testing.assert_allclose(orbit.period, T_ref, rtol=1e-8)
    # Multiple shooting from a guess 2% high: the nodes start on the guessed
    # trajectory, the period stays positive and does not collapse towards 0.
    orbit = dynjax.find_periodic_orbit(vdp, jnp.array([2.0, 0.0]), 9.0, n_segments=4)
    assert orbit.result == RESULTS.successful
    np.testing.assert_allclose(orbit.period, T_ref, rtol=1e-8)
    np.testing.assert_allclose(
        np.max(np.abs(np.asarray(orbit.xs)[:, 0])), 2.02, atol=0.01
    )


def test_van_der_pol_period_guess_30_percent_high():
    T_ref = _scipy_vdp_period(1.0)
    np.testing.assert_allclose(T_ref, 6.663286859, rtol=1e-9)  # Strogatz, Urabe
    orbit = dynjax.find_periodic_orbit(
        VanDerPol(mu=1.0), jnp.array([2.0, 0.0]), 1.3 * T_ref
    )
    np.testing.assert_allclose(orbit.period, T_ref, rtol=1e-9)


def test_no_period_guess_relaxes_onto_the_cycle():
    # From near the unstable focus, with no idea of the period.
    T_ref = _scipy_vdp_period(1.0)
    orbit = dynjax.find_periodic_orbit(VanDerPol(mu=1.0), jnp.array([0.1, 0.0]))
    assert orbit.result == RESULTS.successful
    np.testing.assert_allclose(orbit.period, T_ref, rtol=1e-9)
    np.testing.assert_allclose(orbit.period_guess, T_ref, rtol=1e-5)
    # x0 is on the cycle: SciPy from it returns to it after one period
    sol = solve_ivp(
        lambda t, z: [z[1], (1 - z[0] ** 2) * z[1] - z[0]],
        (0.0, T_ref),
        np.asarray(orbit.x0),
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(sol.y[:, -1], orbit.x0, atol=1e-8)


@pytest.mark.slow
def test_pendulum_rotation_closes_modulo_two_pi():
    # theta'' = -sin(theta) on the circle: the rotation through (0, 2.5) has the
    # period T = int_0^{2 pi} d theta / sqrt(2 (E + cos theta)), E = 2.5^2 / 2 - 1.
    pendulum = dynjax.Flow(
        lambda t, x, p: jnp.stack([x[1], -jnp.sin(x[0])]),
        d=2,
        coordinate_periods=(2 * math.pi, None),
    )

    def rotation_period(theta, omega):
        E = omega**2 / 2 - math.cos(theta)
        return quad(
            lambda q: 1 / math.sqrt(2 * (E + math.cos(q))),
            0,
            2 * math.pi,
            epsabs=1e-13,
            epsrel=1e-13,
        )[0]

    T_ref = rotation_period(0.0, 2.5)
    orbit = dynjax.find_periodic_orbit(pendulum, jnp.array([0.0, 2.5]), T_ref)
    np.testing.assert_allclose(orbit.period, T_ref, rtol=1e-9)
    np.testing.assert_allclose(orbit.x0, [0.0, 2.5], atol=1e-9)
    xs = np.asarray(orbit.xs)
    np.testing.assert_allclose(xs[-1, 0] - xs[0, 0], 2 * math.pi, atol=1e-8)
    assert float(orbit.residual) < 1e-9  # closes modulo 2 pi
    # Rotations form a family (one per energy): from a guess 10% long, two
    # segments converge to a member, whose period is the quadrature at its energy.
    orbit = dynjax.find_periodic_orbit(
        pendulum, jnp.array([0.0, 2.5]), 1.1 * T_ref, n_segments=2
    )
    assert orbit.result == RESULTS.successful
    x = np.asarray(orbit.x0)
    assert abs(x[1] - 2.5) < 0.1
    np.testing.assert_allclose(orbit.period, rotation_period(*x), rtol=1e-9)
    # Undamped Newton from a guess 20% long collapses onto the equilibrium and
    # says so; Levenberg-Marquardt converges to a rotation.
    newton = dynjax.find_periodic_orbit(
        pendulum,
        jnp.array([0.0, 2.5]),
        1.2 * T_ref,
        root_finder=optx.Newton(rtol=1e-9, atol=1e-9),
        throw=False,
    )
    assert newton.result == RESULTS.period_collapsed
    orbit = dynjax.find_periodic_orbit(pendulum, jnp.array([0.0, 2.5]), 1.2 * T_ref)
    np.testing.assert_allclose(
        orbit.period, rotation_period(*np.asarray(orbit.x0)), rtol=1e-9
    )


def test_shooting_failures_name_the_cause():
    # Stiff: mu = 1000 needs about 10^6 explicit steps per period.
    stiff = dynjax.Flow(_lienard, {"mu": 1000.0}, d=2)
    orbit = dynjax.find_periodic_orbit(
        stiff, jnp.array([0.0, 0.678244278]), 1614.0, throw=False
    )
    assert orbit.result == RESULTS.shooting_integration_failed
    with pytest.raises(eqx.EquinoxRuntimeError, match="stiff.*Kvaerno5"):
        dynjax.find_periodic_orbit(stiff, jnp.array([0.0, 0.678244278]), 1614.0)
    # A period guess 60 times too short: the period heads to 0.
    hopf = HopfNormalForm(mu=0.5, omega=2.0, beta=2.0)
    orbit = dynjax.find_periodic_orbit(hopf, jnp.array([0.3, 0.1]), 0.05, throw=False)
    assert orbit.result == RESULTS.period_collapsed
    assert float(orbit.period) > 0
    with pytest.raises(eqx.EquinoxRuntimeError, match="collapsed.*Period"):
        dynjax.find_periodic_orbit(hopf, jnp.array([0.3, 0.1]), 0.05)
    # No guess, and no cycle to relax onto: for mu < 0 the van der Pol origin is a
    # stable focus.
    with pytest.raises(eqx.EquinoxRuntimeError, match="period_guess=None"):
        dynjax.find_periodic_orbit(VanDerPol(mu=-1.0), jnp.array([0.1, 0.0]))


def test_vmap_over_parameters():
    mus = jnp.array([1.0, 2.0, 3.0])
    periods = jax.vmap(
        lambda mu: (
            dynjax.find_periodic_orbit(
                VanDerPol(mu=mu), jnp.array([2.0, 0.0]), 7.5
            ).period
        )
    )(mus)
    np.testing.assert_allclose(
        periods, [_scipy_vdp_period(float(mu)) for mu in mus], rtol=1e-8
    )


# ------------------------------------------------------------------ Poincare (acc. 7)

_PLANE = (jnp.array([0.0, 1.0, 0.0]), 0.0)  # y = 0, crossed with dy/dt = x < 0


@pytest.fixture(scope="module")
def rossler_section():
    rossler = Rossler()
    return dynjax.poincare_section(
        rossler, rossler.default_x0(), _PLANE, 400, direction=-1
    )


def test_rossler_section_on_plane_and_single_humped(rossler_section):
    sec = rossler_section
    assert sec.result == RESULTS.successful
    pts = np.asarray(sec.points)
    np.testing.assert_allclose(pts[:, 1], 0.0, atol=1e-9)
    assert np.all(pts[:, 0] < 0)  # downward crossings of y = 0 have dy/dt = x < 0
    r = -pts[20:, 0]  # distance from the z-axis, after the transient
    a, b = r[:-1], r[1:]
    order = np.argsort(a)
    a, b = a[order], b[order]
    k = np.argmax(b)
    # one hump: the return map rises up to its maximum and falls after it
    assert 5 < k < len(a) - 5
    assert np.all(np.diff(b[: k + 1]) > -1e-3)
    assert np.all(np.diff(b[k:]) < 1e-3)
    # and it is a (thin) function of r: nearby r_n give nearby r_{n+1}
    assert np.max(np.abs(np.diff(b)) / np.maximum(np.diff(a), 1e-3)) < 20
    np.testing.assert_allclose(
        np.diff(np.asarray(sec.times)), np.asarray(sec.return_times)[1:], rtol=1e-12
    )


def test_hopf_section_return_time_exact():
    hopf = HopfNormalForm(mu=1.0, omega=3.0, beta=4.0)
    sec = dynjax.poincare_section(
        hopf, jnp.array([0.5, 0.0]), (jnp.array([0.0, 1.0]), 0.0), 5, direction=1
    )
    # on the cycle r = 1/2, upward crossings of y = 0 happen at (1/2, 0) every 2 pi / 3
    np.testing.assert_allclose(sec.points, [[0.5, 0.0]] * 5, atol=1e-9)
    np.testing.assert_allclose(sec.return_times, 2 * np.pi / 3, rtol=1e-9)
    # Starting off the plane, on the side above it and heading down (angle 2 on the
    # cycle): the first upward crossing is at angle 2 pi, after (2 pi - 2) / omega.
    x0 = 0.5 * jnp.array([np.cos(2.0), np.sin(2.0)])
    sec = dynjax.poincare_section(
        hopf, x0, (jnp.array([0.0, 1.0]), 0.0), 5, direction=1
    )
    np.testing.assert_allclose(sec.times[0], (2 * np.pi - 2.0) / 3, rtol=1e-9)
    np.testing.assert_allclose(sec.points, [[0.5, 0.0]] * 5, atol=1e-9)


@pytest.mark.slow
def test_poincare_map_fixed_point_is_the_periodic_orbit(rossler_section):
    rossler = Rossler()
    P = dynjax.poincare_map(rossler, _PLANE, direction=-1)
    # guess: where the return map crosses the diagonal
    pts = np.asarray(rossler_section.points)[20:]
    r = -pts[:, 0]
    i = np.argmin(np.abs(r[1:] - r[:-1]))
    fp = dynjax.find_equilibria(P, jnp.asarray(pts[i])[None])
    assert int(fp.count) == 1
    p = jnp.asarray(fp.unique[0])
    # Its next crossing (same compiled section as the fixture) returns to it.
    again = dynjax.poincare_section(rossler, p, _PLANE, 400, direction=-1)
    np.testing.assert_allclose(again.points[0], p, atol=1e-9)
    T = again.return_times[0]
    # multiple shooting (3 segments), which suits this unstable orbit
    orbit = dynjax.find_periodic_orbit(rossler, p, T, n_segments=3)
    np.testing.assert_allclose(orbit.x0, p, atol=1e-6)
    np.testing.assert_allclose(orbit.period, T, rtol=1e-7)

    # The Jacobian of P (forward mode through the event time) has as
    # eigenvalues the orbit's nontrivial Floquet multipliers (from the monodromy
    # matrix of the flow) plus a 0 (P flattens the direction off the plane).
    J = jax.jit(jax.jacfwd(lambda x: P.step(0, x)))(p)
    mu_map = np.sort(np.abs(np.linalg.eigvals(np.asarray(J))))
    mu_orbit = np.sort(np.abs(np.asarray(orbit.nontrivial_multipliers)))
    np.testing.assert_allclose(mu_map[-1], mu_orbit[-1], rtol=1e-5)
    # the period-1 orbit inside the chaotic attractor is unstable
    assert mu_orbit[-1] > 1
    assert mu_map[0] < 1e-8 and mu_map[1] < 1e-8 and mu_orbit[0] < 1e-8


def test_poincare_errors():
    rossler = Rossler()
    with pytest.raises(ValueError, match="normal"):
        dynjax.poincare_section(rossler, rossler.default_x0(), (jnp.ones(2), 0.0), 3)
    with pytest.raises(ValueError, match="pair"):
        dynjax.poincare_section(rossler, rossler.default_x0(), jnp.ones(3), 3)
    with pytest.raises(ValueError, match="direction"):
        dynjax.poincare_section(rossler, rossler.default_x0(), _PLANE, 3, direction=2)
    with pytest.raises(ValueError, match="n_crossings"):
        dynjax.poincare_section(rossler, rossler.default_x0(), _PLANE, 0)
    with pytest.raises(ValueError, match="flow"):
        dynjax.poincare_map(Henon(), (jnp.ones(2), 0.0))
    # A plane the attractor never reaches (same static configuration as the
    # fixture above, so no recompilation).
    far = (jnp.array([0.0, 1.0, 0.0]), 1e3)
    sec = dynjax.poincare_section(
        rossler, rossler.default_x0(), far, 400, t_max=20.0, direction=-1, throw=False
    )
    assert sec.result == RESULTS.no_crossing
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not cross"):
        dynjax.poincare_section(
            rossler, rossler.default_x0(), far, 400, t_max=20.0, direction=-1
        )


@pytest.mark.slow
def test_period_derivative_forward_mode():
    # dT/dmu of the van der Pol cycle through the shooting solve (implicit
    # function theorem) against central finite differences of the solve itself.
    def period(mu):
        return dynjax.find_periodic_orbit(
            VanDerPol(mu=mu), jnp.array([2.0, 0.0]), 6.5
        ).period

    _, dT = jax.jvp(period, (1.0,), (1.0,))
    e = 1e-5
    fd = (period(1.0 + e) - period(1.0 - e)) / (2 * e)
    np.testing.assert_allclose(dT, fd, rtol=1e-5)


def test_poincare_section_float32_warns():
    with jax.enable_x64(False):
        hopf = HopfNormalForm(mu=1.0, omega=3.0, beta=4.0)
        with pytest.warns(UserWarning, match="float32"):
            sec = dynjax.poincare_section(
                hopf,
                jnp.array([0.5, 0.0], jnp.float32),
                (jnp.array([0.0, 1.0]), 0.0),
                3,
            )
        assert sec.points.dtype == jnp.float32
        np.testing.assert_allclose(sec.points, [[0.5, 0.0]] * 3, atol=1e-4)
        np.testing.assert_allclose(sec.return_times, 2 * np.pi / 3, rtol=1e-4)


@pytest.mark.slow
def test_poincare_map_lyapunov_exponent(rossler_section):
    # The Lyapunov engine applies to the Poincare map like to any map. Per
    # crossing, its largest exponent is the flow's times the mean return time
    # (Abramov's formula for suspended flows); the Rossler flow's is 0.0714
    # (J. C. Sprott, Chaos and Time-Series Analysis, OUP 2003, Appendix A).
    P = dynjax.poincare_map(Rossler(), _PLANE, direction=-1)
    p0 = jnp.asarray(rossler_section.points[-1])
    res = dynjax.lyapunov_spectrum(P, p0, k=1, n_steps=3000, transient=20)
    mean_return = float(np.mean(np.asarray(rossler_section.return_times)[20:]))
    np.testing.assert_allclose(float(res.exponents[0]) / mean_return, 0.0714, rtol=0.05)
