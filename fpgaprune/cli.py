"""The `fpgaprune` command, importable from the package (`python -m fpgaprune.cli`).

The command itself is `fpgaprune_cli` beside the package, so that `fpgaprune --help` needs no
TensorFlow; see that module.
"""

import sys

from fpgaprune_cli import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
