"""Neural ODEs: a learned vector field that is a dynjax flow."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._custom_types import Args, RealScalarLike, State
from .._system import AbstractFlow
from .._system._checks import check_finite, conform


class _MLPField(eqx.Module):
    """The default vector field of `dynjax.NeuralODE`: `(t, x) -> mlp(x)`, or
    `mlp([t, x])` with the time as an extra first input."""

    mlp: eqx.nn.MLP
    time_input: bool = eqx.field(static=True)

    def __call__(self, t, x):
        if self.time_input:
            x = jnp.concatenate([jnp.reshape(t, (1,)).astype(x.dtype), x])
        return self.mlp(x)


class NeuralODE(AbstractFlow):
    r"""A neural ODE `dz/dt = f_theta(t, z)`: a learned vector field as a dynjax flow.

    The flow's state is `z`, of shape `(d,)` with `d = data_size + augment`. Data
    `x` of shape `(data_size,)` enters through `lift` and leaves through
    `readout`:

    $$z(t_0) = \operatorname{lift}(x_0) = (x_0, 0_p), \qquad
    \frac{dz}{dt} = f_\theta(t, z), \qquad x(t) = \operatorname{readout}(z(t))
    = z(t)_{1:\mathrm{data\_size}}.$$

    With `augment=0` (the default) `z = x`. Because it is an `AbstractFlow` on
    `z`, every dynjax verb applies to a trained model unchanged:
    `dynjax.trajectory`, `dynjax.find_equilibria`, `dynjax.linearize`,
    `dynjax.lyapunov_spectrum`, `dynjax.find_periodic_orbit`,
    `dynjax.plot.phase_portrait` (all act on the `d`-dimensional state `z`).

    **Augmentation** (Dupont et al. 2019). The time-`T` map of an ODE is a
    homeomorphism that preserves orientation, so in one dimension it is
    increasing: no 1-D neural ODE represents `x -> -x`. Appending `p` zero
    coordinates lets trajectories pass around one another. A linear read-out (the
    projection onto the first `data_size` coordinates) suffices: for example the
    rotation by `pi` in the `(x, a)` plane, the time-1 map of
    `dx/dt = -pi a, da/dt = pi x`, sends `(x, 0)` to `(-x, 0)`, whose projection
    is `-x`. The extra coordinates are state like any other: `find_equilibria`
    and `linearize` see all `d` of them.

    **Vector field.** Any callable `func(t, z) -> dz/dt` (usually an equinox
    Module, whose array leaves are then the trained parameters), mapping a
    scalar time and a `(d,)` state to a `(d,)` array. By default an
    `eqx.nn.MLP(d, d, width, depth, activation)` (`d + 1` inputs with
    `time_input=True`: the time is prepended to the state).

    **Arguments:**

    - `data_size`: the dimension of the data, a positive `int`.
    - `func`: the vector field; if omitted, the default MLP is built from the
        next five arguments (which are then not allowed).
    - `width`: the MLP's hidden width (default 64).
    - `depth`: the MLP's number of hidden layers (default 2).
    - `activation`: the MLP's activation (default `jax.nn.softplus`; a smooth
        activation keeps the vector field, its Jacobian and the solver's error
        estimates smooth).
    - `time_input`: feed `t` to the MLP as an extra input (a non-autonomous
        field; default `False`).
    - `key`: the `jax.random.key` initialising the MLP (required for the
        default MLP).
    - `augment`: the number `p >= 0` of zero coordinates appended to the state
        (default 0).
    - `dtype`: the MLP's floating dtype (default: JAX's default float, float64
        under `jax_enable_x64`).

    **Attributes:** `func`, `data_size`, `augment`, and `d = data_size +
    augment` (static `int`s).

    **Raises:** `ValueError` for a non-positive `data_size`, a negative
    `augment`, a missing `key` (default MLP), MLP options passed together with
    `func`, or (at the first call) a `func` whose output is not an array of
    shape `(d,)`.

    !!! Example

        ```python
        model = dynjax.NeuralODE(2, width=64, depth=2, key=jax.random.key(0))
        ts = jnp.linspace(0.0, 10.0, 101)
        xs = model(ts, jnp.array([1.0, 0.0]))  # (101, 2)
        xs = model(ts, x0s)  # x0s (256, 2): one ODE for the batch, (256, 101, 2)
        eq = dynjax.find_equilibria(model, guesses)  # a trained model's equilibria
        ```

    **References:** R. T. Q. Chen, Y. Rubanova, J. Bettencourt and D. Duvenaud,
    "Neural Ordinary Differential Equations", NeurIPS 2018; E. Dupont, A. Doucet
    and Y. W. Teh, "Augmented Neural ODEs", NeurIPS 2019; P. Kidger, *On Neural
    Differential Equations*, PhD thesis, University of Oxford, 2021 (arXiv
    2202.02435); E. Hairer, S. P. Norsett and G. Wanner, *Solving Ordinary
    Differential Equations I*, 2nd ed., Springer 1993, Section II.4 (the initial
    step).
    """

    func: Callable
    data_size: int = eqx.field(static=True)
    augment: int = eqx.field(static=True)
    d: int = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        *,
        func: Callable | None = None,
        width: int | None = None,
        depth: int | None = None,
        activation: Callable | None = None,
        time_input: bool | None = None,
        key: PRNGKeyArray | None = None,
        augment: int = 0,
        dtype=None,
    ):
        if not isinstance(data_size, (int, np.integer)) or data_size < 1:
            raise ValueError(
                f"`data_size` must be a positive int (the data's dimension), got "
                f"{data_size!r}."
            )
        if not isinstance(augment, (int, np.integer)) or augment < 0:
            raise ValueError(
                f"`augment` must be an int >= 0 (the number of zero coordinates "
                f"appended to the state), got {augment!r}."
            )
        d = int(data_size) + int(augment)
        if func is None:
            if key is None:
                raise ValueError(
                    "The default MLP vector field needs a PRNG key: pass "
                    "`key=jax.random.key(0)` (or your own `func=`)."
                )
            time_input = bool(time_input)
            mlp = eqx.nn.MLP(
                d + int(time_input),
                d,
                64 if width is None else width,
                2 if depth is None else depth,
                jax.nn.softplus if activation is None else activation,
                dtype=dtype,
                key=key,
            )
            func = _MLPField(mlp, time_input)
        else:
            given = [
                name
                for name, value in (
                    ("width", width),
                    ("depth", depth),
                    ("activation", activation),
                    ("time_input", time_input),
                    ("key", key),
                    ("dtype", dtype),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(f'`{g}`' for g in given)} configure(s) the default "
                    "MLP and cannot be combined with `func=`; build your vector "
                    "field with those settings instead."
                )
            if not callable(func):
                raise ValueError(
                    f"`func` must be callable as `func(t, z) -> dz/dt`, got "
                    f"{type(func).__name__}."
                )
        self.func = func
        self.data_size = int(data_size)
        self.augment = int(augment)
        self.d = d

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del args
        return self.func(t, x)

    def lift(self, x: Float[ArrayLike, "*batch data_size"]) -> Float[Array, "*batch d"]:
        """The state `(x, 0, ..., 0)` of shape `(..., d)` from data `x` of shape
        `(..., data_size)` (`x` itself when `augment=0`)."""
        x = jnp.asarray(x)
        if self.augment == 0:
            return x
        zeros = jnp.zeros(x.shape[:-1] + (self.augment,), x.dtype)
        return jnp.concatenate([x, zeros], axis=-1)

    def readout(
        self, z: Float[ArrayLike, "*batch d"]
    ) -> Float[Array, "*batch data_size"]:
        """The data coordinates `z[..., :data_size]` of states `z` of shape
        `(..., d)`."""
        return jnp.asarray(z)[..., : self.data_size]

    def __call__(
        self,
        ts: Float[ArrayLike, " T"],
        x0: Float[ArrayLike, "*batch data_size"],
        *,
        solver: dfx.AbstractSolver | None = None,
        stepsize_controller: dfx.AbstractStepSizeController | None = None,
        adjoint: dfx.AbstractAdjoint | None = None,
        dt0: RealScalarLike | None = None,
        max_steps: int = 4096,
        throw: bool = True,
    ) -> Float[Array, "*batch T data_size"]:
        """Solve from `x0` at `ts[0]` and read out the states at `ts`.

        Integrates `dz/dt = func(t, z)` from `lift(x0)` over `[ts[0], ts[-1]]`
        with `diffrax.diffeqsolve` and returns `readout(z(ts))`. Differentiable
        with respect to the model's parameters and `x0` through `adjoint`.

        **A batch is one ODE.** For `x0` of shape `(batch, data_size)` the batch
        is solved as one ODE on the `(batch, d)` state `Z`, `dZ/dt =
        jax.vmap(func, in_axes=(None, 0))(t, Z)`, as torchdiffeq does: one
        sequence of adaptive steps for the whole batch, accepted or rejected by
        the controller's norm over all `batch * d` components (the RMS norm of
        `diffrax.PIDController`). Compared with `jax.vmap` of the one-sample
        call (every sample its own steps):

        - the hardest sample sets the step for all, so an easy sample takes more
            steps than it would alone, and each sample's solution depends on the
            rest of the batch within the solver's tolerance (not beyond it);
        - the gradient of a batch loss is the same within the solver's tolerance
            (exactly the same with a constant step size);
        - training is faster: every step is one matrix product over the batch,
            and the backward pass carries one parameter cotangent, where a
            vmapped solve carries one per sample. With
            `diffrax.BacksolveAdjoint` that difference is large (the parameter
            adjoint is part of the adjoint ODE's state: one of it per sample
            under `vmap`), so batch the call rather than vmap it.

        **Initial step.** With `dt0=None` and a `diffrax.PIDController` the first
        step is the controller's own choice for the ODE (Hairer, Norsett and
        Wanner 1993, Section II.4; torchdiffeq's too), which `diffeqsolve`
        (diffrax 0.7.2) replaces by 0.01.

        **Arguments:**

        - `ts`: the save times, shape `(T,)` with `T >= 2`, strictly increasing;
            `ts[0]` is the initial time.
        - `x0`: the initial data, shape `(data_size,)`, or `(batch, data_size)`
            for a batch solved as one ODE; its floating dtype is the
            computation's (the model's parameters are cast to it).
        - `solver`: any diffrax ODE solver (default `diffrax.Tsit5()`).
        - `stepsize_controller`: default `diffrax.PIDController(rtol=1e-6,
            atol=1e-8)` in float64, `(1e-4, 1e-6)` in float32;
            `diffrax.ConstantStepSize()` needs `dt0`.
        - `adjoint`: default `diffrax.RecursiveCheckpointAdjoint()`
            (differentiates the solver's operations; exact gradients of the
            discretised solution). `diffrax.BacksolveAdjoint()` solves the
            continuous adjoint equations backwards (Chen et al. 2018: memory
            independent of the number of steps, gradients accurate to the
            solver's tolerance).
        - `dt0`: the initial step (`None`: chosen by the controller, as above).
        - `max_steps`: the solver's step budget (for the whole batch).
        - `throw`: raise if the solve fails (step budget exhausted, step size
            collapsed). With `throw=False` the times not reached are `inf` (for
            the whole batch).

        **Returns:**

        The data trajectory, shape `(T, data_size)`, or `(batch, T, data_size)`
        for a batch, in `x0`'s dtype.

        **Raises:**

        `ValueError` at trace time for a wrong `x0` or `ts` shape, `ts` not
        strictly increasing (`t1 <= t0`), a non-finite concrete `x0`, or a
        vector field that does not return a `(d,)` array of the state's dtype.
        """
        x0 = _as_float(x0)
        if x0.ndim not in (1, 2) or x0.shape[-1] != self.data_size or x0.size == 0:
            raise ValueError(
                f"`x0` must have shape ({self.data_size},) (one initial state; "
                f"the model's data_size) or (batch, {self.data_size}) with batch "
                f">= 1 (a batch solved as one ODE), got {x0.shape}."
            )
        x0 = check_finite(
            x0, "`x0` contains non-finite values (NaN or inf); pass finite states."
        )
        check_vector_field(self, x0.dtype)
        one = self.lift(x0 if x0.ndim == 1 else x0[0])
        # (float32 is the norm for neural ODEs: no precision warning.)
        model, z0, _ = conform(
            self, one, verb="NeuralODE", name="x0", warn_float32=False
        )
        ts = check_times(ts, z0.dtype)
        if isinstance(ts, jax.core.Tracer):
            ts = eqx.error_if(
                ts,
                ~jnp.all(ts[1:] > ts[:-1]),
                "`ts` must be strictly increasing (t1 > t0).",
            )
        solver, stepsize_controller, adjoint = solve_options(
            solver, stepsize_controller, adjoint, dt0, z0.dtype
        )
        return predict(
            model, ts, x0, solver, stepsize_controller, adjoint, dt0, max_steps, throw
        )


def _as_float(x) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def lift_of(model: AbstractFlow) -> Callable:
    """`model.lift` for a `NeuralODE`, the identity for any other flow."""
    return model.lift if isinstance(model, NeuralODE) else (lambda x: x)


def readout_of(model: AbstractFlow) -> Callable:
    """`model.readout` for a `NeuralODE`, the identity for any other flow."""
    return model.readout if isinstance(model, NeuralODE) else (lambda z: z)


def check_vector_field(model: AbstractFlow, dtype) -> None:
    """A `NeuralODE`'s `func` evaluated abstractly: a `(d,)` array or a
    `ValueError` that names the sizes involved (other flows: `conform` checks)."""
    if not isinstance(model, NeuralODE):
        return
    t = jax.ShapeDtypeStruct((), dtype)
    z = jax.ShapeDtypeStruct((model.d,), dtype)
    out = jax.eval_shape(model.func, t, z)
    shape = getattr(out, "shape", None)
    if not isinstance(out, jax.ShapeDtypeStruct) or shape != (model.d,):
        got = f"shape {shape}" if shape is not None else type(out).__name__
        aug = f" + augment={model.augment}" if model.augment else ""
        raise ValueError(
            f"NeuralODE's `func(t, z)` returned {got} for a state z of shape "
            f"({model.d},); it must return dz/dt of shape ({model.d},) (d = "
            f"data_size={model.data_size}{aug}). Make its output size {model.d}, "
            f"e.g. `eqx.nn.MLP({model.d}, {model.d}, ...)`."
        )


def check_times(ts, dtype) -> Array:
    """`ts` as a 1-D array of `dtype` with at least two times; strictly increasing
    and finite when concrete (`ValueError` otherwise)."""
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"`ts` must be a 1-D array of at least two times (t0 = ts[0], "
            f"t1 = ts[-1]), got shape {ts.shape}."
        )
    ts = ts.astype(dtype)
    if not isinstance(ts, jax.core.Tracer):
        values = np.asarray(ts)
        if not np.all(np.isfinite(values)):
            raise ValueError("`ts` contains non-finite times (NaN or inf).")
        bad = np.flatnonzero(~(values[1:] > values[:-1]))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"`ts` must be strictly increasing (each t1 > t0): ts[{i + 1}] = "
                f"{values[i + 1]} <= ts[{i}] = {values[i]}. Sort the times and drop "
                "duplicates (sort the data's time axis the same way)."
            )
    return ts


def solve_options(solver, stepsize_controller, adjoint, dt0, dtype):
    """Defaults for the solver, the controller and the adjoint; a constant step
    size without `dt0` is a `ValueError`."""
    solver = dfx.Tsit5() if solver is None else solver
    if stepsize_controller is None:
        if jnp.finfo(dtype).bits >= 64:
            stepsize_controller = dfx.PIDController(rtol=1e-6, atol=1e-8)
        else:
            stepsize_controller = dfx.PIDController(rtol=1e-4, atol=1e-6)
    if isinstance(stepsize_controller, dfx.ConstantStepSize) and dt0 is None:
        raise ValueError("A constant step size needs `dt0=`: pass the fixed step.")
    concrete = dt0 is not None and not isinstance(dt0, jax.core.Tracer)
    if concrete and not (np.isfinite(dt0) and dt0 > 0):
        raise ValueError(f"`dt0` must be a positive step size, got {dt0}.")
    adjoint = dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    return solver, stepsize_controller, adjoint


def _field(t, z, model):
    return model.vector_field(t, z, None)


def _batch_field(t, z, model):
    # The batch (b, d) as one state: one field evaluation is one batched MLP.
    return jax.vmap(model.vector_field, in_axes=(None, 0, None))(t, z, None)


def initial_step(term, solver, controller, t0, t1, y0, args):
    """The first step that a `diffrax.PIDController` chooses for the ODE `term`
    (Hairer, Norsett and Wanner 1993, Section II.4), or `None` for other
    controllers (and then `diffeqsolve` decides).

    A workaround: diffrax 0.7.2's `diffeqsolve(dt0=None)` wraps the terms in a
    `WrapTerm` before calling `PIDController.init`, whose initial-step algorithm
    returns 0.01 for anything but an `ODETerm`, which costs a step or more per
    solve. Here the controller is handed the `ODETerm` itself, as `diffeqsolve`
    intended (under `stop_gradient`, as in `PIDController.init`).
    """
    # Repro: diffeqsolve(ODETerm(lambda t, y, a: -y), Dopri5(), 0.0, 1.0, None, 1.0,
    # stepsize_controller=PIDController(rtol=1e-6, atol=1e-6),
    # saveat=SaveAt(steps=True)).ts[0] is 0.01; PIDController.init on the
    # ODETerm gives t0 + 0.0289.
    inner = controller
    if isinstance(inner, dfx.ClipStepSizeController):  # PIDController(step_ts=...)
        inner = inner.controller
    if not isinstance(inner, dfx.PIDController):
        return None
    order = solver.error_order(term)
    t_next, _ = inner.init(term, t0, t1, y0, None, args, solver.func, order)
    return jax.lax.stop_gradient(t_next - t0)


@eqx.filter_jit
def predict(model, ts, x0, solver, controller, adjoint, dt0, max_steps, throw):
    """The data trajectory `readout(z(ts))` from `x0` at `ts[0]`, no checks:
    shape `(T, data_size)` for `x0` of shape `(data_size,)`, `(batch, T,
    data_size)` for a batch `(batch, data_size)` solved as one ODE.

    The model travels as diffrax's `args`, so every adjoint (`BacksolveAdjoint`
    included) differentiates with respect to its parameters."""
    z0 = lift_of(model)(x0)
    term = dfx.ODETerm(_field if z0.ndim == 1 else _batch_field)
    if dt0 is None:
        dt0 = initial_step(term, solver, controller, ts[0], ts[-1], z0, model)
    sol = dfx.diffeqsolve(
        term,
        solver,
        ts[0],
        ts[-1],
        None if dt0 is None else jnp.asarray(dt0, z0.dtype),
        z0,
        args=model,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=throw,
    )
    ys = sol.ys if z0.ndim == 1 else jnp.swapaxes(sol.ys, 0, 1)
    return readout_of(model)(ys)
