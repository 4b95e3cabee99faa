"""fpgaprune report [RUN]: write runs/<name>/report/index.html for a run."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (
    add_config_arguments,
    add_quiet_argument,
    apply_override,
    config_from_args,
    run_steps,
)

HELP = ("write an HTML report of a run: config, analyzer table, plots, accuracy per stage, C-sim, hardware "
        "(runs/<name>/report/)")


def add_arguments(p) -> None:
    p.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help="a run name (looked up in the config's runs_dir) or a run folder such as runs/mnist_cnn "
        "(default: the config's run)",
    )
    add_config_arguments(p)
    p.add_argument("--layer", help="conv layer whose kernels the kernel grid shows (default: the most pruned)")
    p.add_argument("--channel", type=int,
                   help="output channel the kernel grid shows (default: the one nearest half pruned)")
    add_quiet_argument(p)


def resolve_run(args):
    """The config of the run RUN names: the one its stages saved, with --set applied on top."""
    from fpgaprune.config import config_to_dict, parse_config
    from fpgaprune.errors import BadInput, one_line, run_step
    from fpgaprune.report.data import saved_config

    base = config_from_args(args)
    runs_dir, name = Path(base.runs_dir), base.name
    if args.run:
        given = Path(args.run)
        if given.is_dir() or len(given.parts) > 1:
            runs_dir, name = given.resolve().parent, given.resolve().name
        else:
            name = args.run
    run_dir = runs_dir / name
    if not run_dir.is_dir():
        known = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
        hint = f" (runs in {runs_dir}: {', '.join(known)})" if known else ""
        raise BadInput(f"{run_dir}: no such run{hint}; {run_step('baseline')}")
    try:
        saved = saved_config(run_dir)
    except BadInput as exc:  # e.g. a run made by an older fpgaprune whose config keys changed
        shown = args.config or "the packaged reference config"
        print(f"fpgaprune: note: {one_line(exc)}; showing {shown} instead", file=sys.stderr)
        saved = None
    data = config_to_dict(saved if saved is not None else base)
    data["name"], data["runs_dir"] = name, str(runs_dir)
    for assignment in args.overrides:
        apply_override(data, assignment)
    try:
        return parse_config(data)
    except BadInput as exc:
        raise BadInput(f"{run_dir}: {exc}") from None


def run(args) -> int:
    return run_steps(args, resolve_run(args), ["report"],
                     options={"report_layer": args.layer, "report_channel": args.channel})
