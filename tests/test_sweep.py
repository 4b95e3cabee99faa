"""The design-space sweep: its section, its bad inputs, and workers sharing one study (local SQLite
and a real PostgreSQL server), a killed worker's trial retried, a sweep resumed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from fpgaprune.errors import BadInput
from fpgaprune.sweep.space import SweepConfig, parse_space

from .conftest import TINY

SPACE = {"prune.layer_fraction.conv2": {"low": 0.3, "high": 0.9},
         "quantize.layers.conv2.bits": {"low": 3, "high": 8},
         "export.layer_reuse.fc1": [1, 2, 4]}


def sweep_data(tmp: Path, name: str, **sweep) -> dict:
    """A config of the tiny CNN whose trials are as cheap as a trial can be (no C-simulation)."""
    return {"name": name, "runs_dir": str(tmp / "runs"), "model": TINY,
            "data": {"dataset": "mnist-5k", "limit": 300}, "train": {"epochs": 1},
            "prune": {"layers": ["conv2"], "mode": "oneshot", "epochs": 1},
            "quantize": {"epochs": 0, "calibration_images": 32},
            "export": {"output_dir": str(tmp / "hls"), "testbench_images": 4},
            "sweep": {"trials": 2, "space": SPACE, "csim_front": 0, "heartbeat_seconds": 1, "grace_seconds": 3,
                      **sweep}}


def write_config(tmp: Path, data: dict) -> Path:
    path = tmp / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str) -> tuple[int, str]:
    """The command in this process: (exit code, what it printed on stderr)."""
    import contextlib
    import io

    from fpgaprune_cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


# --- the section ---------------------------------------------------------------------------


def test_space_parses_ranges_and_choices():
    params = {p.key: p for p in parse_space(SPACE)}
    assert params["quantize.layers.conv2.bits"].kind == "int"
    assert params["prune.layer_fraction.conv2"].kind == "float"
    assert params["prune.layer_fraction.conv2"].layer_key == ("layer_fraction", "conv2")
    assert params["export.layer_reuse.fc1"].choices == (1, 2, 4)


def test_a_trial_prunes_a_dense_layer_by_its_own_fraction():
    """prune.layer_fraction.fc1 masks that share of fc1's weights, smallest |w| first, beside conv2's kernels."""
    import numpy as np

    from fpgaprune.config import ModelConfig, PruneConfig
    from fpgaprune.models import build_reference_cnn
    from fpgaprune.sweep.trial import trial_masks

    model = build_reference_cnn(ModelConfig(**TINY))
    masks = trial_masks(model, PruneConfig(), {"prune.layer_fraction.conv2": 0.5, "prune.layer_fraction.fc1": 0.75})
    assert set(masks) == {"conv2", "fc1"}
    fc1 = np.abs(model.get_layer("fc1").get_weights()[0])
    assert masks["fc1"].shape == fc1.shape and masks["fc1"].sum() == int(np.ceil(0.75 * fc1.size))
    assert fc1[masks["fc1"]].max() <= fc1[~masks["fc1"]].min()
    assert masks["conv2"].sum() == int(np.ceil(0.5 * masks["conv2"].size))


@pytest.mark.parametrize("space, words", [
    ({"prune.fraction": {"low": 0.9, "high": 0.5}}, "low 0.9 must be below high 0.5"),
    ({"prune.fraction": [0.5]}, "nothing to search"),
    ({"prune.fraction": {"low": 0.1, "hi": 0.5}}, "unknown key"),
    ({"prune.fraction": 0.5}, "expected {low"),
    ({"prune.fraction": {"low": 0.1, "high": 0.5, "log": True, "step": 0.1}}, "log range"),
])
def test_bad_space_is_one_line_naming_the_key(space, words):
    from fpgaprune.config import parse_config

    with pytest.raises(BadInput, match="sweep.space.prune.fraction") as err:
        parse_config({"sweep": {"space": space}})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_key_both_fixed_and_searched_is_refused():
    with pytest.raises(BadInput, match="trial.prune.epochs: is also in sweep.space"):
        SweepConfig(space={"prune.epochs": [1, 2]}, trial={"prune.epochs": 1}).validate("sweep")


# --- bad input: one line, exit 2, nothing written -------------------------------------------------


@pytest.mark.parametrize("sweep, words", [
    ({"space": {}}, "sweep.space: nothing to search"),
    ({"space": {"prune.fraction": {"low": 0.5, "high": 0.9}}}, "prune.fraction: has no effect with prune.mode"),
    ({"space": {"prune.fraction": {"low": 0.5, "high": 0.9}, **SPACE}, "trial": {"prune.mode": "oneshot"}},
     "contradicts prune.layer_fraction.conv2"),
    ({"space": {"prune.fractoin": [0.5, 0.6]}}, "did you mean 'fraction'"),
    ({"space": {"quantize.layers.conv9.bits": [4, 8]}}, "no layer 'conv9'"),
    ({"space": {"quantize.weight_bits": [1, 8]}}, "is below the minimum 2"),
])
def test_bad_space_exits_2_and_writes_nothing(tmp_path, sweep, words):
    data = sweep_data(tmp_path, "bad")
    data["prune"]["mode"] = "gradual"
    data["sweep"].update(sweep)
    code, err = cli("sweep", "--config", str(write_config(tmp_path, data)))
    lines = [line for line in err.splitlines() if line.startswith("fpgaprune:")]
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "runs").exists()


def test_unreachable_storage_exits_2(tmp_path):
    config = write_config(tmp_path, sweep_data(tmp_path, "unreachable"))
    for url, words in (("postgresql+psycopg2://nobody@127.0.0.1:1/none", "cannot reach it"),
                       (f"sqlite:///{tmp_path}/no/such/folder/s.db", "no folder"),
                       ("redis-ish-thing", "expected a database URL")):
        code, err = cli("sweep", "--config", str(config), "--storage", url)
        assert code == 2 and words in err, err
    assert not (tmp_path / "runs").exists()


def test_another_configs_study_is_refused(tmp_path):
    from fpgaprune.config import parse_config
    from fpgaprune.sweep.launch import open_checked

    url = f"sqlite:///{tmp_path}/shared.db"
    first = parse_config(sweep_data(tmp_path, "same"))
    open_checked(first, url)
    other = sweep_data(tmp_path, "same")
    other["quantize"]["epochs"] = 1
    code, err = cli("sweep", "--config", str(write_config(tmp_path, other)), "--storage", url)
    assert code == 2 and "belongs to another config (it differs in quantize.epochs)" in err, err
    assert not (tmp_path / "runs").exists()
    # How a sweep runs is no part of what it searches: more trials resume the same study.
    again = replace(first, sweep=replace(first.sweep, trials=9, heartbeat_seconds=2))
    assert open_checked(again, url)[1].study_name == "same"


# --- workers on one storage ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One trained tiny baseline (1 epoch) that every sweep below copies instead of training."""
    from fpgaprune.config import parse_config
    from fpgaprune.flow import Options, run_flow

    tmp = tmp_path_factory.mktemp("sweep-baseline")
    cfg = parse_config(sweep_data(tmp, "base"))
    run_flow(cfg, steps=["baseline"], options=Options(verbose=0))
    return cfg.run_dir / "baseline"


