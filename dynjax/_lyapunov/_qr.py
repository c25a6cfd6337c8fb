"""Reduced QR with a positive diagonal, the re-orthonormalization step."""

import functools

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


# A column whose part orthogonal to the previous ones is at most `rtol` times its
# own norm has collapsed onto them: its R_jj is set to exactly 0 and its Q column
# to a unit vector orthogonal to the previous ones (`_completion`), so Q stays
# orthonormal and nothing becomes NaN. Gram-Schmidt with two passes leaves an
# exactly dependent column with a remainder of a few eps times its norm, so the
# default `8 eps` tells rounding from a genuine contraction down to about
# `8 eps` per re-orthonormalization (the Henon map with b = 1e-13 contracts its
# second direction by 21 eps or more per step, and is resolved).
COLLAPSE_RTOL = 8.0


def _completion(qs, d: int, dtype):
    """A unit vector orthogonal to the unit vectors `qs`.

    A generic vector (entries `frac(k phi + j sqrt 2 (k + 1))`, `phi` the golden
    ratio, `j = len(qs)`), orthogonalized twice against `qs`: it lies in their
    span only on a set of measure zero (then the result is not finite and the
    run reports a non-finite tangent). Cheaper to compile than searching the
    coordinate axes.
    """
    golden = (1 + 5**0.5) / 2
    # One vector per column (the j-th completion must not lie in the span of
    # earlier completions, which a single fixed vector would).
    j = len(qs)
    v = jnp.asarray(
        [0.5 + ((i + 1) * golden + j * 2**0.5 * (i + 2)) % 1 for i in range(d)], dtype
    )
    for _ in range(2):
        v = v - sum(_dot(q, v) * q for q in qs)
    return v / jnp.sqrt(_dot(v, v))


def _norm(v):
    # sqrt(0) has an infinite derivative: keep collapsed columns NaN-free under grad.
    sq = _dot(v, v)
    positive = sq > 0
    # (`sq` itself where it is 0 or NaN: a NaN column stays NaN, not "collapsed".)
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), sq)


def safe_log(diag):
    """`log(diag)` with `-inf` (and zero, not NaN, gradients) where `diag == 0`."""
    positive = diag > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, diag, 1.0)), -jnp.inf)


def _finish_column(v, norm, column_norm, qs, rtol):
    """`(q_j, R_jj)` from the orthogonalized column `v` of norm `norm`."""
    # (A non-finite column is an overflow, reported as such, not a collapse.)
    collapsed = (norm <= rtol * jnp.finfo(v.dtype).eps * column_norm) & jnp.isfinite(
        column_norm
    )
    safe = jnp.where(collapsed, 1.0, norm)
    q = jnp.where(collapsed, _completion(qs, v.shape[0], v.dtype), v / safe)
    return q, jnp.where(collapsed, 0.0, norm)


def _gram_schmidt(W, rtol=COLLAPSE_RTOL, complete=True):
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
        column_norm = _norm(v)
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
        if complete:
            q, norm = _finish_column(v, _norm(v), column_norm, qs, rtol)
        else:
            # (collapsed: R_jj = 0 and a non-finite column, which the caller
            # reports; cheaper to compile)
            norm = _norm(v)
            collapsed = norm <= rtol * jnp.finfo(v.dtype).eps * column_norm
            norm = jnp.where(collapsed & jnp.isfinite(column_norm), 0.0, norm)
            q = v / norm
        qs.append(q)
        cols.append(jnp.concatenate([r, norm[None], jnp.zeros((k - j - 1,), W.dtype)]))
    return jnp.stack(qs, axis=1), jnp.stack(cols, axis=1)


