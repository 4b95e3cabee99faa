"""The run configuration: one YAML file, validated once into typed dataclasses.

`load_config(path)` is the only place YAML is read; every stage takes the typed object.
Each section's fields carry a comment saying what they control. The sections are frozen, so
a stage cannot change the config another stage reads; an override builds a new one:

    cfg = replace(cfg, train=replace(cfg.train, epochs=2))   # dataclasses.replace
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import BadInput
from .schema import from_dict, rule, to_dict
from .sweep.space import SweepConfig
from .yamlio import DuplicateKey, load_yaml

Optimizer = Literal["sgd", "adam", "rmsprop"]


@dataclass(frozen=True)
class DataConfig:
    # Named dataset: mnist-5k (offline default), mnist (keras, needs network),
    # mnist-t10k:PATH (IDX test set; test split only), npz:PATH (x_train, y_train, x_test, y_test).
    dataset: str = "mnist-5k"
    # Optional second dataset whose test split replaces the first one's (e.g. mnist-t10k:PATH).
    test: str | None = None
    # Fraction of the training images held out for validation (deterministic split).
    validation_fraction: float = rule(0.1, min=0.01, max=0.5)
    # Use at most this many training images (quick runs, tests); null = all.
    limit: int | None = rule(None, min=10)


@dataclass(frozen=True)
class ModelConfig:
    # reference (built from the fields below), file:PATH (.h5, .keras or SavedModel dir),
    # or python:package.module:function (a function returning a Keras model).
    source: str = "reference"
    # Filters of each conv layer (conv1, conv2, ...), each followed by ReLU and 2x2 max-pool.
    conv_filters: list[int] = rule([32, 32], min=1, max=1024)
    kernel_size: int = rule(3, min=1, max=11)
    # Units of the hidden fully connected layer fc1 (0 = no hidden layer).
    fc_units: int = rule(32, min=0, max=4096)
    dropout: float = rule(0.25, min=0.0, max=0.9)
    input_shape: list[int] = rule([28, 28, 1], min=1)
    num_classes: int = rule(10, min=2)
    # Loading Lambda layers or custom classes can run arbitrary code: refused unless true.
    allow_custom_code: bool = False
    # Train the baseline from the train section (true), or keep the weights the model brings and
    # only evaluate them (false). null = true for the reference CNN, false for file: and python:.
    retrain: bool | None = None

    @property
    def retrains(self) -> bool:
        return self.retrain if self.retrain is not None else self.source == "reference"

    def validate(self, path: str) -> None:
        if self.retrain is False and self.source == "reference":
            raise BadInput(f"{path}.retrain: the reference CNN has no trained weights to keep; leave retrain on")
        if not self.conv_filters:
            raise BadInput(f"{path}.conv_filters: needs at least one conv layer")
        if len(self.input_shape) != 3:
            raise BadInput(f"{path}.input_shape: expected [height, width, channels], got {self.input_shape}")
        if not (self.source == "reference" or self.source.startswith(("file:", "python:"))):
            raise BadInput(
                f"{path}.source: {self.source!r} is not 'reference', 'file:PATH' or 'python:module:function'"
            )


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Optimizer = "adam"
    learning_rate: float = rule(0.001, min=1e-7, max=10.0)
    # Momentum for sgd and rmsprop; nesterov applies to sgd.
    momentum: float = rule(0.0, min=0.0, max=0.999)
    nesterov: bool = False
    batch_size: int = rule(64, min=1, max=65536)
    epochs: int = rule(10, min=1, max=10000)
    # Stop when validation accuracy has not improved for this many epochs (null = never).
    early_stopping_patience: int | None = rule(None, min=1)

    def validate(self, path: str) -> None:
        if self.nesterov and self.optimizer != "sgd":
            raise BadInput(f"{path}.nesterov: only applies to optimizer 'sgd', not {self.optimizer!r}")
        if self.nesterov and self.momentum == 0.0:
            raise BadInput(f"{path}.nesterov: needs momentum > 0")


@dataclass(frozen=True)
class PruneConfig:
    # Layers to prune (null = every Conv2D / QConv2D / SeparableConv2D layer). A Dense / QDense
    # layer is pruned only when named here (e.g. [conv2, fc1]), weight by weight: its mask is
    # element-wise over the kernel [in, out], with the same selection, schedule and budget.
    layers: list[str] | None = None
    # Kernel magnitude: l1 = sum |w|, l2 = sqrt(sum w^2), max = max |w| over the kh x kw kernel
    # (a Dense weight's magnitude is |w| under every norm).
    norm: Literal["l1", "l2", "max"] = "l1"
    # Divide each layer's magnitudes by the layer's mean, so one threshold fits all layers.
    normalize: bool = False
    # How kernels are chosen: threshold (magnitude below `threshold`), fraction (of each
    # layer), global_fraction (of all kernels together; with Dense layers among conv layers,
    # each unit relative to its layer's mean magnitude), spec (the mask spec file `spec`).
    select: Literal["threshold", "fraction", "global_fraction", "spec"] = "fraction"
    threshold: float | None = rule(None, min=0.0)
    # Fraction of kernels pruned by select fraction / global_fraction (oneshot mode, analyze).
    fraction: float = rule(0.5, min=0.0, max=1.0)
    # Mask spec (YAML, or an .npz of boolean masks) for select: spec.
    spec: str | None = None
    # oneshot: prune once, retrain; gradual: raise the fraction step by step while accuracy
    # stays within max_accuracy_drop of the baseline, keeping the last model within budget.
    mode: Literal["oneshot", "gradual"] = "gradual"
    # Gradual fractions: `schedule` if set (increasing), else step, 2*step, ... max_fraction.
    schedule: list[float] | None = rule(None, min=0.0, max=1.0)
    step: float = rule(0.1, min=0.01, max=1.0)
    max_fraction: float = rule(0.95, min=0.0, max=1.0)
    # Gradual mode's budget: shared (all layers step to the same fraction together and stop
    # together) or per_layer (one layer steps per round, the one whose next step removes the most
    # weights x bits; a layer over budget stays at its last fraction within it while the others
    # go on, so conv2 can reach 98% beside fc1's 90%). Same result as shared for one layer.
    budget: Literal["shared", "per_layer"] = "shared"
    # per_layer: a layer's own fractions instead of the shared schedule, e.g. {fc1: [0.5, 0.8, 0.9]}.
    layer_schedule: dict[str, list[float]] | None = None
    # Allowed drop of VALIDATION accuracy below the baseline's (0.005 = half a point).
    max_accuracy_drop: float = rule(0.005, min=0.0, max=1.0)
    # Gradual rounds over budget tolerated in a row before stopping (later, longer-retrained
    # rounds may recover); the model kept is always the last one within budget.
    patience: int = rule(1, min=0, max=100)
    # Retraining after each pruning step (optimizer etc. default to the train section's).
    epochs: int = rule(3, min=0, max=10000)
    optimizer: Optimizer | None = None
    learning_rate: float | None = rule(None, min=1e-7, max=10.0)
    # Also zero (and lock) the bias of a fully pruned output channel.
    prune_bias: bool = False

    def validate(self, path: str) -> None:
        if self.select == "threshold" and self.threshold is None:
            raise BadInput(f"{path}.threshold: select is 'threshold' but no threshold is set")
        if self.select == "spec" and self.spec is None:
            raise BadInput(f"{path}.spec: select is 'spec' but no mask spec file is set")
        if self.mode == "gradual" and self.select not in ("fraction", "global_fraction"):
            raise BadInput(
                f"{path}.mode: gradual pruning raises a fraction, so select must be 'fraction' or "
                f"'global_fraction', not {self.select!r} (or use mode: oneshot)"
            )
        schedules = {"schedule": self.schedule,
                     **{f"layer_schedule.{k}": v for k, v in (self.layer_schedule or {}).items()}}
        for key, fractions in schedules.items():
            if fractions is None:
                continue
            if not fractions or any(b <= a for a, b in zip(fractions, fractions[1:], strict=False)) or any(
                    not 0.0 <= f <= 1.0 for f in fractions):
                raise BadInput(f"{path}.{key}: expected increasing fractions between 0 and 1, e.g. [0.5, 0.7, 0.8], "
                               f"got {fractions}")
        if self.layer_schedule and self.budget != "per_layer":
            raise BadInput(f"{path}.layer_schedule: a schedule per layer needs {path}.budget: per_layer")


@dataclass(frozen=True)
class TransferConfig:
    # Which saved stage to start from (runs/<name>/<start_from>/).
    start_from: Literal["baseline", "pruned"] = "pruned"
    # The new task's dataset (null = the data section's); images must match the model's input.
    dataset: str | None = None
    # Keep only these labels, renumbered 0..k-1 in the order given (null = all labels).
    classes: list[int] | None = rule(None, min=0)
    # At most this many labelled training images per class (null = all).
    per_class: int | None = rule(None, min=1)
    # Train the last N Dense layers (1 or 2) ...
    train_last: int = rule(1, min=1, max=2)
    # ... or every layer with weights above this one (overrides train_last).
    above: str | None = None
    # Head replacement: drop the top `replace_top` Dense layers (and what follows them) and put
    # a new Dense output layer with `new_classes` outputs + softmax there, or the layers of the
    # Keras model file `head` (its input must match the tensor it replaces).
    new_classes: int | None = rule(None, min=2)
    head: str | None = None
    replace_top: int = rule(1, min=1, max=8)
    # Insert a Dense layer initialised to the identity (zero bias) before the output layer, and
    # a per-channel scale initialised to ones after each listed conv layer: predictions stay
    # unchanged until they train. New and inserted layers always train.
    insert_identity: bool = False
    insert_scale: list[str] = field(default_factory=list)
    # Train only the inserted layers (everything else frozen).
    train_inserted_only: bool = False
    # Run the frozen part once and train the head on its cached outputs (falls back to the
    # uncached path, saying why in the summary, when a layer below the cut is random in training).
    cache_features: bool = True
    # Caches above this many MiB go to a memory-mapped .npy in cache_dir (null = the system
    # temp folder), deleted after training.
    cache_memory_mb: int = rule(1024, min=0)
    cache_dir: str | None = None
    # Head training (optimizer, learning rate default to the train section's; batch size,
    # early stopping too).
    epochs: int = rule(10, min=1, max=10000)
    optimizer: Optimizer | None = None
    learning_rate: float | None = rule(None, min=1e-7, max=10.0)
    # Gradual unfreezing: after the head has trained, also train the top `unfreeze` frozen
    # layers with weights for unfreeze_epochs at unfreeze_learning_rate (null = rate / 10).
    # Masks stay enforced (masked optimizer and KernelMask constraints).
    unfreeze: int = rule(0, min=0, max=8)
    unfreeze_epochs: int = rule(5, min=1, max=10000)
    unfreeze_learning_rate: float | None = rule(None, min=1e-7, max=10.0)
    # Compile each head epoch into one XLA computation (the fixed costs of a Keras step would
    # otherwise dominate an epoch of a small head). Falls back to graph mode, saying why in the
    # summary, where XLA cannot compile the step (e.g. unfrozen conv + pooling layers).
    jit_compile: bool = True

    def validate(self, path: str) -> None:
        if self.new_classes is not None and self.head is not None:
            raise BadInput(f"{path}: set new_classes or head, not both")
        if self.train_inserted_only and not (self.insert_identity or self.insert_scale):
            raise BadInput(f"{path}.train_inserted_only: nothing is inserted (set insert_identity or insert_scale)")


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


@dataclass(frozen=True)
class Config:
    # Run name: outputs go to runs/<name>/.
    name: str = "mnist_cnn"
    seed: int = rule(1, min=0)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    # The design-space search of `fpgaprune sweep` (fpgaprune/sweep/space.py); unused otherwise.
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Directory that holds runs/<name>/.
    runs_dir: str = "runs"

    def validate(self, path: str) -> None:
        if not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith("."):
            raise BadInput(f"name: {self.name!r} must use only letters, digits, '-', '_' and '.'")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


# The reference config ships inside the package, so it is the same experiment wherever a
# command runs; `fpgaprune init` writes a copy to edit.
REFERENCE_CONFIG = Path(__file__).parent / "configs" / "mnist_cnn.yaml"


def reference_config() -> Config:
    """The packaged reference config (configs/mnist_cnn.yaml in the repository is the same file)."""
    return load_config(REFERENCE_CONFIG)


def parse_config(data: object) -> Config:
    """Validate already-parsed YAML data into a Config."""
    return from_dict(Config, data)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; a bad file raises BadInput naming the key path."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"config {path}: no such file")
    try:
        data = load_yaml(path.read_text())
    except DuplicateKey as exc:
        raise BadInput(f"config {path}: {exc.problem} (YAML would keep only the last; remove one)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise BadInput(f"config {path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise BadInput(f"config {path}: not a text file") from None
    if data is None:
        raise BadInput(f"config {path}: the file is empty")
    try:
        return parse_config(data)
    except BadInput as exc:
        raise BadInput(f"config {path}: {exc}") from None


def config_to_dict(cfg: Config) -> dict:
    return to_dict(cfg)
