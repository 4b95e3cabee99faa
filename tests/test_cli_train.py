"""`fpgaprune train` as a user runs it: outputs, overwrite safety, bad input exits 2."""

import json

import pytest

from .conftest import ROOT, error_lines, run_cli

QUICK = ["--set", "train.epochs=2", "--set", "data.limit=600", "--quiet"]


def _runs(tmp_path):
    return ["--set", f"runs_dir={tmp_path / 'runs'}"]


@pytest.mark.slow
def test_train_writes_baseline(tmp_path):
    proc = run_cli("train", *QUICK, *_runs(tmp_path))
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "runs" / "mnist_cnn" / "baseline"
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "params", "epochs", "dataset"):
        assert key in summary
    assert summary["params"] == 35530 and summary["epochs"] == 2 and summary["dataset"] == "mnist-5k"
    assert summary["val_accuracy"] > 0.5  # chance is 0.1
    assert (folder / "model.h5").is_file() and (folder / "config.yaml").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]

    again = run_cli("train", *QUICK, *_runs(tmp_path))
    assert again.returncode == 2
    assert "already exists; pass --force" in error_lines(again)[0]
    forced = run_cli("train", *QUICK, *_runs(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--set", "train.epochs=0"], "train.epochs: 0 is below the minimum 1"),
        (["--set", "train.optimiser=sgd"], "train.optimiser: unknown key (did you mean 'optimizer'?)"),
        (["--set", "data.dataset=npz:/no/such.npz"], "no such file"),
        (["--config", "/no/such/config.yaml"], "no such file"),
        (["--set", "model.source=file:/no/model.h5"], "no such file or folder"),
        (["--set", "novalue"], "expected KEY=VALUE"),
    ],
)
def test_train_bad_input_exits_2_and_writes_nothing(tmp_path, args, fragment):
    proc = run_cli("train", *QUICK, *_runs(tmp_path), *args)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_reference_baseline_reaches_97_percent(tmp_path, t10k_path):
    """The issue's bar: >= 97% on the official 10k test set, trained on mnist-5k."""
    proc = run_cli("train", "--config", str(ROOT / "configs" / "mnist_cnn.yaml"), "--quiet",
                   "--test-data", f"mnist-t10k:{t10k_path}", *_runs(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "runs" / "mnist_cnn" / "baseline" / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.97
    assert summary["split_sizes"] == {"train": 4500, "val": 500, "test": 10000}
