"""fpgaprune transfer: retrain only the top of a saved run on new data (runs/<name>/transfer/)."""

from __future__ import annotations

import json

from .common import add_resume_argument, add_run_arguments, config_from_args, run_steps

HELP = "retrain only the last Dense layers of a saved run on new data, from cached features"

# CLI flag -> transfer config key (the flags are shortcuts for --set transfer.KEY=VALUE).
SHORTCUTS = {
    "start_from": "start_from",
    "train_last": "train_last",
    "above": "above",
    "new_classes": "new_classes",
}


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_resume_argument(p)
    p.add_argument(
        "--demo",
        action="store_true",
        help="built-in demonstration: pretrain on MNIST digits 0-4, transfer to 5-9 with at most "
        "100 images per class, compare with training from scratch (runs/<name>/transfer-demo/)",
    )
    p.add_argument("--from", dest="start_from", choices=["baseline", "pruned"],
                   help="stage to start from (transfer.start_from)")
    p.add_argument("--train-last", type=int, metavar="N", help="train the last N Dense layers (transfer.train_last)")
    p.add_argument("--above", metavar="LAYER", help="train every layer above LAYER (transfer.above)")
    p.add_argument("--new-classes", type=int, metavar="N", help="new output layer for N classes (transfer.new_classes)")
    p.add_argument("--no-cache", action="store_true",
                   help="run the frozen layers every epoch (transfer.cache_features: false)")


def run(args) -> int:
    from fpgaprune.errors import BadInput

    for flag, key in SHORTCUTS.items():
        value = getattr(args, flag)
        if value is not None:
            args.overrides.append(f"transfer.{key}={json.dumps(value)}")
    if args.no_cache:
        args.overrides.append("transfer.cache_features=false")
    cfg = config_from_args(args)
    if args.demo:
        if args.resume:
            raise BadInput("--resume: the demo is not checkpointed; run it again (with --force)")
        return run_steps(args, cfg, ["transfer-demo"])
    return run_steps(args, cfg, ["transfer", "report"])
