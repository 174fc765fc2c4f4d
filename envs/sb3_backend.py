"""Backend "sb3": SB3's own Atari pipeline, shaped like :class:`envs.AleVecEnv`.

``make_atari_env`` (gymnasium ALE env with ``frameskip=1`` -> ``Monitor`` -> ``AtariWrapper``:
no-op starts, max-and-skip 4, terminal on life loss, fire on reset, 84x84 grey, reward sign)
in a ``DummyVecEnv``, then ``VecTransposeImage`` (HWC -> CHW) and ``VecFrameStack`` on the
channel axis, so observations are uint8 ``(n_envs, frame_stack, 84, 84)`` with the newest
frame last, as on the ``"ale"`` backend. Slower than ``"ale"`` but made of plain gymnasium
envs: it can render (``render_mode="rgb_array"``) and take any gymnasium wrapper.
"""

from __future__ import annotations

from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecFrameStack, VecTransposeImage
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from envs.emulation import AtariEmulation
from envs.games import v5_env_id

gym.register_envs(ale_py)


class EpisodeLengthInAgentSteps(VecEnvWrapper):
    """Rewrites ``info["episode"]["l"]`` to count agent steps instead of emulator frames.

    ``make_atari_env`` puts ``Monitor`` BELOW ``AtariWrapper``'s frame skip, so Monitor counts
    every emulator frame (no-op starts included). Counting agent steps here makes
    ``rollout/ep_len_mean`` mean the same on both backends. Everything else passes through.
    """

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self) -> VecEnvObs:
        self._steps[:] = 0
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self._steps += 1
        for i in np.flatnonzero(dones).tolist():
            episode = infos[i].get("episode")
            if episode is not None:  # a real game over, not a life loss
                infos[i]["episode"] = {**episode, "l": int(self._steps[i])}
                self._steps[i] = 0
        return obs, rewards, dones, infos


def make_sb3_atari_vec_env(game: str, n_envs: int, emulation: AtariEmulation, *, seed: int | None) -> VecEnv:
    """SB3 Atari pipeline for a canonical ROM id, emulated as ``emulation`` says.

    Returns a ``VecEnv`` of uint8 observations ``(n_envs, frame_stack, screen_size, screen_size)``.
    """
    env_kwargs: dict[str, Any] = dict(
        frameskip=1,  # AtariWrapper's MaxAndSkipEnv does the skipping and max-pooling
        repeat_action_probability=emulation.sticky_actions,  # sticky actions inside the emulator, as on "ale"
        full_action_space=False,
        max_num_frames_per_episode=emulation.max_episode_steps,
    )
    wrapper_kwargs: dict[str, Any] = dict(
        noop_max=emulation.noop_max,
        frame_skip=emulation.frame_skip,
        screen_size=emulation.screen_size,
        terminal_on_life_loss=emulation.terminal_on_life_loss,
        clip_reward=emulation.clip_reward,
    )
    venv = make_atari_env(
        v5_env_id(game),
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        wrapper_kwargs=wrapper_kwargs,
        vec_env_cls=DummyVecEnv,
    )
    venv = EpisodeLengthInAgentSteps(venv)
    venv = VecTransposeImage(venv)  # (84, 84, 1) -> (1, 84, 84), terminal observations included
    if emulation.frame_stack > 1:
        venv = VecFrameStack(venv, n_stack=emulation.frame_stack, channels_order="first")
    return venv
