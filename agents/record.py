"""Record a video of a trained agent: ``brims-rl record``.

Atari games are played on the ``"sb3"`` backend (ale-py's C++ vector env has no screen),
one env, and every step's RGB screen (210x160) is written to an ``.mp4`` (imageio-ffmpeg)
or a ``.gif``. The video shows the emulator's screen: robustness corruptions (noise, flicker,
occlusion) change what the agent sees, not what is filmed.
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

import envs
from agents.episodes import EpisodeStats, play_episodes
from agents.evaluate import load_for_env, locate_model
from agents.run_folder import atomic_write
from brims_rl.utils import check_int

VIDEO_FORMATS = (".mp4", ".gif")


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
        # quiet: a failure is reported once, as the OS error behind it (see _why).
        self._writer = (
            imageio.get_writer(path, fps=fps, macro_block_size=2, ffmpeg_log_level="quiet")
            if path.suffix.lower() == ".mp4"
            else None
        )

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
        **robustness: ``noise``, ``flicker``, ``occlusion`` (Atari only).

    Raises:
        ValueError: bad format or fps, or the model does not fit the env.
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
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out) as tmp:
            sink = _FrameSink(tmp, fps, shown=out)

            def grab(*_: Any) -> None:
                frame = env.get_images()[0]
                if frame is None:
                    raise ValueError(f"env {env_id!r} renders no rgb_array frames; cannot record it")
                sink.add(frame)

            try:
                stats = play_episodes(model, env, n_episodes, deterministic=deterministic, on_step=grab, max_steps=max_steps)
                sink.close()
            except BaseException:
                sink.abort()  # the first error is the one to report
                raise
    finally:
        env.close()
    return RecordResult(out, sink.n_frames, stats)
