"""Users' own CNNs, written in plain Keras, taken by the CLI from their .h5 files all the way to a
bit-exact HLS project: analyze -> prune -> quantize -> export -> csim (-> accounting, report).

The corpus covers the layers real CNNs use: Sequential and functional models, a nested one,
BatchNormalization (folded at the baseline), Activation / ReLU / LeakyReLU layers and fused
activations, strides, 'same' / 'valid' padding, ZeroPadding2D, Dropout, Max / Average pooling,
global pooling heads, Flatten, DepthwiseConv2D, SeparableConv2D (and a plain 1x1 Conv2D), a
residual Add, a final Softmax or none, 28x28x1, 16x16x1 and 32x32x3 inputs.

Every model gets the fast checks (its graph prepared exactly, every layer accepted, a QKeras
copy built), and layers hardware cannot take are refused at the first stage (in-process CLI);
the C-simulation ones (~1 minute each: three CLI processes and a g++ build) are slow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
import yaml

from fpgaprune.cli import main
from fpgaprune.config import QuantizeConfig
from fpgaprune.graph import prepare_model
from fpgaprune.hw.accounting import check_masked_zeros
from fpgaprune.hw.quantize import build_quantized_model
from fpgaprune.hw.support import check_convertible
from fpgaprune.masks import conv_layers, load_masks
from fpgaprune.models import load_saved_model

from .conftest import run_cli

L = tf.keras.layers
pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")


def sequential_bn():
    """Sequential: conv -> BN -> Activation('relu'), twice, max-pool, Dropout, Flatten, a Softmax layer."""
    return tf.keras.Sequential([
        L.Input((28, 28, 1)),
        L.Conv2D(4, 3, padding="same", use_bias=False, name="conv1"), L.BatchNormalization(name="bn1"),
        L.Activation("relu", name="relu1"), L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(8, 3, use_bias=False, name="conv2"), L.BatchNormalization(name="bn2"), L.ReLU(name="relu2"),
        L.MaxPooling2D(2, name="pool2"), L.Flatten(name="flatten"), L.Dropout(0.25, name="drop"),
        L.Dense(10, name="fc"), L.Softmax(name="softmax"),
    ], name="sequential_bn")


def strided_leaky():
    """Functional: strided 'same' conv, LeakyReLU(1/8), strided 'valid' conv with a fused relu, 2x2 average."""
    inp = L.Input((28, 28, 1), name="digits")
    x = L.LeakyReLU(0.125, name="leaky")(L.Conv2D(4, 3, strides=2, padding="same", name="conv_s2")(inp))
    x = L.Conv2D(8, 3, strides=(2, 1), activation="relu", name="conv_s21")(x)
    x = L.Flatten(name="flat")(L.AveragePooling2D(2, name="avg")(x))
    return tf.keras.Model(inp, L.Dense(10, activation="softmax", name="out")(x), name="strided_leaky")


def rgb_gap_head():
    """32x32x3: strided conv -> BN -> ReLU, 'same' conv, 3x3 max-pool, a global average over 5x5 pixels."""
    inp = L.Input((32, 32, 3), name="rgb")
    x = L.Conv2D(4, 3, strides=2, use_bias=False, name="conv1")(inp)
    x = L.ReLU(name="relu1")(L.BatchNormalization(name="bn1")(x))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(L.MaxPooling2D(3, name="pool")(x))
    return tf.keras.Model(inp, L.Activation("softmax", name="probs")(L.Dense(10, name="fc")(x)), name="rgb_gap")


def depthwise_separable():
    """ZeroPadding2D, a 5x5 strided conv, DepthwiseConv2D -> BN -> ReLU, a strided SeparableConv2D."""
    inp = L.Input((28, 28, 1), name="digits")
    x = L.Conv2D(4, 5, strides=2, activation="relu", name="conv1")(L.ZeroPadding2D(2, name="pad")(inp))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.ReLU(name="relu_dw")(L.BatchNormalization(name="bn_dw")(x))
    x = L.SeparableConv2D(8, 3, strides=2, activation="relu", name="sep")(x)
    x = L.Flatten(name="flat")(L.MaxPooling2D(2, name="pool")(x))
    return tf.keras.Model(inp, L.Dense(10, activation="softmax", name="out")(x), name="depthwise_separable")


def nested_blocks():
    """A Sequential feature block and a functional block holding a BN, nested in the model; global max-pool."""
    features = tf.keras.Sequential([L.Conv2D(4, 3, name="conv"), L.ReLU(name="relu"), L.MaxPooling2D(2, name="pool")],
                                   name="features")
    block_in = L.Input((13, 13, 4))
    y = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, use_bias=False, name="conv_b")(block_in))
    block = tf.keras.Model(block_in, L.ReLU(name="relu_b")(y), name="block")
    inp = L.Input((28, 28, 1), name="digits")
    x = L.GlobalMaxPooling2D(name="gmp")(block(features(inp)))
    return tf.keras.Model(inp, L.Dense(10, activation="softmax", name="out")(x), name="nested_blocks")


def separable_average_head():
    """16x16x1: SeparableConv2D first, a 3x3 average (9 pixels), a plain 1x1 Conv2D, a 'same' conv, a
    global average over 5x5 pixels, logits out (no softmax)."""
    inp = L.Input((16, 16, 1), name="small")
    x = L.SeparableConv2D(4, 3, padding="same", activation="relu", name="sep")(inp)
    x = L.Conv2D(8, 1, activation="relu", name="pointwise")(L.AveragePooling2D(3, name="avg3")(x))
    x = L.ReLU(name="relu")(L.Conv2D(8, 3, padding="same", name="conv")(x))
    return tf.keras.Model(inp, L.Dense(10, name="logits")(L.GlobalAveragePooling2D(name="gap")(x)),
                          name="separable_average")


def dense_bn_head():
    """Strided convs, then Dense -> BN -> ReLU -> Dropout -> Dense -> Activation('softmax')."""
    inp = L.Input((28, 28, 1), name="digits")
    x = L.Conv2D(4, 3, strides=2, activation="relu", name="conv1")(inp)
    x = L.ReLU(name="relu2")(L.Conv2D(8, 3, strides=2, padding="same", name="conv2")(x))
    x = L.Dense(16, use_bias=False, name="fc1")(L.Flatten(name="flat")(x))
    x = L.Dropout(0.2, name="drop")(L.ReLU(name="relu_fc")(L.BatchNormalization(name="bn_fc")(x)))
    return tf.keras.Model(inp, L.Activation("softmax", name="probs")(L.Dense(10, name="fc2")(x)), name="dense_bn")


def residual_same():
    """'same' convs with a residual Add, a 'same' max-pool that needs no padding, then 'valid' convs."""
    inp = L.Input((28, 28, 1), name="digits")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    x = L.ReLU(name="relu_add")(L.Add(name="add")([x, L.Conv2D(4, 3, padding="same", name="conv_res")(x)]))
    x = L.MaxPooling2D(2, padding="same", name="pool1")(x)
    x = L.Conv2D(8, 3, activation="relu", name="conv2")(L.MaxPooling2D(2, name="pool2")(x))
    return tf.keras.Model(inp, L.Softmax(name="softmax")(L.Dense(10, name="fc")(L.Flatten(name="flat")(x))),
                          name="residual_same")


# name -> (builder, data, retrain the baseline); data "mnist-5k" or an npz the test writes (shape).
CORPUS = {
    "sequential_bn": (sequential_bn, "mnist-5k", True),
    "strided_leaky": (strided_leaky, "mnist-5k", False),
    "rgb_gap": (rgb_gap_head, (32, 32, 3), True),
    "depthwise_separable": (depthwise_separable, "mnist-5k", False),
    "nested_blocks": (nested_blocks, "mnist-5k", True),
    "separable_average": (separable_average_head, (16, 16, 1), True),
    "dense_bn": (dense_bn_head, "mnist-5k", False),
    "residual_same": (residual_same, "mnist-5k", False),
}


def build(name: str) -> tf.keras.Model:
    """The corpus model, seeded, with its BN statistics moved off their initial values (as if trained)."""
    tf.keras.utils.set_random_seed(0)
    model = CORPUS[name][0]()
    rs = np.random.RandomState(1)
    for layer in _layers(model):
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rs.uniform(0.5, 1.5, n), rs.randn(n) * 0.1, rs.randn(n) * 0.1, rs.uniform(0.5, 2, n)])
    return model


def _layers(model):
    for layer in model.layers:
        yield from (_layers(layer) if isinstance(layer, tf.keras.Model) else [layer])


def write_npz(path, shape, n_train=240, n_test=60):
    """Synthetic images (uint8 0..255) whose label is the brightest of 10 vertical bands, so it is learnable."""
    rs = np.random.RandomState(0)
    x = rs.randint(0, 120, size=(n_train + n_test, *shape)).astype(np.uint8)
    y = rs.randint(0, 10, size=n_train + n_test)
    bands = np.array_split(np.arange(shape[1]), 10)
    for i, label in enumerate(y):
        x[i, :, bands[label]] += 120
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])


def write_case(tmp_path, name: str):
    """The model's .h5, its data (npz where needed) and a YAML config taking it with `model.source: file:`."""
    _, data, retrain = CORPUS[name]
    model_path = tmp_path / f"{name}.h5"
    build(name).save(model_path)
    if isinstance(data, tuple):
        write_npz(tmp_path / f"{name}.npz", data)
        data = f"npz:{tmp_path / f'{name}.npz'}"
    config = {
        "name": name,
        "seed": 0,
        "runs_dir": str(tmp_path / "runs"),
        "data": {"dataset": data, "limit": 200, "validation_fraction": 0.05},
        "model": {"source": f"file:{model_path}", "retrain": retrain},
        "train": {"epochs": 1, "batch_size": 32},
        "prune": {"mode": "oneshot", "fraction": 0.5, "epochs": 1},
        "quantize": {"epochs": 0},
        "export": {"output_dir": str(tmp_path / "hls"), "testbench_images": 5, "csim_images": 100,
                   "csim_workers": 1},
    }
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_model_is_prepared_exactly_and_accepted(name):
    """Fast: flattened and BN-folded to float precision, every layer accepted, a QKeras copy built."""
    model = build(name)
    x = np.random.RandomState(0).rand(16, *model.input_shape[1:]).astype(np.float32)
    prepared, report = prepare_model(model, x)
    assert not any(isinstance(layer, (tf.keras.Model, L.BatchNormalization)) for layer in prepared.layers)
    np.testing.assert_allclose(prepared.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert report["batchnorm_fold"]["max_abs_diff"] < 1e-5
    check_convertible(prepared)
    qmodel = build_quantized_model(prepared, QuantizeConfig())
    assert {layer.name for layer in conv_layers(prepared)} <= {layer.name for layer in qmodel.layers}


def test_the_corpus_covers_the_layers_real_cnns_use():
    kinds, bn_models, shapes = set(), 0, set()
    for name in CORPUS:
        model = build(name)
        layers = list(_layers(model))
        kinds |= {type(layer).__name__ for layer in layers}
        bn_models += any(isinstance(layer, L.BatchNormalization) for layer in layers)
        shapes.add(tuple(model.input_shape[1:]))
    assert kinds >= {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization", "Activation",
                     "ReLU", "LeakyReLU", "Dropout", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                     "GlobalMaxPooling2D", "Flatten", "ZeroPadding2D", "Softmax", "Add"}
    assert bn_models >= 3 and (32, 32, 3) in shapes
    assert any(isinstance(layer, tf.keras.Model) for layer in build("nested_blocks").layers)
    assert isinstance(build("sequential_bn"), tf.keras.Sequential)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORPUS))
