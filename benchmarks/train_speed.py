"""Whole-loop PPO training speed: our BRIMs-PPO and LSTM-PPO vs sb3-contrib's RecurrentPPO.

In one process, on one Atari game with the same PPO settings (8 envs x 128 steps, 4 epochs,
minibatch 256), for a fixed budget of environment steps after one untimed warm-up rollout:

  (a) sb3-contrib ``RecurrentPPO("CnnLstmPolicy")`` on SB3's ``make_atari_env`` (the baseline
      users have today; its own padded-sequence buffer);
  (b) ``agents.RecurrentPPO("CnnBrimsPolicy")`` on ``envs.make_atari_vec_env(backend="ale")``,
      BRIMs defaults (2 layers, 6 modules, top-4);
  (c) ``agents.RecurrentPPO("CnnLstmPolicy")`` on the same "ale" env (same LSTM as (a));
  (d) only with ``--only abcd``: (b) with its core compiled (``BrimsPolicy.compile_cores``),
      for GPUs (compiling takes minutes on a CPU; it happens in the untimed warm-up).

``--set policy_kwargs.KEY=VALUE`` (repeatable) changes the BRIMs policy of (b) and (d), e.g.
``--set policy_kwargs.top_k=[6,5] --set policy_kwargs.core_kwargs.input_value_size=176`` for
configs/ppo.yaml's Atari settings.

Printed: whole-loop steps/s (rollouts plus updates) and its ratio to (a); rollout-only
steps/s (time spent collecting rollouts); and the raw ``AtariVectorEnv`` random-action rate,
the emulator's ceiling for rollouts. ``--repeats R`` runs the configurations round-robin R
times and reports the median, so a busy machine slows all of them alike.

    python benchmarks/train_speed.py [--game pong] [--rollouts 4] [--repeats 1] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

import envs
from agents import RecurrentPPO
from agents.config_files import apply_overrides
from brims_rl.utils import resolve_device

PPO_SETTINGS = dict(n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, clip_range=0.1, ent_coef=0.01)


class RolloutTimer(BaseCallback):
    """Adds up the wall time spent inside ``collect_rollouts``."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._started = 0.0

    def _on_rollout_start(self) -> None:
        self._started = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._started

    def _on_step(self) -> bool:
        return True


@dataclass
class Measurement:
    total_sps: list[float] = field(default_factory=list)
    rollout_sps: list[float] = field(default_factory=list)


#: (game, n_envs, device, BRIMs policy_kwargs from ``--set``) -> a model ready to learn.
Builder = Callable[[str, int, str, dict[str, Any]], BaseAlgorithm]


def contrib_lstm(game: str, n_envs: int, device: str, brims_policy_kwargs: dict[str, Any]) -> BaseAlgorithm:
    import ale_py
    import gymnasium as gym
    import sb3_contrib
    from stable_baselines3.common.env_util import make_atari_env

    from ale_py.registration import rom_id_to_name

    gym.register_envs(ale_py)
    env = make_atari_env(f"{rom_id_to_name(envs.normalize_game_id(game))}NoFrameskip-v4", n_envs=n_envs, seed=0)
    return sb3_contrib.RecurrentPPO("CnnLstmPolicy", env, device=device, seed=0, **PPO_SETTINGS)


def ours(policy: str, compile_core: bool = False) -> Builder:
    def build(game: str, n_envs: int, device: str, brims_policy_kwargs: dict[str, Any]) -> BaseAlgorithm:
        env = envs.make_atari_vec_env(game, n_envs=n_envs, seed=0, backend="ale")
        policy_kwargs = dict(brims_policy_kwargs) if policy == "CnnBrimsPolicy" else {}
        model = RecurrentPPO(policy, env, device=device, seed=0, policy_kwargs=policy_kwargs, **PPO_SETTINGS)  # default sequence_length (8)
        if compile_core:
            model.policy.compile_cores()  # compiled during the untimed warm-up rollout and update
        return model

    return build


CONFIGS: dict[str, tuple[str, Builder]] = {
    "a": ("sb3-contrib RecurrentPPO CnnLstmPolicy, make_atari_env", contrib_lstm),
    "b": ("brims-rl RecurrentPPO CnnBrimsPolicy, backend ale", ours("CnnBrimsPolicy")),
    "c": ("brims-rl RecurrentPPO CnnLstmPolicy, backend ale", ours("CnnLstmPolicy")),
    # Opt in (--only abcd): compiling takes minutes on a CPU; on a GPU it is what makes (b) fast.
    "d": ("brims-rl RecurrentPPO CnnBrimsPolicy, backend ale, core compiled", ours("CnnBrimsPolicy", compile_core=True)),
}


