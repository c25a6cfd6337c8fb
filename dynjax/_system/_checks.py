"""One entry check for every verb: the state, the dtype policy, the output structure.

Every verb that evaluates a user's system calls `conform` once, at trace time,
before compiling anything. It

1. validates the initial state (`check_state`);
2. applies the dtype policy: **the state's dtype wins**. The floating-point
   leaves of the system and of `args` are cast to the state's dtype, so that a
   float32 state runs in float32 even when the parameters are float64 (JAX's
   promotion would otherwise turn the state into float64 after one step and
   break the compiled loops). Where this drops precision (float64 parameters, a
   float32 state) a warning says so; the reverse (float32 parameters, a float64
   state) computes in float64 with the parameters' float32 values, and needs no
   warning;
3. evaluates the system's evolution function once abstractly (`jax.eval_shape`)
   and checks that it returns one array of the state's shape and dtype, with one
   message that says what it returned, what was expected and how to fix it.
"""

import os
import sys
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._base import AbstractDrivenMap, AbstractFlow, AbstractMap, AbstractSystem


def _library_dirs() -> tuple[str, ...]:
    import importlib

    dirs = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    for name in ("jax", "jaxlib", "equinox", "diffrax", "optimistix", "lineax"):
        module = sys.modules.get(name) or importlib.import_module(name)
        dirs.append(os.path.dirname(os.path.abspath(module.__file__)))
    return tuple(d + os.sep for d in dirs)


def user_stacklevel() -> int:
    """The `stacklevel` for `warnings.warn` that points at the user's code.

    Counted from the function that calls `warnings.warn` (which must call this
    function directly): the first frame outside dynjax and the JAX libraries it
    runs under (jax, equinox, diffrax, ...), so that a warning raised while a
    verb is traced inside `jit` still names the user's line.
    """
    skip = _library_dirs()
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        skip
    ):
        frame = frame.f_back
        level += 1
    return level


def warn_if_float32(verb: str, dtype=None) -> None:
    """Warn (at trace time) that `dynjax.<verb>` runs in float32.

    `dtype` is the dtype the computation runs in (the state's); without it, the
    default float dtype (float32 unless `jax_enable_x64` is on).
    """
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).bits >= 64:
        return
    if jax.config.read("jax_enable_x64"):
        cause = "the state is float32"
        fix = "Pass a float64 state"
    else:
        cause = "`jax_enable_x64` is off"
        fix = "Enable float64 with `jax.config.update('jax_enable_x64', True)`"
    warnings.warn(
        f"dynjax.{verb} runs in {dtype.name} because {cause}; its results may be "
        f"accurate to only a few digits. {fix} for reliable values.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def check_state(x0, d: int | None, name: str = "x0"):
    """Validate a state: structure at trace time, finiteness at run time.

    Returns `x0` as a 1-D inexact array (integers become the default float).
    Raises `ValueError` for a wrong shape or, for a concrete state, a non-finite
    value; under a trace a non-finite value raises `EquinoxRuntimeError` when
    the computation runs.
    """
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.inexact):
        x0 = x0.astype(jnp.result_type(float))
    if x0.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D state vector of shape (d,), got shape {x0.shape}. "
            "dynjax systems act on one state; use `eqx.filter_vmap` to batch over "
            "many initial conditions."
        )
    if d is not None and x0.shape[0] != d:
        raise ValueError(
            f"`{name}` has dimension {x0.shape[0]} but the system has dimension d={d}. "
            f"Pass a state of shape ({d},)."
        )
    message = f"`{name}` contains non-finite values (NaN or inf); pass a finite state."
    return check_finite(x0, message)


def check_finite(x, message: str):
    """`x` checked to be finite: a concrete value here (`ValueError`), so that no
    run-time check (a host callback, which keeps a program out of JAX's
    persistent compilation cache) is compiled into the verb; a traced one with
    `eqx.error_if` (`EquinoxRuntimeError` when the computation runs)."""
    if isinstance(x, jax.core.Tracer):
        return eqx.error_if(x, jnp.any(~jnp.isfinite(x)), message)
    if not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(message)
    return x


