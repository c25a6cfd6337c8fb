"""The re-orthonormalization step against LAPACK's Householder QR (NumPy).

The Jacobian method's sequential chain runs one pass of modified Gram-Schmidt
and reruns with Householder QR when a step is ill-conditioned (R_ii spanning
more than 1e4): one pass of modified Gram-Schmidt is orthogonal to about
eps cond (Bjorck 1967). `qr_positive` (classical Gram-Schmidt twice, "twice is
enough", Giraud et al. 2005, or LAPACK) must give `|diag(R)|` of
`numpy.linalg.qr` and a `Q` orthonormal to working precision.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynjax._lyapunov._qr import (
    _modified_gram_schmidt,
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
