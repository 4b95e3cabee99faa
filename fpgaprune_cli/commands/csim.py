"""fpgaprune csim: compile each exported project with g++ and compare it with the QKeras model."""

from __future__ import annotations

from .common import add_run_arguments, config_from_args, run_steps

HELP = (
    "C-simulate the exported projects (g++ via hls4ml) on the whole test set and compare with the "
    "QKeras model: argmax agreement and max output difference in LSBs, written to summary.json"
)


def add_arguments(p) -> None:
    add_run_arguments(p)
    p.add_argument("--images", type=int, metavar="N",
                   help="simulate only the first N images (default: export.csim_images)")


def run(args) -> int:
    return run_steps(args, config_from_args(args), ["csim"], options={"csim_images": args.images})
