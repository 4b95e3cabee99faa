"""The mask mechanism (masks.py + spec.py): pruned kernels stay exactly 0.0 inside `fit`.

For every optimizer the issue names and for Conv2D and QConv2D models: after several epochs
every masked weight is exactly 0.0 (and +0.0), the optimizer state of masked weights stays
zero, and every unmasked kernel moved. Zeros survive save -> load and further training.
"""

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.errors import BadInput
from fpgaprune.masks import (
    KernelMask,
    apply_masks,
    check_masks,
    load_masks,
    masked_max_abs,
    masks_of,
    save_masks,
    strip_masks,
)
from fpgaprune.models import load_model_file, save_model
from fpgaprune.process import reseed
from fpgaprune.spec import masks_to_spec, read_mask_spec, spec_to_masks, write_mask_spec
from fpgaprune.training.fit import compile_model, make_optimizer

OPTIMIZERS = {
    "sgd_momentum": lambda: make_optimizer("sgd", 0.05, momentum=0.9),
    "nesterov": lambda: make_optimizer("sgd", 0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda: make_optimizer("rmsprop", 0.003, momentum=0.5),
    "adam": lambda: make_optimizer("adam", 0.003),
}


def tiny_cnn(quantized: bool) -> tf.keras.Model:
    """conv1 (1->4) -> pool -> conv2 (4->6) -> pool -> fc: small enough to train in a second."""
    L = tf.keras.layers
    x = inputs = L.Input((28, 28, 1))
    if quantized:
        from qkeras import QActivation, QConv2D, QDense, quantized_bits, quantized_relu

        q = lambda: quantized_bits(8, 0, alpha=1)  # noqa: E731
        x = QConv2D(4, 3, kernel_quantizer=q(), bias_quantizer=q(), name="conv1")(x)
        x = QActivation(quantized_relu(8, 3), name="relu1")(x)
        x = L.MaxPooling2D(2)(x)
        x = QConv2D(6, 3, kernel_quantizer=q(), bias_quantizer=q(), name="conv2")(x)
        x = QActivation(quantized_relu(8, 3), name="relu2")(x)
        x = L.MaxPooling2D(2)(x)
        x = L.Flatten()(x)
        x = QDense(10, kernel_quantizer=q(), bias_quantizer=q(), name="fc")(x)
    else:
        x = L.Conv2D(4, 3, activation="relu", name="conv1")(x)
        x = L.MaxPooling2D(2)(x)
        x = L.Conv2D(6, 3, activation="relu", name="conv2")(x)
        x = L.MaxPooling2D(2)(x)
        x = L.Flatten()(x)
        x = L.Dense(10, name="fc")(x)
    outputs = L.Activation("softmax")(x)
    return tf.keras.Model(inputs, outputs)


def some_masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    conv2 = rng.random((4, 6)) < 0.5
    conv2[0, 0], conv2[0, 1] = True, False
    conv1 = np.zeros((1, 4), bool)
    conv1[0, 2] = True
    return {"conv1": conv1, "conv2": conv2}


def masked_weights(model, masks):
    return np.concatenate([model.get_layer(n).kernel.numpy()[:, :, m].ravel() for n, m in masks.items()])


@pytest.mark.slow
@pytest.mark.parametrize("quantized", [False, True], ids=["Conv2D", "QConv2D"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_masked_kernels_stay_exactly_zero(small_data, opt, quantized):
    reseed(0)
    model = tiny_cnn(quantized)
    masks = some_masks()
    before = {n: model.get_layer(n).kernel.numpy().copy() for n in masks}
    pruned = apply_masks(model, masks)
    compile_model(pruned, OPTIMIZERS[opt](), masked=True)
    x, y = small_data.x_train[:320], small_data.y_train[:320]
    pruned.fit(x, y, epochs=3, batch_size=32, verbose=0)  # 30 optimizer steps

    w = masked_weights(pruned, masks)
    assert np.all(w == 0.0) and not np.signbit(w).any()  # exactly +0.0
    assert masked_max_abs(pruned) == 0.0
    dead_inputs = masks["conv1"].all(axis=0)  # conv1 channel 2 is pruned: conv2 sees zeros there
    for name, m in masks.items():
        after = pruned.get_layer(name).kernel.numpy()
        moved = np.abs(after - before[name]).max(axis=(0, 1))
        live = ~m & (~dead_inputs[:, None] if name == "conv2" else True)
        assert live.sum() >= 3 and np.all(moved[live] > 0), f"{name}: some unmasked kernel did not train"
    # optimizer state (momentum, Adam moments, RMS averages) never accumulates for masked weights
    kernel = pruned.get_layer("conv2").kernel
    slots = [v.numpy() for v in pruned.optimizer.variables if v.shape == kernel.shape]
    assert slots, "expected optimizer slots for conv2's kernel"
    for slot in slots:
        assert np.all(slot[:, :, masks["conv2"]] == 0.0)
    # the input model is untouched
    for name in masks:
        assert np.array_equal(model.get_layer(name).kernel.numpy(), before[name])


def test_qconv2d_mask_keeps_quantizer_clipping():
    model = tiny_cnn(quantized=True)
    pruned = apply_masks(model, some_masks())
    c = pruned.get_layer("conv2").kernel_constraint
    assert isinstance(c, KernelMask) and c.clip == 1.0
    big = tf.fill(pruned.get_layer("conv2").kernel.shape, 5.0)
    out = c(big).numpy()
    assert out.max() == 1.0 and np.all(out[:, :, some_masks()["conv2"]] == 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("quantized", [False, True], ids=["Conv2D", "QConv2D"])
def test_zeros_survive_save_load_and_more_training(tmp_path, small_data, quantized):
    reseed(1)
    masks = some_masks()
    pruned = apply_masks(tiny_cnn(quantized), masks)
    compile_model(pruned, make_optimizer("adam", 0.003))
    pruned.fit(small_data.x_train, small_data.y_train, epochs=1, batch_size=64, verbose=0)
    save_model(pruned, tmp_path / "model.h5")

    loaded = load_model_file(tmp_path / "model.h5", allow_custom_code=True)
    assert {k: v.tolist() for k, v in masks_of(loaded).items()} == {k: v.tolist() for k, v in masks.items()}
    assert masked_max_abs(loaded) == 0.0
    for a, b in zip(pruned.get_weights(), loaded.get_weights(), strict=True):
        assert np.array_equal(a, b)
    # the constraint came back with the model: training after loading keeps the zeros
    compile_model(loaded, make_optimizer("sgd", 0.05, momentum=0.9))
    loaded.fit(small_data.x_train, small_data.y_train, epochs=1, batch_size=64, verbose=0)
    assert np.all(masked_weights(loaded, masks) == 0.0)

    stripped = strip_masks(loaded)
    assert masks_of(stripped) == {} and np.all(masked_weights(stripped, masks) == 0.0)


def test_bias_untouched_unless_asked(small_data):
    reseed(2)
    masks = {"conv2": np.zeros((4, 6), bool)}
    masks["conv2"][:, 5] = True  # output channel 5 fully pruned
    model = tiny_cnn(False)
    model.get_layer("conv2").bias.assign(np.full(6, 0.1, np.float32))
    for prune_bias in (False, True):
        pruned = apply_masks(model, masks, prune_bias=prune_bias)
        compile_model(pruned, make_optimizer("adam", 0.01))
        pruned.fit(small_data.x_train, small_data.y_train, epochs=1, batch_size=64, verbose=0)
        bias = pruned.get_layer("conv2").bias.numpy()
        if prune_bias:
            assert bias[5] == 0.0 and np.all(bias[:5] != 0.1)
        else:
            assert np.all(bias != 0.1)  # every bias trained, channel 5's too


def test_hand_written_spec_on_reference_model(tmp_path, reference_model):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("# my pruning\nconv2: [[29, 13]]\n")
    masks = spec_to_masks(read_mask_spec(spec_file), reference_model)
    assert list(masks) == ["conv2"] and masks["conv2"].shape == (32, 32)
    assert np.argwhere(masks["conv2"]).tolist() == [[29, 13]]
    pruned = apply_masks(reference_model, masks)
    w = pruned.get_layer("conv2").kernel.numpy()
    assert np.all(w[:, :, 29, 13] == 0.0) and np.count_nonzero(w == 0.0) == 9

    # masks -> YAML -> masks and masks -> npz -> masks are lossless
    write_mask_spec(masks_to_spec(masks), tmp_path / "again.yaml")
    again = spec_to_masks(read_mask_spec(tmp_path / "again.yaml"), reference_model)
    save_masks(masks, tmp_path / "masks.npz")
    for other in (again, load_masks(tmp_path / "masks.npz")):
        assert np.array_equal(other["conv2"], masks["conv2"])


@pytest.mark.parametrize(
    "masks, fragment",
    [
        ({"conv9": np.zeros((32, 32), bool)}, "no layer named 'conv9'"),
        ({"pool1": np.zeros((32, 32), bool)}, "'pool1' is a MaxPooling2D, not a Conv2D or Dense layer"),
        ({"fc1": np.zeros((800, 31), bool)}, "has 800 inputs x 32 outputs, but its mask is (800, 31)"),
        ({"conv2": np.zeros((32, 31), bool)}, "has 32 input x 32 output channels, but its mask is (32, 31)"),
    ],
)
def test_bad_masks_are_rejected(reference_model, masks, fragment):
    with pytest.raises(BadInput, match=None) as err:
        check_masks(reference_model, masks)
    assert fragment in str(err.value)
    with pytest.raises(BadInput):
        apply_masks(reference_model, masks)


def test_unreadable_masks_file(tmp_path):
    (tmp_path / "bad.npz").write_text("not an npz")
    with pytest.raises(BadInput, match="not a readable .npz"):
        load_masks(tmp_path / "bad.npz")
    np.savez(tmp_path / "floats.npz", conv2=np.zeros((3, 3)))
    with pytest.raises(BadInput, match="expected a 2-D boolean array"):
        load_masks(tmp_path / "floats.npz")
