"""Arguments, config and flow options shared by every command (no TensorFlow imported here)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path

PACKAGED_LINE = "config: the packaged reference (fpgaprune init writes a copy to edit)"


def packaged_config_path() -> Path:
    """The reference YAML inside the installed package, found without importing it (no TensorFlow)."""
    return Path(find_spec("fpgaprune").origin).parent / "configs" / "mnist_cnn.yaml"


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML config (default: the packaged reference; `fpgaprune init` writes a copy)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=2 (repeatable)",
    )


def add_quiet_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-epoch lines")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--test-data", metavar="DATASET",
                   help="dataset whose test split gives the accuracy figures, e.g. mnist-t10k:PATH")
    p.add_argument("--force", action="store_true", help="replace this stage's existing output")
    add_quiet_argument(p)
    p.add_argument("--allow-custom-code", action="store_true",
                   help="allow loading models with Lambda layers or custom classes")


def add_resume_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch checkpoint")


def apply_override(data: dict, assignment: str) -> None:
    import yaml

    from fpgaprune.errors import BadInput
    from fpgaprune.yamlio import load_yaml

    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise BadInput(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.epochs=2")
    try:
        value = load_yaml(raw)
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


def config_data(args) -> dict:
    """--config as a dict (the packaged reference without one, said in one line), --set applied."""
    from fpgaprune.config import config_to_dict, load_config

    if args.config is None:
        if not getattr(args, "quiet", False):
            print(PACKAGED_LINE)
        path = packaged_config_path()
    else:
        path = Path(args.config)
    data = config_to_dict(load_config(path))
    for assignment in args.overrides:
        apply_override(data, assignment)
    return data


def parse_with_flags(data: dict, args, flag: str | None = None):
    """The typed config; errors name --set (or the flag) that made the value wrong."""
    from fpgaprune.config import parse_config
    from fpgaprune.errors import BadInput

    try:
        cfg = parse_config(data)
    except BadInput as exc:
        where = flag or ("--set" if args.overrides else None)
        raise BadInput(f"{where}: {exc.raw}" if where else exc.raw) from None
    if getattr(args, "allow_custom_code", False):
        cfg = replace(cfg, model=replace(cfg.model, allow_custom_code=True))
    return cfg


def config_from_args(args):
    """Load --config, apply --set (validated once, into the typed config)."""
    return parse_with_flags(config_data(args), args)


def verbosity(args) -> int:
    """Keras verbosity: progress bars on a terminal, one line per epoch in logs, none if --quiet."""
    if getattr(args, "quiet", False):
        return 0
    return 1 if sys.stdout.isatty() else 2


def say_cli(line: str) -> None:
    """Print a step's line with the CLI's flag names."""
    from fpgaprune.errors import render

    print(render(line, cli=True))


def options_from_args(args, **extra):
    """The flow's options from the common flags."""
    from fpgaprune.flow import Options

    return Options(
        force=getattr(args, "force", False),
        resume=getattr(args, "resume", False),
        test_data=getattr(args, "test_data", None),
        verbose=verbosity(args),
        progress=not getattr(args, "quiet", False),
        say=say_cli,
        **extra,
    )


def reduce_first(cfg) -> list[str]:
    """["reduce"] when quantize starts from a reduced stage that is missing or older than the pruned one."""
    from fpgaprune.run import Run

    if cfg.quantize.start_from != "reduced":
        return []
    run = Run(cfg)
    fresh = run.has("reduced") and run.has("pruned") and not run.is_older("reduced", "pruned")
    return [] if fresh else ["reduce"]


def run_steps(args, cfg, steps: list[str] | None = None, **extra) -> int:
    """Run flow steps with the options the flags give; every command ends here."""
    from fpgaprune.flow import run_flow

    run_flow(cfg, steps=steps, options=options_from_args(args, **extra.pop("options", {})), **extra)
    return 0
