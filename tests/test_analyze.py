"""Kernel-magnitude analysis: norms, ranking, proposals, sensitivity, MACs, and the CLI."""

import json

import numpy as np
import pytest
import yaml

from fpgaprune.analysis.counts import kernel_counts, macs
from fpgaprune.analysis.kernels import (
    check_layers,
    kernel_norms,
    propose,
    ranked_table,
    sensitivity,
    sensitivity_sweep,
)
from fpgaprune.cli import main
from fpgaprune.errors import BadInput
from fpgaprune.masks import load_masks
from fpgaprune.spec import read_mask_spec, spec_to_masks

QUICK = ["--set", "train.epochs=1", "--set", "data.limit=300", "--quiet"]


@pytest.fixture()
def model_with_known_kernels(reference_model):
    """conv2's kernel W[:, :, cin, cout] = (cin * 32 + cout + 1) / 1000 * signs: known norms."""
    conv2 = reference_model.get_layer("conv2")
    scale = (np.arange(32 * 32, dtype=np.float32).reshape(32, 32) + 1) / 1000
    signs = np.where(np.arange(9).reshape(3, 3) % 2, -1.0, 1.0).astype(np.float32)
    conv2.kernel.assign(signs[:, :, None, None] * scale[None, None])
    return reference_model, scale


def test_kernel_norms(model_with_known_kernels):
    model, scale = model_with_known_kernels
    assert set(kernel_norms(model)) == {"conv1", "conv2"}
    np.testing.assert_allclose(kernel_norms(model, "l1")["conv2"], 9 * scale, rtol=1e-6)
    np.testing.assert_allclose(kernel_norms(model, "l2")["conv2"], 3 * scale, rtol=1e-6)
    np.testing.assert_allclose(kernel_norms(model, "max")["conv2"], scale, rtol=1e-6)
    normed = kernel_norms(model, "l1", normalize=True)
    for mag in normed.values():
        assert mag.mean() == pytest.approx(1.0)
    with pytest.raises(BadInput, match="norm 'l3'"):
        kernel_norms(model, "l3")


def test_ranked_table(model_with_known_kernels):
    model, _ = model_with_known_kernels
    norms = kernel_norms(model)
    masks = propose(norms, "fraction", fraction=0.5, layers=["conv2"])
    table = ranked_table(norms, masks)
    assert len(table) == 32 + 32 * 32
    assert [r["rank"] for r in table] == list(range(1, len(table) + 1))
    mags = [r["magnitude"] for r in table]
    assert mags == sorted(mags)
    assert table[0] == {
        "rank": 1, "layer": "conv2", "cin": 0, "cout": 0, "magnitude": pytest.approx(0.009), "pruned": True
    }
    assert sum(r["pruned"] for r in table) == 512


def test_propose_selections(model_with_known_kernels):
    model, scale = model_with_known_kernels
    norms = kernel_norms(model, "max")
    by_threshold = propose(norms, "threshold", threshold=0.0105, layers=["conv2"])
    assert list(by_threshold) == ["conv2"] and by_threshold["conv2"].sum() == 10  # 0.001 .. 0.010
    assert np.array_equal(by_threshold["conv2"], scale < 0.0105)

    frac = propose(norms, "fraction", fraction=0.8)
    assert frac["conv2"].sum() == 820 and frac["conv1"].sum() == 26  # at least 80%: ceil
    assert np.array_equal(frac["conv2"], scale <= np.sort(scale.ravel())[819])
    assert propose(norms, "fraction", fraction=0.0)["conv2"].sum() == 0
    assert propose(norms, "fraction", fraction=1.0)["conv2"].all()

    glob = propose(norms, "global_fraction", fraction=0.5)
    assert glob["conv1"].sum() + glob["conv2"].sum() == 528
    conv1_max = norms["conv1"][glob["conv1"]].max(initial=0)
    conv2_kept_min = norms["conv2"][~glob["conv2"]].min()
    assert conv1_max <= conv2_kept_min  # one ranking across layers

    spec = {"conv2": np.zeros((32, 32), bool)}
    spec["conv2"][29, 13] = True
    assert np.array_equal(propose(norms, "spec", spec_masks=spec)["conv2"], spec["conv2"])

    already = {"conv2": np.zeros((32, 32), bool)}
    already["conv2"][31, 31] = True  # the largest kernel, pruned earlier, stays pruned
    grown = propose(norms, "fraction", fraction=0.5, layers=["conv2"], already=already)
    assert grown["conv2"][31, 31] and grown["conv2"].sum() == 513

    for bad in (-0.1, 1.5):
        with pytest.raises(BadInput, match="prune.fraction"):
            propose(norms, "fraction", fraction=bad)
    with pytest.raises(BadInput, match="prune.threshold"):
        propose(norms, "threshold", threshold=-1.0)


