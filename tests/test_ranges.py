"""Quantization ranges from the data: weight integers from the weights, ReLU integers from a
calibration batch, set values kept and their clipping counted."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.config import ModelConfig, QuantizeConfig, parse_config
from fpgaprune.errors import BadInput
from fpgaprune.hw.quantize import bit_widths, build_quantized_model, quantize_model
from fpgaprune.hw.ranges import (
    UNCALIBRATED_ACTIVATION_INTEGER,
    choose_ranges,
    clipping,
    fewest_integer,
    fixed_range,
    range_warnings,
)
from fpgaprune.models import build_reference_cnn

pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")
layers = tf.keras.layers


def quantize_cfg(**section) -> QuantizeConfig:
    return parse_config({"quantize": section}).quantize


def offset_model(bias: float) -> tf.keras.Model:
    """4x4 image -> 1x1 conv (weight 0.5, bias `bias`) -> ReLU 'r' -> dense: r's input is 0.5 * x + bias."""
    inp = layers.Input((4, 4, 1), name="x")
    conv = layers.Conv2D(1, 1, kernel_initializer="zeros", name="c")
    relu = layers.ReLU(name="r")(conv(inp))
    out = layers.Dense(2, kernel_initializer="zeros", name="d")(layers.Flatten(name="f")(relu))
    model = tf.keras.Model(inp, out)
    conv.set_weights([np.full((1, 1, 1, 1), 0.5, np.float32), np.array([bias], np.float32)])
    return model


@pytest.mark.parametrize("bits, integer, signed", [(8, 0, True), (6, 1, True), (4, 2, True), (8, 3, False),
                                                   (6, 0, False)])
def test_clipping_agrees_with_the_qkeras_quantizer(bits, integer, signed):
    """A value counted as clipped is one QKeras moves by more than half a step; no other is."""
    from qkeras import quantized_bits, quantized_relu

    q = quantized_bits(bits, integer, alpha=1) if signed else quantized_relu(bits, integer)
    lo, hi, step = fixed_range(bits, integer, signed)
    values = np.random.RandomState(0).uniform(lo - 3 * step - 1, hi + 3 * step + 1, 5000).astype(np.float32)
    values = values if signed else np.abs(values)
    moved = np.abs(np.asarray(q(tf.constant(values))) - values)
    n, excess = clipping(values, bits, integer, signed)
    assert n == int((moved > step / 2 + 1e-6).sum()) > 0
    assert excess == pytest.approx(max(values.max() - hi, lo - values.min()), abs=1e-6)
    assert np.asarray(q(tf.constant([hi, lo], tf.float32))).tolist() == [hi, lo]  # the end points are exact


def test_fewest_integer_is_the_smallest_that_does_not_clip():
    assert fewest_integer(-1.7, 0.3, 8, True) == 1  # [-2, 2)
    assert fewest_integer(-1.0, 0.99, 8, True) == 0  # -1 is exact, 0.99 rounds to 127/128
    assert fewest_integer(-0.2, 1.0, 8, True) == 1  # +1.0 is outside [-1, 127/128]
    assert fewest_integer(0.0, 5.3, 8, False) == 3
    assert fewest_integer(0.0, 1e6, 8, False) == 8  # at most all the bits
    assert fewest_integer(-1e6, 0.0, 6, True) == 5  # the sign takes one


