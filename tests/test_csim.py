"""C-simulation: the compiled HLS project computes exactly what the QKeras model computes.

Compiling a project takes ~10 s, so the C-sim tests are few and marked slow.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from fpgaprune.cli import main
from fpgaprune.config import ModelConfig, QuantizeConfig, parse_config
from fpgaprune.hw.csim import SUMMARY, compare, run_csim
from fpgaprune.hw.export import export_project
from fpgaprune.hw.quantize import build_quantized_model, quantize_model
from fpgaprune.masks import apply_masks, save_masks
from fpgaprune.models import build_reference_cnn

from .conftest import error_lines, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")
TINY = {"conv_filters": [4, 8], "fc_units": 16}


def tiny_pruned(seed=0):
    tf.keras.utils.set_random_seed(seed)
    masks = {"conv2": np.random.RandomState(seed).rand(4, 8) < 0.5}
    return apply_masks(build_reference_cnn(ModelConfig(**TINY)), masks), masks


@pytest.mark.slow
def test_csim_is_bit_exact_with_qkeras(tmp_path, small_data):
    model, masks = tiny_pruned()
    cfg = parse_config({"name": "cs", "model": TINY, "quantize": {"epochs": 1, "layers": {"conv2": {"bits": 6}}},
                        "export": {"output_dir": str(tmp_path)}})
    qmodel, _ = quantize_model(model, masks, small_data, cfg, verbose=0)
    folder = export_project(qmodel, cfg, "Vivado", small_data.x_val[:5])
    before = sorted(p.name for p in folder.iterdir())

    x, y = small_data.x_val[:300], small_data.y_val[:300]
    summary = run_csim(folder, qmodel, x, y, workers=2)

    assert summary["images"] == 300
    assert summary["argmax_agreement"] == 1.0 and summary["argmax_disagreements"] == 0
    assert summary["bit_exact"] and summary["bit_exact_images"] == 300 and summary["max_diff_lsb"] == 0.0
    assert summary["accuracy_csim"] == summary["accuracy_qkeras"]
    assert summary["sources_identical_to_export"], summary["differing_sources"]
    assert summary["trace"] == [] and summary["first_differing_layer"] is None
    assert json.loads((folder / SUMMARY).read_text())["bit_exact"] is True
    # the exported project is left as it was, plus the summary
    assert sorted(p.name for p in folder.iterdir()) == sorted([*before, SUMMARY])


@pytest.mark.slow
def test_board_project_compiles_and_is_bit_exact(tmp_path):
    """The VivadoAccelerator (board) project carries the axi wrapper; it must compile too."""
    model, masks = tiny_pruned(1)
    qmodel = build_quantized_model(model, QuantizeConfig(), masks)
    cfg = parse_config({"name": "bd", "model": TINY, "export": {"output_dir": str(tmp_path), "board": "pynq-z2"}})
    images = np.random.RandomState(0).rand(30, 28, 28, 1).astype(np.float32)
    folder = export_project(qmodel, cfg, "VivadoAccelerator", images[:2])
    assert (folder / "firmware" / "myproject_axi.cpp").is_file()
    summary = run_csim(folder, qmodel, images, workers=1)
    assert summary["bit_exact"] and summary["sources_identical_to_export"]


@pytest.mark.slow
def test_differences_are_located_with_the_trace(tmp_path):
    """A float tanh becomes a lookup table in hls4ml: not bit-exact, and the trace says where."""
    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(1)
    inp = layers.Input((8, 8, 1), name="image")
    x = layers.Conv2D(3, 3, name="conv")(inp)
    x = layers.Activation("tanh", name="squash")(x)
    out = layers.Dense(4, name="head")(layers.Flatten(name="flat")(x))
    qmodel = build_quantized_model(tf.keras.Model(inp, out), QuantizeConfig())
    cfg = parse_config({"name": "tr", "export": {"output_dir": str(tmp_path)}})
    images = np.random.RandomState(0).rand(40, 8, 8, 1).astype(np.float32)
    folder = export_project(qmodel, cfg, "Vivado", images[:2])

    summary = run_csim(folder, qmodel, images, workers=1)

    assert not summary["bit_exact"] and summary["max_diff_lsb"] > 0
    assert summary["first_differing_layer"] == "squash"
    conv = next(r for r in summary["trace"] if r["layer"] == "conv")
    assert conv["max_abs_diff"] == 0.0  # exact up to the lookup table


def test_compare_reports_lsb_and_agreement():
    ref = np.array([[0.5, 0.25], [0.0, 1.0]])
    out = compare(ref + np.array([[0.0, 0.0], [0.0, 2 * 2**-8]]), ref, 2**-8, labels=np.array([0, 1]))
    assert out["argmax_agreement"] == 1.0 and out["bit_exact_images"] == 1 and not out["bit_exact"]
    assert out["max_diff_lsb"] == pytest.approx(2.0)
    assert out["accuracy_csim"] == 1.0


def test_missing_gxx_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    code = main(["csim", "--config", "configs/mnist_cnn.yaml", "--set", f"runs_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "g++ not found on PATH" in err[0]


def test_missing_vendor_tool_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["synth", "--config", "configs/mnist_cnn.yaml", "--set", "export.backends=[Vivado, Vitis]"]) == 2
    err = capsys.readouterr().err
    assert "vivado_hls, vitis-run not found on PATH" in err and "`make hls` runs without them" in err


@pytest.mark.slow
def test_hls_command_runs_the_chain(tmp_path, small_data):
    """`fpgaprune hls` from a saved pruned stage: quantize, export, csim, accounting table."""
    from fpgaprune.run import Run

    config = {
        "name": "chain", "data": {"dataset": "mnist-5k", "limit": 400}, "model": TINY,
        "quantize": {"epochs": 1}, "runs_dir": str(tmp_path / "runs"),
        "export": {"output_dir": str(tmp_path / "hls"), "csim_images": 200, "testbench_images": 3},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = parse_config(config)
    model, masks = tiny_pruned()
    Run(cfg).save("pruned", model, {"stage": "pruned"}, extras={"masks.npz": lambda p: save_masks(masks, p)})

    proc = run_cli("hls", "--config", str(path), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "argmax agreement 100.00%, bit-exact" in out
    assert "conv2" in out and "unpruned -> pruned" in out and "masked kernels are 0 in the exported weights" in out
    assert "non-zero multiplications cut by" in out
    project = tmp_path / "hls" / "chain" / "Vivado"
    accounting = json.loads((project / "accounting.json").read_text())
    assert accounting["masked_nonzero_in_export"] == {"conv2": 0}
    conv2 = next(r for r in accounting["layers"] if r["name"] == "conv2")
    assert conv2["nonzero"] <= conv2["weights"] - conv2["masked_weights"]

    assert main(["export", "--config", str(path)]) == 2  # the project exists: no silent overwrite
    proc = run_cli("export", "--config", str(path))
    assert proc.returncode == 2 and "pass --force" in error_lines(proc)[0]


def test_hls_without_pruned_stage_says_make_prune(tmp_path, capsys):
    code = main(["hls", "--config", "configs/mnist_cnn.yaml", "--set", f"runs_dir={tmp_path}",
                 "--set", f"export.output_dir={tmp_path}/hls"])
    assert code == 2
    assert "no saved pruned model; run `make prune` first" in capsys.readouterr().err


class _DiesInWorkers:
    """Stands in for a compiled hls4ml model whose forked copies crash."""

    def __init__(self):
        self.parent = os.getpid()

    def predict(self, x):
        if os.getpid() != self.parent:
            os._exit(1)
        return x.reshape(len(x), -1).sum(axis=1, keepdims=True)


def test_predict_survives_a_dying_worker(capsys):
    from fpgaprune.hw.csim import CHUNK, predict

    x = np.random.default_rng(0).random((3 * CHUNK, 2, 2, 1), np.float32)
    out = predict(_DiesInWorkers(), x, workers=2)
    np.testing.assert_array_equal(out, x.reshape(len(x), -1).sum(axis=1, keepdims=True))
    assert "a worker process died" in capsys.readouterr().out
