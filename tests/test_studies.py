"""Studies, tuning and reports (``brims-rl study / tune / report``) and the MinAtar tier.

Real parts throughout: the ``brims-rl`` CLI in subprocesses, Optuna's RDB storage on a SQLite
file and on a throwaway PostgreSQL server (Debian's ``postgresql`` package, started here as a
non-root user in a temp folder and stopped at the end), SIGKILL, MinAtar's own games.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml

from test_cli import THREADS, cli as _cli, ok

optuna = pytest.importorskip("optuna", reason="the studies extra is not installed: pip install 'brims-rl[studies]'")

# A point trains in seconds: 2 envs x 32 steps per rollout, the MLP baselines on CueMemory.
TINY_SET = {"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1, "eval_freq": 128, "eval_episodes": 2,
            "checkpoint_freq": 128}


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, with room for a machine that other jobs keep busy."""
    return _cli(*args, timeout=900, **kwargs)


def write_spec(path: Path, **fields) -> Path:
    spec = dict(name="tiny", envs=["BrimsRL/CueMemory-v0"], policies=["cnn", "lstm"], seeds=[0, 1], timesteps=256,
                set=dict(TINY_SET))
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec))
    return path


def study_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agents.cli", "study", *args]


def trials_of(url: str, name: str) -> list:
    study = optuna.load_study(study_name=name, storage=url)
    return study.get_trials(deepcopy=False)


def monitor_frame(run: Path):
    from stable_baselines3.common.monitor import load_results

    return load_results(str(run))


def saved_steps(zip_path: Path) -> int:
    from agents.run_folder import saved_num_timesteps

    return saved_num_timesteps(zip_path)


def assert_each_point_ran_once(url: str, name: str, points: list[str]) -> dict[str, list]:
    """Every point has exactly one COMPLETE trial; returns the trials by point."""
    from optuna.trial import TrialState

    by_point: dict[str, list] = {}
    for trial in trials_of(url, name):
        by_point.setdefault(trial.user_attrs["point"], []).append(trial)
    assert sorted(by_point) == sorted(points)
    for point, trials in by_point.items():
        assert [t.state for t in trials].count(TrialState.COMPLETE) == 1, (point, [t.state for t in trials])
    return by_point


def assert_run_folder_complete(run: Path, steps: int) -> None:
    assert saved_steps(run / "model.zip") == steps
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["hyperparams"]["total_timesteps"] == steps
    lengths = monitor_frame(run)["l"].to_numpy()
    assert 0 < lengths.sum() <= steps  # no game counted twice: their lengths cannot add up past the steps trained
    with np.load(run / "evaluations.npz") as evaluations:
        timesteps = evaluations["timesteps"].tolist()
    assert timesteps == sorted(set(timesteps)) and timesteps[-1] <= steps


# --------------------------------------------------------------------------- one SQLite study, shared


@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two workers started at the same moment split a 4-point grid on one SQLite study."""
    root = tmp_path_factory.mktemp("study")
    spec = write_spec(root / "tiny.yaml")
    study_dir = root / "tiny"
    workers = [subprocess.Popen(study_cmd(str(spec), "--dir", str(study_dir), "--heartbeat", "2", *THREADS),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root) for _ in range(2)]
    outputs = [worker.communicate(timeout=900) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, f"{out}\n{err}"
    (root / "pids.json").write_text(json.dumps([w.pid for w in workers]))
    return study_dir


def test_two_workers_on_sqlite_split_the_grid_and_each_point_runs_once(sqlite_study: Path) -> None:
    url = f"sqlite:///{sqlite_study / 'study.db'}"
    points = ["brimsrl-cuememory-v0_cnn_s0", "brimsrl-cuememory-v0_cnn_s1", "brimsrl-cuememory-v0_lstm_s0",
              "brimsrl-cuememory-v0_lstm_s1"]
    by_point = assert_each_point_ran_once(url, "tiny", points)
    assert all(len(trials) == 1 for trials in by_point.values())  # nothing failed, nothing retried
    pids = json.loads((sqlite_study.parent / "pids.json").read_text())
    assert {trials[0].user_attrs["pid"] for trials in by_point.values()} == set(pids)  # both workers took points
    for point in points:
        run = sqlite_study / "runs" / point
        assert_run_folder_complete(run, 256)
        assert by_point[point][0].value == pytest.approx(_final_score_by_hand(run, 256))
    assert sorted(p.name for p in (sqlite_study / "runs").iterdir()) == points


def _final_score_by_hand(run: Path, total: int) -> float:
    """The report's final score, recomputed from monitor.csv with the csv module."""
    import csv

    with (run / "monitor.csv").open() as file:
        next(file)
        rows = list(csv.DictReader(file))
    steps = np.cumsum([int(row["l"]) for row in rows])
    scores = np.array([float(row["r"]) for row in rows])
    late = steps > 0.9 * total
    return float(scores[late].mean()) if late.any() else float(scores[-1])


