"""Sequence-classification tasks for populations of recurrent networks (AeLLE).

Every task classifies a whole input sequence from the readout of the network's LAST
step: a network `cell` is scored by `task.loss(jax.vmap(cell.predict)(x), y)` on a
minibatch `x, y = task.sample(key, batch)`, and by `task.accuracy(...)` on the fixed
held-out split `task.test_set()`. Sizes are static (Python ints), so `sample` runs
inside `jit`, `vmap` and a training scan.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._rnn import delayed_recall


def _check_int(value, name: str, where: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"`{where}` needs `{name}` to be a Python int >= {minimum}, got {value!r}."
        )


def _default_key(key) -> PRNGKeyArray:
    return jr.key(0) if key is None else key


def _label_dtype():
    return jnp.result_type(int)


class AbstractTask(eqx.Module):
    """A sequence-classification task: the class of a whole input sequence, read
    from a network's readout at the last step.

    Subclasses provide `input_size` (`m`), `n_classes` (`c`) and `n_steps` (`T`),
    all Python ints, and the two data methods `sample` (training minibatches) and
    `test_set` (the fixed held-out split). `loss` and `accuracy` are shared.
    """

    input_size: eqx.AbstractVar[int]
    n_classes: eqx.AbstractVar[int]
    n_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def sample(
        self, key: PRNGKeyArray, batch: int
    ) -> tuple[Float[Array, "batch T m"], Int[Array, " batch"]]:
        """A training minibatch `(inputs, labels)` of `batch` sequences: inputs of
        shape `(batch, n_steps, input_size)`, integer labels in `[0, n_classes)`.
        A pure function of `key` (`batch` is a static Python int), so it runs
        under `jit` and `vmap`."""

    @abc.abstractmethod
    def test_set(self) -> tuple[Float[Array, "n T m"], Int[Array, " n"]]:
        """The held-out split `(inputs, labels)`, the same at every call."""

    def loss(
        self, logits: Float[Array, "batch T c"], labels: Int[ArrayLike, " batch"]
    ) -> Float[Array, ""]:
        r"""The mean cross-entropy of the last step's logits:

        $$L = -\frac{1}{B} \sum_{b=1}^{B} \log \operatorname{softmax}
        (z_{b, T})_{y_b},$$

        with `z = logits` (unnormalized log-probabilities, e.g.
        `jax.vmap(cell.predict)(inputs)`; the steps before the last are ignored).
        Computed by `optax.softmax_cross_entropy_with_integer_labels`.

        **Arguments:** `logits` of shape `(batch, n_steps, n_classes)`; `labels` of
        shape `(batch,)`, integers in `[0, n_classes)`.

        **Returns:** a scalar, in nats, of the logits' dtype.

        **Raises:** `ValueError` at trace time for wrong shapes or non-integer
        labels; a label outside `[0, n_classes)` raises `ValueError` (concrete
        labels) or an `eqx.error_if` run-time error (traced labels).
        """
        last, labels = _check_logits(self, logits, labels, "loss")
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(last, labels))

    def accuracy(
        self, logits: Float[Array, "batch T c"], labels: Int[ArrayLike, " batch"]
    ) -> Float[Array, ""]:
        """The fraction of sequences whose last-step logits are largest at the true
        class: `mean(argmax(logits[:, -1], -1) == labels)` (ties go to the lowest
        class index, as `jnp.argmax` breaks them).

        **Arguments and raises:** as `loss`.

        **Returns:** a scalar in `[0, 1]`, of the logits' dtype.
        """
        last, labels = _check_logits(self, logits, labels, "accuracy")
        correct = jnp.argmax(last, axis=-1) == labels
        return jnp.mean(correct.astype(last.dtype))


def _check_labels_range(labels, n_classes: int, message: str):
    """Labels checked to lie in `[0, n_classes)`: `ValueError` for concrete labels,
    `eqx.error_if` for traced ones (JAX's gather would not complain)."""
    if isinstance(labels, jax.core.Tracer):
        return eqx.error_if(labels, (labels < 0) | (labels >= n_classes), message)
    values = np.asarray(labels)
    bad = (values < 0) | (values >= n_classes)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"{message} Found {int(bad.sum())} such label(s), the first "
            f"{values[first]} at position {first}."
        )
    return labels


