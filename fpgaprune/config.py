"""The run configuration: one YAML file, validated once into typed dataclasses.

`load_config(path)` is the only place YAML is read; every stage takes the typed object.
Each section's fields carry a comment saying what they control.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import yaml

from .errors import BadInput
from .schema import from_dict, rule, to_dict

Optimizer = Literal["sgd", "adam", "rmsprop"]


@dataclass
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


@dataclass
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

    def validate(self, path: str) -> None:
        if not self.conv_filters:
            raise BadInput(f"{path}.conv_filters: needs at least one conv layer")
        if len(self.input_shape) != 3:
            raise BadInput(f"{path}.input_shape: expected [height, width, channels], got {self.input_shape}")
        if not (self.source == "reference" or self.source.startswith(("file:", "python:"))):
            raise BadInput(
                f"{path}.source: {self.source!r} is not 'reference', 'file:PATH' or 'python:module:function'"
            )


@dataclass
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


@dataclass
class PruneConfig:
    # Conv layers the analyzer may prune (null = every Conv2D / QConv2D layer).
    layers: list[str] | None = None
    # Kernel magnitude: l1 = sum |w|, l2 = sqrt(sum w^2), max = max |w| over the kh x kw kernel.
    norm: Literal["l1", "l2", "max"] = "l1"
    # Divide each layer's magnitudes by the layer's mean, so one threshold fits all layers.
    normalize: bool = False
    # How kernels are chosen: threshold (magnitude below `threshold`), fraction (of each
    # layer), global_fraction (of all kernels together), spec (the mask spec file `spec`).
    select: Literal["threshold", "fraction", "global_fraction", "spec"] = "fraction"
    threshold: float | None = rule(None, min=0.0)
    fraction: float = rule(0.5, min=0.0, max=1.0)
    spec: str | None = None
    # oneshot: prune once, retrain; gradual: raise the fraction step by step while accuracy
    # stays within max_accuracy_drop of the baseline, keeping the last model within budget.
    mode: Literal["oneshot", "gradual"] = "gradual"
    step: float = rule(0.1, min=0.01, max=1.0)
    max_fraction: float = rule(0.95, min=0.0, max=1.0)
    max_accuracy_drop: float = rule(0.005, min=0.0, max=1.0)
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


@dataclass
class TransferConfig:
    # Which saved stage to start from.
    start_from: Literal["baseline", "pruned"] = "pruned"
    # Train the last N Dense layers (1 or 2) ...
    train_last: int = rule(1, min=1, max=2)
    # ... or every layer above this one (overrides train_last).
    above: str | None = None
    # Run the frozen part once and train the head on cached features.
    cache_features: bool = True
    # New number of classes: replaces the output layer (null = keep the head).
    new_classes: int | None = rule(None, min=2)
    # Insert an identity-initialised Dense layer before the output layer.
    insert_identity: bool = False
    # Unfreeze this many frozen layers (top first) after the head has converged.
    unfreeze: int = rule(0, min=0, max=8)
    epochs: int = rule(10, min=1, max=10000)
    optimizer: Optimizer | None = None
    learning_rate: float | None = rule(None, min=1e-7, max=10.0)


@dataclass
class LayerBits:
    bits: int = rule(8, min=2, max=32)
    integer: int = rule(0, min=0, max=31)


@dataclass
class QuantizeConfig:
    # Bits of weights/biases (integer bits excluding sign) for every QConv2D / QDense.
    weight_bits: int = rule(8, min=2, max=32)
    weight_integer: int = rule(0, min=0, max=31)
    # Bits of the activations (ReLU outputs) and the input quantizer.
    activation_bits: int = rule(8, min=2, max=32)
    activation_integer: int = rule(3, min=0, max=31)
    input_bits: int = rule(8, min=2, max=32)
    input_integer: int = rule(1, min=0, max=31)
    # Per-layer overrides of the weight bits, e.g. {conv2: {bits: 6, integer: 0}}.
    layers: dict[str, LayerBits] = field(default_factory=dict)
    # Quantization-aware fine-tuning (masks still enforced).
    epochs: int = rule(3, min=0, max=10000)
    learning_rate: float | None = rule(None, min=1e-7, max=10.0)


@dataclass
class ExportConfig:
    backends: list[Literal["Vivado", "Vitis"]] = field(default_factory=lambda: ["Vivado"])
    # FPGA part (default: the Zynq UltraScale+ of the ZCU102, a mid-size device).
    part: str = "xczu9eg-ffvb1156-2-e"
    # With a board (e.g. pynq-z2, zcu102) the VivadoAccelerator flow is used toward a bitstream.
    board: str | None = None
    clock_period: float = rule(5.0, min=0.5, max=100.0)
    io_type: Literal["io_stream", "io_parallel"] = "io_stream"
    strategy: Literal["Latency", "Resource"] = "Latency"
    reuse_factor: int = rule(1, min=1, max=65536)
    # Per-layer overrides, e.g. {fc1: 4}.
    layer_reuse: dict[str, int] = field(default_factory=dict)
    layer_strategy: dict[str, str] = field(default_factory=dict)
    # Where projects go: <output_dir>/<name>/<backend>/.
    output_dir: str = "hls_projects"
    # Images run through C-simulation (null = the whole test split).
    csim_images: int | None = rule(None, min=1)


@dataclass
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
    # Directory that holds runs/<name>/.
    runs_dir: str = "runs"

    def validate(self, path: str) -> None:
        if not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith("."):
            raise BadInput(f"name: {self.name!r} must use only letters, digits, '-', '_' and '.'")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def parse_config(data: object) -> Config:
    """Validate already-parsed YAML data into a Config."""
    return from_dict(Config, data)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; a bad file raises BadInput naming the key path."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
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


def with_overrides(cfg: Config, **sections) -> Config:
    """A copy of `cfg` with whole sections or top-level fields replaced."""
    return replace(cfg, **sections)
