"""Hardware accounting: counts read back from the exported weight files, per strategy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.config import ModelConfig, QuantizeConfig, parse_config
from fpgaprune.hw.accounting import as_dict, count_project, format_table, warnings
from fpgaprune.hw.costs import multipliers, uses_dsp
from fpgaprune.hw.export import export_project, read_manifest
from fpgaprune.hw.quantize import build_quantized_model, quantized_kernels
from fpgaprune.masks import apply_masks
from fpgaprune.models import build_reference_cnn

from .conftest import TINY

pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")
FRACTION = 0.5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny pruned model exported with Latency convs and a Resource fc1 at reuse factor 4."""
    tf.keras.utils.set_random_seed(0)
    pruned = np.zeros((4, 8), bool)
    pruned.flat[np.random.RandomState(0).permutation(32)[: int(32 * FRACTION)]] = True
    masks = {"conv2": pruned}
    model = apply_masks(build_reference_cnn(ModelConfig(**TINY)), masks)
    qmodel = build_quantized_model(model, QuantizeConfig(), masks)
    cfg = parse_config({
        "name": "acc", "model": TINY,
        "export": {"output_dir": str(tmp_path_factory.mktemp("hls")), "layer_strategy": {"fc1": "Resource"},
                   "layer_reuse": {"fc1": 4}},
    })
    folder = export_project(qmodel, cfg, "Vivado", np.zeros((2, 28, 28, 1), np.float32))
    return folder, qmodel, masks


@pytest.mark.slow
def test_counts_come_from_the_exported_files(exported):
    folder, qmodel, masks = exported
    rows = {r.name: r for r in count_project(folder)}
    kernels = quantized_kernels(qmodel)
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert rows[name].weights == kernels[name].size
        assert rows[name].nonzero == np.count_nonzero(kernels[name])
    # the header's own zero count (hls4ml's `//Number of zeros`) agrees with the .txt file read
    import re

    layer = next(r for r in read_manifest(folder)["layers"] if r["name"] == "conv2")
    header = (folder / layer["weight_file"]).read_text()
    zeros = int(re.search(r"//Number of zeros (\d+)", header).group(1))
    assert zeros == rows["conv2"].weights - rows["conv2"].nonzero


def test_files_not_keras_are_read(exported, tmp_path):
    """Editing a weight file changes the count: the table reads the exported design."""
    import shutil

    folder, _, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    layer = next(r for r in read_manifest(copy)["layers"] if r["name"] == "fc2")
    path = (copy / layer["weight_file"]).with_suffix(".txt")
    values = path.read_text().split(",")
    nonzero_before = sum(float(v) != 0 for v in values)
    first = next(i for i, v in enumerate(values) if float(v) != 0)
    values[first] = " 0.0"
    path.write_text(",".join(values))
    assert {r.name: r for r in count_project(copy)}["fc2"].nonzero == nonzero_before - 1


def test_pruned_fraction_cuts_conv_multiplications(exported):
    folder, _, masks = exported
    rows = {r.name: r for r in count_project(folder)}
    conv2 = rows["conv2"]
    assert conv2.masked_weights == int(masks["conv2"].sum()) * 9
    assert conv2.mults_per_image <= (1 - FRACTION) * conv2.mults_per_image_unpruned
    assert conv2.multipliers == conv2.nonzero  # Latency, reuse factor 1: zeros are dropped
    assert conv2.multipliers_unpruned == conv2.weights
    summary = as_dict(list(rows.values()))
    conv_total = conv2.mults_per_image_unpruned + rows["conv1"].mults_per_image_unpruned
    assert summary["conv_nonzero_mults_cut"] >= FRACTION * conv2.mults_per_image_unpruned / conv_total


def test_resource_strategy_wastes_zeros_and_says_so(exported):
    folder, _, _ = exported
    rows = count_project(folder)
    fc1 = next(r for r in rows if r.name == "fc1")
    assert fc1.strategy == "resource" and fc1.reuse_factor == 4
    assert fc1.multipliers == fc1.multipliers_unpruned == fc1.weights // 4
    zeros = fc1.weights - fc1.nonzero
    messages = warnings(rows)
    assert (zeros > 0) == any(m.startswith("warning: fc1:") for m in messages)
    assert not any("conv2" in m for m in messages)
    table = format_table(rows)
    assert "conv2" in table and "unpruned" in table and "DSP" in table and "LUT-eq" in table


