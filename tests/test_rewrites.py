"""Speed rewrites may only ever fall back: `fused_call` and `vmap_last`.

`fused_call(fn, *args)` must equal `fn(*args)` whenever the latter succeeds, and
`vmap_last(fn)` must equal `jax.vmap(fn)` or raise `Unsupported` (and nothing
else), so that callers fall back. The references are the plain computations
(`jax.jvp` vmapped over tangent columns, exactly as `_tangent.jvp_columns` builds
it, and `jax.vmap`), analytic Jacobians written out in NumPy for the failing
inputs of issue 10 (item 12), and an independent Benettin QR iteration in NumPy
for the end-to-end Lyapunov spectra.
"""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax import _vmap_last
from dynjax._lyapunov import _fuse
from dynjax._lyapunov._fuse import fused_call
from dynjax._lyapunov._tangent import TangentFlow
from dynjax._vmap_last import Unsupported, vmap_last, vmap_last_cost


def columns_of(F, x):
    """The matrix-free tangent step as `_tangent.jvp_columns` builds it."""
    return jax.vmap(lambda v: jax.jvp(F, (x,), (v,)), in_axes=1, out_axes=(None, 1))


def step_of(F):
    """`(x, V) -> (F(x), DF(x) V)`: the function `vmap_last` re-batches."""
    return lambda x, V: columns_of(F, x)(V)


