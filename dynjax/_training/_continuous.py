"""Training in continuous time: the gradient flow against gradient descent, and the
stochastic modified equation of SGD (an Itô SDE) through diffrax."""

from collections.abc import Callable
from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._custom_types import RealScalarLike
from .._evolve import trajectory
from .._misc import is_concrete
from .._results import raise_if_failed, RESULTS
from .._system._checks import conform
from .._system._transforms import euler_map
from ._fit import _check_data
from ._maps import GradientFlow


class GradientFlowTrajectory(eqx.Module):
    """A solution of the gradient flow, returned by `dynjax.gradient_flow_trajectory`.

    **Attributes:**

    - `ts`: the save times, shape `(T,)`, in units of (learning rate) x (steps):
        time `t` is `t / eta` gradient-descent steps of learning rate `eta`.
    - `params`: the parameters at `ts`, a pytree shaped like the `params` given,
        each array leaf with a leading axis of length `T`.
    - `thetas`: the same as flat vectors (`dynjax.GradientFlow.ravel`), shape
        `(T, p)`.
    - `losses`: `J(theta(t))`, the loss on `data` at `ts`, shape `(T,)`.
    - `result`: a `dynjax.RESULTS` code (`successful` unless `throw=False` and the
        solve failed).
    - `stats`: diffrax's solver statistics (`num_steps`, ...), as in
        `dynjax.Trajectory.stats`.
    """

    ts: Float[Array, " T"]
    params: PyTree
    thetas: Float[Array, "T p"]
    losses: Float[Array, " T"]
    result: RESULTS
    stats: dict[str, Any]


class SGDSDEPath(eqx.Module):
    """One path of the stochastic modified equation of SGD, returned by
    `dynjax.sgd_sde` (with a leading path axis on every array when `vmap`ped over
    keys).

    **Attributes:**

    - `ts`: the save times, shape `(T,)`; time `t` is `t / eta` SGD steps.
    - `params`: the parameters at `ts`, a pytree shaped like the `params` given,
        each array leaf with a leading axis of length `T`.
    - `thetas`: the same as flat vectors, shape `(T, p)`.
    - `losses`: `J(theta(t))`, the full-data loss at `ts`, shape `(T,)`.
    - `result`: a `dynjax.RESULTS` code: `successful`, or `nonfinite_state` if the
        path became non-finite (with `throw=False`).
    - `stats`: `num_steps`, the number of solver steps taken.
    """

    ts: Float[Array, " T"]
    params: PyTree
    thetas: Float[Array, "T p"]
    losses: Float[Array, " T"]
    result: RESULTS
    stats: dict[str, Any]


# --- shared checks -------------------------------------------------------------------


def _check_learning_rate(learning_rate):
    if isinstance(learning_rate, jax.core.Tracer):
        return eqx.error_if(
            learning_rate,
            ~(learning_rate > 0),
            "`learning_rate` must be a positive number.",
        )
    eta = np.asarray(learning_rate)
    if eta.shape != () or not (np.isfinite(eta) and eta > 0):
        raise ValueError(
            f"`learning_rate` must be a positive finite number, got {learning_rate!r}."
        )
    return learning_rate


def _check_tolerances(rtol, atol, dtype):
    high = jnp.finfo(dtype).bits >= 64
    rtol = (1e-8 if high else 1e-5) if rtol is None else rtol
    atol = (1e-10 if high else 1e-7) if atol is None else atol
    for name, value in (("rtol", rtol), ("atol", atol)):
        if is_concrete(value) and not (np.isfinite(value) and value > 0):
            raise ValueError(f"`{name}` must be a positive tolerance, got {value!r}.")
    return rtol, atol


def _choose_solver(solver, stiff):
    if solver is not None:
        if not isinstance(solver, dfx.AbstractSolver):
            raise ValueError(
                f"`solver` must be a diffrax solver, got {type(solver).__name__}."
            )
        return solver
    return dfx.Kvaerno5() if stiff else dfx.Tsit5()


