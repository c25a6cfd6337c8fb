"""Continuous normalizing flows (Chen et al. 2018; FFJORD, Grathwohl et al. 2019)
and their maximum-likelihood training."""

import math
from collections.abc import Callable
from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike, State
from .._results import raise_if_failed, RESULTS
from .._system import AbstractFlow
from .._system._checks import conform
from .._training import fit, FitResult
from ._divergence import (
    check_trace_options,
    default_controller,
    integrate_divergence,
    Probe,
    Trace,
)
from ._ode import _MLPField


def _standard_normal_log_prob(z):
    d = z.shape[-1]
    return -0.5 * jnp.sum(z**2) - 0.5 * d * math.log(2 * math.pi)


def _float_dtype(tree):
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


class CNF(AbstractFlow):
    r"""A continuous normalizing flow: a neural ODE on the data space whose
    time-`T` flow map carries the data distribution onto a standard normal.

    The model is `dx/dt = f_theta(t, x)` on `[0, T]`. A data point `x = x(0)` is
    transported to `z = x(T)`, whose density is the base `N(0, I)`. By the
    instantaneous change of variables `d log p_t(x(t)) / dt = -tr(df/dx)`
    (Chen et al. 2018, Theorem 1),

    $$\log p(x) = \log N(x(T); 0, I) + \int_0^T \mathrm{tr}
    \frac{\partial f}{\partial x}(t, x(t))\, dt,$$

    and samples are `z ~ N(0, I)` integrated from `T` back to `0`.

    A `CNF` is a `dynjax.AbstractFlow` (its `vector_field` is `f_theta`), so
    `dynjax.trajectory`, `dynjax.find_equilibria`, `dynjax.linearize`,
    `dynjax.lyapunov_spectrum` and the other verbs apply to it unchanged. Train
    it with `dynjax.fit_density`.

    **Arguments:**

    - `data_size`: the data dimension `d` (a positive `int`).
    - `key`: a `jax.random.key` initialising the default vector field; required
        unless `func` is given.
    - `func`: the vector field, any callable equinox Module `func(t, x) -> (d,)`
        (`t` a scalar, `x` of shape `(d,)`). Default: an `eqx.nn.MLP` from `d + 1`
        inputs (the state and the time) to `d` outputs.
    - `width`, `depth`, `activation`: the default MLP's hidden width, number of
        hidden layers and activation (default `64`, `2`, `jax.nn.softplus`, as in
        FFJORD's density experiments). Ignored when `func` is given.
    - `T`: the integration time (a positive float, default `1.0`); the base
        distribution sits at `t = T`.

    **Raises:**

    `ValueError` for a non-positive `data_size` or `T`, a missing `key` and
    `func`, a `func` that cannot be called as `func(t, x)` (e.g. a bare
    `eqx.nn.MLP`, called as `mlp(x)`), or a `func` whose output is not of shape
    `(d,)`.

    !!! Example

        ```python
        cnf = dynjax.CNF(2, key=jax.random.key(0))
        out = dynjax.fit_density(cnf, data, optax.adam(1e-3), n_steps=1000,
                                 batch_size=256, key=jax.random.key(1))
        jax.vmap(out.model.log_prob)(test_points)     # nats
        out.model.sample(jax.random.key(2), 1000)     # (1000, 2)
        ```

    **References:**

    - R. T. Q. Chen, Y. Rubanova, J. Bettencourt and D. Duvenaud, *Neural
        ordinary differential equations*, NeurIPS (2018).
    - W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever and
        D. Duvenaud, *FFJORD: free-form continuous dynamics for scalable
        reversible generative models*, ICLR (2019).
    """

    func: Callable[[RealScalarLike, Float[Array, " d"]], Float[Array, " d"]]
    d: int = eqx.field(static=True)
    T: float = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        *,
        key: PRNGKeyArray | None = None,
        func: Callable | None = None,
        width: int = 64,
        depth: int = 2,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        T: float = 1.0,
    ):
        if not isinstance(data_size, (int, np.integer)) or data_size < 1:
            raise ValueError(
                f"`data_size` must be a positive int (the data dimension d), got "
                f"{data_size!r}."
            )
        if not isinstance(T, (int, float, np.floating, np.integer)) or not T > 0:
            raise ValueError(
                f"`T` must be a positive float (the integration time), got {T!r}."
            )
        d = int(data_size)
        if func is None:
            if key is None:
                raise ValueError(
                    "Pass `key=jax.random.key(...)` to initialise the default MLP "
                    "vector field, or your own vector field as `func=`."
                )
            func = _MLPField(
                eqx.nn.MLP(d + 1, d, width, depth, activation=activation, key=key),
                time_input=True,
            )
        dtype = _float_dtype(func)
        try:
            out = jax.eval_shape(func, 0.0, jax.ShapeDtypeStruct((d,), dtype))
        except Exception as e:
            raise ValueError(
                f"Calling the vector field as `func(t, x)`, with a scalar time `t` "
                f"and a state `x` of shape ({d},) and dtype {jnp.dtype(dtype).name}, "
                f"failed with {type(e).__name__}: {e}\nA CNF's vector field takes "
                "the time and the state. To use an `eqx.nn.MLP` called as `mlp(x)`, "
                "wrap it in a Module whose `__call__(self, t, x)` returns "
                "`self.mlp(jnp.concatenate([x, t[None]]))` (an MLP with "
                f"in_size={d + 1}), or leave `func` out for the default MLP; also "
                f"check that its input size matches data_size={d}."
            ) from e
        if getattr(out, "shape", None) != (d,):
            got = getattr(out, "shape", type(out).__name__)
            raise ValueError(
                f"`func(t, x)` must return the time derivative of shape ({d},) "
                f"(data_size), got {got}. Make the vector field's output size "
                f"equal to data_size={d}."
            )
        self.func = func
        self.d = d
        self.T = float(T)

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        """`f_theta(t, x)`, shape `(d,)` (`args` is ignored)."""
        del args
        return self.func(t, x)

    def log_prob(
        self,
        x: Float[Array, " d"],
        *,
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
        throw: bool = True,
    ) -> Float[Array, ""]:
        r"""The log-density of one data point, in nats.

        Integrates `d/dt [x, l] = [f(t, x), tr(df/dx)]` from `0` to `T` with
        diffrax and returns `log N(x(T); 0, I) + l(T)`.

        The trace of the Jacobian is either

        - `trace="exact"`: `tr(jax.jacfwd(f))`, which costs `d` Jacobian-vector
            products per evaluation of the vector field. Exact; the choice for
            small `d` (up to a few tens) and for evaluating a trained model.
        - `trace="hutchinson"`: `mean_i eps_i . (J eps_i)` over `n_probes` random
            probes (Hutchinson 1989), one Jacobian-vector product per probe
            (`mode="forward"`, or one shared vector-Jacobian product,
            `mode="reverse"`). The probes are drawn once from `key` and held fixed
            along the solve (FFJORD), so the result is an unbiased estimate of
            the exact log-density with variance falling as `1 / n_probes`. The
            choice for large `d`, and for training, where the mean of the
            estimates over a minibatch (hence its gradient) is unbiased.

        Written for one sample: `jax.vmap(cnf.log_prob)(xs)` for a batch (with
        Hutchinson, `jax.vmap(lambda x, k: cnf.log_prob(x, trace="hutchinson",
        key=k))(xs, jax.random.split(key, len(xs)))`). `jax.vmap` and
        `jax.grad` (with respect to `x`) take the bound method directly; for the
        gradient with respect to the parameters use `eqx.filter_grad(lambda m:
        m.log_prob(x))(cnf)`. To compile it use `eqx.filter_jit(cnf.log_prob)` or
        `jax.jit(lambda x: cnf.log_prob(x))`: `jax.jit(cnf.log_prob)` fails, as a
        bound method of a Module with array fields is not hashable.

        float32 (the dtype of `x`) is the usual choice for training and runs
        without a warning. It costs accuracy: the default tolerances are then
        `rtol = atol = 1e-5`, and for a small MLP flow in `d = 3` the float32
        log-density agrees with the float64 one to within `1e-4` nats (the bound
        checked in dynjax's tests). Evaluate in float64 where more digits matter.

        **Arguments:**

        - `x`: a data point, shape `(d,)`; its floating dtype is the dtype of the
            computation (the model's parameters are cast to it).
        - `trace`: `"exact"` (default) or `"hutchinson"`.
        - `key`: a `jax.random.key` for the probes; required with Hutchinson.
        - `n_probes`: the number of probes (Hutchinson; default `1`).
        - `probe`: `"rademacher"` (default; entries +-1, lower variance) or
            `"gaussian"`.
        - `mode`: `"forward"` (default; one `jvp` per probe) or `"reverse"` (one
            `vjp`).
        - `solver`, `stepsize_controller`, `dt0`, `adjoint`, `max_steps`: passed
            to `diffrax.diffeqsolve` (defaults: `Tsit5`, a `PIDController` at
            `rtol = atol = 1e-8` in float64 and `1e-5` in float32, recursive
            checkpointing for gradients, `max_steps=4096`;
            `diffrax.BacksolveAdjoint()` for the continuous adjoint of Chen et al.
            2018).
        - `throw`: raise if the solve fails (default). With `throw=False` a failed
            solve gives `nan`, so that `dynjax.fit` stops on it.

        **Returns:**

        `log p(x)`, a scalar in nats, in `x`'s dtype.

        **Raises:**

        `ValueError` for `x` not of shape `(d,)` or non-finite, an unknown `trace`
        or `probe`, a non-positive `n_probes`, or Hutchinson without `key`.
        `equinox.EquinoxRuntimeError` if the solver fails (e.g. `max_steps`
        reached) and `throw=True`.
        """
        check_trace_options(trace, probe, n_probes, key)
        # (float32 is the norm in training: its cost is documented, not warned.)
        model, x, _ = conform(
            self, x, verb="CNF.log_prob", name="x", warn_float32=False
        )
        value, result = _log_prob(
            model, x, key, trace, n_probes, probe, mode, solver,
            stepsize_controller, dt0, adjoint, max_steps,
        )  # fmt: skip
        if throw:
            return raise_if_failed(
                result,
                value,
                lambda _: (
                    "(CNF.log_prob: the solve from t=0 to t=T failed; pass "
                    "`max_steps=` larger, or an implicit `solver=` if the learned "
                    "dynamics are stiff.)"
                ),
            )
        return jnp.where(result == RESULTS.successful, value, jnp.nan)

    def sample(
        self,
        key: PRNGKeyArray,
        n: int,
        *,
        dtype=None,
        solver: dfx.AbstractSolver | None = None,
        stepsize_controller: dfx.AbstractStepSizeController | None = None,
        dt0: RealScalarLike | None = None,
        adjoint: dfx.AbstractAdjoint | None = None,
        max_steps: int = 4096,
        throw: bool = True,
    ) -> Float[Array, "n d"]:
        """Draw `n` samples from the model.

        Draws `z = jax.random.normal(key, (n, d), dtype)` from the base
        distribution and integrates each from `t = T` back to `t = 0` (the
        inverse of the flow map used by `log_prob`), vmapped over the samples.

        **Arguments:**

        - `key`: a `jax.random.key`.
        - `n`: the number of samples, a positive `int`.
        - `dtype`: the floating dtype (default: the dtype of the model's
            parameters).
        - `solver`, `stepsize_controller`, `dt0`, `adjoint`, `max_steps`: as in
            `log_prob`.
        - `throw`: raise if any solve fails (default); with `throw=False` the
            rows whose solve failed are `nan`.

        **Returns:**

        The samples, shape `(n, d)`.

        **Raises:**

        `ValueError` for a non-positive `n`; `equinox.EquinoxRuntimeError` if a
        solve fails and `throw=True`.
        """
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"`n` must be a positive int, got {n!r}.")
        dtype = _float_dtype(self) if dtype is None else jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"`dtype` must be a floating dtype, got {dtype}.")
        z = jax.random.normal(key, (int(n), self.d), dtype)
        model, z0, _ = conform(
            self, z[0], verb="CNF.sample", name="z", warn_float32=False
        )
        xs, result, first = _sample(
            model, z, solver, stepsize_controller, dt0, adjoint, max_steps
        )
        if throw:
            return raise_if_failed(
                result,
                xs,
                lambda _: (
                    f"(CNF.sample: the solve from t=T to t=0 of sample "
                    f"{int(first)} failed; pass `max_steps=` larger, or an implicit "
                    "`solver=` if the learned dynamics are stiff.)"
                ),
            )
        return xs


