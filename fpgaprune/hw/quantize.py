"""Quantization: the pruned Keras model as a QKeras model, fine-tuned with the masks still on.

`build_quantized_model` rebuilds the model layer by layer: an input quantizer first (hls4ml
needs one to derive bit-exact precisions), Conv2D/Dense as QConv2D/QDense with
`quantized_bits(bits, integer, alpha=1)` weights (plain fixed point, no scale, so the
quantized weights are exactly the ap_fixed values in the HLS project), ReLU as
`QActivation(quantized_relu(bits, integer))`; integer bits the config leaves null are chosen
from the data (`ranges.py`: from the weights, and from a calibration batch for the ReLUs). The
masks go back on with `apply_masks`, whose KernelMask keeps QKeras' weight clipping, so
quantization-aware training keeps every pruned kernel at 0.0; `quantized_bits` maps 0.0 to
exactly 0, which `check_quantized_zeros` verifies on the quantized weights themselves.

    qmodel = build_quantized_model(pruned, cfg.quantize, masks)
    qmodel, summary = quantize_model(pruned, masks, data, cfg)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..config import Config, QuantizeConfig
from ..data import Dataset
from ..errors import BadInput, WorkFailed
from ..masks import ChannelMask, all_layers, apply_masks, conv_layers, masked_max_abs
from .ranges import choose_ranges, clipped_after, range_warnings, ranges_missing

# Layers passed through unchanged: they only move, pick or pad values (bit-exact in hls4ml).
PASS_THROUGH = {
    "Flatten", "Reshape", "Dropout", "MaxPooling1D", "MaxPooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
    "UpSampling1D", "UpSampling2D", "Concatenate", "Add", "Permute",
}
WEIGHT_TYPES = {"Conv2D": "QConv2D", "QConv2D": "QConv2D", "Dense": "QDense", "QDense": "QDense"}
ACTIVATION_TYPES = {"Activation", "ReLU", "QActivation", "Softmax"}
# hls4ml reserves this layer name for its own input node.
RESERVED_NAMES = {"input": "image"}


def quantizers(cfg: QuantizeConfig):
    """Functions name -> QKeras quantizer for weights, biases, activations and the input."""
    from qkeras import quantized_bits, quantized_relu

    chosen = getattr(cfg, "chosen", {})  # ranges.ChosenRanges: every quantizer settled, by name

    def integer(b, section):  # a layer's own integer bits, else the section's
        return b.integer if b is not None and b.integer is not None else section

    def weight(name):
        b = chosen.get(name) or cfg.layers.get(name)
        return quantized_bits(b.bits if b else cfg.weight_bits, integer(b, cfg.weight_integer), alpha=1)

    def bias(name):
        return quantized_bits(cfg.bias_bits, cfg.bias_integer, alpha=1)

    def relu(name):
        b = chosen.get(name) or cfg.layers.get(name)
        return quantized_relu(b.bits if b else cfg.activation_bits, integer(b, cfg.activation_integer))

    def inputs():
        return quantized_bits(cfg.input_bits, cfg.input_integer, alpha=1)

    return weight, bias, relu, inputs


def check_convertible(model: tf.keras.Model) -> None:
    """Raise BadInput naming the first layer hls4ml 1.3 cannot convert, with its type."""
    from hls4ml.converters import get_supported_keras_layers

    supported = set(get_supported_keras_layers()) | {"Dropout"}
    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, tf.keras.Model):
            raise BadInput(f"layer {layer.name!r} is a nested model ({kind}); flatten it into one model first")
        if kind not in supported:
            raise BadInput(f"layer {layer.name!r} ({kind}) cannot be converted by hls4ml {hls4ml_version()}")


def hls4ml_version() -> str:
    """The installed hls4ml's version (error messages and export manifests name it)."""
    from importlib.metadata import version

    return version("hls4ml")


def _layer_graph(model: tf.keras.Model):
    """(layers with their input layer names, input names, output names) in model order."""
    if isinstance(model, tf.keras.Sequential):
        names = [layer.name for layer in model.layers]
        inbound = {name: [prev] for prev, name in zip(["__input__", *names], names, strict=False)}
        return model.layers, inbound, ["__input__"], [names[-1]]
    config = model.get_config()
    inbound = {}
    for entry in config["layers"]:
        nodes = entry.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise BadInput(f"layer {entry['name']!r} is used more than once (shared layers cannot be quantized)")
        inbound[entry["name"]] = [item[0] for item in nodes[0]] if nodes else []
    inputs = [item[0] for item in config["input_layers"]]
    outputs = [item[0] for item in config["output_layers"]]
    return model.layers, inbound, inputs, outputs


