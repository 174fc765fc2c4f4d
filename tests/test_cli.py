"""End-to-end tests of the ``brims-rl`` command line, driven in subprocesses.

One tiny BRIMs-PPO run on Pong (2 envs, 256 steps, games cut at 100 agent steps) is trained
once per module; the other tests resume, evaluate, analyse and film it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from agents.config import TrainConfig, resolve_config

# Keep each CLI process to one torch thread: the suite shares 2 cores.
THREADS = ("--threads", "1")
# A run small enough for seconds: 2 envs x 32 steps, 4 rollouts; max_episode_steps=400 emulator
# frames = 100 agent steps, so Pong games (and so evaluations) end quickly.
TINY = (
    "--n-envs", "2", "--timesteps", "256", "--no-progress-bar",
    "--set", "n_steps=32", "--set", "batch_size=32", "--set", "n_epochs=1",
    "--set", "policy_kwargs.hidden_size=24", "--set", "max_episode_steps=400",
    "--set", "eval_freq=128", "--set", "eval_episodes=1", "--set", "checkpoint_freq=128",
    "--set", "activation_log_interval=1",
)


def cli(*args: str, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python -m agents.cli ARGS`` and return the finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def ok(process: subprocess.CompletedProcess) -> str:
    assert process.returncode == 0, f"exit {process.returncode}\nstdout:\n{process.stdout}\nstderr:\n{process.stderr}"
    return process.stdout


def scalars(event_file: Path, tag: str) -> dict[int, float]:
    """``{step: value}`` of one scalar tag, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}


