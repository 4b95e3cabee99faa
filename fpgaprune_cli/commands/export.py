"""fpgaprune export: hls4ml projects for the quantized model (hls_projects/<name>/<backend>/)."""

from __future__ import annotations

from .common import add_run_arguments, config_from_args, run_steps

HELP = (
    "convert the quantized model with hls4ml (precision from the QKeras quantizers, bit-exact) into "
    "hls_projects/<name>/<backend>/ with test-bench data; never replaces a project without --force"
)


def add_arguments(p) -> None:
    add_run_arguments(p)


def run(args) -> int:
    return run_steps(args, config_from_args(args), ["export"])
