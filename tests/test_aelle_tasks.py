"""Tasks of the AeLLE study: sequential digits, delayed recall, user datasets.

References are independent of the code under test: scikit-learn's own digit arrays,
symbols decoded from the inputs in NumPy, and a cross-entropy written out with a
log-sum-exp in NumPy.
"""

import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import dynjax
from dynjax._aelle._tasks import (
    AbstractTask,
    DelayedRecallTask,
    SequenceClassification,
    SequentialDigits,
)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return np.asarray(d.images), np.asarray(d.data), np.asarray(d.target)


@pytest.fixture(scope="module")
def row_task():
    return SequentialDigits(mode="row")


def _toy(n_train=12, n_test=5, T=4, m=3, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n_train, T, m)),
        np.arange(n_train) % c,
        rng.normal(size=(n_test, T, m)),
        np.arange(n_test) % c,
    )


# Sequential digits against scikit-learn's arrays.


def test_digits_row_mode_is_images_over_16(row_task, digits):
    images, _, target = digits
    task = row_task
    assert (task.input_size, task.n_steps, task.n_classes) == (8, 8, 10)
    for inputs, labels, idx in (
        (task.data.train_inputs, task.data.train_labels, task.train_indices),
        (*task.test_set(), task.test_indices),
    ):
        idx = np.asarray(idx)
        assert inputs.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(inputs), images[idx] / 16.0)
        np.testing.assert_array_equal(np.asarray(labels), target[idx])
    # Scaled into [0, 1], with both ends reached.
    x = np.asarray(task.data.train_inputs)
    assert x.min() == 0.0 and x.max() == 1.0


def test_digits_pixel_mode_is_row_major_pixels(digits):
    _, flat, target = digits
    task = SequentialDigits(mode="pixel")
    assert (task.input_size, task.n_steps, task.n_classes) == (1, 64, 10)
    x, y = task.test_set()
    idx = np.asarray(task.test_indices)
    # `load_digits().data` is the row-major flattening of the 8x8 images.
    np.testing.assert_array_equal(np.asarray(x), flat[idx][:, :, None] / 16.0)
    np.testing.assert_array_equal(np.asarray(y), target[idx])


@pytest.mark.parametrize("test_fraction", [0.25, 0.5])
def test_digits_split_is_a_stratified_partition(digits, test_fraction):
    _, _, target = digits
    task = SequentialDigits(test_fraction=test_fraction, key=jr.key(3))
    train = np.asarray(task.train_indices)
    test = np.asarray(task.test_indices)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train, test])), np.arange(1797)
    )
    for c in range(10):
        n_c = np.sum(target == c)
        # Stratified: each class is held out in the requested proportion (rounded).
        assert abs(np.sum(target[test] == c) - test_fraction * n_c) <= 0.5
    assert task.data.train_labels.shape == (train.size,)
    assert task.test_set()[1].shape == (test.size,)


def test_digits_split_follows_the_key():
    a = SequentialDigits(key=jr.key(0))
    b = SequentialDigits(key=jr.key(0))
    c = SequentialDigits(key=jr.key(1))
    np.testing.assert_array_equal(a.test_indices, b.test_indices)
    assert not np.array_equal(a.test_indices, c.test_indices)


def test_digits_errors(monkeypatch):
    with pytest.raises(ValueError, match="mode='row'"):
        SequentialDigits(mode="column")
    with pytest.raises(ValueError, match=r"test_fraction` in \(0, 1\)"):
        SequentialDigits(test_fraction=1.0)
    with pytest.raises(ValueError, match="both splits hold every class"):
        SequentialDigits(test_fraction=0.001)
    # Without scikit-learn (the `tasks` extra): a message that says what to install.
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'dynjax\[tasks\]'"):
        SequentialDigits()


# Delayed recall: the label is the symbol shown at step 0.


