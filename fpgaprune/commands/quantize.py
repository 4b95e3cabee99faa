"""fpgaprune quantize: the pruned model as QKeras, fine-tuned with the masks kept (runs/<name>/quantized/)."""

from __future__ import annotations

from types import SimpleNamespace

from ..errors import BadInput
from ..runs import has_stage, load_data, stage_dir
from .common import (
    add_resume_argument,
    add_run_arguments,
    checkpoint_for,
    config_from_args,
    verbosity,
)

HELP = (
    "quantize the pruned model to QKeras (bit widths from the quantize section), fine-tune it "
    "with the masks kept, check every pruned weight quantizes to exactly 0 (runs/<name>/quantized/)"
)


def add_arguments(p) -> None:
    add_run_arguments(p)
    add_resume_argument(p)


def load_source(cfg):
    """The model to quantize (quantize.start_from) and its masks; a missing stage exits 2."""
    from ..masks import load_masks, masks_of
    from ..runs import load_stage

    source = cfg.quantize.start_from
    if not has_stage(cfg, source):
        make = {"pruned": "make prune", "baseline": "make train", "transfer": "make transfer"}[source]
        raise BadInput(f"{stage_dir(cfg, source)}: no saved {source} model; run `{make}` first")
    model, _ = load_stage(cfg, source)
    masks_file = stage_dir(cfg, source) / "masks.npz"
    masks = load_masks(masks_file) if masks_file.is_file() else masks_of(model)
    return model, masks


def quantize_stage(cfg, test_data: str | None, force: bool, verbose: int, resume: bool = False):
    """Quantize + fine-tune (checkpointed every epoch) + save; returns (qmodel, summary, folder)."""
    from ..checkpoint import remove_checkpoint
    from ..hw.quantize import quantize_model
    from ..masks import save_masks
    from ..runs import save_stage

    if has_stage(cfg, "quantized") and not force:
        raise BadInput(f"{stage_dir(cfg, 'quantized')} already exists; pass --force to quantize again")
    model, masks = load_source(cfg)
    ckpt = checkpoint_for(cfg, "quantized", SimpleNamespace(resume=resume, force=force))
    data = load_data(cfg, test_data)
    qmodel, summary = quantize_model(model, masks, data, cfg, verbose=verbose, checkpoint_dir=ckpt, resume=resume)
    summary["source"] = str(stage_dir(cfg, cfg.quantize.start_from))
    folder = save_stage(
        cfg, "quantized", qmodel, summary, force=force, extras={"masks.npz": lambda path: save_masks(masks, path)}
    )
    remove_checkpoint(ckpt)
    return qmodel, summary, folder


def describe(summary: dict) -> str:
    which = "test" if summary.get("test_accuracy") is not None else "val"
    before = summary["float"].get(f"{which}_accuracy")
    after = summary.get(f"{which}_accuracy")
    masked = sum(summary["masked_kernels"].values())
    return (
        f"{which} accuracy {before:.4f} (float) -> {after:.4f} (quantized, {summary['finetune_epochs']} "
        f"fine-tune epochs); {masked} masked kernels, max |quantized masked weight| "
        f"{summary['masked_max_abs_quantized']:g}"
    )


def run(args) -> int:
    cfg = config_from_args(args)
    _, summary, folder = quantize_stage(cfg, args.test_data, args.force, verbosity(args), args.resume)
    print(f"quantized model saved to {folder}: {describe(summary)}")
    return 0