def _activation_name(layer) -> str:
    kind = type(layer).__name__
    if kind == "ReLU":
        return "relu"
    if kind == "Softmax":
        return "softmax"
    act = layer.get_config().get("activation", "linear")
    if isinstance(act, dict):  # a QKeras quantizer (QActivation)
        return "relu" if "relu" in act.get("class_name", "") else act.get("class_name", "linear")
    if isinstance(act, str):
        return "relu" if act.startswith("quantized_relu") else act
    return getattr(act, "__name__", str(act))


def build_quantized_model(model: tf.keras.Model, cfg: QuantizeConfig, masks: dict | None = None) -> tf.keras.Model:
    """A QKeras copy of `model` (weights copied, masks re-applied); `model` is not changed.

    Integer bits the config leaves null are chosen from the weights (`ranges.choose_ranges`; the
    ReLUs, with no calibration images here, get its uncalibrated default).
    """
    check_convertible(model)
    if ranges_missing(cfg):
        cfg = choose_ranges(model, cfg)[0]
    qs = quantizers(cfg)  # weight, bias, relu, input
    input_q = qs[3]
    layers, inbound, input_names, output_names = _layer_graph(model)
    known = {layer.name for layer in layers}
    for name in cfg.layers:
        if name not in known:
            raise BadInput(f"quantize.layers.{name}: no such layer (layers: {', '.join(sorted(known))})")
    tensors: dict[str, tf.Tensor] = {}
    new_inputs: list = []
    if isinstance(model, tf.keras.Sequential):
        tensors["__input__"] = _quantized_input(model.input_shape[1:], "image", "input_quantizer", input_q, new_inputs)
    for layer in layers:
        if type(layer).__name__ == "InputLayer":
            name = RESERVED_NAMES.get(layer.name, layer.name)
            shape = layer.input_shape[0][1:] if isinstance(layer.input_shape, list) else layer.input_shape[1:]
            tensors[layer.name] = _quantized_input(shape, name, f"{name}_quantizer", input_q, new_inputs)
            continue
        args = [tensors[n] for n in inbound[layer.name]]
        tensors[layer.name] = _quantized_layer(layer, args[0] if len(args) == 1 else args, qs)
    outputs = [tensors[n] for n in output_names]
    qmodel = tf.keras.Model(new_inputs, outputs if len(outputs) > 1 else outputs[0], name=f"{model.name}_q")
    for layer in layers:  # weights are copied once the model is built
        if type(layer).__name__ in WEIGHT_TYPES:
            qmodel.get_layer(layer.name).set_weights(layer.get_weights())
    if masks:
        qmodel = apply_masks(qmodel, masks, prune_bias=_has_bias_masks(model))
    return qmodel


def _quantized_input(shape, name: str, quantizer_name: str, input_q, inputs: list):
    """A new Input (appended to `inputs`) and the input quantizer hls4ml needs right after it."""
    from qkeras import QActivation

    inp = tf.keras.Input(shape, name=name)
    inputs.append(inp)
    return QActivation(input_q(), name=quantizer_name)(inp)


def _quantized_layer(layer, x, qs):
    """`layer` applied to `x` as QKeras: Conv2D/Dense and ReLU quantized, pooling/reshaping as is."""
    from qkeras import QConv2D, QDense

    weight_q, bias_q, relu_q, _ = qs
    kind = type(layer).__name__
    if kind in WEIGHT_TYPES:
        config = _plain_weight_config(layer)
        act = config.pop("activation")
        cls = QConv2D if WEIGHT_TYPES[kind] == "QConv2D" else QDense
        x = cls(**config, kernel_quantizer=weight_q(layer.name), bias_quantizer=bias_q(layer.name))(x)
        act_name = act if isinstance(act, str) else "linear"
        return _activation(x, act_name, f"{layer.name}_{act_name}", relu_q)
    if kind in ACTIVATION_TYPES:
        return _activation(x, _activation_name(layer), layer.name, relu_q)
    if kind in PASS_THROUGH:
        return type(layer).from_config(layer.get_config())(x)
    raise BadInput(
        f"layer {layer.name!r} ({kind}) is not quantized by fpgaprune (it quantizes Conv2D, Dense "
        "and ReLU, and passes pooling/reshaping through); fold or remove it first"
    )


def _activation(x, kind: str | None, name: str, relu_q):
    """ReLU as QActivation(quantized_relu); linear dropped; others (softmax, tanh...) kept as float."""
    from qkeras import QActivation

    if kind == "relu":
        return QActivation(relu_q(name), name=name)(x)
    if kind in ("linear", None):
        return x
    return tf.keras.layers.Activation(kind, name=name)(x)  # softmax (dropped at export), tanh...


def _has_bias_masks(model) -> bool:
    return any(isinstance(getattr(layer, "bias_constraint", None), ChannelMask) for layer in model.layers)


def _plain_weight_config(layer) -> dict:
    """A Conv2D/Dense config without mask constraints or old quantizers (they are rebuilt)."""
    config = dict(layer.get_config())
    for key in ("kernel_quantizer", "bias_quantizer", "kernel_range", "bias_range",
                "kernel_constraint", "bias_constraint"):
        config.pop(key, None)
    return config


