"""The flow's hardware and output steps: quantize, export, csim, accounting, synth, report."""

from __future__ import annotations

from dataclasses import replace

from ..config import Config
from ..errors import BadInput, WorkFailed, option, run_step
from ..process import reseed
from ..results import StageResult
from ..run import (
    ACCOUNTING_FILE,
    CSIM_SUMMARY,
    MASKS_FILE,
    SUMMARY_FILE,
    SYNTH_REPORT,
    Run,
    refuse_existing,
    written_before,
)
from .options import Options

# quantize.start_from -> the step that makes that stage.
SOURCE_STEPS = {"pruned": "prune", "reduced": "reduce", "baseline": "baseline", "transfer": "transfer"}


def quantize_source(run: Run, cfg: Config):
    """The model to quantize (quantize.start_from) and its masks; a missing stage is a BadInput."""
    from ..masks import load_masks, masks_of

    source = cfg.quantize.start_from
    if source == "reduced" and not run.has(source) and not run.has("pruned"):
        source = "pruned"  # the reduced model comes from it: name the stage the user must make first
    if not run.has(source):
        raise BadInput(f"{run.stage_dir(source)}: no saved {source} model; {run_step(SOURCE_STEPS[source])}")
    model, _ = run.load(source)
    masks_file = run.stage_dir(source) / MASKS_FILE
    return model, (load_masks(masks_file) if masks_file.is_file() else masks_of(model))


def model_data(run: Run, cfg: Config, options: Options):
    """The data the quantized model's task has: the transfer's task when it starts from one."""
    if cfg.quantize.start_from != "transfer":
        return run.load_data(options.test_data)
    from ..transfer.stage import select_task
    from .training_steps import transfer_data

    return select_task(transfer_data(run, cfg, options), cfg.transfer.classes, cfg.transfer.per_class)


