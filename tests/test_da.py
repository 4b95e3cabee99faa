"""Distributed arithmetic and the auto strategy: zeros pay, costs come from da4ml, C-sim stays bit-exact.

The layers are tiny on purpose: da4ml's solve grows fast with non-zero weights x bits.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.config import ModelConfig, QuantizeConfig, parse_config
from fpgaprune.errors import BadInput
from fpgaprune.hw.accounting import as_dict, check_masked_zeros, count_project
from fpgaprune.hw.costs import DA_STRATEGY
from fpgaprune.hw.export import export_project, read_manifest
from fpgaprune.hw.quantize import build_quantized_model, quantized_kernels
from fpgaprune.hw.weights import DA_WEIGHTS
from fpgaprune.masks import apply_masks
from fpgaprune.models import build_reference_cnn

pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")
SMALL = {"conv_filters": [2, 4], "fc_units": 4}


@pytest.fixture(scope="module")
def qmodel():
    tf.keras.utils.set_random_seed(3)
    masks = {"conv2": np.random.RandomState(3).rand(2, 4) < 0.5}
    model = apply_masks(build_reference_cnn(ModelConfig(**SMALL)), masks)
    return build_quantized_model(model, QuantizeConfig(), masks), masks


def config(tmp_path, **export):
    return parse_config({"name": "da", "model": SMALL, "export": {"output_dir": str(tmp_path), **export}})


def images(n=4):
    return np.random.RandomState(0).rand(n, 28, 28, 1).astype(np.float32)


@pytest.mark.slow
def test_da_export_is_priced_by_da4ml_and_bit_exact(tmp_path, qmodel, small_data):
    from fpgaprune.hw.csim import run_csim

    q, masks = qmodel
    folder = export_project(q, config(tmp_path, strategy=DA_STRATEGY), "Vivado", images())
    layers = {row["name"]: row for row in read_manifest(folder)["layers"]}
    assert {row["strategy"] for row in layers.values()} == {DA_STRATEGY}
    assert all(row["da_kernel_cost"] > 0 for row in layers.values())
    # hls4ml bakes a DA Dense layer's weights into code: the export keeps what it handed over
    assert layers["fc1"]["weight_file"] is None and (folder / DA_WEIGHTS).is_file()
    assert check_masked_zeros(folder, masks) == {"conv2": 0}
    rows = {r.name: r for r in count_project(folder)}
    kernels = quantized_kernels(q)
    for name, row in rows.items():
        assert row.cost_model == "da4ml" and row.lut == round(layers[name]["da_kernel_cost"])
        assert row.multipliers == 0 and row.dsp == 0 and row.nonzero == np.count_nonzero(kernels[name])
    summary = run_csim(folder, q, small_data.x_val[:60], small_data.y_val[:60], workers=1)
    assert summary["bit_exact"], summary


def test_auto_picks_the_cheapest_choice_hls4ml_accepts(tmp_path, qmodel):
    q, _ = qmodel
    folder = export_project(q, config(tmp_path, strategy="auto", max_reuse_factor=4), "Vivado", images())
    for row in read_manifest(folder)["layers"]:
        candidates = row["strategy_candidates"]
        strategies = {c["strategy"] for c in candidates}
        assert {"Latency", DA_STRATEGY, "Resource"} <= strategies
        assert all(c["reuse_factor"] <= 4 for c in candidates)
        best = min(candidates, key=lambda c: c["lut_equivalents"])
        assert row["strategy"] == best["strategy"].lower() and row["reuse_factor"] == best["reuse_factor"]
        if best["strategy"] == DA_STRATEGY:  # the price it was chosen by is what the export records
            assert round(row["da_kernel_cost"]) == best["lut"]
    table = as_dict(count_project(folder), "xc7z020clg400-1")
    assert table["device_fit"]["device"] == "xc7z020" and table["total"]["lut_equivalents"] > 0


def test_da_zeros_cut_its_cost():
    """The same layer priced by da4ml: zeroing 3/4 of its 2-D kernels makes it much cheaper."""
    from fpgaprune.hw.export import convert

    tf.keras.utils.set_random_seed(0)
    model = build_reference_cnn(ModelConfig(**SMALL))
    pruned = np.zeros((2, 4), bool)
    pruned.flat[:6] = True
    costs = []
    for masks in ({"conv2": np.zeros((2, 4), bool)}, {"conv2": pruned}):
        q = build_quantized_model(apply_masks(model, masks), QuantizeConfig(), masks)
        from fpgaprune.hw.quantize import logits_model
        from fpgaprune.locks import scratch_dir
        from fpgaprune.masks import strip_masks

        with scratch_dir("t") as out:
            hls_model, _ = convert(logits_model(strip_masks(q)), config(out, strategy=DA_STRATEGY).export, "Vivado",
                                   __import__("pathlib").Path(out))
        costs.append(next(n for n in hls_model.get_layers() if n.name == "conv2").get_attr("da_kernel_cost"))
    assert costs[1] < 0.5 * costs[0]


@pytest.mark.parametrize("export, message", [
    ({"strategy": DA_STRATEGY, "reuse_factor": 2}, "distributed_arithmetic is built only at reuse factor 1"),
    ({"layer_strategy": {"fc1": DA_STRATEGY}, "layer_reuse": {"fc1": 4}}, "fc1 uses distributed_arithmetic"),
])
def test_da_needs_reuse_factor_1(tmp_path, qmodel, export, message):
    with pytest.raises(BadInput, match=message):
        export_project(qmodel[0], config(tmp_path, **export), "Vivado", images())


def test_device_fit_names_the_resource_that_does_not_fit():
    from fpgaprune.hw.devices import capacity, device_of, fit_warnings

    assert device_of("xczu9eg-ffvb1156-2-e") == "xczu9eg" and device_of("xcu250-figd2104-2L-e") == "xcu250"
    assert capacity("xc7z020clg400-1").lut == 53_200
    lines = fit_warnings({"lut": 74_800, "dsp": 10}, "xc7z020clg400-1")
    assert len(lines) == 1 and "74,800 LUTs" in lines[0] and "xc7z020 has 53,200" in lines[0]
    assert fit_warnings({"lut": 74_800, "dsp": 10}, "xczu9eg-ffvb1156-2-e") == []
    assert fit_warnings({"lut": 1}, "xcunknown-1") == []


def test_a_reuse_factor_that_no_longer_fits_becomes_the_closest_hls4ml_accepts():
    """fc1 reduced to 350 inputs: its configured reuse factor 8 does not divide it; 7 does, said in one line."""
    import tensorflow as tf

    from fpgaprune.hw.strategies import Choice, fit_reuse_factors

    inp = tf.keras.Input((350,))
    model = tf.keras.Model(inp, tf.keras.layers.Dense(32, name="fc1")(inp))
    fitted = fit_reuse_factors({"fc1": Choice("Resource", 8)}, model, "Vivado")["fc1"]
    assert (fitted.strategy, fitted.reuse_factor) == ("Resource", 7)
    assert fitted.note.startswith("fc1: reuse factor 8 does not fit its 350x32 weights; using 7")
    assert fit_reuse_factors({"fc1": Choice("Resource", 7)}, model, "Vivado")["fc1"].note is None
