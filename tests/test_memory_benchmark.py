"""sb3-contrib's own learning benchmark for recurrent PPO (``test_ppo_lstm_performance``),
run through ``agents.RecurrentPPO`` with each core: CartPole without the velocities, 50k
steps, mean reward >= 450 over 20 evaluation episodes (a memoryless policy gets about 50).
The settings live in ``benchmarks/memory_benchmark.py``, which also runs sb3-contrib's
pipeline beside ours."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import memory_benchmark  # noqa: E402


SPARSE_UPDATE_GAP = pytest.mark.xfail(
    strict=True,
    reason="open issue: with every layer sparse (top-2 of 4) BRIMs reaches 40-80 in either pipeline; with the "
    "first layer dense (top_k [4, 2], the default) 361 at seed 1 (467 at seed 2), not yet 450 (README, "
    "'sb3-contrib's memory benchmark'); strict, so the fix must remove this mark",
)


@pytest.mark.slow
@pytest.mark.parametrize("core", ["lstm", pytest.param("brims", marks=SPARSE_UPDATE_GAP)])
def test_recurrent_ppo_solves_cartpole_without_velocities(core):
    result = memory_benchmark.run("ours", core, seed=1)
    assert result["mean"] >= memory_benchmark.BAR, result
