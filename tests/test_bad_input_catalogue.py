"""The bad-input catalogue: every malformed config, mask spec, model file and data set gives
one line naming the problem, exit code 2, and writes nothing."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from keras.protobuf import saved_metadata_pb2

from fpgaprune.cli import main
from fpgaprune.config import ModelConfig
from fpgaprune.models import build_reference_cnn, save_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Malformed inputs of every kind, written once."""
    d = tmp_path_factory.mktemp("bad")

    def put(name, text):
        (d / name).write_text(text)
        return d / name

    def npz(name, **change):
        rng = np.random.default_rng(0)
        arrays = {
            "x_train": rng.random((50, 28, 28, 1), np.float32), "y_train": rng.integers(0, 10, 50),
            "x_test": rng.random((10, 28, 28, 1), np.float32), "y_test": rng.integers(0, 10, 10),
        }
        arrays.update(change)
        np.savez(d / name, **arrays)
        return d / name

    model = build_reference_cnn(ModelConfig())
    save_model(model, d / "good.h5")
    raw = (d / "good.h5").read_bytes()
    (d / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    model.save_weights(d / "weights_only.h5")
    i = tf.keras.Input((28, 28, 1))
    lam = tf.keras.Model(i, tf.keras.layers.Lambda(lambda t: t * 2, name="double")(i))
    lam.save(d / "lambda.h5")

    class Scale(tf.keras.layers.Layer):
        def call(self, t):
            return t * 3

    custom = tf.keras.Model(i, Scale(name="scale")(i))
    custom.save(d / "custom.h5")
    custom.save(d / "custom_sm", save_format="tf")
    lam.save(d / "lambda_escaped_sm", save_format="tf")
    meta = saved_metadata_pb2.SavedMetadata()
    meta.ParseFromString((d / "lambda_escaped_sm" / "keras_metadata.pb").read_bytes())
    for node in meta.nodes:  # the same class, spelled so that no regex over the bytes sees it
        node.metadata = node.metadata.replace('"class_name": "Lambda"', '"class_name": "\\u004cambda"')
    (d / "lambda_escaped_sm" / "keras_metadata.pb").write_bytes(meta.SerializeToString())
    np.savez(d / "d7.npz", x_train=np.zeros((5, 28, 28)), y_train=np.zeros(5, int), x_test=np.zeros((5, 28, 28)))
    return {
        "unknown_key": put("c1.yaml", "trian: {epochs: 3}\n"),
        "wrong_type": put("c2.yaml", "train: {epochs: ten}\n"),
        "negative_epochs": put("c3.yaml", "train: {epochs: -4}\n"),
        "fraction_above_1": put("c4.yaml", "prune: {fraction: 1.5}\n"),
        "unknown_optimizer": put("c5.yaml", "train: {optimizer: adagrad}\n"),
        "empty_config": put("c6.yaml", ""),
        "config_not_yaml": put("c7.yaml", "train: [epochs: 3\n"),
        "config_list": put("c8.yaml", "- train\n- prune\n"),
        "nesterov_adam": put("c9.yaml", "train: {optimizer: adam, nesterov: true}\n"),
        "duplicate_key": put("c10.yaml", "train: {epochs: 3}\nseed: 2\ntrain: {batch_size: 8}\n"),
        "spec_unknown_layer": put("s1.yaml", "conv9: [[0, 1]]\n"),
        "spec_pool_layer": put("s2.yaml", "pool1: [[0, 1]]\n"),
        "spec_out_of_range": put("s3.yaml", "conv2: [[32, 0]]\n"),
        "spec_duplicate": put("s4.yaml", "conv2: [[29, 13], [29, 13]]\n"),
        "spec_nesting": put("s5.yaml", "conv2: [[[29, 13]]]\n"),
        "spec_empty": put("s6.yaml", ""),
        "spec_not_yaml": put("s7.yaml", "conv2: [[29, 13]\n"),
        "spec_negative": put("s8.yaml", "conv2: [[-1, 13]]\n"),
        "spec_triple": put("s9.yaml", "conv2: [[1, 2, 3]]\n"),
        "spec_list": put("s10.yaml", "- conv2\n"),
        "spec_cout_range": put("s11.yaml", "conv1: [[0, 40]]\n"),
        "spec_layer_twice": put("s12.yaml", "conv2: [[0, 1]]\nconv1: [[0, 0]]\nconv2: [[2, 3]]\n"),
        "model_text": put("notamodel.h5", "hello"),
        "model_pt": put("model.pt", "hello"),
        "model_truncated": d / "truncated.h5",
        "model_weights_only": d / "weights_only.h5",
        "model_lambda": d / "lambda.h5",
        "model_custom": d / "custom.h5",
        "model_custom_savedmodel": d / "custom_sm",
        "model_lambda_escaped": d / "lambda_escaped_sm",
        "data_shape": npz("d1.npz", x_train=np.zeros((50, 28))),
        "data_nan": npz("d2.npz", x_test=np.full((10, 28, 28, 1), np.nan, np.float32)),
        "data_labels": npz("d3.npz", y_train=np.full(50, 12)),
        "data_empty": npz("d4.npz", x_train=np.zeros((0, 28, 28, 1)), y_train=np.zeros(0, int)),
        "data_lengths": npz("d5.npz", y_train=np.zeros(49, int)),
        "data_missing": put("d6.npz", "not an npz"),
        "data_no_y_test": d / "d7.npz",
        "data_float_pixels": npz("d8.npz", x_train=np.full((50, 28, 28, 1), 300.0, np.float32)),
        "data_int_pixels": npz("d9.npz", x_test=np.full((10, 28, 28, 1), 256, np.int16)),
    }


def _cases():
    f = lambda key: ("file", key)  # noqa: E731 - resolved against the fixture at run time
    train = ["train", "--quiet"]
    prune = ["prune", "--quiet", "--spec"]
    return [
        # configs
        (train + ["--config", f("unknown_key")], "trian: unknown key (did you mean 'train'?)"),
        (train + ["--config", f("wrong_type")], "train.epochs: expected an integer, got 'ten'"),
        (train + ["--config", f("negative_epochs")], "train.epochs: -4 is below the minimum 1"),
        (train + ["--config", f("fraction_above_1")], "prune.fraction: 1.5 is above the maximum 1.0"),
        (train + ["--config", f("unknown_optimizer")], "train.optimizer: 'adagrad' is not one of"),
        (train + ["--config", f("empty_config")], "the file is empty"),
        (train + ["--config", f("config_not_yaml")], "not valid YAML"),
        (train + ["--config", f("config_list")], "expected a mapping of keys"),
        (train + ["--config", f("nesterov_adam")], "train.nesterov: only applies to optimizer 'sgd'"),
        (train + ["--config", "/no/such/config.yaml"], "no such file"),
        (train + ["--config", f("duplicate_key")], "duplicate key 'train' on lines 1 and 3"),
        (train + ["--set", "train.batch_size=0"], "train.batch_size: 0 is below the minimum 1"),
        # mask specs
        (prune + [f("spec_unknown_layer")], "no layer named 'conv9'"),
        (prune + [f("spec_pool_layer")], "'pool1' is a MaxPooling2D, not a Conv2D or Dense layer"),
        (prune + [f("spec_out_of_range")], "conv2: [32, 0] is out of range"),
        (prune + [f("spec_duplicate")], "duplicate entry [29, 13]"),
        (prune + [f("spec_nesting")], "expected a pair [cin, cout] of integers"),
        (prune + [f("spec_empty")], "empty"),
        (prune + [f("spec_not_yaml")], "not valid YAML"),
        (prune + [f("spec_negative")], "negative index"),
        (prune + [f("spec_triple")], "expected a pair [cin, cout] of integers"),
        (prune + [f("spec_list")], "expected a mapping of layer name"),
        (prune + [f("spec_cout_range")], "conv1: [0, 40] is out of range"),
        (prune + ["/no/such/spec.yaml"], "no such file"),
        (prune + [f("spec_layer_twice")], "duplicate key 'conv2' on lines 1 and 3"),
        # model files
        (train + ["--set", "model.source=file:/no/such/model.h5"], "no such file or folder"),
        (train + ["--set", ("source", "model_text")], "not a readable Keras model file"),
        (train + ["--set", ("source", "model_pt")], "unknown format; expected .h5, .keras or a SavedModel"),
        (train + ["--set", ("source", "model_truncated")], "truncated.h5"),
        (train + ["--set", ("source", "model_weights_only")], "holds weights only"),
        (train + ["--set", ("source", "model_lambda")], "contains Lambda; loading it can run arbitrary code"),
        (train + ["--set", ("source", "model_custom")], "contains Scale; loading it can run arbitrary code"),
        (train + ["--set", ("source", "model_custom_savedmodel")], "contains Scale; loading it can run arbitrary code"),
        (train + ["--set", ("source", "model_lambda_escaped")], "contains Lambda; loading it can run arbitrary code"),
        # data
        (train + ["--set", ("data", "data_shape")], "expected (N, height, width[, channels])"),
        (train + ["--set", ("data", "data_nan")], "x contains NaN"),
        (train + ["--set", ("data", "data_labels")], "train labels go up to 12, the model has 10 outputs"),
        (train + ["--set", ("data", "data_empty")], "x is empty"),
        (train + ["--set", ("data", "data_lengths")], "50 images but 49 labels"),
        (train + ["--set", ("data", "data_missing")], "not a readable .npz file"),
        (train + ["--set", ("data", "data_no_y_test")], "missing arrays y_test"),
        (train + ["--set", ("data", "data_float_pixels")], "float pixels range 300..300; floats must be in [0, 1]"),
        (train + ["--set", ("data", "data_int_pixels")], "integer pixels range 256..256; integers must be 0..255"),
        (train + ["--set", "data.dataset=cifar10"], "unknown; use one of mnist-5k"),
        (train + ["--test-data", "mnist-t10k:/no/such/folder"], "missing /no/such/folder"),
    ]


def _resolve(arg, files):
    if isinstance(arg, tuple) and arg[0] == "file":
        return str(files[arg[1]])
    if isinstance(arg, tuple) and arg[0] == "source":
        return f"model.source=file:{files[arg[1]]}"
    if isinstance(arg, tuple) and arg[0] == "data":
        return f"data.dataset=npz:{files[arg[1]]}"
    return arg


CASES = _cases()


def test_catalogue_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("args, fragment", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_bad_input(args, fragment, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written by mistake would land here
    runs = tmp_path / "runs"
    argv = [_resolve(a, files) for a in args] + ["--set", f"runs_dir={runs}"]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("fpgaprune: error: "), err
    assert fragment in err[0]
    assert list(Path(tmp_path).iterdir()) == [], "a failed command wrote files"


def test_config_files_stay_valid_yaml(files):
    # the catalogue's own malformed files must be malformed for the reason named, not another
    assert yaml.safe_load(files["unknown_key"].read_text()) == {"trian": {"epochs": 3}}
