"""fpgaprune synth (`make synth`): vendor HLS synthesis of the exported projects, when installed."""

from __future__ import annotations

import shutil

from .common import add_config_arguments, config_from_args

HELP = (
    "run the vendor tools on the exported projects (vivado_hls for Vivado, vitis-run for Vitis, "
    "plus vivado for a board's bitstream) and parse their reports with hls4ml.report; stops with "
    "exit 2 naming the tool when it is not installed"
)

# hls4ml 1.3: VivadoBackend.build calls vivado_hls, VitisBackend.build calls vitis-run (Vitis
# 2023.1+), VivadoAcceleratorBackend.build(bitfile=True) also calls vivado.
TOOLS = {"Vivado": ["vivado_hls"], "VivadoAccelerator": ["vivado_hls", "vivado"], "Vitis": ["vitis-run"]}


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--cosim", action="store_true", help="also run C/RTL co-simulation")


def missing_tools(backends: list[str]) -> list[str]:
    return [tool for b in backends for tool in TOOLS[b] if shutil.which(tool) is None]


def run(args) -> int:
    from ..errors import BadInput, WorkFailed
    from ..hw.export import backend_names, check_export_config, project_dir, read_manifest
    from ..io import write_json

    cfg = config_from_args(args)
    check_export_config(cfg.export)
    backends = backend_names(cfg.export)
    missing = missing_tools(backends)
    if missing:
        raise BadInput(
            f"{', '.join(missing)} not found on PATH: `make synth` needs the Xilinx tools "
            f"(source settings64.sh of Vivado/Vitis HLS); `make hls` runs without them"
        )
    from hls4ml.report import parse_vivado_report, print_vivado_report

    from ..hw.csim import load_hls_model

    for backend in backends:
        folder = project_dir(cfg, backend).resolve()
        read_manifest(folder)
        hls_model = load_hls_model(folder, folder)
        options = {"csim": True, "synth": True, "cosim": args.cosim, "export": backend == "VivadoAccelerator"}
        if backend == "VivadoAccelerator":
            options["bitfile"] = True
        try:
            hls_model.build(**options)
        except Exception as exc:
            raise WorkFailed(f"{backend} build of {folder} failed: {exc}") from None
        report = parse_vivado_report(str(folder))
        if not report:
            raise WorkFailed(f"{backend} build of {folder} left no report to parse; see the logs in {folder}")
        write_json(folder / "synth_report.json", report)
        print_vivado_report(report)
    return 0
