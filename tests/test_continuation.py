"""`dynjax.continuation` and `dynjax.first_lyapunov_coefficient` (issue 15, part 1).

Every expected value is derived independently of dynjax: closed-form branches and
bifurcation points of the normal forms, the Lorenz system, the logistic and Hénon
maps and the Brusselator (derived in the comments), numpy eigenvalues of
hand-written Jacobians, the first Lyapunov coefficient from Guckenheimer & Holmes'
planar formula and from a numpy implementation of Kuznetsov's formula with
hand-written multilinear forms, and derivatives of closed forms.

Compilation dominates the run time (~10-20 s per continuation on 2 cores), so each
branch is a module-scoped fixture shared by several tests, and calls that differ
only in array values (parameters, start point) reuse one compilation: they share
the parameter selector (`_MU`, `_RHO`, ... below) and all float options.
"""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import dynjax
from dynjax import RESULTS
from dynjax.systems import (
    Brusselator,
    Henon,
    HopfNormalForm,
    Linear,
    Logistic,
    Lorenz,
    PitchforkNormalForm,
    SaddleNodeNormalForm,
    TranscriticalNormalForm,
)


# One selector object per parameter, so that calls differing only in values share
# one compilation (a selector is static in the compiled problem).
def _MU(s):
    return s.mu


def _RHO(s):
    return s.rho


def _B(s):
    return s.b


_KINDS = ("fold", "branch_point", "hopf", "flip", "neimark_sacker")


def _valid(branch):
    n = int(branch.n_points)
    return (
        np.asarray(branch.parameter[:n]),
        np.asarray(branch.states[:n]),
        np.asarray(branch.eigenvalues[:n]),
        np.asarray(branch.stable[:n]),
        np.asarray(branch.n_unstable[:n]),
    )


def _only(branch, kind):
    """The single bifurcation of `kind` on the branch: (parameter, state, i)."""
    bif = branch.bifurcations
    names = bif.names
    assert names.count(kind) == 1, names
    i = names.index(kind)
    assert bool(bif.converged[i])
    assert int(bif.kind[i]) == _KINDS.index(kind)
    return float(bif.parameter[i]), np.asarray(bif.state[i]), i


def _sorted(z):
    z = np.asarray(z)
    return z[np.lexsort((np.round(z.imag, 6), np.round(z.real, 6)))]


# ------------------------------------------------- first Lyapunov coefficient refs
#
# Kuznetsov, *Elements of Applied Bifurcation Theory* (3rd ed., 2004), eq. (3.20)
# and section 5.4: at a Hopf point with A = Df(x*), A q = i w q, A^T p = -i w p,
# <p, q> = conj(p) . q = 1,
#   l1 = 1/(2w) Re[<p, C(q,q,qb)> - 2 <p, B(q, A^-1 B(q,qb))>
#                  + <p, B(qb, (2iw - A)^-1 B(q,q))>] = Re(c1) / w.
# l1 scales with |q|^2 (q -> s q, p -> p / conj(s) multiplies the bracket by |s|^2);
# dynjax's docstring fixes <q, q> = 1. `_l1_reference` implements this in numpy
# with hand-written B and C and scipy's left eigenvectors (p^H A = i w p^H), a
# different route from the library's (autodiff forms, eig of A^T); it is itself
# checked against Guckenheimer & Holmes' planar formula below.


def _l1_reference(A, B, C, omega):
    A = np.asarray(A, dtype=float)
    lam, vl, vr = scipy.linalg.eig(A, left=True, right=True)
    i = np.argmin(np.abs(lam - 1j * omega))
    assert abs(lam[i] - 1j * omega) < 1e-8 * max(1.0, omega)
    q = vr[:, i] / np.linalg.norm(vr[:, i])
    p = vl[:, i]
    p = p / np.conj(np.vdot(p, q))  # vdot(p, q) = conj(p) . q = 1
    n = A.shape[0]
    qb = np.conj(q)
    h11 = np.linalg.solve(A, B(q, qb))
    h20 = np.linalg.solve(2j * omega * np.eye(n) - A, B(q, q))
    val = np.vdot(p, C(q, q, qb)) - 2 * np.vdot(p, B(q, h11)) + np.vdot(p, B(qb, h20))
    return float(np.real(val) / (2 * omega))


# A planar system x' = -w y + F1, y' = w x + F2 with all quadratic and some cubic
# terms:
#   F1 = a x^2 + b x y + c y^2 + k1 x^3 + k2 x y^2,
#   F2 = d x^2 + e x y + f y^2 + k3 x^2 y + k4 y^3.
_W = 2.0
_QUAD = dict(a=1.0, b=-0.5, c=0.3, d=0.7, e=2.0, f=-1.2)
_CUBIC = dict(k1=-0.4, k2=0.25, k3=0.6, k4=-0.3)


def _planar_F(x, y):
    a, b, c, d, e, f = (_QUAD[k] for k in "abcdef")
    k1, k2, k3, k4 = (_CUBIC[k] for k in ("k1", "k2", "k3", "k4"))
    F1 = a * x**2 + b * x * y + c * y**2 + k1 * x**3 + k2 * x * y**2
    F2 = d * x**2 + e * x * y + f * y**2 + k3 * x**2 * y + k4 * y**3
    return F1, F2


