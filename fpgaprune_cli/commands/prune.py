"""fpgaprune prune: zero the chosen 2-D kernels and retrain with them locked at exactly 0.0.

Default: gradual mode from the config's prune section (prune more, retrain, until the
validation accuracy budget would break). `--spec FILE` retrains once with a hand-written mask
spec; a selection flag (--fraction, --threshold, --global-fraction) also means one shot.
Writes runs/<name>/pruned/, removes the channels the masks made dead (runs/<name>/reduced/)
and refreshes the report.
"""

from __future__ import annotations

from .common import add_resume_argument, add_run_arguments, run_steps
from .selection import add_selection_arguments, explicit_selection, prune_config_from_args

HELP = "prune conv kernels and retrain with them locked at 0.0 (runs/<name>/pruned/)"


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_resume_argument(p)
    add_selection_arguments(p)
    p.add_argument("--mode", choices=("oneshot", "gradual"),
                   help="default: prune.mode, or oneshot with a selection flag")
    p.add_argument("--epochs", type=int, metavar="N", help="retraining epochs (per round in gradual mode)")


def run(args) -> int:
    extra = {}
    if args.mode or explicit_selection(args):
        extra["mode"] = args.mode or "oneshot"
    if args.epochs is not None:
        extra["epochs"] = args.epochs
    return run_steps(args, prune_config_from_args(args, extra), ["prune", "reduce", "report"])