def qr_positive(
    W: Float[Array, "d k"], rtol: float = COLLAPSE_RTOL, complete: bool = True
) -> tuple[Float[Array, "d k"], Float[Array, "k k"]]:
    """Reduced QR factorization `W = Q R` with `R_ii >= 0`.

    The sign convention makes `Q` a continuous function of `W`, which the
    covariant-vector backward pass and gradients rely on. A column that has
    collapsed onto the previous ones (its orthogonal part at most `rtol eps`
    times its norm) gets `R_jj = 0` exactly and a `Q` column orthogonal to the
    previous ones, so `Q` is always orthonormal and finite. With
    `complete=False` (for flows, whose collapse is an error anyway) a collapsed
    column of a tiny block gets `R_jj = 0` and a non-finite `Q` column.

    By shape: Gram-Schmidt for tiny blocks (`d <= 4`) and for tall blocks with
    few columns (`d >= 64`, `k <= 32`); `cholesky_qr2` for tall blocks with many
    columns (`d >= 64`, `32 < k <= d / 2`); LAPACK's Householder QR otherwise.
    """
    d, k = W.shape
    if d <= _SMALL or (d >= _TALL and k <= _GS_MAX_K):
        return _gram_schmidt(W, rtol, complete)
    if d >= _TALL and 2 * k <= d:
        return cholesky_qr2(W, rtol)
    return householder(W, rtol)


def householder(
    W: Float[Array, "d k"], rtol: float = COLLAPSE_RTOL
) -> tuple[Float[Array, "d k"], Float[Array, "k k"]]:
    """`qr_positive` by LAPACK's Householder QR: backward stable whatever the
    conditioning (no second pass needed), and cheap to compile; slower than the
    unrolled Gram-Schmidt for tiny blocks (a custom call per factorization)."""
    k = W.shape[1]
    Q, R = jnp.linalg.qr(W, mode="reduced")
    diag = jnp.abs(jnp.diagonal(R))
    column_norms = jnp.linalg.norm(W, axis=0)
    collapsed = (diag <= rtol * jnp.finfo(W.dtype).eps * column_norms) & jnp.isfinite(
        column_norms
    )
    signs = jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0).astype(W.dtype)
    R = R * signs[:, None]
    R = jnp.where(jnp.eye(k, dtype=bool) & collapsed[None, :], 0.0, R)
    return Q * signs[None, :], R


# For tall blocks (d >= _TALL) with up to _GS_MAX_K columns Gram-Schmidt
# (unrolled over columns) is used: XLA's CPU QR of a (1000, 10) block took 16 ms,
# Gram-Schmidt 0.3 ms. In between, LAPACK (shorter compiles).
_GS_MAX_K = 32
_TALL = 64


def _modified_gram_schmidt(W):
    # `qr_chain`'s fast pass: one pass of modified Gram-Schmidt. Each normalized
    # column is removed from all later columns at once (rank-1 updates), which
    # XLA fuses into few kernels. A collapsed column is not detected here (its
    # R_jj is rounding noise, or 0 with a NaN column): the chain's guard then
    # reruns it with `householder`.
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


# Above this ratio of the largest to the smallest R_ii, `qr_chain` reruns with
# Householder QR.
_REORTHOGONALIZE = 1e4


