"""fpgaprune synth (`make synth`): vendor HLS synthesis of the exported projects, when installed."""

from __future__ import annotations

from .common import add_config_arguments, config_from_args, run_steps

HELP = (
    "run the vendor tools on the exported projects (vivado_hls for Vivado, vitis-run for Vitis, "
    "plus vivado for a board's bitstream) and parse their reports with hls4ml.report; stops with "
    "exit 2 naming the tool when it is not installed"
)


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="the vendor tools' output to <project>/synth.log; one line per project")
    p.add_argument("--cosim", action="store_true", help="also run C/RTL co-simulation")


def run(args) -> int:
    return run_steps(args, config_from_args(args), ["synth"], options={"synth_cosim": args.cosim})
