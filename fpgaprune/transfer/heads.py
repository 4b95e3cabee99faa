"""Model surgery for transfer learning: new heads, identity insertions, and the copy they share.

Every edit returns a fresh copy of the model (new layer objects, same weights, mask constraints
kept), so the input model is never changed:

    model = replace_head(model, new_classes=5)      # new output layer for a 5-class task
    model = insert_identity(model)                   # predictions unchanged until it trains
    model = insert_scale(model, ["conv2"])           # per-channel x1.0 after conv2

An inserted Dense layer starts as the identity (zero bias) and an inserted channel scale as
ones, so the edited model computes exactly what the original did until they train.
"""

from __future__ import annotations

import tensorflow as tf

from ..errors import BadInput

DENSE_TYPES = ("Dense", "QDense")
BaseRandomLayer = tf.keras.__internal__.layers.BaseRandomLayer


def is_random_in_training(layer: tf.keras.layers.Layer) -> bool:
    """Dropout, noise and augmentation layers: their training-mode output differs every call."""
    return isinstance(layer, BaseRandomLayer) or "Dropout" in type(layer).__name__


def dense_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """The model's Dense / QDense layers in order, output layer last."""
    return [layer for layer in model.layers if type(layer).__name__ in DENSE_TYPES]


def _flat(x) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


def _apply(layers: list, x):
    for layer in layers:
        x = layer(x)
    return x


def copy_graph(model, tensors: dict, *, seed=None, insert_before=None, insert_after=None, drop_from=None, taken=None):
    """Re-create `model`'s layers on new tensors; return (outputs, input of `drop_from`).

    `tensors` maps id(model input tensor) -> new tensor. Layers are fresh copies (from their
    config, then their weights). `insert_before` / `insert_after` ({layer name: [new layers]})
    wrap a layer; `drop_from` leaves that layer and everything depending on it out. Random
    layers without a seed get `seed`, so a run's dropout is reproducible. Copies whose name is
    in `taken` are renamed (name_2, ...).
    """
    from ..models import custom_objects

    tensors = dict(tensors)
    insert_before, insert_after = insert_before or {}, insert_after or {}
    dropped_input = None
    with tf.keras.utils.custom_object_scope(custom_objects()):
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.InputLayer):
                continue
            old_in = layer.get_input_at(0)
            if any(id(t) not in tensors for t in _flat(old_in)):
                continue  # depends on a dropped layer
            new_in = [tensors[id(t)] for t in _flat(old_in)]
            new_in = new_in if isinstance(old_in, list | tuple) else new_in[0]
            if layer.name == drop_from:
                dropped_input = new_in
                continue
            config = layer.get_config()
            if is_random_in_training(layer) and config.get("seed", 0) is None:
                config["seed"] = seed
            if taken is not None:
                config["name"] = _unique_name(config["name"], taken)
                taken.add(config["name"])
            copy = layer.__class__.from_config(config)
            out = copy(_apply(insert_before.get(layer.name, []), new_in))
            copy.set_weights(layer.get_weights())
            out = _apply(insert_after.get(layer.name, []), out)
            for old, new in zip(_flat(layer.get_output_at(0)), _flat(out), strict=True):
                tensors[id(old)] = new
    outputs = [tensors[id(t)] for t in model.outputs if id(t) in tensors]
    return outputs, dropped_input


