"""Reduced QR with a positive diagonal, the re-orthonormalization step."""

import jax.numpy as jnp
from jaxtyping import Array, Float


# For tiny blocks a Gram-Schmidt written with elementwise products and explicit
# sums fuses into the surrounding scan body; the LAPACK custom call costs more
# in per-call overhead on CPU than the factorization itself (measured: 3x3 block,
# 1e4 factorizations, 1.3 us vs 0.3 us each).
_SMALL = 16


def _dot(a, b):
    if a.shape[0] <= _SMALL:
        s = a[0] * b[0]
        for i in range(1, a.shape[0]):
            s = s + a[i] * b[i]
        return s
    return jnp.dot(a, b)


def _gram_schmidt(W):
    # Modified Gram-Schmidt with one re-orthogonalization pass ("twice is
    # enough", Giraud et al. 2005): orthogonal to working precision.
    _, k = W.shape
    zero = jnp.zeros((), W.dtype)
    qs = []
    R = [[zero] * k for _ in range(k)]
    for j in range(k):
        v = W[:, j]
        for _ in range(2):
            for i, q in enumerate(qs):
                r = _dot(q, v)
                v = v - r * q
                R[i][j] = R[i][j] + r
        norm = jnp.sqrt(_dot(v, v))
        R[j][j] = norm
        qs.append(v / norm)
    return jnp.stack(qs, axis=1), jnp.stack([jnp.stack(row) for row in R])


def qr_positive(
    W: Float[Array, "d k"],
) -> tuple[Float[Array, "d k"], Float[Array, "k k"]]:
    """Reduced QR factorization `W = Q R` with `R_ii >= 0`.

    The sign convention makes `Q` a continuous function of `W`, which the
    covariant-vector backward pass and gradients rely on.
    """
    d, k = W.shape
    if d <= _SMALL and k <= 8:
        return _gram_schmidt(W)
    Q, R = jnp.linalg.qr(W, mode="reduced")
    signs = jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0).astype(W.dtype)
    return Q * signs[None, :], R * signs[:, None]


def small_matmul(A, B):
    """`A @ B` as broadcast products and sums (fuses for tiny matrices)."""
    if A.shape[-1] <= _SMALL and A.shape[-2] <= _SMALL:
        return jnp.sum(A[..., :, :, None] * B[..., None, :, :], axis=-2)
    return A @ B
