"""C-simulation: the compiled HLS project computes exactly what the QKeras model computes.

Compiling a project takes ~10 s, so the C-sim tests are few and marked slow.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import yaml

from fpgaprune.cli import main
from fpgaprune.config import QuantizeConfig, parse_config
from fpgaprune.errors import BadInput
from fpgaprune.hw.csim import SUMMARY, compare, run_csim
from fpgaprune.hw.export import export_project
from fpgaprune.hw.quantize import build_quantized_model, quantize_model
from fpgaprune.masks import save_masks

from .conftest import TINY, conv_tanh_dense, error_lines, run_cli, tiny_pruned

pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")


@pytest.mark.slow
def test_csim_is_bit_exact_with_qkeras(tmp_path, small_data):
    """Ranges chosen from the data, and one set too narrow (relu1 saturates): C-sim is bit-exact."""
    model, masks = tiny_pruned()
    kernel, bias = model.get_layer("conv1").get_weights()
    model.get_layer("conv1").set_weights([4 * kernel, bias])  # relu1's inputs up to ~4
    bits = {"conv2": {"bits": 6}, "relu1": {"integer": 1}}  # relu1: [0, 2)
    cfg = parse_config({"name": "cs", "model": TINY, "export": {"output_dir": str(tmp_path)},
                        "quantize": {"epochs": 1, "calibration_images": 16, "layers": bits}})
    qmodel, quantized = quantize_model(model, masks, small_data, cfg, verbose=0)
    ranges = quantized["ranges"]
    assert ranges["relu1"]["chosen"] == "config" and ranges["relu1"]["clipped"] > 0
    assert {r["chosen"] for name, r in ranges.items() if r["kind"] != "input" and name != "relu1"} == {"data"}
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
    qmodel = conv_tanh_dense(3, 4, seed=1)
    cfg = parse_config({"name": "tr", "export": {"output_dir": str(tmp_path)}})
    images = np.random.RandomState(0).rand(40, 8, 8, 1).astype(np.float32)
    folder = export_project(qmodel, cfg, "Vivado", images[:2])

    summary = run_csim(folder, qmodel, images, workers=1)

    assert not summary["bit_exact"] and summary["max_diff_lsb"] > 0
    assert summary["first_differing_layer"] == "squash"
    conv = next(r for r in summary["trace"] if r["layer"] == "conv")
    assert conv["max_abs_diff"] == 0.0  # exact up to the lookup table


class _TracedModel:
    """Stands in for a compiled hls4ml model: its trace is the float layers' outputs, one shifted."""

    def __init__(self, outputs: dict, shifted: str):
        self.outputs, self.shifted = outputs, shifted
        self.layers = [_TracedLayer(name) for name in outputs]

    def get_layers(self):
        return self.layers

    def trace(self, x):
        print("Recompiling with tracing")
        return None, {k: v + (1.0 if k == self.shifted else 0.0) for k, v in self.outputs.items()}


class _TracedLayer:
    def __init__(self, name):
        self.name = name
        self.attributes = {}

    def set_attr(self, key, value):
        self.attributes[key] = value

    def get_output_variable(self):
        from types import SimpleNamespace

        return SimpleNamespace(type=SimpleNamespace(precision=SimpleNamespace(width=16, integer=6)))


def test_trace_matches_a_fused_activation_by_hls4ml_names(capsys):
    """get_ymodel_keras splits conv's relu into `conv` and `conv_relu`, as hls4ml's trace names them."""
    from fpgaprune.hw.csim import trace_differences

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inp = layers.Input((6, 6, 1), name="image")
    x = layers.Conv2D(2, 3, activation="relu", name="conv")(inp)
    out = layers.Dense(3, name="head")(layers.Flatten(name="flat")(x))
    model = tf.keras.Model(inp, out)
    images = np.random.RandomState(0).rand(4, 6, 6, 1).astype(np.float32)
    probe = tf.keras.Model(inp, [model.get_layer("conv").output, out])
    relu, head = probe.predict(images, verbose=0)
    pre = tf.nn.convolution(images, model.get_layer("conv").kernel).numpy() + model.get_layer("conv").bias.numpy()
    hls = _TracedModel({"conv": pre, "conv_relu": relu, "absent": head, "head": head}, shifted="conv_relu")

    rows = trace_differences(hls, model, images)

    assert [r["layer"] for r in rows] == ["conv", "conv_relu", "head"]
    by_name = {r["layer"]: r for r in rows}
    assert by_name["conv"]["max_abs_diff"] < 1e-5 and by_name["head"]["max_abs_diff"] < 1e-5
    assert by_name["conv_relu"]["differs"] and by_name["conv_relu"]["max_diff_lsb"] == pytest.approx(2**10)
    assert all(layer.attributes == {"trace": True} for layer in hls.layers)
    assert capsys.readouterr().out == ""


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
    assert "conv2" in out and "unpruned (the baseline" in out and "masked kernels are 0 in the exported weights" in out
    assert "non-zero multiplications cut by" in out
    project = tmp_path / "hls" / "chain" / "Vivado"
    accounting = json.loads((project / "accounting.json").read_text())
    assert accounting["masked_nonzero_in_export"] == {"conv2": 0}
    conv2 = next(r for r in accounting["layers"] if r["name"] == "conv2")
    assert conv2["nonzero"] <= conv2["weights"] - conv2["masked_weights"]

    # The open-source synthesis check on the exported layers, and the plain estimate.
    proc = run_cli("estimate", "--config", str(path), "--yosys")
    assert proc.returncode == 0, proc.stderr[-2000:]
    checked = {r["name"]: r for r in json.loads((project / "yosys.json").read_text())["layers"]}
    assert checked["conv2"]["lut"] > 0 and 0.3 < checked["conv2"]["lut"] / checked["conv2"]["da4ml_lut"] < 3
    assert "conv2" in proc.stdout and "Yosys LUT" in proc.stdout
    proc = run_cli("estimate", "--config", str(path))
    assert proc.returncode == 0 and "accounting estimate" in proc.stdout and "multiplier rule" in proc.stdout

    assert main(["export", "--config", str(path)]) == 2  # the project exists: no silent overwrite
    proc = run_cli("export", "--config", str(path))
    assert proc.returncode == 2 and "pass --force" in error_lines(proc)[0]


