"""Shared fixtures: small data, a small reference model, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
T10K = ROOT.parent / "shared" / "data" / "mnist-t10k"


@pytest.fixture(scope="session", autouse=True)
def configured_process():
    """The test session is an entry point: deterministic kernels and checkpointable dropout, as the CLI sets."""
    from fpgaprune.process import configure_process

    configure_process()


@pytest.fixture(scope="session")
def t10k_path() -> Path:
    """The official MNIST test set beside the checkout (present on developer machines and CI)."""
    assert (T10K / "t10k-images-idx3-ubyte.gz").is_file(), f"expected the MNIST test set at {T10K}"
    return T10K


@pytest.fixture(scope="session")
def small_data():
    from fpgaprune.data import load_dataset

    return load_dataset("mnist-5k", limit=600, validation_fraction=0.1, seed=0)


@pytest.fixture()
def reference_model():
    from fpgaprune.config import ModelConfig
    from fpgaprune.models import build_reference_cnn

    return build_reference_cnn(ModelConfig())


def run_cli(*args: str, cwd: Path | str = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `fpgaprune ARGS` in a fresh process, as a user would."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "fpgaprune.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that fpgaprune itself printed (TF may log its own noise)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("fpgaprune:")]


# The reference CNN at tiny widths: small enough to train, export and C-simulate in seconds.
TINY = {"conv_filters": [4, 8], "fc_units": 16}


def tiny_pruned(seed: int = 0, fraction: float = 0.5):
    """The tiny CNN with a random `fraction` of conv2's 4 x 8 kernels masked: (model, masks)."""
    import numpy as np
    import tensorflow as tf

    from fpgaprune.config import ModelConfig
    from fpgaprune.masks import apply_masks
    from fpgaprune.models import build_reference_cnn

    tf.keras.utils.set_random_seed(seed)
    masks = {"conv2": np.random.RandomState(seed).rand(4, 8) < fraction}
    return apply_masks(build_reference_cnn(ModelConfig(**TINY)), masks), masks


def tiny_config(tmp_path: Path, name: str = "tiny", **sections):
    """A config of the tiny CNN whose runs and HLS projects go under tmp_path."""
    from fpgaprune.config import parse_config

    export = {"output_dir": str(tmp_path / "hls"), **sections.pop("export", {})}
    return parse_config({"name": name, "runs_dir": str(tmp_path / "runs"), "model": TINY,
                         "data": {"dataset": "mnist-5k", "limit": 300, **sections.pop("data", {})},
                         "export": export, **sections})


def conv_tanh_dense(filters: int, outputs: int, seed: int):
    """A QKeras conv -> tanh -> dense model on 8 x 8 images; hls4ml builds the tanh as a lookup
    table from float code, so it is not bit-exact and its outputs take many values."""
    import tensorflow as tf

    from fpgaprune.config import QuantizeConfig
    from fpgaprune.hw.quantize import build_quantized_model

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    inp = layers.Input((8, 8, 1), name="image")
    x = layers.Conv2D(filters, 3, name="conv")(inp)
    x = layers.Activation("tanh", name="squash")(x)
    out = layers.Dense(outputs, name="head")(layers.Flatten(name="flat")(x))
    return build_quantized_model(tf.keras.Model(inp, out), QuantizeConfig())
