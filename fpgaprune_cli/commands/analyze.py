"""fpgaprune analyze: rank every conv layer's 2-D kernels by magnitude and propose a mask spec.

Writes runs/<name>/analysis/: kernels.csv / kernels.json (the ranked table), mask_spec.yaml
(edit it, then `fpgaprune prune --spec`), masks.npz and summary.json. The baseline is trained
first if the run has none.
"""

from __future__ import annotations

from .common import add_run_arguments, run_steps
from .selection import add_selection_arguments, prune_config_from_args

HELP = "rank conv kernels by magnitude, propose masks, measure their sensitivity (runs/<name>/analysis/)"


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_selection_arguments(p)
    p.add_argument("--top", type=int, default=15, metavar="N", help="rows of the ranked table to print (default 15)")


def run(args) -> int:
    from fpgaprune.errors import BadInput

    cfg = prune_config_from_args(args, {"mode": "oneshot"})  # analysis proposes once; no rounds
    if args.top < 0:
        raise BadInput(f"--top {args.top}: must be 0 or more")
    return run_steps(args, cfg, ["analyze"], options={"table_rows": args.top})