def test_hls_without_pruned_stage_says_make_prune(tmp_path, capsys):
    code = main(["hls", "--config", "configs/mnist_cnn.yaml", "--set", f"runs_dir={tmp_path}",
                 "--set", f"export.output_dir={tmp_path}/hls"])
    assert code == 2
    assert "no saved pruned stage; run `make prune` first" in capsys.readouterr().err


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


def _hostile_fml(path, member: tarfile.TarInfo, data: bytes = b"x"):
    """An hls4ml-like archive (config, architecture) with one hostile extra member."""
    arch = json.dumps({"conv": {"weight": "@ndarray:conv_w.npy"}}).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, body in (("config.json", b"{}"), ("model_arch.json", arch), ("conv_w.npy", b"npy")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


def _member(name, kind=tarfile.REGTYPE, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "member, problem",
    [
        (_member("../../x"), "a path outside the archive folder"),
        (_member("tb/../../../x"), "a path outside the archive folder"),
        (_member("{tmp}/absolute-x"), "an absolute path"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "a link"),
        (_member("hard", tarfile.LNKTYPE, "/etc/passwd"), "a link"),
        (_member("dev", tarfile.CHRTYPE), "a device or other special file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device"],
)
def test_hostile_hls_archive_is_refused(tmp_path, monkeypatch, member, problem):
    """hls4ml's deserialize_model would extract these outside its folder (no tar filter)."""
    from fpgaprune.hw.csim import load_hls_model

    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))  # where extraction happens, so ../../x lands in tmp_path
    member.name = member.name.format(tmp=tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    _hostile_fml(project / "model.fml", member)
    with pytest.raises(BadInput) as info:
        load_hls_model(project, tmp_path / "out")
    assert f"holds the entry {member.name!r} ({problem}); a foreign HLS project is code" in str(info.value)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "a", "a/b", "project", "project/model.fml"]


def test_hls_archive_array_reference_outside_is_refused(tmp_path):
    from fpgaprune.hw.csim import load_hls_model

    project = tmp_path / "project"
    project.mkdir()
    arch = json.dumps({"conv": {"weight": "@ndarray:../../secret.npy"}}).encode()
    with tarfile.open(project / "model.fml", "w:gz") as tar:
        info = tarfile.TarInfo("model_arch.json")
        info.size = len(arch)
        tar.addfile(info, io.BytesIO(arch))
    with pytest.raises(BadInput, match="model_arch.json refers to '../../secret.npy', not an array in the archive"):
        load_hls_model(project, tmp_path / "out")
    (project / "model.fml").write_text("not a tar.gz")
    with pytest.raises(BadInput, match="model.fml is not a readable hls4ml model archive"):
        load_hls_model(project, tmp_path / "out")


@pytest.mark.slow
def test_csim_command_refuses_a_hostile_project(tmp_path, capsys, monkeypatch):
    """`fpgaprune csim` on a project whose model.fml holds ../../x: exit 2, one line, nothing written."""
    from fpgaprune.run import Run

    monkeypatch.chdir(tmp_path)
    config = {"name": "evil", "model": TINY, "data": {"limit": 50}, "runs_dir": str(tmp_path / "runs"),
              "export": {"output_dir": str(tmp_path / "hls"), "csim_images": 5}}
    cfg = parse_config(config)
    model, masks = tiny_pruned()
    Run(cfg).save("quantized", build_quantized_model(model, QuantizeConfig(), masks), {"stage": "quantized"})
    project = tmp_path / "hls" / "evil" / "Vivado"
    project.mkdir(parents=True)
    (project / "fpgaprune.json").write_text(json.dumps({"backend": "Vivado"}))
    _hostile_fml(project / "model.fml", _member("../../../../escaped"))
    (tmp_path / "evil.yaml").write_text(yaml.safe_dump(config))
    before = {p: p.read_bytes() for p in project.iterdir()}
    deep = tmp_path / "t" / "u" / "v" / "w"  # hls4ml extracts in a temporary folder: keep an escape in view
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))

    code = main(["csim", "--config", str(tmp_path / "evil.yaml"), "--quiet"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "holds the entry '../../../../escaped' (a path outside the archive folder)" in err[0], err
    assert {p: p.read_bytes() for p in project.iterdir()} == before  # no summary.json either
    assert [p for p in tmp_path.rglob("escaped")] == []


def test_synth_quiet_sends_the_vendor_output_to_the_log(tmp_path, capfd):
    """What hls4ml's build starts with os.system writes to our fds: --quiet puts it in synth.log."""
    import os

    from fpgaprune.hw.synth import output_to

    with output_to(tmp_path / "synth.log"):
        os.system("echo vendor chatter; echo vendor error >&2")
    print("after")
    out, err = capfd.readouterr()
    assert "vendor" not in out + err and out == "after\n"
    assert (tmp_path / "synth.log").read_text().split("\n")[:2] == ["vendor chatter", "vendor error"]