@eqx.filter_jit
def _views(flow: GradientFlow, thetas):
    """Each saved state's loss and parameter pytree."""
    losses = jax.vmap(flow.loss)(thetas)
    params = eqx.filter_vmap(flow.unravel)(thetas)
    return losses, params


# --- gradient flow -------------------------------------------------------------------


def _flow_solve(flow, theta0, ts, solver, rtol, atol, max_steps, throw):
    return trajectory(
        flow,
        theta0,
        t1=ts[-1],
        ts=ts,
        solver=solver,
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=throw,
    )


def gradient_flow_trajectory(
    loss: Callable[[PyTree, PyTree], Float[Array, ""]],
    params: PyTree,
    data: PyTree | None = None,
    *,
    t1: RealScalarLike | None = None,
    ts: Float[Array, " T"] | None = None,
    n_save: int = 101,
    solver: dfx.AbstractSolver | None = None,
    stiff: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 2**16,
    throw: bool = True,
) -> GradientFlowTrajectory:
    r"""Train in continuous time: solve the gradient flow of a loss from `params`.

    $$\frac{d\theta}{dt} = -\nabla J(\theta), \qquad
    J(\theta) = \texttt{loss}(\texttt{unravel}(\theta), \texttt{data}),$$

    on the flat vector `theta` of every float leaf of `params`
    (`dynjax.GradientFlow`), integrated by `dynjax.trajectory` (diffrax). Gradient
    descent with learning rate `eta` is this flow's explicit Euler method with step
    `eta`, so **time `t` corresponds to `t / eta` gradient-descent steps**; the
    gradient-descent iterate `k` stays within `O(eta)` of the flow at `t = k eta`
    over a fixed time (see `dynjax.gd_flow_distance`).

    Near a minimum the flow's stiffness ratio is the Hessian's condition number; a
    sharp loss (large top eigenvalue) forces an explicit solver to steps of about
    `2.8 / lambda_max`. `stiff=True` switches to the L-stable implicit
    `diffrax.Kvaerno5`, whose steps are limited by accuracy only (each step solves
    a Newton system with the Hessian, formed densely by `jax.jacfwd`: use it for
    up to a few thousand parameters).

    **Arguments:**

    - `loss`: `loss(params, batch) -> scalar`.
    - `params`: the initial parameters, any pytree (an equinox Module, a dict of
        arrays); `p` is the number of float entries. Non-float leaves are kept
        fixed.
    - `data`: the batch passed to `loss` (a pytree of arrays, or `None`).
    - `t1`: the end time (may be omitted if `ts` is given).
    - `ts`: save times, increasing, in `[0, t1]` (default: `n_save` equally spaced
        times from `0` to `t1`).
    - `n_save`: the number of save times when `ts` is not given.
    - `solver`: any diffrax ODE solver; default `diffrax.Tsit5()`, or
        `diffrax.Kvaerno5()` with `stiff=True`.
    - `stiff`: pick the implicit default solver (ignored if `solver` is given).
    - `rtol`, `atol`: the `diffrax.PIDController` tolerances (default `1e-8`,
        `1e-10` in float64; `1e-5`, `1e-7` in float32).
    - `max_steps`: the solver's step budget.
    - `throw`: raise if the solve fails; otherwise report it in `result`.

    **Returns:**

    A `dynjax.GradientFlowTrajectory` (`ts`, `params`, `thetas`, `losses`,
    `result`, `stats`).

    **Raises:**

    `ValueError` if `loss` does not return a scalar, `params` has no float arrays,
    the times or tolerances are invalid; `equinox.EquinoxRuntimeError` (with
    `throw=True`) if the solve fails, e.g. runs out of `max_steps` (pass
    `stiff=True` for a sharp loss).

    !!! Example

        ```python
        def loss(w, batch):
            x, y = batch
            return jnp.mean((x @ w - y) ** 2)

        sol = dynjax.gradient_flow_trajectory(loss, w0, (x, y), t1=10.0)
        sol.losses  # (101,), decreasing
        ```

    **References:** Q. Li, C. Tai and W. E, *Stochastic modified equations and
    dynamics of stochastic gradient algorithms I: mathematical foundations*, JMLR
    20 (2019), Section 2; E. Hairer and G. Wanner, *Solving Ordinary Differential
    Equations II: Stiff and Differential-Algebraic Problems* (1996), Chapter IV
    (stiffness); A. Kværnø, *Singly diagonally implicit Runge-Kutta methods with
    an explicit first stage*, BIT 44 (2004).
    """
    flow = GradientFlow(loss, params, data)
    theta0 = flow.ravel(params)
    rtol, atol = _check_tolerances(rtol, atol, theta0.dtype)
    solver = _choose_solver(solver, stiff)
    if ts is None:
        if t1 is None:
            raise ValueError("Pass the end time `t1=` (or save times `ts=`).")
        if not isinstance(n_save, int) or n_save < 2:
            raise ValueError(f"`n_save` must be an int >= 2, got {n_save!r}.")
        ts = jnp.linspace(0.0, t1, n_save, dtype=theta0.dtype)
    else:
        ts = jnp.asarray(ts, theta0.dtype)
        if ts.ndim != 1 or ts.shape[0] < 1:
            raise ValueError(f"`ts` must be a non-empty 1-D array, got {ts.shape}.")
    sol = trajectory(
        flow,
        theta0,
        t1=t1 if t1 is not None else ts[-1],
        ts=ts,
        solver=solver,
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=throw,
    )
    losses, params_t = _views(flow, sol.xs)
    return GradientFlowTrajectory(
        ts=sol.ts,
        params=params_t,
        thetas=sol.xs,
        losses=losses,
        result=sol.result,
        stats=sol.stats,
    )


