"""dynjax.rnn: recurrent cells as driven maps (float64).

References: the hand-derived Jacobian of a vanilla RNN, `diag(phi'(a)) W`; central
finite differences; equinox's own `eqx.nn.GRUCell` / `eqx.nn.LSTMCell` (an
independent implementation of the gate equations); a NumPy recurrence.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dynjax
from dynjax._lyapunov._tangent import jvp_columns
from dynjax.rnn import Cell, GRU, LSTM, VanillaRNN


N, M = 6, 3


def _jvp_tangent(cell, x, u):
    """The tangent the Lyapunov engine propagates: `jax.jvp` over the columns of
    the identity."""
    _, V = jvp_columns(lambda z: cell.step(z, u), x, jnp.eye(x.shape[0]))
    return V


def _central_differences(cell, x, u, eps=1e-6):
    # Column j: (F(x + eps e_j) - F(x - eps e_j)) / (2 eps); rows of `E` are e_j.
    E = eps * jnp.eye(x.shape[0])
    step = jax.vmap(lambda e: cell.step(x + e, u) - cell.step(x - e, u))
    return step(E).T / (2 * eps)


@pytest.mark.parametrize(
    "activation, derivative",
    [
        (jnp.tanh, lambda a: 1.0 - np.tanh(a) ** 2),
        (jax.nn.softplus, lambda a: 1.0 / (1.0 + np.exp(-a))),
    ],
)
def test_vanilla_jacobian_is_hand_derived(activation, derivative):
    cell = VanillaRNN(N, M, activation=activation, gain=1.5, key=jr.key(0))
    cell = eqx.tree_at(lambda c: c.b, cell, 0.3 * jr.normal(jr.key(1), (N,)))
    x = 0.5 * jr.normal(jr.key(2), (N,))
    u = jr.normal(jr.key(3), (M,))
    W, U, b = (np.asarray(a) for a in (cell.W, cell.U, cell.b))
    a = W @ np.asarray(x) + U @ np.asarray(u) + b
    by_hand = derivative(a)[:, None] * W
    np.testing.assert_allclose(cell.step(x, u), activation(a), atol=1e-12)
    V = _jvp_tangent(cell, x, u)
    np.testing.assert_allclose(V, by_hand, atol=1e-10)
    np.testing.assert_allclose(V, jax.jacfwd(cell.step)(x, u), atol=1e-10)
    np.testing.assert_allclose(dynjax.jacobian(cell, x, u=u), by_hand, atol=1e-10)


def _custom_cell():
    class LeakyCell(eqx.Module):
        A: jax.Array
        B: jax.Array

        def __call__(self, u, h):
            return 0.7 * h + 0.3 * jnp.tanh(self.A @ h + self.B @ u)

    return Cell(
        LeakyCell(jr.normal(jr.key(4), (N, N)), jr.normal(jr.key(5), (N, M))),
        hidden_size=N,
        input_size=M,
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: VanillaRNN(N, M, init="uniform", gain=0.8, key=jr.key(0)),
        lambda: GRU(N, M, init="uniform", gain=0.8, key=jr.key(0)),
        lambda: LSTM(N, M, init="uniform", gain=0.8, key=jr.key(0)),
        lambda: Cell(eqx.nn.GRUCell(M, N, key=jr.key(0))),
        lambda: Cell(eqx.nn.LSTMCell(M, N, key=jr.key(0))),
        _custom_cell,
    ],
    ids=["vanilla", "gru", "lstm", "eqx-gru", "eqx-lstm", "custom"],
)
def test_jvp_tangent_is_dense_jacobian(make):
    cell = make()
    x = 0.5 * jr.normal(jr.key(6), (cell.d,))
    u = jr.normal(jr.key(7), (M,))
    V = _jvp_tangent(cell, x, u)
    np.testing.assert_allclose(V, jax.jacfwd(cell.step)(x, u), atol=1e-10)
    np.testing.assert_allclose(V, dynjax.jacobian(cell, x, u=u), atol=1e-10)
    # An independent check of the derivative itself: central differences
    # (truncation error O(eps^2) ~ 1e-12, rounding ~ 1e-10).
    np.testing.assert_allclose(V, _central_differences(cell, x, u), atol=1e-8)


def _copied(builtin, eqx_cell):
    """`builtin` with `eqx_cell`'s weights."""
    names = ["weight_ih", "weight_hh", "bias"]
    if isinstance(eqx_cell, eqx.nn.GRUCell):
        names.append("bias_n")
    for name in names:
        builtin = eqx.tree_at(
            lambda c, n=name: getattr(c, n), builtin, getattr(eqx_cell, name)
        )
    return builtin


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_adapter_matches_builtin_cell(kind):
    key = jr.key(8)
    if kind == "gru":
        eqx_cell = eqx.nn.GRUCell(M, N, key=key)
        builtin = _copied(GRU(N, M, key=jr.key(9)), eqx_cell)
    else:
        eqx_cell = eqx.nn.LSTMCell(M, N, key=key)
        builtin = _copied(LSTM(N, M, key=jr.key(9)), eqx_cell)
    adapter = Cell(eqx_cell)
    assert adapter.d == builtin.d
    x = 0.5 * jr.normal(jr.key(10), (builtin.d,))
    u = jr.normal(jr.key(11), (M,))
    # The gate conventions: the built-in cell reproduces equinox's own step.
    if kind == "gru":
        expected = eqx_cell(u, x)
    else:
        expected = jnp.concatenate(eqx_cell(u, tuple(jnp.split(x, 2))))
    np.testing.assert_allclose(builtin.step(x, u), expected, atol=1e-13)
    np.testing.assert_allclose(adapter.step(x, u), expected, atol=1e-13)
    np.testing.assert_allclose(builtin.hidden(x), x[:N], atol=0)
    # Same weights, same inputs: the same spectrum (a short run).
    inputs = 2.0 * jr.normal(jr.key(12), (150, M))
    spectra = [
        dynjax.lyapunov_spectrum(c, x, inputs=inputs, k=4).exponents
        for c in (builtin, adapter)
    ]
    np.testing.assert_allclose(spectra[0], spectra[1], rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(spectra[0])) and np.all(np.diff(spectra[0]) <= 0)


