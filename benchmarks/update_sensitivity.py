"""How far does one small weight step move a recurrent policy? (memory benchmark settings)

Trains the memory benchmark's model (``benchmarks/memory_benchmark.py``: masked CartPole, 8 envs
x 128 steps) for ``--steps`` env steps, then, on the next rollout and before its update, takes
the policy-gradient loss of the first minibatch, moves the weights by ``-eps * sign(grad)``
(the size of Adam's first step at learning rate eps) and measures the KL divergence between
the policy before and after over the whole rollout, replayed in its training chunks. Reported
for all weights at once and for each parameter tensor alone. A larger KL at the same eps means
PPO's updates move that policy further (``train/approx_kl`` rises with it).

Two more readings of the all-weights step: the KL by position in the training chunk (a policy
whose recurrence contracts has the same KL at every position; one whose recurrence expands
small perturbations has a KL that grows along the chunk), and the KL at eps/10 (a smooth
policy's KL is quadratic in eps, so the ratio is about 100; far less means a small step
already flips discrete choices, such as which modules the top-k update picks).

    python benchmarks/update_sensitivity.py --core brims lstm --steps 8192 --eps 1e-4
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import torch

import memory_benchmark


class Measured(Exception):
    """Raised from the training hook once measured: stops ``learn`` there."""


def rollout_log_policy(model: Any, minibatches: list[Any]) -> torch.Tensor:
    """Log action probabilities at every rollout step, ``(n_steps * n_envs, n_actions)``."""
    policy = model.policy
    rows = []
    for batch in minibatches:
        distribution = policy.get_distribution(batch.observations, batch.lstm_states.pi, batch.episode_starts)[0]
        rows.append(distribution.distribution.logits.log_softmax(-1))
    return torch.cat(rows)


def kl_after_step(
    model: Any, minibatches: list[Any], base: torch.Tensor, params: list[torch.nn.Parameter], eps: float
) -> torch.Tensor:
    """KL(before || after) at every rollout step, ``(n_chunks, sequence_length)``, after a signed
    step on ``params``; restores them."""
    saved = [param.detach().clone() for param in params]
    with torch.no_grad():
        for param in params:
            param -= eps * torch.sign(param.grad)
        moved = rollout_log_policy(model, minibatches)
        for param, value in zip(params, saved):
            param.copy_(value)
    # The buffer's minibatches hold whole chunks, each sequence_length consecutive rows.
    return (base.exp() * (base - moved)).sum(-1).view(-1, model.sequence_length)


def measure(core: str, steps: int, eps: float, seed: int, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train ``steps`` env steps, then the KL of a step on all weights (``all``: per chunk
    position, ``(sequence_length,)``; ``tenth``: the same at eps/10) and the mean KL of a step
    on each parameter tensor alone (``each``: largest first)."""
    model = memory_benchmark.build_model("ours", core, seed, overrides)
    result: dict[str, Any] = {}
    train = model.train

    def train_or_measure() -> None:
        if model.num_timesteps >= steps and not result:
            model.policy.set_training_mode(True)
            minibatches = list(model.rollout_buffer.get(model.batch_size))
            with torch.no_grad():
                base = rollout_log_policy(model, minibatches)
            first = minibatches[0]
            actions = first.actions.long().flatten()
            _, log_prob, _ = model.policy.evaluate_actions(first.observations, actions, first.lstm_states, first.episode_starts)
            model.policy.zero_grad()
            (-(first.advantages * torch.exp(log_prob - first.old_log_prob)).mean()).backward()
            named = [(name, param) for name, param in model.policy.named_parameters() if param.grad is not None]
            every = [param for _, param in named]
            result["all"] = kl_after_step(model, minibatches, base, every, eps).mean(0)
            result["tenth"] = kl_after_step(model, minibatches, base, every, eps / 10).mean(0)
            each = [(name, float(kl_after_step(model, minibatches, base, [param], eps).mean())) for name, param in named]
            result["each"] = sorted(each, key=lambda item: -item[1])
            raise Measured
        train()

    model.train = train_or_measure
    try:
        model.learn(steps + 2 * model.n_steps * model.n_envs)
    except Measured:
        pass
    model.get_env().close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core", nargs="+", default=["brims", "lstm"], choices=["brims", "lstm"])
    parser.add_argument("--steps", type=int, default=8192, help="env steps trained before measuring")
    parser.add_argument("--eps", type=float, default=1e-4, help="signed step size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--top", type=int, default=5, help="parameter tensors listed per core")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override, as memory_benchmark.py's --set (policy_kwargs.core_kwargs.weight_init=uniform, ...)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = memory_benchmark.check_overrides(parser, args.set)
    for core in args.core:
        result = measure(core, args.steps, args.eps, args.seed, overrides)
        by_position, tenth = result["all"], result["tenth"]
        length = len(by_position)
        positions = sorted({0, length // 4, length // 2, 3 * length // 4, length - 1})
        print(f"{core}: KL over the rollout after one signed step of {args.eps:g} on every weight: {float(by_position.mean()):.2e}")
        print("    by chunk position " + ", ".join(f"{p}: {float(by_position[p]):.1e}" for p in positions))
        print(f"    KL(eps) / KL(eps/10): {float(by_position.mean() / tenth.mean()):.0f} (smooth: 100)")
        for name, kl in result["each"][: args.top]:
            print(f"    {name:45s} alone: {kl:.2e}")


if __name__ == "__main__":
    main()