def qr_chain(
    P: Float[Array, "n d d"],
    Q: Float[Array, "d k"],
    n_valid=None,
    hold=None,
    rtol: float = COLLAPSE_RTOL,
) -> tuple[Float[Array, "d k"], Float[Array, "n k"]]:
    """The chain `P_j Q_{j-1} = Q_j R_j`: the final `Q` and every `diag(R_j)`.

    This is the sequential part of the Jacobian method. For tiny blocks
    (`d <= 4`) the common case pays for one modified Gram-Schmidt pass per step
    and no branch: the chain first runs with one pass everywhere, and only if
    some step was ill-conditioned (its `R_ii` span more than `1e4`, or are not
    finite: a collapsed direction) does it run again with Householder QR
    (`householder`: backward stable, orthogonal to working precision, and it
    detects collapsed directions). Where every step is well conditioned one
    pass of modified Gram-Schmidt is orthogonal to about `1e4 eps` (Bjorck
    1967), and the two factorizations agree to rounding. A branch inside the
    loop would cost: on the 2-core CPU of `benchmarks/README.md` a chain of 10^4
    3 x 3 steps took 6.7 ms with a per-step `lax.cond` and 1.0 to 1.6 ms
    without (the `lax.cond` makes XLA's CPU runtime schedule the loop body
    across threads).

    `n_valid` (a traced int, default all `n`) counts only the first `n_valid`
    steps: the later propagators are replaced by the identity (so the final
    `Q` is the one after step `n_valid`, up to rounding: a Gram-Schmidt pass of
    an orthonormal `Q` returns it to about `eps`), and the later rows of
    `diags` are meaningless. Cheaper than masking the loop (no select per step).
    `hold` (bool, shape `(n,)`) stops gradients through `Q` entering step `j`
    where `hold[j]` (a window start).
    """
    d = Q.shape[0]
    n = P.shape[0]
    if n_valid is not None:
        valid = jnp.arange(n) < n_valid
        P = jnp.where(valid[:, None, None], P, jnp.eye(d, dtype=P.dtype))

    def chain(qr):
        if hold is None:
            body = lambda Q, P_j: qr(small_matmul(P_j, Q))  # noqa: E731
            xs = P
        else:

            def body(Q, x):
                P_j, hold_j = x
                Q = jnp.where(hold_j, jax.lax.stop_gradient(Q), Q)
                return qr(small_matmul(P_j, Q))

            xs = (P, hold)
        return scan(body, Q, xs)

    if d > _SMALL:

        def qr_full(W):
            Q, R = qr_positive(W, rtol)
            return Q, jnp.diagonal(R)

        return chain(qr_full)
    Q1, diags = chain(_modified_gram_schmidt)
    valid = jnp.arange(n) < (n if n_valid is None else n_valid)
    # (NaN compares false: a collapsed column's 0 / 0 also reruns.)
    lo = jnp.min(diags, axis=1) * _REORTHOGONALIZE
    well = jnp.all((lo > jnp.max(diags, axis=1)) | ~valid)

    def guarded(W):
        Q, R = householder(W, rtol)
        return Q, jnp.diagonal(R)

    return jax.lax.cond(well, lambda: (Q1, diags), lambda: chain(guarded))


def small_matmul(A, B):
    """`A @ B` as broadcast products and sums (fuses for tiny matrices)."""
    if A.shape[-1] <= _SMALL and A.shape[-2] <= _SMALL:
        return jnp.sum(A[..., :, :, None] * B[..., None, :, :], axis=-2)
    return A @ B


# --------------------------------------------------------------------------
# Tall blocks with many columns: CholeskyQR2.
#
# For a (256, 64) block the factorization is most of a Lyapunov step. On the
# 2-core CPU of `benchmarks/README.md`, for 16 blocks under `vmap`: XLA's QR
# (LAPACK geqrf + orgqr from SciPy's OpenBLAS, one custom call) 5.2 ms (3.2 ms
# with OpenBLAS limited to one thread), and 20 to 300 ms when other processes
# share the cores (OpenBLAS's threads wait by spinning, on top of XLA's own
# threads, which already split the batch); the unrolled Gram-Schmidt 31 ms.
# CholeskyQR2 is two Gram matrices, two k x k inverse Cholesky factorizations
# and two products with the inverse factors: 3.0 ms (3 to 8 ms under load), in
# XLA's own kernels only, compiled in 0.3 s. (Calling LAPACK for the Cholesky
# factors cost the same when the cores were idle and 6x more under load; and
# two independent batched LAPACK calls running at once can deadlock XLA's
# 2-thread pool, each waiting for the other's batch tasks.)


