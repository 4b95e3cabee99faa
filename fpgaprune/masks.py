"""Kernel masks: the one mechanism every stage uses to keep pruned 2-D kernels at exactly 0.0.

A mask is data: for each conv layer, a boolean array `pruned[cin, cout]` (True = the 2-D
kernel `W[:, :, cin, cout]` is pruned). A Dense layer's mask is element-wise, `pruned[i, o]`
over its kernel [in, out]: a Dense "2-D kernel" is one weight, so the same arrays, constraint
and counts serve both. It lives in three interchangeable forms:

- a mask spec (YAML a person edits): `conv2: [[29, 13], [4, 7]]`, see `spec.py`;
- an npz of boolean arrays, one per layer (`save_masks` / `load_masks`);
- a `KernelMask` Keras constraint on the layer, which serializes with the model.

`apply_masks(model, masks)` returns a copy of the model whose pruned kernels are zero and
carry a `KernelMask`. Keras applies constraints after every optimizer step inside `fit`, so
the weights stay at 0.0 for any optimizer; `masked_optimizer` additionally zeroes the
gradients of masked weights so optimizer state (momentum, Adam moments) never accumulates for
them. Both cost O(weights) per step, against the convolution's O(weights x pixels x batch).

    model = apply_masks(model, masks)
    model.compile(masked_optimizer(tf.keras.optimizers.Adam()), loss, metrics)
    model.fit(x, y, epochs=3)          # masked kernels stay exactly 0.0
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tensorflow as tf

from .errors import BadInput
from .io import atomic_path

# The layers whose 2-D kernels a mask prunes -> the kernel it prunes and that kernel's constraint.
# A SeparableConv2D's pointwise kernel [1, 1, cin, cout] is pruned; its depthwise kernels (one per
# input channel, like a DepthwiseConv2D's) are not.
PRUNABLE = {
    "Conv2D": ("kernel", "kernel_constraint"),
    "QConv2D": ("kernel", "kernel_constraint"),
    "SeparableConv2D": ("pointwise_kernel", "pointwise_constraint"),
    "Dense": ("kernel", "kernel_constraint"),
    "QDense": ("kernel", "kernel_constraint"),
}
CONV_TYPES = ("Conv2D", "QConv2D", "SeparableConv2D")
# Dense layers are pruned weight by weight, and only when prune.layers names them.
DENSE_TYPES = ("Dense", "QDense")
# Every (weight, constraint) pair a mask constraint may sit on.
_MASKABLE = (("kernel", "kernel_constraint"), ("pointwise_kernel", "pointwise_constraint"),
             ("bias", "bias_constraint"))


class _ZeroMask(tf.keras.constraints.Constraint):
    """Shared by the mask constraints: optional clipping, then the masked entries set to 0.0."""

    clip: float | None
    _keep: np.ndarray

    @property
    def keep(self) -> np.ndarray:
        """The 0/1 multiplier, shape of the weight (1 = kept)."""
        return self._keep

    def __call__(self, w):
        if self.clip is not None:
            w = tf.clip_by_value(w, -self.clip, self.clip)
        # where(), not w * keep: a negative weight times 0.0 would give -0.0.
        return tf.where(tf.constant(self._keep, dtype=tf.bool), w, tf.zeros_like(w))

    def mask_gradient(self, grad):
        return grad * tf.constant(self._keep, dtype=grad.dtype)


@tf.keras.utils.register_keras_serializable(package="fpgaprune")
class KernelMask(_ZeroMask):
    """Constraint that zeroes the pruned 2-D kernels `W[:, :, cin, cout]` after every update.

    `pruned` lists (cin, cout) pairs (for a Dense kernel [in, out], (input, output) weights);
    the config stores that list, not a dense array, so it stays small inside a saved model.
    `clip` keeps QKeras' default weight clipping, which a layer's `kernel_constraint` would
    otherwise replace.
    """

    def __init__(self, kernel_shape, pruned, clip=None):
        self.kernel_shape = [int(s) for s in kernel_shape]
        self.pruned = sorted({(int(a), int(b)) for a, b in pruned})
        self.clip = None if clip is None else float(clip)
        keep = np.ones(self.kernel_shape[-2:], np.float32)
        for cin, cout in self.pruned:
            keep[cin, cout] = 0.0
        self._keep = np.broadcast_to(keep, self.kernel_shape).copy()

    def get_config(self):
        return {"kernel_shape": self.kernel_shape, "pruned": [list(p) for p in self.pruned], "clip": self.clip}


@tf.keras.utils.register_keras_serializable(package="fpgaprune")
class ChannelMask(_ZeroMask):
    """Constraint that zeroes chosen entries of a bias vector (fully pruned output channels)."""

    def __init__(self, size, pruned, clip=None):
        self.size = int(size)
        self.pruned = sorted({int(c) for c in pruned})
        self.clip = None if clip is None else float(clip)
        self._keep = np.ones(self.size, np.float32)
        self._keep[self.pruned] = 0.0

    def get_config(self):
        return {"size": self.size, "pruned": self.pruned, "clip": self.clip}


MASK_CONSTRAINTS = (KernelMask, ChannelMask)


def conv_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Every Conv2D / QConv2D / SeparableConv2D layer, in model order (the layers a mask may name)."""
    return [layer for layer in all_layers(model) if type(layer).__name__ in CONV_TYPES]


