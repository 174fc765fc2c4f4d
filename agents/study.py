"""Grid studies on Optuna: ``brims-rl study SPEC.yaml [--storage URL] [--workers N]``.

A SPEC names a study and lists ``envs``, ``policies``, ``seeds`` and ``timesteps`` (optional
``algo``, ``config`` and ``set``: config overrides as ``--set`` takes them); the grid is their
product. Each grid point is one ordinary run folder, ``<study>/runs/<env>_<policy>_s<seed>``,
trained by :func:`agents.train.train`, so ``eval``, ``analyze`` and ``train --resume`` work on it.

The engine is Optuna's relational storage (:class:`optuna.storages.RDBStorage`): SQLite in the
study folder by default, PostgreSQL or MySQL to share a grid between machines.

* The first worker to create the study (the database's unique study name decides) stores the
  grid and enqueues one WAITING trial per point; the others wait until the grid is complete.
* A worker takes a point by moving a WAITING trial to RUNNING with the storage's own
  compare-and-set (``set_trial_state_values`` refuses a trial that is no longer WAITING; it
  reads the row ``FOR UPDATE`` on PostgreSQL and MySQL, and SQLite transactions here begin
  ``IMMEDIATE``), so no point runs twice, even for workers started at the same moment.
* A running point's worker records Optuna heartbeats; a point whose heartbeat stops for
  :data:`GRACE_HEARTBEATS` intervals (kill -9, a lost machine) is failed by the next worker
  that looks (``optuna.storages.fail_stale_trials``) and Optuna's
  ``RetryHeartbeatStaleTrialCallback`` enqueues it again; the retry resumes its run folder
  from the newest checkpoint. A worker stopped by Ctrl-C or SIGTERM re-enqueues its point the same way.
* Workers keep looking while other workers' points run (one of them might die), and stop
  when every point has finished.
"""

from __future__ import annotations

import importlib.util
import math
import multiprocessing
import os
import random
import signal
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

import torch
import yaml

from agents.config import TrainConfig, resolve_config
from agents.registry import ALGOS, POLICIES
from agents.report import REPORT_DIR, ReportFiles, final_score, finished, read_curve, read_monitor, slug, write_report
from agents.run_folder import CONFIG_NAME, RunFolderError, atomic_write, hold_run_dir
from agents.train import TrainingDiverged, TrainingInterrupted, train

if TYPE_CHECKING:
    import optuna

SPEC_KEYS = ("name", "envs", "policies", "seeds", "timesteps", "algo", "config", "set")
ENV_ENTRY_KEYS = ("env", "label", "set")
RECORD_NAME = "study.yaml"  # the grid, written into the study folder (read by `brims-rl report`)
DEFAULT_STORAGE_NAME = "study.db"
RUNS_DIR = "runs"
HEARTBEAT_SECONDS = 30
GRACE_HEARTBEATS = 4  # a point whose worker missed this many heartbeats is taken as dead
GRID_WAIT_SECONDS = 120  # how long a worker waits for another worker to finish writing the grid


class StudyError(ValueError):
    """Bad input to a study: the SPEC, the storage URL, a name taken by another grid (exit 2)."""


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class GridPoint:
    """One run of the grid.

    Attributes:
        env: the env id; label: its name in reports (the id, or the SPEC's label for a variant).
        policy, seed, timesteps: as trained.
        overrides: ``--set`` strings: the SPEC's ``set``, then the env entry's.
    """

    env: str
    label: str
    policy: str
    seed: int
    timesteps: int
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The run folder's name, unique in the grid: ``<label>_<policy>_s<seed>``."""
        return f"{slug(self.label)}_{self.policy}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["overrides"] = list(self.overrides)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GridPoint":
        return cls(**{**data, "overrides": tuple(data.get("overrides", ()))})


def read_yaml(path: Path, where: str) -> Any:
    """The YAML file's content, or a :class:`StudyError` naming ``where`` (missing, not YAML)."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise StudyError(f"{where}: no such file") from None
    except yaml.YAMLError as error:
        raise StudyError(f"{where}: not valid YAML ({str(error).splitlines()[0]})") from None


def set_string(key: str, value: Any) -> str:
    """``key=value`` as ``--set`` takes it, the value written as one line of YAML."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}={text.removesuffix('...').strip()}"  # a plain scalar ends with a '...' line