def test_running_a_finished_study_again_does_nothing_and_says_so(sqlite_study: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in sqlite_study.rglob("*") if p.is_file() and p.name != "study.db"}
    trials = len(trials_of(f"sqlite:///{sqlite_study / 'study.db'}", "tiny"))
    out = ok(cli("study", str(sqlite_study.parent / "tiny.yaml"), "--dir", str(sqlite_study), *THREADS))
    assert "all 4 points have already finished" in out and "nothing to do" in out
    assert len(trials_of(f"sqlite:///{sqlite_study / 'study.db'}", "tiny")) == trials
    after = {p: p.stat().st_mtime_ns for p in before}
    changed = [p for p in before if after[p] != before[p] and p.name != "study.yaml"]
    assert not changed


def test_report_writes_table_csv_and_plot_matching_the_monitor_files(sqlite_study: Path) -> None:
    import csv

    out = ok(cli("report", str(sqlite_study)))
    report = sqlite_study / "report"
    table = (report / "report.md").read_text()
    assert table in out
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("cnn", "lstm"):
            rows[cells[0]] = cells
    assert sorted(rows) == ["cnn", "lstm"]
    for policy, cells in rows.items():
        finals = [_final_score_by_hand(sqlite_study / "runs" / f"brimsrl-cuememory-v0_{policy}_s{s}", 256) for s in (0, 1)]
        assert cells[1] == "2"
        assert cells[2] == f"{np.mean(finals):.2f} +/- {np.std(finals):.2f}"
        assert cells[4] == f"{np.mean(finals):.2f}"  # the IQM of two runs is their mean
        assert cells[6] == ", ".join(f"{v:.2f}" for v in finals)
        low, high = (float(v) for v in cells[5].strip("[]").split(","))
        assert low == pytest.approx(min(finals), abs=0.006) and high == pytest.approx(max(finals), abs=0.006)
    with (report / "curves.csv").open() as file:
        curve_rows = list(csv.DictReader(file))
    for run in (sqlite_study / "runs").iterdir():
        monitor = monitor_frame(run)
        mine = [r for r in curve_rows if r["run"] == run.name]
        assert [float(r["score"]) for r in mine] == monitor["r"].tolist()
        assert [int(r["steps"]) for r in mine] == np.cumsum(monitor["l"]).tolist()
    png = report / "curves_brimsrl-cuememory-v0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (700, 450)


