"""Populations of recurrent networks trained together, and their spectra.

A population of one cell type and hidden size is one Module whose array leaves have
a leading population axis (built by `eqx.filter_vmap` over init keys). Training the
sum of the networks' losses with an optimizer that acts elementwise (Adam) and a
per-network learning rate and gradient clip is the same as training every network
on its own, step for step, but runs as one compiled program.
"""

from collections.abc import Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._rnn import AbstractCell, GRU, LSTM, rnn_spectrum, VanillaRNN
from .._training import fit


CellKind = Literal["vanilla", "gru", "lstm"]
_MAKERS = {"vanilla": VanillaRNN, "gru": GRU, "lstm": LSTM}


# Optimizer: one learning rate and one gradient clip per network.


def _per_network(leaf, factor):
    """`factor` (shape `(n,)`) broadcast against a stacked leaf `(n, ...)`."""
    return factor.reshape(factor.shape + (1,) * (leaf.ndim - 1)).astype(leaf.dtype)


def _network_norms(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(
        sum(jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1) for x in leaves)
    )


def population_adam(
    learning_rates: Float[Array, " n"], max_grad_norm: float | None = 1.0
) -> optax.GradientTransformation:
    """Adam for a stacked population: each network's gradient clipped to its own
    global norm `max_grad_norm`, then Adam (elementwise), then its own learning
    rate. Equal, network by network, to `optax.chain(optax.clip_by_global_norm(c),
    optax.adam(lr_i))` on that network alone."""
    learning_rates = jnp.asarray(learning_rates)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        if max_grad_norm is not None:
            norms = _network_norms(updates)
            scale = jnp.minimum(1.0, max_grad_norm / jnp.maximum(norms, 1e-30))
            updates = jax.tree.map(lambda u: u * _per_network(u, scale), updates)
        return updates, state

    clip = optax.GradientTransformation(init, update)

    def init_lr(params):
        del params
        return optax.EmptyState()

    def update_lr(updates, state, params=None):
        del params
        return jax.tree.map(
            lambda u: -u * _per_network(u, learning_rates), updates
        ), state

    return optax.chain(
        clip, optax.scale_by_adam(), optax.GradientTransformation(init_lr, update_lr)
    )


# One stack: networks of one cell type and hidden size.


class Stack(eqx.Module):
    """Networks of one cell type and hidden size, trained together.

    **Attributes:**

    - `cells`: the trained cells, one Module whose array leaves have a leading
        axis of size `n` (select network `i` with
        `jax.tree.map(lambda a: a[i], stack.cells)` on the array leaves, or
        `stack.network(i)`).
    - `kind`: `"vanilla"`, `"gru"` or `"lstm"`.
    - `hidden_size`: `N`; the state has `d = N` (`2 N` for the LSTM).
    - `init_scale`: shape `(n,)`, each network's initialization scale `p`
        (weights `U(-p, p)`).
    - `learning_rates`: shape `(n,)`.
    - `losses`: shape `(n, n_steps)`, each network's training curve.
    - `accuracy`: shape `(n,)`, held-out accuracy on the task's test set.
    - `test_loss`: shape `(n,)`, held-out loss.
    """

    cells: AbstractCell
    kind: str = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    init_scale: Float[Array, " n"]
    learning_rates: Float[Array, " n"]
    losses: Float[Array, "n steps"]
    accuracy: Float[Array, " n"]
    test_loss: Float[Array, " n"]

    @property
    def n(self) -> int:
        return self.init_scale.shape[0]

    def network(self, i: int) -> AbstractCell:
        """Network `i` of the stack, as an ordinary cell."""
        arrays, static = eqx.partition(self.cells, eqx.is_array)
        return eqx.combine(jax.tree.map(lambda a: a[i], arrays), static)


def _make_cells(kind, hidden_size, task, keys, scales):
    maker = _MAKERS[kind]

    def make(key, p):
        return maker(
            hidden_size,
            task.input_size,
            output_size=task.n_classes,
            init="uniform",
            gain=p,
            key=key,
        )

    return eqx.filter_vmap(make)(keys, scales)


