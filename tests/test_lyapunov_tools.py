"""FTLE, covariant vectors, dimensions, gradients, resume, sharding and errors
(issue 4, acceptance 2-5). Expected values are analytic (stated per test) or
central finite differences.
"""

import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax import systems
from dynjax._lyapunov import _spectrum


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


# --- finite-time exponents -------------------------------------------------


def test_ftle_of_driven_diagonal_map_is_window_mean_of_log_gains():
    # x' = diag(u1, u2) x with |u1| > |u2|: once the tangent block is aligned with
    # the coordinate axes, the exponents over a window are exactly the window means
    # of log|u1| and log|u2|, computed here from the inputs with numpy.
    key1, key2 = jax.random.split(jax.random.key(0))
    T, tau, warm = 400, 20, 100
    u1 = jax.random.uniform(key1, (T + warm,), minval=2.0, maxval=4.0)
    u2 = jax.random.uniform(key2, (T + warm,), minval=0.1, maxval=0.5)
    u = jnp.stack([u1, u2], axis=1)
    system = dynjax.DrivenMap(lambda x, u, p: u * x)
    res = dynjax.finite_time_lyapunov(
        system, jnp.zeros(2), tau=tau, n_windows=T // tau, inputs=u, tangent_warmup=warm
    )
    logs = np.log(np.asarray(u))[warm:].reshape(T // tau, tau, 2).mean(axis=1)
    np.testing.assert_allclose(res.exponents, logs, rtol=1e-10)
    assert res.exponents.shape == (T // tau, 2)


def test_ftle_of_constant_map_is_constant():
    # A map conjugate (by a rotation) to diag(2, 0.5): every window gives
    # (log 2, -log 2) exactly once aligned.
    R = _rotation(0.7)
    A = jnp.asarray(R @ np.diag([2.0, 0.5]) @ R.T)
    res = dynjax.finite_time_lyapunov(
        systems.LinearMap(A), jnp.zeros(2), tau=5, n_windows=8, transient=0
    )
    np.testing.assert_allclose(
        res.exponents, np.tile([np.log(2), -np.log(2)], (8, 1)), rtol=1e-10
    )


# --- covariant Lyapunov vectors --------------------------------------------


@pytest.mark.parametrize(
    "A",
    [
        [[2.0, 1.0], [0.0, 0.5]],
        [[1.5, 0.8, 0.3], [0.0, 0.9, -0.7], [0.0, 0.0, 0.4]],
    ],
)
def test_clvs_of_constant_non_normal_map_are_eigenvectors(A):
    A = np.asarray(A)
    mu, V = np.linalg.eig(A)
    order = np.argsort(-np.abs(mu))
    mu, V = mu[order], V[:, order]
    res = dynjax.covariant_lyapunov_vectors(
        systems.LinearMap(jnp.asarray(A)),
        jnp.zeros(A.shape[0]),
        n_samples=6,
        transient=0,
        backward_warmup=60,
    )
    for j in range(6):
        for i in range(A.shape[0]):
            cos = abs(np.dot(res.vectors[j, :, i], V[:, i])) / np.linalg.norm(V[:, i])
            np.testing.assert_allclose(cos, 1.0, atol=1e-10)
    np.testing.assert_allclose(res.exponents, np.log(np.abs(mu)), rtol=1e-6)


@pytest.mark.slow
def test_lorenz_neutral_clv_is_the_flow_direction():
    # The covariant vector of the zero exponent of an autonomous flow is the
    # vector field f(x) itself (time-translation invariance).
    lorenz = systems.Lorenz()
    res = dynjax.covariant_lyapunov_vectors(
        lorenz,
        jnp.array([1.0, 1.0, 1.0]),
        n_samples=50,
        dt=0.005,
        interval=2,
        backward_warmup=1000,
    )
    f = jax.vmap(lambda x: lorenz.vector_field(0.0, x))(res.xs)
    cos = jnp.abs(jnp.sum(f * res.vectors[:, :, 1], axis=1)) / jnp.linalg.norm(
        f, axis=1
    )
    np.testing.assert_allclose(cos, 1.0, atol=1e-4)


# --- dimensions --------------------------------------------------------------


def test_kaplan_yorke_dimension_hand_values():
    ky = dynjax.kaplan_yorke_dimension
    # Lorenz, Sprott 2003 values: 2 + 0.9056 / 14.5723
    np.testing.assert_allclose(
        ky(jnp.array([0.9056, 0.0, -14.5723])), 2 + 0.9056 / 14.5723
    )
    # Henon: 1 + 0.41922 / 1.62319 = 1.2583 (Russell, Hanson & Ott 1980 report 1.26)
    np.testing.assert_allclose(
        ky(jnp.array([0.41922, -1.62319])), 1 + 0.41922 / 1.62319
    )
    np.testing.assert_allclose(ky(jnp.array([-1.0, 0.5, -0.2])), 2.3)  # unsorted input
    assert float(ky(jnp.array([-0.1, -2.0]))) == 0.0  # stable fixed point
    assert float(ky(jnp.array([1.0, 0.5]))) == 2.0  # expanding: all k directions
    batched = jax.vmap(ky)(jnp.array([[0.5, -1.0], [1.0, -4.0]]))
    np.testing.assert_allclose(batched, [1.5, 1.25])


def test_ks_entropy_pesin():
    np.testing.assert_allclose(
        dynjax.ks_entropy(jnp.array([0.9056, 0.0, -14.5723])), 0.9056
    )
    assert float(dynjax.ks_entropy(jnp.array([-0.1, -1.0]))) == 0.0
    # Cat map (Anosov, area preserving): h_KS = log((3 + sqrt 5) / 2) (Sinai).
    cat = systems.CatMap()
    res = dynjax.lyapunov_spectrum(cat, cat.default_x0(), n_steps=500)
    np.testing.assert_allclose(
        dynjax.ks_entropy(res), np.log((3 + np.sqrt(5)) / 2), rtol=1e-8
    )
    np.testing.assert_allclose(dynjax.kaplan_yorke_dimension(res), 2.0, rtol=1e-8)


# --- gradients -------------------------------------------------------------


def _logistic_exponent(r, gradient="full"):
    return dynjax.max_lyapunov(
        systems.Logistic(r=r),
        jnp.array([0.3]),
        n_steps=400,
        transient=200,
        tangent_warmup=0,
        gradient=gradient,
    ).exponents[0]


def test_grad_logistic_periodic_window():
    # r = 3.2: a stable 2-cycle with multiplier f'(x1) f'(x2) = 4 + 2r - r^2, so
    # lambda(r) = log|4 + 2r - r^2| / 2 and d lambda / dr = (1 - r) / (4 + 2r - r^2).
    r = 3.2
    value = float(_logistic_exponent(jnp.asarray(r)))
    np.testing.assert_allclose(value, 0.5 * np.log(abs(4 + 2 * r - r * r)), rtol=1e-10)
    # gradient="full" differentiates through the transient: the derivative of
    # the exponent of this non-chaotic orbit.
    grad = float(jax.grad(_logistic_exponent)(jnp.asarray(r)))
    h = 1e-5
    fd = (
        float(_logistic_exponent(jnp.asarray(r + h)))
        - float(_logistic_exponent(jnp.asarray(r - h)))
    ) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-3)
    exact = (1 - r) / (4 + 2 * r - r * r)
    np.testing.assert_allclose(grad, exact, rtol=1e-6)
    # The default holds the state after the transient fixed: the orbit's
    # sensitivity dx/dr then starts at 0 and relaxes to the cycle's at the rate
    # |multiplier| = 0.16 per cycle, an O(1/n_steps) bias (here about 1e-3).
    held = float(jax.grad(lambda r: _logistic_exponent(r, "after_warmup"))(r))
    assert 1e-5 < abs(held - exact) / abs(exact) < 2e-2


def test_grad_linear_map():
    # A = [[a, 1], [0, 0.5]] with |a| > 0.5: lambda_1 = log a, d/da = 1/a.
    def top(a):
        A = jnp.array([[1.0, 1.0], [0.0, 0.5]]).at[0, 0].set(a)
        return dynjax.max_lyapunov(
            systems.LinearMap(A), jnp.zeros(2), n_steps=300, transient=0
        ).exponents[0]

    a = 1.7
    grad = float(jax.grad(top)(jnp.asarray(a)))
    h = 1e-5
    fd = (float(top(jnp.asarray(a + h))) - float(top(jnp.asarray(a - h)))) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-3)
    np.testing.assert_allclose(grad, 1 / a, rtol=1e-3)


