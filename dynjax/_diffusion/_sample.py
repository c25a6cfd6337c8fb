"""Sampling a score-based diffusion model: the reverse-time SDE and the
probability-flow ODE (Song et al. 2021, Sections 3.2 and 4.3)."""

from collections.abc import Callable
from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike, State
from .._neural._divergence import default_controller
from .._results import raise_if_failed, RESULTS
from .._system import AbstractFlow
from .._system._checks import conform
from ._score import check_score, check_sde, check_t_min
from ._sde import AbstractSDE, noise_term


class ProbabilityFlow(AbstractFlow):
    r"""The probability-flow ODE of a diffusion model, as a dynjax flow.

    $$\frac{dx}{dt} = f(t, x) - \tfrac12 g(t)^2\, s(t, x),$$

    where `f`, `g` are the forward SDE's drift and diffusion and `s` the score
    model. With the true score `s = grad log p_t`, its solutions carry the
    marginals `p_t` of the SDE into each other (Song et al. 2021, eq. 13): from
    the prior at `T` to the data at `0`.

    Being an `AbstractFlow`, it runs through every dynjax verb:
    `dynjax.trajectory` (forward in time, from data at `t0=t_min` to
    `t1=sde.T`: the encoding direction; sample, backwards from `T`, with
    `dynjax.probability_flow_sample`), `dynjax.linearize` (at any `t=`),
    `dynjax.find_equilibria`, `dynjax.lyapunov_spectrum`. It is
    non-autonomous: pass the time with `t=`.

    **Arguments:**

    - `score_model`: `score_model(t, x) -> (d,)`, any callable or `eqx.Module`.
    - `sde`: a `dynjax.AbstractSDE` (`VPSDE`, `SubVPSDE`, `VESDE`).
    - `d`: the state dimension, if known (default `None`: taken from the state).

    **Reference:** Song et al., "Score-based generative modeling through
    stochastic differential equations", ICLR (2021), Section 4.3.
    """

    score_model: Callable
    sde: AbstractSDE
    d: int | None = eqx.field(static=True)

    def __init__(self, score_model: Callable, sde: AbstractSDE, d: int | None = None):
        check_sde(sde)
        self.score_model = score_model
        self.sde = sde
        self.d = d

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del args
        g2 = (self.sde.diffusion(t) ** 2).astype(x.dtype)
        return self.sde.drift(t, x) - 0.5 * g2 * self.score_model(t, x)


class DiffusionSamples(eqx.Module):
    """Samples drawn by `dynjax.reverse_sde_sample` or
    `dynjax.probability_flow_sample`.

    **Attributes:**

    - `xs`: the samples at `t_min`, shape `(n, d)`.
    - `x_T`: the prior draws they started from at `T`, shape `(n, d)`; row `i`
        is `sde.prior_sample(jax.random.split(k_prior, n)[i], d)` with
        `k_prior = jax.random.split(key)[0]`.
    - `result`: a `dynjax.RESULTS` code, that of the first sample that failed
        (`successful` if none did).
    - `stats`: `num_steps`, the solver steps of each sample, shape `(n,)`.
    """

    xs: Float[Array, "n d"]
    x_T: Float[Array, "n d"]
    result: RESULTS
    stats: dict[str, Any]


def first_failure(results: RESULTS) -> RESULTS:
    """One code for a batch of codes: the first that is not `successful`."""
    failed = results._value != RESULTS.successful._value
    return jax.tree.map(lambda v: v[jnp.argmax(failed)], results)


def _one_result(sol: dfx.Solution) -> RESULTS:
    """A sample's code: diffrax's, or `nonfinite_state` for a non-finite sample."""
    result = RESULTS.promote(sol.result)
    nonfinite = jnp.any(~jnp.isfinite(sol.ys[-1]))
    return RESULTS.where(
        (result == RESULTS.successful) & nonfinite, RESULTS.nonfinite_state, result
    )


def _finish(xs, x_T, results, num_steps) -> DiffusionSamples:
    return DiffusionSamples(
        xs=xs, x_T=x_T, result=first_failure(results), stats={"num_steps": num_steps}
    )