def _stack_loss(task, batch_size):
    def loss(cells, _, key):
        x, y = task.sample(key, batch_size)

        def one(cell):
            return task.loss(jax.vmap(cell.predict)(x), y)

        losses = eqx.filter_vmap(one)(cells)
        # (the sum: each network's gradient is that of its own loss; each
        # network's loss is kept as the auxiliary output, its training curve)
        return jnp.sum(losses), losses

    return loss


def _evaluate(task, cells):
    x, y = task.test_set()

    def one(cell):
        logits = jax.vmap(cell.predict)(x)
        return task.accuracy(logits, y), task.loss(logits, y)

    return eqx.filter_vmap(one)(cells)


def train_stack(
    task,
    *,
    kind: CellKind,
    hidden_size: int,
    init_scale: Float[Array, " n"],
    learning_rates: Float[Array, " n"],
    key: PRNGKeyArray,
    n_steps: int,
    batch_size: int = 64,
    max_grad_norm: float | None = 1.0,
    chunk_size: int = 100,
    progress: bool = True,
) -> Stack:
    """Train `n` networks of one cell type and hidden size as one program.

    Network `i` is initialized with `U(-p_i, p_i)` recurrent and input weights
    and biases (`p_i = init_scale[i]`, key `jr.fold_in(key, i)`; the linear
    readout keeps equinox's default initialization) and trained with Adam at learning
    rate `learning_rates[i]`, its gradient clipped to norm `max_grad_norm`; all
    networks see the same minibatches. The result is, network by network, what
    training each alone with the same keys gives (`population_adam`).

    **Arguments:** `task` (a `dynjax.aelle` task), `kind` (`"vanilla"`, `"gru"`
    or `"lstm"`), `hidden_size`, `init_scale` and `learning_rates` (shape
    `(n,)` each), `key`, `n_steps`, `batch_size`, `max_grad_norm` (`None`: no
    clipping), `chunk_size` and `progress` (as for `dynjax.fit`).

    **Returns:** a `dynjax.aelle.Stack`.

    **Raises:** `ValueError` for an unknown `kind` or `init_scale` and
    `learning_rates` of different or non-1-D shapes.
    """
    if kind not in _MAKERS:
        raise ValueError(f"`kind` must be one of {sorted(_MAKERS)}, got {kind!r}.")
    init_scale = jnp.asarray(init_scale)
    learning_rates = jnp.asarray(learning_rates)
    if init_scale.ndim != 1 or init_scale.shape != learning_rates.shape:
        raise ValueError(
            "`init_scale` and `learning_rates` must be 1-D arrays of the same "
            f"length (one value per network), got shapes {init_scale.shape} and "
            f"{learning_rates.shape}."
        )
    positive = np.all(np.asarray(learning_rates) > 0) & np.all(
        np.asarray(init_scale) > 0
    )
    if not positive:
        raise ValueError(
            "`init_scale` and `learning_rates` must be positive (a negative "
            "learning rate would ascend the loss)."
        )
    n = init_scale.shape[0]
    keys = jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(n))
    cells = _make_cells(kind, hidden_size, task, keys, init_scale)
    train_key = jr.fold_in(key, n)  # (init keys use 0..n-1)
    result = fit(
        _stack_loss(task, batch_size),
        cells,
        population_adam(learning_rates, max_grad_norm),
        n_steps=n_steps,
        key=train_key,
        chunk_size=chunk_size,
        progress=progress,
        has_aux=True,
    )
    accuracy, test_loss = _evaluate(task, result.model)
    curves = jnp.zeros((0, n)) if result.aux is None else result.aux
    return Stack(
        cells=result.model,
        kind=kind,
        hidden_size=hidden_size,
        init_scale=init_scale,
        learning_rates=learning_rates,
        losses=curves.T,
        accuracy=accuracy,
        test_loss=test_loss,
    )