def _planar_l1_by_hand():
    # Guckenheimer & Holmes (1983), eq. (3.4.11): for x' = -w y + F1,
    # y' = w x + F2, the cubic coefficient of r' = a_GH r^3 + ... is
    #   a_GH = (F1_xxx + F1_xyy + F2_xxy + F2_yyy) / 16
    #        + [F1_xy (F1_xx + F1_yy) - F2_xy (F2_xx + F2_yy)
    #           - F1_xx F2_xx + F1_yy F2_yy] / (16 w).
    # Kuznetsov's l1 with |q| = 1: take q = p = (1, -i)/sqrt(2) (A q = i w q,
    # <p, q> = 1, <q, q> = 1); then x + i y = sqrt(2) z, so z' = i w z + c1 z^2 zb
    # with c1 = 2 a_GH (the sqrt(2)^2 of the cubic term), i.e. l1 = 2 a_GH / w.
    # With F1_xx = 2a, F1_xy = b, F1_yy = 2c, F2_xx = 2d, F2_xy = e, F2_yy = 2f,
    # F1_xxx = 6 k1, F1_xyy = 2 k2, F2_xxy = 2 k3, F2_yyy = 6 k4:
    #   l1 = (6 k1 + 2 k2 + 2 k3 + 6 k4) / (8 w)
    #        + [b (a + c) - e (d + f) - 2 a d + 2 c f] / (4 w^2).
    a, b, c, d, e, f = (_QUAD[k] for k in "abcdef")
    k1, k2, k3, k4 = (_CUBIC[k] for k in ("k1", "k2", "k3", "k4"))
    w = _W
    cubic = (6 * k1 + 2 * k2 + 2 * k3 + 6 * k4) / (8 * w)
    quad = (b * (a + c) - e * (d + f) - 2 * a * d + 2 * c * f) / (4 * w**2)
    return cubic + quad


def _kuznetsov_planar_l1(q, p):
    """Kuznetsov (2004) eq. (3.20), l1 = Re(i g20 g11 + w g21) / (2 w^2), with
    g(z, zb) = <p, F(z q + zb qb)>, its Taylor coefficients g_kl = k! l! [z^k zb^l]
    taken exactly (for a cubic) by a 2-D discrete Fourier transform on the torus
    |z| = |zb| = 1, treating z and zb as independent."""
    N = 8
    th = 2 * np.pi * np.arange(N) / N
    z, zb = np.meshgrid(np.exp(1j * th), np.exp(1j * th), indexing="ij")
    X = z * q[0] + zb * np.conj(q[0])
    Y = z * q[1] + zb * np.conj(q[1])
    F1, F2 = _planar_F(X, Y)
    g = np.conj(p[0]) * F1 + np.conj(p[1]) * F2
    coef = np.fft.fft2(g) / N**2  # coef[k, l] = [z^k zb^l]
    g20, g11, g21 = 2 * coef[2, 0], coef[1, 1], 2 * coef[2, 1]
    return float(np.real(1j * g20 * g11 + _W * g21) / (2 * _W**2))


def _planar_field(shift):
    shift = jnp.asarray(shift)

    def f(u):
        x, y = u - shift
        F1, F2 = _planar_F(x, y)
        return jnp.stack([-_W * y + F1, _W * x + F2])

    return f


def _planar_B(u, v):
    # Second derivatives of (F1, F2) at 0 (the cubic terms vanish there).
    a, b, c, d, e, f = (_QUAD[k] for k in "abcdef")
    B1 = 2 * a * u[0] * v[0] + b * (u[0] * v[1] + u[1] * v[0]) + 2 * c * u[1] * v[1]
    B2 = 2 * d * u[0] * v[0] + e * (u[0] * v[1] + u[1] * v[0]) + 2 * f * u[1] * v[1]
    return np.array([B1, B2])


def _planar_C(u, v, w):
    # Third derivatives: x^3 -> 6 u0 v0 w0; x y^2 -> 2 (u0 v1 w1 + u1 v0 w1 +
    # u1 v1 w0); x^2 y -> 2 (u0 v0 w1 + u0 v1 w0 + u1 v0 w0); y^3 -> 6 u1 v1 w1.
    k1, k2, k3, k4 = (_CUBIC[k] for k in ("k1", "k2", "k3", "k4"))
    xyy = u[0] * v[1] * w[1] + u[1] * v[0] * w[1] + u[1] * v[1] * w[0]
    xxy = u[0] * v[0] * w[1] + u[0] * v[1] * w[0] + u[1] * v[0] * w[0]
    C1 = 6 * k1 * u[0] * v[0] * w[0] + 2 * k2 * xyy
    C2 = 2 * k3 * xxy + 6 * k4 * u[1] * v[1] * w[1]
    return np.array([C1, C2])


def test_first_lyapunov_coefficient_planar_by_hand():
    expected = _planar_l1_by_hand()
    assert abs(expected) > 0.1  # the test system is far from degenerate
    # The normalization: Kuznetsov's (3.20) evaluated with |q| = 1 equals the
    # hand value; with q = (1, -i) (|q|^2 = 2, p = q / 2) it is twice that.
    unit = np.array([1.0, -1j]) / np.sqrt(2)
    assert _kuznetsov_planar_l1(unit, unit) == pytest.approx(expected, rel=1e-12)
    q2 = np.array([1.0, -1j])
    assert _kuznetsov_planar_l1(q2, q2 / 2) == pytest.approx(2 * expected, rel=1e-12)
    # The numpy reference used for Lorenz and the Brusselator agrees.
    A = np.array([[0.0, -_W], [_W, 0.0]])
    assert _l1_reference(A, _planar_B, _planar_C, _W) == pytest.approx(
        expected, rel=1e-12
    )
    # The library, at the origin and at a shifted equilibrium.
    for shift in ([0.0, 0.0], [0.3, -0.7]):
        x = jnp.asarray(shift, dtype=jnp.float64)
        l1 = dynjax.first_lyapunov_coefficient(_planar_field(shift), x, _W)
        assert l1.dtype == jnp.float64
        assert float(l1) == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------------ normal forms


