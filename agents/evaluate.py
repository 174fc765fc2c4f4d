"""Evaluate a trained model: ``brims-rl eval``.

A model is named by its run folder (``runs/ppo_brims_pong_...``: its ``model.zip``, or the
latest checkpoint of an interrupted run) or by a zip. The env defaults to the run's own,
built with the run's settings (frame stack, life-loss terminals, ...); the robustness
wrappers (noise, flicker, occlusion) can be switched on at evaluation time only.
Scores are raw game scores (``info["episode"]``), and recurrent state is carried through
:func:`agents.episodes.play_episodes`, reset where training reset it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import check_for_correct_spaces
from stable_baselines3.common.vec_env import VecEnv

import envs
from agents.config import TrainConfig
from agents.episodes import EpisodeStats, play_episodes
from agents.loading import load
from agents.run_folder import CONFIG_NAME, model_at


@dataclass
class RunModel:
    """A model zip and, when it lives in a run folder, that run's folder and config."""

    model_path: Path
    run_dir: Optional[Path] = None
    config: Optional[TrainConfig] = None


@dataclass
class EvalResult:
    """Scores of :func:`evaluate`."""

    stats: EpisodeStats
    env_id: str
    model_path: Path


def locate_model(path: Union[str, Path], best: bool = False) -> RunModel:
    """The model a path names (:func:`agents.run_folder.model_at`: a zip, or a run folder's
    newest model, ``best_model.zip`` with ``best``) and the config of the run it belongs to.

    Raises:
        FileNotFoundError: nothing usable at ``path``.
    """
    model_path, run_dir = model_at(path, best=best)
    config = TrainConfig.load(run_dir / CONFIG_NAME) if run_dir is not None else None
    return RunModel(model_path, run_dir, config)


def _same_env(a: str, b: str) -> bool:
    if envs.is_atari_id(a) and envs.is_atari_id(b):
        return envs.normalize_game_id(a) == envs.normalize_game_id(b)
    return a == b


def env_settings(run: RunModel, env_id: str, model: BaseAlgorithm) -> dict[str, Any]:
    """``envs.make_env`` keyword arguments that match how ``model`` was trained.

    The run's own env settings when ``env_id`` is the run's env; otherwise (another game, or a
    bare zip) only the frame stack, read from the model's observation shape.
    """
    if run.config is not None and _same_env(env_id, run.config.env_id):
        settings = run.config.env_kwargs()
        settings.pop("n_envs", None)
        return settings
    shape = model.observation_space.shape
    if envs.is_atari_id(env_id) and shape is not None and len(shape) == 3:
        return {"frame_stack": int(shape[0])}
    return {}


def load_for_env(
    path: Union[str, Path],
    env_id: Optional[str],
    n_envs: int = 1,
    seed: int = 0,
    device: str = "auto",
    best: bool = False,
    **overrides: Any,
) -> tuple[BaseAlgorithm, VecEnv, RunModel, str]:
    """Load the model at ``path`` and build a matching env (``overrides`` win over the run's settings).

    Returns ``(model, env, run, env_id)``; the caller closes ``env``.

    Raises:
        ValueError: no env given and none recorded, or the model does not fit the env.
    """
    run = locate_model(path, best=best)
    if env_id is None:
        if run.config is None:
            raise ValueError(f"{str(run.model_path)!r} is not inside a run folder: give the env with --env")
        env_id = run.config.env_id
    model = load(run.model_path, device=device)
    settings = {**env_settings(run, env_id, model), **{k: v for k, v in overrides.items() if v is not None}}
    env = envs.make_env(env_id, n_envs=n_envs, seed=seed, **settings)
    try:
        check_for_correct_spaces(env, model.observation_space, model.action_space)
    except ValueError as error:
        env.close()
        raise ValueError(f"model {str(run.model_path)!r} does not fit env {env_id!r}: {error}") from None
    return model, env, run, env_id


def evaluate(
    path: Union[str, Path],
    env_id: Optional[str] = None,
    n_episodes: int = 10,
    deterministic: bool = True,
    n_envs: int = 1,
    seed: int = 0,
    device: str = "auto",
    max_steps: Optional[int] = None,
    best: bool = False,
    noise: Any = None,
    flicker: Any = None,
    occlusion: Any = None,
) -> EvalResult:
    """Play ``n_episodes`` with the model at ``path`` and return the raw scores.

    Args:
        path: a run folder or a model zip.
        env_id: the env (None: the run's).
        n_episodes: episodes to finish.
        deterministic: greedy actions (False samples from the policy).
        n_envs, seed, device: the evaluation env's size and seed; the torch device.
        max_steps: stop after this many vector steps even if episodes are missing.
        best: use the run's ``best_model.zip`` instead of ``model.zip``.
        noise, flicker, occlusion: robustness wrappers (Atari only), as in :func:`envs.make_env`.
    """
    model, env, run, env_id = load_for_env(
        path, env_id, n_envs=n_envs, seed=seed, device=device, best=best, noise=noise, flicker=flicker, occlusion=occlusion
    )
    try:
        stats = play_episodes(model, env, n_episodes, deterministic=deterministic, max_steps=max_steps)
    finally:
        env.close()
    return EvalResult(stats, env_id, run.model_path)
