"""Hardware accounting without vendor tools: per layer, what the exported design multiplies.

Every figure for the pruned design is read back from the exported weight files
(`firmware/weights/w*.h`), not from the Keras model, so it shows what the HLS compiler gets.
"Unpruned" is the same layer with every weight non-zero (kh*kw*cin*cout multiplications).

Model used (stated in the table):
- multiplications per image: non-zero weights x output pixels, the formula the Keras-side
  counts use too (`analysis.counts.mults_per_image`), so the two agree on the same model.
- multipliers: Latency at reuse factor 1 builds one multiplier per non-zero weight (the HLS
  compiler removes products with a constant 0, and hls4ml counts them: `//Number of zeros`);
  Latency at RF > 1 and Resource build ceil(n/RF) multipliers whatever the zeros;
  Resource_Unrolled builds ceil(n/RF) minus the slots whose RF weights are all zero (hls4ml's
  own rule in `unrolled_codegen.py`).
- DSP: hls4ml's `VivadoDSPEstimator` (dsp_aware_pruning): a multiplier uses a DSP only when
  the weights have 9 bits or more; narrower products go to LUTs.
- LUT: a LUT-mapped constant-coefficient multiplier costs about b_w * b_a / 2 LUTs (shift-add
  of a b_w-bit constant and a b_a-bit input; a generic array multiplier is about twice that).
  Adders, line buffers and control are not counted.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..analysis.counts import conv_mults_cut, mults_per_image
from ..errors import BadInput
from .export import read_manifest

LUT_MODEL = "LUT ~ b_w*b_a/2 per LUT-mapped multiplier; DSP per hls4ml VivadoDSPEstimator (weights >= 9 bits)"
# LUT-equivalents: LUT + 55 x DSP, the convention HGQ and da4ml use to put designs that trade
# DSPs for LUTs on one axis.
DSP_IN_LUTS = 55
ZERO_SAVING = "zeros save multipliers only with Latency at reuse factor 1 or Resource_Unrolled"

# hls4ml's 2-D convolution classes (a 1x1 Conv2D is a PointwiseConv2D in io_stream); all store
# their kernel like a Conv2D.
CONV2D_CLASSES = ("Conv2D", "PointwiseConv2D", "DepthwiseConv2D")
CONV_CLASSES = ("Conv1D", *CONV2D_CLASSES)
_HEADER = re.compile(r"//Numpy array shape \[([\d, ]*)\].*?//Number of zeros (\d+)", re.S)
_ARRAY = re.compile(r"=\s*\{([^}]*)\}")


@dataclass
class WeightFile:
    """One `firmware/weights/*.h` file: its array shape, values and hls4ml's zero count."""

    shape: tuple[int, ...]
    values: np.ndarray
    nzeros: int


def read_weight_file(path: Path) -> WeightFile:
    """Parse an hls4ml weight header (the initializer the synthesis build uses)."""
    if not path.is_file():
        raise BadInput(f"{path}: missing weight file; export the project again")
    text = path.read_text()
    head, body = _HEADER.search(text), _ARRAY.search(text)
    if head is None or body is None:
        raise BadInput(f"{path}: not an hls4ml weight header")
    shape = tuple(int(s) for s in head.group(1).replace(" ", "").split(",") if s)
    values = np.array([float(v) for v in body.group(1).replace("\n", " ").split(",") if v.strip()])
    if values.size != int(np.prod(shape)):
        raise BadInput(f"{path}: {values.size} values for shape {shape}")
    return WeightFile(shape, values.reshape(shape), int(head.group(2)))


def kernel_in_keras_layout(weights: WeightFile, layer: dict) -> np.ndarray:
    """The exported weights back in Keras layout.

    Resource strategies store them transposed ((F,H,W,C) for Conv2D, (out, in) for Dense); the
    header's shape comment is written before that transpose, so the manifest's stored shape
    and the strategy decide, not the comment.
    """
    kernel_shape = tuple(layer["kernel_shape"])
    w = weights.values.reshape(layer.get("weight_file_shape") or kernel_shape)
    if layer["strategy"] not in ("resource", "resource_unrolled"):
        return w.reshape(kernel_shape)
    if layer["class"] == "Dense":
        return w.reshape(kernel_shape[::-1]).T
    if layer["class"] in CONV2D_CLASSES:
        h, wd, c, f = kernel_shape
        return np.transpose(w.reshape(f, h, wd, c), (1, 2, 3, 0))  # (F,H,W,C) -> (H,W,C,F)
    if layer["class"] == "Conv1D":
        k, c, f = kernel_shape
        return np.transpose(w.reshape(f, k, c), (1, 2, 0))
    raise BadInput(f"{layer['name']}: cannot map its exported weights back to the kernel {kernel_shape}")


