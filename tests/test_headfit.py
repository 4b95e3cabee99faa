"""Head training as one compiled call per epoch: batch order, blocks, and Keras callbacks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.masks import masked_optimizer
from fpgaprune.transfer.headfit import batch_blocks, epoch_order, fit_head


def test_epoch_order_depends_only_on_seed_and_epoch():
    np.testing.assert_array_equal(epoch_order(100, 3, 7), epoch_order(100, 3, 7))
    assert not np.array_equal(epoch_order(100, 3, 7), epoch_order(100, 3, 8))
    assert not np.array_equal(epoch_order(100, 3, 7), epoch_order(100, 4, 7))
    assert sorted(epoch_order(100, 3, 7)) == list(range(100))


@pytest.mark.parametrize("n, batch, rows", [(100, 32, 100), (100, 32, 40), (96, 32, 1000), (5, 32, 64), (100, 7, 1)])
def test_batch_blocks_cover_the_epoch_in_order(n, batch, rows):
    order = epoch_order(n, 0, 0)
    blocks = batch_blocks(order, batch, rows)
    np.testing.assert_array_equal(np.concatenate([b.ravel() for b in blocks]), order)
    assert all(b.shape[1] == batch for b in blocks[:-1]) and blocks[-1].shape[1] == (n % batch or batch)
    assert all(b.size <= max(rows, batch) for b in blocks[:-1])


def _linear_head():
    tf.keras.utils.set_random_seed(0)
    net = tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(3, activation="softmax")])
    net.compile(optimizer=masked_optimizer(tf.keras.optimizers.SGD(0.1)), loss="sparse_categorical_crossentropy")
    return net


def _toy(n=200):
    rng = np.random.RandomState(0)
    x = rng.randn(n, 6).astype(np.float32)
    return x, np.argmax(x[:, :3], axis=1)


@pytest.mark.parametrize("jit", [True, False])
def test_fit_head_learns_and_reports_keras_style_history(jit):
    x, y = _toy()
    net = _linear_head()
    result = fit_head(
        net, x[:150], y[:150], x[150:], y[150:], optimizer=net.optimizer, batch_size=16, epochs=15, seed=0, jit=jit,
        verbose=0,
    )
    assert result.compiled == ("xla" if jit else "graph (transfer.jit_compile is false)")
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"} and result.epochs == 15
    assert result.history["loss"][-1] < result.history["loss"][0] and result.history["val_accuracy"][-1] > 0.85
    assert len(result.epoch_seconds) == 15 and int(net.optimizer.iterations) == 15 * 10  # ceil(150 / 16)


@pytest.mark.slow
def test_xla_and_graph_mode_train_alike_and_a_memmap_matches_memory(tmp_path):
    x, y = _toy()
    finals = {}
    for label, jit, features in (("xla", True, x), ("graph", False, x), ("memmap", True, None)):
        if features is None:
            features = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=x.shape)
            features[:] = x
        net = _linear_head()
        fit_head(
            net, features, y, x[:0], y[:0], optimizer=net.optimizer, batch_size=16, epochs=3, seed=1, jit=jit, verbose=0
        )
        finals[label] = net.get_weights()
    for label in ("graph", "memmap"):
        for a, b in zip(finals["xla"], finals[label], strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_early_stopping_callback_stops_and_restores_best():
    x, y = _toy()
    net = _linear_head()
    y_val = (y[150:] + 1) % 3  # validation labels it can only get worse on
    stop = tf.keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=2, restore_best_weights=True)
    result = fit_head(net, x[:150], y[:150], x[150:], y_val, optimizer=net.optimizer, batch_size=16, epochs=50, seed=0,
                      callbacks=[stop], verbose=0)  # fmt: skip
    assert result.epochs < 50 and stop.stopped_epoch > 0
