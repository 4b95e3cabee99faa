"""fpgaprune hls (`make hls`): quantize -> export -> C-simulation -> hardware accounting -> report."""

from __future__ import annotations

from .common import add_resume_argument, add_run_arguments, config_from_args, run_steps

HELP = (
    "quantize -> export -> csim -> per-layer accounting table, from runs/<name>/pruned (which must "
    "exist: run `make prune` first, else this exits 2). Reuses an existing quantized stage and "
    "projects exported with the same settings; --force redoes them"
)


def add_arguments(p) -> None:
    add_run_arguments(p)
    p.add_argument("--images", type=int, metavar="N", help="C-simulate only the first N images")
    add_resume_argument(p)


def run(args) -> int:
    cfg = config_from_args(args)
    first = ["reduce"] if cfg.quantize.start_from == "reduced" else []  # reused unless the pruned stage is newer
    return run_steps(args, cfg, [*first, "quantize", "export", "csim", "accounting", "report"],
                     options={"csim_images": args.images, "reuse": True})
