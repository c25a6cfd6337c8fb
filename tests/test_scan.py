"""`dynjax._scan.scan`: the nested `lax.scan` must be the same computation.

The nesting only changes how XLA's CPU runtime schedules the loop body, so the
carry and the stacked outputs must equal `jax.lax.scan`'s bit for bit, for
every split of the length into chunks and a remainder.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynjax._scan import scan


def _body(carry, x):
    # A non-linear, order-dependent recurrence: any reordering or dropped
    # iteration changes the result.
    Q, s = carry
    W = jnp.tanh(x["A"] @ Q) + 0.1 * x["b"][:, None]
    s = s * 0.9 + jnp.sum(W)
    return (W / jnp.linalg.norm(W), s), (jnp.diagonal(W), s)


@pytest.mark.parametrize("length", [1, 3, 4, 7, 30, 31, 97])
def test_scan_equals_lax_scan(length):
    key_a, key_b = jax.random.split(jax.random.key(0))
    xs = {
        "A": jax.random.normal(key_a, (length, 3, 3)),
        "b": jax.random.normal(key_b, (length, 3)),
    }
    init = (jnp.eye(3), jnp.zeros(()))
    expected = jax.jit(lambda xs: jax.lax.scan(_body, init, xs))(xs)
    got = jax.jit(lambda xs: scan(_body, init, xs))(xs)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_scan_without_xs_and_nesting_happens():
    # No inputs, 24-byte outputs: chunks of 16 iterations (the largest power of
    # two within 512 bytes), so 100 iterations are 6 chunks and a remainder of 4
    # (the nesting is exercised, not bypassed).
    def body(c, _):
        c = jnp.sin(c) + 1.0
        return c, c

    init = jnp.array([0.1, 0.2, 0.3])
    expected = jax.lax.scan(body, init, None, length=100)
    got = scan(body, init, None, length=100)
    np.testing.assert_array_equal(np.asarray(expected[1]), np.asarray(got[1]))
    np.testing.assert_array_equal(np.asarray(expected[0]), np.asarray(got[0]))
    jaxpr = jax.make_jaxpr(lambda c: scan(body, c, None, length=100))(init)
    assert "scan" in str(jaxpr) and str(jaxpr).count("length=16") == 1
    assert str(jaxpr).count("length=6") == 1 and str(jaxpr).count("length=4") == 1


def test_scan_prefix_counts_only_the_first_n():
    # Only the first n rows count: the state after n iterations is the input of
    # row n (a running sum), whatever extra iterations ran past it.
    from dynjax._scan import scan_prefix

    def body(c, x):
        return c + x, c

    xs = jnp.arange(64.0)
    for n in (1, 5, 16, 17, 64):
        carry, ys, n_run = jax.jit(lambda n: scan_prefix(body, 0.0, xs, n))(
            jnp.int32(n)
        )
        np.testing.assert_array_equal(ys[:n], np.cumsum(np.arange(64.0))[:n] - xs[:n])
        # the carry ran n_run >= n rows (whole chunks): the sum of the first n_run
        assert n <= int(n_run) < n + 64
        assert float(carry) == float(np.sum(np.arange(int(n_run))))


def test_typed_prng_keys_as_driven_map_inputs():
    # Per-step keys (e.g. a random layer per step) are valid inputs: the result
    # equals the run on their raw uint32 data, wrapped back inside the step.
    import dynjax

    def noisy(x, key):
        return jnp.tanh(2.0 * x + jax.random.normal(key, x.shape))

    typed = dynjax.DrivenMap(lambda x, u, p: noisy(x, u), d=3)
    raw = dynjax.DrivenMap(lambda x, u, p: noisy(x, jax.random.wrap_key_data(u)), d=3)
    keys = jax.random.split(jax.random.key(0), 300)
    a = dynjax.lyapunov_spectrum(typed, jnp.ones(3), inputs=keys, k=2)
    data = jax.random.key_data(keys)
    b = dynjax.lyapunov_spectrum(raw, jnp.ones(3), inputs=data, k=2)
    np.testing.assert_array_equal(a.exponents, b.exponents)
