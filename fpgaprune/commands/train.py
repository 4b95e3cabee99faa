"""fpgaprune train: train the baseline model and save runs/<name>/baseline/."""

from __future__ import annotations

from ..errors import BadInput
from ..models import build_model
from ..runs import has_stage, load_data, save_stage, stage_dir
from .common import (
    add_resume_argument,
    add_run_arguments,
    checkpoint_for,
    config_from_args,
    verbosity,
)

HELP = "train the baseline model (runs/<name>/baseline/)"


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_resume_argument(p)


def run(args) -> int:
    from ..checkpoint import remove_checkpoint
    from ..process import configure_process, reseed
    from ..training.fit import train_baseline

    cfg = config_from_args(args)
    if has_stage(cfg, "baseline") and not args.force:
        raise BadInput(f"{stage_dir(cfg, 'baseline')} already exists; pass --force to retrain it")
    ckpt_dir = checkpoint_for(cfg, "baseline", args)
    data = load_data(cfg, args.test_data)
    configure_process()
    reseed(cfg.seed)
    model = build_model(cfg.model)
    model, summary = train_baseline(
        model, data, cfg, verbose=verbosity(args), checkpoint_dir=ckpt_dir, resume=args.resume
    )
    folder = save_stage(cfg, "baseline", model, summary, force=args.force)
    remove_checkpoint(ckpt_dir)
    acc = summary["test_accuracy"] if summary["test_accuracy"] is not None else summary["val_accuracy"]
    which = "test" if summary["test_accuracy"] is not None else "validation"
    print(f"baseline saved to {folder}: {which} accuracy {acc:.4f}, {summary['params']} parameters")
    return 0
