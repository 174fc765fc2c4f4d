"""Early explained-variance screen: how soon each variant's value head fits, seed by seed.

Keeps a folder of per-update ``train/explained_variance``, ``train/entropy_loss`` and
``train/approx_kl`` (``train_ev.csv``: variant, seed, step, explained_variance, entropy_loss,
approx_kl; the last two empty in rows read before they were kept) for the first ``--limit`` env
steps of runs made by ``benchmarks/learning.py``, and writes from it ``summary.md`` (per seed:
first step above 0.5, mean over 10-50k steps; per variant: the mean over seeds, and how far
each update moved the policy: mean approx_kl per window, entropy over 30-50k steps) and
``ev_screen.png`` (left: mean curve per variant; right: every seed's 10-50k mean, so the
spread between seeds shows next to the differences between variants).

    python benchmarks/ev_screen.py docs/results/breakout_ev_levers \\
        --add "brims output_scale=2.5=runs/learning/breakout_os/breakout_brims_os250_s{seed}"

``--add VARIANT=PATTERN`` (the last ``=`` splits; ``{seed}`` in the pattern) reads the run
folders of seeds 0-9 that exist, each replacing that variant's rows for its seed (more seeds
of a variant can come from another folder).
``--add-results VARIANT=FOLDER:LABEL`` reads them instead from a results folder that
``benchmarks/learning.py`` wrote (its train.csv, rows of policy LABEL), for runs whose folders
are gone: ``--add-results "lstm=docs/results/breakout_300k:lstm"``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from pathlib import Path
from typing import Iterable, NoReturn

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import TRAIN_COLUMNS, _binned, first_step_above, read_results_table, read_train_scalars, refuse  # noqa: E402

FIELDS = ["variant", "seed", "step", "explained_variance", "entropy_loss", "approx_kl"]
WINDOW = (10_000, 50_000)
# Where approx_kl is averaged: before the value fits (0-10k), while it fits, after.
KL_WINDOWS = [(0, 10_000), (10_000, 30_000), (30_000, 50_000)]
# Where the fit is followed step by step: whether a variant rises later, or as early but less high.
EV_WINDOWS = [(low, low + 10_000) for low in range(0, 60_000, 10_000)]
# Mean curves in the picture only for variants with this many seeds: four seeds' means misled on five levers.
CURVE_MIN_SEEDS = 8


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2."""
    refuse(message, program="ev_screen.py")


def replace_seeds(
    rows: list[dict[str, str]], variant: str, scalars: dict[int, list[tuple[float, float, float, float]]], limit: int
) -> list[dict[str, str]]:
    """``rows`` with ``variant``'s rows for the seeds in ``scalars`` (seed -> (step,
    explained_variance, entropy_loss, approx_kl) per update) replaced by those up to ``limit``
    steps; its other seeds' rows kept, and the variants in their order in ``rows``."""
    order = {name: index for index, name in enumerate(dict.fromkeys(row["variant"] for row in rows))}
    kept = [row for row in rows if not (row["variant"] == variant and int(row["seed"]) in scalars)]
    for seed, points in scalars.items():
        for step, explained_variance, entropy_loss, approx_kl in points:
            if step <= limit:
                kept.append(
                    dict(
                        variant=variant, seed=str(seed), step=str(int(step)), explained_variance=f"{explained_variance:.4f}",
                        entropy_loss="" if np.isnan(entropy_loss) else f"{entropy_loss:.5f}",
                        approx_kl="" if np.isnan(approx_kl) else f"{approx_kl:.4e}",
                    )
                )
    return sorted(kept, key=lambda row: order.get(row["variant"], len(rows)))


def add_runs(rows: list[dict[str, str]], variant: str, pattern: str, limit: int) -> list[dict[str, str]]:
    """``variant``'s seeds 0-9 that have a run folder (``pattern`` with ``{seed}``), read from their TensorBoard scalars."""
    seeds = [seed for seed in range(10) if Path(pattern.format(seed=seed)).is_dir()]
    if not seeds:
        fail(f"--add {variant}={pattern}: no run folder matches for seeds 0-9")
    return replace_seeds(rows, variant, {seed: read_train_scalars(Path(pattern.format(seed=seed))) for seed in seeds}, limit)


def add_results(rows: list[dict[str, str]], variant: str, folder: Path, label: str, limit: int) -> list[dict[str, str]]:
    """``variant``'s seeds from the rows of policy ``label`` in a ``benchmarks/learning.py`` results folder's train.csv."""
    table = folder / "train.csv"
    if not table.is_file():
        fail(f"--add-results {variant}={folder}:{label}: no train.csv in {folder}")
    try:
        train_rows = read_results_table(table, TRAIN_COLUMNS)
    except ValueError as error:
        fail(f"--add-results {variant}={folder}:{label}: {error}")
    scalars: dict[int, list[tuple[float, float, float, float]]] = {}
    for _game, policy, seed, step, explained_variance, entropy_loss, approx_kl in train_rows:
        if policy == label:
            scalars.setdefault(seed, []).append((float(step), explained_variance, entropy_loss, approx_kl))
    if not scalars:
        fail(f"--add-results {variant}={folder}:{label}: no rows of policy {label!r} in {table}")
    return replace_seeds(rows, variant, scalars, limit)


