"""Per weight layer, the hls4ml strategy and reuse factor it is exported with.

A layer set to `auto` (export.strategy or export.layer_strategy) gets the cheapest choice
hls4ml accepts for it within the throughput target: reuse factors up to
`export.max_reuse_factor` (1 = full throughput, one result per clock for every layer), priced
in LUT-equivalents by `costs` (the multiplier rule, or da4ml's cost for distributed
arithmetic). Pricing needs the layer's fixed-point input precisions, so the model is converted
once with every auto layer at Latency (cheap: no code is written) and each candidate is priced
on that graph. Distributed arithmetic is priced only where da4ml solves it in seconds
(`costs.da_affordable`); a layer too large for that is said so and priced by the other choices.

    choices = choose(model, ecfg, backend, convert_fn)   # {"conv2": Choice("distributed_arithmetic", 1, ...)}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import ExportConfig
from ..errors import BadInput
from .costs import DA, DA_STRATEGY, da_affordable, da_cost, lut_equivalents, rule_cost

AUTO = "auto"
LATENCY = "Latency"


@dataclass(frozen=True)
class Choice:
    strategy: str  # as hls4ml's config spells it: Latency, Resource, Resource_Unrolled, distributed_arithmetic
    reuse_factor: int
    candidates: list[dict] = field(default_factory=list)  # auto only: every choice priced
    note: str | None = None


def configured(ecfg: ExportConfig, names: list[str]) -> dict[str, Choice]:
    """The strategy and reuse factor the export section sets per layer (auto left to `choose`)."""
    out = {}
    for name in names:
        strategy = ecfg.layer_strategy.get(name, ecfg.strategy)
        reuse = ecfg.layer_reuse.get(name, ecfg.reuse_factor)
        if strategy == DA_STRATEGY and reuse != 1:
            raise BadInput(f"export: {name} uses distributed_arithmetic, which hls4ml builds only at reuse factor 1 "
                           f"(it is set to {reuse}); set export.layer_reuse.{name}: 1 or pick another strategy")
        out[name] = Choice(strategy, 1 if strategy in (AUTO, DA_STRATEGY) else reuse)
    return out


def fit_reuse_factors(choices: dict[str, Choice], model, backend: str) -> dict[str, Choice]:
    """A reuse factor hls4ml would not accept for a layer's shape becomes the closest it accepts, said once.

    A set factor often stops fitting after reduction (fc1's 8 on 350 inputs): hls4ml would
    pick the same replacement but print its own warning, and the manifest would not know.
    """
    import hls4ml

    fpga = hls4ml.backends.get_backend(backend)
    out = {}
    for name, choice in choices.items():
        kernel = model.get_layer(name).get_weights()[0] if choice.reuse_factor > 1 else None
        if kernel is None or kernel.ndim not in (2, 4):
            out[name] = choice
            continue
        n_in, n_out = int(np.prod(kernel.shape[:-1])), int(kernel.shape[-1])
        valid = fpga.get_valid_reuse_factors(n_in, n_out)
        if choice.reuse_factor in valid:
            out[name] = choice
            continue
        closest = fpga.get_closest_reuse_factor(valid, choice.reuse_factor)
        shown = ", ".join(map(str, [r for r in valid if r <= 64]))
        out[name] = Choice(choice.strategy, closest, choice.candidates,
                           f"{name}: reuse factor {choice.reuse_factor} does not fit its {n_in}x{n_out} weights; "
                           f"using {closest} (hls4ml accepts {shown}, ...)")
    return out


def choose(model, ecfg: ExportConfig, backend: str, convert_fn, names: list[str]) -> dict[str, Choice]:
    """Resolve every auto layer; `convert_fn(choices)` converts the model with those choices."""
    choices = fit_reuse_factors(configured(ecfg, names), model, backend)
    auto = [n for n, c in choices.items() if c.strategy == AUTO]
    if not auto:
        return choices
    probe = {n: (Choice(LATENCY, 1) if n in auto else c) for n, c in choices.items()}
    hls_model = convert_fn(probe)
    nodes = {layer.name: layer for layer in hls_model.get_layers()}
    for name in auto:
        choices[name] = _cheapest(nodes[name], hls_model, ecfg.max_reuse_factor)
    return choices


def _cheapest(node, hls_model, max_reuse: int) -> Choice:
    flat = np.asarray(node.weights["weight"].data).reshape(-1)
    w_bits = int(node.weights["weight"].type.precision.width)
    in_bits = int(getattr(node.get_input_variable().type.precision, "width", 0))
    nonzero = int(np.count_nonzero(flat))
    candidates = [{"strategy": LATENCY, "reuse_factor": 1,
                   **rule_cost("latency", 1, flat, w_bits, in_bits)}]
    note = None
    if node.class_name in ("Dense", "Conv1D", "Conv2D"):
        if da_affordable(nonzero, w_bits):
            lut = da_cost(node)
            candidates.append({"strategy": DA_STRATEGY, "reuse_factor": 1, "multipliers": 0, "dsp": 0,
                               "lut": int(round(lut)), "model": DA})
        else:
            note = (f"{node.name}: {nonzero:,} non-zero {w_bits}-bit weights are too many to price distributed "
                    "arithmetic in seconds; chose among the other strategies")
    if max_reuse > 1:
        backend = hls_model.config.backend
        valid = [r for r in backend.get_valid_reuse_factors(*backend.get_layer_mult_size(node)) if 1 < r <= max_reuse]
        for r in valid:
            for strategy, key in (("Resource", "resource"), ("Resource_Unrolled", "resource_unrolled")):
                candidates.append({"strategy": strategy, "reuse_factor": r,
                                   **rule_cost(key, r, _storage_order(flat, node, key), w_bits, in_bits)})
    for c in candidates:
        c["lut_equivalents"] = lut_equivalents(c["lut"], c["dsp"])
    best = min(candidates, key=lambda c: c["lut_equivalents"])  # first of equals: the simplest
    return Choice(best["strategy"], best["reuse_factor"], candidates, note)


def _storage_order(flat: np.ndarray, node, strategy: str) -> np.ndarray:
    """The weights in the order a Resource strategy stores them (transposed), for slot counting."""
    if strategy != "resource_unrolled":
        return flat
    n_in, n_out = node.model.config.backend.get_layer_mult_size(node)
    return flat.reshape(n_in, n_out).T.reshape(-1)