def test_user_model_by_cli_to_a_bit_exact_hls_project(tmp_path, name):
    config = write_case(tmp_path, name)
    for args in (["analyze"], ["prune", "--fraction", "0.5", "--epochs", "1"], ["hls"]):
        proc = run_cli(*args, "--config", str(config), "--quiet")
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    run = tmp_path / "runs" / name
    baseline = load_saved_model(run / "baseline")
    assert not any(isinstance(layer, (tf.keras.Model, L.BatchNormalization)) for layer in baseline.layers)
    summary = json.loads((run / "baseline" / "summary.json").read_text())
    has_bn = any(isinstance(layer, L.BatchNormalization) for layer in _layers(build(name)))
    assert bool(summary["batchnorm_fold"]["folded"]) == has_bn
    assert summary["batchnorm_fold"]["max_abs_diff"] < 1e-4
    convs = [layer.name for layer in conv_layers(baseline)]
    pruned = json.loads((run / "pruned" / "summary.json").read_text())
    assert all(pruned["kernels_pruned"][conv] > 0 for conv in convs), pruned["kernels_pruned"]
    assert pruned["masked_max_abs"] == 0.0
    # the masked weights are exactly 0.0 in the exported HLS weight files, pointwise kernels included
    project = tmp_path / "hls" / name / "Vivado"
    masks = load_masks(run / "quantized" / "masks.npz")
    assert set(masks) == set(convs)
    assert check_masked_zeros(project, masks) == {conv: 0 for conv in convs}
    csim = json.loads((project / "summary.json").read_text())
    images = 60 if isinstance(CORPUS[name][1], tuple) else 100  # an npz's test split; else 100 validation images
    assert csim["bit_exact"] and csim["images"] == images and csim["max_diff_lsb"] == 0.0, csim["trace"]
    assert (project / "accounting.json").is_file() and (run / "report" / "index.html").is_file()


