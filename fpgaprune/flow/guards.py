"""What the flow guards before and around its steps: names, checkpoints, resumes, full disks."""

from __future__ import annotations

from contextlib import contextmanager, suppress

from ..checkpoint import remove_checkpoint
from ..config import Config, config_to_dict
from ..errors import BadInput, FpgapruneError, option, storage_fault
from ..locks import sweep_projects, sweep_run
from ..run import Run
from .options import Options
from .steps import STEPS

# Longest run name: a folder name, with room for the temporary names beside it.
MAX_NAME = 200


def check_name(cfg: Config) -> None:
    if len(cfg.name.encode()) > MAX_NAME:
        raise BadInput(f"name: {len(cfg.name)} characters is too long for a folder name (at most {MAX_NAME})")


@contextmanager
def storage_faults(run: Run | None = None, hardware: bool = False):
    """A full disk, read-only folder or too long a name becomes one line; temporaries are removed."""
    try:
        yield
    except Exception as exc:
        fault = storage_fault(exc) if not isinstance(exc, FpgapruneError) else None
        if fault is None:
            raise
        if run is not None:
            with suppress(OSError):
                sweep_run(run.root)
                if hardware:
                    sweep_projects(run.projects_root)
        raise fault from None


# The config sections a training stage's weights depend on, besides seed, data, model and train.
STAGE_SECTIONS = {"baseline": (), "pruned": ("prune",), "transfer": ("transfer",), "quantized": ("quantize",)}
MADE_WITH = "made_with.json"


def training_settings(cfg: Config, stage: str) -> dict:
    data = config_to_dict(cfg)
    keys = ("seed", "data", "model", "train", *STAGE_SECTIONS[stage])
    return {key: data[key] for key in keys}


def guard_resume(run: Run, cfg: Config, stage: str, options: Options) -> None:
    """Refuse to resume training made with other settings; note the settings of a new one."""
    from ..io import read_json, write_json

    record = run.checkpoint_dir(stage) / MADE_WITH
    now = training_settings(cfg, stage)
    if options.resume and run.interrupted(stage) and record.is_file():
        differ = _differences(read_json(record), now)
        if differ:
            raise BadInput(
                f"{run.checkpoint_dir(stage)}: the interrupted run was made with other settings "
                f"({', '.join(differ)}); resume with the same config, or {option('force')} to start over"
            )
        return
    write_json(record, now)


def _differences(saved, now, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = sorted(set(saved) | set(now))
        return [d for k in keys for d in _differences(saved.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if saved == now else [prefix.rstrip(".")]



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


