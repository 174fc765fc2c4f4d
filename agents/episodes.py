"""Play whole episodes with a (recurrent or not) SB3 model on a ``VecEnv``.

The one loop that evaluation, analysis and recording share: it carries the recurrent
state from step to step, restarts it where an env signals ``done`` (a life loss included,
as in training), and counts an episode where the env reports ``info["episode"]`` (the raw
game score at a real game over on Atari; SB3's ``Monitor`` statistics elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from brims_rl.utils import check_int

# Called after every vector step with (obs_before, actions, rewards, dones, infos).
StepHook = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]], None]


@dataclass
class EpisodeStats:
    """Finished episodes, in the order they ended: raw returns, lengths in agent steps, and
    whether the env's time limit ended them (``info["TimeLimit.truncated"]``)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    @property
    def n_truncated(self) -> int:
        return int(sum(self.truncated))

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.returns)) if self.returns else float("nan")


def play_episodes(
    model: BaseAlgorithm,
    env: VecEnv,
    n_episodes: int,
    deterministic: bool = True,
    on_step: Optional[StepHook] = None,
    max_steps: Optional[int] = None,
) -> EpisodeStats:
    """Run ``model`` on ``env`` until ``n_episodes`` episodes have ended.

    Like SB3's ``evaluate_policy``, env ``i`` of ``n`` contributes at most
    ``ceil((n_episodes - i) / n)`` episodes, so short episodes do not crowd out long ones.

    Args:
        model: any SB3 model; recurrent ones get their state carried across steps.
        env: the ``VecEnv`` to play (reset here).
        n_episodes: episodes to collect (>= 1).
        deterministic: take the mode of the action distribution.
        on_step: hook called after every vector step (see :data:`StepHook`).
        max_steps: stop after this many vector steps even if episodes are missing
            (None: no limit).

    Returns:
        :class:`EpisodeStats` with exactly ``n_episodes`` entries unless ``max_steps`` cut it short.
    """
    check_int("n_episodes", n_episodes, 1)
    n_envs = env.num_envs
    targets = np.array([(n_episodes + i) // n_envs for i in range(n_envs)], dtype=np.int64)
    counts = np.zeros(n_envs, dtype=np.int64)
    stats = EpisodeStats()
    obs = env.reset()
    state = None
    episode_start = np.ones(n_envs, dtype=bool)
    steps = 0
    while (counts < targets).any() and (max_steps is None or steps < max_steps):
        actions, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        new_obs, rewards, dones, infos = env.step(actions)
        if on_step is not None:
            on_step(obs, actions, rewards, dones, infos)
        for i in np.flatnonzero(dones).tolist():
            episode = infos[i].get("episode")
            if episode is not None and counts[i] < targets[i]:
                stats.returns.append(float(episode["r"]))
                stats.lengths.append(int(episode["l"]))
                stats.truncated.append(bool(infos[i].get("TimeLimit.truncated", False)))
                counts[i] += 1
        obs, episode_start = new_obs, dones
        steps += 1
    return stats
