"""Quantization: the pruned Keras model as a QKeras model, fine-tuned with the masks still on.

`build_quantized_model` rebuilds the model layer by layer: an input quantizer first (hls4ml
needs one to derive bit-exact precisions), Conv2D/DepthwiseConv2D/Dense as QConv2D/
QDepthwiseConv2D/QDense with `quantized_bits(bits, integer, alpha=1)` weights (plain fixed
point, no scale, so the quantized weights are exactly the ap_fixed values in the HLS project),
a SeparableConv2D as its two halves (QDepthwiseConv2D `<name>_depthwise`, then a 1x1 QConv2D
`<name>` holding the pointwise kernel its mask names), ReLU as
`QActivation(quantized_relu(bits, integer))`, a LeakyReLU (power-of-two slope) followed by
`QActivation(quantized_bits)`, and an average over a pixel count that is not a power of two
followed by `QActivation(quantized_bits)` too: fixed point divides exactly only by powers of
two, and a quantizer right after the division makes both sides round the same. Integer bits
the config leaves null are chosen from the data (`ranges.py`: from the weights, and from a
calibration batch for the ReLUs). The masks go back on with `apply_masks`, whose KernelMask
keeps QKeras' weight clipping, so quantization-aware training keeps every pruned kernel at 0.0;
`quantized_bits` maps 0.0 to exactly 0, which `check_quantized_zeros` verifies on the quantized
weights themselves.

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
from .support import ACTIVATION_TYPES, PASS_THROUGH, WEIGHT_TYPES, check_convertible, exact_average

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
    if kind == "LeakyReLU" or (kind == "ReLU" and _slope(layer)):
        return "leaky_relu"
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
            _copy_weights(layer, qmodel)
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
    """`layer` applied to `x` as QKeras: conv/dense and activations quantized, pooling/reshaping as is."""
    from qkeras import QActivation

    weight_q, bias_q, relu_q, _ = qs
    kind = type(layer).__name__
    if kind in WEIGHT_TYPES:
        config = _plain_weight_config(layer)
        act = config.pop("activation")
        x = _weight_layer(WEIGHT_TYPES[kind], config, weight_q, bias_q)(x)
        act_name = act if isinstance(act, str) else "linear"
        return _activation(x, act_name, f"{layer.name}_{act_name}", relu_q)
    if kind in ACTIVATION_TYPES:
        return _activation(x, _activation_name(layer), layer.name, relu_q, _slope(layer))
    if kind in PASS_THROUGH:
        x = type(layer).from_config(layer.get_config())(x)
        if kind in ("AveragePooling2D", "GlobalAveragePooling2D") and not exact_average(layer):
            x = QActivation(_signed(relu_q(layer.name)), name=f"{layer.name}_quantizer")(x)
        return x
    raise BadInput(
        f"layer {layer.name!r} ({kind}) is not quantized by fpgaprune (it quantizes conv, dense "
        "and activation layers, and passes pooling/reshaping through); fold or remove it first"
    )


def _weight_layer(qkind: str, config: dict, weight_q, bias_q):
    """The QKeras layer of kind `qkind` with `config`, or (QSeparableConv2D) its two halves as one callable.

    `weight_q` / `bias_q` give a fresh quantizer by layer name (QKeras layers must not share one);
    a SeparableConv2D's depthwise half is `<name>_depthwise`, its pointwise half keeps `<name>`.
    """
    from qkeras import QConv2D, QDense, QDepthwiseConv2D

    name = config["name"]
    if qkind == "QDepthwiseConv2D":
        return QDepthwiseConv2D(**config, depthwise_quantizer=weight_q(name), bias_quantizer=bias_q(name))
    if qkind != "QSeparableConv2D":
        cls = QConv2D if qkind == "QConv2D" else QDense
        return cls(**config, kernel_quantizer=weight_q(name), bias_quantizer=bias_q(name))
    depthwise = QDepthwiseConv2D(config["kernel_size"], strides=config["strides"], padding=config["padding"],
                                 use_bias=False, depthwise_quantizer=weight_q(f"{name}_depthwise"),
                                 name=f"{name}_depthwise")
    pointwise = QConv2D(config["filters"], 1, use_bias=config["use_bias"], kernel_quantizer=weight_q(name),
                        bias_quantizer=bias_q(name), name=name)
    return lambda x: pointwise(depthwise(x))


def _copy_weights(layer, qmodel) -> None:
    """`layer`'s weights into its QKeras counterpart (a SeparableConv2D's into its two halves)."""
    weights = layer.get_weights()
    if type(layer).__name__ == "SeparableConv2D":
        qmodel.get_layer(f"{layer.name}_depthwise").set_weights(weights[:1])
        weights = weights[1:]
    qmodel.get_layer(layer.name).set_weights(weights)


def _slope(layer) -> float:
    """The negative slope of a ReLU / LeakyReLU layer (0.0 for others)."""
    config = layer.get_config()
    if type(layer).__name__ == "LeakyReLU":
        return float(config.get("alpha", config.get("negative_slope", 0.3)))
    return float(config.get("negative_slope", 0.0)) if type(layer).__name__ == "ReLU" else 0.0


def _signed(relu_quantizer):
    """quantized_bits with the relu's step and range plus a sign bit: ap_fixed<bits + 1, integer + 1>."""
    from qkeras import quantized_bits

    return quantized_bits(int(relu_quantizer.bits) + 1, int(relu_quantizer.integer), alpha=1)


def _activation(x, kind: str | None, name: str, relu_q, slope: float = 0.0):
    """ReLU as QActivation(quantized_relu); a leaky relu as the float LeakyReLU then QActivation(quantized_bits)
    (QKeras' own leaky quantized_relu clips its negative side where hls4ml's does not); linear dropped;
    others (softmax, tanh...) kept as float."""
    from qkeras import QActivation

    if kind == "leaky_relu":
        x = tf.keras.layers.LeakyReLU(slope, name=f"{name}_slope")(x)
        return QActivation(_signed(relu_q(name)), name=name)(x)
    if kind == "relu":
        return QActivation(relu_q(name), name=name)(x)
    if kind in ("linear", None):
        return x
    return tf.keras.layers.Activation(kind, name=name)(x)  # softmax (dropped at export), tanh...


def _has_bias_masks(model) -> bool:
    return any(isinstance(getattr(layer, "bias_constraint", None), ChannelMask) for layer in model.layers)


def _plain_weight_config(layer) -> dict:
    """A conv/dense config without mask constraints or old quantizers (they are rebuilt)."""
    config = dict(layer.get_config())
    for which in ("kernel", "depthwise", "pointwise", "bias"):
        for key in (f"{which}_quantizer", f"{which}_range", f"{which}_constraint"):
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
            worst = max(worst, float(np.abs(kernels[name][..., pruned]).max()))  # conv [kh, kw, ...] or dense
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
