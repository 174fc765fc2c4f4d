"""Reports of a study's runs: ``brims-rl report STUDY_DIR`` (or ``--storage URL --study-name NAME``).

For each (env, policy) of a grid study, over its seeds: the final score's mean and standard
deviation, the interquartile mean (IQM) and 95% bootstrap confidence intervals of both. These
are the statistics rliable recommends (Agarwal et al., 2021), computed with scipy:
``scipy.stats.trim_mean(scores, 0.25)`` is rliable's IQM, and ``scipy.stats.bootstrap`` with
percentile intervals over runs is its interval for one task.

Every number comes from the run folders' ``monitor.csv`` (the raw score of each finished
training game, read with SB3's ``load_results``). A run's **final score** is the mean score of
the games that ended in the last :data:`FINAL_FRACTION` of its steps (the last game, if none
ended there). Written into ``<study>/report/``:

* ``report.md``: one table per env, a row per policy;
* ``curves.csv``: every run's curve (``env, policy, seed, run, game, steps, score, seconds``;
  ``steps`` counts the env steps trained when the game ended);
* ``curves_<env>.png``: learning curves per env (mean over seeds, min-max band).
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results

from agents.run_folder import MODEL_NAME, MONITOR_NAME, atomic_write

FINAL_FRACTION = 0.1  # a run's final score: the games that ended in its last 10% of steps
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
CURVE_BINS = 20
REPORT_DIR = "report"


@dataclass
class RunCurve:
    """One run's training games, in the order they ended.

    Attributes:
        env, policy, seed: the grid point (``env`` is the env's label in the study).
        run_dir: the run folder.
        total_timesteps: the run's target.
        steps: ``(games,)`` env steps trained when each game ended (running sum of lengths).
        scores: ``(games,)`` raw game scores.
        seconds: ``(games,)`` wall time since the run started.
    """

    env: str
    policy: str
    seed: int
    run_dir: Path
    total_timesteps: int
    steps: np.ndarray
    scores: np.ndarray
    seconds: np.ndarray

    @property
    def final_score(self) -> float:
        return final_score(self.steps, self.scores, self.total_timesteps)


def read_monitor(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, scores, seconds)`` of a run's ``monitor.csv`` (empty arrays if no game ended)."""
    if not (Path(run_dir) / MONITOR_NAME).is_file():
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    try:
        frame = load_results(str(run_dir))
    except LoadMonitorResultsError:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    # load_results sorts by time; the order the games ended in is the file's order already.
    lengths = frame["l"].to_numpy(dtype=np.int64)
    return np.cumsum(lengths), frame["r"].to_numpy(dtype=float), frame["t"].to_numpy(dtype=float)


def final_score(steps: np.ndarray, scores: np.ndarray, total_timesteps: int) -> float:
    """Mean score of the games that ended in the last :data:`FINAL_FRACTION` of ``total_timesteps``
    (the last game's score if none did; NaN if no game ended)."""
    if len(scores) == 0:
        return math.nan
    late = steps > (1.0 - FINAL_FRACTION) * total_timesteps
    return float(np.mean(scores[late])) if late.any() else float(scores[-1])


def read_curve(env: str, policy: str, seed: int, run_dir: Path, total_timesteps: int) -> RunCurve:
    steps, scores, seconds = read_monitor(run_dir)
    return RunCurve(env, policy, seed, Path(run_dir), total_timesteps, steps, scores, seconds)


# --------------------------------------------------------------------------- statistics


def iqm(scores: Sequence[float], axis: Optional[int] = None) -> float:
    """Interquartile mean: the mean of the middle 50% (rliable's ``aggregate_iqm``)."""
    from scipy.stats import trim_mean

    return trim_mean(np.asarray(scores, dtype=float), 0.25, axis=axis)


def bootstrap_interval(
    scores: Sequence[float], statistic: Callable[..., np.ndarray], seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``statistic(x, axis)`` over runs (NaN with fewer than 2 runs)."""
    from scipy.stats import bootstrap

    data = np.asarray(scores, dtype=float)
    if len(data) < 2:
        return math.nan, math.nan
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns that 2-3 runs give few distinct resamples: the table says n
        result = bootstrap(
            (data,), statistic, vectorized=True,
            confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass
class Row:
    """The statistics of one (env, policy) over its runs."""

    env: str
    policy: str
    finals: list[float]

    @property
    def n(self) -> int:
        return len(self.finals)

    @property
    def mean(self) -> float:
        return float(np.mean(self.finals))

    @property
    def std(self) -> float:
        return float(np.std(self.finals))

    @property
    def iqm(self) -> float:
        return float(iqm(self.finals))

    @property
    def mean_interval(self) -> tuple[float, float]:
        return bootstrap_interval(self.finals, np.mean)

    @property
    def iqm_interval(self) -> tuple[float, float]:
        return bootstrap_interval(self.finals, iqm)


def summarize(curves: Sequence[RunCurve]) -> list[Row]:
    """One row per (env, policy), in the order they first appear; runs with no game are left out."""
    rows: dict[tuple[str, str], Row] = {}
    for curve in curves:
        score = curve.final_score
        if not math.isnan(score):
            rows.setdefault((curve.env, curve.policy), Row(curve.env, curve.policy, [])).finals.append(score)
    return list(rows.values())


# --------------------------------------------------------------------------- files


def slug(text: str) -> str:
    """A file-name-safe form of an env label (``MinAtar/Breakout-v1`` -> ``minatar-breakout-v1``)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _interval(low: float, high: float) -> str:
    return "n/a (1 run)" if math.isnan(low) else f"[{low:.2f}, {high:.2f}]"


def markdown(rows: Sequence[Row], title: str, pending: Sequence[str] = ()) -> str:
    lines = [f"# {title}", ""]
    lines.append(
        f"Final score: mean raw score of the training games that ended in the last {FINAL_FRACTION:.0%} of a run's "
        f"steps (from its monitor.csv). IQM: interquartile mean over runs; intervals: {CONFIDENCE:.0%} percentile "
        f"bootstrap over runs ({BOOTSTRAP_RESAMPLES} resamples)."
    )
    for env in dict.fromkeys(row.env for row in rows):
        lines += ["", f"## {env}", "", "| policy | runs | final score mean +/- std | mean 95% CI | IQM | IQM 95% CI | per run |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for row in (r for r in rows if r.env == env):
            per_run = ", ".join(f"{value:.2f}" for value in row.finals)
            lines.append(
                f"| {row.policy} | {row.n} | {row.mean:.2f} +/- {row.std:.2f} | {_interval(*row.mean_interval)} | "
                f"{row.iqm:.2f} | {_interval(*row.iqm_interval)} | {per_run} |"
            )
    if pending:
        lines += ["", f"Not finished yet ({len(pending)}): " + ", ".join(pending)]
    return "\n".join(lines) + "\n"


def write_curves_csv(curves: Sequence[RunCurve], path: Path) -> Path:
    with atomic_write(path) as tmp:
        with tmp.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["env", "policy", "seed", "run", "game", "steps", "score", "seconds"])
            for curve in curves:
                for game, (steps, score, seconds) in enumerate(zip(curve.steps, curve.scores, curve.seconds), start=1):
                    writer.writerow([curve.env, curve.policy, curve.seed, curve.run_dir.name, game, int(steps), score, seconds])
    return path


def binned(curve: RunCurve, bins: int = CURVE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(centres, mean score of the games ending in each of ``bins`` equal step windows)``; NaN where none ended."""
    edges = np.linspace(0, curve.total_timesteps, bins + 1)
    index = np.clip(np.searchsorted(edges, curve.steps, side="left") - 1, 0, bins - 1)
    sums = np.bincount(index, weights=curve.scores, minlength=bins)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return (edges[:-1] + edges[1:]) / 2, means


def plot_env(curves: Sequence[RunCurve], env: str, path: Path) -> Path:
    """Learning curves of one env: per policy, the mean over seeds of the binned curves and their min-max band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for policy in dict.fromkeys(c.policy for c in curves if c.env == env):
        runs = [binned(c) for c in curves if c.env == env and c.policy == policy]
        x = runs[0][0]
        ys = np.array([y for _, y in runs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a window where no run ended a game
            mean, low, high = np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
        (line,) = axes.plot(x, mean, marker=".", label=f"{policy} ({len(runs)} runs)")
        axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    axes.set_title(env)
    axes.set_xlabel("env steps")
    axes.set_ylabel("raw game score (games ending in each window)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_write(path) as tmp:
        figure.savefig(tmp, dpi=100)
    return path


@dataclass
class ReportFiles:
    markdown: Path
    csv: Path
    plots: list[Path]
    rows: list[Row]


def write_report(curves: Sequence[RunCurve], out_dir: Path, title: str, pending: Sequence[str] = ()) -> ReportFiles:
    """``report.md``, ``curves.csv`` and one ``curves_<env>.png`` per env into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(curves)
    md = out_dir / "report.md"
    with atomic_write(md) as tmp:
        tmp.write_text(markdown(rows, title, pending))
    csv_path = write_curves_csv(curves, out_dir / "curves.csv")
    envs = dict.fromkeys(c.env for c in curves if len(c.scores))
    plots = [plot_env([c for c in curves if len(c.scores)], env, out_dir / f"curves_{slug(env)}.png") for env in envs]
    return ReportFiles(md, csv_path, plots, rows)


def finished(run_dir: Path) -> bool:
    """A run that reached its target: ``model.zip`` is written only then."""
    return (Path(run_dir) / MODEL_NAME).is_file()
