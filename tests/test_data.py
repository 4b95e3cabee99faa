"""Datasets: the offline default, the official test set, user npz files and their errors."""

import gzip
import urllib.error

import numpy as np
import pytest

from fpgaprune.data import load_dataset, read_mnist_idx, validate_arrays
from fpgaprune.errors import BadInput


@pytest.mark.slow
def test_mnist_5k_split_is_deterministic_and_scaled():
    a = load_dataset("mnist-5k", validation_fraction=0.1, seed=3)
    b = load_dataset("mnist-5k", validation_fraction=0.1, seed=3)
    c = load_dataset("mnist-5k", validation_fraction=0.1, seed=4)
    assert a.x_train.shape == (4500, 28, 28, 1) and a.x_val.shape == (500, 28, 28, 1)
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert np.array_equal(a.y_val, b.y_val) and np.array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.y_val, c.y_val)
    assert set(np.unique(a.y_train)) == set(range(10)) and a.num_classes == 10
    assert len(a.x_test) == 0


def test_limit_caps_training_images():
    d = load_dataset("mnist-5k", limit=100)
    assert len(d.x_train) == 100 and len(d.x_val) == 500


def test_official_test_set(t10k_path):
    x, y = read_mnist_idx(str(t10k_path))
    assert x.shape == (10000, 28, 28, 1) and y.shape == (10000,)
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    d = load_dataset("mnist-5k", test=f"mnist-t10k:{t10k_path}")
    assert len(d.x_test) == 10000 and d.test_name.startswith("mnist-t10k:")
    assert len(d.x_train) == 4500


def test_t10k_alone_has_no_training_split(t10k_path):
    d = load_dataset(f"mnist-t10k:{t10k_path}")
    assert len(d.x_train) == 0 and len(d.x_test) == 10000


def _write_idx(path, magic, dims, body):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(gzip.compress(header + body))


def test_idx_errors(tmp_path):
    with pytest.raises(BadInput, match="missing"):
        read_mnist_idx(str(tmp_path))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(BadInput, match="not a readable gzip file"):
        read_mnist_idx(str(tmp_path))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x0803, (2, 28, 28), bytes(100))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x0801, (2,), bytes(2))
    with pytest.raises(BadInput, match="truncated"):
        read_mnist_idx(str(tmp_path))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x0801, (2,), bytes(2))
    with pytest.raises(BadInput, match="not an IDX file of the expected kind"):
        read_mnist_idx(str(tmp_path))


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def _good_arrays(n=40):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n, 8, 8)).astype(np.uint8),
        "y_train": rng.integers(0, 3, n),
        "x_test": rng.integers(0, 256, (10, 8, 8)).astype(np.uint8),
        "y_test": rng.integers(0, 3, 10),
    }


def test_npz_dataset(tmp_path):
    d = load_dataset(_npz(tmp_path, **_good_arrays()), validation_fraction=0.25)
    assert d.x_train.shape == (30, 8, 8, 1) and d.x_val.shape == (10, 8, 8, 1)
    assert d.x_test.shape == (10, 8, 8, 1)
    assert d.x_train.max() <= 1.0 and d.num_classes == 3


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"x_train": np.zeros((0, 8, 8))}, "x is empty"),
        ({"x_train": np.full((40, 8, 8), np.nan)}, "NaN"),
        ({"y_train": -np.ones(40, int)}, "labels out of range"),
        ({"y_train": np.zeros(39, int)}, "40 images but 39 labels"),
        ({"x_train": np.zeros((40, 8))}, "expected (N, height, width[, channels])"),
        ({"y_train": np.zeros((40, 3))}, "expected (N,) integer labels"),
        ({"y_train": np.full(40, 0.5)}, "labels must be whole numbers"),
        ({"x_train": np.array(["a"] * 40)}, "expected numbers"),
        ({"x_test": np.zeros((10, 9, 9))}, "test images"),
    ],
)
def test_npz_bad_data(tmp_path, change, fragment):
    arrays = {**_good_arrays(), **change}
    with pytest.raises(BadInput) as info:
        load_dataset(_npz(tmp_path, **arrays))
    assert fragment in str(info.value)


def test_npz_missing_arrays_and_files(tmp_path):
    arrays = _good_arrays()
    del arrays["y_test"]
    with pytest.raises(BadInput, match="missing arrays y_test"):
        load_dataset(_npz(tmp_path, **arrays))
    with pytest.raises(BadInput, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    with pytest.raises(BadInput, match="not a readable .npz"):
        load_dataset(f"npz:{bad}")


def test_pixel_scale_follows_the_dtype_for_every_split(tmp_path):
    """A uint8 split whose values happen to stay within 0..1 is scaled like the others."""
    arrays = _good_arrays()
    arrays["x_train"] = (arrays["x_train"] > 128).astype(np.uint8)  # 0/1 pixels, still uint8
    d = load_dataset(_npz(tmp_path, **arrays), validation_fraction=0.25)
    assert d.x_train.max() == np.float32(1 / 255) and d.x_test.max() == 1.0
    floats = {**_good_arrays(), "x_train": np.full((40, 8, 8), 0.5), "x_test": np.ones((10, 8, 8))}
    d = load_dataset(_npz(tmp_path, **floats))
    assert d.x_train.max() == 0.5 and d.x_test.max() == 1.0  # floats in [0, 1] are kept as they are


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"x_train": np.full((40, 8, 8), 300.0)},
         "float pixels range 300..300; floats must be in [0, 1] or integers 0..255"),
        ({"x_test": np.full((10, 8, 8), -0.5)}, "test: float pixels range -0.5..-0.5"),
        ({"x_train": np.full((40, 8, 8), 300, np.int16)}, "integer pixels range 300..300; integers must be 0..255"),
        ({"x_test": np.full((10, 8, 8), 0.5)}, "x_train is uint8 but x_test is float64; store both splits"),
    ],
)
def test_pixels_out_of_range_or_mixed_are_refused(tmp_path, change, fragment):
    with pytest.raises(BadInput) as info:
        load_dataset(_npz(tmp_path, **{**_good_arrays(), **change}))
    assert fragment in str(info.value)


def test_validate_arrays_scales_user_arrays_by_dtype():
    x, _ = validate_arrays(np.ones((2, 4, 4), np.uint8), np.array([0, 1]), "x")
    assert x.dtype == np.float32 and x.max() == np.float32(1 / 255)
    with pytest.raises(BadInput, match=r"float pixels range 0\.\.255; floats must be in \[0, 1\]"):
        validate_arrays(np.linspace(0, 255, 32).reshape(2, 4, 4), np.array([0, 1]), "x")


def test_validate_arrays_class_limit():
    with pytest.raises(BadInput, match="expected 0..9"):
        validate_arrays(np.zeros((2, 4, 4)), np.array([3, 10]), "x", num_classes=10)


def test_unknown_dataset():
    with pytest.raises(BadInput, match="unknown; use one of mnist-5k"):
        load_dataset("cifar10")


def test_keras_mnist_offline_points_to_default(monkeypatch):
    import tensorflow as tf

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tf.keras.datasets.mnist, "load_data", offline)
    with pytest.raises(BadInput, match="offline, use the default 'mnist-5k'"):
        load_dataset("mnist")
