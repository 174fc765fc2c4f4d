"""Run folders: their layout, the rules to read them, the lock and the one way to write a file.

A run folder holds everything one training run wrote::

    <run>/
      config.yaml                           resolved config (algo, policy, env, seed, hyperparams)
      model.zip                             final model (written when training ends)
      checkpoints/model_<steps>_steps.zip   periodic checkpoints, and the one Ctrl-C / SIGTERM saves
      best_model.zip                        best model of the periodic evaluations
      evaluations.npz                       timesteps, results (raw scores), ep_lengths per evaluation
      monitor.csv                           one row per finished training episode (raw game score)
      tb/run_1/                             TensorBoard event files (a resumed run continues them)
      analysis/                             written by ``brims-rl analyze`` (:func:`analysis_dir`)
      .lock                                 locked by the process training in the folder (pid, host, command)

The rules every command follows:

* **new folder name**: ``<algo>_<policy>_<env>_<YYYYmmdd-HHMMSS>_s<seed>_<pid>``; the pid keeps
  two processes started in the same second apart (:func:`new_run_dir`).
* **lock**: a process trains in a folder only while it holds an OS lock (``fcntl.flock``) on
  ``.lock``; the OS drops it when the process ends, however it ends. A second process is
  refused with the holder's pid, host and command (:func:`hold_run_dir`).
* **newest model**: ``model.zip`` or the latest checkpoint, whichever has trained longer
  (:func:`newest_model`); eval, record, analyze (:func:`model_at`) and ``--resume`` all use it.
* **resume target**: a zip given by the user, else the folder's newest model, else step 0
  (:func:`resolve_resume`).
* **writes**: every file is written by :func:`atomic_write` (temp file in the same folder,
  fsync, rename), so a crash, a signal or a full disk never leaves a half-written file, and
  the file it would have replaced stays as it was.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

from stable_baselines3.common.base_class import BaseAlgorithm

import envs
from brims_rl.loading import read_model_data

CONFIG_NAME = "config.yaml"
MODEL_NAME = "model.zip"
BEST_MODEL_NAME = "best_model.zip"
CHECKPOINT_DIR = "checkpoints"
MONITOR_NAME = "monitor.csv"
EVALUATIONS_NAME = "evaluations.npz"
TB_DIR = "tb"
TB_LOG_NAME = "run"
LOCK_NAME = ".lock"
ANALYSIS_DIR = "analysis"
_CHECKPOINT_RE = re.compile(r"^model_(\d+)_steps\.zip$")


class RunFolderError(Exception):
    """A run folder cannot be used as asked: it is in use, or a new run's folder is not empty."""


# --------------------------------------------------------------------------- writing files


def os_error_at(error: OSError, path: Union[str, Path], replace: Optional[Path] = None) -> OSError:
    """``error`` naming ``path`` when it names no file (a failed ``write``) or names ``replace``
    (a temp file the user never asked for)."""
    if error.errno is None or (error.filename is not None and error.filename != str(replace)):
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: Union[str, Path]) -> Iterator[Path]:
    """Write ``path`` all at once: yields a new temp file's path in the same folder for the
    block to write; when the block ends the temp file is flushed to disk and renamed over
    ``path``. On any error (a signal, a full disk) the temp file is removed and ``path`` keeps
    its old content; an ``OSError`` names ``path``.

    The temp name ends with ``path``'s suffix, so writers that pick a format by extension
    (SB3's ``save``, ``np.savez``, imageio) write the right thing.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(3)}.tmp{path.suffix}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        try:
            _fsync(path.parent, directory=True)  # makes the rename itself durable
        except OSError:
            pass  # some file systems cannot sync a folder; the new file is in place either way
    except Exception as error:
        _remove(tmp)
        cause = first_os_error(error)
        if cause is None:
            raise
        raise os_error_at(cause, path, replace=tmp) from None
    except BaseException:
        _remove(tmp)
        raise


def first_os_error(error: BaseException) -> Optional[OSError]:
    """The first OS error (with an errno) in ``error``'s chain, if any: torch's zip writer,
    for one, turns a full disk into a ``RuntimeError`` raised while handling the ``OSError``."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        # `raise ... from None` said the earlier error does not matter: stop there.
        error = error.__cause__ if error.__cause__ is not None or error.__suppress_context__ else error.__context__
    return next((e for e in reversed(chain) if isinstance(e, OSError) and e.errno is not None), None)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only folder: the temp file could not have been created either


