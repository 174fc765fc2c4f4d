"""Observation corruptions for robustness tests: pixel noise, flicker, occlusion.

Each is an SB3 ``VecEnvWrapper`` over a frame-stack ``VecEnv`` (uint8 observations
``(n_envs, stack * frame_channels, H, W)``, newest frame last: what :func:`envs.make_atari_vec_env`
gives on either backend, one channel per frame, and :func:`envs.make_minatar_vec_env`, where a
frame is all the object planes of the grid). Each corrupts a frame ONCE, when it arrives as the newest slot of the stack;
the older slots are the already-corrupted frames of earlier steps, shifted. So a stack shows a
consistent history (a blanked frame stays blank as it ages through the stack, as in
"flickering Pong"), instead of every slot being re-corrupted on every step.
``info["terminal_observation"]`` gets the same treatment (its older slots are the corrupted
history; its newest frame is corrupted with the episode's settings before the next episode's
settings are drawn).

Each wrapper owns a ``numpy`` Generator seeded by its ``seed`` argument (so runs repeat
exactly), and :meth:`seed` on the wrapped stack reseeds it too (SB3 models call
``env.seed(seed)`` when built with a seed). ``seed=None`` draws fresh entropy.

:func:`apply_burst` corrupts only a window of each episode's steps (a controlled perturbation
that event-aligned analysis lines up on): :meth:`_FrameCorruption.limit_to_steps`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn


class _FrameCorruption(VecEnvWrapper):
    """Base: keeps the corrupted stack and corrupts each newly arrived newest frame."""

    # Distinct per subclass so wrappers sharing one seed draw independent streams.
    _stream: int = 0

    def __init__(self, venv: VecEnv, seed: int | None = None, frame_channels: int = 1) -> None:
        space = venv.observation_space
        if not (isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3):
            raise ValueError(
                f"{type(self).__name__} needs uint8 frame-stack observations (stack, H, W), "
                f"got {space}; build the env with envs.make_atari_vec_env"
            )
        if isinstance(frame_channels, bool) or not isinstance(frame_channels, numbers.Integral) or frame_channels < 1 or (
            space.shape[0] % frame_channels
        ):
            raise ValueError(
                f"frame_channels={frame_channels!r} is invalid: it must divide the {space.shape[0]} channels of {space}"
            )
        super().__init__(venv)
        self.height, self.width = int(space.shape[1]), int(space.shape[2])
        self.frame_channels = int(frame_channels)
        self._seed_rng(seed)
        self._stack: np.ndarray | None = None  # last returned (corrupted) observations
        # Episode step of the newest frame per env: 0 for the reset observation, t for the
        # observation the t-th step returns. Only used when the corruption is limited to a window.
        self._episode_step = np.zeros(self.num_envs, dtype=np.int64)
        self.window: tuple[int, int] | None = None  # (first step, length) or None: every step

    def limit_to_steps(self, at: int, length: int) -> "_FrameCorruption":
        """Corrupt only the observations of episode steps ``at .. at + length - 1`` (step 0 is
        the observation ``reset`` returns); the rest of every episode stays clean. Returns self."""
        self.window = check_burst(at, length)
        return self

    def _in_window(self, episode_steps: np.ndarray) -> np.ndarray:
        if self.window is None:
            return np.ones(len(episode_steps), dtype=bool)
        at, length = self.window
        return (episode_steps >= at) & (episode_steps < at + length)

    def _corrupt_at(self, frames: np.ndarray, env_indices: np.ndarray, episode_steps: np.ndarray) -> None:
        """Corrupt those of ``frames`` whose episode step lies in the window (all without one)."""
        chosen = self._in_window(episode_steps)
        if chosen.all():
            self._corrupt(frames, env_indices)
        elif chosen.any():
            part = frames[chosen]  # a copy (boolean index): corrupt it, then put it back
            self._corrupt(part, env_indices[chosen])
            frames[chosen] = part

    def _seed_rng(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(None if seed is None else [int(seed), self._stream])

    # -- to implement ----------------------------------------------------------------------
    def _corrupt(self, frames: np.ndarray, env_indices: np.ndarray) -> None:
        """Corrupt ``frames`` (uint8 ``(len(env_indices), frame_channels, H, W)``, newest frames) in place."""
        raise NotImplementedError

    def _new_episodes(self, env_indices: np.ndarray) -> None:
        """Hook: these envs start a new episode (per-episode settings are redrawn here)."""

    # -- VecEnv ----------------------------------------------------------------------------
    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the wrapped envs and reseed this wrapper's own generator from ``seed``."""
        self._seed_rng(seed)
        return self.venv.seed(seed)

    def reset(self) -> VecEnvObs:
        obs = np.array(self.venv.reset())  # own copy: we corrupt in place
        everyone = np.arange(self.num_envs)
        self._new_episodes(everyone)
        self._episode_step[:] = 0
        self._corrupt_at(obs[:, -self.frame_channels :], everyone, self._episode_step)
        self._stack = obs
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        obs = np.array(obs)
        assert self._stack is not None, "reset() must be called before step()"
        done_idx = np.flatnonzero(dones)
        arriving = self._episode_step + 1  # episode step of the frames this step returns
        c = self.frame_channels
        # Terminal observations first, while the finished episodes' settings still hold.
        for i in done_idx.tolist():
            terminal = infos[i].get("terminal_observation")
            if terminal is not None:
                terminal = np.array(terminal)
                terminal[:-c] = self._stack[i, c:]
                self._corrupt_at(terminal[None, -c:], np.array([i]), arriving[i : i + 1])
                infos[i]["terminal_observation"] = terminal
        # Older slots: the history we already corrupted, shifted by one. Envs that just
        # restarted keep what the inner env gives there (the zero padding of a new stack).
        keep = ~np.asarray(dones, dtype=bool)
        obs[keep, :-c] = self._stack[keep, c:]
        if done_idx.size:
            self._new_episodes(done_idx)
        self._episode_step = np.where(keep, arriving, 0)
        self._corrupt_at(obs[:, -c:], np.arange(self.num_envs), self._episode_step)
        self._stack = obs
        return obs, rewards, dones, infos