# A population: several stacks behind one interface.


class Population(eqx.Module):
    """Networks of several cell types and hidden sizes, one `Stack` per
    combination; the per-network arrays below concatenate the stacks in order.

    **Attributes:** `stacks`, a non-empty tuple of `dynjax.aelle.Stack`.

    **Properties:** `n`, the number of networks; NumPy arrays of length `n`:
    `accuracy`, `test_loss`, `kinds`, `hidden_sizes`, `init_scale`,
    `learning_rates`; `losses` is `(n, n_steps)` (stacks trained for the same
    number of steps).

    **Methods:** `network(i)`, network `i` (global index) as an ordinary cell.
    """

    stacks: tuple[Stack, ...]

    def __check_init__(self):
        if not self.stacks or not all(isinstance(s, Stack) for s in self.stacks):
            raise ValueError(
                "`Population` needs a non-empty tuple of `dynjax.aelle.Stack` "
                "(from `train_stack`)."
            )

    def _cat(self, f):
        return np.concatenate([np.asarray(f(s)) for s in self.stacks])

    @property
    def n(self) -> int:
        return sum(s.n for s in self.stacks)

    @property
    def accuracy(self) -> np.ndarray:
        return self._cat(lambda s: s.accuracy)

    @property
    def test_loss(self) -> np.ndarray:
        return self._cat(lambda s: s.test_loss)

    @property
    def losses(self) -> np.ndarray:
        return self._cat(lambda s: s.losses)

    @property
    def kinds(self) -> np.ndarray:
        return self._cat(lambda s: np.full(s.n, s.kind))

    @property
    def hidden_sizes(self) -> np.ndarray:
        return self._cat(lambda s: np.full(s.n, s.hidden_size))

    @property
    def init_scale(self) -> np.ndarray:
        return self._cat(lambda s: s.init_scale)

    @property
    def learning_rates(self) -> np.ndarray:
        return self._cat(lambda s: s.learning_rates)

    def network(self, i: int) -> AbstractCell:
        """Network `i` (global index) as an ordinary cell."""
        for stack in self.stacks:
            if i < stack.n:
                return stack.network(i)
            i -= stack.n
        raise IndexError(f"network index out of range (the population has {self.n})")