def throw_if_failed(out, throw: bool):
    """`throw=True`: raise on a failure (here, for concrete results, with no
    run-time check compiled into the verb; under a trace, at run time)."""
    if not throw:
        return out
    xs = raise_if_failed(out.result, out).xs
    return eqx.tree_at(lambda s: s.xs, out, xs)


def _check_sizes(n, d, n_steps=1) -> None:
    for name, value in (("n", n), ("d", d), ("n_steps", n_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def _prepare(score_model, sde, d: int, t_min, dtype, verb: str):
    """Entry checks; returns the flow in the working dtype and `t_min`."""
    check_sde(sde)
    check_t_min(t_min, sde, f"dynjax.{verb} integrates from T down to t_min")
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`dtype` must be a floating dtype, got {dtype.name}.")
    check_score(score_model, d, dtype)
    # (Sampling in float32 is the norm and not spoiled by it: no warning.)
    flow, _, _ = conform(
        ProbabilityFlow(score_model, sde, d),
        jnp.zeros(d, dtype),
        verb=verb,
        warn_float32=False,
    )
    return flow, jnp.asarray(t_min, dtype)


def _levy_area(solver) -> type:
    # Solvers that need Lévy areas (SRA1, ShARK, ...) declare the minimal one.
    minimal = getattr(solver, "minimal_levy_area", dfx.AbstractBrownianIncrement)
    if issubclass(minimal, dfx.AbstractSpaceTimeTimeLevyArea):
        return dfx.SpaceTimeTimeLevyArea
    if issubclass(minimal, dfx.AbstractSpaceTimeLevyArea):
        return dfx.SpaceTimeLevyArea
    return dfx.BrownianIncrement


@eqx.filter_jit
def _reverse_sde(flow: ProbabilityFlow, key, n, d, n_steps, t_min, solver, brownian):
    sde, score_model = flow.sde, flow.score_model
    dtype = t_min.dtype
    T = sde.T.astype(dtype)
    k_prior, k_noise = jax.random.split(key)
    # Integrated forward in the reversed time tau = T - t, on [0, T - t_min], so
    # that every diffrax SDE solver (and its Lévy areas) runs as designed; the
    # reverse-time Brownian motion is a standard one in tau.
    tau1 = T - t_min
    taus = jnp.linspace(jnp.zeros_like(tau1), tau1, n_steps + 1)
    levy_area = _levy_area(solver)
    adjoint_tree = dfx.RecursiveCheckpointAdjoint()

    def drift(tau, x, args):
        t = T - tau
        g2 = (sde.diffusion(t) ** 2).astype(dtype)
        return g2 * score_model(t, x) - sde.drift(t, x)

    def one(k_prior, k_noise):
        x_T = sde.prior_sample(k_prior, d, dtype)
        shape = jax.ShapeDtypeStruct((d,), dtype)
        if brownian == "tree":
            path = dfx.VirtualBrownianTree(
                0.0, tau1, tol=tau1 / (2 * n_steps), shape=shape, key=k_noise,
                levy_area=levy_area,
            )  # fmt: skip
        else:
            # Each step of the fixed grid queries its own interval once, so fresh
            # independent increments are exact Brownian increments (diffrax's
            # conditions for UnsafeBrownianPath: fixed steps, no reverse-mode
            # differentiation through the solve).
            path = dfx.UnsafeBrownianPath(shape, k_noise, levy_area=levy_area)
        noise = noise_term(sde, path, lambda tau: T - tau)
        sol = dfx.diffeqsolve(
            dfx.MultiTerm(dfx.ODETerm(drift), noise),
            solver,
            0.0,
            tau1,
            None,
            x_T,
            saveat=dfx.SaveAt(t1=True),
            stepsize_controller=dfx.StepTo(ts=taus),
            adjoint=dfx.ForwardMode() if brownian == "increments" else adjoint_tree,
            max_steps=n_steps,
            throw=False,
        )
        return sol.ys[0], x_T, _one_result(sol), sol.stats["num_steps"]

    keys_prior = jax.random.split(k_prior, n)
    keys_noise = jax.random.split(k_noise, n)
    xs, x_T, results, num_steps = jax.vmap(one)(keys_prior, keys_noise)
    return _finish(xs, x_T, results, num_steps)


def reverse_sde_sample(
    score_model: Callable,
    sde: AbstractSDE,
    key: PRNGKeyArray,
    n: int,
    d: int,
    *,
    n_steps: int = 1000,
    t_min: float = 1e-3,
    solver: dfx.AbstractSolver | None = None,
    brownian: Literal["increments", "tree"] = "increments",
    dtype=None,
    throw: bool = True,
) -> DiffusionSamples:
    r"""Sample a diffusion model by integrating the reverse-time SDE.

    From `x_T ~ p_T` (the SDE's prior), integrate backwards in time from `T` to
    `t_min`

    $$dx = \big[f(t, x) - g(t)^2\, s(t, x)\big]\, dt + g(t)\, d\bar W,$$

    (Anderson 1982; Song et al. 2021, eq. 6) with `n_steps` equal steps of a
    diffrax SDE solver (default `diffrax.Euler()`: Euler-Maruyama) driven by
    Brownian increments (see `brownian`). The solve runs
    forward in the reversed time `tau = T - t`, in which `W-bar` is a standard
    Brownian motion, so that every solver and its Lévy areas run as designed.
    With the true score `s = grad log p_t`, the samples are distributed as
    `p_{t_min}`, up to the discretization error and the prior's mismatch with
    `p_T`. No final denoising step is applied.

    Written for one sample and `vmap`ped over `n` keys; one compiled program per
    `(n, d, n_steps, solver)`.

    **Arguments:**

    - `score_model`: `score_model(t, x) -> (d,)`, any callable or `eqx.Module`.
    - `sde`: a `dynjax.VPSDE`, `dynjax.SubVPSDE` or `dynjax.VESDE`.
    - `key`: a PRNG key; it determines the prior draws and the Brownian paths.
    - `n`: the number of samples; `d`: their dimension.
    - `n_steps`: the number of equal solver steps from `T` to `t_min` (default
        `1000`).
    - `t_min`: the final time (`0 < t_min < T`, default `1e-3`); the score may
        be singular at 0.
    - `solver`: any diffrax SDE solver (`Euler`, `Heun`, `SRA1` and `ShARK`,
        which use the additive noise of these SDEs, ...). The Brownian path
        provides the Lévy area the solver needs.
    - `brownian`: `"increments"` (default): independent Gaussian increments
        (and Lévy areas) for each step of the fixed grid
        (`diffrax.UnsafeBrownianPath`), exact for this fixed-step solve and the
        fastest; forward-mode differentiable only (`jax.jvp`). `"tree"`: a
        `diffrax.VirtualBrownianTree` (tolerance half a step), which fixes one
        Brownian path per key whatever `n_steps` (convergence studies at several
        step counts on the same path) and supports `jax.grad` through the
        samples; about 10x slower for a small score network (the tree descends
        ~log2(2 n_steps) levels per step).
    - `dtype`: the floating dtype of the computation (default: JAX's default
        float); the floating-point leaves of `score_model` and `sde` are cast to it.
    - `throw`: raise if a sample fails (non-finite values); otherwise report it
        in `result`.

    **Returns:**

    A `dynjax.DiffusionSamples`: `xs` of shape `(n, d)`, the prior draws `x_T`,
    `result`, `stats`.

    **Raises:**

    `ValueError` (trace time) if `score_model(t, x)` fails for `x` of shape
    `(d,)` (e.g. a model built for another `d`) or its output shape is not
    `(d,)`, if `t_min <= 0` or `t_min >= T`, or if `n`, `d` or `n_steps` is
    not a positive int.

    **Reference:** B. D. O. Anderson, "Reverse-time diffusion equation models",
    Stochastic Processes and their Applications 12 (1982); Song et al.,
    "Score-based generative modeling through stochastic differential equations",
    ICLR (2021), Section 3.2.
    """
    _check_sizes(n, d, n_steps)
    flow, t_min = _prepare(score_model, sde, d, t_min, dtype, "reverse_sde_sample")
    solver = dfx.Euler() if solver is None else solver
    if brownian not in ("increments", "tree"):
        raise ValueError(
            f"`brownian` must be 'increments' (independent increments per step, "
            f"the default) or 'tree' (a VirtualBrownianTree), got {brownian!r}."
        )
    out = _reverse_sde(flow, key, n, d, n_steps, t_min, solver, brownian)
    return throw_if_failed(out, throw)


@eqx.filter_jit
def _probability_flow(
    flow: ProbabilityFlow, key, n, d, t_min, solver, controller, dt0, max_steps
):
    sde = flow.sde
    dtype = t_min.dtype
    T = sde.T.astype(dtype)
    k_prior, _ = jax.random.split(key)

    def one(k):
        x_T = sde.prior_sample(k, d, dtype)
        sol = dfx.diffeqsolve(
            dfx.ODETerm(flow.vector_field),
            solver,
            T,
            t_min,
            dt0,
            x_T,
            saveat=dfx.SaveAt(t1=True),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=False,
        )
        return sol.ys[0], x_T, _one_result(sol), sol.stats["num_steps"]

    xs, x_T, results, num_steps = jax.vmap(one)(jax.random.split(k_prior, n))
    return _finish(xs, x_T, results, num_steps)


def probability_flow_sample(
    score_model: Callable,
    sde: AbstractSDE,
    key: PRNGKeyArray,
    n: int,
    d: int,
    *,
    t_min: float = 1e-3,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    dt0: float | None = None,
    max_steps: int = 4096,
    dtype=None,
    throw: bool = True,
) -> DiffusionSamples:
    r"""Sample a diffusion model by integrating the probability-flow ODE.

    From `x_T ~ p_T` (the SDE's prior), integrate `dynjax.ProbabilityFlow`

    $$\frac{dx}{dt} = f(t, x) - \tfrac12 g(t)^2\, s(t, x)$$

    backwards from `T` to `t_min` with an adaptive diffrax solver (Song et al.
    2021, Section 4.3). The map from `x_T` to the sample is deterministic and
    invertible; with the true score it carries `p_T` onto `p_{t_min}`.

    Written for one sample and `vmap`ped over `n` keys.

    **Arguments:**

    - `score_model`: `score_model(t, x) -> (d,)`, any callable or `eqx.Module`.
    - `sde`: a `dynjax.VPSDE`, `dynjax.SubVPSDE` or `dynjax.VESDE`.
    - `key`: a PRNG key for the prior draws.
    - `n`: the number of samples; `d`: their dimension.
    - `t_min`: the final time (`0 < t_min < T`, default `1e-3`).
    - `solver`: a diffrax ODE solver (default `diffrax.Tsit5()`).
    - `stepsize_controller`: default `diffrax.PIDController` at
        `rtol = atol = 1e-8` in float64 and `1e-5` in float32.
    - `dt0`: the initial step (default: chosen by diffrax).
    - `max_steps`: the step budget of each sample's solve (default `4096`).
    - `dtype`: the floating dtype of the computation (default: JAX's default
        float); the floating-point leaves of `score_model` and `sde` are cast to it.
    - `throw`: raise if a sample's solve fails; otherwise report it in `result`.

    **Returns:**

    A `dynjax.DiffusionSamples`: `xs` of shape `(n, d)`, the prior draws `x_T`
    (row `i` of `xs` is the image of row `i` of `x_T`), `result`, `stats`.

    **Raises:**

    `ValueError` (trace time) if `score_model(t, x)` fails for `x` of shape
    `(d,)` (e.g. a model built for another `d`) or its output shape is not
    `(d,)`, if `t_min <= 0` or `t_min >= T`, or if `n` or `d` is not a positive
    int; `EquinoxRuntimeError` (with `throw=True`) if a solve fails, e.g. by running
    out of `max_steps`.

    **Reference:** Song et al., "Score-based generative modeling through
    stochastic differential equations", ICLR (2021), Section 4.3 and
    Appendix D.
    """
    _check_sizes(n, d)
    flow, t_min = _prepare(score_model, sde, d, t_min, dtype, "probability_flow_sample")
    solver = dfx.Tsit5() if solver is None else solver
    if stepsize_controller is None:
        stepsize_controller = default_controller(t_min.dtype)
    out = _probability_flow(
        flow, key, n, d, t_min, solver, stepsize_controller, dt0, max_steps
    )
    return throw_if_failed(out, throw)
