"""Input-driven spectra of recurrent networks, and how gradients propagate.

`rnn_spectrum` is `dynjax.lyapunov_spectrum` batched over input sequences (the
network as a random dynamical system driven by its task's input process, Arnold
1998): every sequence gives one spectrum, and their mean and spread are the
network's spectrum on its task. `gradient_propagation` runs the same QR
machinery backwards in time on the transposed Jacobians, which is what
backpropagation through time multiplies.
"""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .._custom_types import Args
from .._lyapunov import lyapunov_spectrum, LyapunovState
from .._lyapunov._qr import qr_positive, safe_log
from .._results import raise_if_failed, RESULTS
from .._system import AbstractDrivenMap
from .._system._checks import conform


# Shared checks.


def _check_cell(cell, verb: str) -> None:
    if not isinstance(cell, AbstractDrivenMap):
        raise ValueError(
            f"`{verb}` takes a driven map (a `dynjax.rnn` cell, `dynjax.rnn.Cell` "
            f"around an equinox cell, or a `dynjax.DrivenMap`), got "
            f"{type(cell).__name__}. Wrap an equinox cell (`eqx.nn.GRUCell`, "
            "`eqx.nn.LSTMCell`, any Module with `__call__(u, h)`) in "
            "`dynjax.rnn.Cell`, and a function `F(h, u, params)` in "
            "`dynjax.DrivenMap(F, params, d=...)`."
        )


def _sequence_shape(inputs, verb: str, batched: bool, cell=None) -> tuple[int, ...]:
    """The leading `(batch, T)` or `(T,)` axes shared by every input leaf."""
    leaves = jax.tree.leaves(inputs)
    if not leaves:
        raise ValueError(f"`{verb}` needs `inputs`, an array or pytree of arrays.")
    m = getattr(cell, "input_size", None)
    if (
        len(leaves) == 1
        and isinstance(m, int)
        and getattr(cell, "vocab_size", None) is None
    ):
        # Vector inputs of a cell with a known input size: a missing or extra
        # batch axis is recognizable (not a feature-size mismatch).
        shape = jnp.shape(leaves[0])
        rank = 3 if batched else 2
        if len(shape) == rank - 1 and shape[-1] == m and batched:
            raise ValueError(
                f"`{verb}` takes a batch of sequences, shape (batch, T, {m}), got "
                f"{shape}. Add a batch axis (`inputs[None]`)."
            )
        if len(shape) == rank + 1 and shape[-1] == m and not batched:
            raise ValueError(
                f"`{verb}` takes one sequence, shape (T, {m}), got {shape}: "
                f"`jax.vmap` it over the batch (`jax.vmap(lambda x: dynjax.{verb}"
                "(cell, x))(inputs)`)."
            )
    n = 2 if batched else 1
    what = "(batch, T, ...)" if batched else "(T, ...)"
    shapes = [jnp.shape(leaf) for leaf in leaves]
    if any(len(s) < n for s in shapes):
        raise ValueError(
            f"`{verb}` needs `inputs` of shape {what}, got leaves of shapes "
            f"{shapes}." + (" Add a batch axis (`inputs[None]`)." if batched else "")
        )
    lead = {s[:n] for s in shapes}
    if len(lead) != 1:
        raise ValueError(
            f"`{verb}`: every leaf of `inputs` must share the leading axes {what}, "
            f"got {sorted(lead)}."
        )
    return lead.pop()


def _cell_dtype(cell):
    """The dtype of the cell's floating parameters (JAX's default if none)."""
    leaves = [x for x in jax.tree.leaves(cell) if eqx.is_inexact_array(x)]
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def _initial_states(cell, h0, batch: int | None, verb: str):
    d = cell.d
    if d is None:  # (a wrapper without `d=`: the state's size comes from h0)
        if h0 is None:
            raise ValueError(
                f"`{verb}` cannot tell the state size of {type(cell).__name__}: "
                "pass `h0=` or build it with `d=`."
            )
        d = jnp.shape(h0)[-1]
    if h0 is None:
        h0 = jnp.zeros((d,), _cell_dtype(cell))
    h0 = jnp.asarray(h0)
    if h0.shape == (d,) and batch is not None:
        return jnp.broadcast_to(h0, (batch, d)), True
    expected = [(d,)] if batch is None else [(d,), (batch, d)]
    if h0.shape not in expected:
        raise ValueError(
            f"`{verb}` got `h0` of shape {h0.shape}; the cell's state has "
            f"dimension d={d}, so pass shape "
            + " or ".join(str(s) for s in expected)
            + " (for an LSTM the state is concat(h, c), d = 2 * hidden_size)."
        )
    return h0, batch is not None


