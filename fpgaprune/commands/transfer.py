"""fpgaprune transfer: retrain only the top of a saved run on new data (runs/<name>/transfer/)."""

from __future__ import annotations

import json
from dataclasses import replace

from ..errors import BadInput
from ..runs import has_stage, load_data, load_stage, save_stage, stage_dir
from .common import (
    add_resume_argument,
    add_run_arguments,
    checkpoint_for,
    config_from_args,
    verbosity,
)

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
    p.add_argument("--from", dest="start_from", choices=["baseline", "pruned"], help="stage to start from (transfer.start_from)")
    p.add_argument("--train-last", type=int, metavar="N", help="train the last N Dense layers (transfer.train_last)")
    p.add_argument("--above", metavar="LAYER", help="train every layer above LAYER (transfer.above)")
    p.add_argument("--new-classes", type=int, metavar="N", help="new output layer for N classes (transfer.new_classes)")
    p.add_argument("--no-cache", action="store_true", help="run the frozen layers every epoch (transfer.cache_features: false)")


def run(args) -> int:
    from ..checkpoint import remove_checkpoint
    from ..transfer.stage import transfer

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
        return _demo(cfg, args)
    t = cfg.transfer
    if has_stage(cfg, "transfer") and not args.force:
        raise BadInput(f"{stage_dir(cfg, 'transfer')} already exists; pass --force to redo the transfer")
    try:
        model, _ = load_stage(cfg, t.start_from)
    except BadInput as exc:
        hint = " (or start from the baseline: --from baseline)" if t.start_from == "pruned" else ""
        raise BadInput(f"{exc}{hint}") from None
    data_cfg = cfg if t.dataset is None else replace(cfg, data=replace(cfg.data, dataset=t.dataset))
    data = load_data(data_cfg, args.test_data)
    ckpt = checkpoint_for(cfg, "transfer", args)
    model, summary = transfer(model, data, cfg, verbose=verbosity(args), checkpoint_dir=ckpt, resume=args.resume)
    summary["start_from"] = t.start_from
    folder = save_stage(cfg, "transfer", model, summary, force=args.force)
    remove_checkpoint(ckpt)
    _report(folder, summary)
    return 0


def _demo(cfg, args) -> int:
    from ..models import save_model
    from ..transfer.stage import run_demo

    if has_stage(cfg, "transfer-demo") and not args.force:
        raise BadInput(f"{stage_dir(cfg, 'transfer-demo')} already exists; pass --force to run the demo again")
    data = load_data(replace(cfg, data=replace(cfg.data, dataset="mnist-5k")), args.test_data)
    model, summary, pretrained = run_demo(cfg, data, verbose=verbosity(args))
    extras = {"pretrained.h5": lambda path: save_model(pretrained, path)}
    folder = save_stage(cfg, "transfer-demo", model, summary, force=args.force, extras=extras)
    _report(folder, summary)
    d = summary["demo"]
    print(
        f"digits 0-4 -> 5-9 from {d['images_per_class']} images per class ({d['eval_images']} "
        f"{d['accuracy_split']} images): transfer {d['transfer_accuracy']:.4f}, same network from "
        f"scratch {d['scratch_accuracy']:.4f} ({d['scratch_epochs']} epochs)"
    )
    return 0


def _report(folder, summary) -> None:
    head = summary["head"]
    how = (
        f"cached features below {head['cut']!r}"
        if summary["cached_features"]
        else f"uncached ({head['uncached_reason']})"
    )
    seconds = sorted(summary["epoch_seconds"])[len(summary["epoch_seconds"]) // 2]
    print(
        f"transfer saved to {folder}: trained {', '.join(summary['trainable_layers'])} from {how}, "
        f"{seconds:.3f} s per epoch; {summary['accuracy_split']} accuracy "
        f"{summary['accuracy_before']:.4f} -> {summary['accuracy_after']:.4f}"
    )