def test_check_layers(reference_model):
    assert check_layers(reference_model, None) == ["conv1", "conv2"]
    assert check_layers(reference_model, ["conv2"]) == ["conv2"]
    assert check_layers(reference_model, ["conv2", "fc1"]) == ["conv2", "fc1"]  # Dense only when named
    with pytest.raises(BadInput, match=r"^prune.layers: 'pool1' is a MaxPooling2D, not a Conv2D or Dense layer "
                                       r"\(conv layers: conv1, conv2; dense layers: fc1, fc2\)$"):
        check_layers(reference_model, ["pool1"])
    with pytest.raises(BadInput, match=r"^prune.layers: no conv or dense layer named 'conv9' "
                                       r"\(conv layers: conv1, conv2; dense layers: fc1, fc2\)$"):
        check_layers(reference_model, ["conv9"])


def test_macs_of_reference_model(reference_model):
    full = macs(reference_model)
    assert full["conv1"] == (26 * 26 * 9 * 32,) * 2  # 194,688: 9 taps per output pixel and kernel
    assert full["conv2"] == (11 * 11 * 9 * 32 * 32,) * 2  # 1,115,136
    assert full["fc1"] == (800 * 32,) * 2 and full["fc2"] == (320, 320)
    masks = {"conv2": np.zeros((32, 32), bool)}
    masks["conv2"][29, 13] = masks["conv2"][0, 0] = True
    before, after = macs(reference_model, masks)["conv2"]
    assert before - after == 2 * 11 * 11 * 9
    counts = kernel_counts(reference_model, masks)
    assert counts["conv2"] == {"kernels": 1024, "pruned": 2, "kept": 1022}
    assert counts["total"] == {"kernels": 1056, "pruned": 2, "kept": 1054}


@pytest.mark.slow
def test_sensitivity_is_read_only(reference_model, small_data):
    weights = [w.copy() for w in reference_model.get_weights()]
    norms = kernel_norms(reference_model)
    nothing = sensitivity(reference_model, {"conv2": np.zeros((32, 32), bool)}, small_data)
    everything = sensitivity(reference_model, {"conv2": np.ones((32, 32), bool)}, small_data)
    sweep = sensitivity_sweep(reference_model, norms, small_data, ["conv2"], fractions=(0.5, 1.0), progress=False)
    for a, b in zip(weights, reference_model.get_weights(), strict=True):
        assert np.array_equal(a, b)
    from fpgaprune.training.fit import accuracy

    assert nothing["val_accuracy"] == accuracy(reference_model, small_data.x_val, small_data.y_val)
    assert nothing["test_accuracy"] is None  # mnist-5k alone has no test split
    # with every conv2 kernel zeroed the prediction no longer depends on the image: one class
    assert everything["val_accuracy"] <= max(np.bincount(small_data.y_val)) / len(small_data.y_val)
    assert [p["fraction"] for p in sweep["conv2"]] == [0.5, 1.0]
    assert sweep["conv2"][1]["val_accuracy"] == everything["val_accuracy"]


