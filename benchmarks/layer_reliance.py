"""Which layer of a trained BRIMs policy do its heads read?

Plays ``--steps`` steps of the game in 8 envs with the saved policy (sampled actions), keeps
every layer's state at each step (what the core's output was made of), then shuffles ONE
layer's states across all those steps, rebuilds the output the core would have given (the top
layer's state, or with ``output="sum"`` the sum of every layer's) and measures how far the heads
move: the mean change of the value in units of the value's spread, the mean KL divergence of
the action distribution, and the share of steps whose most likely action changes. A layer whose
shuffle moves nothing is decorative; with ``output="sum"`` this shows whether the heads follow
the dense first layer or the sparse top layer.

    python benchmarks/layer_reliance.py runs/learning/breakout_sum/breakout_brims_sum_s0/model.zip
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def collect_layer_states(model, game: str, steps: int, seed: int) -> torch.Tensor:
    """Every layer's actor-core state after each step: ``(num_layers, steps * 8, hidden_size)``."""
    import envs

    env = envs.make_env(game, n_envs=8, seed=seed, frame_stack=1)
    try:
        observations = env.reset()
        state, starts = None, np.ones(env.num_envs, dtype=bool)
        states = []
        for _ in range(steps):
            actions, state = model.predict(observations, state=state, episode_start=starts, deterministic=False)
            states.append(np.array(state[0]))  # h: (num_layers, n_envs, hidden_size)
            observations, _, starts, _ = env.step(actions)
    finally:
        env.close()
    return torch.as_tensor(np.concatenate(states, axis=1))


def core_output(policy, layer_states: torch.Tensor) -> torch.Tensor:
    """The actor core's output for these layer states, ``(L, n, hidden) -> (n, hidden)``."""
    return layer_states.sum(dim=0) if policy.lstm_actor.output == "sum" else layer_states[-1]


def heads(policy, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Action log-probabilities ``(n, actions)`` and values ``(n,)`` read from the core's output."""
    log_probs = torch.log_softmax(policy.action_net(policy.mlp_extractor.forward_actor(latent)), dim=-1)
    values = policy.value_net(policy.mlp_extractor.forward_critic(latent)).squeeze(-1)
    return log_probs, values


def reliance(policy, layer_states: torch.Tensor, seed: int) -> list[tuple[float, float, float]]:
    """Per layer: (mean |value change| / value std, mean KL, share of greedy actions changed)."""
    order = torch.randperm(layer_states.shape[1], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        base_log_probs, base_values = heads(policy, core_output(policy, layer_states))
        rows = []
        for layer in range(layer_states.shape[0]):
            shuffled = layer_states.clone()
            shuffled[layer] = layer_states[layer][order]
            log_probs, values = heads(policy, core_output(policy, shuffled))
            value_change = (values - base_values).abs().mean() / base_values.std()
            kl = (base_log_probs.exp() * (base_log_probs - log_probs)).sum(-1).mean()
            greedy_changed = (base_log_probs.argmax(-1) != log_probs.argmax(-1)).float().mean()
            rows.append((float(value_change), float(kl), float(greedy_changed)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model zips of BRIMs policies (a brims-rl run folder's model.zip or checkpoints)")
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--steps", type=int, default=400, help="steps per env (8 envs)")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    missing = [str(path) for path in args.models if not path.is_file()]
    if missing:
        parser.error(f"no model file at {missing[0]!r}")
    torch.set_num_threads(1)

    import brims_rl

    print("| model | output | layer shuffled | state norm | value change / value std | KL of the action distribution | greedy action changed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in args.models:
        try:
            model = brims_rl.load(path, device="cpu")
        except brims_rl.NotABrimsModelError as error:
            parser.error(str(error))
        if not isinstance(getattr(model.policy, "lstm_actor", None), brims_rl.BRIMs):
            parser.error(f"{path}: its policy has no BRIMs core ({type(model.policy).__name__}); expected a BRIMs policy")
        torch.manual_seed(args.seed)
        layer_states = collect_layer_states(model, args.game, args.steps, args.seed)
        for layer, (value_change, kl, greedy) in enumerate(reliance(model.policy, layer_states, args.seed)):
            norm = layer_states[layer].norm(dim=-1).mean()
            print(f"| {path} | {model.policy.lstm_actor.output} | {layer} | {norm:.2f} | {value_change:.2f} | {kl:.4f} | {greedy:.2f} |", flush=True)


if __name__ == "__main__":
    main()
