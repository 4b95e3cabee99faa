"""What in a model file would run code when Keras loads it, decided before it is loaded.

Keras runs code from a model file in three ways: a Lambda layer's marshalled bytecode, a class
or function it imports by the name and module the file gives, and, in a SavedModel, TensorFlow
graphs stored in the file (resource initializers and custom restore functions run at load; a
layer Keras cannot rebuild from its config is revived with its saved graph, which runs at every
call). This module reads a file's configs as data, JSON parsed and protobufs decoded exactly as
Keras decodes them (never a regex over the raw bytes, which an escape such as `\\u004cambda`
defeats), and names each such thing, so that `models.load_model_file` can refuse the file
unless the user allows custom code.

    configs = read_configs(Path("model.keras"))        # None: weights only
    unsafe = unsafe_names(configs, known={"Dense", "Conv2D", ...}) + graph_code(path)
"""

from __future__ import annotations

import json
from pathlib import Path

# `class_name` values that mark plain values (tuples, shapes, tensor specs), not classes.
VALUE_MARKERS = frozenset(
    {"__tuple__", "__ellipsis__", "__bytes__", "__numpy__", "__tensor__", "__typespec__",
     "TensorShape", "TypeSpec", "CompositeTensor"}
)
# Packages a config may name as a class's `module` (Keras imports that module to find it).
SAFE_MODULE_ROOTS = ("keras", "tensorflow", "qkeras", "fpgaprune")


def read_configs(path: Path) -> list | None:
    """The parsed architecture of a model file, as the Keras loader reads it.

    One config for .h5 (the `model_config` attribute) and .keras (`config.json`), one per node
    for a SavedModel folder (the metadata of every Keras object); None when the file holds
    weights only. Unreadable files raise whatever the parser raises.
    """
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
        if raw is None:
            return None
        return [json.loads(raw.decode("utf-8") if hasattr(raw, "decode") else raw)]
    if path.suffix == ".keras":
        import zipfile

        with zipfile.ZipFile(path) as z:
            return [json.loads(z.read("config.json"))]
    return [json.loads(text) for text in _savedmodel_metadata(path)] or None


def _savedmodel_metadata(path: Path) -> list[str]:
    """The JSON metadata of each Keras node, from where Keras reads it: keras_metadata.pb,
    or (SavedModels older than TF 2.5) the user objects of saved_model.pb."""
    from keras.protobuf import saved_metadata_pb2

    metadata_file = path / "keras_metadata.pb"
    if metadata_file.exists():
        metadata = saved_metadata_pb2.SavedMetadata()
        metadata.ParseFromString(metadata_file.read_bytes())
        return [node.metadata for node in metadata.nodes]
    from keras.src.saving.legacy.saved_model.constants import KERAS_OBJECT_IDENTIFIERS

    return [
        node.user_object.metadata
        for node in object_graph(path).nodes
        if node.WhichOneof("kind") == "user_object"
        and node.user_object.identifier in KERAS_OBJECT_IDENTIFIERS
    ]


def object_graph(path: Path):
    """The object graph of a TF2 SavedModel; ValueError for TF1 ones, which run init ops."""
    import tensorflow as tf

    proto = tf.__internal__.saved_model.parse_saved_model(str(path))
    if len(proto.meta_graphs) != 1 or not proto.meta_graphs[0].HasField("object_graph_def"):
        raise ValueError("a TF1 SavedModel (several meta graphs or no object graph)")
    return proto.meta_graphs[0].object_graph_def


def unsafe_names(configs: list, known: set[str]) -> list[str]:
    """Lambdas, and classes or functions outside `known`, named anywhere in `configs`.

    Every dict with a `class_name` counts, however deeply nested (layers of a model, a cell
    of an RNN, a quantizer of a layer); a `module` outside Keras, TensorFlow, QKeras and
    fpgaprune counts too, because Keras imports it.
    """
    found: list[str] = []
    stack = list(configs)
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
            name = _unsafe_name(node, known) if "class_name" in node else None
            if name is not None and name not in found:
                found.append(name)
    return found


def _unsafe_name(node: dict, known: set[str]) -> str | None:
    """What `node` (a dict with a class_name) would make Keras run, or None when nothing."""
    cls = node["class_name"]
    if not isinstance(cls, str):
        return None  # no class can be looked up by it
    if cls == "__lambda__":
        return "Lambda"  # a Python lambda serialized by the .keras format
    module = node.get("module")
    if isinstance(module, str) and module.split(".")[0] not in SAFE_MODULE_ROOTS:
        if not (cls == "function" and module == "builtins"):  # Keras' built-in functions
            return f"{module}.{cls}"
    if cls in VALUE_MARKERS:
        return None
    if cls == "function":
        name = node.get("config")
        return None if isinstance(name, str) and name in known else f"function {name!r}"
    name = cls.split(">")[-1]  # registered names read "package>Class"
    return None if name in known else name


def graph_code(path: Path) -> list[str]:
    """TensorFlow graphs of a SavedModel that loading would run: resource initializers and
    custom restore functions (plain Keras models have neither)."""
    found = []
    for node in object_graph(path).nodes:
        if node.WhichOneof("kind") == "resource" and "a TensorFlow resource" not in found:
            found.append("a TensorFlow resource")
        if node.saveable_objects and "a custom restore function" not in found:
            found.append("a custom restore function")
    return found


def revived_layers(model) -> list[str]:
    """Layers of a loaded SavedModel that Keras could not rebuild from their config and
    revived from the graphs saved in the file, which then run at every call."""
    from keras.src.saving.legacy.saved_model.load import RevivedInputLayer, RevivedLayer

    layers = [model, *model.submodules]
    return [layer.name for layer in layers if isinstance(layer, RevivedLayer | RevivedInputLayer)]
