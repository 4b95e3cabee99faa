"""Kernel-magnitude analysis: which 2-D kernels of each conv layer do almost nothing.

Read-only: nothing here changes the model it is given. `kernel_norms` measures every 2-D
kernel `W[:, :, cin, cout]`; `ranked_table` lists them smallest first; `propose` turns the
magnitudes into boolean masks (threshold, fraction per layer, global fraction, or an
explicit mask spec); `sensitivity` and `sensitivity_sweep` measure the accuracy with kernels
zeroed and no retraining. `analyze` adds the multiplications a mask saves (`counts.py`).

A Dense layer named in prune.layers is ranked weight by weight (its "2-D kernels" are single
weights, magnitude |w| under every norm). `global_fraction` over conv and Dense layers together
compares each unit with its own layer's mean magnitude (as `normalize` does): a conv kernel's
L1 sums kh * kw weights and a Dense weight is one, so raw magnitudes would prune the Dense
layers first; relative to its layer, a unit is small when it is small among its peers.

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
from ..masks import all_layers, check_masks, conv_kernel, conv_layers, dense_layers, is_dense, prunable_layers
from ..training.fit import accuracy
from .counts import kernel_counts, macs_summary, weight_counts

NORMS = ("l1", "l2", "max")
SELECTIONS = ("threshold", "fraction", "global_fraction", "spec")
SWEEP_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
QUANTILES = ("min", "q25", "median", "q75", "max")  # of each layer's magnitudes, in the summary


def kernel_norms(
    model: tf.keras.Model, norm: str = "l1", normalize: bool = False, layers: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Magnitude of every 2-D kernel, per conv layer, as an array [cin, cout].

    l1 = sum |w|, l2 = sqrt(sum w^2), max = max |w| over the kh x kw taps. With `normalize`
    each layer's magnitudes are divided by their mean, so layers of different scale compare.
    QConv2D layers are measured on their float kernel (the one training updates), a
    SeparableConv2D on its pointwise kernel (its 1 x 1 kernels are single weights). Dense
    layers named in `layers` are measured too, [in, out], each weight by its |w|.
    """
    if norm not in NORMS:
        raise BadInput(f"norm {norm!r}: expected one of {', '.join(NORMS)}")
    named = set(layers or ())
    out = {}
    for layer in prunable_layers(model):
        if is_dense(layer) and layer.name not in named:
            continue
        w = np.abs(np.asarray(conv_kernel(layer).numpy(), np.float64))
        if w.ndim == 2:  # a Dense kernel: every norm of one weight is |w|
            mag = w
        elif norm == "l1":
            mag = w.sum(axis=(0, 1))
        elif norm == "l2":
            mag = np.sqrt((w**2).sum(axis=(0, 1)))
        else:
            mag = w.max(axis=(0, 1))
        if normalize and mag.mean() > 0:
            mag = mag / mag.mean()
        out[layer.name] = mag
    return out


def channel_weighted(norms: dict[str, np.ndarray], weight: float, filter_weight: float = 0.0) -> dict[str, np.ndarray]:
    """Each kernel's magnitude times (its input and output channels' shares of the layer)^weight,
    and times its output channel's share^filter_weight.

    A kernel in a weak channel then ranks lower than an equal one in a strong channel, so
    pruning empties whole channels, which `reduce` removes with the filter upstream or the
    next layer's inputs; weight 0 leaves the magnitudes as they are. An emptied output channel
    (a whole filter) pays most: it takes its bias and every input it fed in the next layer
    (fc1's 25 x 32 weights per conv2 filter in the reference net), while an emptied input channel
    only removes an upstream filter, so `filter_weight` weighs the output side alone. A share is
    the channel's summed magnitude over the mean channel's (0 for an emptied channel).
    """
    if weight <= 0 and filter_weight <= 0:
        return norms

    def share(sums: np.ndarray) -> np.ndarray:
        mean = sums.mean()
        return sums / mean if mean > 0 else np.ones_like(sums)

    out = {}
    for name, mag in norms.items():
        mag = np.asarray(mag, np.float64)  # a share of 4 to the 64th power is past float32's range
        rows, cols = share(mag.sum(axis=1)), share(mag.sum(axis=0))
        out[name] = mag * (rows[:, None] ** weight) * (cols[None, :] ** (weight + filter_weight))
    return out


