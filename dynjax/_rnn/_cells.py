"""Recurrent cells as driven maps `h_{t+1} = F(h_t, u_{t+1})`.

Three final cells with the standard equations (`VanillaRNN`, `GRU`, `LSTM`) and an
adapter (`Cell`) that turns any equinox cell with `__call__(u, h)` into a driven
map. Every dynjax verb for driven maps applies to them (`trajectory`,
`lyapunov_spectrum(..., inputs=...)`, `jacobian(..., u=...)`); their Jacobians come
from `jax.jvp`, so no cell needs a hand-derived Jacobian.
"""

import abc
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._custom_types import Args, Input, State
from .._system import AbstractDrivenMap


Init = Literal["normal", "uniform"]


# Construction checks.


def _check_size(value, name: str, cls: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"`{cls}` needs `{name}` to be a Python int >= {minimum}, got {value!r}."
        )


def _finite(x, name: str, cls: str):
    """`x` checked to be finite: `ValueError` naming the field for a concrete
    array, `eqx.error_if` for a traced one (a cell built inside `jit`/`vmap`)."""
    message = (
        f"`{cls}.{name}` contains non-finite values (NaN or inf); build the cell "
        "with finite weights (check the initialization gain, or the training step "
        "that produced them)."
    )
    if isinstance(x, jax.core.Tracer):
        return eqx.error_if(x, jnp.any(~jnp.isfinite(x)), message)
    if not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(message)
    return x


def _weights(
    key, shape, fan_in: int, init: Init, gain, cls: str, recurrent: bool
) -> Array:
    """A weight matrix: `N(0, gain^2 / fan_in)` or `U(-p, p)` with `p = gain`."""
    dtype = jnp.result_type(float)
    if init == "normal":
        g = 1.0 if gain is None or not recurrent else gain
        return g * jr.normal(key, shape, dtype) / np.sqrt(fan_in)
    if init == "uniform":
        return jr.uniform(key, shape, dtype, -1.0, 1.0) * gain
    raise ValueError(
        f"`{cls}` got init={init!r}; pass `init='normal'` (W ~ N(0, g^2/N)) or "
        "`init='uniform'` (W ~ U(-p, p))."
    )


def _bias(key, shape, init: Init, gain) -> Array:
    dtype = jnp.result_type(float)
    if init == "uniform":
        return jr.uniform(key, shape, dtype, -1.0, 1.0) * gain
    return jnp.zeros(shape, dtype)


def _uniform_p(init: Init, gain, hidden_size: int):
    if init == "uniform" and gain is None:
        return 1.0 / np.sqrt(hidden_size)  # PyTorch's default for its RNN cells
    return gain


def _input_vector(u, input_size: int, vocab_size: int | None, embedding, cls: str):
    """One step's input as a vector of shape `(input_size,)`: a token id looked up
    in the embedding, or a real vector checked for its size (at trace time)."""
    u = jnp.asarray(u)
    if vocab_size is not None:
        if u.shape != () or not jnp.issubdtype(u.dtype, jnp.integer):
            raise ValueError(
                f"`{cls}` was built with vocab_size={vocab_size}, so each input is "
                f"one integer token id in [0, {vocab_size}); got an input of shape "
                f"{u.shape} and dtype {u.dtype.name}. Pass `inputs=` as an integer "
                "array of shape (T,)."
            )
        # (JAX's gather would clamp an out-of-range id silently.)
        u = eqx.error_if(
            u,
            (u < 0) | (u >= vocab_size),
            f"`{cls}`: a token id is outside [0, {vocab_size}) (the vocabulary); "
            "check the inputs' encoding, or build the cell with a larger vocab_size.",
        )
        return embedding[u]
    if u.shape != (input_size,):
        raise ValueError(
            f"`{cls}` has input_size={input_size} but one step's input has shape "
            f"{u.shape}. Pass `inputs=` of shape (T, {input_size}), or build the cell "
            f"with input_size={u.shape[-1] if u.ndim else 1}."
        )
    return u


