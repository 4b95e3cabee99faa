"""Models: the reference CNN, a user's model (file or Python function), and saving/loading.

The reference CNN keeps the layer names of the question fpgaprune answers (`conv1`, `conv2`,
`fc1`, `fc2`): mask specs and notebooks refer to them. Loading a file that holds Lambda layers
or unknown custom classes is refused unless the user allows custom code, because
deserializing them can run arbitrary code.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import tensorflow as tf

from .config import ModelConfig
from .errors import BadInput, option
from .io import atomic_path
from .model_safety import graph_code, read_configs, revived_layers, unsafe_names

MODEL_FILE = "model.h5"


def build_reference_cnn(cfg: ModelConfig) -> tf.keras.Model:
    """conv1 -> ReLU -> pool -> conv2 -> ReLU -> pool -> flatten -> fc1 (ReLU, dropout) -> fc2."""
    layers = tf.keras.layers
    x = inputs = layers.Input(shape=tuple(cfg.input_shape), name="input")
    size = cfg.input_shape[0]
    for i, filters in enumerate(cfg.conv_filters, start=1):
        if size - cfg.kernel_size + 1 < 1:
            raise BadInput(f"model.conv_filters: conv{i} has no output pixels left (input too small)")
        x = layers.Conv2D(filters, cfg.kernel_size, name=f"conv{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        size -= cfg.kernel_size - 1
        if size >= 2:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
            size //= 2
    x = layers.Flatten(name="flatten")(x)
    n_fc = 1
    if cfg.fc_units:
        x = layers.Dense(cfg.fc_units, name="fc1")(x)
        x = layers.Activation("relu", name="relu_fc1")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name="dropout")(x)
        n_fc = 2
    x = layers.Dense(cfg.num_classes, name=f"fc{n_fc}")(x)
    outputs = layers.Activation("softmax", name="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="reference_cnn")


def build_model(cfg: ModelConfig) -> tf.keras.Model:
    """The model the config names: reference, file:PATH or python:module:function."""
    if cfg.source == "reference":
        return build_reference_cnn(cfg)
    if cfg.source.startswith("file:"):
        return load_model_file(cfg.source.removeprefix("file:"), allow_custom_code=cfg.allow_custom_code)
    target = cfg.source.removeprefix("python:")
    module_name, _, func_name = target.partition(":")
    if not module_name or not func_name:
        raise BadInput(f"model.source: {cfg.source!r} should be python:package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(f"model.source: cannot import {module_name!r} ({exc})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise BadInput(f"model.source: {module_name} has no function {func_name!r}")
    model = func()
    if not isinstance(model, tf.keras.Model):
        raise BadInput(f"model.source: {target} returned {type(model).__name__}, not a Keras model")
    return model


def custom_objects() -> dict:
    """Classes a saved fpgaprune model may contain: QKeras layers/quantizers and our masks."""
    from qkeras.utils import _add_supported_quantized_objects

    from . import masks

    objects: dict = {"KernelMask": masks.KernelMask, "ChannelMask": masks.ChannelMask}
    _add_supported_quantized_objects(objects)
    return objects


def register_custom_objects() -> None:
    """Make fpgaprune's and QKeras' classes known to plain Keras, so a saved stage model loads with
    `tf.keras.models.load_model(path)` (what `import fpgaprune` does)."""
    tf.keras.utils.get_custom_objects().update(custom_objects())


def _known_classes() -> set[str]:
    """Class names Keras, QKeras and fpgaprune define: safe to deserialize."""
    keras = tf.keras
    names = set(custom_objects()) | {"Functional", "Sequential", "Model", "Policy", "DTypePolicy"}
    for module in (keras.layers, keras.initializers, keras.constraints, keras.regularizers,
                   keras.activations, keras.optimizers, keras.losses, keras.metrics):
        names.update(n for n in dir(module) if not n.startswith("_"))
    return names - {"Lambda", "Layer"}


def load_model_file(path: str | Path, allow_custom_code: bool = False) -> tf.keras.Model:
    """Load a user's .h5 / .keras / SavedModel; bad files are a one-line BadInput.

    Without `allow_custom_code`, a file whose parsed configs name a Lambda, a class outside
    Keras/QKeras/fpgaprune or (SavedModel) graphs that run at load is refused before Keras
    reads it, and a SavedModel layer Keras could only revive from its saved graph after.
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(f"model {path}: no such file or folder")
    is_savedmodel = path.is_dir() and (path / "saved_model.pb").is_file()
    if path.is_dir() and not is_savedmodel:
        raise BadInput(f"model {path}: a folder without saved_model.pb is not a SavedModel")
    if not path.is_dir() and path.suffix not in (".h5", ".keras"):
        raise BadInput(f"model {path}: unknown format; expected .h5, .keras or a SavedModel folder")
    try:
        configs = read_configs(path)
        unsafe = [] if allow_custom_code else unsafe_names(configs or [], _known_classes())
        if is_savedmodel and not allow_custom_code:
            unsafe += graph_code(path)
    except Exception as exc:
        raise BadInput(f"model {path}: not a readable Keras model file ({type(exc).__name__})") from None
    if configs is None:
        what = "no Keras model (save it with model.save)" if is_savedmodel else "weights only, no model architecture"
        raise BadInput(f"model {path}: holds {what}")
    if unsafe:
        _refuse_custom_code(path, unsafe)
    try:
        # safe_mode applies to .keras files only; the legacy loaders ignore it
        model = tf.keras.models.load_model(
            path, custom_objects=custom_objects(), compile=False, safe_mode=not allow_custom_code
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"model {path}: cannot be loaded ({first})") from None
    if not isinstance(model, tf.keras.Model) or not hasattr(model, "layers"):
        raise BadInput(f"model {path}: is not a Keras model")
    revived = revived_layers(model) if is_savedmodel and not allow_custom_code else []
    if revived:
        _refuse_custom_code(path, [f"layers revived from their saved graphs ({', '.join(revived)})"])
    return model


def _refuse_custom_code(path: Path, unsafe: list[str]) -> None:
    raise BadInput(
        f"model {path}: contains {', '.join(sorted(set(unsafe)))}; loading it can run "
        f"arbitrary code, so it is refused ({option('allow_custom_code')} if you trust the file)"
    )


def save_model(model: tf.keras.Model, path: str | Path) -> None:
    """Save as .h5 without optimizer state, atomically (the architecture, weights, masks)."""
    path = Path(path)
    with atomic_path(path.with_suffix(".h5")) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
        model.save(tmp, include_optimizer=False, save_format="h5")


def load_saved_model(folder: str | Path, allow_custom_code: bool = False) -> tf.keras.Model:
    """Load the model a stage saved into `folder`, checked like any model file.

    A run folder can be edited or swapped by anyone who can write to it, so fpgaprune having
    written the file is no reason to run its code: pass `allow_custom_code` only where the
    run's config allows custom code (its user model has Lambda or custom layers).
    """
    return load_model_file(Path(folder) / MODEL_FILE, allow_custom_code=allow_custom_code)
