"""What a trial is scored on, read from the flow's results (never recomputed here).

accuracy is the quantized model's validation accuracy (the test split is reported beside it,
never optimised on); lut_equivalents and dsp are the accounting's totals of the first backend
(`hw.accounting.totals`), so a better cost model there is picked up without a change here;
latency is a proxy in cycles per image: in an io_stream design the slowest layer sets the pace,
and a layer takes about reuse factor cycles per output pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DIRECTIONS = {"accuracy": "maximize", "lut_equivalents": "minimize", "dsp": "minimize", "latency": "minimize"}
LABELS = {"accuracy": "val acc", "lut_equivalents": "LUT-eq", "dsp": "DSP", "latency": "cycles"}


@dataclass(frozen=True)
class Outcome:
    """A finished trial's figures: every objective, whether searched or not, plus the test accuracy."""

    accuracy: float
    test_accuracy: float | None
    lut_equivalents: int
    dsp: int
    lut: int
    latency: int
    kernels_pruned: int | None
    # Seconds per flow step (prune, reduce, quantize, export, accounting).
    steps: dict = field(default_factory=dict)

    def values(self, objectives: list[str]) -> list[float]:
        return [float(getattr(self, name)) for name in objectives]

    def attrs(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def latency_proxy(layers: list[dict]) -> int:
    """Cycles per image of the slowest layer: output pixels x reuse factor."""
    cycles = [row["mults_per_image_unpruned"] // max(1, row["weights"]) * row["reuse_factor"] for row in layers]
    return int(max(cycles, default=0))


def outcome(flow, backend: str) -> Outcome:
    """The figures of one trial's flow (its quantize and accounting results)."""
    quantized = flow.results["quantize"]
    table = flow.results["accounting"].summary["backends"][backend]
    total = table["total"]
    return Outcome(
        accuracy=float(quantized.val_accuracy if quantized.val_accuracy is not None else quantized.accuracy),
        test_accuracy=quantized.test_accuracy,
        lut_equivalents=int(total["lut_equivalents"]),
        dsp=int(total["dsp"]),
        lut=int(total["lut"]),
        latency=latency_proxy(table["layers"]),
        kernels_pruned=quantized.kernels_pruned,
        steps={name: round(seconds, 2) for name, seconds in flow.seconds.items()},
    )
