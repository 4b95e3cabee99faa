"""`run_flow`: run named steps in order, each saved as it finishes, timed, restartable.

    run_flow(cfg, steps=["prune"])                    # trains the baseline first if missing
    run_flow(cfg, start="quantize", stop="csim")      # over an existing pruned stage
    run_flow(cfg, start="quantize", options=Options(reuse=True))   # what `make hls` runs

Every input of every step is checked before anything runs or is written; then interrupted
training is resumed or started over as `options` say; then the steps run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..checkpoint import remove_checkpoint
from ..config import Config
from ..errors import BadInput, option
from ..process import configure_process
from ..results import StageResult
from ..run import Run, refuse_existing
from .options import Options
from .steps import STEPS


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


def reused(run: Run, name: str, options: Options) -> bool:
    """Whether step `name` keeps an existing output (refused if it may neither keep nor replace it)."""
    stage = STEPS[name].produces
    if stage is None or not run.stage_dir(stage).exists() or options.force:
        return False
    if options.reuse and run.has(stage):
        return True
    refuse_existing(run.stage_dir(stage))
    return False


def settle_checkpoints(run: Run, names: list[str], options: Options) -> None:
    """Resume or start over the interrupted training of these steps, as `options` say."""
    stages = [STEPS[n].produces for n in names if STEPS[n].trains]
    interrupted = [s for s in stages if run.interrupted(s)]
    first = run.checkpoint_dir(stages[0]) if stages else run.root
    if interrupted and not (options.resume or options.force):
        raise BadInput(f"{run.checkpoint_dir(interrupted[0])} holds an interrupted run; {option('resume')} "
                       f"to continue it or {option('force')} to start over")
    if options.resume and not interrupted:
        raise BadInput(f"{first}: no interrupted run to resume; {option('no_resume')}")
    if options.force and not options.resume:
        for stage in stages:
            remove_checkpoint(run.checkpoint_dir(stage))


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
    names = plan(run, step_names(start, stop, steps), options)
    keep = {n for n in names if reused(run, n, options)}
    for i, name in enumerate(names):
        # What the steps before this one will have made: a stage folder, or the step's own name.
        earlier = {STEPS[n].produces or n for n in names[:i]}
        if STEPS[name].check is not None and name not in keep:
            STEPS[name].check(run, cfg, options, earlier)
    settle_checkpoints(run, [n for n in names if n not in keep], options)
    flow = FlowResult()
    record = {"started": _now(), "steps": []}
    for name in names:
        began = time.perf_counter()
        if name in keep:
            flow.results[name] = _reuse(run, name, options)
        else:
            flow.results[name] = STEPS[name].run(run, cfg, options)
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
