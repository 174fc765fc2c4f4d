"""Record a video of a trained agent: ``brims-rl record``.

Atari games are played on the ``"sb3"`` backend (ale-py's C++ vector env has no screen),
one env, and every step's RGB screen (210x160) is written to an ``.mp4`` (imageio-ffmpeg)
or a ``.gif``. The video shows the emulator's screen: robustness corruptions (noise, flicker,
occlusion) change what the agent sees, not what is filmed.

With ``modules=True`` (``brims-rl record --modules``, BRIMs policies) each frame is the
screen the agent is about to act on, enlarged to at least 480 px wide, and under it
:func:`brims_rl.figures.module_panel` draws, for every layer, which modules that step
updated and each module's input attention on null / bottom-up / top-down.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

import envs
from agents.episodes import EpisodeStats, play_episodes
from agents.evaluate import load_for_env, locate_model
from agents.run_folder import atomic_write
from brims_rl.activations import ActivationRecorder
from brims_rl.figures import module_panel
from brims_rl.policies import BrimsPolicy
from brims_rl.utils import check_int

VIDEO_FORMATS = (".mp4", ".gif")
# With --modules the screen is enlarged (by a whole factor) to at least this width, so the
# panel under it has room for every module's box and label.
MODULES_MIN_WIDTH = 480


@dataclass
class RecordResult:
    """What :func:`record_video` wrote."""

    path: Path
    n_frames: int
    stats: EpisodeStats


def check_video_path(out: Union[str, Path]) -> Path:
    """The output path, if its extension is a supported format.

    Raises:
        ValueError: another extension.
    """
    out = Path(out)
    if out.suffix.lower() not in VIDEO_FORMATS:
        raise ValueError(f"--out {str(out)!r}: unsupported video format {out.suffix!r}; use one of {', '.join(VIDEO_FORMATS)}")
    return out


class _FrameSink:
    """Streams frames into an mp4 (ffmpeg, in its own process), or collects them for a gif
    (written at the end)."""

    def __init__(self, path: Path, fps: int, shown: Path) -> None:
        self.path, self.fps, self.shown, self.n_frames = path, fps, shown, 0
        self._frames: list[np.ndarray] = []
        # ffmpeg's yuv420p needs even sides; Atari screens (210x160) already are. ffmpeg stays
        # quiet: a failure is reported once, as the OS error behind it (see _why). The plugin is
        # named: left to choose by extension, imageio without imageio-ffmpeg picks an image
        # writer and fails later with an unrelated message.
        self._writer = None
        if path.suffix.lower() == ".mp4":
            try:
                self._writer = imageio.get_writer(
                    path, format="FFMPEG", fps=fps, macro_block_size=2, ffmpeg_log_level="quiet"
                )
            except ImportError as error:
                raise OSError(f"could not write {str(shown)!r}: {error}") from None

    def add(self, frame: np.ndarray) -> None:
        if self._writer is not None:
            try:
                self._writer.append_data(frame)
            except Exception as error:
                raise self._why(error) from None
        else:
            self._frames.append(frame)
        self.n_frames += 1

    def close(self) -> None:
        """Finish the file; calling it again does nothing."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
            elif self._frames:
                iio.imwrite(self.path, np.stack(self._frames), duration=1000 / self.fps, loop=0)
                self._frames = []
        except Exception as error:
            raise self._why(error) from None

    def abort(self) -> None:
        """Stop ffmpeg after an error elsewhere, without raising over that first error."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    def _why(self, error: Exception) -> OSError:
        """The OS error behind a failed write of the video.

        ffmpeg writes the file from its own process, so Python sees only a broken pipe or an
        exit status; writing to the same file here gets the OS's own answer (a full disk, a
        quota). When that write succeeds, the failure was ffmpeg's own: say so, in one line."""
        try:
            with open(self.path, "ab") as probe:
                probe.write(bytes(1 << 16))
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as cause:
            return cause
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return OSError(f"could not write {str(self.shown)!r}: {first_line}")


