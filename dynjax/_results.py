import diffrax as dfx
import equinox as eqx
import jax
import numpy as np


class RESULTS(dfx.RESULTS):  # pyright: ignore[reportRedeclaration]
    """Result codes of every dynjax verb.

    Extends `diffrax.RESULTS` (itself an extension of `optimistix.RESULTS`), so a
    code returned by diffrax or optimistix can be promoted with
    `dynjax.RESULTS.promote(code)`. `throw=True` turns any code other than
    `successful` into an error carrying its message.
    """

    nonfinite_state = (
        "The state became non-finite (NaN or inf). The system diverged or the step "
        "size is too large: reduce `dt`, tighten the tolerances, or start closer to "
        "the attractor."
    )
    map_escaped = (
        "The orbit of the map became non-finite (NaN or inf): it escaped to infinity "
        "or reached a point where the map is undefined. A map has no step size to "
        "reduce: start inside the basin of a bounded attractor, or check the "
        "parameters."
    )
    blow_up = (
        "The solution blows up in finite time: the state grew without bound while "
        "the solver's step size collapsed, before `t1`. Raising `max_steps` cannot "
        "help; integrate to a time before the blow-up (the last finite state and its "
        "time are in the result), or check the vector field."
    )
    nonfinite_tangent = (
        "A tangent vector overflowed or became non-finite between two "
        "re-orthonormalizations. Re-orthonormalize more often (smaller `interval`) or "
        "reduce the step size `dt`."
    )
    nonfinite_tangent_map = (
        "A tangent vector of the map overflowed or became non-finite between two "
        "re-orthonormalizations (its Jacobian is non-finite or too large along the "
        "orbit). Re-orthonormalize every step (`interval=1`)."
    )
    degenerate_tangent = (
        "A tangent direction was swamped by the leading ones between two "
        "re-orthonormalizations (its component orthogonal to them fell to rounding "
        "level), so its exponent cannot be resolved. A flow's propagator is "
        "invertible, so this is rounding, not collapse: re-orthonormalize more often "
        "(smaller `interval`)."
    )
    degenerate_tangent_map = (
        "A tangent direction collapsed to rounding level within one block of several "
        "map iterations; it cannot be told whether the map's Jacobian is singular "
        "there or the direction was swamped. Re-orthonormalize every step "
        "(`interval=1`): a direction that collapses within one step then gets the "
        "exponent -inf."
    )
    singular_jacobian = (
        "The Jacobian is singular at the point found: the point is degenerate "
        "(non-hyperbolic or a bifurcation point), so Newton's method cannot certify it."
    )
    not_converged = (
        "The iteration did not converge within the step budget: raise `max_steps`, "
        "loosen the tolerance, or give a better initial guess."
    )
    no_crossing = (
        "The trajectory did not cross the Poincare section (in the requested "
        "direction) within `t_max`: raise `t_max`, or check the plane and `direction`."
    )
    shooting_diverged = (
        "The shooting solve for a periodic orbit did not converge: the residual "
        "phi_T(x) - x stalled at a nonzero value (the iteration went astray from the "
        "guess), so raising `max_steps` will not help. Give a point closer to the "
        "orbit and a period within ~30%, use more segments (`n_segments`), or, for a "
        "stable cycle, pass `period_guess=None` to relax onto it first."
    )
    period_collapsed = (
        "The shooting solve collapsed onto a trivial solution: the period shrank "
        "towards 0, or the orbit shrank onto an equilibrium, where phi_T(x) = x holds "
        "without a cycle. Give a period guess closer to the true period or a point "
        "farther from the equilibrium, use more segments (`n_segments`), or, for a "
        "stable cycle, pass `period_guess=None`."
    )
    shooting_integration_failed = (
        "Integrating the orbit over one period failed (the ODE solver ran out of "
        "steps or produced non-finite values). The system may be stiff: pass an "
        "implicit solver, e.g. `solver=diffrax.Kvaerno5()`; or raise `ode_max_steps`, "
        "or give a period guess closer to the true one."
    )
    nonfinite_loss = (
        "The training loss or its gradient became non-finite (NaN or inf); training "
        "stopped and the last finite model was kept. Lower the learning rate, clip "
        "gradients (`optax.clip_by_global_norm`), or check the loss for log(0) and "
        "division by zero. A loss that solves a differential equation also becomes "
        "non-finite when the solve fails: raise `max_steps` or use a stiff solver."
    )
    no_variance_fixed_point = (
        "The variance map of the deep network, q -> sigma_w^2 E[phi(sqrt(q) z)^2] + "
        "sigma_b^2, has no stable fixed point reached from `q0`: the preactivation "
        "variance grows without bound with depth (an unbounded activation with a "
        "large weight variance, e.g. ReLU with sigma_w^2 > 2). Lower `sigma_w2`, use "
        "a bounded activation, or start from another `q0`."
    )
    continuation_step_collapsed = (
        "The continuation step fell below `ds_min` before the branch reached "
        "`p_min`/`p_max` or `n_points`: the corrector failed at every smaller step "
        "(a singular point the tangent cannot pass, e.g. a cusp of the branch, or the "
        "branch ends). The points found so far are returned with `throw=False`; "
        "lower `ds_min`, raise `max_newton`, or start past that point."
    )
    continuation_start_failed = (
        "The Newton correction of the continuation's start did not converge within "
        "`max_newton` steps."
    )
    continuation_singular_start = (
        "The continuation starts at a singular point: the Jacobian [F_x F_p] of the "
        "branch equations has rank below d there (two or more branches cross, e.g. "
        "a branch point), so the direction of the branch is not unique. Start a "
        "little away from the crossing, or use `dynjax.switch_branch` at a located "
        "branch point."
    )


def is_traced(tree) -> bool:
    """Whether any leaf of `tree` is a JAX tracer (inside `jit`, `vmap`, `grad`)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def raise_if_failed(result: RESULTS, value, details=None):
    """`throw=True` for a result computed outside `jit`, with run-time details.

    When `result` is a concrete value (the verb was called eagerly), a failure
    raises `equinox.EquinoxRuntimeError` with the code's message followed by
    `details(value)` (a callable returning a string, evaluated only on failure,
    e.g. the blow-up time or the smallest residual). Under a trace (`jit`,
    `vmap`, `grad`) the values are unknown, so the failure is attached to `value`
    with `result.error_if`, which raises the code's message at run time.
    Returns `value`.
    """
    if is_traced(result):
        return result.error_if(value, result != RESULTS.successful)
    # (One host read, not an eager JAX comparison: this runs after every call.)
    if int(np.asarray(result._value)) != _SUCCESSFUL:
        message = RESULTS[result]
        if details is not None:
            message = f"{message} {details(value)}"
        raise eqx.EquinoxRuntimeError(message)
    return value


_SUCCESSFUL = int(np.asarray(RESULTS.successful._value))
