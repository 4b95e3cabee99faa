"""What one weight layer costs in the fabric, by the model the tool that builds it uses.

Two models, named in every table that uses them:
- the multiplier rule (Latency, Resource, Resource_Unrolled): Latency at reuse factor 1 builds
  one multiplier per non-zero weight (the HLS compiler drops products with a constant 0; hls4ml
  counts them, `//Number of zeros`); Latency at RF > 1 and Resource build ceil(n/RF)
  multipliers whatever the zeros; Resource_Unrolled drops the slots whose RF weights are all
  zero (hls4ml's `unrolled_codegen.py`). A multiplier is a DSP when the weights have 9 bits or
  more (hls4ml's `VivadoDSPEstimator`), else about b_w * b_a / 2 LUTs (shift-add of a b_w-bit
  constant and a b_a-bit input). Adders, line buffers and control are not counted.
- da4ml (distributed_arithmetic): hls4ml turns the layer's constant matrix-vector product into
  an adder graph with da4ml and records its LUT cost (`da_kernel_cost`); zero weights and
  shared partial sums make it smaller. It is the whole product, adders included, no DSPs.

LUT-equivalents (LUT + 55 x DSP, the convention HGQ and da4ml use) put both on one axis.
"""

from __future__ import annotations

import math

import numpy as np

RULE = "multiplier rule"
DA = "da4ml"
DSP_IN_LUTS = 55
# hls4ml's own strategy names, as its layers carry them after conversion.
DA_STRATEGY = "distributed_arithmetic"
ZERO_SAVING = "zeros save multipliers only with Latency at reuse factor 1, Resource_Unrolled or distributed arithmetic"


def lut_equivalents(lut: float, dsp: int) -> int:
    """One cost axis for designs that trade DSPs against LUTs."""
    return int(round(lut + DSP_IN_LUTS * dsp))


def multipliers(strategy: str, reuse: int, flat: np.ndarray) -> int:
    """Multiplier instances for the weights `flat` (hls4ml's storage order) under the strategy."""
    n = flat.size
    if strategy == DA_STRATEGY:
        return 0
    if strategy == "latency":
        return int(np.count_nonzero(flat)) if reuse == 1 else math.ceil(n / reuse)
    slots = math.ceil(n / reuse)
    if strategy == "resource_unrolled" and n % reuse == 0:
        return slots - int(np.sum(~flat.reshape(slots, reuse).any(axis=1)))
    return slots


def uses_dsp(strategy: str, reuse: int, weight_bits: int, n_weights: int) -> bool:
    """hls4ml's `VivadoDSPEstimator` (dsp_aware_pruning): products of weights under 9 bits go to LUTs."""
    from hls4ml.model.types import FixedPrecisionType
    from hls4ml.optimization.dsp_aware_pruning.attributes import (
        LayerAttributes,
        OptimizationAttributes,
        hls4mlAttributes,
    )
    from hls4ml.optimization.dsp_aware_pruning.objectives.vivado_objectives import VivadoDSPEstimator

    precision = FixedPrecisionType(width=weight_bits, integer=1)
    name = "Latency" if strategy == "latency" else "Resource"
    attrs = hls4mlAttributes(1, 1, "io_stream", name, precision, precision, reuse)
    info = LayerAttributes("layer", None, [], (n_weights,), (), (), True, OptimizationAttributes(),
                           {"hls4ml_attributes": attrs})
    return VivadoDSPEstimator.layer_resources(info)[0] != 0


def rule_cost(strategy: str, reuse: int, flat: np.ndarray, weight_bits: int, input_bits: int) -> dict:
    """multipliers, DSP and LUT of the layer by the multiplier rule."""
    used = multipliers(strategy, reuse, flat)
    dsp = used if used and uses_dsp(strategy, reuse, weight_bits, flat.size) else 0
    lut = 0 if dsp else int(round(used * weight_bits * input_bits / 2))
    return {"multipliers": used, "dsp": dsp, "lut": lut, "model": RULE}


def zeros_save(strategy: str, reuse: int) -> bool:
    return (strategy == "latency" and reuse == 1) or strategy in ("resource_unrolled", DA_STRATEGY)


def da_cost(node) -> float:
    """da4ml's LUT cost of an hls4ml Dense / Conv node's constant product, as hls4ml computes it.

    The same call as hls4ml's `DistributedArithmeticCodegen` pass (input precisions from
    `get_kernel_inp_kif`, its default solver options, the bias added), so it equals the
    `da_kernel_cost` a distributed-arithmetic export of the node records; used to price a layer
    before choosing its strategy.
    """
    from hls4ml.backends.vivado.passes.distributed_arithmetic import get_kernel_inp_kif

    kernel = node.attributes["weight"].data
    bias = node.attributes.get("bias")
    return float(solve_cmvm(kernel.reshape(-1, kernel.shape[-1]), *get_kernel_inp_kif(node),
                            bias=None if bias is None else bias.data.ravel()).cost)


def solve_cmvm(kernel: np.ndarray, k, i, f, bias: np.ndarray | None = None):
    """da4ml's adder graph of x @ kernel (+ bias), x with (k, i, f) per element, with hls4ml's solver options."""
    import os

    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace

    options = {"hard_dc": int(os.environ.get("DA_HARD_DC", 2)), "search_all_decompose_dc": True}
    inp = FixedVariableArray.from_kif(k, i, f, HWConfig(1, -1, -1), solver_options=options)
    out = inp @ kernel
    if bias is not None:
        out += bias
    return comb_trace(inp, out)


# da4ml's solve grows faster than linearly with non-zero weights x bits (seen here: 320 x 4 bits
# 0.2 s, 3,200 x 4 bits 10 s, 3,200 x 8 bits 70 s, 25,600 x 8 bits ~5 min and ~13 GB).
DA_WORK_LIMIT = 16_000


def da_affordable(nonzero: int, weight_bits: int) -> bool:
    """Whether pricing the layer with da4ml is quick (seconds) and small in memory."""
    return nonzero * weight_bits <= DA_WORK_LIMIT