def test_grad_of_short_window_ftle_of_chaotic_flow():
    # The usable gradient for chaotic systems: the finite-time exponent over a
    # short window (here 1 time unit of Lorenz) is a smooth function of rho.
    x0 = jnp.array([-5.0, -6.0, 20.0])

    def ftle(rho):
        return dynjax.finite_time_lyapunov(
            systems.Lorenz(rho=rho),
            x0,
            tau=1.0,
            n_windows=1,
            dt=0.01,
            transient=0.0,
            tangent_warmup=0,
        ).exponents[0, 0]

    rho = 28.0
    grad = float(jax.grad(ftle)(jnp.asarray(rho)))
    h = 1e-4
    fd = (float(ftle(jnp.asarray(rho + h))) - float(ftle(jnp.asarray(rho - h)))) / (
        2 * h
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-3)


# --- resume, progress, interrupts -------------------------------------------


@pytest.fixture(scope="module")
def lorenz_runs():
    x0 = jnp.array([1.0, 1.0, 1.0])
    kw = dict(dt=0.01, interval=10)
    whole = dynjax.lyapunov_spectrum(systems.Lorenz(), x0, n_steps=4000, **kw)
    first = dynjax.lyapunov_spectrum(systems.Lorenz(), x0, n_steps=2000, **kw)
    second = dynjax.lyapunov_spectrum(
        systems.Lorenz(), x0, n_steps=2000, state=first.state, **kw
    )
    return whole, first, second


