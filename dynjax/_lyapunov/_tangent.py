"""Tangent dynamics: a system together with its linearization along an orbit.

Each wrapper holds the original system (wrap, don't subclass) and exposes one
step of the state (`step`) and one step of the state together with a `(d, k)`
block of tangent vectors (`tangent_step`); the block drivers at the end run
many steps, and `block_propagators` forms the dense propagators of whole QR
blocks for the Jacobian method. For flows a "step" is one fixed step `dt` of a
Runge-Kutta scheme, and its tangent is the same scheme applied to the
variational equation `dV/dt = Df(t, x) V` (the two coincide for Runge-Kutta
methods).

Tangents are propagated matrix-free: `jax.jvp` vmapped over the k columns, so
the primal is evaluated once and every linear layer of the system acts on the
k columns together (one matrix-matrix product), at a cost proportional to k.
"""

import abc

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import State, Tangents
from .._misc import input_at
from .._scan import scan, scan_prefix
from .._system import AbstractDrivenMap, AbstractFlow, AbstractMap, AbstractSystem
from .._system._jacobian import tangent_columns
from .._vmap_last import Unsupported, vmap_last
from ._fuse import fused_call, merge_default


def jvp_columns(
    fn, x: State, V: Tangents, merge: bool | None = None, mode: str = "forward"
) -> tuple[State, Tangents]:
    """`fn(x)` and `Dfn(x) @ V`.

    Forward mode (the default): `jax.jvp` vmapped over the columns of `V` with
    the primal unbatched, so the primal is evaluated once and `Dfn(x)` is never
    formed. A matrix product that the primal and the tangents both apply to the
    same matrix (a network's `J @ tanh(h)` and `J @ (sech^2(h) V)`) is evaluated
    as one product that reads the matrix once (`fused_call`). `mode="reverse"`
    (for a system that forward mode cannot go through, e.g. one calling a
    `jax.custom_vjp` function) forms `Dfn(x)` by reverse mode
    (`dynjax._system._jacobian.tangent_columns`).
    """
    if mode == "reverse":
        return tangent_columns(fn, x, V, "reverse")
    columns = jax.vmap(lambda v: jax.jvp(fn, (x,), (v,)), in_axes=1, out_axes=(None, 1))
    if merge is None:
        merge = merge_default()
    return fused_call(columns, V) if merge else columns(V)


class AbstractTangentSystem(eqx.Module):
    """A system plus its linearization, one step at a time.

    `mode` is `"forward"` (tangents by `jax.jvp`) or `"reverse"` (the Jacobian
    by `jax.vjp`, for systems that forward mode cannot go through).
    """

    mode: eqx.AbstractVar[str]

    @abc.abstractmethod
    def step(self, time, x, u, dt, args):
        """One step of the state; returns the next state."""

    @abc.abstractmethod
    def tangent_step(self, time, x, V, u, dt, args):
        """One step of state and tangents; returns `(x_next, V_next)`."""

    @abc.abstractmethod
    def next_time(self, time, dt):
        """The time (or index) after one step."""


