"""The hardware sections of the run configuration: quantize (QKeras bits) and export (hls4ml).

Split from `config.py` (the training sections and the loader), which re-exports them; every
field carries a comment saying what it controls, as there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import BadInput
from .schema import rule


@dataclass(frozen=True)
class LayerBits:
    # Total bits (sign included for weights) and integer bits (sign excluded) of one layer's
    # quantizer: the weights of a Conv2D/Dense layer, or the output of an activation layer.
    bits: int = rule(8, min=2, max=32)
    # null = the section's weight_integer / activation_integer, and where that is null too, the
    # fewest that clip nothing: from the layer's weights, or an activation's calibration outputs.
    integer: int | None = rule(None, min=0, max=31)

    def validate(self, path: str) -> None:
        if self.integer is not None and self.integer > self.bits:
            raise BadInput(f"{path}.integer: {self.integer} integer bits do not fit in {self.bits} bits")


@dataclass(frozen=True)
class QuantizeConfig:
    # Which saved stage to quantize: reduced (the pruned model, dead channels removed: the default),
    # pruned (as it is),
    # baseline or transfer.
    start_from: Literal["pruned", "reduced", "baseline", "transfer"] = "reduced"
    # Weights of every QConv2D / QDense: quantized_bits(bits, integer, alpha=1), i.e. ap_fixed
    # <bits, integer + 1>: `bits` includes the sign, `integer` excludes it (QKeras convention).
    weight_bits: int = rule(8, min=2, max=32)
    # null = chosen per layer from its weights: the fewest integer bits that clip no weight
    # (at most weight_bits - 1). A number is kept as set; weights it clips are counted and
    # reported (summary "ranges", one warning line per layer).
    weight_integer: int | None = rule(None, min=0, max=31)
    # Biases (added to the wide accumulator, so more bits cost little).
    bias_bits: int = rule(16, min=2, max=32)
    bias_integer: int = rule(5, min=0, max=31)
    # Outputs of the ReLU activations: quantized_relu(bits, integer) = ap_ufixed<bits, integer>.
    activation_bits: int = rule(8, min=2, max=32)
    # null = chosen per activation from its largest output on `calibration_images` training
    # images (at most activation_bits); a number is kept as set, its clipping reported.
    activation_integer: int | None = rule(None, min=0, max=31)
    # Training images the activation ranges are measured on (the first N of the shuffled split).
    calibration_images: int = rule(256, min=1, max=100000)
    # The input quantizer that heads the model (hls4ml needs one for a bit-exact design):
    # quantized_bits(bits, integer) = ap_fixed<bits, integer + 1>; 8, 0 covers [-1, 1).
    input_bits: int = rule(8, min=2, max=32)
    input_integer: int = rule(0, min=0, max=31)
    # Per-layer overrides by layer name: a conv/dense layer's weights, or an activation
    # layer's output, e.g. {conv1: {bits: 8}, conv2: {bits: 6}, fc1: {bits: 4}, relu2: {bits: 6, integer: 2}}.
    layers: dict[str, LayerBits] = field(default_factory=dict)
    # Quantization-aware fine-tuning epochs (masks still enforced); 0 = quantize only.
    epochs: int = rule(3, min=0, max=10000)
    # Fine-tuning learning rate (null = a tenth of the train section's).
    learning_rate: float | None = rule(None, min=1e-7, max=10.0)

    def validate(self, path: str) -> None:
        signed = {"weight": (self.weight_bits, self.weight_integer), "bias": (self.bias_bits, self.bias_integer),
                  "input": (self.input_bits, self.input_integer)}
        for what, (bits, integer) in signed.items():
            if integer is not None and integer > bits - 1:
                raise BadInput(
                    f"{path}.{what}_integer: {integer} integer bits plus the sign do not fit in {what}_bits {bits}"
                )
        if self.activation_integer is not None and self.activation_integer > self.activation_bits:
            raise BadInput(
                f"{path}.activation_integer: {self.activation_integer} integer bits do not fit in "
                f"activation_bits {self.activation_bits}"
            )


# Where zero weights pay: Latency at reuse factor 1 (the HLS compiler drops constant-zero
# products), Resource_Unrolled (hls4ml drops all-zero multiplier slots) and
# distributed_arithmetic (da4ml builds the constant product as an adder graph, zeros left
# out; reuse factor 1, Conv/Dense only). auto: per layer, the cheapest of these hls4ml accepts
# within max_reuse_factor, by the accounting's cost models.
Strategy = Literal["Latency", "Resource", "Resource_Unrolled", "distributed_arithmetic", "auto"]


@dataclass(frozen=True)
class ExportConfig:
    # hls4ml backends to write a project for: hls_projects/<name>/<backend>/.
    backends: list[Literal["Vivado", "Vitis"]] = field(default_factory=lambda: ["Vivado"])
    # FPGA part (default: the Zynq UltraScale+ of the ZCU102, a mid-size device).
    part: str = "xczu9eg-ffvb1156-2-e"
    # With a board (one of hls4ml's supported_boards.json, e.g. pynq-z2, zcu102) the Vivado
    # project uses hls4ml's VivadoAccelerator backend (board flow toward a bitstream) and the
    # board's part; the project goes to <name>/VivadoAccelerator/.
    board: str | None = None
    # Clock period in ns.
    clock_period: float = rule(5.0, min=0.5, max=100.0)
    # io_stream for CNNs (line-buffer convolutions); io_parallel for small dense models.
    io_type: Literal["io_stream", "io_parallel"] = "io_stream"
    strategy: Strategy = "Latency"
    reuse_factor: int = rule(1, min=1, max=65536)
    # Per-layer overrides, e.g. {fc1: 8} and {fc1: Resource}.
    layer_reuse: dict[str, int] = field(default_factory=dict)
    layer_strategy: dict[str, Strategy] = field(default_factory=dict)
    # Merged last into hls4ml's own config, written as hls4ml users write it: {Model: {...},
    # LayerName: {fc1: {ReuseFactor: 8, Precision: {result: ...}}, ...}}. Any hls4ml key passes
    # through (ParallelizationFactor, Trace, ...); layer names are checked against the model.
    # Not Precision: the bit-exact flow derives it from the quantizers (quantize.layers sets them).
    hls_config: dict[str, Any] = field(default_factory=dict)
    # The HLS top function and file names (firmware/<project_name>.cpp); a C identifier.
    project_name: str = "myproject"
    # Throughput target for auto: it may share a multiplier among up to this many products
    # (reuse factor); 1 = full throughput, every layer a new result each clock.
    max_reuse_factor: int = rule(1, min=1, max=65536)
    # Largest array the HLS compiler partitions completely (config_array_partition
    # -maximum_size); null = the largest Latency-strategy weight array, at least 4096.
    maximum_size: int | None = rule(None, min=1)
    # Where projects go: <output_dir>/<name>/<backend>/.
    output_dir: str = "hls_projects"
    # Test-bench images written into the project (tb_data/) for the vendor's own csim.
    testbench_images: int = rule(100, min=1, max=100000)
    # Images run through C-simulation (null = the whole test split, else validation split).
    csim_images: int | None = rule(None, min=1)
    # Processes running the compiled C-simulation in parallel (null = one per CPU core).
    csim_workers: int | None = rule(None, min=1, max=256)
    # How the C-simulation library is compiled: fast (the scratch copy's fixed-point library made
    # register-friendly and -march=native: ~10x faster, outputs identical) or hls4ml (its own build).
    csim_build: Literal["fast", "hls4ml"] = "fast"

    def validate(self, path: str) -> None:
        if not self.backends:
            raise BadInput(f"{path}.backends: needs at least one of Vivado, Vitis")
        if len(set(self.backends)) != len(self.backends):
            raise BadInput(f"{path}.backends: {self.backends} lists a backend twice")
        if not _XILINX_PART.match(self.part):
            raise BadInput(
                f"{path}.part: {self.part!r} is not a Xilinx part name the Vivado/Vitis backends can "
                "target (e.g. xczu9eg-ffvb1156-2-e, xc7z020clg400-1, xcvu13p-flga2577-2-e)"
            )
        for name, value in self.layer_reuse.items():
            if value < 1:
                raise BadInput(f"{path}.layer_reuse.{name}: reuse factor must be >= 1, got {value}")
        if self.strategy == "distributed_arithmetic" and self.reuse_factor != 1:
            raise BadInput(f"{path}.reuse_factor: distributed_arithmetic is built only at reuse factor 1, "
                           f"got {self.reuse_factor}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.project_name):
            raise BadInput(f"{path}.project_name: {self.project_name!r} is not a C identifier (letters, digits, _)")
        for key, value in self.hls_config.items():
            if key in HLS_CONFIG_OWNED:
                raise BadInput(f"{path}.hls_config.{key}: set by {HLS_CONFIG_OWNED[key]}")
            if key not in HLS_CONFIG_KEYS:
                raise BadInput(f"{path}.hls_config.{key}: not an hls4ml config key fpgaprune passes on; "
                               f"valid keys here: {', '.join(HLS_CONFIG_KEYS)}")
            if key != "ClockUncertainty" and not isinstance(value, dict):
                raise BadInput(f"{path}.hls_config.{key}: expected a mapping, got {value!r}")
        for name, value in self.hls_config.get("LayerName", {}).items():
            if not isinstance(value, dict):
                raise BadInput(f"{path}.hls_config.LayerName.{name}: expected a mapping of hls4ml keys, got {value!r}")
        places = [("Model", self.hls_config.get("Model", {}))]
        places += [(f"LayerName.{n}", v) for n, v in self.hls_config.get("LayerName", {}).items()]
        for where, entry in places:
            if "Precision" in entry:
                raise BadInput(
                    f"{path}.hls_config.{where}.Precision: hls4ml's bit-exact flow derives every precision from "
                    "the QKeras quantizers and would replace it; set quantize.layers.NAME (bits, integer) instead"
                )


# The keys of hls4ml's config an export may set: Model and LayerName go into its HLSConfig, the
# others are top-level project settings (ClockUncertainty "12.5%", WriterConfig, and the board
# flow's AcceleratorConfig). Not LayerType: fpgaprune asks hls4ml for a per-name config, where
# a LayerName entry exists for every layer and would shadow it.
HLS_CONFIG_KEYS = ("Model", "LayerName", "ClockUncertainty", "WriterConfig", "AcceleratorConfig")
HLS_CONFIG_OWNED = {"Part": "export.part (or export.board)", "ClockPeriod": "export.clock_period",
                    "IOType": "export.io_type", "ProjectName": "export.project_name",
                    "OutputDir": "export.output_dir", "Backend": "export.backends",
                    "LayerType": "LayerName: give each layer by its name (hls4ml's per-name config)"}


# Xilinx part numbers: xc + device (7z020, zu9eg, vu13p, ku115, u250, vc1902...) + package
# and pin count + speed grade (+ temperature / variant suffixes).
_XILINX_PART = re.compile(r"^xc[0-9a-z]{3,12}-?[a-z]{2,6}[0-9]{2,5}-[0-9][a-z0-9]*(-[a-z0-9]+)*$", re.IGNORECASE)
