"""The re-orthonormalization step against LAPACK's Householder QR (NumPy).

`qr_diag_small` (modified Gram-Schmidt, repeated when ill-conditioned) feeds the
Jacobian method's sequential chain; its `diag(R)` must equal `|diag(R)|` of
`numpy.linalg.qr` and its `Q` must be orthonormal to working precision on both
sides of the reorthogonalization threshold (R_ii spanning 1e4): one pass of
modified Gram-Schmidt is orthogonal to about eps cond (Bjorck 1967), two passes
to working precision (Giraud et al. 2005).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from dynjax._lyapunov._qr import qr_diag_small, qr_positive


def _matrix(d, k, cond, seed):
    # A d x k matrix with singular values spread geometrically from 1 to 1/cond.
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(d, d)))
    V, _ = np.linalg.qr(rng.normal(size=(k, k)))
    s = np.geomspace(1.0, 1.0 / cond, k)
    return U[:, :k] @ np.diag(s) @ V.T


@pytest.mark.parametrize("cond", [1e1, 1e3, 1e8, 1e11])
@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 2), (4, 4)])
def test_qr_diag_small_matches_householder(shape, cond):
    W = _matrix(*shape, cond, seed=int(cond) % 97 + shape[0])
    Q, diag = qr_diag_small(jnp.asarray(W))
    Q, diag = np.asarray(Q), np.asarray(diag)
    R_ref = np.linalg.qr(W)[1]
    # R from Gram-Schmidt is backward stable: relative error ~ eps cond.
    np.testing.assert_allclose(diag, np.abs(np.diag(R_ref)), rtol=1e-15 * cond * 10)
    eps = np.finfo(np.float64).eps
    one_pass = cond < 1e4
    orthogonality = 50 * eps * cond if one_pass else 1e-14
    np.testing.assert_allclose(Q.T @ Q, np.eye(shape[1]), atol=orthogonality)
    # Q R reproduces W (R_ij = q_i . w_j)
    np.testing.assert_allclose(Q @ (Q.T @ W), W, atol=1e-14)
    assert np.all(diag > 0)


def test_qr_diag_small_agrees_with_qr_positive():
    W = jnp.asarray(_matrix(3, 3, 1e3, seed=5))
    Q1, d1 = qr_diag_small(W)
    Q2, R2 = qr_positive(W)
    np.testing.assert_allclose(Q1, Q2, atol=1e-13)
    np.testing.assert_allclose(d1, jnp.diagonal(R2), rtol=1e-13)
