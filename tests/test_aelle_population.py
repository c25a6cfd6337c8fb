"""Populations of RNNs trained in one program, and their spectra (issue 13).

References: each network trained alone with `dynjax.fit` and optax's own
`clip_by_global_norm` + `adam` (the population must equal it); each network's
spectrum computed alone with `dynjax.rnn_spectrum`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import dynjax
from dynjax._aelle._population import (
    population_spectra,
    stack_networks,
    stack_spectra,
    train_population,
    train_stack,
)
from dynjax._aelle._tasks import SequenceClassification
from dynjax._training import _fit


def _toy_task(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 6, 3))
    y = (x[:, :, 0].sum(1) > 0).astype(int)
    return SequenceClassification(x[:150], y[:150], x[150:], y[150:])


def _max_difference(a, b):
    a = jax.tree.leaves(eqx.filter(a, eqx.is_array))
    b = jax.tree.leaves(eqx.filter(b, eqx.is_array))
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, b))


@pytest.mark.parametrize("kind", ["vanilla", "lstm"])
def test_stack_equals_networks_trained_one_by_one_and_compiles_once(kind):
    task = _toy_task()
    scales, lrs = jnp.array([0.1, 0.3]), jnp.array([1e-2, 3e-3])
    key = jr.key(5)
    before = _fit._chunk._cached._cache_size()
    stack = train_stack(task, kind=kind, hidden_size=8, init_scale=scales,
                        learning_rates=lrs, key=key, n_steps=60, batch_size=16,
                        progress=False, chunk_size=30)  # fmt: skip
    # One compilation for the whole population and all its chunks.
    assert _fit._chunk._cached._cache_size() == before + 1
    assert stack.losses.shape == (2, 60)
    maker = {"vanilla": dynjax.rnn.VanillaRNN, "gru": dynjax.rnn.GRU,
             "lstm": dynjax.rnn.LSTM}[kind]  # fmt: skip

    def loss(cell, _, k):
        x, y = task.sample(k, 16)
        return task.loss(jax.vmap(cell.predict)(x), y)

    for i in range(2):
        cell = maker(8, 3, output_size=2, init="uniform", gain=scales[i],
                     key=jr.fold_in(key, i))  # fmt: skip
        alone = dynjax.fit(
            loss, cell, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lrs[i])),
            n_steps=60, key=jr.fold_in(key, 2), progress=False,
        )  # fmt: skip
        assert _max_difference(alone.model, stack.network(i)) < 1e-6
        np.testing.assert_allclose(stack.losses[i], alone.losses, atol=1e-6)
        x, y = task.test_set()
        acc = task.accuracy(jax.vmap(alone.model.predict)(x), y)
        assert float(stack.accuracy[i]) == pytest.approx(float(acc), abs=1e-12)


def test_stack_spectra_equal_spectra_per_network():
    task = _toy_task()
    stack = train_stack(task, kind="lstm", hidden_size=4,
                        init_scale=jnp.array([0.1, 0.4]),
                        learning_rates=jnp.array([1e-2, 1e-2]), key=jr.key(0),
                        n_steps=20, batch_size=16, progress=False)  # fmt: skip
    inputs = jr.normal(jr.key(1), (3, 80, 3))
    together = stack_spectra(stack, inputs, warmup=20)
    assert together.shape == (2, 8)
    for i in range(2):
        alone = dynjax.rnn_spectrum(stack.network(i), inputs, warmup=20).mean
        np.testing.assert_allclose(together[i], alone, atol=1e-10)


def test_population_spans_kinds_and_spectra_need_a_common_length():
    task = _toy_task()
    pop = train_population(task, n=4, key=jr.key(0), n_steps=20,
                           kinds=("gru", "lstm"), hidden_sizes=(4,), batch_size=16,
                           progress=False)  # fmt: skip
    assert list(pop.kinds) == ["gru", "gru", "lstm", "lstm"]
    assert pop.accuracy.shape == (4,) and np.all(
        (0 <= pop.accuracy) & (pop.accuracy <= 1)
    )
    assert np.all((0.04 <= pop.init_scale) & (pop.init_scale <= 0.4))
    message = r"different lengths \[4, 8\] .* pass `common_length=`"
    with pytest.raises(ValueError, match=message):
        population_spectra(pop, task, key=jr.key(1), n_sequences=2, length=10, warmup=5)
    spectra = population_spectra(pop, task, key=jr.key(1), n_sequences=2, length=10,
                                 warmup=5, common_length=6)  # fmt: skip
    assert spectra.shape == (4, 6) and np.all(np.isfinite(spectra))


def test_bad_populations():
    cells = [dynjax.rnn.GRU(4, 3, key=jr.key(0)), dynjax.rnn.GRU(5, 3, key=jr.key(1))]
    with pytest.raises(ValueError, match="has shape .* make one stack per shape"):
        stack_networks(cells)
    mixed = [dynjax.rnn.GRU(4, 3, key=jr.key(0)), dynjax.rnn.LSTM(4, 3, key=jr.key(1))]
    with pytest.raises(ValueError, match=r"\(LSTM\) does not share network 0"):
        stack_networks(mixed)
    same = stack_networks([dynjax.rnn.GRU(4, 3, key=jr.key(i)) for i in range(3)])
    assert same.weight_hh.shape == (3, 12, 4)
    task = _toy_task()
    with pytest.raises(ValueError, match="one value per network"):
        train_stack(task, kind="gru", hidden_size=4, init_scale=jnp.ones(2),
                    learning_rates=jnp.ones(3), key=jr.key(0), n_steps=1)  # fmt: skip
    with pytest.raises(ValueError, match="`kind` must be one of"):
        train_stack(task, kind="rnn", hidden_size=4, init_scale=jnp.ones(2),
                    learning_rates=jnp.ones(2), key=jr.key(0), n_steps=1)  # fmt: skip
    with pytest.raises(ValueError, match="combinations"):
        train_population(task, n=2, key=jr.key(0), n_steps=1)


def test_more_bad_input_and_stacked_cells():
    task = _toy_task()
    with pytest.raises(ValueError, match="are sequences"):
        train_population(task, n=3, kinds="gru", key=jr.key(0), n_steps=1)
    with pytest.raises(ValueError, match="must be positive"):
        train_stack(task, kind="gru", hidden_size=4, init_scale=jnp.ones(2),
                    learning_rates=-jnp.ones(2), key=jr.key(0), n_steps=1)  # fmt: skip
    with pytest.raises(ValueError, match="non-empty tuple"):
        dynjax.aelle.Population(())
    stack = train_stack(task, kind="gru", hidden_size=4, init_scale=jnp.full(2, 0.1),
                        learning_rates=jnp.full(2, 1e-2), key=jr.key(0), n_steps=0,
                        progress=False)  # fmt: skip
    assert stack.losses.shape == (2, 0)
    with pytest.raises(ValueError, match="exceeds the state dimension d=4"):
        population_spectra(stack, task, key=jr.key(0), k=5, n_sequences=1, length=5,
                           warmup=2)  # fmt: skip
    # Stacked cells (networks trained elsewhere) work as a stack.
    cells = [dynjax.rnn.GRU(4, 3, key=jr.key(i)) for i in range(2)]
    inputs = jr.normal(jr.key(1), (2, 20, 3))
    together = stack_spectra(stack_networks(cells), inputs, warmup=2)
    for i, cell in enumerate(cells):
        alone = dynjax.rnn_spectrum(cell, inputs, warmup=2).mean
        np.testing.assert_allclose(together[i], alone, atol=1e-10)