_SN_OPTS = dict(p_min=-1.0, p_max=2.0)


@pytest.fixture(scope="module")
def saddle_node():
    # From the stable node (1, 0) at mu = 1, both ways: through the fold at
    # mu = 0 onto the saddles (-sqrt(mu), 0).
    return dynjax.continuation(
        SaddleNodeNormalForm(mu=1.0), _MU, jnp.array([1.0, 0.0]), 1.0, **_SN_OPTS
    )


def test_saddle_node_fold(saddle_node):
    assert saddle_node.result == RESULTS.successful
    assert saddle_node.bifurcations.names == ["fold"]
    mu, state, _ = _only(saddle_node, "fold")
    assert abs(mu) < 1e-8
    np.testing.assert_allclose(state, [0.0, 0.0], atol=1e-8)


def test_saddle_node_branch_and_stability(saddle_node):
    mu, states, lam, stable, n_unstable = _valid(saddle_node)
    x, y = states[:, 0], states[:, 1]
    assert len(mu) > 20
    # Both halves were traced: x from about -sqrt(2) to +sqrt(2).
    assert x.min() < -1.3 and x.max() > 1.3
    # The branch is x = +-sqrt(mu), y = 0 at every point.
    np.testing.assert_allclose(np.abs(x), np.sqrt(np.maximum(mu, 0)), atol=1e-8)
    assert np.all(mu >= 0)
    np.testing.assert_allclose(y, 0.0, atol=1e-12)
    # J = diag(-2x, -1): x > 0 a stable node, x < 0 a saddle (one unstable).
    pos, neg = x > 1e-3, x < -1e-3
    assert pos.sum() > 5 and neg.sum() > 5
    assert np.all(stable[pos]) and np.all(n_unstable[pos] == 0)
    assert not np.any(stable[neg]) and np.all(n_unstable[neg] == 1)
    for xi, li in zip(x, lam):
        np.testing.assert_allclose(_sorted(li), _sorted([-2 * xi, -1.0]), atol=1e-9)


@pytest.fixture(scope="module")
def pitchfork():
    # Along the trivial branch x = 0 from mu = -0.7312 (a start and step chosen
    # so that no bisection midpoint falls exactly on mu = 0); y0 = 0.1 is
    # corrected to 0.
    return dynjax.continuation(
        PitchforkNormalForm(mu=-1.0),
        _MU,
        jnp.array([0.0, 0.1]),
        -0.7312,
        ds=0.0137,
        p_min=-1.5,
        p_max=1.0,
    )


_TC_OPTS = dict(p_min=-1.5, p_max=1.0)


@pytest.fixture(scope="module")
def transcritical():
    # (A name, not a selector: `test_no_recompile_with_a_parameter_name` calls it
    # again.)
    return dynjax.continuation(
        TranscriticalNormalForm(mu=-1.0), "mu", jnp.array([0.0, 0.0]), -1.0, **_TC_OPTS
    )


@pytest.mark.parametrize("name", ["pitchfork", "transcritical"])
def test_branch_point_at_zero(name, request):
    branch = request.getfixturevalue(name)
    assert branch.result == RESULTS.successful
    # A branch point (the tangent's mu-component never vanishes: no fold).
    assert branch.bifurcations.names == ["branch_point"]
    mu_bp, _, _ = _only(branch, "branch_point")
    assert abs(mu_bp) < 1e-8
    # The trivial branch x = y = 0, with eigenvalues (mu, -1): stable for mu < 0,
    # one unstable eigenvalue for mu > 0.
    mu, states, lam, stable, n_unstable = _valid(branch)
    assert mu.min() < -1.0 and mu.max() > 0.5
    np.testing.assert_allclose(states, 0.0, atol=1e-12)
    for m, li in zip(mu, lam):
        np.testing.assert_allclose(_sorted(li), _sorted([m, -1.0]), atol=1e-12)
    assert np.all(stable[mu < 0]) and np.all(n_unstable[mu > 0] == 1)


@pytest.mark.parametrize("name", ["pitchfork", "transcritical"])
def test_branch_point_state(name, request):
    branch = request.getfixturevalue(name)
    _, state, _ = _only(branch, "branch_point")
    np.testing.assert_allclose(state, [0.0, 0.0], atol=1e-8)


def test_no_recompile_with_a_parameter_name(transcritical, caplog):
    del transcritical  # compiled once already
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        again = dynjax.continuation(
            TranscriticalNormalForm(mu=-0.5),
            "mu",
            jnp.array([0.0, 0.0]),
            -0.5,
            **_TC_OPTS,
        )
        # Other steps and bounds are values, not a new program.
        narrower = dynjax.continuation(
            TranscriticalNormalForm(mu=-0.5),
            "mu",
            jnp.array([0.0, 0.0]),
            -0.5,
            p_min=-0.8,
            p_max=0.6,
            ds=0.02,
            ds_max=0.05,
        )
    assert again.result == RESULTS.successful
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiles == []
    mu = np.asarray(narrower.parameter[: int(narrower.n_points)])
    assert -0.8 <= mu.min() < -0.7 and 0.5 < mu.max() <= 0.6
    assert np.diff(np.sort(mu)).max() <= 0.05 + 1e-12


