"""`benchmarks/ev_screen.py` (run folders' TensorBoard scalars into the early-EV table and picture) and
`benchmarks/head_input_scale.py` (what the heads read, on real frames)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from stable_baselines3.common.logger import configure

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ev_screen.py"


def write_run(folder: Path, points: list[tuple[int, float]], kl_and_entropy: tuple[float, float] | None = None) -> None:
    """A run folder whose tb/ holds train/explained_variance at the given steps (SB3's own writer),
    and train/approx_kl and train/entropy_loss (``kl_and_entropy``, the same at every step) if given."""
    logger = configure(str(folder / "tb" / "PPO_1"), ["tensorboard"])
    for step, value in points:
        logger.record("train/explained_variance", value)
        if kl_and_entropy is not None:
            logger.record("train/approx_kl", kl_and_entropy[0])
            logger.record("train/entropy_loss", kl_and_entropy[1])
        logger.dump(step)
    logger.close()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_added_runs_replace_their_variant_and_summarise_per_seed(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    with open(results / "train_ev.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "seed", "step", "explained_variance"])
        writer.writerows([["lstm", 0, 20000, 0.2], ["lstm", 0, 30000, 0.8], ["old", 0, 20000, 0.1], ["old", 1, 20000, 0.7]])
    write_run(tmp_path / "runs" / "x_s0", [(5000, 0.9), (20000, 0.3), (40000, 0.6), (70000, 0.9)])
    write_run(tmp_path / "runs" / "x_s2", [(20000, 0.55)])
    write_run(tmp_path / "runs" / "old_s0", [(20000, 0.4)])

    done = run(results, "--add", f"new lever=2.5={tmp_path}/runs/x_s{{seed}}", "--add", f"old={tmp_path}/runs/old_s{{seed}}")
    assert done.returncode == 0, done.stderr

    with open(results / "train_ev.csv", newline="") as handle:
        rows = [(r["variant"], int(r["seed"]), int(r["step"]), float(r["explained_variance"])) for r in csv.DictReader(handle)]
    # The variant name keeps its own "=" (the last one splits); 70000 is past --limit; old's seed 0
    # replaced by its run folder, its seed 1 (no folder) kept.
    assert [r for r in rows if r[0] == "new lever=2.5"] == [
        ("new lever=2.5", 0, 5000, 0.9), ("new lever=2.5", 0, 20000, 0.3), ("new lever=2.5", 0, 40000, 0.6), ("new lever=2.5", 2, 20000, 0.55)
    ]
    assert sorted(r for r in rows if r[0] == "old") == [("old", 0, 20000, 0.4), ("old", 1, 20000, 0.7)]
    summary = (results / "summary.md").read_text()
    # Seed 0: the 5k point is outside 10-50k; the first step above 0.5 is 5000.
    assert "| new lever=2.5 | 0 | 5000 | 0.45 |" in summary
    assert "| new lever=2.5 | 2 | 20000 | 0.55 |" in summary
    assert "| lstm | 0 | 30000 | 0.50 |" in summary
    assert "* new lever=2.5: 0.50 (2 seeds)" in summary
    # Per 10k window, over the seeds that reach it: seed 0 alone at 0-10k and 40-50k, seed 2 has only 20k.
    assert "| new lever=2.5 | 2 | 0.90 (1) |  | 0.43 |  | 0.60 (1) |  |" in summary  # (0.3 + 0.55) / 2
    assert "| old | 2 |  |  | 0.55 |  |  |  |" in summary
    assert (results / "ev_screen.png").stat().st_size > 10_000


def test_update_size_table_reads_kl_and_entropy_from_run_folders_and_results(tmp_path: Path) -> None:
    """approx_kl and entropy per window, from TensorBoard (--add) and from a learning.py train.csv
    (--add-results); rows kept from before these columns (no values) are left out of that table only."""
    results = tmp_path / "results"
    results.mkdir()
    with open(results / "train_ev.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "seed", "step", "explained_variance"])
        writer.writerows([["lstm", 0, 20000, 0.2], ["lstm", 1, 20000, 0.4], ["old", 0, 20000, 0.1]])
    write_run(tmp_path / "runs" / "x_s0", [(5000, 0.1), (20000, 0.3), (40000, 0.6)], kl_and_entropy=(0.002, -1.3))
    write_run(tmp_path / "runs" / "x_s1", [(20000, 0.5)], kl_and_entropy=(0.004, -1.2))
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    with open(earlier / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["game", "policy", "seed", "step", "explained_variance", "entropy_loss", "approx_kl"])
        writer.writerows([
            ["breakout", "lstm", 1, 5000, 0.0, -1.38, 0.0004], ["breakout", "lstm", 1, 20000, 0.6, -1.36, 0.0006],
            ["breakout", "lstm", 1, 40000, 0.8, -1.32, 0.0010], ["breakout", "brims", 1, 20000, 0.9, -1.0, 0.5],
        ])

    done = run(results, "--add", f"x={tmp_path}/runs/x_s{{seed}}", "--add-results", f"lstm={earlier}:lstm")
    assert done.returncode == 0, done.stderr
    summary = (results / "summary.md").read_text()
    # x: seed 0 has every window at 2e-3, seed 1 only 10-30k (4e-3); entropy 30-50k only seed 0's.
    assert "| x | 2 | 2.00 | 3.00 | 2.00 | -1.300 |" in summary
    # lstm: seed 1 from the results folder (its "brims" rows ignored), seed 0 kept without KL.
    assert "| lstm | 1 | 0.40 | 0.60 | 1.00 | -1.320 |" in summary
    assert "| lstm | 1 | 20000 | 0.70 |" in summary and "| lstm | 0 | not by 20,000 | 0.20 |" in summary
    kl_table = summary[summary.index("How far each update moved"):]
    assert "| old | 0 | not by 20,000 | 0.10 |" in summary and "| old |" not in kl_table
    # The variants keep their order in the file: lstm (replaced seed), then old, then x (new).
    with open(results / "train_ev.csv", newline="") as handle:
        order = list(dict.fromkeys(row["variant"] for row in csv.DictReader(handle)))
    assert order == ["lstm", "old", "x"]


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 2 and "no train_ev.csv" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "train_ev.csv").write_text("variant,seed,step,explained_variance\n")
    done = run(tmp_path, "--add", "x=runs/nothing_here_s0")
    assert done.returncode == 2 and "expected VARIANT=PATTERN with {seed}" in done.stderr and "Traceback" not in done.stderr
    done = run(tmp_path, "--add", f"x={tmp_path}/missing_s{{seed}}")
    assert done.returncode == 2 and "no run folder matches" in done.stderr and "Traceback" not in done.stderr
    done = run(tmp_path, "--add-results", f"x={tmp_path}")
    assert done.returncode == 2 and "expected VARIANT=FOLDER:LABEL" in done.stderr and "Traceback" not in done.stderr
    done = run(tmp_path, "--add-results", f"x={tmp_path}/nowhere:lstm")
    assert done.returncode == 2 and "no train.csv" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "train.csv").write_text("game,policy,seed,step,explained_variance\n")
    done = run(tmp_path, "--add-results", f"x={tmp_path}:lstm")
    assert done.returncode == 2 and "lacks the columns ['approx_kl', 'entropy_loss']" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "train.csv").write_text("game,policy,seed,step,explained_variance,entropy_loss,approx_kl\n")
    done = run(tmp_path, "--add-results", f"x={tmp_path}:lstm")
    assert done.returncode == 2 and "no rows of policy 'lstm'" in done.stderr and "Traceback" not in done.stderr


def test_head_input_scale_reads_what_each_policys_action_head_reads() -> None:
    """``benchmarks/head_input_scale.py`` on real Breakout frames: one row per policy, each with
    its head's width (CnnLstmPolicy 256, CnnBrimsPolicy 264) and 4 envs x 8 steps of inputs."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "head_input_scale.py"), "lstm", "brims", "--steps", "8"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| lstm") or line.startswith("| brims")]
    assert [(r[0].strip(), int(r[1]), int(r[2])) for r in rows] == [("lstm at init", 32, 256), ("brims at init", 32, 264)]
    assert all(float(r[3]) > 0 for r in rows)