def _modified_loss(loss, learning_rate):
    """Barrett & Dherin's first-order modified loss `J + (eta / 4) |grad J|^2`."""

    def modified(params, batch):
        floats, static = eqx.partition(params, eqx.is_inexact_array)

        def j(f):
            return loss(eqx.combine(f, static), batch)

        value, grads = jax.value_and_grad(j)(floats)
        squares = sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))
        return value + learning_rate / 4 * squares

    return modified


def gd_flow_distance(
    loss: Callable[[PyTree, PyTree], Float[Array, ""]],
    params: PyTree,
    learning_rate: RealScalarLike,
    n_steps: int,
    data: PyTree | None = None,
    *,
    modified: bool = False,
    solver: dfx.AbstractSolver | None = None,
    stiff: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 2**16,
    throw: bool = True,
) -> Float[Array, " n_steps+1"]:
    r"""How far gradient descent strays from the gradient flow: the distance
    `|theta_GD(k) - theta_flow(k eta)|` for `k = 0, ..., n_steps`.

    `theta_GD(k)` is the `k`-th iterate of `theta -> theta - eta grad J(theta)`
    (the Euler map of `dynjax.GradientFlow`, `dynjax.euler_map`), and
    `theta_flow(t)` the gradient flow `d theta/dt = -grad J` from the same
    parameters, solved by diffrax at the times `t = k eta`.

    Backward error analysis: gradient descent follows, to second order in `eta`,
    the *modified* flow of `J~ = J + (eta / 4) |grad J|^2` (Barrett & Dherin 2021;
    the deterministic case of the modified equations of Li, Tai & E 2019), so over
    a fixed time `t = k eta` its distance from the plain flow is `O(eta)` (halving
    `eta` halves it; on a quadratic with Hessian `H` it is
    `(eta t / 2) |H^2 exp(-H t) e_0| + O(eta^2)`), and from the modified flow
    (`modified=True`) `O(eta^2)`. Plot the result against `k eta` for several
    `eta` to see where the continuous picture holds; near `eta = 2 / lambda_max`
    it breaks down (the edge of stability).

    **Arguments:**

    - `loss`: `loss(params, batch) -> scalar`.
    - `params`: the initial parameters (any pytree of float arrays).
    - `learning_rate`: `eta > 0`.
    - `n_steps`: the number of gradient-descent steps, an int `>= 1`.
    - `data`: the (full) batch passed to `loss`, or `None`.
    - `modified`: compare with the gradient flow of the modified loss
        `J + (eta / 4) |grad J|^2` instead of `J`.
    - `solver`, `stiff`, `rtol`, `atol`, `max_steps`, `throw`: for the flow, as in
        `dynjax.gradient_flow_trajectory`. Tighten `rtol`, `atol` when the
        distances are smaller than the default tolerances (`1e-8`, `1e-10` in
        float64).

    **Returns:**

    The Euclidean distances between the flat parameter vectors, shape
    `(n_steps + 1,)` (the first is 0), in parameter units.

    **Raises:**

    `ValueError` if `learning_rate` is not positive, `n_steps` is not an int
    `>= 1`, or for the reasons `dynjax.gradient_flow_trajectory` gives;
    `equinox.EquinoxRuntimeError` (with `throw=True`) if the flow's solve fails or
    gradient descent diverges (non-finite iterates).

    **References:** D. Barrett and B. Dherin, *Implicit gradient regularization*,
    ICLR (2021), Theorem 3.1; Q. Li, C. Tai and W. E, *Stochastic modified
    equations and dynamics of stochastic gradient algorithms I*, JMLR 20 (2019);
    E. Hairer, C. Lubich and G. Wanner, *Geometric Numerical Integration* (2006),
    Chapter IX (backward error analysis).
    """
    eta = _check_learning_rate(learning_rate)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"`n_steps` must be an int >= 1, got {n_steps!r}.")
    flow = GradientFlow(loss, params, data)
    theta0 = flow.ravel(params)
    rtol, atol = _check_tolerances(rtol, atol, theta0.dtype)
    solver = _choose_solver(solver, stiff)
    gd = trajectory(euler_map(flow, eta), theta0, n_steps=n_steps, throw=throw)
    target = GradientFlow(_modified_loss(loss, eta), params, data) if modified else flow
    ts = jnp.asarray(eta, theta0.dtype) * jnp.arange(n_steps + 1, dtype=theta0.dtype)
    sol = _flow_solve(target, theta0, ts, solver, rtol, atol, max_steps, throw)
    return jnp.linalg.norm(gd.xs - sol.xs, axis=-1)