_HOPF_CASES = [(1.0, 1.0), (2.0, 3.0), (0.5, 0.25), (-1.0, 2.0), (-0.3, 0.7)]


@pytest.fixture(scope="module")
def hopf_normal_forms():
    # All with one compilation (same selector and options).
    return {
        (beta, omega): dynjax.continuation(
            HopfNormalForm(mu=-1.0, omega=omega, beta=beta),
            _MU,
            jnp.array([0.0, 0.0]),
            -1.0,
            p_min=-1.5,
            p_max=1.0,
        )
        for beta, omega in _HOPF_CASES
    }


@pytest.mark.slow  # (the fixture: five branches, one compilation, ~20 s)
@pytest.mark.parametrize("beta, omega", _HOPF_CASES)
def test_hopf_normal_form(beta, omega, hopf_normal_forms):
    branch = hopf_normal_forms[(beta, omega)]
    assert branch.result == RESULTS.successful
    assert branch.bifurcations.names == ["hopf"]
    mu, state, i = _only(branch, "hopf")
    assert abs(mu) < 1e-8
    np.testing.assert_allclose(state, [0.0, 0.0], atol=1e-8)
    # J = [[mu, -omega], [omega, mu]] at the origin: eigenvalues mu +- i omega.
    assert float(branch.bifurcations.frequency[i]) == pytest.approx(omega, rel=1e-10)
    # z = x + i y: z' = (mu + i omega) z - beta z |z|^2, so c = -beta and, with
    # |q| = 1 (q = (1, -i)/sqrt 2, x + i y = sqrt 2 z), z' = i omega z
    # - 2 beta z^2 zb at mu = 0: c1 = -2 beta, l1 = Re c1 / omega = -2 beta / omega
    # (negative: supercritical for beta > 0; positive: subcritical for beta < 0).
    l1 = float(branch.bifurcations.lyapunov_coefficient[i])
    assert l1 == pytest.approx(-2 * beta / omega, rel=1e-8)
    assert np.sign(l1) == -np.sign(beta)
    # The origin is a stable focus before, an unstable one after.
    p, states, lam, stable, n_unstable = _valid(branch)
    np.testing.assert_allclose(states, 0.0, atol=1e-12)
    np.testing.assert_allclose(lam.real, np.stack([p, p], axis=1), atol=1e-12)
    assert np.all(stable[p < 0]) and np.all(n_unstable[p > 0] == 2)


# ------------------------------------------------------------------------ Lorenz


def _lorenz_jacobian(sigma, rho, beta, x):
    X, Y, Z = x
    return np.array(
        [[-sigma, sigma, 0.0], [rho - Z, -1.0, -X], [Y, X, -beta]], dtype=float
    )


def _lorenz_B(u, v):
    # The only nonlinear terms: -x z in y', x y in z'.
    return np.array([0 * u[0], -(u[0] * v[2] + u[2] * v[0]), u[0] * v[1] + u[1] * v[0]])


def _lorenz_C(u, v, w):
    return np.zeros(3, dtype=complex)


@pytest.fixture(scope="module")
def lorenz_origin():
    return dynjax.continuation(
        Lorenz(rho=0.5), _RHO, jnp.zeros(3), 0.5, p_min=0.0, p_max=2.0
    )


@pytest.mark.slow
def test_lorenz_origin_branch_point(lorenz_origin):
    branch = lorenz_origin
    assert branch.result == RESULTS.successful
    assert branch.bifurcations.names == ["branch_point"]
    rho_bp, state, _ = _only(branch, "branch_point")
    np.testing.assert_allclose(state, 0.0, atol=1e-8)
    # The origin's eigenvalues: -beta and the roots of
    # l^2 + (sigma + 1) l + sigma (1 - rho), one of which crosses 0 at rho = 1.
    assert abs(rho_bp - 1.0) < 1e-8
    rho, states, lam, _, n_unstable = _valid(branch)
    assert rho.min() < 0.1 and rho.max() > 1.9
    np.testing.assert_allclose(states, 0.0, atol=1e-12)
    sigma, beta = 10.0, 8.0 / 3.0
    for r, li in zip(rho, lam):
        quad = np.roots([1.0, sigma + 1.0, sigma * (1.0 - r)])
        ref = np.concatenate([quad, [-beta]])
        np.testing.assert_allclose(_sorted(li), _sorted(ref), atol=1e-9)
    assert np.all(n_unstable[rho < 1] == 0) and np.all(n_unstable[rho > 1] == 1)


_LORENZ_CASES = [(10.0, 8.0 / 3.0), (16.0, 4.0)]
_LORENZ_OPTS = dict(p_min=10.0, p_max=40.0, direction="backward", ds=0.1, ds_max=0.5)


def _lorenz_hopf_branch(system):
    # C+ = (sqrt(beta (rho - 1)), sqrt(beta (rho - 1)), rho - 1) from rho = 40
    # down (a rough start: the corrector finds C+).
    return dynjax.continuation(
        system, _RHO, jnp.array([10.0, 10.0, 39.0]), 40.0, **_LORENZ_OPTS
    )