@dataclass
class LayerCount:
    name: str
    kind: str
    weight_bits: int
    input_bits: int
    strategy: str
    reuse_factor: int
    weights: int  # = unpruned multiplications per output pixel
    nonzero: int  # non-zero weights in the exported file
    masked_weights: int
    zeros_in_file_header: int
    mults_per_image_unpruned: int
    mults_per_image: int
    multipliers_unpruned: int
    multipliers: int
    dsp_unpruned: int
    dsp: int
    lut_unpruned: int
    lut: int
    zeros_save_multipliers: bool


def multipliers(strategy: str, reuse: int, flat: np.ndarray) -> int:
    """Multiplier instances for the weights `flat` (hls4ml's storage order) under the strategy."""
    n = flat.size
    if strategy == "latency":
        return int(np.count_nonzero(flat)) if reuse == 1 else math.ceil(n / reuse)
    slots = math.ceil(n / reuse)
    if strategy == "resource_unrolled" and n % reuse == 0:
        return slots - int(np.sum(~flat.reshape(slots, reuse).any(axis=1)))
    return slots


def dsp_estimate(layer: dict, n_weights: int, used_multipliers: int) -> int:
    """DSPs per hls4ml's VivadoDSPEstimator: 0 below 9-bit weights, else one per multiplier."""
    from hls4ml.model.types import FixedPrecisionType
    from hls4ml.optimization.dsp_aware_pruning.attributes import (
        LayerAttributes,
        OptimizationAttributes,
        hls4mlAttributes,
    )
    from hls4ml.optimization.dsp_aware_pruning.objectives.vivado_objectives import (
        VivadoDSPEstimator,
    )

    strategy = "Latency" if layer["strategy"] == "latency" else "Resource"
    precision = FixedPrecisionType(width=layer["weight_bits"], integer=1)
    attrs = hls4mlAttributes(1, 1, "io_stream", strategy, precision, precision, layer["reuse_factor"])
    info = LayerAttributes(
        layer["name"], None, [], (n_weights,), (), (), True, OptimizationAttributes(), {"hls4ml_attributes": attrs}
    )
    if VivadoDSPEstimator.layer_resources(info)[0] == 0:
        return 0
    return used_multipliers


def lut_estimate(layer: dict, used_multipliers: int, dsp: int) -> int:
    if dsp:
        return 0
    return int(round(used_multipliers * layer["weight_bits"] * layer["input_bits"] / 2))


def count_layer(project: Path, layer: dict) -> LayerCount:
    weights = read_weight_file(project / layer["weight_file"])
    kernel = kernel_in_keras_layout(weights, layer)
    strategy, reuse = layer["strategy"], layer["reuse_factor"]
    n, nonzero = kernel.size, int(np.count_nonzero(kernel))
    used = multipliers(strategy, reuse, weights.values.reshape(-1))
    dense = multipliers(strategy, reuse, np.ones(n))
    dsp, dsp_dense = dsp_estimate(layer, n, used), dsp_estimate(layer, n, dense)
    return LayerCount(
        name=layer["name"],
        kind=layer["class"],
        weight_bits=layer["weight_bits"],
        input_bits=layer["input_bits"],
        strategy=strategy,
        reuse_factor=reuse,
        weights=n,
        nonzero=nonzero,
        masked_weights=layer.get("masked_weights", 0),
        zeros_in_file_header=weights.nzeros,
        mults_per_image_unpruned=mults_per_image(n, layer["output_pixels"]),
        mults_per_image=mults_per_image(nonzero, layer["output_pixels"]),
        multipliers_unpruned=dense,
        multipliers=used,
        dsp_unpruned=dsp_dense,
        dsp=dsp,
        lut_unpruned=lut_estimate(layer, dense, dsp_dense),
        lut=lut_estimate(layer, used, dsp),
        zeros_save_multipliers=(strategy == "latency" and reuse == 1) or strategy == "resource_unrolled",
    )


def count_project(project: Path) -> list[LayerCount]:
    """Per weight layer of an exported project, read back from its weight files."""
    manifest = read_manifest(project)
    return [count_layer(project, layer) for layer in manifest["layers"]]


