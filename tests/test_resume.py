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

from .conftest import ROOT, error_lines, run_cli

EPOCHS = 12
ARGS = ["train", "--quiet", "--set", f"train.epochs={EPOCHS}", "--set", "data.limit=1500"]


def _weights(h5_file):
    out = {}
    with h5py.File(h5_file, "r") as f:
        f["model_weights"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_kill_mid_training_then_resume_matches_unbroken_run(tmp_path):
    unbroken = run_cli(*ARGS, "--set", f"runs_dir={tmp_path / 'a'}")
    assert unbroken.returncode == 0, unbroken.stderr

    runs_b = tmp_path / "b"
    state = runs_b / "mnist_cnn" / ".checkpoints" / "baseline" / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fpgaprune.cli", *ARGS, "--set", f"runs_dir={runs_b}"],
        cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

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


def test_resume_without_checkpoint_is_bad_input(tmp_path):
    proc = run_cli(*ARGS, "--set", f"runs_dir={tmp_path}", "--resume")
    assert proc.returncode == 2
    assert "no interrupted run to resume" in error_lines(proc)[0]
