"""Graph passes: flattening nested models and folding BatchNormalization, exact and read-only."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.errors import BadInput
from fpgaprune.graph import flatten_model, fold_batchnorm, prepare_model
from fpgaprune.masks import KernelMask, apply_masks, masked_max_abs, masks_of
from fpgaprune.models import load_saved_model, save_model

L = tf.keras.layers
pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")


def random_bn_statistics(model: tf.keras.Model, seed: int = 0) -> None:
    """Give every BN (nested ones too) non-trivial statistics, some scales negative."""
    rs = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            random_bn_statistics(layer, seed + 1)
        elif isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            weights = {"gamma": rs.uniform(-1.5, 1.5, n), "beta": rs.randn(n), "moving_mean": rs.randn(n) * 0.3,
                       "moving_variance": rs.uniform(0.2, 2.0, n)}
            layer.set_weights([weights[w.name.split("/")[-1].split(":")[0]] for w in layer.weights])


def bn_model() -> tf.keras.Model:
    """Every foldable kind with a BN after it: Conv2D (no bias), DepthwiseConv2D, SeparableConv2D, Dense."""
    tf.keras.utils.set_random_seed(0)
    x = inp = L.Input((16, 16, 3), name="pixels")
    x = L.Conv2D(4, 3, use_bias=False, name="conv")(x)
    x = L.BatchNormalization(name="bn_conv")(x)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="bn_dw", scale=False)(x)
    x = L.SeparableConv2D(6, 3, strides=2, name="sep")(x)
    x = L.BatchNormalization(name="bn_sep", center=False)(x)
    x = L.Activation("relu", name="relu2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(5, name="fc")(x)
    x = L.BatchNormalization(name="bn_fc")(x)
    model = tf.keras.Model(inp, L.Softmax(name="softmax")(x), name="bn_cnn")
    random_bn_statistics(model)
    return model


def images(shape=(16, 16, 3), n=32, seed=1):
    return np.random.RandomState(seed).rand(n, *shape).astype(np.float32)


def test_fold_is_exact_to_float_precision_and_removes_every_bn():
    model = bn_model()
    before = [w.copy() for w in model.get_weights()]
    folded, report = fold_batchnorm(model, images())
    kinds = {layer.name: type(layer).__name__ for layer in folded.layers}
    assert "BatchNormalization" not in kinds.values()
    assert [(f["batchnorm"], f["into"]) for f in report["folded"]] == [
        ("bn_conv", "conv"), ("bn_dw", "dw"), ("bn_sep", "sep"), ("bn_fc", "fc")]
    assert folded.get_layer("conv").use_bias  # a bias was added where the conv had none
    x = images(seed=2)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert report["max_abs_diff"] < 1e-5
    # the input model is untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert any(isinstance(layer, L.BatchNormalization) for layer in model.layers)


def test_fold_keeps_pruned_kernels_at_exactly_zero_and_their_masks():
    model = bn_model()
    rs = np.random.RandomState(3)
    masks = {"conv": rs.rand(3, 4) < 0.5, "sep": rs.rand(4, 6) < 0.5}
    pruned = apply_masks(model, masks)
    folded, _ = fold_batchnorm(pruned, images())
    assert set(masks_of(folded)) == {"conv", "sep"}
    assert isinstance(folded.get_layer("sep").pointwise_constraint, KernelMask)
    assert masked_max_abs(folded, masks) == 0.0
    for name, kernel in (("conv", folded.get_layer("conv").kernel), ("sep", folded.get_layer("sep").pointwise_kernel)):
        zeros = kernel.numpy()[:, :, masks[name]]
        assert np.all(zeros == 0.0) and not np.signbit(zeros).any()  # +0.0, even where the BN scale is negative
    x = images(seed=4)
    np.testing.assert_allclose(folded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def test_folded_model_saves_and_loads_with_its_masks(tmp_path):
    masks = {"conv": np.eye(3, 4, dtype=bool)}
    folded, _ = fold_batchnorm(apply_masks(bn_model(), masks))
    save_model(folded, tmp_path / "model.h5")
    loaded = load_saved_model(tmp_path)
    np.testing.assert_array_equal(masks_of(loaded)["conv"], masks["conv"])
    x = images(seed=5)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), folded.predict(x, verbose=0), atol=1e-6)


def test_a_model_without_bn_is_returned_as_is():
    model = tf.keras.Sequential([L.Conv2D(2, 3, input_shape=(8, 8, 1)), L.Flatten(), L.Dense(3)])
    folded, report = fold_batchnorm(model)
    assert folded is model and report["folded"] == []


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: L.BatchNormalization(name="bn")(L.ReLU(name="act")(L.Conv2D(4, 3, name="c")(x))),
         r"layer 'bn' \(BatchNormalization\) follows 'act' \(ReLU\), not a Conv2D"),
        (lambda x: L.BatchNormalization(name="bn")(L.Conv2D(4, 3, activation="relu", name="c")(x)),
         r"layer 'bn' \(BatchNormalization\) follows 'c', whose own 'relu' activation comes first"),
        (lambda x: L.BatchNormalization(name="bn")(L.MaxPooling2D(name="pool")(L.Conv2D(4, 3, name="c")(x))),
         r"follows 'pool' \(MaxPooling2D\)"),
        (lambda x: L.BatchNormalization(name="bn")(x), r"follows 'pixels' \(InputLayer\)"),
        (lambda x: (lambda c: L.Add(name="add")([c, L.BatchNormalization(name="bn")(c)]))(L.Conv2D(4, 3, name="c")(x)),
         r"the output of 'c' also feeds 'add'"),
        (lambda x: L.BatchNormalization(axis=1, name="bn")(L.Conv2D(4, 3, name="c")(x)),
         r"layer 'bn' \(BatchNormalization\): normalizes axis \[1\]"),
    ],
    ids=["after_activation", "after_fused_activation", "after_pooling", "after_input", "conv_feeds_two", "axis"],
)
def test_a_bn_that_cannot_become_weights_is_refused_naming_it(make, message):
    inp = L.Input((8, 8, 1), name="pixels")
    model = tf.keras.Model(inp, L.Dense(2)(L.Flatten()(make(inp))))
    with pytest.raises(BadInput, match=message):
        fold_batchnorm(model)


def nested_model() -> tf.keras.Model:
    """A Sequential block, a functional block called with training=False, a name used twice."""
    tf.keras.utils.set_random_seed(0)
    block = tf.keras.Sequential([L.Conv2D(4, 3, name="conv"), L.ReLU(name="relu")], name="block")
    inner_in = L.Input((14, 14, 4))
    y = L.Conv2D(6, 3, padding="same", name="conv_b")(inner_in)
    y = L.BatchNormalization(name="bn_b")(y)
    head = tf.keras.Model(inner_in, L.ReLU(name="relu_b")(y), name="head")
    inp = L.Input((16, 16, 1), name="pixels")
    x = head(block(inp), training=False)
    x = L.Conv2D(3, 3, name="conv")(x)  # the same name as the block's conv: the block's is renamed
    model = tf.keras.Model(inp, L.Dense(2, name="fc")(L.Flatten()(x)), name="nested")
    random_bn_statistics(model)
    return model


def test_flatten_inlines_nested_models_with_equal_outputs():
    model = nested_model()
    flat, report = flatten_model(model)
    assert not any(isinstance(layer, tf.keras.Model) for layer in flat.layers)
    assert report["inlined"] == ["block", "head"] and report["renamed"] == {"block/conv": "block_conv"}
    names = [layer.name for layer in flat.layers]
    assert {"block_conv", "conv", "conv_b", "bn_b", "fc"} <= set(names)
    x = images((16, 16, 1))
    np.testing.assert_array_equal(flat.predict(x, verbose=0), model.predict(x, verbose=0))
    assert report["max_abs_diff"] == 0.0
    # fresh layers, same weights: the nested model does not share variables with the flat one
    flat.get_layer("block_conv").kernel.assign(tf.zeros((3, 3, 1, 4)))
    assert np.abs(model.get_layer("block").get_layer("conv").kernel.numpy()).sum() > 0


def test_prepare_flattens_then_folds_a_nested_bn():
    prepared, report = prepare_model(nested_model())
    assert report["flatten"]["inlined"] == ["block", "head"]
    assert [(f["batchnorm"], f["into"]) for f in report["batchnorm_fold"]["folded"]] == [("bn_b", "conv_b")]
    assert all(type(layer).__name__ != "BatchNormalization" for layer in prepared.layers)


def test_flat_model_is_returned_as_is():
    model = bn_model()
    flat, report = flatten_model(model)
    assert flat is model and report == {"inlined": [], "renamed": {}}