def test_weights_integer_chosen_from_the_weights_or_kept_and_clipping_counted():
    """max |w| 1.7: integer 1 chosen, nothing clips; with integer 0 set, 2 weights clip, by up to 0.7078."""
    tf.keras.utils.set_random_seed(0)
    model = build_reference_cnn(ModelConfig(conv_filters=[4, 8], fc_units=16))
    kernel, bias = model.get_layer("conv2").get_weights()
    kernel = np.clip(kernel, -0.5, 0.5)
    kernel[0, 0, 0, 0], kernel[1, 1, 1, 1] = 1.7, -1.2
    model.get_layer("conv2").set_weights([kernel, bias])

    qcfg, ranges = choose_ranges(model, QuantizeConfig())
    r = ranges["conv2"]
    assert (r["integer"], r["chosen"], r["clipped"], r["clipped_max_excess"]) == (1, "data", 0, 0.0)
    assert r["max_abs"] == pytest.approx(1.7) and r["values"] == kernel.size and r["kind"] == "weights"
    assert ranges["conv1"]["integer"] == 0 and qcfg.chosen["conv2"].integer == 1
    qmodel = build_quantized_model(model, qcfg)
    assert str(qmodel.get_layer("conv2").kernel_quantizer_internal) == "quantized_bits(8,1,0,alpha=1)"
    assert bit_widths(build_quantized_model(model, QuantizeConfig()))["conv2"]["integer"] == 1  # a direct build too

    _, forced = choose_ranges(model, quantize_cfg(weight_integer=0))
    f = forced["conv2"]
    assert (f["integer"], f["chosen"], f["clipped"], f["integer_needed"]) == (0, "config", 2, 1)
    assert f["clipped_max_excess"] == pytest.approx(1.7 - 127 / 128)
    assert range_warnings(forced) == [
        "warning: conv2: quantize.weight_integer = 0 covers [-1, 0.992188] and clips 2 of 288 weights (largest "
        "|value| 1.7, up to 0.7078 beyond the range); set it to 1 or null (chosen from the data)"
    ]
    _, per_layer = choose_ranges(model, quantize_cfg(layers={"conv2": {"bits": 6, "integer": 0}}))
    assert per_layer["conv2"]["key"] == "quantize.layers.conv2.integer" and per_layer["conv2"]["clipped"] == 2
    assert per_layer["conv1"]["chosen"] == "data"
    with pytest.raises(BadInput, match=r"quantize.layers.conv2.integer: 6 integer bits plus the sign do not fit"):
        choose_ranges(model, quantize_cfg(layers={"conv2": {"bits": 6, "integer": 6}}))


def test_activation_integer_chosen_from_the_calibration_batch():
    """r's input is 0.5 * x + 3.5: 3.5 on black images (integer 2: [0, 3.98]); 3.996 on white ones (3)."""
    model = offset_model(3.5)
    black, white = np.zeros((8, 4, 4, 1), np.float32), np.ones((8, 4, 4, 1), np.float32)
    _, on_black = choose_ranges(model, QuantizeConfig(), black)
    qcfg, on_white = choose_ranges(model, QuantizeConfig(), white)
    assert (on_black["r"]["integer"], on_black["r"]["chosen"], on_black["r"]["max_abs"]) == (2, "data", 3.5)
    assert (on_white["r"]["integer"], on_white["r"]["clipped"], on_white["r"]["values"]) == (3, 0, 8 * 16)
    assert on_white["r"]["max_abs"] == pytest.approx(3.5 + 0.5 * 127 / 128)  # the input quantizer's 1.0
    assert str(build_quantized_model(model, qcfg).get_layer("r").quantizer) == "quantized_relu(8,3)"

    _, forced = choose_ranges(model, quantize_cfg(activation_integer=1), white)
    assert (forced["r"]["chosen"], forced["r"]["clipped"], forced["r"]["integer_needed"]) == ("config", 128, 3)
    assert forced["r"]["clipped_max_excess"] == pytest.approx(3.5 + 0.5 * 127 / 128 - (2 - 1 / 128))
    (line,) = range_warnings(forced)
    assert line.startswith("warning: r: quantize.activation_integer = 1 covers [0, 1.99219] and clips 128 of 128 "
                           "activation values on the calibration images")
    assert line.endswith("set it to 3 or null (chosen from the data)")
    # the input quantizer keeps its set range; white pixels saturating to 127/128 are no warning
    assert on_white["x_quantizer"]["chosen"] == "config" and on_white["x_quantizer"]["clipped"] == 128
    assert range_warnings(on_white) == []
    # no calibration images (a direct build): a null ReLU integer is the uncalibrated default
    _, uncalibrated = choose_ranges(model, QuantizeConfig())
    assert (uncalibrated["r"]["integer"], uncalibrated["r"]["chosen"]) == (UNCALIBRATED_ACTIVATION_INTEGER, "default")
    # a per-layer entry without an integer inherits the section's
    _, inherited = choose_ranges(model, quantize_cfg(activation_integer=4, layers={"r": {"bits": 6}}), white)
    assert (inherited["r"]["bits"], inherited["r"]["integer"], inherited["r"]["chosen"]) == (6, 4, "config")


def test_a_fused_relu_gets_its_own_range():
    """Conv2D(activation="relu") becomes QConv2D + QActivation "c_relu", a layer of the QKeras model only."""
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([layers.Conv2D(2, 1, activation="relu", input_shape=(4, 4, 1), name="c"),
                                 layers.Flatten(name="f"), layers.Dense(2, name="d")])
    model.get_layer("c").set_weights([np.full((1, 1, 1, 2), 0.5, np.float32), np.array([5.0, 5.0], np.float32)])
    qcfg, ranges = choose_ranges(model, QuantizeConfig(), np.zeros((2, 4, 4, 1), np.float32))
    assert (ranges["c_relu"]["integer"], ranges["c_relu"]["bits_key"]) == (3, "quantize.activation_bits")
    assert ranges["c"]["bits_key"] == "quantize.layers.c.bits"
    assert str(build_quantized_model(model, qcfg).get_layer("c_relu").quantizer) == "quantized_relu(8,3)"


