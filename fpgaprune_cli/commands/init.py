"""fpgaprune init [PATH]: write a copy of the packaged reference config to edit.

Without --config every command runs the packaged reference, so the experiment is the same in
any folder; a copy is where your own changes go (`fpgaprune prune --config mnist_cnn.yaml`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .common import packaged_config_path

HELP = "write a copy of the packaged reference config to edit (default ./mnist_cnn.yaml)"


def add_arguments(p) -> None:
    p.add_argument("path", nargs="?", default="mnist_cnn.yaml", metavar="PATH",
                   help="where to write it (default mnist_cnn.yaml); an existing file is never replaced")


def run(args) -> int:
    from fpgaprune.errors import BadInput

    target = Path(args.path)
    if target.is_dir():
        target = target / "mnist_cnn.yaml"
    if target.exists():
        raise BadInput(f"{target}: already exists; not replaced (remove it or name another PATH)")
    if not target.parent.is_dir():
        raise BadInput(f"{target.parent}: no such folder")
    shutil.copyfile(packaged_config_path(), target)
    print(f"wrote {target}: the reference config; run with --config {target}")
    return 0
