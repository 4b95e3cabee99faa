"""fpgaprune train: train the baseline model and save runs/<name>/baseline/."""

from __future__ import annotations

from ..errors import BadInput
from ..models import build_model
from ..runs import has_stage, load_data, save_stage, stage_dir
from .common import add_run_arguments, config_from_args, verbosity

HELP = "train the baseline model (runs/<name>/baseline/)"


def add_arguments(p) -> None:
    add_run_arguments(p)


def run(args) -> int:
    from ..train import train_baseline

    cfg = config_from_args(args)
    if has_stage(cfg, "baseline") and not args.force:
        raise BadInput(f"{stage_dir(cfg, 'baseline')} already exists; pass --force to retrain it")
    data = load_data(cfg, args.test_data)
    model = build_model(cfg.model)
    model, summary = train_baseline(model, data, cfg, verbose=verbosity(args))
    folder = save_stage(cfg, "baseline", model, summary, force=args.force)
    acc = summary["test_accuracy"] if summary["test_accuracy"] is not None else summary["val_accuracy"]
    which = "test" if summary["test_accuracy"] is not None else "validation"
    print(f"baseline saved to {folder}: {which} accuracy {acc:.4f}, {summary['params']} parameters")
    return 0
