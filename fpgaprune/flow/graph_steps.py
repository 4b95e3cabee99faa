"""The flow's graph steps: reduce (the pruned model without the channels its masks made dead).

`step(run, cfg, options) -> StageResult`, like every step: it reads the pruned stage, saves
runs/<name>/reduced/ (model and masks.npz), and says what it did through `options.say`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..config import Config
from ..errors import WorkFailed
from ..results import StageResult
from ..run import MASKS_FILE, Run
from .options import Options

# The reduced model must compute what the pruned one computes, to float rounding: outputs
# within TOLERANCE x max(1, their largest magnitude) (float32 sums in another order differ in
# their last bit, 3.8e-6 at a logit of 20).
TOLERANCE = 1e-5


def check_reduce(run: Run, cfg: Config, options: Options, planned: set[str]) -> None:
    if "pruned" not in planned:
        run.load("pruned")  # a missing stage says which step makes it
    run.load_data(options.test_data)


def pruned_masks(run: Run, model) -> dict:
    """The pruned stage's masks.npz (its KernelMask constraints where there is no file)."""
    from ..masks import load_masks, masks_of

    path = run.stage_dir("pruned") / MASKS_FILE
    return load_masks(path) if path.is_file() else masks_of(model)


def output_differences(model, reduced, x: np.ndarray) -> dict[str, dict]:
    """The outputs (and logits, before a final softmax) of both models on `x`: largest |difference|, scale."""
    from ..hw.quantize import logits_model

    pairs = {"outputs": (model, reduced)}
    if logits_model(model) is not model:
        pairs["logits"] = (logits_model(model), logits_model(reduced))
    out = {}
    for what, (a, b) in pairs.items():
        ya, yb = a.predict(x, batch_size=256, verbose=0), b.predict(x, batch_size=256, verbose=0)
        scale = max(1.0, float(np.abs(ya).max()))
        out[what] = {"max_abs_diff": float(np.abs(ya - yb).max()), "tolerance": TOLERANCE * scale}
    return out


def reduce(run: Run, cfg: Config, options: Options) -> StageResult:
    """Remove the channels and units the masks made dead; check the outputs are unchanged."""
    from ..analysis.counts import kernel_counts
    from ..graph.reduce import reduce_model, report_lines
    from ..masks import masked_max_abs, save_masks
    from ..training.fit import evaluate

    model, _ = run.load("pruned")
    reduced, masks, report = reduce_model(model, pruned_masks(run, model))
    data = run.load_data(options.test_data)
    x, _, split = data.eval_split()
    if not len(x):
        x, split = data.x_train, "train"
    equal = output_differences(model, reduced, x)
    for what, d in equal.items():
        if not d["max_abs_diff"] <= d["tolerance"]:
            raise WorkFailed(f"reduce: the reduced model's {what} differ from the pruned model's by up to "
                             f"{d['max_abs_diff']:g} on the {split} split (tolerance {d['tolerance']:g}); "
                             "nothing was saved")
    worst = masked_max_abs(reduced, masks)
    if worst != 0.0:
        raise WorkFailed(f"reduce: masked weights are not 0.0 in the reduced model (largest |w| {worst})")
    kernels = kernel_counts(reduced, masks)
    summary = {"stage": "reduced", **report, "source": str(run.stage_dir("pruned")),
               "equal_outputs": {"split": split, "images": int(len(x)), **equal,
                                 "max_abs_diff": equal["outputs"]["max_abs_diff"]},
               "masked_max_abs": worst, "kernels": kernels, **evaluate(reduced, data)}
    result = StageResult("reduce", summary["val_accuracy"], summary["test_accuracy"], kernels["total"]["pruned"],
                         kernels["total"]["kernels"], summary=summary)
    folder = run.save("reduced", reduced, result.with_summary(), force=options.force,
                      extras={MASKS_FILE: lambda path: save_masks(masks, path)})
    options.say(report_lines(report))
    within = ", ".join(f"{what} within {d['max_abs_diff']:.2g}" for what, d in equal.items())
    options.say(f"reduced model saved to {folder}: equal to the pruned model on {len(x)} {split} images ({within})")
    return replace(result, folder=folder, model=reduced)
