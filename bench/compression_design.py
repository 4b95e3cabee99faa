"""A benchmark point as the FPGA pays for it: reduced, quantized and priced like `make hls` prices it.

Whatever a method removed (2-D kernels, filters, single weights), its zeros go through the
same chain as fpgaprune's own flow:

1. masks from the zeros: in every pruned conv layer, each 2-D kernel that is entirely 0.0;
2. structural reduction (`fpgaprune.graph.reduce_model`): channels those masks made dead are
   removed, with the filters upstream and the Dense inputs downstream (checked: same outputs);
   masks that leave no path from input to output make a constant: recorded at 0 LUT-equivalents
   with the constant's accuracy (`collapsed`);
3. quantization with the reference config's quantize section (conv1 8, conv2 6, fc1 4, fc2 8
   bits; integers from calibration images), no fine-tuning (fine-tuning would regrow the single
   zeros of unstructured methods, which no kernel mask holds);
4. every weight layer priced as the export's `auto` strategy prices it at full throughput
   (`fpgaprune.hw.export.priced_design`, reuse factor 1): distributed arithmetic by da4ml's
   cost where da4ml solves the layer in seconds, else Latency by the multiplier rule; the
   cheaper one, in LUT-equivalents (LUT + 55 x DSP).

    record["design"] = design(model, data, cfg, layers)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fpgaprune.graph.reduce import reduce_model
from fpgaprune.hw.export import priced_design
from fpgaprune.hw.quantize import check_quantized_zeros, quantize_model
from fpgaprune.masks import conv_kernel, prunable_layers
from fpgaprune.training.fit import accuracy

REDUCTION_TOLERANCE = 1e-5  # the reduction step's own check: float outputs equal to 1e-5
CHECK_IMAGES = 1000


def zero_kernel_masks(model, layers: list[str]) -> dict[str, np.ndarray]:
    """(cin, cout) masks: the 2-D kernels of each named conv layer that are entirely 0.0."""
    out = {}
    for layer in prunable_layers(model):
        kernel = np.asarray(conv_kernel(layer))
        if layer.name in layers and kernel.ndim == 4:
            out[layer.name] = ~kernel.any(axis=(0, 1))
    return out


def collapsed(model, data, masks: dict[str, np.ndarray], why: str) -> dict:
    """A point whose masks left no path from input to output: a constant, which costs no hardware.

    Recorded as a point (its accuracy is the constant's, its cost 0), not as a failure of the
    method: the method reached its target, and what that target leaves is part of the result.
    """
    return {
        "test_accuracy": accuracy(model, data.x_test, data.y_test),
        "lut_equivalents": 0, "lut": 0, "dsp": 0, "layers": {}, "shapes": {}, "parameters": 0,
        "kernels_dead": {name: int(m.sum()) for name, m in masks.items()},
        "reduction_max_abs_diff": 0.0, "collapsed": why,
    }


def design(model, data, cfg, layers: list[str], backend: str = "Vitis") -> dict:
    """Reduced, quantized (no fine-tuning), priced: the design's accuracy and LUT-equivalents."""
    masks = zero_kernel_masks(model, layers)
    reduced, reduced_masks, report = reduce_model(model, masks)
    if report["constant"]:
        return collapsed(model, data, masks, report["refused"])
    if report["refused"]:
        raise RuntimeError(f"reduction refused the model: {report['refused']}")
    x = data.x_test[:CHECK_IMAGES]
    diff = float(np.max(np.abs(model.predict(x, verbose=0) - reduced.predict(x, verbose=0))))
    if diff > REDUCTION_TOLERANCE:
        raise RuntimeError(f"the reduced model differs from the pruned one by {diff:.2e}")
    qcfg = replace(cfg, quantize=replace(cfg.quantize, epochs=0))
    qmodel, summary = quantize_model(reduced, reduced_masks, data, qcfg, verbose=0)
    if reduced_masks and check_quantized_zeros(qmodel, reduced_masks) != 0.0:
        raise RuntimeError("a pruned kernel is not 0.0 after quantization")
    priced = priced_design(qmodel, replace(cfg.export, max_reuse_factor=1), backend)
    return {
        "test_accuracy": accuracy(qmodel, data.x_test, data.y_test),
        "lut_equivalents": sum(p["lut_equivalents"] for p in priced.values()),
        "lut": sum(p["lut"] for p in priced.values()),
        "dsp": sum(p["dsp"] for p in priced.values()),
        "layers": priced,
        "shapes": {row["layer"]: row["after"] for row in report["layers"] if row["layer"] in priced},
        "parameters": int(reduced.count_params()),
        "kernels_dead": {name: int(m.sum()) for name, m in masks.items()},
        "reduction_max_abs_diff": diff,
    }