def update_size(rows: list[dict[str, str]]) -> dict[str, dict[int, np.ndarray]]:
    """variant -> seed -> ``(n, 3)`` rows of (step, entropy_loss, approx_kl), for seeds whose rows carry them."""
    result: dict[str, dict[int, list[tuple[float, float, float]]]] = {}
    for row in rows:
        if row.get("approx_kl") and row.get("entropy_loss"):
            result.setdefault(row["variant"], {}).setdefault(int(row["seed"]), []).append(
                (float(row["step"]), float(row["entropy_loss"]), float(row["approx_kl"]))
            )
    return {v: {s: np.array(points) for s, points in sorted(seeds.items())} for v, seeds in result.items()}


def update_size_table(sizes: dict[str, dict[int, np.ndarray]]) -> list[str]:
    """Per variant: mean approx_kl (x1e-3) per KL window and mean entropy over 30-50k steps,
    each the mean over seeds of the per-seed window means."""
    def mean_over_seeds(seeds: dict[int, np.ndarray], column: int, low: int, high: int) -> float:
        per_seed = seed_window_means([(points[:, 0], points[:, column]) for points in seeds.values()], low, high)
        return float(np.mean(per_seed)) if per_seed else float("nan")

    windows = " | ".join(f"approx_kl x1e-3, {low // 1000}-{high // 1000}k" for low, high in KL_WINDOWS)
    lines = [
        "How far each update moved the policy (`train/approx_kl`) and its entropy (`train/entropy_loss`; -1.386 is",
        "uniform over Breakout's 4 actions), mean over the seeds whose rows carry them:",
        "",
        f"| variant | seeds | {windows} | entropy_loss, 30-50k |",
        "|---|---:|" + "---:|" * (len(KL_WINDOWS) + 1),
    ]
    for variant, seeds in sizes.items():
        cells = [f"{mean_over_seeds(seeds, 2, low, high) * 1e3:.2f}" for low, high in KL_WINDOWS]
        cells.append(f"{mean_over_seeds(seeds, 1, 30_000, 50_000):.3f}")
        lines.append(f"| {variant} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def window_table(curves: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]) -> list[str]:
    """Per variant: mean explained variance in each of ``EV_WINDOWS``, the mean over the seeds
    that reach the window of each seed's mean there (the seed count in brackets where some stop
    short of it)."""
    header = " | ".join(f"{low // 1000}-{high // 1000}k" for low, high in EV_WINDOWS)
    lines = [
        "Mean explained variance per 10k-step window (mean over seeds of each seed's window mean):",
        "",
        f"| variant | seeds | {header} |",
        "|---|---:|" + "---:|" * len(EV_WINDOWS),
    ]
    for variant, seeds in curves.items():
        cells = []
        for low, high in EV_WINDOWS:
            means = seed_window_means(seeds.values(), low, high)
            cells.append("" if not means else f"{np.mean(means):.2f}" + ("" if len(means) == len(seeds) else f" ({len(means)})"))
        lines.append(f"| {variant} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def per_seed(rows: list[dict[str, str]]) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """variant -> seed -> (steps, explained variance), in file order."""
    result: dict[str, dict[int, tuple[list[int], list[float]]]] = {}
    for row in rows:
        steps, values = result.setdefault(row["variant"], {}).setdefault(int(row["seed"]), ([], []))
        steps.append(int(row["step"]))
        values.append(float(row["explained_variance"]))
    return {v: {s: (np.array(a), np.array(b)) for s, (a, b) in sorted(seeds.items())} for v, seeds in result.items()}


def window_mean(steps: np.ndarray, values: np.ndarray, low: int = WINDOW[0], high: int = WINDOW[1]) -> float:
    """Mean of ``values`` at ``low <= step < high`` (NaN when no step is there)."""
    inside = (steps >= low) & (steps < high)
    return float(values[inside].mean()) if inside.any() else float("nan")


def seed_window_means(curves: Iterable[tuple[np.ndarray, np.ndarray]], low: int, high: int) -> list[float]:
    """:func:`window_mean` of each seed's (steps, values), leaving out the seeds with no step there."""
    means = [window_mean(steps, values, low, high) for steps, values in curves]
    return [value for value in means if not np.isnan(value)]


def summary(curves: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]], sizes: dict[str, dict[int, np.ndarray]], limit: int) -> str:
    lines = [
        f"Breakout, first {limit:,} env steps of runs with the 300k-step schedules (`--timesteps 300000`), "
        "the levers stopped at 45-60k steps.",
        "Per-update `train/explained_variance` in train_ev.csv. Commands: README, \"Learning results\"; "
        "`python benchmarks/ev_screen.py docs/results/breakout_ev_levers` rewrites this file and ev_screen.png.",
        "",
        "| variant | seed | EV > 0.5 first at | mean EV over 10-50k steps |",
        "|---|---:|---:|---:|",
    ]
    means = {}
    for variant, seeds in curves.items():
        for seed, (steps, values) in seeds.items():
            first = first_step_above(steps, values)
            means.setdefault(variant, []).append(window_mean(steps, values))
            lines.append(f"| {variant} | {seed} | {first if first is not None else f'not by {steps.max():,}'} | {means[variant][-1]:.2f} |")
    lines += ["", "Mean over seeds of the mean EV over 10-50k steps:", ""]
    lines += [f"* {v}: {np.mean(m):.2f} ({len(m)} seed{'s' if len(m) > 1 else ''})" for v, m in means.items()]
    lines += [""] + window_table(curves)
    if sizes:
        lines += [""] + update_size_table(sizes)
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]], path: Path, limit: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(18, 8), gridspec_kw=dict(width_ratios=[1, 1]))
    edges = np.arange(0, limit + 1, 5_000)
    centres = (edges[:-1] + edges[1:]) / 2
    names = list(curves)
    palette = plt.get_cmap("tab20").colors
    # Every tab20 colour once (the strong ones first) before any repeats; greys last, next to the LSTM's black.
    brims_colours = iter(palette[i] for i in [0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19, 14, 15] * 2)
    for index, variant in enumerate(names):
        is_lstm = variant.startswith("lstm")
        colour = "black" if is_lstm else next(brims_colours)
        seeds = curves[variant]
        seed_means = seed_window_means(seeds.values(), *WINDOW)
        right.scatter(seed_means, [index] * len(seed_means), color=colour, s=30, zorder=3)
        right.plot([np.mean(seed_means)] * 2, [index - 0.3, index + 0.3], color=colour, linewidth=3)
        if len(seeds) < CURVE_MIN_SEEDS and variant != "lstm":
            continue  # the dots on the right still show every seed of it
        binned = np.array([_binned(list(zip(steps, values)), edges) for steps, values in seeds.values()])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(binned, axis=0)
        style = dict(linewidth=3, linestyle="-" if variant == "lstm" else "--") if is_lstm else dict(linewidth=1.5)
        left.plot(centres, mean, color=colour, label=f"{variant} ({len(seeds)} seeds)", **style)
    lstm_means = seed_window_means(curves.get("lstm", {}).values(), *WINDOW)
    if lstm_means:
        right.axvspan(min(lstm_means), max(lstm_means), color="grey", alpha=0.15, label="range of LSTM-PPO's seeds")
        right.axvline(np.mean(lstm_means), color="black", linewidth=1, label="LSTM-PPO's mean")
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)
    left.set(title=f"train/explained_variance, mean over seeds\n(5k-step bins; variants run with {CURVE_MIN_SEEDS} seeds or more)", xlabel="env steps", ylabel="explained variance", ylim=(-0.2, 1.0))
    left.grid(alpha=0.3)
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)
    right.set_yticks(range(len(names)), names, fontsize=8)
    right.invert_yaxis()
    right.set(title="mean EV over 10-50k steps: a dot per seed, a bar per mean", xlabel="mean explained variance, 10-50k steps")
    right.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    # "tight" keeps the legends below the axes and the long variant names inside the picture.
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="results folder holding train_ev.csv")
    parser.add_argument("--add", action="append", default=[], metavar="VARIANT=PATTERN", help="(re)read a variant from run folders")
    parser.add_argument(
        "--add-results", action="append", default=[], metavar="VARIANT=FOLDER:LABEL",
        help="(re)read a variant's seeds from the train.csv of a benchmarks/learning.py results folder (rows of policy LABEL)",
    )
    parser.add_argument("--limit", type=int, default=60_000, help="keep steps up to this many (default 60000)")
    args = parser.parse_args()
    table = args.folder / "train_ev.csv"
    if not table.is_file():
        fail(f"{args.folder}: no train_ev.csv (expected a folder this script wrote)")
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for spec in args.add:
        variant, separator, pattern = spec.rpartition("=")
        if not separator or not variant or "{seed}" not in pattern:
            fail(f"--add {spec!r}: expected VARIANT=PATTERN with {{seed}} in the pattern")
        rows = add_runs(rows, variant, pattern, args.limit)
    for spec in args.add_results:
        variant, separator, source = spec.rpartition("=")
        folder, colon, label = source.rpartition(":")
        if not separator or not variant or not colon or not folder or not label:
            fail(f"--add-results {spec!r}: expected VARIANT=FOLDER:LABEL")
        rows = add_results(rows, variant, Path(folder), label, args.limit)
    if args.add or args.add_results:
        temporary = table.with_suffix(".csv.tmp")
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS, restval="")
            writer.writeheader()
            writer.writerows(rows)
        temporary.replace(table)
    curves = per_seed(rows)
    text = summary(curves, update_size(rows), args.limit)
    (args.folder / "summary.md").write_text(text)
    plot(curves, args.folder / "ev_screen.png", args.limit)
    print(text.split("Mean over seeds")[1])


if __name__ == "__main__":
    main()
