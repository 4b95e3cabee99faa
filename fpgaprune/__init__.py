"""fpgaprune: prune near-zero 2-D conv kernels, retrain them locked at 0.0, export to FPGA HLS.

Importing it registers fpgaprune's and QKeras' Keras classes, so a stage model loads in plain
Keras: `tf.keras.models.load_model("runs/mnist_cnn/pruned/model.h5")`. The public API is
importable from here (each name loaded on first use):

    from fpgaprune import load_config, run_flow, Options
    result = run_flow(load_config("configs/mnist_cnn.yaml"), start="prune", stop="prune")

    from fpgaprune import apply_masks, masked_max_abs, kernel_norms, propose
"""

from __future__ import annotations

import importlib

from .models import register_custom_objects as _register_custom_objects

__version__ = "0.1.0"
_register_custom_objects()

# name -> module that defines it (a literal table: the public surface, in one place).
_API = {
    # configs, runs, the flow
    "Config": "config", "load_config": "config", "parse_config": "config", "config_to_dict": "config",
    "reference_config": "config",
    "Run": "run", "StageResult": "results",
    "run_flow": "flow", "Options": "flow", "STEPS": "flow", "FlowResult": "flow",
    "BadInput": "errors", "WorkFailed": "errors", "FpgapruneError": "errors",
    "configure_process": "process", "reseed": "process",
    # data and models
    "Dataset": "data", "load_dataset": "data",
    "build_model": "models", "build_reference_cnn": "models", "load_model_file": "models", "save_model": "models",
    # masks and mask specs
    "KernelMask": "masks", "apply_masks": "masks", "masks_of": "masks", "masked_max_abs": "masks",
    "masked_optimizer": "masks", "save_masks": "masks", "load_masks": "masks", "strip_masks": "masks",
    "parse_mask_spec": "spec", "read_mask_spec": "spec", "write_mask_spec": "spec", "spec_to_masks": "spec",
    "masks_to_spec": "spec", "shorter_spec": "spec", "write_masks": "spec", "Keep": "spec",
    # analysis
    "kernel_norms": "analysis.kernels", "ranked_table": "analysis.kernels", "propose": "analysis.kernels",
    "sensitivity": "analysis.kernels", "analyze": "analysis.kernels",
    # graph transformations
    "reduce_model": "graph.reduce",
    # training
    "compile_model": "training.fit", "make_optimizer": "training.fit", "fit": "training.fit",
    "evaluate": "training.fit", "prune_oneshot": "training.retrain", "prune_gradual": "training.gradual",
    # transfer, hardware, report
    "transfer": "transfer.stage",
    "quantize_model": "hw.quantize", "export_project": "hw.export", "run_csim": "hw.csim",
    "count_project": "hw.accounting", "write_report": "report.html",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'fpgaprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fpgaprune.{_API[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