def ranking_norms(model: tf.keras.Model, cfg: PruneConfig, layers: list[str]) -> dict[str, np.ndarray]:
    """The magnitudes the config ranks kernels by: its norm, normalisation and channel weight."""
    return channel_weighted(kernel_norms(model, cfg.norm, cfg.normalize, layers=layers), cfg.channel_weight,
                            cfg.filter_weight)


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
    """The layer names to prune (`None` = every conv layer; Dense layers only when named).

    Unknown names, and layers that are neither conv nor Dense, are BadInput.
    """
    names = [layer.name for layer in conv_layers(model)]
    if layers is None:
        return names
    allowed = {layer.name for layer in prunable_layers(model)}
    others = {layer.name: type(layer).__name__ for layer in all_layers(model)}
    dense = ", ".join(layer.name for layer in dense_layers(model)) or "none"
    choices = f"conv layers: {', '.join(names) or 'none'}; dense layers: {dense}"
    for name in layers:
        if name in allowed:
            continue
        if name in others:
            raise BadInput(f"prune.layers: {name!r} is a {others[name]}, not a Conv2D or Dense layer ({choices})")
        raise BadInput(f"prune.layers: no conv or dense layer named {name!r} ({choices})")
    return list(layers)


def dense_names(model: tf.keras.Model, layers: list[str]) -> list[str]:
    """The names in `layers` that are Dense layers (ranked weight by weight)."""
    dense = {layer.name for layer in dense_layers(model)}
    return [name for name in layers if name in dense]


def propose(
    norms: dict[str, np.ndarray],
    select: str,
    *,
    threshold: float | None = None,
    fraction: float | None = None,
    spec_masks: dict[str, np.ndarray] | None = None,
    layers: list[str] | None = None,
    already: dict[str, np.ndarray] | None = None,
    dense: list[str] | tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Boolean masks (True = prune) for the `layers` (default: all in `norms`).

    threshold: magnitude strictly below `threshold`; fraction: the ceil(fraction * n)
    smallest kernels of each layer; global_fraction: the smallest of all layers together
    (each layer relative to its mean when the `dense` layers, ranked by single weights, are
    mixed with conv layers; see the module docstring); spec: exactly `spec_masks`. Kernels
    pruned `already` stay pruned.
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
        scaled = _per_layer_scale(norms, layers) if _mixed(layers, dense) else norms
        flat = np.concatenate([scaled[name].ravel() for name in layers]) if layers else np.zeros(0)
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


def _mixed(layers: list[str], dense) -> bool:
    """Whether `layers` mixes Dense layers (single weights) with conv layers (kernels)."""
    n_dense = sum(name in set(dense) for name in layers)
    return 0 < n_dense < len(layers)


def _per_layer_scale(norms: dict[str, np.ndarray], layers: list[str]) -> dict[str, np.ndarray]:
    """Each layer's magnitudes over their mean (a layer of zeros stays zeros)."""
    out = {}
    for name in layers:
        mean = float(norms[name].mean()) if norms[name].size else 0.0
        out[name] = norms[name] / mean if mean > 0 else norms[name]
    return out


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
        self.layers = {layer.name: layer for layer in prunable_layers(self.model)}
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
    spec_dense = dense_names(model, list(spec_masks or ())) if cfg.select == "spec" else []
    norms = ranking_norms(model, cfg, [*layers, *spec_dense])
    masks = propose(
        norms,
        cfg.select,
        threshold=cfg.threshold,
        fraction=cfg.fraction,
        spec_masks=spec_masks,
        layers=layers,
        dense=dense_names(model, layers),
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
        "weights": weight_counts(model, masks),
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