def _is_float_leaf(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.floating)) and jnp.issubdtype(
        jnp.result_type(leaf), jnp.floating
    )


def cast_floats(tree, dtype):
    """Cast the floating-point array leaves of `tree` to `dtype`.

    Returns `(tree, wider)`, where `wider` names the dtypes of leaves that were
    wider than `dtype` (empty if nothing lost precision).
    """
    dtype = jnp.dtype(dtype)
    wider = set()

    def cast(leaf):
        if not _is_float_leaf(leaf):
            return leaf
        leaf_dtype = jnp.result_type(leaf)
        if leaf_dtype == dtype:
            return leaf
        if jnp.finfo(leaf_dtype).bits > jnp.finfo(dtype).bits:
            wider.add(jnp.dtype(leaf_dtype).name)
        return jnp.asarray(leaf).astype(dtype)

    return jax.tree.map(cast, tree), sorted(wider)


def _system_name(system) -> str:
    return type(system).__name__


def _describe(out) -> str:
    if isinstance(out, jax.ShapeDtypeStruct):
        return f"an array of shape {out.shape} and dtype {out.dtype.name}"
    leaves = jax.tree.leaves(out)
    kind = type(out).__name__
    return f"a {kind} of {len(leaves)} array(s)"


def evolution_spec(system: AbstractSystem, x, *, u=None, t=None, args=None):
    """`(what, fn)`: the name and a one-argument closure of the evolution law."""
    name = _system_name(system)
    if isinstance(system, AbstractFlow):
        t = jnp.zeros((), x.dtype) if t is None else t
        return f"{name}.vector_field(t, x, args)", lambda y: system.vector_field(
            t, y, args
        )
    if isinstance(system, AbstractMap):
        n = jnp.zeros((), jnp.int32) if t is None else t
        return f"{name}.step(n, x, args)", lambda y: system.step(n, y, args)
    if isinstance(system, AbstractDrivenMap):
        return f"{name}.step(x, u, args)", lambda y: system.step(y, u, args)
    raise ValueError(
        f"`system` must be a dynjax flow, map or driven map (an `AbstractFlow`, "
        f"`AbstractMap` or `AbstractDrivenMap`), got {type(system).__name__}."
    )


def check_output(system: AbstractSystem, x, *, u=None, t=None, args=None) -> None:
    """Check at trace time that the evolution law maps a state to one state.

    Evaluates the vector field (flows) or step (maps) abstractly with
    `jax.eval_shape` at `x` and raises one `ValueError` if it does not return a
    single array of `x`'s shape and dtype. An exception raised inside the user's
    function propagates with a note naming the call.
    """
    what, fn = evolution_spec(system, x, u=u, t=t, args=args)
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    try:
        out = jax.eval_shape(fn, spec)
    except Exception as e:
        e.add_note(
            f"(raised by dynjax while evaluating {what} for a state of shape "
            f"{x.shape} and dtype {x.dtype.name})"
        )
        raise
    expected = f"an array of shape {x.shape} and dtype {x.dtype.name} (the state's)"
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(
            f"{what} returned {_describe(out)}; it must return {expected}. "
            "Stack the components into one array, e.g. `jnp.stack([dx, dy])`."
        )
    if out.shape != x.shape:
        if out.shape == () and x.shape == (1,):
            fix = "Return `jnp.atleast_1d(value)` (or `jnp.array([value])`)."
        elif out.size == x.size:
            fix = f"Reshape the result with `.reshape({x.shape[0]})`."
        else:
            fix = (
                f"The state has d={x.shape[0]} components, so the function must "
                f"return {x.shape[0]} values; check the system's dimension and the "
                "initial state."
            )
        raise ValueError(
            f"{what} returned {_describe(out)}; expected {expected}. {fix}"
        )
    if out.dtype != x.dtype:
        if not jnp.issubdtype(out.dtype, jnp.floating):
            fix = "Return floating-point values (e.g. `x.dtype` arrays)."
        else:
            fix = (
                "Its parameters were cast to the state's dtype, so a constant inside "
                "the function (a closed-over array, a `jnp.array(...)` with an "
                "explicit dtype) has another precision: create it with "
                "`dtype=x.dtype`, or pass the initial state in "
                f"{out.dtype.name}."
            )
        raise ValueError(
            f"{what} returned {_describe(out)}; expected {expected}. {fix}"
        )


