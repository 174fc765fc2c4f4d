"""MinAtar (Young & Tian, 2019): five Atari games on a 10x10 grid, the tier where studies fit a CPU.

The ``minatar`` package (``pip install 'brims-rl[minatar]'``) plays Asterix, Breakout, Freeway,
Seaquest and SpaceInvaders; its gymnasium envs are ``MinAtar/<Game>-v1`` (the game's minimal
action set) and ``MinAtar/<Game>-v0`` (all six actions). Each observation is a bool grid
``(10, 10, C)`` with one plane per kind of object (C = 4 to 10 by game). :func:`make_minatar_vec_env`
hands them to SB3 as uint8 channel-first images ``(C, 10, 10)`` with values 0 and 255, so
they are an image space like Atari frames (SB3 scales them back to {0, 1}) and the robustness
wrappers corrupt them (one frame = all C planes; flicker blanks the whole grid).

The ids are registered at ``import envs`` (entry points as strings: nothing of ``minatar`` is
imported until an env is made); making one without the package installed is a ``ValueError``
saying how to install it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.emulation import check_int

MINATAR_PREFIX = "MinAtar/"
# gymnasium name -> the minatar package's module name
MINATAR_GAMES = {
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
MINATAR_IDS = tuple(f"{MINATAR_PREFIX}{game}-v1" for game in MINATAR_GAMES)


def is_minatar_id(env_id: Any) -> bool:
    """Whether ``env_id`` names a MinAtar game (``MinAtar/Breakout-v1``, ``MinAtar/Breakout-v0``)."""
    return isinstance(env_id, str) and env_id.startswith(MINATAR_PREFIX)


def register_minatar() -> None:
    """Register ``MinAtar/<Game>-v0`` and ``-v1`` as the minatar package does (idempotent)."""
    for game, module in MINATAR_GAMES.items():
        for version, minimal in (("v0", False), ("v1", True)):
            env_id = f"{MINATAR_PREFIX}{game}-{version}"
            if env_id not in gym.registry:
                gym.register(
                    id=env_id, entry_point="minatar.gym:BaseEnv", kwargs=dict(game=module, use_minimal_action_set=minimal)
                )


class ChannelFirstGrid(gym.ObservationWrapper):
    """A MinAtar grid ``(10, 10, C)`` bool -> ``(C, 10, 10)`` uint8 in {0, 255}."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        height, width, channels = env.observation_space.shape
        self.observation_space = spaces.Box(0, 255, shape=(channels, height, width), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(observation, -1, 0), dtype=np.uint8) * np.uint8(255)


def _require_minatar(env_id: str) -> None:
    if importlib.util.find_spec("minatar") is None:
        raise ValueError(f"{env_id!r} needs the minatar package: pip install 'brims-rl[minatar]' (or pip install minatar)")
    if env_id not in gym.registry:
        raise ValueError(f"unknown MinAtar env {env_id!r}; the games: {', '.join(f'{MINATAR_PREFIX}{g}-v1' for g in MINATAR_GAMES)}")


def make_minatar_vec_env(
    env_id: str,
    n_envs: int = 8,
    seed: int | None = 0,
    frame_stack: int = 1,
    noise: Any = None,
    flicker: Any = None,
    occlusion: Any = None,
    max_episode_steps: int | None = None,
    **env_kwargs: Any,
):
    """``DummyVecEnv`` of ``n_envs`` MinAtar games, uint8 ``(n_envs, frame_stack * C, 10, 10)``.

    Args:
        env_id: ``MinAtar/<Game>-v1`` (minimal action set) or ``-v0`` (six actions).
        n_envs: number of copies; env ``i`` is seeded with ``seed + i``.
        frame_stack: stack the last k grids (1: none; the trail planes already show motion).
        noise, flicker, occlusion: the robustness wrappers (see :func:`envs.apply_robustness`),
            applied to whole grids; occlusion sizes are in cells (1..10).
        max_episode_steps: cut games at this many steps (None: MinAtar's own end only).
        **env_kwargs: the game's own arguments: ``sticky_action_prob`` (0.1), ``difficulty_ramping`` (True).

    ``info["episode"]`` carries the game's raw score at each game's end (SB3's ``Monitor``).
    """
    # stable-baselines3 (and so torch) loads when an env is made, not at `import envs` (see envs/__init__.py).
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    from envs.robustness import apply_robustness, parse_robustness

    register_minatar()
    _require_minatar(env_id)
    n_envs = check_int("n_envs", n_envs, 1, ">= 1")
    frame_stack = check_int("frame_stack", frame_stack, 1, ">= 1")
    robustness = parse_robustness(noise=noise, flicker=flicker, occlusion=occlusion)
    make_kwargs = dict(env_kwargs)
    if max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = check_int("max_episode_steps", max_episode_steps, 1, ">= 1")
    venv = make_vec_env(
        env_id, n_envs=n_envs, seed=seed, env_kwargs=make_kwargs, wrapper_class=ChannelFirstGrid, vec_env_cls=DummyVecEnv
    )
    channels = venv.observation_space.shape[0]
    if "occlusion" in robustness and robustness["occlusion"]["size"] > venv.observation_space.shape[-1]:
        venv.close()
        raise ValueError(f"occlusion size={robustness['occlusion']['size']!r} is invalid: a MinAtar grid is 10 cells wide")
    if frame_stack > 1:
        venv = VecFrameStack(venv, n_stack=frame_stack, channels_order="first")
    return apply_robustness(venv, seed=seed, frame_channels=channels, **robustness)
