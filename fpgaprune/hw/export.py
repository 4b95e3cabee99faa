"""Export: the quantized model as an hls4ml 1.3 HLS project, one per backend.

The precision of every layer comes from the QKeras quantizers, propagated by hls4ml's
`bit_exact` flow, so the C-simulation computes exactly what the QKeras model computes. The
design ends at the logits (see `quantize.logits_model`). Each project is built in a temporary
folder and renamed into `hls_projects/<name>/<backend>/` when complete, and an existing
project is never replaced without `force`. Besides hls4ml's files it holds:

- `tb_data/`: test-bench images and the QKeras model's outputs, for the vendor's own csim;
- `model.fml`: the hls4ml model (hls4ml serialization), which csim and synth reload;
- `fpgaprune.json`: the manifest (layers, weight files, strategy, reuse factor, precisions,
  masks) that the C-simulation and the hardware accounting read.

    folder = export_project(qmodel, cfg, "Vivado", x_testbench)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..config import Config, ExportConfig
from ..errors import BadInput, WorkFailed, run_step
from ..io import atomic_dir, read_json, write_json
from ..locks import scratch_dir
from ..masks import masks_of, strip_masks
from .costs import DA_STRATEGY
from .quantize import check_convertible, hls4ml_version, logits_model, quantized_kernels
from .strategies import AUTO, Choice, choose
from .weights import DA_WEIGHTS

MANIFEST = "fpgaprune.json"
HLS_MODEL = "model.fml"
# hls4ml layer classes with a weight array (a 1x1 Conv2D becomes PointwiseConv2D in io_stream).
WEIGHT_CLASSES = ("Conv1D", "Conv2D", "PointwiseConv2D", "DepthwiseConv2D", "Dense")
KERNEL_NAMES = ("kernel", "depthwise_kernel")  # the Keras weight behind hls4ml's "weight"
DEFAULT_MAXIMUM_SIZE = 4096  # hls4ml's own default for config_array_partition -maximum_size


def supported_boards() -> dict[str, dict]:
    """hls4ml's VivadoAccelerator boards (its supported_boards.json): name -> part, flows."""
    from importlib.resources import files

    text = files("hls4ml.backends.vivado_accelerator").joinpath("supported_boards.json").read_text()
    return json.loads(text)


def backend_names(ecfg: ExportConfig) -> list[str]:
    """The hls4ml backends to export for: with a board, Vivado becomes VivadoAccelerator."""
    return ["VivadoAccelerator" if (b == "Vivado" and ecfg.board) else b for b in ecfg.backends]


def check_export_config(ecfg: ExportConfig) -> None:
    """What the config schema cannot check without hls4ml: the board name."""
    if ecfg.board is not None:
        boards = supported_boards()
        if ecfg.board not in boards:
            raise BadInput(f"export.board: {ecfg.board!r} is not a board hls4ml knows ({', '.join(boards)})")
        if "Vivado" not in ecfg.backends:
            raise BadInput("export.board: the board flow uses the Vivado backend; add Vivado to export.backends")


def project_dir(cfg: Config, backend: str) -> Path:
    return Path(cfg.export.output_dir) / cfg.name / backend


def board_part(ecfg: ExportConfig) -> str:
    return supported_boards()[ecfg.board]["part"] if ecfg.board else ecfg.part


def weight_layer_names(model: tf.keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if _kernel(layer) is not None]


def check_layer_tables(model: tf.keras.Model, ecfg: ExportConfig) -> None:
    weight_layers = weight_layer_names(model)
    for key, table in (("layer_reuse", ecfg.layer_reuse), ("layer_strategy", ecfg.layer_strategy)):
        for name in table:
            if name not in weight_layers:
                raise BadInput(f"export.{key}.{name}: no Conv2D/Dense layer of that name ({', '.join(weight_layers)})")


def hls_config(model: tf.keras.Model, ecfg: ExportConfig, backend: str, choices: dict[str, Choice]) -> dict:
    """hls4ml's per-layer config with each weight layer's strategy and reuse factor.

    The model-wide strategy stays Latency under distributed arithmetic or auto: hls4ml applies
    a model-wide strategy to the input layer too, and distributed arithmetic there fails.
    """
    import hls4ml

    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend=backend)
    config["Model"]["Strategy"] = ecfg.strategy if ecfg.strategy not in (DA_STRATEGY, AUTO) else "Latency"
    config["Model"]["ReuseFactor"] = ecfg.reuse_factor if ecfg.strategy != DA_STRATEGY else 1
    for name, choice in choices.items():
        layer_cfg = config["LayerName"].setdefault(name, {})
        layer_cfg["Strategy"] = choice.strategy
        layer_cfg["ReuseFactor"] = choice.reuse_factor
    known = list(config["LayerName"])
    for name in ecfg.hls_config.get("LayerName", {}):
        if name not in known:
            raise BadInput(f"export.hls_config.LayerName.{name}: no layer of that name in the model "
                           f"(its layers: {', '.join(known)})")
    sections = {k: v for k, v in ecfg.hls_config.items() if k in ("Model", "LayerName")}
    return deep_merge(config, sections)


