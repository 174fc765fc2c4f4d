"""How an Atari game is emulated and preprocessed: one frozen settings object for both backends.

:class:`AtariEmulation` holds what the ``"ale"`` and ``"sb3"`` backends must agree on (the
observation layout and the episode statistics); :func:`envs.make_atari_vec_env` builds it
from its arguments and hands the same object to either backend.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any


def check_int(name: str, value: Any, low: int, allowed: str) -> int:
    """``value`` as an int, or a ValueError naming ``name`` and what is allowed (``allowed``:
    the rule in words, e.g. ``">= 1"``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low:
        return int(value)
    raise ValueError(f"{name}={value!r} is invalid: {name} must be an integer {allowed}")


@dataclass(frozen=True)
class AtariEmulation:
    """The emulation and preprocessing of an Atari game (checked when built).

    Attributes:
        frame_stack: frames per observation (>= 1); 1 for recurrent policies, 4 for the
            classic feed-forward baseline.
        terminal_on_life_loss: ``done`` on every life loss, without restarting the game.
        clip_reward: rewards returned by ``step`` are ``sign(raw reward)``;
            ``info["episode"]["r"]`` always holds the raw game score.
        sticky_actions: probability in [0, 1] that the emulator repeats the previous action
            on each frame (0.25 is the "ALE v5" protocol of Machado et al.; 0 is DeepMind's).
        max_episode_steps: time limit of one game counted in emulator FRAMES, ALE's
            convention: 108_000 frames = 27_000 agent steps at ``frame_skip=4`` = 30 minutes
            of play. (On ``"ale"`` the frames of the no-op start are not counted, on ``"sb3"``
            they are: at most ``noop_max`` frames apart.)
        noop_max: up to this many no-op frames at the start of each game (random starts).
        frame_skip: emulator frames per agent step (max-pooled over the last two).
        screen_size: side of the square grey observation.

    Raises:
        ValueError: a setting out of range (the message names it).
    """

    frame_stack: int = 1
    terminal_on_life_loss: bool = True
    clip_reward: bool = True
    sticky_actions: float = 0.0
    max_episode_steps: int = 108_000
    noop_max: int = 30
    frame_skip: int = 4
    screen_size: int = 84

    def __post_init__(self) -> None:
        for name, low, allowed in (
            ("frame_stack", 1, ">= 1"),
            ("max_episode_steps", 1, ">= 1 (emulator frames)"),
            ("noop_max", 0, ">= 0"),
            ("frame_skip", 1, ">= 1"),
            ("screen_size", 8, ">= 8"),
        ):
            object.__setattr__(self, name, check_int(name, getattr(self, name), low, allowed))
        sticky = self.sticky_actions
        if isinstance(sticky, bool) or not isinstance(sticky, numbers.Real) or not (math.isfinite(sticky) and 0.0 <= sticky <= 1.0):
            raise ValueError(f"sticky_actions={sticky!r} is invalid: it is a probability and must lie in [0, 1]")
        object.__setattr__(self, "sticky_actions", float(sticky))