# Spectra on a task.


class RNNSpectrum(eqx.Module):
    """The result of `dynjax.rnn_spectrum`.

    **Attributes:**

    - `exponents`: shape `(batch, k)`, the spectrum on each input sequence, in
        descending order, in nats (or bits, with `base=2`) per step.
    - `mean`: shape `(k,)`, the mean over sequences: the network's spectrum on
        its input process.
    - `std`: shape `(k,)`, the standard deviation over sequences (the spread of
        the finite-time estimates; the standard error of `mean` is
        `std / sqrt(batch)`).
    - `state`: a `dynjax.LyapunovState` with a leading batch axis: the final
        hidden states and tangent frames, to continue on more input
        (`lyapunov_spectrum(cell, ..., state=jax.tree.map(lambda a: a[i], state))`).
    - `result`: a `dynjax.RESULTS` code per sequence, shape `(batch,)`.
    """

    exponents: Float[Array, "batch k"]
    mean: Float[Array, " k"]
    std: Float[Array, " k"]
    state: LyapunovState
    result: RESULTS


def rnn_spectrum(
    cell: AbstractDrivenMap,
    inputs: PyTree[Array],
    h0: Float[Array, "*batch d"] | None = None,
    *,
    k: int | None = None,
    warmup: int = 0,
    base: Literal["e"] | float = "e",
    args: Args = None,
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> RNNSpectrum:
    r"""The Lyapunov spectrum of a recurrent network on its task's inputs.

    A network driven by inputs drawn from a stationary process is a random
    dynamical system (Arnold 1998): its Lyapunov exponents are the growth rates
    of perturbations of the hidden state along the input-driven trajectory,
    the same for almost every input sequence. This is the spectrum of the
    trained network on its task (Vogt et al. 2022; Engelken et al. 2023): for
    each input sequence the Benettin QR method of `dynjax.lyapunov_spectrum`
    runs along the hidden-state trajectory, re-orthonormalizing the `(d, k)`
    tangent block after every step (the hidden-state Jacobians come from
    `jax.jvp`, so any cell works). The sequences run in one compiled,
    vmapped program. Exponents are per step of the network (one input each).

    To compare a population of networks, `eqx.filter_vmap` this function over
    a stacked population (cells whose array fields have a leading axis, e.g.
    built by `eqx.filter_vmap(lambda key: dynjax.rnn.GRU(..., key=key))(keys)`).

    **Arguments:**

    - `cell`: a driven map `h_{t+1} = F(h_t, u_{t+1})`: a `dynjax.rnn` cell,
        `dynjax.rnn.Cell`, or any `dynjax.AbstractDrivenMap`.
    - `inputs`: the input sequences, shape `(batch, T, m)` (real vectors),
        `(batch, T)` (token ids or scalars), or a pytree of arrays sharing the
        leading axes `(batch, T)`. For one sequence pass `inputs[None]`.
    - `h0`: the initial hidden state, shape `(d,)` (shared) or `(batch, d)`;
        default zeros. For an LSTM, `d = 2 * hidden_size` (`concat(h, c)`).
    - `k`: the number of exponents, `1 <= k <= d` (default `d`). The cost is
        proportional to `k` (`O(T d^2 k)` per sequence).
    - `warmup`: the number of leading steps of each sequence over which the
        hidden state and the tangent frame evolve (the frame aligns with the
        leading Oseledets directions) but nothing is accumulated; the exponents
        are averaged over the last `T - warmup` steps. Vogt et al. use 500.
    - `base`: `"e"` for nats per step (default) or `2` for bits per step.
    - `args`: run-time arguments of the cell's `step`.
    - `key`: a PRNG key for the random initial tangent frame (default `key(0)`).
    - `throw`: raise on failure (default); otherwise read `result.result`.

    **Returns:**

    A `dynjax.RNNSpectrum`; `.mean` is the averaged and `.exponents` the
    per-sequence spectrum.

    **Raises:**

    `ValueError` for inputs without a `(batch, T)` lead, a `warmup` that leaves
    no step to accumulate, `h0` of the wrong shape, `k > d`, or inputs whose
    feature size does not match the cell (the cell's own message);
    `equinox.EquinoxRuntimeError` (with `throw=True`) if a hidden state or a
    tangent became non-finite (`RESULTS.map_escaped`,
    `RESULTS.nonfinite_tangent_map`).

    !!! Example

        ```python
        cell = dynjax.rnn.VanillaRNN(128, 8, gain=2.0, key=jr.key(0))
        xs = jr.normal(jr.key(1), (16, 2000, 8))
        res = dynjax.rnn_spectrum(cell, xs, k=10, warmup=500)
        res.mean, res.std  # shapes (10,), (10,)
        ```

    **References:**

    R. Vogt, M. Puelma Touzel, E. Shlizerman, G. Lajoie, "On Lyapunov exponents
    for RNNs: understanding information propagation using dynamical systems
    tools", Frontiers in Applied Mathematics and Statistics 8 (2022).
    R. Engelken, F. Wolf, L. F. Abbott, "Lyapunov spectra of chaotic recurrent
    neural networks", Phys. Rev. Research 5, 043044 (2023).
    L. Arnold, *Random Dynamical Systems*, Springer (1998).
    """
    verb = "rnn_spectrum"
    _check_cell(cell, verb)
    batch, n_time = _sequence_shape(inputs, verb, batched=True, cell=cell)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an int >= 0, got {warmup!r}.")
    if warmup >= n_time:
        raise ValueError(
            f"`warmup={warmup}` leaves no step to accumulate: the inputs have "
            f"T={n_time} steps. Pass longer sequences or a smaller `warmup`."
        )
    h0, _ = _initial_states(cell, h0, batch, verb)

    def one(h, xs):
        return lyapunov_spectrum(
            cell,
            h,
            k=k,
            inputs=xs,
            args=args,
            base=base,
            transient=0,
            tangent_warmup=warmup,
            n_steps=n_time - warmup,
            interval=1,
            key=key,
            n_history=1,
            throw=False,
        )

    out = eqx.filter_vmap(one)(h0, inputs)
    # (the first failing sequence's code, or success)
    first = jnp.argmax(out.result != RESULTS.successful)
    result = jax.tree.map(lambda code: code[first], out.result)
    exponents = out.exponents
    if throw:
        exponents = raise_if_failed(result, exponents)
    return RNNSpectrum(
        exponents=exponents,
        mean=jnp.mean(exponents, axis=0),
        std=jnp.std(exponents, axis=0),
        state=out.state,
        result=out.result,
    )


# Gradient propagation.


class GradientPropagation(eqx.Module):
    """The result of `dynjax.gradient_propagation`.

    **Attributes:**

    - `lags`: shape `(T,)`, the lags `tau = T - t = 1, ..., T` (integers).
    - `log_singular_values`: shape `(T, k)`: row `tau - 1` holds the QR
        estimates of `log sigma_i(dh_T / dh_{T - tau})`, `i = 1..k`, in nats (or
        in the unit of `base`). The mean slope over a range of lags is the
        Lyapunov spectrum.
    - `states`: shape `(T + 1, d)`, the hidden states `h_0, ..., h_T`.
    - `result`: a `dynjax.RESULTS` code: `map_escaped` if a hidden state became
        non-finite, `nonfinite_tangent_map` if a backpropagated vector did.
    """

    lags: Int[Array, " T"]
    log_singular_values: Float[Array, "T k"]
    states: Float[Array, "T+1 d"]
    result: RESULTS


def gradient_propagation(
    cell: AbstractDrivenMap,
    inputs: PyTree[Array],
    h0: Float[Array, " d"] | None = None,
    *,
    k: int | None = None,
    base: Literal["e"] | float = "e",
    args: Args = None,
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> GradientPropagation:
    r"""How gradients of a loss at the last step propagate back through time.

    Backpropagation through time multiplies the transposed hidden-state
    Jacobians: the gradient with respect to `h_t` of a loss on `h_T` is
    `B_tau^T g` with `B_tau = dh_T / dh_{T - tau} = J_T J_{T-1} ... J_{T-tau+1}`
    and `J_s = dF/dh (h_{s-1}, u_s)`. Its singular values say how much every
    direction of the gradient grows or vanishes over `tau` steps. Forming
    `B_tau` densely would lose all but the largest singular values to
    rounding once `tau (lambda_1 - lambda_i)` exceeds `log(1/eps)`, so the same
    QR machinery as the Lyapunov spectrum runs backwards from `T`:

    $$J_{T-\tau+1}^\top Q_{\tau-1} = Q_\tau R_\tau, \qquad
    \ell_i(\tau) = \sum_{s \le \tau} \log (R_s)_{ii},$$

    one vector-Jacobian product per column per step (`jax.vjp`, any cell), in
    `O(T d^2 k)` work, with a random orthonormal `(d, k)` start `Q_0`.

    **Link to the spectrum.** `exp(sum_{i<=j} l_i(tau))` is the volume that
    `B_tau^T` gives the first `j` columns of `Q_0`, so
    `sum_{i<=j} l_i(tau) <= sum_{i<=j} log sigma_i(B_tau)` for every `j`, with
    equality for `j = k = d` (the log-determinant); after an alignment of a
    few steps each `l_i` follows `log sigma_i` up to a bounded offset. The
    transposed (adjoint) cocycle has the same Lyapunov exponents as the
    forward one (Oseledets 1968), so the slopes converge to the spectrum:
    `(l_i(tau_2) - l_i(tau_1)) / (tau_2 - tau_1) -> lambda_i`. Directions with
    `lambda_i > 0` make gradients explode, `lambda_i < 0` make them vanish
    (Engelken 2023), at a rate `|lambda_i|` per step.

    **Arguments:**

    - `cell`: a driven map (a `dynjax.rnn` cell or any `AbstractDrivenMap`).
    - `inputs`: one input sequence, shape `(T, m)`, `(T,)` or a pytree of arrays
        with leading axis `T` (`jax.vmap` this function over a batch).
    - `h0`: the initial hidden state, shape `(d,)` (default zeros).
    - `k`: the number of directions, `1 <= k <= d` (default `d`).
    - `base`: `"e"` (nats, default) or `2` (bits).
    - `args`: run-time arguments of the cell's `step`.
    - `key`: a PRNG key for the random start frame `Q_0` (default `key(0)`).
    - `throw`: raise on failure (default); otherwise read `result.result`.

    **Returns:**

    A `dynjax.GradientPropagation`. A direction that a step maps to zero (a
    singular Jacobian, e.g. dead ReLU units) has `log sigma = -inf` from then on.

    **Raises:**

    `ValueError` for `k` outside `[1, d]`, `h0` of the wrong shape or inputs the
    cell rejects; `equinox.EquinoxRuntimeError` (with `throw=True`) if a hidden
    state or a backpropagated vector became non-finite (non-finite weights or
    inputs, or a network whose state diverges).

    !!! Example

        ```python
        gp = dynjax.gradient_propagation(cell, xs, k=4)  # xs: (T, m)
        slope = (gp.log_singular_values[-1] - gp.log_singular_values[99]) / (
            gp.lags[-1] - gp.lags[99]
        )  # ~ the 4 leading Lyapunov exponents
        ```

    **References:**

    R. Engelken, "Gradient flossing: improving gradient descent through dynamic
    control of Jacobians", NeurIPS (2023). V. I. Oseledets, "A multiplicative
    ergodic theorem", Trans. Moscow Math. Soc. 19, 197-231 (1968).
    """
    verb = "gradient_propagation"
    _check_cell(cell, verb)
    (n_time,) = _sequence_shape(inputs, verb, batched=False, cell=cell)
    h0, _ = _initial_states(cell, h0, None, verb)
    d = h0.shape[0]
    k = d if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
        raise ValueError(
            f"`k={k!r}` must be an int between 1 and the state dimension d={d}."
        )
    log_base = 1.0 if base == "e" else float(np.log(base))
    u0 = jax.tree.map(lambda a: a[0], inputs)
    cell, h0, args = conform(cell, h0, verb=verb, args=args, u=u0)
    key = jr.key(0) if key is None else key
    Q0, _ = jnp.linalg.qr(jr.normal(key, (d, k), h0.dtype))
    out = _gradient_propagation(cell, inputs, h0, Q0, args, log_base)
    if throw:
        values = raise_if_failed(out.result, out.log_singular_values)
        out = eqx.tree_at(lambda r: r.log_singular_values, out, values)
    return out


@eqx.filter_jit
def _gradient_propagation(cell, inputs, h0, Q0, args, log_base):
    def forward(h, u):
        h = cell.step(h, u, args)
        return h, h

    _, hs = jax.lax.scan(forward, h0, inputs)
    states = jnp.concatenate([h0[None], hs])

    def backward(Q, xs):
        h, u = xs
        _, pullback = jax.vjp(lambda x: cell.step(x, u, args), h)
        (V,) = jax.vmap(pullback, in_axes=1, out_axes=1)(Q)
        Q, R = qr_positive(V)
        return Q, (safe_log(jnp.diagonal(R)), jnp.all(jnp.isfinite(V)))

    # (h_{T-tau} and u_{T-tau+1} for tau = 1..T)
    _, (logs, finite) = jax.lax.scan(backward, Q0, (states[:-1], inputs), reverse=True)
    logs = logs[::-1]
    n_time = logs.shape[0]
    code = RESULTS.where(
        jnp.all(finite), RESULTS.successful, RESULTS.nonfinite_tangent_map
    )
    code = RESULTS.where(jnp.all(jnp.isfinite(states)), code, RESULTS.map_escaped)
    return GradientPropagation(
        lags=jnp.arange(1, n_time + 1),
        log_singular_values=jnp.cumsum(logs, axis=0) / log_base,
        states=states,
        result=code,
    )
