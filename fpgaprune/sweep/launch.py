"""What `fpgaprune sweep` runs: check everything, make the baseline once, run workers, show the front.

    check_sweep(cfg, url)                  # BadInput for a bad space or storage; writes nothing
    sweep(cfg, workers=2)                  # local worker processes on one storage, then the front
    work_here(cfg, url)                    # one worker (what every host of a many-machine sweep runs)

Workers are separate processes (`fpgaprune sweep --worker`), each with its own TensorFlow and
its share of the cores; the launcher only watches the study and reports progress.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..config import Config, config_to_dict
from ..errors import BadInput, WorkFailed
from ..run import Run
from .space import Param, parse_space
from .storage import check_reachable, open_storage, open_study, sampler_for, shown, storage_url
from .trial import sweep_dir, trial_config

# Keys that choose kernels: meaningless beside the per-layer fractions, which choose them per layer.
SELECTION_KEYS = ("prune.fraction", "prune.threshold", "prune.select", "prune.mode", "prune.schedule", "prune.step",
                  "prune.max_fraction", "prune.spec")
CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class Progress:
    done: int
    running: int
    failed: int
    budget: int
    best: dict | None  # the most accurate completed trial's figures
    seconds_per_trial: float | None

    def line(self) -> str:
        best = ""
        if self.best:
            b = self.best
            best = (f"; best val acc {b['accuracy']:.4f} (trial {b['trial']}, LUT-eq {b['lut_equivalents']:,}, "
                    f"DSP {b['dsp']})")
        pace = f"; {self.seconds_per_trial:.1f} s per trial" if self.seconds_per_trial else ""
        failed = f", {self.failed} failed" if self.failed else ""
        return f"sweep: {self.done}/{self.budget} trials done, {self.running} running{failed}{best}{pace}"


def check_space(cfg: Config) -> list[Param]:
    """The searched keys, each checked: it exists, its bounds give a valid config, it has an effect."""
    params = parse_space(cfg.sweep.space)
    if not params:
        raise BadInput("sweep.space: nothing to search; name at least one config key, e.g. "
                       "sweep.space: {prune.layer_fraction.conv2: {low: 0.5, high: 0.95}}")
    keys = {p.key for p in params}
    base = trial_config(cfg, {}, 0)
    layer_params = [p for p in params if p.layer_key]
    for p in params:
        for value in p.corners():
            try:
                trial_config(cfg, {p.key: value}, 0)
            except BadInput as exc:
                raise BadInput(f"sweep.space.{p.key}: {value!r} gives a bad config "
                               f"({exc.raw.removeprefix('sweep trial 0: ')})") from None
        if layer_params and p.key in SELECTION_KEYS:
            raise BadInput(f"sweep.space.{p.key}: contradicts {layer_params[0].key}: per-layer fractions choose "
                           "the kernels themselves (one shot); search one or the other")
    effective = [base.prune.mode if "prune.mode" not in keys else "oneshot",
                 base.prune.select if "prune.select" not in keys else None]
    if "prune.fraction" in keys and (effective[0] == "gradual" or effective[1] in ("threshold", "spec")):
        raise BadInput(f"sweep.space.prune.fraction: has no effect with prune.mode {base.prune.mode!r} and "
                       f"prune.select {base.prune.select!r}; set prune.mode: oneshot and select: fraction in "
                       "sweep.trial")
    if "prune.threshold" in keys and effective[1] not in ("threshold", None):
        raise BadInput(f"sweep.space.prune.threshold: has no effect with prune.select {base.prune.select!r}; "
                       "set prune.select: threshold and prune.mode: oneshot in sweep.trial")
    check_layers(cfg, params)
    return params


def check_layers(cfg: Config, params: list[Param]) -> None:
    """Per-layer keys must name layers of the model (conv layers, for the pruned fractions)."""
    from ..flow.training_steps import model_for_checks
    from ..masks import all_layers, conv_layers

    per_layer = {"quantize.layers": 2, "export.layer_reuse": 2, "export.layer_strategy": 2}
    named = [p for p in params if p.layer_key or ".".join(p.key.split(".")[:2]) in per_layer]
    if not named:
        return
    model = model_for_checks(Run(cfg), cfg)
    convs = [layer.name for layer in conv_layers(model)]
    layers = [layer.name for layer in all_layers(model)]
    for p in named:
        layer = p.layer_key[1] if p.layer_key else p.key.split(".")[2]
        known = convs if p.layer_key else layers
        if layer not in known:
            raise BadInput(f"sweep.space.{p.key}: the model has no {'conv ' if p.layer_key else ''}layer "
                           f"{layer!r} ({', '.join(known)})")


def check_sweep(cfg: Config, url: str) -> bool:
    """Everything a sweep reads, before anything is written; True if the storage may hold the study."""
    check_space(cfg)
    return check_reachable(url, cfg)


def refuse_other_study(cfg: Config, url: str) -> None:
    """Every check, and another config's study in the storage refused, before anything is written."""
    import optuna

    from .storage import check_same_config, study_name

    if not check_sweep(cfg, url):
        return
    storage = open_storage(url, cfg)
    if study_name(cfg) in optuna.get_all_study_names(storage):
        check_same_config(optuna.load_study(study_name=study_name(cfg), storage=storage), url, cfg)


