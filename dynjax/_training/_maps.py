"""Training seen as a dynamical system: gradient flow, optimizer maps, SGD."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PyTree

from .._custom_types import Args, IntScalarLike, RealScalarLike
from .._system._base import AbstractDrivenMap, AbstractFlow, AbstractMap
from ._fit import _ByValue, _check_data
from ._flat import check_scalar_loss, FlatLoss, Layout


def _no_args(name, args):
    if args is not None:
        raise ValueError(
            f"`dynjax.{name}` reads its data from its `data` field, not from the "
            "verb's `args`; build it with `data=` instead."
        )


class GradientFlow(AbstractFlow):
    r"""The gradient flow of a loss, `d theta / dt = -grad J(theta)`, as a flow on
    the flattened parameters.

    `theta` is the vector of every float leaf of `params` (an equinox Module, a
    dict of arrays...), concatenated in leaf order (`ravel`/`unravel` convert);
    `J(theta) = loss(unravel(theta), data)`. Gradient descent with learning rate
    `eta` is this flow's explicit Euler map with step `eta`, so time `t`
    corresponds to `t / eta` steps. Every dynjax verb for flows applies:
    `dynjax.trajectory` (use a stiff solver such as `diffrax.Kvaerno5` for sharp
    losses: the flow's stiffness ratio is the Hessian's condition number),
    `dynjax.lyapunov_spectrum` (the exponents at a minimum are minus the Hessian's
    eigenvalues), `dynjax.linearize`, `dynjax.find_equilibria`.

    **Arguments:**

    - `loss`: `loss(params, batch) -> scalar`.
    - `params`: a template of the parameters (its structure, shapes and dtypes
        are used; its values are not stored).
    - `data`: the batch passed to `loss` (a pytree of arrays, or `None`); a
        field, so it can be vmapped over and differentiated.

    **Raises:**

    `ValueError` if `params` has no float arrays or `loss` does not return a
    scalar.

    **Reference:** e.g. Q. Li, C. Tai and W. E, *Stochastic modified equations and
    dynamics of stochastic gradient algorithms I*, JMLR 20 (2019), Section 2.
    """

    flat_loss: FlatLoss
    data: PyTree
    d: int = eqx.field(static=True)

    def __init__(self, loss, params, data=None):
        self.flat_loss = FlatLoss.from_params(loss, params)
        self.data = None if data is None else jax.tree.map(jnp.asarray, data)
        check_scalar_loss(self.flat_loss, self.data)
        self.d = self.flat_loss.size

    def ravel(self, params: PyTree) -> Float[Array, " d"]:
        """The flat state `theta` of a parameter pytree, shape `(d,)`."""
        return self.flat_loss.ravel(params)

    def unravel(self, theta: Float[Array, " d"]) -> PyTree:
        """The parameter pytree of a flat state."""
        return self.flat_loss.unravel(theta)

    def loss(self, theta: Float[Array, " d"]) -> Float[Array, ""]:
        """`J(theta)`, the loss at a flat state."""
        return self.flat_loss(theta, self.data)

    def vector_field(self, t: RealScalarLike, x, args: Args = None):
        _no_args("GradientFlow", args)
        return -jax.grad(self.flat_loss)(x, self.data)


def _counter_layout(optimizer, opt_state, params_floats):
    """The optimizer state's layout; checks that its non-float array leaves are
    step counters (one update adds exactly 1), so that they follow from `n`."""
    layout = Layout(opt_state)
    leaves = jax.tree.leaves((opt_state, params_floats))
    concrete = not any(isinstance(x, jax.core.Tracer) for x in leaves)
    ints = [x for x in layout.others if eqx.is_array(x)]
    if ints and concrete:
        zeros = jax.tree.map(jnp.zeros_like, params_floats)
        _, new_state = optimizer.update(zeros, opt_state, params_floats)
        new_others = Layout(new_state).others
        for old, new in zip(layout.others, new_others):
            if eqx.is_array(old) and not np.array_equal(
                np.asarray(new), np.asarray(old) + 1
            ):
                raise ValueError(
                    "The optimizer's state has an integer leaf that is not a step "
                    f"counter (it went from {np.asarray(old)} to {np.asarray(new)} "
                    "in one update, not +1), so it cannot be derived from the "
                    "iteration index. `OptimizerMap` supports optimizers whose "
                    "integer state counts steps (optax's sgd, momentum, adam, "
                    "schedules, clipping, chains of these); not `optax.MultiSteps`."
                )
    return layout


class OptimizerMap(AbstractMap):
    r"""One update of any optax optimizer, as a map on (parameters, optimizer
    state) flattened: `x_{n+1} = F(n, x_n)`.

    The state `x` is the float leaves of the parameters, then the float leaves of
    the optimizer state (momenta, second moments), concatenated: for plain
    gradient descent `d = p`, for momentum `2p`, for Adam `3p`. Integer leaves
    of the optimizer state are step counters (Adam's bias correction, schedules):
    they are not state coordinates but follow from the iteration index,
    `count_n = count_0 + n`, with `count_0` from the `opt_state` given here. The
    map is `theta, s -> theta + u, s'` with `u, s' = optimizer.update(grad J(theta),
    s, theta)`, so its Jacobian (by `jax.jvp` through the optax update), its
    Lyapunov exponents (`dynjax.lyapunov_spectrum`, per step, in nats), its fixed
    points and their linearization come from the existing verbs.

    For plain gradient descent at a minimum with Hessian `H` the exponents are
    `log |1 - eta lambda_i(H)|`; for heavy-ball momentum (`optax.sgd(eta,
    momentum=beta)`) they are the log-moduli of the roots of `z^2 - (1 + beta -
    eta lambda) z + beta` for each eigenvalue `lambda`.

    **Arguments:**

    - `loss`: `loss(params, batch) -> scalar`.
    - `optimizer`: any `optax.GradientTransformation` whose integer state is step
        counters.
    - `params`: the parameters (their structure, and the default initial state).
    - `opt_state`: the optimizer state matching `params` (default
        `optimizer.init` of the float leaves of `params`).
    - `data`: the (full) batch passed to `loss`, or `None`.

    **Raises:**

    `ValueError` if `params` has no float arrays, `loss` is not scalar, or the
    optimizer keeps integer state other than step counters (`optax.MultiSteps`).

    Adam-type optimizers divide by `sqrt(nu)`, which has no derivative where a
    second moment `nu` is exactly 0 (a parameter whose gradient has always been
    0, e.g. a weight on a constant-zero input): Jacobians and Lyapunov exponents
    of the map are then infinite there. Pass `eps_root > 0`
    (`optax.adam(lr, eps_root=1e-12)`) to make the map differentiable.

    Note that optax evaluates schedules in float32 even with float64 enabled
    (an int32 counter divided by an int), so with a schedule two runs of the
    same map agree to float32 rounding of the learning rate, not to float64.

    **Reference:** the linearization of gradient methods at a minimum: B. Polyak,
    *Some methods of speeding up the convergence of iteration methods*, USSR
    Comp. Math. Math. Phys. 4 (1964).
    """

    flat_loss: FlatLoss
    optimizer: _ByValue = eqx.field(static=True)
    state_layout: Layout
    data: PyTree
    d: int = eqx.field(static=True)

    def __init__(self, loss, optimizer, params, opt_state=None, data=None):
        self.flat_loss = FlatLoss.from_params(loss, params)
        self.data = None if data is None else jax.tree.map(jnp.asarray, data)
        check_scalar_loss(self.flat_loss, self.data)
        floats = eqx.filter(params, eqx.is_inexact_array)
        if not isinstance(optimizer, optax.GradientTransformation):
            raise ValueError(
                "`optimizer` must be an `optax.GradientTransformation` (e.g. "
                f"`optax.sgd(0.1)`), got {type(optimizer).__name__}."
            )
        if opt_state is None:
            opt_state = optimizer.init(floats)
        self.state_layout = _counter_layout(optimizer, opt_state, floats)
        self.optimizer = _ByValue(optimizer)
        self.d = self.flat_loss.size + self.state_layout.size

    @property
    def n_params(self) -> int:
        """`p`, the number of parameters (the first `p` state coordinates)."""
        return self.flat_loss.size

    def initial_state(self, params: PyTree, opt_state: PyTree | None = None):
        """The flat state `x` of parameters and an optimizer state (default
        `optimizer.init` of the parameters), shape `(d,)`."""
        theta = self.flat_loss.ravel(params)
        if opt_state is None:
            floats = eqx.filter(params, eqx.is_inexact_array)
            opt_state = self.optimizer.obj.init(floats)
        s = self.state_layout.ravel(opt_state)
        return jnp.concatenate([theta, s.astype(theta.dtype)])

    def unravel(self, x: Float[Array, " d"], n: IntScalarLike = 0):
        """`(params, opt_state)` from a flat state at iteration `n`."""
        p = self.flat_loss.size
        params = self.flat_loss.unravel(x[:p])
        others = tuple(
            o + jnp.asarray(n).astype(o.dtype) if eqx.is_array(o) else o
            for o in self.state_layout.others
        )
        return params, self.state_layout.unravel(x[p:], others)

    def update(self, params, opt_state, batch):
        """One optimizer update on `batch`: `(new params, new state, loss,
        gradient, update)` (gradient and update as pytrees of the float leaves)."""
        floats, static = eqx.partition(params, eqx.is_inexact_array)

        def f(fl):
            return self.flat_loss.loss.obj(eqx.combine(fl, static), batch)

        value, grads = jax.value_and_grad(f)(floats)
        new, new_state, updates = self.apply(params, opt_state, grads)
        return new, new_state, value, grads, updates

    def apply(self, params, opt_state, grads):
        """The optimizer update for a given gradient (a pytree of the float
        leaves): `(new params, new state, update)`."""
        floats, static = eqx.partition(params, eqx.is_inexact_array)
        updates, new_state = self.optimizer.obj.update(grads, opt_state, floats)
        new = eqx.combine(optax.apply_updates(floats, updates), static)
        return new, new_state, updates

    def step(self, n: IntScalarLike, x, args: Args = None):
        _no_args("OptimizerMap", args)
        return _step(self, n, x, self.data)


def _step(opt_map, n, x, batch):
    params, opt_state = opt_map.unravel(x, n)
    new, new_state, *_ = opt_map.update(params, opt_state, batch)
    return jnp.concatenate(
        [
            opt_map.flat_loss.ravel(new).astype(x.dtype),
            opt_map.state_layout.ravel(new_state).astype(x.dtype),
        ]
    )


class StochasticOptimizerMap(AbstractDrivenMap):
    r"""Stochastic gradient training as a random dynamical system: one optimizer
    update on the minibatch whose sample indices are the input.

    `x_{n+1} = F(x_n, u_n)`, with `x` flattened as in `dynjax.OptimizerMap` and
    `u_n` an integer array of `batch_size` sample indices into `data`; the input
    sequence (`inputs=` of every driven-map verb, shape `(T, batch_size)`) is the
    realization of the minibatch noise, e.g. from `minibatch_indices`. Then
    `dynjax.lyapunov_spectrum(map, x_star, inputs=indices)` gives the exponents of
    the random product of linearized steps `prod (I - eta H_{xi_n})` at a minimum:
    at an interpolating minimum (every sample's loss minimal, e.g.
    over-parameterized least squares), SGD started nearby converges if the
    largest exponent transverse to the set of minima is negative and escapes if it
    is positive, whatever the full-batch Hessian says (Chemnitz & Engel, 2024).
    Directions along a manifold of minima have exponent 0.

    Integer optimizer-state counters follow the step index as in
    `dynjax.OptimizerMap`; since a driven map's step has no index, they are
    frozen at their initial values here (use an optimizer without schedules or
    bias correction, e.g. `optax.sgd(eta, momentum=...)`, for exact dynamics).

    **Arguments:** as `dynjax.OptimizerMap` (`loss`, `optimizer`, `params`,
    `opt_state`), and `data`, a pytree of arrays with a leading sample axis `N`
    (required).

    **Raises:**

    `ValueError` as `dynjax.OptimizerMap`, and if `data` is missing or its leaves
    disagree on the sample axis.

    **Reference:** D. Chemnitz and M. Engel, *Characterizing dynamical stability
    of stochastic gradient descent in overparameterized learning*,
    arXiv:2407.20209 (2024).
    """

    optimizer_map: OptimizerMap
    d: int = eqx.field(static=True)

    def __init__(self, loss, optimizer, params, opt_state=None, *, data):
        if data is None:
            raise ValueError("`StochasticOptimizerMap` needs `data=` to sample from.")
        data, _ = _check_data(data)
        self.optimizer_map = OptimizerMap(loss, optimizer, params, opt_state, data)
        self.d = self.optimizer_map.d

    def initial_state(self, params, opt_state=None):
        """As `dynjax.OptimizerMap.initial_state`."""
        return self.optimizer_map.initial_state(params, opt_state)

    def unravel(self, x, n: IntScalarLike = 0):
        """As `dynjax.OptimizerMap.unravel`."""
        return self.optimizer_map.unravel(x, n)

    def step(self, x, u: Int[Array, " batch_size"], args: Args = None):
        _no_args("StochasticOptimizerMap", args)
        om = self.optimizer_map
        batch = jax.tree.map(lambda a: a[u], om.data)
        return _step(om, 0, x, batch)


def minibatch_indices(
    key, n_samples: int, batch_size: int, n_steps: int, *, replace: bool = False
) -> Int[Array, "n_steps batch_size"]:
    """Random minibatch index sequences, shape `(n_steps, batch_size)`: each row
    `batch_size` distinct sample indices (uniform without replacement within a
    minibatch, independent across steps), the input of a
    `dynjax.StochasticOptimizerMap` and the sampling `dynjax.train` uses."""
    if not 1 <= batch_size <= n_samples:
        raise ValueError(
            f"`batch_size` must be in [1, {n_samples}] (the number of samples), "
            f"got {batch_size}."
        )
    keys = jax.random.split(key, n_steps)
    return jax.vmap(
        lambda k: jax.random.choice(k, n_samples, (batch_size,), replace=replace)
    )(keys)
