"""Vendor HLS synthesis of an exported project, where the Xilinx tools are installed.

Without them this says which tool is missing (exit 2); `make hls` never needs them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

from ..errors import BadInput, WorkFailed
from ..io import write_json
from ..run import SYNTH_REPORT

# hls4ml 1.3: VivadoBackend.build calls vivado_hls, VitisBackend.build calls vitis-run (Vitis
# 2023.1+), VivadoAcceleratorBackend.build(bitfile=True) also calls vivado.
TOOLS = {"Vivado": ["vivado_hls"], "VivadoAccelerator": ["vivado_hls", "vivado"], "Vitis": ["vitis-run"]}


def missing_tools(backends: list[str]) -> list[str]:
    return [tool for b in backends for tool in TOOLS[b] if shutil.which(tool) is None]


def require_tools(backends: list[str]) -> None:
    missing = missing_tools(backends)
    if missing:
        raise BadInput(
            f"{', '.join(missing)} not found on PATH: `make synth` needs the Xilinx tools "
            f"(source settings64.sh of Vivado/Vitis HLS); `make hls` runs without them"
        )


# With --quiet the vendor tools' own output goes here, in the project, not to the terminal.
SYNTH_LOG = "synth.log"


@contextlib.contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr file descriptors (and so the vendor tools' children,
    which hls4ml starts with os.system) to `path` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def synthesize(folder: Path, backend: str, *, cosim: bool = False, say=print, quiet: bool = False) -> dict:
    """Build the project with the vendor tool and parse its report (hls4ml.report).

    quiet: the vendor log goes to <project>/synth.log and one line says where the report is.
    """
    from hls4ml.report import parse_vivado_report, print_vivado_report

    from .csim import load_hls_model
    from .export import read_manifest

    folder = folder.resolve()
    read_manifest(folder)
    hls_model = load_hls_model(folder, folder)
    options = {"csim": True, "synth": True, "cosim": cosim, "export": backend == "VivadoAccelerator"}
    if backend == "VivadoAccelerator":
        options["bitfile"] = True
    try:
        with output_to(folder / SYNTH_LOG) if quiet else contextlib.nullcontext():
            hls_model.build(**options)
    except Exception as exc:
        raise WorkFailed(f"{backend} build of {folder} failed: {exc}") from None
    report = parse_vivado_report(str(folder))
    if not report:
        raise WorkFailed(f"{backend} build of {folder} left no report to parse; see the logs in {folder}")
    write_json(folder / SYNTH_REPORT, report)
    if quiet:
        say(f"synth: {backend}: report in {folder / SYNTH_REPORT} (vendor log: {folder / SYNTH_LOG})")
    else:
        print_vivado_report(report)
    return report
