"""Trajectories of flows, maps and driven maps against independent references."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

import dynjax


def _linear_field(t, x, A):
    return A @ x


def _linear(A):
    # One module-level vector field, so all cases share one compilation.
    return dynjax.Flow(_linear_field, np.asarray(A, dtype=np.float64), d=2)


# Node (real eigenvalues of one sign), focus (complex pair), saddle (real, mixed).
LINEAR_CASES = {
    "stable node": [[-1.0, 0.5], [0.0, -3.0]],
    "unstable focus": [[0.2, -2.0], [2.0, 0.2]],
    "saddle": [[1.0, 2.0], [2.0, -2.0]],
}


@pytest.mark.parametrize("name", sorted(LINEAR_CASES))
def test_linear_flow_equals_matrix_exponential(name):
    A = np.array(LINEAR_CASES[name])
    x0 = np.array([0.7, -0.4])
    ts = np.linspace(0.0, 3.0, 13)
    sol = dynjax.trajectory(_linear(A), x0, ts=ts)
    expected = np.stack([scipy.linalg.expm(t * A) @ x0 for t in ts])
    np.testing.assert_allclose(sol.xs, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(sol.ts, ts)
    assert sol.result == dynjax.RESULTS.successful


def _seed_rhs(t, x, dx, ddx, p):
    # x''' + 2 x'' - x' + 5 x = cos t
    return jnp.cos(t) - 2.0 * ddx + dx - 5.0 * x


def _seed_scipy(t, y):
    x, dx, ddx = y
    return [dx, ddx, np.cos(t) - 2.0 * ddx + dx - 5.0 * x]


def test_first_order_and_autonomize_reproduce_seed_example():
    t0, t1 = 0.5, 4.0
    y0 = np.array([1.0, 0.0, -0.5])
    ts = np.linspace(t0, t1, 8)
    reference = scipy.integrate.solve_ivp(
        _seed_scipy, (t0, t1), y0, method="DOP853", t_eval=ts, rtol=1e-12, atol=1e-12
    ).y.T

    flow = dynjax.first_order(_seed_rhs, 3)
    assert flow.d == 3
    sol = dynjax.trajectory(flow, y0, t0=t0, ts=ts)
    np.testing.assert_allclose(sol.xs, reference, rtol=1e-6, atol=1e-9)

    auto = dynjax.autonomize(flow)
    assert auto.d == 4
    z0 = np.concatenate([[t0], y0])
    # The autonomized field ignores t: integrating from 0 over the same length must
    # give the same states, with the first coordinate carrying the time.
    sol_auto = dynjax.trajectory(auto, z0, t0=0.0, ts=ts - t0)
    np.testing.assert_allclose(sol_auto.xs[:, 0], ts, rtol=1e-12)
    np.testing.assert_allclose(sol_auto.xs[:, 1:], reference, rtol=1e-6, atol=1e-9)
    assert jnp.array_equal(
        auto.vector_field(123.0, jnp.asarray(z0)),
        jnp.concatenate([jnp.ones(1), flow.vector_field(t0, jnp.asarray(y0))]),
    )


def test_first_order_vector_valued():
    # Two uncoupled harmonic oscillators x'' = -omega^2 x, x in R^2.
    omega = jnp.array([1.0, 2.0])
    flow = dynjax.first_order(lambda t, x, dx, p: -(p**2) * x, 2, omega, dim=2)
    y0 = np.array([1.0, 1.0, 0.0, 0.0])
    sol = dynjax.trajectory(flow, y0, ts=np.linspace(0, 2, 5))
    np.testing.assert_allclose(
        sol.xs[:, :2], np.cos(np.outer(np.linspace(0, 2, 5), [1.0, 2.0])), rtol=1e-7
    )


def test_euler_map_is_exact_euler_step():
    lorenz = dynjax.systems.Lorenz()
    h = 0.01
    step = dynjax.euler_map(lorenz, h)
    x = jnp.array([1.5, -2.0, 20.0])
    s, r, b = 10.0, 28.0, 8.0 / 3.0
    f = jnp.array([s * (x[1] - x[0]), x[0] * (r - x[2]) - x[1], x[0] * x[1] - b * x[2]])
    assert jnp.array_equal(step.step(0, x), x + h * f)
    xs = dynjax.trajectory(step, x, n_steps=3).xs
    expected = [x]
    for _ in range(3):
        expected.append(expected[-1] + h * lorenz.vector_field(0.0, expected[-1]))
    # Under jit XLA may fuse the multiply-add, so allow a few ulps here.
    np.testing.assert_allclose(xs, jnp.stack(expected), rtol=1e-14)


def test_map_trajectory_by_hand():
    henon = dynjax.Map(
        lambda n, x, p: jnp.array([1 - p["a"] * x[0] ** 2 + x[1], p["b"] * x[0]]),
        {"a": 1.4, "b": 0.3},
    )
    xs = dynjax.trajectory(henon, jnp.zeros(2), n_steps=3).xs
    # (0, 0) -> (1, 0) -> (1 - 1.4, 0.3) -> (1 - 1.4 * 0.16 + 0.3, -0.12)
    expected = [[0, 0], [1, 0], [-0.4, 0.3], [1 - 1.4 * 0.16 + 0.3, -0.12]]
    np.testing.assert_allclose(xs, expected, rtol=1e-14)


def test_driven_map_trajectory_equals_python_loop():
    key1, key2, key3 = jax.random.split(jax.random.key(0), 3)
    W = jax.random.normal(key1, (5, 5)) / jnp.sqrt(5.0)
    U = jax.random.normal(key2, (5, 2))
    inputs = jax.random.normal(key3, (20, 2))
    rnn = dynjax.DrivenMap(lambda h, u, p: jnp.tanh(p[0] @ h + p[1] @ u), (W, U))
    sol = dynjax.trajectory(rnn, jnp.zeros(5), inputs=inputs)
    h = np.zeros(5)
    expected = [h]
    for u in np.asarray(inputs):
        h = np.tanh(np.asarray(W) @ h + np.asarray(U) @ u)
        expected.append(h)
    np.testing.assert_allclose(sol.xs, np.stack(expected), rtol=1e-12)
    np.testing.assert_array_equal(sol.ts, np.arange(21))


def test_jacobian_of_lorenz_matches_hand_derivation():
    s, r, b = 10.0, 28.0, 8.0 / 3.0
    lorenz = dynjax.systems.Lorenz()
    for x, y, z in [(0.0, 0.0, 0.0), (1.0, -2.0, 3.0), (-8.5, 4.25, 27.0)]:
        expected = np.array([[-s, s, 0.0], [r - z, -1.0, -x], [y, x, -b]])
        J = dynjax.jacobian(lorenz, jnp.array([x, y, z]))
        np.testing.assert_allclose(J, expected, rtol=1e-14, atol=1e-14)


def test_jacobian_of_map_and_driven_map():
    henon = dynjax.Map(
        lambda n, x, p: jnp.array([1 - p * x[0] ** 2 + x[1], 0.3 * x[0]]), 1.4
    )
    np.testing.assert_allclose(
        dynjax.jacobian(henon, jnp.array([0.5, 0.1])), [[-1.4, 1.0], [0.3, 0.0]]
    )
    W = jnp.array([[0.5, -0.2], [0.1, 0.3]])
    rnn = dynjax.DrivenMap(lambda h, u, p: jnp.tanh(p @ h + u), W)
    h, u = jnp.array([0.2, -0.1]), jnp.array([0.3, 0.0])
    sech2 = 1.0 / np.cosh(np.asarray(W @ h + u)) ** 2
    np.testing.assert_allclose(
        dynjax.jacobian(rnn, h, u=u), sech2[:, None] * np.asarray(W), rtol=1e-12
    )


def _central_difference(f, p, eps):
    return (f(p + eps) - f(p - eps)) / (2 * eps)


def test_grad_of_flow_final_state_wrt_parameter_and_initial_state():
    x0 = jnp.array([1.0, 1.0, 1.0])

    @jax.jit
    def final_x(rho, x0=x0):
        sol = dynjax.trajectory(dynjax.systems.Lorenz(rho=rho), x0, t1=1.0, n_save=2)
        return sol.xs[-1, 0]

    grad = jax.grad(final_x)(28.0)
    fd = _central_difference(final_x, 28.0, 1e-5)
    np.testing.assert_allclose(grad, fd, rtol=1e-4)

    grad_x0 = jax.grad(lambda y: final_x(28.0, y))(x0)
    fd_x0 = [
        _central_difference(lambda e: final_x(28.0, x0.at[i].add(e)), 0.0, 1e-5)
        for i in range(3)
    ]
    np.testing.assert_allclose(grad_x0, fd_x0, rtol=1e-4)


def test_grad_of_map_final_state_wrt_parameter():
    def final(a):
        henon = dynjax.Map(
            lambda n, x, p: jnp.array([1 - p * x[0] ** 2 + x[1], 0.3 * x[0]]), a
        )
        return dynjax.trajectory(henon, jnp.array([0.1, 0.1]), n_steps=8).xs[-1, 0]

    np.testing.assert_allclose(
        jax.grad(final)(1.2), _central_difference(final, 1.2, 1e-6), rtol=1e-4
    )


def test_vmap_over_initial_conditions_equals_loop_and_does_not_retrace():
    lorenz = dynjax.systems.Lorenz()

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def batch(x0s):
        return jax.vmap(lambda y: dynjax.trajectory(lorenz, y, t1=0.5, n_save=3).xs)(
            x0s
        )

    x0s = jax.random.normal(jax.random.key(1), (64, 3)) * 5.0
    batched = batch(x0s)
    looped = jnp.stack([dynjax.trajectory(lorenz, y, t1=0.5, n_save=3).xs for y in x0s])
    np.testing.assert_allclose(batched, looped, rtol=1e-10, atol=1e-10)
    batch(x0s + 1.0)  # new values, same shapes: must not trace again


def test_vmap_over_parameters():
    rhos = jnp.linspace(20.0, 30.0, 4)

    def final(rho):
        lorenz = dynjax.systems.Lorenz(rho=rho)
        return dynjax.trajectory(lorenz, jnp.ones(3), t1=0.5, n_save=2).xs[-1]

    batched = jax.vmap(final)(rhos)
    for rho, row in zip(rhos, batched):
        np.testing.assert_allclose(row, final(rho), rtol=1e-10)


def test_constant_step_solver_option():
    A = np.array(LINEAR_CASES["stable node"])
    sol = dynjax.trajectory(
        _linear(A),
        np.array([1.0, 1.0]),
        t1=1.0,
        n_save=2,
        solver=dfx.Dopri8(),
        stepsize_controller=dfx.ConstantStepSize(),
        dt0=0.01,
    )
    np.testing.assert_allclose(
        sol.xs[-1], scipy.linalg.expm(A) @ np.ones(2), rtol=1e-10
    )
    assert int(sol.stats["num_steps"]) == 100


def test_float32_runs_and_keeps_dtype():
    with jax.enable_x64(False):
        lorenz = dynjax.systems.Lorenz()
        sol = dynjax.trajectory(lorenz, jnp.ones(3, jnp.float32), t1=1.0, n_save=3)
        assert sol.xs.dtype == jnp.float32
        reference = scipy.integrate.solve_ivp(
            lambda t, y: np.asarray(
                [
                    10 * (y[1] - y[0]),
                    y[0] * (28 - y[2]) - y[1],
                    y[0] * y[1] - 8 / 3 * y[2],
                ]
            ),
            (0, 1),
            np.ones(3),
            rtol=1e-11,
            atol=1e-11,
        ).y[:, -1]
        np.testing.assert_allclose(sol.xs[-1], reference, rtol=1e-3)


# --- issue 10, item 9: messages that say what to change ------------------------


def test_finite_time_blow_up_names_the_time():
    # dx/dt = x^2 from x(0) = 1: x = 1 / (1 - t) blows up at t = 1. The error
    # says so (not "raise max_steps"), with the time reached.
    f = dynjax.Flow(lambda t, x, p: x**2, d=1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="blows up") as info:
        dynjax.trajectory(f, jnp.ones(1), t1=2.0)
    message = str(info.value)
    assert "max_steps" not in message.split("Raising")[0]
    t_stop = float(message.split("at t = ")[1].split(":")[0])
    assert abs(t_stop - 1.0) < 1e-3
    sol = dynjax.trajectory(f, jnp.ones(1), t1=2.0, throw=False)
    assert sol.result == dynjax.RESULTS.blow_up
    # Before the singularity the solution is exact: x(0.5) = 2.
    np.testing.assert_allclose(sol.xs[sol.ts <= 0.5][-1], [2.0], rtol=1e-6)


def test_blow_up_of_a_cubic_field():
    # dx/dt = x^3 from x(0) = 2: x = 1 / sqrt(1/4 - 2 t), singular at t = 1/8.
    f = dynjax.Flow(lambda t, x, p: x**3, d=1)
    sol = dynjax.trajectory(f, jnp.array([2.0]), t1=1.0, throw=False)
    assert sol.result == dynjax.RESULTS.blow_up
    assert abs(float(sol.stats["t_stop"]) - 0.125) < 1e-3


def test_negative_dt0_is_a_clear_value_error():
    with pytest.raises(ValueError, match="`dt0` must be a positive step size") as info:
        dynjax.trajectory(dynjax.systems.Lorenz(), jnp.ones(3), t1=1.0, dt0=-0.01)
    assert "Tracer" not in str(info.value)


def test_dense_saving_under_a_persistent_cache_gives_the_same_values(tmp_path):
    # With JAX's persistent compilation cache on, trajectories save through dense
    # output (no host callback in the program, so it can be cached): the same
    # interpolant at the same times, and the same gradient.
    lorenz = dynjax.systems.Lorenz()
    f = lambda r: dynjax.trajectory(  # noqa: E731
        dynjax.systems.Lorenz(rho=r), jnp.ones(3), t1=1.0, n_save=11
    ).xs[-1, 0]
    plain = dynjax.trajectory(lorenz, jnp.ones(3), t1=20.0, n_save=201)
    grad_plain = jax.grad(f)(28.0)
    # JAX decides once per process whether the persistent cache is used
    # (`is_cache_used`), so the cache is reset on entry and on exit: otherwise
    # every later test in this worker would read and write this temporary
    # directory (a cached CPU executable read back there crashed a worker).
    from jax._src import compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    try:
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", str(tmp_path))
        dense = dynjax.trajectory(lorenz, jnp.ones(3), t1=20.0, n_save=201)
        grad_dense = jax.grad(f)(28.0)
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
        compilation_cache.reset_cache()
    np.testing.assert_allclose(dense.xs, plain.xs, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(grad_dense, grad_plain, rtol=1e-12)
