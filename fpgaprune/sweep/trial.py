"""One trial: the config it runs (the sweep's config with the trial's values applied) and its flow.

A trial is an ordinary run in its own folder, runs/<name>/sweep/trials/<n>/, that starts from a
copy of the parent run's baseline (never retrained) and runs prune -> reduce -> quantize ->
export -> accounting through `run_flow`, so a trial is exactly what `make prune && make hls`
would build with those settings.

    tcfg = trial_config(cfg, {"quantize.layers.conv2.bits": 5}, 7)
    result = run_trial(cfg, {"quantize.layers.conv2.bits": 5}, 7)     # an Outcome
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..config import Config, config_to_dict, parse_config
from ..errors import BadInput
from ..run import Run
from .objectives import Outcome, outcome
from .space import Param, parse_space

MASKS_NAME = "sweep_masks.npz"
LOG_NAME = "trial.log"


def sweep_dir(cfg: Config) -> Path:
    return cfg.run_dir / "sweep"


def trial_dir(cfg: Config, number: int) -> Path:
    return sweep_dir(cfg) / "trials" / str(number)


def params_of(cfg: Config) -> list[Param]:
    return parse_space(cfg.sweep.space)


def set_path(data: dict, key: str, value) -> None:
    """data[a][b][c] = value for key 'a.b.c' (sections created as needed)."""
    *sections, last = key.split(".")
    node = data
    for part in sections:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise BadInput(f"{key}: {part} is not a section")
        node = child
    node[last] = value


def layer_values(values: dict) -> dict[tuple[str, str], float]:
    """(layer_fraction | layer_threshold, layer) -> value, for the sweep's own per-layer keys."""
    out = {}
    for key, value in values.items():
        p = Param(key, "float")
        if p.layer_key is not None:
            out[p.layer_key] = value
    return out


def trial_config(cfg: Config, values: dict, number: int, *, name: str | None = None,
                 runs_dir: str | None = None, output_dir: str | None = None) -> Config:
    """The config trial `number` runs: sweep.trial and `values` applied, folders under the sweep's."""
    data = config_to_dict(cfg)
    folder = trial_dir(cfg, number)
    merged = {**cfg.sweep.trial, **values}
    for key, value in merged.items():
        if Param(key, "float").layer_key is None:
            set_path(data, key, value)
    data["name"] = name or str(number)
    data["runs_dir"] = runs_dir or str(folder.parent)
    if layer_values(merged):
        spec = Path(data["runs_dir"]) / data["name"] / MASKS_NAME
        data["prune"].update(select="spec", spec=str(spec), mode="oneshot")
    data["quantize"]["start_from"] = "reduced" if cfg.sweep.reduce else "pruned"
    data["export"]["output_dir"] = output_dir or str(sweep_dir(cfg) / "hls")
    data["sweep"] = {}
    try:
        return parse_config(data)
    except BadInput as exc:
        raise BadInput(f"sweep trial {number}: {exc.raw}") from None


def trial_masks(baseline, prune, values: dict) -> dict:
    """Masks from the per-layer fractions / thresholds, ranked on the baseline's kernels (the
    trial's prune.norm and prune.normalize)."""
    from ..analysis.kernels import kernel_norms, propose

    chosen = layer_values(values)
    norms = kernel_norms(baseline, prune.norm, prune.normalize, layers=[layer for _, layer in chosen])  # Dense too
    masks = {}
    for (kind, layer), value in sorted(chosen.items()):
        select = "fraction" if kind == "layer_fraction" else "threshold"
        masks.update(propose(norms, select, fraction=value, threshold=value, layers=[layer]))
    return masks


def steps(cfg: Config) -> list[str]:
    return ["prune", *(["reduce"] if cfg.sweep.reduce else []), "quantize", "export", "accounting"]


def run_trial(cfg: Config, values: dict, number: int, test_data: str | None = None) -> Outcome:
    """Run trial `number` of the sweep `cfg`; its lines go to the trial folder's trial.log."""
    from ..flow import Options, run_flow
    from ..masks import save_masks

    parent = Run(cfg)
    tcfg = trial_config(cfg, values, number)
    run = Run(tcfg)
    if run.root.exists():  # a trial number is never handed out twice: this is a dead attempt's debris
        shutil.rmtree(run.root)
    shutil.rmtree(run.projects_root, ignore_errors=True)
    run.root.mkdir(parents=True)
    shutil.copytree(parent.stage_dir("baseline"), run.stage_dir("baseline"))
    lines: list[str] = []
    try:
        merged = {**cfg.sweep.trial, **values}
        if layer_values(merged):
            baseline, _ = run.load("baseline")
            save_masks(trial_masks(baseline, tcfg.prune, merged), run.root / MASKS_NAME)
        options = Options(verbose=0, progress=False, test_data=test_data, say=lines.append)
        flow = run_flow(tcfg, steps=steps(cfg), options=options)
        return outcome(flow, tcfg.export.backends[0])
    finally:
        (run.root / LOG_NAME).write_text("".join(f"{line}\n" for line in lines))
