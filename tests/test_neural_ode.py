"""Neural ODEs (`dynjax.NeuralODE`, `dynjax.fit_trajectories`) against independent
references: finite differences, SciPy integrations, matrix exponentials, the
eigenvalues of the generating linear system, and Dupont et al. (2019)'s
augmentation argument. float64 throughout (tests/conftest.py)."""

import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.linalg
from jax.flatten_util import ravel_pytree

import dynjax
from dynjax._neural._ode import initial_step


# --- the model and its solve ---------------------------------------------------


def _tight(adjoint):
    return dict(
        solver=dfx.Tsit5(),
        stepsize_controller=dfx.PIDController(rtol=1e-12, atol=1e-12),
        adjoint=adjoint,
        max_steps=100_000,
    )


def test_solve_matches_scipy_one_state_and_a_batch():
    # The same learned field integrated by SciPy's DOP853 (another integrator),
    # by __call__ on one state and on a batch (one ODE on
    # a (3, d) state, shared steps), and by dynjax.trajectory (the model is a
    # flow on z = lift(x)).
    model = dynjax.NeuralODE(
        2, width=8, depth=2, time_input=True, augment=1, key=jax.random.key(3)
    )
    assert model.func.mlp.in_size == 4  # (t, x0, x1, a)
    assert model.func.mlp.out_size == 3
    ts = np.linspace(0.5, 2.5, 9)
    x0s = np.array([[0.3, -0.8], [1.5, 0.2], [-0.7, -0.1]])
    # SciPy integrates the three lifted states stacked into one 9-D system.
    field = jax.jit(jax.vmap(model.vector_field, in_axes=(None, 0)))
    reference = scipy.integrate.solve_ivp(
        lambda t, z: np.asarray(field(t, z.reshape(3, 3))).ravel(),
        (ts[0], ts[-1]),
        np.concatenate([x0s, np.zeros((3, 1))], axis=1).ravel(),
        method="DOP853",
        t_eval=ts,
        rtol=1e-12,
        atol=1e-12,
    ).y.T.reshape(9, 3, 3)
    reference = np.swapaxes(reference, 0, 1)  # (state, time, z)
    controller = dfx.PIDController(rtol=1e-10, atol=1e-12)
    xs = model(ts, x0s[0], stepsize_controller=controller)
    assert xs.shape == (9, 2) and xs.dtype == jnp.float64
    np.testing.assert_allclose(xs, reference[0, :, :2], rtol=1e-8, atol=1e-10)
    batch = model(ts, x0s, stepsize_controller=controller)
    assert batch.shape == (3, 9, 2) and batch.dtype == jnp.float64
    np.testing.assert_allclose(batch, reference[:, :, :2], rtol=1e-8, atol=1e-10)
    sol = dynjax.trajectory(model, model.lift(x0s[0]), t0=ts[0], ts=ts)
    assert sol.xs.shape == (9, 3)
    np.testing.assert_allclose(sol.xs, reference[0], rtol=1e-7, atol=1e-9)
    # Constant steps: the batch and each state alone take the same steps, so they
    # agree up to the rounding of a matrix product against a matrix-vector one.
    constant = dict(solver=dfx.Euler(), stepsize_controller=dfx.ConstantStepSize())
    batch = model(ts, x0s, dt0=0.05, **constant)
    for i, x0 in enumerate(x0s):
        one = model(ts, x0, dt0=0.05, **constant)
        np.testing.assert_allclose(batch[i], one, rtol=1e-14, atol=1e-15)


def test_augmented_rotation_maps_x_to_minus_x():
    # Dupont et al. (2019): dx/dt = -pi a, da/dt = pi x rotates (x, 0) by pi in
    # time 1, so the read-out of the time-1 map is exactly -x.
    model = dynjax.NeuralODE(
        1, func=lambda t, z: jnp.pi * jnp.stack([-z[1], z[0]]), augment=1
    )
    assert model.d == 2
    np.testing.assert_array_equal(model.lift(jnp.array([0.7])), [0.7, 0.0])
    for x in (-0.9, 0.2, 1.0):
        xs = model(jnp.array([0.0, 1.0]), jnp.array([x]), **_tight(None))
        assert xs.shape == (2, 1)
        np.testing.assert_allclose(xs[1], [-x], rtol=1e-9, atol=1e-10)