def _overrides(mapping: Any, where: str) -> tuple[str, ...]:
    """A SPEC's ``set:`` mapping as ``--set`` strings."""
    if mapping is None:
        return ()
    if not isinstance(mapping, dict):
        raise StudyError(f"{where}: expected a mapping of config keys to values (any key --set accepts), got {mapping!r}")
    return tuple(set_string(key, value) for key, value in mapping.items())


@dataclass
class StudySpec:
    """A grid study as its SPEC file describes it (see the module docstring)."""

    name: str
    algo: str
    points: list[GridPoint]
    config_file: Optional[str] = None

    @classmethod
    def load(cls, path: Union[str, Path]) -> "StudySpec":
        """Read and check a SPEC file; every point's config is resolved (so a bad env, policy or
        ``set`` key fails here, naming it).

        Raises:
            StudyError: an unknown key, a missing or malformed value, a point whose config is invalid.
        """
        path = Path(path)
        where = f"study spec {str(path)!r}"
        raw = read_yaml(path, where)
        if not isinstance(raw, dict):
            raise StudyError(f"{where}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
        unknown = sorted(set(raw) - set(SPEC_KEYS))
        if unknown:
            raise StudyError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
        missing = [key for key in ("name", "envs", "policies", "seeds", "timesteps") if key not in raw]
        if missing:
            raise StudyError(f"{where}: missing key(s) {missing}")
        name = raw["name"]
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise StudyError(f"{where}: name {name!r} must be a non-empty string without '/' (it names the study's folder)")
        algo = raw.get("algo", "ppo")
        if algo not in ALGOS:
            raise StudyError(f"{where}: algo {algo!r} is not one of {', '.join(ALGOS)}")
        policies = _list(raw["policies"], "policies", where)
        for policy in policies:
            if policy not in POLICIES:
                raise StudyError(f"{where}: unknown policy {policy!r}; allowed: {', '.join(POLICIES)}")
        seeds = _list(raw["seeds"], "seeds", where)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise StudyError(f"{where}: seeds must be integers >= 0, got {seeds!r}")
        timesteps = raw["timesteps"]
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
            raise StudyError(f"{where}: timesteps must be an integer >= 1, got {timesteps!r}")
        common = _overrides(raw.get("set"), f"{where}, set")
        config_file = raw.get("config")
        if config_file is not None:
            config_file = str((path.parent / config_file) if not Path(config_file).is_absolute() else config_file)
        points = []
        for entry in _list(raw["envs"], "envs", where):
            env, label, extra = _env_entry(entry, where)
            points += [GridPoint(env, label, policy, seed, timesteps, common + extra) for policy in policies for seed in seeds]
        names = [p.name for p in points]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise StudyError(f"{where}: grid points {duplicated} repeat; give env variants distinct labels")
        spec = cls(name, algo, points, config_file)
        for point in points:
            try:
                spec.config(point)
            except (ValueError, FileNotFoundError) as error:
                raise StudyError(f"{where}: {point.name}: {error}") from None
        return spec

    def config(self, point: GridPoint) -> TrainConfig:
        """The resolved config of one point (one torch device: ``auto``)."""
        return resolve_config(
            self.algo, policy=point.policy, env_id=point.env, config_file=self.config_file, overrides=point.overrides,
            seed=point.seed, total_timesteps=point.timesteps,
        )

    def grid(self) -> list[dict[str, Any]]:
        """What identifies the grid in the storage: the algorithm, config file and every point."""
        return [dict(algo=self.algo, config=self.config_file, **p.to_dict()) for p in self.points]


def _list(value: Any, key: str, where: str) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise StudyError(f"{where}: {key} is empty")
    return items


def _env_entry(entry: Any, where: str) -> tuple[str, str, tuple[str, ...]]:
    """``MinAtar/Breakout-v1`` or ``{env: MinAtar/Breakout-v1, label: Breakout-flicker, set: {flicker: 0.3}}``."""
    if isinstance(entry, str):
        return entry, entry, ()
    if not isinstance(entry, dict) or "env" not in entry:
        raise StudyError(f"{where}: an envs entry must be an env id or a mapping with keys {', '.join(ENV_ENTRY_KEYS)}; got {entry!r}")
    unknown = sorted(set(entry) - set(ENV_ENTRY_KEYS))
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {unknown} in envs entry {entry['env']!r}; allowed: {', '.join(ENV_ENTRY_KEYS)}")
    extra = _overrides(entry.get("set"), f"{where}, envs entry {entry['env']!r}")
    return str(entry["env"]), str(entry.get("label") or entry["env"]), extra


# --------------------------------------------------------------------------- the study folder


@dataclass
class StudyRecord:
    """``<study>/study.yaml``: what ``brims-rl report STUDY_DIR`` needs without the database."""

    name: str
    algo: str
    storage: str  # the URL, password hidden
    points: list[GridPoint] = field(default_factory=list)
    study_dir: Path = Path(".")

    def run_dir(self, point: GridPoint) -> Path:
        return self.study_dir / RUNS_DIR / point.name

    def save(self) -> None:
        data = dict(name=self.name, algo=self.algo, storage=self.storage, points=[p.to_dict() for p in self.points])
        self.study_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.study_dir / RECORD_NAME) as tmp:
            tmp.write_text(yaml.safe_dump(data, sort_keys=False))

    @classmethod
    def load(cls, study_dir: Union[str, Path]) -> "StudyRecord":
        study_dir = Path(study_dir)
        path = study_dir / RECORD_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{str(study_dir)!r} is not a study folder: it has no {RECORD_NAME} (written by `brims-rl study`)")
        data = yaml.safe_load(path.read_text())
        return cls(data["name"], data["algo"], data["storage"], [GridPoint.from_dict(p) for p in data["points"]], study_dir)


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(Path(study_dir) / DEFAULT_STORAGE_NAME).absolute()}"


