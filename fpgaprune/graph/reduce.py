"""Structural reduction: the pruned model without the channels and units its masks made dead.

An input channel of a conv whose 2-D kernels are all pruned is read by nothing, so the filter
upstream that makes it goes (its kernel slice and bias, through ReLU / pooling / dropout),
with that input slice of the conv. An output channel whose kernels are all pruned is the
constant act(bias) at every pixel: it is folded into the next layer's bias where that is exact
(a Dense after Flatten, a 'valid' conv, pooling in between) and removed; before a 'same'-padded
conv it is kept, and the report says why. A Dense unit left without inputs is folded the same
way. The result computes what the pruned model computes, and carries its masks (KernelMask
re-applied by `apply_masks`), so later stages keep the zeros at exactly 0.0.

    reduced, reduced_masks, report = reduce_model(pruned, masks)
    report["layers"][0]    # {"layer": "conv1", "before": [3, 3, 1, 32], "after": [3, 3, 1, 9], ...}
    print(report_lines(report))

A model it does not understand (branches, BatchNorm, QKeras layers, ...) comes back
unreduced, as a copy, with `report["refused"]` saying why. The input model is never changed.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..analysis.counts import macs
from ..masks import MASK_CONSTRAINTS, ChannelMask, apply_masks, check_masks, masks_of
from ..report.table import table
from .channels import ConstantOutput, Link, Plan, Refused, plan_channels


def reduce_model(model: tf.keras.Model, masks: dict[str, np.ndarray]):
    """(reduced model, its masks, report): see the module docstring. `model` is not changed."""
    masks = {**masks_of(model), **{name: np.asarray(m, bool) for name, m in masks.items()}}
    check_masks(model, masks)
    try:
        plan = plan_channels(model, masks)
        reduced, reduced_masks = _build(model, plan)
    except Refused as exc:
        return apply_masks(model, masks), {name: m.copy() for name, m in masks.items()}, _refused(model, masks, exc)
    return reduced, reduced_masks, _report(model, masks, reduced, reduced_masks, plan)


def _build(model: tf.keras.Model, plan: Plan):
    """A new functional model, layer by layer with sliced weights, then the masks re-applied."""
    x = inputs = tf.keras.Input(plan.links[0].layer.input_shape[1:], name=model.input_names[0])
    weights = []
    for k, link in enumerate(plan.links):
        config = _plain_config(link.layer)
        if link.kind in ("conv", "dense"):
            values = _sliced_weights(link, plan.consts[k], plan.keep[k], plan.keep[k + 1])
            config["filters" if link.kind == "conv" else "units"] = int(plan.keep[k + 1].sum())
            config["use_bias"] = len(values) == 2
        layer = type(link.layer).from_config(config)
        x = layer(x)
        if link.kind in ("conv", "dense"):
            weights.append((layer, values))
    reduced = tf.keras.Model(inputs, x, name=model.name)
    for layer, values in weights:
        layer.set_weights(values)
    kept = {link.layer.name: (plan.keep[k], plan.keep[k + 1]) for k, link in enumerate(plan.links)}
    reduced_masks = {name: m[np.ix_(*kept[name])] for name, m in plan.masks.items()}
    bias_masks = any(isinstance(getattr(layer, "bias_constraint", None), ChannelMask) for layer in model.layers)
    if bias_masks:
        _check_bias_masks(reduced, reduced_masks)
    return apply_masks(reduced, reduced_masks, prune_bias=bias_masks), reduced_masks


def _plain_config(layer) -> dict:
    """The layer's config without its mask constraints (apply_masks puts them back, resized)."""
    config = dict(layer.get_config())
    config.pop("batch_input_shape", None)
    for which in ("kernel", "bias"):
        if isinstance(getattr(layer, f"{which}_constraint", None), MASK_CONSTRAINTS):
            config[f"{which}_constraint"] = None
    return config


def _sliced_weights(link: Link, const_in: np.ndarray, keep_in: np.ndarray, keep_out: np.ndarray) -> list:
    """[kernel] or [kernel, bias] of the kept channels, the removed constant inputs folded into the bias."""
    kernel = link.layer.kernel.numpy()
    folded = ~keep_in & ~np.isnan(const_in)
    bias = link.bias() + const_in[folded] @ link.taps()[folded]
    kernel = kernel[..., keep_in, :][..., keep_out]
    # A layer without a bias gets one only when a non-zero constant is folded into it.
    if link.layer.use_bias or np.any(bias[keep_out] != 0):
        return [kernel, bias[keep_out].astype(np.float32)]
    return [kernel]


def _check_bias_masks(reduced: tf.keras.Model, masks: dict[str, np.ndarray]) -> None:
    """With prune_bias, every later apply_masks zeroes the bias of an all-pruned channel: it must be 0."""
    for name, m in masks.items():
        bias = reduced.get_layer(name).bias
        dead = m.all(axis=0)
        if bias is not None and dead.any() and np.any(bias.numpy()[dead] != 0):
            raise Refused(f"{name}: a kept channel left with only pruned kernels holds a folded constant in its "
                          "bias, which prune.prune_bias would zero")


