"""`vmap_last` (batch axis kept last) against `jax.vmap`, primitive by primitive.

The reference is JAX's own batching of the same function; each case exercises
rules of `dynjax._vmap_last` (elementwise with rank-0 and size-1 broadcasting,
stack, concatenate, slicing, transposes, broadcasts, reshapes, reductions,
small matrix products, nested jit and custom_jvp calls, select).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax import systems
from dynjax._vmap_last import Unsupported, vmap_last


A = jnp.array([[0.3, -1.2, 0.5], [0.9, 0.1, -0.4], [0.2, 0.7, 1.1]])


def lorenz_like(x, c):
    a, b, z = x
    return jnp.stack([c * (b - a), a * (28.0 - z) - b, a * b - 8.0 / 3.0 * z])


def matrix_and_reductions(x, c):
    y = A @ x + c * jnp.sum(x**2)
    return jnp.concatenate([y[1:], jnp.max(x)[None]]) * jnp.tanh(x[0])


def outer_and_reshape(x, c):
    M = jnp.outer(x, x).T + jnp.eye(3)[:, :1] * c  # size-1 broadcast
    return jnp.reshape(M, (9,))[::2] + jnp.broadcast_to(x[2], (5,))


def nested_calls(x, c):
    y = jax.jit(lambda v: jnp.sin(v) * c)(x)
    return jnp.where(y > 0, jax.nn.softplus(y), x @ A) ** 3


def tangents(x, c):
    # The shape of use in the Jacobian method: a jvp vmapped over columns.
    V = jnp.eye(3) + c
    return jax.vmap(lambda v: jax.jvp(lambda y: lorenz_like(y, c), (x,), (v,))[1])(V)


@pytest.mark.parametrize(
    "fn",
    [lorenz_like, matrix_and_reductions, outer_and_reshape, nested_calls, tangents],
)
def test_vmap_last_equals_vmap(fn):
    x = jax.random.normal(jax.random.key(0), (3, 37))
    c = jax.random.normal(jax.random.key(1), (37,))
    got = jax.jit(vmap_last(fn, (True, True)))(x, c)
    ref = jax.vmap(fn, in_axes=-1, out_axes=-1)(x, c)
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-14)
    # an unbatched argument is broadcast
    got = jax.jit(vmap_last(fn, (True, False)))(x, c[0])
    ref = jax.vmap(fn, in_axes=(-1, None), out_axes=-1)(x, c[0])
    np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-14)


def test_vmap_last_unsupported_primitive():
    def with_loop(x, c):
        return jax.lax.fori_loop(0, 3, lambda i, y: y * c, x)

    with pytest.raises(Unsupported):
        vmap_last(with_loop, (True, True))(jnp.ones((3, 4)), jnp.ones(4))


def test_propagators_fall_back_to_vmap(monkeypatch):
    # A flow whose vector field has a loop: no vmap_last rule, so the
    # propagators come from jax.vmap of jax.jacfwd; same numbers as matrix-free.
    flow = dynjax.Flow(
        lambda t, x, p: jax.lax.fori_loop(
            0, 2, lambda i, y: y, jnp.array([-p * x[0] + x[1], -x[0] - p * x[1]])
        ),
        0.5,
    )
    kw = dict(dt=0.01, n_steps=2000, interval=10)
    jac = dynjax.lyapunov_spectrum(flow, jnp.ones(2), method="jacobian", **kw)
    ref = dynjax.lyapunov_spectrum(flow, jnp.ones(2), method="matrix-free", **kw)
    np.testing.assert_allclose(jac.exponents, ref.exponents, rtol=1e-10)
    np.testing.assert_allclose(jac.exponents, [-0.5, -0.5], atol=1e-2)


def test_jacobian_method_grad_and_vmap():
    # Through vmap_last: reverse-mode gradients and an outer vmap over a
    # parameter match the matrix-free method (a different computation order).
    x0 = jnp.array([1.0, 1.0, 1.0])

    def top(rho, method):
        return dynjax.lyapunov_spectrum(
            systems.Lorenz(rho=rho),
            x0,
            dt=0.01,
            n_steps=400,
            interval=10,
            transient=1.0,
            method=method,
            gradient="full",  # through the transient too, as the differences are
        ).exponents

    g_jac = jax.grad(lambda r: top(r, "jacobian")[0])(28.0)
    g_free = jax.grad(lambda r: top(r, "matrix-free")[0])(28.0)
    np.testing.assert_allclose(g_jac, g_free, rtol=1e-8)
    h = 1e-5  # and central differences (5 time units: the orbit stays smooth)
    fd = (top(28.0 + h, "jacobian")[0] - top(28.0 - h, "jacobian")[0]) / (2 * h)
    np.testing.assert_allclose(g_jac, fd, rtol=1e-5)
    rhos = jnp.array([24.0, 28.0, 40.0])
    batched = eqx.filter_vmap(lambda r: top(r, "jacobian"))(rhos)
    for i, r in enumerate(rhos):
        np.testing.assert_allclose(batched[i], top(r, "matrix-free"), rtol=1e-9)