def _check_hidden(x, d: int, cls: str) -> None:
    if jnp.shape(x) != (d,):
        raise ValueError(
            f"`{cls}` has a state of shape ({d},) but got a hidden state of shape "
            f"{jnp.shape(x)}. Pass a state of shape ({d},)."
        )


def _embedding(key, vocab_size, input_size, cls):
    if vocab_size is None:
        return None
    _check_size(vocab_size, "vocab_size", cls)
    return jr.normal(key, (vocab_size, input_size), jnp.result_type(float))


class AbstractCell(AbstractDrivenMap):
    """A recurrent cell: a driven map with a hidden state and a linear readout.

    Subclasses define `step`, `hidden` (the part of the state that the readout
    sees) and the `readout` field. `states` and `predict` run the cell over an
    input sequence in one `lax.scan`; `jax.vmap` them over a batch.
    """

    readout: eqx.AbstractVar[eqx.nn.Linear | None]

    @abc.abstractmethod
    def hidden(self, x: State) -> Float[Array, " N"]:
        """The hidden vector `h` of the state `x` (what the readout sees)."""

    def states(
        self, inputs: PyTree[Array], h0: State | None = None, args: Args = None
    ) -> Float[Array, "T d"]:
        """The states `x_1, ..., x_T` after each input.

        **Arguments:** `inputs`, the input sequence (leading axis time, as for
        `dynjax.trajectory`); `h0`, the initial state of shape `(d,)` (default
        zeros); `args`, passed to `step`.

        **Returns:** shape `(T, d)`; row `t` is the state after `inputs[t]`.
        """
        if h0 is None:
            h0 = jnp.zeros((self.d,), jnp.result_type(float))

        def body(x, u):
            x = self.step(x, u, args)
            return x, x

        return jax.lax.scan(body, h0, inputs)[1]

    def predict(
        self, inputs: PyTree[Array], h0: State | None = None, args: Args = None
    ) -> Float[Array, "T out"]:
        """The readout `y_t = readout(hidden(x_t))` after each input, shape
        `(T, output_size)`: what a training loss compares with the targets.

        **Raises:** `ValueError` if the cell has no readout (a `Cell` built
        without `output_size` and `key`).
        """
        if self.readout is None:
            raise ValueError(
                f"`{type(self).__name__}` has no readout: build it with "
                "`output_size=` and `key=`."
            )
        hs = jax.vmap(self.hidden)(self.states(inputs, h0, args))
        return jax.vmap(self.readout)(hs)


