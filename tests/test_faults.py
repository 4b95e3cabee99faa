"""Faults around the flow: one line, the right exit code, nothing half-written, nothing left behind.

Covers a second process on the same run, temporaries of killed processes, resuming with another
config, a full disk, a read-only runs folder, too long a run name, a C-simulation summary that
may not be replaced, dead or empty prunes, and nested models (flattened, then pruned).
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager

import pytest
import tensorflow as tf

from fpgaprune.config import config_to_dict, load_config, parse_config
from fpgaprune.flow.training_steps import pruning_warnings
from fpgaprune.locks import hold, scratch_dir, sweep_dead_scratch
from fpgaprune.run import CSIM_SUMMARY, MANIFEST, Run

from .conftest import ROOT, error_lines, run_cli

TINY = ["--set", "model.conv_filters=[4, 8]", "--set", "model.fc_units=16", "--set", "data.limit=100",
        "--set", "train.epochs=1", "--quiet"]


def args_for(tmp_path, *extra, name="faults"):
    return [*TINY, "--set", f"runs_dir={tmp_path / 'runs'}", "--set", f"name={name}",
            "--set", f"export.output_dir={tmp_path / 'hls'}", *extra]


def one_error(proc, code: int) -> str:
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused_naming_the_holder(tmp_path):
    run_root = tmp_path / "runs" / "faults"
    with hold(run_root):
        line = one_error(run_cli("train", *args_for(tmp_path)), 2)
    assert f"in use by process {os.getpid()}" in line
    assert not (run_root / "baseline").exists() and not (run_root / ".lock").exists()


@pytest.mark.slow
def test_temporaries_of_killed_processes_are_removed_at_the_next_run(tmp_path):
    root = tmp_path / "runs" / "faults"
    leftovers = [root / ".baseline.abc123.tmp", root / ".checkpoints" / "pruned" / "epoch-0001_temp",
                 tmp_path / "hls" / "faults" / ".Vivado.x1y2.tmp"]
    for path in leftovers:
        path.mkdir(parents=True)
        (path / "half.h5").write_text("half")
    dead = _dead_pid()
    scratch = tmp_path / "scratch"
    (scratch / f"fpgaprune-csim-{dead}-abcd").mkdir(parents=True)
    with scratch_dir("csim") as mine:  # a live process's scratch stays
        live = os.path.basename(mine)
        assert sweep_dead_scratch(str(scratch)) == [scratch / f"fpgaprune-csim-{dead}-abcd"]
        assert live.startswith(f"fpgaprune-csim-{os.getpid()}-")
    proc = run_cli("train", *args_for(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not leftovers[0].exists() and not leftovers[1].exists()
    assert (root / "baseline" / "model.h5").is_file()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_resume_with_other_training_settings_is_refused(tmp_path):
    reference = config_to_dict(load_config(ROOT / "configs" / "mnist_cnn.yaml"))
    reference.update(name="faults", runs_dir=str(tmp_path / "runs"))
    reference["train"]["epochs"] = 3
    cfg = parse_config(reference)
    folder = Run(cfg).checkpoint_dir("baseline")
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"epoch": 2, "checkpoint": "x", "history": {}}))
    from fpgaprune.flow.guards import MADE_WITH, training_settings

    (folder / MADE_WITH).write_text(json.dumps(training_settings(cfg, "baseline")))
    base = ["--set", f"runs_dir={tmp_path / 'runs'}", "--set", "name=faults", "--quiet", "--resume"]
    line = one_error(run_cli("train", *base, "--set", "train.epochs=1"), 2)
    assert "made with other settings (train.epochs)" in line and "pass --force to start over" in line
    line = one_error(run_cli("train", *base, "--set", "train.epochs=3", "--set", "model.fc_units=8"), 2)
    assert "(model.fc_units)" in line
    assert (folder / "state.json").is_file()


@contextmanager
def mounted(path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _can_mount(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
    if ok.returncode == 0:
        subprocess.run(["umount", str(probe)], check=True)
    return ok.returncode == 0


@pytest.fixture()
def mountable(tmp_path):
    if not _can_mount(tmp_path):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    return tmp_path


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing_partial(mountable):
    tmp_path = mountable
    with mounted(tmp_path / "small", "size=96k") as small:
        proc = run_cli("train", *TINY, "--set", f"runs_dir={small}", "--set", "name=full")
        line = one_error(proc, 1)
        assert "no space left on the device" in line
        left = [p for p in small.rglob("*") if p.name.endswith((".tmp", "_temp", ".old"))]
        assert left == [] and not (small / "full" / "baseline").exists()


@pytest.mark.slow
def test_a_read_only_runs_folder_is_one_line(mountable):
    tmp_path = mountable
    with mounted(tmp_path / "ro", "ro,size=64k") as ro:
        line = one_error(run_cli("train", *TINY, "--set", f"runs_dir={ro}"), 2)
    assert "read-only file system" in line


@pytest.mark.slow
def test_too_long_a_run_name_is_one_line(tmp_path):
    line = one_error(run_cli("train", *args_for(tmp_path, name="r" * 300)), 2)
    assert "name: 300 characters is too long" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_csim_does_not_replace_a_summary_without_force(tmp_path):
    project = tmp_path / "hls" / "faults" / "Vivado"
    project.mkdir(parents=True)
    (project / MANIFEST).write_text("{}")
    (project / CSIM_SUMMARY).write_text('{"images": 500}')
    line = one_error(run_cli("csim", *args_for(tmp_path, "--images", "50")), 2)
    assert "summary.json already exists; pass --force" in line
    assert json.loads((project / CSIM_SUMMARY).read_text()) == {"images": 500}


@pytest.mark.slow
def test_dead_layers_and_empty_prunes_are_said_plainly(tmp_path):
    total, pruned = {"conv1": 32, "conv2": 1024, "total": 1056}, {"conv1": 0, "conv2": 1024, "total": 1024}
    assert pruning_warnings(total, pruned, "oneshot", None) == [
        "warning: conv2: all 1024 kernels pruned; the layer passes on only its biases"]
    nothing = pruning_warnings(total, {"conv1": 0, "conv2": 0, "total": 0}, "gradual",
                               {"validation": 0.97, "training": 0.9934})
    assert nothing == ["warning: no kernel was pruned: the first round already fell below the budget "
                       "(validation 0.9700, training 0.9934); raise prune.max_accuracy_drop or lower prune.step"]
    proc = run_cli("prune", *args_for(tmp_path, "--fraction", "1.0", "--layers", "conv2", "--epochs", "0"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: conv2: all 32 kernels pruned" in proc.stdout
    summary = json.loads((tmp_path / "runs" / "faults" / "pruned" / "summary.json").read_text())
    assert summary["warnings"] == ["warning: conv2: all 32 kernels pruned; the layer passes on only its biases"]


@pytest.mark.slow
def test_a_nested_model_is_flattened_and_pruned(tmp_path):
    inner = tf.keras.Sequential([tf.keras.layers.Conv2D(4, 3, name="conv_a"), tf.keras.layers.ReLU()], name="block")
    x = tf.keras.Input((28, 28, 1))
    y = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(inner(x)))
    path = tmp_path / "nested.h5"
    tf.keras.Model(x, y).save(path)
    proc = run_cli("prune", *args_for(tmp_path, "--set", f"model.source=file:{path}", "--fraction", "0.5",
                                      "--epochs", "1", "--layers", "conv_a"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "runs" / "faults"
    baseline = json.loads((run / "baseline" / "summary.json").read_text())
    assert baseline["flatten"]["inlined"] == ["block"]
    pruned = json.loads((run / "pruned" / "summary.json").read_text())
    assert pruned["kernels_pruned"]["conv_a"] == 2 and pruned["masked_max_abs"] == 0.0  # ceil(0.5 * 1 x 4)


@pytest.mark.slow
def test_a_killed_holder_leaves_no_lock_that_blocks_the_next_run(tmp_path):
    """kill -9 in the middle of training: the lock dies with the process, the next run starts over."""
    import signal
    import sys
    import time

    from .conftest import ROOT as root

    root_dir = tmp_path / "runs" / "faults"
    args = [a if a != "train.epochs=1" else "train.epochs=50" for a in args_for(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "fpgaprune.cli", "train", *args], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (root_dir / ".checkpoints" / "baseline" / "state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "training never checkpointed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (root_dir / ".lock").is_file()  # left behind by the kill, but no longer locked
    again = run_cli("train", *args_for(tmp_path, "--force"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert (root_dir / "baseline" / "model.h5").is_file() and not (root_dir / ".lock").exists()
