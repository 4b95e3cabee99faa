"""Per-epoch checkpoints, so an interrupted training stage resumes where it stopped.

After every epoch the weights, the optimizer state and the state of the dropout random
generators are written with `tf.train.Checkpoint`, then a small `state.json` naming that
checkpoint is renamed into place. A process killed at any moment leaves the previous complete
checkpoint. Together with `epoch_batches` (the batch order of epoch e depends only on the seed
and e) a resumed run repeats exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import tensorflow as tf

from .errors import BadInput, option
from .io import write_json

STATE_FILE = "state.json"


def dropout_generators(model: tf.keras.Model) -> dict[str, tf.random.Generator]:
    """The tf.random.Generator of every random layer (Dropout...), created if not yet built."""
    out = {}
    for layer in model.submodules:
        rng = getattr(layer, "_random_generator", None)
        if rng is None or not hasattr(rng, "_maybe_init"):
            continue
        rng._maybe_init()
        gen = getattr(rng, "_generator", None)
        if isinstance(gen, tf.random.Generator):
            out[layer.name] = gen
    return out


def epoch_batches(x, y, batch_size: int, seed: int, first_epoch: int, epochs: int) -> tf.data.Dataset:
    """Batches of epochs first_epoch..epochs-1, each epoch shuffled by (seed, epoch) alone."""
    n = len(x)
    x_t, y_t = tf.constant(x), tf.constant(y)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    batches = batches.map(lambda idx: (tf.gather(x_t, idx), tf.gather(y_t, idx)), num_parallel_calls=1)
    return batches.prefetch(2)


def remove_checkpoint(folder: str | Path) -> None:
    """Delete a stage's checkpoints (and the .checkpoints folder once it is empty)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.is_dir() and not any(folder.parent.iterdir()):
        folder.parent.rmdir()


class TrainingCheckpoint:
    """The checkpoint folder of one training stage; `callback` saves it after every epoch."""

    def __init__(self, folder: str | Path, model: tf.keras.Model):
        self.folder = Path(folder)
        self.model = model
        self._ckpt = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, rngs=dropout_generators(model)
        )

    def exists(self) -> bool:
        return (self.folder / STATE_FILE).is_file()

    def state(self) -> dict:
        try:
            return json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            raise BadInput(
                f"checkpoint {self.folder}: unreadable {STATE_FILE}; {option('force')} to start over"
            ) from None

    def restore(self) -> dict:
        """Load the last complete checkpoint into the model and optimizer; return its state."""
        if not self.exists():
            raise BadInput(f"checkpoint {self.folder}: nothing to resume; {option('no_resume')}")
        state = self.state()
        # Build the optimizer's slots first, so their values are restored, not deferred.
        self.model.optimizer.build(self.model.trainable_variables)
        self._ckpt.read(str(self.folder / state["checkpoint"])).assert_existing_objects_matched()
        return state

    def resume(self, epochs: int) -> tuple[int, dict]:
        """Restore the last checkpoint; return (first epoch left to train of `epochs`, history)."""
        state = self.restore()
        return (epochs if state.get("finished") else int(state["epoch"])), state["history"]

    def finish(self, history: dict) -> None:
        """Save the final weights (early stopping's best ones) and mark training as over."""
        if history.get("loss"):
            self.save(len(history["loss"]) - 1, history, finished=True)

    def save(self, epoch: int, history: dict, finished: bool = False) -> None:
        """Checkpoint after epoch `epoch`; `finished`: training is over (early stopping included)."""
        prefix = self.folder / f"epoch-{epoch + 1:04d}{'-final' if finished else ''}"
        self.folder.mkdir(parents=True, exist_ok=True)
        written = Path(self._ckpt.write(str(prefix)))
        state = {"epoch": epoch + 1, "checkpoint": written.name, "history": history, "finished": finished}
        write_json(self.folder / STATE_FILE, state)
        for old in self.folder.glob("epoch-*"):
            if not old.name.startswith(written.name + "."):
                old.unlink()

    def callback(self, history: dict) -> tf.keras.callbacks.Callback:
        """Saves after every epoch; `history` is the dict the epoch's logs were added to."""
        checkpoint = self

        class SaveEveryEpoch(tf.keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                checkpoint.save(epoch, history)

        return SaveEveryEpoch()


class RoundCheckpoint:
    """Models and loop state saved after each round of a multi-round stage (gradual pruning).

    `save` writes the round's models under new names, then renames a state.json naming them
    into place, then deletes the previous round's files: a kill at any moment leaves one
    complete round.
    """

    def __init__(self, folder: str | Path, allow_custom_code: bool = False):
        self.folder = Path(folder)
        # its models are checked when loaded like any model file: written by us is not trusted
        self.allow_custom_code = allow_custom_code

    def exists(self) -> bool:
        return (self.folder / STATE_FILE).is_file()

    def save(self, round_index: int, state: dict, models: dict[str, tf.keras.Model]) -> None:
        from .models import save_model

        self.folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, model in models.items():
            files[name] = f"round-{round_index:04d}-{name}.h5"
            save_model(model, self.folder / files[name])
        write_json(self.folder / STATE_FILE, {**state, "round": round_index, "models": files})
        for old in self.folder.glob("round-*.h5"):
            if old.name not in files.values():
                old.unlink()

    def load(self) -> tuple[dict, dict[str, tf.keras.Model]]:
        """The last complete round's state and models."""
        from .models import load_model_file

        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
            models = {
                name: load_model_file(self.folder / file, self.allow_custom_code)
                for name, file in state["models"].items()
            }
        except (OSError, KeyError, json.JSONDecodeError):
            raise BadInput(f"checkpoint {self.folder}: unreadable; {option('force')} to start over") from None
        except BadInput as exc:  # keep the reason: a refused model says how to allow it
            raise BadInput(f"checkpoint {self.folder}: {exc.raw}; or {option('force')} to start over") from None
        return state, models