def hide_password(url: str) -> str:
    """The URL as it may be printed or written down: any password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


# --------------------------------------------------------------------------- the storage


@contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna marks heartbeats and their retry callback experimental (a warning at every use)."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


def open_storage(url: str, heartbeat: Optional[int] = None) -> "optuna.storages.RDBStorage":
    """Optuna's ``RDBStorage`` at ``url``, with heartbeats every ``heartbeat`` seconds.

    SQLite: every transaction begins ``IMMEDIATE`` (takes the write lock first), which makes
    Optuna's read-then-update of a trial atomic between processes, as ``FOR UPDATE`` does on
    PostgreSQL. Tables created by two workers at the same moment are retried.

    Raises:
        StudyError: the URL is malformed, its driver is missing or the database cannot be reached.
    """
    import optuna
    import sqlalchemy
    from sqlalchemy import event, exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
    except exc.ArgumentError:
        raise StudyError(f"storage URL {url!r} is not a database URL (e.g. sqlite:///study.db, postgresql://user@host/db)") from None
    engine_kwargs: dict[str, Any] = {}
    if backend == "postgresql" and "+" not in url.split("://", 1)[0]:
        url = _with_installed_postgresql_driver(url)
    if backend == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 300, "isolation_level": None}
    elif backend == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    for attempt in range(5):
        try:
            with quiet_experimental():
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback() if heartbeat else None
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                    grace_period=heartbeat * GRACE_HEARTBEATS if heartbeat else None, heartbeat_stale_trial_callback=retry,
                )
            break
        except (exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            text = str(error).lower()
            if attempt < 4 and ("already exists" in text or "duplicate" in text or "unique" in text):
                time.sleep(0.2 + random.random())  # another worker created the tables just now
                continue
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise StudyError(f"cannot open storage {hide_password(url)}: {reason}") from None
        except ImportError as error:
            raise StudyError(f"storage {hide_password(url)}: its database driver is missing ({error}); "
                             "for PostgreSQL: pip install 'brims-rl[postgresql]'") from None
    if backend == "sqlite":

        @event.listens_for(storage.engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return storage


def _with_installed_postgresql_driver(url: str) -> str:
    """``postgresql://`` names no driver; SQLAlchemy's default changed from psycopg2 (2.0) to
    psycopg 3 (2.1): take whichever is installed, psycopg 3 first."""
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url.split("://", 1)[1]
    return url  # SQLAlchemy's ImportError then says a driver is missing


# --------------------------------------------------------------------------- the study in the storage


def _wait_for(study: "optuna.Study", key: str, seconds: float) -> Any:
    """The study's user attribute ``key`` (read afresh from the storage), once another worker set it."""
    deadline = time.monotonic() + seconds
    while True:
        value = study.user_attrs.get(key)
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def open_grid_study(storage: "optuna.storages.RDBStorage", spec: StudySpec, study_dir: Path) -> "optuna.Study":
    """Create the study with its grid (the first worker) or join it (the others).

    Raises:
        StudyError: the name holds another grid (or a tune study); the grid was never completed.
    """
    import optuna

    grid = spec.grid()
    try:
        study = optuna.create_study(storage=storage, study_name=spec.name, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=storage)
    else:
        # Only the creator gets here: the database's unique study name decides.
        study.set_user_attr("kind", "grid")
        study.set_user_attr("study_dir", str(Path(study_dir).absolute()))
        study.set_user_attr("grid", grid)
        for point in spec.points:
            study.enqueue_trial({}, user_attrs={"point": point.name})
        study.set_user_attr("grid_ready", len(grid))
        return study
    kind = _wait_for(study, "kind", GRID_WAIT_SECONDS)
    if kind != "grid":
        raise StudyError(f"study {spec.name!r} in {hide_password(storage.url)} is not a grid study "
                         f"({'a tune study' if kind == 'tune' else 'not made by brims-rl study'}); pick another name")
    stored = _wait_for(study, "grid", GRID_WAIT_SECONDS)
    if stored != grid:
        raise StudyError(
            f"study {spec.name!r} in {hide_password(storage.url)} exists with a different grid "
            f"({len(stored or [])} points, {_grid_difference(stored or [], grid)}); give the new grid another name"
        )
    if _wait_for(study, "grid_ready", GRID_WAIT_SECONDS) is None:
        raise StudyError(f"study {spec.name!r}: its grid was never completed (the worker creating it died?); "
                         f"delete it with `optuna delete-study --study-name {spec.name} --storage URL` and start again")
    return study


