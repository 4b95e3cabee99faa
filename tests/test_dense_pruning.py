"""Dense pruning: element-wise masks on a Dense kernel [in, out] through the same mechanism as conv kernels.

The masked weights stay exactly 0.0 through training (Adam), save/load, structural reduction
(dead Dense units folded away, the next layer's inputs and the upstream conv channel removed),
quantization and export (read back from the HLS weight files, Resource layout); gradual pruning
of [conv2, fc1]; mask specs and npz files with Dense entries; the analyzer's proposal.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.analysis.kernels import analyze, kernel_norms, propose
from fpgaprune.config import PruneConfig, QuantizeConfig
from fpgaprune.errors import BadInput
from fpgaprune.flow import Options, run_flow
from fpgaprune.graph.reduce import reduce_model, report_lines
from fpgaprune.hw.accounting import check_masked_zeros
from fpgaprune.hw.export import export_project, read_manifest
from fpgaprune.hw.quantize import build_quantized_model, check_quantized_zeros, quantized_kernels
from fpgaprune.hw.weights import exported_kernel
from fpgaprune.masks import KernelMask, apply_masks, load_masks, masked_max_abs, masks_of, save_masks
from fpgaprune.models import load_saved_model, save_model
from fpgaprune.report.text import analysis_lines, prune_table
from fpgaprune.run import MASKS_FILE, Run
from fpgaprune.spec import masks_to_spec, parse_mask_spec, read_mask_spec, spec_to_masks, write_mask_spec
from fpgaprune.training.fit import compile_model, fit, make_optimizer
from fpgaprune.training.gradual import prune_gradual

from .conftest import tiny_config, tiny_pruned

pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")

# The tiny CNN: flatten gives 5 x 5 pixels x 8 channels = 200 features (flat index = pixel * 8 + c).
FEATURES, CHANNELS, UNITS = 200, 8, 16
DEAD_UNITS = [2, 5, 11]  # fc1 units whose inputs are all pruned
UNREAD_CHANNEL = 3  # conv2 channel whose every fc1 weight is pruned


def dense_masks(seed: int = 0) -> dict[str, np.ndarray]:
    """conv2 (random half), fc1 (random third, 3 dead units, one conv2 channel unread), fc2 (random)."""
    model, masks = tiny_pruned(seed)
    rng = np.random.RandomState(seed)
    fc1 = rng.rand(FEATURES, UNITS) < 0.3
    fc1[:, DEAD_UNITS] = True
    fc1[UNREAD_CHANNEL::CHANNELS, :] = True
    return model, {**masks, "fc1": fc1, "fc2": rng.rand(UNITS, 10) < 0.2}


def randomized(model: tf.keras.Model, seed: int = 0) -> tf.keras.Model:
    """Biases of both signs, so dead units carry non-zero constants into the next layer."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.1, 0.3, layer.bias.shape).astype(np.float32))
    return model


def test_dense_masks_stay_zero_through_adam_and_save_load(tmp_path, small_data):
    model, masks = dense_masks()
    pruned = apply_masks(model, masks)
    assert isinstance(pruned.get_layer("fc1").kernel_constraint, KernelMask)
    before = pruned.get_layer("fc1").kernel.numpy().copy()
    optimizer = make_optimizer("adam", 0.01)
    compile_model(pruned, optimizer)
    fit(pruned, small_data, 1, 32, seed=1, verbose=0)

    assert masked_max_abs(pruned, masks) == 0.0
    after = pruned.get_layer("fc1").kernel.numpy()
    assert np.all(after[masks["fc1"]] == 0.0) and not np.signbit(after[masks["fc1"]]).any()
    assert np.abs(after - before)[~masks["fc1"]].max() > 0  # the kept weights trained
    # Adam's moments never accumulate for masked weights (their gradients are masked)
    fc1 = pruned.get_layer("fc1").kernel
    slots = [v.numpy() for v in pruned.optimizer.variables if tuple(v.shape) == tuple(fc1.shape)]
    assert slots and all(np.all(s[masks["fc1"]] == 0.0) for s in slots)

    save_model(pruned, tmp_path / "saved" / "model.h5")
    loaded = load_saved_model(tmp_path / "saved")
    assert {k: v.tolist() for k, v in masks_of(loaded).items()} == {k: v.tolist() for k, v in masks.items()}
    save_masks(masks_of(loaded), tmp_path / "masks.npz")
    assert np.array_equal(load_masks(tmp_path / "masks.npz")["fc1"], masks["fc1"])
    assert masked_max_abs(loaded) == 0.0