# --- the stochastic modified equation of SGD -----------------------------------------


class _SME(eqx.Module):
    """SME-1 of SGD: drift `-grad J`, diffusion `sqrt(eta) Sigma^{1/2}`."""

    flow: GradientFlow
    scale: Float[Array, ""]
    diagonal: bool = eqx.field(static=True)

    def drift(self, t, theta, args):
        return self.flow.vector_field(t, theta)

    def per_sample_gradients(self, theta) -> Float[Array, "N p"]:
        flat = self.flow.flat_loss

        def one(row):
            return jax.grad(flat)(theta, jax.tree.map(lambda a: a[None], row))

        return jax.vmap(one)(self.flow.data)

    def diffusion(self, t, theta, args):
        g = self.per_sample_gradients(theta)
        gc = g - jnp.mean(g, axis=0)
        if self.diagonal:
            var = jnp.mean(gc**2, axis=0)
            # (sqrt with a finite derivative where a component has no noise.)
            positive = var > 0
            sd = jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)
            return lx.DiagonalLinearOperator(self.scale * sd)
        # L = scale * G_c^T, (p, N): L L^T = eta Sigma, never a p x p matrix.
        return self.scale * gc.T


def _noise_scale(eta, n, batch_size, replace, diagonal):
    """`sqrt(eta c / B)` (diagonal) or `sqrt(eta c / (B N))` (full), with
    `c = (N - B) / (N - 1)` for minibatches without replacement, else 1."""
    if replace:
        c = 1.0
    else:
        c = (n - batch_size) / (n - 1) if n > 1 else 0.0
    per = c / batch_size if diagonal else c / (batch_size * n)
    return jnp.sqrt(eta * per)


