"""Baseline training, and the `fit` helpers every training stage shares.

Training is plain Keras `fit` with callbacks, so progress bars, early stopping and
checkpoints work the same in every stage; `train_baseline` is the first stage of a run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..checkpoint import TrainingCheckpoint, epoch_batches
from ..config import Config, TrainConfig
from ..data import Dataset
from ..errors import BadInput
from ..masks import masked_optimizer


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0, nesterov: bool = False):
    """A Keras optimizer by name: sgd (momentum, nesterov), rmsprop (momentum) or adam."""
    if name == "sgd":
        return tf.keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov)
    if name == "rmsprop":
        return tf.keras.optimizers.RMSprop(learning_rate, momentum=momentum)
    if name == "adam":
        return tf.keras.optimizers.Adam(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")


def optimizer_from(cfg: TrainConfig, optimizer: str | None = None, learning_rate: float | None = None):
    """The train section's optimizer, with a stage's optional overrides."""
    return make_optimizer(
        optimizer or cfg.optimizer,
        learning_rate or cfg.learning_rate,
        cfg.momentum if (optimizer or cfg.optimizer) != "adam" else 0.0,
        cfg.nesterov and (optimizer or cfg.optimizer) == "sgd",
    )


def compile_model(model: tf.keras.Model, optimizer, masked: bool = True) -> tf.keras.Model:
    """Compile for integer labels; `masked` wraps the optimizer so masked gradients are zero."""
    model.compile(
        optimizer=masked_optimizer(optimizer) if masked else optimizer,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


@dataclass
class FitResult:
    epochs: int
    history: dict[str, list[float]]
    epoch_seconds: list[float]


class EpochTimer(tf.keras.callbacks.Callback):
    """Records the wall time of every epoch (for summaries and benchmarks)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def check_data_fits(model: tf.keras.Model, data: Dataset) -> None:
    """BadInput unless the images fit the model's input and the labels its outputs."""
    expected = tuple(model.input_shape[1:])
    for split, x, y in (("train", data.x_train, data.y_train), ("validation", data.x_val, data.y_val),
                        ("test", data.x_test, data.y_test)):
        if len(x) == 0:
            continue
        if any(e is not None and e != a for e, a in zip(expected, x.shape[1:], strict=False)) or len(expected) != x.ndim - 1:
            raise BadInput(f"data {data.name}: {split} images are {x.shape[1:]}, the model expects {expected}")
        classes = model.output_shape[-1]
        if int(y.max()) >= classes:
            raise BadInput(f"data {data.name}: {split} labels go up to {int(y.max())}, the model has {classes} outputs")


class RecordHistory(tf.keras.callbacks.Callback):
    """Appends each epoch's logs to `history` (which a resumed run starts from)."""

    def __init__(self, history: dict[str, list[float]]):
        super().__init__()
        self.history_so_far = history

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history_so_far.setdefault(key, []).append(float(value))


def fit(
    model: tf.keras.Model,
    data: Dataset,
    epochs: int,
    batch_size: int,
    *,
    seed: int = 0,
    patience: int | None = None,
    callbacks: list | None = None,
    verbose: int = 1,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> FitResult:
    """`model.fit` on the train split, validating on the validation split.

    Epoch e sees the training images in an order fixed by (seed, e). With `checkpoint_dir`,
    weights, optimizer and dropout state are saved after every epoch; `resume` restores the
    last of them, if any, and continues, reaching the same weights as an uninterrupted run.
    """
    check_data_fits(model, data)
    timer = EpochTimer()
    cbs = [timer, *(callbacks or [])]
    has_val = len(data.x_val) > 0
    if patience and has_val:
        cbs.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=patience, restore_best_weights=True
            )
        )
    first_epoch, history = 0, {}
    checkpoint = TrainingCheckpoint(checkpoint_dir, model) if checkpoint_dir is not None else None
    if checkpoint is not None and resume and checkpoint.exists():
        first_epoch, history = checkpoint.resume(epochs)
    cbs.append(RecordHistory(history))
    if checkpoint is not None:
        cbs.append(checkpoint.callback(history))
    steps = -(-len(data.x_train) // batch_size)
    if first_epoch < epochs:
        model.fit(
            epoch_batches(data.x_train, data.y_train, batch_size, seed, first_epoch, epochs),
            steps_per_epoch=steps,
            epochs=epochs,
            initial_epoch=first_epoch,
            validation_data=(data.x_val, data.y_val) if has_val else None,
            callbacks=cbs,
            verbose=verbose,
        )
    if checkpoint is not None:
        checkpoint.finish(history)
    return FitResult(len(history.get("loss", [])), history, timer.seconds)


def accuracy(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float | None:
    """Top-1 accuracy, or None for an empty split."""
    if len(x) == 0:
        return None
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(pred, axis=-1) == y))


def evaluate(model: tf.keras.Model, data: Dataset) -> dict[str, float | None]:
    """Validation and test accuracy (None where the dataset has no such split)."""
    check_data_fits(model, data)
    return {
        "val_accuracy": accuracy(model, data.x_val, data.y_val),
        "test_accuracy": accuracy(model, data.x_test, data.y_test),
    }


def train_baseline(
    model: tf.keras.Model,
    data: Dataset,
    cfg: Config,
    verbose: int = 1,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
):
    """Train `model` from the config's train section; return it with its summary dict.

    Call `process.reseed(cfg.seed)` before building `model`, so its initial weights are seeded too.
    """
    t = cfg.train
    compile_model(model, optimizer_from(t), masked=False)
    result = fit(
        model, data, t.epochs, t.batch_size, seed=cfg.seed, patience=t.early_stopping_patience,
        verbose=verbose, checkpoint_dir=checkpoint_dir, resume=resume,
    )
    scores = evaluate(model, data)
    summary = {
        "stage": "baseline",
        **scores,
        "params": int(model.count_params()),
        "epochs": result.epochs,
        "epoch_seconds": result.epoch_seconds,
        "optimizer": t.optimizer,
        "learning_rate": t.learning_rate,
        "batch_size": t.batch_size,
        "dataset": data.name,
        "test_dataset": data.test_name if len(data.x_test) else None,
        "split_sizes": data.sizes(),
        "seed": cfg.seed,
        "history": result.history,
    }
    return model, summary
