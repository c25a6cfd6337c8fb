"""`dynjax.plot.two_parameter_diagram` and `dynjax.plot.bifurcation_diagram` on
branches of cycles, drawn from hand-built results (closed-form curves), so that
what is drawn can be compared with the numbers given."""

import equinox as eqx
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import dynjax
from dynjax import RESULTS


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bifurcations(kinds, p1, states, index=None):
    K = 4
    n = len(kinds)
    pad = lambda a, fill: np.r_[np.asarray(a, float), np.full(K - n, fill)]  # noqa: E731
    d = np.asarray(states).shape[1] if n else 2
    state = np.full((K, d), np.nan)
    state[:n] = states
    return dynjax.Bifurcations(
        kind=jnp.asarray(np.r_[kinds, -np.ones(K - n)].astype(int)),
        parameter=jnp.asarray(pad(p1, np.nan)),
        state=jnp.asarray(state),
        frequency=jnp.full(K, jnp.nan),
        lyapunov_coefficient=jnp.full(K, jnp.nan),
        index=jnp.asarray(
            np.r_[index if index is not None else np.zeros(n), -np.ones(K - n)].astype(
                int
            )
        ),
        converged=jnp.asarray(np.r_[np.ones(n, bool), np.zeros(K - n, bool)]),
        n=jnp.array(n),
    )


def _cusp_curve():
    # 27 mu^2 = 4 lam^3: mu = +-2 (lam/3)^(3/2), both sheets through the cusp.
    lam = np.r_[np.linspace(1.0, 0.0, 6), np.linspace(0.0, 1.0, 6)[1:]]
    mu = np.r_[-2 * (lam[:6] / 3) ** 1.5, 2 * (lam[6:] / 3) ** 1.5]
    N = 16
    pad = lambda a: jnp.asarray(np.r_[a, np.full(N - len(a), np.nan)])  # noqa: E731
    n = len(lam)
    return (
        dynjax.BifurcationCurve(
            kind="fold",
            parameter1=pad(mu),
            parameter2=pad(lam),
            states=jnp.zeros((N, 2)),
            eigenvalues=jnp.zeros((N, 2), complex),
            kappa=jnp.full(N, jnp.nan),
            frequency=jnp.full(N, jnp.nan),
            neutral_saddle=jnp.zeros(N, bool),
            n_points=jnp.array(n),
            bifurcations=_bifurcations([5], [0.0], [[0.0, 0.0]]),
            bifurcation_parameter2=jnp.array([0.0, np.nan, np.nan, np.nan]),
            result=RESULTS.successful,
        ),
        mu,
        lam,
    )


def _hopf_curve():
    # Bogdanov-Takens normal form: Hopf curve beta1 = 0, beta2 < 0, continued past
    # the BT point at the origin onto neutral saddles (beta2 > 0).
    b2 = np.linspace(-1.0, 0.5, 7)
    n = len(b2)
    return dynjax.BifurcationCurve(
        kind="hopf",
        parameter1=jnp.zeros(n),
        parameter2=jnp.asarray(b2),
        states=jnp.zeros((n, 2)),
        eigenvalues=jnp.zeros((n, 2), complex),
        kappa=jnp.asarray(-b2),
        frequency=jnp.asarray(np.where(b2 < 0, np.sqrt(np.abs(b2)), np.nan)),
        neutral_saddle=jnp.asarray(b2 > 0),
        n_points=jnp.array(n),
        bifurcations=_bifurcations([6], [0.0], [[0.0, 0.0]]),
        bifurcation_parameter2=jnp.array([0.0, np.nan, np.nan, np.nan]),
        result=RESULTS.successful,
    ), b2