def _check_mean_loss(flat, theta0, data):
    """The SME needs `loss(params, batch)` to be the mean of per-sample losses."""
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((theta0, data))):
        return
    full = float(flat(theta0, data))
    per = np.asarray(
        jax.vmap(lambda row: flat(theta0, jax.tree.map(lambda a: a[None], row)))(data)
    )
    mean = float(np.mean(per))
    tol = float(np.sqrt(np.finfo(np.asarray(theta0).dtype).eps))
    if not abs(full - mean) <= tol * (abs(full) + float(np.mean(np.abs(per))) + tol):
        raise ValueError(
            "`sgd_sde` needs `loss(params, batch)` to be the mean of per-sample "
            f"losses over the batch, but at `params` the loss on all of `data` is "
            f"{full:.8g} while the mean of the one-sample losses is {mean:.8g}. "
            "Reduce over the batch with `jnp.mean` (not `jnp.sum`); a loss that "
            "couples samples (batch statistics) has no per-sample gradient noise."
        )


def _concrete_positive(x, name: str) -> float:
    """A concrete positive finite number (it fixes the step grid)."""
    if isinstance(x, jax.core.Tracer) or np.ndim(x) != 0:
        raise ValueError(
            f"`{name}` must be a concrete number (not traced): it fixes the step grid."
        )
    value = float(x)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {x!r}.")
    return value


def _step_grid(ts: np.ndarray, dt0: float) -> np.ndarray:
    """Steps of at most `dt0` from 0 through every save time (each on the grid)."""
    knots = np.concatenate([[0.0], ts]) if ts[0] > 0 else ts
    pieces = []
    for a, b in zip(knots[:-1], knots[1:]):
        k = max(1, int(np.ceil((b - a) / dt0 * (1 - 1e-12))))
        pieces.append(np.linspace(a, b, k + 1)[:-1])
    return np.concatenate([*pieces, knots[-1:]])


def _n_samples(data) -> int:
    return jax.tree.leaves(data)[0].shape[0]


def _build_sme(loss, params, learning_rate, data, batch_size, covariance, replace):
    """The checked SDE (`_SME`) and the flat initial state."""
    if covariance not in ("full", "diagonal"):
        raise ValueError(
            f"`covariance` must be 'full' (exact square-root factor from the "
            f"per-sample gradients) or 'diagonal', got {covariance!r}."
        )
    if data is None:
        raise ValueError(
            "`sgd_sde` needs `data=`, a pytree of arrays with a leading sample axis: "
            "the minibatch-gradient covariance is estimated from it."
        )
    data, n = _check_data(data)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValueError(f"`batch_size` must be an int, got {batch_size!r}.")
    if not 1 <= batch_size <= n:
        raise ValueError(
            f"`batch_size` must be in [1, {n}] (the number of samples in `data`), "
            f"got {batch_size}."
        )
    eta = _check_learning_rate(learning_rate)
    flow = GradientFlow(loss, params, data)
    theta0 = flow.ravel(params)
    flow, theta0, _ = conform(flow, theta0, verb="sgd_sde", name="params")
    _check_mean_loss(flow.flat_loss, theta0, flow.data)
    diagonal = covariance == "diagonal"
    scale = _noise_scale(eta, n, batch_size, replace, diagonal).astype(theta0.dtype)
    return _SME(flow, scale, diagonal), theta0


