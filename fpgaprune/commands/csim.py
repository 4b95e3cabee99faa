"""fpgaprune csim: compile each exported project with g++ and compare it with the QKeras model."""

from __future__ import annotations

from .common import add_run_arguments, config_from_args

HELP = (
    "C-simulate the exported projects (g++ via hls4ml) on the whole test set and compare with the "
    "QKeras model: argmax agreement and max output difference in LSBs, written to summary.json"
)


def add_arguments(p) -> None:
    add_run_arguments(p)
    p.add_argument("--images", type=int, metavar="N", help="simulate only the first N images (default: export.csim_images)")


def csim_stage(cfg, test_data: str | None, images: int | None = None, progress: bool = False) -> list[dict]:
    """Run the C-simulation of every exported backend; returns their summaries."""
    from ..errors import BadInput
    from ..hw.csim import describe, require_gxx, run_csim
    from ..hw.export import backend_names, project_dir, read_manifest
    from ..runs import load_data, load_stage

    require_gxx()
    folders = [project_dir(cfg, b) for b in backend_names(cfg.export)]
    for folder in folders:
        read_manifest(folder)  # exits 2 with a hint when the project is missing
    if images is not None and images < 1:
        raise BadInput(f"--images: expected a positive number, got {images}")
    qmodel, _ = load_stage(cfg, "quantized")
    data = load_data(cfg, test_data)
    split = "test" if len(data.x_test) else "validation"
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
    limit = images or cfg.export.csim_images
    x, y = x[:limit], y[:limit]
    summaries = []
    for folder in folders:
        summary = run_csim(folder, qmodel, x, y, workers=cfg.export.csim_workers, progress=progress, split=split)
        print(f"{folder}: {describe(summary)}")
        for row in summary["trace"]:
            if row["differs"]:
                print(f"  differs at {row['layer']} ({row['precision']}): max {row['max_diff_lsb']:g} LSB")
        summaries.append(summary)
    return summaries


def run(args) -> int:
    cfg = config_from_args(args)
    csim_stage(cfg, args.test_data, args.images, progress=not args.quiet)
    return 0