@eqx.filter_jit
def _log_prob(model, x, key, trace, n_probes, probe, mode, solver,
              stepsize_controller, dt0, adjoint, max_steps):  # fmt: skip
    # (Times in the state's dtype: Python floats would promote a float32 solve
    # to float64 under x64.)
    z, div, result = integrate_divergence(
        model.vector_field,
        x,
        jnp.zeros((), x.dtype),
        jnp.asarray(model.T, x.dtype),
        trace=trace,
        key=key,
        n_probes=n_probes,
        probe=probe,
        mode=mode,
        solver=solver,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        adjoint=adjoint,
        max_steps=max_steps,
    )
    return _standard_normal_log_prob(z) + div, result


@eqx.filter_jit
def _sample(model, z, solver, stepsize_controller, dt0, adjoint, max_steps):
    dtype = z.dtype
    solver = dfx.Tsit5() if solver is None else solver
    if stepsize_controller is None:
        stepsize_controller = default_controller(dtype)
    adjoint = dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint

    def one(z0):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(model.vector_field),
            solver,
            jnp.asarray(model.T, dtype),
            jnp.zeros((), dtype),
            None if dt0 is None else -abs(dt0),
            z0,
            saveat=dfx.SaveAt(t1=True),
            stepsize_controller=stepsize_controller,
            adjoint=adjoint,
            max_steps=max_steps,
            throw=False,
        )
        return sol.ys[0], sol.result

    xs, results = jax.vmap(one)(z)
    oks = results == dfx.RESULTS.successful
    xs = jnp.where(oks[:, None], xs, jnp.nan)
    # The first failure's code stands for the batch (successful if none failed).
    first = jnp.argmin(oks)
    result = RESULTS.promote(jax.tree.map(lambda v: v[first], results))
    return xs, result, first


