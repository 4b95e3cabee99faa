"""Models: the reference CNN's contract, loading users' files safely, and the python: source."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.config import ModelConfig
from fpgaprune.errors import BadInput
from fpgaprune.models import build_model, build_reference_cnn, load_model_file, save_model


def test_reference_cnn_layer_contract(reference_model):
    names = [layer.name for layer in reference_model.layers]
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert name in names
    assert tuple(reference_model.get_layer("conv1").kernel.shape) == (3, 3, 1, 32)
    assert tuple(reference_model.get_layer("conv2").kernel.shape) == (3, 3, 32, 32)
    assert reference_model.get_layer("fc1").input_shape == (None, 800)
    assert reference_model.output_shape == (None, 10)


def test_reference_cnn_variants():
    model = build_reference_cnn(ModelConfig(conv_filters=[4], fc_units=0, input_shape=[12, 12, 1]))
    assert [layer.name for layer in model.layers if "conv" in layer.name] == ["conv1"]
    assert "fc1" in [layer.name for layer in model.layers] and model.output_shape == (None, 10)
    with pytest.raises(BadInput, match="no output pixels"):
        build_reference_cnn(ModelConfig(conv_filters=[4, 4, 4, 4], input_shape=[8, 8, 1]))


def test_h5_and_savedmodel_round_trip(tmp_path, reference_model):
    x = np.random.default_rng(0).random((4, 28, 28, 1), np.float32)
    expected = reference_model.predict(x, verbose=0)
    save_model(reference_model, tmp_path / "m.h5")
    loaded = load_model_file(tmp_path / "m.h5")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    reference_model.save(tmp_path / "saved", save_format="tf")
    loaded = build_model(ModelConfig(source=f"file:{tmp_path / 'saved'}"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6)


def test_bad_model_files(tmp_path, reference_model):
    with pytest.raises(BadInput, match="no such file"):
        load_model_file(tmp_path / "missing.h5")
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    with pytest.raises(BadInput, match="unknown format"):
        load_model_file(text)
    fake = tmp_path / "fake.h5"
    fake.write_text("this is not hdf5")
    with pytest.raises(BadInput, match="not a readable Keras model file"):
        load_model_file(fake)
    save_model(reference_model, tmp_path / "good.h5")
    data = (tmp_path / "good.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(BadInput, match="truncated.h5"):
        load_model_file(tmp_path / "truncated.h5")
    reference_model.save_weights(tmp_path / "weights.h5")
    with pytest.raises(BadInput, match="weights only"):
        load_model_file(tmp_path / "weights.h5")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(BadInput, match="without saved_model.pb"):
        load_model_file(tmp_path / "emptydir")


def test_lambda_models_are_refused_unless_allowed(tmp_path):
    inputs = tf.keras.Input((4,))
    outputs = tf.keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = tf.keras.Model(inputs, outputs)
    model.save(tmp_path / "lambda.h5")
    with pytest.raises(BadInput, match="contains Lambda; loading it can run arbitrary code"):
        load_model_file(tmp_path / "lambda.h5")
    loaded = load_model_file(tmp_path / "lambda.h5", allow_custom_code=True)
    assert loaded.predict(np.ones((1, 4), np.float32), verbose=0)[0, 0] == 2.0


def test_python_source(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(
        "import tensorflow as tf\n"
        "def tiny():\n"
        "    i = tf.keras.Input((8, 8, 1))\n"
        "    x = tf.keras.layers.Conv2D(2, 3, name='c')(i)\n"
        "    return tf.keras.Model(i, tf.keras.layers.Flatten()(x))\n"
        "def not_a_model():\n"
        "    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model(ModelConfig(source="python:user_models:tiny"))
    assert model.get_layer("c").kernel.shape == (3, 3, 1, 2)
    with pytest.raises(BadInput, match="not a Keras model"):
        build_model(ModelConfig(source="python:user_models:not_a_model"))
    with pytest.raises(BadInput, match="has no function 'nope'"):
        build_model(ModelConfig(source="python:user_models:nope"))
    with pytest.raises(BadInput, match="cannot import"):
        build_model(ModelConfig(source="python:no_such_module_xyz:f"))
    sys.modules.pop("user_models", None)