def quantized_kernels(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """Each layer's kernel as the hardware will hold it: after its quantizer for QKeras layers.

    Float layers (a model not yet quantized) give their float kernels, so checks and plots
    read every model the same way.
    """
    out = {}
    for layer in all_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        q = getattr(layer, "kernel_quantizer_internal", None)
        out[layer.name] = np.asarray(q(tf.constant(kernel)) if q is not None else kernel.numpy())
    return out


def check_quantized_zeros(model: tf.keras.Model, masks: dict[str, np.ndarray]) -> float:
    """The largest |quantized weight| among masked kernels; WorkFailed unless it is 0.0."""
    kernels = quantized_kernels(model)
    worst = 0.0
    for name, pruned in masks.items():
        if pruned.any():
            worst = max(worst, float(np.abs(kernels[name][:, :, pruned]).max()))
    if worst != 0.0:
        raise WorkFailed(f"quantization left a masked weight at {worst:g} (expected exactly 0.0)")
    return worst


def bit_widths(model: tf.keras.Model) -> dict[str, dict]:
    """Per quantized layer: the quantizer (as QKeras prints it) of its weights or output."""
    out = {}
    for layer in model.layers:
        if hasattr(layer, "kernel_quantizer_internal"):
            kind, q = "weights", layer.kernel_quantizer_internal
        elif type(layer).__name__ == "QActivation":
            kind, q = "activation", layer.quantizer
        else:
            continue
        out[layer.name] = {"kind": kind, "bits": int(q.bits), "integer": int(q.integer), "quantizer": str(q)}
    return out


def quantize_model(
    model: tf.keras.Model, masks: dict, data: Dataset, cfg: Config, verbose: int = 1,
    checkpoint_dir=None, resume: bool = False,
):
    """Quantize `model`, fine-tune it with the masks enforced; return (qmodel, summary).

    With `checkpoint_dir` the fine-tuning saves every epoch and `resume` continues from there.
    """
    from ..process import reseed
    from ..training.fit import compile_model, evaluate, fit, optimizer_from, resolved_optimizer

    q = cfg.quantize
    calibration = data.x_train[: q.calibration_images]
    qcfg, ranges = choose_ranges(model, q, calibration)
    reseed(cfg.seed)  # after the probe model choose_ranges builds, so it takes no random numbers from training
    qmodel = build_quantized_model(model, qcfg, masks)
    float_scores = evaluate(model, data)
    before = evaluate(qmodel, data)
    lr = q.learning_rate or cfg.train.learning_rate / 10
    compile_model(qmodel, optimizer_from(cfg.train, learning_rate=lr), masked=True)
    history = {}
    if q.epochs:
        history = fit(
            qmodel, data, q.epochs, cfg.train.batch_size, seed=cfg.seed, verbose=verbose,
            checkpoint_dir=checkpoint_dir, resume=resume,
        ).history
    after = evaluate(qmodel, data)
    worst_float = masked_max_abs(qmodel, masks) if masks else 0.0
    worst_quantized = check_quantized_zeros(qmodel, masks) if masks else 0.0
    kernels = quantized_kernels(qmodel)
    convs = {layer.name for layer in conv_layers(qmodel)}
    summary = {
        "stage": "quantized",
        "float": float_scores,
        "quantized_before_finetune": before,
        **after,
        "accuracy_drop_vs_float": _drop(float_scores, after),
        "finetune_epochs": q.epochs,
        **resolved_optimizer(cfg.train, learning_rate=lr),  # the train section's optimizer
        "bits": bit_widths(qmodel),
        "ranges": clipped_after(ranges, qmodel),
        "calibration_images": int(len(calibration)),
        "warnings": range_warnings(ranges),
        "masked_kernels": {name: int(m.sum()) for name, m in masks.items()},
        "masked_max_abs_float": worst_float,
        "masked_max_abs_quantized": worst_quantized,
        "zero_quantized_weights": {n: int((k == 0).sum()) for n, k in kernels.items()},
        "conv_layers": sorted(convs),
        "history": history,
        "test_images": int(len(data.x_test)),
    }
    return qmodel, summary


def _drop(before: dict, after: dict) -> float | None:
    key = "test_accuracy" if before.get("test_accuracy") is not None else "val_accuracy"
    if before.get(key) is None or after.get(key) is None:
        return None
    return before[key] - after[key]


def logits_model(model: tf.keras.Model) -> tf.keras.Model:
    """The model up to its final softmax (the class is the argmax either way).

    Hardware computes the argmax on the logits; a softmax would add lookup tables and is not
    bit-exact in hls4ml, so the exported design ends at the last Dense layer.
    """
    last = model.layers[-1]
    if type(last).__name__ in ("Activation", "Softmax") and _activation_name(last) == "softmax":
        return tf.keras.Model(model.inputs, last.input, name=model.name)
    return model
