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
from ..data import Dataset, check_fits
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


def resolved_optimizer(cfg: TrainConfig, optimizer: str | None = None, learning_rate: float | None = None) -> dict:
    """The optimizer name and learning rate a stage trains with: its own, else the train section's."""
    return {"optimizer": optimizer or cfg.optimizer, "learning_rate": learning_rate or cfg.learning_rate}


def optimizer_from(cfg: TrainConfig, optimizer: str | None = None, learning_rate: float | None = None):
    """The train section's optimizer, with a stage's optional overrides."""
    used = resolved_optimizer(cfg, optimizer, learning_rate)
    name = used["optimizer"]
    return make_optimizer(
        name, used["learning_rate"], cfg.momentum if name != "adam" else 0.0, cfg.nesterov and name == "sgd"
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


class RecordHistory(tf.keras.callbacks.Callback):
    """Appends each epoch's logs to `history` (which a resumed run starts from)."""

    def __init__(self, history: dict[str, list[float]]):
        super().__init__()
        self.history_so_far = history

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history_so_far.setdefault(key, []).append(float(value))


@dataclass
class TrainingCallbacks:
    """What a training loop starts from: the first epoch, the history so far, the callbacks."""

    first_epoch: int
    history: dict[str, list[float]]
    callbacks: list
    checkpoint: TrainingCheckpoint | None = None

    def finish(self) -> None:
        """Checkpoint the final weights (early stopping's best) and mark training as over."""
        if self.checkpoint is not None:
            self.checkpoint.finish(self.history)


def training_callbacks(
    model: tf.keras.Model,
    epochs: int,
    *,
    patience: int | None,
    validation: bool,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    record_history: bool = True,
) -> TrainingCallbacks:
    """Early stopping, resume and per-epoch checkpoints, wired the same for every training loop.

    Early stopping needs a validation split (it watches val_accuracy) and restores the best
    weights. `resume` starts from the last checkpoint in `checkpoint_dir`, if any. The
    checkpoint callback comes last, so it saves a history that already holds the epoch;
    `record_history` adds the recorder Keras `fit` needs (`fit_head` records its own).
    `model` must be compiled: the checkpoint holds its optimizer.
    """
    callbacks: list = []
    if patience and validation:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True)
        )
    first_epoch, history = 0, {}
    checkpoint = TrainingCheckpoint(checkpoint_dir, model) if checkpoint_dir is not None else None
    if checkpoint is not None and resume and checkpoint.exists():
        first_epoch, history = checkpoint.resume(epochs)
    if record_history:
        callbacks.append(RecordHistory(history))
    if checkpoint is not None:
        callbacks.append(checkpoint.callback(history))
    return TrainingCallbacks(first_epoch, history, callbacks, checkpoint)


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
    check_fits(model, data)
    timer = EpochTimer()
    has_val = len(data.x_val) > 0
    loop = training_callbacks(model, epochs, patience=patience, validation=has_val,
                              checkpoint_dir=checkpoint_dir, resume=resume)
    if loop.first_epoch < epochs:
        model.fit(
            epoch_batches(data.x_train, data.y_train, batch_size, seed, loop.first_epoch, epochs),
            steps_per_epoch=-(-len(data.x_train) // batch_size),
            epochs=epochs,
            initial_epoch=loop.first_epoch,
            validation_data=(data.x_val, data.y_val) if has_val else None,
            callbacks=[timer, *(callbacks or []), *loop.callbacks],
            verbose=verbose,
        )
    loop.finish()
    return FitResult(len(loop.history.get("loss", [])), loop.history, timer.seconds)


def accuracy(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float | None:
    """Top-1 accuracy, or None for an empty split."""
    if len(x) == 0:
        return None
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(pred, axis=-1) == y))


def evaluate(model: tf.keras.Model, data: Dataset) -> dict[str, float | None]:
    """Validation and test accuracy (None where the dataset has no such split)."""
    check_fits(model, data)
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
    return model, baseline_summary(model, data, cfg, result)


def baseline_summary(model: tf.keras.Model, data: Dataset, cfg: Config, result: FitResult | None = None) -> dict:
    """The baseline stage's summary; `result` None: the model's own weights, evaluated as brought."""
    t = cfg.train
    trained = result is not None
    return {
        "stage": "baseline",
        **evaluate(model, data),
        "retrained": trained,
        "source": cfg.model.source,
        "params": int(model.count_params()),
        "epochs": result.epochs if trained else 0,
        "epoch_seconds": result.epoch_seconds if trained else [],
        "optimizer": t.optimizer if trained else None,
        "learning_rate": t.learning_rate if trained else None,
        "batch_size": t.batch_size if trained else None,
        "dataset": data.name,
        "test_dataset": data.test_name if len(data.x_test) else None,
        "split_sizes": data.sizes(),
        "seed": cfg.seed,
        "history": result.history if trained else {},
    }