class GaussianNoise(_FrameCorruption):
    """Adds N(0, sigma^2) pixel noise in uint8 space (0..255), rounded and clipped to 0..255.

    Args:
        venv: frame-stack VecEnv, uint8 ``(n_envs, stack, H, W)``.
        sigma: noise standard deviation in grey levels (>= 0), e.g. 10-40.
        seed: seed of the noise generator.
        frame_channels: channels per frame (1 on Atari; the object planes of a MinAtar grid).
    """

    _stream = 1

    def __init__(self, venv: VecEnv, sigma: float = 10.0, seed: int | None = None, frame_channels: int = 1) -> None:
        self.sigma = _check_number("noise", "sigma", sigma, 0.0, math.inf, ">= 0")
        super().__init__(venv, seed, frame_channels)

    def _corrupt(self, frames: np.ndarray, env_indices: np.ndarray) -> None:
        noisy = self.rng.standard_normal(frames.shape, dtype=np.float32)
        noisy *= self.sigma
        noisy += frames
        np.rint(noisy, out=noisy)
        np.clip(noisy, 0.0, 255.0, out=noisy)
        frames[...] = noisy


class Flicker(_FrameCorruption):
    """Blanks each new frame to zero with probability ``p`` ("flickering" Atari).

    With a frame stack only the newest frame is drawn each step, so the stack shows which of
    the recent frames were lost.

    Args:
        venv: frame-stack VecEnv, uint8 ``(n_envs, stack, H, W)``.
        p: probability in [0, 1] that a frame is blanked (0.5 in the flickering-Pong setup).
        seed: seed of the flicker generator.
        frame_channels: channels per frame: a blanked frame loses all of them.
    """

    _stream = 2

    def __init__(self, venv: VecEnv, p: float = 0.5, seed: int | None = None, frame_channels: int = 1) -> None:
        self.p = _check_number("flicker", "p", p, 0.0, 1.0, "in [0, 1]")
        super().__init__(venv, seed, frame_channels)

    def _corrupt(self, frames: np.ndarray, env_indices: np.ndarray) -> None:
        blank = self.rng.random(len(frames)) < self.p
        frames[blank] = 0


