"""`dynjax.fold_curve`, `dynjax.hopf_curve` and `dynjax.stability_chart` (issue 15,
codimension two).

Every expected value is derived by hand, independently of dynjax (derivations in
the comments): the fold curve and cusp of `x' = mu + lam x + sigma x^2 - x^3`, the
Hopf curve `b = 1 + a^2` of the Brusselator, the fold, Hopf and neutral-saddle
curves and the Bogdanov-Takens point of the Bogdanov-Takens normal form, the
Bautin point of the Bautin normal form (Kuznetsov 2004, sections 8.2-8.4), numpy
eigenvalues of hand-written Jacobians for the stability charts, and finite
differences and closed-form derivatives for the gradient.

Compilation dominates the run time, so each curve is a module-scoped fixture and
calls that differ only in array values share one compilation (same system class,
parameter names and options).
"""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax import RESULTS
from dynjax._continuation._chart import stability_chart
from dynjax._continuation._codim2 import fold_curve, hopf_curve
from dynjax._misc import as_param
from dynjax.systems import Brusselator, Henon


class _Cusp(dynjax.AbstractFlow):
    """x' = mu + lam x + sigma x^2 - x^3, y' = -y."""

    mu: jax.Array = eqx.field(converter=as_param, default=0.0)
    lam: jax.Array = eqx.field(converter=as_param, default=1.0)
    sigma: jax.Array = eqx.field(converter=as_param, default=0.0)
    d = 2

    def vector_field(self, t, x, args=None):
        u, y = x
        return jnp.stack([self.mu + self.lam * u + self.sigma * u**2 - u**3, -y])


class _BT(dynjax.AbstractFlow):
    """x' = y, y' = b1 + b2 x + x^2 + s x y (Kuznetsov 2004, eq. (8.51))."""

    b1: jax.Array = eqx.field(converter=as_param, default=0.0)
    b2: jax.Array = eqx.field(converter=as_param, default=-1.0)
    s: jax.Array = eqx.field(converter=as_param, default=-1.0)
    d = 2

    def vector_field(self, t, x, args=None):
        u, y = x
        return jnp.stack([y, self.b1 + self.b2 * u + u**2 + self.s * u * y])


class _Bautin(dynjax.AbstractFlow):
    """z' = (b1 + i) z + b2 z |z|^2 - z |z|^4 (Kuznetsov 2004, eq. (8.20), s = -1)."""

    b1: jax.Array = eqx.field(converter=as_param, default=0.0)
    b2: jax.Array = eqx.field(converter=as_param, default=0.0)
    d = 2

    def vector_field(self, t, x, args=None):
        u, v = x
        r2 = u**2 + v**2
        g = self.b1 + self.b2 * r2 - r2**2
        return jnp.stack([g * u - v, u + g * v])


class _FoldHopf(dynjax.AbstractFlow):
    """A truncated fold-Hopf normal form (Kuznetsov 2004, eq. (8.80), theta = s = 1,
    without the xi^2 term of r'): xi' = b1 + xi^2 + r^2, (u + iv)' = (b2 + xi + i)
    (u + iv), r^2 = u^2 + v^2."""

    b1: jax.Array = eqx.field(converter=as_param, default=-1.0)
    b2: jax.Array = eqx.field(converter=as_param, default=0.0)
    d = 3

    def vector_field(self, t, x, args=None):
        xi, u, v = x
        g = self.b2 + xi
        return jnp.stack([self.b1 + xi**2 + u**2 + v**2, g * u - v, u + g * v])


_INF = jnp.inf


def _valid(curve):
    n = int(curve.n_points)
    return (
        np.asarray(curve.parameter1[:n]),
        np.asarray(curve.parameter2[:n]),
        np.asarray(curve.states[:n]),
    )


def _points(curve):
    """The codimension-two points: [(name, p1, p2, state)]."""
    bif = curve.bifurcations
    assert np.all(np.asarray(bif.converged[: int(bif.n)]))
    return [
        (
            name,
            float(bif.parameter[i]),
            float(curve.bifurcation_parameter2[i]),
            np.asarray(bif.state[i]),
        )
        for i, name in enumerate(bif.names)
    ]


