"""What a sweep found: the Pareto front as a table, a plot and front.json; C-simulation and vendor
synthesis of the best candidates; `pick`, which turns one trial into a normal run.

    rows = trial_rows(study)                        # every completed trial, front marked
    print(format_table([r for r in rows if r["pareto"]], cfg.sweep.objectives))
    pick(cfg, study, 7)                             # runs/<name>-trial-7/, then `make hls`
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..config import Config, config_to_dict
from ..errors import BadInput, option
from ..io import read_json, write_json
from ..run import ACCOUNTING_FILE, CONFIG_FILE, STAGES, Run
from .objectives import LABELS
from .trial import MASKS_NAME, sweep_dir, trial_config, trial_dir

FRONT_FILE = "front.json"
PLOT_FILE = "pareto.png"


def trial_rows(study) -> list[dict]:
    """Every completed trial: its objectives, test accuracy, parameters; the front marked."""
    from optuna.trial import TrialState

    objectives = study.user_attrs.get("objectives", [])
    front = {t.number for t in study.best_trials}
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        rows.append({"trial": t.number, **dict(zip(objectives, t.values, strict=True)),
                     "accuracy": a.get("accuracy"), "test_accuracy": a.get("test_accuracy"),
                     "lut_equivalents": a.get("lut_equivalents"), "dsp": a.get("dsp"), "latency": a.get("latency"),
                     "seconds": a.get("seconds"), "worker": a.get("worker"), "params": dict(t.params),
                     "retry_of": t.system_attrs.get("failed_trial"), "pareto": t.number in front,
                     "csim": study.user_attrs.get(f"csim:{t.number}"),
                     "synth": study.user_attrs.get(f"synth:{t.number}")})
    return rows


def front_rows(rows: list[dict]) -> list[dict]:
    """The Pareto front, most accurate first (cheapest first among equals)."""
    return sorted((r for r in rows if r["pareto"]), key=lambda r: (-r["accuracy"], r["lut_equivalents"]))


def _short(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else key


def format_table(rows: list[dict], objectives: list[str]) -> str:
    """A terminal table of trials: objectives, test accuracy, C-simulation, parameters."""
    figures = ["accuracy", "lut_equivalents", "dsp", *(["latency"] if "latency" in objectives else [])]
    head = ["trial", *(LABELS[o] for o in figures), "test acc", "C-sim", "parameters"]
    body = []
    for r in rows:
        csim = r.get("csim") or {}
        exact = "" if not csim else ("bit-exact" if csim.get("bit_exact") else "DIFFERS")
        params = " ".join(f"{_short(k)}={v:.3g}" if isinstance(v, float) else f"{_short(k)}={v}"
                          for k, v in sorted(r["params"].items()))
        body.append([str(r["trial"]), *(_fmt(r[o]) for o in figures), _fmt(r["test_accuracy"]), exact, params])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    line = "  ".join(f"{{:>{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join([line.format(*head), *(line.format(*row) for row in body)])


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value <= 1.0:
        return f"{value:.4f}"
    return f"{int(value):,}"


def default_point(cfg: Config) -> tuple[float, float] | None:
    """(LUT-equivalents, validation accuracy) of the parent run's own design, where it has one."""
    run = Run(cfg)
    quantized = run.summary("quantized")
    table = run.project_dir(cfg.export.backends[0]) / ACCOUNTING_FILE
    if not quantized or not table.is_file() or quantized.get("val_accuracy") is None:
        return None
    return float(read_json(table)["total"]["lut_equivalents"]), float(quantized["val_accuracy"])


def write_front(cfg: Config, study) -> dict:
    """front.json and pareto.png under runs/<name>/sweep/; returns what front.json holds."""
    from ..report.plots import pareto_front

    rows = trial_rows(study)
    front = front_rows(rows)
    default = default_point(cfg)
    folder = sweep_dir(cfg)
    points = [(r["lut_equivalents"], r["accuracy"]) for r in rows]
    pareto_front(points, [(r["lut_equivalents"], r["accuracy"]) for r in front], folder / PLOT_FILE, default=default)
    data = {"study": study.study_name, "objectives": study.user_attrs.get("objectives"),
            "trials": len(rows), "front": front, "all": rows, "plot": PLOT_FILE,
            "default_flow": {"lut_equivalents": default[0], "accuracy": default[1]} if default else None}
    write_json(folder / FRONT_FILE, data)
    return data


