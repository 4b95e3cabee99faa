"""Reading a run for the report: every stage's summary, model, masks and HLS projects, once.

Read-only: a stage that is missing gives None, an unreadable project gives {"error": why},
so the page can still be written and say what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config, load_config
from ..io import read_json
from ..run import (
    ACCOUNTING_FILE,
    CONFIG_FILE,
    CSIM_SUMMARY,
    MANIFEST,
    MASKS_FILE,
    MODEL_FILE,
    RANKED_NORMS_FILE,
    REPORT_PAGE,
    SUMMARY_FILE,
    Run,
    written_before,
)

PAGE = REPORT_PAGE
# Stages of a run folder, in pipeline order, and what each one is.
STAGES = {
    "baseline": "trained from scratch",
    "analysis": "proposed kernels zeroed, no retraining",
    "pruned": "masked retraining, pruned kernels locked at 0.0",
    "reduced": "dead channels and units removed, outputs unchanged",
    "transfer": "top layers retrained on frozen features",
    "quantized": "QKeras fixed point, quantization-aware fine-tuning",
    "transfer-demo": "demo: pretrained on digits 0-4, transferred to 5-9",
}
OPTIONAL_STAGES = ("transfer-demo",)  # listed only when present
# Every section of the page: (html id, heading), results first, the full config last.
SECTIONS = (
    ("stages", "Accuracy at each stage"),
    ("analysis", "Analyzer: kernel magnitudes"),
    ("kernels", "Kernels"),
    ("pruning", "Pruning"),
    ("quantized", "Quantized weights"),
    ("csim", "C-simulation agreement"),
    ("hardware", "Hardware accounting"),
    ("sweep", "Design-space sweep"),
    ("config", "Config"),
)
NOT_RUN = "not run yet"
SMALLEST_ROWS = 20

def report_dir(cfg: Config) -> Path:
    return Run(cfg).report_dir


def stage_summary(cfg: Config, stage: str) -> dict | None:
    """A stage's summary.json, or None when the stage has not been run."""
    return Run(cfg).summary(stage)


def stage_model(cfg: Config, stage: str):
    """A stage's saved model, or None when it has none."""
    from ..models import load_saved_model

    folder = cfg.run_dir / stage
    return load_saved_model(folder, cfg.model.allow_custom_code) if (folder / MODEL_FILE).is_file() else None


def saved_config(run_dir: Path) -> Config | None:
    """The config the latest stage of a run was made with (its config.yaml), if any."""
    for stage in reversed([s for s in STAGES if s not in OPTIONAL_STAGES]):
        path = Path(run_dir) / stage / CONFIG_FILE
        if path.is_file():
            return load_config(path)
    return None


def hls_projects(cfg: Config) -> dict[str, Path]:
    """backend -> folder of every HLS project exported for this run (export.output_dir/<name>/)."""
    root = Run(cfg).projects_root
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def csim_summary(project: Path) -> dict | None:
    """The C-simulation summary `csim.run_csim` wrote into the project, or None."""
    return read_json(project / CSIM_SUMMARY) if (project / CSIM_SUMMARY).is_file() else None


def hardware_accounting(project: Path) -> dict | None:
    """The per-layer accounting (`fpgaprune hls` writes it; else read from the weight files)."""
    from ..hw.accounting import as_dict, count_project

    if (project / ACCOUNTING_FILE).is_file():
        return read_json(project / ACCOUNTING_FILE)
    return as_dict(count_project(project)) if (project / MANIFEST).is_file() else None


def run_masks(cfg: Config, models: dict) -> tuple[dict[str, np.ndarray], str]:
    """The run's final masks and where they came from: the pruned model, else the analysis."""
    from ..masks import load_masks, masks_of

    for stage in ("pruned", "quantized", "transfer"):
        if models.get(stage) is not None and masks_of(models[stage]):
            return masks_of(models[stage]), f"the {stage} model"
    path = cfg.run_dir / "analysis" / MASKS_FILE
    if path.is_file():
        return load_masks(path), "the analysis proposal (not yet retrained)"
    return {}, "nothing pruned yet"


