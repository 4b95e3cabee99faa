"""The CLI's defaults: the packaged reference config from any folder, `init`, and a quiet terminal."""

from __future__ import annotations

import os
import subprocess
import sys

from fpgaprune.config import REFERENCE_CONFIG, load_config
from fpgaprune_cli import build_parser, main
from fpgaprune_cli.commands.common import PACKAGED_LINE, config_from_args

from .conftest import ROOT


def test_default_config_is_the_packaged_yaml_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    cfg = config_from_args(build_parser().parse_args(["analyze"]))
    assert cfg == load_config(REFERENCE_CONFIG)
    assert cfg.prune.layers == ["conv2", "fc1", "fc2"] and cfg.train.epochs == 20  # the YAML's, not the defaults
    assert capsys.readouterr().out.strip() == PACKAGED_LINE
    # the repository's configs/mnist_cnn.yaml is the packaged file
    assert (ROOT / "configs" / "mnist_cnn.yaml").read_bytes() == REFERENCE_CONFIG.read_bytes()


def test_init_writes_a_copy_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert (tmp_path / "mnist_cnn.yaml").read_bytes() == REFERENCE_CONFIG.read_bytes()
    capsys.readouterr()
    assert main(["init", "mnist_cnn.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]


def test_a_command_prints_no_tensorflow_noise(tmp_path):
    """A fresh process, TF_CPP_MIN_LOG_LEVEL unset: stderr holds fpgaprune's one line only."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "fpgaprune_cli", "analyze", "--set", "nosuch=1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("fpgaprune: error:")


def test_known_tensorflow_noise_is_dropped_and_other_warnings_kept(caplog):
    import logging

    from fpgaprune.process import quiet_tensorflow

    quiet_tensorflow()
    logger = logging.getLogger("tensorflow")
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        logger.warning("5 out of the last 5 calls to <function f> triggered tf.function retracing. Tracing is ...")
        logger.warning("something TensorFlow means")
    assert [r.getMessage() for r in caplog.records] == ["something TensorFlow means"]


def test_prune_table_is_one_aligned_table():
    from fpgaprune.report.text import prune_table

    s = {"macs_before": {"conv2": 1327104, "fc1": 25600, "total": 1352704},
         "macs_after": {"conv2": 25920, "fc1": 25600, "total": 51520},
         "kernels_total": {"conv2": 1024, "total": 1024}, "kernels_pruned": {"conv2": 1004, "total": 1004},
         "test_accuracy_baseline": 0.9747, "test_accuracy_after": 0.9723, "val_accuracy_baseline": None,
         "val_accuracy_after": None, "masked_max_abs": 0.0}
    lines = prune_table(s).splitlines()
    rows = lines[:lines.index(next(line for line in lines if line.startswith("total"))) + 1]
    assert len({len(line) for line in rows}) == 1  # every row, empty cells included, padded by tabulate
    assert rows[2].split() == ["conv2", "1,024", "1,004", "20", "1,327,104", "25,920"]
    assert "non-zero conv multiplications per image cut by 98.0%" in prune_table(s)


def test_unseeded_initializer_warning_is_silenced():
    """TF warns when one unseeded initializer is called twice (rebuilding layers from their configs
    does); fpgaprune copies the weights afterwards, so the warning is noise."""
    import warnings

    import tensorflow as tf

    from fpgaprune.process import quiet_tensorflow

    def twice():
        init = tf.keras.initializers.GlorotUniform()
        init((2, 2)), init((2, 2))

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        twice()
    assert any("unseeded" in str(w.message) for w in seen)  # TF does warn
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_tensorflow()
        twice()
    assert not any("unseeded" in str(w.message) for w in seen)
