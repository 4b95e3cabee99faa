"""Kernel-magnitude analysis: which 2-D kernels of each conv layer do almost nothing.

Read-only: nothing here changes the model it is given. `kernel_norms` measures every 2-D
kernel `W[:, :, cin, cout]`; `ranked_table` lists them smallest first; `propose` turns the
magnitudes into boolean masks (threshold, fraction per layer, global fraction, or an
explicit mask spec); `sensitivity` and `sensitivity_sweep` measure the accuracy with kernels
zeroed and no retraining. `analyze` adds the multiplications a mask saves (`counts.py`).

    norms = kernel_norms(model, "l1")
    masks = propose(norms, "fraction", fraction=0.8, layers=["conv2"])
    print(sensitivity(model, masks, data))     # {'val_accuracy': ..., 'test_accuracy': ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..config import PruneConfig
from ..data import Dataset
from ..errors import BadInput
from ..masks import all_layers, check_masks, conv_kernel, conv_layers
from ..training.fit import accuracy
from .counts import kernel_counts, macs_summary

NORMS = ("l1", "l2", "max")
SELECTIONS = ("threshold", "fraction", "global_fraction", "spec")
SWEEP_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
QUANTILES = ("min", "q25", "median", "q75", "max")  # of each layer's magnitudes, in the summary


def kernel_norms(
    model: tf.keras.Model, norm: str = "l1", normalize: bool = False
) -> dict[str, np.ndarray]:
    """Magnitude of every 2-D kernel, per conv layer, as an array [cin, cout].

    l1 = sum |w|, l2 = sqrt(sum w^2), max = max |w| over the kh x kw taps. With `normalize`
    each layer's magnitudes are divided by their mean, so layers of different scale compare.
    QConv2D layers are measured on their float kernel (the one training updates), a
    SeparableConv2D on its pointwise kernel (its 1 x 1 kernels are single weights).
    """
    if norm not in NORMS:
        raise BadInput(f"norm {norm!r}: expected one of {', '.join(NORMS)}")
    out = {}
    for layer in conv_layers(model):
        w = np.abs(np.asarray(conv_kernel(layer).numpy(), np.float64))
        if norm == "l1":
            mag = w.sum(axis=(0, 1))
        elif norm == "l2":
            mag = np.sqrt((w**2).sum(axis=(0, 1)))
        else:
            mag = w.max(axis=(0, 1))
        if normalize and mag.mean() > 0:
            mag = mag / mag.mean()
        out[layer.name] = mag
    return out


def ranked_table(norms: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One row per kernel, smallest magnitude first: rank, layer, cin, cout, magnitude, pruned."""
    entries = []
    for name, mag in norms.items():
        pruned = (masks or {}).get(name)
        for cin, cout in np.ndindex(*mag.shape):
            flag = bool(pruned[cin, cout]) if pruned is not None else False
            entries.append((float(mag[cin, cout]), name, cin, cout, flag))
    entries.sort()
    return [
        {"rank": rank, "layer": name, "cin": cin, "cout": cout, "magnitude": mag, "pruned": flag}
        for rank, (mag, name, cin, cout, flag) in enumerate(entries, start=1)
    ]


def check_layers(model: tf.keras.Model, layers: list[str] | None) -> list[str]:
    """The conv layer names to prune (`None` = all); unknown or non-conv names are BadInput."""
    names = [layer.name for layer in conv_layers(model)]
    if layers is None:
        return names
    others = {layer.name: type(layer).__name__ for layer in all_layers(model)}
    convs = ", ".join(names) or "none"
    for name in layers:
        if name in names:
            continue
        if name in others:
            raise BadInput(f"prune.layers: {name!r} is a {others[name]}, not a Conv2D/QConv2D layer "
                           f"(conv layers: {convs})")
        raise BadInput(f"prune.layers: no conv layer named {name!r} (conv layers: {convs})")
    return list(layers)