def _grid_difference(stored: list[dict[str, Any]], new: list[dict[str, Any]]) -> str:
    def describe(entry: dict[str, Any]) -> str:
        point = GridPoint.from_dict({k: v for k, v in entry.items() if k not in ("algo", "config")})
        return f"{entry['algo']}:{point.name} ({point.timesteps} steps{', ' if point.overrides else ''}{' '.join(point.overrides)})"

    only_stored = [describe(p) for p in stored if p not in new][:2]
    only_new = [describe(p) for p in new if p not in stored][:2]
    return f"stored only: {', '.join(only_stored) or 'none'}; SPEC only: {', '.join(only_new) or 'none'}"


@dataclass
class GridStatus:
    """Where the points of a grid study stand, from its trials."""

    complete: set[str]
    failed: dict[str, str]  # point -> why (a training failure, or retries exhausted)
    running: set[str]
    waiting: set[str]
    total: int

    @property
    def finished(self) -> bool:
        return not self.running and not self.waiting

    def line(self) -> str:
        return (f"{len(self.complete)} of {self.total} points complete, {len(self.failed)} failed, "
                f"{len(self.running)} running, {len(self.waiting)} waiting")


def grid_status(study: "optuna.Study") -> GridStatus:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by_point: dict[str, list[Any]] = {}
    for trial in trials:
        by_point.setdefault(trial.user_attrs.get("point", "?"), []).append(trial)
    status = GridStatus(set(), {}, set(), set(), int(study.user_attrs.get("grid_ready") or len(by_point)))
    for point, point_trials in by_point.items():
        states = [t.state for t in point_trials]
        if TrialState.COMPLETE in states:
            status.complete.add(point)
        elif TrialState.RUNNING in states:
            status.running.add(point)
        elif TrialState.WAITING in states:
            status.waiting.add(point)
        else:
            last = max(point_trials, key=lambda t: t.number)
            status.failed[point] = last.user_attrs.get("error", "its worker died and no retry is left")
    return status


# --------------------------------------------------------------------------- a worker