def dense_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Every Dense / QDense layer, in model order (masked only where prune.layers names them)."""
    return [layer for layer in all_layers(model) if type(layer).__name__ in DENSE_TYPES]


def prunable_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Every layer a mask may name (conv and dense), in model order."""
    return [layer for layer in all_layers(model) if type(layer).__name__ in PRUNABLE]


def is_dense(layer: tf.keras.layers.Layer) -> bool:
    return type(layer).__name__ in DENSE_TYPES


def conv_kernel(layer: tf.keras.layers.Layer) -> tf.Variable:
    """The kernel whose 2-D kernels a mask prunes: [kh, kw, cin, cout] (pointwise for
    SeparableConv2D), or a Dense layer's [in, out] (each "2-D kernel" one weight)."""
    return getattr(layer, PRUNABLE[type(layer).__name__][0])


def kernel_constraint_key(layer: tf.keras.layers.Layer) -> str:
    """The config key of that kernel's constraint (kernel_constraint, pointwise_constraint)."""
    return PRUNABLE[type(layer).__name__][1]


def all_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Every layer of `model` in model order, a nested model replaced by its own layers.

    The one walker every stage and count uses, so a model wrapping a base model (transfer
    learning's usual shape) shows the same layers to masks, counts and plots.
    """
    out = []
    for layer in model.layers:
        out.extend(all_layers(layer) if isinstance(layer, tf.keras.Model) else [layer])
    return out


def check_masks(model: tf.keras.Model, masks: dict[str, np.ndarray]) -> None:
    """Raise BadInput unless every mask names a conv or dense layer of `model` with the right shape."""
    convs = {layer.name: layer for layer in prunable_layers(model)}
    others = {layer.name: layer for layer in all_layers(model)}
    for name, pruned in masks.items():
        if name not in convs:
            if name in others:
                kind = type(others[name]).__name__
                raise BadInput(f"mask: layer {name!r} is a {kind}, not a Conv2D or Dense layer")
            raise BadInput(f"mask: no layer named {name!r} (conv and dense layers: {', '.join(convs) or 'none'})")
        shape = tuple(conv_kernel(convs[name]).shape[-2:])
        if tuple(np.shape(pruned)) != shape:
            what = "inputs x" if is_dense(convs[name]) else "input x"
            unit = "outputs" if is_dense(convs[name]) else "output channels"
            raise BadInput(
                f"mask: layer {name!r} has {shape[0]} {what} {shape[1]} {unit}, "
                f"but its mask is {tuple(np.shape(pruned))}"
            )


def empty_masks(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """All-False masks (nothing pruned) for every conv layer."""
    return {layer.name: np.zeros(conv_kernel(layer).shape[-2:], bool) for layer in conv_layers(model)}


def masks_of(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """The masks carried by a model's KernelMask constraints (layers without one: omitted)."""
    out = {}
    for layer in prunable_layers(model):
        c = getattr(layer, kernel_constraint_key(layer), None)
        if isinstance(c, KernelMask):
            pruned = np.zeros(c.kernel_shape[-2:], bool)
            for cin, cout in c.pruned:
                pruned[cin, cout] = True
            out[layer.name] = pruned
    return out


def apply_masks(model: tf.keras.Model, masks: dict[str, np.ndarray], prune_bias: bool = False) -> tf.keras.Model:
    """A copy of `model` whose pruned kernels are 0.0 and locked there by KernelMask.

    Layers not named in `masks` keep their own constraints. With `prune_bias`, the bias of an
    output channel whose kernels are all pruned is zeroed and locked too.
    """
    check_masks(model, masks)

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in masks:
            pruned = np.argwhere(masks[layer.name])
            clip = _default_clip(layer)
            config[kernel_constraint_key(layer)] = KernelMask(conv_kernel(layer).shape, pruned, clip)
            if prune_bias and layer.use_bias:
                dead = np.flatnonzero(masks[layer.name].all(axis=0))
                config["bias_constraint"] = ChannelMask(layer.bias.shape[0], dead, _default_clip(layer, "bias"))
        return layer.__class__.from_config(config)

    clone = tf.keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    enforce_masks(clone)
    return clone


def _default_clip(layer, which: str = "kernel") -> float | None:
    """QKeras layers clip their weights to the quantizer's range by default; keep that."""
    quantizer = getattr(layer, f"{which}_quantizer_internal", None)
    if quantizer is None:
        return None
    existing = getattr(layer, f"{which}_constraint", None)
    if isinstance(existing, MASK_CONSTRAINTS):
        return existing.clip
    if existing is not None and hasattr(existing, "max_value"):
        return float(existing.max_value)
    return float(max(1, quantizer.max())) if hasattr(quantizer, "max") else 1.0


def enforce_masks(model: tf.keras.Model) -> None:
    """Apply every mask constraint to its weights now (after loading, or after set_weights)."""
    for layer in all_layers(model):
        for which, key in _MASKABLE:
            c = getattr(layer, key, None)
            var = getattr(layer, which, None)
            if isinstance(c, MASK_CONSTRAINTS) and var is not None:
                var.assign(c(var))


def strip_masks(model: tf.keras.Model) -> tf.keras.Model:
    """A copy without mask constraints (the zeros stay): for tools that do not know them."""

    def clone_layer(layer):
        config = layer.get_config()
        for _, key in _MASKABLE:
            if isinstance(getattr(layer, key, None), MASK_CONSTRAINTS):
                config[key] = None
        return layer.__class__.from_config(config)

    clone = tf.keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def masked_max_abs(model: tf.keras.Model, masks: dict[str, np.ndarray] | None = None) -> float:
    """The largest |w| over all masked weights: 0.0 when the invariant holds."""
    masks = masks_of(model) if masks is None else masks
    worst = 0.0
    layers = {layer.name: layer for layer in prunable_layers(model)}
    for name, pruned in masks.items():
        kernel = np.asarray(conv_kernel(layers[name]).numpy())
        if pruned.any():
            worst = max(worst, float(np.abs(kernel[..., pruned]).max()))
    return worst


class _MaskGradients:
    """Mixin for a Keras optimizer: zero the gradient of masked weights before the update."""

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        masked = []
        for grad, var in grads_and_vars:
            c = getattr(var, "constraint", None)
            if grad is not None and isinstance(c, MASK_CONSTRAINTS):
                grad = c.mask_gradient(grad)
            masked.append((grad, var))
        return super().apply_gradients(masked, *args, **kwargs)


def masked_optimizer(optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
    """A fresh optimizer of the same kind and settings that also masks gradients."""
    if isinstance(optimizer, _MaskGradients):
        return optimizer
    base = type(optimizer)
    cls = type(f"Masked{base.__name__}", (_MaskGradients, base), {})
    return cls.from_config(optimizer.get_config())


def save_masks(masks: dict[str, np.ndarray], path: str | Path) -> None:
    """Write the boolean masks as an npz (atomically: a reader never sees half a file)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v, bool) for k, v in masks.items()})
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())


def load_masks(path: str | Path) -> dict[str, np.ndarray]:
    """Read masks written by `save_masks`; anything else is a BadInput."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"masks {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            masks = {k: z[k] for k in z.files}
    except Exception as exc:
        raise BadInput(f"masks {path}: not a readable .npz file ({type(exc).__name__})") from None
    for name, arr in masks.items():
        if arr.dtype != bool or arr.ndim != 2:
            raise BadInput(f"masks {path}: {name!r} is {arr.dtype} {arr.shape}, expected a 2-D boolean array")
    return masks


def count_pruned(masks: dict[str, np.ndarray]) -> dict[str, int]:
    return {name: int(np.count_nonzero(m)) for name, m in masks.items()}


__all__ = [
    "KernelMask",
    "ChannelMask",
    "all_layers",
    "apply_masks",
    "check_masks",
    "conv_kernel",
    "conv_layers",
    "count_pruned",
    "dense_layers",
    "empty_masks",
    "enforce_masks",
    "load_masks",
    "masked_max_abs",
    "masked_optimizer",
    "masks_of",
    "prunable_layers",
    "save_masks",
    "strip_masks",
]
