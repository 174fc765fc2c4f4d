"""SB3 ``VecEnv`` adapter over ale-py's C++ ``AtariVectorEnv``.

ale-py runs the emulators, frame skip, max-pooling, 84x84 grey resize, no-op starts and frame
stacking in C++ worker threads; this class only translates its outputs to SB3's conventions:

* **Autoreset.** The C++ env runs in ``autoreset_mode="SameStep"``: on the step a game ends it
  returns the first observation of the next game and puts the last one in
  ``info["final_obs"]``, exactly SB3's convention (new observation in ``obs``, old one in
  ``info["terminal_observation"]``). (The default ``"NextStep"`` mode would instead return the
  terminal observation and silently ignore the agent's next action while it resets.)
* **Life loss.** ``life_loss_info=True`` makes ``terminated`` fire on every life loss while the
  emulator plays on (``episodic_life=True`` would restart the whole game instead). No reset
  happens then, so ``final_obs`` holds stale data and the current observation IS the terminal
  one. We tell a life loss from a game over by what the emulator did: after a life loss the
  life counter fell and the episode frame counter kept growing; after a game over (a reset)
  the frame counter restarted.
* **Frame stack after a life loss.** SB3's ``VecFrameStack`` restarts the stack (zeros, then
  the new frame) on every ``done``; the C++ stack does so only at a real reset, so after a
  life-loss terminal we zero the older slots until new frames have filled them.
* **FIRE after a life loss.** ale-py presses FIRE at the start of a game only
  (``use_fire_reset``). In games that wait for FIRE to relaunch (Breakout, ...), the agent's
  first action after a lost life is replaced by FIRE, as SB3's ``FireResetEnv`` (reset after
  every life-loss terminal) and envpool do; otherwise an agent must first discover the relaunch
  and a policy that never fires stalls until the time limit.
* **Rewards and statistics.** The C++ env runs with ``reward_clipping=False`` so the raw score
  is known: ``step`` returns ``sign(raw)`` when ``clip_reward`` and ``info["episode"]`` reports
  ``{"r": raw score, "l": agent steps, "t": seconds since construction}`` only at the real end
  of a game, like SB3's ``Monitor`` under ``AtariWrapper``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from ale_py.vector_env import AtariVectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.emulation import AtariEmulation
from envs.games import normalize_game_id

# ale-py takes int32 seeds and reads -1 as "do not reseed"; fold any seed into [0, 2**31 - 1).
_SEED_MODULUS = 2**31 - 1
_NO_RENDER = (
    "AleVecEnv cannot render: ale-py's C++ vector env exposes no screen. For videos, build the "
    "env with backend='sb3' (envs.make_atari_vec_env(..., backend='sb3')) or a single "
    "gym.make('ALE/<Game>-v5', render_mode='rgb_array')."
)


class AleVecEnv(VecEnv):
    """Atari games stepped by ale-py's ``AtariVectorEnv``, seen as an SB3 ``VecEnv``.

    Observations: uint8 ``(num_envs, frame_stack, screen_size, screen_size)``, oldest frame
    first. Rewards: float32 ``(num_envs,)``, sign-clipped when ``clip_reward``. Dones: bool
    ``(num_envs,)``, on life loss too when ``terminal_on_life_loss``. Infos: one dict per env
    with ``"lives"`` and ``"TimeLimit.truncated"``, plus ``"terminal_observation"`` on a done
    and ``"episode"`` at the end of a game.

    Seeding follows SB3: :meth:`seed` stores ``seed + i`` for env ``i``, used by the next
    :meth:`reset` only; later auto-resets continue each emulator's own random stream, so
    the same seed and actions reproduce the same observations and rewards.

    Args:
        game: any spelling accepted by :func:`envs.normalize_game_id`.
        num_envs: number of emulators.
        emulation: frame stack, life-loss terminals, reward clipping, sticky actions, time
            limit (emulator frames, no-op start excluded), no-op starts, frame skip, screen
            size: see :class:`envs.AtariEmulation` (None: its defaults).
        num_threads: C++ worker threads (0: one per core).
        fire_after_life_loss: press FIRE (instead of the agent's action) on the first step
            after a lost life, in games whose action 1 is FIRE.
        **settings: fields of :class:`envs.AtariEmulation` that replace ``emulation``'s
            (``AleVecEnv("pong", 8, frame_stack=4)``).
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        emulation: AtariEmulation | None = None,
        *,
        num_threads: int = 0,
        fire_after_life_loss: bool = True,
        **settings: Any,
    ) -> None:
        emulation = dataclasses.replace(emulation or AtariEmulation(), **settings)
        self.game = normalize_game_id(game)
        self.emulation = emulation
        self.frame_stack = emulation.frame_stack
        self.terminal_on_life_loss = emulation.terminal_on_life_loss
        self.clip_reward = emulation.clip_reward
        screen_size = emulation.screen_size
        self._ale = AtariVectorEnv(
            self.game,
            num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=emulation.max_episode_steps,
            repeat_action_probability=emulation.sticky_actions,
            autoreset_mode="SameStep",
            img_height=screen_size,
            img_width=screen_size,
            grayscale=True,
            stack_num=emulation.frame_stack,
            frameskip=emulation.frame_skip,
            maxpool=True,
            noop_max=emulation.noop_max,
            episodic_life=False,
            life_loss_info=emulation.terminal_on_life_loss,
            reward_clipping=False,
            use_fire_reset=True,
        )
        self._action_meanings = [action.name for action in self._ale.ale.get_action_set()]
        # SB3's FireResetEnv rule for "this game waits for FIRE".
        needs_fire = len(self._action_meanings) >= 3 and self._action_meanings[1] == "FIRE"
        self.fire_after_life_loss = fire_after_life_loss and needs_fire
        observation_space = spaces.Box(0, 255, (self.frame_stack, screen_size, screen_size), np.uint8)
        action_space = spaces.Discrete(len(self._action_meanings))

        # Per-env bookkeeping, all (num_envs,) arrays so a step costs no Python loop over envs.
        self._episode_return = np.zeros(num_envs, dtype=np.float64)  # raw score of the running game
        self._episode_length = np.zeros(num_envs, dtype=np.int64)  # agent steps of the running game
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._episode_frame = np.zeros(num_envs, dtype=np.int64)
        # Frames received since the stack (re)started; < frame_stack only after a life loss.
        self._stack_fill = np.full(num_envs, self.frame_stack, dtype=np.int64)
        self._fire_next = np.zeros(num_envs, dtype=bool)  # lost a life at the last step
        self._waiting = False
        self._needs_reset = True
        self.t_start = time.time()
        super().__init__(num_envs, observation_space, action_space)

    # ------------------------------------------------------------------ stepping

    def reset(self) -> VecEnvObs:
        """Reset every game; returns ``(num_envs, frame_stack, H, W)`` uint8 observations.

        Seeds set by :meth:`seed` apply to this reset only (SB3 semantics); options are ignored.
        """
        if self._waiting:  # SB3: a pending step is cancelled by reset
            self._waiting = False
            self._ale.recv()
        if any(seed is not None for seed in self._seeds):
            seeds = np.array([-1 if s is None else int(s) % _SEED_MODULUS for s in self._seeds], dtype=np.int64)
            obs, info = self._ale.reset(seed=seeds)
        else:
            obs, info = self._ale.reset()
        self._reset_seeds()
        self._reset_options()
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._lives[:] = info["lives"]
        self._episode_frame[:] = info["episode_frame_number"]
        self._stack_fill[:] = self.frame_stack
        self._fire_next[:] = False
        self._needs_reset = False
        self.reset_infos = [{"lives": lives} for lives in self._lives.tolist()]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Hand the actions (``(num_envs,)`` ints) to the C++ workers; they run while Python goes on."""
        if self._needs_reset:
            raise RuntimeError("AleVecEnv: call reset() before step()")
        actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64, copy=False)
        if self._fire_next.any():
            actions = np.where(self._fire_next, 1, actions)
        self._ale.send(actions)
        self._waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        """Collect the step: ``(obs, rewards, dones, infos)`` in SB3's layout (see the class doc)."""
        # Cleared BEFORE recv: a Ctrl-C during recv surfaces after the C++ call has returned,
        # and a later recv with nothing pending would block forever.
        self._waiting = False
        obs, raw_rewards, terminated, truncated, ale_info = self._ale.recv()
        lives = ale_info["lives"].astype(np.int64)
        episode_frame = ale_info["episode_frame_number"].astype(np.int64)
        dones = terminated | truncated

        self._episode_return += raw_rewards
        self._episode_length += 1
        rewards = (np.sign(raw_rewards) if self.clip_reward else raw_rewards).astype(np.float32)
        # Every info carries the keys DummyVecEnv + AtariWrapper would give on every step.
        infos: list[dict[str, Any]] = [{"lives": n, "TimeLimit.truncated": False} for n in lives.tolist()]

        if self.frame_stack > 1:
            self._stack_fill += 1
        # A life loss leaves the emulator running: lives fell, frame counter kept going.
        life_lost = (lives < self._lives) & (episode_frame > self._episode_frame)
        if self.fire_after_life_loss:
            self._fire_next = life_lost
        if dones.any():
            if self.terminal_on_life_loss:
                life_lost = life_lost & terminated & ~truncated
            else:
                life_lost = np.zeros_like(dones)
            final_obs = ale_info.get("final_obs")
            now = round(time.time() - self.t_start, 6)
            for i in np.flatnonzero(dones).tolist():
                info = infos[i]
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                if life_lost[i]:
                    info["terminal_observation"] = obs[i].copy()
                    if self.frame_stack > 1:
                        self._stack_fill[i] = 1  # SB3's VecFrameStack restarts the stack on any done
                else:
                    info["terminal_observation"] = np.array(final_obs[i])
                    # ``lives`` from the C++ env already belong to the next game; report the
                    # finished game's, as SB3's envs do (0 after losing the last life).
                    info["lives"] = 0 if terminated[i] else int(self._lives[i])
                    info["episode"] = {
                        "r": float(self._episode_return[i]),
                        "l": int(self._episode_length[i]),
                        "t": now,
                    }
                    self._episode_return[i] = 0.0
                    self._episode_length[i] = 0
                    self._stack_fill[i] = self.frame_stack  # the C++ reset already zero-padded
        if self.frame_stack > 1:
            for i in np.flatnonzero(self._stack_fill < self.frame_stack).tolist():
                obs[i, : self.frame_stack - self._stack_fill[i]] = 0
            np.minimum(self._stack_fill, self.frame_stack, out=self._stack_fill)
        self._lives = lives
        self._episode_frame = episode_frame
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Stop the C++ workers and free the emulators."""
        if getattr(self, "_ale", None) is not None:
            # No draining recv here: ale-py closes cleanly with a step in flight, and a recv
            # after an interrupted step could wait forever.
            self._waiting = False
            self._ale.close()
            self._ale = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ SB3 VecEnv plumbing

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, (int, np.integer)):
            return [int(indices)]
        return [int(i) for i in indices]  # type: ignore[union-attr]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Per-env values of the few attributes the C++ envs have.

        ``render_mode`` (always None), ``game`` (ROM id), ``lives`` (at the last step) and
        ``action_meanings``; any other name raises ``AttributeError`` (so ``has_attr`` works).
        """
        idx = self._indices(indices)
        if attr_name == "render_mode":
            return [None for _ in idx]
        if attr_name == "game":
            return [self.game for _ in idx]
        if attr_name == "lives":
            return [int(self._lives[i]) for i in idx]
        if attr_name == "action_meanings":
            return [list(self._action_meanings) for _ in idx]
        raise AttributeError(
            f"AleVecEnv has no per-env attribute {attr_name!r}: the games run inside ale-py's C++ "
            "vector env; available: render_mode, game, lives, action_meanings (use backend='sb3' "
            "for full gymnasium envs)"
        )

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not available: the emulators live in C++ and have no Python attributes to set."""
        raise NotImplementedError(
            f"AleVecEnv.set_attr({attr_name!r}): the games run inside ale-py's C++ vector env and have "
            "no Python attributes; use backend='sb3' if you need per-env gymnasium envs"
        )

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Only ``get_action_meanings`` is available (one list of names per env)."""
        if method_name == "get_action_meanings":
            return self.get_attr("action_meanings", indices)
        raise NotImplementedError(
            f"AleVecEnv.env_method({method_name!r}): the games run inside ale-py's C++ vector env; only "
            "'get_action_meanings' is available (use backend='sb3' for per-env gymnasium envs)"
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """False for every gymnasium wrapper, except SB3's ``Monitor``.

        There are no gymnasium wrappers inside, but this class reports exactly what a
        ``Monitor`` under ``AtariWrapper`` reports (``info["episode"]`` at game over only), so
        it answers True for ``Monitor``: SB3's ``evaluate_policy`` then counts whole games with
        raw scores instead of treating every life loss as an episode of clipped rewards.
        """
        return [wrapper_class is Monitor for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Not available (no screen in the C++ vector env); see backend ``"sb3"``."""
        raise NotImplementedError(_NO_RENDER)

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """Not available (no screen in the C++ vector env); see backend ``"sb3"``."""
        raise NotImplementedError(_NO_RENDER)

    def get_action_meanings(self) -> list[str]:
        """Names of the minimal action set, index = action (``["NOOP", "FIRE", ...]``)."""
        return list(self._action_meanings)

    def __del__(self) -> None:  # free the C++ threads even if close() was forgotten
        try:
            self.close()
        except Exception:
            pass