def deep_merge(base: dict, extra: dict) -> dict:
    """`base` with `extra` laid over it: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def convert(model: tf.keras.Model, ecfg: ExportConfig, backend: str, output_dir: Path,
            x_tb: Path | None = None, y_tb: Path | None = None, say=None):
    """hls4ml conversion of a QKeras model (bit-exact precisions from its quantizers).

    Returns (hls_model, choices): the strategy and reuse factor each weight layer got.
    """
    check_convertible(model)
    check_layer_tables(model, ecfg)
    add_bit_exact_rules()
    names = weight_layer_names(model)

    def convert_with(choices, out=output_dir, x=None, y=None):
        return _convert(model, ecfg, backend, out, hls_config(model, ecfg, backend, choices), x, y)

    with scratch_dir("probe") as probe:
        choices = choose(model, ecfg, backend, lambda c: convert_with(c, Path(probe)), names)
    for choice in choices.values():
        if choice.note and say is not None:
            say(choice.note)
    hls_model = convert_with(choices, output_dir, x_tb, y_tb)
    hls_model.config.config["MaximumSize"] = ecfg.maximum_size or _maximum_size(hls_model)
    # ClockUncertainty, WriterConfig, AcceleratorConfig: project settings, read when writing.
    top = {k: v for k, v in ecfg.hls_config.items() if k not in ("Model", "LayerName")}
    hls_model.config.config.update(deep_merge(hls_model.config.config, top))
    return hls_model, choices


def priced_design(qmodel: tf.keras.Model, ecfg: ExportConfig, backend: str = "Vitis") -> dict[str, dict]:
    """Per weight layer, what `auto` at `ecfg.max_reuse_factor` would export and what it costs; no project written.

    The export's own choice and prices (`strategies.choose` on one hls4ml conversion), for
    comparing many models on the axis `make hls` reports: {"conv1": {"strategy", "reuse_factor",
    "lut", "dsp", "lut_equivalents", "multipliers", "model"}, ...}.
    """
    from dataclasses import replace

    model = logits_model(strip_masks(qmodel))
    check_convertible(model)
    add_bit_exact_rules()
    ecfg = replace(ecfg, strategy=AUTO, layer_strategy={}, layer_reuse={}, hls_config={})
    names = weight_layer_names(model)
    with scratch_dir("price") as probe:
        choices = choose(model, ecfg, backend,
                         lambda c: _convert(model, ecfg, backend, Path(probe), hls_config(model, ecfg, backend, c),
                                            None, None), names)
    out = {}
    for name, choice in choices.items():
        picked = next(c for c in choice.candidates
                      if (c["strategy"], c["reuse_factor"]) == (choice.strategy, choice.reuse_factor))
        out[name] = {key: picked[key] for key in ("strategy", "reuse_factor", "lut", "dsp", "lut_equivalents",
                                                  "multipliers", "model")}
    return out


def _convert(model, ecfg: ExportConfig, backend: str, output_dir: Path, config: dict, x_tb, y_tb):
    import hls4ml

    kwargs = {"part": ecfg.part, "clock_period": ecfg.clock_period, "io_type": ecfg.io_type}
    if backend == "VivadoAccelerator":
        kwargs.update(board=ecfg.board, part=board_part(ecfg))
    try:
        return hls4ml.converters.convert_from_keras_model(
            model,
            output_dir=str(output_dir),
            project_name=ecfg.project_name,
            backend=backend,
            hls_config=config,
            bit_exact=True,
            input_data_tb=str(x_tb) if x_tb else None,
            output_data_tb=str(y_tb) if y_tb else None,
            **kwargs,
        )
    except BadInput:
        raise
    except Exception as exc:
        message = " ".join(str(exc).split())[:300] or type(exc).__name__
        if "unexpected input layer chain" in message:
            raise BadInput(
                "hls4ml needs an input quantizer (QActivation(quantized_bits)) right after the input "
                f"for a bit-exact design; {run_step('quantize')}"
            ) from None
        raise WorkFailed(f"hls4ml could not convert the model for {backend}: {message}") from None


def add_bit_exact_rules() -> None:
    """Teach hls4ml 1.3's bit-exact precision pass the layers it has no rule for (ZeroPadding2D).

    Its `bit_exact` pass derives each layer's exact output precision from its inputs, one rule per
    layer class, and stops with NotImplementedError at a ZeroPadding2D. Padding adds zeros, which
    need no bits: the output keeps the input's precision, with the zeros at k = i = f = 0 (the
    same rule its convolutions already apply to their own padding). Registering it is idempotent.
    """
    from hls4ml.model.layers import ZeroPadding2D
    from hls4ml.model.optimizer.passes import bit_exact

    if ZeroPadding2D in bit_exact._produce_kif.registry:
        return

    @bit_exact._produce_kif.register(ZeroPadding2D)
    def _(layer):
        a = layer.attributes
        pad = ((a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"]), (0, 0))
        return tuple(np.pad(v, pad).astype(np.int16) for v in bit_exact.get_input_kifs(layer)[0])


def write_project(hls_model) -> None:
    """hls4ml's `write`, plus the fix of a known hls4ml 1.3 slip in the generated code.

    The VivadoAccelerator axi_stream wrapper for io_stream (vivado_accelerator_writer.py) has
    one line with a literal `input_t::size` where the input's type name belongs, so
    `myproject_axi.cpp` does not compile unless the input layer's type happens to be `input_t`.
    """
    hls_model.write()
    project = hls_model.config.get_project_name()
    wrapper = Path(hls_model.config.get_output_dir()) / "firmware" / f"{project}_axi.cpp"
    input_type = hls_model.get_input_variables()[0].type.name
    if wrapper.is_file() and input_type != "input_t":
        text = wrapper.read_text()
        wrapper.write_text(text.replace("in[i * input_t::size + j].last", f"in[i * {input_type}::size + j].last"))


def _maximum_size(hls_model) -> int:
    """Large enough to fully partition every Latency-strategy weight array (as Latency needs)."""
    sizes = [
        int(np.prod(layer.weights["weight"].shape))
        for layer in hls_model.get_layers()
        if "weight" in layer.weights and layer.get_attr("strategy", "latency").lower() == "latency"
    ]
    return max([DEFAULT_MAXIMUM_SIZE, *sizes])


def layer_manifest(hls_model, qmodel: tf.keras.Model, masks: dict[str, np.ndarray], choices: dict[str, Choice],
                   unreduced: dict[str, list[int]] | None = None) -> list[dict]:
    """Per weight layer: what the accounting needs to read the exported weights back and price them."""
    keras_layers = {layer.name: layer for layer in qmodel.layers}
    rows = []
    for layer in hls_model.get_layers():
        if layer.class_name not in WEIGHT_CLASSES or layer.name not in choices:
            continue
        weight = layer.weights.get("weight")
        bias = layer.weights.get("bias")
        out_shape = list(layer.get_output_variable().shape)
        kernel = _kernel(keras_layers[layer.name]) if layer.name in keras_layers else None
        kernel_shape = [int(s) for s in (kernel.shape if kernel is not None else weight.shape)]
        in_precision = layer.get_input_variable().type.precision
        choice = choices[layer.name]
        rows.append(
            {
                "name": layer.name,
                "class": layer.class_name,
                "kernel_shape": kernel_shape,
                "unreduced_kernel_shape": (unreduced or {}).get(layer.name, kernel_shape),
                # None: distributed arithmetic bakes a Dense layer's weights into its code (DA_WEIGHTS holds them)
                "weight_file": f"firmware/weights/{weight.name}.h" if weight is not None else None,
                "weight_file_shape": [int(s) for s in weight.data.shape] if weight is not None else kernel_shape,
                "bias_file": f"firmware/weights/{bias.name}.h" if bias is not None else None,
                "strategy": layer.get_attr("strategy", "latency"),
                "reuse_factor": int(layer.get_attr("reuse_factor", 1)),
                "da_kernel_cost": layer.get_attr("da_kernel_cost"),
                "strategy_candidates": choice.candidates,
                "weight_precision": str(_weight_precision(layer, qmodel)),
                "weight_bits": int(_weight_precision(layer, qmodel).width),
                "input_precision": str(in_precision),
                "input_bits": int(getattr(in_precision, "width", 0)),
                "output_precision": str(layer.get_output_variable().type.precision),
                "output_pixels": int(np.prod(out_shape[:-1])) if layer.class_name != "Dense" else 1,
                "masked_kernels": int(masks[layer.name].sum()) if layer.name in masks else 0,
                "masked_weights": _masked_weights(masks.get(layer.name), kernel),
            }
        )
    return rows


def _weight_precision(layer, qmodel):
    """The weights' fixed-point type: hls4ml's, or for a DA Dense (weights dropped) the QKeras quantizer's."""
    from hls4ml.model.types import FixedPrecisionType

    weight = layer.weights.get("weight")
    if weight is not None:
        return weight.type.precision
    q = getattr(qmodel.get_layer(layer.name), "kernel_quantizer_internal", None)
    if q is None:
        raise WorkFailed(f"export: {layer.name} has no weight quantizer to read its precision from")
    return FixedPrecisionType(width=int(q.bits), integer=int(q.integer) + 1, signed=True)


