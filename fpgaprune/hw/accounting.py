"""Hardware accounting without vendor tools: per layer, what the exported design builds.

Every figure of the exported design is read back from the project: the weights from the
`.txt` files hls4ml writes beside its headers (`weights.exported_kernel`), the strategy and
reuse factor each layer got, and for distributed-arithmetic layers the LUT cost hls4ml's da4ml
pass recorded (`da_kernel_cost`). "Unpruned" is the same layer, at the same bits, with every
weight non-zero and the shape it had before structural reduction, priced by the multiplier
rule (pricing an unpruned layer with da4ml can take minutes and gigabytes). The cost models
are `costs.RULE` and `costs.DA`; every table names the one each row uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..analysis.counts import conv_mults_cut, mults_per_image
from ..errors import BadInput, run_step
from ..io import read_json
from ..run import ACCOUNTING_FILE
from .costs import DA, DA_STRATEGY, DSP_IN_LUTS, ZERO_SAVING, lut_equivalents, rule_cost, zeros_save
from .devices import fit_summary, fit_warnings
from .export import read_manifest
from .weights import exported_kernel, read_weight_values

__all__ = ["DSP_IN_LUTS", "lut_equivalents", "count_project", "check_masked_zeros", "as_dict", "format_table",
           "read_accounting", "format_accounting"]

LUT_MODEL = ("LUT-equivalents = LUT + 55 x DSP; distributed-arithmetic layers: da4ml's LUT cost as hls4ml records "
             "it; other layers: the multiplier rule (b_w*b_a/2 LUTs per LUT-mapped multiplier, DSP per hls4ml's "
             "VivadoDSPEstimator for weights >= 9 bits; adders and buffers not counted)")

# hls4ml's 2-D convolution classes (a 1x1 Conv2D is a PointwiseConv2D in io_stream); all store
# their kernel like a Conv2D.
CONV2D_CLASSES = ("Conv2D", "PointwiseConv2D", "DepthwiseConv2D")
CONV_CLASSES = ("Conv1D", *CONV2D_CLASSES)


@dataclass
class LayerCount:
    name: str
    kind: str
    weight_bits: int
    input_bits: int
    strategy: str
    reuse_factor: int
    shape_unpruned: list[int]  # the kernel before structural reduction
    shape: list[int]  # the kernel exported
    weights_unpruned: int
    weights: int  # = multiplications per output pixel if every weight were non-zero
    nonzero: int  # non-zero weights in the exported file
    masked_weights: int
    mults_per_image_unpruned: int
    mults_per_image: int
    multipliers_unpruned: int
    multipliers: int
    dsp_unpruned: int
    dsp: int
    lut_unpruned: int
    lut: int
    lut_equivalents_unpruned: int
    lut_equivalents: int
    cost_model: str  # of the exported layer's figures (the unpruned ones use the multiplier rule)
    zeros_save_multipliers: bool


def count_layer(project: Path, layer: dict) -> LayerCount:
    kernel = exported_kernel(project, layer)
    flat = read_weight_values(project, layer)
    strategy, reuse = layer["strategy"], layer["reuse_factor"]
    w_bits, in_bits = layer["weight_bits"], layer["input_bits"]
    shape_unpruned = list(layer.get("unreduced_kernel_shape") or layer["kernel_shape"])
    n_unpruned = int(np.prod(shape_unpruned))
    n, nonzero = kernel.size, int(np.count_nonzero(kernel))
    # the unpruned layer, priced as if exported the way the layer is (DA: as Latency at RF 1)
    dense_strategy = "latency" if strategy == DA_STRATEGY else strategy
    before = rule_cost(dense_strategy, reuse, np.ones(n_unpruned), w_bits, in_bits)
    if strategy == DA_STRATEGY:
        if layer.get("da_kernel_cost") is None:
            raise BadInput(f"{project}: {layer['name']} is distributed arithmetic but hls4ml recorded no cost; "
                           "export the project again")
        after = {"multipliers": 0, "dsp": 0, "lut": int(round(layer["da_kernel_cost"])), "model": DA}
    else:
        after = rule_cost(strategy, reuse, flat, w_bits, in_bits)
    pixels = layer["output_pixels"]
    return LayerCount(
        name=layer["name"],
        kind=layer["class"],
        weight_bits=w_bits,
        input_bits=in_bits,
        strategy=strategy,
        reuse_factor=reuse,
        shape_unpruned=shape_unpruned,
        shape=list(layer["kernel_shape"]),
        weights_unpruned=n_unpruned,
        weights=n,
        nonzero=nonzero,
        masked_weights=layer.get("masked_weights", 0),
        mults_per_image_unpruned=mults_per_image(n_unpruned, pixels),
        mults_per_image=mults_per_image(nonzero, pixels),
        multipliers_unpruned=before["multipliers"],
        multipliers=after["multipliers"],
        dsp_unpruned=before["dsp"],
        dsp=after["dsp"],
        lut_unpruned=before["lut"],
        lut=after["lut"],
        lut_equivalents_unpruned=lut_equivalents(before["lut"], before["dsp"]),
        lut_equivalents=lut_equivalents(after["lut"], after["dsp"]),
        cost_model=after["model"],
        zeros_save_multipliers=zeros_save(strategy, reuse),
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
        kernel = exported_kernel(project, layers[name])
        out[name] = int(np.count_nonzero(kernel[..., pruned]))  # [cin, cout] per 2-D kernel, [in, out] for Dense
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


SUMMED = ("weights_unpruned", "weights", "nonzero", "masked_weights", "mults_per_image_unpruned", "mults_per_image",
          "multipliers_unpruned", "multipliers", "dsp_unpruned", "dsp", "lut_unpruned", "lut",
          "lut_equivalents_unpruned", "lut_equivalents")


def totals(rows: list[LayerCount], kinds: tuple[str, ...] = (*CONV_CLASSES, "Dense")) -> dict:
    pick = [r for r in rows if r.kind in kinds]
    return {k: int(sum(getattr(r, k) for r in pick)) for k in SUMMED}


def as_dict(rows: list[LayerCount], part: str | None = None) -> dict:
    conv, total = totals(rows, CONV_CLASSES), totals(rows)
    out = {
        "model": LUT_MODEL,
        "layers": [asdict(r) for r in rows],
        "total": total,
        "conv": conv,
        "conv_nonzero_mults_cut": conv_mults_cut({r.name: r.mults_per_image_unpruned for r in rows},
                                                 {r.name: r.mults_per_image for r in rows},
                                                 [r.name for r in rows if r.kind in CONV_CLASSES]),
        "lut_equivalents_ratio": total["lut_equivalents_unpruned"] / total["lut_equivalents"]
        if total["lut_equivalents"] else None,
        "warnings": warnings(rows),
    }
    if part is not None:
        needs = {"lut": total["lut"], "dsp": total["dsp"]}
        out["device_fit"] = fit_summary(needs, part)
        out["warnings"] += fit_warnings(needs, part)
    return out


def format_table(rows: list[LayerCount]) -> str:
    """The per-layer table, unpruned -> exported, with totals and the cost model of each row."""
    from tabulate import tabulate

    def arrow(a, b):
        return f"{a:,} -> {b:,}"

    def shape(a, b):
        return "x".join(map(str, a)) + ("" if a == b else " -> " + "x".join(map(str, b)))

    body = [[r.name, r.kind, shape(r.shape_unpruned, r.shape), f"{r.weight_bits}/{r.input_bits}",
             f"{r.strategy} {r.reuse_factor}", f"{r.nonzero:,}", arrow(r.mults_per_image_unpruned, r.mults_per_image),
             arrow(r.multipliers_unpruned, r.multipliers), arrow(r.dsp_unpruned, r.dsp),
             arrow(r.lut_equivalents_unpruned, r.lut_equivalents), r.cost_model] for r in rows]
    t = totals(rows)
    body.append(["total", "", "", "", "", f"{t['nonzero']:,}",
                 arrow(t["mults_per_image_unpruned"], t["mults_per_image"]),
                 arrow(t["multipliers_unpruned"], t["multipliers"]), arrow(t["dsp_unpruned"], t["dsp"]),
                 arrow(t["lut_equivalents_unpruned"], t["lut_equivalents"]), ""])
    head = ["layer", "type", "kernel", "bits w/a", "strategy RF", "non-zero", "mults/image", "multipliers", "DSP",
            "LUT-eq", "cost model"]
    table = tabulate(body, head, tablefmt="simple", disable_numparse=True, stralign="right")
    return (table + "\nunpruned (the baseline's shapes, every weight non-zero, multiplier rule) -> exported "
            "(weights read back from the project). " + LUT_MODEL + ".")


def read_accounting(project: Path) -> list[dict]:
    """The per-layer rows the accounting step wrote to a project (accounting.json), as saved."""
    path = project / ACCOUNTING_FILE
    if not path.is_file():
        raise BadInput(f"{path}: no such file; {run_step('accounting')}")
    return read_json(path)["layers"]


def format_accounting(rows: list[dict]) -> str:
    """The short table of saved rows: per layer, non-zero weights, LUT, DSP and the cost model that priced it."""
    from ..report.table import table

    return table([[r["name"], r["kind"], r["nonzero"], r["lut"], r["dsp"], r["cost_model"]] for r in rows],
                 ["layer", "type", "non-zero", "LUT", "DSP", "cost model"])