# --- acceptance 1: gradients ---------------------------------------------------


def test_gradients_match_finite_differences_for_both_adjoints():
    # The loss of a batch solved as one ODE (shared steps), for both adjoints,
    # against central differences; and against the same loss from per-sample
    # (vmapped) solves, which differs only within the solver's tolerance.
    model = dynjax.NeuralODE(2, width=6, depth=1, key=jax.random.key(0))
    ts = jnp.linspace(0.0, 1.5, 4)
    x0 = jnp.array([[0.6, -0.4], [-0.3, 0.9], [1.2, 0.1]])
    target = jnp.array([[0.2, 0.3], [-0.1, 0.5], [0.4, 0.1]])
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def loss(flat_params, adjoint, batched=True):
        m = eqx.combine(unravel(flat_params), static)
        if batched:
            xs = m(ts, x0, **_tight(adjoint))
        else:
            xs = jax.vmap(lambda x: m(ts, x, **_tight(adjoint)))(x0)
        assert xs.shape == (3, 4, 2)
        return jnp.sum((xs[:, 1:] - target[:, None]) ** 2)

    rc = jax.jit(
        jax.value_and_grad(lambda p: loss(p, dfx.RecursiveCheckpointAdjoint()))
    )
    bs = jax.jit(jax.grad(lambda p: loss(p, dfx.BacksolveAdjoint())))
    per_sample = jax.jit(
        jax.grad(lambda p: loss(p, dfx.RecursiveCheckpointAdjoint(), False))
    )
    g_rc, g_bs = rc(flat)[1], bs(flat)

    # Central differences in every parameter (the values from the same compiled
    # function).
    h = 1e-5
    eye = h * np.eye(flat.size)
    fd = np.array([(rc(flat + e)[0] - rc(flat - e)[0]) / (2 * h) for e in eye])
    assert np.max(np.abs(fd)) > 1e-2  # a gradient worth comparing
    atol = 1e-6 * np.max(np.abs(fd))
    np.testing.assert_allclose(g_rc, fd, rtol=1e-4, atol=atol)
    np.testing.assert_allclose(g_bs, fd, rtol=1e-4, atol=atol)
    np.testing.assert_allclose(g_bs, g_rc, rtol=1e-5, atol=1e-3 * atol)
    np.testing.assert_allclose(per_sample(flat), g_rc, rtol=1e-8, atol=1e-3 * atol)