def train_population(
    task,
    *,
    n: int,
    key: PRNGKeyArray,
    n_steps: int,
    kinds: Sequence[CellKind] = ("vanilla", "gru", "lstm"),
    hidden_sizes: Sequence[int] = (32,),
    init_scale_range: tuple[float, float] = (0.04, 0.4),
    learning_rate_range: tuple[float, float] = (1e-3, 3e-2),
    batch_size: int = 64,
    max_grad_norm: float | None = 1.0,
    chunk_size: int = 100,
    progress: bool = True,
) -> Population:
    """Train a population of recurrent networks on a task, each stack in one
    compiled program.

    The `n` networks are spread evenly over every combination of `kinds` and
    `hidden_sizes` (one `Stack` each: networks of one cell type and size share
    a program; the first combinations get one more when `n` does not divide).
    Network `i` draws its initialization scale `p` uniformly from
    `init_scale_range` (weights `U(-p, p)`: the AeLLE literature's `p in [0.04,
    0.4]`, Vogt et al. 2022) and its Adam learning rate log-uniformly from
    `learning_rate_range`, so that the population spans good and bad
    networks. See `train_stack` for what one stack's training is.

    **Returns:** a `dynjax.aelle.Population`; `population.accuracy` is each
    network's held-out accuracy.

    **Raises:** `ValueError` for `n` smaller than the number of combinations,
    an unknown kind, or inverted ranges.
    """
    if isinstance(kinds, str) or isinstance(hidden_sizes, int):
        raise ValueError(
            '`kinds` and `hidden_sizes` are sequences: pass e.g. `kinds=("gru",)`, '
            "`hidden_sizes=(32,)`."
        )
    combos = [(kind, h) for kind in kinds for h in hidden_sizes]
    if not isinstance(n, int) or n < len(combos):
        raise ValueError(
            f"`n={n!r}` must be an int >= the number of (kind, hidden size) "
            f"combinations, {len(combos)}."
        )
    for name, (lo, hi) in (
        ("init_scale_range", init_scale_range),
        ("learning_rate_range", learning_rate_range),
    ):
        if not 0 < lo <= hi:
            raise ValueError(f"`{name}` must be (low, high) with 0 < low <= high.")
    sizes = [n // len(combos) + (j < n % len(combos)) for j in range(len(combos))]
    stacks = []
    for j, ((kind, hidden), m) in enumerate(zip(combos, sizes)):
        k_scale, k_lr, k_train = jr.split(jr.fold_in(key, j), 3)
        scales = jr.uniform(k_scale, (m,), minval=init_scale_range[0],
                            maxval=init_scale_range[1])  # fmt: skip
        log_lo, log_hi = np.log(learning_rate_range[0]), np.log(learning_rate_range[1])
        lrs = jnp.exp(jr.uniform(k_lr, (m,), minval=log_lo, maxval=log_hi))
        stacks.append(
            train_stack(
                task,
                kind=kind,
                hidden_size=hidden,
                init_scale=scales,
                learning_rates=lrs,
                key=k_train,
                n_steps=n_steps,
                batch_size=batch_size,
                max_grad_norm=max_grad_norm,
                chunk_size=chunk_size,
                progress=progress,
            )
        )
    return Population(tuple(stacks))


# Spectra of a population.


def _spectrum_inputs(task, key, n_sequences: int, n_time: int):
    """`n_sequences` input streams of `n_time` steps: held-out task sequences
    drawn at random and concatenated in time."""
    x, _ = task.test_set()
    per = -(-n_time // x.shape[1])
    idx = jr.randint(key, (n_sequences, per), 0, x.shape[0])
    streams = x[idx].reshape(n_sequences, per * x.shape[1], *x.shape[2:])
    return streams[:, :n_time]


def stack_spectra(
    stack: Stack | AbstractCell,
    inputs: Float[Array, "sequences T m"],
    *,
    k: int | None = None,
    warmup: int = 500,
) -> Float[Array, "n k"]:
    """The mean Lyapunov spectrum (nats per step) of every network of a stack on
    the same input streams: `dynjax.rnn_spectrum` vmapped over the stack.

    `stack` is a `dynjax.aelle.Stack` or stacked cells (`stack_networks`);
    `inputs` has shape `(sequences, T, m)`; `k` and `warmup` as for
    `dynjax.rnn_spectrum`. Returns a JAX array `(n, k)`.
    """
    cells = stack.cells if isinstance(stack, Stack) else stack
    return _stack_spectra(cells, inputs, k, warmup)


@eqx.filter_jit
def _stack_spectra(cells, inputs, k, warmup):
    # (module level, so a second call with the same shapes reuses the program;
    # a jitted closure built per call recompiled every time)
    return eqx.filter_vmap(
        lambda cell: rnn_spectrum(cell, inputs, k=k, warmup=warmup).mean
    )(cells)


def population_spectra(
    population: Population,
    task,
    *,
    key: PRNGKeyArray,
    n_sequences: int = 15,
    length: int = 100,
    warmup: int = 500,
    k: int | None = None,
    common_length: int | None = None,
) -> Float[np.ndarray, "n L"]:
    """Every network's Lyapunov spectrum on held-out task inputs.

    The defaults are the reference settings of AeLLE (Vogt, Zheng & Shlizerman
    2022): for each network, the mean over `n_sequences = 15` input streams of
    the spectrum accumulated over `length = 100` steps after `warmup = 500`
    steps (QR every step); the streams are held-out task sequences concatenated
    in time, the same streams for every network. `k` exponents per network (all
    `d` by default: `d = N`, `2 N` for an LSTM; cost `O((warmup + length) d^2
    k)` per stream).

    Networks of different state sizes give spectra of different lengths; with
    `common_length=L` each spectrum is linearly interpolated on a normalized
    index `[0, 1]` to `L` values (`dynjax.aelle.interpolate_spectra`), as the
    reference method does, so that one autoencoder reads them all. (With a
    partial `k`, each stack's first `k` exponents are stretched over the whole
    index; compare stacks of equal `d` then, or use full spectra.) The streams
    are drawn with `key` from the test set, with replacement (a short test set
    is reused).

    **Returns:** a NumPy array `(n, L)`, nats per step, in the population's
    network order.

    **Raises:** `ValueError` if the stacks' spectra have different lengths and
    no `common_length` is given.
    """
    from ._analysis import interpolate_spectra

    if isinstance(population, Stack):
        population = Population((population,))
    for name, value in (("n_sequences", n_sequences), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
    if common_length is not None and (
        isinstance(common_length, bool)
        or not isinstance(common_length, int)
        or common_length < 1
    ):
        raise ValueError(f"`common_length` must be an int >= 1, got {common_length!r}.")
    for s in population.stacks:
        if k is not None and k > _d(s):
            raise ValueError(
                f"`k={k}` exceeds the state dimension d={_d(s)} of the {s.kind} "
                f"stack (hidden size {s.hidden_size}); pass `k <= {_d(s)}` or `None`."
            )
    inputs = _spectrum_inputs(task, key, n_sequences, warmup + length)
    blocks = [np.asarray(stack_spectra(s, inputs, k=k, warmup=warmup))
              for s in population.stacks]  # fmt: skip
    lengths = sorted({b.shape[1] for b in blocks})
    if common_length is None:
        if len(lengths) > 1:
            raise ValueError(
                f"The population's spectra have different lengths {lengths} (cell "
                "types or hidden sizes differ); pass `common_length=` to "
                "interpolate them to one length, as AeLLE does."
            )
        return np.concatenate(blocks)
    return np.concatenate(
        [np.asarray(interpolate_spectra(list(b), common_length)) for b in blocks]
    )


def _d(stack: Stack) -> int:
    return stack.hidden_size * (2 if stack.kind == "lstm" else 1)


def stack_networks(cells: Sequence[AbstractCell]) -> AbstractCell:
    """Stack networks of one structure into a population (array leaves get a
    leading axis), e.g. for `stack_spectra` on networks trained elsewhere.

    **Raises:** `ValueError` naming the first parameter whose shape differs
    between networks (a different cell type or hidden size: make separate
    stacks).
    """
    cells = list(cells)
    if not cells:
        raise ValueError("`stack_networks` needs at least one network.")
    arrays = [eqx.filter(c, eqx.is_array) for c in cells]
    paths = jax.tree_util.tree_flatten_with_path(arrays[0])[0]
    for j, other in enumerate(arrays[1:], 1):
        leaves = jax.tree.leaves(other)
        if type(cells[j]) is not type(cells[0]) or len(leaves) != len(paths):
            raise ValueError(
                f"Network {j} ({type(cells[j]).__name__}) does not share network 0's "
                f"structure ({type(cells[0]).__name__}): stack each cell type "
                "separately."
            )
        for (path, a), b in zip(paths, leaves):
            if a.shape != b.shape:
                raise ValueError(
                    f"Network {j}'s parameter {jax.tree_util.keystr(path)} has shape "
                    f"{b.shape}, network 0's {a.shape}: a population stacks networks "
                    "of one cell type and hidden size; make one stack per shape."
                )
    if len({jax.tree.structure(c) for c in cells}) > 1:
        raise ValueError(
            "The networks differ in a non-array field (activation, sizes): stack "
            "networks built by one constructor call pattern."
        )
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *arrays)
    return eqx.combine(stacked, eqx.filter(cells[0], lambda x: not eqx.is_array(x)))
