"""Learning curves side by side: policies x games x seeds, several processes at once.

Each run is an ordinary ``brims-rl train`` run folder (one torch thread each), so a run
that was stopped resumes from its last checkpoint when the same command is given again,
and a finished run is read back without training. Results go to ``--out``:

* ``episodes.csv``: game, policy, seed, step, score (raw game score of every finished game;
  step = env steps trained when it ended);
* ``train.csv``: game, policy, seed, step, explained_variance, entropy_loss, approx_kl (SB3's
  ``train/*`` scalars, read back from TensorBoard);
* ``summary.md``: per game and policy, the mean raw score over the last ``--window`` steps
  (mean and spread over seeds) and the first step where explained variance passed 0.5;
* ``learning_curves.png``: score and explained variance against steps, mean over seeds with
  the min-max band.

Examples::

    python benchmarks/learning.py --games breakout --policies brims lstm cnn --seeds 0 1 \\
        --timesteps 300000 --out docs/results/breakout_300k
    python benchmarks/learning.py --games breakout --policies brims --label no_top_down \\
        --set policy_kwargs.top_down=none --timesteps 100000 --out docs/results/ablation
    python benchmarks/learning.py --games breakout --policies brims lstm --also-labels no_top_down \\
        --timesteps 100000 --out docs/results/ablation --report-only   # one table and plot for all
    python benchmarks/learning.py --games breakout --policies brims --seeds 0 3 --timesteps 300000 \\
        --out docs/results/new --baseline docs/results/breakout_300k   # the LSTM's runs as reported there
"""

from __future__ import annotations

import argparse
import csv
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NoReturn, Optional

import numpy as np

from agents.report import read_monitor

TRAIN_TAGS = ("train/explained_variance", "train/entropy_loss", "train/approx_kl")
EPISODE_COLUMNS = ("game", "policy", "seed", "step", "score")
TRAIN_COLUMNS = ("game", "policy", "seed", "step", "explained_variance", "entropy_loss", "approx_kl")


@dataclass(frozen=True)
class Run:
    game: str
    policy: str
    label: str  # the policy's name in results (the policy, or --label for an ablation)
    seed: int

    @property
    def name(self) -> str:
        return f"{self.game}_{self.label}_s{self.seed}"


def run_dir(runs_root: Path, run: Run) -> Path:
    return runs_root / run.name


def train_command(run: Run, args: argparse.Namespace, runs_root: Path) -> list[str]:
    folder = run_dir(runs_root, run)
    common = ["--threads", "1", "--no-progress-bar"]
    if (folder / "config.yaml").exists():
        return [args.brims_rl, "train", "--resume", str(folder), "--timesteps", str(args.timesteps), *common]
    command = [
        args.brims_rl, "train", "--algo", args.algo, "--env", run.game, "--policy", run.policy,
        "--seed", str(run.seed), "--timesteps", str(args.timesteps), "--run-dir", str(runs_root),
        "--name", run.name, "--set", "eval_freq=0", "--set", f"checkpoint_freq={args.checkpoint_freq}", *common,
    ]
    for override in args.set:
        command += ["--set", override]
    return command


def is_finished(folder: Path, timesteps: int) -> bool:
    """The run trained its whole budget (model.zip written at the end of ``learn``)."""
    marker = folder / "model.zip"
    if not marker.exists():
        return False
    last = read_train_scalars(folder)
    return bool(last) and max(step for step, *_ in last) >= timesteps - 2048


def run_all(runs: list[Run], args: argparse.Namespace, runs_root: Path) -> None:
    """Train every run not finished yet, ``--jobs`` processes at a time; logs next to the runs."""
    pending = [run for run in runs if not is_finished(run_dir(runs_root, run), args.timesteps)]
    active: list[tuple[Run, subprocess.Popen, float]] = []
    failed: list[str] = []
    while pending or active:
        while pending and len(active) < args.jobs:
            run = pending.pop(0)
            command = train_command(run, args, runs_root)
            log = open(runs_root / f"{run.name}.log", "a")
            print(f"[learning] start {run.name}: {shlex.join(command)}", flush=True)
            active.append((run, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), time.time()))
        time.sleep(5)
        for entry in list(active):
            run, process, started = entry
            if process.poll() is None:
                continue
            active.remove(entry)
            minutes = (time.time() - started) / 60
            status = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            print(f"[learning] {run.name} {status} after {minutes:.1f} min", flush=True)
            if process.returncode != 0:
                failed.append(run.name)
    if failed:
        raise SystemExit(f"[learning] runs failed: {', '.join(failed)} (logs in {runs_root})")


