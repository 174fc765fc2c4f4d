"""Run folders under stress: concurrent processes, signals, full and read-only disks,
divergence, config mistakes, sb3-contrib zips, the installed wheel and thread defaults.

Everything runs for real: ``brims-rl`` in subprocesses, real SIGTERM / SIGKILL, a small
tmpfs and a read-only bind mount (as root; skipped with the reason otherwise).
Training runs use the small ``BrimsRL/CueMemory-v0`` task with a tiny BRIMs core.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from test_cli import cli as _cli
from test_cli import ok

PYTHON = sys.executable
# Generous: the suite may share its 2 cores with other jobs, and every process imports torch.
TIMEOUT = 900
CUE = "BrimsRL/CueMemory-v0"
# 2 envs x 32 steps per rollout; a tiny core. Steps of a run are multiples of 64.
TINY = (
    "--env", CUE, "--n-envs", "2", "--no-progress-bar", "--threads", "1",
    "--set", "n_steps=32", "--set", "batch_size=32", "--set", "n_epochs=1",
    "--set", "policy_kwargs.hidden_size=24", "--set", "eval_episodes=2",
)
LONG = ("--timesteps", "10000000")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return _cli(*args, cwd=cwd, timeout=TIMEOUT)


def start(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """``brims-rl ARGS`` running in the background (text pipes)."""
    return subprocess.Popen(
        [PYTHON, "-m", "agents.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    """Poll ``condition()`` until true; fail if ``process`` ends first or time runs out."""
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"process ended early ({process.returncode}):\n{out}\n{err}")
        if time.time() > deadline:
            process.kill()
            pytest.fail("timed out waiting")
        time.sleep(0.2)


def checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("model_*_steps.zip"), key=lambda p: int(p.name.split("_")[1]))


def one_line_error(process: subprocess.CompletedProcess, code: int, *named: str) -> str:
    """The process failed with ``code`` and one line on stderr that names every string in ``named``."""
    assert process.returncode == code, f"exit {process.returncode}\nstdout:\n{process.stdout}\nstderr:\n{process.stderr}"
    assert "Traceback" not in process.stderr, process.stderr
    errors = [line for line in process.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, process.stderr
    for text in named:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]


def all_finite(zip_path: Path) -> bool:
    import brims_rl

    model = brims_rl.load(zip_path, device="cpu")
    return all(torch.isfinite(p).all() for p in model.policy.parameters())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 256-step run in a folder whose path holds a space; and what train printed."""
    root = tmp_path_factory.mktemp("runs") / "my runs"
    out = ok(cli("train", *TINY, "--timesteps", "256", "--run-dir", str(root), "--name", "done",
                 "--set", "eval_freq=128", "--set", "checkpoint_freq=64"))
    return root / "done", out


# --------------------------------------------------------------------------- 1. concurrency


@pytest.mark.slow
def test_concurrent_runs_never_share_a_folder(tmp_path: Path) -> None:
    """Two default-named runs started together get their own folders; two runs given the same
    --name at once: one trains, the other is refused and leaves the winner's folder intact."""
    short = (*TINY, "--timesteps", "128", "--set", "eval_freq=0", "--set", "checkpoint_freq=64")
    seeds = [start("train", *short, "--run-dir", str(tmp_path / "default"), "--seed", str(s)) for s in (0, 1)]
    named = [start("train", *short, "--run-dir", str(tmp_path / "named"), "--name", "same", "--seed", str(s))
             for s in (0, 1)]
    results = [(p, *p.communicate(timeout=TIMEOUT)) for p in seeds + named]
    for process, out, err in results[:2]:
        assert process.returncode == 0, err
    folders = sorted((tmp_path / "default").iterdir())
    assert len(folders) == 2
    from agents.config import TrainConfig

    assert sorted(TrainConfig.load(f / "config.yaml").seed for f in folders) == [0, 1]
    for folder in folders:
        rows = (folder / "monitor.csv").read_text().splitlines()
        assert rows[0].startswith("#") and rows[1] == "r,l,t" and not any(r.startswith("#") for r in rows[2:])
    codes = sorted(process.returncode for process, _, _ in results[2:])
    assert codes == [0, 2], [err for _, _, err in results[2:]]
    refused = next(err for process, _, err in results[2:] if process.returncode == 2)
    assert "Traceback" not in refused and "same" in refused
    winner = next(process for process, _, _ in results[2:] if process.returncode == 0)
    config = TrainConfig.load(tmp_path / "named" / "same" / "config.yaml")
    assert config.seed == named.index(winner)
    assert [p.name for p in checkpoints(tmp_path / "named" / "same")] == ["model_64_steps.zip", "model_128_steps.zip"]
    assert not temp_files(tmp_path)


