"""Divergence (trace of the Jacobian) of a vector field, exact or by Hutchinson's
estimator, and the instantaneous change of variables that integrates it along a
flow: the likelihood machinery shared by continuous normalizing flows and the
probability-flow ODE of a diffusion model."""

from collections.abc import Callable
from typing import Literal

import diffrax as dfx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike
from .._results import RESULTS


Trace = Literal["exact", "hutchinson"]
Probe = Literal["rademacher", "gaussian"]

_TRACES = ("exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")


def check_trace_options(trace: str, probe: str, n_probes: int, key) -> None:
    """Trace-time checks of the estimator options (`ValueError`s saying what to
    pass)."""
    if trace not in _TRACES:
        raise ValueError(
            f"`trace` must be 'exact' (the full Jacobian, d forward passes: small d) "
            f"or 'hutchinson' (a stochastic estimate, one pass per probe: large d), "
            f"got {trace!r}."
        )
    if trace == "hutchinson":
        if probe not in _PROBES:
            raise ValueError(f"`probe` must be one of {_PROBES}, got {probe!r}.")
        if not isinstance(n_probes, int) or n_probes < 1:
            raise ValueError(f"`n_probes` must be a positive int, got {n_probes!r}.")
        if key is None:
            raise ValueError(
                "`trace='hutchinson'` draws random probes: pass "
                "`key=jax.random.key(...)`."
            )


def sample_probes(
    key: PRNGKeyArray, n_probes: int, d: int, dtype, kind: Probe = "rademacher"
) -> Float[Array, "n_probes d"]:
    """Probe vectors `eps` with `E[eps eps^T] = I` for Hutchinson's estimator:
    Rademacher (entries +-1, the lower-variance choice for a fixed Jacobian,
    Hutchinson 1989) or standard Gaussian."""
    if kind == "rademacher":
        return jax.random.rademacher(key, (n_probes, d), dtype=dtype)
    return jax.random.normal(key, (n_probes, d), dtype=dtype)


def divergence(
    fn: Callable[[Float[Array, " d"]], Float[Array, " d"]],
    x: Float[Array, " d"],
    *,
    trace: Trace = "exact",
    probes: Float[Array, "n_probes d"] | None = None,
    mode: Literal["forward", "reverse"] = "forward",
) -> Float[Array, ""]:
    """The divergence `tr(d fn / dx)` at `x`.

    - `trace="exact"`: the trace of `jax.jacfwd(fn)(x)` (`d` forward passes).
    - `trace="hutchinson"`: `mean_i eps_i . (J eps_i)` over the rows of
        `probes`, an unbiased estimate when `E[eps eps^T] = I` (Hutchinson 1989;
        FFJORD, Grathwohl et al. 2019). One `jax.jvp` per probe
        (`mode="forward"`) or one shared `jax.vjp` (`mode="reverse"`).
    """
    if trace == "exact":
        return jnp.trace(jax.jacfwd(fn)(x))
    if mode == "forward":
        quad = jax.vmap(lambda e: jnp.vdot(e, jax.jvp(fn, (x,), (e,))[1]))(probes)
    else:
        _, pullback = jax.vjp(fn, x)
        quad = jax.vmap(lambda e: jnp.vdot(pullback(e)[0], e))(probes)
    return jnp.mean(quad)


def default_controller(dtype) -> dfx.PIDController:
    if jnp.finfo(dtype).bits >= 64:
        return dfx.PIDController(rtol=1e-8, atol=1e-8)
    return dfx.PIDController(rtol=1e-5, atol=1e-5)


def integrate_divergence(
    vector_field: Callable[
        [RealScalarLike, Float[Array, " d"], Args], Float[Array, " d"]
    ],
    x: Float[Array, " d"],
    t0: RealScalarLike,
    t1: RealScalarLike,
    *,
    args: Args = None,
    trace: Trace = "exact",
    key: PRNGKeyArray | None = None,
    n_probes: int = 1,
    probe: Probe = "rademacher",
    mode: Literal["forward", "reverse"] = "forward",
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    dt0: RealScalarLike | None = None,
    adjoint: dfx.AbstractAdjoint | None = None,
    max_steps: int = 4096,
) -> tuple[Float[Array, " d"], Float[Array, ""], RESULTS]:
    """Transport `x` from `t0` to `t1` along `dx/dt = f(t, x, args)` and integrate
    the divergence of `f` along the way.

    Solves `d/dt [x, l] = [f(t, x), tr(df/dx)(t, x)]`, `l(t0) = 0`, with diffrax.
    By the instantaneous change of variables (Chen et al. 2018, Theorem 1), the
    densities `p_t` carried by the flow satisfy

        log p_{t0}(x(t0)) = log p_{t1}(x(t1)) + l(t1),

    which is how a continuous normalizing flow (Grathwohl et al. 2019) and the
    probability-flow ODE of a diffusion model (Song et al. 2021, Appendix D.2)
    give exact log-likelihoods. `t1 < t0` integrates backwards.

    Hutchinson probes are drawn once per solve from `key` and held fixed along
    it (FFJORD), so the estimate of `l(t1)` is unbiased.

    **Arguments:**

    - `vector_field`: `f(t, x, args) -> dx/dt`, shape `(d,)`.
    - `x`: the state at `t0`, shape `(d,)`.
    - `t0`, `t1`: the start and end times.
    - `trace`, `key`, `n_probes`, `probe`, `mode`: see `divergence`.
    - `solver`, `stepsize_controller`, `dt0`, `adjoint`, `max_steps`: passed to
        `diffrax.diffeqsolve` (defaults: `Tsit5`, `PIDController` at
        `rtol = atol = 1e-8` in float64 and `1e-5` in float32, recursive
        checkpointing).

    **Returns:**

    `(x(t1), l(t1), result)`: the transported state `(d,)`, the integrated
    divergence (a scalar, nats), and a `dynjax.RESULTS` code (diffrax's,
    promoted). Write for one sample; `vmap` over samples.
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    # (Times in the state's dtype: Python floats would promote a float32 solve to
    # float64 under x64.)
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    probes = None
    if trace == "hutchinson":
        probes = sample_probes(key, n_probes, x.shape[0], dtype, probe)

    def augmented(t, y, args):
        z, _ = y
        fn = lambda z_: vector_field(t, z_, args)  # noqa: E731
        div = divergence(fn, z, trace=trace, probes=probes, mode=mode)
        return fn(z), div.astype(dtype)

    solver = dfx.Tsit5() if solver is None else solver
    if stepsize_controller is None:
        stepsize_controller = default_controller(dtype)
    adjoint = dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    sol = dfx.diffeqsolve(
        dfx.ODETerm(augmented),
        solver,
        t0,
        t1,
        dt0,
        (x, jnp.zeros((), dtype)),
        args=args,
        saveat=dfx.SaveAt(t1=True),
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=False,
    )
    z1, l1 = sol.ys
    return z1[0], l1[0], RESULTS.promote(sol.result)