@pytest.fixture(scope="module")
def lorenz_cplus():
    return {
        (s, b): _lorenz_hopf_branch(Lorenz(sigma=s, beta=b, rho=40.0))
        for s, b in _LORENZ_CASES
    }


def _rho_hopf(sigma, beta):
    # C+-: det(J - l) = -(l^3 + (s + b + 1) l^2 + b (s + rho) l + 2 s b (rho - 1));
    # l = i w is a root iff w^2 = b (s + rho) and (s + b + 1) w^2 = 2 s b (rho - 1),
    # i.e. rho_H = s (s + b + 3) / (s - b - 1).
    return sigma * (sigma + beta + 3) / (sigma - beta - 1)


@pytest.mark.slow
@pytest.mark.parametrize("sigma, beta", _LORENZ_CASES)
def test_lorenz_hopf(sigma, beta, lorenz_cplus):
    branch = lorenz_cplus[(sigma, beta)]
    assert branch.result == RESULTS.successful
    assert branch.bifurcations.names == ["hopf"]
    rho_h, state, i = _only(branch, "hopf")
    expected = _rho_hopf(sigma, beta)
    assert abs(rho_h - expected) < 1e-6 * expected
    c = np.sqrt(beta * (expected - 1))
    np.testing.assert_allclose(state, [c, c, expected - 1], rtol=1e-8)
    # The frequency is the imaginary part of the Jacobian's eigenvalues there
    # (numpy), and w^2 = beta (sigma + rho_H) in closed form.
    lam = np.linalg.eigvals(_lorenz_jacobian(sigma, rho_h, beta, state))
    omega = float(branch.bifurcations.frequency[i])
    assert omega == pytest.approx(np.max(lam.imag), rel=1e-8)
    assert omega == pytest.approx(np.sqrt(beta * (sigma + expected)), rel=1e-8)
    # Subcritical (l1 > 0), and equal to the numpy reference at the closed-form
    # Hopf point.
    l1 = float(branch.bifurcations.lyapunov_coefficient[i])
    assert l1 > 0
    A = _lorenz_jacobian(sigma, expected, beta, [c, c, expected - 1])
    w = np.sqrt(beta * (sigma + expected))
    assert l1 == pytest.approx(_l1_reference(A, _lorenz_B, _lorenz_C, w), rel=1e-6)
    # Stable below rho_H, a complex pair unstable above.
    rho, _, _, stable, n_unstable = _valid(branch)
    below, above = rho < expected - 1e-6, rho > expected + 1e-6
    assert below.sum() > 3 and above.sum() > 3
    assert np.all(stable[below]) and np.all(n_unstable[above] == 2)


# ----------------------------------------------------------------- logistic map


@pytest.fixture(scope="module")
def logistic_fixed():
    return dynjax.continuation(
        Logistic(r=2.5), "r", jnp.array([0.6]), 2.5, p_min=2.0, p_max=3.3
    )


@pytest.fixture(scope="module")
def logistic_period2():
    r = 3.2
    return dynjax.continuation(
        Logistic(r=r), "r", jnp.array([_two_cycle(r)]), r, period=2,
        p_min=3.05, p_max=3.5,
    )  # fmt: skip


def _two_cycle(r):
    # x = f(f(x)) without the fixed points: r^2 x^2 - r (r + 1) x + (r + 1) = 0,
    # x = ((r + 1) +- sqrt((r - 3)(r + 1))) / (2 r); the "+" point.
    return ((r + 1) + np.sqrt((r - 3) * (r + 1))) / (2 * r)


def test_logistic_first_flip(logistic_fixed):
    branch = logistic_fixed
    assert branch.result == RESULTS.successful
    assert branch.bifurcations.names == ["flip"]
    r_flip, state, _ = _only(branch, "flip")
    # x* = 1 - 1/r, multiplier f'(x*) = 2 - r = -1 at r = 3.
    assert abs(r_flip - 3.0) < 1e-8
    np.testing.assert_allclose(state, [2.0 / 3.0], atol=1e-8)
    r, states, mult, stable, _ = _valid(branch)
    assert r.min() < 2.1 and r.max() > 3.2
    np.testing.assert_allclose(states[:, 0], 1 - 1 / r, atol=1e-12)
    np.testing.assert_allclose(mult[:, 0], 2 - r, atol=1e-10)
    assert np.all(stable[r < 3]) and not np.any(stable[r > 3])


def test_logistic_second_flip(logistic_period2):
    branch = logistic_period2
    assert branch.result == RESULTS.successful
    assert branch.bifurcations.names == ["flip"]
    r_flip, state, _ = _only(branch, "flip")
    # The 2-cycle's multiplier f'(x1) f'(x2) = r^2 (1 - 2 x1)(1 - 2 x2)
    # = 4 + 2 r - r^2 equals -1 at r^2 - 2 r - 5 = 0, r = 1 + sqrt(6).
    expected = 1 + np.sqrt(6.0)
    assert abs(r_flip - expected) < 1e-8
    np.testing.assert_allclose(state, [_two_cycle(expected)], atol=1e-8)
    r, states, mult, stable, _ = _valid(branch)
    assert r.min() < 3.1 and r.max() > 3.45
    np.testing.assert_allclose(states[:, 0], _two_cycle(r), atol=1e-10)
    np.testing.assert_allclose(mult[:, 0], 4 + 2 * r - r**2, atol=1e-9)
    assert np.all(stable[r < expected]) and not np.any(stable[r > expected])


