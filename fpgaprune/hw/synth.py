"""Vendor HLS synthesis of an exported project, where the Xilinx tools are installed.

Without them this says which tool is missing (exit 2); `make hls` never needs them.
"""

from __future__ import annotations

import shutil
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


def synthesize(folder: Path, backend: str, *, cosim: bool = False, say=print) -> dict:
    """Build the project with the vendor tool and parse its report (hls4ml.report)."""
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
        hls_model.build(**options)
    except Exception as exc:
        raise WorkFailed(f"{backend} build of {folder} failed: {exc}") from None
    report = parse_vivado_report(str(folder))
    if not report:
        raise WorkFailed(f"{backend} build of {folder} left no report to parse; see the logs in {folder}")
    write_json(folder / SYNTH_REPORT, report)
    print_vivado_report(report)
    return report
