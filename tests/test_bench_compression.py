"""The compression benchmark's harness, on its smallest piece: one method, one target, 1 epoch.

Keeps bench/compression.py from rotting silently: the record has every field the table and
plot read, and the non-zero conv multiplications are exactly what the target asks for.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

RECORD_FIELDS = {
    "method", "granularity", "target_fraction", "seed", "test_accuracy", "val_accuracy",
    "conv_mults_total", "conv_mults_nonzero", "conv_mults_removed", "target_conv_mults_nonzero",
    "nonzero_mults_per_layer", "nonzero_weights_per_layer", "quantized", "seconds", "epochs",
}
HARDWARE_FIELDS = {"test_accuracy", "conv_mults_nonzero", "multipliers", "dsp", "lut"}


@pytest.fixture(scope="module")
def point(t10k_path):
    import compression

    from fpgaprune.data import load_dataset

    cfg = compression.bench_config(ROOT / "configs" / "mnist_cnn.yaml")  # conv1 and conv2
    data = load_dataset("mnist-5k", validation_fraction=0.1, seed=1, limit=300, test=f"mnist-t10k:{t10k_path}")
    data = replace(data, x_test=data.x_test[:500], y_test=data.y_test[:500])
    baseline, info = compression.train_seed_baseline(cfg, data, baseline_epochs=1)
    weights = [w.copy() for w in baseline.get_weights()]
    record = compression.run_point("kernel-oneshot", baseline, 0.7, data, cfg, epochs=1)
    return compression, baseline, weights, info, record


@pytest.mark.slow
def test_record_has_every_field_and_hits_the_target(point):
    compression, baseline, weights, info, r = point
    assert RECORD_FIELDS <= set(r)
    assert set(r["quantized"]) == {"8", "6"}
    for bits, hw in r["quantized"].items():
        assert HARDWARE_FIELDS <= set(hw), bits
        assert 0.0 <= hw["test_accuracy"] <= 1.0
        # Rounding can only add zeros; the pruned kernels stay zero.
        assert hw["conv_mults_nonzero"] <= r["conv_mults_nonzero"]
        assert 0 <= hw["dsp"] <= hw["multipliers"] <= sum(r["nonzero_weights_per_layer"].values())
    # Resource_Unrolled: only the reuse factors hls4ml accepts for the layer; a multiplier
    # serves RF weights, so there are at least non-zero/RF and at most 9,216/RF of them.
    unrolled = r["quantized"]["8"]["resource_unrolled"]
    assert set(unrolled["conv1"]) == {"1"} and set(unrolled["conv2"]) == {"1", "4", "8", "32"}
    assert unrolled["conv2"]["1"] <= 9 * 307
    for rf in (4, 8, 32):
        assert -(-unrolled["conv2"]["1"] // rf) <= unrolled["conv2"][str(rf)] <= 9216 // rf
    # 70% of each conv layer's 2-D kernels, rounded up: conv1 23 of 32, conv2 717 of 1,024.
    pixels = {"conv1": 26 * 26, "conv2": 11 * 11}
    assert r["nonzero_weights_per_layer"] == {"conv1": 9 * 9, "conv2": 9 * 307}
    assert (
        r["conv_mults_nonzero"] == r["target_conv_mults_nonzero"] == 9 * (9 * pixels["conv1"] + 307 * pixels["conv2"])
    )
    assert r["conv_mults_total"] == 9 * (32 * pixels["conv1"] + 1024 * pixels["conv2"])
    assert r["conv_mults_removed"] >= 0.7
    assert 0.0 <= r["test_accuracy"] <= 1.0 and r["epochs"] == 1 and r["seconds"] > 0
    assert info["epochs"] == 1


def test_the_baseline_is_left_unchanged(point):
    import numpy as np

    _, baseline, weights, _, _ = point
    for before, after in zip(weights, baseline.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_summary_table_and_targets(point):
    import compression_report

    compression, _, _, _, r = point
    rows = compression.summarize([r, {**r, "seed": 2, "test_accuracy": r["test_accuracy"] + 0.01}])
    assert len(rows) == 1 and rows[0]["seeds"] == [1, 2]
    assert rows[0]["test_accuracy_std"] > 0
    result = {"summary": rows, "methods": {"kernel-oneshot": {}}}
    table = compression_report.table(result).splitlines()
    assert len(table) == 3 and table[2].startswith("| kernel-oneshot | 70% |")
    unrolled = compression_report.unrolled_table(result).splitlines()
    assert len(unrolled) == 3 and unrolled[0].startswith("| method | target | RF 1 | RF 4 |")
    # Granularities round differently: single weights prune the fewest extra multiplications.
    geometry = {"conv2": {"kernel_shape": (3, 3, 32, 32), "pixels": 121}}
    assert compression.target_nonzero_mults(geometry, 0.5, "weight") == 4608 * 121
    assert compression.target_nonzero_mults(geometry, 0.5, "filter") == 16 * 288 * 121
    assert compression.target_nonzero_mults(geometry, 0.0, None) == 9216 * 121
    assert compression.target_nonzero_mults(geometry, 0.5, "kernel", layers=["conv1"]) == 9216 * 121


@pytest.mark.slow
def test_the_point_is_priced_as_the_reduced_quantized_design(point):
    """Hardware-cost axis: dead channels removed, zeros kept through quantization, every layer priced."""
    _, _, _, _, r = point
    d = r["design"]
    # conv1 has one input channel, so each of its 23 pruned kernels is a whole filter: 9 filters
    # stay, and conv2 reads only those 9 channels.
    assert d["kernels_dead"]["conv1"] == 23 and d["shapes"]["conv1"] == [3, 3, 1, 9]
    assert d["shapes"]["conv2"][2] == 9 and d["shapes"]["fc2"] == [32, 10]
    assert d["reduction_max_abs_diff"] <= 1e-5
    assert set(d["layers"]) == {"conv1", "conv2", "fc1", "fc2"}
    for name, layer in d["layers"].items():
        assert layer["strategy"] in ("Latency", "distributed_arithmetic") and layer["reuse_factor"] == 1, name
        assert layer["lut_equivalents"] == layer["lut"] + 55 * layer["dsp"] > 0
    assert d["lut_equivalents"] == sum(layer["lut_equivalents"] for layer in d["layers"].values())
    assert 0.0 <= d["test_accuracy"] <= 1.0 and d["parameters"] < 35_530


@pytest.mark.slow
def test_quick_mode_writes_the_hardware_cost_reading(tmp_path, t10k_path):
    """`--quick` end to end on two methods and one target: JSON, both plots and the LUT reading."""
    import json

    import compression
    import compression_report

    out = tmp_path / "quick.json"
    assert compression.main(["--quick", "--methods", "unpruned", "kernel-gradual-channel", "--fractions", "0.9",
                             "--epochs", "1", "--baseline-epochs", "1", "--out", str(out),
                             "--test-data", f"mnist-t10k:{t10k_path}"]) == 0
    result = json.loads(out.read_text())
    assert (tmp_path / "quick.png").is_file() and (tmp_path / "quick_lut.png").is_file()
    rows = {r["method"]: r for r in result["summary"]}
    assert rows["kernel-gradual-channel"]["design"]["lut_equivalents"] < rows["unpruned"]["design"]["lut_equivalents"]
    levels = compression_report.best_per_level(result)
    assert [e["level"] for e in levels] == [0.1, 0.3, 1.0]
    reading = compression_report.lut_reading(result)
    assert reading.count("- **within") == 3
    block = compression_report.lut_block(result, tmp_path / "quick_lut.png", compression.ROOT)
    assert block.startswith(compression_report.lut_markers("reference")[0])
    assert "| kernel-gradual-channel | 90% |" in block
    # A second seed's run merges into one result: the summary spans both seeds, the block says so.
    other = json.loads(out.read_text())
    for r in other["records"]:
        r["seed"] = 2
        r["design"]["lut_equivalents"] += 100
    other["protocol"]["seeds"], other["baselines"][0]["seed"] = [2], 2
    second = tmp_path / "seed2.json"
    second.write_text(json.dumps(other))
    merged_path = tmp_path / "merged.json"
    assert compression.main(["--merge", str(out), str(second), "--out", str(merged_path), "--no-results-md"]) == 0
    merged = json.loads(merged_path.read_text())
    assert merged["protocol"]["seeds"] == [1, 2] and len(merged["records"]) == 2 * len(result["records"])
    row = {r["method"]: r for r in merged["summary"]}["kernel-gradual-channel"]
    single = rows["kernel-gradual-channel"]["design"]["lut_equivalents"]
    assert row["seeds"] == [1, 2] and row["design"]["lut_equivalents"] == single + 50
    assert row["design"]["lut_equivalents_range"] == [single, single + 100]
    assert str(out) not in merged["command"] and merged["parts"] == [result["command"]] * 2
    assert "summed over 2 runs" in compression_report.lut_block(
        merged, merged_path.with_name("merged_lut.png"), compression.ROOT)
    assert (tmp_path / "merged_lut.png").is_file()
    # A later run of the same seed joins it: another method's points, and a point that failed
    # before, which then replaces the failure.
    later = json.loads(out.read_text())
    for r in later["records"]:
        r["method"] = "kernel-gradual" if r["method"] == "unpruned" else r["method"]
        r["target_fraction"] = 0.95 if r["method"] == "kernel-gradual-channel" else r["target_fraction"]
    later["protocol"]["target_fractions"] = [0.95]
    later["methods"]["kernel-gradual"] = {"granularity": "kernel", "description": "gradual"}
    assert compression_report.lut_reading({**later, "summary": compression.summarize(later["records"])}).startswith(
        "- no `unpruned` reference in this run")  # a run of further methods alone has no levels to read
    failed = json.loads(out.read_text())
    failed["failures"] = [{"method": "kernel-gradual-channel", "target_fraction": 0.95, "seed": 1, "error": "E: x"},
                          {"method": "filter-l1", "target_fraction": 0.9, "seed": 1, "error": "E: y"}]
    for path, part in (("later.json", later), ("failed.json", failed)):
        (tmp_path / path).write_text(json.dumps(part))
    assert compression.main(["--merge", str(tmp_path / "failed.json"), str(tmp_path / "later.json"),
                             "--out", str(merged_path), "--no-results-md"]) == 0
    merged = json.loads(merged_path.read_text())
    assert merged["protocol"]["seeds"] == [1] and merged["protocol"]["target_fractions"] == [0.9, 0.95]
    assert {(r["method"], r["target_fraction"]) for r in merged["records"]} == {
        ("unpruned", 0.0), ("kernel-gradual-channel", 0.9), ("kernel-gradual", 0.0), ("kernel-gradual-channel", 0.95)}
    assert [f["method"] for f in merged["failures"]] == ["filter-l1"]
    assert "- **filter-l1 at 90% did not run on seed 1**: E: y" in compression_report.lut_block(
        merged, merged_path.with_name("merged_lut.png"), compression.ROOT)
    # Runs of different protocols, a point twice, or one seed's two different baselines are
    # refused with one line and nothing written.
    other["protocol"]["extra_epochs"] = 3
    second.write_text(json.dumps(other))
    later["baselines"][0]["test_accuracy"] += 0.01
    (tmp_path / "later.json").write_text(json.dumps(later))
    refused = tmp_path / "refused.json"
    assert compression.main(["--merge", str(out), str(second), "--out", str(refused), "--no-results-md"]) == 2
    assert compression.main(["--merge", str(out), str(out), "--out", str(refused), "--no-results-md"]) == 2
    assert compression.main(["--merge", str(out), str(tmp_path / "later.json"), "--out", str(refused),
                             "--no-results-md"]) == 2
    assert not refused.exists()


def test_a_point_with_no_path_from_input_to_output_is_recorded_as_a_constant(point, t10k_path):
    """Every conv1 filter zero: the design is a constant, recorded at 0 LUT-eq with its accuracy."""
    import compression_design
    import numpy as np
    import tensorflow as tf

    from fpgaprune.data import load_dataset

    compression, baseline, _, _, _ = point
    model = tf.keras.models.clone_model(baseline)
    model.set_weights(baseline.get_weights())
    conv1 = model.get_layer("conv1")
    conv1.kernel.assign(np.zeros(conv1.kernel.shape, np.float32))
    data = load_dataset("mnist-5k", validation_fraction=0.1, seed=1, limit=300, test=f"mnist-t10k:{t10k_path}")
    d = compression_design.design(model, data, compression.bench_config(ROOT / "configs" / "mnist_cnn.yaml"),
                                  ["conv1", "conv2"])
    assert "does not depend on its input" in d["collapsed"]
    assert d["lut_equivalents"] == d["lut"] == d["dsp"] == d["parameters"] == 0 and d["kernels_dead"]["conv1"] == 32
    predictions = model.predict(data.x_test[:50], verbose=0).argmax(axis=1)
    assert len(set(predictions)) == 1 and 0.0 <= d["test_accuracy"] <= 0.2


def test_a_second_block_joins_its_heading_section(tmp_path):
    """Blocks under one heading share it: a new one goes at the end of that section, once."""
    import compression_report

    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Lut\n\n<!-- a:begin -->\nA\n<!-- a:end -->\n\n## Later\n\ntext\n")

    def put(name, body, heading):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        compression_report.update_block(md, begin, end, f"{begin}\n{body}\n{end}", heading)

    put("b", "B", "## Lut")
    text = md.read_text()
    assert text.count("## Lut") == 1 and text.index("<!-- a:end -->") < text.index("\nB\n") < text.index("## Later")
    assert text.endswith("## Later\n\ntext\n")
    put("b", "B2", "## Lut")
    assert md.read_text() == text.replace("\nB\n", "\nB2\n")
    put("c", "C", "## New")
    assert md.read_text().endswith("\n\n## New\n\n<!-- c:begin -->\nC\n<!-- c:end -->\n")
