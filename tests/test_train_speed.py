"""benchmarks/train_speed.py: ``--set`` reaches the BRIMs policy, and bad options fail in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import envs
from brims_rl.policies import CnnBrimsPolicy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_speed.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--threads", "1", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("n_steps=64", "n_steps"),
        ("policy_kwargs.core_kwargs.bogus=1", "bogus"),
        ("policy_kwargs.top_k=9", "top_k=9"),
        ("policy_kwargs", "expected key=value"),
    ],
)
def test_bad_set_is_one_line_and_exit_2(option: str, named: str) -> None:
    done = run("--only", "b", "--set", option)
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert "steps/s" not in done.stdout  # nothing was timed


def test_set_reaches_the_brims_configuration() -> None:
    done = run(
        "--only", "b", "--n-envs", "2", "--rollouts", "1",
        "--set", "policy_kwargs.core_kwargs.input_value_size=32", "--set", "policy_kwargs.top_k=[6,5]",
    )
    assert done.returncode == 0, done.stderr
    assert "(b) and (d) with policy_kwargs {'core_kwargs': {'input_value_size': 32}, 'top_k': [6, 5]}" in done.stdout
    assert "| (b) brims-rl RecurrentPPO CnnBrimsPolicy, backend ale |" in done.stdout
    # the timed model is the one the options describe: its parameter count is that policy's
    env = envs.make_atari_vec_env("pong", n_envs=1, seed=0, backend="ale")
    options = dict(core_kwargs=dict(input_value_size=32), top_k=[6, 5])
    expected = sum(p.numel() for p in CnnBrimsPolicy(env.observation_space, env.action_space, lambda _: 1e-4, **options).parameters())
    default = sum(p.numel() for p in CnnBrimsPolicy(env.observation_space, env.action_space, lambda _: 1e-4).parameters())
    env.close()
    assert expected != default
    assert f", {expected:,} policy parameters" in done.stdout