class Occlusion(_FrameCorruption):
    """Zeroes a ``size`` x ``size`` square patch of each new frame.

    Args:
        venv: frame-stack VecEnv, uint8 ``(n_envs, stack, H, W)``.
        size: side of the patch in pixels, 1..min(H, W).
        resample: ``"step"`` (default): a new uniformly random position for every frame, so
            the blind spot moves and memory can fill it in; ``"episode"``: one position per
            env per episode, a fixed blind spot that hides part of the screen all game.
        seed: seed of the position generator.
        frame_channels: channels per frame: the patch is cut out of all of them.
    """

    _stream = 3
    RESAMPLE = ("step", "episode")

    def __init__(
        self, venv: VecEnv, size: int = 20, resample: str = "step", seed: int | None = None, frame_channels: int = 1
    ) -> None:
        space = venv.observation_space
        limit = min(int(space.shape[-2]), int(space.shape[-1])) if isinstance(space, spaces.Box) else 1
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 1 <= size <= limit:
            raise ValueError(f"occlusion size={size!r} is invalid: it must be an integer pixel count in [1, {limit}]")
        if resample not in self.RESAMPLE:
            raise ValueError(f"occlusion resample={resample!r} is invalid: it must be one of {', '.join(map(repr, self.RESAMPLE))}")
        self.size = int(size)
        self.resample = resample
        super().__init__(venv, seed, frame_channels)
        self._corner = np.zeros((self.num_envs, 2), dtype=np.int64)  # per-episode (row, col)

    def _draw(self, n: int) -> np.ndarray:
        high = np.array([self.height - self.size + 1, self.width - self.size + 1])
        return self.rng.integers(0, high, size=(n, 2))

    def _new_episodes(self, env_indices: np.ndarray) -> None:
        if self.resample == "episode":
            self._corner[env_indices] = self._draw(len(env_indices))

    def _corrupt(self, frames: np.ndarray, env_indices: np.ndarray) -> None:
        corners = self._draw(len(frames)) if self.resample == "step" else self._corner[env_indices]
        s = self.size
        for frame, (row, col) in zip(frames, corners.tolist()):
            frame[..., row : row + s, col : col + s] = 0


def _check_number(group: str, key: str, value: Any, low: float, high: float, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(value) and low <= value <= high
    ):
        raise ValueError(f"{group} {key}={value!r} is invalid: {key} must be a number {allowed}")
    return float(value)


# name -> (wrapper class, key a plain number sets, keys a dict may hold)
_SPECS: dict[str, tuple[type[_FrameCorruption], str, tuple[str, ...]]] = {
    "noise": (GaussianNoise, "sigma", ("sigma", "seed")),
    "flicker": (Flicker, "p", ("p", "seed")),
    "occlusion": (Occlusion, "size", ("size", "resample", "seed")),
}
# Innermost first: the occluder is part of the scene, the camera adds noise, a dropped frame
# (flicker) is black whatever was on it.
_ORDER = ("occlusion", "noise", "flicker")


