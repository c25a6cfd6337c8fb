"""Slow points of recurrent networks, task generators and their plot (float64).

References: the definitions of the tasks (Sussillo & Barak 2013: the flip-flop's
target is the sign of the last pulse), re-implemented as NumPy loops; fixed points
of maps solved by hand or by SciPy's `brentq`, with their Jacobians derived by hand
(`diag(1 - h^2) W` for `tanh(W h + b)`) and diagonalized by NumPy; PCA by NumPy's
symmetric eigensolver of the covariance matrix.
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np
import optax
import optimistix as optx
import pytest
import scipy.optimize

import dynjax
from dynjax import find_slow_points, sample_guesses
from dynjax.rnn import delayed_recall, flip_flop, LSTM, VanillaRNN


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- tasks --------------------------------------------------------------------------


def _last_pulse_numpy(inputs):
    out = np.zeros_like(inputs)
    for b, i in itertools.product(range(inputs.shape[0]), range(inputs.shape[2])):
        last = 0.0
        for t in range(inputs.shape[1]):
            if inputs[b, t, i] != 0:
                last = inputs[b, t, i]
            out[b, t, i] = last
    return out


def test_flip_flop_targets_are_the_sign_of_the_last_pulse():
    p = 0.1
    inputs, targets = flip_flop(jr.key(0), n_bits=3, n_steps=400, batch=24, p_flip=p)
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    assert inputs.shape == targets.shape == (24, 400, 3)
    assert inputs.dtype == np.float64
    assert set(np.unique(inputs)) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(targets, _last_pulse_numpy(inputs))
    # Every channel starts with a pulse (FixedPointFinder's FlipFlopData).
    assert np.all(inputs[:, 0] != 0)
    # Pulses at rate p (binomial, 5 standard deviations) with balanced signs.
    later = inputs[:, 1:]
    n = later.size
    assert abs(np.mean(later != 0) - p) < 5 * np.sqrt(p * (1 - p) / n)
    signs = later[later != 0]
    assert abs(np.mean(signs > 0) - 0.5) < 5 * np.sqrt(0.25 / signs.size)


def test_flip_flop_jit_vmap_and_key():
    keys = jr.split(jr.key(1), 3)
    make = jax.jit(lambda k: flip_flop(k, n_steps=50, batch=4))
    batched = jax.vmap(make)(keys)
    for i, k in enumerate(keys):
        eager = flip_flop(k, n_steps=50, batch=4)
        np.testing.assert_array_equal(batched[0][i], eager[0])
        np.testing.assert_array_equal(batched[1][i], eager[1])
    a, _ = flip_flop(keys[0], n_steps=50, batch=4)
    b, _ = flip_flop(keys[1], n_steps=50, batch=4)
    assert np.any(np.asarray(a) != np.asarray(b))


def test_delayed_recall_continuous_and_symbolic():
    delay, recall = 7, 3
    inputs, targets, mask = delayed_recall(
        jr.key(2), delay=delay, batch=200, recall_steps=recall
    )
    T = 1 + delay + recall
    assert inputs.shape == (200, T, 2) and targets.shape == (200, T, 1)
    inputs, targets, mask = (np.asarray(a) for a in (inputs, targets, mask))
    value = inputs[:, 0, 0]
    assert np.all(np.abs(value) <= 1) and value.std() > 0.4  # U(-1, 1): std 0.577
    # The stimulus only at step 0; the cue and the mask on the last `recall` steps.
    np.testing.assert_array_equal(inputs[:, 1:, 0], 0.0)
    cue = np.arange(T) > delay
    np.testing.assert_array_equal(inputs[:, :, 1], np.broadcast_to(cue, (200, T)))
    np.testing.assert_array_equal(mask, np.broadcast_to(cue, (200, T)))
    np.testing.assert_array_equal(targets[:, cue, 0], np.repeat(value[:, None], 3, 1))
    np.testing.assert_array_equal(targets[:, ~cue], 0.0)

    inputs, targets, mask = delayed_recall(jr.key(3), delay=4, batch=500, n_symbols=5)
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    symbol = np.argmax(inputs[:, 0, :5], axis=1)
    np.testing.assert_array_equal(inputs[:, 0, :5], np.eye(5)[symbol])
    np.testing.assert_array_equal(targets[:, 5], np.eye(5)[symbol])
    assert np.asarray(mask).sum() == 500
    # Uniform over the 5 symbols (each count within 5 standard deviations of 100).
    counts = np.bincount(symbol, minlength=5)
    assert np.all(np.abs(counts - 100) < 5 * np.sqrt(500 * 0.2 * 0.8))


def test_task_errors():
    with pytest.raises(ValueError, match="`n_steps` to be a Python int >= 1"):
        flip_flop(jr.key(0), n_steps=0, batch=2)
    with pytest.raises(ValueError, match=r"`p_flip` in \[0, 1\]"):
        flip_flop(jr.key(0), n_steps=5, batch=2, p_flip=1.5)
    with pytest.raises(ValueError, match="`delay` to be a Python int >= 0"):
        delayed_recall(jr.key(0), delay=-1, batch=2)
    with pytest.raises(ValueError, match="`n_symbols` to be a Python int >= 2"):
        delayed_recall(jr.key(0), delay=3, batch=2, n_symbols=1)


# --- maps with known fixed points ---------------------------------------------------


def _decoupled_tanh(w=2.0):
    """`h_i -> tanh(w h_i + u_i)`, three uncoupled units: at `u = 0` the fixed
    points are the 27 points with coordinates in `{-h*, 0, h*}`, `h* = tanh(w h*)`."""
    cell = VanillaRNN(3, 3, key=jr.key(0))
    return eqx.tree_at(lambda c: (c.W, c.U), cell, (w * jnp.eye(3), jnp.eye(3)))


def test_decoupled_tanh_cell_has_its_27_analytic_fixed_points():
    w = 2.0
    h_star = scipy.optimize.brentq(lambda h: np.tanh(w * h) - h, 0.5, 1.0, xtol=1e-15)
    guesses = jr.uniform(jr.key(1), (300, 3), minval=-1.2, maxval=1.2)
    sp = find_slow_points(_decoupled_tanh(w), jnp.zeros(3), guesses)
    assert int(sp.count) == 27
    assert int(sp.n_too_fast) == 0 and int(sp.n_outliers) == 0
    assert int(sp.n_duplicates) == 300 - 27
    found = np.asarray(sp.unique)
    expected = np.array(list(itertools.product([-h_star, 0.0, h_star], repeat=3)))
    # Each analytic point found exactly once.
    gap = np.max(np.abs(found[:, None] - expected[None]), axis=-1)
    assert np.all(gap.min(axis=1) < 1e-9)
    assert sorted(np.argmin(gap, axis=1)) == list(range(27))
    names = sp.stability_names
    for k, x in enumerate(found):
        # Hand-derived Jacobian: diag(w (1 - h_i^2)); w > 1 at 0, < 1 at +-h*.
        slopes = np.sort(w * (1 - x**2))[::-1]
        np.testing.assert_allclose(np.abs(sp.eigenvalues[k]), slopes, rtol=1e-10)
        n_zero = int(np.sum(np.abs(x) < 0.5))
        assert int(sp.n_unstable[k]) == n_zero
        assert names[k] == {0: "stable node", 3: "unstable node"}.get(n_zero, "saddle")
        assert bool(sp.is_stable[k]) == (n_zero == 0)
        q = 0.5 * np.sum((np.tanh(w * x) - x) ** 2)
        assert q <= 1e-12 and sp.q[k] <= 1e-12
    # Every guess ended at one of the kept rows.
    index = np.asarray(sp.index)
    assert np.all((0 <= index) & (index < 27))
    np.testing.assert_allclose(found[index], np.asarray(sp.optimized), atol=1e-3)
    np.testing.assert_array_equal(
        np.asarray(sp.points)[:27], np.asarray(sp.optimized)[sp.guess_index[:27]]
    )


def test_float32_state_under_x64_finds_the_analytic_points():
    w = 2.0
    h_star = scipy.optimize.brentq(lambda h: np.tanh(w * h) - h, 0.5, 1.0, xtol=1e-15)
    guesses = jr.uniform(jr.key(1), (300, 3), jnp.float32, minval=-1.2, maxval=1.2)
    with pytest.warns(UserWarning, match="computing in float32"):
        sp = find_slow_points(_decoupled_tanh(w), jnp.zeros(3, jnp.float32), guesses)
    assert sp.points.dtype == jnp.float32 and int(sp.count) == 27
    expected = np.array(list(itertools.product([-h_star, 0.0, h_star], repeat=3)))
    gap = np.max(np.abs(np.asarray(sp.unique)[:, None] - expected[None]), axis=-1)
    assert sorted(np.argmin(gap, axis=1)) == list(range(27))
    assert np.all(gap.min(axis=1) < 1e-5)
    # optimistix's trust region starts in float64 under x64: a clear error.
    with pytest.raises(ValueError, match="cannot run on a float32 state"):
        find_slow_points(
            _decoupled_tanh(w),
            jnp.zeros(3, jnp.float32),
            guesses,
            solver=optx.LevenbergMarquardt(rtol=1e-5, atol=1e-5),
        )


def _linear_cell():
    """`h -> A h + B u + c` with `A = S M S^-1`, eigenvalues 1.5 and 0.6 +- 0.3i."""
    rng = np.random.default_rng(0)
    M = np.array([[1.5, 0.0, 0.0], [0.0, 0.6, -0.3], [0.0, 0.3, 0.6]])
    S = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    params = dict(
        A=S @ M @ np.linalg.inv(S), B=rng.normal(size=(3, 2)), c=rng.normal(size=3)
    )
    cell = dynjax.DrivenMap(
        lambda h, u, p: p["A"] @ h + p["B"] @ u + p["c"], params, d=3
    )
    return cell, params


@pytest.mark.parametrize("solver", [None, optx.BFGS(rtol=1e-12, atol=1e-12)])
def test_linear_map_fixed_point_and_eigenvalues(solver):
    cell, p = _linear_cell()
    u = np.array([0.7, -1.2])
    h_star = np.linalg.solve(np.eye(3) - p["A"], p["B"] @ u + p["c"])
    guesses = 3.0 * jr.normal(jr.key(2), (50, 3))
    sp = find_slow_points(cell, jnp.asarray(u), guesses, solver=solver)
    assert int(sp.count) == 1 and int(sp.n_duplicates) == 49
    np.testing.assert_array_equal(sp.index, 0)
    np.testing.assert_allclose(sp.points[0], h_star, atol=1e-9)
    expected = np.linalg.eigvals(p["A"])
    expected = expected[np.argsort(-np.abs(expected))]
    np.testing.assert_allclose(np.abs(sp.eigenvalues[0]), np.abs(expected), rtol=1e-10)
    np.testing.assert_allclose(
        np.sort_complex(np.asarray(sp.eigenvalues[0])),
        np.sort_complex(expected),
        atol=1e-10,
    )
    np.testing.assert_allclose(sp.jacobians[0], p["A"], atol=1e-12)
    assert sp.stability_names == ["saddle-focus"]
    assert int(sp.n_unstable[0]) == 1 and not bool(sp.is_stable[0])


def test_linear_map_under_jit_matches_eager():
    cell, _ = _linear_cell()
    u = jnp.array([0.7, -1.2])
    guesses = 3.0 * jr.normal(jr.key(3), (20, 3))
    eager = find_slow_points(cell, u, guesses)
    jitted = eqx.filter_jit(lambda g: find_slow_points(cell, u, g))(guesses)
    np.testing.assert_allclose(jitted.points, eager.points, atol=1e-12)
    assert int(jitted.count) == int(eager.count) == 1


def _quadratic_map(delta, c=1.0):
    """`h -> h + c h (h - delta)`: fixed points 0 (slope `1 - c delta`) and `delta`
    (slope `1 + c delta`)."""
    return dynjax.DrivenMap(lambda h, u, p: h + p * h * (h - delta), c, d=1)


def test_dedup_tol_merges_or_separates_two_close_fixed_points():
    delta = 0.01
    cell = _quadratic_map(delta)
    guesses = jnp.linspace(-0.2, 0.2, 41)[:, None]
    apart = find_slow_points(cell, jnp.zeros(1), guesses, dedup_tol=1e-3)
    assert int(apart.count) == 2
    order = np.argsort(np.asarray(apart.unique)[:, 0])
    np.testing.assert_allclose(apart.unique[order, 0], [0.0, delta], atol=1e-10)
    slopes = np.real(np.asarray(apart.eigenvalues)[:2, 0])[order]
    np.testing.assert_allclose(slopes, [1 - delta, 1 + delta], rtol=1e-10)
    assert [apart.stability_names[i] for i in order] == ["stable node", "unstable node"]
    merged = find_slow_points(cell, jnp.zeros(1), guesses, dedup_tol=0.05)
    assert int(merged.count) == 1
    n_slow = 41 - int(merged.n_too_fast)
    assert int(merged.n_duplicates) == n_slow - 1 == int(apart.n_duplicates) + 1


def test_outliers_far_from_the_guesses_are_dropped():
    # Fixed points 0 and 1000; one guess is near 1000, fifty near 0.
    cell = _quadratic_map(1000.0, c=1e-3)
    guesses = jnp.concatenate([jr.normal(jr.key(4), (50, 1)), jnp.array([[900.0]])])
    g = np.asarray(guesses)
    centroid = g.mean(axis=0)
    spread = np.mean(np.linalg.norm(g - centroid, axis=1))
    assert np.linalg.norm(1000.0 - centroid) > 10 * spread  # FixedPointFinder's rule
    assert np.linalg.norm(0.0 - centroid) < 10 * spread
    sp = find_slow_points(cell, jnp.zeros(1), guesses)
    assert int(sp.count) == 1 and int(sp.n_outliers) == 1
    assert int(sp.n_duplicates) == 49
    np.testing.assert_allclose(sp.unique, [[0.0]], atol=1e-10)
    assert int(sp.index[-1]) == -1
    kept = find_slow_points(cell, jnp.zeros(1), guesses, outlier_scale=None)
    np.testing.assert_allclose(np.sort(kept.unique[:, 0]), [0.0, 1000.0], atol=1e-8)
    # Every slow point an outlier: nothing kept, and the error says why.
    near = 999.0 + 1e-3 * jr.normal(jr.key(5), (51, 1))  # (one compilation)
    with pytest.raises(eqx.EquinoxRuntimeError, match="outlier_scale"):
        find_slow_points(cell, jnp.zeros(1), near)


def test_no_fixed_point_is_reported():
    # h -> h + 1 moves both coordinates by 1: q = (1 + 1) / 2 = 1 everywhere.
    cell = dynjax.DrivenMap(lambda h, u, p: h + 1.0, d=2)
    guesses = jr.normal(jr.key(6), (8, 2))
    sp = find_slow_points(cell, jnp.zeros(1), guesses, throw=False)
    assert sp.result != dynjax.RESULTS.successful
    assert int(sp.count) == 0 and int(sp.n_too_fast) == 8
    np.testing.assert_allclose(sp.optimized_q, 1.0, rtol=1e-12)
    with pytest.raises(eqx.EquinoxRuntimeError, match="smallest q was 1,"):
        find_slow_points(cell, jnp.zeros(1), guesses)
    # Slow points are kept once `tol` admits them.
    slow = find_slow_points(cell, jnp.zeros(1), guesses, tol=1.5)
    assert int(slow.count) >= 1


def test_bad_input_errors():
    cell = _decoupled_tanh()
    u = jnp.zeros(3)
    with pytest.raises(ValueError, match="4 features but the cell's state has d=3"):
        find_slow_points(cell, u, jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"2 hidden_size: concat\(h, c\)"):
        find_slow_points(LSTM(4, 3, key=jr.key(0)), u, jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"`guesses` must have shape \(n, d\)"):
        find_slow_points(cell, u, jnp.zeros(3))
    with pytest.raises(
        ValueError, match=r"`u` must be one step's input, of shape \(3,\)"
    ):
        find_slow_points(cell, jnp.zeros(2), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"of shape \(3,\).*got shape \(10, 3\)"):
        find_slow_points(cell, jnp.zeros((10, 3)), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="constant input `u`"):
        find_slow_points(cell, None, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="takes a driven map"):
        find_slow_points(dynjax.systems.Lorenz(), u, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        find_slow_points(cell, u, jnp.full((5, 3), jnp.nan))
    with pytest.raises(ValueError, match="`tol` must be positive"):
        find_slow_points(cell, u, jnp.zeros((5, 3)), tol=0.0)


def test_sample_guesses_draws_visited_states_with_gaussian_noise():
    # Rows far apart, so that each guess's source row is identifiable.
    states = 100.0 * jnp.arange(60.0)[:, None] * jnp.ones((1, 4))
    states = states.reshape(3, 20, 4)  # (batch, T, d)
    exact = np.asarray(sample_guesses(states, 60, jr.key(7)))
    rows = np.round(exact[:, 0] / 100.0).astype(int)
    np.testing.assert_array_equal(exact, 100.0 * rows[:, None] * np.ones((1, 4)))
    assert sorted(rows) == list(range(60))  # without replacement when n <= 60
    sigma = 0.3
    noisy = np.asarray(sample_guesses(states, 2000, jr.key(8), noise=sigma))
    source = 100.0 * np.round(noisy[:, :1] / 100.0)
    eps = (noisy - source).ravel()
    # The sample std of 8000 N(0, sigma^2) draws: within 5 standard errors.
    assert abs(eps.std() - sigma) < 5 * sigma / np.sqrt(2 * eps.size)
    assert abs(eps.mean()) < 5 * sigma / np.sqrt(eps.size)
    traj = dynjax.trajectory(_decoupled_tanh(), jnp.zeros(3), inputs=jnp.ones((5, 3)))
    from_traj = np.asarray(sample_guesses(traj, 6, jr.key(9)))
    assert all(np.any(np.all(g == np.asarray(traj.xs), axis=1)) for g in from_traj)
    with pytest.raises(ValueError, match="`noise` must be >= 0"):
        sample_guesses(states, 5, jr.key(0), noise=-1.0)
    with pytest.raises(ValueError, match="`n` must be a positive Python int"):
        sample_guesses(states, 0, jr.key(0))
    with pytest.raises(ValueError, match=r"`states` must have shape \(..., d\)"):
        sample_guesses(jnp.zeros(5), 2, jr.key(0))


# --- a trained 3-bit flip-flop --------------------------------------------------------


def _train_flip_flop(seed, hidden=16, n_steps=1500, learning_rate=1e-2):
    def loss(cell, _, key):
        us, ys = flip_flop(key, n_steps=64, batch=32, p_flip=0.1)
        return jnp.mean((jax.vmap(cell.predict)(us) - ys) ** 2)

    cell = VanillaRNN(hidden, 3, output_size=3, key=jr.key(seed))
    fitted = dynjax.fit(
        loss,
        cell,
        optax.adam(learning_rate),
        n_steps=n_steps,
        key=jr.key(100 + seed),
        progress=False,
        chunk_size=500,
    )
    return fitted.model, float(np.mean(fitted.losses[-100:]))


def _check_flip_flop(cell, key):
    W, b = np.asarray(cell.W), np.asarray(cell.b)
    W_out, b_out = np.asarray(cell.readout.weight), np.asarray(cell.readout.bias)
    us, _ = flip_flop(key, n_steps=200, batch=16, p_flip=0.05)
    xs = jax.vmap(lambda u: dynjax.trajectory(cell, jnp.zeros(cell.d), inputs=u).xs)(us)
    guesses = sample_guesses(xs, 512, jr.fold_in(key, 1), noise=0.5)
    sp = find_slow_points(cell, jnp.zeros(3), guesses)
    points = np.asarray(sp.unique)

    def step(h):  # the network at zero input, in NumPy
        return np.tanh(h @ W.T + b)

    n_unstable = []
    for k, h in enumerate(points):
        assert 0.5 * np.sum((step(h) - h) ** 2) <= 1e-12
        # Hand-derived Jacobian of tanh(W h + b) at a fixed point h = tanh(a).
        lam = np.linalg.eigvals((1 - h**2)[:, None] * W)
        lam = lam[np.argsort(-np.abs(lam))]
        np.testing.assert_allclose(np.abs(sp.eigenvalues[k]), np.abs(lam), atol=1e-9)
        n_unstable.append(int(np.sum(np.abs(lam) > 1)))
        assert int(sp.n_unstable[k]) == n_unstable[-1]
    n_unstable = np.array(n_unstable)
    stable = points[n_unstable == 0]
    np.testing.assert_array_equal(
        np.asarray(sp.is_stable)[: len(points)], n_unstable == 0
    )
    # 8 attractors, one per memory: the readouts are the 8 sign patterns.
    readouts = stable @ W_out.T + b_out
    assert len(stable) == 8
    assert np.all(np.abs(np.abs(readouts) - 1) < 0.15)
    assert {tuple(s) for s in np.sign(readouts).astype(int)} == set(
        itertools.product([-1, 1], repeat=3)
    )
    # Saddles with one unstable direction sit between two attractors that differ in
    # one bit: leaving along it either way ends at those two (Sussillo & Barak
    # 2013, Fig. 2).
    saddles = np.flatnonzero(n_unstable == 1)
    assert len(saddles) >= 6  # (12, the edges of the cube, for seeds 0 to 4)
    for k in saddles:
        v = np.real(np.asarray(sp.eigenvectors[k])[:, 0])
        ends = []
        for sign in (1, -1):
            h = points[k] + sign * 1e-3 * v / np.linalg.norm(v)
            for _ in range(400):
                h = step(h)
            ends.append(np.sign(h @ W_out.T + b_out))
        assert np.sum(ends[0] != ends[1]) == 1
    return sp, xs


@pytest.mark.slow
def test_trained_flip_flop_has_8_attractors_and_saddles_between_them():
    cell, final_loss = _train_flip_flop(seed=0)
    assert final_loss < 1e-3
    sp, xs = _check_flip_flop(cell, jr.key(7))
    ax = dynjax.plot.slow_points(sp, xs, components=(0, 1, 2))
    assert ax.name == "3d"


# --- the plot -----------------------------------------------------------------------


def test_plot_slow_points_projects_onto_principal_components():
    cell = _decoupled_tanh()
    sp = find_slow_points(
        cell, jnp.zeros(3), jr.uniform(jr.key(1), (300, 3), minval=-1.2, maxval=1.2)
    )
    scale = jnp.array([1.0, 0.5, 0.2])  # unequal variances: well-separated PCs
    us = scale * jr.normal(jr.key(10), (4, 60, 3))
    xs = np.asarray(
        jax.vmap(lambda u: dynjax.trajectory(cell, jnp.zeros(3), inputs=u).xs)(us)
    )
    ax = dynjax.plot.slow_points(sp, xs)
    # Reference PCA: eigenvectors of the covariance matrix (up to their signs).
    flat = xs.reshape(-1, 3)
    mean = flat.mean(axis=0)
    var, vecs = np.linalg.eigh(np.cov(flat.T, bias=True))
    var, vecs = var[::-1], vecs[:, ::-1]
    projected = (np.asarray(sp.unique) - mean) @ vecs[:, :2]
    marks = [ln for ln in ax.get_lines() if ln.get_marker() not in ("None", None, "")]
    assert len(marks) == 27
    drawn = np.array([[ln.get_xdata()[0], ln.get_ydata()[0]] for ln in marks])
    for j in range(2):
        sign = np.sign(drawn[0, j] * projected[0, j]) or 1.0
        np.testing.assert_allclose(drawn[:, j], sign * projected[:, j], atol=1e-9)
    # Stable points filled circles, saddles crosses, the origin a hollow circle.
    for ln, name in zip(marks, sp.stability_names):
        expected = {"stable node": "o", "saddle": "X", "unstable node": "o"}[name]
        assert ln.get_marker() == expected
        assert (ln.get_markerfacecolor() == "white") == (name == "unstable node")
    # One red segment per unstable direction: 12 * 1 + 6 * 2 + 1 * 3.
    red = [
        ln for ln in ax.get_lines() if ln.get_color() == "tab:red" and ln not in marks
    ]
    assert len(red) == 27
    fraction = 100 * var / var.sum()
    assert ax.get_xlabel() == f"PC1 ({fraction[0]:.0f}% var.)"
    assert ax.get_ylabel() == f"PC2 ({fraction[1]:.0f}% var.)"
    with pytest.raises(ValueError, match="`components` must be 2 or 3 distinct"):
        dynjax.plot.slow_points(sp, xs, components=(0, 0))
    with pytest.raises(ValueError, match=r"`states` must have shape \(T, 3\)"):
        dynjax.plot.slow_points(sp, xs[..., :2])
