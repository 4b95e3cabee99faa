"""A run's folder: `runs/<name>/<stage>/` holds each stage's model, summary and extras.

Stages are saved whole or not at all (built in a temporary folder, then renamed), so a run can
always restart from its last complete stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import tensorflow as tf
import yaml

from .config import Config, config_to_dict
from .data import Dataset, load_dataset
from .errors import BadInput
from .io import atomic_dir, read_json, write_json
from .models import MODEL_FILE, load_saved_model, save_model

SUMMARY_FILE = "summary.json"


def stage_dir(cfg: Config, stage: str) -> Path:
    return cfg.run_dir / stage


def checkpoint_dir(cfg: Config, stage: str) -> Path:
    """Where a training stage keeps its per-epoch checkpoints until the stage is saved."""
    return cfg.run_dir / ".checkpoints" / stage


def has_stage(cfg: Config, stage: str) -> bool:
    folder = stage_dir(cfg, stage)
    return (folder / MODEL_FILE).is_file() and (folder / SUMMARY_FILE).is_file()


def save_stage(
    cfg: Config,
    stage: str,
    model: tf.keras.Model | None,
    summary: dict,
    *,
    force: bool = False,
    extras: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write model, summary.json, config.yaml and `extras` (name -> writer(path)) atomically."""
    folder = stage_dir(cfg, stage)
    with atomic_dir(folder, force=force) as tmp:
        if model is not None:
            save_model(model, tmp / MODEL_FILE)
        (tmp / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        for name, writer in (extras or {}).items():
            writer(tmp / name)
        write_json(tmp / SUMMARY_FILE, summary)
    return folder


def load_stage(cfg: Config, stage: str) -> tuple[tf.keras.Model, dict]:
    """The model and summary a stage saved; a missing stage says which command makes it."""
    folder = stage_dir(cfg, stage)
    if not has_stage(cfg, stage):
        maker = {"baseline": "train", "pruned": "prune", "quantized": "quantize", "transfer": "transfer"}
        hint = f"; run `fpgaprune {maker[stage]} --config ...` first" if stage in maker else ""
        raise BadInput(f"{folder}: no saved {stage} stage{hint}")
    return load_saved_model(folder), read_json(folder / SUMMARY_FILE)


def load_data(cfg: Config, test: str | None = None) -> Dataset:
    """The config's dataset, with `test` (e.g. from --test-data) overriding data.test."""
    d = cfg.data
    return load_dataset(
        d.dataset,
        validation_fraction=d.validation_fraction,
        seed=cfg.seed,
        limit=d.limit,
        test=test or d.test,
    )
