"""`fpgaprune report`: one HTML page with every section, for whatever stages a run has."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from fpgaprune.cli import main
from fpgaprune.report.html import NOT_RUN, SECTIONS
from tests.test_plots import assert_png

TINY = {
    "name": "tiny",
    "data": {"limit": 600},
    "model": {"conv_filters": [4, 8], "fc_units": 16},  # small enough to C-simulate in seconds
    "train": {"epochs": 1},
    "prune": {"schedule": [0.3, 0.6], "epochs": 1, "max_accuracy_drop": 1.0},
}


def write_config(tmp_path: Path, **changes) -> Path:
    data = {**TINY, "runs_dir": str(tmp_path / "runs"), "export": {"output_dir": str(tmp_path / "hls")}, **changes}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """A run made by the real commands: analyze (trains the baseline), prune, transfer."""
    tmp = tmp_path_factory.mktemp("report")
    config = write_config(tmp)
    assert main(["analyze", "--config", str(config), "--quiet"]) == 0
    assert main(["prune", "--config", str(config), "--quiet"]) == 0
    new_task = ["--set", "transfer.classes=[5, 6, 7, 8, 9]", "--new-classes", "5", "--set", "transfer.epochs=2"]
    assert main(["transfer", "--config", str(config), "--quiet", *new_task]) == 0
    return config, tmp / "runs" / "tiny"


def sections_of(page: str) -> dict[str, str]:
    found = dict(re.findall(r"<section id='([^']+)'><h2>.*?</h2>(.*?)</section>", page, re.S))
    assert list(found) == [sid for sid, _ in SECTIONS]
    return found


@pytest.mark.slow
def test_report_of_a_pruned_run(pruned_run, capsys):
    config, run_dir = pruned_run
    capsys.readouterr()
    assert main(["report", str(run_dir), "--quiet"]) == 0
    page_path = run_dir / "report" / "index.html"
    assert f"report written to {page_path}" in capsys.readouterr().out
    page = page_path.read_text()
    for sid, title in SECTIONS:
        assert f"<section id='{sid}'><h2>{title}</h2>" in page
    body = sections_of(page)
    assert "name: tiny" in body["config"] and "schedule:" in body["config"]
    assert re.search(r"<td>baseline</td><td>done</td><td>0\.\d{4}</td>", body["stages"])
    assert re.search(r"<td>pruned</td><td>done</td><td>0\.\d{4}</td>", body["stages"])
    assert re.search(r"<td>transfer</td><td>done</td><td>0\.\d{4}</td>.*5 classes", body["stages"])
    assert f"<td>quantized</td><td>{NOT_RUN}</td>" in body["stages"]
    assert "<td>conv2</td>" in body["analysis"] and "smallest kernels" in body["analysis"]
    assert "Rounds" in body["pruning"] and "(must be 0.0)" in body["pruning"]
    for sid in ("quantized", "csim", "hardware"):
        assert NOT_RUN in body[sid]
    # Images are embedded (self-contained page) and written beside it.
    # Gradual pruning ranked its own rounds' models, so the baseline's magnitudes are drawn beside.
    names = ("kernel_heatmap", "kernel_grid", "magnitude_histograms", "accuracy_vs_fraction",
             "multiplications", "sensitivity", "baseline_magnitude_histograms", "baseline_kernel_grid")
    for name in names:
        assert f"alt='{name}.png'" in page
        assert_png(run_dir / "report" / f"{name}.png", min_bytes=3000)
    assert page.count("src='data:image/png;base64,") == len(names)
    assert "ranked at its last kept round" in body["kernels"]
    assert "could not draw" not in page


def test_report_by_name_with_the_config_runs_dir(pruned_run, tmp_path):
    config, run_dir = pruned_run
    # Only a baseline: the later stages say "not run yet" instead of failing.
    early = run_dir.parent / "early"
    shutil.copytree(run_dir / "baseline", early / "baseline")
    assert main(["report", "early", "--config", str(config), "--quiet", "--layer", "conv1", "--channel", "3"]) == 0
    body = sections_of((early / "report" / "index.html").read_text())
    assert "name: early" in body["config"]
    assert f"<td>analysis</td><td>{NOT_RUN}</td>" in body["stages"]
    assert f"<td>pruned</td><td>{NOT_RUN}</td>" in body["stages"]
    assert NOT_RUN in body["pruning"] and "conv1, output channel 3" in body["kernels"]


def test_report_bad_input(pruned_run, capsys):
    config, run_dir = pruned_run
    assert main(["report", "nosuch", "--config", str(config)]) == 2
    assert "no such run (runs in" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--layer", "fc1", "--quiet"]) == 2
    assert "--layer 'fc1': not a conv layer" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--layer", "conv2", "--channel", "8", "--quiet"]) == 2
    assert "--channel 8: conv2 has output channels 0..7" in capsys.readouterr().err


@pytest.mark.slow
def test_report_with_quantized_stage_csim_and_accounting(pruned_run):
    """After quantize -> export -> C-sim, the page shows agreement and the hardware table."""
    from fpgaprune.config import load_config
    from fpgaprune.hw import csim, export, quantize
    from fpgaprune.masks import masks_of
    from fpgaprune.run import Run

    config, run_dir = pruned_run
    cfg = load_config(config)
    cfg = replace(cfg, quantize=replace(cfg.quantize, epochs=0))
    data = Run(cfg).load_data()
    pruned, _ = Run(cfg).load("pruned")
    qmodel, summary = quantize.quantize_model(pruned, masks_of(pruned), data, cfg, verbose=0)
    Run(cfg).save("quantized", qmodel, summary, force=True)
    project = export.export_project(qmodel, cfg, "Vivado", data.x_val[:10], force=True)
    csim.run_csim(project, qmodel, data.x_val[:100], data.y_val[:100], workers=2, split="validation")
    assert main(["report", str(run_dir), "--quiet"]) == 0
    page = (run_dir / "report" / "index.html").read_text()
    body = sections_of(page)
    assert re.search(r"<td>C-sim \(Vivado\)</td><td>done</td><td>0\.\d{4}</td><td>–</td>", body["stages"])
    assert "<th>argmax agreement</th>" in body["csim"] and "<th>reuse factor</th>" in body["hardware"]
    assert "<td>Vivado</td><td>validation</td><td>100</td>" in body["csim"]
    assert "<td>conv2</td><td>Conv2D</td>" in body["hardware"]
    assert "conv multiplications per image cut by" in body["hardware"]
    assert "quantized_bits(8,0,0,alpha=1)" in body["quantized"]
    for name in ("quantized_weights", "multiplications_Vivado"):
        assert_png(run_dir / "report" / f"{name}.png")
    assert NOT_RUN not in body["csim"] + body["hardware"] + body["quantized"]


def test_report_flags_stages_older_than_their_input(pruned_run):
    """A baseline retrained after pruning makes the pruned stage stale: the table says so."""
    import os
    import time

    _, run_dir = pruned_run
    copy = run_dir.parent / "retrained"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report"))
    later = time.time() + 60
    os.utime(copy / "baseline" / "summary.json", (later, later))
    assert main(["report", str(copy), "--quiet"]) == 0
    stages = sections_of((copy / "report" / "index.html").read_text())["stages"]
    for stage in ("analysis", "pruned"):
        assert f"<td>{stage}</td><td>done, but older than baseline: re-run it</td>" in stages
    assert "<td>transfer</td><td>done</td>" in stages