class TangentFlow(AbstractTangentSystem):
    """A flow stepped with a fixed step: built-in RK4 or a diffrax solver."""

    flow: AbstractFlow
    solver: dfx.AbstractSolver | None
    merge: bool = eqx.field(static=True, default=False)
    mode: str = eqx.field(static=True, default="forward")

    def next_time(self, time, dt):
        return time + dt

    def _f(self, t, x, args):
        return self.flow.vector_field(t, x, args)

    def _fV(self, t, x, V, args):
        return jvp_columns(lambda y: self._f(t, y, args), x, V, self.merge, self.mode)

    def step(self, time, x, u, dt, args):
        del u
        if self.solver is None:
            h = 0.5 * dt
            k1 = self._f(time, x, args)
            k2 = self._f(time + h, x + h * k1, args)
            k3 = self._f(time + h, x + h * k2, args)
            k4 = self._f(time + dt, x + dt * k3, args)
            return x + (dt / 6) * (k1 + 2 * (k2 + k3) + k4)
        term = dfx.ODETerm(lambda t, y, a: self._f(t, y, a))
        return self._solver_step(term, time, x, dt, args)

    def tangent_step(self, time, x, V, u, dt, args):
        del u
        if self.solver is None and V.size > 64:
            h = 0.5 * dt
            k1, K1 = self._fV(time, x, V, args)
            k2, K2 = self._fV(time + h, x + h * k1, V + h * K1, args)
            k3, K3 = self._fV(time + h, x + h * k2, V + h * K2, args)
            k4, K4 = self._fV(time + dt, x + dt * k3, V + dt * K3, args)
            x = x + (dt / 6) * (k1 + 2 * (k2 + k3) + k4)
            V = V + (dt / 6) * (K1 + 2 * (K2 + K3) + K4)
            return x, V
        if self.solver is None:
            # Small systems: state and tangents packed as one (d, 1 + k) array;
            # one array per stage fuses better on CPU (Lorenz: 160 instead of
            # 215 ns per step).
            def F(t, Y):
                fx, JV = self._fV(t, Y[:, 0], Y[:, 1:], args)
                return jnp.concatenate([fx[:, None], JV], axis=1)

            h = 0.5 * dt
            Y = jnp.concatenate([x[:, None], V], axis=1)
            K1 = F(time, Y)
            K2 = F(time + h, Y + h * K1)
            K3 = F(time + h, Y + h * K2)
            K4 = F(time + dt, Y + dt * K3)
            Y = Y + (dt / 6) * (K1 + 2 * (K2 + K3) + K4)
            return Y[:, 0], Y[:, 1:]
        term = dfx.ODETerm(lambda t, y, a: self._fV(t, y[0], y[1], a))
        return self._solver_step(term, time, (x, V), dt, args)

    def _solver_step(self, term, t, y, dt, args):
        # A fresh solver state every step: a cached first-same-as-last stage would
        # be stale after a re-orthonormalization of the tangents.
        solver = self.solver
        assert solver is not None
        state = solver.init(term, t, t + dt, y, args)
        y, _, _, _, _ = solver.step(term, t, t + dt, y, args, state, made_jump=False)
        return y


class TangentMap(AbstractTangentSystem):
    """A map with its linearization `V_{n+1} = DF(n, x_n) V_n`."""

    map: AbstractMap
    merge: bool = eqx.field(static=True, default=False)
    mode: str = eqx.field(static=True, default="forward")

    def next_time(self, time, dt):
        return time + 1

    def step(self, time, x, u, dt, args):
        return self.map.step(time, x, args)

    def tangent_step(self, time, x, V, u, dt, args):
        return jvp_columns(
            lambda z: self.map.step(time, z, args), x, V, self.merge, self.mode
        )


class TangentDrivenMap(AbstractTangentSystem):
    """A driven map with its linearization `V_{n+1} = D_x F(x_n, u_n) V_n`."""

    map: AbstractDrivenMap
    merge: bool = eqx.field(static=True, default=False)
    mode: str = eqx.field(static=True, default="forward")

    def next_time(self, time, dt):
        return time + 1

    def step(self, time, x, u, dt, args):
        return self.map.step(x, u, args)

    def tangent_step(self, time, x, V, u, dt, args):
        return jvp_columns(
            lambda z: self.map.step(z, u, args), x, V, self.merge, self.mode
        )


def tangent_system(
    system: AbstractSystem,
    solver: dfx.AbstractSolver | None,
    merge: bool,
    mode: str = "forward",
) -> AbstractTangentSystem:
    """Wrap a system in its tangent dynamics (`solver` only for flows).

    Whether shared matrix products are merged (`fused_call`) and whether
    tangents are formed in forward or reverse mode are static fields, so that
    they are part of every compilation cache key.
    """
    if isinstance(system, AbstractFlow):
        return TangentFlow(system, solver, merge, mode)
    if isinstance(system, AbstractMap):
        return TangentMap(system, merge, mode)
    if isinstance(system, AbstractDrivenMap):
        return TangentDrivenMap(system, merge, mode)
    raise ValueError(
        f"`system` must be a dynjax flow, map or driven map, got {type(system)}."
    )