class _NegLogLikelihood(eqx.Module):
    """The loss of `fit_density`: the mean negative log-likelihood of a batch.

    A Module (not a closure) so that equal settings compare equal and
    `dynjax.fit` reuses its compilation across calls and resumes."""

    trace: str = eqx.field(static=True)
    n_probes: int = eqx.field(static=True)
    options: dict[str, Any]

    def __call__(self, model, batch, key):
        def log_prob(x, k):
            return model.log_prob(
                x, trace=self.trace, key=k, n_probes=self.n_probes, **self.options
            )

        if self.trace == "hutchinson":
            keys = jax.random.split(key, batch.shape[0])
            values = jax.vmap(log_prob)(batch, keys)
        else:
            values = jax.vmap(lambda x: log_prob(x, None))(batch)
        return -jnp.mean(values)


def fit_density(
    model,
    data: Float[Array, "n d"],
    optimizer: optax.GradientTransformation,
    *,
    n_steps: int,
    key: PRNGKeyArray | None = None,
    batch_size: int | None = None,
    trace: Trace = "exact",
    n_probes: int = 1,
    log_prob_options: dict[str, Any] | None = None,
    chunk_size: int = 100,
    progress: bool = True,
    resume: FitResult | None = None,
) -> FitResult:
    """Fit a density model to samples by maximum likelihood.

    Minimises the mean negative log-likelihood (nats per sample)

        loss(model) = -mean_i model.log_prob(x_i)

    over minibatches of `data` with any optax optimizer, through `dynjax.fit`
    (compiled chunks of steps, a tqdm bar, a stop with the last finite model on
    a non-finite loss, `resume=`). Works for any model with a method
    `log_prob(x, *, trace, key, n_probes, throw, **log_prob_options)` of one
    sample `(d,)` and a dimension `d`, such as `dynjax.CNF`.

    With `trace="hutchinson"` each sample of each step gets its own key, so the
    loss and its gradient are unbiased estimates (FFJORD, Grathwohl et al.
    2019); `n_probes` trades cost for variance. The exact trace costs `d`
    Jacobian-vector products per vector-field evaluation and suits small `d`.

    **Arguments:**

    - `model`: the model to train, e.g. a `dynjax.CNF`.
    - `data`: the samples, shape `(n, d)` (use `x[:, None]` for 1-D data).
    - `optimizer`: any `optax.GradientTransformation`.
    - `n_steps`: the number of optimizer steps (more on top of `resume`).
    - `key`: a `jax.random.key` for the minibatches and the probes; required
        unless `resume` is given.
    - `batch_size`: samples per step (`None`: all of `data` every step).
    - `trace`, `n_probes`: the trace estimator of `log_prob` during training
        (defaults `"exact"` and `1`).
    - `log_prob_options`: further keyword arguments of `model.log_prob`, e.g.
        `dict(stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5))`
        for `dynjax.CNF`: looser tolerances make training faster (evaluate the
        trained model at the defaults). `throw=False` is passed unless given: a
        failed solve gives a `nan` loss, which stops training at that step with
        the last finite model (`throw=True` would raise mid-run and lose the
        chunk), so `log_prob` must accept `throw`.
    - `chunk_size`, `progress`, `resume`: as in `dynjax.fit`.

    **Returns:**

    A `dynjax.FitResult`; its `losses` are the minibatch negative
    log-likelihoods in nats per sample.

    **Raises:**

    `ValueError` if `data` is not of shape `(n, d)` with the model's `d`, holds
    NaN or inf, or the trace options are invalid (and the other errors of
    `dynjax.fit`).

    **References:** W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever and
    D. Duvenaud, *FFJORD: free-form continuous dynamics for scalable reversible
    generative models*, ICLR (2019).
    """
    # (The per-step probe keys come from `key`, so no key is checked here.)
    check_trace_options(trace, "rademacher", n_probes, key=0)
    data = jnp.asarray(data)
    if not jnp.issubdtype(data.dtype, jnp.inexact):
        data = data.astype(jnp.result_type(float))
    d = getattr(model, "d", None)
    if data.ndim != 2:
        hint = " (for 1-D data pass `data[:, None]`)" if data.ndim == 1 else ""
        raise ValueError(
            f"`data` must have shape (n, d), one sample per row, got shape "
            f"{data.shape}{hint}."
        )
    if d is not None and data.shape[1] != d:
        raise ValueError(
            f"`data` has dimension {data.shape[1]} (shape {data.shape}) but the "
            f"model has dimension d={d}. Pass data of shape (n, {d}), or build the "
            f"model with data_size={data.shape[1]}."
        )
    # (A failed solve gives a NaN loss, which stops `fit` with the last finite
    # model, rather than an error that would lose the chunk.)
    options = {"throw": False, **(log_prob_options or {})}
    loss = _NegLogLikelihood(trace, n_probes, options)
    return fit(
        loss,
        model,
        optimizer,
        data=data,
        n_steps=n_steps,
        key=key,
        batch_size=batch_size,
        chunk_size=chunk_size,
        progress=progress,
        resume=resume,
    )
