"""`dynjax.cycle_continuation`: branches of limit cycles (issue 15, periodic orbits).

Every expected value is derived independently of dynjax: the closed-form cycles of
the Hopf normal form (radius `sqrt(mu / beta)`, period `2 pi / omega`, multiplier
`exp(-2 mu T)`) and of a normal form with a fold of cycles (derived in its
fixture), the Lorenz Hopf point and frequency from the characteristic polynomial,
and SciPy integrations (DOP853, `rtol = atol = 1e-12`) of the flow and of its
variational equation with hand-written Jacobians.

Compilation dominates (~30-60 s per system on 2 cores), so each branch is a
module-scoped fixture shared by several tests, and the two Hopf normal forms share
one compilation (same selector, options and system class).
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize

import dynjax
from dynjax import RESULTS
from dynjax.systems import HopfNormalForm, Logistic, Lorenz, Rossler


def _MU(s):
    return s.mu


def _MU_PARAM(s):
    return s.params["mu"]


def _valid(branch, name):
    return np.asarray(getattr(branch, name)[: int(branch.n_points)])


def _monodromy(f, jac, x0, T):
    """`phi_T(x0)` and `D phi_T(x0)` from SciPy's DOP853 on the variational
    equation `Phi' = J(x) Phi`, `Phi(0) = I`."""
    d = len(x0)

    def rhs(t, u):
        x, Phi = u[:d], u[d:].reshape(d, d)
        return np.concatenate([f(x), (jac(x) @ Phi).ravel()])

    u0 = np.concatenate([x0, np.eye(d).ravel()])
    sol = scipy.integrate.solve_ivp(
        lambda t, u: rhs(t, u), (0.0, T), u0, method="DOP853", rtol=1e-12,
        atol=1e-12,
    )  # fmt: skip
    u = sol.y[:, -1]
    return u[:d], u[d:].reshape(d, d)


# --- supercritical Hopf normal form ------------------------------------------------

_HOPF_CASES = [(1.0, 1.0), (0.5, 2.0)]  # (beta, omega)


@pytest.fixture(scope="module")
def hopf_equilibria():
    # The origin from mu = -0.5: one Hopf point, at mu = 0.
    return {
        (beta, omega): dynjax.continuation(
            HopfNormalForm(mu=-0.5, omega=omega, beta=beta),
            _MU,
            jnp.zeros(2),
            -0.5,
            p_min=-1.0,
            p_max=0.5,
        )
        for beta, omega in _HOPF_CASES
    }


@pytest.fixture(scope="module")
def hopf_cycles(hopf_equilibria):
    return {
        (beta, omega): dynjax.cycle_continuation(
            HopfNormalForm(mu=-0.5, omega=omega, beta=beta),
            _MU,
            (eq, 0),
            p_max=1.0,
            ds_max=0.1,
        )
        for (beta, omega), eq in hopf_equilibria.items()
    }


@pytest.mark.slow  # (the fixture: two systems, one compilation, ~40 s)
@pytest.mark.parametrize("beta, omega", _HOPF_CASES)
def test_hopf_normal_form_cycles(beta, omega, hopf_cycles):
    cycles = hopf_cycles[(beta, omega)]
    assert isinstance(cycles, dynjax.CycleBranch)
    assert cycles.result == RESULTS.successful
    mu = _valid(cycles, "parameter")
    # From the Hopf point (mu = 0) up to mu = 1 (the first point beyond stops it).
    assert mu[0] == pytest.approx(0.0, abs=1e-4)
    assert mu.max() > 0.9 and mu.max() <= 1.0
    assert np.all(np.diff(mu) > 0)
    radius = np.linalg.norm(_valid(cycles, "states"), axis=1)
    sel = mu >= 0.01
    assert sel.sum() >= 5
    # r' = mu r - beta r^3: the cycle r = sqrt(mu / beta), omega t.
    np.testing.assert_allclose(radius[sel], np.sqrt(mu[sel] / beta), atol=1e-4)
    np.testing.assert_allclose(
        _valid(cycles, "amplitude")[sel], np.sqrt(mu[sel] / beta), atol=1e-4
    )
    # Every sample of each cycle lies on the circle.
    orbits = _valid(cycles, "orbits")[sel]
    np.testing.assert_allclose(
        np.linalg.norm(orbits, axis=2),
        np.broadcast_to(np.sqrt(mu[sel] / beta)[:, None], orbits.shape[:2]),
        atol=1e-4,
    )
    T = _valid(cycles, "period")
    np.testing.assert_allclose(T, 2 * np.pi / omega, rtol=1e-8)
    # The radial multiplier: d(mu r - beta r^3)/dr = mu - 3 mu = -2 mu over T.
    multipliers = _valid(cycles, "multipliers")
    assert multipliers.shape == (len(mu), 1)
    np.testing.assert_allclose(
        multipliers[:, 0].real, np.exp(-2 * mu * T), rtol=1e-6, atol=1e-8
    )
    np.testing.assert_allclose(multipliers[:, 0].imag, 0.0, atol=1e-8)
    # The full monodromy has the trivial multiplier 1 as well.
    M = _valid(cycles, "monodromy")
    ev = np.sort(np.linalg.eigvals(M).real, axis=1)
    np.testing.assert_allclose(ev[:, 1], 1.0, atol=1e-6)
    assert np.all(_valid(cycles, "stable"))
    np.testing.assert_array_equal(_valid(cycles, "n_unstable"), 0)
    assert cycles.bifurcations.names == []


# --- Lorenz: the unstable cycles from the subcritical Hopf of C+ -------------------

_S, _B = 10.0, 8.0 / 3.0
# Characteristic polynomial at C+-: l^3 + (s + b + 1) l^2 + b (s + rho) l
# + 2 s b (rho - 1); l = i w: w^2 = b (s + rho_H), rho_H = s (s + b + 3) / (s - b - 1).
_RHO_H = _S * (_S + _B + 3) / (_S - _B - 1)
_OMEGA_H = np.sqrt(_B * (_S + _RHO_H))


def _lorenz_f(rho):
    def f(u):
        x, y, z = u
        return np.array([_S * (y - x), x * (rho - z) - y, x * y - _B * z])

    def jac(u):
        x, y, z = u
        return np.array([[-_S, _S, 0.0], [rho - z, -1.0, -x], [y, x, -_B]])

    return f, jac


@pytest.fixture(scope="module")
def lorenz_cycles():
    system = Lorenz(sigma=_S, beta=_B, rho=40.0)
    eq = dynjax.continuation(
        system, "rho", jnp.array([10.0, 10.0, 39.0]), 40.0, p_min=10.0,
        p_max=40.0, direction="backward", ds=0.1, ds_max=0.5,
    )  # fmt: skip
    k = eq.bifurcations.names.index("hopf")
    return dynjax.cycle_continuation(
        system, "rho", (eq, k), p_min=15.0, ds_max=0.5, n_points=60
    )


@pytest.mark.slow
def test_lorenz_subcritical_cycles(lorenz_cycles):
    cycles = lorenz_cycles
    assert cycles.result == RESULTS.successful
    rho = _valid(cycles, "parameter")
    T = _valid(cycles, "period")
    # The cycle branch exists below rho_H (subcritical Hopf) down to p_min.
    assert rho[0] == pytest.approx(_RHO_H, abs=1e-3)
    assert np.all(rho[1:] < _RHO_H)
    assert rho.min() < 16.0
    # Near the Hopf point the period is 2 pi / omega_H.
    assert T[0] == pytest.approx(2 * np.pi / _OMEGA_H, rel=1e-4)
    # All unstable (one multiplier outside the unit circle), growing as rho falls.
    assert np.all(_valid(cycles, "n_unstable") >= 1)
    assert not np.any(_valid(cycles, "stable"))
    amplitude = _valid(cycles, "amplitude")
    assert amplitude[-1] > 10 * amplitude[1]
    assert cycles.bifurcations.names == []
    # A few cycles checked independently: closure and multipliers from SciPy.
    states = _valid(cycles, "states")
    n = len(rho)
    for i in (1, n // 2, n - 1):
        f, jac = _lorenz_f(rho[i])
        end, M = _monodromy(f, jac, states[i], T[i])
        np.testing.assert_allclose(end, states[i], atol=1e-7)
        ev = np.linalg.eigvals(M)
        ev = np.delete(ev, np.argmin(np.abs(ev - 1)))
        ev = ev[np.argsort(-np.abs(ev))]
        np.testing.assert_allclose(
            _valid(cycles, "multipliers")[i], ev, rtol=1e-5, atol=1e-8
        )


# --- a fold of cycles -----------------------------------------------------------


def _fold_field(t, u, p):
    # r' = r (mu + r^2 - r^4), theta' = omega.
    x, y = u[0], u[1]
    r2 = x**2 + y**2
    g = p["mu"] + r2 - r2**2
    return jnp.stack([g * x - p["omega"] * y, g * y + p["omega"] * x])


@pytest.fixture(scope="module")
def fold_cycles():
    # Cycles where mu = r^4 - r^2 (r > 0): from the subcritical Hopf at mu = 0
    # (r -> 0, mu ~ -r^2) down to the fold at d mu / d(r^2) = 0: r^2 = 1/2,
    # mu = -1/4, then up again as stable cycles.
    system = dynjax.Flow(_fold_field, {"mu": -0.5, "omega": 1.5}, d=2)
    eq = dynjax.continuation(
        system, _MU_PARAM, jnp.zeros(2), -0.5, p_min=-1.0, p_max=0.5
    )
    return dynjax.cycle_continuation(
        system, _MU_PARAM, (eq, 0), p_min=-1.0, p_max=0.5, ds_max=0.05
    )


@pytest.mark.slow
def test_fold_of_cycles(fold_cycles):
    cycles = fold_cycles
    assert cycles.result == RESULTS.successful
    bif = cycles.bifurcations
    assert bif.names == ["fold"]
    assert bool(bif.converged[0])
    assert float(bif.parameter[0]) == pytest.approx(-0.25, abs=1e-6)
    assert float(np.linalg.norm(bif.state[0])) == pytest.approx(
        1 / np.sqrt(2), abs=1e-6
    )
    assert float(cycles.bifurcation_period[0]) == pytest.approx(
        2 * np.pi / 1.5, rel=1e-8
    )
    mu = _valid(cycles, "parameter")
    r2 = np.sum(_valid(cycles, "states") ** 2, axis=1)
    np.testing.assert_allclose(mu, r2**2 - r2, atol=1e-8)
    assert mu.min() > -0.25 - 1e-9
    # Radial multiplier: exp(T d/dr [r (mu + r^2 - r^4)]) = exp(T (2 r^2 - 4 r^4)):
    # unstable below the fold (r^2 < 1/2), stable above.
    T = _valid(cycles, "period")
    np.testing.assert_allclose(
        _valid(cycles, "multipliers")[:, 0].real,
        np.exp(T * (2 * r2 - 4 * r2**2)),
        rtol=1e-6,
    )
    stable = _valid(cycles, "stable")
    far = np.abs(r2 - 0.5) > 1e-3
    np.testing.assert_array_equal(stable[far], r2[far] > 0.5)
    assert r2.max() > 1.0


# --- a period doubling: Rossler ---------------------------------------------------


def _rossler_f(c, a=0.2, b=0.2):
    def f(u):
        x, y, z = u
        return np.array([-y - z, x + a * y, b + z * (x - c)])

    def jac(u):
        x, y, z = u
        return np.array([[0.0, -1.0, -1.0], [1.0, a, 0.0], [z, 0.0, x - c]])

    return f, jac


@pytest.fixture(scope="module")
def rossler_cycles():
    system = Rossler(a=0.2, b=0.2, c=2.5)
    orbit = dynjax.find_periodic_orbit(system, jnp.array([1.0, 1.0, 0.0]))
    return dynjax.cycle_continuation(
        system, "c", orbit, p_min=2.0, p_max=3.2, ds_max=0.1, direction="forward"
    )


@pytest.mark.slow
def test_rossler_period_doubling(rossler_cycles):
    cycles = rossler_cycles
    assert cycles.result == RESULTS.successful
    bif = cycles.bifurcations
    assert bif.names == ["flip"]
    assert bool(bif.converged[0])
    c = float(bif.parameter[0])
    # Strogatz, Nonlinear Dynamics and Chaos (1994), section 12.3: with
    # a = b = 0.2 the attractor is a cycle at c = 2.5 and of period 2 at c = 3.5.
    assert 2.5 < c < 3.5
    # At the located point the monodromy from SciPy's variational equation has a
    # multiplier -1 (and the cycle closes).
    f, jac = _rossler_f(c)
    x0, T = np.asarray(bif.state[0]), float(cycles.bifurcation_period[0])
    end, M = _monodromy(f, jac, x0, T)
    np.testing.assert_allclose(end, x0, atol=1e-7)
    ev = np.linalg.eigvals(M)
    assert np.min(np.abs(ev + 1)) < 1e-6
    assert np.min(np.abs(ev - 1)) < 1e-6
    # Stable before, a multiplier below -1 after.
    cs = _valid(cycles, "parameter")
    mu = _valid(cycles, "multipliers")
    assert np.all(_valid(cycles, "stable")[cs < c])
    after = cs > c
    assert after.any()
    assert np.all(np.min(mu[after].real, axis=1) < -1)
    np.testing.assert_array_equal(_valid(cycles, "n_unstable")[after], 1)


@pytest.mark.slow
def test_rossler_tangent_period_slope(rossler_cycles):
    # The branch's tangent gives dT/dc = t_T / t_c; against central differences
    # of periods from SciPy shooting (fsolve on DOP853) at c +- h, phase-fixed on
    # the same hyperplane.
    cycles = rossler_cycles
    i = 3
    c, T = float(cycles.parameter[i]), float(cycles.period[i])
    x = np.asarray(cycles.states[i])
    t = np.asarray(cycles.tangents[i])
    normal = _rossler_f(c)[0](x)

    def period_at(ci):
        f = _rossler_f(ci)[0]

        def residual(v):
            sol = scipy.integrate.solve_ivp(
                lambda _, u: f(u), (0.0, v[3]), v[:3], method="DOP853",
                rtol=1e-12, atol=1e-12,
            )  # fmt: skip
            return np.append(sol.y[:, -1] - v[:3], (v[:3] - x) @ normal)

        v, _, ok, msg = scipy.optimize.fsolve(
            residual, np.append(x, T), xtol=1e-12, full_output=True
        )
        assert ok == 1, msg
        return v[3]

    h = 1e-3
    slope = (period_at(c + h) - period_at(c - h)) / (2 * h)
    assert t[3] / t[4] == pytest.approx(slope, rel=1e-4)


@pytest.mark.slow
def test_hopf_start_of_another_system(hopf_equilibria, hopf_cycles):
    # The Hopf point of omega = 1 is not one of the system with omega = 2 (no
    # eigenvalue i): the start fails at run time (same compilation as above).
    eq = hopf_equilibria[(1.0, 1.0)]
    other = HopfNormalForm(mu=-0.5, omega=2.0, beta=1.0)
    kw = dict(p_max=1.0, ds_max=0.1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="for this system and parameter"):
        dynjax.cycle_continuation(other, _MU, (eq, 0), **kw)
    out = dynjax.cycle_continuation(other, _MU, (eq, 0), throw=False, **kw)
    assert out.result == RESULTS.not_converged


# --- a Neimark-Sacker (torus) bifurcation ------------------------------------------


def _NU(s):
    return s.params["nu"]


def _torus_field(t, s, p):
    # The unit circle of (x, y) (r' = r (1 - r^2), theta' = omega) with a transverse
    # focus (u, v) of rate nu and frequency alpha: the multipliers of the cycle
    # u = v = 0 are exp(-2 T) and exp((nu +- i alpha) T), T = 2 pi / omega, a pair
    # crossing the unit circle at nu = 0 at the angle alpha T (mod 2 pi).
    x, y, u, v = s
    g = 1 - x**2 - y**2
    w, a, nu = p["omega"], p["alpha"], p["nu"]
    return jnp.stack([g * x - w * y, g * y + w * x, nu * u - a * v, a * u + nu * v])


def _orbit(x0, period, result=RESULTS.successful):
    """A `PeriodicOrbit` from its point and period (the rest unused here)."""
    d = x0.shape[0]
    return dynjax.PeriodicOrbit(
        x0=x0, period=jnp.asarray(period), multipliers=jnp.ones(d, complex),
        trivial_index=jnp.array(0), monodromy=jnp.eye(d), xs=x0[None],
        residual=jnp.array(0.0), period_guess=jnp.asarray(period), result=result,
        num_steps=jnp.array(1),
    )  # fmt: skip


@pytest.mark.slow
def test_neimark_sacker():
    omega, alpha = 1.0, 0.7
    system = dynjax.Flow(
        _torus_field, {"omega": omega, "alpha": alpha, "nu": -0.2}, d=4
    )
    T = 2 * np.pi / omega
    start = _orbit(jnp.array([1.0, 0.0, 0.0, 0.0]), T)
    cycles = dynjax.cycle_continuation(
        system, _NU, start, -0.2, p_max=0.2, ds_max=0.05, direction="forward"
    )
    assert cycles.result == RESULTS.successful
    bif = cycles.bifurcations
    assert bif.names == ["neimark_sacker"]
    assert bool(bif.converged[0])
    assert float(bif.parameter[0]) == pytest.approx(0.0, abs=1e-8)
    theta = abs(np.angle(np.exp(1j * alpha * T)))
    assert float(bif.frequency[0]) == pytest.approx(theta, rel=1e-6)
    np.testing.assert_allclose(bif.state[0], [1.0, 0.0, 0.0, 0.0], atol=1e-8)
    nu = _valid(cycles, "parameter")
    mu = _valid(cycles, "multipliers")
    expected = np.stack(
        [
            np.exp((nu + 1j * alpha) * T),
            np.exp((nu - 1j * alpha) * T),
            np.full(nu.shape, np.exp(-2 * T)),
        ],
        axis=1,
    )
    # (The pair's order is arbitrary: compare moduli and sorted angles.)
    np.testing.assert_allclose(np.abs(mu), np.abs(expected), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        np.sort(np.angle(mu[:, :2]), axis=1),
        np.sort(np.angle(expected[:, :2]), axis=1),
        atol=1e-6,
    )
    np.testing.assert_array_equal(_valid(cycles, "n_unstable"), 2 * (nu > 0))
    np.testing.assert_allclose(_valid(cycles, "period"), T, rtol=1e-9)


# --- errors ------------------------------------------------------------------------


def test_bad_input():
    system = HopfNormalForm(mu=0.1)
    orbit = _orbit(jnp.array([0.3, 0.0]), 2 * np.pi)
    with pytest.raises(ValueError, match="takes an autonomous flow"):
        dynjax.cycle_continuation(Logistic(), "r", orbit)
    with pytest.raises(ValueError, match="has no parameter 'rho'"):
        dynjax.cycle_continuation(system, "rho", orbit)
    with pytest.raises(ValueError, match="`direction` must be"):
        dynjax.cycle_continuation(system, _MU, orbit, direction="up")
    with pytest.raises(ValueError, match="`start` must be a `dynjax.PeriodicOrbit`"):
        dynjax.cycle_continuation(system, _MU, jnp.zeros(2))
    with pytest.raises(ValueError, match="`n_points` must be an int >= 2"):
        dynjax.cycle_continuation(system, _MU, orbit, n_points=1)
    line = dynjax.Flow(lambda t, x, p: p["mu"] * x, {"mu": 1.0}, d=1)
    with pytest.raises(ValueError, match="only in dimension d >= 2"):
        dynjax.cycle_continuation(line, _MU_PARAM, _orbit(jnp.ones(1), 1.0))
    failed = _orbit(jnp.ones(2), 6.0, RESULTS.shooting_diverged)
    with pytest.raises(ValueError, match="whose solve failed"):
        dynjax.cycle_continuation(system, _MU, failed)


@pytest.mark.slow  # (the fixture: a continuation of equilibria)
def test_bad_hopf_start(hopf_equilibria):
    eq = hopf_equilibria[_HOPF_CASES[0]]
    system = HopfNormalForm(mu=-0.5)
    with pytest.raises(ValueError, match="the branch has 1 bifurcation points"):
        dynjax.cycle_continuation(system, _MU, (eq, 3))
    not_hopf = eqx.tree_at(lambda b: b.bifurcations.kind, eq, eq.bifurcations.kind * 0)
    with pytest.raises(ValueError, match="is not a Hopf point: it is a 'fold'"):
        dynjax.cycle_continuation(system, _MU, (not_hopf, 0))


class _Selkov(dynjax.AbstractFlow):
    """Sel'kov's glycolysis model x' = -x + a y + x^2 y, y' = b - a y - x^2 y."""

    a: float = 0.08
    b: float = 0.3
    d = 2

    def vector_field(self, t, x, args=None):
        u, v = x
        return jnp.stack([-u + self.a * v + u**2 * v, self.b - self.a * v - u**2 * v])


@pytest.mark.slow  # (two compilations, ~40-60 s)
def test_cycles_end_at_the_second_hopf_point():
    # Strogatz (1994), section 7.3: the equilibrium (b, b / (a + b^2)) has Hopf
    # points at b^2 = (1 - 2a +- sqrt(1 - 8a)) / 2: for a = 0.08, b^2 = 0.12 and
    # 0.72. One family of stable cycles joins them; continued from the first, the
    # branch ends at the second (where the cycle shrinks to the equilibrium),
    # without the spurious test-function zeros of stepping through it.
    a, b0 = 0.08, 0.2
    b_h = np.sqrt([0.12, 0.72])
    equilibria = dynjax.continuation(
        _Selkov(a=a, b=b0), "b", jnp.array([b0, b0 / (a + b0**2)]), b0,
        p_min=0.1, p_max=1.2,
    )  # fmt: skip
    assert equilibria.bifurcations.names == ["hopf", "hopf"]
    np.testing.assert_allclose(equilibria.bifurcations.parameter[:2], b_h, atol=1e-10)
    cycles = dynjax.cycle_continuation(
        _Selkov(a=a, b=b0), "b", (equilibria, 0), n_points=150
    )
    b = _valid(cycles, "parameter")
    assert b[0] == pytest.approx(b_h[0], abs=1e-4)
    assert b[-1] == pytest.approx(b_h[1], abs=5e-3)
    assert np.all((b > b_h[0] - 1e-4) & (b < b_h[1] + 1e-4))
    assert _valid(cycles, "amplitude")[-1] < 0.05
    assert cycles.bifurcations.names == []
    # Both Hopf points are supercritical here (l1 < 0): the cycles are stable.
    assert np.all(np.asarray(equilibria.bifurcations.lyapunov_coefficient[:2]) < 0)
    assert np.all(_valid(cycles, "stable"))
    # At the ends the period tends to 2 pi / omega, omega^2 = det J = a + b^2.
    T = _valid(cycles, "period")
    assert T[0] == pytest.approx(2 * np.pi / np.sqrt(a + b_h[0] ** 2), rel=1e-3)
    assert T[-1] == pytest.approx(2 * np.pi / np.sqrt(a + b_h[1] ** 2), rel=2e-2)