@dataclass
class RunData:
    """Everything the page shows, read once: summaries, models, masks, HLS projects."""

    cfg: Config
    summaries: dict[str, dict | None]
    models: dict
    masks: dict[str, np.ndarray]
    masks_from: str
    norms: dict[str, np.ndarray] | None  # the magnitudes that chose the masks (see `ranked_norms`)
    norms_from: str
    baseline_norms: dict[str, np.ndarray] | None
    csims: dict[str, dict | None]
    accounts: dict[str, dict | None]
    stale: dict[str, str]  # stage (or "C-sim (backend)") -> the input stage saved after it
    grid_layer: str | None = None
    grid_channel: int | None = None


def read_run(cfg: Config) -> RunData:
    from ..analysis.kernels import kernel_norms

    summaries = {s: stage_summary(cfg, s) for s in STAGES}
    models = {s: stage_model(cfg, s) for s in ("baseline", "pruned", "transfer", "quantized")}
    masks, masks_from = run_masks(cfg, models)
    base = models["baseline"]
    base_norms = kernel_norms(base, cfg.prune.norm, cfg.prune.normalize) if base is not None else None
    norms, norms_from = ranked_norms(cfg, models, summaries["pruned"], base_norms)
    projects = hls_projects(cfg)
    csims = {b: _safe(csim_summary, p) for b, p in projects.items()}
    accounts = {b: _safe(hardware_accounting, p) for b, p in projects.items()}
    return RunData(cfg, summaries, models, masks, masks_from, norms, norms_from, base_norms, csims, accounts,
                   stale_stages(cfg, projects))


BASELINE_RANKED = "the baseline (the model that was ranked)"


def ranked_norms(cfg: Config, models: dict, pruned: dict | None, base_norms) -> tuple[dict | None, str]:
    """The magnitudes that chose the masks, and whose they are.

    One shot and the analyzer rank the baseline; gradual pruning ranks the model of its last kept
    round, which the prune step saves (`RANKED_NORMS_FILE`). A pruned stage saved without that
    file falls back to the retrained model's own norms under the final masks.
    """
    from ..analysis.kernels import kernel_norms

    path = cfg.run_dir / "pruned" / RANKED_NORMS_FILE
    if pruned is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            norms = {k: np.asarray(z[k], np.float64) for k in z.files}
        if pruned.get("mode") == "gradual":
            return norms, "the model gradual pruning ranked at its last kept round"
        return norms, BASELINE_RANKED
    if pruned is not None and pruned.get("mode") == "gradual" and models.get("pruned") is not None:
        return (kernel_norms(models["pruned"], cfg.prune.norm, cfg.prune.normalize),
                "the pruned model after retraining (this run saved no ranked magnitudes)")
    return base_norms, BASELINE_RANKED


def stale_stages(cfg: Config, projects: dict[str, Path]) -> dict[str, str]:
    """Stages saved before the stage they were made from (re-run since): stage -> that input."""
    inputs = {"analysis": "baseline", "pruned": "baseline", "reduced": "pruned", "transfer": cfg.transfer.start_from,
              "quantized": cfg.quantize.start_from}
    summary = {s: cfg.run_dir / s / SUMMARY_FILE for s in STAGES}
    out = {s: src for s, src in inputs.items() if src in summary and written_before(summary[s], summary[src])}
    for backend, project in projects.items():
        if written_before(project / CSIM_SUMMARY, summary["quantized"]):
            out[f"C-sim ({backend})"] = "quantized"
    return out


def _safe(read: Callable[[Path], dict | None], project: Path) -> dict | None:
    """A reader's result, or {"error": why} (the page is still written)."""
    try:
        return read(project)
    except Exception as exc:
        return {"error": " ".join(str(exc).split()) or type(exc).__name__}