@eqx.filter_jit
def _solve_sme(sme: _SME, theta0, grid, ts, key, solver, brownian, noise_dim):
    dtype = theta0.dtype
    t0, t1 = grid[0], grid[-1]
    shape = jax.ShapeDtypeStruct((noise_dim,), dtype)
    # (Imported here: `_diffusion` imports `_training` for `fit`.)
    from .._diffusion._sample import _levy_area

    levy_area = _levy_area(solver)
    if brownian == "tree":
        tol = jnp.min(jnp.diff(grid)) / 2
        path = dfx.VirtualBrownianTree(
            t0, t1, tol=tol, shape=shape, key=key, levy_area=levy_area
        )
        adjoint = dfx.RecursiveCheckpointAdjoint()
    else:
        # Exact for this fixed grid: each step queries its own interval once.
        path = dfx.UnsafeBrownianPath(shape, key, levy_area=levy_area)
        adjoint = dfx.ForwardMode()
    terms = dfx.MultiTerm(dfx.ODETerm(sme.drift), dfx.ControlTerm(sme.diffusion, path))
    sol = dfx.diffeqsolve(
        terms,
        solver,
        t0,
        t1,
        None,
        theta0,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=dfx.StepTo(ts=grid),
        max_steps=grid.shape[0] - 1,
        adjoint=adjoint,
        throw=False,
    )
    result = RESULTS.promote(sol.result)
    nonfinite = jnp.any(~jnp.isfinite(sol.ys))
    result = RESULTS.where(
        (result == RESULTS.successful) & nonfinite, RESULTS.nonfinite_state, result
    )
    losses, params = _views(sme.flow, sol.ys)
    return SGDSDEPath(
        ts=ts,
        params=params,
        thetas=sol.ys,
        losses=losses,
        result=result,
        stats={"num_steps": sol.stats["num_steps"]},
    )