def _decode_symbols(inputs, n_symbols, delay):
    """The symbol of each trial read from its inputs in NumPy, after checking the
    layout: one-hot at step 0, silence, the cue at the last step only."""
    x = np.asarray(inputs)
    assert x.shape[1:] == (delay + 2, n_symbols + 1)
    onehot = x[:, 0, :n_symbols]
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    np.testing.assert_array_equal(x[:, 1:, :n_symbols], 0.0)
    np.testing.assert_array_equal(x[:, :-1, n_symbols], 0.0)
    np.testing.assert_array_equal(x[:, -1, n_symbols], 1.0)
    return np.nonzero(onehot)[1]


def test_delayed_recall_labels_are_the_symbol_shown():
    task = DelayedRecallTask(delay=6, n_symbols=5, n_test=400, key=jr.key(4))
    assert (task.input_size, task.n_steps, task.n_classes) == (6, 8, 5)
    x, y = task.sample(jr.key(5), 300)
    np.testing.assert_array_equal(np.asarray(y), _decode_symbols(x, 5, 6))
    xt, yt = task.test_set()
    assert xt.shape == (400, 8, 6)
    decoded = _decode_symbols(xt, 5, 6)
    np.testing.assert_array_equal(np.asarray(yt), decoded)
    # Every symbol occurs, about uniformly (binomial sd sqrt(400 * 0.2 * 0.8) = 8).
    assert np.all(np.abs(np.bincount(decoded, minlength=5) - 80) < 40)


def test_delayed_recall_test_set_is_fixed_by_its_key():
    a = DelayedRecallTask(delay=3, n_symbols=4, n_test=50, key=jr.key(1))
    b = DelayedRecallTask(delay=3, n_symbols=4, n_test=50, key=jr.key(1))
    c = DelayedRecallTask(delay=3, n_symbols=4, n_test=50, key=jr.key(2))
    np.testing.assert_array_equal(a.test_set()[1], b.test_set()[1])
    np.testing.assert_array_equal(a.test_set()[1], a.test_set()[1])
    assert not np.array_equal(a.test_set()[1], c.test_set()[1])


def test_delayed_recall_sample_under_jit_and_vmap():
    task = DelayedRecallTask(delay=2, n_symbols=3, n_test=10)
    keys = jr.split(jr.key(7), 4)
    xs, ys = jax.jit(jax.vmap(lambda k: task.sample(k, 16)))(keys)
    assert xs.shape == (4, 16, 4, 4) and ys.shape == (4, 16)
    for i in range(4):
        x, y = task.sample(keys[i], 16)
        np.testing.assert_array_equal(xs[i], x)
        np.testing.assert_array_equal(ys[i], _decode_symbols(x, 3, 2))


def test_delayed_recall_errors():
    with pytest.raises(ValueError, match="`delay` to be a Python int >= 0"):
        DelayedRecallTask(delay=-1, n_symbols=3)
    with pytest.raises(ValueError, match="`n_symbols` to be a Python int >= 2"):
        DelayedRecallTask(delay=2, n_symbols=1)
    with pytest.raises(ValueError, match="`n_test` to be a Python int >= 1"):
        DelayedRecallTask(delay=2, n_symbols=3, n_test=0)
    with pytest.raises(ValueError, match="`batch` to be a Python int >= 1"):
        DelayedRecallTask(delay=2, n_symbols=3, n_test=5).sample(jr.key(0), 0)


# Loss and accuracy against NumPy.


def _np_cross_entropy(z, y):
    zmax = z.max(axis=-1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=-1))
    return np.mean(lse - z[np.arange(z.shape[0]), y])


