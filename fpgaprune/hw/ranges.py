"""Fixed-point ranges from the data: the integer bits of each quantizer, chosen so nothing clips.

QKeras `quantized_bits(bits, integer, alpha=1)` (weights, the input) holds
[-2^integer, 2^integer - step] with step 2^(integer - bits + 1); `quantized_relu(bits, integer)`
holds [0, 2^integer - step] with step 2^(integer - bits). A value clips when it lies more than
half a step outside that range (nearer ones only round to the end point). `choose_ranges`
gives every weight layer and every ReLU whose integer bits the config leaves null the fewest
integer bits that clip nothing (weights: from the layer's own weights; ReLUs: from their
inputs on a calibration batch of training images), keeps every integer the config sets, and
counts what each range clips:

    qcfg, ranges = choose_ranges(model, cfg.quantize, data.x_train[:256])
    qmodel = build_quantized_model(model, qcfg, masks)
    ranges["conv2"]   # {"kind": "weights", "bits": 6, "integer": 1, "chosen": "data", "max_abs": 1.7,
                      #  "clipped": 0, "clipped_max_excess": 0.0, "values": 9216, "key": ...}

The chosen integers become ordinary QKeras quantizers, which hls4ml reads as ap_fixed /
ap_ufixed types, so the C-simulation stays bit-exact exactly as with set integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import tensorflow as tf

from ..config import LayerBits, QuantizeConfig
from ..errors import BadInput

# ReLU integer bits when no calibration images are given (a direct build_quantized_model call).
UNCALIBRATED_ACTIVATION_INTEGER = 3
# The probe model that sees the weights and activations: quantizers this wide and fine (steps of
# 2^-15, 2^-16; ranges to +-2^14) are float in all but name. Not 32 bits: QKeras' quantized_relu
# computes 2^bits in int32, which 32 bits overflow.
PROBE_WEIGHTS = (30, 14)
PROBE_ACTIVATIONS = (30, 14)
# Kernels a QKeras layer quantizes, by attribute -> the attribute of its quantizer (QKeras' names).
KERNELS = {"kernel": "kernel_quantizer_internal", "depthwise_kernel": "depthwise_quantizer_internal",
           "pointwise_kernel": "pointwise_quantizer_internal"}
CALIBRATION_BATCH = 64


@dataclass(frozen=True)
class ChosenRanges(QuantizeConfig):
    """A quantize section whose every quantizer is settled: `chosen` holds each quantized layer's
    bits and integer by its name in the QKeras model (a fused ReLU is "<layer>_relu")."""

    chosen: dict[str, LayerBits] = field(default_factory=dict)


def fixed_range(bits: int, integer: int, signed: bool) -> tuple[float, float, float]:
    """(lowest, highest, step) of quantized_bits (signed) or quantized_relu (unsigned)."""
    step = 2.0 ** (integer - bits + (1 if signed else 0))
    return (-(2.0**integer) if signed else 0.0), 2.0**integer - step, step


def clip_threshold(bits: int, integer: int, signed: bool) -> tuple[float, float]:
    """Values below the first or above the second clip (they lie over half a step outside)."""
    lo, hi, step = fixed_range(bits, integer, signed)
    return lo - step / 2, hi + step / 2


def clipping(values: np.ndarray, bits: int, integer: int, signed: bool) -> tuple[int, float]:
    """How many `values` the range clips, and by how much at most (beyond its end points)."""
    values = np.asarray(values, np.float64)
    lo_clip, hi_clip = clip_threshold(bits, integer, signed)
    lo, hi, _ = fixed_range(bits, integer, signed)
    out = (values < lo_clip) | (values > hi_clip)
    if not out.any():
        return 0, 0.0
    excess = np.maximum(lo - values[out], values[out] - hi)
    return int(out.sum()), float(excess.max())


def largest_integer(bits: int, signed: bool) -> int:
    """Integer bits at most: the sign takes one of a signed quantizer's bits."""
    return bits - 1 if signed else bits