def _check_logits(task: AbstractTask, logits, labels, verb: str):
    name = f"{type(task).__name__}.{verb}"
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    expected = f"(batch, {task.n_steps}, {task.n_classes})"
    if logits.ndim != 3:
        raise ValueError(
            f"`{name}` needs logits of shape {expected} (batch, steps, classes), "
            f"got shape {logits.shape}. For a cell, pass "
            "`jax.vmap(cell.predict)(inputs)`; the last step is the prediction."
        )
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(
            f"`{name}` needs floating logits, got dtype {logits.dtype.name}."
        )
    batch, T, c = logits.shape
    if c != task.n_classes:
        raise ValueError(
            f"`{name}` needs logits with {task.n_classes} classes on the last axis "
            f"(shape {expected}), got shape {logits.shape}. Build the network with "
            f"output_size={task.n_classes}."
        )
    if T != task.n_steps:
        raise ValueError(
            f"`{name}` needs logits for all {task.n_steps} steps (shape {expected}), "
            f"got shape {logits.shape}. Pass the readout of every step, "
            "`jax.vmap(cell.predict)(inputs)`, batch axis first."
        )
    if labels.shape != (batch,):
        raise ValueError(
            f"`{name}` needs labels of shape ({batch},) (one class per sequence of "
            f"logits {logits.shape}), got shape {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"`{name}` needs integer labels (class indices), got dtype "
            f"{labels.dtype.name}; pass `labels.astype(int)`."
        )
    labels = _check_labels_range(
        labels,
        task.n_classes,
        f"`{name}`: a label is outside [0, {task.n_classes}) (the task's classes).",
    )
    return logits[:, -1], labels


# A dataset of sequences.


def _inputs(x, split: str, where: str):
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ValueError(
            f"`{where}` needs `{split}_inputs` of shape (n, T, m) (sequences, steps, "
            f"channels), got shape {x.shape}. For one channel, add a last axis: "
            "`x[..., None]`."
        )
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise ValueError(
            f"`{where}` needs real `{split}_inputs`, got dtype {x.dtype.name}."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if min(x.shape) == 0:
        raise ValueError(
            f"`{where}` needs non-empty `{split}_inputs` (n, T, m >= 1), got shape "
            f"{x.shape}."
        )
    message = (
        f"`{where}`: `{split}_inputs` contains non-finite values (NaN or inf); "
        "remove or impute those sequences."
    )
    if isinstance(x, jax.core.Tracer):
        return eqx.error_if(x, ~jnp.isfinite(x), message)
    bad = ~np.isfinite(np.asarray(x))
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"{message} Found {int(bad.sum())} non-finite value(s), the first in "
            f"sequence {first}."
        )
    return x


def _labels(y, n: int, split: str, where: str):
    y = jnp.asarray(y)
    if y.shape != (n,):
        raise ValueError(
            f"`{where}` needs `{split}_labels` of shape ({n},) (one class per "
            f"sequence of `{split}_inputs`), got shape {y.shape}."
        )
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(
            f"`{where}` needs integer `{split}_labels` (class indices 0, 1, ...), "
            f"got dtype {y.dtype.name}; pass `labels.astype(int)`."
        )
    return y.astype(_label_dtype())