class VanillaRNN(AbstractCell):
    r"""The vanilla (Elman) recurrent network as a driven map.

    $$h_{t+1} = \phi(W h_t + U u_{t+1} + b),$$

    with any elementwise nonlinearity `phi` (default `tanh`). The state is `h`,
    shape `(hidden_size,)`; `d = hidden_size`.

    **Arguments:**

    - `hidden_size`: `N`, the number of units (a Python int).
    - `input_size`: `m`, the size of one input vector (after the embedding).
    - `vocab_size`: if given, each input is an integer token id in
        `[0, vocab_size)`, mapped to a vector by the `embedding` field (shape
        `(vocab_size, m)`), and `inputs=` is an integer array of shape `(T,)`;
        otherwise inputs are real vectors, `inputs=` of shape `(T, m)`.
    - `output_size`: the size of the linear `readout` (an `eqx.nn.Linear`,
        `y = readout(h)`, for training); default `vocab_size` or `input_size`.
    - `activation`: `phi`, default `jnp.tanh` (static: part of the compiled code).
    - `use_bias`: whether `b` is used (default `True`; `b` is zero at
        `init="normal"`).
    - `init`: `"normal"` (default): the recurrent weights are
        `W_ij ~ N(0, g^2 / N)` with `g = gain` (default 1), the convention of
        random-network theory (Sompolinsky, Crisanti & Sommers 1988; Molgedey,
        Schuchhardt & Schuster 1992: the origin of `tanh(W h)` loses stability
        at `g = 1`); input weights `N(0, 1 / input_size)`; biases and the
        embedding: biases zero, embedding `N(0, 1)`. `"uniform"`: every weight
        and bias `~ U(-p, p)` with `p = gain` (default `1 / sqrt(N)`, PyTorch's
        default), the initialization scanned in the AeLLE literature (Vogt et al.
        2022); the embedding `N(0, 1)`.
    - `gain`: `g` for `init="normal"`, `p` for `init="uniform"`.
    - `key`: a `jax.random` key; the same key gives the same weights.

    Fields: `W` `(N, N)`, `U` `(N, m)`, `b` `(N,)` (or `None`), `embedding`
    `(vocab_size, m)` (or `None`), `readout`.

    **Raises:** `ValueError` at construction for a bad size or `init`, or a
    non-finite weight (naming the field); at trace time (first call of a verb)
    when one step's input does not match `input_size` (or is not a token id when
    `vocab_size` is set), or the hidden state is not of shape `(N,)`.

    **References:** J. L. Elman, "Finding structure in time", Cognitive Science 14,
    179-211 (1990); L. Molgedey, J. Schuchhardt and H. G. Schuster, "Suppressing
    chaos in neural networks by noise", Phys. Rev. Lett. 69, 3717 (1992);
    R. Vogt, M. Puelma Touzel, E. Shlizerman and G. Lajoie, "On Lyapunov exponents
    for RNNs: understanding information propagation using dynamical systems
    tools", Front. Appl. Math. Stat. 8, 818799 (2022).
    """

    W: Float[Array, "N N"]
    U: Float[Array, "N m"]
    b: Float[Array, " N"] | None
    embedding: Float[Array, "V m"] | None
    readout: eqx.nn.Linear
    activation: Callable = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    vocab_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        hidden_size: int,
        input_size: int,
        *,
        vocab_size: int | None = None,
        output_size: int | None = None,
        activation: Callable = jnp.tanh,
        use_bias: bool = True,
        init: Init = "normal",
        gain=None,
        key: PRNGKeyArray,
    ):
        cls = "VanillaRNN"
        _check_size(hidden_size, "hidden_size", cls)
        _check_size(input_size, "input_size", cls)
        gain = _uniform_p(init, gain, hidden_size)
        kw, ku, kb, ke, kr = jr.split(key, 5)
        self.W = _finite(
            _weights(kw, (hidden_size,) * 2, hidden_size, init, gain, cls, True),
            "W",
            cls,
        )
        self.U = _finite(
            _weights(ku, (hidden_size, input_size), input_size, init, gain, cls, False),
            "U",
            cls,
        )
        self.b = _bias(kb, (hidden_size,), init, gain) if use_bias else None
        self.embedding = _embedding(ke, vocab_size, input_size, cls)
        out = output_size or vocab_size or input_size
        self.readout = eqx.nn.Linear(hidden_size, out, key=kr)
        self.activation = activation
        self.hidden_size = hidden_size
        self.input_size = input_size
        self.vocab_size = vocab_size

    @property
    def d(self) -> int:
        return self.hidden_size

    def preactivation(self, x: State, u: Input) -> Float[Array, " N"]:
        """`a = W h + U u + b`, so that `h' = phi(a)` and `DF = diag(phi'(a)) W`."""
        _check_hidden(x, self.d, "VanillaRNN")
        u = _input_vector(
            u, self.input_size, self.vocab_size, self.embedding, "VanillaRNN"
        )
        a = self.W @ x + self.U @ u
        return a if self.b is None else a + self.b

    def step(self, x: State, u: Input, args: Args = None) -> State:
        del args
        return self.activation(self.preactivation(x, u))

    def hidden(self, x: State) -> Float[Array, " N"]:
        """The hidden state `h` (the whole state)."""
        return x