# Block drivers: `n` steps inside one `lax.scan`.


def state_block(tangent: AbstractTangentSystem, time, x, us, n: int, dt, args):
    """Advance the state alone `n` steps; returns `(time, x)`."""

    def body(carry, u):
        t, y = carry
        return (tangent.next_time(t, dt), tangent.step(t, y, u, dt, args)), None

    return jax.lax.scan(body, (time, x), us, length=n)[0]


def tangent_block(tangent: AbstractTangentSystem, time, x, V, us, n: int, dt, args):
    """Advance state and tangents `n` steps; returns `(time, x, V)`."""

    def body(carry, u):
        t, y, W = carry
        y, W = tangent.tangent_step(t, y, W, u, dt, args)
        return (tangent.next_time(t, dt), y, W), None

    return jax.lax.scan(body, (time, x, V), us, length=n)[0]


def state_steps(tangent: AbstractTangentSystem, time, x, inputs, s0, n, dt, args):
    """Advance the state alone `n` steps (`n` traced), reading a driven map's
    input `s0 + j` at step `j`; returns `(time, x)`."""

    def body(j, carry):
        t, y = carry
        u = None if inputs is None else input_at(inputs, s0 + j)
        return tangent.next_time(t, dt), tangent.step(t, y, u, dt, args)

    return jax.lax.fori_loop(0, n, body, (time, x))


def tangent_steps(tangent: AbstractTangentSystem, time, x, V, inputs, s0, n, dt, args):
    """Advance state and tangents `n` steps (`n` traced), reading a driven map's
    input `s0 + j` at step `j`; returns `(time, x, V)`."""

    def body(j, carry):
        t, y, W = carry
        u = None if inputs is None else input_at(inputs, s0 + j)
        y, W = tangent.tangent_step(t, y, W, u, dt, args)
        return tangent.next_time(t, dt), y, W

    return jax.lax.fori_loop(0, n, body, (time, x, V))


def block_starts(
    tangent: AbstractTangentSystem,
    time,
    x,
    us,
    n_blocks: int,
    interval: int,
    dt,
    args,
    hold=None,
    n_valid=None,
):
    """Advance the state alone over `n_blocks` blocks of `interval` steps.

    `us` (driven maps) has shape `(n_blocks, interval, m)`. Returns the final
    `(time, x)` and the `(time, x)` at the start of every block. This is the only
    sequential part of the Jacobian method, and the cheapest: no tangents.
    `hold` (bool, `(n_blocks,)`) stops gradients through the state at the
    flagged block starts. With `n_valid` (traced) only the first `n_valid`
    blocks count (`scan_prefix`: a few more may run): the returned `(time, x)`
    is the state after exactly `n_valid` blocks, and rows from `n_valid` on are
    not meaningful.
    """

    def body(carry, xs):
        us_block, hold_j = xs
        t, y = carry
        if hold_j is not None:
            y = jnp.where(hold_j, jax.lax.stop_gradient(y), y)
        return state_block(tangent, t, y, us_block, interval, dt, args), (t, y)

    if n_valid is None:
        return scan(body, (time, x), (us, hold), length=n_blocks)
    if hold is None:
        flags = jnp.zeros((n_blocks,), bool)  # a leaf to scan over
        carry, (ts, xs), n_run = scan_prefix(
            lambda c, xs: body(c, (xs[0], None)), (time, x), (us, flags), n_valid
        )
    else:
        carry, (ts, xs), n_run = scan_prefix(body, (time, x), (us, hold), n_valid)
    # The state after exactly `n_valid` blocks: the start of block `n_valid`,
    # or the carry if no block ran past it.
    last = jnp.minimum(n_valid, n_blocks - 1)
    short = n_valid < n_run
    end = (jnp.where(short, ts[last], carry[0]), jnp.where(short, xs[last], carry[1]))
    return end, (ts, xs)


