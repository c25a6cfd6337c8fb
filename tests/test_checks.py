"""The entry check every verb shares: output structure, dtype policy, warnings.

Issue 10, items 4 (a user function with the wrong output shape gets one clear
message in every verb), 8 (mixed precision: the state's dtype wins) and 9 (the
float32 warning's wording and the line it points at).
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import dynjax
from dynjax import systems


# --- item 4: output structure ------------------------------------------------


def _scalar_field():
    # dx/dt = -x for a 1-D state, written returning a scalar
    return dynjax.Flow(lambda t, x, p: -x[0])


_SCALAR_MESSAGE = (
    r"returned an array of shape \(\) .* expected an array of shape \(1,\)"
)


@pytest.mark.parametrize(
    "call",
    [
        lambda f: dynjax.trajectory(f, jnp.ones(1), t1=1.0),
        lambda f: dynjax.lyapunov_spectrum(f, jnp.ones(1), t_total=1.0),
        lambda f: dynjax.find_equilibria(f, jnp.ones((3, 1))),
        lambda f: dynjax.poincare_section(f, jnp.ones(1), (jnp.ones(1), 0.5), 1),
        lambda f: dynjax.linearize(f, jnp.zeros(1)),
        lambda f: dynjax.jacobian(f, jnp.zeros(1)),
    ],
    ids=["trajectory", "lyapunov", "equilibria", "poincare", "linearize", "jacobian"],
)
def test_scalar_field_gets_one_message_everywhere(call):
    with pytest.raises(ValueError, match=_SCALAR_MESSAGE) as info:
        call(_scalar_field())
    assert "jnp.atleast_1d" in str(info.value)


def test_wrong_size_and_structure():
    three = dynjax.Flow(lambda t, x, p: jnp.array([x[0], x[1], x[0]]))
    with pytest.raises(ValueError, match=r"shape \(3,\).*d=2 components"):
        dynjax.trajectory(three, jnp.ones(2), t1=1.0)
    pair = dynjax.Flow(lambda t, x, p: (x[1], -x[0]))
    with pytest.raises(ValueError, match=r"returned a tuple of 2 array.*jnp.stack"):
        dynjax.lyapunov_spectrum(pair, jnp.ones(2), t_total=1.0)
    ints = dynjax.Map(lambda n, x, p: jnp.round(x).astype(jnp.int32), d=2)
    with pytest.raises(ValueError, match="floating-point"):
        dynjax.trajectory(ints, jnp.ones(2), n_steps=3)
    driven = dynjax.DrivenMap(lambda x, u, p: jnp.tanh(x + u)[:1])
    with pytest.raises(ValueError, match=r"DrivenMap.step\(x, u, args\) returned"):
        dynjax.trajectory(driven, jnp.ones(2), inputs=jnp.ones((5, 2)))


def test_error_inside_user_function_is_annotated():
    def f(t, x, p):
        return x @ jnp.ones((3, 3))  # (2,) @ (3, 3): the user's own bug

    with pytest.raises(TypeError) as info:
        dynjax.trajectory(dynjax.Flow(f), jnp.ones(2), t1=1.0)
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "Flow.vector_field(t, x, args)" in notes and "shape (2,)" in notes


# --- item 8: one dtype policy -------------------------------------------------


def _lorenz_scipy(t1, rho=28.0):
    def f(t, y):
        return [
            10 * (y[1] - y[0]),
            y[0] * (rho - y[2]) - y[1],
            y[0] * y[1] - 8 / 3 * y[2],
        ]

    sol = scipy.integrate.solve_ivp(
        f, (0, t1), [1.0, 1.0, 1.0], method="DOP853", rtol=1e-12, atol=1e-12
    )
    return sol.y[:, -1]


def test_float32_state_float64_parameters_computes_in_float32():
    # x64 is on (conftest): the catalogue's parameters are float64. A float32
    # state wins: every verb runs in float32 and warns that precision drops.
    lorenz = systems.Lorenz()
    x0 = jnp.ones(3, jnp.float32)
    with pytest.warns(UserWarning, match="the state's dtype wins"):
        spectrum = dynjax.lyapunov_spectrum(lorenz, x0, t_total=200.0)
    assert spectrum.exponents.dtype == jnp.float32
    # Lorenz reference (Sprott 2003): float32 over 200 time units, to 0.05
    np.testing.assert_allclose(spectrum.exponents, [0.9056, 0.0, -14.5723], atol=0.05)
    with pytest.warns(UserWarning, match="float32"):
        sol = dynjax.trajectory(lorenz, x0, t1=1.0, n_save=3)
    assert sol.xs.dtype == jnp.float32
    np.testing.assert_allclose(sol.xs[-1], _lorenz_scipy(1.0), rtol=1e-4)
    with pytest.warns(UserWarning, match="float32"):
        eq = dynjax.find_equilibria(lorenz, jnp.array([[8.0, 8.0, 27.0]], jnp.float32))
    b = np.sqrt(8 / 3 * 27)
    np.testing.assert_allclose(eq.unique[0], [b, b, 27.0], rtol=1e-4)
    rossler = systems.Rossler()
    plane = (jnp.array([0.0, 1.0, 0.0]), 0.0)
    with pytest.warns(UserWarning, match="float32"):
        sec = dynjax.poincare_section(
            rossler, jnp.array([1.0, 0.0, 0.0], jnp.float32), plane, 3, direction=-1
        )
    assert sec.points.dtype == jnp.float32


def test_float64_state_float32_parameters_computes_in_float64():
    # The reverse: parameters stored in float32 (rho = 35 is exact in float32),
    # a float64 state. Computed in float64, no precision warning; the result
    # matches SciPy at rho = 35 to float64 accuracy.
    lorenz = eqx.tree_at(lambda s: s.rho, systems.Lorenz(), jnp.float32(35.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = dynjax.trajectory(lorenz, jnp.ones(3), t1=1.0, n_save=2)
        spec = dynjax.lyapunov_spectrum(lorenz, jnp.ones(3), t_total=20.0)
    assert sol.xs.dtype == jnp.float64 and spec.exponents.dtype == jnp.float64
    np.testing.assert_allclose(sol.xs[-1], _lorenz_scipy(1.0, rho=35.0), rtol=1e-7)
    # The sum of the exponents is -(sigma + 1 + beta) (Liouville), up to RK4's
    # error in the propagator's determinant (about (tr J dt)^5 / 5! per step).
    np.testing.assert_allclose(spec.exponents.sum(), -(11 + 8 / 3), rtol=2e-5)


class _Decay(dynjax.AbstractFlow):
    d = 1

    def vector_field(self, t, x, args=None):
        return -args * x


def test_float64_args_with_float32_state_warn():
    # `args` are cast to the state's dtype too: float64 args, a float32 state.
    with pytest.warns(UserWarning, match="`args`"):
        sol = dynjax.trajectory(
            _Decay(), jnp.ones(1, jnp.float32), t1=1.0, n_save=2, args=jnp.asarray(2.0)
        )
    assert sol.xs.dtype == jnp.float32
    np.testing.assert_allclose(sol.xs[-1], [np.exp(-2.0)], rtol=1e-4)


# --- item 9: the float32 warning's wording and stack level --------------------


def test_float32_warning_wording_points_at_the_caller():
    with jax.enable_x64(False):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dynjax.max_lyapunov(systems.Henon(), jnp.array([0.1, 0.1]), n_steps=100)
    messages = [w for w in caught if "float32" in str(w.message)]
    assert messages, "no float32 warning"
    message = str(messages[0].message)
    assert message.startswith("dynjax.lyapunov_spectrum runs in float32 because")
    assert " is computed" not in message  # (was "Lyapunov exponents is computed")
    assert messages[0].filename == __file__
