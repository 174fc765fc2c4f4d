"""Atari env throughput: backend "ale" (C++ AtariVectorEnv + AleVecEnv) vs "sb3" (AtariWrapper).

A random-action agent steps both backends of ``envs.make_atari_vec_env`` in this process, same
game, same number of envs, 4-frame stack each (the "sb3" backend is SB3's ``make_atari_env`` +
``VecTransposeImage`` + ``VecFrameStack``). Reports agent steps per second (one step of one env
= one agent step = ``frame_skip`` emulator frames) and the ratio, as a markdown table.

    python benchmarks/env_speed.py [--game pong] [--n-envs 8] [--steps 4000] [--warmup 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import envs


def steps_per_second(backend: str, game: str, n_envs: int, steps: int, warmup: int, frame_stack: int) -> float:
    """Agent steps/s of a random agent over ``steps`` vector steps, after ``warmup`` untimed ones."""
    venv = envs.make_atari_vec_env(game, n_envs=n_envs, frame_stack=frame_stack, backend=backend, seed=0)
    rng = np.random.default_rng(0)
    n_actions = venv.action_space.n
    # Draw the actions up front so the timed loop measures the env, not the sampler.
    actions = rng.integers(0, n_actions, size=(warmup + steps, n_envs))
    venv.reset()
    for t in range(warmup):
        venv.step(actions[t])
    start = time.perf_counter()
    for t in range(warmup, warmup + steps):
        venv.step(actions[t])
    elapsed = time.perf_counter() - start
    venv.close()
    return steps * n_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="pong")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4000, help="timed vector steps per backend")
    parser.add_argument("--warmup", type=int, default=200, help="untimed vector steps first")
    parser.add_argument("--frame-stack", type=int, default=4)
    args = parser.parse_args()

    rates = {
        backend: steps_per_second(backend, args.game, args.n_envs, args.steps, args.warmup, args.frame_stack)
        for backend in ("ale", "sb3")
    }
    print(
        f"Atari env speed: {envs.normalize_game_id(args.game)}, {args.n_envs} envs, {args.frame_stack}-frame stack, "
        f"random actions, {args.steps} timed vector steps after {args.warmup} warm-up\n"
    )
    print("| backend | agent steps/s | ratio vs sb3 |")
    print("|---|---:|---:|")
    print(f"| ale (AtariVectorEnv + AleVecEnv) | {rates['ale']:,.0f} | {rates['ale'] / rates['sb3']:.2f}x |")
    print(f"| sb3 (make_atari_env + VecFrameStack) | {rates['sb3']:,.0f} | 1.00x |")


if __name__ == "__main__":
    main()
