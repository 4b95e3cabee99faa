"""fpgaprune reduce: remove the channels and units the masks made dead (runs/<name>/reduced/)."""

from __future__ import annotations

from .common import add_run_arguments, config_from_args, run_steps

HELP = (
    "remove what pruning made dead, exactly: filters nothing reads, constant channels folded into the "
    "next layer's bias, Dense units without inputs; outputs checked equal (runs/<name>/reduced/)"
)


def add_arguments(p) -> None:
    add_run_arguments(p)


def run(args) -> int:
    return run_steps(args, config_from_args(args), ["reduce"])
