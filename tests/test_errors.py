"""Bad input gets an error that says what to change."""

import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynjax
from dynjax._cli import main


def test_wrong_dimension_x0():
    with pytest.raises(
        ValueError, match=r"dimension 2 but the system has dimension d=3"
    ):
        dynjax.trajectory(dynjax.systems.Lorenz(), jnp.ones(2), t1=1.0)
    with pytest.raises(ValueError, match=r"1-D state vector"):
        dynjax.trajectory(dynjax.systems.Lorenz(), jnp.ones((2, 3)), t1=1.0)
    with pytest.raises(ValueError, match=r"has dimension d=3"):
        dynjax.jacobian(dynjax.systems.Lorenz(), jnp.ones(4))


def test_nonfinite_x0():
    # A concrete state is checked before anything is compiled (ValueError); a
    # traced one at run time (EquinoxRuntimeError).
    with pytest.raises(ValueError, match="non-finite"):
        dynjax.trajectory(
            dynjax.systems.Lorenz(), jnp.array([1.0, jnp.nan, 0.0]), t1=1.0
        )
    henon = dynjax.Map(lambda n, x, p: x, None)
    with pytest.raises(ValueError, match="non-finite"):
        dynjax.trajectory(henon, jnp.array([jnp.inf, 0.0]), n_steps=3)
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite"):
        eqx.filter_jit(lambda x: dynjax.trajectory(henon, x, n_steps=3).xs)(
            jnp.array([jnp.inf, 0.0])
        )


def test_t1_before_t0():
    with pytest.raises(ValueError, match="`t1` must be greater than `t0`"):
        dynjax.trajectory(dynjax.systems.Lorenz(), jnp.ones(3), t0=2.0, t1=1.0)
    # Traced times are checked when the computation runs.
    run = eqx.filter_jit(
        lambda t1: dynjax.trajectory(dynjax.systems.Lorenz(), jnp.ones(3), t1=t1).xs
    )
    with pytest.raises(eqx.EquinoxRuntimeError, match="`t1` must be greater than `t0`"):
        run(jnp.asarray(-1.0))


def test_flow_without_end_time_and_map_without_steps():
    with pytest.raises(ValueError, match="pass `t1=`"):
        dynjax.trajectory(dynjax.systems.Lorenz(), jnp.ones(3))
    logistic = dynjax.Map(lambda n, x, r: r * x * (1 - x), 4.0)
    with pytest.raises(ValueError, match="pass `n_steps=`"):
        dynjax.trajectory(logistic, jnp.array([0.3]))
    with pytest.raises(ValueError, match="constant step size needs `dt0=`"):
        import diffrax as dfx

        dynjax.trajectory(
            dynjax.systems.Lorenz(),
            jnp.ones(3),
            t1=1.0,
            stepsize_controller=dfx.ConstantStepSize(),
        )


def test_driven_map_needs_inputs():
    rnn = dynjax.DrivenMap(lambda h, u, p: jnp.tanh(h + u), None)
    with pytest.raises(ValueError, match="needs its input sequence: pass `inputs=`"):
        dynjax.trajectory(rnn, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"leaf .* is a scalar"):
        dynjax.trajectory(rnn, jnp.zeros(3), inputs={"u": jnp.zeros(10), "v": 1.0})
    with pytest.raises(ValueError, match=r"share their leading \(time\) axis"):
        dynjax.trajectory(rnn, jnp.zeros(3), inputs=(jnp.zeros(10), jnp.zeros(9)))
    with pytest.raises(ValueError, match="pass `u=`"):
        dynjax.jacobian(rnn, jnp.zeros(3))


def test_diverging_map_reports_nonfinite_state():
    # The logistic map with r = 5 sends x0 = 0.9 to -inf in a few steps.
    logistic = dynjax.Map(lambda n, x, r: r * x * (1 - x), 5.0)
    with pytest.raises(eqx.EquinoxRuntimeError, match="A map has no step size"):
        dynjax.trajectory(logistic, jnp.array([0.9]), n_steps=40)
    sol = dynjax.trajectory(logistic, jnp.array([0.9]), n_steps=40, throw=False)
    assert sol.result == dynjax.RESULTS.map_escaped
    assert not np.isfinite(np.asarray(sol.xs[-1])).all()


def test_diverging_flow_fails_loudly():
    # dx/dt = x^2 blows up at t = 1 / x0 = 1: the adaptive solver cannot pass it.
    blowup = dynjax.Flow(lambda t, x, p: x**2, None, d=1)
    with pytest.raises(eqx.EquinoxRuntimeError):
        dynjax.trajectory(blowup, jnp.array([1.0]), t1=2.0)
    sol = dynjax.trajectory(blowup, jnp.array([1.0]), t1=2.0, throw=False)
    assert sol.result != dynjax.RESULTS.successful


def test_transforms_reject_wrong_kind():
    logistic = dynjax.Map(lambda n, x, r: r * x * (1 - x), 4.0)
    with pytest.raises(ValueError, match="takes a flow"):
        dynjax.autonomize(logistic)
    with pytest.raises(ValueError, match="takes a flow"):
        dynjax.euler_map(logistic, 0.1)
    with pytest.raises(ValueError, match="positive integer"):
        dynjax.first_order(lambda t, x, p: -x, 0)


def test_cli_unknown_system(capsys):
    with pytest.raises(
        SystemExit, match=r"unknown system 'lorentz'.*Did you mean Lorenz"
    ):
        main(["systems", "lorentz"])
    with pytest.raises(SystemExit, match=r"unknown system 'nosuchthing'"):
        main(["simulate", "nosuchthing", "--no-cache"])
    # A rejected command leaves JAX's options alone: a test worker that had the
    # user's persistent cache switched on here read executables back from it
    # for the rest of the session (and crashed on one).
    with pytest.raises(SystemExit, match=r"unknown system 'nosuchthing'"):
        main(["simulate", "nosuchthing"])
    assert jax.config.jax_compilation_cache_dir is None


def test_cli_unknown_system_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "dynjax", "systems", "lorentz"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Did you mean Lorenz" in proc.stderr