def test_report_statistics() -> None:
    from agents.report import bootstrap_interval, final_score, iqm

    assert iqm([1, 2, 3, 4, 100, -100, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    low, high = bootstrap_interval([1.0, 2.0, 3.0, 4.0, 5.0], np.mean)
    assert 1.0 <= low < 3.0 < high <= 5.0
    assert all(math.isnan(v) for v in bootstrap_interval([3.0], np.mean))
    assert final_score(np.array([10, 50, 95, 100]), np.array([1.0, 2.0, 3.0, 5.0]), 100) == 4.0
    assert final_score(np.array([10, 50]), np.array([1.0, 2.0]), 100) == 2.0


@pytest.mark.parametrize(
    "fields, named",
    [
        (dict(sedes=[0]), "sedes"),
        (dict(envs=["MinAtar/Pacman-v1"]), "MinAtar/Pacman-v1"),
        (dict(envs=["NoSuchEnv-v0"]), "NoSuchEnv-v0"),
        (dict(policies=["transformer"]), "transformer"),
        (dict(set={"n_stepz": 4}), "n_stepz"),
        (dict(envs=[{"env": "BrimsRL/CueMemory-v0", "lable": "x"}]), "lable"),
    ],
)
def test_bad_spec_is_one_clear_line(fields: dict, named: str, tmp_path: Path) -> None:
    process = cli("study", str(write_spec(tmp_path / "bad.yaml", **fields)), "--dir", str(tmp_path / "s"))
    assert process.returncode == 2, process.stderr
    assert named in process.stderr and len(process.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_unreachable_storage_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = cli("study", str(write_spec(tmp_path / "s.yaml")), "--storage", f"postgresql://me:secret@127.0.0.1:{port}/db")
    assert process.returncode == 2, process.stderr
    line = process.stderr.strip()
    assert len(line.splitlines()) == 1 and "cannot open storage" in line and str(port) in line
    assert "secret" not in line


def test_a_name_holding_another_grid_is_refused(sqlite_study: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "other.yaml", seeds=[0, 1, 2])
    process = cli("study", str(spec), "--dir", str(sqlite_study), "--storage", f"sqlite:///{sqlite_study / 'study.db'}")
    assert process.returncode == 2, process.stderr
    assert "exists with a different grid" in process.stderr and "tiny" in process.stderr
    assert "_s2" in process.stderr and len(process.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_binaries() -> tuple[str, str] | None:
    for folder in [os.path.dirname(shutil.which("initdb") or "")] + sorted(glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if folder and os.path.exists(f"{folder}/initdb") and os.path.exists(f"{folder}/pg_ctl"):
            return f"{folder}/initdb", f"{folder}/pg_ctl"
    return None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (a user other than root runs it); yields its base URL."""
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    initdb, pg_ctl = binaries
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
        pytest.skip("no PostgreSQL driver (psycopg or psycopg2) is installed: pip install 'brims-rl[postgresql]'")
    # Not under pytest's temp root: that stays private to root, and the server's user must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="brims-rl-pg-"))
    data = root / "data"
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())

    def as_owner() -> None:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)

    os.chown(root, owner.pw_uid, owner.pw_gid)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = dict(preexec_fn=as_owner, capture_output=True, text=True, env={**os.environ, "HOME": str(root)}, cwd=root)
    done = subprocess.run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"], **run)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {done.stderr}")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    done = subprocess.run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "-t", "300", "start"], **run)
    if done.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], **run)
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {done.stderr} {log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], **run)
        shutil.rmtree(root, ignore_errors=True)


def new_database(base: str, name: str) -> str:
    from sqlalchemy import create_engine, text

    from agents.study import _with_installed_postgresql_driver

    engine = create_engine(_with_installed_postgresql_driver(f"{base}/postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{base}/{name}"


def _lock_holder(run: Path) -> int | None:
    try:
        return json.loads((run / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_postgres_workers_share_the_grid_and_a_killed_workers_point_is_retried(postgres: str, tmp_path: Path) -> None:
    url = new_database(postgres, "killtest")
    steps = 1024
    spec = write_spec(tmp_path / "pg.yaml", name="pg", policies=["lstm"], seeds=[0, 1, 2], timesteps=steps,
                      set=dict(TINY_SET, eval_freq=256, checkpoint_freq=128))
    study_dir = tmp_path / "pg"
    command = study_cmd(str(spec), "--storage", url, "--dir", str(study_dir), "--heartbeat", "1", *THREADS)
    workers, logs = {}, {}
    for i in range(2):  # started at the same moment
        with (tmp_path / f"worker{i}.log").open("w") as log:
            worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        workers[worker.pid], logs[worker.pid] = worker, tmp_path / f"worker{i}.log"
    try:
        # Kill a worker in the middle of a point: after its first checkpoint, before its model.zip.
        victim, victim_run, deadline = None, None, time.monotonic() + 1500
        while victim is None and time.monotonic() < deadline and all(w.poll() is None for w in workers.values()):
            for run in sorted((study_dir / "runs").glob("*")) if (study_dir / "runs").is_dir() else []:
                holder = _lock_holder(run)
                if holder in workers and list(run.glob("checkpoints/*.zip")) and not (run / "model.zip").exists():
                    victim, victim_run = workers[holder], run
                    break
            time.sleep(0.2)
        assert victim is not None, "no worker was caught mid-point:\n" + "\n".join(p.read_text() for p in logs.values())
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        (survivor,) = [w for w in workers.values() if w is not victim]
        survivor.wait(timeout=1500)
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    out = logs[survivor.pid].read_text()
    assert survivor.returncode == 0, out
    assert f"{victim_run.name} (retry)" in out

    points = [f"brimsrl-cuememory-v0_lstm_s{s}" for s in range(3)]
    by_point = assert_each_point_ran_once(url, "pg", points)
    from optuna.trial import TrialState

    killed = by_point[victim_run.name]
    assert [t.state for t in killed] == [TrialState.FAIL, TrialState.COMPLETE]
    assert killed[1].system_attrs["failed_trial"] == killed[0].number
    assert killed[1].user_attrs["pid"] == survivor.pid
    assert all(len(by_point[p]) == 1 for p in points if p != victim_run.name)  # the others ran once
    for point in points:
        assert_run_folder_complete(study_dir / "runs" / point, steps)

    # Everything finished: the same command again does nothing and says so.
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "all 3 points have already finished" in again.stdout and "nothing to do" in again.stdout
    assert len(trials_of(url, "pg")) == 4
    ok(cli("report", "--storage", url, "--study-name", "pg"))
    assert (study_dir / "report" / "report.md").is_file()


# --------------------------------------------------------------------------- tune


def test_tune_three_tiny_trials_write_a_config_train_accepts(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"cnn": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                             "n_epochs": {"type": "int", "low": 1, "high": 2}}}))
    tune_dir = tmp_path / "tune"
    sets = [f"--set={k}={v}" for k, v in dict(TINY_SET, eval_freq=64).items() if k != "n_epochs"]
    out = ok(cli("tune", "--env", "BrimsRL/CueMemory-v0", "--policy", "cnn", "--trials", "3", "--timesteps", "256",
                 "--space", str(space), "--dir", str(tune_dir), *sets, *THREADS))
    url = f"sqlite:///{tune_dir / 'study.db'}"
    from optuna.trial import TrialState

    trials = trials_of(url, "tune_ppo_cnn_brimsrl-cuememory-v0")
    assert len(trials) == 3 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in trials:
        assert sorted(trial.intermediate_values) == [64, 128, 192, 256][: len(trial.intermediate_values)]
        with np.load(Path(trial.user_attrs["run_dir"]) / "evaluations.npz") as evaluations:
            means = evaluations["results"].mean(axis=1)
        assert list(trial.intermediate_values.values()) == pytest.approx(means.tolist())
        if trial.state == TrialState.PRUNED:
            assert len(trial.intermediate_values) < 4
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    config_path = tune_dir / "best_config.yaml"
    assert f"best trial {best.number}" in out and str(config_path) in out
    best_config = yaml.safe_load((Path(best.user_attrs["run_dir"]) / "config.yaml").read_text())["hyperparams"]
    assert best_config["learning_rate"] == pytest.approx(best.params["learning_rate"])
    assert best_config["n_epochs"] == best.params["n_epochs"]
    ok(cli("train", "--config", str(config_path), "--env", "BrimsRL/CueMemory-v0", "--policy", "cnn",
           "--run-dir", str(tmp_path), "--name", "from_best", "--no-progress-bar", *THREADS))
    trained = yaml.safe_load((tmp_path / "from_best" / "config.yaml").read_text())["hyperparams"]
    assert trained == best_config
    # The study is full: the same command again runs no trial.
    again = ok(cli("tune", "--env", "BrimsRL/CueMemory-v0", "--policy", "cnn", "--trials", "3", "--timesteps", "256",
                   "--space", str(space), "--dir", str(tune_dir), *sets, *THREADS))
    assert "nothing to do" in again and len(trials_of(url, "tune_ppo_cnn_brimsrl-cuememory-v0")) == 3


def test_tune_bad_space_is_one_clear_line(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"learning_rate": {"type": "gaussian", "mean": 1e-3}}))
    process = cli("tune", "--env", "BrimsRL/CueMemory-v0", "--policy", "cnn", "--trials", "1", "--space", str(space),
                  "--dir", str(tmp_path / "t"))
    assert process.returncode == 2 and "learning_rate" in process.stderr and "gaussian" in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- a retried point's run folder


def test_resuming_before_the_last_evaluations_drops_them(tmp_path: Path) -> None:
    """A worker killed after an evaluation that followed its last checkpoint: the retry resumes
    from that checkpoint and evaluates those steps again; evaluations.npz must not hold them twice."""
    import torch

    from agents.config import resolve_config
    from agents.train import train

    overrides = [f"{k}={v}" for k, v in dict(TINY_SET, eval_freq=64, checkpoint_freq=128).items()]
    config = resolve_config("ppo", "cnn", "BrimsRL/CueMemory-v0", overrides=overrides, total_timesteps=256)
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, run, progress_bar=False)
        (run / "model.zip").unlink()  # as if killed at step 256, before its last checkpoint and model
        (run / "checkpoints" / "model_256_steps.zip").unlink()
        with np.load(run / "evaluations.npz") as before:
            assert before["timesteps"].tolist() == [64, 128, 192, 256]
        train(config, run, resume_from=run, progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    with np.load(run / "evaluations.npz") as after:
        assert after["timesteps"].tolist() == [64, 128, 192, 256]
        assert after["results"].shape == (4, 2)


def test_help_on_the_study_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from agents.cli import main

    for command in ("study", "tune", "report"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"brims-rl {command}" in capsys.readouterr().out.split("examples:")[1]