def test_dense_mask_spec_round_trip_and_bad_index(tmp_path, reference_model):
    spec = parse_mask_spec({"conv2": [[29, 13]], "fc1": [[799, 31], [0, 0], [120, 3]]})
    masks = spec_to_masks(spec, reference_model)
    assert masks["fc1"].shape == (800, 32) and masks["fc1"].sum() == 3 and masks["fc1"][799, 31]
    write_mask_spec(masks_to_spec(masks), tmp_path / "spec.yaml")
    again = spec_to_masks(read_mask_spec(tmp_path / "spec.yaml"), reference_model)
    assert all(np.array_equal(again[k], masks[k]) for k in masks) and set(again) == set(masks)

    with pytest.raises(BadInput) as err:
        spec_to_masks(parse_mask_spec({"fc1": [[800, 0]]}), reference_model)
    message = str(err.value)
    assert "\n" not in message
    assert message == "mask spec: fc1: [800, 0] is out of range; the layer has input 0..799, output 0..31"
    with pytest.raises(BadInput, match=r"fc2: \[0, 10\] is out of range; the layer has input 0..31, output 0..9"):
        spec_to_masks(parse_mask_spec({"fc2": [[0, 10]]}), reference_model)


def test_reduction_removes_dead_dense_units_and_carries_masks():
    model, masks = dense_masks(seed=1)
    pruned = apply_masks(randomized(model), masks)
    reduced, reduced_masks, report = reduce_model(pruned, masks)
    x = np.random.default_rng(2).random((16, 28, 28, 1)).astype(np.float32)
    logits = [tf.keras.Model(m.inputs, m.get_layer("fc2").output) for m in (pruned, reduced)]
    np.testing.assert_allclose(logits[1].predict(x, verbose=0), logits[0].predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(reduced.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)

    kept_units = np.setdiff1d(np.arange(UNITS), DEAD_UNITS)
    assert reduced.get_layer("fc1").kernel.shape[1] == len(kept_units), report_lines(report)
    assert reduced.get_layer("fc2").kernel.shape == (len(kept_units), 10)
    assert reduced.get_layer("conv2").kernel.shape[-1] <= CHANNELS - 1  # the unread channel went
    n_channels = reduced.get_layer("conv2").kernel.shape[-1]
    assert reduced.get_layer("fc1").kernel.shape[0] == 25 * n_channels
    # the surviving weights keep their masks, and those weights are still exactly 0.0
    assert set(reduced_masks) == set(masks)
    np.testing.assert_array_equal(reduced_masks["fc2"], masks["fc2"][kept_units])
    assert reduced_masks["fc1"].shape == tuple(reduced.get_layer("fc1").kernel.shape)
    assert masks_of(reduced)["fc1"].tolist() == reduced_masks["fc1"].tolist()
    assert masked_max_abs(reduced, reduced_masks) == 0.0
    row = next(r for r in report["layers"] if r["layer"] == "fc1")
    assert sorted(r["channel"] for r in row["removed"]) == DEAD_UNITS


def test_quantized_and_exported_dense_weights_stay_zero(tmp_path, small_data):
    model, masks = dense_masks()
    qmodel = build_quantized_model(apply_masks(model, masks), QuantizeConfig(), masks)
    assert type(qmodel.get_layer("fc1")).__name__ == "QDense"
    assert set(masks_of(qmodel)) == {"conv2", "fc1", "fc2"}
    compile_model(qmodel, make_optimizer("adam", 0.003))  # quantization-aware training keeps them too
    fit(qmodel, small_data, 1, 64, seed=0, verbose=0)
    assert masked_max_abs(qmodel, masks) == 0.0 and check_quantized_zeros(qmodel, masks) == 0.0

    cfg = tiny_config(tmp_path, export={"layer_strategy": {"fc1": "Resource"}, "layer_reuse": {"fc1": 4}})
    x = np.random.RandomState(0).rand(3, 28, 28, 1).astype(np.float32)
    folder = export_project(qmodel, cfg, "Vivado", x)
    assert check_masked_zeros(folder, masks) == {"conv2": 0, "fc1": 0, "fc2": 0}
    layers = {r["name"]: r for r in read_manifest(folder)["layers"]}
    assert layers["fc1"]["strategy"] == "resource" and layers["fc1"]["masked_weights"] == int(masks["fc1"].sum())
    exported = exported_kernel(folder, layers["fc1"])
    np.testing.assert_array_equal(exported, quantized_kernels(qmodel)["fc1"])  # read back, transposed right
    assert np.all(exported[masks["fc1"]] == 0)


def test_global_fraction_ranks_dense_weights_within_their_layer(reference_model):
    norms = kernel_norms(reference_model, "l1", layers=["conv2", "fc1"])
    assert set(norms) == {"conv1", "conv2", "fc1"} and norms["fc1"].shape == (800, 32)
    np.testing.assert_allclose(norms["fc1"], np.abs(reference_model.get_layer("fc1").kernel.numpy()))
    assert "fc1" not in kernel_norms(reference_model, "l1")  # Dense only when named
    masks = propose(norms, "global_fraction", fraction=0.5, layers=["conv2", "fc1"], dense=["fc1"])
    # raw magnitudes would prune fc1 (single weights, ~1/9 of a kernel's L1) first; per layer they share
    share = {name: m.mean() for name, m in masks.items()}
    assert 0.3 < share["fc1"] < 0.7 and 0.3 < share["conv2"] < 0.7, share
    raw = propose(norms, "global_fraction", fraction=0.5, layers=["conv2", "fc1"])
    assert raw["conv2"].mean() < 0.05  # the problem the per-layer ranking avoids
    per_layer = propose(norms, "fraction", fraction=0.25, layers=["fc1"])
    assert per_layer["fc1"].sum() == 6400


def test_analyzer_lists_named_dense_layers(small_data):
    model, _ = tiny_pruned()
    found = analyze(model, small_data, PruneConfig(layers=["conv2", "fc1"], fraction=0.5), measure=False)
    assert found.summary["weights"]["fc1"] == {"weights": 3200, "pruned": 1600, "kept": 1600}
    assert found.summary["macs_after"]["fc1"] == 1600
    assert {row["layer"] for row in found.table} >= {"conv2", "fc1"}
    fc1 = next(line for line in analysis_lines(found, 5).splitlines() if "Dense weights" in line)
    assert fc1.split()[:4] == ["fc1", "1,600", "3,200", "Dense"]


def test_gradual_pruning_of_conv_and_dense(tmp_path, small_data):
    cfg = tiny_config(tmp_path, prune={"layers": ["conv2", "fc1"], "select": "global_fraction",
                                       "schedule": [0.3, 0.6], "epochs": 1, "max_accuracy_drop": 1.0})
    model, _ = tiny_pruned(fraction=0.0)  # untrained: the budget (1.0) keeps every round
    pruned, summary = prune_gradual(model, small_data, cfg, progress=False)
    assert summary["masked_max_abs"] == 0.0 and masked_max_abs(pruned) == 0.0
    assert summary["weights_total"]["fc1"] == 3200 and summary["weights_pruned"]["fc1"] >= 0.4 * 3200
    assert summary["kernels_pruned"]["conv2"] >= 0.3 * 32 and "fc1" not in summary["kernels_pruned"]
    last = summary["history"][-1]
    assert last["weights_pruned"]["fc1"] == summary["weights_pruned"]["fc1"] and "fc1" not in last["kernels_pruned"]
    assert set(masks_of(pruned)) == {"conv2", "fc1"}
    assert "fc1 (w)" in prune_table(summary)


@pytest.mark.slow
def test_prune_layers_conv2_fc1_end_to_end(tmp_path):
    """prune.layers [conv2, fc1]: baseline -> prune -> reduce -> quantize -> export, zeros kept in the files."""
    prune = {"layers": ["conv2", "fc1"], "schedule": [0.5, 0.8], "epochs": 1, "max_accuracy_drop": 1.0}
    cfg = tiny_config(tmp_path, train={"epochs": 1}, prune=prune, quantize={"start_from": "reduced", "epochs": 1})
    steps = ["baseline", "prune", "reduce", "quantize", "export", "accounting", "report"]
    flow = run_flow(cfg, steps=steps, options=Options(verbose=0))
    s = flow.results["prune"].summary
    assert s["weights_pruned"]["fc1"] == int(np.ceil(0.8 * 3200)) and s["kernels_pruned"]["conv2"] == 26
    assert flow.results["prune"].kernels_pruned == s["kernels_pruned"]["total"]  # conv kernels only
    run = Run(cfg)
    assert load_masks(run.stage_dir("pruned") / MASKS_FILE)["fc1"].sum() == s["weights_pruned"]["fc1"]
    reduced_masks = load_masks(run.stage_dir("reduced") / MASKS_FILE)
    assert flow.results["reduce"].summary["masked_max_abs"] == 0.0 and "fc1" in reduced_masks
    q = flow.results["quantize"].summary
    assert q["masked_max_abs_quantized"] == 0.0 and q["masked_kernels"]["fc1"] == reduced_masks["fc1"].sum()
    leaks = check_masked_zeros(run.project_dir("Vivado"), masks_of(flow.results["quantize"].model))
    assert {"conv2", "fc1"} <= set(leaks) and not any(leaks.values())
    table = flow.results["accounting"].summary["backends"]["Vivado"]
    assert table["masked_nonzero_in_export"]["fc1"] == 0
    page = (run.report_dir / "index.html").read_text()
    assert "Dense weights" in page and "dense weights pruned" in page