def propose(
    norms: dict[str, np.ndarray],
    select: str,
    *,
    threshold: float | None = None,
    fraction: float | None = None,
    spec_masks: dict[str, np.ndarray] | None = None,
    layers: list[str] | None = None,
    already: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Boolean masks (True = prune) for the `layers` (default: all in `norms`).

    threshold: magnitude strictly below `threshold`; fraction: the ceil(fraction * n)
    smallest kernels of each layer; global_fraction: the smallest of all layers together;
    spec: exactly `spec_masks`. Kernels pruned `already` stay pruned.
    """
    layers = list(norms) if layers is None else list(layers)
    if select not in SELECTIONS:
        raise BadInput(f"prune.select {select!r}: expected one of {', '.join(SELECTIONS)}")
    if select in ("fraction", "global_fraction") and (fraction is None or not 0.0 <= fraction <= 1.0):
        raise BadInput(f"prune.fraction: {fraction!r} must be between 0.0 and 1.0")
    if select == "threshold" and (threshold is None or threshold < 0.0):
        raise BadInput(f"prune.threshold: {threshold!r} must be a number >= 0.0")
    masks = {name: np.zeros(norms[name].shape, bool) for name in layers}
    if select == "threshold":
        masks = {name: norms[name] < threshold for name in layers}
    elif select == "fraction":
        for name in layers:
            masks[name] = _smallest(norms[name].ravel(), fraction).reshape(norms[name].shape)
    elif select == "global_fraction":
        flat = np.concatenate([norms[name].ravel() for name in layers]) if layers else np.zeros(0)
        chosen = _smallest(flat, fraction)
        start = 0
        for name in layers:
            size = norms[name].size
            masks[name] = chosen[start : start + size].reshape(norms[name].shape)
            start += size
    elif select == "spec":
        if spec_masks is None:
            raise BadInput("prune.select is 'spec' but no mask spec was given")
        masks = {name: np.asarray(m, bool).copy() for name, m in spec_masks.items()}
    for name, prev in (already or {}).items():
        masks[name] = masks.get(name, np.zeros_like(prev)) | prev
    return masks


def _smallest(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean array marking the ceil(fraction * n) smallest values (ties: first index).

    Rounding up means a fraction of 0.8 prunes at least 80% of the kernels.
    """
    k = min(values.size, int(np.ceil(fraction * values.size - 1e-9)))
    chosen = np.zeros(values.size, bool)
    chosen[np.argsort(values, kind="stable")[:k]] = True
    return chosen


class _ZeroedCopy:
    """A private copy of a model whose kernels can be zeroed and restored cheaply."""

    def __init__(self, model: tf.keras.Model):
        self.model = tf.keras.models.clone_model(model)
        self.model.set_weights(model.get_weights())
        self.layers = {layer.name: layer for layer in conv_layers(self.model)}
        self.original = {name: conv_kernel(layer).numpy() for name, layer in self.layers.items()}

    def zero(self, masks: dict[str, np.ndarray]) -> None:
        for name, kernel in self.original.items():
            pruned = masks.get(name)
            value = kernel if pruned is None else np.where(pruned, np.float32(0.0), kernel)
            conv_kernel(self.layers[name]).assign(value)


def sensitivity(model: tf.keras.Model, masks: dict[str, np.ndarray], data: Dataset) -> dict[str, float | None]:
    """Validation and test accuracy with the masked kernels zeroed and no retraining."""
    check_masks(model, masks)
    copy = _ZeroedCopy(model)
    copy.zero(masks)
    return {
        "val_accuracy": accuracy(copy.model, data.x_val, data.y_val),
        "test_accuracy": accuracy(copy.model, data.x_test, data.y_test),
    }


def sensitivity_sweep(
    model: tf.keras.Model,
    norms: dict[str, np.ndarray],
    data: Dataset,
    layers: list[str] | None = None,
    fractions: tuple[float, ...] = SWEEP_FRACTIONS,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """Per layer, validation accuracy when its smallest `fraction` of kernels is zeroed alone.

    The classic per-layer sensitivity curve: a layer whose accuracy holds up to a high
    fraction can be pruned hard. Measured on the validation split (test data stays unseen).
    """
    layers = list(norms) if layers is None else layers
    copy = _ZeroedCopy(model)
    out: dict[str, list[dict]] = {name: [] for name in layers}
    points = [(name, f) for name in layers for f in fractions]
    for name, f in tqdm(points, desc="sensitivity", disable=None if progress else True, leave=False):
        masks = propose(norms, "fraction", fraction=f, layers=[name])
        copy.zero(masks)
        out[name].append({"fraction": f, "val_accuracy": accuracy(copy.model, data.x_val, data.y_val)})
    return out


@dataclass
class Analysis:
    """What `analyze` found: magnitudes, the proposed masks, and how much they cost."""

    norms: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    table: list[dict]
    summary: dict = field(default_factory=dict)


def analyze(
    model: tf.keras.Model,
    data: Dataset,
    cfg: PruneConfig,
    *,
    spec_masks: dict[str, np.ndarray] | None = None,
    measure: bool = True,
    progress: bool = True,
) -> Analysis:
    """Magnitudes, ranked table and the config's proposal, with its sensitivity (no retraining)."""
    layers = check_layers(model, cfg.layers)
    norms = kernel_norms(model, cfg.norm, cfg.normalize)
    masks = propose(
        norms,
        cfg.select,
        threshold=cfg.threshold,
        fraction=cfg.fraction,
        spec_masks=spec_masks,
        layers=layers,
    )
    check_masks(model, masks)
    table = ranked_table(norms, masks)
    summary = {
        "stage": "analysis",
        "norm": cfg.norm,
        "normalize": cfg.normalize,
        "select": cfg.select,
        "threshold": cfg.threshold if cfg.select == "threshold" else None,
        "fraction": cfg.fraction if cfg.select in ("fraction", "global_fraction") else None,
        "layers": layers,
        "kernels": kernel_counts(model, masks),
        **macs_summary(model, masks),
        "magnitude_quantiles": {
            name: dict(zip(QUANTILES, np.quantile(m, [0, 0.25, 0.5, 0.75, 1]).tolist(), strict=True))
            for name, m in norms.items()
        },
    }
    if measure:
        summary["accuracy_unpruned"] = {
            "val_accuracy": accuracy(model, data.x_val, data.y_val),
            "test_accuracy": accuracy(model, data.x_test, data.y_test),
        }
        summary["accuracy_zeroed"] = sensitivity(model, masks, data)
        summary["sensitivity_sweep"] = sensitivity_sweep(model, norms, data, layers, progress=progress)
    return Analysis(norms, masks, table, summary)