def fewest_integer(low: float, high: float, bits: int, signed: bool) -> int:
    """The fewest integer bits whose range clips neither `low` nor `high` (at most all the bits)."""
    top = largest_integer(bits, signed)
    for integer in range(top + 1):
        lo_clip, hi_clip = clip_threshold(bits, integer, signed)
        if low >= lo_clip and high <= hi_clip:
            return integer
    return top


def ranges_missing(cfg: QuantizeConfig) -> bool:
    """True when some integer bits are left null, to be chosen from the data."""
    if isinstance(cfg, ChosenRanges):
        return False
    return cfg.weight_integer is None or cfg.activation_integer is None or any(
        b.integer is None for b in cfg.layers.values()
    )


def _setting(cfg: QuantizeConfig, name: str, kind: str) -> tuple[int, int | None, str]:
    """(bits, integer or None, the config key that sets the integer) of one layer."""
    b = cfg.layers.get(name)
    bits = b.bits if b else (cfg.weight_bits if kind == "weights" else cfg.activation_bits)
    if b is not None and b.integer is not None:
        return bits, b.integer, f"quantize.layers.{name}.integer"
    section = cfg.weight_integer if kind == "weights" else cfg.activation_integer
    return bits, section, f"quantize.{'weight' if kind == 'weights' else 'activation'}_integer"


def probe_config(cfg: QuantizeConfig) -> QuantizeConfig:
    """`cfg` with near-float weight and ReLU quantizers (the input quantizer as configured)."""
    return replace(cfg, weight_bits=PROBE_WEIGHTS[0], weight_integer=PROBE_WEIGHTS[1],
                   activation_bits=PROBE_ACTIVATIONS[0], activation_integer=PROBE_ACTIVATIONS[1], layers={})


def weight_values(qmodel: tf.keras.Model) -> dict[str, np.ndarray]:
    """Every quantized layer's float weights (all its quantized kernels together), by layer."""
    out = {}
    for layer in qmodel.layers:
        kernels = [getattr(layer, k).numpy().ravel() for k, q in KERNELS.items()
                   if hasattr(layer, q) and getattr(layer, k, None) is not None]
        if kernels:
            out[layer.name] = np.concatenate(kernels)
    return out


def quantizer_layers(qmodel: tf.keras.Model) -> dict[str, list]:
    """The QActivation layers by what they quantize: "activation" (ReLU) or "input".

    A quantized_bits elsewhere (after a LeakyReLU or an average) is neither: it takes the ReLUs'
    widest range, being a ReLU's range plus a sign bit.
    """
    from qkeras import quantized_bits, quantized_relu

    inputs = {id(t) for t in qmodel.inputs}
    out: dict[str, list] = {"activation": [], "input": []}
    for layer in qmodel.layers:
        q = getattr(layer, "quantizer", None) if type(layer).__name__ == "QActivation" else None
        if isinstance(q, quantized_relu):
            out["activation"].append(layer)
        elif isinstance(q, quantized_bits) and id(layer.input) in inputs:
            out["input"].append(layer)
    return out


def calibrate(qmodel: tf.keras.Model, layers: list, x: np.ndarray, candidates: dict[str, tuple[int, list[int]]]):
    """Per ReLU layer, over its inputs on `x`: the largest, how many values, and for each candidate
    integer (`candidates`: name -> (bits, integers)) how many clip and by how much at most.

    Batched, so only these counts are kept, never every activation of the calibration images.
    """
    probe = tf.keras.Model(qmodel.inputs, [layer.input for layer in layers])
    stats = {layer.name: {"max": 0.0, "values": 0, "clipped": {i: (0, 0.0) for i in candidates[layer.name][1]}}
             for layer in layers}
    for start in range(0, len(x), CALIBRATION_BATCH):
        outputs = probe(x[start : start + CALIBRATION_BATCH], training=False)
        for layer, out in zip(layers, outputs if isinstance(outputs, list | tuple) else [outputs], strict=True):
            v = np.maximum(np.asarray(out, np.float64), 0.0)  # the ReLU's zeros are no clipping
            s, bits = stats[layer.name], candidates[layer.name][0]
            s["max"], s["values"] = max(s["max"], float(v.max())), s["values"] + v.size
            for integer, (n, excess) in s["clipped"].items():
                more, worst = clipping(v, bits, integer, False)
                s["clipped"][integer] = (n + more, max(excess, worst))
    return stats