# ---------------------------------------------------------------------------- cusp

_CUSP_PAIR = ("mu", "lam")
# (One direction: each continuation direction is one more loop to compile.)
_CUSP_OPTS = dict(
    bounds=((-_INF, _INF), (-0.5, 1.5)), n_points=100, direction="backward"
)


@pytest.fixture(scope="module")
def cusp_branch():
    # At lam = 1 the equilibria solve mu = x^3 - x: from x = 1 at mu = 0 towards
    # smaller mu, the folds at x = 1/sqrt(3) (mu = -2/sqrt(27)), then -1/sqrt(3).
    return dynjax.continuation(
        _Cusp(lam=1.0),
        "mu",
        jnp.array([1.0, 0.0]),
        0.0,
        p_min=-1.0,
        p_max=1.0,
        direction="backward",
    )


@pytest.fixture(scope="module")
def cusp_curve(cusp_branch):
    assert cusp_branch.bifurcations.names == ["fold", "fold"]
    return fold_curve(_Cusp(lam=1.0), _CUSP_PAIR, cusp_branch, 0, **_CUSP_OPTS)


def test_cusp_fold_curve(cusp_curve):
    # f = mu + lam x - x^3, f_x = lam - 3 x^2: the fold curve is lam = 3 x^2,
    # mu = x^3 - lam x = -2 x^3, i.e. 27 mu^2 = 4 lam^3; f_xx = -6 x = 0 at the
    # cusp (mu, lam, x) = (0, 0, 0) (Kuznetsov 2004, section 8.2).
    assert cusp_curve.result == RESULTS.successful
    assert cusp_curve.kind == "fold"
    mu, lam, states = _valid(cusp_curve)
    x = states[:, 0]
    assert len(mu) > 20
    np.testing.assert_allclose(27 * mu**2 - 4 * lam**3, 0.0, atol=1e-8)
    np.testing.assert_allclose(lam, 3 * x**2, atol=1e-8)
    np.testing.assert_allclose(mu, -2 * x**3, atol=1e-8)
    np.testing.assert_allclose(states[:, 1], 0.0, atol=1e-12)
    # From the fold x = 1/sqrt(3) at lam = 1 towards smaller lam: both sheets
    # (x > 0: mu < 0; x < 0: mu > 0), through the cusp, up to the bound lam = 1.5
    # (x = -sqrt(1/2)).
    assert x.min() < -0.69 and x.max() == pytest.approx(1 / np.sqrt(3), abs=1e-8)
    assert lam.max() <= 1.5 and lam.max() > 1.45
    # Not a fold: the second eigenvalue is -1 everywhere; the first is f_x = 0.
    lam_j = np.asarray(cusp_curve.eigenvalues[: len(mu)])
    np.testing.assert_allclose(np.sort(lam_j.real, axis=1)[:, 0], -1.0, atol=1e-9)
    np.testing.assert_allclose(np.sort(lam_j.real, axis=1)[:, 1], 0.0, atol=1e-8)
    assert np.all(np.isnan(np.asarray(cusp_curve.kappa)))
    (point,) = _points(cusp_curve)
    name, mu_c, lam_c, state = point
    assert name == "cusp"
    assert abs(mu_c) < 1e-8 and abs(lam_c) < 1e-8
    np.testing.assert_allclose(state, [0.0, 0.0], atol=1e-8)


def _cusp_point(sigma):
    # f = mu + lam x + sigma x^2 - x^3: f_xx = 2 sigma - 6 x = 0 at x = sigma / 3;
    # f_x = lam + 2 sigma x - 3 x^2 = 0 gives lam = -sigma^2 / 3, and f = 0 gives
    # mu = x^3 - lam x - sigma x^2 = sigma^3 / 27.
    return sigma**3 / 27, -(sigma**2) / 3, sigma / 3