def rebuild(model: tf.keras.Model, *, seed=None, **edits) -> tf.keras.Model:
    """A copy of `model` (fresh layers, same weights) with the `copy_graph` edits applied."""
    inputs = [tf.keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    replaced = {id(t): new for t, new in zip(model.inputs, inputs, strict=True)}
    outputs, _ = copy_graph(model, replaced, seed=seed, **edits)
    return tf.keras.Model(inputs, outputs, name=model.name)


def _unique(model: tf.keras.Model, name: str) -> str:
    return _unique_name(name, {layer.name for layer in model.layers})


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def replace_head(
    model: tf.keras.Model,
    *,
    new_classes: int | None = None,
    head: tf.keras.Model | None = None,
    replace_top: int = 1,
    seed: int | None = None,
) -> tuple[tf.keras.Model, list[str]]:
    """Drop the top `replace_top` Dense layers (and what follows them); put a new head there.

    The new head is either one Dense layer with `new_classes` outputs plus softmax (named like
    the old output layer, so per-layer settings still apply), or a copy of the layers
    of the Keras model `head`, whose input must match the tensor it is put on. Returns the
    model and the names of the new layers.
    """
    dense = dense_layers(model)
    if len(dense) < replace_top:
        raise BadInput(
            f"transfer.replace_top: {replace_top} Dense layers to replace, but the model has "
            f"{len(dense)} ({', '.join(d.name for d in dense) or 'none'})"
        )
    first_dropped = dense[-replace_top]
    inputs = [tf.keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    replaced = dict(zip(map(id, model.inputs), inputs, strict=True))
    kept, attach = copy_graph(model, replaced, seed=seed, drop_from=first_dropped.name)
    if kept or attach is None or isinstance(attach, list):
        raise BadInput(
            f"transfer: cannot replace the head above {first_dropped.name!r}: the model's output "
            "does not come from that layer alone"
        )
    if head is not None:
        want, got = tuple(head.input_shape[1:]), tuple(attach.shape[1:])
        if len(head.inputs) != 1 or want != got:
            raise BadInput(
                f"transfer.head: the new head takes inputs of shape {want}, but the layer it "
                f"replaces ({first_dropped.name!r}) is fed {got}"
            )
    # Names of the layers kept below the new head: new layers must not reuse them.
    kept_names = {layer.name for layer in tf.keras.Model(inputs, attach).layers}
    if head is not None:
        (out,), _ = copy_graph(head, {id(head.inputs[0]): attach}, seed=seed, taken=set(kept_names))
    else:
        name = _unique_name(dense[-1].name, kept_names)
        out = tf.keras.layers.Dense(new_classes, name=name)(attach)
        out = tf.keras.layers.Activation("softmax", name=_unique_name("softmax", kept_names))(out)
    new = tf.keras.Model(inputs, out, name=model.name)
    new_layers = [layer.name for layer in new.layers if layer.weights and layer.name not in kept_names]
    return new, new_layers


def insert_identity(model: tf.keras.Model, seed: int | None = None) -> tuple[tf.keras.Model, str]:
    """Insert a Dense layer initialised to the identity (zero bias) before the output layer."""
    dense = dense_layers(model)
    if not dense:
        raise BadInput("transfer.insert_identity: the model has no Dense output layer")
    out_layer = dense[-1]
    width = int(out_layer.kernel.shape[0])
    name = _unique(model, "fc_identity")
    layer = tf.keras.layers.Dense(width, kernel_initializer="identity", bias_initializer="zeros", name=name)
    return rebuild(model, seed=seed, insert_before={out_layer.name: [layer]}), name


def insert_scale(model: tf.keras.Model, after: list[str], seed: int | None = None) -> tuple[tf.keras.Model, list[str]]:
    """After each named layer, insert a per-channel scale initialised to ones (1x1 depthwise conv).

    A standard Keras layer (hls4ml converts it), multiplying each channel by one weight: the
    multiplicative counterpart of the identity Dense layer for conv stacks.
    """
    names = {layer.name: layer for layer in model.layers}
    inserts, new_names = {}, []
    for target in after:
        if target not in names:
            raise BadInput(f"transfer.insert_scale: no layer named {target!r} (layers: {', '.join(names)})")
        shape = names[target].output_shape
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise BadInput(f"transfer.insert_scale: {target!r} outputs {shape}, not an image (N, H, W, C)")
        name = _unique(model, f"{target}_scale")
        inserts[target] = [
            tf.keras.layers.DepthwiseConv2D(1, use_bias=False, depthwise_initializer="ones", name=name)
        ]
        new_names.append(name)
    return rebuild(model, seed=seed, insert_after=inserts), new_names