def test_dsp_only_for_wide_weights(exported):
    folder, _, _ = exported
    rows = {r.name: r for r in count_project(folder)}
    # 8-bit weights: hls4ml's VivadoDSPEstimator puts the products in LUTs
    assert all(r.dsp == 0 and r.lut > 0 for r in rows.values())
    assert uses_dsp("latency", 1, 12, 100) and not uses_dsp("latency", 1, 8, 100)
    assert all(r.lut_equivalents == r.lut for r in rows.values())


def test_multiplier_rules_per_strategy():
    w = np.array([0, 0, 0, 0, 1, 2, 0, 3.0])
    assert multipliers("latency", 1, w) == 3  # non-zero weights
    assert multipliers("latency", 2, w) == 4  # zeros not exploited at RF > 1
    assert multipliers("resource", 2, w) == 4
    # Resource_Unrolled: slots (rows of RF weights) that are all zero need no multiplier
    assert multipliers("resource_unrolled", 2, w) == 4 - 2
    assert multipliers("resource_unrolled", 4, w) == 2 - 1


ESTIMATE_ROWS = [
    {"name": "conv1", "kind": "Conv2D", "nonzero": 36, "lut": 1250, "dsp": 0, "cost_model": "multiplier rule"},
    {"name": "fc1", "kind": "Dense", "nonzero": 12345, "lut": 61.5, "dsp": 4, "cost_model": "da4ml"},
]


def _estimate_project(tmp_path, rows=None):
    """A project folder as `fpgaprune estimate` reads it: a manifest and, given rows, accounting.json."""
    import json

    project = tmp_path / "hls" / "est" / "Vivado"
    project.mkdir(parents=True)
    (project / "fpgaprune.json").write_text("{}")
    if rows is not None:
        (project / "accounting.json").write_text(json.dumps({"layers": rows}))
    return project


def test_estimate_prints_the_accounting_table(tmp_path, capsys):
    from fpgaprune.cli import main

    project = _estimate_project(tmp_path, ESTIMATE_ROWS)
    assert main(["estimate", "--set", "name=est", "--set", f"export.output_dir={tmp_path}/hls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("config: ") and out[1:] == [
        f"{project}: accounting estimate",
        "layer    type      non-zero     LUT    DSP  cost model",
        "-------  ------  ----------  ------  -----  ---------------",
        "conv1    Conv2D          36  1250        0  multiplier rule",
        "fc1      Dense       12,345    61.5      4  da4ml",
    ]


def test_estimate_without_accounting_says_what_to_run(tmp_path, capsys):
    from fpgaprune.cli import main

    project = _estimate_project(tmp_path)
    assert main(["estimate", "--set", "name=est", "--set", f"export.output_dir={tmp_path}/hls"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fpgaprune: error: {project}/accounting.json: no such file; run `make hls` first"]


def test_savings_line_names_the_two_cost_models_when_da4ml_priced_a_layer():
    """The unpruned side is priced by the multiplier rule; a DA layer by da4ml: the line says so."""
    from fpgaprune.report.text import lut_savings_text

    accounting = {"total": {"lut_equivalents_unpruned": 650_240, "lut_equivalents": 40_380},
                  "lut_equivalents_ratio": 16.1,
                  "layers": [{"name": "conv1", "cost_model": "multiplier rule"}]}
    rule_only = lut_savings_text(accounting, "->")
    assert rule_only == "LUT-equivalents: 650,240 unpruned -> 40,380 exported (16.1x fewer)"
    accounting["layers"].append({"name": "fc1", "cost_model": "da4ml"})
    mixed = lut_savings_text(accounting, "→")
    assert mixed.startswith("LUT-equivalents: 650,240 unpruned → 40,380 exported (16.1x fewer); ")
    assert "unpruned by the multiplier rule" in mixed and "by da4ml" in mixed