def check_masked_zeros(project: Path, masks: dict[str, np.ndarray]) -> dict[str, int]:
    """Per masked layer, how many exported weights inside masked kernels are non-zero (0 = sound)."""
    layers = {layer["name"]: layer for layer in read_manifest(project)["layers"]}
    out = {}
    for name, pruned in masks.items():
        if name not in layers:
            raise BadInput(f"{project}: no exported layer {name!r} for its mask")
        kernel = kernel_in_keras_layout(read_weight_file(project / layers[name]["weight_file"]), layers[name])
        out[name] = int(np.count_nonzero(kernel[..., pruned]))
    return out


def warnings(rows: list[LayerCount]) -> list[str]:
    """Layers whose zero weights the chosen strategy does not turn into fewer multipliers."""
    out = []
    for r in rows:
        zeros = r.weights - r.nonzero
        if zeros and not r.zeros_save_multipliers:
            out.append(
                f"warning: {r.name}: {zeros} zero weights save no multipliers with {r.strategy} at "
                f"reuse factor {r.reuse_factor} ({ZERO_SAVING})"
            )
    return out


def totals(rows: list[LayerCount], kinds: tuple[str, ...] = (*CONV_CLASSES, "Dense")) -> dict:
    pick = [r for r in rows if r.kind in kinds]
    keys = ("weights", "nonzero", "masked_weights", "mults_per_image_unpruned", "mults_per_image",
            "multipliers_unpruned", "multipliers", "dsp_unpruned", "dsp", "lut_unpruned", "lut")
    out = {k: int(sum(getattr(r, k) for r in pick)) for k in keys}
    out["lut_equivalents_unpruned"] = lut_equivalents(out["lut_unpruned"], out["dsp_unpruned"])
    out["lut_equivalents"] = lut_equivalents(out["lut"], out["dsp"])
    return out


def lut_equivalents(lut: int, dsp: int) -> int:
    """One cost axis for designs that trade DSPs against LUTs."""
    return int(lut + DSP_IN_LUTS * dsp)


def as_dict(rows: list[LayerCount]) -> dict:
    conv = totals(rows, CONV_CLASSES)
    return {
        "model": LUT_MODEL,
        "layers": [asdict(r) for r in rows],
        "total": totals(rows),
        "conv": conv,
        "conv_nonzero_mults_cut": conv_mults_cut({r.name: r.mults_per_image_unpruned for r in rows},
                                                 {r.name: r.mults_per_image for r in rows},
                                                 [r.name for r in rows if r.kind in CONV_CLASSES]),
        "warnings": warnings(rows),
    }


def format_table(rows: list[LayerCount]) -> str:
    """The per-layer table, unpruned -> pruned, with totals and the model used."""
    head = (f"{'layer':<8} {'type':<6} {'bits w/a':>8} {'strategy':>10} {'RF':>3} {'weights':>8} "
            f"{'non-zero':>8} {'mults/image':>22} {'multipliers':>15} {'DSP':>11} {'LUT':>17}")
    lines = [head, "-" * len(head)]

    def arrow(a, b):
        return f"{a:,} -> {b:,}"

    for r in [*rows, None]:
        if r is None:
            t = totals(rows)
            lines.append("-" * len(head))
            lines.append(
                f"{'total':<8} {'':<6} {'':>8} {'':>10} {'':>3} {t['weights']:>8,} {t['nonzero']:>8,} "
                f"{arrow(t['mults_per_image_unpruned'], t['mults_per_image']):>22} "
                f"{arrow(t['multipliers_unpruned'], t['multipliers']):>15} {arrow(t['dsp_unpruned'], t['dsp']):>11} "
                f"{arrow(t['lut_unpruned'], t['lut']):>17}"
            )
            continue
        lines.append(
            f"{r.name:<8} {r.kind:<6} {f'{r.weight_bits}/{r.input_bits}':>8} {r.strategy:>10} {r.reuse_factor:>3} "
            f"{r.weights:>8,} {r.nonzero:>8,} {arrow(r.mults_per_image_unpruned, r.mults_per_image):>22} "
            f"{arrow(r.multipliers_unpruned, r.multipliers):>15} {arrow(r.dsp_unpruned, r.dsp):>11} "
            f"{arrow(r.lut_unpruned, r.lut):>17}"
        )
    lines.append("unpruned -> pruned; non-zero read from firmware/weights/*.h. " + LUT_MODEL + ".")
    return "\n".join(lines)