def da_embedded_weights(manifest_layers: list[dict], qmodel: tf.keras.Model) -> dict[str, np.ndarray]:
    """The kernels hls4ml baked into distributed-arithmetic code, as handed to it (quantized)."""
    missing = [row["name"] for row in manifest_layers if row["weight_file"] is None]
    if not missing:
        return {}
    kernels = quantized_kernels(qmodel)
    return {name: kernels[name] for name in missing}


def _kernel(layer):
    """The Keras weight hls4ml exports as a layer's "weight" (None for layers without one)."""
    return next((k for k in (getattr(layer, name, None) for name in KERNEL_NAMES) if k is not None), None)


def _masked_weights(pruned, kernel) -> int:
    if pruned is None or kernel is None:
        return 0
    return int(pruned.sum()) * int(np.prod(kernel.shape[:-2]))


def export_project(
    qmodel: tf.keras.Model,
    cfg: Config,
    backend: str,
    x_tb: np.ndarray,
    *,
    force: bool = False,
    source: str = "",
    unreduced: dict[str, list[int]] | None = None,
    say=None,
) -> Path:
    """Write the HLS project for `backend` atomically; return its folder."""
    from hls4ml.utils.serialization import serialize_model

    ecfg = cfg.export
    check_export_config(ecfg)
    final = project_dir(cfg, backend)
    masks = masks_of(qmodel)
    model = logits_model(strip_masks(qmodel))
    y_tb = model.predict(x_tb, verbose=0, batch_size=256)
    with atomic_dir(final, force=force) as tmp, scratch_dir("export") as scratch:
        x_file, y_file = Path(scratch) / "x_tb.npy", Path(scratch) / "y_tb.npy"
        np.save(x_file, np.asarray(x_tb, np.float32))
        np.save(y_file, np.asarray(y_tb, np.float32))
        hls_model, choices = convert(model, ecfg, backend, tmp, x_file, y_file, say=say)
        write_project(hls_model)
        hls_model.config.config["InputData"] = None  # the .dat files are in tb_data/ already
        hls_model.config.config["OutputPredictions"] = None
        serialize_model(hls_model, tmp / HLS_MODEL)
        _fix_output_dir(tmp, final)
        manifest = {
            "backend": backend,
            "project_name": ecfg.project_name,
            "part": hls_model.config.get_config_value("Part"),
            "board": ecfg.board if backend == "VivadoAccelerator" else None,
            "clock_period": ecfg.clock_period,
            "io_type": ecfg.io_type,
            "maximum_size": hls_model.config.get_config_value("MaximumSize"),
            "export_config": asdict(ecfg),
            "source": source,
            "hls4ml_version": hls4ml_version(),
            "testbench_images": int(len(x_tb)),
            "output_precision": str(hls_model.get_output_variables()[0].type.precision),
            "layers": layer_manifest(hls_model, qmodel, masks, choices, unreduced),
        }
        embedded = da_embedded_weights(manifest["layers"], qmodel)
        if embedded:
            np.savez(tmp / DA_WEIGHTS, **embedded)
        write_json(tmp / MANIFEST, manifest)
    return final


def _fix_output_dir(tmp: Path, final: Path) -> None:
    """hls4ml records its output folder in hls4ml_config.yml: point it at the final one."""
    config_file = tmp / "hls4ml_config.yml"
    if config_file.is_file():
        config_file.write_text(config_file.read_text().replace(str(tmp), str(final.resolve())))


def read_manifest(folder: Path) -> dict:
    """The manifest of an exported project; a folder without one is a BadInput."""
    if not (folder / MANIFEST).is_file():
        raise BadInput(f"{folder}: not an fpgaprune HLS project (no {MANIFEST}); {run_step('export')}")
    return read_json(folder / MANIFEST)


def same_settings(folder: Path, ecfg: ExportConfig) -> bool:
    """Whether an existing project was exported with these export settings."""
    saved = read_manifest(folder).get("export_config", {})
    current = json.loads(json.dumps(asdict(ecfg)))
    ignore = ("csim_images", "csim_workers", "csim_build", "output_dir")
    return {k: v for k, v in saved.items() if k not in ignore} == {k: v for k, v in current.items() if k not in ignore}
