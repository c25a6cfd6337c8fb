"""Jacobians of systems that JAX cannot differentiate in one of its modes.

A `jax.custom_vjp` function has no forward rule, so its Jacobian must come from
reverse mode; a `lax.while_loop` cannot be reverse-differentiated, so it must come
from forward mode. Every value is checked against an analytic Jacobian: the chain
rule for `A sin(x)`, the implicit function theorem (with Cardano's formula for the
root) for a Newton iteration inside the field, the textbook Lorenz Jacobian.
"""

import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import dynjax
from dynjax import systems
from dynjax._system._jacobian import (
    check_reverse_differentiable,
    differentiation_blockers,
    differentiation_mode,
    is_reverse_differentiated,
    tangent_columns,
)


@jax.custom_vjp
def vjp_sin(x):
    return jnp.sin(x)


def _vjp_sin_fwd(x):
    return jnp.sin(x), x


def _vjp_sin_bwd(x, g):
    return (jnp.cos(x) * g,)


vjp_sin.defvjp(_vjp_sin_fwd, _vjp_sin_bwd)


def cubic_root(x):
    """Solves `y^3 + y = x` elementwise by Newton's method in a `lax.while_loop`."""

    def body(carry):
        y, _, n = carry
        y_next = y - (y**3 + y - x) / (3 * y**2 + 1)
        return y_next, jnp.max(jnp.abs(y_next - y)), n + 1

    def cond(carry):
        _, change, n = carry
        return (change > 1e-15) & (n < 50)

    return lax.while_loop(cond, body, (x, jnp.array(jnp.inf, x.dtype), 0))[0]


def cardano(x):
    """The real root of `y^3 + y - x = 0` (Cardano's formula)."""
    x = np.asarray(x)
    s = np.sqrt(x**2 / 4 + 1 / 27)
    return np.cbrt(x / 2 + s) + np.cbrt(x / 2 - s)


A = np.array([[0.5, -0.3, 0.2], [0.1, 0.8, -0.4], [0.3, 0.2, -0.6]])
B = np.array([0.1, -0.2, 0.05])
X = np.array([0.3, -0.7, 1.2])
V = np.array([[1.0, 0.5], [-0.25, 2.0], [0.75, -1.0]])
PARAMS = {"A": A, "b": B}


def vjp_map(n, x, p):
    return p["A"] @ vjp_sin(x) + p["b"]


def vjp_flow(t, x, p):
    return p["A"] @ vjp_sin(x) - x


def newton_flow(t, x, p):
    return cubic_root(x) - p * x


def _systems():
    """(system, evolution function, analytic Jacobian at X)."""
    jac_sin = A * np.cos(X)[None, :]
    vjp_map_system = dynjax.Map(vjp_map, PARAMS, d=3)
    vjp_flow_system = dynjax.Flow(vjp_flow, PARAMS, d=3)
    return {
        "map": (
            vjp_map_system,
            lambda y: vjp_map_system.step(0, y),
            A @ np.sin(X) + B,
            jac_sin,
        ),
        "flow": (
            vjp_flow_system,
            lambda y: vjp_flow_system.vector_field(0.0, y),
            A @ np.sin(X) - X,
            jac_sin - np.eye(3),
        ),
    }