def read_train_scalars(folder: Path) -> list[tuple[int, float, float, float]]:
    """(step, explained_variance, entropy_loss, approx_kl) per logged update, all TB runs merged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    by_step: dict[int, dict[str, float]] = {}
    for events_dir in sorted({path.parent for path in folder.glob("tb/**/events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        available = set(accumulator.Tags().get("scalars", []))
        for tag in TRAIN_TAGS:
            if tag in available:
                for event in accumulator.Scalars(tag):
                    by_step.setdefault(event.step, {})[tag] = event.value
    return [
        (step, *(values.get(tag, float("nan")) for tag in TRAIN_TAGS))  # type: ignore[misc]
        for step, values in sorted(by_step.items())
    ]


def refuse(message: str, program: str = "learning.py") -> NoReturn:
    """Bad input: one line on stderr, ``program: message``, exit status 2."""
    print(f"{program}: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_results_table(path: Path, columns: tuple[str, ...]) -> list[tuple]:
    """The rows of a results folder's episodes.csv (``EPISODE_COLUMNS``) or train.csv
    (``TRAIN_COLUMNS``), typed: game and policy str, seed and step int, the rest float (an empty
    cell is NaN). Raises ValueError naming the columns ``path`` lacks."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = sorted(set(columns) - set(reader.fieldnames or []))
        if missing:
            raise ValueError(f"{path} lacks the columns {missing} (expected benchmarks/learning.py's {path.name})")
        return [
            (row["game"], row["policy"], int(row["seed"]), int(row["step"]), *(float(row[column] or "nan") for column in columns[4:]))
            for row in reader
        ]


def read_baseline(folder: Path, labels: list[str], games: list[str], seeds: list[int]) -> tuple[list[tuple], list[tuple]]:
    """Episode and train rows of ``labels`` (for these games and seeds) from an earlier results
    folder's episodes.csv and train.csv: runs reported before, not trained again."""
    tables = []
    for name, columns in (("episodes.csv", EPISODE_COLUMNS), ("train.csv", TRAIN_COLUMNS)):
        if not (folder / name).is_file():
            refuse(f"--baseline {folder}: no {name} there (expected a results folder written by this script)")
        try:
            rows = read_results_table(folder / name, columns)
        except ValueError as error:
            refuse(f"--baseline {folder}: {error}")
        tables.append([row for row in rows if row[0] in games and row[2] in seeds])
    episodes, train = tables
    found = {row[1] for row in episodes}
    if set(labels) - found:
        refuse(f"--baseline {folder}: no runs of {sorted(set(labels) - found)} for games {games}, seeds {seeds} (it has {sorted(found) or 'none'})")
    return [row for row in episodes if row[1] in labels], [row for row in train if row[1] in labels]