@pytest.mark.slow
def test_a_training_folder_is_locked_and_the_lock_dies_with_the_process(tmp_path: Path) -> None:
    run = tmp_path / "busy"
    holder = start("train", *TINY, *LONG, "--run-dir", str(tmp_path), "--name", "busy", "--set", "checkpoint_freq=64")
    wait_for(lambda: bool(checkpoints(run)), holder)

    again = cli("train", *TINY, "--run-dir", str(tmp_path), "--name", "busy")
    one_line_error(again, 2, "busy", f"pid {holder.pid}")
    resume = cli("train", "--resume", str(run), "--timesteps", "20000000", "--threads", "1")
    one_line_error(resume, 2, f"pid {holder.pid}")

    holder.kill()  # SIGKILL: nothing runs in the process, the OS drops its lock
    holder.communicate(timeout=60)
    steps = int(checkpoints(run)[-1].name.split("_")[1])
    ok(cli("train", "--resume", str(run), "--timesteps", str(steps + 64), "--no-progress-bar", "--threads", "1"))
    from agents.train import saved_num_timesteps

    assert saved_num_timesteps(run / "model.zip") == steps + 64


# --------------------------------------------------------------------------- 2. SIGTERM


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path: Path) -> None:
    root = tmp_path / "with space"
    run = root / "stop"
    process = start("train", *TINY, *LONG, "--run-dir", str(root), "--name", "stop", "--set", "checkpoint_freq=64")
    wait_for(lambda: bool(checkpoints(run)), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    assert f"resume with: brims-rl train --resume {shlex.quote(str(run))}" in err
    saved = Path(shlex.split(re.search(r"checkpoint saved to (.*)$", err, re.M).group(1))[0])
    assert saved == checkpoints(run)[-1] and all_finite(saved)
    assert not (run / "model.zip").exists() and not temp_files(run)
    steps = int(saved.name.split("_")[1])
    ok(cli("train", "--resume", str(run), "--timesteps", str(steps + 64), "--no-progress-bar", "--threads", "1"))


def test_a_run_folder_without_a_checkpoint_resumes_from_step_0(tmp_path: Path) -> None:
    from agents.config import resolve_config
    from agents.train import saved_num_timesteps

    run = tmp_path / "killed early"
    run.mkdir()
    config = resolve_config("ppo", "brims", CUE, total_timesteps=64, n_envs=2,
                            overrides=["n_steps=32", "batch_size=32", "n_epochs=1", "policy_kwargs.hidden_size=24",
                                       "eval_freq=0"])
    config.save(run / "config.yaml")
    out = ok(cli("train", "--resume", str(run), "--no-progress-bar", "--threads", "1"))
    assert "step 0" in out
    assert saved_num_timesteps(run / "model.zip") == 64


# --------------------------------------------------------------------------- 3. devices


def test_device_cuda_without_cuda_is_refused(tmp_path: Path) -> None:
    no_gpu = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a GPU machine too has no CUDA then
    for args in (("train", *TINY, "--timesteps", "64", "--device", "cuda", "--run-dir", str(tmp_path)),
                 ("eval", str(tmp_path / "run"), "--device", "cuda:0")):
        process = subprocess.run([PYTHON, "-m", "agents.cli", *args], capture_output=True, text=True, env=no_gpu,
                                 timeout=TIMEOUT)
        one_line_error(process, 2, "cuda", "not available")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- 4. file-system errors


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator:
    """``mounts.tmpfs(kib)`` and ``mounts.read_only(folder)``: real mounts, removed afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a small tmpfs and a read-only bind mount")
    mounted: list[Path] = []

    def mount(*args: str) -> None:
        process = subprocess.run(["mount", *args], capture_output=True, text=True)
        if process.returncode != 0:
            pytest.skip(f"cannot mount here ({process.stderr.strip()})")
        mounted.append(Path(args[-1]))

    class Mounts:
        @staticmethod
        def tmpfs(kib: int) -> Path:
            target = tmp_path / f"tmpfs{len(mounted)}"
            target.mkdir()
            mount("-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(target))
            return target

        @staticmethod
        def read_only(folder: Path) -> Path:
            target = tmp_path / f"ro{len(mounted)}"
            target.mkdir()
            mount("--bind", "-o", "ro", str(folder), str(target))
            return target

    yield Mounts
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_read_only_run_dir_is_one_line(tmp_path: Path, mounts) -> None:
    source = tmp_path / "src"
    source.mkdir()
    read_only = mounts.read_only(source)
    process = cli("train", *TINY, "--timesteps", "64", "--run-dir", str(read_only))
    one_line_error(process, 1, str(read_only), "Read-only file system")


def test_full_disk_keeps_the_newest_good_checkpoint(mounts) -> None:
    # A checkpoint of the tiny model is about 1.1 MB: the third or fourth does not fit into 3 MiB.
    disk = mounts.tmpfs(3 * 1024)
    run = disk / "full"
    process = cli("train", *TINY, *LONG, "--run-dir", str(disk), "--name", "full",
                  "--set", "checkpoint_freq=64", "--set", "eval_freq=0")
    line = one_line_error(process, 1, "No space left on device")
    assert not temp_files(run), temp_files(run)
    saved = checkpoints(run)
    steps = [64 * k for k in range(1, len(saved) + 1)]
    assert [p.name for p in saved] == [f"model_{n}_steps.zip" for n in steps] and len(saved) >= 2
    assert line.endswith(repr(str(checkpoint_path(run, steps[-1] + 64))))  # the one that did not fit
    from agents.train import saved_num_timesteps

    assert saved_num_timesteps(saved[-1]) == steps[-1] and all_finite(saved[-1])


def checkpoint_path(run: Path, steps: int) -> Path:
    return run / "checkpoints" / f"model_{steps}_steps.zip"


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained models: ``pong`` and ``cue`` saved by plain ``sb3_contrib.RecurrentPPO`` with our
    BRIMs policies (the README's usage), ``ours`` by ``agents.RecurrentPPO`` (Pong)."""
    import sb3_contrib

    import brims_rl
    import envs
    from agents import RecurrentPPO

    folder = tmp_path_factory.mktemp("zips")
    pong = envs.make_env("pong", n_envs=1, seed=0)
    cue = envs.make_env(CUE, n_envs=2, seed=0)
    small = dict(hidden_size=24, num_modules=4, top_k=2)
    sb3_contrib.RecurrentPPO(brims_rl.CnnBrimsPolicy, pong, n_steps=16, batch_size=16, policy_kwargs=small
                             ).save(folder / "pong.zip")
    sb3_contrib.RecurrentPPO(brims_rl.MlpBrimsPolicy, cue, n_steps=16, batch_size=32, policy_kwargs=small
                             ).save(folder / "cue.zip")
    RecurrentPPO("CnnBrimsPolicy", pong, n_steps=16, batch_size=16, policy_kwargs=small).save(folder / "ours.zip")
    pong.close()
    cue.close()
    return {name: folder / f"{name}.zip" for name in ("pong", "cue", "ours")}


def test_record_and_analyze_into_read_only_out(tmp_path: Path, mounts, zips: dict[str, Path]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    read_only = mounts.read_only(source)
    video = read_only / "v.mp4"
    record = cli("record", str(zips["ours"]), "--env", "pong", "--out", str(video), "--max-steps", "5",
                 "--threads", "1")
    one_line_error(record, 1, str(video), "Read-only file system")
    analyze = cli("analyze", str(zips["ours"]), "--env", "pong", "--out", str(read_only / "an"),
                  "--max-steps", "5", "--threads", "1")
    one_line_error(analyze, 1, str(read_only / "an"), "Read-only file system")


def test_record_on_a_full_disk_reports_the_first_error(mounts, zips: dict[str, Path]) -> None:
    disk = mounts.tmpfs(64)
    (disk / "filler").write_bytes(b"\0" * (62 * 1024))  # about 2 KiB left
    video = disk / "v.mp4"
    process = cli("record", str(zips["ours"]), "--env", "pong", "--out", str(video), "--max-steps", "300",
                  "--threads", "1")
    one_line_error(process, 1, str(video), "No space left on device")
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


# --------------------------------------------------------------------------- 5. divergence


def test_divergence_saves_the_last_good_model(tmp_path: Path) -> None:
    run = tmp_path / "div"
    process = cli("train", *TINY, "--timesteps", "640", "--run-dir", str(tmp_path), "--name", "div",
                  "--set", "learning_rate=1e30", "--set", "eval_freq=0", "--set", "checkpoint_freq=0")
    assert process.returncode not in (0, 2), process.stderr
    assert "Traceback" not in process.stderr
    assert "diverged" in process.stderr and "step 64" in process.stderr, process.stderr
    saved = checkpoints(run)
    assert [p.name for p in saved] == ["model_64_steps.zip"] and all_finite(saved[0])
    assert str(saved[0]) in process.stderr
    assert not (run / "model.zip").exists()


# --------------------------------------------------------------------------- 6. smaller points


def main_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``brims-rl ARGS`` in this process; it must end with exit 2 and one line; return it."""
    from agents.cli import main

    threads = torch.get_num_threads()
    try:
        code = main(list(args))
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_config_mistakes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    pong_only = tmp_path / "pong_only.yaml"
    pong_only.write_text("pong: {common: {n_steps: 64}}\n")
    run_dir = ("--run-dir", str(tmp_path / "runs"))
    assert "is a directory" in main_error(capsys, "train", "--config", str(folder), *run_dir)
    assert str(binary) in main_error(capsys, "train", "--config", str(binary), *run_dir)
    assert "empty" in main_error(capsys, "train", "--config", str(empty), "--env", "CartPole-v1", "--timesteps", "64",
                                 *run_dir)
    err = main_error(capsys, "train", "--config", str(pong_only), "--env", "CartPole-v1", "--timesteps", "64", *run_dir)
    assert "CartPole-v1" in err and "default" in err
    err = main_error(capsys, "train", "--env", CUE, "--set", "env_kwargs.colour=3", *run_dir)
    assert "env_kwargs.colour" in err and "delay" in err
    err = main_error(capsys, "train", "--env", CUE, "--name", "../outside", *run_dir)
    assert "--name" in err and "../outside" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outside").exists()


def test_resume_below_the_run_steps_changes_nothing(
    finished_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "copy"
    shutil.copytree(finished_run[0], run)
    before = {p: p.read_bytes() for p in (run / "config.yaml", run / "model.zip")}
    err = main_error(capsys, "train", "--resume", str(run), "--timesteps", "100")
    assert "100" in err and "256" in err
    assert {p: p.read_bytes() for p in before} == before


def test_printed_commands_are_shell_quoted(finished_run: tuple[Path, str]) -> None:
    run, out = finished_run
    commands = [line.split(":", 1)[1] for line in out.splitlines() if line.strip().startswith(("Evaluate:", "Video:"))]
    assert len(commands) == 2
    for command in commands:
        assert shlex.split(command)[2] == str(run)
    config_comment = (run / "config.yaml").read_text().splitlines()[1]
    assert shlex.split(config_comment.lstrip("# "))[3] == str(run)


def test_resumed_evaluations_keep_the_run_schedule(finished_run: tuple[Path, str], tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(finished_run[0], run)
    with np.load(run / "evaluations.npz") as data:
        assert data["timesteps"].tolist() == [128, 256]
    ok(cli("train", "--resume", str(run / "checkpoints" / "model_64_steps.zip"), "--no-progress-bar", "--threads", "1"))
    # Every 128 steps of the run, not 64 + 128 k; the first session's evaluations after the
    # 64-step checkpoint are dropped and made again, not listed twice.
    with np.load(run / "evaluations.npz") as data:
        assert data["timesteps"].tolist() == [128, 256]


# --------------------------------------------------------------------------- 7. sb3-contrib zips


def test_plain_sb3_contrib_brims_zips_load_evaluate_record_and_analyze(
    zips: dict[str, Path], tmp_path: Path
) -> None:
    import sb3_contrib

    import brims_rl

    model = brims_rl.load(zips["pong"])
    assert type(model) is sb3_contrib.RecurrentPPO and isinstance(model.policy, brims_rl.CnnBrimsPolicy)
    out = ok(cli("eval", str(zips["cue"]), "--env", CUE, "--episodes", "2", "--threads", "1"))
    assert "over 2 episodes" in out
    ok(cli("record", str(zips["pong"]), "--env", "pong", "--out", str(tmp_path / "v.gif"), "--max-steps", "4",
           "--threads", "1"))
    ok(cli("analyze", str(zips["pong"]), "--env", "pong", "--out", str(tmp_path / "an"), "--max-steps", "4",
           "--threads", "1"))
    with np.load(tmp_path / "an" / "analysis.npz") as data:
        assert data["layer0_masks"].shape == (4, 1, 4) and (data["layer0_masks"].sum(-1) == 2).all()


# --------------------------------------------------------------------------- 8. the wheel


@pytest.mark.slow
def test_the_wheel_ships_configs_and_trains_from_another_folder(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    source = tmp_path / "source"  # pip builds in place: keep build/ and *.egg-info out of the repository
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(".*", "tests", "runs", "build", "*.egg-info",
                                                                 "__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("brims_rl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {"agents/configs/ppo.yaml", "agents/configs/a2c.yaml"} <= set(names)

    # A fresh venv that borrows the project's dependencies (torch, SB3, ...) but not its code.
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python*/site-packages"))
    import stable_baselines3

    (site / "project_deps.pth").write_text(str(Path(stable_baselines3.__file__).parent.parent) + "\n")
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    process = subprocess.run(
        [venv / "bin" / "brims-rl", "train", *TINY, "--timesteps", "256", "--name", "w",
         "--set", "eval_freq=0"],
        capture_output=True, text=True, cwd=elsewhere, env=clean, timeout=TIMEOUT,
    )
    assert process.returncode == 0, process.stderr
    config = (elsewhere / "runs" / "w" / "config.yaml").read_text()
    assert str(site / "agents" / "configs" / "ppo.yaml") in config


# --------------------------------------------------------------------------- 9. threads


def test_inference_commands_default_to_one_thread(zips: dict[str, Path], capsys) -> None:
    from agents.cli import main

    threads = torch.get_num_threads()
    env = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        torch.set_num_threads(2)
        assert main(["eval", str(zips["cue"]), "--env", CUE, "--episodes", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
        if env is not None:
            os.environ["OMP_NUM_THREADS"] = env
    capsys.readouterr()
    for command in ("train", "eval", "record", "analyze"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert re.search(r"--threads N .*default", text), text
