"""Where a sweep's study lives, and the study itself: one storage that every worker shares.

    sqlite:///runs/mnist_cnn/sweep/study.db       the local default (one machine)
    postgresql+psycopg2://user@host/db           many machines (MySQL URLs work the same)
    journal:/shared/sweeps/mnist_cnn.log         a journal file on a shared file system

Every storage records a heartbeat for a running trial; a trial whose worker died (killed,
preempted, its host gone) goes silent, is failed by the next worker that looks, and is queued
again with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback). Optuna's SQL
storage has heartbeats; the journal storage gets the same ones here, kept as a trial attribute.
A study remembers the settings of the config that made it, and refuses any other config's.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import cache
from pathlib import Path

from ..config import Config, config_to_dict
from ..errors import BadInput, one_line
from .objectives import DIRECTIONS
from .trial import sweep_dir

JOURNAL = "journal:"
HEARTBEAT_ATTR = "fpgaprune:heartbeat"
SETTINGS_ATTR = "fpgaprune:settings"
FINGERPRINT_ATTR = "fpgaprune:fingerprint"
# Sweep options that say how a sweep runs, not what it searches: a study may be resumed with others.
RUN_OPTIONS = ("trials", "storage", "study", "csim_front", "csim_images", "heartbeat_seconds", "grace_seconds",
               "max_retry", "worker_memory_mb")
CONNECT_TIMEOUT_S = 10


def default_url(cfg: Config) -> str:
    return f"sqlite:///{sweep_dir(cfg) / 'study.db'}"


def storage_url(cfg: Config, override: str | None = None) -> str:
    return override or cfg.sweep.storage or default_url(cfg)


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    if url.startswith(JOURNAL) or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: the check that follows says so
        return url


def study_name(cfg: Config) -> str:
    return cfg.sweep.study or cfg.name


def settings(cfg: Config) -> dict:
    """What a study is a search of: the config minus folders, reporting and how the sweep runs."""
    data = config_to_dict(cfg)
    data.pop("runs_dir")
    data["data"].pop("test")
    for key in ("output_dir", "csim_workers", "csim_images"):
        data["export"].pop(key)
    for key in RUN_OPTIONS:
        data["sweep"].pop(key)
    return json.loads(json.dumps(data, sort_keys=True))


def fingerprint(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(settings(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _engine_kwargs(url: str) -> dict:
    if url.startswith(("postgresql", "mysql")):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


def check_reachable(url: str, cfg: Config) -> bool:
    """BadInput unless the storage can be reached (nothing is written); True if it may hold studies."""
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL):])
        if not path.parent.is_dir():
            raise BadInput(f"storage {url}: no folder {path.parent} for the journal file")
        return path.is_file()
    if "://" not in url:
        raise BadInput(f"storage {url!r}: expected a database URL (postgresql+psycopg2://user@host/db, "
                       "mysql+pymysql://..., sqlite:///PATH) or journal:PATH")
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise BadInput(f"storage {url!r}: not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if url == default_url(cfg):
            return path.is_file()
        if not path.parent.is_dir():
            raise BadInput(f"storage {url}: no folder {path.parent} for the SQLite file")
        if not path.is_file():
            return False
    try:
        engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
        with engine.connect():
            pass
        engine.dispose()
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        raise BadInput(f"storage {shown(url)}: no driver for it ({one_line(exc)}); install it, e.g. "
                       "psycopg2-binary for PostgreSQL") from None
    except Exception as exc:
        first = one_line(str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else repr(exc))
        raise BadInput(f"storage {shown(url)}: cannot reach it ({first})") from None
    return True


def open_storage(url: str, cfg: Config):
    """The Optuna storage, with heartbeats and the retry of a dead worker's trial."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    s = cfg.sweep
    with warnings.catch_warnings():  # heartbeats and their retry are "experimental" since Optuna 2.8; pinned here
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=s.max_retry)
        if url.startswith(JOURNAL):
            from optuna.storages.journal import JournalFileBackend

            return HeartbeatJournal(JournalFileBackend(url[len(JOURNAL):]), s.heartbeat_seconds, s.grace_seconds,
                                    retry)
        if url == default_url(cfg):
            sweep_dir(cfg).mkdir(parents=True, exist_ok=True)
        return RDBStorage(url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=s.heartbeat_seconds,
                          grace_period=s.grace_seconds, heartbeat_stale_trial_callback=retry)


@cache
def _journal_class():
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class _HeartbeatJournal(JournalStorage, BaseHeartbeat):
        """A journal storage whose running trials record a heartbeat (wall-clock seconds)."""

        def __init__(self, backend, interval: int, grace: int, callback) -> None:
            super().__init__(backend)
            self._interval, self._grace, self._callback = interval, grace, callback

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                # A retried trial inherits its predecessor's attributes: it is alive from its start.
                started = t.datetime_start.timestamp() if t.datetime_start else now
                beat = max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)
                if now - beat > self._grace:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int:
            return self._interval

        def get_heartbeat_stale_trial_callback(self):
            return self._callback

    return _HeartbeatJournal


def HeartbeatJournal(backend, interval: int, grace: int, callback):  # noqa: N802 (a class, built on first use)
    return _journal_class()(backend, interval, grace, callback)


def sampler_for(cfg: Config, worker_seed: int):
    import optuna

    s = cfg.sweep
    seed = (cfg.seed + worker_seed) % 2**32
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, s.trials // 5)))
    # constant_liar: parallel workers do not all propose the same point while others run.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=min(10, s.trials // 3 + 1))


def open_study(storage, url: str, cfg: Config, *, sampler=None, create: bool = True):
    """The config's study in `storage` (made if `create`); another config's study is a BadInput."""
    import optuna

    name = study_name(cfg)
    exists = name in optuna.get_all_study_names(storage)
    if not exists and not create:
        raise BadInput(f"storage {shown(url)}: holds no study {name!r}; start the sweep first")
    if exists:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        check_same_config(study, url, cfg)
        return study
    directions = [DIRECTIONS[o] for o in cfg.sweep.objectives]
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions,
                                load_if_exists=True)  # another host may create it at the same moment
    if FINGERPRINT_ATTR not in study.user_attrs:
        study.set_user_attr(SETTINGS_ATTR, settings(cfg))
        study.set_user_attr("objectives", list(cfg.sweep.objectives))
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint(cfg))
    check_same_config(study, url, cfg)
    return study


def check_same_config(study, url: str, cfg: Config) -> None:
    saved = study.user_attrs.get(FINGERPRINT_ATTR)
    if saved == fingerprint(cfg):
        return
    if saved is None:
        raise BadInput(f"storage {shown(url)}: study {study.study_name!r} was not made by fpgaprune sweep; "
                       "choose another sweep.study name or storage")
    differ = differences(study.user_attrs.get(SETTINGS_ATTR, {}), settings(cfg))
    raise BadInput(f"storage {shown(url)}: study {study.study_name!r} belongs to another config (it differs in "
                   f"{', '.join(differ[:5]) or 'its settings'}); run it with the same config, or choose another "
                   "sweep.study name or storage")


def differences(saved, now, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = sorted(set(saved) | set(now))
        return [d for k in keys for d in differences(saved.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if saved == now else [prefix.rstrip(".")]
