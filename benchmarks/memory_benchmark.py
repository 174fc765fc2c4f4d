"""sb3-contrib's own memory benchmark for recurrent PPO, run with either pipeline and core.

``test_ppo_lstm_performance`` in sb3-contrib's test suite: CartPole without the velocities
(``BrimsRL/MaskedCartPole-v0``: cart position and pole angle only, 500-step limit), under
``VecNormalize``, 8 envs, ``n_steps=128, learning_rate=7e-4, batch_size=256, seed=1,
n_epochs=10, max_grad_norm=1, gae_lambda=0.98``, ``net_arch=dict(vf=[64], pi=[])``,
``ortho_init=False``, 50k steps. The bar: a mean reward of at least 450 over 20 evaluation
episodes (a memoryless policy gets about 50).

Pipelines: ``sb3`` (``sb3_contrib.RecurrentPPO``, whole-episode padded sequences) and
``ours`` (``agents.RecurrentPPO``, fixed-length chunks). Cores: ``lstm`` (64 units, critic
LSTM, as sb3-contrib's test) and ``brims`` (``MlpBrimsPolicy`` with its defaults for flat
observations, hidden 64, 2 layers of 4 modules; the first layer updates every module, as
in the shipped configs, and the top layer its best 3: ``top_k=[4, 3]``; with top-down reading
a top layer half of whose modules sit out each step, ``[4, 2]``, it learns less, README;
``--set policy_kwargs.top_k=2`` is the issue's all-sparse core).

Examples::

    python benchmarks/memory_benchmark.py --pipeline ours sb3 --core lstm brims
    python benchmarks/memory_benchmark.py --pipeline ours --core brims --seeds 1 2 3 4 5 --jobs 2
    python benchmarks/memory_benchmark.py --pipeline ours --core brims --seeds 1 2 3 \\
        --set sequence_length=32 --set policy_kwargs.critic_core=separate
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional, Sequence

import numpy as np
import sb3_contrib
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

import envs
from agents import RecurrentPPO
from agents.config_files import apply_overrides

TIMESTEPS = 50_000
BAR = 450.0
EVAL_EPISODES = 20
ALGORITHM_SETTINGS: dict[str, Any] = dict(
    n_steps=128, learning_rate=7e-4, batch_size=256, n_epochs=10, max_grad_norm=1, gae_lambda=0.98
)
POLICY_SETTINGS: dict[str, dict[str, Any]] = {
    "lstm": dict(net_arch=dict(vf=[64], pi=[]), ortho_init=False, lstm_hidden_size=64, enable_critic_lstm=True),
    "brims": dict(net_arch=dict(vf=[64], pi=[]), ortho_init=False, hidden_size=64, num_modules=4, top_k=[4, 3]),
}
POLICY_NAMES = {"lstm": "MlpLstmPolicy", "brims": "MlpBrimsPolicy"}


def check_overrides(parser: argparse.ArgumentParser, items: Sequence[str]) -> list[str]:
    """``--set KEY=VALUE`` items, checked before any training (a bad one exits 2 with its line)."""
    try:
        apply_overrides(dict(ALGORITHM_SETTINGS, policy_kwargs={}), items)
    except ValueError as error:
        parser.error(str(error))
    return list(items)


def build_model(pipeline: str, core: str, seed: int, overrides: Sequence[str] = ()):
    """The benchmark's model (not trained) on a fresh ``VecNormalize`` training env; ``overrides``
    are ``KEY=VALUE`` items as ``brims-rl train --set`` takes them (``policy_kwargs.top_k=[4,4]``)."""
    settings: dict[str, Any] = dict(ALGORITHM_SETTINGS, policy_kwargs=dict(POLICY_SETTINGS[core]), seed=seed)
    if pipeline == "ours":
        settings["sequence_length"] = 16
    settings = apply_overrides(settings, overrides)
    env = VecNormalize(envs.make_vec_env(envs.MASKED_CARTPOLE_ID, n_envs=8, seed=seed))
    algorithm = RecurrentPPO if pipeline == "ours" else sb3_contrib.RecurrentPPO
    policy: Any = POLICY_NAMES[core]
    if pipeline == "sb3" and core == "brims":
        from brims_rl import MlpBrimsPolicy

        policy = MlpBrimsPolicy
    return algorithm(policy, env, **settings)


def evaluate(model: Any, seed: int) -> tuple[float, float]:
    """Mean and std of the reward over 20 deterministic episodes, on an eval env that uses the
    training env's observation statistics (as sb3-contrib's EvalCallback syncs them)."""
    eval_env = VecNormalize(
        envs.make_vec_env(envs.MASKED_CARTPOLE_ID, n_envs=4, seed=seed + 1000), training=False, norm_reward=False
    )
    eval_env.obs_rms = model.get_env().obs_rms.copy()
    try:
        rewards, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True, return_episode_rewards=True)
    finally:
        eval_env.close()
    return float(np.mean(rewards)), float(np.std(rewards))


def run(pipeline: str, core: str, seed: int = 1, timesteps: int = TIMESTEPS, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train and evaluate once; returns the mean and std evaluation reward, the mean reward of
    the last 100 training episodes (stochastic policy; less noisy than 20 evaluation episodes)
    and the training wall time."""
    model = build_model(pipeline, core, seed, overrides)
    start = time.perf_counter()
    model.learn(timesteps)
    seconds = time.perf_counter() - start
    train_reward = float(np.mean([episode["r"] for episode in model.ep_info_buffer]))
    mean, std = evaluate(model, seed)
    model.get_env().close()
    return dict(pipeline=pipeline, core=core, seed=seed, mean=mean, std=std, train_reward=train_reward, seconds=seconds)