class _Heartbeat:
    """Records Optuna heartbeats of one trial from a thread while a point trains."""

    def __init__(self, storage: "optuna.storages.RDBStorage", trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while not self._stop.wait(interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                pass  # the database is briefly away: the next beat tries again

    def __enter__(self) -> "_Heartbeat":
        if self.storage.get_heartbeat_interval():
            self.storage.record_heartbeat(self.trial_id)  # at once: a worker killed now must read as dead
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def claim_point(study: "optuna.Study", storage: "optuna.storages.RDBStorage") -> Optional[tuple[int, Any]]:
    """Take the next WAITING trial: ``(trial_id, frozen trial)``, or None when none is left.

    Dead workers' points are failed and re-enqueued first (``fail_stale_trials``).
    """
    import optuna
    from optuna.trial import TrialState

    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id, trial
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


@dataclass
class PointResult:
    point: str
    score: float
    steps: int
    error: Optional[str] = None


def run_point(spec: StudySpec, point: GridPoint, study_dir: Path, wait_seconds: float) -> PointResult:
    """Train one point into its run folder, continuing what an earlier attempt left there.

    A folder another live process trains in (a worker taken for dead that is in fact slow) is
    waited for: it then holds the finished run, and training here has nothing left to do.
    """
    run_dir = study_dir / RUNS_DIR / point.name
    config = spec.config(point)
    while True:
        try:
            with hold_run_dir(run_dir):
                earlier = any(p.name != ".lock" for p in run_dir.iterdir())
                result = train(config, run_dir, resume_from=run_dir if earlier else None, progress_bar=False)
            break
        except RunFolderError as error:
            if "in use" not in str(error):
                raise
            time.sleep(wait_seconds)
    steps, scores, _ = read_monitor(run_dir)
    score = final_score(steps, scores, point.timesteps)
    if math.isnan(score):
        return PointResult(point.name, score, result.num_timesteps, error=(
            f"no training game ended within {point.timesteps} steps, so the point has no score: raise timesteps "
            "(or set max_episode_steps)"))
    return PointResult(point.name, score, result.num_timesteps)


def _finish(study: "optuna.Study", storage: Any, trial_id: int, number: int, result: PointResult) -> bool:
    """Tell the storage; False when the trial had been taken for dead meanwhile (its retry records the point)."""
    import optuna
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial_id, "steps", result.steps)
        storage.set_trial_user_attr(trial_id, "host", socket.gethostname())
        storage.set_trial_user_attr(trial_id, "pid", os.getpid())
        if result.error is None:
            study.tell(number, result.score)
        else:
            storage.set_trial_user_attr(trial_id, "error", result.error)
            study.tell(number, state=TrialState.FAIL)
        return True
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    except ValueError as error:  # optuna's tell refuses a finished trial with a ValueError
        if "finished" in str(error).lower():
            return False
        raise


def _requeue(study: "optuna.Study", storage: Any, trial_id: int, why: str) -> None:
    """Fail an interrupted point's trial and enqueue its retry (Optuna's callback, as for a dead worker)."""
    import optuna
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial_id, "error", why)
        if storage.set_trial_state_values(trial_id, TrialState.FAIL):
            with quiet_experimental():
                optuna.storages.RetryHeartbeatStaleTrialCallback()(study, storage.get_trial(trial_id))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def work(spec: StudySpec, url: str, study_dir: Path, heartbeat: int = HEARTBEAT_SECONDS, log=print) -> GridStatus:
    """One worker: take points until every point of the grid has finished; return the final status."""
    storage = open_storage(url, heartbeat)
    study = open_grid_study(storage, spec, study_dir)
    points = {p.name: p for p in spec.points}
    while True:
        claimed = claim_point(study, storage)
        if claimed is None:
            status = grid_status(study)
            if status.finished:
                return status
            time.sleep(heartbeat)  # others' points run: one of them might die and need a retry
            continue
        trial_id, trial = claimed
        point = points[trial.user_attrs["point"]]
        retry = " (retry)" if trial.system_attrs.get("failed_trial") is not None else ""
        log(f"[{os.getpid()}] {point.name}{retry}: training {point.timesteps} steps")
        try:
            with _Heartbeat(storage, trial_id):
                result = run_point(spec, point, study_dir, wait_seconds=heartbeat)
        except TrainingInterrupted as stop:
            _requeue(study, storage, trial_id, f"interrupted at {stop.num_timesteps} steps")
            raise
        except KeyboardInterrupt:
            _requeue(study, storage, trial_id, "interrupted")
            raise
        except (TrainingDiverged, OSError, ValueError, RuntimeError) as error:
            result = PointResult(point.name, math.nan, 0, error=str(error).strip().splitlines()[0])
        if not _finish(study, storage, trial_id, trial.number, result):
            log(f"[{os.getpid()}] {point.name}: finished after being taken for dead; its retry records it")
        elif result.error is not None:
            log(f"[{os.getpid()}] {point.name}: failed: {result.error}")
        else:
            log(f"[{os.getpid()}] {point.name}: done, final score {result.score:.3g}")


def _set_threads(threads: Optional[int]) -> None:
    """torch's CPU threads for a worker (None: torch's own choice, e.g. from OMP_NUM_THREADS)."""
    if threads:
        torch.set_num_threads(threads)