def record_video(
    path: Union[str, Path],
    out: Union[str, Path],
    env_id: Optional[str] = None,
    n_episodes: int = 1,
    max_steps: Optional[int] = None,
    fps: int = 30,
    deterministic: bool = True,
    seed: int = 0,
    device: str = "auto",
    best: bool = False,
    modules: bool = False,
    **robustness: Any,
) -> RecordResult:
    """Play ``n_episodes`` with the model at ``path`` and write the screen to ``out``.

    Args:
        path: a run folder or a model zip.
        out: ``.mp4`` or ``.gif`` file (written by :func:`agents.run_folder.atomic_write`).
        env_id: the env (None: the run's).
        n_episodes: episodes to film; ``max_steps`` cuts the video at that many steps.
        fps: frames per second of the video.
        deterministic, seed, device, best: as :func:`agents.evaluate.evaluate`.
        modules: draw the BRIMs modules and their attention under each frame (see :func:`film`).
        **robustness: ``noise``, ``flicker``, ``occlusion`` (Atari only).

    Raises:
        ValueError: bad format or fps, ``modules`` without a BRIMs policy, or the model does
            not fit the env.
        OSError: ``out`` cannot be written (read-only, full disk); no partial file is left.
    """
    out = check_video_path(out)
    check_int("fps", fps, 1)
    if env_id is None:
        run = locate_model(path, best=best)
        if run.config is None:
            raise ValueError(f"{str(run.model_path)!r} is not inside a run folder: give the env with --env")
        env_id = run.config.env_id
    render = {"backend": "sb3"} if envs.is_atari_id(env_id) else {"render_mode": "rgb_array"}
    model, env, run, env_id = load_for_env(path, env_id, n_envs=1, seed=seed, device=device, best=best, **render, **robustness)
    try:
        if modules and not isinstance(model.policy, BrimsPolicy):
            raise ValueError(
                f"--modules needs a BRIMs policy, but {str(run.model_path)!r} has {type(model.policy).__name__}"
            )
        n_frames, stats = film(
            model, env, out, n_episodes=n_episodes, max_steps=max_steps, fps=fps, deterministic=deterministic,
            modules=modules, env_id=env_id,
        )
    finally:
        env.close()
    return RecordResult(out, n_frames, stats)


class _Screens(VecEnvWrapper):
    """Keeps env 0's screen of the observation the agent acts on next (taken at reset and
    after every step, after SB3's automatic reset) and the one before it."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.current: Optional[np.ndarray] = None
        self.previous: Optional[np.ndarray] = None

    def _grab(self) -> None:
        self.previous, self.current = self.current, self.venv.get_images()[0]

    def reset(self):
        obs = self.venv.reset()
        self._grab()
        return obs

    def step_wait(self):
        result = self.venv.step_wait()
        self._grab()
        return result


def _enlarged(screen: np.ndarray) -> np.ndarray:
    """The screen scaled by a whole factor (nearest pixel) to at least MODULES_MIN_WIDTH wide, sides even."""
    factor = max(1, -(-MODULES_MIN_WIDTH // screen.shape[1]))
    big = np.repeat(np.repeat(screen, factor, axis=0), factor, axis=1)
    return np.pad(big, ((0, big.shape[0] % 2), (0, big.shape[1] % 2), (0, 0)))


def film(
    model: BaseAlgorithm,
    env: VecEnv,
    out: Union[str, Path],
    n_episodes: int = 1,
    max_steps: Optional[int] = None,
    fps: int = 30,
    deterministic: bool = True,
    modules: bool = False,
    env_id: str = "",
) -> tuple[int, EpisodeStats]:
    """Play ``model`` on env 0 of ``env`` (which renders ``rgb_array`` screens) and write the video.

    Without ``modules`` frame t is the screen after step t. With ``modules`` (a BRIMs policy)
    frame t is the screen of the observation step t acted on, enlarged, over
    :func:`brims_rl.figures.module_panel` of that step's acting core call: every layer's
    modules (updated or kept) and their input attention, and a caption with the step, its
    reward and whether a new episode began.

    Args:
        env_id: named in the error raised when the env renders no frames.

    Returns:
        ``(frames written, episode statistics)``.

    Raises:
        ValueError: the env renders no ``rgb_array`` frames.
    """
    out = Path(out)
    no_frames = f"env {env_id!r} renders no rgb_array frames; cannot record it"
    out.parent.mkdir(parents=True, exist_ok=True)
    screens = _Screens(env) if modules else None
    recorder = ActivationRecorder()
    step = 0
    new_episode = True

    def frame_after_step() -> np.ndarray:
        frame = env.get_images()[0]
        if frame is None:
            raise ValueError(no_frames)
        return frame

    def frame_with_modules(rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        nonlocal step, new_episode
        if screens.previous is None:
            raise ValueError(no_frames)
        recorder.end_step()
        masks, attention = recorder.last_step()
        recorder.reset()
        screen = _enlarged(screens.previous)
        caption = f"step {step}   reward {float(rewards[0]):+g}" + ("   new episode" if new_episode else "")
        panel = module_panel([m[0] for m in masks], [a[0] for a in attention], screen.shape[1], caption)
        step, new_episode = step + 1, bool(dones[0])
        return np.concatenate([screen, panel], axis=0)

    with atomic_write(out) as tmp:
        sink = _FrameSink(tmp, fps, shown=out)

        def grab(_obs: Any, _actions: Any, rewards: np.ndarray, dones: np.ndarray, _infos: Any) -> None:
            sink.add(frame_with_modules(rewards, dones) if modules else frame_after_step())

        try:
            if modules:
                with model.policy.recording(recorder):
                    stats = play_episodes(model, screens, n_episodes, deterministic, on_step=grab, max_steps=max_steps)
            else:
                stats = play_episodes(model, env, n_episodes, deterministic=deterministic, on_step=grab, max_steps=max_steps)
            sink.close()
        except BaseException:
            sink.abort()  # the first error is the one to report
            raise
    return sink.n_frames, stats