def run_seeds(
    pipeline: str, core: str, seeds: Sequence[int], jobs: int = 1, overrides: Sequence[str] = (),
    timesteps: int = TIMESTEPS,
) -> list[dict[str, Any]]:
    """:func:`run` for each seed, ``jobs`` processes at once with one torch thread each (the
    thread count changes the floating-point sums, so a seed's result is only comparable at
    the same count); results in the order of ``seeds``."""
    jobs = max(1, min(jobs, len(seeds)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = [pool.submit(run, pipeline, core, seed, timesteps, list(overrides)) for seed in seeds]
        return [future.result() for future in futures]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", nargs="+", default=["ours", "sb3"], choices=["ours", "sb3"])
    parser.add_argument("--core", nargs="+", default=["lstm", "brims"], choices=["lstm", "brims"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--timesteps", type=int, default=TIMESTEPS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override (YAML value): sequence_length=32, policy_kwargs.critic_core=separate, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; with --jobs 1)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, one process and torch thread each")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.jobs < 1:
        parser.error(f"--threads {args.threads} --jobs {args.jobs}: both must be >= 1")
    torch.set_num_threads(args.threads)
    overrides = check_overrides(parser, args.set)
    label = " ".join(args.set) or "defaults"
    print(f"| pipeline | core | settings | seed | mean reward (20 episodes) | >= {BAR:.0f} | last 100 training episodes | train wall s |")
    print("|---|---|---|---:|---:|---|---:|---:|")
    for pipeline, core in itertools.product(args.pipeline, args.core):
        if args.jobs > 1:
            results = run_seeds(pipeline, core, args.seeds, args.jobs, overrides, args.timesteps)
        else:
            results = (run(pipeline, core, seed, args.timesteps, overrides) for seed in args.seeds)
        for result in results:
            passed = "yes" if result["mean"] >= BAR else "no"
            print(f"| {pipeline} | {core} | {label} | {result['seed']} | {result['mean']:.0f} +/- {result['std']:.0f} | {passed} | {result['train_reward']:.0f} | {result['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
