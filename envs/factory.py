"""One entry point for every env the pipelines train on: Atari games and small gymnasium tasks.

:func:`make_env` sends Atari names to :func:`envs.make_atari_vec_env` and any other registered
gymnasium id (the ``BrimsRL/`` tasks, CartPole, ...) to :func:`make_vec_env`; both return an
SB3 ``VecEnv`` whose infos carry ``info["episode"]`` at the end of each episode, so training
and evaluation code treats them alike.
"""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack

from envs.atari import make_atari_vec_env
from envs.emulation import check_int
from envs.games import is_atari_id
from envs.memory_tasks import TASK_IDS, register_tasks
from envs.minatar import is_minatar_id, make_minatar_vec_env


def make_vec_env(env_id: str, n_envs: int = 1, seed: int | None = 0, frame_stack: int = 1, **env_kwargs: Any) -> VecEnv:
    """``DummyVecEnv`` of ``n_envs`` ``Monitor``-wrapped copies of a registered gymnasium env.

    Args:
        env_id: a registered id, e.g. ``"BrimsRL/CueMemory-v0"`` or ``"BrimsRL/MaskedCartPole-v0"``.
        n_envs: number of copies (>= 1).
        seed: env ``i`` is seeded with ``seed + i`` at the first reset (None: random).
        frame_stack: stack the last k observations (SB3 ``VecFrameStack``, last axis): the
            memoryless frame-stack baseline; 1 means no stacking.
        **env_kwargs: constructor arguments of the env (e.g. ``delay=8, n_cues=3``).

    Returns:
        A ``VecEnv``; observations ``(n_envs, *obs_shape)`` (last axis times ``frame_stack``).
    """
    register_tasks()
    n_envs = check_int("n_envs", n_envs, 1, ">= 1")
    frame_stack = check_int("frame_stack", frame_stack, 1, ">= 1")
    if seed is not None:
        seed = check_int("seed", seed, 0, ">= 0 or None")
    if env_id not in gym.registry:
        raise ValueError(_unknown_env_message(env_id))
    venv = sb3_make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, vec_env_cls=DummyVecEnv)
    if frame_stack > 1:
        venv = VecFrameStack(venv, n_stack=frame_stack)
    return venv


def _named_parameters(function: Any) -> set[str]:
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind is not p.VAR_KEYWORD}


# The arguments only Atari games take (make_atari_vec_env's, less those every env takes):
# the one list that the config and make_env refuse for the small vector-observation tasks.
ATARI_ONLY_KEYS = frozenset(_named_parameters(make_atari_vec_env) - _named_parameters(make_vec_env))


def make_env(env_id: str, n_envs: int = 8, seed: int | None = 0, **kwargs: Any) -> VecEnv:
    """Build the ``VecEnv`` for any supported id.

    Atari names in any spelling (``"pong"``, ``"PongNoFrameskip-v4"``, ``"ALE/Pong-v5"``) go to
    :func:`envs.make_atari_vec_env` with ``kwargs`` (frame_stack, backend, noise, ...); MinAtar
    games (``"MinAtar/Breakout-v1"``) to :func:`envs.make_minatar_vec_env`; other
    registered gymnasium ids go to :func:`make_vec_env` (``kwargs``: frame_stack and the env's
    own constructor arguments; Atari-only arguments must be None or absent).

    Raises:
        ValueError: ``env_id`` is neither an Atari game nor a registered gymnasium id.
    """
    if not isinstance(env_id, str):
        raise ValueError(f"env_id must be a string, got {env_id!r}")
    if is_atari_id(env_id):
        return make_atari_vec_env(env_id, n_envs=n_envs, seed=seed, **kwargs)
    if is_minatar_id(env_id):
        return make_minatar_vec_env(env_id, n_envs=n_envs, seed=seed, **kwargs)
    register_tasks()
    if env_id in gym.registry:
        # A shared config may carry Atari settings left at None: drop those, refuse the rest.
        kwargs = {k: v for k, v in kwargs.items() if not (k in ATARI_ONLY_KEYS and v is None)}
        atari_only = sorted(set(kwargs) & ATARI_ONLY_KEYS)
        if atari_only:
            raise ValueError(
                f"{', '.join(atari_only)} only apply to Atari games, not to {env_id!r} (leave them unset or None)"
            )
        return make_vec_env(env_id, n_envs=n_envs, seed=seed, **kwargs)
    raise ValueError(_unknown_env_message(env_id))


def _unknown_env_message(env_id: str) -> str:
    return (
        f"Unknown environment {env_id!r}: it is neither an Atari game nor a registered gymnasium id. "
        f"Small tasks: {', '.join(TASK_IDS)}. Atari games: run `brims-rl list-envs` or call "
        "`envs.list_atari_games()`."
    )