class GRU(AbstractCell):
    r"""The gated recurrent unit (Cho et al. 2014) as a driven map.

    The equations of `eqx.nn.GRUCell` (and PyTorch's `nn.GRUCell`), with the
    reset gate applied after the recurrent product:

    $$\begin{aligned}
    r &= \sigma(W_{ir} u + b_r + W_{hr} h), \qquad
    z = \sigma(W_{iz} u + b_z + W_{hz} h), \\
    n &= \tanh(W_{in} u + b_n + r \odot (W_{hn} h + b_{hn})), \qquad
    h' = (1 - z) \odot n + z \odot h.
    \end{aligned}$$

    The state is `h`, shape `(hidden_size,)`; `d = hidden_size`. Fields as in
    `eqx.nn.GRUCell`: `weight_ih` `(3N, m)` and `weight_hh` `(3N, N)` stacking
    the `(r, z, n)` blocks, `bias` `(3N,)` and `bias_n` `(N,)` (or `None`); so the
    weights of a trained `eqx.nn.GRUCell` can be copied in with `eqx.tree_at`.

    **Arguments:** as `VanillaRNN` (without `activation`):
    `hidden_size`, `input_size`, `vocab_size`, `output_size`, `use_bias`,
    `init`, `gain`, `key`. At `init="normal"` each recurrent block is
    `N(0, g^2 / N)`.

    **Raises:** as `VanillaRNN`.

    **Reference:** K. Cho, B. van Merrienboer, C. Gulcehre, D. Bahdanau,
    F. Bougares, H. Schwenk and Y. Bengio, "Learning phrase representations using
    RNN encoder-decoder for statistical machine translation", EMNLP (2014).
    """

    weight_ih: Float[Array, "3N m"]
    weight_hh: Float[Array, "3N N"]
    bias: Float[Array, " 3N"] | None
    bias_n: Float[Array, " N"] | None
    embedding: Float[Array, "V m"] | None
    readout: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    vocab_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        hidden_size: int,
        input_size: int,
        *,
        vocab_size: int | None = None,
        output_size: int | None = None,
        use_bias: bool = True,
        init: Init = "normal",
        gain=None,
        key: PRNGKeyArray,
    ):
        cls = "GRU"
        _check_size(hidden_size, "hidden_size", cls)
        _check_size(input_size, "input_size", cls)
        gain = _uniform_p(init, gain, hidden_size)
        N = hidden_size
        ki, kh, kb, kn, ke, kr = jr.split(key, 6)
        self.weight_ih = _finite(
            _weights(ki, (3 * N, input_size), input_size, init, gain, cls, False),
            "weight_ih",
            cls,
        )
        self.weight_hh = _finite(
            _weights(kh, (3 * N, N), N, init, gain, cls, True), "weight_hh", cls
        )
        self.bias = _bias(kb, (3 * N,), init, gain) if use_bias else None
        self.bias_n = _bias(kn, (N,), init, gain) if use_bias else None
        self.embedding = _embedding(ke, vocab_size, input_size, cls)
        out = output_size or vocab_size or input_size
        self.readout = eqx.nn.Linear(N, out, key=kr)
        self.hidden_size = N
        self.input_size = input_size
        self.vocab_size = vocab_size

    @property
    def d(self) -> int:
        return self.hidden_size

    def step(self, x: State, u: Input, args: Args = None) -> State:
        del args
        _check_hidden(x, self.d, "GRU")
        u = _input_vector(u, self.input_size, self.vocab_size, self.embedding, "GRU")
        gi = self.weight_ih @ u
        if self.bias is not None:
            gi = gi + self.bias
        gh = self.weight_hh @ x
        i_r, i_z, i_n = jnp.split(gi, 3)
        h_r, h_z, h_n = jnp.split(gh, 3)
        if self.bias_n is not None:
            h_n = h_n + self.bias_n
        r = jax.nn.sigmoid(i_r + h_r)
        z = jax.nn.sigmoid(i_z + h_z)
        n = jnp.tanh(i_n + r * h_n)
        return n + z * (x - n)

    def hidden(self, x: State) -> Float[Array, " N"]:
        """The hidden state `h` (the whole state)."""
        return x