def check_brims_policy_kwargs(game: str, policy_kwargs: dict[str, Any], parser: argparse.ArgumentParser) -> None:
    """Build the BRIMs policy once, so a bad ``--set`` fails in one line before anything is timed."""
    from brims_rl.policies import CnnBrimsPolicy

    env = envs.make_atari_vec_env(game, n_envs=1, seed=0, backend="ale")
    try:
        CnnBrimsPolicy(env.observation_space, env.action_space, lambda _: 2.5e-4, **policy_kwargs)
    except (TypeError, ValueError) as error:
        parser.error(f"--set: {error}")
    finally:
        env.close()


def measure(
    build: Builder, game: str, n_envs: int, device: str, rollouts: int, brims_policy_kwargs: dict[str, Any]
) -> tuple[float, float, int]:
    """(whole-loop steps/s, rollout-only steps/s, policy parameters) over ``rollouts`` timed rollouts + updates."""
    model = build(game, n_envs, device, brims_policy_kwargs)
    per_rollout = model.n_steps * model.n_envs
    model.learn(per_rollout)  # warm-up: allocations, first-touch, thread pools
    timer = RolloutTimer()
    budget = rollouts * per_rollout
    started = time.perf_counter()
    model.learn(budget, callback=timer, reset_num_timesteps=False)
    elapsed = time.perf_counter() - started
    model.get_env().close()
    parameters = sum(parameter.numel() for parameter in model.policy.parameters())
    return budget / elapsed, budget / timer.seconds, parameters


def raw_emulator_rate(game: str, n_envs: int, steps: int = 1000) -> float:
    """Agent steps/s of ale-py's ``AtariVectorEnv`` alone, random actions, 1-frame observations."""
    from ale_py.vector_env import AtariVectorEnv

    venv = AtariVectorEnv(envs.normalize_game_id(game), n_envs, stack_num=1)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, venv.single_action_space.n, size=(steps, n_envs))
    venv.reset(seed=0)
    for t in range(50):
        venv.step(actions[t])
    started = time.perf_counter()
    for t in range(steps):
        venv.step(actions[t])
    rate = steps * n_envs / (time.perf_counter() - started)
    venv.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="pong")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=4, help="timed rollouts (+ updates) per configuration")
    parser.add_argument("--repeats", type=int, default=1, help="round-robin repeats; the median is reported")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default="abc", help="subset of configurations to run, e.g. 'ab'")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="policy_kwargs.KEY=VALUE",
        help="BRIMs policy option for (b) and (d), e.g. policy_kwargs.core_kwargs.input_value_size=176",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    unknown = set(args.only) - set(CONFIGS)
    if unknown:
        parser.error(f"--only: unknown configuration(s) {sorted(unknown)}; choose from {sorted(CONFIGS)}")

    try:
        overrides = apply_overrides({"policy_kwargs": {}}, args.set)
    except ValueError as error:
        parser.error(str(error))
    if set(overrides) != {"policy_kwargs"}:
        parser.error(f"--set: only policy_kwargs.KEY=VALUE is allowed here, got {sorted(set(overrides) - {'policy_kwargs'})}")
    brims_policy_kwargs = overrides["policy_kwargs"]
    if brims_policy_kwargs:
        check_brims_policy_kwargs(args.game, brims_policy_kwargs, parser)

    results = {key: Measurement() for key in args.only}
    for repeat in range(args.repeats):
        for key in args.only:
            name, build = CONFIGS[key]
            total, rollout, parameters = measure(build, args.game, args.n_envs, device, args.rollouts, brims_policy_kwargs)
            results[key].total_sps.append(total)
            results[key].rollout_sps.append(rollout)
            print(
                f"  [{repeat + 1}/{args.repeats}] ({key}) {name}: {total:.0f} steps/s, rollouts {rollout:.0f} steps/s, "
                f"{parameters:,} policy parameters",
                flush=True,
            )
    emulator = raw_emulator_rate(args.game, args.n_envs)

    threads = torch.get_num_threads()
    print(
        f"\nTraining speed: {envs.normalize_game_id(args.game)}, {args.n_envs} envs x {PPO_SETTINGS['n_steps']} steps, "
        f"{PPO_SETTINGS['n_epochs']} epochs, minibatch {PPO_SETTINGS['batch_size']}, device {device} "
        f"({threads} torch threads), {args.rollouts} timed rollouts, median of {args.repeats}\n"
    )
    if brims_policy_kwargs:
        print(f"(b) and (d) with policy_kwargs {brims_policy_kwargs}\n")
    print("| config | whole loop steps/s | ratio vs (a) | rollout-only steps/s |")
    print("|---|---:|---:|---:|")
    base = statistics.median(results["a"].total_sps) if "a" in results else None
    for key, measurement in results.items():
        total = statistics.median(measurement.total_sps)
        ratio = f"{total / base:.2f}x" if base else "n/a"
        rollout = statistics.median(measurement.rollout_sps)
        print(f"| ({key}) {CONFIGS[key][0]} | {total:,.0f} | {ratio} | {rollout:,.0f} |")
    print(f"| raw AtariVectorEnv, random actions (emulator ceiling) | | | {emulator:,.0f} |")


if __name__ == "__main__":
    main()