class SequenceClassification(AbstractTask):
    """Any dataset of labelled sequences as a task, with a train and a test split.

    Training minibatches (`sample`) are random subsets of the train split, drawn
    without replacement within a minibatch (`jax.random.choice(...,
    replace=False)`) and independently between minibatches. `test_set` returns the
    test split as given.

    **Arguments:**

    - `train_inputs`: shape `(n_train, T, m)`, real (integers and booleans are
        cast to JAX's default float); finite.
    - `train_labels`: shape `(n_train,)`, integers in `[0, n_classes)`.
    - `test_inputs`, `test_labels`: the held-out split, shapes `(n_test, T, m)`
        and `(n_test,)`, with the same `T` and `m`.
    - `n_classes`: the number of classes `c >= 2`; default one more than the
        largest label of either split.

    The inputs of both splits are cast to one floating dtype (their common
    result type); labels to JAX's default integer dtype.

    Fields: `train_inputs`, `train_labels`, `test_inputs`, `test_labels`, and the
    static sizes `input_size` (`m`), `n_steps` (`T`), `n_classes` (`c`).

    **Raises:** `ValueError` at construction for inputs that are not 3-D, empty,
    complex or non-finite; labels that are not integers, do not match their
    inputs' length, or lie outside `[0, n_classes)`; splits with different `T` or
    `m`; `n_classes` < 2. (Built inside `jit` from traced arrays, the value checks
    run as `eqx.error_if` and `n_classes` must be given.)

    !!! Example

        ```python
        task = SequenceClassification(x_train, y_train, x_test, y_test)

        def loss(cell, _, key):  # for dynjax.fit
            x, y = task.sample(key, 64)
            return task.loss(jax.vmap(cell.predict)(x), y)
        ```
    """

    train_inputs: Float[Array, "n_train T m"]
    train_labels: Int[Array, " n_train"]
    test_inputs: Float[Array, "n_test T m"]
    test_labels: Int[Array, " n_test"]
    input_size: int = eqx.field(static=True)
    n_classes: int = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)

    def __init__(
        self,
        train_inputs: Float[ArrayLike, "n_train T m"],
        train_labels: Int[ArrayLike, " n_train"],
        test_inputs: Float[ArrayLike, "n_test T m"],
        test_labels: Int[ArrayLike, " n_test"],
        n_classes: int | None = None,
    ):
        where = "SequenceClassification"
        x_train = _inputs(train_inputs, "train", where)
        x_test = _inputs(test_inputs, "test", where)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise ValueError(
                f"`{where}` needs the same steps and channels (T, m) in both splits, "
                f"got train_inputs of shape {x_train.shape} and test_inputs of shape "
                f"{x_test.shape}. Pad or crop the sequences to one length."
            )
        dtype = jnp.result_type(x_train.dtype, x_test.dtype)
        y_train = _labels(train_labels, x_train.shape[0], "train", where)
        y_test = _labels(test_labels, x_test.shape[0], "test", where)
        traced = any(
            isinstance(a, jax.core.Tracer) for a in (x_train, x_test, y_train, y_test)
        )
        if n_classes is None:
            if traced:
                raise ValueError(
                    f"`{where}` built from traced arrays (inside jit/vmap) needs "
                    "`n_classes=` (it cannot read the labels' values)."
                )
            n_classes = int(max(np.max(y_train), np.max(y_test))) + 1
            if n_classes < 2:
                raise ValueError(
                    f"`{where}` found only class 0 in the labels; a classification "
                    "task needs at least 2 classes (labels 0, 1, ...)."
                )
        else:
            _check_int(n_classes, "n_classes", where, minimum=2)

        def in_range(y, split):
            return _check_labels_range(
                y,
                n_classes,
                f"`{where}`: a `{split}_labels` value is outside [0, {n_classes}) "
                f"(n_classes={n_classes}); relabel the classes as 0, ..., "
                f"{n_classes - 1} or pass a larger `n_classes`.",
            )

        y_train = in_range(y_train, "train")
        y_test = in_range(y_test, "test")
        self.train_inputs = x_train.astype(dtype)
        self.train_labels = y_train
        self.test_inputs = x_test.astype(dtype)
        self.test_labels = y_test
        self.input_size = x_train.shape[2]
        self.n_classes = n_classes
        self.n_steps = x_train.shape[1]

    def sample(
        self, key: PRNGKeyArray, batch: int
    ) -> tuple[Float[Array, "batch T m"], Int[Array, " batch"]]:
        """`batch` distinct sequences of the train split, chosen uniformly at random
        (without replacement within the minibatch) by `key`.

        **Raises:** `ValueError` if `batch` is not a Python int in
        `[1, n_train]`.
        """
        n_train = self.train_labels.shape[0]
        _check_int(batch, "batch", f"{type(self).__name__}.sample")
        if batch > n_train:
            raise ValueError(
                f"`{type(self).__name__}.sample` draws without replacement, so "
                f"`batch` must be at most the {n_train} training sequences, got "
                f"{batch}."
            )
        idx = jr.choice(key, n_train, (batch,), replace=False)
        return self.train_inputs[idx], self.train_labels[idx]

    def test_set(self) -> tuple[Float[Array, "n_test T m"], Int[Array, " n_test"]]:
        """The test split `(test_inputs, test_labels)`."""
        return self.test_inputs, self.test_labels


# Sequential digits.


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "`SequentialDigits` reads scikit-learn's digits dataset, and "
            "scikit-learn is not installed; install it with "
            "`pip install 'dynjax[tasks]'`."
        ) from e
    digits = load_digits()
    return np.asarray(digits.images), np.asarray(digits.target)


def _stratified_split(labels: np.ndarray, test_fraction: float, key):
    """Per class `c` with `n_c` images, `round(test_fraction * n_c)` of them (chosen
    by a permutation drawn from `key`) go to the test split; both index arrays are
    returned sorted."""
    perm = np.asarray(jr.permutation(key, labels.shape[0]))
    test = []
    for c in np.unique(labels):
        members = perm[labels[perm] == c]  # the images of class c, in random order
        n_test = int(round(test_fraction * members.shape[0]))
        if not 0 < n_test < members.shape[0]:
            raise ValueError(
                f"`SequentialDigits` got test_fraction={test_fraction}, which puts "
                f"{n_test} of the {members.shape[0]} images of class {c} in the test "
                "split; choose test_fraction in about [0.01, 0.99] so that both "
                "splits hold every class."
            )
        test.append(members[:n_test])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(labels.shape[0]), test)
    return train, test