_CHECKED: dict = {}


def _structure_key(tree):
    """A hashable key of `tree`'s structure: the tree definition, the shape and
    dtype of every array leaf, and every other leaf itself (functions, static
    values). `None` if some leaf is unhashable."""
    leaves, treedef = jax.tree.flatten(tree)
    key = [treedef]
    for leaf in leaves:
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            key.append((np.shape(leaf), jnp.result_type(leaf)))
        elif isinstance(leaf, jax.core.Tracer):
            key.append((leaf.shape, leaf.dtype))
        else:
            try:
                hash(leaf)
            except TypeError:
                return None
            key.append(leaf)
    return tuple(key)


def _check_output_cached(system, x, u, t, args):
    # Once per structure (shapes, dtypes, functions, static fields): repeated
    # calls of a verb neither re-trace the user's function nor pay for an
    # abstract evaluation (a dictionary look-up, tens of microseconds).
    key = _structure_key((system, x, u, t, args))
    if key is not None and key in _CHECKED:
        return
    check_output(system, x, u=u, t=t, args=args)
    if key is not None:
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        _CHECKED[key] = True


def conform(
    system: AbstractSystem,
    x0,
    *,
    verb: str,
    args=None,
    u=None,
    t=None,
    name: str = "x0",
    check: bool = True,
    warn_float32: bool = True,
):
    """Validate `x0`, apply the dtype policy and check the system's output.

    **Arguments:**

    - `system`: a dynjax system.
    - `x0`: the state the verb starts from.
    - `verb`: the public name of the verb (for messages).
    - `args`: the run-time arguments of the system.
    - `u`: for a driven map, one input (the first of the sequence).
    - `t`: the time (flows) or index (maps) of the check evaluation.
    - `name`: the argument's name in messages.
    - `check`: whether to evaluate the output structure.
    - `warn_float32`: warn that a float32 computation may be unreliable; `False`
        for verbs whose results float32 does not spoil (training a neural ODE,
        drawing samples), where float32 is the norm.

    **Returns:**

    `(system, x0, args)` with the floating-point leaves of `system` and `args` in
    `x0`'s dtype.

    **Raises:**

    `ValueError` for a wrong state shape or a wrong output structure; a
    `UserWarning` where the computation runs in float32 or drops precision.
    """
    if not isinstance(system, AbstractSystem):
        raise ValueError(
            f"`system` must be a dynjax flow, map or driven map, got "
            f"{type(system).__name__}. Wrap a plain function with `dynjax.Flow`, "
            "`dynjax.Map` or `dynjax.DrivenMap`."
        )
    x0 = check_state(x0, system.d, name)
    dtype = x0.dtype
    if jnp.issubdtype(dtype, jnp.floating):
        system, wider_s = cast_floats(system, dtype)
        args, wider_a = cast_floats(args, dtype)
        wider = sorted(set(wider_s) | set(wider_a))
        if wider:
            owners = " and ".join(
                w
                for w, flag in (
                    (f"the parameters of {_system_name(system)}", wider_s),
                    ("`args`", wider_a),
                )
                if flag
            )
            warnings.warn(
                f"dynjax.{verb}: {owners} are {'/'.join(wider)} but `{name}` is "
                f"{dtype.name}; computing in {dtype.name} (the state's dtype wins). "
                f"Pass `{name}` as {wider[-1]} for full precision.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        elif warn_float32:
            warn_if_float32(verb, dtype)
    if check:
        _check_output_cached(system, x0, u, t, args)
    return system, x0, args
