"""Curvature of a loss, matrix-free: Hessian-vector products and Lanczos."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._flat import check_scalar_loss, FlatLoss


def hessian_vector_product(
    flat_loss: Callable[[Array], Array], x: Float[Array, " p"], v: Float[Array, " p"]
) -> Float[Array, " p"]:
    """`H(x) v` by forward-over-reverse differentiation (`jax.jvp` of
    `jax.grad`): the cost of about two gradients, no `p x p` matrix."""
    return jax.jvp(jax.grad(flat_loss), (x,), (v,))[1]


def lanczos_top(
    matvec: Callable[[Array], Array],
    v0: Float[Array, " p"],
    iterations: int,
    hv0: Float[Array, " p"] | None = None,
) -> tuple[Array, Array, Array]:
    """The largest eigenvalue of a symmetric operator by `iterations` Lanczos steps
    from `v0`, with full reorthogonalization (the basis is `iterations x p`).

    Returns `(theta, u, next_start)`: the top Ritz value, its unit Ritz vector,
    and `H u / |H u|` (one power step beyond the Ritz vector, computed without
    another product from `H V = V T + beta v_{m+1} e_m^T`), the warm start for
    the next call. With `iterations=1` this is power iteration: `theta` is the
    Rayleigh quotient of `v0`. `hv0`, if given, is `matvec(v0)` for a unit `v0`,
    already computed (e.g. alongside a gradient): it saves one product.
    """
    p = v0.shape[0]
    m = iterations
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).tiny
    if hv0 is None:
        v0 = v0 / jnp.linalg.norm(v0)
        hv0 = matvec(v0)

    def lanczos_step(j, carry, w):
        V, alphas, betas, v_next = carry
        V = V.at[j].set(v_next)
        alpha = jnp.vdot(v_next, w)
        # Full reorthogonalization against the basis so far (rows > j are 0).
        w = w - V.T @ (V @ w)
        w = w - V.T @ (V @ w)
        beta = jnp.linalg.norm(w)
        # (An invariant subspace was found: beta = 0. Continue with zeros; the
        # Ritz values of the leading block are exact.)
        v_new = jnp.where(beta > tiny, w / jnp.maximum(beta, tiny), 0.0)
        return V, alphas.at[j].set(alpha), betas.at[j].set(beta), v_new

    def body(j, carry):
        return lanczos_step(j, carry, matvec(carry[3]))

    V0 = jnp.zeros((m, p), dtype)
    init = (V0, jnp.zeros(m, dtype), jnp.zeros(m, dtype), v0)
    carry = lanczos_step(0, init, hv0)
    V, alphas, betas, v_last = jax.lax.fori_loop(1, m, body, carry)
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    evals, evecs = jnp.linalg.eigh(T)
    theta, y = evals[-1], evecs[:, -1]
    u = V.T @ y
    u = u / jnp.linalg.norm(u)
    Hu = theta * u + betas[-1] * y[-1] * v_last
    norm = jnp.linalg.norm(Hu)
    next_start = jnp.where(norm > tiny, Hu / jnp.maximum(norm, tiny), u)
    return theta, u, next_start


class Sharpness(eqx.Module):
    """The top Hessian eigenpair returned by `dynjax.sharpness`.

    **Attributes:**

    - `value`: the largest eigenvalue of the Hessian of the loss at the given
        parameters (the sharpness), a scalar in loss units per parameter unit
        squared.
    - `vector`: its unit eigenvector, a pytree shaped like the parameters.
    - `residual`: `|H v - value v|`, the Lanczos residual (an error bound on
        `value` for a symmetric Hessian), a scalar.
    """

    value: Float[Array, ""]
    vector: PyTree
    residual: Float[Array, ""]


@eqx.filter_jit
def _sharpness(flat, x, data, v0, iterations):
    def matvec(v):
        return hessian_vector_product(lambda y: flat(y, data), x, v)

    theta, u, _ = lanczos_top(matvec, v0, iterations)
    residual = jnp.linalg.norm(matvec(u) - theta * u)
    return theta, u, residual


def sharpness(
    loss: Callable[[PyTree, PyTree], Float[Array, ""]],
    params: PyTree,
    data: PyTree | None = None,
    *,
    iterations: int = 30,
    key: PRNGKeyArray | None = None,
) -> Sharpness:
    r"""The sharpness of a loss: the largest eigenvalue of its Hessian.

    Computed matrix-free by the Lanczos method (with full reorthogonalization)
    on Hessian-vector products `H v = d/de grad J(theta + e v)` (`jax.jvp` of
    `jax.grad`): memory `O(iterations * p)` for `p` parameters, never the
    `p x p` Hessian, and cost about `2 * iterations` gradient evaluations.
    Lanczos converges to the largest *algebraic* eigenvalue, so a negative
    curvature larger in magnitude (a saddle) does not hide the top one, as it
    would in power iteration. The basis is fully reorthogonalized, so float32
    gives the eigenvalue to about `1e-5` relative (no precision warning).

    Full-batch gradient descent with learning rate `eta` is linearly stable at a
    minimum iff `eta * sharpness < 2`; on neural networks it runs at the *edge
    of stability* where `sharpness ~ 2 / eta` (Cohen et al., 2021).

    **Arguments:**

    - `loss`: `loss(params, batch) -> scalar`.
    - `params`: any pytree of float arrays (an equinox Module's trainable part,
        a dict of weights); `p` is the total number of entries.
    - `data`: the batch passed to `loss` (any pytree, or `None`).
    - `iterations`: Lanczos steps (at most `p` are used). The top eigenvalue
        usually converges in 20-50; check `residual`.
    - `key`: the random start vector's key (default `jax.random.key(0)`).

    **Returns:**

    A `dynjax.Sharpness` (`value`, `vector`, `residual`).

    **Raises:**

    `ValueError` if `loss` does not return a scalar or `params` has no float
    arrays, or `iterations < 1`.

    **References:** C. Lanczos, *J. Res. Natl. Bur. Stand.* 45 (1950);
    B. Pearlmutter, *Fast exact multiplication by the Hessian*, Neural
    Computation (1994); J. Cohen et al., *Gradient descent on neural networks
    typically occurs at the edge of stability*, ICLR (2021).
    """
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"`iterations` must be a positive int, got {iterations!r}.")
    flat = FlatLoss.from_params(loss, params)
    check_scalar_loss(flat, data)
    x = flat.ravel(params)
    key = jax.random.key(0) if key is None else key
    m = min(iterations, x.shape[0])
    v0 = jax.random.normal(key, x.shape, x.dtype)
    theta, u, residual = _sharpness(flat, x, data, v0, m)
    return Sharpness(value=theta, vector=flat.unravel(u), residual=residual)


def max_stable_learning_rate(
    loss: Callable[[PyTree, PyTree], Float[Array, ""]],
    params: PyTree,
    data: PyTree | None = None,
    *,
    iterations: int = 30,
    key: PRNGKeyArray | None = None,
) -> Float[Array, ""]:
    r"""The largest learning rate at which gradient descent is linearly stable at
    `params`: `2 / lambda_max(Hessian)`.

    Near a minimum `theta*` with Hessian `H`, gradient descent
    `theta -> theta - eta grad J(theta)` is linearized to
    `e -> (I - eta H) e`, which contracts iff `|1 - eta lambda_i| < 1` for
    every eigenvalue, i.e. `0 < eta < 2 / lambda_max`. Matrix-free (see
    `dynjax.sharpness`, whose arguments it takes); for a dense-Hessian version
    on a flat state see `dynjax.max_learning_rate`.

    **Returns:**

    `2 / sharpness`, a scalar in the units of a learning rate; `inf` where the
    sharpness is not positive (no curvature bounds the step).

    **Reference:** Y. Nesterov, *Introductory Lectures on Convex Optimization*
    (2004), Section 1.2.3.
    """
    s = sharpness(loss, params, data, iterations=iterations, key=key).value
    return jnp.where(s > 0, 2 / jnp.where(s > 0, s, 1.0), jnp.inf)