def atomic_save(model: BaseAlgorithm, path: Union[str, Path]) -> Path:
    """``model.save(path)`` through :func:`atomic_write` (the folder is created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        model.save(tmp)
    return path


# --------------------------------------------------------------------------- reading a run


def checkpoint_path(run_dir: Path, num_timesteps: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"model_{num_timesteps}_steps.zip"


def saved_num_timesteps(zip_path: Path) -> int:
    """``num_timesteps`` stored in a model zip (read from its JSON data, no weights loaded).

    Raises ``NotABrimsModelError`` (a ValueError) for a file that is not a model zip."""
    return int(read_model_data(zip_path).get("num_timesteps", 0))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The checkpoint with the most steps in ``run_dir/checkpoints`` (None if there is none)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _CHECKPOINT_RE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def newest_model(run_dir: Path) -> Optional[Path]:
    """The run's model with the most training steps: its latest checkpoint or ``model.zip``
    (a finished run that was resumed and interrupted has a checkpoint newer than its model.zip)."""
    run_dir = Path(run_dir)
    # model.zip first: on a tie (a finished run's last checkpoint) max() keeps it.
    candidates = [p for p in (run_dir / MODEL_NAME, latest_checkpoint(run_dir)) if p is not None and p.is_file()]
    return max(candidates, key=saved_num_timesteps) if candidates else None


def find_run_dir(path: Union[str, Path]) -> Optional[Path]:
    """The run folder a path belongs to: itself, or the folder holding ``config.yaml`` above a zip."""
    path = Path(path)
    candidates = [path] if path.is_dir() else [path.parent, path.parent.parent]
    for candidate in candidates:
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    return None


def model_at(path: Union[str, Path], best: bool = False) -> tuple[Path, Optional[Path]]:
    """``(model zip, run folder or None)`` that a path names: a zip (and the run it lies in), or a
    run folder's newest model (``best_model.zip`` with ``best``).

    Raises:
        FileNotFoundError: nothing usable at ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r}: no such run folder or model zip")
    run_dir = find_run_dir(path)
    if path.is_file():
        return path, run_dir
    if run_dir is None:
        raise FileNotFoundError(f"{str(path)!r} is a folder without {CONFIG_NAME}: not a run folder of `brims-rl train`")
    if best:
        if not (run_dir / BEST_MODEL_NAME).is_file():
            raise FileNotFoundError(f"{str(path)!r} holds no {BEST_MODEL_NAME} (was evaluation off during training?)")
        return run_dir / BEST_MODEL_NAME, run_dir
    model_path = newest_model(run_dir)
    if model_path is None:
        raise FileNotFoundError(f"{str(path)!r} holds no {MODEL_NAME} and no checkpoint yet")
    return model_path, run_dir


def analysis_dir(model_path: Path, run_dir: Optional[Path]) -> Path:
    """Where ``brims-rl analyze`` writes by default: the run's ``analysis/``, or
    ``analysis_<zip name>`` next to a zip that lies in no run folder."""
    return run_dir / ANALYSIS_DIR if run_dir is not None else model_path.with_name(f"analysis_{model_path.stem}")


