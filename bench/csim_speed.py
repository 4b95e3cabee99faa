"""C-simulation speed of an exported project: hls4ml's own build against fpgaprune's faster
build (`fpgaprune.hw.simbuild`), in 1 and 2 processes, on the same images.

Both builds are compiled in temporary copies (the project is only read); each repeat times
every (processes, build) pair once, interleaved, and the table gives the medians. The outputs of
the two builds are compared on every image: they must be identical.

    .venv/bin/python bench/csim_speed.py --project hls_projects/mnist_cnn/Vivado \\
        --test-data mnist-t10k:../shared/data/mnist-t10k --images 2000
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

BUILDS = {"hls4ml": False, "fast": True}  # name -> compile_copy(fast=...)


def images_per_second(hls_model, x, workers: int) -> tuple[float, object]:
    from fpgaprune.hw.csim import predict

    start = time.perf_counter()
    y = predict(hls_model, x, workers)
    return len(x) / (time.perf_counter() - start), y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, help="an exported project, e.g. hls_projects/mnist_cnn/Vivado")
    parser.add_argument("--test-data", required=True, help="e.g. mnist-t10k:../shared/data/mnist-t10k")
    parser.add_argument("--images", type=int, default=2000, help="the first N test images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="process counts to time, comma-separated")
    args = parser.parse_args(argv)

    import numpy as np

    from fpgaprune.data import load_dataset
    from fpgaprune.hw.csim import compile_copy

    x = load_dataset(args.test_data).eval_split()[0][: args.images]
    workers = [int(w) for w in args.workers.split(",")]
    rates = {(w, b): [] for w in workers for b in BUILDS}
    with tempfile.TemporaryDirectory(prefix="fpgaprune-csim-speed-") as tmp:
        compiled = {b: compile_copy(Path(args.project), Path(tmp) / b, fast=f) for b, f in BUILDS.items()}
        outputs = {}
        for _ in range(args.repeats):
            for w in workers:
                for b, c in compiled.items():
                    rate, y = images_per_second(c.hls_model, x, w)
                    rates[(w, b)].append(rate)
                    outputs.setdefault(b, y)
    identical = np.array_equal(outputs["hls4ml"], outputs["fast"])

    command = "$ .venv/bin/python bench/csim_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\n```\n{command}\n```\n")
    for b, c in compiled.items():
        print(f"- {b} build: compile {c.seconds:.1f} s, {c.build or 'hls4ml build_lib.sh as written'}")
    print(f"- outputs of the two builds identical on all {len(x)} images: {identical}\n")
    print("| processes | hls4ml build, images/s | fast build, images/s | per process (hls4ml -> fast) "
          "| speed-up | median of |\n|---|---|---|---|---|---|")
    for w in workers:
        old, new = (statistics.median(rates[(w, b)]) for b in BUILDS)
        ratio = statistics.median(n / o for o, n in zip(rates[(w, "hls4ml")], rates[(w, "fast")], strict=True))
        print(f"| {w} | {old:.0f} | {new:.0f} | {old / w:.0f} -> {new / w:.0f} | {ratio:.1f}x | {args.repeats} |")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