def _entry(kind: str, bits: int, integer: int, chosen: str, key: str, low: float | None, high: float | None,
           values: int, clipped: tuple[int, float]) -> dict:
    """One layer's range in the summary; `low`/`high` are the values seen (None: none seen)."""
    seen = low is not None and high is not None
    return {
        "kind": kind, "bits": bits, "integer": integer, "chosen": chosen, "key": key,
        "max_abs": max(-low, high) if seen else None,
        "integer_needed": fewest_integer(low, high, bits, kind != "activation") if seen else None,
        "values": int(values), "clipped": int(clipped[0]), "clipped_max_excess": float(clipped[1]),
    }


def weight_ranges(cfg: QuantizeConfig, weights: dict[str, np.ndarray]) -> dict[str, dict]:
    """Each weight layer's range: its set integer, or the fewest that clip none of its weights."""
    out = {}
    for name, w in weights.items():
        bits, integer, key = _setting(cfg, name, "weights")
        if integer is not None and integer > largest_integer(bits, True):
            raise BadInput(f"{key}: {integer} integer bits plus the sign do not fit in {bits} bits")
        low, high = (float(w.min()), float(w.max())) if w.size else (0.0, 0.0)
        chosen = "data" if integer is None else "config"
        integer = fewest_integer(low, high, bits, True) if integer is None else integer
        out[name] = _entry("weights", bits, integer, chosen, key, low, high, w.size, clipping(w, bits, integer, True))
    return out


def activation_ranges(cfg: QuantizeConfig, qmodel: tf.keras.Model, layers: list, x: np.ndarray | None) -> dict:
    """Each ReLU's range: its set integer, or the fewest that clip none of its inputs on `x`.

    Without calibration images, a null integer is UNCALIBRATED_ACTIVATION_INTEGER (chosen "default").
    """
    settings = {layer.name: _setting(cfg, layer.name, "activation") for layer in layers}
    if x is None or not len(x) or not layers:
        return {name: _entry("activation", bits, min(UNCALIBRATED_ACTIVATION_INTEGER, bits) if i is None else i,
                             "default" if i is None else "config", key, None, None, 0, (0, 0.0))
                for name, (bits, i, key) in settings.items()}
    candidates = {name: (bits, list(range(largest_integer(bits, False) + 1)) if i is None else [i])
                  for name, (bits, i, _) in settings.items()}
    stats = calibrate(qmodel, layers, x, candidates)
    out = {}
    for name, (bits, integer, key) in settings.items():
        s = stats[name]
        if integer is None:
            chosen = "data"
            integer = next((i for i, (n, _) in s["clipped"].items() if n == 0), candidates[name][1][-1])
        else:
            chosen = "config"
        out[name] = _entry("activation", bits, integer, chosen, key, 0.0, s["max"], s["values"], s["clipped"][integer])
    return out


