"""fpgaprune quantize: the pruned model as QKeras, fine-tuned with the masks kept (runs/<name>/quantized/)."""

from __future__ import annotations

from .common import add_resume_argument, add_run_arguments, config_from_args, reduce_first, run_steps

HELP = (
    "quantize the pruned model (dead channels removed) to QKeras (bit widths from the quantize section), fine-tune it "
    "with the masks kept, check every pruned weight quantizes to exactly 0 (runs/<name>/quantized/)"
)


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_resume_argument(p)


def run(args) -> int:
    cfg = config_from_args(args)
    return run_steps(args, cfg, [*reduce_first(cfg), "quantize"])