def _inverse_cholesky(G):
    """`(R, X)`: the upper triangular `R` with `G = R^T R` (`R_ii > 0`) and
    `X = R^{-1}`, column by column (bordering; `x_j` is the Gram-Schmidt
    coefficients of the j-th orthonormal column in the inner product `G`).

    NaN where `G` is not numerically positive definite. A loop of `k` small
    steps: on CPU as fast as LAPACK's Cholesky and triangular inverse together
    (0.6 ms for 16 blocks of 64 x 64), with no LAPACK call, and cheap to
    compile. It has no reverse-mode derivative (`_cholesky_qr2` has its own).
    """
    k = G.shape[0]
    hi = jax.lax.Precision.HIGHEST

    def column(j, carry):
        X, R = carry
        g = jax.lax.dynamic_slice_in_dim(G, j, 1, axis=1)[:, 0]
        e = (jnp.arange(k) == j).astype(G.dtype)
        # (X's columns j, j+1, ... are still zero, so r_i = 0 for i >= j)
        r = jnp.matmul(X.T, g, precision=hi)
        norm = jnp.sqrt(jnp.dot(e, g) - jnp.dot(r, r, precision=hi))
        x = (e - jnp.matmul(X, r, precision=hi)) / norm
        X = jax.lax.dynamic_update_slice_in_dim(X, x[:, None], j, axis=1)
        r = jnp.where(e > 0, norm, r)
        R = jax.lax.dynamic_update_slice_in_dim(R, r[:, None], j, axis=1)
        return X, R

    zeros = jnp.zeros_like(G)
    X, R = jax.lax.fori_loop(0, k, column, (zeros, zeros))
    return R, X


def _cholesky_pass(W):
    """One CholeskyQR pass: `W^T W = R^T R`, `Q = W R^{-1}`; returns `(Q, R, G)`."""
    hi = jax.lax.Precision.HIGHEST  # (no TF32 on GPUs: it would halve the digits)
    G = jnp.matmul(W.T, W, precision=hi)
    R, X = _inverse_cholesky(G)
    return jnp.matmul(W, X, precision=hi), R, G


# The first pass's Q1 has Q1^T Q1 = I + E with |E| about eps cond(W)^2. The
# second pass is orthonormal to working precision when cond(Q1) is moderate:
# ||E||_F <= 1/2 bounds cond(Q1)^2 by 3 (Yamamoto et al. 2015, Section 3), and
# E is the second pass's Gram matrix minus I, so the check costs no product.
_CHOLESKY_QR2_MAX_E = 0.5


def _cholesky_qr2_unchecked(W, rtol):
    """CholeskyQR2 and whether it is valid (else the caller falls back)."""
    k = W.shape[1]
    hi = jax.lax.Precision.HIGHEST
    Q1, R1, G1 = _cholesky_pass(W)
    Q, R2, G2 = _cholesky_pass(Q1)
    R = jnp.triu(jnp.matmul(R2, R1, precision=hi))
    E = G2 - jnp.eye(k, dtype=W.dtype)
    column_norms = jnp.sqrt(jnp.diagonal(G1))
    # (Written so that a NaN anywhere fails: NaN compares false.)
    well = jnp.sqrt(jnp.sum(E * E)) <= _CHOLESKY_QR2_MAX_E
    # A direction near collapse is left to Householder QR, which resolves it
    # and completes Q exactly as the other factorizations do.
    resolved = jnp.diagonal(R) > rtol * jnp.finfo(W.dtype).eps * column_norms
    ok = well & jnp.all(resolved) & jnp.all(jnp.isfinite(R))
    return Q, R, ok