def test_initial_step_is_the_controllers_choice():
    # diffrax 0.7.2's diffeqsolve(dt0=None) starts at 0.01 (it hands the
    # controller a WrapTerm); NeuralODE starts where PIDController.init, given the
    # ODETerm, puts the first step (Hairer, Norsett and Wanner, Section II.4),
    # which saves a step on the benchmark's MLP field (3 steps instead of 4 in its
    # float32 setting; here float64 at rtol = atol = 1e-3: 2 instead of 3, the
    # same for other seeds of the MLP).
    model = dynjax.NeuralODE(2, width=64, depth=2, key=jax.random.key(0))
    x0 = jax.random.normal(jax.random.key(1), (64, 2))
    ts = jnp.linspace(0.0, 1.0, 10)
    solver = dfx.Dopri5()
    controller = dfx.PIDController(rtol=1e-3, atol=1e-3)

    def f(t, y, args):
        return jax.vmap(model.func, in_axes=(None, 0))(t, y)

    term = dfx.ODETerm(f)
    order = solver.error_order(term)
    t_next, _ = controller.init(term, 0.0, 1.0, x0, None, None, solver.func, order)
    dt0 = float(t_next)
    assert 0.05 < dt0 < 1.0  # not diffeqsolve's 0.01
    ours = initial_step(term, solver, controller, ts[0], ts[-1], x0, None)
    np.testing.assert_allclose(ours, dt0, rtol=1e-12)
    clipped = dfx.PIDController(rtol=1e-3, atol=1e-3, step_ts=ts)
    assert initial_step(term, solver, clipped, ts[0], ts[-1], x0, None) == ours
    constant = dfx.ConstantStepSize()
    assert initial_step(term, solver, constant, 0.0, 1.0, x0, None) is None

    def solve(dt0):
        return dfx.diffeqsolve(
            term,
            solver,
            0.0,
            1.0,
            dt0,
            x0,
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=controller,
        )

    default, hairer = solve(None), solve(dt0)
    assert int(hairer.stats["num_steps"]) < int(default.stats["num_steps"])
    # NeuralODE's solve is the one that starts with the controller's step.
    xs = model(ts, x0, solver=solver, stepsize_controller=controller)
    np.testing.assert_allclose(xs, jnp.swapaxes(hairer.ys, 0, 1), rtol=1e-13)
    assert not np.allclose(xs, jnp.swapaxes(default.ys, 0, 1), rtol=1e-13, atol=0)


# --- fitting ---------------------------------------------------------------------

SPIRAL = np.array([[-0.1, -1.0], [1.0, -0.1]])


@pytest.fixture(scope="module")
def spiral_fit():
    # Noisy samples of x' = A x: exact solutions expm(t A) x0 plus N(0, 0.01^2).
    rng = np.random.default_rng(0)
    ts = np.linspace(0.0, 10.0, 41)
    r = rng.uniform(0.3, 2.0, 32)
    theta = rng.uniform(0.0, 2 * np.pi, 32)
    x0 = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    ys = np.stack([[scipy.linalg.expm(t * SPIRAL) @ x for t in ts] for x in x0])
    ys = ys + 0.01 * rng.standard_normal(ys.shape)
    model = dynjax.NeuralODE(2, width=16, depth=1, key=jax.random.key(0))
    out = dynjax.fit_trajectories(
        model,
        ts,
        ys,
        optax.adam(1e-2),
        n_steps=200,
        batch_size=16,
        key=jax.random.key(1),
        progress=False,
    )
    return out


@pytest.mark.slow
def test_fit_recovers_linear_spiral_eigenvalues(spiral_fit):
    out = spiral_fit
    assert out.result == dynjax.RESULTS.successful and out.stopped_at == -1
    assert out.losses.shape == (200,) and out.n_steps == 200
    # Fitted down to the noise level (variance 1e-4) from its initial misfit.
    assert out.losses[-20:].mean() < 3e-4 < out.losses[0]
    eq = dynjax.find_equilibria(out.model, jnp.zeros((1, 2)) + 0.05)
    assert int(eq.count) == 1
    x_star = eq.unique[0]
    assert np.linalg.norm(x_star) < 0.05  # the true equilibrium is the origin
    lin = dynjax.linearize(out.model, x_star)
    assert lin.stability_name == "stable focus"
    learned = np.sort_complex(np.asarray(lin.eigenvalues))
    true = np.sort_complex(np.linalg.eigvals(SPIRAL))  # -0.1 -+ 1i
    np.testing.assert_array_less(np.abs(learned - true), 0.05 * np.abs(true))
    # and the decay rate itself, not only the modulus, within 5 %:
    np.testing.assert_allclose(learned.real, true.real, rtol=0.05)


