"""Lyapunov functions: checking candidates and learning a certified one.

References: the seed system x' = y - x^3, y' = -x with V = x^2 + y^2 has
dV/dt = -2 x^4 by hand; for V = x^2 + 2 y^2, dV/dt = -2 x y - 2 x^4 by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax


def _grid(n, lim=2.0):
    ax = np.linspace(-lim, lim, n)
    X, Y = np.meshgrid(ax, ax, indexing="ij")
    return np.stack([X.ravel(), Y.ravel()], axis=1)


SEED = dynjax.Flow(lambda t, x, p: jnp.stack([x[1] - x[0] ** 3, -x[0]]), d=2)


def test_seed_certified_and_exact_lie_derivative():
    pts = _grid(41)
    chk = dynjax.check_lyapunov_function(SEED, lambda x: x @ x, jnp.zeros(2), pts)
    assert bool(chk.is_lyapunov) and bool(chk.positive) and bool(chk.decreasing)
    np.testing.assert_allclose(chk.derivatives, -2 * pts[:, 0] ** 4, atol=1e-12)
    np.testing.assert_allclose(chk.values, np.sum(pts**2, axis=1), atol=1e-12)
    # dV/dt = 0 on the whole y-axis: not strictly decreasing (LaSalle needed).
    strict = dynjax.check_lyapunov_function(
        SEED, lambda x: x @ x, jnp.zeros(2), pts, strict=True
    )
    assert not bool(strict.is_lyapunov)
    assert float(strict.argmax_dv[0]) == 0.0 and float(strict.max_dv) == 0.0


def test_wrong_candidates_rejected_with_violating_point():
    pts = _grid(41)

    def V(x):
        return x[0] ** 2 + 2 * x[1] ** 2

    chk = dynjax.check_lyapunov_function(SEED, V, jnp.zeros(2), pts)
    assert not bool(chk.is_lyapunov) and bool(chk.positive) and not bool(chk.decreasing)
    by_hand = -2 * pts[:, 0] * pts[:, 1] - 2 * pts[:, 0] ** 4
    x, y = np.asarray(chk.argmax_dv)
    np.testing.assert_allclose(float(chk.max_dv), by_hand.max(), rtol=1e-12)
    np.testing.assert_allclose(-2 * x * y - 2 * x**4, by_hand.max(), rtol=1e-12)
    assert by_hand.max() > 0
    # Not positive definite: V = x^2 vanishes on the y-axis.
    chk = dynjax.check_lyapunov_function(SEED, lambda x: x[0] ** 2, jnp.zeros(2), pts)
    assert not bool(chk.positive) and float(chk.min_v) == 0.0
    assert float(chk.argmin_v[0]) == 0.0 and float(chk.argmin_v[1]) != 0.0
    # V(x*) != 0
    chk = dynjax.check_lyapunov_function(SEED, lambda x: x @ x + 1.0, jnp.zeros(2), pts)
    assert not bool(chk.is_lyapunov) and float(chk.v_star) == 1.0


def test_map_lyapunov_difference():
    A = np.array([[0.5, 0.2], [0.0, 0.4]])
    lin = dynjax.systems.LinearMap(A)
    pts = _grid(21)
    chk = dynjax.check_lyapunov_function(
        lin, lambda x: x @ x, jnp.zeros(2), pts, strict=True
    )
    by_hand = np.sum((pts @ A.T) ** 2, axis=1) - np.sum(pts**2, axis=1)
    np.testing.assert_allclose(chk.derivatives, by_hand, atol=1e-12)
    assert bool(chk.is_lyapunov)  # ||A|| < 1


def test_check_errors():
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        dynjax.check_lyapunov_function(
            SEED, lambda x: x @ x, jnp.zeros(2), jnp.zeros(2)
        )
    with pytest.raises(ValueError, match="dimension"):
        dynjax.check_lyapunov_function(
            SEED, lambda x: x @ x, jnp.zeros(3), jnp.zeros((4, 3))
        )
    driven = dynjax.DrivenMap(lambda x, u, p: x + u, d=2)
    with pytest.raises(ValueError, match="autonomous"):
        dynjax.check_lyapunov_function(driven, lambda x: x @ x, jnp.zeros(2), _grid(3))
    with pytest.raises(ValueError, match="x_star` inside"):
        dynjax.learn_lyapunov_function(
            SEED,
            jnp.array([5.0, 0.0]),
            (-jnp.ones(2), jnp.ones(2)),
            key=jax.random.key(0),
        )


def test_learn_lyapunov_damped_pendulum():
    b = 0.5
    pend = dynjax.Flow(
        lambda t, x, b: jnp.stack([x[1], -jnp.sin(x[0]) - b * x[1]]), b, d=2
    )
    lim = 3.0
    region = (-lim * jnp.ones(2), lim * jnp.ones(2))
    learned = dynjax.learn_lyapunov_function(
        pend,
        jnp.zeros(2),
        region,
        key=jax.random.key(0),
        width=16,
        steps=600,
        n_train=512,
        grid_size=151,
    )
    assert bool(learned.certified)
    assert float(learned.losses[-100:].mean()) < float(learned.losses[:10].mean())
    # Fresh, finer, shifted grid: inside {V < c} the Lie derivative, computed
    # here by hand from the pendulum equations and V's gradient, is negative.
    n = 307
    ax = np.linspace(-lim, lim, n) + 0.37 * (2 * lim / (n - 1))
    X, Y = np.meshgrid(ax, ax, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    pts = pts[np.all(np.abs(pts) <= lim, axis=1)]
    V = jax.vmap(learned.V)(pts)
    inside = np.asarray(V < learned.level)
    grads = np.asarray(jax.vmap(jax.grad(learned.V))(pts))
    f = np.stack([pts[:, 1], -np.sin(pts[:, 0]) - b * pts[:, 1]], axis=1)
    vdot = np.sum(grads * f, axis=1)
    r = np.linalg.norm(pts, axis=1)
    assert np.all(vdot[inside & (r > 0.05)] < 0)
    # V is positive definite, and the certified set is a sizeable neighbourhood,
    # well inside the box.
    assert np.all(np.asarray(V)[r > 1e-9] > 0)
    assert abs(float(learned.V(jnp.zeros(2)))) < 1e-14
    assert np.min(r[~inside]) > 0.5
    assert not np.any(inside & (np.max(np.abs(pts), axis=1) > lim - 1e-9))
    # The certified sublevel set is forward invariant: a trajectory started at its
    # edge stays inside and converges to the bottom.
    x0 = pts[inside][np.argmax(V[inside])]
    traj = dynjax.trajectory(pend, x0, t1=30.0, n_save=301)
    assert np.all(
        np.asarray(jax.vmap(learned.V)(traj.xs)) < float(learned.level) + 1e-9
    )
    assert np.linalg.norm(traj.xs[-1]) < 1e-3
