"""fpgaprune analyze: rank every conv layer's 2-D kernels by magnitude and propose a mask spec.

Writes runs/<name>/analysis/: kernels.csv / kernels.json (the ranked table), mask_spec.yaml
(edit it, then `fpgaprune prune --spec`), masks.npz and summary.json (the proposal's kernel and
MAC counts and its accuracy with the kernels zeroed and no retraining). The baseline is
trained first if the run has none. Also home of the helpers `prune` shares with it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..config import Config, config_to_dict, parse_config
from ..errors import BadInput
from ..runs import has_stage, load_data, load_stage, save_stage, stage_dir
from .common import add_run_arguments, config_from_args, verbosity

HELP = "rank conv kernels by magnitude, propose masks, measure their sensitivity (runs/<name>/analysis/)"

# flag -> (prune.select, key holding the value)
_SELECT_FLAGS = {
    "threshold": ("threshold", "threshold"),
    "fraction": ("fraction", "fraction"),
    "global_fraction": ("global_fraction", "fraction"),
    "spec": ("spec", "spec"),
}


def add_selection_arguments(p) -> None:
    """Flags that override the config's prune section (shared with `prune`)."""
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="conv layers to prune (default: prune.layers, else all)")
    p.add_argument("--norm", choices=("l1", "l2", "max"), help="kernel magnitude (default: prune.norm)")
    p.add_argument("--normalize", action="store_true", default=None, help="divide magnitudes by each layer's mean")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, metavar="X", help="prune kernels with magnitude below X")
    group.add_argument("--fraction", type=float, metavar="F", help="prune the smallest fraction F of each layer")
    group.add_argument("--global-fraction", type=float, metavar="F", help="prune the smallest fraction F of all kernels together")
    group.add_argument("--spec", metavar="FILE", help="prune exactly the kernels of a mask spec (YAML) or masks (.npz)")


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_selection_arguments(p)
    p.add_argument("--top", type=int, default=15, metavar="N", help="rows of the ranked table to print (default 15)")


def prune_config_from_args(args, extra: dict | None = None) -> Config:
    """The config with --set applied, then the selection flags (validated again)."""
    cfg = config_from_args(args)
    data = config_to_dict(cfg)
    prune = data["prune"]
    flag = None
    for name, (select, key) in _SELECT_FLAGS.items():
        value = getattr(args, name, None)
        if value is not None:
            flag = f"--{name.replace('_', '-')}"
            prune["select"], prune[key] = select, value
    if args.layers is not None:
        prune["layers"] = args.layers
    if args.norm is not None:
        prune["norm"] = args.norm
    if args.normalize:
        prune["normalize"] = True
    prune.update(extra or {})
    try:
        return parse_config(data)
    except BadInput as exc:
        raise BadInput(f"{flag}: {exc}" if flag else str(exc)) from None


def model_for_checks(cfg: Config):
    """The saved baseline, or the untrained model: enough to check masks before any work."""
    from ..models import build_model

    return load_stage(cfg, "baseline")[0] if has_stage(cfg, "baseline") else build_model(cfg.model)


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


def checked_inputs(cfg: Config, args):
    """Everything a user can get wrong, checked before anything is trained or written."""
    from ..analysis.kernels import check_layers

    model = model_for_checks(cfg)
    spec_masks = masks_from_file(cfg.prune.spec, model) if cfg.prune.select == "spec" else None
    check_layers(model, cfg.prune.layers)
    data = load_data(cfg, args.test_data)
    return spec_masks, data


def load_or_train_baseline(cfg: Config, data, verbose: int, resume: bool = False):
    """The run's baseline model, trained and saved (runs/<name>/baseline/) if missing.

    The training checkpoints every epoch as `fpgaprune train` does; `resume` continues it.
    """
    if has_stage(cfg, "baseline"):
        return load_stage(cfg, "baseline")
    from ..checkpoint import remove_checkpoint
    from ..models import build_model
    from ..process import configure_process, reseed
    from ..runs import checkpoint_dir
    from ..training.fit import train_baseline

    ckpt = checkpoint_dir(cfg, "baseline")
    configure_process()
    reseed(cfg.seed)  # before building, so the initial weights are seeded too
    model, summary = train_baseline(
        build_model(cfg.model), data, cfg, verbose=verbose, checkpoint_dir=ckpt, resume=resume
    )
    folder = save_stage(cfg, "baseline", model, summary)
    remove_checkpoint(ckpt)
    if verbose:
        print(f"baseline trained and saved to {folder}")
    return model, summary


def write_table_csv(table: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["rank"])
        writer.writeheader()
        writer.writerows(table)


def run(args) -> int:
    from ..analysis.kernels import analyze
    from ..masks import save_masks
    from ..spec import masks_to_spec, write_mask_spec

    cfg = prune_config_from_args(args, {"mode": "oneshot"})  # analysis proposes once; no rounds
    if args.top < 0:
        raise BadInput(f"--top {args.top}: must be 0 or more")
    if stage_dir(cfg, "analysis").exists() and not args.force:
        raise BadInput(f"{stage_dir(cfg, 'analysis')} already exists; pass --force to replace it")
    spec_masks, data = checked_inputs(cfg, args)
    model, _ = load_or_train_baseline(cfg, data, verbosity(args))
    result = analyze(model, data, cfg.prune, spec_masks=spec_masks, progress=not args.quiet)
    extras = {
        "kernels.csv": lambda p: write_table_csv(result.table, p),
        "kernels.json": lambda p: p.write_text(json.dumps(result.table) + "\n"),
        "mask_spec.yaml": lambda p: write_mask_spec(masks_to_spec(result.masks), p),
        "masks.npz": lambda p: save_masks(result.masks, p),
    }
    folder = save_stage(cfg, "analysis", None, result.summary, force=args.force, extras=extras)
    print(format_analysis(result, args.top))
    print(f"analysis saved to {folder} (edit mask_spec.yaml, then `fpgaprune prune --spec {folder / 'mask_spec.yaml'}`)")
    return 0


def format_analysis(result, top: int) -> str:
    s = result.summary
    lines = [f"smallest {min(top, len(result.table))} of {len(result.table)} kernels by {s['norm']} magnitude:"]
    lines.append(f"{'rank':>6}  {'layer':<10} {'cin':>4} {'cout':>4}  {'magnitude':>10}  pruned")
    for row in result.table[:top]:
        lines.append(
            f"{row['rank']:>6}  {row['layer']:<10} {row['cin']:>4} {row['cout']:>4}  {row['magnitude']:>10.4g}  {'yes' if row['pruned'] else ''}"
        )
    lines.append(f"proposal ({s['select']}):")
    for name, row in s["kernels"].items():
        if name != "total":
            lines.append(
                f"  {name:<10} {row['pruned']:>5} of {row['kernels']:>5} kernels pruned; "
                f"MACs {s['macs_before'][name]:,} -> {s['macs_after'][name]:,}"
            )
    if "accuracy_zeroed" in s:
        for split in ("val_accuracy", "test_accuracy"):
            before, after = s["accuracy_unpruned"][split], s["accuracy_zeroed"][split]
            if before is not None:
                lines.append(f"  {split.replace('_', ' ')}: {before:.4f} -> {after:.4f} with the kernels zeroed, before retraining")
    if s.get("sensitivity_sweep"):
        lines.append("sensitivity (validation accuracy with a layer's smallest kernels zeroed, no retraining):")
        for name, points in s["sensitivity_sweep"].items():
            lines.append(f"  {name:<10} " + ", ".join(f"{p['fraction']:.0%}: {p['val_accuracy']:.4f}" for p in points))
    return "\n".join(lines)
