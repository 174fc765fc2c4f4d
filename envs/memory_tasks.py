"""Small partially observed tasks for fast tests and examples (gymnasium ids ``BrimsRL/...``).

* ``BrimsRL/MaskedCartPole-v0``: CartPole-v1 that shows only cart position and pole angle;
  the velocities must be inferred from successive observations (memory helps). Max 500 steps.
* ``BrimsRL/CueMemory-v0``: remember a cue across a delay; a memoryless policy cannot beat 0.

Only gymnasium and numpy are imported here, so registering costs ``import envs`` little.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

MASKED_CARTPOLE_ID = "BrimsRL/MaskedCartPole-v0"
CUE_MEMORY_ID = "BrimsRL/CueMemory-v0"
TASK_IDS = (MASKED_CARTPOLE_ID, CUE_MEMORY_ID)


class MaskedCartPoleEnv(CartPoleEnv):
    """CartPole observing ``[cart position, pole angle]`` only (float32, shape ``(2,)``).

    Dynamics, actions (Discrete(2)) and reward (+1 per step) are CartPole-v1's; the
    registered id adds the 500-step time limit.
    """

    VISIBLE = np.array([0, 2])  # of CartPole's (x, x_dot, theta, theta_dot)

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        full = self.observation_space
        self.observation_space = spaces.Box(full.low[self.VISIBLE], full.high[self.VISIBLE], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[self.VISIBLE], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[self.VISIBLE], reward, terminated, truncated, info


class CueMemoryEnv(gym.Env[np.ndarray, int]):
    """Remember which of ``n_cues`` cues was shown, answer after ``delay`` blank steps.

    Observation: float32 ``(n_cues + 1,)``: the one-hot cue in the first ``n_cues`` slots,
    a query flag in the last slot.

    * t = 0 (the ``reset`` observation): the one-hot cue, flag 0.
    * t = 1 .. delay: all zeros (plus N(0, noise_std^2) if ``noise_std > 0``).
    * t = delay + 1: the query, flag 1 and no cue.

    Actions: ``Discrete(n_cues)``. Actions before the query are ignored (reward 0). The action
    taken on the query observation ends the episode: reward +1 if it equals the cue, else
    ``-1 / (n_cues - 1)``, so guessing (a random or memoryless policy, which at query time
    sees the same observation whatever the cue) has expected return exactly 0 while a policy
    that remembers the cue gets 1. An episode lasts ``delay + 2`` steps. ``info["cue"]``
    holds the cue (for tests and analysis; the policy never sees infos).

    Args:
        delay: number of blank steps between cue and query (>= 0).
        n_cues: number of cues, >= 2.
        noise_std: std of Gaussian noise on the blank steps (0: exact zeros).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, delay: int = 5, n_cues: int = 2, noise_std: float = 0.0, render_mode: str | None = None) -> None:
        if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or delay < 0:
            raise ValueError(f"delay={delay!r} is invalid: it must be an integer >= 0")
        if isinstance(n_cues, bool) or not isinstance(n_cues, (int, np.integer)) or n_cues < 2:
            raise ValueError(f"n_cues={n_cues!r} is invalid: it must be an integer >= 2")
        if not np.isfinite(noise_std) or noise_std < 0:
            raise ValueError(f"noise_std={noise_std!r} is invalid: it must be a number >= 0")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is invalid: CueMemory renders only 'rgb_array' (or None)")
        self.delay, self.n_cues, self.noise_std = int(delay), int(n_cues), float(noise_std)
        self.render_mode = render_mode
        low, high = (-np.inf, np.inf) if noise_std > 0 else (0.0, 1.0)
        self.observation_space = spaces.Box(low, high, (self.n_cues + 1,), np.float32)
        self.action_space = spaces.Discrete(self.n_cues)
        self.wrong_reward = -1.0 / (self.n_cues - 1)
        self._cue = 0
        self._t = 0
        self._last_obs = np.zeros(self.n_cues + 1, dtype=np.float32)

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the last observation as a row of grey cells, 16 px each (uint8 ``(16, 16 * (n_cues + 1), 3)``)."""
        if self.render_mode != "rgb_array":
            return None
        cells = (np.clip(self._last_obs, 0.0, 1.0) * 255).astype(np.uint8)
        row = np.repeat(cells, 16)[None, :, None]
        return np.repeat(np.repeat(row, 16, axis=0), 3, axis=2)

    def _blank(self) -> np.ndarray:
        obs = np.zeros(self.n_cues + 1, dtype=np.float32)
        if self.noise_std > 0:
            obs += self.np_random.normal(0.0, self.noise_std, size=obs.shape).astype(np.float32)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(self.n_cues))
        self._t = 0
        obs = np.zeros(self.n_cues + 1, dtype=np.float32)
        obs[self._cue] = 1.0
        self._last_obs = obs
        return obs, {"cue": self._cue}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        info = {"cue": self._cue}
        if self._t == self.delay + 1:  # this action answers the query
            reward = 1.0 if int(action) == self._cue else self.wrong_reward
            self._t += 1
            self._last_obs = np.zeros(self.n_cues + 1, dtype=np.float32)
            return self._last_obs, reward, True, False, info
        if self._t > self.delay + 1:
            raise RuntimeError("CueMemoryEnv: episode is over, call reset()")
        self._t += 1
        if self._t == self.delay + 1:
            obs = np.zeros(self.n_cues + 1, dtype=np.float32)
            obs[-1] = 1.0
        else:
            obs = self._blank()
        self._last_obs = obs
        return obs, 0.0, False, False, info


def register_tasks() -> None:
    """Register the ``BrimsRL/`` ids with gymnasium (idempotent)."""
    if MASKED_CARTPOLE_ID not in gym.registry:
        gym.register(
            id=MASKED_CARTPOLE_ID,
            entry_point="envs.memory_tasks:MaskedCartPoleEnv",
            max_episode_steps=500,
            reward_threshold=475.0,
        )
    if CUE_MEMORY_ID not in gym.registry:
        gym.register(
            id=CUE_MEMORY_ID,
            entry_point="envs.memory_tasks:CueMemoryEnv",
            reward_threshold=0.95,
        )