def _report(model, masks, reduced, reduced_masks, plan: Plan) -> dict:
    before, after = macs(model, masks), macs(reduced, reduced_masks)
    rows = []
    for k, link in enumerate(plan.links):
        name = link.layer.name
        row = {"layer": name, "type": type(link.layer).__name__, "before": _shape(link.layer),
               "after": _shape(reduced.get_layer(name))}
        if name in before:
            row.update(macs_before=before[name][1], macs_after=after[name][1])
        if link.kind in ("conv", "dense"):
            row.update(_channel_notes(plan, k))
            row["bias_added"] = bool(reduced.get_layer(name).use_bias and not link.layer.use_bias)
        rows.append(row)
    return {"reduced": True, "refused": None, "constant": False, "layers": rows,
            **_totals(model, reduced, before, after)}


def _refused(model, masks, exc: Refused) -> dict:
    cost = macs(model, masks)
    rows = [{"layer": layer.name, "type": type(layer).__name__, "before": _shape(layer), "after": _shape(layer)}
            for layer in model.layers if type(layer).__name__ != "InputLayer"]
    return {"reduced": False, "refused": str(exc), "constant": isinstance(exc, ConstantOutput), "layers": rows,
            **_totals(model, model, cost, cost)}


def _totals(model, reduced, before: dict, after: dict) -> dict:
    return {"params_before": int(model.count_params()), "params_after": int(reduced.count_params()),
            "macs_before": sum(pair[1] for pair in before.values()),
            "macs_after": sum(pair[1] for pair in after.values())}


def _shape(layer) -> list[int | None]:
    """A weighted layer's kernel shape, any other layer's output shape (without the batch)."""
    kernel = getattr(layer, "kernel", None)
    if kernel is not None:
        return [int(s) for s in kernel.shape]
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):  # a layer used more than once has no single shape
        return []
    return [None if s is None else int(s) for s in shape[1:]] if isinstance(shape, tuple) else []


def _channel_notes(plan: Plan, k: int) -> dict:
    """Link k's output channels that were removed, and the constant ones kept, each with why."""
    t, j = plan.consumer(k)
    consumer = plan.links[j] if j is not None else None
    keep, const = plan.keep[k + 1], plan.consts[t]
    removed = [{"channel": int(o), **_why_removed(const[o], consumer)} for o in np.flatnonzero(~keep)]
    kept = []
    if consumer is not None:
        kept = [{"channel": int(o), "constant": float(const[o]), "why": _why_kept(consumer)}
                for o in np.flatnonzero(keep & ~np.isnan(const))]
    return {"removed": removed, "kept_constant": kept}


def _why_removed(value: float, consumer: Link) -> dict:
    name = consumer.layer.name
    if np.isnan(value):
        what = "kernels on it are pruned" if consumer.kind == "conv" else "weights on it are 0.0"
        return {"reason": "unused", "why": f"unused: {name}'s {what} for every channel it keeps"}
    if value == 0:
        return {"reason": "constant", "constant": 0.0, "why": f"constant 0.0: adds nothing to {name}"}
    return {"reason": "constant", "constant": float(value),
            "why": f"constant {value:.6g} at every position: folded into {name}'s bias"}


def _why_kept(consumer: Link) -> str:
    name = consumer.layer.name
    if consumer.padded:
        return (f"kept: {name} is 'same'-padded, so its zero padding makes a constant's contribution "
                "position-dependent at the borders (folding it into the bias would not be exact)")
    if consumer.kind == "mix" or consumer.mixes:
        return f"kept: {name} mixes channels"
    return f"kept: read by {name}"


def report_lines(report: dict) -> str:
    """The reduction as a person reads it: each layer's shape before and after, and why."""
    if not report["reduced"]:
        return f"not reduced: {report['refused']} (the model is kept as it is)"
    rows = []
    for row in report["layers"]:
        notes = ""
        if row.get("removed"):
            kinds = [r["reason"] for r in row["removed"]]
            notes = ", ".join(f"{kinds.count(r)} {r}" for r in ("unused", "constant") if r in kinds)
        if row.get("bias_added"):
            notes += "; a bias added for the folded constants"
        rows.append([row["layer"], row["type"], str(row["before"]), str(row["after"]), notes or None])
    lines = [table(rows, ["layer", "type", "before", "after", "removed"])]
    for row in report["layers"]:
        for kept in row.get("kept_constant", []):
            lines.append(f"{row['layer']} channel {kept['channel']} (constant {kept['constant']:.6g}) {kept['why']}")
    lines.append(f"parameters {report['params_before']:,} -> {report['params_after']:,}; non-zero "
                 f"multiplications per image {report['macs_before']:,} -> {report['macs_after']:,}")
    return "\n".join(lines)
