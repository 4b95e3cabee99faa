"""fpgaprune export: hls4ml projects for the quantized model (hls_projects/<name>/<backend>/)."""

from __future__ import annotations

from ..errors import BadInput
from .common import add_run_arguments, config_from_args

HELP = (
    "convert the quantized model with hls4ml (precision from the QKeras quantizers, bit-exact) into "
    "hls_projects/<name>/<backend>/ with test-bench data; never replaces a project without --force"
)


def add_arguments(p) -> None:
    add_run_arguments(p)


def testbench_images(cfg, data):
    """The images the project's own test bench runs: the test split, else validation."""
    x = data.x_test if len(data.x_test) else data.x_val
    return x[: cfg.export.testbench_images]


def export_stage(cfg, test_data: str | None, force: bool, reuse: bool = False) -> list:
    """Export every configured backend; with `reuse`, keep projects exported with the same settings.

    All targets are checked before any is written, so a refusal leaves nothing half done.
    """
    from ..hw.export import (
        backend_names,
        check_export_config,
        export_project,
        project_dir,
        same_settings,
    )
    from ..runs import load_data, load_stage, stage_dir

    check_export_config(cfg.export)
    todo, folders = [], []
    for backend in backend_names(cfg.export):
        folder = project_dir(cfg, backend)
        folders.append(folder)
        if folder.exists() and not force:
            if reuse and same_settings(folder, cfg.export):
                print(f"using the existing project {folder} (pass --force to export it again)")
                continue
            hint = "" if not reuse else " with different export settings"
            raise BadInput(f"{folder} already exists{hint}; pass --force to replace it")
        todo.append(backend)
    if not todo:
        return folders
    qmodel, _ = load_stage(cfg, "quantized")
    x_tb = testbench_images(cfg, load_data(cfg, test_data))
    for backend in todo:
        folder = export_project(qmodel, cfg, backend, x_tb, force=force, source=str(stage_dir(cfg, "quantized")))
        print(f"exported {backend} project to {folder} ({len(x_tb)} test-bench images)")
    return folders


def run(args) -> int:
    cfg = config_from_args(args)
    export_stage(cfg, args.test_data, args.force)
    return 0
