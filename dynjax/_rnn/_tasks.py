"""Task generators for recurrent networks: batches generated in code from a key.

Each generator is a pure function of a `jax.random` key and Python-int sizes, so it
runs under `jit` and `vmap` (the sizes are static) and can draw a fresh batch inside
a training loss: `dynjax.fit(lambda m, _, k: loss(m, *flip_flop(k, ...)), ...)`.
Inputs and targets are laid out as `dynjax.trajectory` reads them: a leading batch
axis, then time, then channels, with `targets[:, t]` the desired readout of the
state after the input `inputs[:, t]` (that is, of `trajectory(...).xs[t + 1]`).
"""

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, PRNGKeyArray


def _check_int(value, name: str, verb: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"`{verb}` needs `{name}` to be a Python int >= {minimum} (a size of the "
            f"batch it returns), got {value!r}."
        )


def _check_probability(p, name: str, verb: str) -> None:
    if isinstance(p, jax.core.Tracer):
        return
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"`{verb}` needs `{name}` in [0, 1], got {p!r}.")


def flip_flop(
    key: PRNGKeyArray,
    *,
    n_bits: int = 3,
    n_steps: int,
    batch: int,
    p_flip: float = 0.05,
    dtype=None,
) -> tuple[Float[Array, "batch T bits"], Float[Array, "batch T bits"]]:
    r"""The `n`-bit flip-flop task (Sussillo & Barak 2013).

    Each of `n_bits` input channels carries sparse pulses of value `+1` or `-1`
    (and `0` elsewhere); the target of each output channel is the sign of the
    most recent pulse on its input channel, held until the next pulse:

    $$y_{t,i} = u_{s,i}, \qquad s = \max\{s \le t : u_{s,i} \neq 0\}.$$

    A network that solves it must store `2^n_bits` memories, and its trained
    dynamics at zero input have (about) `2^n_bits` stable fixed points, one per
    sign pattern, with saddles between them (Sussillo & Barak 2013, Fig. 2).

    At every step and on every channel a pulse occurs with probability `p_flip`,
    with a random sign (`+1` or `-1` with probability 1/2 each, independently).
    As in FixedPointFinder's `FlipFlopData`, every channel gets a pulse at step
    0, so that every target is defined (`+-1`) from the first step on.

    **Arguments:**

    - `key`: a `jax.random` key; the same key gives the same batch.
    - `n_bits`: the number of channels (a Python int, default 3).
    - `n_steps`: `T`, the number of time steps (a Python int).
    - `batch`: the number of independent sequences (a Python int).
    - `p_flip`: the probability of a pulse per step and channel, in `[0, 1]`
        (default 0.05: a pulse every 20 steps on average per channel).
    - `dtype`: the floating dtype of the arrays (default: JAX's default float).

    **Returns:**

    `(inputs, targets)`, both of shape `(batch, n_steps, n_bits)`, with values in
    `{-1, 0, +1}` (inputs) and `{-1, +1}` (targets). For a cell `h_{t+1} =
    F(h_t, u_t)` the target at step `t` is the desired readout of the state
    after the input `inputs[:, t]`, i.e. of `dynjax.trajectory(cell, h0,
    inputs=inputs[b]).xs[t + 1]`.

    **Raises:** `ValueError` if a size is not a positive Python int or `p_flip`
    is outside `[0, 1]`.

    !!! Example

        ```python
        inputs, targets = dynjax.rnn.flip_flop(jax.random.key(0), n_steps=100,
                                               batch=32)
        ```

    **References:** D. Sussillo and O. Barak, "Opening the black box:
    low-dimensional dynamics in high-dimensional recurrent neural networks",
    Neural Computation 25, 626-649 (2013); M. D. Golub and D. Sussillo,
    "FixedPointFinder: a Tensorflow toolbox for identifying and characterizing
    fixed points in recurrent neural networks", J. Open Source Softw. 3, 1003
    (2018).
    """
    verb = "flip_flop"
    _check_int(n_bits, "n_bits", verb)
    _check_int(n_steps, "n_steps", verb)
    _check_int(batch, "batch", verb)
    _check_probability(p_flip, "p_flip", verb)
    dtype = jnp.result_type(float) if dtype is None else dtype
    k_pulse, k_sign = jr.split(key)
    shape = (batch, n_steps, n_bits)
    pulse = jr.bernoulli(k_pulse, p_flip, shape).at[:, 0, :].set(True)
    sign = jnp.where(jr.bernoulli(k_sign, 0.5, shape), 1.0, -1.0)
    inputs = jnp.where(pulse, sign, 0.0).astype(dtype)

    def hold(last, u):
        last = jnp.where(u != 0, u, last)
        return last, last

    # Scan over time (axis 1); the carry is the last pulse of every channel.
    _, targets = jax.lax.scan(
        hold, jnp.zeros((batch, n_bits), dtype), jnp.moveaxis(inputs, 1, 0)
    )
    return inputs, jnp.moveaxis(targets, 0, 1)