def write_results(
    runs: list[Run], runs_root: Path, out: Path, timesteps: int, window: int, baseline: tuple[list[tuple], list[tuple]] = ([], [])
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    episode_rows, train_rows = list(baseline[0]), list(baseline[1])
    for run in runs:
        folder = run_dir(runs_root, run)
        if not folder.is_dir():
            # A grid whose policies have different seeds (a seed added later to some of them).
            print(f"[learning] {run.name}: no run folder in {runs_root}, left out of the results", flush=True)
            continue
        steps, scores, _ = read_monitor(folder)
        episode_rows += [(run.game, run.label, run.seed, int(s), float(r)) for s, r in zip(steps, scores)]
        train_rows += [(run.game, run.label, run.seed, *row) for row in read_train_scalars(folder)]
    with (out / "episodes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EPISODE_COLUMNS)
        writer.writerows(episode_rows)
    with (out / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TRAIN_COLUMNS)
        writer.writerows(train_rows)
    (out / "summary.md").write_text(summary_table(episode_rows, train_rows, timesteps, window))
    plot_curves(episode_rows, train_rows, out / "learning_curves.png", timesteps)
    print((out / "summary.md").read_text())
    print(f"[learning] wrote {out}/episodes.csv, train.csv, summary.md, learning_curves.png")


def _groups(rows: list[tuple]) -> dict[tuple[str, str], dict[int, list[tuple]]]:
    """rows (game, policy, seed, ...) -> {(game, policy): {seed: [rest, ...]}} in first-seen order."""
    groups: dict[tuple[str, str], dict[int, list[tuple]]] = {}
    for game, policy, seed, *rest in rows:
        groups.setdefault((game, policy), {}).setdefault(seed, []).append(tuple(rest))
    return groups


def first_step_above(steps: Iterable[int], values: Iterable[float], threshold: float = 0.5) -> Optional[int]:
    """The first step whose value exceeds ``threshold`` (None if none does)."""
    return next((int(step) for step, value in zip(steps, values) if value > threshold), None)


def summary_table(episode_rows: list[tuple], train_rows: list[tuple], timesteps: int, window: int) -> str:
    train = _groups(train_rows)
    lines = [
        f"Mean raw game score of the games that ended in the last {window:,} of {timesteps:,} env steps "
        "(mean over seeds, [min, max] of the seed means); first step where train/explained_variance "
        "passed 0.5 (per seed).",
        "",
        "| game | policy | seeds | steps trained | mean score, last window | per seed | EV > 0.5 first at |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for (game, policy), seeds in _groups(episode_rows).items():
        means, firsts, trained = [], [], []
        for seed, rows in sorted(seeds.items()):
            updates = train.get((game, policy), {}).get(seed, [])
            trained.append(f"{max(step for step, *_ in updates):,}" if updates else "0")
            last = [score for step, score in rows if step > timesteps - window]
            means.append(float(np.mean(last)) if last else float("nan"))
            first = first_step_above([step for step, *_ in updates], [ev for _, ev, *_ in updates])
            firsts.append(f"{first:,}" if first is not None else "never")
        lines.append(
            f"| {game} | {policy} | {len(means)} | {', '.join(trained)} | {np.nanmean(means):.2f} | "
            f"{', '.join(f'{m:.2f}' for m in means)} | {', '.join(firsts)} |"
        )
    return "\n".join(lines) + "\n"


def _binned(points: list[tuple[float, float]], edges: np.ndarray) -> np.ndarray:
    """Mean of the values whose step falls in each bin (nan for an empty bin)."""
    steps = np.array([p[0] for p in points])
    values = np.array([p[1] for p in points])
    result = np.full(len(edges) - 1, np.nan)
    for i in range(len(edges) - 1):
        inside = (steps > edges[i]) & (steps <= edges[i + 1])
        if inside.any():
            result[i] = values[inside].mean()
    return result


def plot_curves(episode_rows: list[tuple], train_rows: list[tuple], path: Path, timesteps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes, train = _groups(episode_rows), _groups(train_rows)
    games = list(dict.fromkeys(game for game, _ in episodes))
    figure, axes = plt.subplots(2, len(games), figsize=(6.5 * len(games), 7.5), squeeze=False)
    edges = np.linspace(0, timesteps, 31)
    centres = (edges[:-1] + edges[1:]) / 2
    for column, game in enumerate(games):
        for (group_game, policy), seeds in episodes.items():
            if group_game != game:
                continue
            for row, (source, title) in enumerate([(seeds, "raw game score"), (train.get((game, policy), {}), "explained variance")]):
                curves = np.array([_binned([(p[0], p[1]) for p in rows], edges) for rows in source.values()])
                if curves.size == 0:
                    continue
                axis = axes[row, column]
                with np.errstate(all="ignore"):
                    mean = np.nanmean(curves, axis=0)
                line, = axis.plot(centres, mean, label=f"{policy} ({len(curves)} seed{'s' if len(curves) > 1 else ''})", linewidth=2)
                axis.fill_between(centres, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=line.get_color(), alpha=0.2)
                axis.set_ylabel(title)
        axes[0, column].set_title(f"{game}: raw score per game (mean over seeds, band = min-max)")
        axes[1, column].set_title(f"{game}: train/explained_variance")
        axes[1, column].set_ylim(-0.2, 1.0)
        for axis in axes[:, column]:
            axis.set_xlabel("env steps")
            axis.grid(alpha=0.3)
            axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["breakout"], help="Atari games (any spelling brims-rl accepts)")
    parser.add_argument("--policies", nargs="+", default=["brims", "lstm", "cnn"], choices=["brims", "lstm", "cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--timesteps", type=int, default=300_000)
    parser.add_argument("--algo", default="ppo", choices=["ppo", "a2c"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    parser.add_argument("--label", help="name of the policy in the results (for ablations run with --set)")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at once (one torch thread each)")
    parser.add_argument("--window", type=int, default=100_000, help="steps at the end that the summary averages")
    parser.add_argument("--checkpoint-freq", type=int, default=50_000, help="env steps between checkpoints (resume points)")
    parser.add_argument("--runs-root", type=Path, default=Path("runs/learning"), help="where run folders go (not committed)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (CSV, PNG, summary.md)")
    parser.add_argument("--report-only", action="store_true", help="write results from the run folders, train nothing")
    parser.add_argument(
        "--also-labels", nargs="+", default=[], metavar="LABEL",
        help="add to the results the runs trained earlier with --label LABEL (same games, seeds and --out); not trained",
    )
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR",
        help="also report these policies' runs from an earlier results folder (its episodes.csv and train.csv; same games and seeds), not trained again",
    )
    parser.add_argument("--baseline-labels", nargs="+", default=["lstm"], metavar="LABEL", help="which policies --baseline adds (default: lstm)")
    parser.add_argument("--brims-rl", default=str(Path(sys.executable).with_name("brims-rl")), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.label and len(args.policies) != 1:
        parser.error(f"--label {args.label!r} names one policy's variant: give exactly one --policies (got {args.policies})")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: expected at least 1")
    reported_here = set(args.also_labels) | ({args.label} if args.label else set(args.policies))
    if args.baseline and reported_here & set(args.baseline_labels):
        parser.error(
            f"--baseline-labels {sorted(reported_here & set(args.baseline_labels))}: also reported from this "
            f"script's run folders; a policy comes from one source (give --label to the new runs)"
        )
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    runs = [
        Run(game, policy, args.label or policy, seed)
        for game in args.games for policy in args.policies for seed in args.seeds
    ]
    runs_root = args.runs_root / args.out.name
    runs_root.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_all(runs, args, runs_root)
    variants = [Run(game, label, label, seed) for game in args.games for label in args.also_labels for seed in args.seeds]
    baseline = read_baseline(args.baseline, args.baseline_labels, args.games, args.seeds) if args.baseline else ([], [])
    write_results(runs + variants, runs_root, args.out, args.timesteps, args.window, baseline)


if __name__ == "__main__":
    main()
