"""fpgaprune hls (`make hls`): quantize -> export -> C-simulation -> hardware accounting."""

from __future__ import annotations

from .common import add_resume_argument, add_run_arguments, config_from_args, verbosity

HELP = (
    "quantize -> export -> csim -> per-layer accounting table, from runs/<name>/pruned (which must "
    "exist: run `make prune` first, else this exits 2). Reuses an existing quantized stage and "
    "projects exported with the same settings; --force redoes them"
)


def add_arguments(p) -> None:
    add_run_arguments(p)
    p.add_argument("--images", type=int, metavar="N", help="C-simulate only the first N images")
    add_resume_argument(p)


def run(args) -> int:
    from ..errors import WorkFailed
    from ..hw.accounting import as_dict, check_masked_zeros, count_project, format_table, warnings
    from ..hw.csim import require_gxx
    from ..hw.export import check_export_config, read_manifest
    from ..io import write_json
    from ..masks import masks_of
    from ..runs import has_stage, load_stage, stage_dir
    from .csim import csim_stage
    from .export import export_stage
    from .quantize import describe, load_source, quantize_stage

    cfg = config_from_args(args)
    check_export_config(cfg.export)
    require_gxx()
    if has_stage(cfg, "quantized") and not args.force:
        print(f"using the existing {stage_dir(cfg, 'quantized')} (pass --force to quantize again)")
        qmodel, _ = load_stage(cfg, "quantized")
    else:
        load_source(cfg)  # a missing pruned stage exits 2 before any work
        qmodel, summary, folder = quantize_stage(cfg, args.test_data, args.force, verbosity(args), args.resume)
        print(f"quantized model saved to {folder}: {describe(summary)}")
    folders = export_stage(cfg, args.test_data, args.force, reuse=True)
    summaries = csim_stage(cfg, args.test_data, args.images, progress=not args.quiet)
    masks = masks_of(qmodel)
    for folder, summary in zip(folders, summaries, strict=True):
        leaks = check_masked_zeros(folder, masks)
        if any(leaks.values()):
            raise WorkFailed(f"{folder}: masked kernels hold non-zero exported weights: {leaks}")
        rows = count_project(folder)
        accounting = as_dict(rows)
        accounting["masked_nonzero_in_export"] = leaks
        write_json(folder / "accounting.json", accounting)
        manifest = read_manifest(folder)
        print(f"\n{manifest['backend']} ({manifest['part']}, {manifest['clock_period']} ns, {manifest['io_type']}):")
        print(format_table(rows))
        for line in warnings(rows):
            print(line)
        for row in rows:
            if row.masked_weights:
                print(
                    f"{row.name}: {row.masked_weights / row.weights:.1%} of the weights pruned (masked kernels are 0 "
                    f"in the exported weights); non-zero multiplications cut by {1 - row.nonzero / row.weights:.1%}"
                )
        cut = accounting["conv_nonzero_mults_cut"]
        if cut is not None:
            print(f"non-zero conv multiplications per image, all conv layers: cut by {cut:.1%}")
        exact = "bit-exact" if summary["bit_exact"] else f"max diff {summary['max_diff_lsb']:g} LSB"
        print(
            f"C-sim agreement: {summary['argmax_agreement']:.2%} argmax, {exact} "
            f"on {summary['images']} {summary['split']} images"
        )
    from ..report.html import write_report

    print(f"report: {write_report(cfg)}")
    return 0
