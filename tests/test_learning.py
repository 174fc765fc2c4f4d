"""Learning is real: a BRIMs agent solves a memory task that a memoryless agent cannot.

``BrimsRL/CueMemory-v0`` shows a cue only at the first step and rewards the matching answer
after a delay: any policy that does not remember the cue (random, or feed-forward PPO, which
sees the same query observation whatever the cue) has expected return exactly 0; a policy
that remembers gets 1.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pytest
from stable_baselines3 import PPO

import envs
from agents import RecurrentPPO
from agents.episodes import play_episodes

TASK = dict(delay=4)
BUDGET = 16_000  # env steps; about 25 s for the BRIMs agent on 2 idle cores
EVAL_EPISODES = 200  # std of a guessing policy's mean: 1/sqrt(200) ~ 0.07
SETTINGS = dict(n_steps=32, batch_size=64, n_epochs=4, learning_rate=1e-3, gamma=0.9, seed=0)


class RandomAgent:
    """Uniformly random actions, with SB3's ``predict`` signature."""

    def __init__(self, n_actions: int, seed: int) -> None:
        self.n_actions = n_actions
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: np.ndarray, state: Optional[Any] = None, episode_start=None, deterministic: bool = False):
        return self.rng.integers(self.n_actions, size=len(obs)), None


def task_env(seed: int):
    return envs.make_env(envs.CUE_MEMORY_ID, n_envs=8, seed=seed, **TASK)


def mean_return(model: Any) -> float:
    env = task_env(seed=1000)  # evaluation episodes the agents never trained on
    try:
        return play_episodes(model, env, EVAL_EPISODES).mean
    finally:
        env.close()


@pytest.mark.slow
def test_brims_ppo_remembers_the_cue_where_memoryless_ppo_cannot():
    brims = RecurrentPPO(
        "MlpBrimsPolicy",
        task_env(seed=0),
        sequence_length=8,
        ent_coef=0.0,
        policy_kwargs=dict(hidden_size=32, num_modules=4, top_k=2, net_arch=[]),
        **SETTINGS,
    )
    brims.learn(BUDGET)
    memoryless = PPO("MlpPolicy", task_env(seed=0), **SETTINGS)
    memoryless.learn(BUDGET)

    brims_return = mean_return(brims)
    memoryless_return = mean_return(memoryless)
    random_return = mean_return(RandomAgent(n_actions=2, seed=0))

    # Guessing scores 0 in expectation; 200 episodes put 0.3 more than 4 std away.
    assert abs(random_return) < 0.3
    assert abs(memoryless_return) < 0.3
    assert brims_return > 0.8, f"BRIMs-PPO mean return {brims_return:.2f} after {BUDGET} steps"