@pytest.mark.slow
def test_augmentation_represents_x_to_minus_x():
    # Time-1 map x -> -x on [-1, 1]. A 1-D flow map is increasing, so its least
    # squares error is at least that of the best increasing fit, the constant
    # 0: E[x^2] = 1/3 (Dupont et al. 2019). One zero coordinate more suffices.
    x = np.linspace(-1.0, 1.0, 64)[:, None]
    ys = np.stack([x, -x], axis=1)
    ts = np.array([0.0, 1.0])
    optimizer = optax.adam(1e-2)
    final = {}
    for augment in (0, 1):
        model = dynjax.NeuralODE(
            1, width=16, depth=1, augment=augment, key=jax.random.key(0)
        )
        out = dynjax.fit_trajectories(
            model,
            ts,
            ys,
            optimizer,
            n_steps=200,
            key=jax.random.key(1),
            curriculum=None,
            stepsize_controller=dfx.ConstantStepSize(),
            dt0=0.1,
            progress=False,
        )
        assert out.n_steps == 200
        final[augment] = out
    assert np.min(final[0].losses) > 0.1
    assert final[1].losses[-1] < 1e-3
    # The loss is the MSE at t = 1: check it on the returned model.
    pred = jax.vmap(
        lambda x0: final[1].model(
            ts, x0, dt0=0.1, stepsize_controller=dfx.ConstantStepSize()
        )
    )(x)
    assert np.mean((pred[:, 1] + x) ** 2) < 1e-3


class _Shrink(eqx.Module):
    """dx/dt = -sqrt(1 - c) x: NaN once c > 1."""

    c: jax.Array

    def __call__(self, t, x):
        return -jnp.sqrt(1.0 - self.c) * x


def _add_constant(step):
    # An optimizer that ignores the gradient and adds `step` to every parameter,
    # so the parameter at step k is known in advance: c_k = c_0 + k step.
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda grads, state, params=None: (
            jax.tree.map(lambda g: jnp.full_like(g, step), grads),
            state,
        ),
    )


def test_curriculum_and_nan_stop_at_a_known_step():
    # c_k = 0.05 + 0.1 k exceeds 1 at k = 10: the loss of step 10 is NaN. The
    # curriculum (fraction 0.5 of 5 times = 3 points, share 0.25 of 20 steps = 5
    # steps) puts the stop in the second stage.
    ts = np.linspace(0.0, 1.0, 5)
    x0 = np.array([[1.0], [-0.5], [2.0]])
    ys = x0[:, None, :] * np.exp(-ts)[None, :, None]
    model = dynjax.NeuralODE(1, func=_Shrink(jnp.array(0.05)))
    with pytest.warns(RuntimeWarning, match="step 10"):
        out = dynjax.fit_trajectories(
            model,
            ts,
            ys,
            _add_constant(0.1),
            n_steps=20,
            key=jax.random.key(0),
            curriculum=(0.5, 0.25),
            solver=dfx.Euler(),
            stepsize_controller=dfx.ConstantStepSize(),
            dt0=0.25,
            progress=False,
        )
    assert out.result == dynjax.RESULTS.nonfinite_loss
    assert out.stopped_at == 10
    losses = np.asarray(out.losses)
    assert losses.shape == (11,) and np.all(np.isfinite(losses[:10]))
    assert not np.isfinite(losses[10])

    # Reference losses: Euler with h = 0.25 gives x(t_n) = (1 - h r)^n x0, one
    # step per save interval, r = sqrt(1 - c_k).
    def reference(k, n_times):
        r = np.sqrt(1.0 - (0.05 + 0.1 * k))
        n = np.arange(1, n_times)
        pred = x0[:, None, :] * (1 - 0.25 * r) ** n[None, :, None]
        return np.mean((pred - ys[:, 1:n_times]) ** 2)

    for k in range(10):
        n_times = 3 if k < 5 else 5  # the first stage fits ts[:3] only
        np.testing.assert_allclose(losses[k], reference(k, n_times), rtol=1e-12)
    # The returned model is the last one whose loss was finite (dynjax.fit's
    # contract): c_9, the model of step 9, not c_10 whose loss is the NaN.
    np.testing.assert_allclose(out.model.func.c, 0.05 + 9 * 0.1, rtol=1e-12)


