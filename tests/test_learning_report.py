"""``benchmarks/learning.py``'s report: runs reported before are added from a results folder."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import learning  # noqa: E402

EPISODES = [
    ("breakout", "lstm", 0, 1200, 2.0),
    ("breakout", "lstm", 0, 2500, 4.0),
    ("breakout", "lstm", 1, 2600, 9.0),
    ("breakout", "cnn", 0, 2400, 7.0),
    ("seaquest", "lstm", 0, 2400, 80.0),
]
TRAIN = [
    ("breakout", "lstm", 0, 1024, 0.1, -1.3, 0.001),
    ("breakout", "lstm", 0, 2048, 0.6, -1.2, 0.002),
    ("breakout", "lstm", 1, 2048, 0.9, -1.1, 0.003),
]


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture()
def earlier(tmp_path: Path) -> Path:
    folder = tmp_path / "earlier"
    folder.mkdir()
    write_csv(folder / "episodes.csv", ["game", "policy", "seed", "step", "score"], EPISODES)
    write_csv(folder / "train.csv", ["game", "policy", "seed", "step", "explained_variance", "entropy_loss", "approx_kl"], TRAIN)
    return folder


def test_baseline_rows_of_the_games_seeds_and_labels_asked_for_are_reported(earlier: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    learning.main([
        "--games", "breakout", "--policies", "brims", "--label", "variant", "--seeds", "0", "--timesteps", "3000",
        "--window", "1500", "--out", str(out), "--runs-root", str(tmp_path / "runs"), "--report-only",
        "--baseline", str(earlier),
    ])
    with (out / "episodes.csv").open() as handle:
        assert list(csv.reader(handle))[1:] == [["breakout", "lstm", "0", "1200", "2.0"], ["breakout", "lstm", "0", "2500", "4.0"]]
    with (out / "train.csv").open() as handle:
        assert [row[:5] for row in list(csv.reader(handle))[1:]] == [["breakout", "lstm", "0", "1024", "0.1"], ["breakout", "lstm", "0", "2048", "0.6"]]
    summary = (out / "summary.md").read_text()
    # Last 1500 of 3000 steps: only the game that ended at 2500; EV first passed 0.5 at 2048.
    assert "| breakout | lstm | 1 | 2,048 | 4.00 | 4.00 | 2,048 |" in summary
    assert (out / "learning_curves.png").stat().st_size > 0


def test_bad_baselines_are_refused_in_one_line(earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--games", "breakout", "--seeds", "0", "--out", str(tmp_path / "new"), "--runs-root", str(tmp_path / "runs"), "--report-only"]
    older = tmp_path / "older"  # a train.csv from before entropy and approx_kl were kept
    older.mkdir()
    write_csv(older / "episodes.csv", ["game", "policy", "seed", "step", "score"], EPISODES)
    write_csv(older / "train.csv", ["game", "policy", "seed", "step", "explained_variance"], [row[:5] for row in TRAIN])
    for extra, message in [
        (["--baseline", str(older), "--baseline-labels", "lstm"], "train.csv lacks the columns ['approx_kl', 'entropy_loss']"),
        (["--baseline", str(earlier), "--baseline-labels", "a2c_lstm"], "no runs of ['a2c_lstm'] for games ['breakout'], seeds [0] (it has ['cnn', 'lstm'])"),
        (["--baseline", str(tmp_path)], "no episodes.csv there"),
    ]:
        with pytest.raises(SystemExit) as refused:
            learning.main([*common, "--policies", "brims", "--label", "v", *extra])
        error = capsys.readouterr().err
        assert refused.value.code == 2 and message in error and error.count("\n") == 1
    with pytest.raises(SystemExit) as refused:
        learning.main([*common, "--policies", "brims", "lstm", "--baseline", str(earlier)])
    assert refused.value.code == 2
    assert "--baseline-labels ['lstm']: also reported from this script's run folders" in capsys.readouterr().err
