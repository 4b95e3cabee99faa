"""Arguments and config handling shared by every command."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import yaml

from ..config import Config, load_config, parse_config
from ..errors import BadInput

DEFAULT_CONFIG = "configs/mnist_cnn.yaml"


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=2 (repeatable)",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--test-data", metavar="DATASET", help="dataset whose test split gives the accuracy figures, e.g. mnist-t10k:PATH")
    p.add_argument("--force", action="store_true", help="replace this stage's existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--allow-custom-code", action="store_true", help="allow loading models with Lambda layers or custom classes")


def apply_override(data: dict, assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise BadInput(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise BadInput(f"--set {assignment!r}: the value is not valid YAML") from None
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise BadInput(f"--set {assignment!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def config_from_args(args) -> Config:
    """Load --config (or the built-in defaults when the default file is absent), apply --set."""
    path = Path(args.config)
    if not path.exists() and args.config == DEFAULT_CONFIG:
        data: dict = {}
    else:
        cfg = load_config(path)  # validates the file alone first, so errors name the file
        from ..config import config_to_dict

        data = config_to_dict(cfg)
    for assignment in args.overrides:
        apply_override(data, assignment)
    try:
        cfg = parse_config(data)
    except BadInput as exc:
        raise BadInput(f"--set: {exc}") from None if args.overrides else exc
    if getattr(args, "allow_custom_code", False):
        cfg = replace(cfg, model=replace(cfg.model, allow_custom_code=True))
    return cfg


def verbosity(args) -> int:
    """Keras verbosity: progress bars on a terminal, one line per epoch in logs, none if --quiet."""
    import sys

    if getattr(args, "quiet", False):
        return 0
    return 1 if sys.stdout.isatty() else 2


def add_resume_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch checkpoint")


def checkpoint_for(cfg: Config, stage: str, args, before: tuple[str, ...] = ()) -> Path:
    """The stage's checkpoint folder, after checking --resume/--force against what is there.

    `before`: missing stages the command trains first (`prune` trains the baseline if there is
    none); their checkpoints count as the same interrupted run.
    """
    from ..checkpoint import remove_checkpoint
    from ..runs import checkpoint_dir

    folders = [checkpoint_dir(cfg, name) for name in (stage, *before)]
    resume, force = getattr(args, "resume", False), getattr(args, "force", False)
    interrupted = any(f.is_dir() and any(f.rglob("state.json")) for f in folders)  # a stage may keep several
    if interrupted and not (resume or force):
        raise BadInput(f"{folders[0]} holds an interrupted run; pass --resume to continue it or --force to start over")
    if resume and not interrupted:
        raise BadInput(f"{folders[0]}: no interrupted run to resume; run without --resume")
    if force and not resume:
        for folder in folders:
            remove_checkpoint(folder)
    return folders[0]
