"""Reference-model figures for the HLS stages: export and compile time, C-sim throughput and
agreement with QKeras on the whole test set, non-zero multiplications pruned vs unpruned.

Needs runs/<name>/pruned (`make prune`). Works in memory and in a temporary folder: the run's
saved stages and hls_projects/ are not touched.

    .venv/bin/python bench/hls_reference.py --test-data mnist-t10k:../shared/data/mnist-t10k
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/mnist_cnn.yaml")
    parser.add_argument("--runs-dir", default=None, help="folder holding <name>/pruned (default: the config's)")
    parser.add_argument("--test-data", default=None, help="e.g. mnist-t10k:../shared/data/mnist-t10k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=None, help="C-simulate only the first N test images")
    parser.add_argument("--throughput-images", type=int, default=1000)
    args = parser.parse_args(argv)

    import shutil
    from dataclasses import replace

    from fpgaprune.config import load_config
    from fpgaprune.flow import Options, run_flow
    from fpgaprune.hw.accounting import count_project, format_table
    from fpgaprune.hw.csim import compile_copy, predict
    from fpgaprune.run import Run

    cfg = load_config(args.config)
    source = Run(replace(cfg, runs_dir=args.runs_dir) if args.runs_dir else cfg)
    source.load("pruned")  # a missing pruned stage says how to make it
    quiet = Options(test_data=args.test_data, verbose=0, csim_images=args.images, say=lambda line: None)

    with tempfile.TemporaryDirectory(prefix="fpgaprune-bench-") as tmp:
        # The flow runs on a copy of the pruned stage: the run's own stages and projects stay as they are.
        cfg = replace(cfg, runs_dir=f"{tmp}/runs", export=replace(cfg.export, output_dir=f"{tmp}/hls"))
        run = Run(cfg)
        shutil.copytree(source.stage_dir("pruned"), run.stage_dir("pruned"))
        flow = run_flow(cfg, start="quantize", stop="accounting", options=quiet)
        quantize_seconds = flow.seconds["quantize"]
        qsummary = flow.results["quantize"].summary
        export_times = [flow.seconds["export"]]
        for _ in range(args.repeats - 1):
            export_times.append(run_flow(cfg, steps=["export"], options=replace(quiet, force=True)).seconds["export"])
        export_median = statistics.median(export_times)
        folder = run.project_dir("Vivado")
        data = run.load_data(args.test_data)
        x, _, _ = data.eval_split()
        x = x[: args.images]
        compile_times = []
        for i in range(args.repeats):
            compiled = compile_copy(folder, Path(tmp) / f"compile{i}")
            hls_model = compiled.hls_model
            compile_times.append(compiled.seconds)
        throughput = {}
        n = min(args.throughput_images, len(x))
        for workers in (1, 2):
            med, _ = median_seconds(lambda w=workers: predict(hls_model, x[:n], w), args.repeats)
            throughput[workers] = n / med
        summary = flow.results["csim"].summary["backends"]["Vivado"]
        accounting = flow.results["accounting"].summary["backends"]["Vivado"]
        leaks = accounting["masked_nonzero_in_export"]
        table = format_table(count_project(folder))

    split = "test" if len(data.x_test) else "validation"
    command = "$ .venv/bin/python bench/hls_reference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\n```\n{command}\n```\n")
    print(f"Quantized model: {split} accuracy {qsummary['float'][f'{split}_accuracy']:.4f} (float, pruned) -> "
          f"{qsummary[f'{split}_accuracy']:.4f} (QKeras, {qsummary['finetune_epochs']} QAT epochs, "
          f"{quantize_seconds:.0f} s); max |quantized masked weight| {qsummary['masked_max_abs_quantized']:g}\n")
    print("| figure | value |\n|---|---|")

    def row(figure: str, value: str) -> None:
        print(f"| {figure} | {value} |")

    def listed(times: list[float]) -> str:
        return ", ".join(f"{t:.1f}" for t in times)

    row(f"export (hls4ml convert + write), median of {args.repeats}", f"{export_median:.1f} s ({listed(export_times)})")
    row(f"g++ compile (hls4ml compile), median of {args.repeats}",
        f"{statistics.median(compile_times):.1f} s ({listed(compile_times)})")
    for workers, rate in throughput.items():
        row(f"C-sim throughput, {workers} process(es), {n} images, median of {args.repeats}", f"{rate:.1f} images/s")
    row(f"C-sim of all {summary['images']} {split} images ({summary['workers']} processes)",
        f"{summary['predict_seconds']:.0f} s, {summary['images_per_second']:.1f} images/s")
    row("argmax agreement C-sim vs QKeras",
        f"{summary['argmax_agreement']:.2%} ({summary['argmax_disagreements']} disagreements)")
    row("bit-exact images",
        f"{summary['bit_exact_images']} / {summary['images']} (max diff {summary['max_diff_lsb']:g} LSB)")
    row("accuracy C-sim / QKeras", f"{summary['accuracy_csim']:.4f} / {summary['accuracy_qkeras']:.4f}")
    row("simulated sources identical to the export", str(summary["sources_identical_to_export"]))
    row("non-zero exported weights in masked kernels", str(sum(leaks.values())))
    for layer in accounting["layers"]:
        if layer["masked_weights"]:
            row(f"{layer['name']}: pruned fraction / non-zero multiplications cut",
                f"{layer['masked_weights'] / layer['weights']:.1%} / {1 - layer['nonzero'] / layer['weights']:.1%}")
    row("all conv layers: non-zero multiplications per image cut", f"{accounting['conv_nonzero_mults_cut']:.1%}")
    print(f"\n```\n{table}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