def test_trajectory_with_token_ids():
    vocab = 5
    cell = VanillaRNN(N, M, vocab_size=vocab, gain=1.2, key=jr.key(13))
    assert cell.readout.out_features == vocab
    ids = jr.randint(jr.key(14), (20,), 0, vocab)
    h0 = 0.1 * jnp.ones(N)
    xs = dynjax.trajectory(cell, h0, inputs=ids).xs
    W, U, b, E = (np.asarray(a) for a in (cell.W, cell.U, cell.b, cell.embedding))
    h = np.asarray(h0)
    expected = [h]
    for i in np.asarray(ids):
        h = np.tanh(W @ h + U @ E[i] + b)
        expected.append(h)
    np.testing.assert_allclose(xs, np.stack(expected), atol=1e-12)
    # LSTM with token ids: the readout sees `hidden(x) = h`.
    lstm = LSTM(N, M, vocab_size=vocab, key=jr.key(15))
    x = dynjax.trajectory(lstm, jnp.zeros(2 * N), inputs=ids).xs[-1]
    np.testing.assert_allclose(
        lstm.readout(lstm.hidden(x)),
        np.asarray(lstm.readout.weight) @ np.asarray(x[:N])
        + np.asarray(lstm.readout.bias),
        atol=1e-12,
    )


def test_initializers_have_the_stated_gain():
    a = VanillaRNN(16, M, gain=1.0, key=jr.key(16))
    b = VanillaRNN(16, M, gain=2.5, key=jr.key(16))
    np.testing.assert_allclose(b.W, 2.5 * a.W, rtol=1e-14)
    np.testing.assert_allclose(b.U, a.U, rtol=1e-14)
    # N(0, g^2 / N): the sample variance of the 256 entries of sqrt(N) W / g is
    # chi^2_256 / 256 distributed, within 5 sd (sqrt(2 / 256) = 0.09) of 1.
    assert abs(np.var(np.asarray(a.W)) * 16 - 1.0) < 0.45
    p = 0.3
    for cls in (VanillaRNN, GRU, LSTM):
        c = cls(16, M, init="uniform", gain=p, key=jr.key(17))
        W = np.asarray(c.W if cls is VanillaRNN else c.weight_hh)
        assert np.max(np.abs(W)) <= p and np.max(np.abs(W)) > 0.9 * p
        # U(-p, p) has variance p^2 / 3.
        assert abs(np.var(W) / (p**2 / 3) - 1.0) < 0.5


# Bad input.


