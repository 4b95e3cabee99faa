"""Head training for the transfer stage: a whole epoch as one compiled call.

Once the frozen part's outputs are cached, an epoch of a small head is a few million
multiply-adds; `model.fit` spends far longer than that on its fixed costs (a data iterator
and a dozen bookkeeping ops per step, a validation pass set up anew every epoch). Here an
epoch is one XLA computation: a loop over the epoch's batches, gathered from the cached
features, each a gradient step through the (masked) optimizer. Validation is one more call.

    result = fit_head(split.head, features, y, val_features, y_val, optimizer=..., batch_size=32,
                      epochs=50, seed=1)

Uncached training runs the same step function, with the frozen part computing each batch's
features first (in graph mode: XLA would compute them differently from the cache). Both
paths see the same batches (`epoch_order`), so they train the same model. Keras callbacks
(EarlyStopping, checkpoints, the progress bar) get the usual epoch events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..training.fit import FitResult

# The memory-mapped path gathers at most this many bytes of features per compiled call.
GROUP_BYTES = 64 * 2**20
VALIDATION_CHUNK = 1024  # rows per frozen/head call when validating (as cache_features does)


@dataclass
class HeadFit(FitResult):
    compiled: str = "xla"  # "xla", or "graph" with the reason XLA was not used


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch `epoch`: a permutation drawn from (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_blocks(order: np.ndarray, batch_size: int, rows: int) -> list[np.ndarray]:
    """An epoch's batches as [steps, batch_size] index blocks of at most `rows` rows, then the short batch."""
    full = len(order) // batch_size * batch_size
    per_block = max(1, rows // batch_size) * batch_size
    blocks = [order[i : min(i + per_block, full)].reshape(-1, batch_size) for i in range(0, full, per_block)]
    if full < len(order):
        blocks.append(order[full:][None])
    return blocks


def _step_function(net: tf.keras.Model, optimizer, loss_fn):
    """One gradient step on a batch; only `net`'s trainable variables are watched."""
    variables = net.trainable_variables

    def step(xb, yb):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            probs = net(xb, training=True)
            loss = loss_fn(yb, probs)
            if net.losses:
                loss += tf.add_n(net.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss, _hits(yb, probs)

    return step


def _hits(y, probs):
    return tf.reduce_sum(tf.cast(tf.argmax(probs, -1) == tf.cast(y, tf.int64), tf.float32))


def _block_function(step, frozen: tf.keras.Model | None, jit: bool):
    """Run the steps of one [steps, batch] index block; return (sum of batch losses x size, hits)."""

    def run(x, y, index):
        loss_sum, hits = tf.constant(0.0), tf.constant(0.0)
        for k in tf.range(tf.shape(index)[0]):
            xb, yb = tf.gather(x, index[k]), tf.gather(y, index[k])
            if frozen is not None:
                xb = frozen(xb, training=False)
            loss, h = step(xb, yb)
            loss_sum += loss * tf.cast(tf.shape(yb)[0], tf.float32)
            hits += h
        return loss_sum, hits

    if frozen is None:  # the whole block in XLA, gathers included
        return tf.function(run, jit_compile=jit)
    return tf.function(run)  # the frozen layers in graph mode, the step compiled on its own


class _Trainer:
    """The compiled functions of one head-training run."""

    def __init__(self, net, frozen, optimizer, jit: bool):
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
        self.step = _step_function(net, optimizer, loss_fn)
        if frozen is not None:
            self.step = tf.function(self.step, jit_compile=jit)
        self.block = _block_function(self.step, frozen, jit)

        def evaluate(x, y):
            probs = net(x, training=False)
            return tf.reduce_sum(loss_fn(y, probs) * tf.cast(tf.shape(y)[0], tf.float32)), _hits(y, probs)

        self.evaluate = tf.function(evaluate, jit_compile=jit)


def xla_refusal(trainer: _Trainer, frozen, x, y, batch_size: int) -> str | None:
    """Why XLA cannot compile `trainer`'s step (None if it can), found before any step runs.

    E.g. deterministic MaxPool gradients are not implemented in XLA, so a head with unfrozen
    conv and pooling layers trains in graph mode instead.
    """
    xb, yb = np.asarray(x[:batch_size], np.float32), np.asarray(y[:batch_size])
    try:
        if frozen is None:
            trainer.block.experimental_get_compiler_ir(xb, yb, np.arange(len(yb))[None])(stage="hlo")
        else:
            trainer.step.experimental_get_compiler_ir(frozen(xb, training=False), yb)(stage="hlo")
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError, ValueError) as exc:
        text = str(exc).strip().removeprefix("Failed getting HLO text: ").strip("'")
        if isinstance(exc, ValueError) and text == str(exc).strip():
            raise  # not XLA refusing
        return text.splitlines()[0][:200]
    return None


def _validate(trainer: _Trainer, frozen, x_val, y_val) -> dict[str, float]:
    loss_sum, hits = 0.0, 0.0
    for start in range(0, len(x_val), VALIDATION_CHUNK):
        x = np.asarray(x_val[start : start + VALIDATION_CHUNK])
        if frozen is not None:
            x = frozen(x, training=False)  # as cache_features computes them
        loss, h = trainer.evaluate(x, y_val[start : start + VALIDATION_CHUNK])
        loss_sum, hits = loss_sum + float(loss), hits + float(h)
    return {"val_loss": loss_sum / len(x_val), "val_accuracy": hits / len(x_val)}


def _train_epoch(trainer: _Trainer, x, y, order, batch_size: int, rows: int) -> dict[str, float]:
    """One epoch. Tensors (in memory): each block indexes them whole. Arrays (memory-mapped):
    each block's rows are read first, at most `rows` at a time."""
    loss_sum, hits = 0.0, 0.0
    for block in batch_blocks(order, batch_size, rows):
        if isinstance(x, tf.Tensor):
            loss, h = trainer.block(x, y, block)
        else:
            picked = block.ravel()
            local = np.arange(picked.size).reshape(block.shape)
            loss, h = trainer.block(np.asarray(x[picked], np.float32), y[picked], local)
        loss_sum, hits = loss_sum + float(loss), hits + float(h)
    return {"loss": loss_sum / len(order), "accuracy": hits / len(order)}


def fit_head(
    net: tf.keras.Model,
    x_train,
    y_train: np.ndarray,
    x_val,
    y_val: np.ndarray,
    *,
    optimizer,
    batch_size: int,
    epochs: int,
    seed: int,
    frozen: tf.keras.Model | None = None,
    first_epoch: int = 0,
    history: dict | None = None,
    callbacks: list | None = None,
    jit: bool = True,
    verbose: int = 1,
) -> HeadFit:
    """Train `net`'s trainable variables on (x_train, y_train) for epochs first_epoch..epochs-1.

    x_train is `net`'s input (cached features, in memory or np.memmap), or, with `frozen`,
    the frozen part's input. `optimizer` must already be `net.optimizer` (compile `net` first,
    so callbacks and checkpoints find it). `history` (a resumed run's) is extended in place.
    """
    optimizer.build(net.trainable_variables)  # slots exist before tracing
    history = {} if history is None else history
    y_train, y_val = np.asarray(y_train, np.int64), np.asarray(y_val, np.int64)
    in_memory = not isinstance(x_train, np.memmap)
    x_tensor = tf.constant(x_train, tf.float32) if in_memory else None
    y_tensor = tf.constant(y_train) if in_memory else None
    compiled = "xla" if jit else "graph (transfer.jit_compile is false)"
    trainer = _Trainer(net, frozen, optimizer, jit)
    if jit and (refusal := xla_refusal(trainer, frozen, x_train, y_train, batch_size)):
        compiled, trainer = f"graph (XLA: {refusal})", _Trainer(net, frozen, optimizer, jit=False)
    cbs = tf.keras.callbacks.CallbackList(
        callbacks or [], add_progbar=verbose != 0, model=net, verbose=verbose, epochs=epochs, steps=1
    )
    net.stop_training = False
    seconds = []
    cbs.on_train_begin()
    for epoch in range(first_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        start = time.perf_counter()
        order = epoch_order(len(y_train), seed, epoch)
        if in_memory:
            logs = _train_epoch(trainer, x_tensor, y_tensor, order, batch_size, len(order))
        else:
            logs = _train_epoch(trainer, x_train, y_train, order, batch_size, GROUP_BYTES // max(1, x_train[:1].nbytes))
        if len(y_val):
            logs.update(_validate(trainer, frozen, x_val, y_val))
        seconds.append(time.perf_counter() - start)
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        cbs.on_train_batch_end(0, logs)
        cbs.on_epoch_end(epoch, logs)
        if net.stop_training:
            break
    cbs.on_train_end()
    return HeadFit(len(history.get("loss", [])), history, seconds, compiled)
