"""Interruption and resume: a killed training run leaves its last complete checkpoint and
never a half-written stage; `--resume` reaches exactly the weights of an unbroken run."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from .conftest import ROOT, error_lines, run_cli

EPOCHS = 12
ARGS = ["train", "--quiet", "--set", f"train.epochs={EPOCHS}", "--set", "data.limit=1500"]


def _weights(h5_file):
    out = {}
    with h5py.File(h5_file, "r") as f:
        f["model_weights"].visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
    return out


def _kill_after(args, runs_dir, stage, epochs):
    """Start `fpgaprune ARGS`, SIGKILL it once `epochs` epochs are checkpointed; return the state file."""
    state = runs_dir / "mnist_cnn" / ".checkpoints" / stage / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fpgaprune.cli", *args, "--set", f"runs_dir={runs_dir}"],
        cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= epochs:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"{stage} finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return state


@pytest.mark.slow
def test_kill_mid_training_then_resume_matches_unbroken_run(tmp_path):
    unbroken = run_cli(*ARGS, "--set", f"runs_dir={tmp_path / 'a'}")
    assert unbroken.returncode == 0, unbroken.stderr

    runs_b = tmp_path / "b"
    state = _kill_after(ARGS, runs_b, "baseline", 3)

    done_epochs = json.loads(state.read_text())["epoch"]
    assert 3 <= done_epochs < EPOCHS
    assert not (runs_b / "mnist_cnn" / "baseline").exists()

    again = run_cli(*ARGS, "--set", f"runs_dir={runs_b}")
    assert again.returncode == 2
    assert "holds an interrupted run; pass --resume" in error_lines(again)[0]

    resumed = run_cli(*ARGS, "--set", f"runs_dir={runs_b}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not (runs_b / "mnist_cnn" / ".checkpoints").exists()

    a = _weights(tmp_path / "a" / "mnist_cnn" / "baseline" / "model.h5")
    b = _weights(runs_b / "mnist_cnn" / "baseline" / "model.h5")
    assert a.keys() == b.keys() and len(a) >= 8
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    summary_a = json.loads((tmp_path / "a" / "mnist_cnn" / "baseline" / "summary.json").read_text())
    summary_b = json.loads((runs_b / "mnist_cnn" / "baseline" / "summary.json").read_text())
    assert summary_b["epochs"] == EPOCHS
    assert summary_a["history"]["loss"] == summary_b["history"]["loss"]


@pytest.mark.slow
def test_resume_without_checkpoint_is_bad_input(tmp_path):
    proc = run_cli(*ARGS, "--set", f"runs_dir={tmp_path}", "--resume")
    assert proc.returncode == 2
    assert "no interrupted run to resume" in error_lines(proc)[0]


def _pruned_run(runs_dir):
    """A small pruned stage to quantize (conv2 kernels [0, 0] and [1, 2] masked)."""
    from fpgaprune.config import Config, ModelConfig
    from fpgaprune.masks import apply_masks, empty_masks, save_masks
    from fpgaprune.models import build_reference_cnn
    from fpgaprune.process import reseed
    from fpgaprune.run import Run

    cfg = Config(runs_dir=str(runs_dir), model=ModelConfig(conv_filters=[4, 8], fc_units=16))
    reseed(0)
    model = build_reference_cnn(cfg.model)
    masks = empty_masks(model)
    masks["conv2"][0, 0] = masks["conv2"][1, 2] = True
    Run(cfg).save("pruned", apply_masks(model, masks), {"stage": "pruned"},
               extras={"masks.npz": lambda p: save_masks(masks, p)})


QUANTIZE = ["quantize", "--quiet", "--set", "quantize.epochs=10", "--set", "data.limit=1500",
            "--set", "model.conv_filters=[4, 8]", "--set", "model.fc_units=16"]


@pytest.mark.slow
def test_quantize_resume_matches_unbroken_run(tmp_path):
    for name in ("a", "b"):
        _pruned_run(tmp_path / name)
    unbroken = run_cli(*QUANTIZE, "--set", f"runs_dir={tmp_path / 'a'}")
    assert unbroken.returncode == 0, unbroken.stderr

    runs_b = tmp_path / "b"
    _kill_after(QUANTIZE, runs_b, "quantized", 2)
    assert not (runs_b / "mnist_cnn" / "quantized").exists()

    resumed = run_cli(*QUANTIZE, "--set", f"runs_dir={runs_b}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = _weights(tmp_path / "a" / "mnist_cnn" / "quantized" / "model.h5")
    b = _weights(runs_b / "mnist_cnn" / "quantized" / "model.h5")
    assert a.keys() == b.keys() and len(a) >= 8
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


PRUNE = ["prune", "--quiet", "--set", "data.limit=1500", "--set", "model.conv_filters=[4, 8]",
         "--set", "model.fc_units=16", "--set", "train.epochs=1", "--set", "prune.epochs=3",
         "--set", "prune.schedule=[0.3, 0.5, 0.7]", "--set", "prune.max_accuracy_drop=0.02"]


@pytest.mark.slow
def test_gradual_prune_killed_mid_round_resumes_to_the_unbroken_result(tmp_path):
    unbroken = run_cli(*PRUNE, "--set", f"runs_dir={tmp_path / 'a'}")
    assert unbroken.returncode == 0, unbroken.stderr

    runs_b = tmp_path / "b"
    _kill_after(PRUNE, runs_b, "pruned/round-0002", 1)  # round 1 saved, round 2 part-way
    checkpoints = runs_b / "mnist_cnn" / ".checkpoints" / "pruned"
    assert json.loads((checkpoints / "rounds" / "state.json").read_text())["round"] == 1
    assert not (runs_b / "mnist_cnn" / "pruned").exists()

    again = run_cli(*PRUNE, "--set", f"runs_dir={runs_b}")
    assert again.returncode == 2 and "pass --resume" in error_lines(again)[0]
    resumed = run_cli(*PRUNE, "--set", f"runs_dir={runs_b}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not checkpoints.exists()

    a = _weights(tmp_path / "a" / "mnist_cnn" / "pruned" / "model.h5")
    b = _weights(runs_b / "mnist_cnn" / "pruned" / "model.h5")
    assert a.keys() == b.keys() and len(a) >= 8
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    rounds = [
        json.loads((r / "mnist_cnn" / "pruned" / "summary.json").read_text())["history"]
        for r in (tmp_path / "a", runs_b)
    ]
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in h] for h in rounds]
    assert strip[0] == strip[1] and len(strip[0]) >= 3
    masks_a = np.load(tmp_path / "a" / "mnist_cnn" / "pruned" / "masks.npz")["conv2"]
    assert masks_a.any() and np.array_equal(masks_a, np.load(runs_b / "mnist_cnn" / "pruned" / "masks.npz")["conv2"])
