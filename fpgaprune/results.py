"""What a flow step returns: the figures every stage shares, plus the stage's own summary.

The common fields are written into each stage's summary.json under "result", so the report
and any caller read a stage's accuracy without knowing which stage made it.

    result = run_flow(cfg, steps=["prune"]).results["prune"]
    result.test_accuracy, result.kernels_pruned, result.summary["history"]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class StageResult:
    """One step's outcome. `summary` is the stage's summary.json (its own figures)."""

    stage: str
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    kernels_pruned: int | None = None  # over every pruned layer
    kernels_total: int | None = None
    folder: Path | None = None  # where the step saved its output
    reused: bool = False  # an existing output was kept, not made again
    summary: dict = field(default_factory=dict, repr=False)
    model: object = field(default=None, repr=False, compare=False)  # the stage's model, if any

    @property
    def accuracy(self) -> float | None:
        """Test accuracy where the run has a test split, else validation accuracy."""
        return self.test_accuracy if self.test_accuracy is not None else self.val_accuracy

    @property
    def accuracy_split(self) -> str:
        return "test" if self.test_accuracy is not None else "validation"

    def common(self) -> dict:
        """The shared fields as they are stored in summary.json["result"]."""
        keys = ("val_accuracy", "test_accuracy", "kernels_pruned", "kernels_total")
        return {k: v for k, v in asdict(replace(self, summary={}, model=None)).items() if k in keys}

    def with_summary(self) -> dict:
        """The summary with the common fields added (what the step writes)."""
        return {**self.summary, "result": self.common()}


def result_of(stage: str, summary: dict | None) -> StageResult | None:
    """The StageResult a saved summary.json holds (None for a stage not run or saved without one)."""
    if not summary or not isinstance(summary.get("result"), dict):
        return None
    common = summary["result"]
    return StageResult(stage, **{k: common.get(k) for k in ("val_accuracy", "test_accuracy", "kernels_pruned",
                                                            "kernels_total")}, summary=summary)


def accuracies(scores: dict) -> dict:
    """val/test accuracy out of `evaluate()`'s dict."""
    return {"val_accuracy": scores.get("val_accuracy"), "test_accuracy": scores.get("test_accuracy")}
