"""BatchNormalization folding: each BN merged into the Conv2D / DepthwiseConv2D / SeparableConv2D /
Dense layer right before it, so the hardware computes one layer where Keras computed two.

At inference a BN computes `gamma * (y - mean) / sqrt(var + eps) + beta` per channel, an affine
map `s * y + t`; with `y = W x + b` that is `(s W) x + (s b + t)`. So each output channel's
kernels are scaled by `s` and the bias becomes `s b + t` (a bias is added where the layer had
none). A pruned kernel stays exactly 0.0 (kept at +0.0, not `0.0 * s`, which is -0.0 for s < 0)
and keeps its KernelMask, so folding a pruned model keeps it pruned.

A BN that does not directly follow such a layer (after an activation, a pooling, the input),
or whose layer also feeds something else, cannot become weights: it is refused naming the
layer, since hls4ml would otherwise build it as a separate fixed-point scale-and-shift that the
quantized Keras model does not compute bit for bit.

    folded, report = fold_batchnorm(model, x)
    report   # {"folded": [{"batchnorm": "bn1", "into": "conv1", ...}], "max_abs_diff": 3e-07, ...}
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..errors import BadInput, WorkFailed
from ..masks import enforce_masks
from .flatten import flatten_model
from .rebuild import consumers, inbound, max_abs_difference, probe_batch, rebuild

# Layer kind -> the weight its output channels scale (the rest of its weights are unchanged).
FOLDABLE = {"Conv2D": "kernel", "DepthwiseConv2D": "depthwise_kernel", "SeparableConv2D": "pointwise_kernel",
            "Dense": "kernel"}


def fold_batchnorm(model: tf.keras.Model, x: np.ndarray | None = None) -> tuple[tf.keras.Model, dict]:
    """`model` with every BatchNormalization folded into the layer before it, and a report.

    The folded model is checked against `model` on `x` (or seeded random images); a model
    without BN is returned as is. Nested models are flattened first. `model` is not changed.
    """
    model, _ = flatten_model(model, x)
    pairs = foldable_pairs(model)
    if not pairs:
        return model, {"folded": [], "max_abs_diff": 0.0}
    configs, weights = {}, {}
    for bn_name, name in pairs.items():
        layer, bn = model.get_layer(name), model.get_layer(bn_name)
        configs[name] = {**layer.get_config(), "use_bias": True}
        weights[name] = folded_weights(layer, bn)
    folded = rebuild(model, configs=configs, weights=weights, skip=set(pairs)).model
    enforce_masks(folded)
    batch = probe_batch(model, x)
    diff, scale = max_abs_difference(model, folded, batch)
    if diff > 1e-4 * (1.0 + scale):
        raise WorkFailed(f"model {model.name}: the BN-folded model differs from the original (max |diff| {diff:g})")
    report = {
        "folded": [{"batchnorm": bn, "into": name, "kind": type(model.get_layer(name)).__name__}
                   for bn, name in pairs.items()],
        "max_abs_diff": diff,
        "output_scale": scale,
        "images": len(batch),
    }
    return folded, report


def foldable_pairs(model: tf.keras.Model) -> dict[str, str]:
    """BN layer name -> the layer it folds into; any BN that cannot be folded is a BadInput."""
    sources, users = inbound(model), consumers(model)
    pairs = {}
    for bn in model.layers:
        if type(bn).__name__ != "BatchNormalization":
            continue
        where = f"layer {bn.name!r} (BatchNormalization)"
        rank = len(bn.input_shape)
        if list(bn.axis) != [rank - 1]:
            raise BadInput(f"{where}: normalizes axis {list(bn.axis)}, not the channels (last) axis; "
                           "only a channels-last BN can be folded into weights")
        (source,) = sources[bn.name]
        prev = model.get_layer(source) if source != "__input__" else None
        kind = type(prev).__name__ if prev is not None else "input"
        if kind not in FOLDABLE:
            raise BadInput(f"{where} follows {source!r} ({kind}), not a Conv2D, DepthwiseConv2D, SeparableConv2D "
                           "or Dense layer, so it cannot be folded into weights; put it right after the layer "
                           "(before the activation)")
        activation = prev.get_config().get("activation", "linear")
        if activation != "linear":
            raise BadInput(f"{where} follows {source!r}, whose own {activation!r} activation comes first, so it "
                           "cannot be folded into weights; give the layer no activation and apply it after the BN")
        others = [u for u in users[source] if u != bn.name]
        if others:
            raise BadInput(f"{where}: the output of {source!r} also feeds {others[0]!r}, so the BN cannot be "
                           "folded into its weights")
        pairs[bn.name] = source
    return pairs


def folded_weights(layer: tf.keras.layers.Layer, bn: tf.keras.layers.Layer) -> list[np.ndarray]:
    """`layer`'s weights (its own order, bias last) with `bn`'s scale and shift folded in."""
    scale, shift = bn_affine(bn)
    kind = type(layer).__name__
    which = FOLDABLE[kind]
    out = []
    for var in layer.weights:
        w = np.asarray(var.numpy(), np.float64)
        if var is getattr(layer, which):
            s = scale.reshape(w.shape[-2:]) if kind == "DepthwiseConv2D" else scale  # [cin, multiplier]
            w = np.where(w == 0.0, 0.0, w * s)  # +0.0 for a pruned weight, whatever the sign of s
        elif var is getattr(layer, "bias", None):
            continue
        out.append(w.astype(np.float32))
    bias = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else np.zeros_like(scale)
    out.append((bias * scale + shift).astype(np.float32))
    return out


def bn_affine(bn: tf.keras.layers.Layer) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) with BN(y) = s * y + t at inference, per channel, in float64."""
    mean = np.asarray(bn.moving_mean.numpy(), np.float64)
    var = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else np.zeros_like(mean)
    s = gamma / np.sqrt(var + float(bn.epsilon))
    return s, beta - mean * s
