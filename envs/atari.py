"""The Atari vector-env factory: one game, either backend, the same layout and statistics.

:func:`make_atari_vec_env` builds the same observation layout on both backends: channel-first
uint8 frame stacks of shape ``(n_envs, frame_stack, 84, 84)``, oldest frame first, newest last.

Episode statistics agree across backends too: the reward returned by ``step`` is clipped to
its sign (when ``clip_reward``), ``done`` fires on every life loss (when
``terminal_on_life_loss``), and ``info["episode"] = {"r": raw game score, "l": agent steps,
"t": seconds since the env was built}`` appears only at the real end of a game, which is
what SB3's ``ep_info_buffer`` (``rollout/ep_rew_mean``) and ``evaluate_policy`` read.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.vec_env import VecEnv

from envs.ale_vec_env import AleVecEnv
from envs.emulation import AtariEmulation, check_int
from envs.games import normalize_game_id
from envs.robustness import apply_robustness, parse_robustness
from envs.sb3_backend import make_sb3_atari_vec_env

BACKENDS = ("ale", "sb3")


def make_atari_vec_env(
    env_id: str,
    n_envs: int = 8,
    seed: int | None = 0,
    frame_stack: int = 1,
    backend: str = "ale",
    terminal_on_life_loss: bool = True,
    clip_reward: bool = True,
    sticky_actions: float = 0.0,
    noise: float | dict[str, Any] | None = None,
    flicker: float | dict[str, Any] | None = None,
    occlusion: int | dict[str, Any] | None = None,
    max_episode_steps: int = 108_000,
    *,
    noop_max: int = 30,
    frame_skip: int = 4,
    screen_size: int = 84,
    num_threads: int = 0,
) -> VecEnv:
    """Build an SB3 ``VecEnv`` of an Atari game with DeepMind-style preprocessing.

    Observations are uint8 arrays of shape ``(n_envs, frame_stack, screen_size, screen_size)``
    (84x84 grey by default), channel first, oldest frame first and newest last; at the start
    of an episode (and after a life-loss terminal) the older slots are zero, as with SB3's
    ``VecFrameStack``. Actions are ``Discrete`` over the game's minimal action set.

    Args:
        env_id: any spelling of the game (``"pong"``, ``"Pong"``, ``"PongNoFrameskip-v4"``,
            ``"ALE/Pong-v5"``); see :func:`envs.list_atari_games`.
        n_envs: number of parallel games (>= 1).
        seed: env ``i`` is seeded with ``seed + i`` at the first reset; None picks a random seed.
            The robustness wrappers are seeded from it too.
        backend: ``"ale"`` (default, ale-py's C++ vector env behind :class:`envs.AleVecEnv`,
            about 2x faster) or ``"sb3"`` (SB3's ``make_atari_env`` + ``AtariWrapper`` in a
            ``DummyVecEnv``; the only one that can render, e.g. for videos).
        noise, flicker, occlusion: robustness wrappers, off when None; a number sets the main
            parameter (``sigma``, ``p``, ``size``), a dict gives keyword arguments. See
            :func:`envs.apply_robustness`.
        frame_stack, terminal_on_life_loss, clip_reward, sticky_actions, max_episode_steps,
            noop_max, frame_skip, screen_size: the emulation, see :class:`envs.AtariEmulation`
            (1 frame for recurrent policies, 4 for the feed-forward baseline; a game that
            reaches ``max_episode_steps`` frames ends with ``info["TimeLimit.truncated"]``).
        num_threads: C++ worker threads of the ``"ale"`` backend (0: one per CPU core);
            ignored by ``"sb3"``.

    Returns:
        A ``VecEnv`` with the layout above; ``info["episode"]`` only at the end of a game,
        ``info["terminal_observation"]`` on every ``done``.

    Raises:
        ValueError: unknown game or backend, or an argument out of range (the message names it).
    """
    game = normalize_game_id(env_id)
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is invalid: backend must be one of {', '.join(map(repr, BACKENDS))}")
    n_envs = check_int("n_envs", n_envs, 1, ">= 1")
    emulation = AtariEmulation(
        frame_stack=frame_stack,
        terminal_on_life_loss=terminal_on_life_loss,
        clip_reward=clip_reward,
        sticky_actions=sticky_actions,
        max_episode_steps=max_episode_steps,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=screen_size,
    )
    num_threads = check_int("num_threads", num_threads, 0, ">= 0 (0: one per CPU core)")
    if seed is not None:
        seed = check_int("seed", seed, 0, ">= 0 or None")
    # Parse the robustness configs before building anything, so a typo fails fast.
    robustness = parse_robustness(noise=noise, flicker=flicker, occlusion=occlusion)
    if "occlusion" in robustness and robustness["occlusion"]["size"] > screen_size:
        raise ValueError(
            f"occlusion size={robustness['occlusion']['size']!r} is invalid: it must be an integer pixel "
            f"count in [1, {screen_size}] (screen_size={screen_size})"
        )
    venv: VecEnv
    if backend == "ale":
        venv = AleVecEnv(game, n_envs, emulation, num_threads=num_threads)
        venv.seed(seed)  # used at the first reset, as SB3's make_vec_env does
    else:
        venv = make_sb3_atari_vec_env(game, n_envs, emulation, seed=seed)
    return apply_robustness(venv, seed=seed, **robustness)