# --------------------------------------------------------- Brusselator and Hénon


def _brusselator_jacobian(a, b, x):
    X, Y = x
    return np.array(
        [[-(b + 1) + 2 * X * Y, X**2], [b - 2 * X * Y, -(X**2)]], dtype=float
    )


def _brusselator_forms(x):
    # The nonlinearity is +-x^2 y; its second and third derivatives at (X, Y).
    X, Y = x

    def B(u, v):
        g = 2 * Y * u[0] * v[0] + 2 * X * (u[0] * v[1] + u[1] * v[0])
        return np.array([g, -g])

    def C(u, v, w):
        g = 2 * (u[0] * v[0] * w[1] + u[0] * v[1] * w[0] + u[1] * v[0] * w[0])
        return np.array([g, -g])

    return B, C


@pytest.fixture(scope="module")
def brusselators():
    return {
        a: dynjax.continuation(
            Brusselator(a=a, b=1.0),
            _B,
            jnp.array([a, 1.0 / a]),
            1.0,
            p_min=0.5,
            p_max=7.0,
        )
        for a in (1.0, 2.0)
    }


@pytest.mark.parametrize("a", [1.0, 2.0])
def test_brusselator_hopf(a, brusselators):
    branch = brusselators[a]
    assert branch.result == RESULTS.successful
    assert branch.bifurcations.names == ["hopf"]
    b_h, state, i = _only(branch, "hopf")
    # At (a, b/a): J = [[b - 1, a^2], [-b, -a^2]], trace b - 1 - a^2 = 0 at
    # b = 1 + a^2, where det = a^2 > 0: eigenvalues +- i a.
    expected = 1 + a**2
    assert abs(b_h - expected) < 1e-8
    np.testing.assert_allclose(state, [a, expected / a], atol=1e-8)
    assert float(branch.bifurcations.frequency[i]) == pytest.approx(a, rel=1e-8)
    l1 = float(branch.bifurcations.lyapunov_coefficient[i])
    x = [a, expected / a]
    B, C = _brusselator_forms(x)
    ref = _l1_reference(_brusselator_jacobian(a, expected, x), B, C, a)
    assert ref < 0  # supercritical
    assert l1 == pytest.approx(ref, rel=1e-6)
    b, states, _, stable, n_unstable = _valid(branch)
    np.testing.assert_allclose(states, np.stack([0 * b + a, b / a], axis=1), atol=1e-10)
    assert np.all(stable[b < expected]) and np.all(n_unstable[b > expected] == 2)


@pytest.fixture(scope="module")
def henon():
    a, b = 0.1, 0.3
    x = (-(1 - b) + np.sqrt((1 - b) ** 2 + 4 * a)) / (2 * a)
    return dynjax.continuation(
        Henon(a=a, b=b), "a", jnp.array([x, b * x]), a, p_min=-0.5, p_max=0.5
    )


def test_henon_fold_and_flip(henon):
    b = 0.3
    branch = henon
    assert branch.result == RESULTS.successful
    assert branch.bifurcations.names == ["fold", "flip"]
    # Fixed points: a x^2 + (1 - b) x - 1 = 0, y = b x; multipliers: roots of
    # l^2 + 2 a x l - b = 0. l = 1 at x = -(1 - b)/(2a), so
    # (1 - b)^2 / (4a) - (1 - b)^2 / (2a) = 1: a = -(1 - b)^2 / 4, x = 2/(1 - b).
    # l = -1 at x = (1 - b)/(2a): a = 3 (1 - b)^2 / 4, x = 2 / (3 (1 - b)).
    a_fold, s_fold, _ = _only(branch, "fold")
    a_flip, s_flip, _ = _only(branch, "flip")
    assert abs(a_fold + (1 - b) ** 2 / 4) < 1e-8
    assert abs(a_flip - 3 * (1 - b) ** 2 / 4) < 1e-8
    x_fold, x_flip = 2 / (1 - b), 2 / (3 * (1 - b))
    np.testing.assert_allclose(s_fold, [x_fold, b * x_fold], rtol=1e-7)
    np.testing.assert_allclose(s_flip, [x_flip, b * x_flip], rtol=1e-7)
    a, states, mult, _, _ = _valid(branch)
    x, y = states[:, 0], states[:, 1]
    np.testing.assert_allclose(a * x**2 + (1 - b) * x - 1, 0.0, atol=1e-9)
    np.testing.assert_allclose(y, b * x, atol=1e-12)
    for ai, xi, mi in zip(a, x, mult):
        ref = np.roots([1.0, 2 * ai * xi, -b])
        np.testing.assert_allclose(_sorted(mi), _sorted(ref), atol=1e-8)


# -------------------------------------------------------------- differentiability


