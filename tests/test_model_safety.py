"""Model files that would run code when loaded are refused unless custom code is allowed.

Each hostile file here does something visible (writes a marker file) if its code runs, so a
test shows both that the file is refused and that nothing of it ran.
"""

from __future__ import annotations

import json
import sys
import zipfile

import h5py
import numpy as np
import pytest
import tensorflow as tf
from keras.protobuf import saved_metadata_pb2
from tensorflow.python.trackable import resource

from fpgaprune.checkpoint import RoundCheckpoint
from fpgaprune.errors import BadInput
from fpgaprune.models import MODEL_FILE, load_model_file, load_saved_model

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
REFUSED = "loading it can run arbitrary code"


def lambda_model(marker):
    """A model whose Lambda creates `marker` whenever it is called (also while being built)."""
    inputs = tf.keras.Input((4,))
    touch = lambda t, path=str(marker): (open(path, "w").close(), t * 2.0)[1]  # noqa: E731
    return tf.keras.Model(inputs, tf.keras.layers.Lambda(touch, name="double")(inputs))


def saved(model, path, marker=None, **kwargs):
    model.save(path, **kwargs)
    if marker is not None and marker.exists():
        marker.unlink()  # written while building or tracing; what counts is loading
    return path


def edit_metadata(folder, edit):
    """Rewrite every node's JSON metadata in a SavedModel's keras_metadata.pb with `edit`."""
    meta = saved_metadata_pb2.SavedMetadata()
    meta.ParseFromString((folder / "keras_metadata.pb").read_bytes())
    for node in meta.nodes:
        node.metadata = edit(node.metadata)
    (folder / "keras_metadata.pb").write_bytes(meta.SerializeToString())


class WritesFile(tf.keras.layers.Layer):
    """A custom layer the loading process does not know; its graph writes a file."""

    def __init__(self, marker="", **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def call(self, t):
        tf.io.write_file(self.marker, "ran")
        return t

    def get_config(self):
        return {**super().get_config(), "marker": self.marker}


def custom_layer_model(marker):
    inputs = tf.keras.Input((4,))
    return tf.keras.Model(inputs, WritesFile(str(marker), name="writes")(inputs))


def test_escaped_lambda_in_savedmodel_metadata_is_refused(tmp_path):
    marker = tmp_path / "ran"
    folder = saved(lambda_model(marker), tmp_path / "sm", marker, save_format="tf")
    edit_metadata(folder, lambda text: text.replace('"class_name": "Lambda"', '"class_name": "\\u004cambda"'))
    assert b'"Lambda"' not in (folder / "keras_metadata.pb").read_bytes()
    with pytest.raises(BadInput, match=f"contains Lambda; {REFUSED}"):
        load_model_file(folder)
    assert not marker.exists()


def test_escaped_lambda_in_h5_and_keras_configs_is_refused(tmp_path):
    marker = tmp_path / "ran"
    model = lambda_model(marker)
    h5 = saved(model, tmp_path / "m.h5", marker)
    with h5py.File(h5, "r+") as f:
        f.attrs["model_config"] = f.attrs["model_config"].replace('"Lambda"', '"\\u004cambda"')
    keras_file = saved(model, tmp_path / "m.keras", marker)
    with zipfile.ZipFile(keras_file) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    entries["config.json"] = entries["config.json"].replace(b'"Lambda"', b'"\\u004cambda"')
    with zipfile.ZipFile(keras_file, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    for path in (h5, keras_file):
        with pytest.raises(BadInput, match=f"contains Lambda; {REFUSED}"):
            load_model_file(path)
    assert not marker.exists()


def test_unknown_custom_layer_in_savedmodel_is_refused(tmp_path):
    marker = tmp_path / "ran"
    folder = saved(custom_layer_model(marker), tmp_path / "sm", marker, save_format="tf")
    with pytest.raises(BadInput, match=f"contains WritesFile; {REFUSED}"):
        load_model_file(folder)
    assert not marker.exists()
    # allowed, Keras revives it from its saved graph, which is what writes the file
    model = load_model_file(folder, allow_custom_code=True)
    model(np.ones((1, 4), np.float32))
    assert marker.exists()


def test_custom_layer_disguised_as_a_keras_class_is_refused(tmp_path):
    """Named Dense, its config does not rebuild a Dense, so Keras falls back to its graph."""
    marker = tmp_path / "ran"
    folder = saved(custom_layer_model(marker), tmp_path / "sm", marker, save_format="tf")
    edit_metadata(folder, lambda text: text.replace('"WritesFile"', '"Dense"'))
    with pytest.raises(BadInput, match=f"layers revived from their saved graphs \\(writes\\); {REFUSED}"):
        load_model_file(folder)
    assert not marker.exists()


class _InitWritesFile(resource.TrackableResource):
    def __init__(self, marker):
        self.marker = marker
        super().__init__()

    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="init_writes_file")

    def _initialize(self):
        tf.io.write_file(self.marker, "ran")
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)


