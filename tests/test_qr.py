"""The re-orthonormalization step against LAPACK's Householder QR (NumPy).

The Jacobian method's sequential chain runs one pass of modified Gram-Schmidt
and reruns with Householder QR when a step is ill-conditioned (R_ii spanning
more than 1e4): one pass of modified Gram-Schmidt is orthogonal to about
eps cond (Bjorck 1967). `qr_positive` (classical Gram-Schmidt twice, "twice is
enough", Giraud et al. 2005, CholeskyQR2 for tall blocks with many columns,
Yamamoto et al. 2015, or LAPACK) must give `|diag(R)|` of `numpy.linalg.qr` and
a `Q` orthonormal to working precision.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax._lyapunov._qr import (
    _cholesky_qr2_unchecked,
    _modified_gram_schmidt,
    cholesky_qr2,
    householder,
    qr_chain,
    qr_positive,
    small_matmul,
)


def _matrix(d, k, cond, seed):
    # A d x k matrix with singular values spread geometrically from 1 to 1/cond.
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(d, d)))
    V, _ = np.linalg.qr(rng.normal(size=(k, k)))
    s = np.geomspace(1.0, 1.0 / cond, k)
    return U[:, :k] @ np.diag(s) @ V.T


@pytest.mark.parametrize("cond", [1e1, 1e3, 1e8, 1e11])
@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 2), (4, 4), (6, 4)])
def test_qr_positive_and_householder_match_numpy(shape, cond):
    W = _matrix(*shape, cond, seed=int(cond) % 97 + shape[0])
    R_ref = np.linalg.qr(W)[1]
    for qr in (qr_positive, householder):
        Q, R = qr(jnp.asarray(W))
        Q, diag = np.asarray(Q), np.diagonal(np.asarray(R))
        # R is backward stable: relative error ~ eps cond.
        np.testing.assert_allclose(diag, np.abs(np.diag(R_ref)), rtol=1e-15 * cond * 10)
        np.testing.assert_allclose(Q.T @ Q, np.eye(shape[1]), atol=1e-13)
        np.testing.assert_allclose(Q @ (Q.T @ W), W, atol=1e-14)
        assert np.all(diag > 0)


def _numpy_chain(P, Q):
    # The reference: LAPACK Householder QR (NumPy) at every step, R_ii > 0.
    Q = np.asarray(Q)
    diags = []
    for P_j in np.asarray(P):
        Q, R = np.linalg.qr(P_j @ Q)
        signs = np.where(np.diag(R) < 0, -1.0, 1.0)
        Q, R = Q * signs[None, :], R * signs[:, None]
        diags.append(np.diag(R))
    return Q, np.stack(diags)


@pytest.mark.parametrize("ill_at", [None, 0, 37, 99])
def test_qr_chain_matches_householder(ill_at):
    # qr_chain runs one pass of modified Gram-Schmidt everywhere and reruns the
    # chain with Householder QR if a step was ill-conditioned: either way its
    # numbers are those of a Householder chain, to the accuracy of a backward
    # stable factorization (eps cond relative in R_ii).
    # Orthogonal propagators keep the chain well conditioned; one with singular
    # values spread 1e7 makes step `ill_at` ill-conditioned.
    P = np.stack([_matrix(3, 3, 2.0, seed=s) for s in range(100)])
    if ill_at is not None:
        P[ill_at] = _matrix(3, 3, 1e7, seed=1)
    P, Q0 = jnp.asarray(P), jnp.asarray(_matrix(3, 3, 1.0, seed=7))
    Q, diags = jax.jit(qr_chain)(P, Q0)
    Q_ref, diags_ref = _numpy_chain(P, Q0)
    cond = 1e7 if ill_at is not None else 10.0
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(Q, Q_ref, atol=10 * eps * cond)
    np.testing.assert_allclose(diags, diags_ref, rtol=10 * eps * cond)
    np.testing.assert_allclose(Q.T @ Q, np.eye(3), atol=1e-14)
    if ill_at == 99:
        # the fallback matters: after one pass alone the last Q is not orthonormal
        one_pass = jax.lax.scan(
            lambda Q, P_j: _modified_gram_schmidt(small_matmul(P_j, Q)), Q0, P
        )
        # (orthogonality lost to about eps 1e7)
        Q1 = np.asarray(one_pass[0])
        assert np.max(np.abs(Q1.T @ Q1 - np.eye(3))) > 1e-11


def test_qr_chain_large_d_matches_numpy():
    # d > 4: Householder QR (LAPACK) per step; diag(R) against NumPy's chain.
    P = np.stack([_matrix(6, 6, 10.0, seed=s) for s in range(20)])
    Q0 = _matrix(6, 4, 1.0, seed=3)
    Q, diags = qr_chain(jnp.asarray(P), jnp.asarray(Q0))
    Q_ref = Q0
    for j in range(20):
        Q_ref, R = np.linalg.qr(P[j] @ Q_ref)
        np.testing.assert_allclose(diags[j], np.abs(np.diag(R)), rtol=1e-12)
        Q_ref = Q_ref * np.sign(np.diag(R))[None, :]
    np.testing.assert_allclose(Q, Q_ref, atol=1e-12)


# --- CholeskyQR2 (tall blocks with many columns) ---------------------------------


def _reference(W):
    # NumPy's (LAPACK) Householder QR in float64 with R_ii >= 0.
    Q, R = np.linalg.qr(np.asarray(W, np.float64))
    signs = np.where(np.diag(R) < 0, -1.0, 1.0)
    return Q * signs[None, :], R * signs[:, None]


@pytest.mark.parametrize(
    "shape, dtype, cond, fast",
    [
        # within CholeskyQR2's range, cond <~ eps^(-1/2): the fast path itself
        ((256, 64), np.float64, 1.0, True),
        ((80, 40), np.float64, 1e6, True),
        ((256, 64), np.float32, 1.0, True),
        ((80, 40), np.float32, 1e2, True),
        # beyond it: the Householder fallback
        ((80, 40), np.float64, 1e12, False),
        ((256, 64), np.float32, 1e5, False),
    ],
)
def test_cholesky_qr2_matches_numpy(shape, dtype, cond, fast):
    W = _matrix(*shape, cond, seed=shape[1]).astype(dtype)
    eps = np.finfo(dtype).eps
    Q_ref, R_ref = _reference(W)
    ok = bool(jax.jit(_cholesky_qr2_unchecked, static_argnums=1)(W, 8.0)[2])
    assert ok == fast
    # qr_positive hands these shapes (d >= 64, 32 < k <= d/2) to cholesky_qr2
    for qr in (cholesky_qr2, qr_positive):
        Q, R = jax.jit(qr)(jnp.asarray(W))
        assert Q.dtype == R.dtype == dtype
        Q, R = np.asarray(Q, np.float64), np.asarray(R, np.float64)
        k = shape[1]
        # orthonormal to working precision, whatever the conditioning
        assert np.max(np.abs(Q.T @ Q - np.eye(k))) < 20 * eps
        # backward stable: W = Q R to about eps ||W||
        assert np.max(np.abs(Q @ R - W)) < 20 * eps * np.linalg.norm(W, 2)
        np.testing.assert_array_equal(R, np.triu(R))
        assert np.all(np.diag(R) > 0)
        # R (and Q) as LAPACK's, to the forward error of QR: eps cond
        scale = np.abs(np.diag(R_ref))[None, :]
        assert np.max(np.abs(R - R_ref) / scale) < 50 * eps * cond
        if cond <= 1e2:
            assert np.max(np.abs(Q - Q_ref)) < 100 * eps * cond


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cholesky_qr2_collapsed_column(dtype):
    # Column 37 is a combination of columns 3 and 20: it has collapsed (to
    # rounding). R_jj = 0 exactly, Q orthonormal and finite: the block is
    # factorized by Householder QR (the fallback), which completes Q.
    W = _matrix(256, 64, 10.0, seed=5).astype(dtype)
    W[:, 37] = 2.0 * W[:, 3] - 0.5 * W[:, 20]
    Q, R = jax.jit(cholesky_qr2)(jnp.asarray(W))
    np.testing.assert_array_equal(Q, jax.jit(householder)(jnp.asarray(W))[0])
    Q, R = np.asarray(Q, np.float64), np.asarray(R, np.float64)
    eps = np.finfo(dtype).eps
    assert R[37, 37] == 0.0
    assert np.all(np.isfinite(Q)) and np.all(np.isfinite(R))
    assert np.max(np.abs(Q.T @ Q - np.eye(64))) < 20 * eps
    assert np.max(np.abs(Q @ R - W)) < 20 * eps * np.linalg.norm(W, 2)
    # R_ii before the collapse as NumPy's (after it they depend on the
    # direction that completes Q, which rounding picks)
    R_ref = _reference(W)[1]
    np.testing.assert_allclose(np.diag(R)[:37], np.diag(R_ref)[:37], rtol=100 * eps)


def test_cholesky_qr2_vmap_falls_back_per_element():
    # Under vmap the fallback runs only where it is needed: the well-conditioned
    # blocks of a batch keep the fast path's numbers exactly, the collapsed one
    # gets Householder's.
    good = _matrix(128, 40, 10.0, seed=1)
    bad = _matrix(128, 40, 10.0, seed=2)
    bad[:, 39] = bad[:, 0]
    Ws = jnp.asarray(np.stack([good, bad, 2 * good]))
    Qs, Rs = jax.jit(jax.vmap(cholesky_qr2))(Ws)
    fast_Q, fast_R, fast_ok = jax.jit(
        jax.vmap(lambda W: _cholesky_qr2_unchecked(W, 8.0))
    )(Ws)
    np.testing.assert_array_equal(fast_ok, [True, False, True])
    for i in (0, 2):
        np.testing.assert_array_equal(Qs[i], fast_Q[i])
        np.testing.assert_array_equal(Rs[i], fast_R[i])
    Q1, R1 = jax.jit(householder)(Ws[1])
    np.testing.assert_allclose(Qs[1], Q1, atol=1e-13)
    np.testing.assert_allclose(Rs[1], R1, atol=1e-13)
    assert Rs[1, 39, 39] == 0.0


@pytest.mark.parametrize("near", [None, 1e-9])
def test_cholesky_qr2_gradient_matches_finite_differences(near):
    # The custom JVP (the QR derivative) against central differences of the
    # factorization itself, along random directions, float64: on the fast path,
    # and on the Householder fallback (the last column within 1e-9 of the
    # first: cond(W) about 1e9, beyond CholeskyQR2's eps^(-1/2)).
    W = _matrix(72, 36, 10.0, seed=11)
    if near is not None:
        W[:, 35] = W[:, 0] + near * np.random.default_rng(0).normal(size=72)
    W = jnp.asarray(W)
    assert bool(_cholesky_qr2_unchecked(W, 8.0)[2]) == (near is None)
    rng = np.random.default_rng(3)
    a, M = rng.normal(size=36), rng.normal(size=(72, 36))

    def f(W):
        Q, R = cholesky_qr2(W)
        return jnp.sum(a * jnp.log(jnp.diagonal(R))) + jnp.sum(M * Q)

    f = jax.jit(f)
    g = np.asarray(jax.grad(f)(W))
    # (with `near`, the derivative is about 1/near: a step of 1e-3 near)
    h = 1e-6 if near is None else 1e-3 * near
    for seed in range(3):
        V = np.random.default_rng(seed).normal(size=W.shape)
        fd = (f(W + h * V) - f(W - h * V)) / (2 * h)
        # (rounding in f: eps / (near h) relative to the terms of the sum,
        # about 1e-5 with `near`)
        rtol = 1e-6 if near is None else 1e-4
        assert abs(np.sum(g * V) - fd) <= rtol * np.sum(np.abs(g * V))


def test_cholesky_qr2_gradient_through_a_collapse_is_finite():
    # A collapsed column (R_jj = 0): the derivative of the other outputs stays
    # finite (the engine's log R_jj = -inf has a zero gradient by safe_log).
    W = _matrix(72, 36, 10.0, seed=4)
    W[:, 10] = W[:, 2]

    def f(W):
        Q, R = cholesky_qr2(W)
        return jnp.sum(Q) + jnp.sum(R)

    g = jax.jit(jax.grad(f))(jnp.asarray(W))
    assert np.all(np.isfinite(np.asarray(g)))


def test_lyapunov_gradient_through_cholesky_qr2():
    # jax.grad of a driven RNN's exponents through the engine (matrix-free under
    # differentiation), whose (72, 36) blocks go to cholesky_qr2, against
    # central differences in the recurrent gain; float64.
    N, k = 72, 36
    cell = dynjax.rnn.VanillaRNN(N, 4, gain=1.5, key=jax.random.key(0))
    us = jax.random.normal(jax.random.key(1), (40, 4))
    Ws = jnp.asarray(_matrix(N, k, 3.0, seed=0))
    np.testing.assert_array_equal(qr_positive(Ws)[0], cholesky_qr2(Ws)[0])

    @jax.jit
    def f(g):
        scaled = eqx.tree_at(lambda c: c.W, cell, g * cell.W)
        res = dynjax.lyapunov_spectrum(scaled, jnp.zeros(N), k=k, inputs=us)
        return jnp.sum(res.exponents * jnp.linspace(1.0, 2.0, k))

    h = 1e-5
    fd = (f(1.0 + h) - f(1.0 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(f)(1.0), fd, rtol=1e-6)
