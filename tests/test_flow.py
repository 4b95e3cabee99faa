"""The flow: named steps run in table order, checked before any work, restartable from a step."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fpgaprune.config import parse_config
from fpgaprune.errors import BadInput, option, render, run_step
from fpgaprune.flow import STEPS, Options, run_flow, step_names
from fpgaprune.run import FLOW_FILE, MASKS_FILE, Run

from .conftest import ROOT, TINY, error_lines, run_cli, tiny_config, tiny_pruned


def flow_config(tmp_path, **sections):
    return tiny_config(tmp_path, "flow", export={"csim_images": 50, "testbench_images": 2}, **sections)


def test_step_table_is_in_pipeline_order():
    assert list(STEPS)[:3] == ["baseline", "analyze", "prune"]
    assert list(STEPS).index("quantize") < list(STEPS).index("export") < list(STEPS).index("csim")
    assert step_names("quantize", "csim") == ["quantize", "export", "csim"]
    assert step_names("quantize") == ["quantize", "export", "csim", "accounting", "report"]
    # Optional steps run only when named, in table order whatever order they are named in.
    assert "transfer" not in step_names() and "synth" not in step_names()
    assert step_names(steps=["report", "transfer", "prune"]) == ["prune", "transfer", "report"]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"start": "quantise"}, "no step named 'quantise'"),
    ({"start": "csim", "stop": "export"}, "comes after"),
])
def test_bad_step_names(kwargs, fragment):
    with pytest.raises(BadInput, match=fragment):
        step_names(**kwargs)


def test_every_input_is_checked_before_any_step_runs(tmp_path):
    """The quantize step's missing input stops the flow before the baseline trains."""
    cfg = flow_config(tmp_path)
    with pytest.raises(BadInput, match="no saved pruned model"):
        run_flow(cfg, steps=["baseline", "quantize"])
    assert not Run(cfg).root.exists()


def test_fixes_are_named_in_library_words_and_in_cli_words():
    message = f"x already exists; {option('force')} to replace it; {run_step('prune')}"
    assert render(message, cli=False) == "x already exists; set force=True to replace it; run the 'prune' step first"
    assert render(message, cli=True) == "x already exists; pass --force to replace it; run `make prune` first"
    assert str(BadInput(message)) == render(message, cli=False)
    assert BadInput(message).for_cli() == render(message, cli=True)


@pytest.mark.slow
def test_force_checks_inputs_before_removing_an_interrupted_runs_checkpoints(tmp_path):
    cfg = flow_config(tmp_path)
    ckpt = Run(cfg).checkpoint_dir("baseline")
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text("{}")
    proc = run_cli("train", "--config", "configs/mnist_cnn.yaml", "--set", f"runs_dir={tmp_path / 'runs'}",
                   "--set", "name=flow", "--set", "data.dataset=npz:/no/such.npz", "--force")
    assert proc.returncode == 2 and "no such file" in error_lines(proc)[0]
    assert (ckpt / "state.json").is_file()