def input_ranges(cfg: QuantizeConfig, layers: list, x: np.ndarray | None) -> dict:
    """The input quantizer as configured, and what it clips of the calibration images."""
    values = np.asarray(x if x is not None else np.zeros(0), np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (None, None)
    clipped = clipping(values, cfg.input_bits, cfg.input_integer, True)
    return {layer.name: _entry("input", cfg.input_bits, cfg.input_integer, "config", "quantize.input_integer",
                               low, high, values.size, clipped) for layer in layers}


def choose_ranges(model: tf.keras.Model, cfg: QuantizeConfig, x: np.ndarray | None = None):
    """(`cfg` with every quantizer settled (ChosenRanges), the ranges by layer) for `model`.

    A probe build, with near-float quantizers, shows the layers exactly as `build_quantized_model`
    makes them (names, kernels after any folding) and their activations on the calibration
    images `x`. Integers the config sets are kept; null ones are chosen so nothing clips.
    """
    from .quantize import build_quantized_model

    probe = build_quantized_model(model, probe_config(cfg))
    kinds = quantizer_layers(probe)
    ranges = {**input_ranges(cfg, kinds["input"], x), **weight_ranges(cfg, weight_values(probe)),
              **activation_ranges(cfg, probe, kinds["activation"], x)}
    names = {layer.name for layer in model.layers}
    for name, r in ranges.items():  # where a person sets this layer's bits
        section = "quantize.weight_bits" if r["kind"] == "weights" else "quantize.activation_bits"
        r["bits_key"] = f"quantize.layers.{name}.bits" if name in names else section
    chosen = {name: LayerBits(bits=r["bits"], integer=r["integer"])
              for name, r in ranges.items() if r["kind"] != "input"}
    widest = {kind: max((r["integer"] for r in ranges.values() if r["kind"] == kind), default=0)
              for kind in ("weights", "activation")}
    # The section-wide integers matter only to a layer the probe could not see, which then gets the
    # widest range chosen for its kind.
    settled = {f.name: getattr(cfg, f.name) for f in fields(QuantizeConfig)}
    settled.update(weight_integer=cfg.weight_integer if cfg.weight_integer is not None else widest["weights"],
                   activation_integer=cfg.activation_integer if cfg.activation_integer is not None
                   else widest["activation"])
    return ChosenRanges(**settled, chosen=chosen), ranges


def range_warnings(ranges: dict[str, dict]) -> list[str]:
    """One line per layer whose range clips: how many values, by how much, and the fix."""
    out = []
    for name, r in ranges.items():
        if not r["clipped"] or (r["kind"] == "input" and r["clipped_max_excess"] <= _step(r)):
            continue  # the input quantizer saturates pixels of 1.0 to 1 - step by design
        what = {"weights": "weights", "activation": "activation values on the calibration images",
                "input": "input values on the calibration images"}[r["kind"]]
        lo, hi, _ = fixed_range(r["bits"], r["integer"], r["kind"] != "activation")
        more_bits = f"give {name} more bits ({r['bits_key']})"
        if r["chosen"] == "config" and r["integer_needed"] > r["integer"]:
            how, fix = f"{r['key']} = {r['integer']}", f"set it to {r['integer_needed']} or null (chosen from the data)"
        else:  # even the widest range its bits allow clips
            how, fix = f"the widest range of {r['bits']} bits ({r['integer']} integer bits)", more_bits
        out.append(
            f"warning: {name}: {how} covers [{lo:g}, {hi:g}] and clips {r['clipped']} of {r['values']} {what} "
            f"(largest |value| {r['max_abs']:.4g}, up to {r['clipped_max_excess']:.4g} beyond the range); {fix}"
        )
    return out


def _step(r: dict) -> float:
    return fixed_range(r["bits"], r["integer"], r["kind"] != "activation")[2]


def clipped_after(ranges: dict[str, dict], qmodel: tf.keras.Model) -> dict[str, dict]:
    """`ranges` with each weight layer's clipping counted again on `qmodel`'s (fine-tuned) weights."""
    weights = weight_values(qmodel)
    out = {}
    for name, r in ranges.items():
        out[name] = dict(r)
        if r["kind"] == "weights" and name in weights:
            n, excess = clipping(weights[name], r["bits"], r["integer"], True)
            out[name].update(clipped_after_finetune=n, clipped_max_excess_after_finetune=excess)
    return out
