"""Counting a Keras model: multiplications per image and 2-D kernels, per layer.

Read-only, like the rest of analysis/. One formula (`mults_per_image`: every weight multiplies
once per output position) serves the Keras model here and the exported design in
`hw/accounting.py`, which counts the weights it reads back from the weight files.

    cost = macs(model, masks)              # {"conv2": (before, after), ...}
    kernel_counts(model, masks)["total"]   # {"kernels": ..., "pruned": ..., "kept": ...}
    weight_counts(model, masks)["fc1"]     # {"weights": ..., "pruned": ..., "kept": ...}

Conv figures count 2-D kernels; a masked Dense layer is counted apart, in single weights, so
"kernels pruned" keeps meaning conv kernels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..masks import all_layers, conv_kernel, conv_layers, count_pruned, dense_layers

# The weights a layer multiplies its input by (SeparableConv2D has the last two).
KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def mults_per_image(weights: int, positions: int) -> int:
    """Multiplications per image of `weights` weights that each multiply once per output position."""
    return int(weights) * int(positions)


def output_positions(layer: tf.keras.layers.Layer) -> int:
    """Output pixels of a conv layer (h * w), 1 for a Dense layer on a flat input."""
    shape = layer.output_shape
    return int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def _kernels(layer) -> list:
    return [k for k in (getattr(layer, name, None) for name in KERNELS) if k is not None]


def weighted_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Layers that multiply (conv, depthwise, dense), nested models flattened, in model order.

    A layer without one output shape (called on several inputs) has no per-image count.
    """
    return [layer for layer in all_layers(model) if _kernels(layer) and isinstance(layer.output_shape, tuple)]


def layer_macs(layer: tf.keras.layers.Layer) -> int:
    """Multiply-accumulates per image of one layer, every weight counted (nothing pruned)."""
    weights = sum(int(np.prod(k.shape)) for k in _kernels(layer))
    return mults_per_image(weights, output_positions(layer))


def macs(model: tf.keras.Model, masks: dict[str, np.ndarray] | None = None) -> dict[str, tuple[int, int]]:
    """Multiplications per image of every weighted layer: (before, after masking).

    A pruned 2-D kernel `W[:, :, cin, cout]` saves its kh * kw weights at every output pixel;
    a pruned Dense weight saves one multiplication.
    """
    masks = masks or {}
    out = {}
    for layer in weighted_layers(model):
        before = layer_macs(layer)
        pruned = int(np.count_nonzero(masks[layer.name])) if layer.name in masks else 0
        per_kernel = int(np.prod(conv_kernel(layer).shape[:-2])) if pruned else 0
        out[layer.name] = (before, before - mults_per_image(pruned * per_kernel, output_positions(layer)))
    return out


def macs_summary(model: tf.keras.Model, masks: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """`macs` as a stage summary shows it: macs_before and macs_after, each with a total."""
    cost = macs(model, masks)
    return {
        key: {**{name: pair[i] for name, pair in cost.items()}, "total": sum(pair[i] for pair in cost.values())}
        for i, key in enumerate(("macs_before", "macs_after"))
    }


def kernel_counts(model: tf.keras.Model, masks: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Per conv layer and in total: kernels, pruned, kept."""
    totals = {layer.name: int(np.prod(conv_kernel(layer).shape[-2:])) for layer in conv_layers(model)}
    pruned = count_pruned(masks)
    out = {
        name: {"kernels": n, "pruned": pruned.get(name, 0), "kept": n - pruned.get(name, 0)}
        for name, n in totals.items()
    }
    out["total"] = {key: sum(row[key] for row in out.values()) for key in ("kernels", "pruned", "kept")}
    return out


def weight_counts(model: tf.keras.Model, masks: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Per masked Dense layer and in total: weights, pruned, kept (Dense masks are element-wise)."""
    pruned = count_pruned(masks)
    out = {}
    for layer in dense_layers(model):
        if layer.name in masks:
            n = int(np.prod(layer.kernel.shape))
            out[layer.name] = {"weights": n, "pruned": pruned[layer.name], "kept": n - pruned[layer.name]}
    out["total"] = {key: sum(row[key] for row in out.values()) for key in ("weights", "pruned", "kept")}
    return out


def units_fraction(model: tf.keras.Model, masks: dict[str, np.ndarray]) -> float:
    """Fraction pruned of the masked layers' units (conv kernels and Dense weights together)."""
    rows = [row for name, row in kernel_counts(model, masks).items() if name in masks and row["kernels"]]
    dense = [row for name, row in weight_counts(model, masks).items() if name != "total"]
    total = sum(r["kernels"] for r in rows) + sum(r["weights"] for r in dense)
    return (sum(r["pruned"] for r in rows) + sum(r["pruned"] for r in dense)) / max(1, total)


# The one savings figure every command, the report and the README quote.
SAVINGS_WHAT = "non-zero conv multiplications per image"


def conv_mults_cut(before: dict[str, int], after: dict[str, int], conv: list[str] | tuple[str, ...]) -> float | None:
    """The savings figure: 1 - sum(after) / sum(before) over the conv layers `conv` (None: nothing to cut).

    One definition for the Keras model (pruned kernels removed, `macs`) and for the exported design
    (non-zero weights read back, `hw.accounting`), so the prune table, `make hls`, the report and
    the README quote the same quantity.
    """
    total = sum(int(before.get(name, 0)) for name in conv)
    return 1 - sum(int(after.get(name, 0)) for name in conv) / total if total else None


def savings_text(cut: float | None) -> str:
    """The savings figure in words, as every output prints it."""
    return f"{SAVINGS_WHAT} cut by {cut:.1%}" if cut is not None else f"{SAVINGS_WHAT}: no conv layer"