@pytest.mark.slow
def test_cli_analyze_writes_table_spec_and_masks(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(
        ["analyze", *QUICK, "--set", f"runs_dir={runs}", "--layers", "conv2", "--fraction", "0.25", "--top", "5"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "smallest 5 of 1056 kernels" in out and "sensitivity" in out
    folder = runs / "mnist_cnn" / "analysis"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["kernels"]["conv2"]["pruned"] == 256 and summary["kernels"]["conv1"]["pruned"] == 0
    assert summary["macs_before"]["conv2"] - summary["macs_after"]["conv2"] == 256 * 11 * 11 * 9
    assert 0.0 <= summary["accuracy_zeroed"]["val_accuracy"] <= 1.0
    table = json.loads((folder / "kernels.json").read_text())
    assert len(table) == 1056 and sum(r["pruned"] for r in table) == 256
    assert (folder / "kernels.csv").read_text().splitlines()[0] == "rank,layer,cin,cout,magnitude,pruned"
    # the spec is human-editable YAML and says the same as the npz
    spec = yaml.safe_load((folder / "mask_spec.yaml").read_text())
    assert len(spec["conv2"]) == 256
    assert (runs / "mnist_cnn" / "baseline" / "model.h5").is_file()
    from fpgaprune.models import load_saved_model

    model = load_saved_model(runs / "mnist_cnn" / "baseline")
    masks = spec_to_masks(read_mask_spec(folder / "mask_spec.yaml"), model)
    assert np.array_equal(masks["conv2"], load_masks(folder / "masks.npz")["conv2"])

    # the baseline is reused; other selections; an edited spec is accepted back
    edited = tmp_path / "edited.yaml"
    edited.write_text("conv2: [[29, 13], [0, 0]]\nconv1: [[0, 3]]\n")
    for flags, pruned in (
        (["--spec", str(edited)], 3),
        (["--threshold", "0"], 0),
        (["--global-fraction", "0.5", "--set", "prune.layers=null"], 528),
    ):
        assert main(["analyze", *QUICK, "--set", f"runs_dir={runs}", "--force", *flags]) == 0
        assert json.loads((folder / "summary.json").read_text())["kernels"]["total"]["pruned"] == pruned


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--fraction", "1.5"], "--fraction: prune.fraction: 1.5 is above the maximum 1.0"),
        (["--global-fraction", "-0.5"], "prune.fraction: -0.5 is below the minimum 0.0"),
        (["--threshold", "-1"], "--threshold: prune.threshold: -1.0 is below the minimum 0.0"),
        (["--set", "prune.fraction=2"], "prune.fraction: 2.0 is above the maximum 1.0"),
        (["--layers", "pool1"], "prune.layers: 'pool1' is a MaxPooling2D, not a Conv2D or Dense layer"),
        (["--layers", "conv2", "nope"], "prune.layers: no conv or dense layer named 'nope' (conv layers: conv1, "
                                        "conv2; dense layers: fc1, fc2)"),
        (["--set", "prune.select=threshold"], "prune.threshold: select is 'threshold' but no threshold is set"),
    ],
)
def test_cli_analyze_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    code = main(["analyze", *QUICK, "--set", f"runs_dir={tmp_path / 'runs'}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("fpgaprune: error: ") and fragment in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_channel_weight_empties_whole_channels_for_reduction():
    """Random magnitudes with two weak output channels: at the same fraction, the channel-aware
    ranking empties more whole channels than magnitude alone, and weight 0 changes nothing."""
    from fpgaprune.analysis.kernels import channel_weighted

    rng = np.random.default_rng(0)
    mag = rng.uniform(0.5, 1.5, size=(16, 8))
    mag[:, [2, 5]] *= 0.4  # weak output channels, though each kernel there is not the smallest
    mag[rng.random(mag.shape) < 0.3] *= 0.3  # small kernels scattered over every channel
    norms = {"conv2": mag}
    assert channel_weighted(norms, 0.0) is norms

    def empty_channels(n):
        masks = propose(n, "fraction", fraction=0.3, layers=["conv2"])["conv2"]
        return int(masks.all(axis=0).sum())

    assert empty_channels(norms) == 0
    assert empty_channels(channel_weighted(norms, 2.0)) >= 2


def test_filter_weight_empties_output_channels_first():
    """Weak input rows and weak output columns alike: filter_weight empties the columns (whole
    filters, which take the next layer's inputs with them), the channel weight splits between both."""
    from fpgaprune.analysis.kernels import channel_weighted

    rng = np.random.default_rng(1)
    mag = rng.uniform(0.5, 1.5, size=(16, 16)).astype(np.float32)
    mag[:, :4] *= 0.3  # four weak filters
    mag[:4, :] *= 0.3  # four weak input channels
    norms = {"conv2": mag}

    def emptied(n):
        masks = propose(n, "fraction", fraction=0.25, layers=["conv2"])["conv2"]
        return int(masks.all(axis=0).sum()), int(masks.all(axis=1).sum())  # (filters, input channels)

    filters, _ = emptied(channel_weighted(norms, 0.0, filter_weight=16.0))
    assert filters == 4
    assert emptied(channel_weighted(norms, 2.0))[0] < 4
    weighted = channel_weighted(norms, 0.0, filter_weight=64.0)["conv2"]  # no overflow to inf
    assert np.isfinite(weighted).all() and weighted.dtype == np.float64