@pytest.mark.parametrize("sigma", [0.3, -0.5])
def test_cusp_moves_with_sigma(sigma, cusp_branch, cusp_curve, caplog):
    del cusp_curve  # compiled once already: this call reuses it
    # (The branch at sigma = 0 gives a start near the fold; it is corrected.)
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        curve = fold_curve(_Cusp(sigma=sigma), _CUSP_PAIR, cusp_branch, 0, **_CUSP_OPTS)
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiles == []
    mu, lam, states = _valid(curve)
    x = states[:, 0]
    np.testing.assert_allclose(lam, 3 * x**2 - 2 * sigma * x, atol=1e-8)
    np.testing.assert_allclose(mu, x**3 - lam * x - sigma * x**2, atol=1e-8)
    ((name, mu_c, lam_c, state),) = _points(curve)
    mu_ref, lam_ref, x_ref = _cusp_point(sigma)
    assert name == "cusp"
    assert mu_c == pytest.approx(mu_ref, abs=1e-8)
    assert lam_c == pytest.approx(lam_ref, abs=1e-8)
    np.testing.assert_allclose(state, [x_ref, 0.0], atol=1e-8)


@pytest.mark.slow  # (compiles the derivative of the whole fold-curve program)
def test_grad_of_cusp(cusp_branch):
    sigma = 0.3

    def cusp(system):
        curve = fold_curve(system, _CUSP_PAIR, cusp_branch, 0, **_CUSP_OPTS)
        return jnp.stack(
            [curve.bifurcations.parameter[0], curve.bifurcation_parameter2[0]]
        )

    jac = eqx.filter_jacfwd(cusp)(_Cusp(sigma=sigma))
    # d/dsigma (sigma^3 / 27, -sigma^2 / 3) = (sigma^2 / 9, -2 sigma / 3).
    np.testing.assert_allclose(
        np.asarray(jac.sigma), [sigma**2 / 9, -2 * sigma / 3], rtol=1e-6
    )
    # Central finite differences of the library's own values agree.
    h = 1e-5
    fd = (
        np.asarray(cusp(_Cusp(sigma=sigma + h)))
        - np.asarray(cusp(_Cusp(sigma=sigma - h)))
    ) / (2 * h)
    np.testing.assert_allclose(np.asarray(jac.sigma), fd, rtol=1e-5)
    # The two continuation parameters are replaced along the curve: no dependence.
    np.testing.assert_allclose(np.asarray(jac.mu), 0.0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(jac.lam), 0.0, atol=1e-10)


# --------------------------------------------------------------------- Brusselator


@pytest.fixture(scope="module")
def brusselator_hopf():
    # At a = 0.3 from b = 0.5 (equilibrium (a, b/a)), forward to the Hopf point
    # b = 1 + a^2; then along the Hopf curve towards larger a.
    system = Brusselator(a=0.3, b=0.5)
    branch = dynjax.continuation(
        system,
        "b",
        jnp.array([0.3, 0.5 / 0.3]),
        0.5,
        p_min=0.5,
        p_max=7.0,
        direction="forward",
    )
    assert branch.bifurcations.names == ["hopf"]
    return hopf_curve(
        system,
        ("b", "a"),
        branch,
        0,
        bounds=((-_INF, _INF), (0.2, 2.5)),
        n_points=100,
        direction="forward",
    )


@pytest.mark.slow  # (two compilations, continuation and Hopf curve: ~20-50 s)
def test_brusselator_hopf_curve(brusselator_hopf):
    # Equilibrium (a, b/a), J = [[b - 1, a^2], [-b, -a^2]]: trace b - 1 - a^2 = 0
    # on the Hopf curve b = 1 + a^2, where det J = a^2 = omega^2 > 0 (so no
    # Bogdanov-Takens point for a > 0, and d = 2 has no zero-Hopf point).
    curve = brusselator_hopf
    assert curve.result == RESULTS.successful
    assert curve.kind == "hopf"
    b, a, states = _valid(curve)
    assert len(a) > 20 and a.min() == pytest.approx(0.3) and a.max() > 2.49
    assert np.all((a >= 0.2) & (a <= 2.5))
    np.testing.assert_allclose(b, 1 + a**2, atol=1e-8)
    np.testing.assert_allclose(states, np.stack([a, b / a], axis=1), atol=1e-8)
    n = len(a)
    np.testing.assert_allclose(np.asarray(curve.kappa[:n]), a**2, atol=1e-8)
    np.testing.assert_allclose(np.asarray(curve.frequency[:n]), a, atol=1e-8)
    lam = np.asarray(curve.eigenvalues[:n])
    np.testing.assert_allclose(lam.real, 0.0, atol=1e-8)
    np.testing.assert_allclose(np.abs(lam.imag), np.stack([a, a], 1), atol=1e-8)
    assert not np.any(np.asarray(curve.neutral_saddle))
    assert curve.bifurcations.names == []


