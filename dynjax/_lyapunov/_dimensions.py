"""Quantities derived from a Lyapunov spectrum."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def _exponents(exponents):
    exponents = getattr(exponents, "exponents", exponents)
    exponents = jnp.asarray(exponents)
    if exponents.ndim != 1 or exponents.shape[0] < 1:
        raise ValueError(
            f"Expected a 1-D array of Lyapunov exponents (or a result with "
            f"`.exponents`), got shape {exponents.shape}."
        )
    if not jnp.issubdtype(exponents.dtype, jnp.floating):
        exponents = exponents.astype(jnp.result_type(float))
    return -jnp.sort(-exponents)


def kaplan_yorke_dimension(exponents: Float[ArrayLike, " k"]) -> Float[Array, ""]:
    r"""The Kaplan-Yorke (Lyapunov) dimension of an attractor.

    With the exponents sorted descending and `j` the largest index with
    `\sum_{i \le j} \lambda_i \ge 0`,

    $$D_{KY} = j + \frac{\sum_{i=1}^{j} \lambda_i}{|\lambda_{j+1}|}.$$

    It is 0 when `lambda_1 < 0` (a stable fixed point) and `k` when the sum of
    all given exponents is non-negative (then the full spectrum, or more
    exponents, are needed to locate the crossing). Works under `jit`, `vmap`
    and `grad`.

    **Arguments:**

    - `exponents`: the exponents (any order), or a `LyapunovResult`.

    **Returns:**

    The dimension, a scalar.

    **Reference:** J. L. Kaplan, J. A. Yorke, "Chaotic behavior of
    multidimensional difference equations", Lecture Notes in Math. 730, 204-227
    (1979).
    """
    lam = _exponents(exponents)
    k = lam.shape[0]
    cs = jnp.cumsum(lam)
    j = jnp.sum(cs >= 0)  # the cumulative sums of a sorted spectrum are concave
    idx = jnp.clip(j, 1, k - 1) if k > 1 else 0
    frac = cs[idx - 1] / jnp.abs(lam[idx]) if k > 1 else jnp.zeros((), lam.dtype)
    return jnp.where(j == 0, 0.0, jnp.where(j >= k, float(k), j + frac)).astype(
        lam.dtype
    )


def ks_entropy(exponents: Float[ArrayLike, " k"]) -> Float[Array, ""]:
    r"""The Kolmogorov-Sinai entropy by Pesin's identity: `h = \sum_{\lambda_i > 0}
    \lambda_i`.

    Pesin's identity holds for smooth systems with an SRB measure (typical
    attractors of dissipative systems, volume-preserving maps); in general the sum
    of the positive exponents is an upper bound (Ruelle's inequality). The units
    are those of the exponents (nats or bits per unit time or iteration).

    **Arguments:**

    - `exponents`: the exponents, or a `LyapunovResult` (with at least all the
        positive exponents).

    **Returns:**

    The entropy, a scalar.

    **Reference:** Ya. B. Pesin, "Characteristic Lyapunov exponents and smooth
    ergodic theory", Russ. Math. Surv. 32, 55-114 (1977).
    """
    lam = _exponents(exponents)
    return jnp.sum(jnp.where(lam > 0, lam, 0.0))
