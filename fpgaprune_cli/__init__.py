"""The `fpgaprune` command: a thin shell over the flow, one module per command.

It lives beside the `fpgaprune` package, not inside it: importing `fpgaprune` registers its
Keras classes (so saved stage models load in plain Keras), which imports TensorFlow, and
`--help` and `--version` should answer at once. A command imports the flow only when it runs.

Exit codes: 0 success, 1 failure during the work, 2 bad input (config, mask spec, model file,
data), with a one-line message naming the problem, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command -> module in fpgaprune_cli.commands (each defines HELP, add_arguments, run).
COMMANDS = {
    "init": "init",
    "train": "train",
    "analyze": "analyze",
    "prune": "prune",
    "reduce": "reduce",
    "report": "report",
    "quantize": "quantize",
    "export": "export",
    "csim": "csim",
    "hls": "hls",
    "synth": "synth",
    "estimate": "estimate",
    "transfer": "transfer",
    "sweep": "sweep",
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("fpgaprune")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpgaprune",
        description="Prune near-zero conv kernels, retrain with them locked at 0.0, quantize "
        "and export to FPGA HLS projects.",
    )
    parser.add_argument("--version", action="version", version=f"fpgaprune {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"fpgaprune_cli.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before TensorFlow is imported: its C++ import-time "Unable to register" lines are E-level.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)  # --help and --version end here, before any import below
    from fpgaprune.errors import FpgapruneError, storage_fault
    from fpgaprune.process import quiet_tensorflow

    quiet_tensorflow()
    try:
        code = args._run(args)
    except FpgapruneError as exc:
        print(f"fpgaprune: error: {exc.for_cli()}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full disk or read-only folder met outside the flow's own guard
        fault = storage_fault(exc)
        if fault is None:
            raise
        print(f"fpgaprune: error: {fault.for_cli()}", file=sys.stderr)
        return fault.exit_code
    except KeyboardInterrupt:
        print("fpgaprune: interrupted; completed stages and checkpoints are kept", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