def _worker_process(spec: StudySpec, url: str, study_dir: Path, heartbeat: int, threads: Optional[int]) -> None:
    """Entry point of a ``--workers N`` child: its own torch threads, SIGTERM as Ctrl-C."""
    _set_threads(threads)
    signal.signal(signal.SIGTERM, _terminated)

    try:
        work(spec, url, study_dir, heartbeat, log=lambda text: print(text, flush=True))
    except TrainingInterrupted as stop:
        raise SystemExit(128 + stop.signum)
    except KeyboardInterrupt as stop:
        raise SystemExit(128 + getattr(stop, "signum", signal.SIGINT))
    except StudyError as error:
        print(f"brims-rl study: error: {error}", flush=True)
        raise SystemExit(2)


class _Terminated(KeyboardInterrupt):
    """SIGTERM in a worker process, handled as Ctrl-C (a checkpoint, the point queued again)."""

    signum = signal.SIGTERM


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


@dataclass
class StudyOutcome:
    status: GridStatus
    nothing_to_do: bool
    study_dir: Path
    storage: str
    exit_code: int = 0


def run_study(
    spec: StudySpec,
    storage_url: Optional[str] = None,
    study_dir: Optional[Path] = None,
    workers: int = 1,
    heartbeat: int = HEARTBEAT_SECONDS,
    threads: Optional[int] = 1,
    log=print,
) -> StudyOutcome:
    """Create or join the study, then work on it with ``workers`` processes (1: this one), each
    with ``threads`` torch threads (None: torch's default)."""
    study_dir = Path(study_dir or Path("studies") / spec.name)
    url = storage_url or default_storage(study_dir)
    if storage_url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, heartbeat)
    study = open_grid_study(storage, spec, study_dir)
    StudyRecord(spec.name, spec.algo, hide_password(url), spec.points, study_dir).save()
    status = grid_status(study)
    if status.finished:
        return StudyOutcome(status, True, study_dir, hide_password(url))
    log(f"study {spec.name}: {status.line()}; storage {hide_password(url)}; folder {study_dir}")
    if workers == 1:
        _set_threads(threads)
        status = work(spec, url, study_dir, heartbeat, log)
        return StudyOutcome(status, False, study_dir, hide_password(url), 1 if status.failed else 0)
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_worker_process, args=(spec, url, study_dir, heartbeat, threads)) for _ in range(workers)]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join()
    except BaseException:
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM)  # each re-enqueues its point after saving a checkpoint
        for child in children:
            child.join()
        raise
    codes = [child.exitcode for child in children]
    status = grid_status(study)
    if any(code == 2 for code in codes):
        raise StudyError("a worker refused the study (see its line above)")
    code = 1 if status.failed or any(c not in (0, None) for c in codes) else 0
    return StudyOutcome(status, False, study_dir, hide_password(url), code)


def grid_study_dir(url: str, name: str) -> Path:
    """The folder of grid study ``name`` in the storage at ``url`` (as its creator recorded it).

    Raises:
        StudyError: no such study, not a grid study, or its folder is not on this machine.
    """
    import optuna

    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StudyError(f"no study {name!r} in {hide_password(url)}") from None
    if study.user_attrs.get("kind") != "grid":
        raise StudyError(f"study {name!r} in {hide_password(url)} is not a grid study (made by `brims-rl study`)")
    study_dir = Path(study.user_attrs["study_dir"])
    if not (study_dir / RECORD_NAME).is_file():
        raise StudyError(f"study {name!r}: its folder {str(study_dir)!r} is not on this machine; "
                         "give the folder holding its run folders as STUDY_DIR")
    return study_dir


def report_study(study_dir: Path, out_dir: Optional[Path] = None) -> ReportFiles:
    """Report the grid study in ``study_dir`` (its ``study.yaml`` lists the points)."""
    record = StudyRecord.load(study_dir)
    curves, pending = [], []
    for point in record.points:
        run_dir = record.run_dir(point)
        if finished(run_dir):
            curves.append(read_curve(point.label, point.policy, point.seed, run_dir, point.timesteps))
        else:
            pending.append(point.name)
    if not curves:
        raise ValueError(f"study {record.name!r} in {str(study_dir)!r} has no finished run yet ({len(pending)} pending)")
    return write_report(curves, out_dir or Path(study_dir) / REPORT_DIR, f"Study {record.name}", pending)
