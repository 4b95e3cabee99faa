"""Masked retraining: prune 2-D kernels, then retrain with them locked at exactly 0.0.

Two modes, both plain functions returning `(model, summary)` and never changing their input:

- `prune_oneshot(model, masks, data, cfg)`: zero the given kernels, retrain once;
- `prune_gradual(model, data, cfg)`: prune a growing fraction (the config's schedule),
  retraining after each step, until the validation accuracy would fall more than
  `prune.max_accuracy_drop` below the baseline's; the last model within budget is kept.

The masking itself is `masks.apply_masks` + `train.compile_model` (a KernelMask constraint and
masked gradients inside ordinary Keras `fit`), so callbacks, checkpoints and early stopping
work as in any training.

    model, summary = prune_gradual(baseline, data, cfg)
    summary["kernels_pruned"]["conv2"], summary["masked_max_abs"]   # e.g. 870, 0.0
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..analysis.kernels import check_layers, kernel_counts, kernel_norms, macs, propose
from ..checkpoint import RoundCheckpoint, remove_checkpoint
from ..config import Config, PruneConfig, config_to_dict
from ..data import Dataset
from ..errors import BadInput
from ..masks import apply_masks, masked_max_abs, masks_of
from .fit import FitResult, compile_model, evaluate, fit, optimizer_from, set_seed


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
    set_seed(cfg.seed)
    pruned, result = masked_retrain(
        model, masks, data, cfg, verbose=verbose, callbacks=callbacks, checkpoint_dir=checkpoint_dir, resume=resume
    )
    after = evaluate(pruned, data)
    all_masks = {**masks_of(pruned), **masks}
    history = [
        _round(0, 0.0, {}, baseline, None, True),
        _round(1, _fraction(pruned, all_masks), all_masks, after, result, True),
    ]
    summary = prune_summary(pruned, all_masks, baseline, after, cfg, "oneshot", history, time.perf_counter() - start)
    return pruned, summary


def prune_gradual(
    model: tf.keras.Model,
    data: Dataset,
    cfg: Config,
    *,
    verbose: int = 0,
    progress: bool = True,
    callbacks: list | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[tf.keras.Model, dict]:
    """Prune more and retrain, round by round, while validation accuracy stays within budget.

    Validation accuracy on a few hundred images is noisy, so up to `prune.patience` rounds
    over budget in a row are tolerated (pruning continues from them); the model returned is
    always the last one within budget. Each round is seeded by (seed, round) alone. With
    `checkpoint_dir`, every epoch and every finished round is saved; `resume` continues from
    the last of them and ends where an uninterrupted run would.
    """
    p = cfg.prune
    if p.select not in ("fraction", "global_fraction"):
        raise BadInput(f"prune.select: gradual mode raises a fraction; use 'fraction' or 'global_fraction', not {p.select!r}")
    if len(data.x_val) == 0:
        raise BadInput("data.validation_fraction: gradual pruning needs a validation split to measure its budget")
    start = time.perf_counter()
    layers = check_layers(model, p.layers)
    baseline = evaluate(model, data)
    floor = baseline["val_accuracy"] - p.max_accuracy_drop

    kept_model, kept_masks, kept_scores = model, masks_of(model), baseline
    current, current_masks, misses = model, kept_masks, 0
    history = [_round(0, 0.0, {}, baseline, None, True)]
    rounds_done = 0
    saved = RoundCheckpoint(Path(checkpoint_dir) / "rounds", cfg.model.allow_custom_code) if checkpoint_dir is not None else None
    if saved is not None and resume and saved.exists():
        state, models = saved.load()
        rounds_done, history, misses, kept_scores = state["round"], state["history"], state["misses"], state["kept_scores"]
        current = models["current"]
        kept_model = models.get("kept", current) if state["kept"] != "baseline" else model
        current_masks, kept_masks = masks_of(current), masks_of(kept_model)
    schedule = fraction_schedule(p)
    stop = rounds_done and misses > p.patience
    rounds = tqdm(schedule, desc="gradual pruning", unit="round", initial=rounds_done, disable=not progress)
    for i, fraction in enumerate([] if stop else schedule[rounds_done:], start=rounds_done + 1):
        set_seed(cfg.seed + i)  # dropout and batch order of round i, however the run got here
        norms = kernel_norms(current, p.norm, p.normalize)
        masks = propose(norms, p.select, fraction=fraction, layers=layers, already=current_masks)
        epochs_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"round-{i:04d}"
        current, result = masked_retrain(
            current, masks, data, cfg, seed=cfg.seed + i, verbose=verbose, callbacks=callbacks,
            checkpoint_dir=epochs_dir, resume=resume,
        )
        current_masks = masks
        scores = evaluate(current, data)
        within = scores["val_accuracy"] >= floor - 1e-9
        history.append(_round(i, fraction, masks, scores, result, within))
        if progress:
            rounds.write(_round_line(history[-1], floor, misses + 1 > p.patience))
        if within:
            kept_model, kept_masks, kept_scores, misses = current, masks, scores, 0
        else:
            misses += 1
        if saved is not None:
            kept = "baseline" if kept_model is model else ("current" if kept_model is current else "kept")
            models = {"current": current, **({"kept": kept_model} if kept == "kept" else {})}
            saved.save(i, {"history": history, "misses": misses, "kept": kept, "kept_scores": kept_scores}, models)
            remove_checkpoint(epochs_dir)
        rounds.update()
        if misses > p.patience:
            break
    rounds.close()

    if kept_model is model:  # not even the first step fitted the budget: an unpruned copy
        kept_model = apply_masks(model, kept_masks)
    summary = prune_summary(
        kept_model, kept_masks, baseline, kept_scores, cfg, "gradual", history, time.perf_counter() - start
    )
    summary["val_accuracy_floor"] = floor
    return kept_model, summary


def _fraction(model, masks) -> float:
    counts = kernel_counts(model, masks)
    pruned = [counts[name] for name in masks if counts[name]["kernels"]]
    return sum(c["pruned"] for c in pruned) / max(1, sum(c["kernels"] for c in pruned))


def _round(index, fraction, masks, scores, result: FitResult | None, within: bool) -> dict:
    return {
        "round": index,
        "fraction": float(fraction),
        "kernels_pruned": {name: int(np.count_nonzero(m)) for name, m in masks.items()},
        "val_accuracy": scores["val_accuracy"],
        "test_accuracy": scores["test_accuracy"],
        "epochs": result.epochs if result else 0,
        "seconds": float(sum(result.epoch_seconds)) if result else 0.0,
        "within_budget": within,
    }


def _round_line(row: dict, floor: float, last: bool) -> str:
    pruned = ", ".join(f"{k} {v}" for k, v in row["kernels_pruned"].items())
    test = f", test {row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else ""
    verdict = "within budget" if row["within_budget"] else f"over budget (val < {floor:.4f})"
    verdict += "; stop" if last and not row["within_budget"] else ""
    return f"round {row['round']}: fraction {row['fraction']:.2f} ({pruned}): val {row['val_accuracy']:.4f}{test}: {verdict}"


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
    """The pruned stage's summary.json: kernels, MACs, accuracy before/after, the invariant."""
    counts = kernel_counts(model, masks)
    cost = macs(model, masks)
    metric = "test_accuracy" if after["test_accuracy"] is not None else "val_accuracy"
    return {
        "stage": "pruned",
        "mode": mode,
        "kernels_total": {name: row["kernels"] for name, row in counts.items()},
        "kernels_pruned": {name: row["pruned"] for name, row in counts.items()},
        "macs_before": {**{k: v[0] for k, v in cost.items()}, "total": sum(v[0] for v in cost.values())},
        "macs_after": {**{k: v[1] for k, v in cost.items()}, "total": sum(v[1] for v in cost.values())},
        "accuracy_metric": metric,
        "accuracy_baseline": baseline[metric],
        "accuracy_after": after[metric],
        "val_accuracy_baseline": baseline["val_accuracy"],
        "val_accuracy_after": after["val_accuracy"],
        "test_accuracy_baseline": baseline["test_accuracy"],
        "test_accuracy_after": after["test_accuracy"],
        "masked_max_abs": masked_max_abs(model, masks),
        "history": history,
        "seconds": seconds,
        "prune_config": config_to_dict(cfg)["prune"],
    }
