"""The unpruned network at the same bit widths, priced per layer by da4ml as a DA export prices it.

    PYTHONPATH=. python bench/unpruned_cost.py --set runs_dir=/tmp/ref3/runs [--project DIR] [--out FILE]

The run's baseline is quantized with the run's own quantize settings (in a scratch copy of the
run, so the run is untouched), converted by hls4ml with Latency at reuse factor 1 everywhere, and
each conv/dense layer is priced twice: by da4ml (`hw.costs.da_cost`, the call hls4ml's
distributed-arithmetic pass makes, so it equals the `da_kernel_cost` of a DA export) and by the
multiplier rule. `--project` puts an exported project's accounting (its LUT-equivalents) beside it.
da4ml's solve of the reference's unpruned fc1 (25,600 weights) takes minutes and gigabytes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpgaprune.flow.options import Options  # noqa: E402
from fpgaprune.flow.runner import run_flow  # noqa: E402
from fpgaprune.hw.costs import da_cost, lut_equivalents, rule_cost  # noqa: E402
from fpgaprune.hw.export import convert, weight_layer_names  # noqa: E402
from fpgaprune.io import read_json, write_json  # noqa: E402
from fpgaprune.report.table import table  # noqa: E402
from fpgaprune.run import ACCOUNTING_FILE, Run  # noqa: E402
from fpgaprune_cli.commands.common import add_config_arguments, config_from_args  # noqa: E402


def quantized_baseline(cfg, scratch: Path):
    """The run's baseline through the run's quantize step, in a scratch copy of the run."""
    source = Run(cfg).stage_dir("baseline")
    qcfg = replace(cfg, runs_dir=str(scratch / "runs"), quantize=replace(cfg.quantize, start_from="baseline"))
    shutil.copytree(source, Run(qcfg).stage_dir("baseline"))
    run_flow(qcfg, steps=["quantize"], options=Options(progress=False, verbose=0))
    return Run(qcfg).load("quantized")[0]


def price(qmodel, cfg, scratch: Path) -> list[dict]:
    ecfg = replace(cfg.export, strategy="Latency", reuse_factor=1, layer_strategy={}, layer_reuse={})
    hls_model, _ = convert(qmodel, ecfg, "Vitis", scratch / "hls")
    names = set(weight_layer_names(qmodel))
    rows = []
    for node in hls_model.get_layers():
        if node.name not in names:
            continue
        flat = np.asarray(node.weights["weight"].data).reshape(-1)
        w_bits = int(node.weights["weight"].type.precision.width)
        in_bits = int(node.get_input_variable().type.precision.width)
        start = time.perf_counter()
        da = da_cost(node)
        seconds = time.perf_counter() - start
        rule = rule_cost("latency", 1, flat, w_bits, in_bits)
        rows.append({"layer": node.name, "weights": int(flat.size), "nonzero": int(np.count_nonzero(flat)),
                     "bits": f"{w_bits}/{in_bits}", "da4ml_lut": int(round(da)), "rule_lut": rule["lut"],
                     "rule_dsp": rule["dsp"], "rule_lut_equivalents": lut_equivalents(rule["lut"], rule["dsp"]),
                     "seconds": round(seconds, 1)})
        print(f"{node.name}: da4ml {da:,.0f} LUT in {seconds:.0f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(ap)
    ap.add_argument("--project", type=Path, default=None, help="an exported project whose accounting to compare")
    ap.add_argument("--out", type=Path, default=None, help="write the rows (and the comparison) as JSON")
    args = ap.parse_args()
    cfg = config_from_args(args)
    with tempfile.TemporaryDirectory(prefix="unpruned-cost-") as tmp:
        rows = price(quantized_baseline(cfg, Path(tmp)), cfg, Path(tmp))
    total = {"layer": "total", **{k: sum(r[k] for r in rows) for k in
                                  ("weights", "nonzero", "da4ml_lut", "rule_lut", "rule_lut_equivalents", "seconds")}}
    cols = ["layer", "weights", "nonzero", "bits", "da4ml_lut", "rule_lut_equivalents", "seconds"]
    print(table([[r.get(c, "") for c in cols] for r in [*rows, total]],
                ["layer", "weights", "non-zero", "bits w/a", "da4ml LUT", "rule LUT-eq", "solve s"]))
    out = {"unpruned": rows, "total": total}
    if args.project is not None:
        exported = read_json(args.project / ACCOUNTING_FILE)
        eq = exported["total"]["lut_equivalents"]
        out["exported_lut_equivalents"] = eq
        out["ratio_da4ml"] = total["da4ml_lut"] / eq
        print(f"{args.project}: {eq:,} LUT-equivalents exported; unpruned by da4ml {total['da4ml_lut']:,} "
              f"= {out['ratio_da4ml']:.1f}x")
    if args.out is not None:
        write_json(args.out, out)


if __name__ == "__main__":
    main()