def test_input_feature_size_mismatch():
    for cell in (
        VanillaRNN(N, M, key=jr.key(0)),
        GRU(N, M, key=jr.key(0)),
        Cell(eqx.nn.GRUCell(M, N, key=jr.key(0))),
    ):
        with pytest.raises(ValueError, match=r"input_size=3.*shape \(T, 3\)"):
            dynjax.trajectory(cell, jnp.zeros(N), inputs=jnp.ones((5, M + 1)))
        with pytest.raises(ValueError, match="input_size=3"):
            dynjax.jacobian(cell, jnp.zeros(N), u=jnp.ones(M + 1))
    tokens = VanillaRNN(N, M, vocab_size=4, key=jr.key(0))
    with pytest.raises(ValueError, match="integer token id"):
        dynjax.trajectory(tokens, jnp.zeros(N), inputs=jnp.ones((5, M)))


def test_hidden_state_of_the_wrong_size():
    u = jnp.ones((5, M))
    for cell, d in (
        (VanillaRNN(N, M, key=jr.key(0)), N),
        (LSTM(N, M, key=jr.key(0)), 2 * N),
        (Cell(eqx.nn.LSTMCell(M, N, key=jr.key(0))), 2 * N),
    ):
        with pytest.raises(ValueError, match=rf"d={d}\. Pass a state of shape \({d},"):
            dynjax.trajectory(cell, jnp.zeros(N + 1), inputs=u)
        with pytest.raises(ValueError, match=rf"Pass a state of shape \({d},\)"):
            cell.step(jnp.zeros(N + 1), u[0])


def test_non_finite_weight():
    with pytest.raises(ValueError, match=r"`VanillaRNN\.W` contains non-finite"):
        VanillaRNN(N, M, gain=jnp.nan, key=jr.key(0))
    with pytest.raises(ValueError, match=r"`LSTM\.weight_hh` contains non-finite"):
        LSTM(N, M, gain=jnp.inf, key=jr.key(0))
    bad = eqx.tree_at(
        lambda c: c.weight_hh,
        eqx.nn.GRUCell(M, N, key=jr.key(0)),
        jnp.full((3 * N, N), jnp.nan),
    )
    with pytest.raises(ValueError, match=r"weight_hh` contains non-finite"):
        Cell(bad)
    # A cell built under `jit` from traced weights: checked when it runs.
    build = eqx.filter_jit(lambda g: GRU(N, M, gain=g, key=jr.key(0)))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"GRU\.weight_hh"):
        build(jnp.nan)


def test_bad_construction():
    with pytest.raises(ValueError, match="init='normal'"):
        VanillaRNN(N, M, init="orthogonal", key=jr.key(0))
    with pytest.raises(ValueError, match="hidden_size"):
        GRU(0, M, key=jr.key(0))

    class NoSize(eqx.Module):
        def __call__(self, u, h):
            return h

    with pytest.raises(ValueError, match="pass `hidden_size=`"):
        Cell(NoSize())


def test_token_id_out_of_range_is_an_error():
    cell = dynjax.rnn.VanillaRNN(4, 3, vocab_size=5, key=jax.random.key(0))
    ids = jnp.array([0, 4, 5, 1])
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"outside \[0, 5\)"):
        dynjax.trajectory(cell, jnp.zeros(4), inputs=ids)
    out = dynjax.trajectory(cell, jnp.zeros(4), inputs=ids[:2])
    assert bool(jnp.all(jnp.isfinite(out.xs)))


def test_states_and_predict_follow_the_trajectory_and_the_readout():
    cell = dynjax.rnn.LSTM(4, 2, output_size=3, key=jr.key(0))
    us = jr.normal(jr.key(1), (20, 2))
    h0 = 0.1 * jr.normal(jr.key(2), (8,))
    xs = dynjax.trajectory(cell, h0, inputs=us).xs
    np.testing.assert_allclose(cell.states(us, h0), xs[1:], atol=1e-13)
    W, b = np.asarray(cell.readout.weight), np.asarray(cell.readout.bias)
    np.testing.assert_allclose(cell.predict(us, h0), xs[1:, :4] @ W.T + b, atol=1e-12)
    bare = dynjax.rnn.Cell(eqx.nn.GRUCell(2, 4, key=jr.key(3)))
    with pytest.raises(ValueError, match="has no readout"):
        bare.predict(us)
