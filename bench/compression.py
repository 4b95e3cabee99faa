"""Compression benchmark: kernel-level pruning against what FPGA users would use instead.

Same model (configs/mnist_cnn.yaml), data (mnist-5k: 4,500 training and 500 validation
images), training budget and test set (the official 10k MNIST test images) for every method
in `compression_methods.METHODS`. Per seed: the baseline trains `train.epochs`; then every
method gets the same `--epochs` extra epochs (Adam at prune.learning_rate), the unpruned
reference too. Each method removes the same share of every conv layer's weights (conv1 and
conv2), so the same share of the conv multiplications, whatever it removes (2-D kernels,
filters or single weights).

Per point (method, target, seed) it records the test accuracy, the non-zero conv
multiplications per image, and after post-training quantization of the conv weights to 8 and
6 bits (fpgaprune.hw.quantize, no fine-tuning: no extra epochs) the quantized accuracy, the
non-zero multiplications left and fpgaprune.hw.costs's multiplier / DSP / LUT estimate
(Latency strategy, reuse factor 1; also the multipliers of a Resource_Unrolled design at
reuse factors 4, 8, 32), and the method's wall time.

    python bench/compression.py            # full: 3 seeds x 5 targets, 20-40 min on 2 cores
    python bench/compression.py --quick    # 1 seed x 2 targets, a few minutes (smoke run)
    python bench/compression.py --seeds 1 --no-results-md --out s1.json   # one seed; then
    python bench/compression.py --merge s1.json s2.json s3.json --out bench/results/compression_reference.json
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compression_design import design  # noqa: E402
from compression_methods import LAYERS, METHODS, layers_of  # noqa: E402
from compression_networks import NETWORKS, network_config  # noqa: E402
from compression_report import (  # noqa: E402
    LUT_HEADING,
    lut_block,
    lut_markers,
    plot,
    plot_lut,
    results_block,
    update_block,
    update_results_md,
)

from fpgaprune.config import LayerBits, load_config  # noqa: E402
from fpgaprune.errors import BadInput  # noqa: E402
from fpgaprune.graph import prepare_model  # noqa: E402
from fpgaprune.hw.costs import multipliers, rule_cost  # noqa: E402
from fpgaprune.hw.quantize import build_quantized_model, quantized_kernels  # noqa: E402
from fpgaprune.io import read_json, write_json  # noqa: E402
from fpgaprune.masks import conv_layers  # noqa: E402
from fpgaprune.models import build_model  # noqa: E402
from fpgaprune.process import configure_process, reseed  # noqa: E402
from fpgaprune.run import Run  # noqa: E402
from fpgaprune.training.fit import accuracy, train_baseline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FRACTIONS = (0.5, 0.7, 0.8, 0.9, 0.95)
SEEDS = (1, 2, 3)
QUICK_FRACTIONS = (0.7, 0.9)
BITS = (8, 6)
# Reuse factors at which Resource_Unrolled multipliers are also counted (where hls4ml allows
# them for the layer): a multiplier serves `rf` weights and is dropped only if all are zero.
UNROLLED_RFS = (1, 4, 8, 32)
T10K = f"mnist-t10k:{ROOT.parent / 'shared' / 'data' / 'mnist-t10k'}"


def bench_config(path, layers=LAYERS):
    """The reference config, its prune section set to prune `layers` (the methods read it)."""
    cfg = load_config(path)
    return replace(cfg, prune=replace(cfg.prune, layers=list(layers)))


def conv_geometry(model: tf.keras.Model) -> dict[str, dict]:
    """Per conv layer: kernel shape and output pixels (a weight costs one mult per pixel)."""
    return {
        layer.name: {"kernel_shape": tuple(int(s) for s in layer.kernel.shape),
                     "pixels": int(np.prod(layer.output_shape[1:3]))}
        for layer in conv_layers(model)
    }


def nonzero_mults(kernels: dict[str, np.ndarray], geometry: dict[str, dict]) -> dict[str, int]:
    """Non-zero multiplications per image, per conv layer: non-zero weights x output pixels."""
    return {name: int(np.count_nonzero(kernels[name])) * geometry[name]["pixels"] for name in geometry}


def target_nonzero_mults(geometry: dict[str, dict], fraction: float, granularity: str | None,
                         layers: list[str] | None = None) -> int:
    """The non-zero conv multiplications a method that hits its target exactly leaves.

    Per pruned layer (`layers`, default all), ceil(fraction x units) units are pruned (fpgaprune's rounding: at least the
    fraction); a unit is a 2-D kernel (kh*kw weights), a filter (kh*kw*cin) or one weight.
    """
    total = 0
    for name, g in geometry.items():
        kh, kw, cin, cout = g["kernel_shape"]
        units, size = {"kernel": (cin * cout, kh * kw), "filter": (cout, kh * kw * cin),
                       "weight": (kh * kw * cin * cout, 1), None: (1, kh * kw * cin * cout)}[granularity]
        pruned = math_ceil(fraction * units) if granularity and (layers is None or name in layers) else 0
        total += (units - pruned) * size * g["pixels"]
    return total


def math_ceil(x: float) -> int:
    return int(np.ceil(x - 1e-9))


def hardware(model, data, cfg, bits: int, geometry: dict[str, dict]) -> dict:
    """Post-training quantization of the conv weights to `bits`, then the accounting's figures.

    Dense layers stay at 8 bits so the figure isolates the conv layers. Multipliers, DSP and
    LUT per fpgaprune.hw.costs.rule_cost (Latency, reuse factor 1: one multiplier per non-zero weight;
    hls4ml's VivadoDSPEstimator puts weights under 9 bits in LUTs); also the multipliers of a
    Resource_Unrolled design at UNROLLED_RFS, per layer.
    """
    q = cfg.quantize
    qcfg = replace(q, weight_bits=8, weight_integer=0,
                   layers={name: LayerBits(bits=bits, integer=0) for name in geometry})
    qmodel = build_quantized_model(model, qcfg)
    kernels = {name: k for name, k in quantized_kernels(qmodel).items() if name in geometry}
    out = {"test_accuracy": accuracy(qmodel, data.x_test, data.y_test), "multipliers": 0, "dsp": 0, "lut": 0,
           "resource_unrolled": {}}
    for i, (name, kernel) in enumerate(kernels.items()):
        input_bits = q.input_bits if i == 0 else q.activation_bits
        cost = rule_cost("latency", 1, kernel.reshape(-1), bits, input_bits)
        for key in ("multipliers", "dsp", "lut"):
            out[key] += cost[key]
        # hls4ml stores Resource conv weights as (F, H, W, C): a multiplier serves rf
        # consecutive input channels of one tap of one filter, not the taps of a 2-D kernel.
        storage = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1)
        kh, kw, cin, cout = kernel.shape
        out["resource_unrolled"][name] = {
            str(rf): multipliers("resource_unrolled", rf, storage)
            for rf in UNROLLED_RFS if rf in valid_reuse_factors(kh * kw * cin, cout)
        }
    out["conv_mults_nonzero"] = sum(nonzero_mults(kernels, geometry).values())
    return out


@functools.lru_cache
def valid_reuse_factors(n_in: int, n_out: int) -> tuple[int, ...]:
    """The reuse factors hls4ml's Vivado backend accepts for a layer of n_in x n_out."""
    import hls4ml

    return tuple(hls4ml.backends.get_backend("Vivado").get_valid_reuse_factors(n_in, n_out))


def run_point(method: str, baseline, fraction: float, data, cfg, epochs: int, bits=BITS) -> dict:
    """Run one method at one target on one seed's baseline; the result record."""
    func, granularity, _ = METHODS[method]
    train_data = replace(data, x_test=data.x_test[:0], y_test=data.y_test[:0])
    reseed(cfg.seed)
    start = time.perf_counter()
    model, info = func(baseline, fraction, train_data, cfg, epochs)
    seconds = time.perf_counter() - start
    geometry = conv_geometry(model)
    kernels = {layer.name: layer.kernel.numpy() for layer in conv_layers(model)}
    per_layer = nonzero_mults(kernels, geometry)
    total = sum(g["pixels"] * int(np.prod(g["kernel_shape"])) for g in geometry.values())
    nonzero = sum(per_layer.values())
    return {
        "method": method,
        "granularity": granularity,
        "target_fraction": fraction,
        "seed": cfg.seed,
        "test_accuracy": accuracy(model, data.x_test, data.y_test),
        "val_accuracy": accuracy(model, data.x_val, data.y_val),
        "conv_mults_total": total,
        "conv_mults_nonzero": nonzero,
        "conv_mults_removed": 1 - nonzero / total,
        "target_conv_mults_nonzero": target_nonzero_mults(geometry, fraction, granularity, layers_of(cfg)),
        "nonzero_mults_per_layer": per_layer,
        "nonzero_weights_per_layer": {n: int(np.count_nonzero(k)) for n, k in kernels.items()},
        "quantized": {str(b): hardware(model, data, cfg, b, geometry) for b in bits},
        "design": design(model, data, cfg, layers_of(cfg)),
        "seconds": seconds,
        **info,
    }


def train_seed_baseline(cfg, data, baseline_epochs: int | None = None):
    """The seed's baseline (the config's train section; the test split is not used)."""
    train_data = replace(data, x_test=data.x_test[:0], y_test=data.y_test[:0])
    if baseline_epochs is not None:
        cfg = replace(cfg, train=replace(cfg.train, epochs=baseline_epochs))
    reseed(cfg.seed)
    start = time.perf_counter()
    model, summary = train_baseline(build_model(cfg.model), train_data, cfg, verbose=0)
    model = prepare_model(model, data.x_train[:256])[0]  # BN folded, as the baseline step folds a user's model
    return model, {"seed": cfg.seed, "epochs": summary["epochs"], "seconds": time.perf_counter() - start,
                   "test_accuracy": accuracy(model, data.x_test, data.y_test),
                   "val_accuracy": summary["val_accuracy"]}


def summarize(records: list[dict]) -> list[dict]:
    """Mean (and spread of accuracy) over seeds, per (method, target)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["target_fraction"]), []).append(r)

    def mean(rows, *keys):
        values = [_dig(r, keys) for r in rows]
        return statistics.fmean(values) if None not in values else None

    def std(rows, *keys):
        values = [_dig(r, keys) for r in rows]
        return statistics.stdev(values) if len(values) > 1 and None not in values else 0.0

    out = []
    for (method, fraction), rows in groups.items():
        row = {"method": method, "target_fraction": fraction, "seeds": [r["seed"] for r in rows],
               "test_accuracy": mean(rows, "test_accuracy"), "test_accuracy_std": std(rows, "test_accuracy"),
               "conv_mults_nonzero": mean(rows, "conv_mults_nonzero"),
               "conv_mults_removed": mean(rows, "conv_mults_removed"),
               "target_conv_mults_nonzero": mean(rows, "target_conv_mults_nonzero"),
               "seconds": mean(rows, "seconds"), "quantized": {},
               "design": {key: mean(rows, "design", key) for key in ("test_accuracy", "lut_equivalents", "parameters")}}
        row["design"].update(test_accuracy_std=std(rows, "design", "test_accuracy"),
                             lut_equivalents_std=std(rows, "design", "lut_equivalents"),
                             lut_equivalents_range=[min(_dig(r, ("design", "lut_equivalents")) for r in rows),
                                                    max(_dig(r, ("design", "lut_equivalents")) for r in rows)],
                             collapsed_seeds=[r["seed"] for r in rows if r["design"].get("collapsed")])
        for bits in rows[0]["quantized"]:
            row["quantized"][bits] = {
                key: mean(rows, "quantized", bits, key)
                for key in ("test_accuracy", "conv_mults_nonzero", "multipliers", "dsp", "lut")
            }
            row["quantized"][bits]["test_accuracy_std"] = std(rows, "quantized", bits, "test_accuracy")
            unrolled = rows[0]["quantized"][bits].get("resource_unrolled", {})
            row["quantized"][bits]["resource_unrolled"] = {
                layer: {rf: mean(rows, "quantized", bits, "resource_unrolled", layer, rf) for rf in counts}
                for layer, counts in unrolled.items()
            }
        out.append(row)
    return out


def _dig(record, keys):
    for key in keys:
        record = record[key]
    return record


def run_benchmark(cfg, data, seeds, fractions, methods, epochs, baseline_epochs=None, log=print) -> dict:
    """Every method at every target on every seed; records, baselines and failed points.

    A point that fails is recorded (method, target, seed, error) and the run goes on with the
    method's other points: one seed's failure says nothing about the next target or seed.
    """
    records, baselines, failures = [], [], []
    for seed in seeds:
        scfg = replace(cfg, seed=seed)
        baseline, info = train_seed_baseline(scfg, data, baseline_epochs)
        baselines.append(info)
        log(f"seed {seed}: baseline {info['epochs']} epochs, test {info['test_accuracy']:.4f} ({info['seconds']:.0f} s)")
        for method in methods:
            for fraction in ([0.0] if method == "unpruned" else fractions):
                try:
                    r = run_point(method, baseline, fraction, data, scfg, epochs)
                except Exception as exc:  # a competitor that cannot run is recorded, not fatal
                    text = str(exc).strip()
                    error = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
                    failures.append({"method": method, "target_fraction": fraction, "seed": seed, "error": error})
                    log(f"  {method} {fraction:.0%}: FAILED ({error})")
                    continue
                records.append(r)
                q = r["quantized"]
                d = r["design"]
                log(f"  {method:<16} {fraction:>4.0%}: test {r['test_accuracy']:.4f}, conv mults "
                    f"{r['conv_mults_nonzero']:>9,} ({r['conv_mults_removed']:.1%} removed), "
                    + ", ".join(f"{b}-bit {q[b]['test_accuracy']:.4f}" for b in q)
                    + f"; design {d['test_accuracy']:.4f} at {d['lut_equivalents']:,} LUT-eq"
                    + (" (collapsed: a constant)" if d.get("collapsed") else "")
                    + f", {r['seconds']:.1f} s")
    return {"records": records, "baselines": baselines, "failures": failures}


def main(argv=None) -> int:
    configure_process()  # an entry point: deterministic kernels for every figure
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 targets: a smoke run of a few minutes")
    ap.add_argument("--config", default=str(ROOT / "configs" / "mnist_cnn.yaml"))
    ap.add_argument("--test-data", default=T10K, help="dataset whose test split gives the accuracy")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--fractions", type=float, nargs="+", help="share of conv multiplications removed")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--epochs", type=int, default=8, help="extra training epochs, the same for every method")
    ap.add_argument("--layers", nargs="+", default=LAYERS, help="conv layers pruned, each by the target share")
    ap.add_argument("--network", choices=NETWORKS, default="reference", help="the network pruned (compression_networks)")
    ap.add_argument("--baseline-epochs", type=int, default=None, help="baseline epochs (default: the config's train.epochs)")
    ap.add_argument("--out", help="JSON output (default bench/results/compression[_quick].json; the PNG beside it)")
    ap.add_argument("--no-results-md", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="merge per-seed runs of one protocol into --out (its plots, its hardware-cost block)")
    args = ap.parse_args(argv)
    if args.merge:
        if not args.out:
            ap.error("--merge needs --out")
        try:
            result = merge_results([read_json(path) for path in args.merge])
        except (BadInput, ValueError) as exc:
            print(f"compression: {exc}", file=sys.stderr)
            return 2
        except KeyError as exc:
            print(f"compression: --merge reads this script's JSON results; one has no {exc} field", file=sys.stderr)
            return 2
        write_outputs(result, Path(args.out), update_md=not args.no_results_md, multiplication_block=False)
        return 0

    seeds = args.seeds or ([SEEDS[0]] if args.quick else list(SEEDS))
    fractions = args.fractions or list(QUICK_FRACTIONS if args.quick else FRACTIONS)
    stem = "compression" + ("" if args.network == "reference" else f"_{args.network}") + ("_quick" if args.quick else "")
    out = Path(args.out) if args.out else RESULTS / f"{stem}.json"
    cfg = network_config(bench_config(args.config, args.layers), args.network)
    data = Run(cfg).load_data(args.test_data)
    command = "python bench/compression.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{command}\n{len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test images; "
          f"seeds {seeds}; targets {fractions}; {args.epochs} extra epochs", flush=True)
    started = time.perf_counter()
    run = run_benchmark(cfg, data, seeds, fractions, args.methods, args.epochs, args.baseline_epochs,
                        log=lambda line: print(line, flush=True))
    result = {
        "command": command.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, TF {tf.__version__}",
        "protocol": {
            "config": os.path.relpath(args.config, ROOT), "network": args.network, "test_data": data.test_name,
            "split_sizes": data.sizes(), "seeds": seeds, "target_fractions": fractions,
            "layers": layers_of(cfg), "baseline_epochs": args.baseline_epochs or cfg.train.epochs,
            "extra_epochs": args.epochs,
            "optimizer": cfg.prune.optimizer or cfg.train.optimizer,
            "learning_rate": cfg.prune.learning_rate or cfg.train.learning_rate,
            "batch_size": cfg.train.batch_size, "bits": list(BITS),
        },
        "methods": {name: {"granularity": g, "description": d} for name, (_, g, d) in METHODS.items()
                    if name in args.methods},
        "baselines": run["baselines"],
        "failures": run["failures"],
        "summary": summarize(run["records"]),
        "records": run["records"],
        "wall_seconds": time.perf_counter() - started,
    }
    write_outputs(result, out, update_md=not args.quick and not args.no_results_md)
    return 0


def write_outputs(result: dict, out: Path, update_md: bool, multiplication_block: bool = True) -> None:
    """The JSON, both plots and the RESULTS.md blocks of one result (a run's or a merge's)."""
    network = result["protocol"].get("network", "reference")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    plot(result, out.with_suffix(".png"))
    lut_png = out.with_name(out.stem + "_lut.png")
    plot_lut(result, lut_png)
    block = results_block(result, out.with_suffix(".png"), ROOT)
    lut = lut_block(result, lut_png, ROOT)
    print(block if network == "reference" and multiplication_block else "", lut, sep="\n")
    if update_md:
        if network == "reference" and multiplication_block:
            update_results_md(ROOT / "bench" / "RESULTS.md", block)
        update_block(ROOT / "bench" / "RESULTS.md", *lut_markers(network), lut, LUT_HEADING)
    print(f"wrote {out}, {out.with_suffix('.png')} and {lut_png} ({result['wall_seconds']:.0f} s of runs)")


def merge_results(parts: list[dict]) -> dict:
    """One result from runs of the same protocol on different seeds or different methods.

    A seed's points depend only on that seed (its baseline is trained from it, every method
    reseeds), so per-seed runs side by side follow the protocol of one run over all the seeds;
    runs of further methods (or of points that failed before) on the same seeds join them when
    their baselines agree. wall_seconds is the sum of theirs. A point recorded by one part
    replaces that point's failure in another.
    """
    def protocol(part):  # each record names its seed and target
        return {k: v for k, v in part["protocol"].items() if k not in ("seeds", "target_fractions")}

    def point(r):
        return r["method"], r["target_fraction"], r["seed"]

    first = parts[0]
    for part in parts[1:]:
        if protocol(part) != protocol(first):
            differing = sorted(k for k in protocol(first) if protocol(part).get(k) != protocol(first)[k])
            raise ValueError(f"cannot merge runs of different protocols (they differ in {', '.join(differing)})")
    baselines: dict[int, dict] = {}
    for part in parts:
        for b in part["baselines"]:
            seen = baselines.setdefault(b["seed"], b)
            if seen["test_accuracy"] != b["test_accuracy"]:
                raise ValueError(f"cannot merge: seed {b['seed']}'s baseline differs between runs "
                                 f"(test accuracy {seen['test_accuracy']} and {b['test_accuracy']})")
    records, where = [], {}
    for i, part in enumerate(parts):
        for r in part["records"]:
            if point(r) in where:
                method, fraction, seed = point(r)
                raise ValueError(f"cannot merge: {method} at {fraction:.0%} on seed {seed} is in run "
                                 f"{where[point(r)] + 1} and run {i + 1}")
            where[point(r)] = i
            records.append(r)
    failures = [f for part in parts for f in part["failures"] if point(f) not in where]
    parts_commands = [c for part in parts for c in part.get("parts", [part["command"]])]
    command = _without_options(parts_commands[0], {"--seeds": True, "--out": True, "--no-results-md": False,
                                                  "--methods": True, "--fractions": True})
    fractions = sorted({f for part in parts for f in part["protocol"]["target_fractions"]})
    return {
        "command": f"{command} --fractions {' '.join(f'{f:g}' for f in fractions)}, "
                   "one process per seed or method (--seeds, --methods, --out), merged by --merge",
        "parts": parts_commands,
        "machine": first["machine"],
        "protocol": {**first["protocol"], "seeds": sorted(baselines), "target_fractions": fractions},
        "methods": {name: m for part in parts for name, m in part["methods"].items()},
        "baselines": [baselines[seed] for seed in sorted(baselines)],
        "failures": failures,
        "summary": summarize(records),
        "records": records,
        "wall_seconds": sum(part["wall_seconds"] for part in parts),
    }


def _without_options(command: str, options: dict[str, bool]) -> str:
    """`command` with the named options removed (True: with the values after them)."""
    words, kept, skipping = command.split(), [], False
    for word in words:
        if word in options:
            skipping = options[word]
            continue
        if skipping and not word.startswith("--"):
            continue
        skipping = False
        kept.append(word)
    return " ".join(kept)


if __name__ == "__main__":
    sys.exit(main())
