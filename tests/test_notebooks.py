"""The notebooks run top to bottom on tiny settings, and are committed without outputs.

The kernel is this interpreter: a kernelspec named python3 whose argv is `sys.executable` is
written into a temporary JUPYTER_PATH (searched before any user or system kernelspec), so a
fresh CI venv needs no `ipykernel install` and a stray python3 kernel elsewhere is never used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("kernel_inspection.ipynb", "transfer_and_export.ipynb")


@pytest.fixture()
def quick_kernel(tmp_path, monkeypatch):
    """Quick settings and temp folders for the notebooks, and a kernel running this Python."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("FPGAPRUNE_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("FPGAPRUNE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FPGAPRUNE_HLS_DIR", str(tmp_path / "hls"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return tmp_path


def execute(name: str) -> nbformat.NotebookNode:
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def outputs_text(nb) -> str:
    return "\n".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert nb.metadata.kernelspec.name == "python3"
    assert any("parameters" in cell.metadata.get("tags", []) for cell in code)


@pytest.mark.slow
def test_kernel_inspection_notebook(quick_kernel, capsys):
    from fpgaprune.cli import main
    from fpgaprune.masks import load_masks
    from fpgaprune.spec import read_mask_spec

    nb = execute("kernel_inspection.ipynb")
    text = outputs_text(nb)
    assert "fpgaprune mask spec" in text and "next: fpgaprune prune" in text
    assert images(nb) == 5
    run = quick_kernel / "runs" / "mnist_cnn_notebook"
    spec_path = run / "notebook" / "mask_spec.yaml"
    spec = read_mask_spec(spec_path)
    assert (0, 0) in spec["conv2"] and (1, 2) in spec["conv2"] and (3, 3) not in spec["conv2"]
    # The spec the notebook wrote is accepted by the prune command as is.
    args = ["prune", "--config", str(ROOT / "configs" / "mnist_cnn.yaml"), "--set", "name=mnist_cnn_notebook",
            "--set", f"runs_dir={quick_kernel / 'runs'}", "--set", "data.limit=600", "--spec", str(spec_path),
            "--epochs", "1", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    masks = load_masks(run / "pruned" / "masks.npz")
    assert sorted(map(tuple, np.argwhere(masks["conv2"]).tolist())) == spec["conv2"]
    assert not masks["conv1"].any()


@pytest.mark.slow
def test_transfer_and_export_notebook(quick_kernel):
    nb = execute("transfer_and_export.ipynb")
    text = outputs_text(nb)
    assert "argmax agreement" in text and "bit-exact" in text
    assert "frozen layers unchanged: True" in text
    assert images(nb) >= 2
    projects = list((quick_kernel / "hls").glob("*/Vivado/summary.json"))
    assert len(projects) == 1
    summary = json.loads(projects[0].read_text())
    assert summary["argmax_agreement"] == 1.0