@pytest.mark.parametrize("kind", ["map", "flow"])
def test_custom_vjp_tangents_by_reverse_mode(kind):
    _, fn, value, jac = _systems()[kind]
    x = jnp.asarray(X)
    forward, reverse = differentiation_blockers(fn, x)
    assert "custom_vjp" in forward and "vjp_sin" in forward
    assert reverse is None
    assert differentiation_mode(fn, x) == "reverse"
    fx, JV = tangent_columns(fn, x, jnp.asarray(V))
    np.testing.assert_allclose(fx, value, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(JV, jac @ V, rtol=1e-13, atol=1e-15)
    # Plain forward mode is what fails without the fallback.
    with pytest.raises(TypeError, match="custom_vjp"):
        tangent_columns(fn, x, jnp.asarray(V), mode="forward")


@pytest.mark.parametrize("kind", ["map", "flow"])
def test_custom_vjp_jacobian(kind):
    system, _, _, jac = _systems()[kind]
    x = jnp.asarray(X)
    np.testing.assert_allclose(dynjax.jacobian(system, x), jac, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(
        dynjax.jacobian(system, x, mode="reverse"), jac, rtol=1e-13, atol=1e-15
    )
    with pytest.raises(ValueError, match=r"custom_vjp` function `vjp_sin`.*reverse"):
        dynjax.jacobian(system, x, mode="forward")
    with pytest.raises(ValueError, match="`mode` must be None"):
        dynjax.jacobian(system, x, mode="fwd")


def test_while_loop_field_forward_mode():
    system = dynjax.Flow(newton_flow, 0.5, d=3)
    fn = lambda y: system.vector_field(0.0, y)  # noqa: E731
    x = jnp.asarray(X)
    y = cardano(X)
    # Implicit function theorem: dy/dx = 1 / (3 y^2 + 1).
    jac = np.diag(1 / (3 * y**2 + 1)) - 0.5 * np.eye(3)
    assert differentiation_blockers(fn, x)[0] is None
    assert "lax.while_loop" in differentiation_blockers(fn, x)[1]
    assert differentiation_mode(fn, x) == "forward"
    fx, JV = tangent_columns(fn, x, jnp.asarray(V))
    np.testing.assert_allclose(fx, y - 0.5 * X, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(JV, jac @ V, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dynjax.jacobian(system, x), jac, rtol=1e-13)
    with pytest.raises(
        ValueError,
        match=r"reverse-mode differentiation.*lax.while_loop.*mode='forward'",
    ):
        dynjax.jacobian(system, x, mode="reverse")


def test_reverse_mode_equals_forward_mode():
    lorenz = systems.Lorenz()
    x = jnp.array([1.5, -2.0, 20.0])
    s, r, b = 10.0, 28.0, 8.0 / 3.0
    jac = np.array([[-s, s, 0.0], [r - x[2], -1.0, -x[0]], [x[1], x[0], -b]])
    fn = lambda y: lorenz.vector_field(0.0, y)  # noqa: E731
    assert differentiation_blockers(fn, x) == (None, None)
    Vl = jnp.asarray(V)
    fx_f, JV_f = tangent_columns(fn, x, Vl, mode="forward")
    fx_r, JV_r = tangent_columns(fn, x, Vl, mode="reverse")
    np.testing.assert_allclose(JV_f, jac @ V, rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(JV_r, JV_f, rtol=1e-14, atol=1e-13)
    np.testing.assert_array_equal(fx_r, fx_f)
    np.testing.assert_allclose(
        dynjax.jacobian(lorenz, x, mode="reverse"), jac, rtol=1e-14, atol=1e-13
    )


def test_tangent_columns_under_jit_and_vmap():
    p = jnp.asarray(A)
    xs = jnp.stack([jnp.asarray(X), -jnp.asarray(X), 0.5 * jnp.asarray(X)])

    @jax.jit
    def run(p, xs):
        fn_of = lambda x: tangent_columns(lambda y: p @ vjp_sin(y), x, jnp.asarray(V))  # noqa: E731
        return jax.vmap(fn_of)(xs)[1]

    JV = run(p, xs)
    for x, jv in zip(np.asarray(xs), JV):
        np.testing.assert_allclose(jv, (A * np.cos(x)) @ V, rtol=1e-13, atol=1e-15)


def test_gradient_through_reverse_mode_tangents():
    # d/dp sum(J V) for fn(y) = p * vjp_sin(y): J = p diag(cos x), so the
    # derivative is sum(diag(cos x) V).
    x, Vl = jnp.asarray(X), jnp.asarray(V)

    def loss(p):
        return jnp.sum(tangent_columns(lambda y: p * vjp_sin(y), x, Vl)[1])

    expected = np.sum(np.cos(X)[:, None] * V)
    np.testing.assert_allclose(jax.grad(loss)(1.3), expected, rtol=1e-13)
    h = 1e-5
    central = (loss(1.3 + h) - loss(1.3 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(loss)(1.3), central, rtol=1e-8)


def test_both_modes_impossible():
    x = jnp.asarray(X)
    fn = lambda y: vjp_sin(cubic_root(y))  # noqa: E731
    match = r"either mode.*custom_vjp` function `vjp_sin`.*lax.while_loop.*custom_jvp"
    with pytest.raises(ValueError, match=match):
        tangent_columns(fn, x, jnp.asarray(V))
    system = dynjax.Flow(lambda t, y, p: fn(y), d=3)
    with pytest.raises(ValueError, match=match):
        dynjax.jacobian(system, x)


def test_callback_blocks_both_modes():
    def fn(y):
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(y.shape, y.dtype), y)

    forward, reverse = differentiation_blockers(fn, jnp.asarray(X))
    assert "pure_callback" in forward and forward == reverse
    with pytest.raises(ValueError, match="either forward or reverse.*pure_callback"):
        differentiation_mode(fn, jnp.asarray(X))


def _in_jit(y):
    return jax.jit(lambda z: 2.0 * vjp_sin(z))(y)


def _in_cond(y):
    return lax.cond(y[0] > 0, vjp_sin, jnp.cos, y)


def _in_scan(y):
    return lax.scan(lambda c, _: (vjp_sin(c), None), y, None, length=3)[0]


def _in_while_body(y):
    return lax.fori_loop(0, jnp.int32(y[0] > 0) + 2, lambda i, c: vjp_sin(c), y)


@pytest.mark.parametrize("fn", [_in_jit, _in_cond, _in_scan, _in_while_body])
def test_custom_vjp_found_when_nested(fn):
    forward, reverse = differentiation_blockers(fn, jnp.asarray(X))
    assert "custom_vjp" in forward and "vjp_sin" in forward
    if fn is _in_while_body:
        assert "lax.while_loop" in reverse
    else:
        assert reverse is None


def test_blockers_follow_the_state_only():
    x = jnp.asarray(X)
    c = jnp.asarray(B)
    # The custom_vjp and the while loop act on a constant: both modes work.
    assert differentiation_blockers(lambda y: y * vjp_sin(c), x) == (None, None)
    assert differentiation_blockers(lambda y: y * cubic_root(c), x) == (None, None)
    fx, JV = tangent_columns(lambda y: y * cubic_root(c), x, jnp.asarray(V), "reverse")
    np.testing.assert_allclose(JV, cardano(B)[:, None] * V, rtol=1e-13)
    # A static-bound fori_loop is a scan: reverse mode works.
    static = lambda y: lax.fori_loop(0, 3, lambda i, z: jnp.sin(z), y)  # noqa: E731
    assert differentiation_blockers(static, x) == (None, None)


def test_custom_jvp_rules_replace_their_bodies():
    # A Newton solve with an implicit-function custom_jvp rule is differentiable
    # in both modes, although its body is a while loop.
    @jax.custom_jvp
    def implicit_root(x):
        return cubic_root(x)

    @implicit_root.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        y = cubic_root(x)
        return y, t / (3 * y**2 + 1)

    x, Vl = jnp.asarray(X), jnp.asarray(V)
    assert differentiation_blockers(implicit_root, x) == (None, None)
    jac = np.diag(1 / (3 * cardano(X) ** 2 + 1))
    _, JV = tangent_columns(implicit_root, x, Vl, mode="reverse")
    np.testing.assert_allclose(JV, jac @ V, rtol=1e-13)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("lax", (False, True)),
        ("checkpointed", (True, False)),
        ("bounded", (False, False)),
    ],
)
def test_equinox_while_loops(kind, expected):
    def fn(y):
        body = lambda carry: (carry[0] + 1, jnp.sin(carry[1]))  # noqa: E731
        init = (0, y)
        return eqxi.while_loop(lambda c: c[0] < 3, body, init, max_steps=5, kind=kind)[
            1
        ]

    forward, reverse = differentiation_blockers(fn, jnp.asarray(X))
    assert (forward is not None, reverse is not None) == expected


def test_differentiated_parameters_count():
    # The while loop depends on the parameter only: irrelevant for d/dx, but it
    # blocks `jax.grad` with respect to the parameter.
    x = jnp.asarray(X)
    found = []

    def probe(p):
        fn = lambda y: y * cubic_root(p)  # noqa: E731
        found.append(differentiation_blockers(fn, x)[1])
        return jnp.sum(fn(x))

    probe(jnp.asarray(B))
    jax.jvp(probe, (jnp.asarray(B),), (jnp.ones(3),))
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        jax.grad(probe)(jnp.asarray(B))
    assert (
        found[0] is None
        and "lax.while_loop" in found[1]
        and "lax.while_loop" in found[2]
    )


def test_check_reverse_differentiable():
    x = jnp.asarray(X)
    with pytest.raises(
        ValueError,
        match=r"dynjax.lyapunov_spectrum is being differentiated in reverse mode.*"
        r"lax.while_loop.*cubic_root.*jax.jacfwd.*static Python-int bounds.*"
        r"lax.scan.*max_steps=N, kind=\"checkpointed\"",
    ):
        check_reverse_differentiable(cubic_root, x, "dynjax.lyapunov_spectrum")
    # Nothing to say for reverse-differentiable functions, custom_vjp included.
    assert check_reverse_differentiable(vjp_sin, x, "dynjax.lyapunov_spectrum") is None
    assert check_reverse_differentiable(jnp.sin, x, "dynjax.lyapunov_spectrum") is None
    # The claim behind the message: JAX's reverse mode fails, forward mode works.
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        jax.grad(lambda y: jnp.sum(cubic_root(y)))(x)
    np.testing.assert_allclose(
        jax.jacfwd(cubic_root)(x), np.diag(1 / (3 * cardano(X) ** 2 + 1)), rtol=1e-13
    )


def _probe(record):
    def f(x):
        record.append(is_reverse_differentiated({"x": x, "name": "static"}))
        return jnp.sum(jnp.sin(x))

    return f


X2 = np.ones((2, 3))
TRANSFORMS = {
    "grad": (lambda f: jax.grad(f)(jnp.ones(3)), True),
    "vjp": (lambda f: jax.vjp(f, jnp.ones(3)), True),
    "jacrev": (lambda f: jax.jacrev(f)(jnp.ones(3)), True),
    "vmap of grad": (lambda f: jax.vmap(jax.grad(f))(jnp.asarray(X2)), True),
    "grad of vmap": (
        lambda f: jax.grad(lambda x: jnp.sum(jax.vmap(f)(x)))(jnp.asarray(X2)),
        True,
    ),
    "jvp of grad": (
        lambda f: jax.jvp(jax.grad(f), (jnp.ones(3),), (jnp.ones(3),)),
        True,
    ),
    "grad of jvp": (
        lambda f: jax.grad(lambda x: jax.jvp(f, (x,), (x,))[1])(jnp.ones(3)),
        True,
    ),
    "hessian": (lambda f: jax.hessian(f)(jnp.ones(3)), True),
    "jvp": (lambda f: jax.jvp(f, (jnp.ones(3),), (jnp.ones(3),)), False),
    "jacfwd": (lambda f: jax.jacfwd(f)(jnp.ones(3)), False),
    "vmap": (lambda f: jax.vmap(f)(jnp.asarray(X2)), False),
    "jit": (lambda f: jax.jit(f)(jnp.ones(3)), False),
    "eager": (lambda f: f(jnp.ones(3)), False),
    # The documented limit: under jit the leaves are plain tracers.
    "grad of jit": (lambda f: jax.grad(jax.jit(f))(jnp.ones(3)), False),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_is_reverse_differentiated(name):
    transform, expected = TRANSFORMS[name]
    record = []
    transform(_probe(record))
    assert record and all(r is expected for r in record)
