"""`run_flow`: run named steps in order, each saved as it finishes, timed, restartable.

    run_flow(cfg, steps=["prune"])                    # trains the baseline first if missing
    run_flow(cfg, start="quantize", stop="csim")      # over an existing pruned stage
    run_flow(cfg, start="quantize", options=Options(reuse=True))   # what `make hls` runs

Every input of every step is checked before anything runs or is written; then interrupted
training is resumed or started over as `options` say; then the steps run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..config import Config
from ..errors import BadInput, option
from ..locks import hold, sweep_dead_scratch, sweep_projects, sweep_run
from ..process import configure_process
from ..results import StageResult
from ..run import Run, refuse_existing
from .guards import check_name, guard_resume, settle_checkpoints, storage_faults
from .options import Options
from .steps import STEPS

# Steps that write HLS projects (their folder is locked and swept like the run folder).
HARDWARE_STEPS = ("export", "csim", "accounting", "synth")


@dataclass
class FlowResult:
    """The result of every step that ran (or whose output was reused), and its wall time."""

    results: dict[str, StageResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def step_names(start: str | None = None, stop: str | None = None, steps: list[str] | None = None) -> list[str]:
    """The steps to run, in table order: `steps` if given, else the chain from start to stop."""
    for name in (start, stop, *(steps or [])):
        if name is not None and name not in STEPS:
            raise BadInput(f"flow: no step named {name!r} (steps: {', '.join(STEPS)})")
    names = list(STEPS)
    if steps is not None:
        chosen = [n for n in names if n in steps]
    else:
        chosen = [n for n in names if STEPS[n].in_chain or n in (start, stop)]
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    if first > last:
        raise BadInput(f"flow: step {start!r} comes after {stop!r}")
    return [n for n in chosen if first <= names.index(n) <= last]


def plan(run: Run, names: list[str], options: Options) -> list[str]:
    """The steps to run: a missing baseline that a step needs is trained first."""
    needed = any("baseline" in STEPS[n].needs for n in names)
    if needed and "baseline" not in names and not run.has("baseline"):
        return ["baseline", *names]
    return names


def stale(run: Run, cfg: Config, name: str, names: list[str]) -> bool:
    """Whether step `name`'s output is older than the stage it is made from, or that stage is remade now."""
    step = STEPS[name]
    if step.source is None or step.produces is None:
        return False
    source = step.source(cfg)
    if any(STEPS[n].produces == source for n in names[: names.index(name)]):
        return True
    return run.is_older(step.produces, source)


def reused(run: Run, name: str, options: Options, replace: set[str]) -> bool:
    """Whether step `name` keeps an existing output (refused if it may neither keep nor replace it)."""
    stage = STEPS[name].produces
    if stage is None or not run.stage_dir(stage).exists() or options.force or name in replace:
        return False
    if options.reuse and run.has(stage):
        return True
    refuse_existing(run.stage_dir(stage))
    return False


def run_flow(
    cfg: Config,
    start: str | None = None,
    stop: str | None = None,
    *,
    steps: list[str] | None = None,
    options: Options | None = None,
) -> FlowResult:
    """Run the chosen steps over the run `cfg` names; see the module docstring."""
    options = options or Options()
    configure_process()
    run = Run(cfg)
    check_name(cfg)
    with storage_faults():
        names = plan(run, step_names(start, stop, steps), options)
        replace = {n for n in names if stale(run, cfg, n, names)}
        keep = {n for n in names if reused(run, n, options, replace)}
        for i, name in enumerate(names):
            # What the steps before this one will have made: a stage folder, or the step's own name.
            earlier = {STEPS[n].produces or n for n in names[:i]}
            if STEPS[name].check is not None and name not in keep:
                STEPS[name].check(run, cfg, options, earlier)
    hardware = any(n in HARDWARE_STEPS for n in names)
    folders = [run.root, *([run.projects_root] if hardware else [])] if names != ["report"] else []
    with storage_faults(run, hardware), hold(*folders):
        if folders:  # we hold their locks: what temporaries are there, dead processes left
            sweep_run(run.root)
            if hardware:
                sweep_projects(run.projects_root)
            sweep_dead_scratch()
        todo = [n for n in names if n not in keep]
        settle_checkpoints(run, todo, options)
        return _run_steps(run, cfg, names, keep, replace, options)


def _run_steps(run: Run, cfg: Config, names: list[str], keep: set[str], replace: set[str],
               options: Options) -> FlowResult:
    flow = FlowResult()
    record = {"started": _now(), "steps": []}
    for name in names:
        began = time.perf_counter()
        if name in keep:
            flow.results[name] = _reuse(run, name, options)
        else:
            step_options = dataclasses.replace(options, force=True) if name in replace else options
            if name in replace and run.stage_dir(STEPS[name].produces).exists():
                options.say(f"{run.stage_dir(STEPS[name].produces)} is older than the "
                            f"{STEPS[name].source(cfg)} stage it comes from: making it again")
            if STEPS[name].trains:
                guard_resume(run, cfg, STEPS[name].produces, step_options)
            flow.results[name] = STEPS[name].run(run, cfg, step_options)
        flow.seconds[name] = time.perf_counter() - began
        record["steps"].append({"step": name, "seconds": round(flow.seconds[name], 3), "reused": name in keep})
        run.record_flow({**record, "finished": _now()})
    return flow


def _reuse(run: Run, name: str, options: Options) -> StageResult:
    from ..results import result_of

    stage = STEPS[name].produces
    folder = run.stage_dir(stage)
    options.say(f"using the existing {folder} ({option('force')} to make it again)")
    saved = result_of(name, run.summary(stage)) or StageResult(name, summary=run.summary(stage) or {})
    return StageResult(name, saved.val_accuracy, saved.test_accuracy, saved.kernels_pruned, saved.kernels_total,
                       folder=folder, reused=True, summary=saved.summary)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
