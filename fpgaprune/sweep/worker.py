"""The worker loop: claim a trial from the shared study, run it, report back, until the budget is spent.

Ask-and-tell, not `study.optimize`, for two reasons. A budget shared by many workers: a trial
claimed past `sweep.trials` (two workers asked at once) is dropped unrun, so the study ends
with exactly that many trials run, each once. And a dead worker: while every trial of the budget
is claimed, a worker waits instead of leaving, failing any trial whose heartbeat went silent so
that its retry (same parameters, a new number) runs here.

    done = work(study, storage, cfg, say=print)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from ..config import Config
from ..errors import FpgapruneError, one_line
from .objectives import LABELS
from .space import Param, parse_space
from .trial import run_trial

# A trial's user attributes besides the outcome.
SURPLUS = "surplus"
ERROR = "error"


def suggest(trial, params: list[Param]) -> dict:
    """The trial's value of every searched key (a retried trial gets its predecessor's)."""
    values = {}
    for p in params:
        if p.kind == "choice":
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind == "int":
            values[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return values


def counted(t) -> bool:
    """Whether trial `t` holds a place in the budget: it ran, runs, waits, or failed on its own
    (a heartbeat-stale trial gives its place to its retry; a surplus one never had one)."""
    from optuna.trial import TrialState

    if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING):
        return True
    return t.state == TrialState.FAIL and ERROR in t.user_attrs


def surplus(study, number: int, budget: int) -> bool:
    """Trial `number` was claimed after the budget was full (by the trials numbered before it)."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number and counted(t)]
    return len(earlier) >= budget


class Heartbeat:
    """Records a trial's heartbeat every interval while the trial runs (a thread)."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.interval = storage.get_heartbeat_interval()
        storage.record_heartbeat(trial_id)  # at once: a retried trial must not look stale
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def budget_state(study, budget: int) -> tuple[int, bool, bool]:
    """(places taken, any trial waiting, any trial running)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return (sum(counted(t) for t in trials), any(t.state == TrialState.WAITING for t in trials),
            any(t.state == TrialState.RUNNING for t in trials))


def work(study, storage, cfg: Config, *, test_data: str | None = None, say: Callable[[str], None] = print,
         poll_s: float | None = None, after: Callable[[], None] | None = None) -> int:
    """Run trials until the study has `sweep.trials` of them; return how many ran here."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        # Heartbeats with ask-and-tell (so a synthesis can report back hours later) are what Optuna
        # calls experimental and "supposed to be used with Study.optimize"; the pins keep them stable.
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return _work(study, storage, cfg, test_data, say, poll_s, after)


def _work(study, storage, cfg: Config, test_data, say, poll_s, after) -> int:
    from optuna.storages import fail_stale_trials

    params, budget = parse_space(cfg.sweep.space), cfg.sweep.trials
    poll_s = poll_s or min(5.0, float(cfg.sweep.heartbeat_seconds))
    ran = 0
    while True:
        fail_stale_trials(study)
        taken, waiting, running = budget_state(study, budget)
        if taken >= budget and not waiting:
            if not running:
                return ran
            time.sleep(poll_s)  # others hold the last places; their trials come back here if they die
            continue
        trial = study.ask()
        if surplus(study, trial.number, budget):
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=_fail())
            continue
        run_one(study, storage, cfg, trial, params, test_data, say)
        ran += 1
        if after is not None:
            after()


def _fail():
    from optuna.trial import TrialState

    return TrialState.FAIL


def run_one(study, storage, cfg: Config, trial, params: list[Param], test_data, say) -> None:
    """Run one claimed trial and tell the study how it went (an interrupt queues it again)."""
    values = suggest(trial, params)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    began = time.perf_counter()
    try:
        with Heartbeat(storage, trial._trial_id):
            result = run_trial(cfg, values, trial.number, test_data)
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=_fail())
        retry = storage.get_heartbeat_stale_trial_callback()
        if retry is not None:  # queue it again now, so a resumed sweep need not wait for a heartbeat to lapse
            retry(study, storage.get_trial(trial._trial_id))
        raise
    except Exception as exc:  # one trial's failure is recorded; the sweep goes on
        message = exc.for_cli() if isinstance(exc, FpgapruneError) else f"{type(exc).__name__}: {one_line(exc)}"
        trial.set_user_attr(ERROR, message[:2000])
        trial.set_user_attr("seconds", round(time.perf_counter() - began, 2))
        study.tell(trial, state=_fail())
        say(f"trial {trial.number} failed: {message}")
        return
    seconds = time.perf_counter() - began
    for key, value in result.attrs().items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("seconds", round(seconds, 2))
    study.tell(trial, result.values(cfg.sweep.objectives))
    figures = ", ".join(f"{LABELS[o]} {getattr(result, o):.4g}" for o in cfg.sweep.objectives)
    say(f"trial {trial.number} done in {seconds:.1f} s: {figures}")