@contextmanager
def one_torch_thread():
    """In-process play with the thread count the CLI runs use (``--threads 1``): same floats."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    ok(cli("train", "--env", "PongNoFrameskip-v4", "--run-dir", str(root), "--name", "tiny", *TINY, *THREADS))
    return root / "tiny"


# --------------------------------------------------------------------------- train


def test_train_writes_a_complete_run_folder(run_dir: Path) -> None:
    from stable_baselines3.common.monitor import load_results

    from agents.train import saved_num_timesteps

    for name in ("config.yaml", "model.zip", "best_model.zip", "evaluations.npz", "monitor.csv"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["model_128_steps.zip", "model_256_steps.zip"]
    assert not list(run_dir.rglob(".*tmp*")), "temp files left behind"
    assert saved_num_timesteps(run_dir / "model.zip") == 256

    config = TrainConfig.load(run_dir / "config.yaml")
    assert (config.algo, config.policy, config.env_id) == ("ppo", "brims", "PongNoFrameskip-v4")
    assert config.hyperparams["n_envs"] == 2 and config.hyperparams["policy_kwargs"]["hidden_size"] == 24

    # Raw game scores, one row per game (cut at 100 agent steps), not per life / clipped reward.
    monitor = load_results(str(run_dir))
    assert len(monitor) == 2 and (monitor["l"] == 100).all()
    assert monitor["r"].between(-21, 21).all()

    with np.load(run_dir / "evaluations.npz") as evaluations:
        assert evaluations["timesteps"].tolist() == [128, 256]
        assert evaluations["ep_lengths"].tolist() == [[100], [100]]

    event_files = list((run_dir / "tb" / "run_1").glob("events.out.tfevents.*"))
    assert len(event_files) == 1
    learning_rate = scalars(event_files[0], "train/learning_rate").values()
    # lin_2.5e-4 over 256 steps: the update after the rollout ending at step 64 used 2.5e-4 * (1 - 64/256).
    assert pytest.approx(2.5e-4 * 0.75, rel=1e-4) in list(learning_rate)
    assert set(scalars(event_files[0], "eval/mean_reward")) == {128, 256}


def test_resume_continues_steps_schedules_and_tensorboard(run_dir: Path, tmp_path: Path) -> None:
    from agents.train import resolve_resume, saved_num_timesteps

    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    # The newest model: model.zip and the last checkpoint both hold 256 steps; the tie goes to model.zip.
    assert resolve_resume(run)[1] == run / "model.zip"
    out = ok(cli("train", "--resume", str(run / "checkpoints" / "model_128_steps.zip"), "--no-progress-bar", *THREADS))
    assert "Resuming" in out
    assert saved_num_timesteps(run / "model.zip") == 256

    assert not (run / "tb" / "run_2").exists(), "a resumed run must continue its TensorBoard run"
    event_files = sorted((run / "tb" / "run_1").glob("events.out.tfevents.*"), key=os.path.getmtime)
    assert len(event_files) == 2
    learning_rate = scalars(event_files[-1], "train/learning_rate")
    # Steps continue from 128, and the schedule from where it was: the update after the rollout
    # ending at 192 uses 2.5e-4 * (1 - 192/256); a restarted one would use 2.5e-4 * (1 - 64/128).
    assert min(learning_rate) >= 192
    assert pytest.approx(2.5e-4 * 0.25, rel=1e-4) in list(learning_rate.values())
    assert pytest.approx(2.5e-4 * 0.5, rel=1e-4) not in list(learning_rate.values())
    # The history up to the checkpoint is kept; the evaluation at 256 made by weights the resumed
    # run no longer has is dropped, and made again.
    with np.load(run / "evaluations.npz") as evaluations:
        assert evaluations["timesteps"].tolist() == [128, 256]


def monitor_rows(run: Path) -> list[str]:
    """The complete data rows of a run's monitor.csv (one per finished game); [] until its
    two header lines are there (a training run may be writing it right now)."""
    path = run / "monitor.csv"
    lines = path.read_text().split("\n") if path.is_file() else []
    if len(lines) < 3:
        return []
    assert lines[0].startswith("#") and lines[1] == "r,l,t", lines[:2]
    return [line for line in lines[2:-1]]  # the text after the last newline is a row being written


def test_resume_appends_monitor_and_keeps_a_better_best_model(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    # An earlier evaluation that no new one can beat (21 is Pong's top score): best_model.zip must stay.
    with np.load(run / "evaluations.npz") as evaluations:
        history = {key: evaluations[key] for key in evaluations.files}
    history["results"] = np.full_like(history["results"], 21.0)
    np.savez(run / "evaluations.npz", **history)
    best = (run / "best_model.zip").read_bytes()
    rows = monitor_rows(run)
    assert len(rows) == 2
    # 256 more steps: each of the 2 envs plays one more 100-step game; evaluations at 384 and 512.
    ok(cli("train", "--resume", str(run), "--timesteps", "512", "--no-progress-bar", *THREADS))
    new_rows = monitor_rows(run)  # also checks the header is still the file's first two lines, once
    assert new_rows[:2] == rows and len(new_rows) == 4
    assert [row.split(",")[1] for row in new_rows[2:]] == ["100", "100"]
    # One time origin for the whole run: the new games end after the old ones.
    assert min(float(row.split(",")[2]) for row in new_rows[2:]) > max(float(row.split(",")[2]) for row in rows)
    assert "r,l,t" not in "\n".join(new_rows)
    with np.load(run / "evaluations.npz") as evaluations:
        assert evaluations["timesteps"].tolist() == [128, 256, 384, 512]
        assert evaluations["results"][:2].tolist() == [[21.0], [21.0]]
        assert (evaluations["results"][2:] < 21).all()
    assert (run / "best_model.zip").read_bytes() == best


def test_resume_from_a_checkpoint_drops_the_games_played_after_it(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    rows = monitor_rows(run)
    assert [row.split(",")[1] for row in rows] == ["100", "100"]  # games ended at steps ~100 and ~200
    # Back to the 128-step checkpoint: the game that ended after it was played by weights the
    # resumed run no longer has; the 2 envs then play 64 steps each, too few to end a game.
    ok(cli("train", "--resume", str(run / "checkpoints" / "model_128_steps.zip"), "--timesteps", "256",
           "--no-progress-bar", *THREADS))
    assert monitor_rows(run) == rows[:1]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_at_the_interrupt_and_exits_130(tmp_path: Path) -> None:
    from agents.train import saved_num_timesteps

    run = tmp_path / "stop"
    # No periodic checkpoint can be written (checkpoint_freq is past the budget) and no
    # evaluation slows the run down: the only checkpoint can come from the interrupt.
    process = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "train", "--env", "pong", "--run-dir", str(tmp_path), "--name", "stop",
         *TINY, "--timesteps", "1000000", "--set", "checkpoint_freq=100000000", "--set", "eval_freq=0", *THREADS],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # A shell without job control starts background jobs with SIGINT ignored, and Python
        # keeps an ignored SIGINT ignored: give the run the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Wait on the run's own progress: both envs have finished a game (100 agent steps
        # each), so learn() is running and at least 200 steps are done.
        deadline = time.monotonic() + 240
        while len(monitor_rows(run)) < 2:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no game finished within 240 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:  # the test failed before the run ended: do not leave it training
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert f"resume with: brims-rl train --resume {run}" in err
    interrupted = re.search(r"Interrupted at (\d+) steps; checkpoint saved to (\S+)", err)
    assert interrupted, err
    steps = int(interrupted.group(1))
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [path.name for path in checkpoints] == [f"model_{steps}_steps.zip"]
    assert Path(interrupted.group(2)) == checkpoints[0]
    assert saved_num_timesteps(checkpoints[0]) == steps
    assert not (run / "model.zip").exists() and not list(run.rglob(".*tmp*"))
    # The checkpoint holds the moment of the interrupt: every env finishes a game each 100 of
    # its steps, so the games in monitor.csv pin the step count down to one game's length.
    games = len(monitor_rows(run))
    assert steps % 2 == 0 and steps >= 200
    assert 2 * (steps // 200) <= games <= 2 * ((steps + 2) // 200), (steps, games)


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo, policy, env, extra",
    [
        ("a2c", "brims", "BrimsRL/CueMemory-v0", ("--set", "n_steps=5", "--set", "policy_kwargs.hidden_size=24")),
        ("ppo", "cnn", "pong", ("--set", "n_steps=32", "--set", "batch_size=32", "--set", "max_episode_steps=400")),
    ],
)
def test_other_algorithms_and_policies_train_and_evaluate(algo, policy, env, extra, tmp_path: Path) -> None:
    ok(cli("train", "--algo", algo, "--policy", policy, "--env", env, "--run-dir", str(tmp_path), "--name", "r",
           "--n-envs", "2", "--timesteps", "64", "--set", "eval_freq=0", "--no-progress-bar", *extra, *THREADS))
    from agents.train import saved_num_timesteps
    from brims_rl import load

    run = tmp_path / "r"
    config = TrainConfig.load(run / "config.yaml")
    assert (config.algo, config.policy) == (algo, policy)
    if policy == "cnn":
        assert config.hyperparams["frame_stack"] == 4
        refused = cli("record", str(run), "--modules", "--out", str(tmp_path / "m.mp4"), *THREADS)
        assert refused.returncode == 2 and "--modules needs a BRIMs policy" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and not (tmp_path / "m.mp4").exists()
    # learn() stops at the first whole rollout (2 envs x n_steps) reaching 64 steps.
    rollout = 2 * {"a2c": 5, "ppo": 32}[algo]
    assert saved_num_timesteps(run / "model.zip") == -(-64 // rollout) * rollout
    model = load(run / "model.zip", device="cpu")
    expected = {"a2c": ("RecurrentA2C", "MlpBrimsPolicy"), "ppo": ("PPO", "ActorCriticCnnPolicy")}[algo]
    assert (type(model).__name__, type(model.policy).__name__) == expected
    assert model.n_envs == 2 and model.observation_space.shape == ((4, 84, 84) if policy == "cnn" else (3,))
    out = ok(cli("eval", str(run), "--episodes", "1", "--max-steps", "400", *THREADS))
    assert f"Model {run / 'model.zip'} on " in out
    (score,) = re.findall(r"episode 1: score (-?[\d.]+), length \d+", out)
    assert re.search(rf"mean score: {float(score):.2f} \+/- 0.00 over 1 episodes", out)


# --------------------------------------------------------------------------- eval / analyze / record


def test_eval_prints_raw_scores_with_robustness(run_dir: Path) -> None:
    from agents.evaluate import evaluate

    process = cli("eval", str(run_dir), "--episodes", "2", "--n-envs", "2", "--noise", "10", "--flicker", "0.3", *THREADS)
    out = ok(process)
    episodes = re.findall(r"episode \d+: score (-?\d+), length (\d+) \(time limit\)", out)
    assert len(episodes) == 2 and all(length == "100" for _, length in episodes)
    # Both games were cut by the 400-frame limit, not ended by the game: one line says so.
    assert re.search(r"warning: 2 of 2 episodes did not end but hit the env's time limit", process.stderr)
    mean, std, n = re.search(r"mean score: (-?[\d.]+) \+/- ([\d.]+) over (\d+) episodes", out).groups()
    scores = [float(score) for score, _ in episodes]
    assert float(mean) == pytest.approx(np.mean(scores), abs=0.01) and int(n) == 2
    # The CLI prints what the library computes for the same settings.
    with one_torch_thread():
        result = evaluate(run_dir, n_episodes=2, n_envs=2, device="cpu", noise=10, flicker=0.3)
    assert scores == result.stats.returns and result.stats.lengths == [100, 100]


def _wrapper_chain(env) -> dict[type, object]:
    from stable_baselines3.common.vec_env import VecEnvWrapper

    chain = {}
    while isinstance(env, VecEnvWrapper):
        chain[type(env)] = env
        env = env.venv
    return chain


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_robustness_options_reach_the_env_the_model_plays(command, run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """--noise / --flicker / --occlusion really wrap the env the command plays on (the real
    ``envs.make_env`` builds it; the test only keeps a reference to what it returned)."""
    import envs
    from agents.cli import main
    from envs.robustness import Flicker, GaussianNoise, Occlusion

    built = []
    make_env = envs.make_env

    def keep(*args, **kwargs):
        built.append(make_env(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(envs, "make_env", keep)
    args = [command, str(run_dir), "--episodes", "1", "--max-steps", "100"]
    args += ["--out", str(tmp_path / "analysis")] if command == "analyze" else []
    assert main([*args, "--noise", "20", "--flicker", "0.25", "--occlusion", "12"]) == 0
    (env,) = built
    chain = _wrapper_chain(env)
    assert {GaussianNoise, Flicker, Occlusion} <= set(chain), f"{command} played on {list(chain)}"
    assert chain[GaussianNoise].sigma == 20 and chain[Flicker].p == 0.25 and chain[Occlusion].size == 12
    # And without the options the run's clean env is played.
    built.clear()
    assert main(args) == 0
    (env,) = built
    assert not {GaussianNoise, Flicker, Occlusion} & set(_wrapper_chain(env))


def test_eval_best_and_stochastic(run_dir: Path, tmp_path: Path) -> None:
    import envs
    from agents import RecurrentPPO
    from agents.evaluate import evaluate

    out = ok(cli("eval", str(run_dir), "--best", "--episodes", "1", "--max-steps", "100", *THREADS))
    assert f"Model {run_dir / 'best_model.zip'} on PongNoFrameskip-v4" in out
    # An untrained policy on CartPole: greedy play repeats itself, sampling changes the game lengths.
    env = envs.make_env("CartPole-v1", n_envs=1, seed=0)
    RecurrentPPO("MlpBrimsPolicy", env, n_steps=16, batch_size=16, seed=0,
                 policy_kwargs=dict(hidden_size=24, num_modules=4, top_k=2)).save(tmp_path / "cartpole.zip")
    env.close()
    with one_torch_thread():
        greedy = evaluate(tmp_path / "cartpole.zip", "CartPole-v1", n_episodes=8, device="cpu").stats.lengths
    lengths = {}
    for mode in ("--deterministic", "--stochastic"):
        out = ok(cli("eval", str(tmp_path / "cartpole.zip"), "--env", "CartPole-v1", "--episodes", "8", mode,
                     "--device", "cpu", *THREADS))  # as `greedy`: an untrained policy's near-ties can break by device
        lengths[mode] = [int(n) for n in re.findall(r"episode \d+: score [\d.]+, length (\d+)", out)]
        assert len(lengths[mode]) == 8
    assert lengths["--deterministic"] == greedy
    assert lengths["--stochastic"] != greedy


def test_analyze_writes_npz_and_tensorboard(run_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "analysis"
    ok(cli("analyze", str(run_dir), "--episodes", "1", "--out", str(out_dir), *THREADS))
    with np.load(out_dir / "analysis.npz") as data:
        top_ks = TrainConfig.load(run_dir / "config.yaml").hyperparams["policy_kwargs"]["top_k"]
        assert data["top_k"].tolist() == list(top_ks) and len(top_ks) == 2
        for layer, top_k in enumerate(top_ks):
            masks = data[f"layer{layer}_masks"]
            assert masks.shape[1:] == (1, 6) and masks.shape[0] >= 100
            assert (masks.sum(-1) == top_k).all()  # exactly top_k of 6 active at every step
            assert data[f"layer{layer}_attention"].shape == (*masks.shape, 3)
    assert list(out_dir.glob("events.out.tfevents.*"))
    # --max-steps cuts a long analysis short, mid-episode.
    ok(cli("analyze", str(run_dir), "--episodes", "5", "--max-steps", "40", "--out", str(tmp_path / "short"), *THREADS))
    with np.load(tmp_path / "short" / "analysis.npz") as data:
        assert data["layer0_masks"].shape[0] == 40


def test_record_writes_a_decodable_mp4(run_dir: Path, tmp_path: Path) -> None:
    import imageio.v2 as imageio

    video = tmp_path / "pong.mp4"
    out = ok(cli("record", str(run_dir), "--out", str(video), "--max-steps", "30", *THREADS))
    assert "30 frames" in out
    reader = imageio.get_reader(video)
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == 30 and frames[0].shape == (210, 160, 3)
    assert not list(tmp_path.glob(".*tmp*"))


def test_record_modules_puts_the_module_panel_under_each_frame(run_dir: Path, tmp_path: Path) -> None:
    import imageio.v2 as imageio

    video = tmp_path / "modules.mp4"
    out = ok(cli("record", str(run_dir), "--out", str(video), "--max-steps", "5", "--modules", *THREADS))
    assert "5 frames" in out
    reader = imageio.get_reader(video)
    frames = [frame for frame in reader]
    reader.close()
    # The screen enlarged 3x (630 x 480) over the panel: 2 layers of 46 px and a 40 px legend.
    assert len(frames) == 5 and frames[0].shape == (630 + 2 * 46 + 40, 480, 3)


def test_record_gif_and_refuse_other_formats(run_dir: Path, tmp_path: Path) -> None:
    import imageio.v3 as iio
    from PIL import Image, ImageSequence

    from agents.record import record_video

    result = record_video(run_dir, tmp_path / "clip.gif", max_steps=8, fps=10)
    assert result.n_frames == 8 and iio.imread(result.path).shape[1:] == (210, 160, 3)
    # The GIF encoder merges identical consecutive frames into one longer frame, so the
    # play time, not the frame count, shows that all 8 frames at 10 fps are there.
    with Image.open(result.path) as gif:
        total_ms = sum(frame.info["duration"] for frame in ImageSequence.Iterator(gif))
    assert total_ms == pytest.approx(800, abs=10)
    with pytest.raises(ValueError, match=r"'\.webm'.*\.mp4, \.gif"):
        record_video(run_dir, tmp_path / "clip.webm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif"]


# --------------------------------------------------------------------------- the rest


def test_list_envs() -> None:
    import envs

    out = ok(cli("list-envs"))
    listed = set(out.split())
    games = envs.list_atari_games()
    assert {"pong", "breakout"} <= set(games) and set(games) <= listed
    assert {envs.CUE_MEMORY_ID, envs.MASKED_CARTPOLE_ID} <= listed


def test_help_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from agents.cli import main

    assert "train" in ok(cli("--help"))
    for command in ("train", "eval", "record", "analyze", "list-envs"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"brims-rl {command}" in capsys.readouterr().out.split("examples:")[1]


def _not_a_model(tmp_path: Path) -> str:
    path = tmp_path / "junk.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    return str(path)


def _run_with_broken_checkpoint(tmp_path: Path) -> str:
    """A run folder whose only checkpoint is a half-written file."""
    from agents.config import resolve_config

    run = tmp_path / "broken_run"
    (run / "checkpoints").mkdir(parents=True)
    resolve_config("ppo").save(run / "config.yaml")
    (run / "checkpoints" / "model_100_steps.zip").write_bytes(b"PK\x03\x04 truncated")
    return str(run)


@pytest.mark.parametrize(
    "args, named",
    [
        (("train", "--env", "NoSuchGame-v9"), "NoSuchGame-v9"),
        (("train", "--env", "pong", "--set", "n_stepz=5"), "n_stepz"),
        (("train", "--env", "pong", "--set", "learning_rate=fast"), "learning_rate"),
        (("train", "--env", "pong", "--set", "sequence_length=5"), "sequence_length"),
        (("train", "--algo", "sac"), "sac"),
        (("train", "--env", "pong", "--set", "policy_kwargs.top_k=7", "--threads", "1"), "top_k"),
        (("eval", "no/such/run"), "no/such/run"),
        (("eval", "no/such/run", "--device", "gpu7"), "gpu7"),
        (("train", "--resume", "no/such/run"), "no/such/run"),
        (("eval", "JUNK", "--env", "pong"), "junk.zip"),
        (("record", "no/such/run", "--out", "video.avi"), ".avi"),
        (("train", "--resume", "BROKEN"), "model_100_steps.zip"),
        (("train", "--resume", "BROKEN", "--run-dir", "elsewhere"), "--run-dir"),
    ],
)
def test_bad_input_is_a_clear_error(args: tuple[str, ...], named: str, tmp_path: Path) -> None:
    special = {"JUNK": _not_a_model, "BROKEN": _run_with_broken_checkpoint}
    args = tuple(special[a](tmp_path) if a in special else a for a in args)
    process = cli(*args, cwd=tmp_path)
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    assert named in process.stderr and "error" in process.stderr
    assert not (tmp_path / "runs").exists()


def test_locate_model_picks_final_best_or_latest_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    from agents.evaluate import locate_model

    assert locate_model(run_dir).model_path == run_dir / "model.zip"
    assert locate_model(run_dir, best=True).model_path == run_dir / "best_model.zip"
    zip_in_run = locate_model(run_dir / "checkpoints" / "model_128_steps.zip")
    assert zip_in_run.run_dir == run_dir and zip_in_run.config.env_id == "PongNoFrameskip-v4"
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished, ignore=shutil.ignore_patterns("model.zip", "best_model.zip"))
    assert locate_model(unfinished).model_path == unfinished / "checkpoints" / "model_256_steps.zip"
    with pytest.raises(FileNotFoundError, match="best_model.zip"):
        locate_model(unfinished, best=True)
    # Resumed past model.zip, then interrupted: the newer checkpoint is the run's model.
    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    _copy_with_num_timesteps(resumed / "model.zip", resumed / "checkpoints" / "model_512_steps.zip", 512)
    assert locate_model(resumed).model_path == resumed / "checkpoints" / "model_512_steps.zip"


def _copy_with_num_timesteps(source: Path, target: Path, num_timesteps: int) -> None:
    """A copy of a model zip claiming ``num_timesteps`` training steps."""
    import json

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            payload = src.read(item)
            if item.filename == "data":
                data = json.loads(payload)
                data["num_timesteps"] = num_timesteps
                payload = json.dumps(data).encode()
            dst.writestr(item, payload)


def test_config_file_errors_name_the_key(tmp_path: Path) -> None:
    cases = {
        "atari: {common: {n_stepz: 5}}": "n_stepz",
        "atari: {common: {gamma: 1.5}}": "gamma",
        "atari: {comon: {n_steps: 5}}": "comon",
        "atarii: {common: {n_steps: 5}}": "atarii",
        "atari: {brims: {policy_kwargs: {core_kwargs: {heads: 2}}}}": "heads",
        "atari: [1, 2": "not valid YAML",
    }
    for text, named in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ValueError, match=re.escape(named)):
            resolve_config("ppo", "brims", "pong", config_file=path, total_timesteps=100)


def test_configs_resolve_with_the_design_defaults() -> None:
    quick = resolve_config("ppo")
    assert (quick.env_id, quick.policy) == ("PongNoFrameskip-v4", "brims")
    assert quick.hyperparams["total_timesteps"] <= 30_000
    expected = dict(n_envs=8, n_steps=128, n_epochs=4, batch_size=256, learning_rate="lin_2.5e-4", clip_range="lin_0.1",
                    ent_coef=0.01, vf_coef=0.5, gamma=0.99, gae_lambda=0.95, max_grad_norm=0.5, sequence_length=8,
                    frame_stack=1)
    brims = resolve_config("ppo", "brims", "breakout").hyperparams
    assert {k: brims[k] for k in expected} == expected
    assert resolve_config("ppo", "cnn", "breakout").hyperparams["frame_stack"] == 4
    assert resolve_config("ppo", "lstm", "pong").hyperparams["policy_kwargs"] == {"lstm_hidden_size": 256}
    a2c = resolve_config("a2c", "brims", "pong").hyperparams
    assert (a2c["n_envs"], a2c["n_steps"], a2c["learning_rate"], a2c["vf_coef"]) == (16, 5, 7e-4, 0.25)
    for policy in ("brims", "lstm", "cnn"):
        for env in ("pong", "BrimsRL/CueMemory-v0"):
            resolve_config("a2c", policy, env).algorithm_kwargs()
    # --set wins over the file; flags win over --set.
    config = resolve_config("ppo", "brims", "pong", overrides=["n_envs=4", "policy_kwargs.top_k=2"], n_envs=2)
    assert config.hyperparams["n_envs"] == 2 and config.hyperparams["policy_kwargs"]["top_k"] == 2
    assert resolve_config("ppo", "brims", "pong", overrides=["policy_kwargs.critic_core=separate"]).algorithm_kwargs()
    with pytest.raises(ValueError, match="critic_core"):
        resolve_config("ppo", "brims", "pong", overrides=["policy_kwargs.critic_core=both"])
    with pytest.raises(ValueError, match="shared_lstm"):
        resolve_config("ppo", "brims", "pong", overrides=["policy_kwargs.shared_lstm=true"])
    with pytest.raises(ValueError, match="activation_log_interval"):
        resolve_config("ppo", "lstm", "pong", overrides=["activation_log_interval=5"])