def test_two_parameter_diagram_curves_points_and_chart():
    fold, mu, lam = _cusp_curve()
    hopf, b2 = _hopf_curve()
    # A chart of the Brusselator's equilibrium: 2 unstable eigenvalues where
    # b > 1 + a^2 (trace b - 1 - a^2 > 0, determinant a^2 > 0), one point not
    # converged.
    b = np.linspace(0.5, 4.0, 5)
    a = np.linspace(0.2, 1.5, 4)
    B, A = np.meshgrid(b, a, indexing="ij")
    n_unstable = np.where(B > 1 + A**2, 2, 0)
    converged = np.ones_like(B, bool)
    converged[0, 0] = False
    stability = eqx.tree_at(
        lambda s: s._value,
        dynjax.Stability.stable_node,
        jnp.zeros(B.shape, int),
    )
    chart = dynjax.StabilityChart(
        parameter1=jnp.asarray(b),
        parameter2=jnp.asarray(a),
        states=jnp.zeros(B.shape + (2,)),
        eigenvalues=jnp.zeros(B.shape + (2,), complex),
        n_unstable=jnp.asarray(np.where(converged, n_unstable, -1)),
        stability=stability,
        converged=jnp.asarray(converged),
        is_map=False,
        result=RESULTS.not_converged,
    )
    ax = dynjax.plot.two_parameter_diagram(
        [fold, hopf], chart=chart, parameters=("b", "a")
    )
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("b", "a")
    (mesh,) = ax.collections
    values = mesh.get_array()
    # Drawn transposed (parameter1 on x), the unconverged point masked.
    shown = np.where(converged, n_unstable, -1).T
    np.testing.assert_array_equal(np.ma.getdata(values).reshape(4, 5), shown)
    assert np.ma.getmaskarray(values).reshape(4, 5)[0, 0]
    assert np.ma.getmaskarray(values).sum() == 1
    lines = ax.lines
    # The fold curve (solid) with exactly its points; then the cusp marker.
    assert lines[0].get_linestyle() == "-" and lines[0].get_label() == "fold"
    np.testing.assert_array_equal(lines[0].get_xydata(), np.c_[mu, lam])
    assert lines[1].get_label() == "cusp"
    np.testing.assert_array_equal(lines[1].get_xydata(), [[0.0, 0.0]])
    # The Hopf curve (dashed), its neutral-saddle part not drawn; the BT marker.
    assert lines[2].get_linestyle() == "--" and lines[2].get_label() == "Hopf"
    xy = lines[2].get_xydata()
    np.testing.assert_array_equal(np.isnan(xy[:, 1]), b2 > 0)
    np.testing.assert_array_equal(xy[b2 <= 0, 1], b2[b2 <= 0])
    assert lines[3].get_label() == "Bogdanov-Takens"
    assert [t.get_text() for t in ax.texts] == ["cusp", "Bogdanov-Takens"]
    # A point on two curves (Bogdanov-Takens on the fold and the Hopf curve of
    # its normal form) is named and listed once.
    ax = dynjax.plot.two_parameter_diagram([hopf, hopf])
    assert [t.get_text() for t in ax.texts] == ["Bogdanov-Takens"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["Hopf", "Bogdanov-Takens"]
    with pytest.raises(
        ValueError, match="`curves` must be a `dynjax.BifurcationCurve`"
    ):
        dynjax.plot.two_parameter_diagram(["fold"])
    with pytest.raises(ValueError, match="`chart` must be a `dynjax.StabilityChart`"):
        dynjax.plot.two_parameter_diagram(fold, chart=np.zeros((2, 2)))


def test_bifurcation_diagram_of_cycles():
    # Cycles of the Hopf normal form, r = sqrt(mu / beta) (beta = 1), sampled at
    # 9 phases: max and min of x over a cycle are +-r; stable for mu < 0.5 and
    # unstable after a (hand-placed) flip at mu = 0.5 between points 2 and 3.
    mu = np.array([0.1, 0.2, 0.4, 0.6, 0.8])
    r = np.sqrt(mu)
    theta = np.linspace(0.0, 2 * np.pi, 9)
    orbits = np.stack([np.c_[ri * np.cos(theta), ri * np.sin(theta)] for ri in r])
    n = len(mu)
    stable = mu < 0.5
    cycles = dynjax.CycleBranch(
        parameter=jnp.asarray(mu),
        period=jnp.full(n, 2 * np.pi),
        states=jnp.asarray(orbits[:, 0]),
        tangents=jnp.zeros((n, 4)),
        multipliers=jnp.zeros((n, 1), complex),
        monodromy=jnp.zeros((n, 2, 2)),
        stable=jnp.asarray(stable),
        n_unstable=jnp.asarray(np.where(stable, 0, 1)),
        amplitude=jnp.asarray(r),
        orbits=jnp.asarray(orbits),
        n_points=jnp.array(n),
        bifurcations=_bifurcations([3], [0.5], [[np.sqrt(0.5), 0.0]], index=[2]),
        bifurcation_period=jnp.array([2 * np.pi, np.nan, np.nan, np.nan]),
        result=RESULTS.successful,
    )
    ax = dynjax.plot.bifurcation_diagram(cycles, parameter="mu")
    lines = ax.lines
    # Max of x: solid over points 0..2, dashed over 3..4, joined at the flip
    # (drawn at the max of the cycle at the interval's first point).
    solid_max, dashed_max, solid_min, dashed_min, flip = lines
    assert solid_max.get_linestyle() == "-" and dashed_max.get_linestyle() == "--"
    np.testing.assert_allclose(solid_max.get_xydata()[:3], np.c_[mu[:3], r[:3]])
    np.testing.assert_allclose(dashed_max.get_xydata()[1:], np.c_[mu[3:], r[3:]])
    np.testing.assert_allclose(solid_min.get_xydata()[:3], np.c_[mu[:3], -r[:3]])
    np.testing.assert_allclose(dashed_min.get_xydata()[1:], np.c_[mu[3:], -r[3:]])
    assert flip.get_label() == "flip"
    np.testing.assert_allclose(flip.get_xydata(), [[0.5, r[2]]])
    assert [t.get_text() for t in ax.texts] == ["flip"]
