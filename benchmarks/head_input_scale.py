"""The scale of what the policy's heads read, on real Atari frames.

With Adam, one step on a linear head moves its output by an amount that grows with the scale
of the head's input, so the core's output scale sets how fast the value and action heads
move. This builds fresh policies from the Atari config (``brims``, ``lstm``; ``--set`` applies
to every one of them, as ``brims-rl train --set``) or loads saved models (zip paths), plays
``--steps`` vector steps of the game in 4 envs with sampled actions, and prints the rms of the
action head's input (the core's output after the policy's MLP extractor: the same features
the value head reads under a shared core) and its spread across steps.

    python benchmarks/head_input_scale.py lstm brims
    python benchmarks/head_input_scale.py brims --set policy_kwargs.core_kwargs.output_scale=0.35
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def head_inputs(model, env, steps: int) -> torch.Tensor:
    """``(rows, width)``: every input the action head received over ``steps`` vector steps."""
    from agents.episodes import play_episodes

    captured: list[torch.Tensor] = []
    hook = model.policy.action_net.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach().reshape(-1, args[0].shape[-1])))
    try:
        # More episodes than can end: max_steps is what stops it.
        play_episodes(model, env, n_episodes=steps * env.num_envs + 1, deterministic=False, max_steps=steps)
    finally:
        hook.remove()
    return torch.cat(captured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policies", nargs="+", help="'brims', 'lstm' (fresh, Atari config) or model zips")
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override for fresh policies")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    import brims_rl
    from agents.config import resolve_config
    from agents.train import build_model, make_run_env

    print("| policy | rows | width | rms | std across steps (mean over units) |")
    print("|---|---:|---:|---:|---:|")
    for spec in args.policies:
        fresh = spec in ("brims", "lstm")
        # A saved model only needs the game's env, which the brims config describes.
        config = resolve_config("ppo", spec if fresh else "brims", args.game, overrides=args.overrides, seed=args.seed)
        env = make_run_env(config, n_envs=4, seed=100 + args.seed)
        try:
            if fresh:
                model = build_model(config, env)
                name = f"{spec} at init" + (f" ({', '.join(args.overrides)})" if args.overrides else "")
            else:
                model, name = brims_rl.load(Path(spec), env=env, device="cpu"), spec
            features = head_inputs(model, env, args.steps)
        finally:
            env.close()
        rms = features.pow(2).mean().sqrt().item()
        print(f"| {name} | {features.shape[0]} | {features.shape[1]} | {rms:.3f} | {features.std(0).mean().item():.3f} |", flush=True)


if __name__ == "__main__":
    main()