def open_checked(cfg: Config, url: str, *, worker_seed: int = 0, create: bool = True):
    """(storage, study) after every check; another config's study is refused before anything is written."""
    exists = check_sweep(cfg, url)
    storage = open_storage(url, cfg) if exists or create else None
    if storage is None:
        raise BadInput(f"storage {shown(url)}: holds no sweep yet; start one with `fpgaprune sweep`")
    return storage, open_study(storage, url, cfg, sampler=sampler_for(cfg, worker_seed), create=create)


def ensure_baseline(cfg: Config, options, wait_s: float = 600.0) -> None:
    """The parent run's baseline, trained once (a worker beside the one training it waits for it)."""
    from ..flow import run_flow

    run = Run(cfg)
    deadline = time.monotonic() + wait_s
    while not run.has("baseline"):
        try:
            run_flow(cfg, steps=["baseline"], options=replace(options, reuse=True))
        except BadInput as exc:
            if "in use by process" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def progress(study) -> Progress:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
    best = max(done, key=lambda t: (t.user_attrs.get("accuracy", 0.0), -t.user_attrs.get("lut_equivalents", 0)),
               default=None)
    seconds = [t.user_attrs["seconds"] for t in done if "seconds" in t.user_attrs]
    return Progress(len(done), sum(t.state == TrialState.RUNNING for t in trials), len(failed),
                    int(study.user_attrs.get("budget", 0)) or len(trials),
                    {"trial": best.number, **best.user_attrs} if best else None,
                    sum(seconds) / len(seconds) if seconds else None)