# ----------------------------------------------------------------- Bogdanov-Takens

_BT_PAIR = ("b1", "b2")
_BT_OPTS = dict(bounds=((-_INF, _INF), (-1.5, 1.5)), n_points=100, direction="forward")


@pytest.fixture(scope="module")
def bt_branch():
    # At b2 = -1 the equilibria are (x, 0) with x^2 - x + b1 = 0. From
    # x = (1 - sqrt(3)) / 2 at b1 = -1/2: through x = 0 at b1 = 0 (J =
    # [[0, 1], [-1, 0]], eigenvalues +-i: Hopf) to the fold x = 1/2 at b1 = 1/4.
    system = _BT(b1=-0.5, b2=-1.0)
    x0 = jnp.array([(1 - np.sqrt(3)) / 2, 0.0])
    branch = dynjax.continuation(
        system, "b1", x0, -0.5, p_min=-1.0, p_max=1.0, direction="forward"
    )
    bif = branch.bifurcations
    assert bif.names == ["hopf", "fold"]
    np.testing.assert_allclose(np.asarray(bif.parameter[:2]), [0.0, 0.25], atol=1e-8)
    return system, branch


@pytest.mark.slow  # (with the fixture's continuation: two compilations)
def test_bogdanov_takens_fold_curve(bt_branch):
    # Equilibria: x^2 + b2 x + b1 = 0 (y = 0); they collide where the
    # discriminant vanishes: b1 = b2^2 / 4, at x = -b2 / 2. There J =
    # [[0, 1], [0, s x]]: eigenvalues 0 and s x, both 0 at b2 = 0 (the
    # Bogdanov-Takens point (0, 0)); B(v, v) = (0, 2) != 0 for v = (1, 0): no cusp.
    system, branch = bt_branch
    curve = fold_curve(system, _BT_PAIR, branch, 1, **_BT_OPTS)
    assert curve.result == RESULTS.successful
    b1, b2, states = _valid(curve)
    assert b2.min() == pytest.approx(-1.0) and b2.max() > 1.4
    np.testing.assert_allclose(b1, b2**2 / 4, atol=1e-8)
    np.testing.assert_allclose(states, np.stack([-b2 / 2, 0 * b2], axis=1), atol=1e-8)
    ((name, p1, p2, state),) = _points(curve)
    assert name == "bogdanov_takens"
    assert abs(p1) < 1e-8 and abs(p2) < 1e-8
    np.testing.assert_allclose(state, [0.0, 0.0], atol=1e-8)


@pytest.mark.slow  # (one compilation of the Hopf curve, ~15-25 s)
def test_bogdanov_takens_hopf_curve(bt_branch):
    # J = [[0, 1], [b2 + 2x, s x]], trace s x = 0 at x = 0, so b1 = 0, where
    # det J = -b2: a Hopf point (kappa = omega^2 = -b2) for b2 < 0, a neutral
    # saddle (eigenvalues +-sqrt(b2)) for b2 > 0, and the Bogdanov-Takens point at
    # b2 = 0 (Kuznetsov 2004, section 8.4.2: the Hopf curve H = {b1 = 0, b2 < 0}).
    system, branch = bt_branch
    curve = hopf_curve(system, _BT_PAIR, branch, 0, **_BT_OPTS)
    assert curve.result == RESULTS.successful
    b1, b2, states = _valid(curve)
    n = len(b1)
    assert b2.min() == pytest.approx(-1.0) and b2.max() > 1.4
    np.testing.assert_allclose(b1, 0.0, atol=1e-8)
    np.testing.assert_allclose(states, 0.0, atol=1e-8)
    kappa = np.asarray(curve.kappa[:n])
    np.testing.assert_allclose(kappa, -b2, atol=1e-8)
    neutral = np.asarray(curve.neutral_saddle[:n])
    assert np.all(neutral[b2 > 1e-6]) and not np.any(neutral[b2 < -1e-6])
    freq = np.asarray(curve.frequency[:n])
    np.testing.assert_allclose(freq[b2 < 0], np.sqrt(-b2[b2 < 0]), atol=1e-8)
    assert np.all(np.isnan(freq[b2 > 0]))
    ((name, p1, p2, state),) = _points(curve)
    assert name == "bogdanov_takens"
    assert abs(p1) < 1e-8 and abs(p2) < 1e-8
    np.testing.assert_allclose(state, [0.0, 0.0], atol=1e-8)


