"""The run configuration: one YAML file, validated once into typed dataclasses.

`load_config(path)` is the only place YAML is read; every stage takes the typed object.
Each section's fields carry a comment saying what they control. The sections are frozen, so
a stage cannot change the config another stage reads; an override builds a new one:

    cfg = replace(cfg, train=replace(cfg.train, epochs=2))   # dataclasses.replace
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .config_hw import (  # noqa: F401 (re-exported: the hardware sections live in config_hw)
    HLS_CONFIG_KEYS,
    HLS_CONFIG_OWNED,
    ExportConfig,
    LayerBits,
    QuantizeConfig,
    Strategy,
)
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
    # Channel-aware ranking: each kernel's magnitude times (its input and output channels' share
    # of the layer's magnitude)^channel_weight, so kernels in weak channels go first and whole
    # channels empty out for `reduce` to remove (a conv1 filter, fc1's inputs); 0 = magnitude alone.
    channel_weight: float = rule(0.0, min=0.0, max=4.0)
    # Filter-aware ranking: also times the kernel's output channel's share^filter_weight, so whole
    # filters empty first (a filter takes its bias and every input it feeds in the next layer: in
    # the reference net a conv2 filter feeds 800 of fc1's weights); 0 = off. At 16 the weakest
    # filters mostly go whole (at half of conv2, 15 of 32, plus a few tiny kernels of strong ones).
    filter_weight: float = rule(0.0, min=0.0, max=64.0)
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
    # Allowed drop of accuracy below the baseline's (0.005 = half a point), on each budget split.
    max_accuracy_drop: float = rule(0.005, min=0.0, max=1.0)
    # The splits a gradual round must stay within budget on, each against the baseline's own
    # accuracy there. validation is held out but small (500 images move in 0.2-point steps, with
    # ~0.7 points of chance), so a round may pass on luck; training has thousands of images and
    # falls with test accuracy once pruning takes capacity. With both, luck must strike twice.
    budget_splits: list[Literal["validation", "training"]] = field(
        default_factory=lambda: ["validation", "training"])
    # Gradual rounds over budget tolerated in a row before stopping (later, longer-retrained
    # rounds may recover); the model kept is always the last one within budget.
    patience: int = rule(1, min=0, max=100)
    # Retraining after each pruning step (optimizer etc. default to the train section's).
    epochs: int = rule(3, min=0, max=10000)
    optimizer: Optimizer | None = None
    learning_rate: float | None = rule(None, min=1e-7, max=10.0)
    # Also zero (and lock) the bias of a fully pruned output channel.
    prune_bias: bool = False
    # Sparsity terms added to the loss while the pruned layers retrain (0 = off): group_lasso
    # sums each 2-D kernel's L2 norm (whole kernels shrink before the next round prunes them);
    # l1 sums |w| (quantization then zeroes more kept weights). Keras-regularizer strengths, e.g. 1e-5.
    group_lasso: float = rule(0.0, min=0.0, max=1.0)
    l1: float = rule(0.0, min=0.0, max=1.0)

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
        if not self.budget_splits or len(set(self.budget_splits)) != len(self.budget_splits):
            raise BadInput(f"{path}.budget_splits: expected validation, training or both, each once, "
                           f"got {self.budget_splits}")
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
