import diffrax as dfx


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
    nonfinite_tangent = (
        "A tangent vector overflowed or became non-finite between two "
        "re-orthonormalizations. Re-orthonormalize more often (smaller `interval`) or "
        "reduce the step size."
    )
    degenerate_tangent = (
        "A tangent vector collapsed to zero (|R_ii| underflowed) between two "
        "re-orthonormalizations. Re-orthonormalize more often (smaller `interval`)."
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
