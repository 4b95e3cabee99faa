"""The zero invariant end to end: kernels named in a mask spec are exactly 0.0 after masked
retraining (every optimizer), save/load, transfer (with a conv layer unfrozen), quantization
and export, down to the numbers in the HLS weight files."""

import numpy as np
import pytest

from fpgaprune.config import (
    Config,
    ExportConfig,
    ModelConfig,
    QuantizeConfig,
    TrainConfig,
    TransferConfig,
)
from fpgaprune.data import load_dataset
from fpgaprune.hw.accounting import check_masked_zeros, count_project
from fpgaprune.hw.export import export_project
from fpgaprune.hw.quantize import check_quantized_zeros, quantize_model
from fpgaprune.masks import apply_masks, masked_max_abs, masks_of
from fpgaprune.models import build_reference_cnn, load_saved_model, save_model
from fpgaprune.process import reseed
from fpgaprune.spec import parse_mask_spec, spec_to_masks
from fpgaprune.training.fit import compile_model, fit, make_optimizer
from fpgaprune.transfer.stage import transfer

SPEC = {"conv1": [[0, 1], [0, 5]], "conv2": [[0, 0], [3, 5], [5, 2], [5, 7], [1, 1]]}
OPTIMIZERS = {
    "sgd_momentum": dict(name="sgd", learning_rate=0.05, momentum=0.9),
    "nesterov": dict(name="sgd", learning_rate=0.05, momentum=0.9, nesterov=True),
    "rmsprop": dict(name="rmsprop", learning_rate=0.005, momentum=0.5),
    "adam": dict(name="adam", learning_rate=0.01),
}


@pytest.mark.slow
def test_masked_kernels_stay_zero_from_spec_to_hls_weights(tmp_path):
    cfg = Config(
        name="zero",
        runs_dir=str(tmp_path / "runs"),
        model=ModelConfig(conv_filters=[6, 8], fc_units=12),
        train=TrainConfig(epochs=1, batch_size=32),
        transfer=TransferConfig(start_from="pruned", train_last=2, unfreeze=1, unfreeze_epochs=1, epochs=1),
        quantize=QuantizeConfig(epochs=1),
        export=ExportConfig(output_dir=str(tmp_path / "hls"), csim_images=8),
    )
    data = load_dataset("mnist-5k", limit=400, seed=0)
    reseed(0)
    model = build_reference_cnn(cfg.model)
    masks = spec_to_masks(parse_mask_spec(SPEC), model)
    conv = {name: model.get_layer(name) for name in SPEC}

    for name, settings in OPTIMIZERS.items():
        settings = dict(settings)
        opt = make_optimizer(settings.pop("name"), **settings)
        before = {n: layer.kernel.numpy().copy() for n, layer in conv.items()}
        model = apply_masks(model, masks)
        compile_model(model, opt)
        fit(model, data, 2, 32, seed=1, verbose=0)
        assert masked_max_abs(model, masks) == 0.0, name
        for n in SPEC:
            after = model.get_layer(n).kernel.numpy()
            kept = ~masks[n]
            assert np.abs(after[:, :, kept] - before[n][:, :, kept]).max() > 0, f"{name}: {n} did not train"
            assert np.all(after[:, :, masks[n]] == 0.0) and not np.signbit(after[:, :, masks[n]]).any()
        conv = {n: model.get_layer(n) for n in SPEC}

    save_model(model, tmp_path / "saved" / "model.h5")
    model = load_saved_model(tmp_path / "saved")
    assert {k: v.tolist() for k, v in masks_of(model).items()} == {k: v.tolist() for k, v in masks.items()}
    assert masked_max_abs(model, masks) == 0.0

    conv2_before = model.get_layer("conv2").kernel.numpy().copy()
    moved, summary = transfer(model, data, cfg, verbose=0)
    assert "conv2" in summary["unfreeze"]["layers"]  # gradual unfreezing reopened conv2 ...
    assert not np.array_equal(moved.get_layer("conv2").kernel.numpy(), conv2_before)  # ... and it trained
    assert masked_max_abs(moved, masks) == 0.0

    qmodel, qsummary = quantize_model(moved, masks, data, cfg, verbose=0)
    assert check_quantized_zeros(qmodel, masks) == 0.0
    assert qsummary["masked_max_abs_float"] == 0.0 and qsummary["masked_max_abs_quantized"] == 0.0

    project = export_project(qmodel, cfg, "Vivado", data.x_val[:8])
    assert check_masked_zeros(project, masks) == {"conv1": 0, "conv2": 0}
    rows = {row.name: row for row in count_project(project)}
    per_kernel = 9  # 3x3 taps
    for n in SPEC:
        assert rows[n].weights - rows[n].nonzero >= len(SPEC[n]) * per_kernel
