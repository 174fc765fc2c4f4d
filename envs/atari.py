"""Atari game names and the Atari vector-env factory.

Every spelling users type (``PongNoFrameskip-v4``, ``ALE/Pong-v5``, ``Pong``, ``pong``,
``ms_pacman``, ``MsPacman``) resolves to one canonical ALE ROM id (``"pong"``,
``"ms_pacman"``), and :func:`make_atari_vec_env` builds the same observation layout on both
backends: channel-first uint8 frame stacks of shape ``(n_envs, frame_stack, 84, 84)``,
oldest frame first, newest last.

Episode statistics agree across backends too: the reward returned by ``step`` is clipped to
its sign (when ``clip_reward``), ``done`` fires on every life loss (when
``terminal_on_life_loss``), and ``info["episode"] = {"r": raw game score, "l": agent steps,
"t": seconds since the env was built}`` appears only at the real end of a game, which is
what SB3's ``ep_info_buffer`` (``rollout/ep_rew_mean``) and ``evaluate_policy`` read.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SB3 imports torch: keep it out of ``import envs``
    from stable_baselines3.common.vec_env import VecEnv

BACKENDS = ("ale", "sb3")

# ROMs that ale-py ships but registers no single-player ``ALE/<Name>-v5`` id for
# (multi-player only); the SB3 backend cannot build them, so neither backend offers them.
_MULTIPLAYER_ONLY = frozenset({"combat", "joust", "maze_craze", "warlords"})

_VERSION_SUFFIX = re.compile(r"-v\d+$", re.IGNORECASE)
_MODE_SUFFIX = re.compile(r"(noframeskip|deterministic)$", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _rom_ids() -> tuple[str, ...]:
    from ale_py import roms

    return tuple(sorted(rom for rom in roms.get_all_rom_ids() if rom not in _MULTIPLAYER_ONLY))


@functools.lru_cache(maxsize=1)
def _lookup() -> dict[str, str]:
    """Squashed spelling (lower case, no separators) -> ROM id."""
    table: dict[str, str] = {}
    for rom in _rom_ids():
        key = _squash(rom)
        if key in table:  # would make two ROMs indistinguishable: fail loudly, not silently
            raise RuntimeError(f"ALE ROM ids {table[key]!r} and {rom!r} collide after normalisation")
        table[key] = rom
    return table


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def list_atari_games() -> list[str]:
    """Sorted canonical ALE ROM ids usable with :func:`make_atari_vec_env` (``"pong"``, ...).

    These come from the ROMs bundled with the installed ale-py, minus the four multi-player
    only ROMs (combat, joust, maze_craze, warlords) that have no single-player game.
    """
    return list(_rom_ids())


def _strip_id(env_id: str) -> str:
    name = env_id.strip()
    if name.lower().startswith("ale/"):
        name = name[4:]
    name = _VERSION_SUFFIX.sub("", name)
    return _MODE_SUFFIX.sub("", name)


def is_atari_id(env_id: str) -> bool:
    """Whether ``env_id`` names an Atari game in any accepted spelling."""
    return isinstance(env_id, str) and _squash(_strip_id(env_id)) in _lookup()


def normalize_game_id(env_id: str) -> str:
    """Canonical ALE ROM id for any accepted spelling of a game.

    ``"PongNoFrameskip-v4"``, ``"ALE/Pong-v5"``, ``"Pong"`` and ``"pong"`` all give
    ``"pong"``; ``"MsPacmanNoFrameskip-v4"`` and ``"ms_pacman"`` give ``"ms_pacman"``.

    Raises:
        ValueError: ``env_id`` is not an Atari game; the message names it and says how to
            list the valid names.
    """
    if not isinstance(env_id, str):
        raise ValueError(f"env_id must be a string naming an Atari game, got {env_id!r}")
    rom = _lookup().get(_squash(_strip_id(env_id)))
    if rom is None:
        close = difflib.get_close_matches(_squash(_strip_id(env_id)), list(_lookup()), n=3)
        hint = f" Did you mean {', '.join(repr(_lookup()[c]) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown Atari game {env_id!r}.{hint} Valid names: run `brims-rl list-envs` or call "
            f"`envs.list_atari_games()` ({len(_rom_ids())} games, e.g. 'pong', 'breakout'); "
            "spellings such as 'PongNoFrameskip-v4', 'ALE/Pong-v5' and 'Pong' are accepted too."
        )
    return rom


def v5_env_id(game: str) -> str:
    """The ``ALE/<Name>-v5`` gymnasium id of a canonical ROM id (``"ms_pacman"`` -> ``"ALE/MsPacman-v5"``)."""
    from ale_py.registration import rom_id_to_name

    return f"ALE/{rom_id_to_name(game)}-v5"


def _check_int(name: str, value: Any, low: int, allowed: str) -> int:
    """``value`` as an int, or a ValueError naming ``name`` and what is allowed."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low:
        return int(value)
    raise ValueError(f"{name}={value!r} is invalid: {name} must be an integer {allowed}")


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
            ``"ALE/Pong-v5"``); see :func:`list_atari_games`.
        n_envs: number of parallel games (>= 1).
        seed: env ``i`` is seeded with ``seed + i`` at the first reset; None picks a random seed.
            The robustness wrappers are seeded from it too.
        frame_stack: frames per observation (>= 1); 1 for recurrent policies, 4 for the
            classic feed-forward baseline.
        backend: ``"ale"`` (default, ale-py's C++ vector env behind :class:`envs.AleVecEnv`,
            about 2x faster) or ``"sb3"`` (SB3's ``make_atari_env`` + ``AtariWrapper`` in a
            ``DummyVecEnv``; the only one that can render, e.g. for videos).
        terminal_on_life_loss: ``done`` on every life loss, without restarting the game.
        clip_reward: rewards returned by ``step`` are ``sign(raw reward)``; ``info["episode"]["r"]``
            always holds the raw game score.
        sticky_actions: probability in [0, 1] that the emulator repeats the previous action
            on each frame (0.25 is the "ALE v5" protocol of Machado et al.; 0 is DeepMind's).
        noise, flicker, occlusion: robustness wrappers, off when None; a number sets the main
            parameter (``sigma``, ``p``, ``size``), a dict gives keyword arguments. See
            :func:`envs.apply_robustness`.
        max_episode_steps: time limit of one game counted in emulator FRAMES, ALE's
            convention: 108_000 frames = 27_000 agent steps at ``frame_skip=4`` = 30 minutes of
            play. Reaching it ends the game with ``info["TimeLimit.truncated"] = True``. (On
            ``"ale"`` the frames of the no-op start are not counted, on ``"sb3"`` they are:
            at most ``noop_max`` frames apart.)
        noop_max: up to this many no-op frames at the start of each game (random starts).
        frame_skip: emulator frames per agent step (max-pooled over the last two).
        screen_size: side of the square grey observation.
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
    n_envs = _check_int("n_envs", n_envs, 1, ">= 1")
    frame_stack = _check_int("frame_stack", frame_stack, 1, ">= 1")
    max_episode_steps = _check_int("max_episode_steps", max_episode_steps, 1, ">= 1 (emulator frames)")
    noop_max = _check_int("noop_max", noop_max, 0, ">= 0")
    frame_skip = _check_int("frame_skip", frame_skip, 1, ">= 1")
    screen_size = _check_int("screen_size", screen_size, 8, ">= 8")
    num_threads = _check_int("num_threads", num_threads, 0, ">= 0 (0: one per CPU core)")
    if seed is not None:
        seed = _check_int("seed", seed, 0, ">= 0 or None")
    if isinstance(sticky_actions, bool) or not isinstance(sticky_actions, (int, float)) or not (
        math.isfinite(sticky_actions) and 0.0 <= sticky_actions <= 1.0
    ):
        raise ValueError(
            f"sticky_actions={sticky_actions!r} is invalid: it is a probability and must lie in [0, 1]"
        )
    # Parse the robustness configs before building anything, so a typo fails fast.
    from envs.robustness import apply_robustness, parse_robustness

    robustness = parse_robustness(noise=noise, flicker=flicker, occlusion=occlusion)
    if "occlusion" in robustness and robustness["occlusion"]["size"] > screen_size:
        raise ValueError(
            f"occlusion size={robustness['occlusion']['size']!r} is invalid: it must be an integer pixel "
            f"count in [1, {screen_size}] (screen_size={screen_size})"
        )

    # What both backends emulate alike (the layout and episode statistics they must agree on).
    emulation: dict[str, Any] = dict(
        frame_stack=frame_stack,
        terminal_on_life_loss=terminal_on_life_loss,
        clip_reward=clip_reward,
        sticky_actions=float(sticky_actions),
        max_episode_frames=max_episode_steps,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=screen_size,
    )
    venv: VecEnv
    if backend == "ale":
        from envs.ale_vec_env import AleVecEnv

        venv = AleVecEnv(game, n_envs, num_threads=num_threads, **emulation)
        venv.seed(seed)  # used at the first reset, as SB3's make_vec_env does
    else:
        from envs.sb3_backend import make_sb3_atari_vec_env

        venv = make_sb3_atari_vec_env(game, n_envs, seed=seed, **emulation)
    return apply_robustness(venv, seed=seed, **robustness)