def sweep_config(tmp: Path, baseline: Path, name: str, **sweep):
    from fpgaprune.config import parse_config

    cfg = parse_config(sweep_data(tmp, name, **sweep))
    shutil.copytree(baseline, cfg.run_dir / "baseline")
    return cfg


def states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def assert_each_trial_ran_once(cfg, study, budget: int) -> list:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(done) == budget, states(study)
    ran = sorted(p.name for p in (cfg.run_dir / "sweep" / "trials").iterdir() if (p / "quantized").is_dir())
    assert ran == sorted(str(t.number) for t in done)  # no trial left a second run behind
    surplus = [t for t in study.get_trials(deepcopy=False) if "surplus" in t.user_attrs]
    assert all(not (cfg.run_dir / "sweep" / "trials" / str(t.number)).exists() for t in surplus)
    return done


@pytest.mark.slow
def test_two_worker_processes_share_a_local_study_and_pick(tmp_path, baseline):
    from fpgaprune.config import load_config
    from fpgaprune.run import Run
    from fpgaprune.sweep.front import pick
    from fpgaprune.sweep.launch import open_checked, sweep

    cfg = sweep_config(tmp_path, baseline, "two", trials=2, csim_front=1, csim_images=20)
    lines: list[str] = []
    data = sweep(cfg, workers=2, synth=1, say=lines.append)
    study = open_checked(cfg, f"sqlite:///{cfg.run_dir / 'sweep' / 'study.db'}")[1]
    done = assert_each_trial_ran_once(cfg, study, 2)
    assert len({t.user_attrs["worker"] for t in done}) == 2, [t.user_attrs["worker"] for t in done]
    assert data["front"] and (cfg.run_dir / "sweep" / "pareto.png").is_file()
    assert any(line.startswith("sweep: 2/2 trials done") for line in lines), lines
    # The best candidate is C-simulated to confirm it is bit-exact; synthesis says what is missing.
    assert data["front"][0]["csim"]["bit_exact"], data["front"][0]
    assert any(line.startswith("synth: skipped for the 1 best candidates") for line in lines), lines
    best = data["front"][0]["trial"]
    folder, config_file = pick(cfg, study, best)
    picked = load_config(config_file)
    assert Run(picked).has("quantized") and picked.quantize.start_from == "reduced"
    assert folder == Run(picked).root and picked.name == f"two-trial-{best}"


