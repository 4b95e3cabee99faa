"""The `sweep:` section of a config: the search space, the objectives, the budget.

A search space names config keys by their path and gives each a range or a list of choices;
every trial is the config with one value of each applied (and the fixed `trial:` overrides
that make a trial cheap), validated like any config:

    sweep:
      trials: 60
      objectives: [accuracy, lut_equivalents, dsp]
      trial: {prune.mode: oneshot, prune.epochs: 1, quantize.epochs: 1}
      space:
        prune.layer_fraction.conv2: {low: 0.5, high: 0.98}   # this layer's pruned fraction
        quantize.layers.conv2.bits: {low: 3, high: 8}          # an int range
        quantize.layers.relu2.bits: [4, 6, 8]                  # choices
        export.layer_reuse.fc1: [1, 2, 4, 8]
        export.layer_strategy.fc1: [Latency, Resource]

`prune.layer_fraction.LAYER` and `prune.layer_threshold.LAYER` are the sweep's own keys: a
per-layer fraction (or magnitude threshold) of that layer's kernels, turned into a mask file
the trial prunes with (prune.select: spec, one shot). Every other key is a config key.
This module only reads data; it imports neither TensorFlow nor Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import BadInput
from ..schema import rule

Objective = Literal["accuracy", "lut_equivalents", "dsp", "latency"]
Sampler = Literal["tpe", "nsga2", "random"]
# The sweep's own per-layer keys (prune.<kind>.<layer>), turned into masks by the trial.
LAYER_KEYS = ("layer_fraction", "layer_threshold")
Scalar = (bool, int, float, str)


@dataclass(frozen=True)
class SweepConfig:
    # Trials in the study (all workers together); raise it and run again to extend a sweep.
    trials: int = rule(40, min=1, max=100000)
    # What the front trades: accuracy (validation, maximised; test reported), lut_equivalents
    # and dsp (the accounting's totals, minimised), latency (a proxy: the slowest layer's
    # output pixels x reuse factor, in cycles per image; minimised).
    objectives: list[Objective] = field(default_factory=lambda: ["accuracy", "lut_equivalents", "dsp"])
    # Config key path -> {low, high[, step][, log]} or a list of choices (see the module docstring).
    space: dict[str, Any] = field(default_factory=dict)
    # Config key path -> value, fixed in every trial (e.g. fewer epochs than a normal run).
    trial: dict[str, Any] = field(default_factory=dict)
    # Optuna sampler: tpe (multi-objective TPE, good for small budgets), nsga2, random.
    sampler: Sampler = "tpe"
    # Remove dead channels before quantizing (trials quantize the reduced stage).
    reduce: bool = True
    # Pareto candidates C-simulated after the sweep (to confirm they are bit-exact), on
    # csim_images images of the evaluation split.
    csim_front: int = rule(3, min=0, max=1000)
    csim_images: int = rule(200, min=1)
    # Optuna study name (null = the run name).
    study: str | None = None
    # Storage URL (null = SQLite at runs/<name>/sweep/study.db); e.g.
    # postgresql+psycopg2://user@host/db, mysql+pymysql://..., or journal:PATH (a journal file,
    # e.g. on a shared file system). --storage overrides it.
    storage: str | None = None
    # A running trial records a heartbeat this often; one silent for grace_seconds is failed
    # (its worker died) and retried up to max_retry times by another worker.
    heartbeat_seconds: int = rule(10, min=1, max=3600)
    grace_seconds: int = rule(60, min=2, max=86400)
    max_retry: int = rule(3, min=0, max=100)
    # Memory one worker process needs (TensorFlow + a trial); --workers is capped at what the
    # host's available memory holds.
    worker_memory_mb: int = rule(2500, min=100)

    def validate(self, path: str) -> None:
        where = f"{path}." if path else ""
        if self.grace_seconds <= self.heartbeat_seconds:
            raise BadInput(f"{where}grace_seconds: {self.grace_seconds} must exceed heartbeat_seconds "
                           f"{self.heartbeat_seconds}, or live trials would be failed")
        if len(set(self.objectives)) != len(self.objectives):
            raise BadInput(f"{where}objectives: {self.objectives} lists an objective twice")
        parse_space(self.space, f"{where}space")
        for key in self.trial:
            if not isinstance(key, str) or not key:
                raise BadInput(f"{where}trial: {key!r} is not a config key path")
            if key in self.space:
                raise BadInput(f"{where}trial.{key}: is also in {where}space; fix it or search it, not both")


@dataclass(frozen=True)
class Param:
    """One searched key: a float or int range, or a list of choices."""

    key: str  # config key path, e.g. quantize.layers.conv2.bits
    kind: Literal["float", "int", "choice"]
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()

    @property
    def layer_key(self) -> tuple[str, str] | None:
        """(layer_fraction | layer_threshold, layer) for the sweep's own per-layer keys."""
        parts = self.key.split(".")
        if len(parts) == 3 and parts[0] == "prune" and parts[1] in LAYER_KEYS:
            return parts[1], parts[2]
        return None

    def corners(self) -> list:
        """The values that bound this parameter: what a static check tries."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        step = f" step {self.step}" if self.step is not None else ""
        return f"[{self.low}, {self.high}]{step}{' log' if self.log else ''}"


def parse_space(space: dict, path: str = "sweep.space") -> list[Param]:
    """The searched keys, in sorted order (a trial suggests them in that order)."""
    if not isinstance(space, dict):
        raise BadInput(f"{path}: expected a mapping of config keys to ranges or choices")
    return [parse_param(str(key), value, f"{path}.{key}") for key, value in sorted(space.items(), key=str)]


def parse_param(key: str, value: Any, where: str) -> Param:
    if not key or any(not part for part in key.split(".")):
        raise BadInput(f"{where}: not a config key path such as prune.fraction")
    if isinstance(value, list):
        return _choices(key, value, where)
    if isinstance(value, dict):
        return _range(key, value, where)
    raise BadInput(f"{where}: expected {{low: .., high: ..}} or a list of choices, got {value!r}")


def _choices(key: str, value: list, where: str) -> Param:
    if len(value) < 2:
        raise BadInput(f"{where}: {len(value)} choice(s) is nothing to search; list at least two (or fix it in "
                       "sweep.trial)")
    if not all(v is None or isinstance(v, Scalar) for v in value):
        raise BadInput(f"{where}: choices must be numbers, strings, true/false or null, got {value!r}")
    if len({repr(v) for v in value}) != len(value):
        raise BadInput(f"{where}: {value} lists a choice twice")
    return Param(key, "choice", choices=tuple(value))


def _range(key: str, value: dict, where: str) -> Param:
    unknown = sorted(set(value) - {"low", "high", "step", "log"})
    if unknown:
        raise BadInput(f"{where}.{unknown[0]}: unknown key; a range has low, high, step, log")
    if "low" not in value or "high" not in value:
        raise BadInput(f"{where}: a range needs both low and high")
    low, high, step, log = value["low"], value["high"], value.get("step"), value.get("log", False)
    for name, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise BadInput(f"{where}.{name}: expected a number, got {v!r}")
    if not isinstance(log, bool):
        raise BadInput(f"{where}.log: expected true or false, got {log!r}")
    if not low < high:
        raise BadInput(f"{where}: low {low} must be below high {high}")
    if step is not None and (step <= 0 or step > high - low):
        raise BadInput(f"{where}.step: {step} must be positive and at most high - low ({high - low:g})")
    if log and (low <= 0 or step is not None):
        raise BadInput(f"{where}.log: a log range needs low > 0 and no step")
    integer = all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int))
    return Param(key, "int" if integer else "float", low, high, step, log)