def test_resume_equals_whole_run(lorenz_runs):
    whole, first, second = lorenz_runs
    np.testing.assert_allclose(second.exponents, whole.exponents, rtol=0, atol=1e-10)
    np.testing.assert_allclose(second.state.x, whole.state.x, rtol=0, atol=1e-10)
    # times are accumulated times: the second half continues the first
    np.testing.assert_allclose(first.times[-1], 20.0, rtol=1e-12)
    np.testing.assert_allclose(second.times[-1], whole.times[-1], rtol=1e-12)
    np.testing.assert_allclose(second.times[0], 20.0 + 0.1, rtol=1e-12)
    assert int(second.state.num_steps) == 4000


def test_resume_driven_map_split_inputs():
    W = 1.2 * jax.random.normal(jax.random.key(2), (5, 5)) / np.sqrt(5)
    rnn = dynjax.DrivenMap(lambda h, u, p: jnp.tanh(p @ h + u), W)
    u = 0.3 * jax.random.normal(jax.random.key(3), (600, 5))
    h0 = jnp.full(5, 0.1)
    whole = dynjax.lyapunov_spectrum(rnn, h0, inputs=u, k=3)
    first = dynjax.lyapunov_spectrum(rnn, h0, inputs=u[:250], k=3)
    second = dynjax.lyapunov_spectrum(rnn, h0, inputs=u[250:], state=first.state)
    np.testing.assert_allclose(second.exponents, whole.exponents, atol=1e-10)