def test_savedmodel_with_a_resource_initializer_is_refused(tmp_path):
    """Only Keras classes in the metadata, but a resource whose initializer graph TF runs at load."""
    marker = tmp_path / "ran"
    inputs = tf.keras.Input((4,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))
    model.hidden = _InitWritesFile(str(marker))
    folder = saved(model, tmp_path / "sm", marker, save_format="tf")
    with pytest.raises(BadInput, match=f"contains a TensorFlow resource; {REFUSED}"):
        load_model_file(folder)
    assert not marker.exists()


def test_keras_file_naming_a_foreign_module_is_refused(tmp_path, monkeypatch):
    """The .keras format imports the `module` a config names: importing runs its code."""
    marker = tmp_path / "ran"
    (tmp_path / "planted_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nDense = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    inputs = tf.keras.Input((4,))
    path = saved(tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs)), tmp_path / "m.keras")
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    config = json.loads(entries["config.json"])
    config["config"]["layers"][1]["module"] = "planted_module"
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    with pytest.raises(BadInput, match=f"contains planted_module.Dense; {REFUSED}"):
        load_model_file(path)
    assert not marker.exists()
    sys.modules.pop("planted_module", None)


@pytest.mark.parametrize("kind", ["h5", "keras", "savedmodel"])
def test_allow_custom_code_loads_lambda_models(tmp_path, kind):
    marker = tmp_path / "ran"
    path = tmp_path / {"h5": "m.h5", "keras": "m.keras", "savedmodel": "sm"}[kind]
    saved(lambda_model(marker), path, marker, **({"save_format": "tf"} if kind == "savedmodel" else {}))
    with pytest.raises(BadInput, match=f"contains Lambda; {REFUSED}"):
        load_model_file(path)
    assert not marker.exists()
    model = load_model_file(path, allow_custom_code=True)
    assert model.predict(np.ones((1, 4), np.float32), verbose=0)[0, 0] == 2.0


def test_stage_files_are_checked_like_any_model_file(tmp_path):
    """A run folder can be edited: a stage's model.h5 with a Lambda needs custom code allowed."""
    marker = tmp_path / "ran"
    stage = tmp_path / "baseline"
    stage.mkdir()
    saved(lambda_model(marker), stage / MODEL_FILE, marker)
    with pytest.raises(BadInput, match=f"contains Lambda; {REFUSED}"):
        load_saved_model(stage)
    assert not marker.exists()
    allowed = load_saved_model(stage, allow_custom_code=True)
    assert allowed.predict(np.ones((1, 4), np.float32), verbose=0)[0, 0] == 2.0

    rounds = tmp_path / "rounds"
    rounds.mkdir()
    saved(lambda_model(marker), rounds / "round-0001-current.h5", marker)
    (rounds / "state.json").write_text(json.dumps({"round": 1, "models": {"current": "round-0001-current.h5"}}))
    with pytest.raises(BadInput, match=f"checkpoint {rounds}: model .*contains Lambda; {REFUSED}"):
        RoundCheckpoint(rounds).load()
    assert not marker.exists()
    state, models = RoundCheckpoint(rounds, allow_custom_code=True).load()
    assert state["round"] == 1 and set(models) == {"current"}


@pytest.mark.slow
def test_fpgaprune_and_qkeras_classes_count_as_known(tmp_path):
    """A quantized, masked stage model (QKeras layers and quantizers, KernelMask) loads unflagged."""
    from fpgaprune.config import ModelConfig, QuantizeConfig
    from fpgaprune.hw.quantize import build_quantized_model
    from fpgaprune.masks import apply_masks
    from fpgaprune.models import build_reference_cnn, save_model

    masks = {"conv2": np.random.RandomState(0).rand(4, 8) < 0.5}
    model = apply_masks(build_reference_cnn(ModelConfig(conv_filters=[4, 8], fc_units=16)), masks)
    qmodel = build_quantized_model(model, QuantizeConfig(), masks)
    stage = tmp_path / "quantized"
    save_model(qmodel, stage / MODEL_FILE)
    loaded = load_saved_model(stage)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in qmodel.layers]
    qmodel.save(tmp_path / "q_sm", save_format="tf")
    assert len(load_model_file(tmp_path / "q_sm").layers) == len(qmodel.layers)
