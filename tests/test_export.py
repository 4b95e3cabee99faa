"""Export: hls4ml projects with test-bench data, pruned kernels 0 in the weight files, no overwrite."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaprune.cli import main
from fpgaprune.config import QuantizeConfig, parse_config
from fpgaprune.errors import BadInput
from fpgaprune.hw.accounting import check_masked_zeros
from fpgaprune.hw.export import MANIFEST, export_project, read_manifest
from fpgaprune.hw.quantize import build_quantized_model, logits_model
from fpgaprune.masks import strip_masks

from .conftest import TINY, tiny_pruned

pytestmark = pytest.mark.filterwarnings("ignore:The `keras.constraints.serialize")


@pytest.fixture(scope="module")
def pruned_qmodel():
    model, masks = tiny_pruned()
    return build_quantized_model(model, QuantizeConfig(), masks), masks


def config(tmp_path, **export):
    return parse_config({"name": "t", "model": TINY, "export": {"output_dir": str(tmp_path), **export}})


def images(n=5):
    return np.random.RandomState(0).rand(n, 28, 28, 1).astype(np.float32)


@pytest.mark.parametrize("strategy", ["Latency", "Resource"])
def test_masked_kernels_are_zero_in_exported_weight_files(tmp_path, pruned_qmodel, strategy):
    qmodel, masks = pruned_qmodel
    cfg = config(tmp_path, strategy=strategy, reuse_factor=1 if strategy == "Latency" else 4)
    folder = export_project(qmodel, cfg, "Vivado", images())

    assert check_masked_zeros(folder, masks) == {"conv2": 0}
    layer = next(r for r in read_manifest(folder)["layers"] if r["name"] == "conv2")
    masked = int(masks["conv2"].sum()) * 9
    assert layer["masked_weights"] == masked and layer["strategy"] == strategy.lower()
    # non-masked kernels keep their (quantized) values: the mapping back is not all zeros
    from fpgaprune.hw.quantize import quantized_kernels
    from fpgaprune.hw.weights import exported_kernel

    exported = exported_kernel(folder, layer)
    np.testing.assert_array_equal(exported, quantized_kernels(qmodel)["conv2"])


def test_project_layout_and_testbench_data(tmp_path, pruned_qmodel):
    qmodel, _ = pruned_qmodel
    cfg = config(tmp_path, maximum_size=None)
    folder = export_project(qmodel, cfg, "Vivado", images(7))
    assert folder == tmp_path / "t" / "Vivado"
    for name in ("build_prj.tcl", "firmware/myproject.cpp", "myproject_test.cpp", "model.fml", MANIFEST):
        assert (folder / name).is_file(), name
    lines = (folder / "tb_data/tb_input_features.dat").read_text().splitlines()
    outputs = (folder / "tb_data/tb_output_predictions.dat").read_text().splitlines()
    assert len(lines) == len(outputs) == 7 and len(lines[0].split()) == 784 and len(outputs[0].split()) == 10
    # expected outputs are the QKeras logits (the design ends before the softmax)
    logits = logits_model(strip_masks(qmodel)).predict(images(7), verbose=0)
    np.testing.assert_allclose(np.array([line.split() for line in outputs], float), logits, rtol=1e-6, atol=1e-7)
    manifest = read_manifest(folder)
    assert manifest["part"] == "xczu9eg-ffvb1156-2-e" and manifest["io_type"] == "io_stream"
    assert "maximum_size 4096" in (folder / "project.tcl").read_text()
    assert not list(tmp_path.glob("t/.*"))  # no temporary folder left behind


@pytest.mark.slow
def test_existing_project_is_not_overwritten_without_force(tmp_path, pruned_qmodel):
    qmodel, _ = pruned_qmodel
    cfg = config(tmp_path)
    folder = export_project(qmodel, cfg, "Vivado", images())
    marker = folder / "my_notes.txt"
    marker.write_text("keep me")
    with pytest.raises(BadInput, match="already exists; set force=True") as refused:
        export_project(qmodel, cfg, "Vivado", images())
    assert "already exists; pass --force" in refused.value.for_cli()  # the CLI's words for the same fix
    assert marker.read_text() == "keep me"
    export_project(qmodel, cfg, "Vivado", images(), force=True)
    assert not marker.exists() and (folder / MANIFEST).is_file()


def test_board_uses_vivado_accelerator_and_board_part(tmp_path, pruned_qmodel):
    qmodel, _ = pruned_qmodel
    cfg = config(tmp_path, board="pynq-z2")
    folder = export_project(qmodel, cfg, "VivadoAccelerator", images())
    manifest = read_manifest(folder)
    assert folder.name == "VivadoAccelerator" and manifest["part"] == "xc7z020clg400-1"
    assert manifest["board"] == "pynq-z2"
    assert list(folder.glob("*.tcl")), "the board flow's tcl scripts"


def test_vitis_backend(tmp_path, pruned_qmodel):
    qmodel, masks = pruned_qmodel
    folder = export_project(qmodel, config(tmp_path), "Vitis", images())
    assert read_manifest(folder)["backend"] == "Vitis"
    assert check_masked_zeros(folder, masks) == {"conv2": 0}


def test_unknown_layer_names_in_export_tables(tmp_path, pruned_qmodel):
    qmodel, _ = pruned_qmodel
    with pytest.raises(BadInput, match="export.layer_reuse.fc9: no Conv2D/Dense layer"):
        export_project(qmodel, config(tmp_path, layer_reuse={"fc9": 2}), "Vivado", images())


@pytest.mark.parametrize(
    "override, message",
    [
        ("export.part=virtex-big", "export.part: 'virtex-big' is not a Xilinx part name"),
        ("export.board=pynq-z9", "export.board: 'pynq-z9' is not a board hls4ml knows"),
        ("export.strategy=Fast", "export.strategy: 'Fast' is not one of"),
        ("export.backends=[Quartus]", "export.backends[0]: 'Quartus' is not one of"),
    ],
)
def test_bad_export_settings_exit_2(override, message, capsys, tmp_path):
    code = main(["export", "--config", "configs/mnist_cnn.yaml", "--set", override, "--set", f"runs_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_export_without_quantized_stage_exit_2(capsys, tmp_path):
    code = main(["export", "--config", "configs/mnist_cnn.yaml", "--set", f"runs_dir={tmp_path}",
                 "--set", f"export.output_dir={tmp_path}/hls"])
    assert code == 2
    assert "no saved quantized stage" in capsys.readouterr().err


def test_hls_config_is_merged_as_hls4ml_users_write_it(tmp_path, pruned_qmodel):
    """export.hls_config: Model / LayerName keys reach hls4ml; top-level keys the project; names checked."""
    qmodel, _ = pruned_qmodel
    extra = {"Model": {"TraceOutput": True}, "ClockUncertainty": "20%",
             "LayerName": {"conv2": {"ParallelizationFactor": 2, "Trace": True}, "fc1": {"ReuseFactor": 4}}}
    cfg = config(tmp_path, hls_config=extra, project_name="digits")
    folder = export_project(qmodel, cfg, "Vivado", images(2))
    written = (folder / "hls4ml_config.yml").read_text()
    assert "ParallelizationFactor: 2" in written and "ClockUncertainty: 20%" in written
    assert (folder / "firmware" / "digits.cpp").is_file() and read_manifest(folder)["project_name"] == "digits"
    fc1 = next(r for r in read_manifest(folder)["layers"] if r["name"] == "fc1")
    assert fc1["reuse_factor"] == 4
    with pytest.raises(BadInput, match=r"export.hls_config.LayerName.fc9: no layer of that name .*conv2"):
        export_project(qmodel, config(tmp_path, hls_config={"LayerName": {"fc9": {}}}), "Vivado", images(2),
                       force=True)
    for bad, message in [({"IOType": "io_parallel"}, "set by export.io_type"),
                         ({"Modle": {}}, "not an hls4ml config key"), ({"LayerType": {}}, "LayerName"),
                         ({"LayerName": {"fc1": {"Precision": {"result": "fixed<20,10>"}}}}, "quantize.layers")]:
        with pytest.raises(BadInput, match=message):
            config(tmp_path, hls_config=bad)
    with pytest.raises(BadInput, match="export.project_name: '1x' is not a C identifier"):
        config(tmp_path, project_name="1x")
