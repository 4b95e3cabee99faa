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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..analysis.counts import kernel_counts, macs_summary, units_fraction, weight_counts
from ..analysis.kernels import check_layers, dense_names, kernel_norms, propose
from ..checkpoint import RoundCheckpoint, remove_checkpoint
from ..config import Config, PruneConfig, config_to_dict
from ..data import Dataset
from ..errors import BadInput
from ..masks import apply_masks, masked_max_abs, masks_of
from ..process import reseed
from .fit import FitResult, compile_model, evaluate, fit, optimizer_from, resolved_optimizer


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


@dataclass
class _GradualState:
    """Where gradual pruning stands: what a round checkpoint saves and a resumed run restores."""

    history: list[dict]
    current: tf.keras.Model  # the last round's model (pruning continues from it)
    current_masks: dict[str, np.ndarray]
    kept: tf.keras.Model  # the last model within budget (the input model before any round)
    kept_masks: dict[str, np.ndarray]
    kept_scores: dict
    # the magnitudes the kept masks were chosen from (the model that round ranked), for plots
    kept_ranked: dict[str, np.ndarray] | None = None
    rounds_done: int = 0
    misses: int = 0  # rounds over budget in a row


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
    always the last one within budget; `summary["ranked_norms"]` holds the magnitudes its masks
    were ranked from (the previous round's model). Each round is seeded by (seed, round) alone. With
    `checkpoint_dir`, every epoch and every finished round is saved; `resume` continues from
    the last of them and ends where an uninterrupted run would.
    """
    p = cfg.prune
    _check_gradual(p, data)
    start = time.perf_counter()
    layers = check_layers(model, p.layers)
    baseline = evaluate(model, data)
    floor = baseline["val_accuracy"] - p.max_accuracy_drop
    saved = (RoundCheckpoint(Path(checkpoint_dir) / "rounds", cfg.model.allow_custom_code)
             if checkpoint_dir is not None else None)
    state = _start_gradual(model, baseline, saved if resume else None)
    schedule = fraction_schedule(p)
    stop = state.rounds_done and state.misses > p.patience
    # disable=None: tqdm draws the bar only on a terminal, so logs get the round lines alone.
    rounds = tqdm(schedule, desc="gradual pruning", unit="round", initial=state.rounds_done,
                  disable=None if progress else True)
    for i, fraction in enumerate([] if stop else schedule[state.rounds_done :], start=state.rounds_done + 1):
        epochs_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"round-{i:04d}"
        _prune_round(state, i, fraction, data, cfg, layers, floor,
                     verbose=verbose, callbacks=callbacks, checkpoint_dir=epochs_dir, resume=resume)
        if progress:
            rounds.write(_round_line(state.history[-1], floor, state.misses > p.patience))
        if saved is not None:
            _save_round(saved, state, model)
            remove_checkpoint(epochs_dir)
        rounds.update()
        if state.misses > p.patience:
            break
    rounds.close()

    kept = apply_masks(model, state.kept_masks) if state.kept is model else state.kept  # no round fitted: a copy
    seconds = time.perf_counter() - start
    summary = prune_summary(kept, state.kept_masks, baseline, state.kept_scores, cfg, "gradual", state.history, seconds)
    summary["val_accuracy_floor"] = floor
    summary["ranked_norms"] = state.kept_ranked  # arrays, not JSON: the prune step saves them beside the model
    return kept, summary


def _check_gradual(p: PruneConfig, data: Dataset) -> None:
    if p.select not in ("fraction", "global_fraction"):
        raise BadInput(
            f"prune.select: gradual mode raises a fraction; use 'fraction' or 'global_fraction', not {p.select!r}"
        )
    if len(data.x_val) == 0:
        raise BadInput("data.validation_fraction: gradual pruning needs a validation split to measure its budget")


def _start_gradual(model: tf.keras.Model, baseline: dict, saved: RoundCheckpoint | None) -> _GradualState:
    """Round 0 (the input model, within budget by definition), or the last saved round."""
    masks = masks_of(model)
    if saved is None or not saved.exists():
        return _GradualState([_round(0, 0.0, {}, baseline, None, True)], model, masks, model, masks, baseline)
    state, models = saved.load()
    current = models["current"]
    kept = models.get("kept", current) if state["kept"] != "baseline" else model
    ranked = {k: np.asarray(v, np.float64) for k, v in (state.get("kept_ranked") or {}).items()} or None
    return _GradualState(
        state["history"], current, masks_of(current), kept, masks_of(kept), state["kept_scores"], ranked,
        rounds_done=state["round"], misses=state["misses"],
    )


def _prune_round(state: _GradualState, i: int, fraction: float, data: Dataset, cfg: Config, layers, floor: float,
                 **fit_options) -> None:
    """Round i: prune `fraction` of the current model's kernels, retrain, keep it if within budget."""
    p = cfg.prune
    reseed(cfg.seed + i)  # dropout and batch order of round i, however the run got here
    norms = kernel_norms(state.current, p.norm, p.normalize, layers=layers)
    masks = propose(norms, p.select, fraction=fraction, layers=layers, already=state.current_masks,
                    dense=dense_names(state.current, layers))
    state.current, result = masked_retrain(state.current, masks, data, cfg, seed=cfg.seed + i, **fit_options)
    state.current_masks = masks
    scores = evaluate(state.current, data)
    within = scores["val_accuracy"] >= floor - 1e-9
    state.history.append(_round(i, fraction, masks, scores, result, within, dense_names(state.current, layers)))
    if within:
        state.kept, state.kept_masks, state.kept_scores, state.misses = state.current, masks, scores, 0
        state.kept_ranked = norms
    else:
        state.misses += 1
    state.rounds_done = i


def _save_round(saved: RoundCheckpoint, state: _GradualState, model: tf.keras.Model) -> None:
    """Checkpoint the finished round; the kept model is saved only when it is neither input nor current."""
    kept = "baseline" if state.kept is model else ("current" if state.kept is state.current else "kept")
    models = {"current": state.current, **({"kept": state.kept} if kept == "kept" else {})}
    loop = {"history": state.history, "misses": state.misses, "kept": kept, "kept_scores": state.kept_scores,
            "kept_ranked": state.kept_ranked}
    saved.save(state.rounds_done, loop, models)


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
    if dense:
        row["weights_pruned"] = {name: int(np.count_nonzero(masks[name])) for name in dense if name in masks}
    return row


def _round_line(row: dict, floor: float, last: bool) -> str:
    pruned = ", ".join([*(f"{k} {v}" for k, v in row["kernels_pruned"].items()),
                        *(f"{k} {v} weights" for k, v in row.get("weights_pruned", {}).items())])
    test = f", test {row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else ""
    verdict = "within budget" if row["within_budget"] else f"over budget (val < {floor:.4f})"
    verdict += "; stop" if last and not row["within_budget"] else ""
    val = f"val {row['val_accuracy']:.4f}{test}"
    return f"round {row['round']}: fraction {row['fraction']:.2f} ({pruned}): {val}: {verdict}"


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