def test_loss_and_accuracy_against_numpy():
    c = 4
    task = SequenceClassification(*_toy(T=5, m=2, c=c), n_classes=c)
    rng = np.random.default_rng(1)
    logits = 3.0 * rng.normal(size=(50, 5, c))
    labels = rng.integers(0, c, size=50)
    expected_loss = _np_cross_entropy(logits[:, -1], labels)
    expected_acc = np.mean(np.argmax(logits[:, -1], axis=1) == labels)
    assert 0.1 < expected_acc < 0.9  # (neither trivially 0 nor 1)
    np.testing.assert_allclose(task.loss(logits, labels), expected_loss, rtol=1e-12)
    assert task.accuracy(logits, labels) == expected_acc
    # Only the last step counts.
    other = logits.copy()
    other[:, :-1] = rng.normal(size=(50, 4, c))
    np.testing.assert_allclose(task.loss(other, labels), expected_loss, rtol=1e-12)
    # Under jit, and vmapped over a population of networks' logits.
    np.testing.assert_allclose(
        eqx.filter_jit(task.loss)(logits, labels), expected_loss, rtol=1e-12
    )
    stacked = np.stack([logits, other[:, ::-1]])
    per_net = jax.vmap(task.accuracy, in_axes=(0, None))(stacked, labels)
    np.testing.assert_allclose(
        per_net,
        [np.mean(np.argmax(s[:, -1], axis=1) == labels) for s in stacked],
    )


def test_loss_gradient_is_softmax_minus_onehot():
    # d/dz of the mean cross-entropy is (softmax(z) - onehot(y)) / batch at the last
    # step and zero before it.
    task = DelayedRecallTask(delay=1, n_symbols=3, n_test=4)
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 3, 3))
    labels = rng.integers(0, 3, size=6)
    g = np.asarray(jax.grad(task.loss)(jnp.asarray(logits), labels))
    z = logits[:, -1]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(g[:, -1], (p - np.eye(3)[labels]) / 6, atol=1e-14)
    np.testing.assert_array_equal(g[:, :-1], 0.0)


def test_loss_and_accuracy_errors():
    task = SequenceClassification(*_toy(T=4, c=3), n_classes=3)
    z = np.zeros((5, 4, 3))
    y = np.array([0, 1, 2, 0, 1])
    for verb in (task.loss, task.accuracy):
        with pytest.raises(ValueError, match=r"shape \(batch, 4, 3\)"):
            verb(z[:, -1], y)
        with pytest.raises(ValueError, match="output_size=3"):
            verb(np.zeros((5, 4, 2)), y)
        with pytest.raises(ValueError, match="all 4 steps"):
            verb(np.zeros((5, 3, 3)), y)
        with pytest.raises(ValueError, match=r"labels of shape \(5,\)"):
            verb(z, y[:4])
        with pytest.raises(ValueError, match="integer labels"):
            verb(z, y.astype(float))
        with pytest.raises(ValueError, match=r"outside \[0, 3\).*the first 3"):
            verb(z, np.array([0, 1, 3, 0, 1]))
        with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
            verb(z, np.array([0, -1, 2, 0, 1]))
        # Traced labels: a run-time error rather than a silent NaN.
        with pytest.raises(eqx.EquinoxRuntimeError, match=r"outside \[0, 3\)"):
            eqx.filter_jit(verb)(z, jnp.array([0, 1, 7, 0, 1]))


# User datasets.


def test_sequence_classification_fields_and_inferred_classes():
    x_train, y_train, x_test, y_test = _toy(c=3)
    task = SequenceClassification(x_train, y_train, x_test, y_test)
    assert isinstance(task, AbstractTask)
    assert (task.input_size, task.n_steps, task.n_classes) == (3, 4, 3)
    # Classes inferred from both splits.
    y_test = y_test.copy()
    y_test[0] = 5
    assert SequenceClassification(x_train, y_train, x_test, y_test).n_classes == 6
    # Integer inputs are cast to the default float; splits share one dtype.
    ints = SequenceClassification(
        np.ones((3, 2, 1), np.int32), [0, 1, 0], np.ones((2, 2, 1), np.float32), [1, 0]
    )
    assert ints.train_inputs.dtype == ints.test_inputs.dtype == jnp.float64
    np.testing.assert_array_equal(task.test_set()[0], x_test)