class SequentialDigits(AbstractTask):
    """Handwritten digits read as sequences: scikit-learn's 8x8 digits, row by row
    or pixel by pixel, classified into 10 classes.

    The 1,797 images of `sklearn.datasets.load_digits` (the UCI optical-recognition
    digits, Alpaydin & Kaynak 1998; shipped with scikit-learn, no download) play
    here the role that sequential MNIST (Le, Jaitly & Hinton 2015) plays in the
    literature on RNN dynamics and performance, e.g. the AeLLE study of Vogt et al.
    (2022), at a size that trains populations of networks on a CPU. Pixel values
    (integers 0 to 16) are divided by 16, into `[0, 1]`.

    - `mode="row"`: one image row per step, `T = 8` steps of `m = 8` pixels
        (`inputs[i, t] = images[i, t, :] / 16`).
    - `mode="pixel"`: one pixel per step in row-major order, `T = 64` steps of
        `m = 1` (`inputs[i, t, 0] = images[i, t // 8, t % 8] / 16`).

    The train/test split is stratified: of the `n_c` images of each digit `c`,
    `round(test_fraction * n_c)` chosen at random by `key` form the test split,
    the rest the train split (450 test and 1,347 train images at the default
    0.25). Minibatches are drawn from the train split as by
    `SequenceClassification.sample` (without replacement within a minibatch).

    **Arguments:**

    - `mode`: `"row"` (default) or `"pixel"`.
    - `test_fraction`: the fraction of each class held out, in `(0, 1)`
        (default 0.25).
    - `key`: a `jax.random` key that fixes the split (default `jax.random.key(0)`).

    Fields: `data`, the `SequenceClassification` with the two splits (inputs in
    JAX's default float dtype); `train_indices`, `test_indices`, the (sorted)
    positions of each split's images in `load_digits()`; the static `mode` and
    `test_fraction`. Sizes: `input_size = 8` or `1`, `n_steps = 8` or `64`,
    `n_classes = 10`.

    **Raises:** `ImportError` if scikit-learn is missing (`pip install
    'dynjax[tasks]'`); `ValueError` for an unknown `mode`, or a `test_fraction`
    that leaves a class out of either split.

    !!! Example

        ```python
        task = SequentialDigits(mode="row")
        cell = dynjax.rnn.VanillaRNN(64, task.input_size,
                                     output_size=task.n_classes, key=key)
        def loss(cell, _, key):
            x, y = task.sample(key, 128)
            return task.loss(jax.vmap(cell.predict)(x), y)
        ```

    **References:** R. Vogt, Y. Zheng and E. Shlizerman, "Lyapunov-guided
    representation of recurrent neural network performance", arXiv:2204.04876
    (2022); Q. V. Le, N. Jaitly and G. E. Hinton, "A simple way to initialize
    recurrent networks of rectified linear units", arXiv:1504.00941 (2015);
    E. Alpaydin and C. Kaynak, "Optical recognition of handwritten digits", UCI
    Machine Learning Repository (1998).
    """

    data: SequenceClassification
    train_indices: Int[Array, " n_train"]
    test_indices: Int[Array, " n_test"]
    mode: str = eqx.field(static=True)
    test_fraction: float = eqx.field(static=True)

    def __init__(
        self,
        *,
        mode: str = "row",
        test_fraction: float = 0.25,
        key: PRNGKeyArray | None = None,
    ):
        if mode not in ("row", "pixel"):
            raise ValueError(
                f"`SequentialDigits` got mode={mode!r}; pass mode='row' (8 steps of "
                "8 pixels) or mode='pixel' (64 steps of 1 pixel)."
            )
        test_fraction = float(test_fraction)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(
                "`SequentialDigits` needs `test_fraction` in (0, 1) (the fraction of "
                f"each class held out), got {test_fraction}."
            )
        images, labels = _load_digits()
        train, test = _stratified_split(labels, test_fraction, _default_key(key))
        x = images.reshape(images.shape[0], 8, 8) / 16.0
        if mode == "pixel":
            x = x.reshape(x.shape[0], 64, 1)
        x = jnp.asarray(x, jnp.result_type(float))
        self.data = SequenceClassification(
            x[train], labels[train], x[test], labels[test], n_classes=10
        )
        self.train_indices = jnp.asarray(train)
        self.test_indices = jnp.asarray(test)
        self.mode = mode
        self.test_fraction = test_fraction

    @property
    def input_size(self) -> int:
        return self.data.input_size

    @property
    def n_classes(self) -> int:
        return self.data.n_classes

    @property
    def n_steps(self) -> int:
        return self.data.n_steps

    def sample(
        self, key: PRNGKeyArray, batch: int
    ) -> tuple[Float[Array, "batch T m"], Int[Array, " batch"]]:
        """`batch` distinct training images as sequences, chosen by `key`; see
        `SequenceClassification.sample`."""
        return self.data.sample(key, batch)

    def test_set(self) -> tuple[Float[Array, "n_test T m"], Int[Array, " n_test"]]:
        """The held-out images `(inputs, labels)`, in the order of
        `test_indices`."""
        return self.data.test_set()


