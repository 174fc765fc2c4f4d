"""Atari game names: every spelling users type resolves to one canonical ALE ROM id.

``PongNoFrameskip-v4``, ``ALE/Pong-v5``, ``Pong`` and ``pong`` all name ``"pong"``;
``MsPacmanNoFrameskip-v4`` and ``ms_pacman`` name ``"ms_pacman"``. Only the ROM list of the
installed ale-py is read (no emulator is built), so the backends and the config both use
these helpers.
"""

from __future__ import annotations

import difflib
import functools
import re

from ale_py import roms
from ale_py.registration import rom_id_to_name

# ROMs that ale-py ships but registers no single-player ``ALE/<Name>-v5`` id for
# (multi-player only); the SB3 backend cannot build them, so neither backend offers them.
_MULTIPLAYER_ONLY = frozenset({"combat", "joust", "maze_craze", "warlords"})

_VERSION_SUFFIX = re.compile(r"-v\d+$", re.IGNORECASE)
_MODE_SUFFIX = re.compile(r"(noframeskip|deterministic)$", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _rom_ids() -> tuple[str, ...]:
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


def _strip_id(env_id: str) -> str:
    name = env_id.strip()
    if name.lower().startswith("ale/"):
        name = name[4:]
    name = _VERSION_SUFFIX.sub("", name)
    return _MODE_SUFFIX.sub("", name)


def list_atari_games() -> list[str]:
    """Sorted canonical ALE ROM ids usable with :func:`envs.make_atari_vec_env` (``"pong"``, ...).

    These come from the ROMs bundled with the installed ale-py, minus the four multi-player
    only ROMs (combat, joust, maze_craze, warlords) that have no single-player game.
    """
    return list(_rom_ids())


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
    return f"ALE/{rom_id_to_name(game)}-v5"
