"""Structural reduction (graph/reduce.py and the flow's reduce step): dead channels go, outputs stay.

Every shape it handles, on models of a few filters: a dead conv input removes the filter
upstream; a dead conv output is folded into a Dense after Flatten (with and without pooling)
or into a 'valid' conv, and kept before a 'same' conv unless it is 0; a Dense unit without
inputs is folded into the next Dense. Each checks equal outputs (1e-5) and the shapes; the
reference CNN reduces with equal outputs; masked weights stay exactly 0.0; the flow step
saves the stage that quantize can start from.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.config import ModelConfig, parse_config
from fpgaprune.errors import BadInput, WorkFailed
from fpgaprune.flow import Options, run_flow
from fpgaprune.graph.reduce import reduce_model, report_lines
from fpgaprune.masks import ChannelMask, KernelMask, apply_masks, load_masks, masked_max_abs, masks_of, save_masks
from fpgaprune.models import build_reference_cnn
from fpgaprune.run import MASKS_FILE, Run
from fpgaprune.training.fit import compile_model, make_optimizer

L = tf.keras.layers
TOLERANCE = 1e-5


def randomized(model: tf.keras.Model, seed: int = 0) -> tf.keras.Model:
    """Random weights and biases of both signs, so dead channels carry non-zero constants."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "kernel", None) is not None:
            layer.kernel.assign(rng.normal(0, 0.4, layer.kernel.shape).astype(np.float32))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.1, 0.3, layer.bias.shape).astype(np.float32))
    return model


def chain(*layers, shape=(9, 9, 1)) -> tf.keras.Model:
    x = inputs = L.Input(shape, name="image")
    for layer in layers:
        x = layer(x)
    return randomized(tf.keras.Model(inputs, x, name="chain"))


