"""A run: `runs/<name>/` and its HLS projects, with every folder and artifact name in one place.

Each stage saves into `runs/<name>/<stage>/` (model, summary, config and extras), built in a
temporary folder and renamed when complete, so a run can always restart from its last complete
stage. Nothing outside this module spells an artifact's name.

    run = Run(cfg)
    model, summary = run.load("pruned")
    run.project_dir("Vivado") / CSIM_SUMMARY
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import Config, config_to_dict
from .errors import BadInput, option, run_step
from .io import atomic_dir, read_json, write_json

# A stage folder's files.
MODEL_FILE = "model.h5"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
MASKS_FILE = "masks.npz"
MASK_SPEC_FILE = "mask_spec.yaml"
KERNELS_CSV = "kernels.csv"
KERNELS_JSON = "kernels.json"
RANKED_NORMS_FILE = "ranked_norms.npz"  # pruned stage: the magnitudes that chose its masks, per conv layer
PRETRAINED_FILE = "pretrained.h5"
# A run folder's own files and folders.
CHECKPOINTS_DIR = ".checkpoints"
FLOW_FILE = "flow.json"
REPORT_DIR = "report"
REPORT_PAGE = "index.html"
# An HLS project's files (hls_projects/<name>/<backend>/).
MANIFEST = "fpgaprune.json"
HLS_MODEL = "model.fml"
CSIM_SUMMARY = "summary.json"
ACCOUNTING_FILE = "accounting.json"
SYNTH_REPORT = "synth_report.json"

# Saved stages, in pipeline order: folder name -> the flow step that makes it.
STAGES = {
    "baseline": "baseline",
    "analysis": "analyze",
    "pruned": "prune",
    "reduced": "reduce",
    "transfer": "transfer",
    "quantized": "quantize",
    "transfer-demo": "transfer-demo",
}


@dataclass(frozen=True)
class Run:
    """The folders of one run (its config's `runs_dir/name` and `export.output_dir/name`)."""

    cfg: Config
    # Datasets loaded through this run, by test-data override: one flow reads its data once.
    _data: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def root(self) -> Path:
        return self.cfg.run_dir

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def checkpoint_dir(self, stage: str) -> Path:
        """Where a training stage keeps its per-epoch checkpoints until the stage is saved."""
        return self.root / CHECKPOINTS_DIR / stage

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def projects_root(self) -> Path:
        return Path(self.cfg.export.output_dir) / self.cfg.name

    def project_dir(self, backend: str) -> Path:
        return self.projects_root / backend

    def has(self, stage: str) -> bool:
        folder = self.stage_dir(stage)
        return (folder / MODEL_FILE).is_file() and (folder / SUMMARY_FILE).is_file()

    def is_older(self, stage: str, than: str) -> bool:
        """Whether `stage` was saved before `than` (both saved): it was made from an out-of-date source."""
        return written_before(self.stage_dir(stage) / SUMMARY_FILE, self.stage_dir(than) / SUMMARY_FILE)

    def summary(self, stage: str) -> dict | None:
        """A stage's summary.json, or None when the stage has not been run."""
        path = self.stage_dir(stage) / SUMMARY_FILE
        return read_json(path) if path.is_file() else None

    def load(self, stage: str):
        """The model and summary a stage saved; a missing stage says which step makes it."""
        from .models import load_saved_model

        folder = self.stage_dir(stage)
        if not self.has(stage):
            hint = f"; {run_step(STAGES[stage])}" if STAGES.get(stage) in ("baseline", "prune", "reduce",
                                                                          "quantize", "transfer") else ""
            raise BadInput(f"{folder}: no saved {stage} stage{hint}")
        return load_saved_model(folder, self.cfg.model.allow_custom_code), read_json(folder / SUMMARY_FILE)

    def save(
        self,
        stage: str,
        model,
        summary: dict,
        *,
        force: bool = False,
        extras: dict[str, Callable[[Path], None]] | None = None,
    ) -> Path:
        """Write model, summary.json, config.yaml and `extras` (name -> writer(path)) atomically."""
        from .models import save_model

        folder = self.stage_dir(stage)
        with atomic_dir(folder, force=force) as tmp:
            if model is not None:
                save_model(model, tmp / MODEL_FILE)
            (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))
            for name, writer in (extras or {}).items():
                writer(tmp / name)
            write_json(tmp / SUMMARY_FILE, summary)
        return folder

    def load_data(self, test: str | None = None):
        """The config's dataset, with `test` (a second dataset's test split) overriding data.test."""
        from .data import load_dataset

        d = self.cfg.data
        key = test or d.test
        if key not in self._data:
            self._data[key] = load_dataset(d.dataset, validation_fraction=d.validation_fraction,
                                           seed=self.cfg.seed, limit=d.limit, test=key)
        return self._data[key]

    def interrupted(self, stage: str) -> bool:
        """Whether a training stage left checkpoints behind (a stage may keep several folders)."""
        folder = self.checkpoint_dir(stage)
        return folder.is_dir() and any(folder.rglob("state.json"))

    def record_flow(self, record: dict) -> None:
        write_json(self.root / FLOW_FILE, record)


def written_before(path: Path, than: Path) -> bool:
    """Whether file `path` was last written before file `than`, both existing: what `path` was
    made from has changed since. Stage-vs-stage (`Run.is_older`) and project-vs-stage staleness."""
    return path.is_file() and than.is_file() and than.stat().st_mtime > path.stat().st_mtime


def refuse_existing(folder: Path) -> None:
    """BadInput for an output that exists and may not be replaced."""
    raise BadInput(f"{folder} already exists; {option('force')} to replace it")
