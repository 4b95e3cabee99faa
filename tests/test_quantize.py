"""Quantization: QKeras rebuild, masks kept through QAT, quantized pruned weights exactly 0."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.cli import main
from fpgaprune.config import ModelConfig, QuantizeConfig, parse_config
from fpgaprune.errors import BadInput
from fpgaprune.hw.quantize import (
    build_quantized_model,
    check_convertible,
    check_quantized_zeros,
    logits_model,
    quantize_model,
    quantized_kernels,
)
from fpgaprune.masks import KernelMask, apply_masks, masks_of
from fpgaprune.models import build_reference_cnn

TINY = ModelConfig(conv_filters=[4, 8], fc_units=16)
pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")


def tiny_masks(seed: int = 0) -> dict[str, np.ndarray]:
    return {"conv2": np.random.RandomState(seed).rand(4, 8) < 0.5}


def test_rebuild_is_qkeras_with_input_quantizer_and_masks():
    tf.keras.utils.set_random_seed(0)
    model = apply_masks(build_reference_cnn(TINY), tiny_masks())
    before = [w.copy() for w in model.get_weights()]
    layers = {"conv2": {"bits": 6}, "fc1": {"bits": 4}, "relu2": {"bits": 6, "integer": 2}}
    qcfg = parse_config({"quantize": {"layers": layers}}).quantize
    qmodel = build_quantized_model(model, qcfg, masks_of(model))

    kinds = {layer.name: type(layer).__name__ for layer in qmodel.layers}
    assert kinds["conv1"] == kinds["conv2"] == "QConv2D" and kinds["fc1"] == kinds["fc2"] == "QDense"
    assert kinds["relu1"] == kinds["relu2"] == kinds["relu_fc1"] == "QActivation"
    first = qmodel.layers[1]  # right after the input: hls4ml needs it for bit-exact types
    assert type(first).__name__ == "QActivation" and "quantized_bits(8,0" in str(first.quantizer)
    assert "input" not in kinds  # hls4ml reserves that name
    assert qmodel.get_layer("conv2").kernel_quantizer_internal.bits == 6
    assert qmodel.get_layer("fc1").kernel_quantizer_internal.bits == 4
    assert qmodel.get_layer("conv1").kernel_quantizer_internal.bits == 8
    assert str(qmodel.get_layer("relu2").quantizer) == "quantized_relu(6,2)"
    assert isinstance(qmodel.get_layer("conv2").kernel_constraint, KernelMask)
    np.testing.assert_array_equal(masks_of(qmodel)["conv2"], tiny_masks()["conv2"])
    # the input model is untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert type(model.get_layer("conv2")).__name__ == "Conv2D"
    # same function up to quantization: predictions agree on most images
    x = np.random.RandomState(1).rand(64, 28, 28, 1).astype(np.float32)
    agree = np.mean(model.predict(x, verbose=0).argmax(1) == qmodel.predict(x, verbose=0).argmax(1))
    assert agree > 0.8


@pytest.mark.slow
def test_quantized_pruned_weights_are_exactly_zero_after_qat(small_data):
    tf.keras.utils.set_random_seed(0)
    masks = tiny_masks()
    model = apply_masks(build_reference_cnn(TINY), masks)
    cfg = parse_config({"quantize": {"epochs": 1, "weight_bits": 4}, "train": {"batch_size": 64}})
    qmodel, summary = quantize_model(model, masks, small_data, cfg, verbose=0)

    kernel = quantized_kernels(qmodel)["conv2"]
    assert np.all(kernel[:, :, masks["conv2"]] == 0.0)
    assert np.count_nonzero(kernel[:, :, ~masks["conv2"]]) > 0
    float_kernel = qmodel.get_layer("conv2").kernel.numpy()
    assert np.all(float_kernel[:, :, masks["conv2"]] == 0.0)
    assert summary["masked_max_abs_quantized"] == 0.0 and summary["masked_max_abs_float"] == 0.0
    assert summary["val_accuracy"] is not None and summary["float"]["val_accuracy"] is not None
    assert summary["bits"]["conv2"]["bits"] == 4
    assert summary["masked_kernels"] == {"conv2": int(masks["conv2"].sum())}


def test_check_quantized_zeros_catches_a_leak():
    model = build_quantized_model(build_reference_cnn(TINY), QuantizeConfig())
    masks = tiny_masks()
    with pytest.raises(Exception, match="masked weight"):
        check_quantized_zeros(model, masks)  # no masks applied: masked kernels are not 0


def test_logits_model_drops_final_softmax():
    qmodel = build_quantized_model(build_reference_cnn(TINY), QuantizeConfig())
    logits = logits_model(qmodel)
    assert logits.layers[-1].name == "fc2"
    x = np.random.RandomState(0).rand(4, 28, 28, 1).astype(np.float32)
    np.testing.assert_allclose(tf.nn.softmax(logits.predict(x, verbose=0)), qmodel.predict(x, verbose=0), rtol=1e-5)


def test_sequential_and_fused_activations():
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [layers.Conv2D(2, 3, activation="relu", input_shape=(8, 8, 1), name="c"), layers.Flatten(name="f"),
         layers.Dense(3, activation="softmax", name="d")]
    )
    qmodel = build_quantized_model(model, QuantizeConfig())
    names = [(layer.name, type(layer).__name__) for layer in qmodel.layers]
    assert names[1][1] == "QActivation" and ("c_relu", "QActivation") in names and ("d_softmax", "Activation") in names


def test_unconvertible_layer_is_named():
    layers = tf.keras.layers
    inp = layers.Input((8, 8, 1), name="x")
    out = layers.Dense(2, name="d")(layers.Flatten()(layers.GaussianNoise(0.1, name="noise")(inp)))
    model = tf.keras.Model(inp, out)
    with pytest.raises(BadInput, match=r"layer 'noise' \(GaussianNoise\) cannot be converted by hls4ml"):
        check_convertible(model)
    with pytest.raises(BadInput, match="noise"):
        build_quantized_model(model, QuantizeConfig())


def test_unknown_layer_in_bits_table():
    with pytest.raises(BadInput, match="quantize.layers.conv9: no such layer"):
        qcfg = parse_config({"quantize": {"layers": {"conv9": {"bits": 4}}}}).quantize
        build_quantized_model(build_reference_cnn(TINY), qcfg)


@pytest.mark.parametrize(
    "override, message",
    [
        ("quantize.weight_bits=1", "quantize.weight_bits: 1 is below the minimum 2"),
        ("quantize.activation_bits=40", "quantize.activation_bits: 40 is above the maximum 32"),
        ("quantize.weight_integer=8", "weight_integer: 8 integer bits plus the sign do not fit"),
        ("quantize.layers={conv2: {bits: 64}}", "quantize.layers.conv2.bits: 64 is above the maximum 32"),
    ],
)
def test_bit_widths_out_of_range_exit_2(override, message, capsys):
    assert main(["quantize", "--config", "configs/mnist_cnn.yaml", "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_missing_pruned_stage_says_make_prune(tmp_path, capsys):
    code = main(["quantize", "--config", "configs/mnist_cnn.yaml", "--set", f"runs_dir={tmp_path}"])
    assert code == 2
    assert "run `make prune` first" in capsys.readouterr().err


@pytest.mark.slow
def test_unconvertible_layer_in_pruned_stage_exit_2(tmp_path, capsys):
    from fpgaprune.run import Run

    layers = tf.keras.layers
    inp = layers.Input((8, 8, 1), name="x")
    x = layers.Conv2D(2, 3, name="conv")(layers.GaussianNoise(0.1, name="noise")(inp))
    model = tf.keras.Model(inp, layers.Dense(2, name="d")(layers.Flatten(name="f")(x)))
    cfg = parse_config({"name": "u", "runs_dir": str(tmp_path)})
    Run(cfg).save("pruned", model, {"stage": "pruned"})
    code = main(["quantize", "--config", "configs/mnist_cnn.yaml", "--set", f"runs_dir={tmp_path}", "--set", "name=u"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fpgaprune: error: layer 'noise' (GaussianNoise) cannot be converted by hls4ml 1.3.0"]