def sgd_sde(
    loss: Callable[[PyTree, PyTree], Float[Array, ""]],
    params: PyTree,
    learning_rate: RealScalarLike,
    *,
    data: PyTree,
    key: PRNGKeyArray,
    batch_size: int = 1,
    t1: float | None = None,
    ts: Float[Array, " T"] | None = None,
    n_save: int = 101,
    dt0: float | None = None,
    covariance: Literal["full", "diagonal"] = "full",
    replace: bool = False,
    solver: dfx.AbstractSolver | None = None,
    brownian: Literal["tree", "increments"] = "tree",
    throw: bool = True,
) -> SGDSDEPath:
    r"""One path of SGD's stochastic modified equation (SME-1), an Itô SDE solved
    by diffrax.

    $$d\theta = -\nabla J(\theta)\, dt + \sqrt{\eta}\, \Sigma(\theta)^{1/2}\, dW_t,
    \qquad \Sigma(\theta) = \frac{c}{B}\, \mathrm{Cov}_i\big[\nabla \ell_i(\theta)
    \big],$$

    the first-order weak approximation of SGD with learning rate `eta` and
    minibatch size `B` (Li, Tai & E 2017, 2019): over a fixed time
    horizon, expectations of smooth functions of the SDE at `t = k eta` match
    those of the `k`-th SGD iterate up to `O(eta)`. **Time `t` corresponds to
    `t / eta` SGD steps.** Here `J(theta) = loss(params, data)` is the full-data
    loss and `l_i(theta) = loss(params, data_i)` the loss of sample `i` alone, with
    `data_i` the `i`-th row of every leaf of `data` *keeping a leading axis of
    length 1* (so `loss` is called on a batch of one sample, as SGD with
    `batch_size=1` would). `loss` must be the mean of per-sample losses over the
    batch (checked at `params`). `Cov_i` is the covariance over the `N` samples,
    normalized by `N` (the exact covariance of one uniformly drawn sample's
    gradient), and `c` the finite-population factor of the minibatch mean:
    `c = (N - B) / (N - 1)` for minibatches drawn without replacement (the default,
    as `dynjax.fit` and `dynjax.minibatch_indices` draw them), `c = 1` with
    `replace=True`. With `B = 1` both give `c = 1`; with `B = N` (full batches)
    without replacement the noise vanishes and the SDE is the gradient flow.

    The per-sample gradients are computed by `jax.vmap` over the samples at every
    evaluation of the diffusion: `G` of shape `(N, p)`, centred to `G_c`.

    - `covariance="full"`: the noise is `L dW` with the exact square-root factor
        `L = sqrt(eta c / (B N)) G_c^T` of shape `(p, N)` (`L L^T = eta Sigma`) and
        `W` an `N`-dimensional Brownian motion: the full covariance, and no
        `p x p` matrix is ever formed. Memory `O(N p)`.
    - `covariance="diagonal"`: `sqrt(eta diag Sigma) * dW` with `W` of dimension
        `p`: the correlations between parameters are dropped.

    Both cost `N` gradients per evaluation: for a large data set pass a
    representative subsample as `data`.

    The solve uses fixed steps of at most `dt0` (default `eta / 10`) on a grid
    that passes through every save time. The Euler-Maruyama method (the default)
    is weak order 1: on an Ornstein-Uhlenbeck process with rate `lambda` it
    overestimates the stationary variance by a factor `2 / (2 - lambda dt)`, so
    with `dt = eta / 10` the discretization error (`lambda eta / 20`, relative) is
    a tenth of the SME's own modelling error against SGD (`lambda eta / 2`).

    Written for one path; for many, `eqx.filter_vmap` over keys (the checks run
    once, at trace time):

    ```python
    paths = eqx.filter_vmap(
        lambda k: dynjax.sgd_sde(loss, params, 0.1, data=data, key=k, t1=10.0)
    )(jax.random.split(key, 256))
    paths.thetas  # (256, T, p)
    ```

    **Arguments:**

    - `loss`: `loss(params, batch) -> scalar`, the mean over the batch's samples.
    - `params`: the initial parameters, any pytree; `p` float entries.
    - `learning_rate`: `eta > 0` (may be traced if `dt0` is given).
    - `data`: a pytree of arrays with a leading sample axis `N` (required).
    - `key`: a PRNG key for the Brownian path.
    - `batch_size`: the SGD minibatch size `B`, `1 <= B <= N`.
    - `t1`: the end time (may be omitted if `ts` is given).
    - `ts`: save times, strictly increasing, in `[0, t1]` (default `n_save`
        equally spaced times from `0` to `t1`). `t1`, `ts` and `dt0` must be
        concrete (Python or NumPy numbers): they fix the step grid.
    - `n_save`: the number of save times when `ts` is not given.
    - `dt0`: the largest step (default `eta / 10`).
    - `covariance`: `"full"` or `"diagonal"` (see above).
    - `replace`: whether SGD draws each minibatch with replacement (`c = 1`).
    - `solver`: a diffrax SDE solver; default `diffrax.Euler()` (Euler-Maruyama,
        Itô, strong order 0.5 for general noise). The SDE is Itô: a Stratonovich
        solver (`Heun`, `SPaRK`, `GeneralShARK`, ...) converges to the solution
        of an SDE whose drift differs by `(eta / 2) sum_k (D s_k) s_k`, with
        `s_k` the columns of the noise factor (an `O(eta)` term, as large as the
        SME's own error); it vanishes when the noise does not depend on `theta`
        (per-sample losses that differ by terms linear in `theta`,
        `l_i = J - z_i^T theta`), where the additive-noise solvers `ShARK` and
        `SRA1` (strong order 1.5) also apply.
    - `brownian`: `"tree"` (default): a `diffrax.VirtualBrownianTree`, one path per
        key whatever `dt0` (convergence studies), reverse-mode differentiable;
        `"increments"`: independent Gaussian increments per step
        (`diffrax.UnsafeBrownianPath`), exact on this fixed grid and faster (25x
        for 2 parameters and 16 samples, where the tree's descent dominates;
        less where the gradients do), forward-mode differentiable only.
    - `throw`: raise if the path becomes non-finite; otherwise report it in
        `result`.

    **Returns:**

    A `dynjax.SGDSDEPath` (`ts`, `params`, `thetas`, `losses`, `result`,
    `stats`).

    **Raises:**

    `ValueError` if `loss` is not scalar or not a mean over the batch, `data` is
    missing, its leaves disagree on the leading axis or contain NaN,
    `learning_rate` is not positive, `batch_size` is not in `[1, N]`, `covariance`
    or `brownian` is unknown, or the times are invalid;
    `equinox.EquinoxRuntimeError` (with `throw=True`) if the path becomes
    non-finite (lower `dt0`).

    **References:** Q. Li, C. Tai and W. E, *Stochastic modified equations and
    adaptive stochastic gradient algorithms*, ICML (2017); Q. Li, C. Tai and W. E,
    *Stochastic modified equations and dynamics of stochastic gradient algorithms
    I: mathematical foundations*, JMLR 20 (2019) (the order-1 SME of SGD);
    W. Cochran, *Sampling Techniques*, 3rd ed. (1977), Chapter 2 (the
    finite-population factor); P. Kloeden and E. Platen, *Numerical Solution of
    Stochastic Differential Equations* (1992), Section 14.1 (Euler-Maruyama, weak
    order 1).
    """
    sme, theta0 = _build_sme(
        loss, params, learning_rate, data, batch_size, covariance, replace
    )
    dtype = theta0.dtype
    if brownian not in ("tree", "increments"):
        raise ValueError(
            f"`brownian` must be 'tree' (a VirtualBrownianTree) or 'increments' "
            f"(independent increments per step), got {brownian!r}."
        )
    solver = dfx.Euler() if solver is None else solver
    if not isinstance(solver, dfx.AbstractSolver):
        raise ValueError(
            f"`solver` must be a diffrax SDE solver (e.g. `diffrax.Euler()`), got "
            f"{type(solver).__name__}."
        )

    # The step grid (concrete times).
    if dt0 is None:
        if isinstance(learning_rate, jax.core.Tracer):
            raise ValueError(
                "With a traced `learning_rate`, pass the step `dt0=` explicitly (the "
                "default `eta / 10` must be known to build the step grid)."
            )
        dt0 = float(learning_rate) / 10
    dt0 = _concrete_positive(dt0, "dt0")
    if ts is None:
        if t1 is None:
            raise ValueError("Pass the end time `t1=` (or save times `ts=`).")
        t1 = _concrete_positive(t1, "t1")
        if not isinstance(n_save, int) or n_save < 2:
            raise ValueError(f"`n_save` must be an int >= 2, got {n_save!r}.")
        ts_np = np.linspace(0.0, t1, n_save)
    else:
        if isinstance(ts, jax.core.Tracer):
            raise ValueError("`ts` must be concrete (it fixes the step grid).")
        ts_np = np.asarray(ts, dtype=np.float64)
        if ts_np.ndim != 1 or ts_np.size < 1:
            raise ValueError(f"`ts` must be a non-empty 1-D array, got {ts_np.shape}.")
        if not (np.all(np.isfinite(ts_np)) and ts_np[0] >= 0):
            raise ValueError("`ts` must be finite and >= 0 (SGD starts at t = 0).")
        if np.any(np.diff(ts_np) <= 0):
            raise ValueError("`ts` must be strictly increasing.")
        if t1 is not None and ts_np[-1] > t1:
            raise ValueError(f"`ts` must lie in [0, t1]; got ts[-1] = {ts_np[-1]}.")
        if ts_np[-1] <= 0:
            raise ValueError("`ts` must reach beyond t = 0.")
    grid = _step_grid(ts_np, dt0)

    noise_dim = sme.flow.d if sme.diagonal else _n_samples(sme.flow.data)
    out = _solve_sme(
        sme,
        theta0,
        jnp.asarray(grid, dtype),
        jnp.asarray(ts_np, dtype),
        key,
        solver,
        brownian,
        noise_dim,
    )
    if not throw:
        return out
    thetas = raise_if_failed(out.result, out).thetas
    return eqx.tree_at(lambda s: s.thetas, out, thetas)
