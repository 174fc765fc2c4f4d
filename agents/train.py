"""The training pipeline behind ``brims-rl train``: build, learn, checkpoint, resume.

A run folder holds everything one training run wrote::

    <run>/
      config.yaml                       resolved config (algo, policy, env, seed, hyperparams)
      model.zip                         final model (written when training ends)
      checkpoints/model_<steps>_steps.zip   periodic checkpoints, and the one Ctrl-C saves
      best_model.zip                    best model of the periodic evaluations
      evaluations.npz                   timesteps, results (raw scores), ep_lengths per evaluation
      monitor.csv                       one row per finished training episode (raw game score)
      tb/run_1/                         TensorBoard event files (a resumed run continues them)

Every zip, ``evaluations.npz`` and ``config.yaml`` is written to a temp file in the same
folder and renamed into place, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from agents.config import TrainConfig
from brims_rl.loading import read_model_data
from brims_rl.policies import BrimsPolicy

CONFIG_NAME = "config.yaml"
MODEL_NAME = "model.zip"
BEST_MODEL_NAME = "best_model.zip"
CHECKPOINT_DIR = "checkpoints"
MONITOR_NAME = "monitor.csv"
EVALUATIONS_NAME = "evaluations.npz"
TB_DIR = "tb"
TB_LOG_NAME = "run"
_CHECKPOINT_RE = re.compile(r"^model_(\d+)_steps\.zip$")


class TrainingInterrupted(Exception):
    """Ctrl-C during training; a checkpoint was saved at ``checkpoint``."""

    def __init__(self, run_dir: Path, checkpoint: Path, num_timesteps: int) -> None:
        super().__init__(f"training interrupted at {num_timesteps} steps; checkpoint saved to {checkpoint}")
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.num_timesteps = num_timesteps


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    run_dir: Path
    model_path: Path
    num_timesteps: int  # in all, steps of earlier sessions of a resumed run included
    steps_trained: int  # in this session
    seconds: float  # of this session's learning

    @property
    def steps_per_second(self) -> float:
        return self.steps_trained / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------- files


def atomic_save(model: BaseAlgorithm, path: Union[str, Path]) -> Path:
    """``model.save`` to a temp zip next to ``path``, then rename: readers never see half a zip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def checkpoint_path(run_dir: Path, num_timesteps: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"model_{num_timesteps}_steps.zip"


def saved_num_timesteps(zip_path: Path) -> int:
    """``num_timesteps`` stored in a model zip (read from its JSON data, no weights loaded).

    Raises ``NotABrimsModelError`` (a ValueError) for a file that is not a model zip."""
    return int(read_model_data(zip_path).get("num_timesteps", 0))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The checkpoint with the most steps in ``run_dir/checkpoints`` (None if there is none)."""
    folder = run_dir / CHECKPOINT_DIR
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _CHECKPOINT_RE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def newest_model(run_dir: Path) -> Optional[Path]:
    """The run's model with the most training steps: its latest checkpoint or ``model.zip``
    (a finished run that was resumed and interrupted has a checkpoint newer than its model.zip)."""
    # model.zip first: on a tie (a finished run's last checkpoint) max() keeps it.
    candidates = [p for p in (run_dir / MODEL_NAME, latest_checkpoint(run_dir)) if p is not None and p.is_file()]
    return max(candidates, key=saved_num_timesteps) if candidates else None


def find_run_dir(path: Union[str, Path]) -> Optional[Path]:
    """The run folder a path belongs to: itself, or the folder holding ``config.yaml`` above a zip."""
    path = Path(path)
    candidates = [path] if path.is_dir() else [path.parent, path.parent.parent]
    for candidate in candidates:
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- env and monitor


class RawScoreMonitor(VecEnvWrapper):
    """Writes one row per finished episode to a CSV in SB3's ``Monitor`` format.

    SB3's ``VecMonitor`` builds episodes from the rewards and dones it sees, which on Atari
    are clipped and end at every life loss. This wrapper instead records the
    ``info["episode"]`` the env reports (raw game score at a real game over), so
    ``stable_baselines3.common.monitor.load_results(run_dir)`` reads true scores.

    Args:
        venv: the env to watch (observations, rewards and dones pass through untouched).
        filename: the CSV to write; None writes nothing (used for the evaluation env, so the
            training and evaluation envs are wrapped alike). An existing file is appended to
            (a resumed run), keeping its header and its time origin.
    """

    def __init__(self, venv: VecEnv, filename: Optional[Union[str, Path]] = None, env_id: str = "") -> None:
        super().__init__(venv)
        self.filename = Path(filename) if filename is not None else None
        self.env_id = env_id
        self._file = None
        self._t_start = time.time()

    def _open(self) -> None:
        """Open the CSV at the first reset, so building a run that then fails writes nothing."""
        path = self.filename
        if path.is_file() and path.stat().st_size > 0:
            with path.open() as existing:
                header = existing.readline()
            try:
                self._t_start = float(json.loads(header.lstrip("#"))["t_start"])
            except (ValueError, KeyError):
                pass
            self._file = path.open("a")
        else:
            self._file = path.open("w")
            self._file.write("#" + json.dumps({"t_start": self._t_start, "env_id": self.env_id}) + "\n")
            self._file.write("r,l,t\n")
            self._file.flush()

    def reset(self) -> Any:
        if self.filename is not None and self._file is None:
            self._open()
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        if self._file is not None and dones.any():
            rows = []
            for i in np.flatnonzero(dones).tolist():
                episode = infos[i].get("episode")
                if episode is not None:
                    rows.append(f"{episode['r']},{episode['l']},{round(time.time() - self._t_start, 6)}\n")
            if rows:
                self._file.writelines(rows)
                self._file.flush()
        return obs, rewards, dones, infos

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def make_run_env(config: TrainConfig, n_envs: int, seed: int, **overrides: Any) -> VecEnv:
    """The env a run's config describes, with ``n_envs`` copies (``overrides`` win over the config)."""
    import envs

    kwargs = config.env_kwargs()
    kwargs.pop("n_envs", None)
    kwargs.update(overrides)
    return envs.make_env(config.env_id, n_envs=n_envs, seed=seed, **kwargs)


# --------------------------------------------------------------------------- models


def policy_name(policy: str, env: VecEnv) -> str:
    """The SB3 policy name for (``"brims"|"lstm"|"cnn"``, the env's observation space)."""
    from gymnasium import spaces
    from stable_baselines3.common.preprocessing import is_image_space

    space = env.observation_space
    if isinstance(space, spaces.Dict):
        prefix = "MultiInput"
    elif is_image_space(space, check_channels=False):
        prefix = "Cnn"
    else:
        prefix = "Mlp"
    suffix = {"brims": "BrimsPolicy", "lstm": "LstmPolicy", "cnn": "Policy"}[policy]
    return prefix + suffix


def algorithm_class(algo: str, policy: str) -> type[BaseAlgorithm]:
    """``RecurrentPPO``/``RecurrentA2C`` for recurrent policies, SB3's ``PPO``/``A2C`` for cnn."""
    from stable_baselines3 import A2C, PPO

    from agents import RecurrentA2C, RecurrentPPO

    return {
        ("ppo", True): RecurrentPPO,
        ("a2c", True): RecurrentA2C,
        ("ppo", False): PPO,
        ("a2c", False): A2C,
    }[(algo, policy != "cnn")]


def build_model(config: TrainConfig, env: VecEnv, tensorboard_log: Optional[str] = None, verbose: int = 0) -> BaseAlgorithm:
    """A new model for ``config`` on ``env``."""
    cls = algorithm_class(config.algo, config.policy)
    model = cls(
        policy_name(config.policy, env),
        env,
        seed=config.seed,
        device=config.device,
        tensorboard_log=tensorboard_log,
        verbose=verbose,
        **config.algorithm_kwargs(),
    )
    if not hasattr(model, "brims_rl_algorithm"):
        # Saved in the zip, so brims_rl.load knows which SB3 class wrote a baseline model.
        model.brims_rl_algorithm = cls.__name__
    return model


# --------------------------------------------------------------------------- callbacks


class AtomicCheckpointCallback(BaseCallback):
    """Saves ``checkpoints/model_<steps>_steps.zip`` every ``save_freq`` env steps (atomically)."""

    def __init__(self, run_dir: Path, save_freq: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.run_dir = run_dir
        self.save_freq = save_freq
        self._last_saved_slot = 0

    def _on_training_start(self) -> None:
        # On a resumed run, count from where it stopped: no immediate duplicate checkpoint.
        self._last_saved_slot = self.num_timesteps // self.save_freq

    def _on_step(self) -> bool:
        slot = self.num_timesteps // self.save_freq
        if slot > self._last_saved_slot:
            self._last_saved_slot = slot
            path = atomic_save(self.model, checkpoint_path(self.run_dir, self.num_timesteps))
            if self.verbose:
                print(f"Saved checkpoint {path}")
        return True


class _SaveBest(BaseCallback):
    """EvalCallback's ``callback_on_new_best``: write ``best_model.zip`` atomically."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _on_step(self) -> bool:
        atomic_save(self.model, self.path)
        return True


class RunEvalCallback(EvalCallback):
    """SB3's ``EvalCallback`` writing ``evaluations.npz`` and ``best_model.zip`` atomically.

    Works with recurrent models: SB3's ``evaluate_policy`` carries their state and, on
    Atari, counts whole games with raw scores (the env reports itself Monitor-wrapped).
    A resumed run first reads back the evaluations already in the run folder, so the file
    keeps the whole history and the best model is only replaced by a better one.
    """

    def __init__(self, eval_env: VecEnv, run_dir: Path, eval_freq_steps: int, n_envs: int, n_eval_episodes: int, verbose: int = 0):
        super().__init__(
            eval_env,
            callback_on_new_best=_SaveBest(run_dir / BEST_MODEL_NAME),
            n_eval_episodes=n_eval_episodes,
            eval_freq=max(1, eval_freq_steps // n_envs),
            deterministic=True,
            verbose=verbose,
        )
        self.run_dir = run_dir
        # np.savez writes here (it appends ".npz"); _on_step renames it into place.
        self.log_path = str(run_dir / ".evaluations.tmp")
        previous = run_dir / EVALUATIONS_NAME
        if previous.is_file():
            with np.load(previous) as data:
                self.evaluations_timesteps = data["timesteps"].tolist()
                self.evaluations_results = data["results"].tolist()
                self.evaluations_length = data["ep_lengths"].tolist()
            if self.evaluations_results:
                self.best_mean_reward = float(max(np.mean(r) for r in self.evaluations_results))

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq != 0:
            return super()._on_step()  # no evaluation due: nothing to guard or rename
        # Evaluation games must not reach the activation recorder: they are not rollout steps
        # (and their batch size differs from the training envs').
        policy = self.model.policy
        with policy.recording(None) if isinstance(policy, BrimsPolicy) else nullcontext():
            result = super()._on_step()
        tmp = Path(self.log_path + ".npz")
        if tmp.is_file():
            os.replace(tmp, self.run_dir / EVALUATIONS_NAME)
        return result


def _activation_callback(config: TrainConfig) -> Optional[BaseCallback]:
    """The BRIMs module-activation logger, when the policy is BRIMs and the interval > 0."""
    interval = config.hyperparams.get("activation_log_interval", 0)
    if config.policy != "brims" or not interval:
        return None
    from brims_rl.callbacks import ModuleActivationCallback

    return ModuleActivationCallback(log_interval=interval)


def build_callbacks(config: TrainConfig, run_dir: Path, eval_seed: int) -> tuple[list[BaseCallback], list[VecEnv]]:
    """Checkpoint, evaluation and activation callbacks of a run, and the envs they opened."""
    settings = config.run_settings()
    n_envs = config.hyperparams.get("n_envs", 1)
    callbacks: list[BaseCallback] = []
    opened: list[VecEnv] = []
    if settings.get("checkpoint_freq", 0) > 0:
        callbacks.append(AtomicCheckpointCallback(run_dir, settings["checkpoint_freq"]))
    if settings.get("eval_freq", 0) > 0:
        eval_env = RawScoreMonitor(make_run_env(config, n_envs=settings.get("n_eval_envs", 1), seed=eval_seed))
        opened.append(eval_env)
        callbacks.append(
            RunEvalCallback(eval_env, run_dir, settings["eval_freq"], n_envs, settings.get("eval_episodes", 5), verbose=1)
        )
    activation = _activation_callback(config)
    if activation is not None:
        callbacks.append(activation)
    return callbacks, opened


# --------------------------------------------------------------------------- run folders


def new_run_dir(config: TrainConfig, root: Union[str, Path] = "runs") -> Path:
    """``<root>/<algo>_<policy>_<env>_<YYYYmmdd-HHMMSS>`` (a numeric suffix if it exists)."""
    import envs

    env_name = envs.normalize_game_id(config.env_id) if config.is_atari else config.env_id
    slug = re.sub(r"[^A-Za-z0-9]+", "-", env_name).strip("-").lower()
    base = Path(root) / f"{config.algo}_{config.policy}_{slug}_{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}_{n}")
    return run_dir


def resolve_resume(path: Union[str, Path]) -> tuple[Path, Path]:
    """``(run_dir, model zip)`` to resume from: a run folder's latest checkpoint, or a given zip.

    A run folder with no checkpoint resumes from its ``model.zip``.

    Raises:
        FileNotFoundError: the path does not exist, or no config.yaml / model is found.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--resume {str(path)!r}: no such run folder or model zip")
    run_dir = find_run_dir(path)
    if run_dir is None:
        raise FileNotFoundError(
            f"--resume {str(path)!r}: no {CONFIG_NAME} found there (expected a run folder written by "
            "`brims-rl train`, or a zip inside one)"
        )
    if path.is_file():
        return run_dir, path
    model_path = newest_model(run_dir)
    if model_path is None:
        raise FileNotFoundError(f"--resume {str(path)!r}: the run folder holds no checkpoint and no {MODEL_NAME}")
    return run_dir, model_path


# --------------------------------------------------------------------------- the pipeline


def train(
    config: TrainConfig,
    run_dir: Union[str, Path],
    resume_from: Optional[Union[str, Path]] = None,
    progress_bar: bool = True,
    verbose: int = 0,
) -> TrainResult:
    """Train ``config`` into ``run_dir`` (see the module doc for the layout).

    Args:
        config: the resolved, validated config (saved as ``config.yaml``).
        run_dir: the run folder (created if missing).
        resume_from: a model zip of this run to continue from: ``num_timesteps``, the
            learning-rate and clip schedules and the TensorBoard curves continue; training
            stops at ``total_timesteps`` in all.
        progress_bar: SB3's progress bar.
        verbose: SB3 verbosity of the model (1 prints the training tables).

    Raises:
        TrainingInterrupted: on Ctrl-C, after saving a checkpoint.
    """
    run_dir = Path(run_dir)
    total = config.hyperparams["total_timesteps"]
    n_envs = config.hyperparams.get("n_envs", 1)
    tb_dir = str(run_dir / TB_DIR)

    start_steps = saved_num_timesteps(Path(resume_from)) if resume_from is not None else 0
    # A resumed run gets fresh env seeds, so it does not replay the first run's games.
    seed = config.seed + start_steps
    env = RawScoreMonitor(make_run_env(config, n_envs=n_envs, seed=seed), run_dir / MONITOR_NAME, config.env_id)
    opened: list[VecEnv] = [env]
    try:
        if resume_from is None:
            model = build_model(config, env, tensorboard_log=tb_dir, verbose=verbose)
        else:
            from brims_rl import load

            model = load(resume_from, env=env, device=config.device)
            model.tensorboard_log = tb_dir  # the run folder may have moved since
            model.verbose = verbose
        # Only now that the model exists (bad policy settings fail above) does the run folder appear.
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / CONFIG_NAME)
        callbacks, eval_envs = build_callbacks(config, run_dir, eval_seed=seed + 10_000)
        opened += eval_envs
        remaining = total - model.num_timesteps
        started = time.time()
        if remaining > 0:
            try:
                model.learn(
                    remaining,
                    callback=CallbackList(callbacks),
                    log_interval=config.hyperparams.get("log_interval", 1),
                    tb_log_name=TB_LOG_NAME,
                    reset_num_timesteps=resume_from is None,
                    progress_bar=progress_bar,
                )
            except KeyboardInterrupt:
                checkpoint = atomic_save(model, checkpoint_path(run_dir, model.num_timesteps))
                raise TrainingInterrupted(run_dir, checkpoint, model.num_timesteps) from None
        seconds = time.time() - started
        model_path = atomic_save(model, run_dir / MODEL_NAME)
        return TrainResult(run_dir, model_path, model.num_timesteps, model.num_timesteps - start_steps, seconds)
    finally:
        for venv in opened:
            venv.close()