@pytest.mark.slow  # (a third system class: one more compilation of each verb)
def test_bautin_point():
    # In polar form r' = r (b1 + b2 r^2 - r^4): the origin has eigenvalues
    # b1 +- i, so the Hopf curve is b1 = 0 (omega = 1), and the first Lyapunov
    # coefficient has the sign of b2: the Bautin point is (b1, b2) = (0, 0)
    # (Kuznetsov 2004, section 8.3).
    system = _Bautin(b1=-0.5, b2=-1.0)
    branch = dynjax.continuation(
        system, "b1", jnp.zeros(2), -0.5, p_min=-1.0, p_max=1.0, direction="forward"
    )
    assert branch.bifurcations.names == ["hopf"]
    curve = hopf_curve(
        system,
        ("b1", "b2"),
        branch,
        0,
        bounds=((-_INF, _INF), (-1.0, 1.0)),
        direction="forward",
    )
    b1, b2, states = _valid(curve)
    assert b2.min() == pytest.approx(-1.0) and b2.max() > 0.9
    np.testing.assert_allclose(b1, 0.0, atol=1e-10)
    np.testing.assert_allclose(states, 0.0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(curve.frequency[: len(b1)]), 1.0, atol=1e-10)
    ((name, p1, p2, state),) = _points(curve)
    assert name == "bautin"
    assert abs(p1) < 1e-8 and abs(p2) < 1e-8


@pytest.mark.slow  # (a fourth system class, d = 3)
def test_zero_hopf_point():
    # Equilibria (xi0, 0, 0) with xi0^2 = -b1; eigenvalues 2 xi0 and
    # b2 + xi0 +- i. The Hopf curve is b2 = -xi0, b1 = -xi0^2 (kappa = omega^2 = 1),
    # and the third eigenvalue 2 xi0 crosses 0 at the zero-Hopf point (0, 0).
    # On the centre manifold xi ~ xi0 - r^2 / (2 xi0), so r' ~ -r^3 / (2 xi0): l1
    # changes sign only through its pole at the zero-Hopf point (no Bautin point).
    system = _FoldHopf(b1=-1.0, b2=-2.0)
    branch = dynjax.continuation(
        system,
        "b2",
        jnp.array([1.0, 0.0, 0.0]),
        -2.0,
        p_min=-3.0,
        p_max=0.0,
        direction="forward",
    )
    assert branch.bifurcations.names == ["hopf"]
    curve = hopf_curve(
        system,
        ("b2", "b1"),
        branch,
        0,
        bounds=((-1.5, 1.5), (-1.5, 0.5)),
        direction="forward",
    )
    assert curve.result == RESULTS.successful
    b2, b1, states = _valid(curve)
    xi = states[:, 0]
    # Through the zero-Hopf point: from xi0 = 1 to below xi0 = -1.
    assert xi.max() == pytest.approx(1.0) and xi.min() < -1.2
    np.testing.assert_allclose(b2, -xi, atol=1e-8)
    np.testing.assert_allclose(b1, -(xi**2), atol=1e-8)
    np.testing.assert_allclose(states[:, 1:], 0.0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(curve.kappa[: len(xi)]), 1.0, atol=1e-8)
    ((name, p1, p2, state),) = _points(curve)
    assert name == "zero_hopf"
    assert abs(p1) < 1e-8 and abs(p2) < 1e-8
    np.testing.assert_allclose(state, 0.0, atol=1e-8)
    assert float(curve.bifurcations.frequency[0]) == pytest.approx(1.0, abs=1e-8)


# -------------------------------------------------------------- stability charts