def test_custom_loss_sees_no_error_after_the_window():
    # A callable loss gets (pred, target) of shape (batch, T - 1, d); in the
    # curriculum's first stage the predictions after the window equal the data.
    ts = np.linspace(0.0, 1.0, 5)
    x0 = np.array([[1.0], [-0.5], [2.0]])
    ys = x0[:, None, :] * np.exp(-ts)[None, :, None]
    shapes = []

    def total_abs(pred, target):
        shapes.append(pred.shape)
        return jnp.sum(jnp.abs(pred - target))

    out = dynjax.fit_trajectories(
        dynjax.NeuralODE(1, func=_Shrink(jnp.array(0.19))),
        ts,
        ys,
        optax.sgd(0.0),
        n_steps=2,
        key=jax.random.key(0),
        curriculum=(0.5, 0.5),
        loss=total_abs,
        solver=dfx.Euler(),
        stepsize_controller=dfx.ConstantStepSize(),
        dt0=0.25,
        progress=False,
    )
    assert shapes[0] == (3, 4, 1)
    # Euler with h = 0.25 and r = sqrt(1 - 0.19) = 0.9: x(t_n) = (1 - 0.225)^n x0.
    pred = x0[:, None, :] * 0.775 ** np.arange(1, 5)[None, :, None]
    error = np.abs(pred - ys[:, 1:])
    np.testing.assert_allclose(out.losses[0], error[:, :2].sum(), rtol=1e-12)
    np.testing.assert_allclose(out.losses[1], error.sum(), rtol=1e-12)


def test_save_and_load_round_trip(tmp_path):
    trained = dynjax.NeuralODE(2, width=8, depth=2, augment=1, key=jax.random.key(5))
    path = tmp_path / "node.eqx"
    dynjax.save_model(path, trained)
    like = dynjax.NeuralODE(2, width=8, depth=2, augment=1, key=jax.random.key(6))
    loaded = dynjax.load_model(path, like)
    saved_leaves = jax.tree.leaves(eqx.filter(trained, eqx.is_array))
    like_leaves = jax.tree.leaves(eqx.filter(like, eqx.is_array))
    loaded_leaves = jax.tree.leaves(eqx.filter(loaded, eqx.is_array))
    assert not all(np.array_equal(a, b) for a, b in zip(saved_leaves, like_leaves))
    for a, b in zip(saved_leaves, loaded_leaves, strict=True):
        np.testing.assert_array_equal(a, b)
    # Equal vector fields (hence equal predictions) at random states.
    zs = jax.random.normal(jax.random.key(7), (16, 3))
    field = jax.vmap(lambda m, z: m.vector_field(0.0, z), in_axes=(None, 0))
    np.testing.assert_array_equal(field(loaded, zs), field(trained, zs))
    assert not np.array_equal(field(like, zs), field(trained, zs))


# --- acceptance 8: bad input ------------------------------------------------------


def _wrong_shape_model():
    return dynjax.NeuralODE(2, func=lambda t, z: jnp.zeros(3, z.dtype))


def test_wrong_vector_field_shape_is_a_trace_time_error():
    ts = jnp.linspace(0.0, 1.0, 3)
    match = r"returned shape \(3,\).*must return dz/dt of shape \(2,\)"
    with pytest.raises(ValueError, match=match):
        _wrong_shape_model()(ts, jnp.ones(2))
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda x0: _wrong_shape_model()(ts, x0))(jnp.ones(2))
    with pytest.raises(ValueError, match=match):
        _wrong_shape_model()(ts, jnp.ones((4, 2)))  # a batch
    ys = np.ones((4, 3, 2))
    with pytest.raises(ValueError, match=match):
        dynjax.fit_trajectories(
            _wrong_shape_model(),
            ts,
            ys,
            optax.sgd(0.1),
            n_steps=1,
            key=jax.random.key(0),
        )
    # The default MLP with augmentation has the augmented size.
    model = dynjax.NeuralODE(2, width=4, depth=1, augment=3, key=jax.random.key(0))
    assert model.func.mlp.in_size == 5 and model.func.mlp.out_size == 5


