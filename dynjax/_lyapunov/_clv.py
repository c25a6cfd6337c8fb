"""Covariant Lyapunov vectors by the Ginelli et al. (2007) algorithm."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from .._custom_types import Args, Inputs, StateLike
from .._misc import is_concrete
from .._results import raise_if_failed, RESULTS
from .._system import AbstractFlow, AbstractSystem
from ._spectrum import (
    _conform,
    _layout,
    _prepare,
    initial_frame,
    run_fixed_layout,
)


class CovariantLyapunovVectors(eqx.Module):
    """The result of `dynjax.covariant_lyapunov_vectors`.

    **Attributes:**

    - `vectors`: shape `(n, d, k)`; `vectors[j, :, i]` is the unit covariant
        vector of the `i`-th exponent at sample `j`, defined up to sign.
    - `xs`: the states at the samples, shape `(n, d)`.
    - `times`: the system times (flows) or iteration indices (maps) of the samples.
    - `exponents`: the exponents from the forward pass, in the column order of
        `vectors` (descending once the tangents are aligned).
    - `result`: a `dynjax.RESULTS` code.
    """

    vectors: Float[Array, "n d k"]
    xs: Float[Array, "n d"]
    times: Shaped[Array, " n"]
    exponents: Float[Array, " k"]
    result: RESULTS


@eqx.filter_jit
def _clv(system, x0, args, inputs, key, dt, solver, counts, layout, n_samples):
    tangent, state0, dt, args, inputs = _prepare(
        system, x0, args, inputs, None, key, dt, solver, layout
    )
    state, cum, steps, code, (_, (ts, xs, Qs, Rs)) = run_fixed_layout(
        tangent, state0, dt, inputs, args, counts, layout, remainder=0,
        method="matrix-free", store_qr=True,
    )  # fmt: skip
    times = state0.elapsed + dt * steps.astype(state0.elapsed.dtype)
    # A collapsed direction (R_jj = 0, a map's singular Jacobian) has no
    # covariant vector: R is not invertible.
    code = RESULTS.where(
        (code == RESULTS.successful) & jnp.any(jnp.diagonal(Rs, axis1=1, axis2=2) == 0),
        RESULTS.degenerate_tangent_map,
        code,
    )
    k = Qs.shape[-1]

    def back(C, R):
        C = jsl.solve_triangular(R, C, lower=False)
        C = C / jnp.linalg.norm(C, axis=0, keepdims=True)
        return C, C

    # C_j = R_j^{-1} C_{j+1} (columns normalized) from C_N = I backwards; the
    # first blocks beyond `n_samples` are the backward warm-up, over which C
    # converges to the covariant coefficients.
    _, Cs = jax.lax.scan(back, jnp.eye(k, dtype=Qs.dtype), Rs, reverse=True)
    vectors = jnp.einsum("nij,njk->nik", Qs[:n_samples], Cs[:n_samples])
    exponents = cum[n_samples - 1] / times[n_samples - 1] / layout.log_base
    return CovariantLyapunovVectors(
        vectors=vectors,
        xs=xs[:n_samples],
        times=ts[:n_samples],
        exponents=exponents,
        result=code,
    )


def covariant_lyapunov_vectors(
    system: AbstractSystem,
    x0: StateLike,
    *,
    n_samples: int,
    k: int | None = None,
    backward_warmup: int = 100,
    dt: float | None = None,
    interval: int | None = None,
    transient: float | int | None = None,
    tangent_warmup: int | None = None,
    inputs: Inputs | None = None,
    args: Args = None,
    solver: dfx.AbstractSolver | None = None,
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> CovariantLyapunovVectors:
    r"""Covariant Lyapunov vectors along an orbit (Ginelli et al. 2007).

    The covariant vectors `v_i(x)` span the Oseledets splitting: they are carried
    into each other by the linearized dynamics, `DΦ^t v_i(x) ∝ v_i(Φ^t x)`, and
    grow at the rate `lambda_i`. They need not be orthogonal (unlike the
    Gram-Schmidt vectors of `lyapunov_spectrum`).

    Forward pass: the Benettin QR iteration `W_j = Q_{j+1} R_j` (after transient
    and tangent warm-up), storing `Q_j` and `R_j` at each of
    `n_samples + backward_warmup` re-orthonormalizations. Backward pass: from
    `C = I` at the end, iterate the upper-triangular coefficients
    `C_j = R_j^{-1} C_{j+1}` with normalized columns; after `backward_warmup`
    steps they converge, and `v_j = Q_j C_j`.

    **Arguments:**

    - `n_samples`: the number of re-orthonormalization times at which to return
        the vectors (every `interval` steps).
    - `k`: the number of leading vectors (default `d`).
    - `backward_warmup`: the number of extra blocks at the end used only for the
        backward convergence.
    - Others as for `dynjax.lyapunov_spectrum`.

    **Returns:**

    A `dynjax.CovariantLyapunovVectors`.

    **Reference:** F. Ginelli, P. Poggi, A. Turchi, H. Chaté, R. Livi, A. Politi,
    "Characterizing dynamics with covariant Lyapunov vectors", Phys. Rev. Lett.
    99, 130601 (2007).
    """
    for name, value, low in (
        ("n_samples", n_samples, 1),
        ("backward_warmup", backward_warmup, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
    interval_ = (
        interval
        if interval is not None
        else (10 if isinstance(system, AbstractFlow) else 1)
    )
    layout, counts, _ = _layout(
        system,
        x0,
        k=k,
        dt=dt,
        n_steps=(n_samples + backward_warmup) * interval_,
        t_total=None,
        interval=interval_,
        transient=transient,
        tangent_warmup=tangent_warmup,
        inputs=inputs,
        base="e",
        solver=solver,
        state=None,
        method="matrix-free",
        args=args,
        key=key,
        verb="covariant_lyapunov_vectors",
        fixed=True,
    )
    dt_arg = dt if (dt is not None and not is_concrete(dt)) else None
    system, x0, args, inputs = _conform(system, x0, args, inputs, layout)
    key = initial_frame(key, x0.shape[0], layout.k, x0.dtype)
    out = _clv(system, x0, args, inputs, key, dt_arg, solver, counts, layout, n_samples)
    if throw:
        vectors = raise_if_failed(out.result, out.vectors)
        out = eqx.tree_at(lambda r: r.vectors, out, vectors)
    return out