def check_quantize(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    from ..hw.support import check_convertible
    from .training_steps import refuse_nested

    source = cfg.quantize.start_from
    model = None
    if source not in planned:
        model = quantize_source(run, cfg)[0]
    elif source == "reduced" and "pruned" not in planned and run.has("pruned"):
        model = run.load("pruned")[0]  # reduction only removes channels: what it keeps converts alike
    if model is not None:
        refuse_nested(model)
        check_convertible(model)  # before quantization-aware training starts
    model_data(run, cfg, options)


def quantize(run: Run, cfg: Config, options: Options) -> StageResult:
    """QKeras model with the quantize section's bit widths, fine-tuned with the masks kept."""
    from ..checkpoint import remove_checkpoint
    from ..hw.quantize import quantize_model
    from ..masks import save_masks
    from ..report.text import quantized_line

    model, masks = quantize_source(run, cfg)
    data = model_data(run, cfg, options)
    ckpt = run.checkpoint_dir("quantized")
    reseed(cfg.seed)
    qmodel, summary = quantize_model(model, masks, data, cfg, verbose=options.verbose, checkpoint_dir=ckpt,
                                     resume=options.resume)
    summary["source"] = str(run.stage_dir(cfg.quantize.start_from))
    if summary["masked_max_abs_quantized"] != 0.0:
        raise WorkFailed(f"quantize: pruned weights are not 0.0 after quantization "
                         f"(largest |w| {summary['masked_max_abs_quantized']})")
    pruned = sum(summary["masked_kernels"].values())
    result = StageResult("quantize", summary["val_accuracy"], summary["test_accuracy"], pruned, summary=summary)
    folder = run.save("quantized", qmodel, result.with_summary(), force=options.force,
                      extras={MASKS_FILE: lambda path: save_masks(masks, path)})
    remove_checkpoint(ckpt)
    for line in summary["warnings"]:
        options.say(line)
    options.say(f"quantized model saved to {folder}: {quantized_line(summary)}")
    return replace(result, folder=folder, model=qmodel)


def projects(run: Run, cfg: Config) -> dict:
    """backend -> project folder, for every backend the export section names."""
    from ..hw.export import backend_names

    return {backend: run.project_dir(backend) for backend in backend_names(cfg.export)}


def _exports_to_do(run: Run, cfg: Config, options: Options) -> dict[str, bool]:
    """Backends whose project must be written -> whether it replaces an existing one.

    An existing project is kept when asked to reuse it and it was exported with the same
    settings from the current quantized model; one older than the quantized model is replaced.
    """
    from ..hw.export import MANIFEST, same_settings

    todo = {}
    quantized = run.stage_dir("quantized") / SUMMARY_FILE
    for backend, folder in projects(run, cfg).items():
        if folder.exists() and not options.force:
            if options.reuse and written_before(folder / MANIFEST, quantized):
                todo[backend] = True
                continue
            if options.reuse and same_settings(folder, cfg.export):
                continue
            if options.reuse:
                raise BadInput(f"{folder} already exists with different export settings; "
                               f"{option('force')} to replace it")
            refuse_existing(folder)
        todo[backend] = options.force
    return todo


def unreduced_shapes(run: Run, cfg: Config) -> dict[str, list[int]]:
    """Kernel shapes before structural reduction, when the quantized model starts from the reduced one."""
    if cfg.quantize.start_from != "reduced":
        return {}
    summary = run.summary("reduced") or {}
    return {row["layer"]: row["before"] for row in summary.get("layers", []) if row.get("before")}


def check_export(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    from ..hw.export import check_export_config

    check_export_config(cfg.export)
    _exports_to_do(run, cfg, options)
    if "quantized" not in planned:
        run.load("quantized")


def export(run: Run, cfg: Config, options: Options) -> StageResult:
    """An hls4ml project per backend, with test-bench data; existing ones kept only when asked."""
    from ..hw.export import export_project

    todo = _exports_to_do(run, cfg, options)
    for backend, folder in projects(run, cfg).items():
        if backend not in todo:
            options.say(f"using the existing project {folder} ({option('force')} to export it again)")
    if todo:
        qmodel, _ = run.load("quantized")
        x, _, _ = model_data(run, cfg, options).eval_split()
        x_tb = x[: cfg.export.testbench_images]
        for backend, replace in todo.items():
            if replace and not options.force:
                options.say(f"{projects(run, cfg)[backend]} is older than the quantized model: exporting it again")
            folder = export_project(qmodel, cfg, backend, x_tb, force=replace,
                                    source=str(run.stage_dir("quantized")), unreduced=unreduced_shapes(run, cfg),
                                    say=options.say)
            options.say(f"exported {backend} project to {folder} ({len(x_tb)} test-bench images)")
    return StageResult("export", folder=run.projects_root, reused=not todo,
                       summary={"exported": list(todo), "projects": {b: str(f) for b, f in projects(run, cfg).items()}})


def check_csim(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    from ..hw.csim import require_gxx
    from ..hw.export import read_manifest

    require_gxx()
    if options.csim_images is not None and options.csim_images < 1:
        raise BadInput(f"{option('images')}: expected a positive number of images, got {options.csim_images}")
    for folder in projects(run, cfg).values():
        if "export" not in planned:
            read_manifest(folder)  # a missing project says how to make it
        if (folder / CSIM_SUMMARY).is_file() and not (options.force or options.reuse or "export" in planned):
            raise BadInput(f"{folder / CSIM_SUMMARY} already exists; {option('force')} to simulate again")
    if "quantized" not in planned:
        run.load("quantized")


def csim(run: Run, cfg: Config, options: Options) -> StageResult:
    """g++ C-simulation of every project on the reporting split, compared with the QKeras model."""
    from ..hw.csim import describe, run_csim

    qmodel, _ = run.load("quantized")
    x, y, split = model_data(run, cfg, options).eval_split()
    limit = options.csim_images or cfg.export.csim_images
    x, y = x[:limit], y[:limit]
    summaries = {}
    for backend, folder in projects(run, cfg).items():
        summary = run_csim(folder, qmodel, x, y, workers=cfg.export.csim_workers, progress=options.progress,
                           split=split, fast=cfg.export.csim_build == "fast")
        options.say(f"{folder}: {describe(summary)}")
        for row in summary["trace"]:
            if row["differs"]:
                options.say(f"  differs at {row['layer']} ({row['precision']}): max {row['max_diff_lsb']:g} LSB")
        summaries[backend] = summary
    exact = all(s["bit_exact"] for s in summaries.values())
    return StageResult("csim", folder=run.projects_root, summary={"bit_exact": exact, "backends": summaries})


def check_accounting(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    from ..hw.export import read_manifest

    if "export" not in planned:
        for folder in projects(run, cfg).values():
            read_manifest(folder)
    if "quantized" not in planned:
        run.load("quantized")


def accounting(run: Run, cfg: Config, options: Options) -> StageResult:
    """Per-layer multipliers, DSPs and LUTs read back from each project's exported weights."""
    from ..hw.accounting import as_dict, check_masked_zeros, count_project
    from ..hw.export import read_manifest
    from ..io import read_json, write_json
    from ..masks import masks_of
    from ..report.text import accounting_lines

    qmodel, _ = run.load("quantized")
    masks = masks_of(qmodel)
    out = {}
    for backend, folder in projects(run, cfg).items():
        leaks = check_masked_zeros(folder, masks)
        if any(leaks.values()):
            raise WorkFailed(f"{folder}: masked kernels hold non-zero exported weights: {leaks}")
        rows = count_project(folder)
        table = {**as_dict(rows, read_manifest(folder)["part"]), "masked_nonzero_in_export": leaks}
        write_json(folder / ACCOUNTING_FILE, table)
        csim_file = folder / CSIM_SUMMARY
        for line in accounting_lines(read_manifest(folder), rows, table,
                                     read_json(csim_file) if csim_file.is_file() else None):
            options.say(line)
        out[backend] = table
    return StageResult("accounting", folder=run.projects_root, summary={"backends": out})


def synth(run: Run, cfg: Config, options: Options) -> StageResult:
    """Vendor HLS synthesis of every project (where the vendor tools are installed)."""
    from ..hw.synth import synthesize

    reports = {}
    for backend, folder in projects(run, cfg).items():
        reports[backend] = synthesize(folder, backend, cosim=options.synth_cosim, say=options.say,
                                      quiet=not options.progress)
    return StageResult("synth", folder=run.projects_root, summary={"backends": reports,
                                                                    "report_file": SYNTH_REPORT})


def check_synth(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    from ..hw.export import check_export_config, read_manifest
    from ..hw.synth import require_tools

    check_export_config(cfg.export)
    require_tools(list(projects(run, cfg)))
    if "export" not in planned:
        for folder in projects(run, cfg).values():
            read_manifest(folder)


def check_report(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    if options.report_channel is not None and options.report_channel < 0:
        raise BadInput(f"{option('channel')} {options.report_channel}: must be >= 0")


def report(run: Run, cfg: Config, options: Options) -> StageResult:
    """One self-contained HTML page with every plot and table of the run."""
    from ..report.html import write_report

    page = write_report(cfg, layer=options.report_layer, channel=options.report_channel,
                        progress=options.progress)
    options.say(f"report written to {page}")
    return StageResult("report", folder=page.parent, summary={"page": str(page)})
