"""Which layers go to hardware: what QKeras 0.9 quantizes and hls4ml 1.3 builds bit-exactly.

One table, checked at the first stage (the baseline check, before anything trains) and again
before quantization and export. A layer outside it is refused with one line naming the layer,
its type and why, instead of failing deep inside hls4ml or giving a design whose C-simulation
differs from the quantized Keras model.

    check_convertible(model)    # BadInput: layer 'noise' (GaussianNoise) cannot be converted by hls4ml 1.3.0

Supported (float Keras, as a user brings it; QKeras kinds as the quantize stage writes them):
conv / dense (Conv2D, DepthwiseConv2D and SeparableConv2D with depth multiplier 1, Dense; any
strides; 'valid' or 'same' padding; no dilation or groups), activations (relu, ReLU, LeakyReLU
with a power-of-two slope, a final softmax; tanh / sigmoid build but as lookup tables, not
bit-exact), pooling (Max/AveragePooling2D without padded borders, GlobalMax/AveragePooling2D),
reshaping (Flatten, Reshape, ZeroPadding2D, Permute), merging (Add, Concatenate) and Dropout.
BatchNormalization is folded into the layer before it at the baseline stage (`graph.fold`).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ..errors import BadInput

# Layers quantization passes through unchanged: they only move, pick, pad or drop values.
PASS_THROUGH = {
    "Flatten", "Reshape", "Dropout", "MaxPooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Concatenate", "Add",
    "Permute", "AveragePooling2D", "GlobalAveragePooling2D",
}
# Layers with weights -> their QKeras kind (a SeparableConv2D becomes QDepthwiseConv2D + a 1x1 QConv2D).
WEIGHT_TYPES = {"Conv2D": "QConv2D", "QConv2D": "QConv2D", "Dense": "QDense", "QDense": "QDense",
                "DepthwiseConv2D": "QDepthwiseConv2D", "QDepthwiseConv2D": "QDepthwiseConv2D",
                "SeparableConv2D": "QSeparableConv2D"}
ACTIVATION_TYPES = {"Activation", "ReLU", "LeakyReLU", "QActivation", "Softmax"}
# Activations hls4ml builds; only relu (and linear) are bit-exact, softmax is dropped at export.
ACTIVATIONS = {"linear", "relu", "softmax", "tanh", "sigmoid"}
SUPPORTED = PASS_THROUGH | set(WEIGHT_TYPES) | ACTIVATION_TYPES | {"InputLayer"}

# Why some layers Keras has are not taken (the rest: hls4ml has no converter for them).
NOT_TAKEN = {
    "BatchNormalization": "a BatchNormalization that was not folded into the layer before it is not bit-exact in "
                          "hls4ml; the baseline stage folds each BN that directly follows a conv/dense layer",
    "Cropping2D": "hls4ml 1.3's bit-exact precision flow has no rule for cropping",
    "UpSampling2D": "hls4ml 1.3's bit-exact precision flow has no rule for upsampling",
    "SpatialDropout2D": "hls4ml only skips plain Dropout; use Dropout",
}


def check_convertible(model: tf.keras.Model) -> None:
    """Raise BadInput naming the first layer that cannot go to hardware, with its type and why."""
    from .quantize import hls4ml_version

    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, tf.keras.Model):
            raise BadInput(f"layer {layer.name!r} is a nested model ({kind}); flatten it into one model first")
        if kind not in SUPPORTED:
            why = NOT_TAKEN.get(kind)
            raise BadInput(f"layer {layer.name!r} ({kind}) cannot be converted by hls4ml {hls4ml_version()}"
                           + (f": {why}" if why else ""))
        why = refusal(layer)
        if why:
            raise BadInput(f"layer {layer.name!r} ({kind}) {why}")


def refusal(layer) -> str | None:
    """Why a layer of a supported kind cannot go to hardware with these settings, or None."""
    kind = type(layer).__name__
    config = layer.get_config()
    if config.get("data_format") == "channels_first":
        return "is channels_first; hls4ml's streaming layers take channels_last (the Keras default)"
    if any(int(d) != 1 for d in np.ravel(config.get("dilation_rate", 1))):
        return f"has dilation_rate {config['dilation_rate']}; hls4ml 1.3 has no dilated convolutions"
    if config.get("groups", 1) != 1:
        return f"has groups={config['groups']}; hls4ml 1.3 has no grouped convolutions"
    if config.get("depth_multiplier", 1) != 1:
        return (f"has depth_multiplier {config['depth_multiplier']}; fpgaprune builds depthwise convolutions with "
                "depth multiplier 1 only")
    activation = config.get("activation")
    if kind in WEIGHT_TYPES or kind == "Activation":
        name = activation if isinstance(activation, str) else None
        if name is not None and name not in ACTIVATIONS:
            return (f"has activation {name!r}; hls4ml builds {', '.join(sorted(ACTIVATIONS))} "
                    "(use a LeakyReLU layer with a power-of-two slope for a leaky relu)")
    if kind == "ReLU":
        return _relu_refusal(config)
    if kind == "LeakyReLU":
        return slope_refusal(float(config.get("alpha", config.get("negative_slope", 0.3))))
    if kind == "Softmax" and config.get("axis", -1) not in (-1, [-1]):
        return "normalizes another axis than the last; hls4ml's softmax takes the last"
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return _pooling_refusal(layer, config)
    return None


def _relu_refusal(config: dict) -> str | None:
    if config.get("max_value") is not None:
        return "has max_value (a capped relu); QKeras' quantized_relu caps at its own range instead, so leave it out"
    if float(config.get("threshold", 0.0)) != 0.0:
        return "has a threshold; hls4ml's relu has none"
    slope = float(config.get("negative_slope", 0.0))
    return slope_refusal(slope) if slope else None


def slope_refusal(slope: float) -> str | None:
    """A leaky relu is bit-exact only with a power-of-two slope (its products are then exact)."""
    if 0.0 < slope < 1.0 and math.log2(slope).is_integer():
        return None
    return (f"has negative slope {slope:g}; only a power-of-two slope (0.5, 0.25, 0.125, ...) gives a leaky relu "
            "whose fixed-point products equal the float ones, so use one of those")


def _pooling_refusal(layer, config: dict) -> str | None:
    """hls4ml's streaming pooling asserts that nothing is padded."""
    if config.get("padding", "valid") != "same":
        return None
    for size, pool, stride in zip(layer.input_shape[1:3], config["pool_size"], config["strides"], strict=True):
        out = -(-int(size) // int(stride))
        if (out - 1) * int(stride) + int(pool) > int(size):
            return (f"pads its borders (padding 'same' on {tuple(layer.input_shape[1:3])} with pool "
                    f"{tuple(config['pool_size'])}); hls4ml's streaming pooling takes no padding, so use 'valid' "
                    "or an input size the pool divides")
    return None


def average_count(layer) -> int | None:
    """Pixels an average-pooling layer averages (None for other layers)."""
    kind = type(layer).__name__
    if kind == "AveragePooling2D":
        return int(np.prod(layer.get_config()["pool_size"]))
    if kind == "GlobalAveragePooling2D":
        return int(np.prod(layer.input_shape[1:3]))
    return None


def exact_average(layer) -> bool:
    """Whether the average is exact in fixed point: dividing by a power of two only shifts."""
    count = average_count(layer)
    return count is not None and count & (count - 1) == 0
