"""Environment construction for brims-rl.

* Atari: :func:`make_atari_vec_env` (ale-py's C++ vector env behind :class:`AleVecEnv`, or
  SB3's ``AtariWrapper`` pipeline), emulated as one :class:`AtariEmulation` says; game names
  via :func:`normalize_game_id`, :func:`list_atari_games`, :func:`is_atari_id`;
  :data:`ATARI_ONLY_KEYS`, the arguments only Atari games take.
* Robustness wrappers: :class:`GaussianNoise`, :class:`Flicker`, :class:`Occlusion`,
  :func:`apply_robustness`.
* Small memory tasks registered at import: ``BrimsRL/MaskedCartPole-v0``,
  ``BrimsRL/CueMemory-v0``; :func:`make_vec_env` for them and :func:`make_env` for anything.
* MinAtar (the ``minatar`` package): ``MinAtar/<Game>-v1`` registered at import,
  :func:`make_minatar_vec_env`, :func:`is_minatar_id`.

``import envs`` stays light (gymnasium only): the parts that need stable-baselines3 (and so
torch) or ale-py load on first use of the name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from envs.memory_tasks import CUE_MEMORY_ID, MASKED_CARTPOLE_ID, CueMemoryEnv, MaskedCartPoleEnv, register_tasks
from envs.minatar import MINATAR_IDS, is_minatar_id, register_minatar

register_tasks()
register_minatar()

# public name -> module that defines it (imported lazily by __getattr__)
_LAZY = {
    "make_atari_vec_env": "envs.atari",
    "AtariEmulation": "envs.emulation",
    "normalize_game_id": "envs.games",
    "list_atari_games": "envs.games",
    "is_atari_id": "envs.games",
    "AleVecEnv": "envs.ale_vec_env",
    "GaussianNoise": "envs.robustness",
    "Flicker": "envs.robustness",
    "Occlusion": "envs.robustness",
    "apply_robustness": "envs.robustness",
    "make_vec_env": "envs.factory",
    "make_env": "envs.factory",
    "ATARI_ONLY_KEYS": "envs.factory",
    "make_minatar_vec_env": "envs.minatar",
}

if TYPE_CHECKING:
    from envs.ale_vec_env import AleVecEnv
    from envs.atari import make_atari_vec_env
    from envs.emulation import AtariEmulation
    from envs.factory import ATARI_ONLY_KEYS, make_env, make_vec_env
    from envs.games import is_atari_id, list_atari_games, normalize_game_id
    from envs.minatar import make_minatar_vec_env
    from envs.robustness import Flicker, GaussianNoise, Occlusion, apply_robustness


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'envs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "make_atari_vec_env",
    "make_vec_env",
    "make_env",
    "normalize_game_id",
    "list_atari_games",
    "is_atari_id",
    "AleVecEnv",
    "AtariEmulation",
    "ATARI_ONLY_KEYS",
    "GaussianNoise",
    "Flicker",
    "Occlusion",
    "apply_robustness",
    "CueMemoryEnv",
    "MaskedCartPoleEnv",
    "CUE_MEMORY_ID",
    "MASKED_CARTPOLE_ID",
    "make_minatar_vec_env",
    "is_minatar_id",
    "MINATAR_IDS",
]
