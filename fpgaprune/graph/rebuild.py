"""Rebuilding a Keras model as one new functional graph, layer by layer.

The walk Keras' own `clone_model` does for a functional model (replay every node, deepest
first, on new tensors), with two differences the graph passes need: a nested model is replayed
layer by layer in place of its call, so the result has no sub-models, and a pass may change a
layer's config and weights or drop a layer (its output is then its input). Every layer of the
result is a fresh copy: the input model is never changed.

    rebuilt = rebuild(model)                                        # nested models inlined
    rebuilt = rebuild(model, configs={"conv1": {...}}, weights={"conv1": [k, b]}, skip={"bn1"})
    rebuilt.model, rebuilt.inlined, rebuilt.renamed
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from ..errors import BadInput


@dataclass
class Rebuilt:
    """The new model, the nested models it inlined, and the layers renamed to stay unique."""

    model: tf.keras.Model
    inlined: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # "submodel/layer" -> new name


def is_nested(layer) -> bool:
    return isinstance(layer, tf.keras.Model)


def has_nested(model: tf.keras.Model) -> bool:
    return any(is_nested(layer) for layer in model.layers)


def rebuild(
    model: tf.keras.Model,
    *,
    configs: dict[str, dict] | None = None,
    weights: dict[str, list] | None = None,
    skip: set[str] | frozenset = frozenset(),
) -> Rebuilt:
    """A new functional model computing what `model` computes.

    `configs` / `weights` replace a layer's config / weights (by layer name); a layer named in
    `skip` passes its single input through. Weights not replaced are copied.
    """
    walk = _Walk(model, configs or {}, weights or {}, set(skip))
    inputs = [tf.keras.Input(shape=t.shape[1:], dtype=t.dtype, name=name)
              for t, name in zip(model.inputs, model.input_names, strict=True)]
    outputs = walk.model_outputs(model, inputs, None, "")
    new = tf.keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                         name=model.name)
    return Rebuilt(new, walk.inlined, walk.renamed)


class _Walk:
    """One rebuild: the fresh copy of every layer (shared layers stay shared) and the names used."""

    def __init__(self, model, configs: dict, weights: dict, skip: set):
        self.configs, self.weights, self.skip = configs, weights, skip
        self.copies: dict[int, tf.keras.layers.Layer] = {}
        self.weighted: set[int] = set()  # copies whose weights are set (a shared layer's once)
        # Top-level names are kept; a nested model's layer is renamed only where it would clash.
        self.used = {layer.name for layer in model.layers if not is_nested(layer)}
        self.inlined: list[str] = []
        self.renamed: dict[str, str] = {}

    def model_outputs(self, model, inputs: list, training, prefix: str) -> list:
        """`model`'s outputs on `inputs`, its layers replayed one by one."""
        if isinstance(model, tf.keras.Sequential):
            x = inputs[0]
            for layer in model.layers:
                x = self.call(layer, (x,), {}, training, prefix)[0]
            return [x]
        new = {id(t): n for t, n in zip(tf.nest.flatten(model.inputs), inputs, strict=True)}
        for depth in sorted(model._nodes_by_depth, reverse=True):  # deepest first: inputs before their users
            for node in model._nodes_by_depth[depth]:
                if isinstance(node.layer, tf.keras.layers.InputLayer):
                    continue
                args, kwargs = tf.nest.map_structure(lambda t: new.get(id(t), t), (node.call_args, node.call_kwargs))
                outs = self.call(node.layer, args, kwargs, training, prefix)
                for old, out in zip(tf.nest.flatten(node.outputs), outs, strict=True):
                    new[id(old)] = out
        return [new[id(t)] for t in tf.nest.flatten(model.outputs)]

    def call(self, layer, args: tuple, kwargs: dict, training, prefix: str) -> list:
        """Replay one call of `layer`; return its outputs as a flat list."""
        kwargs = dict(kwargs)
        if "training" in kwargs:  # a sub-model called with training=False keeps its layers in inference mode
            training = kwargs["training"]
        if is_nested(layer):
            self.inlined.append(f"{prefix}{layer.name}")
            return self.model_outputs(layer, tf.nest.flatten(args), training, f"{prefix}{layer.name}/")
        if layer.name in self.skip:
            return [tf.nest.flatten(args)[0]]
        copy = self.copy(layer, prefix)
        if training is not None and getattr(layer, "_expects_training_arg", False):
            kwargs["training"] = training
        out = copy(*args, **kwargs)
        if id(copy) not in self.weighted:  # built by the call above
            copy.set_weights(self.weights.get(layer.name, layer.get_weights()))
            self.weighted.add(id(copy))
        return tf.nest.flatten(out)

    def copy(self, layer, prefix: str):
        if id(layer) in self.copies:
            return self.copies[id(layer)]
        config = dict(self.configs.get(layer.name, layer.get_config()))
        if prefix:  # a nested model's layer
            name = layer.name
            if name in self.used:
                name = _unique(f"{prefix.rstrip('/').replace('/', '_')}_{layer.name}", self.used)
                self.renamed[f"{prefix}{layer.name}"] = name
            config["name"] = name
            self.used.add(name)
        copy = type(layer).from_config(config)
        self.copies[id(layer)] = copy
        return copy


def _unique(name: str, used: set[str]) -> str:
    candidate, i = name, 1
    while candidate in used:
        i += 1
        candidate = f"{name}_{i}"
    return candidate


def inbound(model: tf.keras.Model) -> dict[str, list[str]]:
    """Layer name -> the names of the layers feeding it, for a model without sub-models.

    A layer called more than once (shared weights) is a BadInput: one layer, one place in hardware.
    """
    if isinstance(model, tf.keras.Sequential):
        names = [layer.name for layer in model.layers]
        return {name: [prev] for prev, name in zip(["__input__", *names], names, strict=False)}
    out: dict[str, list[str]] = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            name = node.layer.name
            if name in out:
                raise BadInput(f"layer {name!r} is used more than once (shared layers cannot be quantized)")
            out[name] = [layer.name for layer in tf.nest.flatten(node.inbound_layers)]
    return out


def consumers(model: tf.keras.Model) -> dict[str, list[str]]:
    """Layer name -> the layers its output feeds (a model output counts as the consumer "__output__")."""
    out: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for name, sources in inbound(model).items():
        for source in sources:
            out.setdefault(source, []).append(name)
    for name in model.output_names:
        out.setdefault(name, []).append("__output__")
    return out


def max_abs_difference(a: tf.keras.Model, b: tf.keras.Model, x: np.ndarray) -> tuple[float, float]:
    """The largest |a(x) - b(x)| over every output, and the largest |a(x)| (its scale)."""
    ya = [np.asarray(y, np.float64) for y in tf.nest.flatten(a.predict(x, verbose=0, batch_size=256))]
    yb = [np.asarray(y, np.float64) for y in tf.nest.flatten(b.predict(x, verbose=0, batch_size=256))]
    diff = max(float(np.abs(p - q).max()) for p, q in zip(ya, yb, strict=True))
    return diff, max(float(np.abs(p).max()) for p in ya)


def probe_batch(model: tf.keras.Model, x: np.ndarray | None = None, images: int = 16) -> np.ndarray:
    """`x` (its first images), or seeded uniform [0, 1) images of the model's input shape."""
    if x is not None and len(x):
        return np.asarray(x[:images], np.float32)
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(0).random((images, *shape), dtype=np.float32)
