"""Masked retraining: prune 2-D kernels, then retrain with them locked at exactly 0.0.

`prune_oneshot(model, masks, data, cfg)` zeros the given kernels and retrains once; gradual
pruning (`training.gradual.prune_gradual`) is rounds of the same `masked_retrain`. Both return
`(model, summary)` and never change their input.

The masking itself is `masks.apply_masks` + `train.compile_model` (a KernelMask constraint and
masked gradients inside ordinary Keras `fit`), so callbacks, checkpoints and early stopping
work as in any training.

    model, summary = prune_oneshot(baseline, masks, data, cfg)
    summary["kernels_pruned"]["conv2"], summary["masked_max_abs"]   # e.g. 870, 0.0
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..analysis.counts import kernel_counts, macs_summary, units_fraction, weight_counts
from ..analysis.kernels import check_layers, dense_names
from ..config import Config, PruneConfig, config_to_dict
from ..data import Dataset
from ..masks import apply_masks, masked_max_abs, masks_of
from ..process import reseed
from .fit import FitResult, compile_model, evaluate, fit, optimizer_from, resolved_optimizer
from .regularize import add_sparsity_terms


def fraction_schedule(p: PruneConfig) -> list[float]:
    """The fractions gradual mode tries in turn: `schedule`, or step, 2*step, ... max_fraction."""
    if p.schedule:
        return [float(f) for f in p.schedule]
    n = int(np.floor(p.max_fraction / p.step + 1e-9))
    steps = [round(p.step * i, 6) for i in range(1, n + 1)]
    if not steps or steps[-1] < p.max_fraction - 1e-9:
        steps.append(p.max_fraction)
    return steps


def masked_retrain(
    model: tf.keras.Model,
    masks: dict[str, np.ndarray],
    data: Dataset,
    cfg: Config,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    verbose: int = 1,
    callbacks: list | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[tf.keras.Model, FitResult]:
    """A copy of `model` with `masks` applied, trained with the masked kernels locked at 0.0.

    `seed` fixes the batch order (default: the config's seed). With `checkpoint_dir` every
    epoch is saved; `resume` continues from the last one.
    """
    p = cfg.prune
    pruned = apply_masks(model, masks, prune_bias=p.prune_bias)
    if p.l1 or p.group_lasso:  # on every layer being pruned, masked yet or not
        add_sparsity_terms(pruned, sorted({*check_layers(pruned, p.layers), *masks}), l1=p.l1,
                           group_lasso=p.group_lasso)
    compile_model(pruned, optimizer_from(cfg.train, p.optimizer, p.learning_rate), masked=True)
    epochs = p.epochs if epochs is None else epochs
    if epochs == 0:
        return pruned, FitResult(0, {}, [])
    seed = cfg.seed if seed is None else seed
    result = fit(
        pruned, data, epochs, cfg.train.batch_size, seed=seed, callbacks=callbacks, verbose=verbose,
        checkpoint_dir=checkpoint_dir, resume=resume,
    )
    return pruned, result


def prune_oneshot(
    model: tf.keras.Model,
    masks: dict[str, np.ndarray],
    data: Dataset,
    cfg: Config,
    *,
    verbose: int = 1,
    callbacks: list | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[tf.keras.Model, dict]:
    """Zero the `masks` kernels of a copy of `model` and retrain it once (checkpointed as `fit` is)."""
    start = time.perf_counter()
    baseline = evaluate(model, data)
    reseed(cfg.seed)
    pruned, result = masked_retrain(
        model, masks, data, cfg, verbose=verbose, callbacks=callbacks, checkpoint_dir=checkpoint_dir, resume=resume
    )
    after = evaluate(pruned, data)
    all_masks = {**masks_of(pruned), **masks}
    history = [
        _round(0, 0.0, {}, baseline, None, True),
        _round(1, units_fraction(pruned, all_masks), all_masks, after, result, True, dense_names(pruned, all_masks)),
    ]
    summary = prune_summary(pruned, all_masks, baseline, after, cfg, "oneshot", history, time.perf_counter() - start)
    return pruned, summary


def _round(index, fraction, masks, scores, result: FitResult | None, within: bool, dense=()) -> dict:
    """One history row; conv layers count kernels, the `dense` layers weights (apart, not summed)."""
    row = {
        "round": index,
        "fraction": float(fraction),
        "kernels_pruned": {name: int(np.count_nonzero(m)) for name, m in masks.items() if name not in dense},
        "val_accuracy": scores["val_accuracy"],
        "test_accuracy": scores["test_accuracy"],
        "epochs": result.epochs if result else 0,
        "seconds": float(sum(result.epoch_seconds)) if result else 0.0,
        "within_budget": within,
    }
    if scores.get("train_accuracy") is not None:  # a budget split of gradual mode
        row["train_accuracy"] = scores["train_accuracy"]
    if dense:
        row["weights_pruned"] = {name: int(np.count_nonzero(masks[name])) for name in dense if name in masks}
    return row


def prune_summary(
    model: tf.keras.Model,
    masks: dict[str, np.ndarray],
    baseline: dict,
    after: dict,
    cfg: Config,
    mode: str,
    history: list[dict],
    seconds: float,
) -> dict:
    """The pruned stage's summary.json: kernels, MACs, accuracy before/after, the invariant.

    Conv layers count 2-D kernels (kernels_*); masked Dense layers count weights (weights_*).
    """
    counts = kernel_counts(model, masks)
    weights = weight_counts(model, masks)
    metric = "test_accuracy" if after["test_accuracy"] is not None else "val_accuracy"
    return {
        "stage": "pruned",
        "mode": mode,
        "kernels_total": {name: row["kernels"] for name, row in counts.items()},
        "kernels_pruned": {name: row["pruned"] for name, row in counts.items()},
        "weights_total": {name: row["weights"] for name, row in weights.items()},
        "weights_pruned": {name: row["pruned"] for name, row in weights.items()},
        **macs_summary(model, masks),
        "accuracy_metric": metric,
        "accuracy_baseline": baseline[metric],
        "accuracy_after": after[metric],
        "val_accuracy_baseline": baseline["val_accuracy"],
        "val_accuracy_after": after["val_accuracy"],
        "test_accuracy_baseline": baseline["test_accuracy"],
        "test_accuracy_after": after["test_accuracy"],
        "masked_max_abs": masked_max_abs(model, masks),
        **resolved_optimizer(cfg.train, cfg.prune.optimizer, cfg.prune.learning_rate),  # prune's, else train's
        "history": history,
        "seconds": seconds,
        "prune_config": config_to_dict(cfg)["prune"],
    }