def parse_robustness(
    noise: float | dict[str, Any] | None = None,
    flicker: float | dict[str, Any] | None = None,
    occlusion: int | dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Validate robustness settings (as YAML gives them) into keyword dicts, one per enabled wrapper.

    None, False or 0 means off; a number sets the main parameter; a dict gives the keyword
    arguments (``noise: {sigma, seed}``, ``flicker: {p, seed}``,
    ``occlusion: {size, resample, seed}``). Raises ValueError naming any bad key or value.
    """
    configs: dict[str, dict[str, Any]] = {}
    for name, value in (("noise", noise), ("flicker", flicker), ("occlusion", occlusion)):
        cls, main_key, allowed = _SPECS[name]
        if value is None or value is False:
            continue
        if isinstance(value, dict):
            unknown = [k for k in value if k not in allowed]
            if unknown:
                raise ValueError(
                    f"unknown key {unknown[0]!r} in {name} settings; allowed keys: {', '.join(allowed)}"
                )
            kwargs = dict(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            if value == 0:
                continue
            kwargs = {main_key: value}
        else:
            raise ValueError(
                f"{name}={value!r} is invalid: give None (off), a number ({main_key}) or a dict with keys {', '.join(allowed)}"
            )
        if main_key not in kwargs:
            raise ValueError(f"{name} settings need the key {main_key!r}; got {sorted(kwargs)}")
        if kwargs[main_key] == 0 and not isinstance(kwargs[main_key], bool):
            continue
        _validate(name, kwargs)
        configs[name] = kwargs
    return configs


def _validate(name: str, kwargs: dict[str, Any]) -> None:
    """Check values without building a wrapper (so a config fails before any env starts)."""
    if name == "noise":
        _check_number("noise", "sigma", kwargs["sigma"], 0.0, math.inf, ">= 0")
    elif name == "flicker":
        _check_number("flicker", "p", kwargs["p"], 0.0, 1.0, "in [0, 1]")
    else:
        size = kwargs["size"]
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"occlusion size={size!r} is invalid: it must be an integer pixel count >= 1")
        resample = kwargs.get("resample", "step")
        if resample not in Occlusion.RESAMPLE:
            raise ValueError(f"occlusion resample={resample!r} is invalid: it must be one of 'step', 'episode'")
    seed = kwargs.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"{name} seed={seed!r} is invalid: it must be an integer >= 0 or None")


def check_burst(at: Any, length: Any) -> tuple[int, int]:
    """Validate a burst window: ``at`` an integer episode step >= 0, ``length`` an integer >= 1."""
    for name, value, low in (("at", at, 0), ("length", length, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"burst {name}={value!r} is invalid: it must be an integer >= {low}")
    return int(at), int(length)


# A burst's default strength: every frame blanked; noise that hides small objects (the ball);
# a fixed black square over a quarter of the 84 x 84 screen.
BURST_DEFAULTS: dict[str, dict[str, Any]] = {
    "noise": {"sigma": 64.0},
    "flicker": {"p": 1.0},
    "occlusion": {"size": 42, "resample": "episode"},
}


def apply_burst(
    venv: VecEnv, kind: str, at: int, length: int, level: float | None = None, seed: int | None = 0
) -> _FrameCorruption:
    """Wrap ``venv`` in one corruption that acts only on episode steps ``at .. at + length - 1``.

    Args:
        venv: frame-stack VecEnv, uint8 ``(n_envs, stack, H, W)``.
        kind: ``"noise"``, ``"flicker"`` or ``"occlusion"``.
        at: episode step of the first corrupted observation (0: the ``reset`` observation).
        length: number of corrupted steps (>= 1).
        level: the kind's main parameter (sigma, p or size); None: :data:`BURST_DEFAULTS`.
        seed: seed of the corruption's generator.

    Raises:
        ValueError: an unknown kind, a bad window or level, or observations that are not frame stacks.
    """
    if kind not in BURST_DEFAULTS:
        raise ValueError(f"perturbation {kind!r} is unknown: choose one of {', '.join(BURST_DEFAULTS)}")
    check_burst(at, length)
    cls, main_key, _ = _SPECS[kind]
    kwargs = dict(BURST_DEFAULTS[kind])
    if level is not None:
        kwargs[main_key] = int(level) if kind == "occlusion" and float(level).is_integer() else level
    _validate(kind, kwargs)
    return cls(venv, seed=seed, **kwargs).limit_to_steps(at, length)


def apply_robustness(
    venv: VecEnv,
    noise: float | dict[str, Any] | None = None,
    flicker: float | dict[str, Any] | None = None,
    occlusion: int | dict[str, Any] | None = None,
    seed: int | None = 0,
    frame_channels: int = 1,
) -> VecEnv:
    """Wrap ``venv`` in the enabled corruptions (occlusion, then noise, then flicker).

    Settings as in :func:`parse_robustness`; each wrapper is seeded with its own ``seed`` key
    if given, else with ``seed`` (the wrappers draw independent streams from one seed).
    ``frame_channels``: channels per frame of the stack (1 on Atari; a MinAtar grid's object
    planes are one frame). Returns ``venv`` itself when everything is off.
    """
    configs = parse_robustness(noise=noise, flicker=flicker, occlusion=occlusion)
    for name in _ORDER:
        if name in configs:
            kwargs = dict(configs[name])
            kwargs.setdefault("seed", seed)
            venv = _SPECS[name][0](venv, frame_channels=frame_channels, **kwargs)
    return venv
