"""fpgaprune prune: zero the chosen 2-D kernels and retrain with them locked at exactly 0.0.

Default: gradual mode from the config's prune section (prune more, retrain, until the
validation accuracy budget would break). `--spec FILE` retrains once with a hand-written mask
spec; a selection flag (--fraction, --threshold, --global-fraction) also means one shot.
Writes runs/<name>/pruned/: model.h5, mask_spec.yaml, masks.npz, kernels.csv, summary.json.
"""

from __future__ import annotations

from ..errors import BadInput
from ..runs import has_stage, save_stage, stage_dir
from .analyze import (
    add_selection_arguments,
    checked_inputs,
    load_or_train_baseline,
    prune_config_from_args,
    write_table_csv,
)
from .common import add_resume_argument, add_run_arguments, checkpoint_for, verbosity

HELP = "prune conv kernels and retrain with them locked at 0.0 (runs/<name>/pruned/)"


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_resume_argument(p)
    add_selection_arguments(p)
    p.add_argument("--mode", choices=("oneshot", "gradual"), help="default: prune.mode, or oneshot with a selection flag")
    p.add_argument("--epochs", type=int, metavar="N", help="retraining epochs (per round in gradual mode)")


def run(args) -> int:
    from ..analysis.kernels import analyze, ranked_table
    from ..checkpoint import remove_checkpoint
    from ..masks import empty_masks, masks_of, save_masks
    from ..spec import masks_to_spec, write_mask_spec
    from ..training.retrain import prune_gradual, prune_oneshot

    explicit = any(getattr(args, k) is not None for k in ("threshold", "fraction", "global_fraction", "spec"))
    extra = {}
    if args.mode or explicit:
        extra["mode"] = args.mode or "oneshot"
    if args.epochs is not None:
        extra["epochs"] = args.epochs
    cfg = prune_config_from_args(args, extra)
    folder = stage_dir(cfg, "pruned")
    if folder.exists() and not args.force:
        raise BadInput(f"{folder} already exists; pass --force to replace it")
    spec_masks, data = checked_inputs(cfg, args)
    if cfg.prune.mode == "gradual" and len(data.x_val) == 0:
        raise BadInput("data.validation_fraction: gradual pruning needs a validation split to measure its budget")

    ckpt = checkpoint_for(cfg, "pruned", args, before=() if has_stage(cfg, "baseline") else ("baseline",))
    verbose = verbosity(args)
    baseline, _ = load_or_train_baseline(cfg, data, verbose, resume=args.resume)
    analysis = analyze(baseline, data, cfg.prune, spec_masks=spec_masks, measure=False)
    if cfg.prune.mode == "oneshot":
        model, summary = prune_oneshot(
            baseline, analysis.masks, data, cfg, verbose=verbose, checkpoint_dir=ckpt, resume=args.resume
        )
    else:
        model, summary = prune_gradual(
            baseline, data, cfg, progress=not args.quiet, checkpoint_dir=ckpt, resume=args.resume
        )
    masks = {**empty_masks(model), **masks_of(model)}
    table = ranked_table(analysis.norms, masks)
    extras = {
        "mask_spec.yaml": lambda p: write_mask_spec(masks_to_spec(masks), p),
        "masks.npz": lambda p: save_masks(masks, p),
        "kernels.csv": lambda p: write_table_csv(table, p),
    }
    summary["dataset"] = data.name
    summary["test_dataset"] = data.test_name if len(data.x_test) else None
    folder = save_stage(cfg, "pruned", model, summary, force=args.force, extras=extras)
    remove_checkpoint(ckpt)
    print(format_summary(summary))
    print(f"pruned model saved to {folder}")
    from ..report.html import write_report

    print(f"report: {write_report(cfg)}")
    return 0


def format_summary(s: dict) -> str:
    """The per-layer table `make prune` ends with: kernels, MACs and accuracy before/after."""
    head = f"{'layer':<10} {'kernels':>8} {'pruned':>7} {'kept':>6} {'MACs before':>12} {'MACs after':>12}"
    lines = [head, "-" * len(head)]
    for name, before in s["macs_before"].items():
        if name == "total":
            continue
        total = s["kernels_total"].get(name)
        pruned = s["kernels_pruned"].get(name)
        k = (f"{total:>8} {pruned:>7} {total - pruned:>6}") if total is not None else f"{'-':>8} {'-':>7} {'-':>6}"
        lines.append(f"{name:<10} {k} {before:>12,} {s['macs_after'][name]:>12,}")
    tk, tp = s["kernels_total"]["total"], s["kernels_pruned"]["total"]
    mb, ma = s["macs_before"]["total"], s["macs_after"]["total"]
    lines.append("-" * len(head))
    lines.append(f"{'total':<10} {tk:>8} {tp:>7} {tk - tp:>6} {mb:>12,} {ma:>12,}  ({100 * (1 - ma / mb):.1f}% fewer MACs)")
    for split in ("test", "val"):
        before, after = s[f"{split}_accuracy_baseline"], s[f"{split}_accuracy_after"]
        if before is not None:
            name = "test accuracy" if split == "test" else "validation accuracy"
            lines.append(f"{name}: {before:.4f} -> {after:.4f} ({100 * (after - before):+.2f} points)")
    lines.append(f"largest |w| over masked weights: {s['masked_max_abs']}")
    return "\n".join(lines)
