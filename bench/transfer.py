"""Benchmark of `fpgaprune transfer`: epoch time cached vs uncached, and the 0-4 -> 5-9 demo.

1. Per-epoch time of head training on the reference model (configs/mnist_cnn.yaml, mnist-5k:
   4,500 training and 500 validation images), validation included, for the last 1 and 2 Dense
   layers: from cached features (fpgaprune's default: an epoch is one XLA computation),
   uncached (the same step, the frozen layers computing each batch first), and plain Keras
   `fit` with the frozen layers' trainable=False (what one writes without fpgaprune). The first
   epoch (tracing, compiling) is left out; each figure is the median over epochs, each ratio
   the median over repeats, the three paths alternating. Beside it: the bound, MACs of the
   whole network / MACs of the head.
2. Transfer from digits 0-4 to 5-9 with 10, 30 and 100 labelled images per class against the
   same network trained from scratch on the same images, on the official MNIST test set.

    .venv/bin/python bench/transfer.py --test-data mnist-t10k:../shared/data/mnist-t10k
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from fpgaprune.analysis.counts import macs as layer_costs  # noqa: E402
from fpgaprune.config import load_config  # noqa: E402
from fpgaprune.models import build_reference_cnn  # noqa: E402
from fpgaprune.process import configure_process, reseed  # noqa: E402
from fpgaprune.run import Run  # noqa: E402
from fpgaprune.training.fit import (  # noqa: E402
    EpochTimer,
    accuracy,
    compile_model,
    fit,
    optimizer_from,
)
from fpgaprune.transfer.heads import rebuild  # noqa: E402
from fpgaprune.transfer.stage import (  # noqa: E402
    DEMO_NEW_CLASSES,
    DEMO_OLD_CLASSES,
    freeze,
    select_task,
    transfer,
)


def keras_fit_seconds(model, data, head: list[str], batch: int, epochs: int, seed: int) -> float:
    """Median epoch time of plain Keras `fit` with everything below `head` frozen."""
    reseed(seed)
    net = rebuild(model, seed=seed)
    freeze(net, head)
    net.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    net.fit(data.x_train, data.y_train, batch_size=batch, epochs=epochs, validation_data=(data.x_val, data.y_val),
            callbacks=[timer], verbose=0)  # fmt: skip
    return statistics.median(timer.seconds[1:])


def epoch_times(cfg, data, repeats: int, epochs: int) -> list[str]:
    reseed(cfg.seed)
    model = build_reference_cnn(cfg.model)
    compile_model(model, optimizer_from(cfg.train), masked=False)
    fit(model, data, 2, cfg.train.batch_size, verbose=0)
    macs = {name: before for name, (before, _) in layer_costs(model).items()}
    total = sum(macs.values())
    rows = [
        "| trains | batch | cached s/epoch | uncached s/epoch | Keras fit s/epoch | cached vs uncached | cached vs Keras fit | cache build s | MAC bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for train_last in (1, 2):
        head = ["fc1", "fc2"][-train_last:]
        bound = total / sum(macs[name] for name in head)
        for batch in (cfg.train.batch_size, 256):
            run_cfg = replace(cfg, train=replace(cfg.train, batch_size=batch))
            seconds = {"cached": [], "uncached": [], "keras": []}
            builds = []
            for _ in range(repeats):
                for cached in (True, False):
                    c = replace(run_cfg, transfer=replace(cfg.transfer, train_last=train_last, cache_features=cached, epochs=epochs, unfreeze=0))
                    _, summary = transfer(model, data, c, verbose=0)
                    assert summary["cached_features"] == cached and summary["head"]["compiled"] == "xla"
                    seconds["cached" if cached else "uncached"].append(statistics.median(summary["epoch_seconds"][1:]))
                    if cached:
                        builds.append(summary["head"]["cache_seconds"])
                seconds["keras"].append(keras_fit_seconds(model, data, head, batch, epochs, cfg.seed))
            ratio = {k: [u / c for u, c in zip(seconds[k], seconds["cached"], strict=True)] for k in ("uncached", "keras")}
            med = {k: statistics.median(v) for k, v in seconds.items()}
            rows.append(
                f"| {' + '.join(head)} | {batch} | {med['cached']:.4f} | {med['uncached']:.4f} | {med['keras']:.4f} | "
                + " | ".join(
                    f"{statistics.median(ratio[k]):.0f}x ({', '.join(f'{r:.0f}' for r in ratio[k])})" for k in ("uncached", "keras")
                )
                + f" | {statistics.median(builds):.3f} | {bound:,.0f}x |"
            )
            print(rows[-1], flush=True)
    rows.append("")
    rows.append(f"MACs per image: {', '.join(f'{k} {v:,}' for k, v in macs.items())}; total {total:,}.")
    return rows


def demo_accuracy(cfg, data, seeds: list[int], sizes: list[int]) -> list[str]:
    old = select_task(data, DEMO_OLD_CLASSES)
    variants = {
        "transfer: fc1 + new fc2 (config)": {},
        "transfer: new fc2 on the conv features (replace_top=2)": {"replace_top": 2, "train_last": 1},
    }
    results: dict[tuple[str, int], list[float]] = {}
    for seed in seeds:
        s_cfg = replace(cfg, seed=seed)
        model_cfg = replace(cfg.model, num_classes=5)
        reseed(seed)
        pretrained = build_reference_cnn(model_cfg)
        compile_model(pretrained, optimizer_from(cfg.train), masked=False)
        fit(pretrained, old, cfg.train.epochs, cfg.train.batch_size, verbose=0)
        for n in sizes:
            new = select_task(data, DEMO_NEW_CLASSES, n)
            x_eval, y_eval, split = new.eval_split()
            for name, changes in variants.items():
                t = replace(cfg.transfer, new_classes=5, **changes)
                _, summary = transfer(pretrained, new, replace(s_cfg, transfer=t), verbose=0)
                results.setdefault((name, n), []).append(summary["accuracy_after"])
            epochs = max(cfg.train.epochs, cfg.transfer.epochs)
            reseed(seed)
            scratch = build_reference_cnn(model_cfg)
            compile_model(scratch, optimizer_from(cfg.train), masked=False)
            fit(scratch, new, epochs, cfg.train.batch_size, verbose=0)
            results.setdefault((f"same network from scratch ({epochs} epochs, all layers)", n), []).append(
                accuracy(scratch, x_eval, y_eval)
            )
            print(seed, n, {k: round(v[-1], 4) for k, v in results.items() if k[1] == n}, flush=True)
    names = list(dict.fromkeys(k[0] for k in results))
    rows = [
        f"| 5-9 accuracy on the {split} split ({len(y_eval)} images), mean (min-max) of seeds {seeds} | "
        + " | ".join(f"{n} / class" for n in sizes)
        + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name in names:
        cells = [results[(name, n)] for n in sizes]
        rows.append(
            f"| {name} | "
            + " | ".join(f"{statistics.mean(c):.4f} ({min(c):.4f}-{max(c):.4f})" for c in cells)
            + " |"
        )
    return rows


def main() -> None:
    configure_process()  # an entry point: deterministic kernels for every figure
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/mnist_cnn.yaml")
    p.add_argument("--test-data", default=None, help="e.g. mnist-t10k:../shared/data/mnist-t10k")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8, help="epochs per timing run (the first is left out)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-demo", action="store_true")
    args = p.parse_args()
    cfg = load_config(args.config)
    start = time.perf_counter()
    lines = []
    if not args.skip_timing:
        lines += epoch_times(cfg, Run(cfg).load_data(), args.repeats, args.epochs) + [""]
    if not args.skip_demo:
        lines += demo_accuracy(cfg, Run(cfg).load_data(args.test_data), args.seeds, args.sizes)
    print("\n".join(lines))
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
