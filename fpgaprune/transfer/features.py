"""Feature caching: run a model's frozen part once, then train only the head on its outputs.

When only the top layers train, the frozen layers below compute the same outputs every epoch
(if nothing below the cut is random in training), so recomputing them is wasted work:

    split = split_at_trainable(model)            # after freezing (layer.trainable = False)
    if split.head is not None:
        features = cache_features(split.frozen, x_train, memory_limit_mb=1024)
        fit_head(split.head, features, y_train, ...)  # headfit.py; trains `model`

The head shares its layers with `model`, so training it trains the model. Random layers just
under the trainable ones (the reference model's dropout between fc1 and fc2) are moved into the
head, where they stay random, so the cut sits below them. Large caches go to a memory-mapped
.npy file instead of memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..analysis.counts import macs
from .heads import is_random_in_training


@dataclass
class Split:
    """A model cut in two: `frozen` (input -> cut) and `head` (cut -> output), sharing layers.

    `head` is None when the model cannot be trained from cached features; `reason` says why.
    """

    cut: str | None
    frozen: tf.keras.Model | None
    head: tf.keras.Model | None
    reason: str | None = None


def _producer(model: tf.keras.Model, tensor) -> tf.keras.layers.Layer:
    """The layer of `model` whose (first-node) output is `tensor`."""
    for layer in model.layers:
        outputs = layer.get_output_at(0)
        if any(t is tensor for t in (outputs if isinstance(outputs, list | tuple) else [outputs])):
            return layer
    raise ValueError(f"no layer of {model.name} produces {tensor.name}")


def split_at_trainable(model: tf.keras.Model) -> Split:
    """Cut `model` just below its lowest trainable layer (and below random layers under it)."""
    if len(model.inputs) != 1:
        return Split(None, None, None, "models with several inputs are trained uncached")
    trainable = [i for i, layer in enumerate(model.layers) if layer.trainable and layer.trainable_weights]
    if not trainable:
        return Split(None, None, None, "nothing to train")
    cut_tensor = model.layers[trainable[0]].get_input_at(0)
    while True:
        if isinstance(cut_tensor, list | tuple):
            lowest = model.layers[trainable[0]].name
            return Split(None, None, None, f"the lowest trainable layer {lowest!r} has several inputs")
        below = _producer(model, cut_tensor)
        if isinstance(below, tf.keras.layers.InputLayer):
            return Split(None, None, None, "no frozen layers below the trainable ones")
        if not is_random_in_training(below):
            break
        cut_tensor = below.get_input_at(0)  # keep dropout in the head, where it stays random
    frozen = tf.keras.Model(model.inputs, cut_tensor, name=f"{model.name}_frozen")
    for layer in frozen.layers:
        if is_random_in_training(layer):
            return Split(
                None,
                None,
                None,
                f"frozen layer {layer.name!r} ({type(layer).__name__}) is random in training, so "
                "the frozen part's outputs differ every epoch and cannot be cached",
            )
        if layer.trainable and layer.trainable_weights:
            return Split(None, None, None, f"trainable layer {layer.name!r} sits below the cut")
    try:
        head = tf.keras.Model(cut_tensor, model.outputs, name=f"{model.name}_head")
    except ValueError:
        return Split(
            None, None, None, f"layers above {below.name!r} also read tensors from below it (a skip connection)"
        )
    return Split(below.name, frozen, head)


def cache_features(
    frozen: tf.keras.Model,
    x: np.ndarray,
    *,
    memory_limit_mb: float = 1024,
    folder: str | Path | None = None,
    name: str = "features",
    chunk: int = 1024,
) -> np.ndarray:
    """`frozen`'s outputs for all of `x` (inference mode), in memory or memory-mapped.

    Above `memory_limit_mb` the features go to `<folder>/<name>.npy`, opened with
    np.lib.format.open_memmap, filled chunk by chunk, so neither the images nor the features
    need to fit in memory at once.
    """
    shape = (len(x), *frozen.output_shape[1:])
    nbytes = int(np.prod(shape)) * 4
    if nbytes <= memory_limit_mb * 2**20 or folder is None:
        out = np.empty(shape, np.float32)
    else:
        out = np.lib.format.open_memmap(Path(folder) / f"{name}.npy", mode="w+", dtype=np.float32, shape=shape)
    for start in range(0, len(x), chunk):
        stop = min(start + chunk, len(x))
        out[start:stop] = frozen(np.asarray(x[start:stop]), training=False).numpy()
    if isinstance(out, np.memmap):
        out.flush()
    return out


def speedup_bound(model: tf.keras.Model, head_layers: list[str]) -> float | None:
    """MACs of the whole model over MACs of `head_layers`: what caching can save at most."""
    before = {name: pair[0] for name, pair in macs(model).items()}
    head = sum(before.get(name, 0) for name in head_layers)
    return sum(before.values()) / head if head else None
