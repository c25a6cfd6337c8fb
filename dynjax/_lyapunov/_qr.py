"""Reduced QR with a positive diagonal, the re-orthonormalization step."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._scan import scan


# For tiny blocks a Gram-Schmidt written with elementwise products and explicit
# sums fuses into the surrounding scan body; the LAPACK custom call costs more
# in per-call overhead on CPU than the factorization itself (measured: 3x3 block,
# 1e4 factorizations, 1.3 us vs 0.3 us each). Unrolled scalar code grows like
# d k^2, so beyond tiny d the matrix-vector form is used (compile time).
_SMALL = 4


def _dot(a, b):
    if a.shape[0] <= _SMALL:
        s = a[0] * b[0]
        for i in range(1, a.shape[0]):
            s = s + a[i] * b[i]
        return s
    return jnp.dot(a, b)


def _gram_schmidt(W):
    # Classical Gram-Schmidt with one re-orthogonalization pass ("twice is
    # enough", Giraud et al. 2005): orthogonal to working precision, and made of
    # matrix-vector products that cost O(d k^2) in total.
    d, k = W.shape
    if d <= _SMALL:
        dot_t = lambda Q, v: jnp.stack([_dot(q, v) for q in Q.T])  # noqa: E731
    else:
        dot_t = lambda Q, v: Q.T @ v  # noqa: E731
    qs, cols = [], []
    for j in range(k):
        v = W[:, j]
        r = jnp.zeros((j,), W.dtype)
        if j:
            Qj = jnp.stack(qs, axis=1)
            for _ in range(2):
                c = dot_t(Qj, v)
                if d > _SMALL:
                    v = v - Qj @ c
                else:
                    v = v - sum(c[i] * qs[i] for i in range(j))
                r = r + c
        norm = jnp.sqrt(_dot(v, v))
        qs.append(v / norm)
        cols.append(jnp.concatenate([r, norm[None], jnp.zeros((k - j - 1,), W.dtype)]))
    return jnp.stack(qs, axis=1), jnp.stack(cols, axis=1)


def qr_positive(
    W: Float[Array, "d k"],
) -> tuple[Float[Array, "d k"], Float[Array, "k k"]]:
    """Reduced QR factorization `W = Q R` with `R_ii >= 0`.

    The sign convention makes `Q` a continuous function of `W`, which the
    covariant-vector backward pass and gradients rely on.
    """
    d, k = W.shape
    if d <= _SMALL or (d >= _TALL and k <= _GS_MAX_K):
        return _gram_schmidt(W)
    Q, R = jnp.linalg.qr(W, mode="reduced")
    signs = jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0).astype(W.dtype)
    return Q * signs[None, :], R * signs[:, None]


# For tall blocks (d >= _TALL) with up to _GS_MAX_K columns Gram-Schmidt
# (unrolled over columns) is used: XLA's CPU QR of a (1000, 10) block took 16 ms,
# Gram-Schmidt 0.3 ms. In between, LAPACK (shorter compiles).
_GS_MAX_K = 32
_TALL = 64


def _modified_gram_schmidt(W):
    # Each normalized column is removed from all later columns at once (rank-1
    # updates), which XLA fuses into few kernels.
    cols = [W[:, j] for j in range(W.shape[1])]
    qs, norms = [], []
    for j, v in enumerate(cols):
        norm = jnp.sqrt(_dot(v, v))
        q = v / norm
        qs.append(q)
        norms.append(norm)
        for i in range(j + 1, len(cols)):
            cols[i] = cols[i] - _dot(q, cols[i]) * q
    return jnp.stack(qs, axis=1), jnp.stack(norms)


# Above this ratio of the largest to the smallest R_ii a second pass is run.
_REORTHOGONALIZE = 1e4


def qr_diag_small(
    W: Float[Array, "d k"],
) -> tuple[Float[Array, "d k"], Float[Array, " k"]]:
    """`Q` and `diag(R)` of `W = Q R` (`R_ii > 0`) for tiny blocks (d <= 4).

    Modified Gram-Schmidt: its `R` is backward stable, and `Q` loses
    orthogonality in proportion to `eps cond(W)` (Bjorck 1967). When the `R_ii`
    span more than `1e4` a second pass on `Q` restores orthogonality to working
    precision ("twice is enough", Giraud et al. 2005); it runs under `lax.cond`,
    so a well-conditioned block costs one pass (its `Q` is then orthonormal to
    about `1e4 eps`; a Lorenz block of 10 steps spans about 5). In a chain, use
    `qr_chain`, which keeps the guard out of the loop.
    """
    Q, diag = _modified_gram_schmidt(W)

    def again(Q, diag):
        Q, diag2 = _modified_gram_schmidt(Q)
        return Q, diag * diag2

    well = jnp.min(diag) * _REORTHOGONALIZE > jnp.max(diag)
    return jax.lax.cond(well, lambda Q, diag: (Q, diag), again, Q, diag)


def qr_chain(
    P: Float[Array, "n d d"], Q: Float[Array, "d k"]
) -> tuple[Float[Array, "d k"], Float[Array, "n k"]]:
    """The chain `P_j Q_{j-1} = Q_j R_j`: the final `Q` and every `diag(R_j)`.

    This is the sequential part of the Jacobian method. For tiny blocks
    (`d <= 4`) each step is `qr_diag_small`, arranged so that the common case
    pays for one Gram-Schmidt pass per step and no branch: the chain first runs
    with one pass everywhere, and only if some step was ill-conditioned (its
    `R_ii` span more than `1e4`, or are not finite) does it run again with
    `qr_diag_small`'s per-step guard. Where every step is well conditioned the
    guard takes its one-pass branch at every step, so both orders compute the
    same thing (equal to rounding: XLA may contract multiply-adds differently in
    the two loop bodies). The guard inside the loop is what costs: on the 2-core
    CPU of `benchmarks/README.md` a chain of 10^4 3 x 3 steps took 6.7 ms with
    it and 1.0 to 1.6 ms without (the `lax.cond` makes XLA's CPU runtime
    schedule the loop body across threads).
    """
    d = Q.shape[0]

    def chain(qr):
        return scan(lambda Q, P_j: qr(small_matmul(P_j, Q)), Q, P)

    if d > _SMALL:

        def qr_full(W):
            Q, R = qr_positive(W)
            return Q, jnp.diagonal(R)

        return chain(qr_full)
    Q1, diags = chain(_modified_gram_schmidt)
    well = jnp.all(jnp.min(diags, axis=1) * _REORTHOGONALIZE > jnp.max(diags, axis=1))
    return jax.lax.cond(well, lambda: (Q1, diags), lambda: chain(qr_diag_small))


def small_matmul(A, B):
    """`A @ B` as broadcast products and sums (fuses for tiny matrices)."""
    if A.shape[-1] <= _SMALL and A.shape[-2] <= _SMALL:
        return jnp.sum(A[..., :, :, None] * B[..., None, :, :], axis=-2)
    return A @ B
