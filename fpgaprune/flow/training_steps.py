"""The flow's model steps: baseline, analyze, prune, transfer (and the transfer demo).

Each is `step(run, cfg, options) -> StageResult`: it reads its inputs from the run, saves its
stage folder, and says what it did through `options.say`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import BadInput, WorkFailed, option
from ..process import reseed
from ..results import StageResult
from ..run import KERNELS_CSV, KERNELS_JSON, MASK_SPEC_FILE, MASKS_FILE, PRETRAINED_FILE, RANKED_NORMS_FILE, Run
from .options import Options


def write_table_csv(table: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["rank"])
        writer.writeheader()
        writer.writerows(table)


def masks_from_file(path: str, model) -> dict:
    """Masks from a mask spec (YAML) or an npz of boolean masks, checked against `model`."""
    from ..masks import check_masks, load_masks
    from ..spec import read_mask_spec, spec_to_masks

    if Path(path).suffix == ".npz":
        masks = load_masks(path)
        try:
            check_masks(model, masks)
        except BadInput as exc:
            raise BadInput(f"masks {path}: {str(exc).removeprefix('mask: ')}") from None
        return masks
    return spec_to_masks(read_mask_spec(path), model, f"mask spec {path}")


def model_for_checks(run: Run, cfg: Config):
    """The saved baseline, or the model the config names as the baseline step will save it
    (flattened, BN folded): enough to check masks and layer names before any work."""
    from ..graph import prepare_model
    from ..models import build_model

    return run.load("baseline")[0] if run.has("baseline") else prepare_model(build_model(cfg.model))[0]


def spec_masks_of(run: Run, cfg: Config, model=None):
    if cfg.prune.select != "spec":
        return None
    return masks_from_file(cfg.prune.spec, model if model is not None else model_for_checks(run, cfg))


def check_baseline(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    """The model the config names can be built (a user's file loads), flattened and BN-folded, every
    layer can go to hardware, and the data loads and fits it. All before anything trains."""
    from ..data import check_fits
    from ..graph import prepare_model
    from ..hw.support import check_convertible
    from ..models import build_model

    model = prepare_model(build_model(cfg.model))[0]
    check_convertible(model)
    check_fits(model, run.load_data(options.test_data))


def refuse_nested(model) -> None:
    """One flat graph is what masks, quantization and hls4ml take. The baseline step flattens a
    user's nested model; a saved stage that still holds a sub-model (saved by an older version)
    is refused, not skipped."""
    import tensorflow as tf

    nested = [layer for layer in model.layers if isinstance(layer, tf.keras.Model)]
    if nested:
        raise BadInput(
            f"model {model.name}: layer {nested[0].name!r} is a nested {type(nested[0]).__name__} model; "
            "its layers would not be pruned, so build the model as one graph (its layers inline)"
        )


def pruning_warnings(total: dict[str, int], pruned: dict[str, int], mode: str, floors: dict[str, float] | None,
                     weights_pruned: dict[str, int] | None = None) -> list[str]:
    """Plain words for a prune that killed a layer or pruned nothing (Dense weights count as pruned).

    `floors`: gradual mode's budget, split name -> the lowest accuracy a round could keep.
    """
    out = [f"warning: {name}: all {n} kernels pruned; the layer passes on only its biases"
           for name, n in total.items() if name != "total" and n and pruned.get(name) == n]
    if not pruned.get("total") and not (weights_pruned or {}).get("total"):
        where = ", ".join(f"{split} {floor:.4f}" for split, floor in (floors or {}).items())
        why = (f": the first round already fell below the budget ({where}); raise "
               "prune.max_accuracy_drop or lower prune.step" if mode == "gradual" and where else "")
        out.append(f"warning: no kernel was pruned{why}")
    return out


def check_selection(run: Run, cfg: Config, options: Options, planned: set[str]):
    """What analyze and prune read: the mask spec, the layer names, the data (returned)."""
    from ..analysis.kernels import check_layers
    from ..training.gradual import check_validation_split

    model = model_for_checks(run, cfg)
    refuse_nested(model)
    spec_masks_of(run, cfg, model)
    check_layers(model, cfg.prune.layers)
    data = run.load_data(options.test_data)
    if cfg.prune.mode == "gradual":
        check_validation_split(cfg.prune, len(data.x_val))
    return data


# Gradual pruning's budget must be worth at least this many validation images: below that, one
# image classified differently by chance decides whether a round is kept. (The reference config's
# 0.005 of 500 images is worth 2.5.)
MIN_BUDGET_IMAGES = 2


def check_prune(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    """What the prune step reads (check_selection), and a validation split that can measure its budget."""
    data = check_selection(run, cfg, options, planned)
    if cfg.prune.mode == "gradual" and "validation" in cfg.prune.budget_splits:
        check_budget(cfg, len(data.x_val))


def check_budget(cfg: Config, n_val: int) -> None:
    """BadInput unless prune.max_accuracy_drop is worth MIN_BUDGET_IMAGES of the n_val validation images."""
    budget = cfg.prune.max_accuracy_drop
    if budget * n_val >= MIN_BUDGET_IMAGES - 1e-9:
        return
    fixes = [f"raise prune.max_accuracy_drop to at least {math.ceil(MIN_BUDGET_IMAGES / n_val * 1000) / 1000:g}"]
    if budget > 0:
        needed = math.ceil(MIN_BUDGET_IMAGES / budget - 1e-9)
        fixes.insert(0, f"raise data.validation_fraction (now {cfg.data.validation_fraction:g}) so that at least "
                        f"{needed} images validate")
    raise BadInput(
        f"prune.max_accuracy_drop: a budget of {budget:g} on {n_val} validation images is worth "
        f"{budget * n_val:.2g} images, below the {MIN_BUDGET_IMAGES} that gradual pruning needs to tell a real "
        "drop from chance; "
        + ", or ".join(fixes)
    )


def baseline(run: Run, cfg: Config, options: Options) -> StageResult:
    """The model the rest of the flow starts from: trained (seeded, checkpointed every epoch), or
    for a user's model (model.retrain false, their default) the weights as brought, evaluated."""
    from ..checkpoint import remove_checkpoint
    from ..data import check_fits
    from ..graph import flatten_model, fold_batchnorm
    from ..models import build_model
    from ..training.fit import baseline_summary, evaluate, train_baseline

    data = run.load_data(options.test_data)
    ckpt = run.checkpoint_dir("baseline")
    reseed(cfg.seed)  # before building, so the initial weights are seeded too
    model, flat_report = flatten_model(build_model(cfg.model), data.x_train)
    if cfg.model.retrains:  # BN trains as BN; it is folded into the weights afterwards
        model, summary = train_baseline(model, data, cfg, verbose=options.verbose, checkpoint_dir=ckpt,
                                        resume=options.resume)
        model, fold_report = fold_batchnorm(model, data.x_train)
        if fold_report["folded"]:
            summary.update(evaluate(model, data), params=int(model.count_params()))
    else:
        check_fits(model, data)
        model, fold_report = fold_batchnorm(model, data.x_train)
        summary = baseline_summary(model, data, cfg)
    summary.update(flatten=flat_report, batchnorm_fold=fold_report)
    result = StageResult("baseline", summary["val_accuracy"], summary["test_accuracy"], summary=summary)
    folder = run.save("baseline", model, result.with_summary(), force=options.force)
    remove_checkpoint(ckpt)
    how = "trained" if cfg.model.retrains else f"kept as brought from {cfg.model.source}"
    options.say(f"baseline saved to {folder} ({how}): {result.accuracy_split} accuracy {result.accuracy:.4f}, "
                f"{summary['params']} parameters")
    for line in graph_lines(flat_report, fold_report):
        options.say(line)
    return replace(result, folder=folder, model=model)


def graph_lines(flat_report: dict, fold_report: dict) -> list[str]:
    """What flattening and BN folding did, in plain words (nothing for a model they left as is)."""
    out = []
    if flat_report["inlined"]:
        renamed = "".join(f"; {old} is now {new}" for old, new in flat_report["renamed"].items())
        out.append(f"nested models inlined: {', '.join(flat_report['inlined'])}{renamed}")
    if fold_report["folded"]:
        pairs = ", ".join(f"{f['batchnorm']} -> {f['into']}" for f in fold_report["folded"])
        out.append(f"BatchNormalization folded into the layer before it: {pairs} "
                   f"(outputs agree to {fold_report['max_abs_diff']:.1e})")
    return out


def analyze(run: Run, cfg: Config, options: Options) -> StageResult:
    """Rank every kernel, propose masks, measure their accuracy cost without retraining."""
    from ..analysis.kernels import analyze as analyze_kernels
    from ..masks import save_masks
    from ..report.text import analysis_lines
    from ..spec import write_masks

    model, _ = run.load("baseline")
    data = run.load_data(options.test_data)
    found = analyze_kernels(model, data, cfg.prune, spec_masks=spec_masks_of(run, cfg, model),
                            progress=options.progress)
    s = found.summary
    total = s["kernels"]["total"]
    s["warnings"] = pruning_warnings({k: v["kernels"] for k, v in s["kernels"].items()},
                                     {k: v["pruned"] for k, v in s["kernels"].items()}, "oneshot", None,
                                     {k: v["pruned"] for k, v in s["weights"].items()})
    result = StageResult("analyze", s["accuracy_zeroed"]["val_accuracy"], s["accuracy_zeroed"]["test_accuracy"],
                         total["pruned"], total["kernels"], summary=s)
    extras = {
        KERNELS_CSV: lambda p: write_table_csv(found.table, p),
        KERNELS_JSON: lambda p: p.write_text(json.dumps(found.table) + "\n"),
        MASK_SPEC_FILE: lambda p: write_masks(found.masks, p),
        MASKS_FILE: lambda p: save_masks(found.masks, p),
    }
    folder = run.save("analysis", None, result.with_summary(), force=options.force, extras=extras)
    options.say(analysis_lines(found, options.table_rows))
    for line in s["warnings"]:
        options.say(line)
    options.say(f"analysis saved to {folder} (edit {MASK_SPEC_FILE}, then "
                f"`fpgaprune prune --spec {folder / MASK_SPEC_FILE}`)")
    return replace(result, folder=folder)


def prune(run: Run, cfg: Config, options: Options) -> StageResult:
    """Zero the chosen kernels and retrain with them locked at 0.0 (one-shot or gradual)."""
    from ..analysis.kernels import analyze as analyze_kernels
    from ..analysis.kernels import ranked_table
    from ..checkpoint import remove_checkpoint
    from ..masks import empty_masks, masks_of, save_masks
    from ..report.text import prune_table
    from ..spec import write_masks
    from ..training.gradual import BUDGET_SCORES, prune_gradual
    from ..training.retrain import prune_oneshot

    baseline_model, _ = run.load("baseline")
    data = run.load_data(options.test_data)
    ckpt = run.checkpoint_dir("pruned")
    analysis = analyze_kernels(baseline_model, data, cfg.prune, spec_masks=spec_masks_of(run, cfg, baseline_model),
                               measure=False)
    if cfg.prune.mode == "oneshot":
        model, summary = prune_oneshot(baseline_model, analysis.masks, data, cfg, verbose=options.verbose,
                                       checkpoint_dir=ckpt, resume=options.resume)
    else:
        model, summary = prune_gradual(baseline_model, data, cfg, progress=options.progress, checkpoint_dir=ckpt,
                                       resume=options.resume)
    masks = {**empty_masks(model), **masks_of(model)}
    table = ranked_table(analysis.norms, masks)
    # What chose the masks: one shot ranks the baseline, gradual the model of its last kept round.
    ranked = summary.pop("ranked_norms", None) or analysis.norms
    extras = {
        MASK_SPEC_FILE: lambda p: write_masks(masks, p),
        MASKS_FILE: lambda p: save_masks(masks, p),
        KERNELS_CSV: lambda p: write_table_csv(table, p),
        RANKED_NORMS_FILE: lambda p: np.savez_compressed(p, **ranked),  # inside the stage's atomic folder
    }
    if summary["masked_max_abs"] != 0.0:
        raise WorkFailed(f"prune: pruned weights are not 0.0 after retraining "
                         f"(largest |w| {summary['masked_max_abs']})")
    summary["dataset"] = data.name
    summary["test_dataset"] = data.test_name if len(data.x_test) else None
    floors = {split: summary.get(f"{key}_floor") for split, (key, _) in BUDGET_SCORES.items()}
    summary["warnings"] = pruning_warnings(summary["kernels_total"], summary["kernels_pruned"], summary["mode"],
                                           {k: v for k, v in floors.items() if v is not None},
                                           summary.get("weights_pruned"))
    result = StageResult("prune", summary["val_accuracy_after"], summary["test_accuracy_after"],
                         summary["kernels_pruned"]["total"], summary["kernels_total"]["total"], summary=summary)
    folder = run.save("pruned", model, result.with_summary(), force=options.force, extras=extras)
    remove_checkpoint(ckpt)
    options.say(prune_table(summary))
    for line in summary["warnings"]:
        options.say(line)
    options.say(f"pruned model saved to {folder}")
    return replace(result, folder=folder, model=model)


def _transfer_result(stage: str, summary: dict, accuracy: float | None, split: str) -> StageResult:
    val, test = (None, accuracy) if split == "test" else (accuracy, None)
    pruned = summary.get("pruned_kernels") or {}
    return StageResult(stage, val, test, sum(pruned.values()) if pruned else None, summary=summary)


def transfer_data(run: Run, cfg: Config, options: Options):
    """The new task's data: transfer.dataset where set, else the run's."""
    t = cfg.transfer
    if t.dataset is None:
        return run.load_data(options.test_data)
    return Run(replace(cfg, data=replace(cfg.data, dataset=t.dataset))).load_data(options.test_data)


def check_transfer(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    """Every decision the transfer makes (edits, what trains, labels that fit), before any work."""
    from ..data import check_fits
    from ..transfer.stage import LABEL_HINT, prepare, select_task

    data = transfer_data(run, cfg, options)
    if cfg.transfer.start_from not in planned:
        model = _transfer_source(run, cfg)
        refuse_nested(model)
        plan = prepare(model, cfg)
        check_fits(plan.model, select_task(data, cfg.transfer.classes, cfg.transfer.per_class), LABEL_HINT)


def _transfer_source(run: Run, cfg: Config):
    start = cfg.transfer.start_from
    try:
        return run.load(start)[0]
    except BadInput as exc:
        hint = f" (or start from the baseline: {option('from_baseline')})" if start == "pruned" else ""
        raise BadInput(f"{exc.raw}{hint}") from None


def transfer(run: Run, cfg: Config, options: Options) -> StageResult:
    """Retrain only the top layers of a saved stage on new data, from cached frozen features."""
    from ..checkpoint import remove_checkpoint
    from ..report.text import transfer_line
    from ..transfer.stage import transfer as transfer_top

    model = _transfer_source(run, cfg)
    data = transfer_data(run, cfg, options)
    ckpt = run.checkpoint_dir("transfer")
    reseed(cfg.seed)
    model, summary = transfer_top(model, data, cfg, verbose=options.verbose, checkpoint_dir=ckpt,
                                  resume=options.resume)
    summary["start_from"] = cfg.transfer.start_from
    if summary["masked_max_abs"] != 0.0:
        raise WorkFailed(f"transfer: pruned weights are not 0.0 after training "
                         f"(largest |w| {summary['masked_max_abs']})")
    result = _transfer_result("transfer", summary, summary["accuracy_after"], summary["accuracy_split"])
    folder = run.save("transfer", model, result.with_summary(), force=options.force)
    remove_checkpoint(ckpt)
    options.say(transfer_line(folder, summary))
    return replace(result, folder=folder, model=model)


def transfer_demo(run: Run, cfg: Config, options: Options) -> StageResult:
    """Digits 0-4 -> 5-9 from 100 images per class, against the same network from scratch."""
    from ..models import save_model
    from ..report.text import demo_line, transfer_line
    from ..transfer.stage import run_demo

    if options.resume:
        raise BadInput("the transfer demo is not checkpointed, so it cannot resume; run it again")
    data = Run(replace(cfg, data=replace(cfg.data, dataset="mnist-5k"))).load_data(options.test_data)
    reseed(cfg.seed)
    model, summary, pretrained = run_demo(cfg, data, verbose=options.verbose, say=options.say)
    d = summary["demo"]
    result = _transfer_result("transfer-demo", summary, d["transfer_accuracy"], d["accuracy_split"])
    extras = {PRETRAINED_FILE: lambda path: save_model(pretrained, path)}
    folder = run.save("transfer-demo", model, result.with_summary(), force=options.force, extras=extras)
    options.say(transfer_line(folder, summary))
    options.say(demo_line(summary))
    return replace(result, folder=folder, model=model)