def images(n: int = 16, shape=(9, 9, 1), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def reduced_and_checked(model, masks, x=None):
    """Reduce `model` (masked), check equal outputs and that the input model is unchanged."""
    pruned = apply_masks(model, masks)
    weights = [w.copy() for w in pruned.get_weights()]
    reduced, reduced_masks, report = reduce_model(pruned, masks)
    x = images(shape=pruned.input_shape[1:]) if x is None else x
    diff = np.abs(pruned.predict(x, verbose=0) - reduced.predict(x, verbose=0)).max()
    assert diff <= TOLERANCE, report_lines(report)
    assert all(np.array_equal(a, b) for a, b in zip(weights, pruned.get_weights(), strict=True))
    assert masked_max_abs(reduced, reduced_masks) == 0.0
    return reduced, reduced_masks, report


def row(report, name):
    return next(r for r in report["layers"] if r["layer"] == name)


def kernel_shape(model, name):
    return list(model.get_layer(name).kernel.shape)


def test_dead_input_channel_removes_the_filter_upstream():
    model = chain(L.Conv2D(4, 3, name="a"), L.Activation("relu", name="r"), L.MaxPooling2D(name="p"),
                  L.Conv2D(3, 3, name="b"), L.Flatten(name="f"), L.Dense(2, name="fc"))
    pruned_b = np.zeros((4, 3), bool)
    pruned_b[1, :] = True  # input channel 1 of b: every kernel pruned
    reduced, masks, report = reduced_and_checked(model, {"b": pruned_b})
    assert kernel_shape(reduced, "a") == [3, 3, 1, 3] and kernel_shape(reduced, "b") == [3, 3, 3, 3]
    assert [(r["channel"], r["reason"]) for r in row(report, "a")["removed"]] == [(1, "unused")]
    assert masks["b"].shape == (3, 3) and not masks["b"].any()
    assert report["params_after"] < report["params_before"]


@pytest.mark.parametrize("pool", [None, "max", "avg_same"])
def test_dead_output_channel_is_folded_into_the_dense_after_flatten(pool):
    pools = {None: [], "max": [L.MaxPooling2D(name="p")], "avg_same": [L.AveragePooling2D(3, 2, "same", name="p")]}
    model = chain(L.Conv2D(4, 3, activation="relu", name="c"), *pools[pool], L.Flatten(name="f"),
                  L.Dense(5, name="fc"), L.Activation("softmax", name="sm"))
    model.get_layer("c").bias.assign([0.1, -0.2, 0.7, 0.3])
    pruned = np.zeros((1, 4), bool)
    pruned[0, 2] = True  # output 2: every kernel pruned -> relu(0.7) everywhere
    reduced, _, report = reduced_and_checked(model, {"c": pruned})
    pixels = int(np.prod(model.get_layer("f").input_shape[1:-1]))
    assert kernel_shape(reduced, "c") == [3, 3, 1, 3]
    assert kernel_shape(reduced, "fc") == [3 * pixels, 5]
    removed = row(report, "c")["removed"]
    assert removed[0]["channel"] == 2 and removed[0]["constant"] == pytest.approx(0.7)
    assert "folded into fc's bias" in removed[0]["why"]
    assert not np.allclose(reduced.get_layer("fc").bias.numpy(), model.get_layer("fc").bias.numpy())


def test_global_pooling_carries_a_constant_channel_to_the_dense():
    model = chain(L.Conv2D(3, 3, activation="relu", name="c"), L.GlobalAveragePooling2D(name="g"),
                  L.Dense(2, name="fc"))
    pruned = np.zeros((1, 3), bool)
    pruned[0, 0] = True
    reduced, _, _ = reduced_and_checked(model, {"c": pruned})
    assert kernel_shape(reduced, "c") == [3, 3, 1, 2] and kernel_shape(reduced, "fc") == [2, 2]


def dead_output_into_conv(padding: str, bias: float):
    model = chain(L.Conv2D(4, 3, name="a"), L.ReLU(name="r"), L.Conv2D(3, 3, padding=padding, name="b"),
                  L.Flatten(name="f"), L.Dense(2, name="fc"))
    model.get_layer("a").bias.assign([0.1, -0.2, bias, 0.3])
    pruned = np.zeros((1, 4), bool)
    pruned[0, 2] = True
    return model, {"a": pruned}


def test_dead_output_channel_is_folded_into_a_valid_conv():
    model, masks = dead_output_into_conv("valid", 0.5)
    reduced, _, report = reduced_and_checked(model, masks)
    assert kernel_shape(reduced, "a") == [3, 3, 1, 3] and kernel_shape(reduced, "b") == [3, 3, 3, 3]
    assert row(report, "a")["removed"][0]["channel"] == 2
    expected = model.get_layer("b").bias.numpy() + 0.5 * model.get_layer("b").kernel.numpy()[:, :, 2, :].sum((0, 1))
    np.testing.assert_allclose(reduced.get_layer("b").bias.numpy(), expected, rtol=1e-6)


def test_a_same_padded_conv_next_keeps_the_constant_channel_and_says_why():
    model, masks = dead_output_into_conv("same", 0.5)
    reduced, _, report = reduced_and_checked(model, masks)
    assert kernel_shape(reduced, "a") == [3, 3, 1, 4] and kernel_shape(reduced, "b") == [3, 3, 4, 3]
    kept = row(report, "a")["kept_constant"]
    assert [k["channel"] for k in kept] == [2] and "'same'-padded" in kept[0]["why"]
    assert "'same'-padded" in report_lines(report)


def test_a_zero_constant_goes_even_before_a_same_padded_conv():
    model, masks = dead_output_into_conv("same", -0.5)  # relu(-0.5) = 0: adds nothing, padding or not
    reduced, _, report = reduced_and_checked(model, masks)
    assert kernel_shape(reduced, "a") == [3, 3, 1, 3] and kernel_shape(reduced, "b") == [3, 3, 3, 3]
    assert row(report, "a")["removed"][0]["constant"] == 0.0


def test_a_dense_unit_without_inputs_is_folded_into_the_next_dense():
    model = chain(L.Conv2D(2, 3, name="c"), L.Flatten(name="f"), L.Dense(3, activation="tanh", name="fc1"),
                  L.Dropout(0.5, name="d"), L.Dense(2, name="fc2"), shape=(5, 5, 1))
    kernel = model.get_layer("fc1").kernel.numpy()
    kernel[0::2, 0] = 0.0  # unit 0 reads only channel 1 of c, which is dead
    model.get_layer("fc1").kernel.assign(kernel)
    pruned = np.zeros((1, 2), bool)
    pruned[0, 1] = True
    reduced, _, report = reduced_and_checked(model, {"c": pruned}, images(shape=(5, 5, 1)))
    assert kernel_shape(reduced, "c") == [3, 3, 1, 1]
    assert kernel_shape(reduced, "fc1") == [9, 2] and kernel_shape(reduced, "fc2") == [2, 2]
    removed = row(report, "fc1")["removed"]
    assert [r["channel"] for r in removed] == [0] and "folded into fc2's bias" in removed[0]["why"]


def test_reference_cnn_with_most_of_conv2_pruned():
    tf.keras.utils.set_random_seed(0)
    model = randomized(build_reference_cnn(ModelConfig(conv_filters=[8, 16], fc_units=16)))
    pruned = np.random.default_rng(2).random((8, 16)) < 0.9
    pruned[3, :] = True  # at least one dead input and one dead output
    pruned[:, 5] = True
    reduced, masks, report = reduced_and_checked(model, {"conv2": pruned}, images(64, (28, 28, 1)))
    keep_in, keep_out = ~pruned.all(axis=1), ~pruned.all(axis=0)
    assert kernel_shape(reduced, "conv1") == [3, 3, 1, int(keep_in.sum())]
    assert kernel_shape(reduced, "conv2") == [3, 3, int(keep_in.sum()), int(keep_out.sum())]
    assert kernel_shape(reduced, "fc1") == [25 * int(keep_out.sum()), 16]
    np.testing.assert_array_equal(masks["conv2"], pruned[np.ix_(keep_in, keep_out)])
    assert report["macs_after"] < report["macs_before"]


def test_masked_weights_stay_exactly_zero_in_the_reduced_model(small_data):
    tf.keras.utils.set_random_seed(0)
    model = randomized(build_reference_cnn(ModelConfig(conv_filters=[4, 8], fc_units=16)))
    pruned = np.random.default_rng(4).random((4, 8)) < 0.6
    reduced, masks, _ = reduce_model(apply_masks(model, {"conv2": pruned}, prune_bias=True), {"conv2": pruned})
    assert isinstance(reduced.get_layer("conv2").kernel_constraint, KernelMask)
    assert isinstance(reduced.get_layer("conv2").bias_constraint, ChannelMask)
    np.testing.assert_array_equal(masks_of(reduced)["conv2"], masks["conv2"])
    compile_model(reduced, make_optimizer("adam", 0.01))
    reduced.fit(small_data.x_train[:128], small_data.y_train[:128], epochs=1, batch_size=32, verbose=0)
    kernel = reduced.get_layer("conv2").kernel.numpy()
    assert masks["conv2"].any() and np.all(kernel[:, :, masks["conv2"]] == 0.0)
    assert not np.signbit(kernel[:, :, masks["conv2"]]).any()  # +0.0, not -0.0


@pytest.mark.parametrize("extra, fragment", [
    (lambda: L.BatchNormalization(name="bn"), "'bn' (BatchNormalization) is not one the reduction understands"),
    (lambda: L.LeakyReLU(name="act"), "'act' (LeakyReLU)"),
])
def test_what_it_does_not_understand_is_kept_unreduced_with_the_reason(extra, fragment):
    model = chain(L.Conv2D(4, 3, name="a"), extra(), L.Conv2D(3, 3, name="b"), L.Flatten(), L.Dense(2))
    pruned = np.zeros((4, 3), bool)
    pruned[1, :] = True
    reduced, masks, report = reduced_and_checked(model, {"b": pruned})
    assert not report["reduced"] and fragment in report["refused"] and not report["constant"]
    assert kernel_shape(reduced, "a") == [3, 3, 1, 4] and masks["b"].shape == (4, 3)
    assert report_lines(report).startswith("not reduced:")


def test_masks_that_cut_every_path_say_the_model_is_constant():
    model = chain(L.Conv2D(4, 3, name="a"), L.ReLU(), L.Conv2D(3, 3, name="b"), L.Flatten(), L.Dense(2))
    reduced, masks, report = reduced_and_checked(model, {"b": np.ones((4, 3), bool)})
    assert not report["reduced"] and report["constant"] and "does not depend on its input" in report["refused"]
    out = reduced.predict(images(5), verbose=0)
    np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), atol=1e-6)  # the same for every image
    assert kernel_shape(reduced, "b") == [3, 3, 4, 3] and masks["b"].all()