def _qr_tangent(Q, R, dW):
    """The derivative of a reduced QR (`W = Q R`, `R` upper triangular) along
    `dW`: the rule of `jnp.linalg.qr` (Walter, Lehmann & Lamour 2012), with a
    collapsed column's `R_jj = 0` replaced by 1 in the solve so that nothing
    becomes NaN (its `dR_jj` is then 0)."""
    hi = jax.lax.Precision.HIGHEST
    collapsed = jnp.diagonal(R) == 0
    R_safe = R + jnp.diag(collapsed.astype(R.dtype))
    X = jax.lax.linalg.triangular_solve(R_safe, dW, left_side=False, lower=False)
    C = jnp.matmul(Q.T, X, precision=hi)
    lower = jnp.tril(C, -1)
    omega = lower - lower.T  # skew-symmetric: Q^T dQ
    dQ = jnp.matmul(Q, omega - C, precision=hi) + X
    dR = jnp.matmul(C - omega, R, precision=hi)
    return dQ, dR


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _cholesky_qr2(W, rtol):
    Q, R, ok = _cholesky_qr2_unchecked(W, rtol)

    # The fallback as a loop of zero or one iterations, not `lax.cond`: under
    # `vmap` a cond with a batched predicate becomes a select that runs both
    # branches for every element, while a batched while loop runs its body only
    # while some element asks for it (here: never, when every block is well
    # conditioned). `W` travels in the carry and the body overwrites it (it runs
    # at most once): an input that the loop never changes would let XLA hoist
    # the Householder QR out of the loop (loop-invariant code motion) and run
    # it every time. Loops have no reverse-mode derivative; the custom JVP
    # below (a function of Q and R only) supplies it.
    def fallback(carry):
        _, W, _, _ = carry
        Q, R = householder(W, rtol)
        return jnp.array(True), Q, Q, R

    _, _, Q, R = jax.lax.while_loop(lambda c: ~c[0], fallback, (ok, W, Q, R))
    return Q, R


@_cholesky_qr2.defjvp
def _cholesky_qr2_jvp(rtol, primals, tangents):
    (W,), (dW,) = primals, tangents
    Q, R = _cholesky_qr2(W, rtol)
    return (Q, R), _qr_tangent(Q, R, dW)


def cholesky_qr2(
    W: Float[Array, "d k"], rtol: float = COLLAPSE_RTOL
) -> tuple[Float[Array, "d k"], Float[Array, "k k"]]:
    """`qr_positive` by CholeskyQR2, with Householder QR as the fallback.

    Two passes of CholeskyQR (`W^T W = R_1^T R_1`, `Q_1 = W R_1^{-1}`; then the
    same for `Q_1`, and `R = R_2 R_1`): matrix products and two `k x k` inverse
    Cholesky factorizations in XLA's own kernels: on CPU, for tall blocks with
    many columns under `vmap`, faster than LAPACK's Householder QR with
    OpenBLAS's default threads, and far less slowed down by other processes on
    the cores (no spinning BLAS threads). It is backward stable and
    orthogonal to working precision when `cond(W)` is at most about
    `eps^{-1/2}` (Yamamoto et al. 2015): checked on the second pass's Gram
    matrix (`||Q_1^T Q_1 - I||_F <= 1/2`), which also catches a failed
    Cholesky (NaN). Otherwise, or when a direction is near collapse, the block
    is factorized by `householder`, in a loop that runs no iteration when no
    block needs it (so the fallback costs nothing under `vmap` when every block
    is well conditioned). Reverse-mode derivatives come from a custom JVP (the
    rule of `jnp.linalg.qr`), since the loop has none of its own.

    **References:** Y. Yamamoto, Y. Nakatsukasa, Y. Yanagisawa and T. Fukaya,
    "Roundoff error analysis of the CholeskyQR2 algorithm", Electron. Trans.
    Numer. Anal. 44, 306-326 (2015); T. Fukaya, R. Kannan, Y. Nakatsukasa,
    Y. Yamamoto and Y. Yanagisawa, "Shifted Cholesky QR for computing the QR
    factorization of ill-conditioned matrices", SIAM J. Sci. Comput. 42,
    A477-A503 (2020).
    """
    return _cholesky_qr2(W, float(rtol))