@pytest.mark.slow
@pytest.mark.parametrize("sigma, beta", _LORENZ_CASES)
def test_grad_of_lorenz_hopf(sigma, beta):
    def rho_hopf(system):
        return _lorenz_hopf_branch(system).bifurcations.parameter[0]

    grads = eqx.filter_grad(rho_hopf)(Lorenz(sigma=sigma, beta=beta, rho=40.0))
    # rho_H = s (s + b + 3) / (s - b - 1):
    #   d/ds = (2 s + b + 3) / (s - b - 1) - s (s + b + 3) / (s - b - 1)^2,
    #   d/db = 2 s (s + 1) / (s - b - 1)^2; independent of rho.
    s, b = sigma, beta
    d_sigma = (2 * s + b + 3) / (s - b - 1) - s * (s + b + 3) / (s - b - 1) ** 2
    d_beta = 2 * s * (s + 1) / (s - b - 1) ** 2
    assert float(grads.sigma) == pytest.approx(d_sigma, rel=1e-6)
    assert float(grads.beta) == pytest.approx(d_beta, rel=1e-6)
    assert abs(float(grads.rho)) < 1e-10


# --------------------------------------------------------------------- bad input


def _driven_map():
    return dynjax.DrivenMap(lambda x, u, p: p * x + u, jnp.array(0.5), d=1)


@pytest.mark.parametrize(
    "make, parameter, kwargs, match",
    [
        (lambda: Lorenz(), "gamma", {}, "Lorenz has no parameter 'gamma'"),
        (lambda: Lorenz(), lambda s: s.gamma, {}, "has no parameter"),
        (lambda: Lorenz(), 3, {}, "must be the name of a field"),
        (
            lambda: Linear(-jnp.eye(3)),
            "A",
            {},
            "must be a scalar float field",
        ),
        (lambda: Logistic(), "r", {"period": 0}, "`period` must be a positive int"),
        (lambda: Logistic(), "r", {"period": 1.0}, "`period` must be a positive int"),
        (lambda: Lorenz(), "rho", {"period": 2}, "`period` is for maps"),
        (_driven_map, "params", {}, "driven map"),
        (
            lambda: Lorenz(),
            "rho",
            {"p_min": 2.0, "p_max": 30.0},
            r"`p0 = 1.0` lies outside `\[p_min, p_max\]",
        ),
        (
            lambda: Lorenz(),
            "rho",
            {"direction": "up"},
            "`direction` must be 'both', 'forward' or 'backward'",
        ),
    ],
)
def test_bad_input(make, parameter, kwargs, match):
    system = make()
    x0 = jnp.zeros(1 if isinstance(system, (Logistic, dynjax.DrivenMap)) else 3)
    with pytest.raises(ValueError, match=match):
        dynjax.continuation(system, parameter, x0, 1.0, **kwargs)


def test_start_far_from_any_equilibrium(saddle_node):
    del saddle_node  # shares its compilation (same class, selector and options)
    # x' = mu - x^2 has no equilibrium at mu = -1: Newton cannot converge.
    system = SaddleNodeNormalForm(mu=-1.0)
    x0 = jnp.array([3.0, 0.0])
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge"):
        dynjax.continuation(system, _MU, x0, -1.0, **_SN_OPTS)
    branch = dynjax.continuation(system, _MU, x0, -1.0, throw=False, **_SN_OPTS)
    assert branch.result != RESULTS.successful
    assert branch.result == RESULTS.continuation_start_failed


# --- branch switching (Keller's algebraic branching equation) -------------------


@pytest.fixture(scope="module")
def pitchfork_switched(pitchfork):
    return dynjax.switch_branch(
        PitchforkNormalForm(mu=-1.0),
        _MU,
        pitchfork,
        0,
        ds=0.0137,
        p_min=-1.5,
        p_max=1.0,
    )


def test_switch_onto_the_pitchfork(pitchfork_switched):
    branch = pitchfork_switched
    assert branch.result == RESULTS.successful
    mu, states, lam, stable, _ = _valid(branch)
    x = states[:, 0]
    # x' = mu x - x^3, y' = -y: the new branch is x = +-sqrt(mu), y = 0, both halves
    # (the continuation passes through the branch point), eigenvalues (-2 mu, -1).
    assert mu.max() > 0.9 and x.max() > 0.9 and x.min() < -0.9
    assert mu.min() > -1e-8
    np.testing.assert_allclose(x**2, mu, atol=1e-8)
    np.testing.assert_allclose(states[:, 1], 0.0, atol=1e-12)
    away = mu > 1e-3
    assert np.all(stable[away])
    for m, li in zip(mu[away], lam[away]):
        np.testing.assert_allclose(_sorted(li), _sorted([-2 * m, -1.0]), atol=1e-9)
    # The branch point is found again on the new branch, at the origin; the
    # branch's turn in mu there is not reported as a fold.
    assert branch.bifurcations.names == ["branch_point"]
    mu_bp, state, _ = _only(branch, "branch_point")
    assert abs(mu_bp) < 1e-8
    np.testing.assert_allclose(state, [0.0, 0.0], atol=1e-8)


def test_switch_onto_the_transcritical(transcritical):
    # x' = mu x - x^2, y' = -y: the other branch x = mu crosses x = 0 at 0, not
    # orthogonally (the branching equation, not a perpendicular guess).
    branch = dynjax.switch_branch(
        TranscriticalNormalForm(mu=-1.0), "mu", transcritical, 0, **_TC_OPTS
    )
    mu, states, _, stable, _ = _valid(branch)
    assert mu.min() < -1.0 and mu.max() > 0.5
    np.testing.assert_allclose(states[:, 0], mu, atol=1e-10)
    # x = mu is stable for mu > 0 (eigenvalue mu - 2x = -mu), unstable below.
    assert np.all(stable[mu > 1e-3]) and not np.any(stable[mu < -1e-3])


