"""The Lyapunov engine's contracts: inputs as pytrees, collapsed directions,
gradients of finite-time exponents, traced run lengths, reverse-mode tangents.

Every expected value is derived independently of dynjax: exact identities
(`x_{n+1} = u_n x_n`), eigenvalues of constant Jacobians, NumPy QR loops over
analytic Jacobians, published values, or finite differences.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax import systems


HENON_REF = np.array([0.41922, -1.62319])  # Sprott (2003), Table A.2


def _numpy_spectrum(jacobians, warmup=0):
    """Benettin QR over a sequence of (d, d) Jacobians, QR every step (NumPy);
    the first `warmup` steps align the tangents and are not accumulated."""
    d = jacobians[0].shape[0]
    Q = np.eye(d)
    sums = np.zeros(d)
    for i, J in enumerate(jacobians):
        Q, R = np.linalg.qr(J @ Q)
        if i >= warmup:
            sums += np.log(np.abs(np.diag(R)))
    return np.sort(sums / (len(jacobians) - warmup))[::-1]


# --- item 5: driven-map inputs are any pytree with a leading time axis --------


def test_scalar_inputs_exponent_is_mean_log():
    # x_{n+1} = u_n x_n: the exponent is exactly the mean of log|u_n|.
    u = jax.random.uniform(jax.random.key(0), (3000,), minval=-2.0, maxval=2.0)
    system = dynjax.DrivenMap(lambda x, u, p: u * x, d=1)
    res = dynjax.lyapunov_spectrum(system, jnp.ones(1), inputs=u)
    np.testing.assert_allclose(
        res.exponents[0], np.mean(np.log(np.abs(np.asarray(u)))), rtol=1e-12
    )
    traj = dynjax.trajectory(system, jnp.ones(1), inputs=u[:10])
    np.testing.assert_allclose(traj.xs[-1, 0], np.prod(np.asarray(u[:10])), rtol=1e-12)


@pytest.mark.parametrize("method", ["matrix-free", "jacobian"])
def test_dict_of_matrices_inputs(method):
    # Products of random matrices (the textbook random dynamical system), the
    # input a dict {"M": (T, 2, 2), "s": (T,)}: x' = s M x. Reference: a NumPy
    # QR loop over the same matrices. Both discard 400 steps of tangent warm-up
    # (alignment error exp(-(lambda_1 - lambda_2) 400), far below rounding).
    T = 4000
    M = np.asarray(jax.random.normal(jax.random.key(1), (T, 2, 2))) / np.sqrt(2)
    s = np.asarray(jax.random.uniform(jax.random.key(2), (T,), minval=0.5, maxval=1.5))
    inputs = {"M": jnp.asarray(M), "s": jnp.asarray(s)}
    system = dynjax.DrivenMap(lambda x, u, p: u["s"] * (u["M"] @ x), d=2)
    res = dynjax.lyapunov_spectrum(
        system, jnp.ones(2), inputs=inputs, interval=4, tangent_warmup=100,
        method=method,
    )  # fmt: skip
    expected = _numpy_spectrum(s[:, None, None] * M, warmup=400)
    np.testing.assert_allclose(res.exponents, expected, rtol=1e-9, atol=1e-12)


def test_token_id_inputs():
    # Integer token ids through an embedding: h' = tanh(W h + E[u]). Reference:
    # the NumPy loop with the analytic Jacobian diag(1 - h'^2) W.
    rng = np.random.default_rng(3)
    W = 1.5 * rng.normal(size=(3, 3)) / np.sqrt(3)
    E = rng.normal(size=(5, 3))
    tokens = jnp.asarray(rng.integers(0, 5, size=2000), dtype=jnp.int32)
    rnn = dynjax.DrivenMap(
        lambda h, u, p: jnp.tanh(p["W"] @ h + p["E"][u]), {"W": W, "E": E}, d=3
    )
    res = dynjax.lyapunov_spectrum(rnn, jnp.zeros(3), inputs=tokens, tangent_warmup=200)
    h, jacs = np.zeros(3), []
    for u in np.asarray(tokens):
        h = np.tanh(W @ h + E[u])
        jacs.append((1 - h**2)[:, None] * W)
    expected = _numpy_spectrum(jacs, warmup=200)
    np.testing.assert_allclose(res.exponents, expected, rtol=1e-9)


# --- item 13: collapsed directions ------------------------------------------


def test_dead_relu_unit_gets_minus_inf():
    # h' = relu(W h + u) with row 2 of W zero: unit 2 ignores the state, so the
    # Jacobian has a zero row (rank 2). Inputs keep units 0 and 1 active, so
    # their block is the constant W[:2, :2] (real eigenvalues 0.937, 0.363):
    # exponents log|eig(W[:2, :2])| once the tangents are aligned.
    W = jnp.array([[0.9, 0.2, 0.1], [0.1, 0.4, 0.2], [0.0, 0.0, 0.0]])
    u = 3.0 + 0.1 * jax.random.normal(jax.random.key(4), (2000, 3))
    rnn = dynjax.DrivenMap(lambda h, u, p: jax.nn.relu(p @ h + u), W, d=3)
    res = dynjax.lyapunov_spectrum(rnn, jnp.ones(3), inputs=u, tangent_warmup=100)
    assert res.result == dynjax.RESULTS.successful
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(np.asarray(W[:2, :2])))))
    np.testing.assert_allclose(res.exponents[:2], expected[::-1], rtol=1e-9)
    assert res.exponents[2] == -np.inf


def test_constant_component_and_henon_values():
    # A map with an exactly constant component: the Henon map on (x, y) and a
    # third coordinate fixed at 0.5. Exponents: Henon's (Sprott 2003) and -inf.
    F = dynjax.Map(
        lambda n, x, p: jnp.stack([1 - 1.4 * x[0] ** 2 + x[1], 0.3 * x[0], 0.5]),
        d=3,
    )
    res = dynjax.lyapunov_spectrum(F, jnp.array([0.1, 0.1, 0.1]), n_steps=100_000)
    np.testing.assert_allclose(res.exponents[:2], HENON_REF, atol=2e-3)
    assert res.exponents[2] == -np.inf
    np.testing.assert_array_equal(res.history[-1], res.exponents)


def test_henon_with_tiny_b_is_resolved():
    # b = 1e-13: the second direction contracts by about 1e-13 per step, a
    # legitimate contraction. Its exponent is log(b) - lambda_1 exactly (the
    # Jacobian's determinant is -b at every step); lambda_1 is the exponent of
    # the 1-D map x -> 1 - 1.4 x^2 that Henon reduces to (mean log|2 a x|,
    # computed here in NumPy along the same orbit).
    b = 1e-13
    henon = systems.Henon(a=1.4, b=b)
    res = dynjax.lyapunov_spectrum(henon, jnp.array([0.1, 0.0]), n_steps=50_000)
    assert res.result == dynjax.RESULTS.successful
    lam = np.asarray(res.exponents)
    np.testing.assert_allclose(lam.sum(), np.log(b), rtol=1e-6)
    x = 0.1
    for _ in range(1000):
        x = 1 - 1.4 * x * x
    logs = []
    for _ in range(200_000):
        logs.append(np.log(abs(2 * 1.4 * x)))
        x = 1 - 1.4 * x * x
    lam_1d = np.mean(logs)  # about -0.03: a = 1.4 is just below Feigenbaum's point
    assert abs(lam[0] - lam_1d) < 0.01
    # (about -29.9 = log(1e-13) + 0.03; the "-30.3" assumed lambda_1 of
    # the b = 0.3 attractor)
    assert abs(lam[1] - (np.log(b) - lam_1d)) < 0.01


def test_flow_collapse_is_reported_not_minus_inf():
    # A flow's propagator is invertible: a direction at rounding level means the
    # interval is too long (Lorenz, lambda_3 - lambda_1 = -15.5 over 10 time
    # units: exp(-155) < eps). The error says so; a short interval works.
    lorenz = systems.Lorenz()
    res = dynjax.lyapunov_spectrum(
        lorenz, jnp.ones(3), dt=0.01, t_total=100.0, interval=1000, throw=False
    )
    assert res.result == dynjax.RESULTS.degenerate_tangent
    with pytest.raises(eqx.EquinoxRuntimeError, match="rounding, not collapse"):
        dynjax.lyapunov_spectrum(
            lorenz, jnp.ones(3), dt=0.01, t_total=100.0, interval=1000
        )


def test_escaping_map_message_has_no_step_size_advice():
    F = dynjax.Map(lambda n, x, p: x**2 + 1.0, d=1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="A map has no step size"):
        dynjax.lyapunov_spectrum(F, jnp.array([2.0]), n_steps=100, transient=0)


# --- item 7: gradients of finite-time exponents -------------------------------


@pytest.mark.slow
def test_ftle_gradient_is_order_one_and_matches_held_windows():
    # The docstring recipe: d/d rho of the mean leading finite-time exponent of
    # Lorenz over 20 windows of 1 time unit (differentiating the whole chaotic
    # orbit gave -6.4e9).
    x0 = jnp.array([1.0, 1.0, 1.0])

    def ftle(rho, n_windows, state=None):
        return dynjax.finite_time_lyapunov(
            systems.Lorenz(rho=rho), x0, tau=1.0, n_windows=n_windows, state=state
        )

    recipe = float(jax.grad(lambda r: ftle(r, 20).exponents[:, 0].mean())(28.0))
    assert abs(recipe) < 10.0
    # By default each window's exponent is differentiated with its start state
    # and tangent frame held fixed. Reference: central differences of each
    # window recomputed from its start (a resumed `state`) at rho +- h.
    start = ftle(28.0, 1).state  # after the transient, warm-up and one window
    n = 8
    grad = float(jax.grad(lambda r: ftle(r, n, start).exponents[:, 0].mean())(28.0))
    h, fd, state = 1e-4, [], start
    for _ in range(n):
        plus = float(ftle(28.0 + h, 1, state).exponents[0, 0])
        minus = float(ftle(28.0 - h, 1, state).exponents[0, 0])
        fd.append((plus - minus) / (2 * h))
        state = ftle(28.0, 1, state).state
    np.testing.assert_allclose(grad, np.mean(fd), rtol=1e-5)


def test_full_gradient_through_a_stable_cycle_matches_fd():
    # gradient="full" differentiates through transient and warm-up: for a
    # stable fixed point of the logistic map (r = 2.5, lambda = log|2 - r|) it is
    # the derivative of the exponent, d lambda / dr = 1 / (r - 2).
    def lam(r, gradient):
        return dynjax.max_lyapunov(
            systems.Logistic(r=r), jnp.array([0.3]), n_steps=500, gradient=gradient
        ).exponents[0]

    g = float(jax.grad(lambda r: lam(r, "full"))(2.5))
    np.testing.assert_allclose(g, 1 / (2.5 - 2), rtol=1e-8)


# --- item 11: run lengths are run-time values ---------------------------------


def test_new_length_does_not_retrace():
    counter = {"n": 0}

    def f(t, x, p):
        counter["n"] += 1
        return jnp.stack(
            [10 * (x[1] - x[0]), x[0] * (p - x[2]) - x[1], x[0] * x[1] - 8 / 3 * x[2]]
        )

    flow = dynjax.Flow(f, 28.0, d=3)
    x0 = jnp.ones(3)
    first = dynjax.lyapunov_spectrum(flow, x0, t_total=20.0)
    traces = counter["n"]
    for t_total in (30.0, 47.3):
        dynjax.lyapunov_spectrum(flow, x0, t_total=t_total)
    dynjax.lyapunov_spectrum(flow, x0, n_steps=1234)
    assert counter["n"] == traces
    assert first.history.shape == (1000, 3)


@pytest.mark.parametrize(
    "system, x0, kw",
    [
        # Short runs: a chaotic orbit amplifies rounding differences, so the two
        # orders agree to rounding only over a few Lyapunov times. 80 blocks and
        # a last block of 3 steps, after 64 warm-up blocks (a multiple of every
        # inner chunk length, the case where the last chunk ends exactly).
        (
            systems.Lorenz(),
            jnp.ones(3),
            dict(dt=0.01, n_steps=803, interval=10, transient=1.0, tangent_warmup=64),
        ),
        (
            systems.Lorenz(),
            jnp.ones(3),
            dict(
                dt=0.01,
                n_steps=803,
                interval=10,
                transient=1.0,
                tangent_warmup=64,
                method="matrix-free",
            ),
        ),  # fmt: skip
        (
            systems.Henon(),
            jnp.array([0.1, 0.1]),
            dict(n_steps=301, interval=3, transient=10, tangent_warmup=16),
        ),
    ],
)
def test_traced_and_fixed_lengths_agree(system, x0, kw):
    # Eager calls run with traced lengths (while loops), calls under `jit` with
    # fixed ones (scans): the same computation, to rounding.
    eager = dynjax.lyapunov_spectrum(system, x0, **kw)
    fixed = jax.jit(lambda x: dynjax.lyapunov_spectrum(system, x, **kw))(x0)
    np.testing.assert_allclose(eager.exponents, fixed.exponents, rtol=1e-11)
    np.testing.assert_allclose(eager.history, fixed.history, rtol=1e-10)
    np.testing.assert_allclose(eager.times, fixed.times, rtol=1e-14)
    np.testing.assert_allclose(eager.state.x, fixed.state.x, rtol=1e-11)


# --- item 6: systems that forward mode cannot go through ----------------------


@jax.custom_vjp
def _vjp_sin(x):
    return jnp.sin(x)


_vjp_sin.defvjp(lambda x: (jnp.sin(x), jnp.cos(x)), lambda c, g: (c * g,))


@pytest.mark.parametrize("method", ["matrix-free", "jacobian"])
def test_custom_vjp_map_uses_reverse_mode(method):
    # The standard map's lift with its sine a `jax.custom_vjp` function (forward
    # mode is impossible): its spectrum equals the one with `jnp.sin`.
    def make(sin):
        return dynjax.Map(
            lambda n, x, K: jnp.stack(
                [x[0] + x[1] + K * sin(x[0]), x[1] + K * sin(x[0])]
            ),
            2.0,
            d=2,
        )

    kw = dict(n_steps=4000, interval=4, method=method)
    ref = dynjax.lyapunov_spectrum(make(jnp.sin), jnp.array([0.3, 0.1]), **kw)
    got = dynjax.lyapunov_spectrum(make(_vjp_sin), jnp.array([0.3, 0.1]), **kw)
    np.testing.assert_allclose(got.exponents, ref.exponents, rtol=1e-10)


def test_grad_through_while_loop_field_names_the_loop():
    # A field with a `lax.while_loop`: forward mode works (jacfwd against
    # central differences), reverse mode raises one error naming the loop.
    def f(t, x, p):
        y = jax.lax.while_loop(
            lambda c: c[1] < 5, lambda c: (0.9 * c[0] + p * x, c[1] + 1), (x, 0)
        )[0]
        return -y

    def leading(p):
        flow = dynjax.Flow(f, p, d=2)
        return dynjax.lyapunov_spectrum(flow, jnp.ones(2), t_total=2.0).exponents[0]

    h = 1e-5
    fd = (leading(1.0 + h) - leading(1.0 - h)) / (2 * h)
    np.testing.assert_allclose(jax.jacfwd(leading)(1.0), fd, rtol=1e-6)
    with pytest.raises(ValueError, match="cannot go through a `lax.while_loop`"):
        jax.grad(leading)(1.0)


def test_custom_vjp_pendulum_equilibria_and_linearization():
    # The damped pendulum theta'' = -sin(theta) - 0.3 theta' with its sine a
    # `jax.custom_vjp` function: equilibria by Levenberg-Marquardt with
    # reverse-mode Jacobians, linearization by `jax.jacrev`. Analytic: (0, 0) a
    # stable focus with eigenvalues -0.15 +- i sqrt(1 - 0.15^2), (pi, 0) a saddle
    # with eigenvalues -0.15 +- sqrt(1 + 0.15^2).
    pendulum = dynjax.Flow(
        lambda t, x, p: jnp.stack([x[1], -_vjp_sin(x[0]) - 0.3 * x[1]]), d=2
    )
    eq = dynjax.find_equilibria(pendulum, jnp.array([[0.2, 0.1], [2.9, 0.1]]))
    np.testing.assert_allclose(eq.unique, [[0.0, 0.0], [np.pi, 0.0]], atol=1e-10)
    focus = dynjax.linearize(pendulum, jnp.zeros(2))
    np.testing.assert_allclose(
        np.sort_complex(np.asarray(focus.eigenvalues)),
        np.sort_complex(np.array([-0.15 - 1j * np.sqrt(1 - 0.0225),
                                  -0.15 + 1j * np.sqrt(1 - 0.0225)])),
        atol=1e-12,
    )  # fmt: skip
    saddle = dynjax.linearize(pendulum, jnp.array([np.pi, 0.0]))
    assert saddle.stability_name == "saddle"
    np.testing.assert_allclose(
        np.sort(np.real(np.asarray(saddle.eigenvalues))),
        [-0.15 - np.sqrt(1.0225), -0.15 + np.sqrt(1.0225)],
        atol=1e-12,
    )


# --- item 12 (c): a host callback in the system -----------------------------


@jax.custom_jvp
def _callback_tanh(x):
    # (no `vmap_method`: JAX cannot batch it)
    return jax.pure_callback(
        lambda v: np.tanh(v), jax.ShapeDtypeStruct(x.shape, x.dtype), x
    )


@_callback_tanh.defjvp
def _callback_tanh_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = _callback_tanh(x)
    return y, (1 - y**2) * dx


@pytest.mark.parametrize("method", [None, "jacobian", "matrix-free"])
def test_pure_callback_system_runs_every_method(method):
    # The user never vmapped: the Jacobian method's block propagators fall back
    # from batch-last to `jax.vmap` to `lax.map`. Same spectrum as with jnp.tanh.
    W = 1.5 * jnp.array([[1.1, -0.6], [0.7, 0.9]])
    kw = dict(n_steps=400, interval=4, method=method)
    x0 = jnp.array([0.1, 0.2])
    got = dynjax.lyapunov_spectrum(
        dynjax.Map(lambda n, x, p: _callback_tanh(p @ x), W, d=2), x0, **kw
    )
    ref = dynjax.lyapunov_spectrum(
        dynjax.Map(lambda n, x, p: jnp.tanh(p @ x), W, d=2), x0, **kw
    )
    np.testing.assert_allclose(got.exponents, ref.exponents, rtol=1e-12)


# --- found by a new user's first hour ----------------------------------------


def test_grad_through_a_driven_map():
    # x' = a u_n x: the exponent is log a + mean log|u_n| exactly, so its
    # derivative is 1/a (reverse mode through the driven map's input pytree).
    u = jax.random.uniform(jax.random.key(1), (300,), minval=0.5, maxval=1.5)
    system = lambda a: dynjax.DrivenMap(lambda x, u, p: p * u * x, a, d=1)  # noqa: E731
    grad = jax.grad(
        lambda a: dynjax.lyapunov_spectrum(system(a), jnp.ones(1), inputs=u).exponents[
            0
        ]
    )(2.0)
    np.testing.assert_allclose(grad, 0.5, rtol=1e-12)
    tokens = {"u": u, "id": jnp.arange(300) % 3}
    rnn = lambda a: dynjax.DrivenMap(  # noqa: E731
        lambda x, u, p: p * u["u"] * (1.0 + u["id"]) * x, a, d=1
    )
    grad = jax.grad(
        lambda a: dynjax.finite_time_lyapunov(
            rnn(a), jnp.ones(1), inputs=tokens, tau=100, n_windows=3
        ).exponents.mean()
    )(2.0)
    np.testing.assert_allclose(grad, 0.5, rtol=1e-12)


def test_grad_of_a_closed_over_parameter():
    # The parameter closed over by the field rather than held as a field: the
    # call is still recognised as differentiated. dx/dt = -a x: lambda = -a.
    def leading(a):
        flow = dynjax.Flow(lambda t, x, p: -a * x, d=2)
        return dynjax.lyapunov_spectrum(flow, jnp.ones(2), t_total=5.0).exponents[0]

    # (RK4 with dt = 0.01 reproduces exp(-a t) to about 1e-9 per unit time)
    np.testing.assert_allclose(jax.grad(leading)(1.3), -1.0, rtol=1e-7)


def test_two_directions_collapsing_in_one_step():
    # diag(1/2, 0, 0): two directions collapse at every step (the default,
    # matrix-free method as well as the Jacobian one).
    F = dynjax.Map(lambda n, x, p: jnp.array([0.5 * x[0], 0 * x[1], 0 * x[2]]), d=3)
    for method in (None, "jacobian", "matrix-free"):
        res = dynjax.lyapunov_spectrum(F, jnp.ones(3), n_steps=50, method=method)
        np.testing.assert_allclose(res.exponents[0], np.log(0.5), rtol=1e-12)
        assert np.all(np.asarray(res.exponents[1:]) == -np.inf)


def test_args_on_a_plain_function_wrapper_is_refused():
    flow = dynjax.Flow(lambda t, x, p: -p["k"] * x)
    with pytest.raises(ValueError, match="calls its function with `params`"):
        dynjax.trajectory(flow, jnp.ones(2), t1=1.0, args={"k": 2.0})