def report_data(run_dir: Path) -> dict | None:
    """A run's sweep for its report: front.json with the plot's path, or None when it has none."""
    path = Path(run_dir) / "sweep" / FRONT_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    data["plot_path"] = str(path.parent / data["plot"])
    return data


def local_trial(cfg: Config, row: dict) -> Config | None:
    """The trial's config where its folders are on this host (a trial another host ran is elsewhere)."""
    tcfg = trial_config(cfg, row["params"], row["trial"])
    return tcfg if Run(tcfg).has("quantized") else None


def csim_front(cfg: Config, study, front: list[dict], test_data: str | None, say) -> None:
    """C-simulate the best `sweep.csim_front` candidates (each once), to confirm they are bit-exact."""
    from ..flow import Options, run_flow

    for row in front[: cfg.sweep.csim_front]:
        key = f"csim:{row['trial']}"
        if key in study.user_attrs:
            continue
        tcfg = local_trial(cfg, row)
        if tcfg is None:
            say(f"trial {row['trial']}: ran on {row['worker']}, not here; C-simulate it there")
            continue
        lines: list[str] = []
        options = Options(reuse=True, verbose=0, csim_images=cfg.sweep.csim_images, test_data=test_data,
                          say=lines.append)
        summary = run_flow(tcfg, steps=["csim"], options=options).results["csim"].summary
        backend = summary["backends"][tcfg.export.backends[0]]
        result = {"bit_exact": bool(summary["bit_exact"]), "images": backend.get("images")}
        study.set_user_attr(key, result)
        row["csim"] = result
        say(f"trial {row['trial']}: C-simulation {'bit-exact' if result['bit_exact'] else 'DIFFERS'} "
            f"on {result['images']} images")


def synth_front(cfg: Config, study, front: list[dict], k: int, say) -> None:
    """Vendor synthesis of the k best candidates where the tools exist; says which are missing where not.
    A report that comes back (hours later) is stored in the study beside the trial."""
    from ..flow import Options, run_flow
    from ..hw.synth import require_tools

    try:
        require_tools(list(cfg.export.backends))
    except BadInput as exc:
        say(f"synth: skipped for the {min(k, len(front))} best candidates: {exc}")
        return
    for row in front[:k]:
        tcfg = local_trial(cfg, row)
        if tcfg is None:
            say(f"trial {row['trial']}: ran on {row['worker']}, not here; synthesize it there")
            continue
        summary = run_flow(tcfg, steps=["synth"], options=Options(reuse=True, say=say)).results["synth"].summary
        study.set_user_attr(f"synth:{row['trial']}", summary["backends"])


def pick(cfg: Config, study, number: int, *, force: bool = False) -> tuple[Path, Path]:
    """Trial `number` as the run <name>-trial-<number>: its stages copied, its config written beside
    them, so `make hls CONFIG=<that config>` continues from it. Returns (run folder, config file)."""
    import yaml
    from optuna.trial import TrialState

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials or trials[number].state != TrialState.COMPLETE:
        done = sorted(n for n, t in trials.items() if t.state == TrialState.COMPLETE)
        raise BadInput(f"sweep --pick {number}: no completed trial {number} in study {study.study_name!r} "
                       f"(completed: {', '.join(map(str, done[:20])) or 'none'})")
    source = Run(trial_config(cfg, dict(trials[number].params), number))
    if not source.has("quantized"):
        raise BadInput(f"sweep --pick {number}: {source.root} is not on this host (trial {number} ran on "
                       f"{trials[number].user_attrs.get('worker')}); pick it there")
    name = f"{cfg.name}-trial-{number}"
    picked = trial_config(cfg, dict(trials[number].params), number, name=name, runs_dir=cfg.runs_dir,
                          output_dir=cfg.export.output_dir)
    target = Run(picked).root
    if target.exists():
        if not force:
            raise BadInput(f"{target} already exists; {option('force')} to replace it")
        shutil.rmtree(target)
    text = yaml.safe_dump(config_to_dict(picked), sort_keys=False)
    target.mkdir(parents=True)
    for stage in STAGES:
        if source.stage_dir(stage).is_dir():
            shutil.copytree(source.stage_dir(stage), target / stage)
            (target / stage / CONFIG_FILE).write_text(text)
    if (source.root / MASKS_NAME).is_file():
        shutil.copy2(source.root / MASKS_NAME, target / MASKS_NAME)
    config_file = target / CONFIG_FILE
    config_file.write_text(f"# trial {number} of the sweep {study.study_name!r} ({trial_dir(cfg, number)})\n{text}")
    return target, config_file
