"""Jacobians of a system's evolution law, in forward or reverse mode.

JAX differentiates most functions in both modes, but not all:

- **forward mode** (`jax.jvp`, `jax.jacfwd`) cannot go through a `jax.custom_vjp`
  function (only its reverse rule is defined), nor through a `jax.pure_callback`
  or `io_callback` without a `jax.custom_jvp` around it;
- **reverse mode** (`jax.vjp`, `jax.grad`, `jax.jacrev`) cannot go through a
  `lax.while_loop` (nor a `lax.fori_loop` with traced bounds, which is one), nor
  through a callback.

`differentiation_blockers` finds these constructs by tracing the function once
(`jax.make_jaxpr`) and walking its jaxpr, following only the values that depend on
the state (or on a closed-over value that is being differentiated), so that a
`custom_vjp` or a `while_loop` that acts on constants only does not count. The
Jacobian verbs then use forward mode where possible and reverse mode where forward
mode is impossible (`differentiation_mode`), and raise one `ValueError` naming the
construct and the alternatives where neither works. `is_reverse_differentiated` and
`check_reverse_differentiable` let a verb refuse, with a clear message, to be
reverse-differentiated through a `while_loop`, which JAX would otherwise report
only when the gradient is evaluated, from deep inside its transpose machinery.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax._src import core, source_info_util
from jax._src.interpreters import ad, batching, partial_eval as pe
from jaxtyping import Array, Float, PyTree

from .._custom_types import Args, RealScalarLike, StateLike
from ._base import AbstractDrivenMap, AbstractFlow, AbstractMap, AbstractSystem
from ._checks import conform


Mode = Literal["forward", "reverse"]

# `jax.vjp` under direct linearization (the default in recent JAX); without it,
# reverse mode is a JVP whose tangents are staged out (see `_is_differentiated`).
_LinearizeTracer = getattr(ad, "LinearizeTracer", ())

# A `custom_vjp` function defines only its reverse rule.
_CUSTOM_VJP = frozenset({"custom_vjp_call", "custom_vjp_call_jaxpr"})
# Callbacks have no derivative rule at all (forward or reverse).
_CALLBACKS = frozenset({"pure_callback", "io_callback"})
# Primitives differentiated by their own rule rather than through their body: a
# `custom_jvp` (both modes use the rule; whether the rule is transposable cannot be
# seen in the jaxpr) and `lax.custom_linear_solve`.
_OWN_RULE = frozenset({"custom_jvp_call", "linear_solve"})

_BOUND_LOOP = (
    "a `lax.fori_loop` with static Python-int bounds, a `lax.scan`, or "
    "`equinox.internal.while_loop(cond, body, init, max_steps=N, "
    'kind="checkpointed")` (reverse mode only) or `kind="bounded"` (both modes)'
)
_WHILE_FIX = (
    "Alternatives: forward mode (`jax.jacfwd`, `jax.jvp`) works through while "
    "loops and is the cheaper choice for a few parameters; or bound the loop: "
    f"{_BOUND_LOOP}."
)
_CALLBACK_FIX = (
    "Give the callback a derivative rule with `jax.custom_jvp`, which serves both "
    "forward and reverse mode."
)
_CUSTOM_VJP_FIX = (
    "Use reverse mode, or give the function a forward rule with `jax.custom_jvp` "
    "(which serves both modes) instead of its `jax.custom_vjp`."
)


class _Blocker(NamedTuple):
    kind: Literal["custom_vjp", "callback", "while"]
    construct: str  # what and where, e.g. "a `jax.custom_vjp` function `f` (at ...)"
    fix: str  # how to make this mode possible


def _where(eqn) -> str:
    try:
        return f" (at {source_info_util.summarize(eqn.source_info)})"
    except Exception:  # source information is best effort
        return ""


def _custom_vjp_name(eqn) -> str:
    jaxpr = eqn.params.get("call_jaxpr")
    info = getattr(getattr(jaxpr, "jaxpr", jaxpr), "debug_info", None)
    src = getattr(info, "func_src_info", None)
    return f" `{src.split(' ')[0]}`" if src else ""


def _sub_jaxprs(params) -> list[core.Jaxpr]:
    out = []
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, core.ClosedJaxpr):
                out.append(item.jaxpr)
            elif isinstance(item, core.Jaxpr):
                out.append(item)
    return out


def _or(a: Sequence[bool], b: Sequence[bool]) -> list[bool]:
    return [x or y for x, y in zip(a, b, strict=True)]


class _Walk:
    """Dependence analysis of a jaxpr that records the first blocker of each mode."""

    def __init__(self):
        self.forward: _Blocker | None = None
        self.reverse: _Blocker | None = None

    def block_forward(self, blocker: _Blocker):
        if self.forward is None:
            self.forward = blocker

    def block_reverse(self, blocker: _Blocker):
        if self.reverse is None:
            self.reverse = blocker

    def jaxpr(
        self,
        jaxpr: core.Jaxpr,
        dependent: Sequence[bool],
        dependent_consts: Sequence[bool] = (),
    ) -> list[bool]:
        """Walks `jaxpr`; returns which outputs depend on the dependent inputs."""
        dep = {v for v, d in zip(jaxpr.invars, dependent, strict=True) if d}
        dep |= {v for v, d in zip(jaxpr.constvars, dependent_consts) if d}
        for eqn in jaxpr.eqns:
            d_in = [not isinstance(v, core.Literal) and v in dep for v in eqn.invars]
            if any(d_in):
                d_out = self.eqn(eqn, d_in)
                dep |= {v for v, d in zip(eqn.outvars, d_out, strict=True) if d}
        return [not isinstance(v, core.Literal) and v in dep for v in jaxpr.outvars]

    def eqn(self, eqn, d_in: list[bool]) -> list[bool]:
        name = eqn.primitive.name
        params = eqn.params
        everything = [True] * len(eqn.outvars)
        if name in _CUSTOM_VJP:
            construct = f"a `jax.custom_vjp` function{_custom_vjp_name(eqn)}"
            self.block_forward(
                _Blocker("custom_vjp", construct + _where(eqn), _CUSTOM_VJP_FIX)
            )
            return everything
        if name in _CALLBACKS:
            construct = f"a `jax.{name}` without a `jax.custom_jvp` rule{_where(eqn)}"
            blocker = _Blocker("callback", construct, _CALLBACK_FIX)
            self.block_forward(blocker)
            self.block_reverse(blocker)
            return everything
        if name in _OWN_RULE:
            return everything
        if name == "while":
            return self.while_loop(eqn, d_in)
        if name == "scan":
            return self.scan(eqn, d_in)
        if name == "cond":
            d_out = [False] * len(eqn.outvars)
            for branch in params["branches"]:
                d_out = _or(d_out, self.jaxpr(branch.jaxpr, d_in[1:]))
            return d_out
        subs = _sub_jaxprs(params)
        if (
            len(subs) == 1
            and len(subs[0].invars) == len(eqn.invars)
            and len(subs[0].outvars) == len(eqn.outvars)
        ):
            # A call (jit, closed_call, checkpoint, ...): arguments map one to one.
            return self.jaxpr(subs[0], d_in)
        for sub in subs:  # anything else with a body: conservatively, all of it
            self.jaxpr(sub, [True] * len(sub.invars))
        return everything

    def while_loop(self, eqn, d_in: list[bool]) -> list[bool]:
        params = eqn.params
        n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
        body_consts = d_in[n_cond : n_cond + n_body]
        carry = d_in[n_cond + n_body :]
        body = params["body_jaxpr"].jaxpr
        while True:  # the carry's dependence, to a fixed point
            new = _or(carry, self.jaxpr(body, body_consts + carry))
            if new == carry:
                break
            carry = new
        # The predicate is evaluated on primal values only: it is never differentiated.
        if any(carry):
            construct = (
                f"a `lax.while_loop` or `lax.fori_loop` with traced bounds{_where(eqn)}"
            )
            self.block_reverse(_Blocker("while", construct, _WHILE_FIX))
        return carry

    def scan(self, eqn, d_in: list[bool]) -> list[bool]:
        params = eqn.params
        n_consts, n_carry = params["num_consts"], params["num_carry"]
        consts = d_in[:n_consts]
        carry = d_in[n_consts : n_consts + n_carry]
        xs = d_in[n_consts + n_carry :]
        body = params["jaxpr"].jaxpr
        while True:
            out = self.jaxpr(body, consts + carry + xs)
            new = _or(carry, out[:n_carry])
            if new == carry:
                break
            carry = new
        return carry + out[n_carry:]


def _blockers(fn: Callable, x: PyTree) -> tuple[_Blocker | None, _Blocker | None]:
    struct = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), x
    )
    closed = jax.make_jaxpr(fn)(struct)
    walk = _Walk()
    jaxpr = closed.jaxpr
    # Closed-over values that an enclosing `jax.jvp`/`jax.grad` differentiates (the
    # system's parameters, say) are sources of derivatives too.
    consts = [_is_differentiated(c, reverse_only=False) for c in closed.consts]
    walk.jaxpr(jaxpr, [True] * len(jaxpr.invars), consts)
    return walk.forward, walk.reverse


def differentiation_blockers(fn: Callable, x: PyTree) -> tuple[str | None, str | None]:
    """The constructs in `fn` that make forward or reverse mode impossible at `x`.

    Traces `fn` once with `jax.make_jaxpr` at the shape and dtype of `x` (nothing is
    evaluated or cached) and walks its jaxpr, sub-jaxprs included (`jit`, `cond`,
    `scan`, `while`, `checkpoint`, ...), following the values that depend on `x` or
    on a closed-over value that an enclosing transformation differentiates.

    - Forward mode is impossible through a `jax.custom_vjp` function, a
        `jax.pure_callback` or a `jax.experimental.io_callback`.
    - Reverse mode is impossible through a `lax.while_loop` (or a `lax.fori_loop`
        with traced bounds, which lowers to one) whose carry depends on `x`, and
        through the callbacks.

    The bodies of `jax.custom_jvp` and `jax.custom_vjp` functions and of
    `lax.custom_linear_solve` are not searched: their own rules are what JAX
    differentiates. Not detected: a `custom_jvp` rule that is not transposable
    (reverse mode fails at transpose time) and a `custom_vjp` rule that fails.

    **Arguments:**

    - `fn`: a function of one argument.
    - `x`: an argument of `fn` (array or pytree; only shapes and dtypes are used).

    **Returns:**

    `(forward, reverse)`: for each mode, `None` if JAX can differentiate `fn` in
    it, else a description of the first blocking construct with its source
    location, e.g. ``"a `jax.custom_vjp` function `clipped` (at model.py:12 (f))"``.
    """
    forward, reverse = _blockers(fn, x)
    return (
        None if forward is None else forward.construct,
        None if reverse is None else reverse.construct,
    )


def _neither(what: str, forward: _Blocker, reverse: _Blocker) -> ValueError:
    if forward == reverse:
        return ValueError(
            f"{what}: JAX cannot differentiate the function in either forward or "
            f"reverse mode, because it contains {forward.construct}. {forward.fix}"
        )
    if reverse.kind == "while":
        reverse_fix = f"replace the loop by {_BOUND_LOOP}."
    else:
        reverse_fix = reverse.fix
    return ValueError(
        f"{what}: JAX cannot differentiate the function in either mode: forward "
        f"mode (`jax.jvp`) cannot go through {forward.construct}, and reverse mode "
        f"(`jax.vjp`) cannot go through {reverse.construct}. Make one mode possible. "
        "For forward mode: give the first a `jax.custom_jvp` rule. For reverse "
        f"mode: {reverse_fix}"
    )


def differentiation_mode(
    fn: Callable,
    x: PyTree,
    mode: Mode | None = None,
    *,
    what: str = "dynjax",
) -> Mode:
    """Chooses (or validates) the autodiff mode for the Jacobian of `fn` at `x`.

    `mode=None` chooses `"forward"` unless `fn` contains a construct that forward
    mode cannot go through (`differentiation_blockers`), and then `"reverse"`.
    An explicit `mode` is returned as given if it is possible.

    Runs at trace time and traces `fn` once; a verb calls it once and passes the
    result to `tangent_columns`.

    **Arguments:**

    - `fn`: a function of one argument.
    - `x`: an argument of `fn` (array or pytree; only shapes and dtypes are used).
    - `mode`: `None`, `"forward"` or `"reverse"`.
    - `what`: the name used in error messages (e.g. `"dynjax.lyapunov_spectrum"`).

    **Returns:**

    `"forward"` or `"reverse"`.

    **Raises:**

    `ValueError` if `mode` is not one of the three; if neither mode is possible
    (naming both constructs and how to make one mode possible); if the requested
    mode is impossible (naming the construct; pass the other mode or `None`).
    """
    if mode not in (None, "forward", "reverse"):
        raise ValueError(
            f"{what}: `mode` must be None (automatic), 'forward' or 'reverse', got "
            f"{mode!r}."
        )
    forward, reverse = _blockers(fn, x)
    if forward is not None and reverse is not None:
        raise _neither(what, forward, reverse)
    if mode == "forward" and forward is not None:
        raise ValueError(
            f"{what}: forward-mode differentiation (`jax.jvp`) cannot go through "
            f"{forward.construct}. Pass `mode='reverse'` (or `mode=None` to choose "
            f"automatically), or: {forward.fix}"
        )
    if mode == "reverse" and reverse is not None:
        raise ValueError(
            f"{what}: reverse-mode differentiation (`jax.vjp`) cannot go through "
            f"{reverse.construct}. Pass `mode='forward'` (or `mode=None` to choose "
            f"automatically). {reverse.fix}"
        )
    if mode is None:
        mode = "forward" if forward is None else "reverse"
    return mode


def tangent_columns(
    fn: Callable[[Float[Array, " d"]], Float[Array, " m"]],
    x: Float[Array, " d"],
    V: Float[Array, "d k"],
    mode: Mode | None = None,
    *,
    what: str = "dynjax",
) -> tuple[Float[Array, " m"], Float[Array, "m k"]]:
    """`fn(x)` and `J @ V`, with `J = Dfn(x)` the Jacobian, in forward or reverse mode.

    - `mode="forward"`: `jax.jvp` vmapped over the k columns of `V`, the primal
        unbatched (evaluated once); `J` is never formed. Cost: about k
        Jacobian-vector products.
    - `mode="reverse"`: one `jax.vjp`, its pullback vmapped over the m rows of the
        identity (as `jax.jacrev` does) to form `J`, then `J @ V` at the highest
        matmul precision. Cost: about m vector-Jacobian products plus an
        `(m, d) x (d, k)` product, whatever k is. For functions that forward mode
        cannot go through (a `jax.custom_vjp`).
    - `mode=None`: forward unless `fn` contains a construct that forward mode
        cannot go through, then reverse (`differentiation_mode`, which traces `fn`
        once more; a verb that calls this in a loop should resolve the mode once
        and pass it).

    Both modes give the same matrix up to rounding. An explicit `mode` is not
    checked: use `differentiation_mode` first for a clear error.

    **Arguments:**

    - `fn`: a function from shape `(d,)` to shape `(m,)`.
    - `x`: the point, shape `(d,)`.
    - `V`: the tangent vectors as columns, shape `(d, k)`.
    - `mode`: `None`, `"forward"` or `"reverse"`.
    - `what`: the name used in error messages.

    **Returns:**

    `(fn(x), J @ V)`, shapes `(m,)` and `(m, k)`.

    **Raises:**

    `ValueError` from `differentiation_mode` when `mode=None` and neither mode is
    possible, or `mode` is not one of the three.
    """
    if mode is None:
        mode = differentiation_mode(fn, x, None, what=what)
    if mode == "forward":
        columns = jax.vmap(
            lambda v: jax.jvp(fn, (x,), (v,)), in_axes=1, out_axes=(None, 1)
        )
        return columns(V)
    if mode == "reverse":
        y, pullback = jax.vjp(fn, x)
        J = jax.vmap(lambda w: pullback(w)[0])(jnp.eye(y.shape[0], dtype=y.dtype))
        return y, jnp.matmul(J, V, precision=lax.Precision.HIGHEST)
    raise ValueError(
        f"{what}: `mode` must be None (automatic), 'forward' or 'reverse', got "
        f"{mode!r}."
    )


def _is_differentiated(leaf: Any, reverse_only: bool) -> bool:
    """Whether `leaf` is a tracer of a (reverse-mode) differentiation, looking
    through batching and nested differentiation."""
    if not isinstance(leaf, core.Tracer):
        return False
    if isinstance(leaf, _LinearizeTracer):  # jax.vjp/grad/jacrev/linearize
        return True
    if isinstance(leaf, ad.JVPTracer):
        # Without direct linearization, reverse mode is a JVP whose tangents are
        # being partially evaluated (staged out for transposition).
        if not reverse_only or isinstance(leaf.tangent, pe.JaxprTracer):
            return True
        return _is_differentiated(leaf.primal, reverse_only) or _is_differentiated(
            leaf.tangent, reverse_only
        )
    if isinstance(leaf, batching.BatchTracer):
        return _is_differentiated(leaf.val, reverse_only)
    return False


def _closed_over(leaf, depth: int = 3) -> list:
    """The values a function closes over (and, a few levels down, those of the
    functions it closes over): a system written as `Flow(lambda t, x, p: -a * x)`
    hides a differentiated `a` there."""
    cells = getattr(leaf, "__closure__", None) or ()
    values = []
    for cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(value) and depth > 0:
            values += _closed_over(value, depth - 1)
        else:
            values += jax.tree.leaves(value)
    return values


def tracer_kinds(tree: PyTree) -> set[str]:
    """The transformations tracing `tree`'s leaves (and the values its functions
    close over): "batch", "forward", "reverse", "trace" (an outer `jit` or other
    staging)."""
    kinds = set()
    leaves = jax.tree.leaves(tree)
    leaves += [v for leaf in leaves if callable(leaf) for v in _closed_over(leaf)]
    for leaf in leaves:
        while isinstance(leaf, core.Tracer):
            if isinstance(leaf, batching.BatchTracer):
                kinds.add("batch")
                leaf = leaf.val
            elif _is_differentiated(leaf, reverse_only=True):
                kinds.add("reverse")
                leaf = leaf.primal
            elif isinstance(leaf, ad.JVPTracer):
                kinds.add("forward")
                leaf = leaf.primal
            else:
                kinds.add("trace")
                break
    return kinds


def is_reverse_differentiated(tree: PyTree) -> bool:
    """Whether some leaf of `tree` is being differentiated in reverse mode.

    A verb calls this on its inputs (system, state, `args`) at its Python entry,
    before any `jit`: in JAX 0.10, `jax.grad`, `jax.vjp`, `jax.jacrev` (and
    `jax.hessian`) reach it with `LinearizeTracer` leaves, `jax.jvp` and
    `jax.jacfwd` with `JVPTracer` leaves, whose tangents may be batched. Batching
    and nesting are looked through: `vmap` of `grad`, `grad` of `vmap`, `jvp` of
    `grad`, `grad` of `jvp` are all detected.

    Limits:

    - only what the leaves show: under `jax.grad(jax.jit(f))` or
        `jax.grad(eqx.filter_jit(f))` the verb is traced inside `jit` with plain
        tracers and this returns `False` (JAX's own error then appears when the
        gradient is evaluated). Call it outside the verb's own `jit`;
    - `jax.linearize` (forward mode, staged) is indistinguishable from `jax.vjp`
        and returns `True`, although `jax.linearize` alone works through while
        loops;
    - tracers of other transformations (`shard_map`, ...) are not looked into.

    **Arguments:**

    - `tree`: any pytree (functions among its leaves are looked into for the
        values they close over; other non-array leaves are ignored).

    **Returns:**

    A Python `bool`.
    """
    return "reverse" in tracer_kinds(tree)


def check_reverse_differentiable(fn: Callable, x: PyTree, what: str) -> None:
    """Raises a clear error if reverse mode cannot go through `fn`.

    For a verb that `is_reverse_differentiated` says is being reverse-differentiated:
    JAX's own error for a `lax.while_loop` under `jax.grad` appears only when the
    gradient is evaluated, from inside its transpose machinery; this raises at the
    verb's entry instead, naming the construct (with its source location) and the
    alternatives. Traces `fn` once (`differentiation_blockers`).

    **Arguments:**

    - `fn`: the function the verb differentiates, of one argument (e.g.
        `lambda y: system.vector_field(t, y, args)`).
    - `x`: an argument of `fn` (only shapes and dtypes are used).
    - `what`: the verb, for the message (e.g. `"dynjax.lyapunov_spectrum"`).

    **Raises:**

    `ValueError` if `fn` contains a `lax.while_loop` (or `lax.fori_loop` with
    traced bounds) or a callback whose result depends on `x` or on a value being
    differentiated. Alternatives named for a while loop: forward mode
    (`jax.jacfwd`/`jax.jvp`, which works through while loops and suits a few
    parameters), a `fori_loop` with static Python-int bounds or `lax.scan`, or
    `equinox.internal.while_loop(..., max_steps=N, kind="checkpointed")`.
    """
    _, reverse = _blockers(fn, x)
    if reverse is None:
        return
    reason = ""
    if reverse.kind == "while":
        reason = (
            " JAX's reverse mode (`jax.grad`) cannot go through a `lax.while_loop` or "
            "a `lax.fori_loop` with traced bounds: it would have to store every "
            "iteration of a loop of unknown length."
        )
    raise ValueError(
        f"{what} is being differentiated in reverse mode (`jax.grad`, `jax.vjp`, "
        f"`jax.jacrev`), but its function contains {reverse.construct}.{reason} "
        f"{reverse.fix}"
    )


def dense_jacobian(fn: Callable, x, what: str = "dynjax"):
    """The dense Jacobian of `fn` at `x`: `jax.jacfwd`, or `jax.jacrev` where
    forward mode cannot go through `fn` (`differentiation_mode`)."""
    mode = differentiation_mode(fn, x, None, what=what)
    return (jax.jacrev if mode == "reverse" else jax.jacfwd)(fn)(x)


def jacobian(
    system: AbstractSystem,
    x: StateLike,
    t: RealScalarLike = 0.0,
    *,
    u=None,
    args: Args = None,
    mode: Mode | None = None,
) -> Float[Array, "d d"]:
    """The d x d Jacobian of a system's evolution law at a state.

    For a flow this is `Df(t, x) = d f / d x`; for a map `DF(n, x)` with `n = t`;
    for a driven map `DF(x, u)` at the input `u`.

    By default it is computed in forward mode with `jax.jacfwd` (d
    Jacobian-vector products, which suits square Jacobians), and in reverse mode
    with `jax.jacrev` (d vector-Jacobian products) when the evolution law contains
    a construct that forward mode cannot go through: a `jax.custom_vjp` function,
    say. The choice is made at trace time by tracing the law once and reading its
    jaxpr; the two modes give the same matrix up to rounding.

    **Arguments:**

    - `system`: a flow, map or driven map.
    - `x`: the state, of shape `(d,)`.
    - `t`: the time (flows) or iteration index (maps). Ignored by driven maps.
    - `u`: the input, required for a driven map.
    - `args`: run-time arguments passed to the system.
    - `mode`: `None` (default: forward mode where possible, else reverse mode),
        `"forward"` (`jax.jacfwd`) or `"reverse"` (`jax.jacrev`).

    **Returns:**

    The Jacobian `J[i, j] = d(dx_i/dt) / d x_j` (or `d x_{n+1, i} / d x_{n, j}`),
    of shape `(d, d)` and the state's dtype.

    **Raises:**

    `ValueError` (at trace time) if a driven map is given no `u`; if `mode` is not
    one of the three; if the requested mode is impossible (forward mode through a
    `jax.custom_vjp` function or a callback; reverse mode through a
    `lax.while_loop`, a `lax.fori_loop` with traced bounds, or a callback), naming
    the construct and its source line; if neither mode is possible, naming both
    constructs and how to make one mode possible (e.g. a `jax.custom_jvp` rule).
    `TypeError` if `system` is not a dynjax system.
    """
    if isinstance(system, AbstractDrivenMap) and u is None:
        raise ValueError(
            "The Jacobian of a driven map depends on the input: pass `u=` with "
            "the input at which to linearize."
        )
    if u is not None:
        u = jax.tree.map(jnp.asarray, u)
    system, x, args = conform(system, x, verb="jacobian", args=args, u=u, t=t, name="x")
    if isinstance(system, AbstractFlow):
        fn = lambda y: system.vector_field(t, y, args)  # noqa: E731
    elif isinstance(system, AbstractMap):
        fn = lambda y: system.step(t, y, args)  # noqa: E731
    elif isinstance(system, AbstractDrivenMap):
        fn = lambda y: system.step(y, u, args)  # noqa: E731
    else:
        raise TypeError(
            f"`system` must be a dynjax flow, map or driven map, got {type(system)}."
        )
    mode = differentiation_mode(fn, x, mode, what="dynjax.jacobian")
    return (jax.jacfwd if mode == "forward" else jax.jacrev)(fn)(x)