# A generated symbolic task.


class DelayedRecallTask(AbstractTask):
    """Delayed recall of a symbol as a classification task.

    One of `K = n_symbols` symbols, drawn uniformly, is shown one-hot at step 0;
    then `delay` silent steps; then a recall cue (an extra input channel set to 1)
    for one step, at which the network's readout must name the symbol. Built on
    `dynjax.rnn.delayed_recall(key, delay=delay, batch=batch, n_symbols=K)`: the
    label is the symbol (the argmax of its one-hot target at the recall step).

    A network solves it only if its state keeps the symbol for `delay` steps, so
    `delay` sets the difficulty (Hochreiter & Schmidhuber 1997). The inputs are
    determined by the symbol (`K` distinct sequences), so the test accuracy measures
    memory of the symbols, not generalization to unseen inputs. The test set is
    generated once, at construction, from its own key (`jax.random.split(key)[0]`;
    minibatches come from the keys passed to `sample`).

    **Arguments:**

    - `delay`: silent steps between the symbol and the cue (a Python int `>= 0`).
    - `n_symbols`: `K >= 2`, the number of symbols (and classes).
    - `n_test`: the size of the test set (default 1000).
    - `key`: a `jax.random` key for the test set (default `jax.random.key(0)`).

    Sizes: `input_size = K + 1` (one-hot symbol, cue), `n_steps = delay + 2`,
    `n_classes = K`. Fields: `test_inputs`, `test_labels` (JAX's default float
    and integer dtypes) and the static `delay`, `n_symbols`, `n_test`.

    **Raises:** `ValueError` if a size is not a Python int in range.

    **References:** S. Hochreiter and J. Schmidhuber, "Long short-term memory",
    Neural Computation 9, 1735-1780 (1997); R. Engelken, "Gradient flossing:
    improving gradient descent through dynamic control of Jacobians", NeurIPS
    (2023).
    """

    test_inputs: Float[Array, "n_test T m"]
    test_labels: Int[Array, " n_test"]
    delay: int = eqx.field(static=True)
    n_symbols: int = eqx.field(static=True)
    n_test: int = eqx.field(static=True)

    def __init__(
        self,
        *,
        delay: int,
        n_symbols: int,
        n_test: int = 1000,
        key: PRNGKeyArray | None = None,
    ):
        where = "DelayedRecallTask"
        _check_int(delay, "delay", where, minimum=0)
        _check_int(n_symbols, "n_symbols", where, minimum=2)
        _check_int(n_test, "n_test", where)
        self.delay = delay
        self.n_symbols = n_symbols
        self.n_test = n_test
        test_key = jr.split(_default_key(key))[0]
        self.test_inputs, self.test_labels = self._generate(test_key, n_test)

    @property
    def input_size(self) -> int:
        return self.n_symbols + 1

    @property
    def n_classes(self) -> int:
        return self.n_symbols

    @property
    def n_steps(self) -> int:
        return self.delay + 2

    def _generate(self, key, batch: int):
        inputs, targets, _ = delayed_recall(
            key, delay=self.delay, batch=batch, n_symbols=self.n_symbols
        )
        labels = jnp.argmax(targets[:, -1], axis=-1).astype(_label_dtype())
        return inputs, labels

    def sample(
        self, key: PRNGKeyArray, batch: int
    ) -> tuple[Float[Array, "batch T m"], Int[Array, " batch"]]:
        """`batch` fresh trials generated from `key`.

        **Raises:** `ValueError` if `batch` is not a positive Python int.
        """
        _check_int(batch, "batch", "DelayedRecallTask.sample")
        return self._generate(key, batch)

    def test_set(self) -> tuple[Float[Array, "n_test T m"], Int[Array, " n_test"]]:
        """The `n_test` held-out trials generated at construction."""
        return self.test_inputs, self.test_labels
