"""Record a video of a trained agent: ``brims-rl record``.

Atari games are played on the ``"sb3"`` backend (ale-py's C++ vector env has no screen),
one env, and every step's RGB screen (210x160) is written to an ``.mp4`` (imageio-ffmpeg)
or a ``.gif``. The video shows the emulator's screen: robustness corruptions (noise, flicker,
occlusion) change what the agent sees, not what is filmed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from agents.episodes import EpisodeStats, play_episodes
from agents.evaluate import load_for_env, locate_model

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
    """Streams frames into an mp4, or collects them for a gif (written at the end)."""

    def __init__(self, path: Path, fps: int) -> None:
        import imageio.v2 as imageio

        self.path, self.fps, self.n_frames = path, fps, 0
        self._frames: list[np.ndarray] = []
        # ffmpeg's yuv420p needs even sides; Atari screens (210x160) already are.
        self._writer = imageio.get_writer(path, fps=fps, macro_block_size=2) if path.suffix.lower() == ".mp4" else None

    def add(self, frame: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.append_data(frame)
        else:
            self._frames.append(frame)
        self.n_frames += 1

    def close(self) -> None:
        """Finish the file; calling it again does nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif self._frames:
            import imageio.v3 as iio

            iio.imwrite(self.path, np.stack(self._frames), duration=1000 / self.fps, loop=0)
            self._frames = []


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
        out: ``.mp4`` or ``.gif`` file (written to a temp file, then renamed).
        env_id: the env (None: the run's).
        n_episodes: episodes to film; ``max_steps`` cuts the video at that many steps.
        fps: frames per second of the video.
        deterministic, seed, device, best: as :func:`agents.evaluate.evaluate`.
        **robustness: ``noise``, ``flicker``, ``occlusion`` (Atari only).

    Raises:
        ValueError: bad format or fps, or the model does not fit the env.
    """
    import envs

    out = check_video_path(out)
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps={fps!r} is invalid: it must be an integer >= 1")
    if env_id is None:
        run = locate_model(path, best=best)
        if run.config is None:
            raise ValueError(f"{str(run.model_path)!r} is not inside a run folder: give the env with --env")
        env_id = run.config.env_id
    render = {"backend": "sb3"} if envs.is_atari_id(env_id) else {"render_mode": "rgb_array"}
    model, env, run, env_id = load_for_env(path, env_id, n_envs=1, seed=seed, device=device, best=best, **render, **robustness)

    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    sink: Optional[_FrameSink] = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sink = _FrameSink(tmp, fps)

        def grab(*_: Any) -> None:
            frame = env.get_images()[0]
            if frame is None:
                raise ValueError(f"env {env_id!r} renders no rgb_array frames; cannot record it")
            sink.add(frame)

        stats = play_episodes(model, env, n_episodes, deterministic=deterministic, on_step=grab, max_steps=max_steps)
        sink.close()
        os.replace(tmp, out)
    except BaseException:
        if sink is not None:
            sink.close()  # stops the ffmpeg process before its half-written file goes
        tmp.unlink(missing_ok=True)
        raise
    finally:
        env.close()
    return RecordResult(out, sink.n_frames, stats)