def worker_count(requested: int, memory_mb: int, say: Callable[[str], None]) -> int:
    """At most as many workers as the available memory holds (one is always allowed)."""
    available = available_memory_mb()
    if available is None or requested <= 1:
        return requested
    fits = max(1, available // memory_mb)
    if fits < requested:
        say(f"sweep: {requested} workers need {requested * memory_mb:,} MB; {available:,} MB is available, so "
            f"{fits} run (sweep.worker_memory_mb {memory_mb})")
    return min(requested, fits)


def available_memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def worker_command(config_file: Path, url: str, index: int, threads: int, test_data: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "fpgaprune.cli", "sweep", "--worker", "--config", str(config_file),
           "--storage", url, "--worker-seed", str(index), "--threads", str(threads), "--quiet"]
    return cmd + (["--test-data", test_data] if test_data else [])


def sweep(cfg: Config, *, workers: int = 1, storage: str | None = None, options=None, synth: int = 0,
          say: Callable[[str], None] = print) -> dict:
    """Run the sweep to its budget with local workers (0: only watch others), then write the front."""
    from ..flow import Options
    from .front import csim_front, format_table, front_rows, synth_front, write_front
    from .worker import work

    options = options or Options()
    url = storage_url(cfg, storage)
    refuse_other_study(cfg, url)
    ensure_baseline(cfg, options)
    storage_obj, study = open_checked(cfg, url)
    study.set_user_attr("budget", cfg.sweep.trials)
    workers = worker_count(workers, cfg.sweep.worker_memory_mb, say)
    if workers == 1:
        work(study, storage_obj, cfg, test_data=options.test_data, say=say, after=lambda: say(progress(study).line()))
    else:
        run_workers(cfg, url, study, workers, options.test_data, say)
    front = front_rows(_rows(study))
    if not front:
        raise WorkFailed(f"sweep: no trial completed; see {sweep_dir(cfg) / 'trials'}/<n>/trial.log and the "
                         "errors in the study")
    csim_front(cfg, study, front, options.test_data, say)
    if synth:
        synth_front(cfg, study, front, synth, say)
    data = write_front(cfg, study)
    say(f"Pareto front of {data['trials']} trials ({', '.join(data['objectives'])}):")
    say(format_table(data["front"], data["objectives"]))
    say(f"front written to {sweep_dir(cfg) / 'front.json'} and {sweep_dir(cfg) / 'pareto.png'}; "
        "`fpgaprune sweep --pick N` turns trial N into a run")
    return data


def _rows(study) -> list[dict]:
    from .front import trial_rows

    return trial_rows(study)


def run_workers(cfg: Config, url: str, study, workers: int, test_data: str | None, say) -> None:
    """Start `workers` worker processes on this host and report progress until the budget is spent."""
    folder = sweep_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / CONFIG_NAME
    config_file.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    logs = folder / "workers"
    logs.mkdir(exist_ok=True)
    procs = []
    try:
        for i in range(workers):
            with open(logs / f"{i}.log", "w") as log:
                procs.append(subprocess.Popen(worker_command(config_file, url, i + 1, threads, test_data),
                                              stdout=log, stderr=subprocess.STDOUT))
        watch(study, procs, say)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        raise
    bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode]
    for i, code in bad:
        say(f"sweep: worker {i} exited with code {code}: {_last_line(logs / f'{i}.log')}")


def watch(study, procs: list, say, poll_s: float = 2.0) -> None:
    """Progress until every local worker has finished (with none, until the study's budget is spent)."""
    from tqdm.auto import tqdm

    last = None
    bar = tqdm(total=study.user_attrs.get("budget"), desc="sweep", unit="trial", disable=None, leave=False)
    try:
        while True:
            now = progress(study)
            if bar.disable and now.line() != last:
                say(now.line())
            elif not bar.disable:
                bar.n = now.done
                bar.set_postfix_str(now.line().split("; ", 1)[-1] if now.best else "")
            last = now.line()
            finished = all(p.poll() is not None for p in procs) if procs else (
                now.done + now.failed >= now.budget and now.running == 0)
            if finished:
                break
            time.sleep(poll_s)
    finally:
        bar.close()
    say(progress(study).line())


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.is_file() else []
    return lines[-1] if lines else "(no output)"


def work_here(cfg: Config, *, storage: str | None = None, options=None, worker_seed: int | None = None,
              say: Callable[[str], None] = print) -> int:
    """One worker on this host: claim and run trials of the shared study until its budget is spent."""
    from ..flow import Options
    from .worker import work

    options = options or Options()
    url = storage_url(cfg, storage)
    seed = worker_seed if worker_seed is not None else os.getpid()
    refuse_other_study(cfg, url)
    ensure_baseline(cfg, options)
    storage_obj, study = open_checked(cfg, url, worker_seed=seed)
    if "budget" not in study.user_attrs:
        study.set_user_attr("budget", cfg.sweep.trials)
    return work(study, storage_obj, cfg, test_data=options.test_data, say=say)