def test_even_all_the_bits_clip_says_give_more_bits():
    black = np.zeros((2, 4, 4, 1), np.float32)
    _, ranges = choose_ranges(offset_model(300.0), quantize_cfg(activation_bits=6, bias_integer=10), black)
    r = ranges["r"]
    assert (r["integer"], r["chosen"], r["clipped"]) == (6, "data", 32)
    (line,) = range_warnings(ranges)
    assert "the widest range of 6 bits (6 integer bits) covers [0, 63] and clips 32 of 32" in line
    assert line.endswith("give r more bits (quantize.layers.r.bits)")


def test_quantize_summary_records_ranges_warnings_and_optimizer(small_data):
    tf.keras.utils.set_random_seed(0)
    model = build_reference_cnn(ModelConfig(conv_filters=[4, 8], fc_units=16))
    kernel, bias = model.get_layer("fc2").get_weights()
    kernel[0, 0] = 1.7
    model.get_layer("fc2").set_weights([kernel, bias])
    cfg = parse_config({"quantize": {"epochs": 0, "calibration_images": 50, "layers": {"fc2": {"integer": 0}}},
                        "train": {"optimizer": "rmsprop", "learning_rate": 0.002}})
    qmodel, summary = quantize_model(model, {}, small_data, cfg, verbose=0)
    ranges = summary["ranges"]
    assert summary["calibration_images"] == 50
    assert ranges["fc2"]["chosen"] == "config" and ranges["fc2"]["clipped"] == 1
    assert ranges["fc2"]["clipped_after_finetune"] == 1
    assert ranges["relu1"]["chosen"] == "data" and ranges["relu1"]["clipped"] == 0
    assert summary["bits"]["relu1"]["integer"] == ranges["relu1"]["integer"] and summary["bits"]["fc2"]["integer"] == 0
    assert str(qmodel.get_layer("relu1").quantizer) == f"quantized_relu(8,{ranges['relu1']['integer']})"
    assert len(summary["warnings"]) == 1 and summary["warnings"][0].startswith("warning: fc2: quantize.layers.fc2")
    assert (summary["optimizer"], summary["learning_rate"]) == ("rmsprop", pytest.approx(0.0002))


def test_quantize_step_says_one_warning_line_per_clipping_layer(tmp_path, small_data):
    from fpgaprune.flow.hw_steps import quantize
    from fpgaprune.flow.options import Options
    from fpgaprune.run import Run

    tf.keras.utils.set_random_seed(0)
    model = build_reference_cnn(ModelConfig(conv_filters=[4, 8], fc_units=16))
    for name in ("conv1", "fc1"):
        kernel, bias = model.get_layer(name).get_weights()
        kernel.flat[0] = 1.5
        model.get_layer(name).set_weights([kernel, bias])
    cfg = parse_config({"name": "r", "runs_dir": str(tmp_path), "data": {"limit": 100},
                        "quantize": {"epochs": 0, "weight_integer": 0, "calibration_images": 20,
                                     "start_from": "pruned"}})
    run = Run(cfg)
    run.save("pruned", model, {"stage": "pruned"})
    said = []
    result = quantize(run, cfg, Options(say=said.append))
    warnings = [line for line in said if line.startswith("warning:")]
    assert [w.split(":")[1].strip() for w in warnings] == ["conv1", "fc1"]
    assert all("quantize.weight_integer = 0 covers [-1, 0.992188] and clips 1 of" in w for w in warnings)
    assert result.summary["warnings"] == warnings
    assert result.summary["ranges"]["conv1"]["clipped_max_excess"] == pytest.approx(1.5 - 127 / 128)


def test_null_integers_in_the_config():
    q = parse_config({"quantize": {"layers": {"conv2": {"bits": 6}, "fc1": {"bits": 4, "integer": 1}}}}).quantize
    assert q.weight_integer is None and q.activation_integer is None and q.calibration_images == 256
    assert q.layers["conv2"].integer is None and q.layers["fc1"].integer == 1
    assert parse_config({"quantize": {"weight_integer": 2}}).quantize.weight_integer == 2