@pytest.mark.parametrize(
    "layer, message",
    [
        (lambda: L.GaussianNoise(0.1, name="noise"), "layer 'noise' (GaussianNoise) cannot be converted by hls4ml"),
        (lambda: L.LeakyReLU(0.3, name="leaky"), "layer 'leaky' (LeakyReLU) has negative slope 0.3; only a "
                                                 "power-of-two slope"),
        (lambda: L.BatchNormalization(name="late_bn"), "layer 'late_bn' (BatchNormalization) follows 'relu' (ReLU), "
                                                       "not a Conv2D"),
    ],
    ids=["unsupported_layer", "leaky_slope", "bn_after_activation"],
)
def test_a_layer_hardware_cannot_take_is_refused_at_the_first_stage(tmp_path, capsys, layer, message):
    inp = L.Input((28, 28, 1), name="digits")
    x = layer()(L.ReLU(name="relu")(L.Conv2D(4, 3, name="conv")(inp)))
    path = tmp_path / "user.h5"
    tf.keras.Model(inp, L.Dense(10, name="fc")(L.Flatten()(x))).save(path)
    runs = tmp_path / "runs"
    code = main(["prune", "--fraction", "0.5", "--quiet", "--set", f"model.source=file:{path}",
                 "--set", f"runs_dir={runs}", "--set", "model.retrain=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not runs.exists()  # refused before anything trained or was written
