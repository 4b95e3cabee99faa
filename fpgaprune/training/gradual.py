"""Gradual pruning: prune more, retrain, round by round, while validation accuracy holds.

Layers advance along their schedules in *groups*. With `prune.budget: shared` all pruned layers
are one group: every round raises them all to the schedule's next fraction, and the first round
over budget (after `patience`) ends the run. With `prune.budget: per_layer` each layer is its own
group and every round steps one layer: the one whose next step removes the most estimated
hardware cost (weights x weight bits) per unit of validation loss it adds when its next kernels
are zeroed without retraining (a greedy knapsack: cost saved against accuracy spent). A layer
over budget (after `patience`) is closed while the others go on, so each layer stops at the
fraction it can take, where one shared fraction stops all where the weakest gives out.

    model, summary = prune_gradual(baseline, data, cfg)
    summary["history"][-1]["fractions"]     # e.g. {'conv2': 0.98, 'fc1': 0.9}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..analysis.counts import units_fraction
from ..analysis.kernels import check_layers, dense_names, propose, ranking_norms
from ..checkpoint import RoundCheckpoint, remove_checkpoint
from ..config import Config, PruneConfig
from ..data import Dataset
from ..errors import BadInput
from ..masks import apply_masks, conv_kernel, masks_of
from ..process import reseed
from .fit import accuracy, evaluate
from .retrain import _round, fraction_schedule, masked_retrain, prune_summary

SHARED = "all"  # the one group's name under budget: shared
# prune.budget_splits -> the score each is measured by, and its name in the round lines
BUDGET_SCORES = {"validation": ("val_accuracy", "val"), "training": ("train_accuracy", "train")}


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
    steps: dict[str, int] = field(default_factory=dict)  # group -> schedule steps in `current`
    kept_steps: dict[str, int] = field(default_factory=dict)  # ... in `kept`
    misses: dict[str, int] = field(default_factory=dict)  # group -> rounds over budget in a row
    closed: list[str] = field(default_factory=list)  # groups that gave out (or finished)


def layer_groups(p: PruneConfig, layers: list[str]) -> dict[str, list[str]]:
    """Group name -> the layers that step together."""
    return {name: [name] for name in layers} if p.budget == "per_layer" else {SHARED: list(layers)}


def group_schedules(p: PruneConfig, groups: dict[str, list[str]]) -> dict[str, list[float]]:
    """Each group's fractions: `layer_schedule[layer]` where set, else the shared schedule."""
    shared = fraction_schedule(p)
    return {g: [float(f) for f in (p.layer_schedule or {}).get(g, shared)] for g in groups}


def unit_costs(model: tf.keras.Model, cfg: Config, layers: list[str]) -> dict[str, float]:
    """A layer's estimated cost per pruned fraction: its weights x their quantized bits.

    Only the order matters (which layer steps next), so the multiplier rule's common factors
    (activation bits, the constant) are left out.
    """
    q = cfg.quantize
    by_name = {layer.name: layer for layer in model.layers}
    out = {}
    for name in layers:
        own = (q.layers or {}).get(name)
        bits = own.bits if own is not None else q.weight_bits
        out[name] = float(np.prod(by_name[name].get_weights()[0].shape)) * float(bits)
    return out


def budget_scores(model: tf.keras.Model, data: Dataset, splits: list[str]) -> dict:
    """Validation and test accuracy, and training accuracy where it is a budget split."""
    scores = evaluate(model, data)
    if "training" in splits:
        scores["train_accuracy"] = accuracy(model, data.x_train, data.y_train)
    return scores


def budget_floors(baseline: dict, p: PruneConfig) -> dict[str, float]:
    """Score key -> the lowest value a round may reach: the baseline's own, less max_accuracy_drop."""
    keys = [BUDGET_SCORES[split][0] for split in p.budget_splits]
    return {key: baseline[key] - p.max_accuracy_drop for key in keys}


def over_budget(scores: dict, floors: dict[str, float]) -> list[str]:
    """The score keys below their floor (none: the round is within budget)."""
    return [key for key, floor in floors.items() if scores[key] < floor - 1e-9]