def test_a_branching_model_is_kept_unreduced():
    x = inputs = L.Input((9, 9, 1))
    a = L.Conv2D(4, 3, name="a")(x)
    b = L.Conv2D(4, 3, name="b")(x)
    y = L.Dense(2)(L.Flatten()(L.Add()([a, b])))
    model = randomized(tf.keras.Model(inputs, y))
    _, _, report = reduced_and_checked(model, {"a": np.ones((1, 4), bool)})
    assert not report["reduced"] and "branches" in report["refused"]


TINY = {"conv_filters": [4, 8], "fc_units": 16}


def flow_config(tmp_path, **sections):
    """A run over a few random images (the step needs no real data: it checks equal outputs)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x_train=rng.integers(0, 256, (60, 28, 28), np.uint8), y_train=np.arange(60) % 10,
             x_test=rng.integers(0, 256, (30, 28, 28), np.uint8), y_test=np.arange(30) % 10)
    return parse_config({"name": "reduce", "runs_dir": str(tmp_path / "runs"), "model": TINY,
                         "data": {"dataset": f"npz:{path}"}, **sections})


def saved_pruned_stage(cfg) -> dict:
    tf.keras.utils.set_random_seed(0)
    model = randomized(build_reference_cnn(ModelConfig(**TINY)))
    pruned = np.random.default_rng(5).random((4, 8)) < 0.7
    pruned[0, :] = True
    masks = {"conv2": pruned}
    Run(cfg).save("pruned", apply_masks(model, masks), {"stage": "pruned"},
                  extras={MASKS_FILE: lambda p: save_masks(masks, p)})
    return masks


def test_the_reduce_step_saves_a_stage_that_quantize_starts_from(tmp_path):
    cfg = flow_config(tmp_path, quantize={"start_from": "reduced", "epochs": 0})
    run = Run(cfg)
    with pytest.raises(BadInput, match="no saved pruned model; run the 'prune' step first"):
        run_flow(cfg, steps=["quantize"], options=Options(verbose=0))
    saved_pruned_stage(cfg)
    lines = []
    result = run_flow(cfg, steps=["reduce"], options=Options(verbose=0, say=lines.append)).results["reduce"]
    s = result.summary
    equal = s["equal_outputs"]
    assert s["reduced"] and equal["outputs"]["max_abs_diff"] <= TOLERANCE and equal["images"] > 0
    assert s["equal_outputs"]["logits"]["max_abs_diff"] <= s["equal_outputs"]["logits"]["tolerance"]
    assert s["masked_max_abs"] == 0.0 and result.folder == run.stage_dir("reduced")
    assert row(s, "conv2")["before"] == [3, 3, 4, 8] and row(s, "conv2")["after"][2] == 3
    assert "reduced model saved to" in lines[-1]
    reduced, saved = run.load("reduced")
    stage_masks = load_masks(run.stage_dir("reduced") / MASKS_FILE)
    np.testing.assert_array_equal(stage_masks["conv2"], masks_of(reduced)["conv2"])
    kernels = sum(int(np.prod(kernel_shape(reduced, name)[2:])) for name in ("conv1", "conv2"))
    assert saved["result"]["kernels_total"] == kernels
    assert saved["result"]["kernels_pruned"] == stage_masks["conv2"].sum()

    quantized = run_flow(cfg, steps=["quantize"], options=Options(verbose=0)).results["quantize"]
    qmodel = quantized.model
    assert list(qmodel.get_layer("conv2").kernel.shape) == list(reduced.get_layer("conv2").kernel.shape)
    assert quantized.summary["masked_max_abs_quantized"] == 0.0
    assert quantized.summary["source"] == str(run.stage_dir("reduced"))


def test_the_reduce_step_needs_a_pruned_stage(tmp_path):
    with pytest.raises(BadInput, match="no saved pruned stage; run the 'prune' step first"):
        run_flow(flow_config(tmp_path), steps=["reduce"])


def test_the_reduce_step_fails_when_the_outputs_differ(tmp_path, monkeypatch):
    import fpgaprune.graph.reduce as reduce_module

    real = reduce_module.reduce_model

    def off_by_a_bit(model, masks):
        reduced, reduced_masks, report = real(model, masks)
        bias = reduced.get_layer("fc2").bias
        bias.assign(bias + 1e-3)
        return reduced, reduced_masks, report

    cfg = flow_config(tmp_path)
    saved_pruned_stage(cfg)
    monkeypatch.setattr(reduce_module, "reduce_model", off_by_a_bit)
    with pytest.raises(WorkFailed, match="reduced model's (outputs|logits) differ from the pruned model's"):
        run_flow(cfg, steps=["reduce"], options=Options(verbose=0))
    assert not Run(cfg).stage_dir("reduced").exists()