def test_times_must_increase():
    model = dynjax.NeuralODE(1, width=4, depth=1, key=jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"strictly increasing.*ts\[1\] = 0.0 <= ts\[0\] = 1.0"
    ):
        model(jnp.array([1.0, 0.0]), jnp.ones(1))
    with pytest.raises(ValueError, match=r"strictly increasing"):
        model(jnp.array([0.0, 0.5, 0.5]), jnp.ones(1))
    with pytest.raises(ValueError, match=r"at least two times"):
        model(jnp.array([0.0]), jnp.ones(1))
    with pytest.raises(ValueError, match=r"strictly increasing.*ts\[1\]"):
        model(jnp.array([1.0, 0.0]), jnp.ones((3, 1)))  # a batch
    ys = np.ones((2, 3, 1))
    with pytest.raises(ValueError, match=r"strictly increasing.*ts\[2\]"):
        dynjax.fit_trajectories(
            model,
            np.array([0.0, 1.0, 1.0]),
            ys,
            optax.sgd(0.1),
            n_steps=1,
            key=jax.random.key(0),
        )


def test_bad_data_is_a_value_error():
    model = dynjax.NeuralODE(2, width=4, depth=1, key=jax.random.key(0))
    ts = np.linspace(0.0, 1.0, 4)
    ys = np.ones((3, 4, 2))
    fit = lambda ys, **kw: dynjax.fit_trajectories(  # noqa: E731
        model, ts, ys, optax.sgd(0.1), n_steps=1, key=jax.random.key(0), **kw
    )
    bad = ys.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*trajectory 1 at time index 2"):
        fit(bad)
    with pytest.raises(ValueError, match=r"4 time points|has 5"):
        fit(np.ones((3, 5, 2)))
    with pytest.raises(ValueError, match=r"3 coordinates .* the model's data has 2"):
        fit(np.ones((3, 4, 3)))
    with pytest.raises(ValueError, match=r"ys\[None\]"):
        fit(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"curriculum"):
        fit(ys, curriculum=(0.0, 0.5))
    with pytest.raises(ValueError, match=r"'mse' or a function"):
        fit(ys, loss="mae")
    with pytest.raises(ValueError, match=r"`x0` must have shape \(2,\)"):
        model(ts, jnp.ones(3))
    with pytest.raises(ValueError, match=r"or \(batch, 2\).*got \(4, 3\)"):
        model(ts, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"got \(0, 2\)"):
        model(ts, jnp.ones((0, 2)))
    with pytest.raises(ValueError, match=r"got \(2, 2, 2\)"):
        model(ts, jnp.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"non-finite"):
        model(ts, jnp.array([0.0, jnp.nan]))
    with pytest.raises(ValueError, match=r"non-finite"):
        model(ts, jnp.ones((3, 2)).at[2, 1].set(jnp.inf))
    with pytest.raises(ValueError, match=r"needs a PRNG key"):
        dynjax.NeuralODE(2)
    with pytest.raises(ValueError, match=r"`width`.*cannot be combined with `func=`"):
        dynjax.NeuralODE(2, func=lambda t, z: z, width=8)
    with pytest.raises(ValueError, match=r"`augment` must be an int >= 0"):
        dynjax.NeuralODE(2, augment=-1, key=jax.random.key(0))


def test_float32_runs_quietly_and_agrees_with_float64():
    # float32 is the norm for training: no precision warning, float32 out, and the
    # solution agrees with the float64 one to float32 tolerances (rtol 1e-4).
    model64 = dynjax.NeuralODE(2, width=8, depth=1, key=jax.random.key(0))
    model32 = jax.tree.map(
        lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model64
    )
    ts = jnp.linspace(0.0, 1.0, 5)
    x0 = jnp.array([[0.5, -0.3], [0.1, 0.2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out32 = model32(ts.astype(jnp.float32), x0.astype(jnp.float32))
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(out32, model64(ts, x0), rtol=1e-4, atol=1e-5)
