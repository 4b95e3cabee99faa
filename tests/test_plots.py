"""Every plot writes a real PNG, for the reference model's run and for a one-conv-layer model."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from fpgaprune.analysis import kernels as analyze
from fpgaprune.analysis.counts import macs
from fpgaprune.config import QuantizeConfig, parse_config
from fpgaprune.errors import BadInput
from fpgaprune.hw.quantize import build_quantized_model, quantized_kernels
from fpgaprune.masks import masks_of
from fpgaprune.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 5000) -> np.ndarray:
    """A valid, non-trivial PNG: signature, size, decodable, not one flat colour."""
    data = Path(path).read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01, f"{path} is blank"
    return image


@pytest.fixture(scope="module")
def reference_run(small_data):
    """The reference CNN after a tiny run: baseline, gradual pruning (2 rounds), quantized copy."""
    from fpgaprune.models import build_model
    from fpgaprune.process import reseed
    from fpgaprune.training.fit import train_baseline
    from fpgaprune.training.gradual import prune_gradual

    cfg = parse_config(
        {"train": {"epochs": 1}, "prune": {"schedule": [0.3, 0.6], "epochs": 1, "max_accuracy_drop": 1.0}}
    )
    reseed(cfg.seed)
    baseline, _ = train_baseline(build_model(cfg.model), small_data, cfg, verbose=0)
    pruned, summary = prune_gradual(baseline, small_data, cfg, progress=False)
    masks = masks_of(pruned)
    quantized = build_quantized_model(pruned, QuantizeConfig(), masks)
    return {"baseline": baseline, "pruned": pruned, "summary": summary, "masks": masks, "quantized": quantized}


@pytest.fixture(scope="module")
def one_conv_model():
    """A model with a single conv layer (3 input channels, 4 output channels) and no pooling."""
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((10, 10, 3), name="image")
    x = tf.keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = tf.keras.layers.Activation("relu", name="relu")(x)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    outputs = tf.keras.layers.Dense(3, name="out")(x)
    return tf.keras.Model(inputs, outputs)


@pytest.mark.slow
def test_reference_run_plots(reference_run, tmp_path):
    model, masks, summary = reference_run["baseline"], reference_run["masks"], reference_run["summary"]
    assert sum(int(m.sum()) for m in masks.values()) > 0
    norms = analyze.kernel_norms(model)
    layer = max(masks, key=lambda n: masks[n].sum())
    channel = int(np.argmax(masks[layer].sum(axis=0)))
    heatmap = assert_png(plots.kernel_heatmap(norms, tmp_path / "heat.png", masks, threshold=0.5))
    assert heatmap.shape[0] > heatmap.shape[1] * 0.6  # conv1 (1 x 32) above conv2 (32 x 32)
    assert_png(plots.kernel_grid(model, layer, channel, tmp_path / "grid.png", masks))
    assert_png(plots.kernel_grid(model, "conv1", 0, tmp_path / "grid1.png", masks), min_bytes=2000)
    assert_png(plots.magnitude_histograms(norms, tmp_path / "hist.png", masks))
    assert_png(plots.magnitude_histograms(norms, tmp_path / "hist_t.png", threshold=0.5))
    floor = summary["val_accuracy_floor"]
    assert_png(plots.accuracy_vs_fraction(summary["history"], tmp_path / "acc.png", floor=floor))
    assert_png(plots.multiplications(summary["macs_before"], summary["macs_after"], tmp_path / "macs.png"))
    assert_png(plots.quantized_weights(reference_run["quantized"], tmp_path / "q.png"))
    sweep = analyze.sensitivity_sweep(model, norms, _tiny_val(), fractions=(0.5,), progress=False)
    assert_png(plots.sensitivity_curves(sweep, tmp_path / "sens.png"))


def _tiny_val():
    from fpgaprune.data import load_dataset

    return load_dataset("mnist-5k", limit=20, validation_fraction=0.02, seed=0)


def test_quantized_values_keep_the_pruned_zeros(reference_run):
    values = quantized_kernels(reference_run["quantized"])
    assert set(values) == {"conv1", "conv2", "fc1", "fc2"}
    for name, pruned in reference_run["masks"].items():
        assert np.count_nonzero(values[name] == 0.0) >= 9 * int(pruned.sum())
    levels = np.unique(values["conv2"])
    assert np.allclose(levels * 128, np.round(levels * 128))  # 8-bit, 0 integer bits: steps of 1/128


def test_one_conv_layer_model_plots(one_conv_model, tmp_path):
    model = one_conv_model
    norms = analyze.kernel_norms(model, "l2")
    assert list(norms) == ["conv"] and norms["conv"].shape == (3, 4)
    masks = analyze.propose(norms, "fraction", fraction=0.5)
    cost = macs(model, masks)
    history = [
        {"round": 0, "fraction": 0.0, "val_accuracy": 0.9, "test_accuracy": None, "within_budget": True},
        {"round": 1, "fraction": 0.5, "val_accuracy": 0.7, "test_accuracy": None, "within_budget": False},
    ]
    assert_png(plots.kernel_heatmap(norms, tmp_path / "heat.png", masks), min_bytes=3000)
    assert_png(plots.kernel_grid(model, "conv", 1, tmp_path / "grid.png", masks), min_bytes=3000)
    assert_png(plots.kernel_grid(model, "conv", 1, tmp_path / "grid_n.png", masks, norms=norms["conv"]),
               min_bytes=3000)
    assert_png(plots.magnitude_histograms(norms, tmp_path / "hist.png", masks), min_bytes=3000)
    assert_png(plots.accuracy_vs_fraction(history, tmp_path / "acc.png", floor=0.85), min_bytes=3000)
    assert_png(
        plots.multiplications(
            {k: v[0] for k, v in cost.items()}, {k: v[1] for k, v in cost.items()}, tmp_path / "m.png"
        ),
        min_bytes=3000,
    )
    assert_png(plots.multiplications({"conv": 10, "out": 5}, {"conv": 2, "out": 5}, tmp_path / "m2.png", cut=0.8),
               min_bytes=3000)
    assert cost["conv"][1] == cost["conv"][0] // 2
    quantized = build_quantized_model(model, QuantizeConfig(weight_bits=4), masks)
    assert_png(plots.quantized_weights(quantized, tmp_path / "q.png"), min_bytes=3000)
    assert len(np.unique(quantized_kernels(quantized)["conv"])) <= 16
    assert_png(plots.quantized_weights(model, tmp_path / "float.png"), min_bytes=3000)


def test_bad_plot_requests_are_bad_input(one_conv_model, tmp_path):
    with pytest.raises(BadInput, match="no conv layer 'dense'"):
        plots.kernel_grid(one_conv_model, "dense", 0, tmp_path / "x.png")
    with pytest.raises(BadInput, match="out of range"):
        plots.kernel_grid(one_conv_model, "conv", 4, tmp_path / "x.png")
    with pytest.raises(BadInput, match="no conv layers"):
        plots.kernel_heatmap({}, tmp_path / "x.png")
    with pytest.raises(BadInput, match="empty"):
        plots.accuracy_vs_fraction([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plots_leave_pyplot_alone(one_conv_model, tmp_path):
    """Figures are drawn without pyplot, so no window opens and a notebook's figures are untouched."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.kernel_heatmap(analyze.kernel_norms(one_conv_model), tmp_path / "h.png")
    assert plt.get_fignums() == before


def test_bar_labels_say_unchanged_instead_of_minus_zero():
    assert plots.bar_label(1000, 1000) == "unchanged" and plots.bar_label(0, 0) == "unchanged"
    assert plots.bar_label(1000, 165) == "cut 83.5%"
    assert plots.bar_label(1_000_000, 999_999) == "cut 0.0%"  # cut, though by little