def block_propagators(
    tangent: AbstractTangentSystem, times, xs, us, interval: int, dt, args
):
    """The `(d, d)` Jacobian of `interval` steps from each block start.

    Each block's propagator depends only on its start, so all blocks are
    computed at once (`vmap` over blocks, `jax.jacfwd` over the state): the
    tangent work, sequential in the matrix-free method, becomes one vectorized
    computation. For a Runge-Kutta step the Jacobian of the step is the same
    scheme applied to the variational equation, so this is the matrix-free
    computation with the identity as the tangent block.

    On CPU, for `d <= 4`, the blocks are the trailing axis (`vmap_last`), which
    XLA vectorizes: Lorenz, 10^4 blocks of 10 RK4 steps, 3.5 ms against 6.5 ms
    with `jax.vmap` on the 2-core machine of `benchmarks/README.md`. A system
    whose step uses a primitive without a `vmap_last` rule, a host callback, or
    a program above `vmap_last`'s cost bound takes `jax.vmap`; one that
    `jax.vmap` cannot batch either (a `jax.pure_callback` without a
    `vmap_method`) takes `jax.lax.map`, one block after another. Each fallback
    only changes how the blocks are laid out, never the numbers.
    """

    d = xs.shape[1]
    reverse = tangent.mode == "reverse"
    if d <= _BATCH_LAST_MAX_D and jax.default_backend() == "cpu" and not reverse:
        try:
            return _propagators_batch_last(tangent, times, xs, us, interval, dt, args)
        except Unsupported:
            pass

    def one(t, x, u):
        if isinstance(tangent, TangentFlow) and tangent.solver is not None:
            # A diffrax step is not forward-differentiable (its stage loop has a
            # custom vjp), so integrate the variational equation from the identity.
            eye = jnp.eye(x.shape[0], dtype=x.dtype)
            return tangent_block(tangent, t, x, eye, u, interval, dt, args)[2]
        step = lambda y: state_block(tangent, t, y, u, interval, dt, args)[1]  # noqa: E731
        return (jax.jacrev if reverse else jax.jacfwd)(step)(x)

    try:
        return jax.vmap(one)(times, xs, us)
    except Exception:
        # (If `one` itself is at fault, `lax.map` raises the same error again.)
        return jax.lax.map(lambda a: one(*a), (times, xs, us))


# Up to this state size the propagators are formed with the batch axis last
# (`vmap_last`), where XLA's CPU code vectorizes across blocks.
_BATCH_LAST_MAX_D = 4


def _propagators_batch_last(tangent, times, xs, us, interval, dt, args):
    """`block_propagators` with the blocks as the trailing (contiguous) axis.

    Integrates the tangent block from the identity, `interval` steps of
    `tangent_step` evaluated by `vmap_last`: the same computation as `jax.jacfwd`
    of the steps, laid out as `(d, d, blocks)`. Raises `Unsupported` if the
    system's step uses a primitive without a `vmap_last` rule.
    """
    n, d = xs.shape
    dtype = xs.dtype
    u_leaves, u_tree = jax.tree.flatten(us)
    step = vmap_last(
        lambda t, x, V, *u: tangent.tangent_step(
            t, x, V, jax.tree.unflatten(u_tree, u), dt, args
        ),
        (True,) * (3 + len(u_leaves)),
    )
    times = jnp.broadcast_to(jnp.asarray(times), (n,))
    V = jnp.broadcast_to(jnp.eye(d, dtype=dtype)[:, :, None], (d, d, n))
    # (blocks, interval, ...) -> (interval, ..., blocks): steps lead, blocks last.
    u_steps = [jnp.moveaxis(a, (0, 1), (-1, 0)) for a in u_leaves]

    def body(carry, u):
        t, x, V = carry
        x, V = step(t, x, V, *u)
        return (tangent.next_time(t, dt), x, V), None

    (_, _, V), _ = jax.lax.scan(body, (times, xs.T, V), u_steps, length=interval)
    return jnp.moveaxis(V, -1, 0)
