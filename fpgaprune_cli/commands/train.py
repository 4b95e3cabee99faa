"""fpgaprune train: train the baseline model and save runs/<name>/baseline/."""

from __future__ import annotations

from .common import add_resume_argument, add_run_arguments, config_from_args, run_steps

HELP = "train the baseline model (runs/<name>/baseline/)"


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_resume_argument(p)


def run(args) -> int:
    return run_steps(args, config_from_args(args), ["baseline"])