def test_sequence_classification_samples_without_replacement():
    n = 20
    x = np.broadcast_to(np.arange(n, dtype=float)[:, None, None], (n, 3, 2))
    task = SequenceClassification(x, np.arange(n) % 4, x[:2], [0, 1])
    xb, yb = task.sample(jr.key(0), 15)
    rows = np.asarray(xb[:, 0, 0]).astype(int)
    assert np.unique(rows).size == 15  # distinct sequences
    np.testing.assert_array_equal(yb, rows % 4)  # labels travel with their inputs
    np.testing.assert_array_equal(np.asarray(xb), x[rows])
    # The whole split is a permutation of it.
    full = np.asarray(task.sample(jr.key(1), n)[0][:, 0, 0]).astype(int)
    np.testing.assert_array_equal(np.sort(full), np.arange(n))
    # Different keys, different minibatches; vmap over keys equals a loop.
    keys = jr.split(jr.key(2), 3)
    xs, _ = jax.vmap(lambda k: task.sample(k, 5))(keys)
    for i in range(3):
        np.testing.assert_array_equal(xs[i], task.sample(keys[i], 5)[0])
    assert not np.array_equal(xs[0], xs[1])
    with pytest.raises(ValueError, match="at most the 20 training sequences"):
        task.sample(jr.key(0), 21)
    with pytest.raises(ValueError, match="`batch` to be a Python int"):
        task.sample(jr.key(0), 2.0)


def test_sequence_classification_errors():
    x_train, y_train, x_test, y_test = _toy(c=3)
    ok = dict(
        train_inputs=x_train,
        train_labels=y_train,
        test_inputs=x_test,
        test_labels=y_test,
    )

    def build(**change):
        return SequenceClassification(**{**ok, **change})

    with pytest.raises(ValueError, match=r"train_inputs` of shape \(n, T, m\)"):
        build(train_inputs=x_train[..., 0])
    with pytest.raises(ValueError, match=r"same steps and channels \(T, m\)"):
        build(test_inputs=x_test[:, :3])
    with pytest.raises(ValueError, match=r"same steps and channels \(T, m\)"):
        build(test_inputs=x_test[:, :, :2])
    with pytest.raises(ValueError, match="real `test_inputs`"):
        build(test_inputs=x_test + 1j)
    with pytest.raises(ValueError, match="non-empty `train_inputs`"):
        build(train_inputs=x_train[:0], train_labels=y_train[:0])
    bad = x_train.copy()
    bad[3, 1, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite.*sequence 3"):
        build(train_inputs=bad)
    with pytest.raises(ValueError, match=r"test_labels` of shape \(5,\)"):
        build(test_labels=y_test[:4])
    with pytest.raises(ValueError, match=r"integer `train_labels`.*astype\(int\)"):
        build(train_labels=y_train.astype(float))
    # Labels outside the task's classes (issue 13, item 6).
    with pytest.raises(ValueError, match=r"train_labels` value is outside \[0, 3\)"):
        build(train_labels=np.where(y_train == 2, 3, y_train), n_classes=3)
    with pytest.raises(ValueError, match=r"test_labels` value is outside \[0, 3\)"):
        build(test_labels=np.array([0, 1, -1, 0, 1]))
    with pytest.raises(ValueError, match="`n_classes` to be a Python int >= 2"):
        build(n_classes=1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build(train_labels=0 * y_train, test_labels=0 * y_test)


# Acceptance (issue 13): a network on sequential digits reaches 85 %.


def test_vanilla_rnn_learns_sequential_digits(row_task):
    task = row_task

    def loss(cell, _, key):
        x, y = task.sample(key, 64)
        return task.loss(jax.vmap(cell.predict)(x), y)

    cell = dynjax.rnn.VanillaRNN(
        64, task.input_size, output_size=task.n_classes, key=jr.key(1)
    )
    x, y = task.test_set()
    before = task.accuracy(jax.vmap(cell.predict)(x), y)
    start = time.perf_counter()
    result = dynjax.fit(
        loss, cell, optax.adam(1e-2), n_steps=300, key=jr.key(2), progress=False
    )
    seconds = time.perf_counter() - start
    accuracy = task.accuracy(jax.vmap(result.model.predict)(x), y)
    # Chance is 1/10; the issue asks for networks that reach >= 85 % held out.
    assert before < 0.3
    assert accuracy >= 0.85, (float(accuracy), seconds)