def test_progress_chunks_equal_one_run(lorenz_runs):
    whole, _, _ = lorenz_runs
    chunked = dynjax.lyapunov_spectrum(
        systems.Lorenz(),
        jnp.array([1.0, 1.0, 1.0]),
        n_steps=4000,
        dt=0.01,
        interval=10,
        progress=4,
    )
    np.testing.assert_allclose(chunked.exponents, whole.exponents, atol=1e-10)
    np.testing.assert_allclose(chunked.history, whole.history, atol=1e-10)
    assert chunked.stats["num_steps"] == 4000


def test_interrupt_keeps_completed_chunks(lorenz_runs, monkeypatch):
    whole, _, _ = lorenz_runs
    real_run = _spectrum._piece
    calls = {"n": 0}

    def flaky_run(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # transient chunk, one accumulated chunk, then Ctrl-C
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(_spectrum, "_piece", flaky_run)
    x0 = jnp.array([1.0, 1.0, 1.0])
    with pytest.raises(dynjax.LyapunovInterrupted) as info:
        dynjax.lyapunov_spectrum(
            systems.Lorenz(), x0, n_steps=4000, dt=0.01, interval=10, progress=4
        )
    partial = info.value.result
    assert int(partial.state.num_steps) == 1000
    monkeypatch.setattr(_spectrum, "_piece", real_run)
    rest = dynjax.lyapunov_spectrum(
        systems.Lorenz(), x0, n_steps=3000, dt=0.01, interval=10, state=partial.state
    )
    np.testing.assert_allclose(rest.exponents, whole.exponents, atol=1e-10)


# --- sharding -----------------------------------------------------------------


def test_sharded_parameter_sweep_equals_unsharded():
    script = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax
        jax.config.update("jax_enable_x64", True)
        import equinox as eqx
        import jax.numpy as jnp
        import numpy as np
        from jax.sharding import NamedSharding, PartitionSpec
        import dynjax

        assert jax.device_count() == 4
        x0 = jnp.array([1.0, 1.0, 1.0])

        @eqx.filter_jit
        @eqx.filter_vmap
        def sweep(rho):
            return dynjax.lyapunov_spectrum(
                dynjax.systems.Lorenz(rho=rho), x0, dt=0.01, t_total=10.0, transient=1.0
            ).exponents

        rhos = jnp.linspace(20.0, 35.0, 8)
        mesh = jax.make_mesh((4,), ("p",), axis_types=(jax.sharding.AxisType.Auto,))
        sharded = jax.device_put(rhos, NamedSharding(mesh, PartitionSpec("p")))
        out = sweep(sharded)
        assert len(out.sharding.device_set) == 4, out.sharding
        ref = sweep(rhos)
        np.testing.assert_allclose(
            np.asarray(out), np.asarray(ref), rtol=1e-12, atol=1e-12
        )
        print("OK")
        """
    )
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=4), "exceeds the state dimension"),
        (dict(k=0), "`k` must be >= 1"),
        (dict(interval=0), "`interval` must be >= 1"),
        (dict(interval=-3), "`interval` must be >= 1"),
        (dict(dt=0.0), "`dt` must be a positive"),
        (dict(dt=-0.01), "`dt` must be a positive"),
        (dict(n_steps=0), "`n_steps` must be >= 1"),
        (dict(base="ten"), "`base`"),
        (dict(method="qr"), "`method`"),
    ],
)
def test_structural_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dynjax.lyapunov_spectrum(systems.Lorenz(), jnp.ones(3), **kwargs)


def test_map_and_driven_map_errors():
    with pytest.raises(ValueError, match="`dt` and `t_total` are for flows"):
        dynjax.lyapunov_spectrum(systems.Henon(), jnp.zeros(2), dt=0.1)
    rnn = dynjax.DrivenMap(lambda h, u, p: jnp.tanh(h + u))
    with pytest.raises(ValueError, match="needs its input sequence"):
        dynjax.lyapunov_spectrum(rnn, jnp.zeros(2))
    with pytest.raises(ValueError, match="share their leading"):
        dynjax.lyapunov_spectrum(
            rnn, jnp.zeros(2), inputs={"a": jnp.zeros(10), "b": jnp.zeros((9, 2))}
        )
    with pytest.raises(ValueError, match="leaves no steps"):
        dynjax.lyapunov_spectrum(
            rnn, jnp.zeros(2), inputs=jnp.zeros((5, 2)), transient=5
        )
    with pytest.raises(ValueError, match="dimension"):
        dynjax.lyapunov_spectrum(systems.Lorenz(), jnp.ones(2))


def test_non_finite_x0():
    with pytest.raises(Exception, match="non-finite"):
        dynjax.lyapunov_spectrum(
            systems.Lorenz(), jnp.array([1.0, jnp.nan, 0.0]), t_total=1.0
        )


def test_diverging_trajectory():
    # RK4 with dt = 0.5 is far outside Lorenz's stability region: the orbit blows up.
    kw = dict(dt=0.5, t_total=50.0, transient=0.0)
    with pytest.raises(Exception, match="state became non-finite"):
        dynjax.lyapunov_spectrum(systems.Lorenz(), jnp.ones(3), **kw)
    res = dynjax.lyapunov_spectrum(systems.Lorenz(), jnp.ones(3), throw=False, **kw)
    assert res.result == dynjax.RESULTS.nonfinite_state


def test_tangent_overflow_and_collapse():
    # diag(1e6, 1e-6): with 60 steps between QRs the leading tangent grows to
    # 1e360 (overflow) ...
    big = systems.LinearMap(jnp.diag(jnp.array([1e6, 1e-6])))
    with pytest.raises(Exception, match="overflowed"):
        dynjax.lyapunov_spectrum(
            big, jnp.zeros(2), n_steps=600, interval=60, transient=0
        )
    res = dynjax.lyapunov_spectrum(
        big, jnp.zeros(2), n_steps=600, interval=60, transient=0, throw=False
    )
    assert res.result == dynjax.RESULTS.nonfinite_tangent_map
    # ... and for diag(2, 0.5) 40 steps shrink the second direction by 4^-40 relative
    # to the first, below working precision: its exponent would be rounding noise.
    small = systems.LinearMap(jnp.diag(jnp.array([2.0, 0.5])))
    res = dynjax.lyapunov_spectrum(
        small, jnp.zeros(2), n_steps=400, interval=40, transient=0, throw=False
    )
    assert res.result == dynjax.RESULTS.degenerate_tangent_map
    ok = dynjax.lyapunov_spectrum(
        small, jnp.zeros(2), n_steps=400, interval=4, transient=0
    )
    np.testing.assert_allclose(ok.exponents, [np.log(2), -np.log(2)], rtol=1e-10)


def test_float32_warns():
    with jax.enable_x64(False):
        with pytest.warns(UserWarning, match="float32"):
            res = dynjax.lyapunov_spectrum(
                systems.Henon(), jnp.array([0.1, 0.1], jnp.float32), n_steps=20_000
            )
        assert res.exponents.dtype == jnp.float32
        assert abs(float(res.exponents[0]) - 0.41922) < 0.01


def test_lyapunov_convergence_plot():
    import matplotlib

    matplotlib.use("Agg")
    res = dynjax.lyapunov_spectrum(systems.Henon(), jnp.array([0.1, 0.1]), n_steps=1000)
    ax = dynjax.plot.lyapunov_convergence(res)
    assert len(ax.lines) == 3  # two exponents and the zero line
    for i in range(2):
        np.testing.assert_allclose(ax.lines[i].get_ydata()[-1], res.exponents[i])


# --- merged matrix products ----------------------------------------------------


def test_merged_products_match_dense_jacobian(monkeypatch):
    # f(h) = -h + J tanh(h): Df = -I + J diag(1 - tanh^2 h), formed densely with
    # numpy as the reference. With merging on, the primal and tangent products
    # with J must become one dot_general and give the same numbers.
    from dynjax._lyapunov import _fuse
    from dynjax._lyapunov._tangent import jvp_columns

    net = systems.RandomRateNetwork(30, 2.0, key=jax.random.key(5))
    x = net.default_x0() * 5
    V = jax.random.normal(jax.random.key(6), (30, 4))

    def make_f():  # a fresh function each time: JAX caches traces per function
        return lambda V: jvp_columns(lambda y: net.vector_field(0.0, y), x, V)

    J, xn = np.asarray(net.J), np.asarray(x)
    fx_ref = -xn + J @ np.tanh(xn)
    JV_ref = (-np.eye(30) + J * (1 - np.tanh(xn) ** 2)[None, :]) @ np.asarray(V)
    for enabled, n_dots in ((True, 1), (False, 2)):
        monkeypatch.setattr(_fuse, "ENABLED", enabled)
        fx, JV = jax.jit(make_f())(V)
        np.testing.assert_allclose(fx, fx_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(JV, JV_ref, rtol=1e-12, atol=1e-12)
        jaxpr = jax.make_jaxpr(make_f())(V)
        dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
        assert len(dots) == n_dots
    # and through a whole run (including reverse-mode gradients)
    monkeypatch.setattr(_fuse, "ENABLED", True)

    def top(scale):
        return dynjax.max_lyapunov(
            eqx.tree_at(lambda n: n.J, net, net.J * scale),
            x,
            dt=0.05,
            n_steps=40,
            transient=0.0,
            tangent_warmup=0,
        ).exponents[0]

    merged, g_merged = jax.value_and_grad(top)(1.0)
    monkeypatch.setattr(_fuse, "ENABLED", False)
    separate, g_separate = jax.value_and_grad(top)(1.0)
    np.testing.assert_allclose(merged, separate, rtol=1e-10)
    np.testing.assert_allclose(g_merged, g_separate, rtol=1e-8)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="padding is CPU only")
def test_products_padded_to_full_panels_on_cpu():
    # On CPU a large product's right operand is padded with zero columns to a
    # multiple of 8 (faster in XLA's CPU GEMM); the columns are sliced off again,
    # so the numbers must be those of the plain product (numpy reference).
    from dynjax._lyapunov._fuse import fused_call
    from dynjax._lyapunov._tangent import jvp_columns

    A = jax.random.normal(jax.random.key(0), (200, 200))
    for n, width in ((11, 16), (8, 8), (3, 3)):
        V = jax.random.normal(jax.random.key(n), (200, n))
        out = jax.jit(lambda V: fused_call(lambda V: A @ V, V))(V)
        np.testing.assert_allclose(out, np.asarray(A) @ np.asarray(V), rtol=1e-12)
        jaxpr = jax.make_jaxpr(lambda V: fused_call(lambda V: A @ V, V))(V)
        (dot,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
        assert dot.invars[1].aval.shape == (200, width)
    # merged network products: [tanh h, sech^2 h * V] has 1 + 10 columns -> 16
    net = systems.RandomRateNetwork(200, 2.0, key=jax.random.key(5))
    x = net.default_x0() * 5
    V = jax.random.normal(jax.random.key(6), (200, 10))

    def f(V):
        return jvp_columns(lambda y: net.vector_field(0.0, y), x, V, merge=True)

    fx, JV = jax.jit(f)(V)
    J, xn = np.asarray(net.J), np.asarray(x)
    np.testing.assert_allclose(fx, -xn + J @ np.tanh(xn), rtol=1e-12, atol=1e-12)
    JV_ref = (-np.eye(200) + J * (1 - np.tanh(xn) ** 2)[None, :]) @ np.asarray(V)
    np.testing.assert_allclose(JV, JV_ref, rtol=1e-12, atol=1e-12)
    (dot,) = [
        e for e in jax.make_jaxpr(f)(V).jaxpr.eqns if e.primitive.name == "dot_general"
    ]
    assert dot.invars[1].aval.shape == (200, 16)
