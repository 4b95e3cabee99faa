"""Which split's accuracy follows test accuracy through a gradual run: validation or training.

    PYTHONPATH=. python bench/budget_measures.py --set runs_dir=/tmp/ref/runs \
        --test-data mnist-t10k:../shared/data/mnist-t10k [--set prune.filter_weight=16] [--out FILE]

The run's baseline is pruned by the run's gradual schedule with the budget off
(`max_accuracy_drop: 1`), so every round of the schedule is trained and measured whatever its
accuracy, in the flow's process settings. Per round it prints the drop from the baseline's own
accuracy on validation, training and test: the budget should follow the test drop, which the
flow never sees.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpgaprune.io import write_json  # noqa: E402
from fpgaprune.process import configure_process, reseed  # noqa: E402
from fpgaprune.report.table import table  # noqa: E402
from fpgaprune.run import Run  # noqa: E402
from fpgaprune.training.gradual import prune_gradual  # noqa: E402
from fpgaprune_cli.commands.common import add_config_arguments, config_from_args  # noqa: E402

SPLITS = (("val_accuracy", "validation"), ("train_accuracy", "training"), ("test_accuracy", "test"))


def drops(history: list[dict]) -> list[dict]:
    """Per round: fraction, and each split's accuracy drop from round 0 (points; > 0 = worse)."""
    base = history[0]
    return [{"round": r["round"], "fraction": r["fraction"],
             **{name: round(100 * (base[key] - r[key]), 2) for key, name in SPLITS}} for r in history]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(ap)
    ap.add_argument("--test-data", metavar="DATASET", help="the test split, e.g. mnist-t10k:PATH")
    ap.add_argument("--out", type=Path, default=None, help="write the rounds as JSON")
    args = ap.parse_args()
    configure_process()  # the flow's process settings (dropout generators), so rounds match `fpgaprune prune`'s
    cfg = config_from_args(args)
    cfg = replace(cfg, prune=replace(cfg.prune, mode="gradual", max_accuracy_drop=1.0,
                                     budget_splits=["validation", "training"]))
    run = Run(cfg)
    baseline = run.load("baseline")[0]
    data = run.load_data(args.test_data)
    if len(data.x_test) == 0:
        sys.exit("budget_measures: needs --test-data (the split the budget should follow)")
    reseed(cfg.seed)
    _, summary = prune_gradual(baseline, data, cfg, progress=False)
    rows = drops(summary["history"])
    print(table([[r["round"], f"{r['fraction']:.2f}", *(f"{r[n]:+.2f}" for _, n in SPLITS),
                  f"{r['training'] - r['test']:+.2f}", f"{r['validation'] - r['test']:+.2f}"] for r in rows],
                ["round", "fraction", "validation drop", "training drop", "test drop",
                 "training - test", "validation - test"]))
    if args.out is not None:
        write_json(args.out, {"prune": {"filter_weight": cfg.prune.filter_weight,
                                        "group_lasso": cfg.prune.group_lasso, "layers": cfg.prune.layers},
                              "rounds": rows, "history": summary["history"]})


if __name__ == "__main__":
    main()