def test_switch_onto_the_period_two_branch(logistic_fixed):
    branch = dynjax.switch_branch(
        Logistic(r=2.5), "r", logistic_fixed, 0, p_min=2.0, p_max=3.5
    )
    assert branch.period == 2
    r, states, mult, stable, _ = _valid(branch)
    x = states[:, 0]
    # Period-2 points ((r + 1) +- sqrt((r - 3)(r + 1))) / (2 r) for r > 3, both
    # (the two phases of the cycle), multiplier 4 + 2 r - r^2.
    assert r.min() > 3 - 1e-8 and r.max() > 3.4
    disc = np.sqrt(np.maximum((r - 3) * (r + 1), 0.0))
    plus, minus = ((r + 1) + disc) / (2 * r), ((r + 1) - disc) / (2 * r)
    err = np.minimum(np.abs(x - plus), np.abs(x - minus))
    assert err.max() < 1e-8
    assert np.sum(x > plus - 1e-6) > 5 and np.sum(x < minus + 1e-6) > 5
    away = r > 3.001
    np.testing.assert_allclose(mult[away, 0], 4 + 2 * r[away] - r[away] ** 2, atol=1e-8)
    # The period-2 branch's own flip (to period 4) at 1 + sqrt(6).
    flips = [
        float(p)
        for p, name in zip(branch.bifurcations.parameter, branch.bifurcations.names)
        if name == "flip"
    ]
    assert flips and min(abs(f - (1 + np.sqrt(6.0))) for f in flips) < 1e-8


def test_switch_branch_bad_point(logistic_fixed, saddle_node):
    with pytest.raises(ValueError, match="must index one of the 1 bifurcation"):
        dynjax.switch_branch(Logistic(r=2.5), "r", logistic_fixed, 3)
    with pytest.raises(ValueError, match="a fold has one branch through it"):
        dynjax.switch_branch(
            SaddleNodeNormalForm(mu=1.0), _MU, saddle_node, 0, **_SN_OPTS
        )


def test_start_residual_reported(saddle_node):
    del saddle_node
    system = SaddleNodeNormalForm(mu=-1.0)
    # mu - x^2 at x = 3, mu = -1: residual |-10| = 10 (y' = -y: 0).
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"max\|F\(x0, p0\)\| .* is 10"):
        dynjax.continuation(system, _MU, jnp.array([3.0, 0.0]), -1.0, **_SN_OPTS)


def test_singular_start():
    # Starting exactly on the pitchfork's branch point: [F_x F_p] = 0 in x there,
    # two branches cross and the tangent is not unique.
    with pytest.raises(eqx.EquinoxRuntimeError, match="starts at a singular point"):
        dynjax.continuation(
            PitchforkNormalForm(mu=0.0), _MU, jnp.array([0.0, 0.0]), 0.0,
            ds=0.0137, p_min=-1.5, p_max=1.0,
        )  # fmt: skip


class _FloatCusp(dynjax.AbstractFlow):
    """x' = a + b x - x^3, y' = -y, with plain float fields (a user's system)."""

    a: float = 0.0
    b: float = 1.0
    d = 2

    def vector_field(self, t, x, args=None):
        u, y = x
        return jnp.stack([self.a + self.b * u - u**3, -y])


def test_grad_of_a_fold_with_float_fields_and_a_start_depending_on_b(caplog):
    # Folds where b = 3 x^2: a = -+2 (b/3)^(3/2) at x = +-sqrt(b/3), so
    # d a_fold / d b = -+sqrt(b/3) and d x_fold / d b = +-1 / (2 sqrt(3 b)). On
    # the way the eigenvalue b - 3 x^2 passes -1, the y-eigenvalue (a repeated
    # eigenvalue); the start x0 depends on b (a guess, corrected: no derivative).
    def fold(b, k):
        x0 = jnp.stack([-1.3247 + 0.0 * b, 0.0])
        branch = dynjax.continuation(
            _FloatCusp(a=-1.0, b=b), "a", x0, -1.0, p_min=-1.0, p_max=1.0
        )
        return branch.bifurcations.parameter[k], branch.bifurcations.state[k, 0]

    b = 1.2
    for k in (0, 1):
        (a_k, x_k), vjp = jax.vjp(lambda q: fold(q, k), b)
        sign = np.sign(float(a_k))
        assert abs(float(a_k) - sign * 2 * (b / 3) ** 1.5) < 1e-10
        assert abs(float(x_k) + sign * np.sqrt(b / 3)) < 1e-8
        (da,) = vjp((jnp.array(1.0), jnp.array(0.0)))
        (dx,) = vjp((jnp.array(0.0), jnp.array(1.0)))
        assert abs(float(da) - sign * np.sqrt(b / 3)) < 1e-8
        assert abs(float(dx) + sign / (2 * np.sqrt(3 * b))) < 1e-7
    # Float fields are values: another b does not compile again.
    kw = dict(p_min=-1.0, p_max=1.0)
    x0 = jnp.array([-1.3, 0.0])
    dynjax.continuation(_FloatCusp(a=-1.0, b=1.1), "a", x0, -1.0, **kw)
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        dynjax.continuation(_FloatCusp(a=-1.0, b=0.8), "a", x0, -1.0, **kw)
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiles == []
