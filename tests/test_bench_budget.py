"""bench/budget_measures.py: each split's drop from the baseline, per gradual round."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import budget_measures  # noqa: E402


def test_drops_are_points_below_round_zero_per_split():
    history = [{"round": 0, "fraction": 0.0, "val_accuracy": 0.974, "train_accuracy": 0.9984, "test_accuracy": 0.9747},
               {"round": 1, "fraction": 0.9, "val_accuracy": 0.976, "train_accuracy": 0.9822, "test_accuracy": 0.9567}]
    assert budget_measures.drops(history) == [
        {"round": 0, "fraction": 0.0, "validation": 0.0, "training": 0.0, "test": 0.0},
        {"round": 1, "fraction": 0.9, "validation": -0.2, "training": 1.62, "test": 1.8}]