def test_help_and_version_import_no_tensorflow():
    """The command lives beside the package, so --help and --version need no TensorFlow."""
    code = (
        "import sys\n"
        "from fpgaprune_cli import COMMANDS, main\n"
        "for argv in (['--help'], ['--version'], *[[c, '--help'] for c in COMMANDS]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, argv\n"
        "print('tensorflow' in sys.modules, 'numpy' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False False"
    version = subprocess.run([sys.executable, "-m", "fpgaprune_cli", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("fpgaprune ") and version.returncode == 0


def test_stage_models_load_in_plain_keras_after_import_fpgaprune(tmp_path):
    """A pruned (KernelMask) and a quantized (QKeras) stage model, loaded in a fresh process."""
    from fpgaprune.config import ModelConfig, QuantizeConfig
    from fpgaprune.hw.quantize import build_quantized_model
    from fpgaprune.masks import apply_masks
    from fpgaprune.models import build_reference_cnn, save_model

    masks = {"conv2": np.eye(4, 8, dtype=bool)}
    pruned = apply_masks(build_reference_cnn(ModelConfig(**TINY)), masks)
    save_model(pruned, tmp_path / "pruned.h5")
    save_model(build_quantized_model(pruned, QuantizeConfig(), masks), tmp_path / "quantized.h5")
    code = (
        "import fpgaprune, tensorflow as tf, sys\n"
        "for name in sys.argv[1:]:\n"
        "    model = tf.keras.models.load_model(name, compile=False)\n"
        "    conv2 = model.get_layer('conv2')\n"
        "    print(type(conv2).__name__, type(conv2.kernel_constraint).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "pruned.h5"), str(tmp_path / "quantized.h5")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["Conv2D", "KernelMask", "QConv2D", "KernelMask"]


@pytest.mark.slow
def test_flow_from_quantize_to_csim_over_an_existing_pruned_stage(tmp_path):
    """start="quantize", stop="csim": the pruned stage is read, not made again; each step is timed."""
    from fpgaprune.masks import save_masks

    cfg = flow_config(tmp_path, quantize={"epochs": 0, "start_from": "pruned"})
    run = Run(cfg)
    model, masks = tiny_pruned()
    run.save("pruned", model, {"stage": "pruned"}, extras={MASKS_FILE: lambda p: save_masks(masks, p)})
    pruned_before = (run.stage_dir("pruned") / "model.h5").stat().st_mtime_ns
    lines = []
    flow = run_flow(cfg, start="quantize", stop="csim", options=Options(verbose=0, say=lines.append))

    assert list(flow.results) == ["quantize", "export", "csim"] and set(flow.seconds) == set(flow.results)
    assert not run.has("baseline") and (run.stage_dir("pruned") / "model.h5").stat().st_mtime_ns == pruned_before
    assert flow.results["csim"].summary["bit_exact"]
    assert flow.results["quantize"].kernels_pruned == int(masks["conv2"].sum())
    record = json.loads((run.root / FLOW_FILE).read_text())
    assert [s["step"] for s in record["steps"]] == ["quantize", "export", "csim"]
    saved = json.loads((run.stage_dir("quantized") / "summary.json").read_text())
    assert saved["result"]["val_accuracy"] == flow.results["quantize"].val_accuracy
    assert any("bit-exact" in line for line in lines)

    # Restart from a named step: only accounting runs, over what the flow saved.
    again = run_flow(cfg, steps=["accounting"], options=Options(say=lines.append))
    assert list(again.results) == ["accounting"]
    assert again.results["accounting"].summary["backends"]["Vivado"]["masked_nonzero_in_export"] == {"conv2": 0}
    # Steps that would overwrite refuse without force; with reuse they keep what is there.
    with pytest.raises(BadInput, match="already exists"):
        run_flow(cfg, start="quantize", stop="quantize")
    kept = run_flow(cfg, steps=["quantize"], options=Options(reuse=True, say=lines.append))
    assert kept.results["quantize"].reused


@pytest.mark.slow
def test_a_users_model_is_kept_as_brought_not_retrained(tmp_path):
    """file: models keep their weights (model.retrain defaults to false for them), bit for bit."""
    import tensorflow as tf

    from fpgaprune.config import ModelConfig
    from fpgaprune.models import build_reference_cnn, load_model_file, save_model

    tf.keras.utils.set_random_seed(3)
    path = tmp_path / "mine.h5"
    save_model(build_reference_cnn(ModelConfig(**TINY)), path)
    cfg = parse_config({"name": "mine", "runs_dir": str(tmp_path / "runs"), "model": {"source": f"file:{path}"},
                        "data": {"dataset": "mnist-5k", "limit": 100}})
    lines = []
    result = run_flow(cfg, steps=["baseline"], options=Options(verbose=0, say=lines.append)).results["baseline"]
    kept, _ = Run(cfg).load("baseline")
    for a, b in zip(load_model_file(path).get_weights(), kept.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert result.summary["retrained"] is False and result.summary["epochs"] == 0
    assert result.val_accuracy is not None and "kept as brought from file:" in lines[-1]
    with pytest.raises(BadInput, match="the reference CNN has no trained weights"):
        parse_config({"model": {"retrain": False}})


def test_reuse_replaces_a_project_older_than_the_quantized_model(tmp_path):
    """With reuse, a project exported before the quantized model was saved is exported again;
    one exported after it with the same settings is kept; either file missing is not stale."""
    import os
    from dataclasses import asdict

    from fpgaprune.flow.hw_steps import _exports_to_do
    from fpgaprune.hw.export import MANIFEST
    from fpgaprune.run import SUMMARY_FILE, written_before

    cfg = tiny_config(tmp_path)
    run = Run(cfg)
    quantized = run.stage_dir("quantized") / SUMMARY_FILE
    quantized.parent.mkdir(parents=True)
    quantized.write_text("{}")
    manifest = run.project_dir("Vivado") / MANIFEST
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"export_config": json.loads(json.dumps(asdict(cfg.export)))}))
    saved = quantized.stat().st_mtime

    os.utime(manifest, (saved - 60, saved - 60))
    assert written_before(manifest, quantized)
    assert _exports_to_do(run, cfg, Options(reuse=True)) == {"Vivado": True}
    os.utime(manifest, (saved + 60, saved + 60))
    assert not written_before(manifest, quantized)
    assert _exports_to_do(run, cfg, Options(reuse=True)) == {}
    assert not written_before(tmp_path / "absent", quantized) and not written_before(manifest, tmp_path / "absent")