def n_dots(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return sum(e.primitive.name == "dot_general" for e in jaxpr.jaxpr.eqns)


def assert_vmap_last_equals_vmap(fn, *args, rtol=1e-12, atol=1e-12, refusal=None):
    """`vmap_last` equals `jax.vmap` over the trailing axis, or is refused with a
    message containing `refusal` (if given; otherwise it must not be refused)."""
    ref = jax.vmap(fn, in_axes=-1, out_axes=-1)(*args)
    try:
        got = vmap_last(fn, (True,) * len(args))(*args)
    except Unsupported as e:
        if refusal is None or refusal not in str(e):
            raise
        return False
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        assert g.dtype == r.dtype
        np.testing.assert_allclose(
            np.asarray(g, np.float64), np.asarray(r, np.float64), rtol=rtol, atol=atol
        )
    return True


def _batch(d, n, seed):
    X = jax.random.normal(jax.random.key(seed), (d, n))
    V = jax.random.normal(jax.random.key(seed + 1), (d, d, n))
    return X, V


# --- the failing inputs of the issue --------------------------------------------

A = jax.random.normal(jax.random.key(10), (3, 3)) / 2
B = jax.random.normal(jax.random.key(11), (3, 3)) / 2
X0 = jnp.array([0.3, -0.7, 1.1])
V0 = jax.random.normal(jax.random.key(12), (3, 3))


def crossed(x):
    # Two parameter matrices in crossed order (a two-layer net with a skip path):
    # merging both pairs of products with A and with B would form a cycle.
    return A @ jnp.tanh(B @ x) + B @ jnp.tanh(A @ x)


def transposed(x):
    # One matrix as W and as W^T, through einsum: the same cycle with one matrix.
    W = A
    return jnp.einsum("ij,j->i", W, jnp.tanh(jnp.einsum("ji,j->i", W, x))) + (
        jnp.einsum("ji,j->i", W, jnp.sin(jnp.einsum("ij,j->i", W, x)))
    )


def crossed_reference(x, V):
    a, b, x, V = map(np.asarray, (A, B, x, V))
    sa, sb = 1 - np.tanh(a @ x) ** 2, 1 - np.tanh(b @ x) ** 2
    fx = a @ np.tanh(b @ x) + b @ np.tanh(a @ x)
    J = a @ (sb[:, None] * b) + b @ (sa[:, None] * a)
    return fx, J @ V


def transposed_reference(x, V):
    w, x, V = np.asarray(A), np.asarray(x), np.asarray(V)
    fx = w @ np.tanh(w.T @ x) + w.T @ np.sin(w @ x)
    J = w @ ((1 - np.tanh(w.T @ x) ** 2)[:, None] * w.T) + w.T @ (
        np.cos(w @ x)[:, None] * w
    )
    return fx, J @ V


@pytest.mark.parametrize(
    "F, reference", [(crossed, crossed_reference), (transposed, transposed_reference)]
)
def test_cycle_inputs(F, reference):
    columns = columns_of(F, X0)
    fx_ref, JV_ref = reference(X0, V0)
    for fn in (
        lambda V: fused_call(columns, V),
        jax.jit(lambda V: fused_call(columns, V)),
    ):
        fx, JV = fn(V0)
        np.testing.assert_allclose(fx, fx_ref, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(JV, JV_ref, rtol=1e-13, atol=1e-13)
    # and products were merged (not just left alone): 8 products, fewer after
    assert n_dots(columns, V0) == 8
    assert n_dots(lambda V: fused_call(columns, V), V0) < 8
    assert assert_vmap_last_equals_vmap(step_of(F), *_batch(3, 9, 0))


W16 = (jax.random.normal(jax.random.key(13), (3, 3)) / 2).astype(jnp.bfloat16)


def bf16_products(x):
    # bfloat16 weights, float32 accumulation, two products sharing the weights.
    def dot(v):
        return jax.lax.dot_general(
            W16,
            v.astype(jnp.bfloat16),
            (((1,), (0,)), ((), ())),
            preferred_element_type=jnp.float32,
        )

    return (jnp.tanh(dot(x)) + dot(jnp.sin(x))).astype(x.dtype)


def test_bfloat16_weights_float32_accumulation():
    w = np.asarray(W16, np.float32)

    def bf16(a):  # rounding to bfloat16 (ml_dtypes), exact in float32 after
        return np.asarray(a, np.float32).astype(jnp.bfloat16).astype(np.float32)

    x, V = np.asarray(X0), np.asarray(V0)
    h = w @ bf16(x)
    fx_ref = np.tanh(h) + w @ bf16(np.sin(x))
    JV_ref = (1 - np.tanh(h) ** 2)[:, None] * (w @ bf16(V)) + w @ bf16(
        np.cos(x)[:, None] * V
    )
    columns = columns_of(bf16_products, X0)
    fx, JV = jax.jit(lambda V: fused_call(columns, V))(V0)
    assert fx.dtype == JV.dtype == jnp.float64
    # float32 accumulation: agreement to float32 rounding (and the bf16 rounding
    # of the tangents, which a summation-order difference can flip: rare)
    np.testing.assert_allclose(fx, fx_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(JV, JV_ref, rtol=1e-2, atol=1e-2)
    plain = jax.jit(columns)(V0)
    np.testing.assert_allclose(fx, plain[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(JV, plain[1], rtol=1e-6, atol=1e-6)
    # the batch-last rewrite computes the products as the equation binds them
    X, Vb = _batch(3, 9, 2)
    assert assert_vmap_last_equals_vmap(step_of(bf16_products), X, Vb, rtol=1e-6)


@jax.custom_jvp
def sin_host(x):
    return jax.pure_callback(
        np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="sequential"
    )


@sin_host.defjvp
def _sin_host_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return sin_host(x), jnp.cos(x) * t


@jax.custom_jvp
def sin_host_unbatchable(x):  # no vmap_method: jax.vmap of it is an error
    return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)


@sin_host_unbatchable.defjvp
def _sin_host_unbatchable_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return sin_host_unbatchable(x), jnp.cos(x) * t


@pytest.mark.parametrize("host", [sin_host, sin_host_unbatchable])
def test_callbacks(host):
    def F(x):
        return A @ host(B @ x) + A @ x

    a, b, x, V = map(np.asarray, (A, B, X0, V0))
    fx_ref = a @ np.sin(b @ x) + a @ x
    JV_ref = (a @ (np.cos(b @ x)[:, None] * b) + a) @ V
    columns = columns_of(F, X0)
    for fn in (
        lambda V: fused_call(columns, V),
        jax.jit(lambda V: fused_call(columns, V)),
    ):
        fx, JV = fn(V0)
        np.testing.assert_allclose(fx, fx_ref, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(JV, JV_ref, rtol=1e-13, atol=1e-13)
    # never re-batched by vmap_last, whether or not jax.vmap could batch it
    with pytest.raises(Unsupported, match="callback"):
        vmap_last(step_of(F), (True, True))(*_batch(3, 5, 3))
    with pytest.raises(Unsupported, match="callback"):
        vmap_last_cost(step_of(F), (True, True), *_batch(3, 5, 3))
    # nor run unbatched inside a re-batched program
    with pytest.raises(Unsupported, match="callback"):
        vmap_last(lambda x: x * host(X0), (True,))(jnp.ones((3, 4)))


def test_effects_are_refused_and_keep_their_order():
    seen = []

    def F(x):
        jax.debug.callback(lambda v: seen.append(("first", float(v))), x[0])
        y = A @ jnp.tanh(A @ x)
        jax.debug.callback(lambda v: seen.append(("second", float(v))), y[0])
        return A @ y

    with pytest.raises(Unsupported, match="callback"):
        vmap_last(F, (True,))(jnp.ones((3, 4)))
    out = jax.jit(lambda x: fused_call(F, x))(X0)
    np.testing.assert_allclose(out, F(X0), rtol=1e-14)
    assert [s[0] for s in seen] == ["first", "second", "first", "second"]


def test_fused_call_only_ever_falls_back(monkeypatch):
    columns = columns_of(crossed, X0)
    ref = columns(V0)

    def broken(*args):
        raise RuntimeError("a bug in the rewrite")

    # a failure anywhere in the rewrite machinery: the plain call runs
    for name in ("_fused_dot", "_plan", "_evaluate"):
        with monkeypatch.context() as m:
            m.setattr(_fuse, name, broken)
            got = fused_call(columns, V0)
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)

    # an error of the function itself propagates unchanged
    def bad(V):
        raise ValueError("the user's own error")

    with pytest.raises(ValueError, match="the user's own error"):
        fused_call(bad, V0)
    with pytest.raises(TypeError, match="dot_general requires contracting"):
        fused_call(lambda V: A @ V[:2], V0)


def test_vmap_last_raises_only_unsupported(monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("a bug in a rule")

    monkeypatch.setattr(_vmap_last, "_elementwise", broken)
    with pytest.raises(Unsupported, match="a bug in a rule"):
        vmap_last(step_of(crossed), (True, True))(*_batch(3, 4, 4))
    monkeypatch.undo()
    # an error of the function is also Unsupported here (jax.vmap raises it)
    with pytest.raises(Unsupported, match="dot_general requires contracting"):
        vmap_last(lambda x: A @ x[:2], (True,))(jnp.ones((3, 4)))
    with pytest.raises(TypeError, match="dot_general requires contracting"):
        jax.vmap(lambda x: A @ x[:2], in_axes=-1)(jnp.ones((3, 4)))


def mlp_step(width):
    mlp = eqx.nn.MLP(3, 3, width, 2, key=jax.random.key(0))
    tangent = TangentFlow(dynjax.Flow(lambda t, x, p: mlp(x), None, d=3), None, False)
    return lambda t, x, V: tangent.tangent_step(t, x, V, None, 0.01, None)


def test_cost_bound():
    # The unrolled program of an MLP field (width 8, depth 2) is refused: its
    # compile time and memory under grad are what the bound is for (see
    # `_vmap_last._MAX_OPS`); the Lorenz step is well inside it.
    n = 50
    specs = (jnp.zeros(n), jnp.zeros((3, n)), jnp.zeros((3, 3, n)))
    with pytest.raises(Unsupported, match="vector operations"):
        vmap_last(mlp_step(8), (True,) * 3)(*specs)
    lorenz = TangentFlow(dynjax.systems.Lorenz(), None, False)
    step = lambda t, x, V: lorenz.tangent_step(t, x, V, None, 0.01, None)  # noqa: E731
    cost = vmap_last_cost(step, (True,) * 3, *specs)
    assert cost < _vmap_last._MAX_OPS // 2
    # The cost is the size of the emitted program: within a factor 2 of the
    # number of its equations (structural ones included).
    emitted = len(jax.make_jaxpr(vmap_last(step, (True,) * 3))(*specs).jaxpr.eqns)
    assert cost / 2 < emitted < 2 * cost
    with pytest.raises(Unsupported, match=r"bound 10\)"):
        vmap_last(step, (True,) * 3, max_ops=10)(*specs)


def test_cond_and_split_rules_under_grad():
    # cond on a batched predicate (every branch, then a selection, as jax.vmap
    # does), the split rule and a product with a batched left operand,
    # differentiated: reverse mode through vmap_last equals reverse mode through
    # jax.vmap.
    def F(x, M):
        h = jax.lax.cond(jnp.sum(x) > 0, jnp.sin, lambda v: M.T @ v, x)
        a, b = jnp.split(h, [1])
        return jnp.concatenate([b, a]) * jnp.tanh(M @ x) + x @ M

    X, V = _batch(3, 6, 5)
    assert jnp.any(jnp.sum(X, 0) > 0) and jnp.any(jnp.sum(X, 0) < 0)

    def loss(M, mapper):
        step = lambda x, V: columns_of(lambda y: F(y, M), x)(V)  # noqa: E731
        fx, JV = mapper(step)(X, V)
        return jnp.sum(fx**2) + jnp.sum(JV**2)

    last = lambda f: vmap_last(f, (True, True))  # noqa: E731
    plain = lambda f: jax.vmap(f, in_axes=-1, out_axes=-1)  # noqa: E731
    val, grad = jax.value_and_grad(loss)(A, last)
    val_ref, grad_ref = jax.value_and_grad(loss)(A, plain)
    np.testing.assert_allclose(val, val_ref, rtol=1e-13)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-12, atol=1e-12)


# --- random compositions ---------------------------------------------------------

NONLINEAR = (jnp.tanh, jnp.sin, lambda h: jnp.maximum(h, 0.0), jax.nn.sigmoid)
OPS = (
    "matmul",  # M_i @ h
    "matmul_T",  # M_i.T @ h
    "rmatmul",  # h @ M_i
    "einsum",  # einsum("ij,j->i", M_i, h)
    "einsum_T",  # einsum("ji,j->i", M_i, h)
    "skip",  # h + M_i tanh(M_j x) + M_j tanh(M_i x): crossed orders
    "nonlinear",
    "where",
    "cond",  # lax.cond on a data-dependent predicate
    "sum",  # a reduction broadcast back
    "max",
    "outer",  # a product of two state-dependent matrices, transposed
)


def build(spec, mats):
    """`x -> y`, `(d,) -> (d,)`, from a list of `(op, i, j)`."""

    def F(x):
        h = x
        for op, i, j in spec:
            M, N = mats[i % len(mats)], mats[j % len(mats)]
            if op == "matmul":
                h = M @ h
            elif op == "matmul_T":
                h = M.T @ h
            elif op == "rmatmul":
                h = h @ M
            elif op == "einsum":
                h = jnp.einsum("ij,j->i", M, h)
            elif op == "einsum_T":
                h = jnp.einsum("ji,j->i", M, h)
            elif op == "skip":
                h = h + M @ jnp.tanh(N @ x) + N @ jnp.tanh(M @ x)
            elif op == "nonlinear":
                h = NONLINEAR[i % len(NONLINEAR)](h)
            elif op == "where":
                h = jnp.where(h > 0, h, 0.3 * h)
            elif op == "cond":
                h = jax.lax.cond(
                    jnp.sum(h) > 0, jnp.sin, lambda v, N=N: jnp.tanh(N.T @ v), h
                )
            elif op == "sum":
                h = h - 0.1 * jnp.sum(h)
            elif op == "max":
                h = h - jnp.max(h)
            elif op == "outer":
                h = jnp.tanh(jnp.outer(h, x)).T @ h / h.shape[0]
        return 0.9 * jnp.tanh(h)

    return F


@st.composite
def systems_(draw):
    d = draw(st.integers(2, 5))
    n_mats = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    spec = draw(
        st.lists(
            st.tuples(st.sampled_from(OPS), st.integers(0, 5), st.integers(0, 5)),
            min_size=1,
            max_size=6,
        )
    )
    keys = jax.random.split(jax.random.key(seed), n_mats + 2)
    mats = [jax.random.normal(k, (d, d)) / np.sqrt(d) for k in keys[:n_mats]]
    x = jax.random.normal(keys[-2], (d,))
    V = jax.random.normal(keys[-1], (d, d))
    return d, spec, mats, x, V


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(systems_())
def test_random_compositions(system):
    d, spec, mats, x, V = system
    F = build(spec, mats)
    columns = columns_of(F, x)
    # (a) merged products equal the plain jvp path
    fx, JV = fused_call(columns, V)
    fx_ref, JV_ref = columns(V)
    np.testing.assert_allclose(fx, fx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(JV, JV_ref, rtol=1e-12, atol=1e-12)
    # (b) the batch-last tangent step equals jax.vmap (or is refused), with and
    # without the merge inside it (the Jacobian method runs both nested). Every
    # primitive here has a rule: the only admissible refusal is the cost bound.
    X, Vb = _batch(d, 5, len(spec))
    bound = "vector operations"
    assert_vmap_last_equals_vmap(step_of(F), X, Vb, refusal=bound)
    assert_vmap_last_equals_vmap(
        lambda x, V: fused_call(columns_of(F, x), V), X, Vb, refusal=bound
    )


# --- end to end: both Lyapunov methods against a NumPy Benettin QR ---------------


def benettin(F, x0, n_transient, n_steps):
    """Lyapunov exponents by QR of `jax.jacfwd(F)` products, step by step."""
    jac = jax.jit(jax.jacfwd(F))
    step = jax.jit(F)
    x = x0
    for _ in range(n_transient):
        x = step(x)
    Q = np.eye(x0.shape[0])
    total = np.zeros(x0.shape[0])
    for _ in range(n_steps):
        Q, R = np.linalg.qr(np.asarray(jac(x)) @ Q)
        signs = np.sign(np.diag(R))
        Q, R = Q * signs, R * signs[:, None]
        total += np.log(np.diag(R))
        x = step(x)
    return total / n_steps


# A chaotic map (exponents about 0.45, -0.19, -3.58) with crossed products and
# transposes, and a map with cond, where and a reduction that settles on an
# attractor with negative exponents: both with orbits that the two
# computations follow alike (a chaotic map with cond and where does not: its
# orbits part at the first rounding difference, and finite-time averages over
# different orbits differ by ~0.03).
E2E = [
    (3, [("skip", 0, 1), ("nonlinear", 1, 0), ("matmul_T", 1, 0)], 2.0, 1),
    (4, [("einsum", 0, 0), ("cond", 0, 1), ("where", 0, 0), ("sum", 0, 0)], 2.0, 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("d, spec, gain, seed", E2E)
@pytest.mark.parametrize("method", ["jacobian", "matrix-free"])
def test_end_to_end_against_benettin(d, spec, gain, seed, method):
    keys = jax.random.split(jax.random.key(seed), 3)
    mats = [gain * jax.random.normal(k, (d, d)) / np.sqrt(d) for k in keys[:2]]
    x0 = jax.random.normal(keys[2], (d,))

    def F(n, x, p):
        return build(spec, p)(x)

    n_transient, n_warmup, n_steps, interval = 200, 50, 5000, 5
    res = dynjax.lyapunov_spectrum(
        dynjax.Map(F, mats, d=d),
        x0,
        n_steps=n_steps,
        interval=interval,
        transient=n_transient,
        tangent_warmup=n_warmup,
        method=method,
    )
    # The reference's warm-up is the same number of steps, from the identity
    # instead of a random block: the averages then differ by the log-volume
    # ratio of the two blocks over n_steps (measured: 2e-4 to 4e-4 at 5000).
    ref = benettin(
        lambda x: F(0, x, mats), x0, n_transient + n_warmup * interval, n_steps
    )
    np.testing.assert_allclose(np.sort(res.exponents), np.sort(ref), atol=1e-3)