def delayed_recall(
    key: PRNGKeyArray,
    *,
    delay: int,
    batch: int,
    n_symbols: int | None = None,
    recall_steps: int = 1,
    dtype=None,
) -> tuple[
    Float[Array, "batch T m"], Float[Array, "batch T k"], Bool[Array, "batch T"]
]:
    r"""A delayed-recall (memory) task: a stimulus at step 0, recalled after a delay.

    Step 0 shows the stimulus; steps `1 ... delay` carry no input; steps
    `delay + 1 ... delay + recall_steps` carry a recall cue, during which the
    target is the stimulus. The loss should count only those steps (`mask`):
    between the stimulus and the cue the network's output is free. So the
    network must hold the stimulus for `delay` steps in its state, which tests
    how gradients propagate over long times (e.g. for gradient flossing,
    Engelken 2023).

    - Continuous stimulus (`n_symbols=None`): a value `s ~ U(-1, 1)`; inputs
        have `m = 2` channels, `(value, cue)`; targets `k = 1` channel, `s`.
    - Symbolic stimulus (`n_symbols = K`): a symbol drawn uniformly from `K`,
        shown one-hot; inputs have `m = K + 1` channels, `(one-hot, cue)`;
        targets `k = K` channels, the one-hot symbol (e.g. for a cross-entropy
        loss on the masked steps).

    The total length is `T = 1 + delay + recall_steps` steps. Targets are 0
    outside the recall window.

    **Arguments:**

    - `key`: a `jax.random` key; the same key gives the same batch.
    - `delay`: the number of silent steps between the stimulus and the cue (a
        Python int `>= 0`).
    - `batch`: the number of independent trials (a Python int).
    - `n_symbols`: `None` (default) for a continuous value, or the number of
        symbols `K >= 2`.
    - `recall_steps`: how many steps the cue (and the target) lasts (default 1).
    - `dtype`: the floating dtype of `inputs` and `targets` (default: JAX's
        default float).

    **Returns:**

    `(inputs, targets, mask)`: `inputs` of shape `(batch, T, m)`, `targets` of
    shape `(batch, T, k)`, and the boolean `mask` of shape `(batch, T)`, `True`
    on the recall steps (where the loss counts). As for `flip_flop`,
    `targets[:, t]` is the desired readout of the state after `inputs[:, t]`.

    **Raises:** `ValueError` if a size is not a Python int in range.

    !!! Example

        ```python
        inputs, targets, mask = dynjax.rnn.delayed_recall(jax.random.key(0),
                                                          delay=50, batch=32)
        ```

    **Reference:** R. Engelken, "Gradient flossing: improving gradient descent
    through dynamic control of Jacobians", NeurIPS (2023) (delayed memory tasks
    of adjustable difficulty); S. Hochreiter and J. Schmidhuber, "Long short-term
    memory", Neural Computation 9, 1735-1780 (1997) (recall after long delays).
    """
    verb = "delayed_recall"
    _check_int(delay, "delay", verb, minimum=0)
    _check_int(batch, "batch", verb)
    _check_int(recall_steps, "recall_steps", verb)
    if n_symbols is not None:
        _check_int(n_symbols, "n_symbols", verb, minimum=2)
    dtype = jnp.result_type(float) if dtype is None else dtype
    T = 1 + delay + recall_steps
    if n_symbols is None:
        stimulus = jr.uniform(key, (batch, 1), dtype, -1.0, 1.0)
    else:
        symbol = jr.randint(key, (batch,), 0, n_symbols)
        stimulus = jax.nn.one_hot(symbol, n_symbols, dtype=dtype)
    recall = jnp.arange(T) > delay  # (T,)
    shown = (jnp.arange(T) == 0)[None, :, None]
    values = jnp.where(shown, stimulus[:, None, :], 0.0)
    cue = jnp.broadcast_to(recall[None, :, None], (batch, T, 1)).astype(dtype)
    inputs = jnp.concatenate([values, cue], axis=-1)
    targets = jnp.where(recall[None, :, None], stimulus[:, None, :], 0.0)
    mask = jnp.broadcast_to(recall[None, :], (batch, T))
    return inputs.astype(dtype), targets.astype(dtype), mask