@pytest.mark.slow
def test_a_killed_worker_trial_is_retried_and_the_sweep_resumes(tmp_path, baseline):
    from optuna.trial import TrialState

    from fpgaprune.config import config_to_dict
    from fpgaprune.sweep.launch import open_checked, sweep

    cfg = sweep_config(tmp_path, baseline, "killed", trials=2)
    config = write_config(tmp_path, config_to_dict(cfg))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    worker = subprocess.Popen([sys.executable, "-m", "fpgaprune.cli", "sweep", "--worker", "--config", str(config),
                               "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"sqlite:///{cfg.run_dir / 'sweep' / 'study.db'}"
    first = cfg.run_dir / "sweep" / "trials" / "0" / "pruned"
    deadline = time.monotonic() + 120
    while not first.is_dir() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # mid-trial: pruned, not yet quantized
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    _, study = open_checked(cfg, url)
    assert states(study) == {"RUNNING": 1}
    sweep(cfg, workers=1, say=lambda line: None)  # resumes the same study: it retries the dead trial
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and "error" not in trials[0].user_attrs
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[0].params
    assert_each_trial_ran_once(cfg, study, 2)


# --- the same on a real PostgreSQL server ----------------------------------------------------------


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture()
def postgres():
    """A throw-away PostgreSQL cluster on a private Unix socket: its SQLAlchemy URL."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (initdb not found); .ci/run installs Debian's postgresql")
    folder = Path(tempfile.mkdtemp(prefix="fpgaprune-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres system user
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", 20000 + os.getpid() % 20000

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    pg(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    pg(str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
       "-o", f"-c listen_addresses='' -k {folder} -p {port}", "start")
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={folder}&port={port}"
    finally:
        pg(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_a_postgresql_server(tmp_path, baseline, postgres):
    from fpgaprune.sweep.launch import open_checked, sweep

    cfg = sweep_config(tmp_path, baseline, "pg", trials=2)
    sweep(cfg, workers=2, storage=postgres, say=lambda line: None)
    _, study = open_checked(cfg, postgres)
    assert_each_trial_ran_once(cfg, study, 2)
    assert not (cfg.run_dir / "sweep" / "study.db").exists()


# --- the front ----------------------------------------------------------------------------------


def test_front_table_plot_and_report_section(tmp_path):
    import optuna

    from fpgaprune.config import parse_config
    from fpgaprune.report.html import Figures, render_page
    from fpgaprune.report.sections import sweep_section
    from fpgaprune.sweep.front import format_table, write_front

    cfg = parse_config(sweep_data(tmp_path, "front"))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "lut_equivalents", "dsp"])
    for acc, lut, dsp in ((0.97, 9000, 0), (0.95, 4000, 0), (0.94, 5000, 0), (0.96, 3000, 40)):
        study.add_trial(optuna.create_trial(
            values=[acc, lut, dsp], params={"quantize.layers.conv2.bits": 6},
            distributions={"quantize.layers.conv2.bits": optuna.distributions.IntDistribution(3, 8)},
            user_attrs={"accuracy": acc, "lut_equivalents": lut, "dsp": dsp, "test_accuracy": acc - 0.01}))
    data = write_front(cfg, study)
    assert [r["trial"] for r in data["front"]] == [0, 3, 1]  # trial 2 is beaten by trial 1 on every axis
    text = format_table(data["front"], data["objectives"])
    assert text.splitlines()[1].split()[:4] == ["0", "0.9700", "9,000", "0"]
    assert (cfg.run_dir / "sweep" / "pareto.png").stat().st_size > 1000
    (tmp_path / "page").mkdir()
    blocks = sweep_section(type("Run", (), {"cfg": cfg})(), Figures(tmp_path / "page"))
    html = render_page(cfg, {"sweep": blocks})
    assert "<img" in html and "quantize.layers.conv2.bits" in html


def test_journal_storage_fails_a_silent_trial_and_queues_it_again(tmp_path, monkeypatch):
    """The journal file (a shared file system's storage) gets the heartbeats Optuna's SQL storage has."""
    import optuna
    from optuna.trial import TrialState

    from fpgaprune.config import parse_config
    from fpgaprune.sweep import storage as storage_module
    from fpgaprune.sweep.launch import open_checked
    from fpgaprune.sweep.worker import Heartbeat

    cfg = parse_config(sweep_data(tmp_path, "journal"))
    url = f"journal:{tmp_path / 'sweep.log'}"
    storage, study = open_checked(cfg, url)
    trial = study.ask()
    trial.suggest_int("quantize.layers.conv2.bits", 3, 8)
    with Heartbeat(storage, trial._trial_id):
        optuna.storages.fail_stale_trials(study)
        assert study.get_trials()[0].state == TrialState.RUNNING  # alive
    later = storage_module.time.time() + 100  # the worker died: no heartbeat for 100 s
    monkeypatch.setattr(storage_module.time, "time", lambda: later)
    optuna.storages.fail_stale_trials(study)
    failed, retry = open_checked(cfg, url)[1].get_trials()
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.params == failed.params and retry.system_attrs["failed_trial"] == 0