def run_dir_of(path: Union[str, Path]) -> Path:
    """The run folder ``--resume PATH`` names: the folder itself, or the one a zip lies in.

    Raises:
        FileNotFoundError: the path does not exist, or no config.yaml is found.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--resume {str(path)!r}: no such run folder or model zip")
    run_dir = find_run_dir(path)
    if run_dir is None:
        raise FileNotFoundError(
            f"--resume {str(path)!r}: no {CONFIG_NAME} found there (expected a run folder written by "
            "`brims-rl train`, or a zip inside one)"
        )
    return run_dir


def resolve_resume(path: Union[str, Path]) -> tuple[Path, Optional[Path]]:
    """``(run_dir, model zip)`` to resume from: the given zip, or the folder's newest model.

    A run folder that holds no model yet (stopped before its first checkpoint) gives
    ``(run_dir, None)``: the run starts again from step 0. Call it holding the folder's
    lock (:func:`hold_run_dir`), so that no other process is writing the folder.

    Raises:
        FileNotFoundError: as :func:`run_dir_of`.
    """
    run_dir = run_dir_of(path)
    return run_dir, (Path(path) if Path(path).is_file() else newest_model(run_dir))


# --------------------------------------------------------------------------- new folders


def new_run_dir(root: Union[str, Path], algo: str, policy: str, env_id: str, seed: int) -> Path:
    """``<root>/<algo>_<policy>_<env>_<YYYYmmdd-HHMMSS>_s<seed>_<pid>`` (a numeric suffix if it exists).

    The pid makes the name unique among the processes running now, so runs started together
    (a seed sweep in a shell loop) never share a folder; :func:`hold_run_dir` guards the rest.
    """
    env_name = envs.normalize_game_id(env_id) if envs.is_atari_id(env_id) else env_id
    slug = re.sub(r"[^A-Za-z0-9]+", "-", env_name).strip("-").lower()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{algo}_{policy}_{slug}_{stamp}_s{seed}_{os.getpid()}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}_{n}")
    return run_dir


# --------------------------------------------------------------------------- the lock

# Folders this process holds, so that a caller holding one can call train() on it.
_HELD: dict[Path, int] = {}


@contextmanager
def hold_run_dir(run_dir: Union[str, Path], new: bool = False) -> Iterator[Path]:
    """Hold the lock of ``run_dir`` for the block; the folder (and its parents) are created.

    Re-entrant within a process. ``new``: the folder must hold nothing yet (an empty folder
    made beforehand is fine). If the block fails before anything was written, the folders
    this call created are removed again, so a refused run leaves no trace.

    Raises:
        RunFolderError: another process holds the lock (the message names it), or ``new``
            and the folder is not empty.
        OSError: the folder cannot be created or locked (read-only, full disk), naming the path.
    """
    run_dir = Path(run_dir)
    key = run_dir.absolute()
    if key in _HELD:
        yield run_dir
        return
    created = _make_dirs(run_dir)
    try:
        fd = _lock(run_dir)
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[key] = fd
    try:
        if new and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            raise RunFolderError(f"run folder {str(run_dir)!r} already exists and is not empty; pick another --name")
        _write_holder(fd)
        yield run_dir
    except BaseException:
        if created and all(p.name == LOCK_NAME for p in run_dir.iterdir()):
            _remove(run_dir / LOCK_NAME)
            _remove_empty(created)
        raise
    finally:
        del _HELD[key]
        os.close(fd)  # releases the lock


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return those this call created, outermost first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    created = []
    for candidate in reversed(missing):
        try:
            candidate.mkdir()
            created.append(candidate)
        except FileExistsError:
            pass  # made by another process just now: not ours to remove
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (someone else wrote there): leave it and its parents


def _lock(run_dir: Path) -> int:
    """An open descriptor of ``run_dir/.lock`` holding its exclusive lock."""
    path = run_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderError(f"run folder {str(run_dir)!r} is in use by {holder}; wait for it to end or stop it") from None
        except BaseException:
            os.close(fd)
            raise
        # A holder that removed its empty folder may have unlinked the file we locked: retry.
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            _make_dirs(run_dir)
        os.close(fd)


def _write_holder(fd: int) -> None:
    holder = dict(pid=os.getpid(), host=socket.gethostname(), command=shlex.join(sys.argv), since=time.strftime("%Y-%m-%d %H:%M:%S"))
    data = (json.dumps(holder) + "\n").encode()
    os.ftruncate(fd, 0)
    if os.pwrite(fd, data, 0) != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _read_holder(fd: int) -> str:
    """Who holds the lock, as written in the lock file (the holder may be writing it just now)."""
    for _ in range(20):
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            return (
                f"pid {holder['pid']} on {holder['host']} since {holder['since']} "
                f"(`{holder['command']}`)"
            )
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "another process"