def _brusselator_reference(a, b):
    # Equilibrium (a, b/a), J = [[b - 1, a^2], [-b, -a^2]].
    J = np.array([[b - 1, a**2], [-b, -(a**2)]])
    lam = np.linalg.eigvals(J)
    tr, det = b - 1 - a**2, a**2
    focus = tr**2 < 4 * det
    kind = "focus" if focus else "node"
    return lam, ("unstable " if tr > 0 else "stable ") + kind, tr


@pytest.fixture(scope="module")
def brusselator_chart():
    a = np.linspace(0.3, 2.0, 18)
    b = np.linspace(0.2, 6.0, 25)
    return a, b, stability_chart(Brusselator(), ("a", "b"), a, b, jnp.array([1.0, 1.0]))


def test_brusselator_chart(brusselator_chart):
    a, b, chart = brusselator_chart
    assert chart.result == RESULTS.successful
    assert chart.states.shape == (18, 25, 2)
    assert np.all(np.asarray(chart.converged))
    np.testing.assert_allclose(np.asarray(chart.parameter1), a)
    np.testing.assert_allclose(np.asarray(chart.parameter2), b)
    names = chart.stability_names
    n_unstable = np.asarray(chart.n_unstable)
    checked = 0
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            lam, name, tr = _brusselator_reference(ai, bj)
            np.testing.assert_allclose(
                np.asarray(chart.states[i, j]), [ai, bj / ai], atol=1e-10
            )
            got = np.asarray(chart.eigenvalues[i, j])
            np.testing.assert_allclose(
                np.sort_complex(got), np.sort_complex(lam), atol=1e-9
            )
            if abs(tr) < 1e-6 or abs(tr**2 - 4 * ai**2) < 1e-6:
                continue  # on the Hopf curve or the node/focus boundary
            checked += 1
            # Unstable exactly where b > 1 + a^2 (above the Hopf curve).
            assert n_unstable[i, j] == (2 if bj > 1 + ai**2 else 0)
            assert names[i, j] == name
    assert checked > 400
    assert {"unstable focus", "stable focus", "unstable node"} <= set(names.ravel())


def test_chart_compiles_once(brusselator_chart, caplog):
    del brusselator_chart  # compiled once already
    a = np.linspace(0.5, 1.5, 18)
    b = np.linspace(1.0, 4.0, 25)
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        chart = stability_chart(Brusselator(a=2.0), ("a", "b"), a, b, jnp.ones(2))
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiles == []
    # (And it is a new chart, not a cached one.)
    np.testing.assert_allclose(np.asarray(chart.states[-1, -1]), [1.5, 4.0 / 1.5])