class LSTM(AbstractCell):
    r"""The long short-term memory cell as a driven map.

    The equations of `eqx.nn.LSTMCell` and PyTorch's `nn.LSTMCell` (Hochreiter &
    Schmidhuber 1997, with the forget gate of Gers, Schmidhuber & Cummins 2000;
    one bias per gate; gate order `(i, f, g, o)`):

    $$\begin{aligned}
    (i, f, g, o) &= (\sigma, \sigma, \tanh, \sigma)(W_{ih} u + W_{hh} h + b), \\
    c' &= f \odot c + i \odot g, \qquad h' = o \odot \tanh(c').
    \end{aligned}$$

    **The state is `x = concat(h, c)`, shape `(2N,)`, `d = 2 hidden_size`**: the
    first `N` entries are the hidden state `h`, the last `N` the cell state `c`.
    Lyapunov spectra therefore have `2N` exponents (of the joint `(h, c)`
    dynamics, as in Vogt et al. 2022); `hidden(x)` returns `h`, the part the
    `readout` sees. Fields as in `eqx.nn.LSTMCell`: `weight_ih` `(4N, m)`,
    `weight_hh` `(4N, N)`, `bias` `(4N,)` (or `None`).

    **Arguments:** as `GRU`. At `init="normal"` each recurrent block is
    `N(0, g^2 / N)`.

    **Raises:** as `VanillaRNN` (the state must have shape `(2N,)`).

    **References:** S. Hochreiter and J. Schmidhuber, "Long short-term memory",
    Neural Computation 9, 1735-1780 (1997); F. A. Gers, J. Schmidhuber and
    F. Cummins, "Learning to forget: continual prediction with LSTM", Neural
    Computation 12, 2451-2471 (2000).
    """

    weight_ih: Float[Array, "4N m"]
    weight_hh: Float[Array, "4N N"]
    bias: Float[Array, " 4N"] | None
    embedding: Float[Array, "V m"] | None
    readout: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    vocab_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        hidden_size: int,
        input_size: int,
        *,
        vocab_size: int | None = None,
        output_size: int | None = None,
        use_bias: bool = True,
        init: Init = "normal",
        gain=None,
        key: PRNGKeyArray,
    ):
        cls = "LSTM"
        _check_size(hidden_size, "hidden_size", cls)
        _check_size(input_size, "input_size", cls)
        gain = _uniform_p(init, gain, hidden_size)
        N = hidden_size
        ki, kh, kb, ke, kr = jr.split(key, 5)
        self.weight_ih = _finite(
            _weights(ki, (4 * N, input_size), input_size, init, gain, cls, False),
            "weight_ih",
            cls,
        )
        self.weight_hh = _finite(
            _weights(kh, (4 * N, N), N, init, gain, cls, True), "weight_hh", cls
        )
        self.bias = _bias(kb, (4 * N,), init, gain) if use_bias else None
        self.embedding = _embedding(ke, vocab_size, input_size, cls)
        out = output_size or vocab_size or input_size
        self.readout = eqx.nn.Linear(N, out, key=kr)
        self.hidden_size = N
        self.input_size = input_size
        self.vocab_size = vocab_size

    @property
    def d(self) -> int:
        return 2 * self.hidden_size

    def step(self, x: State, u: Input, args: Args = None) -> State:
        del args
        _check_hidden(x, self.d, "LSTM")
        u = _input_vector(u, self.input_size, self.vocab_size, self.embedding, "LSTM")
        h, c = jnp.split(x, 2)
        lin = self.weight_ih @ u + self.weight_hh @ h
        if self.bias is not None:
            lin = lin + self.bias
        i, f, g, o = jnp.split(lin, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return jnp.concatenate([h, c])

    def hidden(self, x: State) -> Float[Array, " N"]:
        """The hidden state `h = x[:N]` (without the cell state `c`)."""
        return x[: self.hidden_size]


class Cell(AbstractCell):
    """Any recurrent cell `h' = cell(u, h)` as a driven map.

    Wraps an `eqx.nn.GRUCell`, an `eqx.nn.LSTMCell`, or any callable Module with
    the equinox cell signature `__call__(u, h)`, so that every dynjax verb for
    driven maps applies to it: `step(x, u) = flatten(cell(u, unflatten(x)))`.

    A cell whose hidden state is a tuple of `p` vectors of size `hidden_size`
    (`eqx.nn.LSTMCell`: `(h, c)`, `p = 2`) runs on their concatenation, **`x =
    concat(h, c)` of shape `(p hidden_size,)`**, the same layout as `dynjax.rnn.LSTM`;
    `hidden(x)` returns the first part, `h`.

    **Arguments:**

    - `cell`: the cell, a Module (its array leaves are the parameters: they are
        differentiated, vmapped and cast to the state's dtype like any system's).
    - `hidden_size`: the size of each hidden vector; default `cell.hidden_size`
        (set by the equinox cells).
    - `input_size`: the size of one input vector, checked at trace time; default
        `cell.input_size` if the cell has it, else unchecked (`None`).
    - `parts`: `p`, the number of vectors in the hidden state: `None` (default)
        means 2 for an `eqx.nn.LSTMCell` and 1 (a single array) otherwise.
    - `output_size`, `key`: if both are given, a linear `readout`
        (`eqx.nn.Linear(hidden_size, output_size)`); else `readout` is `None`.

    **Raises:** `ValueError` at construction when `hidden_size` is missing or not
    a positive int, or a parameter of `cell` is not finite (naming it); at trace
    time when one step's input does not have shape `(input_size,)` or the state is
    not of shape `(p hidden_size,)`.

    **Example:**

    ```python
    cell = dynjax.rnn.Cell(eqx.nn.GRUCell(3, 16, key=key))
    dynjax.lyapunov_spectrum(cell, jnp.zeros(16), inputs=us)
    ```
    """

    cell: Callable
    readout: eqx.nn.Linear | None
    hidden_size: int = eqx.field(static=True)
    input_size: int | None = eqx.field(static=True)
    parts: int = eqx.field(static=True)

    def __init__(
        self,
        cell: Callable,
        hidden_size: int | None = None,
        input_size: int | None = None,
        *,
        parts: int | None = None,
        output_size: int | None = None,
        key: PRNGKeyArray | None = None,
    ):
        if hidden_size is None:
            hidden_size = getattr(cell, "hidden_size", None)
            if hidden_size is None:
                raise ValueError(
                    f"`Cell` cannot tell the hidden size of {type(cell).__name__}; "
                    "pass `hidden_size=` (the size of one hidden vector)."
                )
        if input_size is None:
            input_size = getattr(cell, "input_size", None)
        if parts is None:
            parts = 2 if isinstance(cell, eqx.nn.LSTMCell) else 1
        _check_size(hidden_size, "hidden_size", "Cell")
        if input_size is not None:
            _check_size(input_size, "input_size", "Cell")
        _check_size(parts, "parts", "Cell")
        leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(cell, eqx.is_array))
        for path, leaf in leaves[0]:
            name = "cell" + jax.tree_util.keystr(path)
            if jnp.issubdtype(leaf.dtype, jnp.inexact):
                _finite(leaf, name.removeprefix("cell."), "Cell(cell)")
        if (output_size is None) != (key is None):
            raise ValueError(
                "`Cell` builds a readout only from both `output_size=` and `key=`; "
                "pass both (a linear readout of the hidden state), or neither."
            )
        self.cell = cell
        if output_size is not None:
            self.readout = eqx.nn.Linear(hidden_size, output_size, key=key)
        else:
            self.readout = None
        self.hidden_size = hidden_size
        self.input_size = input_size
        self.parts = parts

    @property
    def d(self) -> int:
        return self.parts * self.hidden_size

    def step(self, x: State, u: Input, args: Args = None) -> State:
        del args
        _check_hidden(x, self.d, "Cell")
        if self.input_size is not None:
            u = _input_vector(u, self.input_size, None, None, "Cell")
        h = x if self.parts == 1 else tuple(jnp.split(x, self.parts))
        out = self.cell(u, h)
        return out if self.parts == 1 else jnp.concatenate(out)

    def hidden(self, x: State) -> Float[Array, " N"]:
        """The hidden state `h = x[:hidden_size]` (the whole state if `parts=1`)."""
        return x[: self.hidden_size]