def val_loss(model: tf.keras.Model, data: Dataset) -> float:
    """Cross-entropy on the validation split: a smoother signal than accuracy on a few hundred images."""
    p = np.asarray(model.predict(data.x_val, batch_size=512, verbose=0), np.float64)
    if p.min() < 0 or not np.allclose(p.sum(axis=-1), 1.0, atol=1e-3):  # logits: make them probabilities
        p = np.exp(p - p.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
    return float(np.mean(-np.log(np.clip(p[np.arange(len(p)), data.y_val], 1e-7, 1.0))))


def loss_increases(model: tf.keras.Model, candidates: dict[str, dict[str, np.ndarray]], data: Dataset) -> dict:
    """Per candidate, the validation loss added by zeroing its masks in `model` (restored after)."""
    layers = {layer.name: layer for layer in model.layers}
    kept = {name: conv_kernel(layers[name]).numpy() for masks in candidates.values() for name in masks}
    before = val_loss(model, data)
    out = {}
    try:
        for key, masks in candidates.items():
            for name, pruned in masks.items():
                conv_kernel(layers[name]).assign(np.where(pruned, np.float32(0.0), kept[name]))
            out[key] = val_loss(model, data) - before
            for name in masks:
                conv_kernel(layers[name]).assign(kept[name])
    finally:
        for name, kernel in kept.items():
            conv_kernel(layers[name]).assign(kernel)
    return out


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
    """Prune more and retrain, round by round, while accuracy stays within budget.

    The budget holds on each of `prune.budget_splits` (validation, training) against the
    baseline's accuracy there. Validation accuracy on a few hundred images is noisy, so up to
    `prune.patience` rounds of a group over budget in a row are tolerated (pruning continues
    from them); the model returned is always the last one within budget;
    `summary["ranked_norms"]` holds the magnitudes its masks were ranked from (the previous
    round's model). Each round is seeded by (seed, round) alone. With
    `checkpoint_dir`, every epoch and every finished round is saved; `resume` continues from
    the last of them and ends where an uninterrupted run would.
    """
    p = cfg.prune
    _check_gradual(p, data)
    start = time.perf_counter()
    layers = check_layers(model, p.layers)
    _check_layer_schedules(p, layers)
    groups = layer_groups(p, layers)
    schedules = group_schedules(p, groups)
    costs = unit_costs(model, cfg, layers)
    baseline = budget_scores(model, data, p.budget_splits)
    floors = budget_floors(baseline, p)
    saved = (RoundCheckpoint(Path(checkpoint_dir) / "rounds", cfg.model.allow_custom_code)
             if checkpoint_dir is not None else None)
    state = _start_gradual(model, baseline, saved if resume else None, groups)
    # disable=None: tqdm draws the bar only on a terminal, so logs get the round lines alone.
    rounds = tqdm(total=sum(map(len, schedules.values())), desc="gradual pruning", unit="round",
                  initial=state.rounds_done, disable=None if progress else True)
    while (group := _next_group(state, groups, schedules, costs, data, cfg, layers)) is not None:
        i = state.rounds_done + 1
        epochs_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"round-{i:04d}"
        closed = _prune_round(state, i, group, groups, schedules, data, cfg, layers, floors,
                              verbose=verbose, callbacks=callbacks, checkpoint_dir=epochs_dir, resume=resume)
        if progress:
            rounds.write(_round_line(state.history[-1], floors, closed, len(groups) > 1))
        if saved is not None:
            _save_round(saved, state, model)
            remove_checkpoint(epochs_dir)
        rounds.update()
    rounds.close()

    kept = apply_masks(model, state.kept_masks) if state.kept is model else state.kept  # no round fitted: a copy
    seconds = time.perf_counter() - start
    summary = prune_summary(kept, state.kept_masks, baseline, state.kept_scores, cfg, "gradual", state.history, seconds)
    summary["budget"] = p.budget
    summary["budget_splits"] = list(p.budget_splits)
    summary["val_accuracy_floor"] = floors.get("val_accuracy")
    if "train_accuracy" in floors:
        summary["train_accuracy_baseline"] = baseline["train_accuracy"]
        summary["train_accuracy_after"] = state.kept_scores.get("train_accuracy")
        summary["train_accuracy_floor"] = floors["train_accuracy"]
    summary["ranked_norms"] = state.kept_ranked  # arrays, not JSON: the prune step saves them beside the model
    return kept, summary


def _check_gradual(p: PruneConfig, data: Dataset) -> None:
    if p.select not in ("fraction", "global_fraction"):
        raise BadInput(
            f"prune.select: gradual mode raises a fraction; use 'fraction' or 'global_fraction', not {p.select!r}"
        )
    if p.budget == "per_layer" and p.select != "fraction":
        raise BadInput("prune.budget: per_layer steps each layer by its own fraction, so select must be 'fraction', "
                       f"not {p.select!r}")
    check_validation_split(p, len(data.x_val))


def check_validation_split(p: PruneConfig, n_val: int) -> None:
    """BadInput when the budget is measured on a validation split that has no images."""
    if "validation" in p.budget_splits and n_val == 0:
        raise BadInput("data.validation_fraction: gradual pruning needs a validation split to measure its budget "
                       "(or prune.budget_splits: [training])")


def _check_layer_schedules(p: PruneConfig, layers: list[str]) -> None:
    for name in p.layer_schedule or {}:
        if name not in layers:
            raise BadInput(f"prune.layer_schedule: {name!r} is not among the pruned layers ({', '.join(layers)})")
        if p.budget != "per_layer":
            raise BadInput("prune.layer_schedule: a schedule per layer needs prune.budget: per_layer")


def _start_gradual(model: tf.keras.Model, baseline: dict, saved: RoundCheckpoint | None,
                   groups: dict[str, list[str]]) -> _GradualState:
    """Round 0 (the input model, within budget by definition), or the last saved round."""
    masks = masks_of(model)
    zero = {g: 0 for g in groups}
    if saved is None or not saved.exists():
        return _GradualState([_round(0, 0.0, {}, baseline, None, True)], model, masks, model, masks, baseline,
                             steps=dict(zero), kept_steps=dict(zero), misses=dict(zero))
    state, models = saved.load()
    if set(state.get("steps", {})) != set(groups):
        raise BadInput(f"checkpoint {saved.folder}: saved with other pruned layers or budget; --force to start over")
    current = models["current"]
    kept = models.get("kept", current) if state["kept"] != "baseline" else model
    ranked = {k: np.asarray(v, np.float64) for k, v in (state.get("kept_ranked") or {}).items()} or None
    return _GradualState(
        state["history"], current, masks_of(current), kept, masks_of(kept), state["kept_scores"], ranked,
        rounds_done=state["round"], steps=state["steps"], kept_steps=state["kept_steps"], misses=state["misses"],
        closed=state["closed"],
    )


def _next_group(state: _GradualState, groups, schedules, costs, data: Dataset, cfg: Config,
                layers: list[str]) -> str | None:
    """The open group whose next step saves the most cost per validation loss it adds (None: all done).

    One group (budget shared): that group, unmeasured.
    """
    open_groups = [g for g in groups if g not in state.closed and state.steps[g] < len(schedules[g])]
    if len(open_groups) <= 1:
        return open_groups[0] if open_groups else None

    def removed(g: str) -> float:
        at = state.steps[g]
        before = schedules[g][at - 1] if at else 0.0
        return (schedules[g][at] - before) * sum(costs[name] for name in groups[g])

    p = cfg.prune
    norms = ranking_norms(state.current, p, layers)
    candidates = {g: _step_masks(state, g, groups, schedules, norms, p) for g in open_groups}
    added = loss_increases(state.current, {g: {n: m for n, m in masks.items() if n in groups[g]}
                                           for g, masks in candidates.items()}, data)
    return max(open_groups, key=lambda g: removed(g) / max(added[g], 1e-4))


def _step_masks(state: _GradualState, group: str, groups, schedules, norms, p: PruneConfig) -> dict[str, np.ndarray]:
    """The current masks with `group`'s layers raised to its next fraction (ranked by `norms`)."""
    stepped = groups[group]
    fraction = schedules[group][state.steps[group]]
    return {**state.current_masks,
            **propose(norms, p.select, fraction=fraction, layers=stepped, already=state.current_masks,
                      dense=dense_names(state.current, stepped))}


def _prune_round(state: _GradualState, i: int, group: str, groups, schedules, data: Dataset, cfg: Config,
                 layers: list[str], floors: dict[str, float], **fit_options) -> bool:
    """Round i: step `group` to its next fraction, retrain, keep the model if within budget.

    Returns whether the group closed: over budget more than `patience` rounds in a row, so the
    run goes back to the kept model and goes on with the other groups.
    """
    p = cfg.prune
    reseed(cfg.seed + i)  # dropout and batch order of round i, however the run got here
    fraction = schedules[group][state.steps[group]]
    norms = ranking_norms(state.current, p, layers)
    masks = _step_masks(state, group, groups, schedules, norms, p)
    state.current, result = masked_retrain(state.current, masks, data, cfg, seed=cfg.seed + i, **fit_options)
    state.current_masks = masks
    state.steps = {**state.steps, group: state.steps[group] + 1}
    scores = budget_scores(state.current, data, p.budget_splits)
    within = not over_budget(scores, floors)
    row = _round(i, units_fraction(state.current, masks) if len(groups) > 1 else fraction, masks, scores, result,
                 within, dense_names(state.current, layers))
    if len(groups) > 1:
        row["layer"] = group
        row["fractions"] = {g: (schedules[g][state.steps[g] - 1] if state.steps[g] else 0.0) for g in groups}
    state.history.append(row)
    state.rounds_done = i
    if within:
        state.kept, state.kept_masks, state.kept_scores = state.current, masks, scores
        state.kept_ranked, state.kept_steps = norms, dict(state.steps)
        state.misses = {g: 0 for g in groups}
    else:
        state.misses = {**state.misses, group: state.misses[group] + 1}
    if state.misses[group] > p.patience:
        # back to the last model within budget; the group is done, the others go on from there
        state.closed = [*state.closed, group]
        state.current, state.current_masks, state.steps = state.kept, state.kept_masks, dict(state.kept_steps)
        state.misses = {g: 0 for g in groups}
        return True
    return False


def _save_round(saved: RoundCheckpoint, state: _GradualState, model: tf.keras.Model) -> None:
    """Checkpoint the finished round; the kept model is saved only when it is neither input nor current."""
    kept = "baseline" if state.kept is model else ("current" if state.kept is state.current else "kept")
    models = {"current": state.current, **({"kept": state.kept} if kept == "kept" else {})}
    loop = {"history": state.history, "misses": state.misses, "kept": kept, "kept_scores": state.kept_scores,
            "kept_ranked": state.kept_ranked, "steps": state.steps, "kept_steps": state.kept_steps,
            "closed": state.closed}
    saved.save(state.rounds_done, loop, models)


def _round_line(row: dict, floors: dict[str, float], closed: bool, per_layer: bool) -> str:
    pruned = ", ".join([*(f"{k} {v}" for k, v in row["kernels_pruned"].items()),
                        *(f"{k} {v} weights" for k, v in row.get("weights_pruned", {}).items())])
    short = {key: name for key, name in BUDGET_SCORES.values()}
    below = ", ".join(f"{short[key]} < {floors[key]:.4f}" for key in over_budget(row, floors))
    verdict = "within budget" if row["within_budget"] else f"over budget ({below})"
    if closed and not row["within_budget"]:
        verdict += f"; {row['layer']} stays at its last fraction within budget" if per_layer else "; stop"
    val = ", ".join(f"{name} {row[key]:.4f}" for key, name in (*BUDGET_SCORES.values(), ("test_accuracy", "test"))
                    if row.get(key) is not None)
    if per_layer:
        step = f"{row['layer']} to {row['fractions'][row['layer']]:.2f}"
        return f"round {row['round']}: {step} ({pruned}): {val}: {verdict}"
    return f"round {row['round']}: fraction {row['fraction']:.2f} ({pruned}): {val}: {verdict}"