def test_henon_chart():
    # Fixed points: a x^2 + (1 - b) x - 1 = 0, y = b x; none where
    # (1 - b)^2 + 4a < 0. Multipliers: roots of l^2 + 2 a x l - b = 0.
    a = np.linspace(-0.45, 1.45, 12)
    b = np.linspace(-0.4, 0.4, 9)

    def x0(a, b):
        disc = (1 - b) ** 2 + 4 * a
        x = (-(1 - b) + jnp.sqrt(jnp.maximum(disc, 0.0))) / (2 * a)
        x = jnp.where(disc >= 0, x, 1.0) + 0.05  # near, not at, the fixed point
        return jnp.stack([x, b * x])

    chart = stability_chart(Henon(), ("a", "b"), a, b, x0)
    assert chart.is_map
    assert chart.result == RESULTS.not_converged
    converged = np.asarray(chart.converged)
    n_unstable = np.asarray(chart.n_unstable)
    names = chart.stability_names
    stable_seen = unstable_seen = 0
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            disc = (1 - bj) ** 2 + 4 * ai
            if disc < 0:
                # No fixed point: flagged, not NaN.
                assert not converged[i, j] and n_unstable[i, j] == -1
                assert names[i, j] == "not converged"
                np.testing.assert_array_equal(
                    np.asarray(chart.states[i, j]), np.asarray(x0(ai, bj))
                )
                continue
            assert converged[i, j]
            x, y = np.asarray(chart.states[i, j])
            assert abs(ai * x**2 + (1 - bj) * x - 1) < 1e-10
            assert abs(y - bj * x) < 1e-12
            mult = np.roots([1.0, 2 * ai * x, -bj])
            np.testing.assert_allclose(
                np.sort_complex(np.asarray(chart.eigenvalues[i, j])),
                np.sort_complex(mult.astype(complex)),
                atol=1e-9,
            )
            if np.any(np.abs(np.abs(mult) - 1) < 1e-6):
                continue
            expected = int(np.sum(np.abs(mult) > 1))
            assert n_unstable[i, j] == expected
            assert names[i, j].startswith("stable") == (expected == 0)
            stable_seen += expected == 0
            unstable_seen += expected > 0
    assert stable_seen > 10 and unstable_seen > 10
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge at"):
        stability_chart(Henon(), ("a", "b"), a, b, x0, throw=True)


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "verb, k, kwargs, match",
    [
        (fold_curve, 0, {}, "starts from a fold point, but bifurcation 0 .* hopf"),
        (hopf_curve, 1, {}, "starts from a hopf point, but bifurcation 1 .* fold"),
        (fold_curve, 2, {}, "bifurcation 2 of the branch is unused"),
        (fold_curve, 99, {}, "`k` must be an int index"),
        (fold_curve, 1, {"parameters": ("b1", "b1")}, "two distinct fields"),
        (fold_curve, 1, {"parameters": "b1"}, "must be a pair"),
        (fold_curve, 1, {"parameters": ("b1", "gamma")}, "_BT has no parameter"),
        (fold_curve, 1, {"bounds": (0.0, 1.0)}, "`bounds` must be"),
        (fold_curve, 1, {"direction": "up"}, "`direction` must be"),
        (fold_curve, 1, {"branch": None}, "must be a `dynjax.Branch`"),
        (fold_curve, 1, {"system": Henon()}, "map's folds are not implemented"),
    ],
)
def test_bad_input(bt_branch, verb, k, kwargs, match):
    system, branch = bt_branch
    call = dict(system=system, parameters=_BT_PAIR, branch=branch)
    call.update({key: kwargs.pop(key) for key in list(kwargs) if key in call})
    with pytest.raises(ValueError, match=match):
        verb(call["system"], call["parameters"], call["branch"], k, **kwargs)


@pytest.mark.parametrize(
    "values1, values2, x0, match",
    [
        (np.zeros((2, 2)), np.zeros(3), jnp.ones(2), "non-empty 1-d arrays"),
        (np.zeros(2), np.zeros(0), jnp.ones(2), "non-empty 1-d arrays"),
        (
            np.ones(2),
            np.ones(3),
            lambda a, b: jnp.ones(3),
            "dimension 3 but the system has dimension d=2",
        ),
    ],
)
def test_chart_bad_input(values1, values2, x0, match):
    with pytest.raises(ValueError, match=match):
        stability_chart(Brusselator(), ("a", "b"), values1, values2, x0)


def _cusp_field(t, u, p):
    x, y = u
    return jnp.stack([p["mu"] + p["lam"] * x - x**3, -y])


@pytest.mark.slow  # (two compilations)
def test_fold_curve_of_a_flow_holding_a_function():
    # `dynjax.Flow(f, params)` holds a function beside its parameters (a dict of
    # floats): the curve is still 27 mu^2 = 4 lam^3 with the cusp at the origin.
    system = dynjax.Flow(_cusp_field, {"mu": 0.0, "lam": 1.0}, d=2)
    mu_, lam_ = (lambda s: s.params["mu"]), (lambda s: s.params["lam"])
    branch = dynjax.continuation(
        system, mu_, jnp.array([1.0, 0.0]), 0.0, p_min=-1.0, p_max=1.0,
        direction="backward",
    )  # fmt: skip
    curve = fold_curve(system, (mu_, lam_), branch, 0, **_CUSP_OPTS)
    mu, lam, _ = _valid(curve)
    assert len(mu) > 20
    np.testing.assert_allclose(27 * mu**2 - 4 * lam**3, 0.0, atol=1e-8)
    ((name, mu_c, lam_c, _),) = _points(curve)
    assert name == "cusp" and abs(mu_c) < 1e-8 and abs(lam_c) < 1e-8
