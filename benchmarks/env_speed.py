"""Atari env throughput: backend "ale" (C++ AtariVectorEnv + AleVecEnv) vs "sb3" (AtariWrapper).

A random-action agent steps both backends of ``envs.make_atari_vec_env`` in this process, same
game, same number of envs, 4-frame stack each (the "sb3" backend is SB3's ``make_atari_env`` +
``VecTransposeImage`` + ``VecFrameStack``). Reports agent steps per second (one step of one env
= one agent step = ``frame_skip`` emulator frames) and the ratio, as a markdown table.

The timed steps are split into rounds that alternate between the backends (both vector envs
stay open; idle ale-py worker threads use no CPU), and each backend's median round is
reported, so a load spike from another process hits both backends alike rather than one.
The "ale" backend runs one C++ worker per core, so its figure (and the ratio) depends on how
many cores are free: the header prints the core count and the load average around the run.

    python benchmarks/env_speed.py [--game pong] [--n-envs 8] [--steps 4000] [--warmup 200] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import envs

BACKENDS = ("ale", "sb3")


def steps_per_second(
    game: str, n_envs: int, steps: int, warmup: int, frame_stack: int, rounds: int
) -> dict[str, float]:
    """Median agent steps/s per backend over ``rounds`` alternating rounds of ``steps // rounds`` vector steps."""
    venvs = {b: envs.make_atari_vec_env(game, n_envs=n_envs, frame_stack=frame_stack, backend=b, seed=0) for b in BACKENDS}
    try:
        n_actions = venvs["ale"].action_space.n
        per_round = max(1, steps // rounds)
        # Drawn up front so the timed loop measures the env, not the sampler.
        actions = np.random.default_rng(0).integers(0, n_actions, size=(warmup + per_round * rounds, n_envs))
        for venv in venvs.values():
            venv.reset()
            for t in range(warmup):
                venv.step(actions[t])
        rates: dict[str, list[float]] = {b: [] for b in BACKENDS}
        for r in range(rounds):
            chunk = actions[warmup + r * per_round : warmup + (r + 1) * per_round]
            for backend, venv in venvs.items():
                start = time.perf_counter()
                for action in chunk:
                    venv.step(action)
                rates[backend].append(per_round * n_envs / (time.perf_counter() - start))
        return {b: statistics.median(rates[b]) for b in BACKENDS}
    finally:
        for venv in venvs.values():
            venv.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="pong")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4000, help="timed vector steps per backend")
    parser.add_argument("--warmup", type=int, default=200, help="untimed vector steps first")
    parser.add_argument("--frame-stack", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4, help="alternating timed rounds per backend")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error(f"need --steps >= 1, --warmup >= 0, --rounds >= 1; got {args.steps}, {args.warmup}, {args.rounds}")

    load_before = os.getloadavg()[0]
    rates = steps_per_second(args.game, args.n_envs, args.steps, args.warmup, args.frame_stack, args.rounds)
    load_after = os.getloadavg()[0]
    print(
        f"Atari env speed: {envs.normalize_game_id(args.game)}, {args.n_envs} envs, {args.frame_stack}-frame stack, "
        f"random actions, {args.steps} timed vector steps per backend in {args.rounds} alternating rounds "
        f"(median round) after {args.warmup} warm-up; {os.cpu_count()} cores, 1-min load average "
        f"{load_before:.2f} before, {load_after:.2f} after\n"
    )
    print("| backend | agent steps/s | ratio vs sb3 |")
    print("|---|---:|---:|")
    print(f"| ale (AtariVectorEnv + AleVecEnv) | {rates['ale']:,.0f} | {rates['ale'] / rates['sb3']:.2f}x |")
    print(f"| sb3 (make_atari_env + VecFrameStack) | {rates['sb3']:,.0f} | 1.00x |")


if __name__ == "__main__":
    main()
