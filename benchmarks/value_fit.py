"""Does the core fit a value function as fast as an LSTM when the data stand still?

PPO's ``train/explained_variance`` mixes two things: how fast the value path can fit returns,
and which returns the changing policy produces. This script takes the second away. It plays
``--steps`` steps of Breakout in 8 envs with a fixed, saved behaviour policy (sampled actions;
the Atari training env: clipped rewards, a life loss ends an episode), computes the discounted
returns (gamma 0.99), and then trains fresh policies (Atari config widths: CnnBrimsPolicy with
hidden 264, 6 modules per layer and ``top_k [6, 5]``; CnnLstmPolicy with 256 units and its own
critic LSTM) on the value loss alone: Adam at PPO's learning rate 2.5e-4, gradient norm clipped
at 0.5, 16 random 32-step windows per step from envs 0-5 (the first 8 steps of a window only
warm the state up). Every ``--eval-every`` steps it prints the explained variance of the
values on envs 6-7, the whole held-out sequences run with carried state.

    python benchmarks/value_fit.py runs/learning/breakout_wu/breakout_brims_wu50k_s3/checkpoints/model_100000_steps.zip \\
        --cores lstm brims --seeds 0 --out docs/results/breakout_value_fit
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

GAMMA = 0.99
N_ENVS = 8
TRAIN_ENVS, TEST_ENVS = [0, 1, 2, 3, 4, 5], [6, 7]
WINDOW, WARM_UP, BATCH = 32, 8, 16
CUT_OFF = 300  # the last steps' returns are cut short by the end of the data: not fitted, not scored

CORES: dict[str, tuple[str, dict[str, Any]]] = {
    "lstm": ("CnnLstmPolicy", dict(lstm_hidden_size=256)),
    "brims": ("CnnBrimsPolicy", dict(hidden_size=264, num_layers=2, num_modules=6, top_k=[6, 5])),
    "brims_k66": ("CnnBrimsPolicy", dict(hidden_size=264, num_layers=2, num_modules=6, top_k=[6, 6])),
    "brims_sum": ("CnnBrimsPolicy", dict(hidden_size=264, num_layers=2, num_modules=6, top_k=[6, 5], core_kwargs=dict(output="sum"))),
}


def collect(behaviour: Path, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Observations ``(T, 8, 1, 84, 84)`` uint8, episode starts and discounted returns ``(T, 8)``."""
    import brims_rl
    import envs
    from agents.episodes import play_episodes

    model = brims_rl.load(behaviour, device="cpu")
    env = envs.make_env("breakout", n_envs=N_ENVS, seed=seed, frame_stack=1)
    observations, rewards, dones = [], [], []

    def keep(observation, actions, reward, done, infos) -> None:
        observations.append(observation.copy())
        rewards.append(reward)
        dones.append(done)

    try:
        # More episodes than `steps` steps can end: max_steps is what stops it.
        play_episodes(model, env, n_episodes=steps * N_ENVS + 1, deterministic=False, on_step=keep, max_steps=steps)
    finally:
        env.close()
    rewards_array, dones_array = np.stack(rewards).astype(np.float32), np.stack(dones)
    returns = np.zeros_like(rewards_array)
    running = np.zeros(N_ENVS, dtype=np.float32)
    for t in reversed(range(steps)):
        running = rewards_array[t] + GAMMA * running * (1.0 - dones_array[t])
        returns[t] = running
    episode_starts = np.concatenate([np.ones((1, N_ENVS), dtype=bool), dones_array[:-1]])
    return dict(observations=np.stack(observations), returns=returns, starts=episode_starts)


class ValuePath:
    """A fresh policy's value path: CNN -> core (the critic's) -> value head."""

    def __init__(self, core_name: str, seed: int) -> None:
        import envs
        from agents import RecurrentPPO

        policy_name, policy_kwargs = CORES[core_name]
        torch.manual_seed(seed)
        env = envs.make_env("breakout", n_envs=1, seed=seed, frame_stack=1)
        try:
            self.policy = RecurrentPPO(policy_name, env, policy_kwargs=policy_kwargs, seed=seed, device="cpu").policy
        finally:
            env.close()
        # The core the value head reads: the LSTM pipeline's own critic LSTM, BRIMs' shared core.
        self.core = self.policy.lstm_critic if isinstance(self.policy.lstm_critic, torch.nn.LSTM) else self.policy.lstm_actor

    def __call__(self, observations: np.ndarray, starts: np.ndarray, state: Optional[Any] = None) -> tuple[torch.Tensor, Any]:
        """Values ``(T, B)`` of observations ``(T, B, ...)``; the state at the end.

        The core runs through the policy's own ``_process_sequence`` (sb3-contrib's for the
        LSTM, BrimsPolicy's for BRIMs), the path PPO trains, resets included; it takes the
        batch sequence-major: env b's T steps together.
        """
        steps, batch = observations.shape[:2]
        by_sequence = torch.as_tensor(observations.swapaxes(0, 1).reshape(batch * steps, *observations.shape[2:]))
        features = self.policy.extract_features(by_sequence)
        if isinstance(features, tuple):  # separate extractors: the critic's
            features = features[1]
        if state is None:
            zeros = features.new_zeros(self.core.num_layers, batch, self.core.hidden_size)
            state = (zeros, zeros)
        resets = torch.as_tensor(starts.swapaxes(0, 1).reshape(-1), dtype=torch.float32)
        latent, state = self.policy._process_sequence(features, state, resets, self.core)
        values = self.policy.value_net(self.policy.mlp_extractor.forward_critic(latent))
        return values.view(batch, steps).transpose(0, 1), state


def held_out_explained_variance(value_path: ValuePath, data: dict[str, np.ndarray]) -> float:
    end = len(data["returns"]) - CUT_OFF
    with torch.no_grad():
        values, state = [], None
        for start in range(0, end, 256):
            stop = min(start + 256, end)
            chunk, state = value_path(data["observations"][start:stop, TEST_ENVS], data["starts"][start:stop, TEST_ENVS], state)
            values.append(chunk)
    predicted, target = torch.cat(values).numpy(), data["returns"][:end, TEST_ENVS]
    return float(1.0 - np.var(target - predicted) / np.var(target))


def fit(core_name: str, seed: int, data: dict[str, np.ndarray], updates: int, eval_every: int) -> list[tuple[int, float, float]]:
    """(update, training loss, held-out explained variance) every ``eval_every`` updates."""
    value_path = ValuePath(core_name, seed)
    optimizer = torch.optim.Adam(value_path.policy.parameters(), lr=2.5e-4, eps=1e-5)
    rng = np.random.default_rng(seed)
    last_start = len(data["returns"]) - CUT_OFF - WINDOW
    rows = [(0, float("nan"), held_out_explained_variance(value_path, data))]
    started = time.time()
    for update in range(1, updates + 1):
        starts_at, env_ids = rng.integers(0, last_start, BATCH), rng.choice(TRAIN_ENVS, BATCH)
        window = lambda key: np.stack([data[key][t : t + WINDOW, e] for t, e in zip(starts_at, env_ids)], axis=1)
        starts = window("starts")
        starts[0] = True  # each window starts from a zero state
        values, _ = value_path(window("observations"), starts)
        loss = (values[WARM_UP:] - torch.as_tensor(window("returns"))[WARM_UP:]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(value_path.policy.parameters(), 0.5)
        optimizer.step()
        if update % eval_every == 0:
            rows.append((update, loss.item(), held_out_explained_variance(value_path, data)))
            print(f"{core_name} seed {seed}: update {update}, loss {loss.item():.4f}, held-out EV {rows[-1][2]:.3f} ({time.time() - started:.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("behaviour", type=Path, help="model zip of the behaviour policy (any brims-rl Atari model)")
    parser.add_argument("--cores", nargs="+", default=["lstm", "brims"], choices=sorted(CORES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="initialisation seeds of the fitted policies")
    parser.add_argument("--steps", type=int, default=2048, help="env steps of data per env")
    parser.add_argument("--data-seed", type=int, default=777)
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=40)
    parser.add_argument("--out", type=Path, help="folder for value_fit.csv")
    args = parser.parse_args()
    if not args.behaviour.is_file():
        parser.error(f"behaviour model {str(args.behaviour)!r}: no such file")
    if args.steps <= CUT_OFF + WINDOW:
        parser.error(f"--steps {args.steps}: expected more than {CUT_OFF + WINDOW}")
    torch.set_num_threads(1)

    data = collect(args.behaviour, args.steps, args.data_seed)
    print(f"data: {args.steps} steps x {N_ENVS} envs, return std {data['returns'].std():.3f}", flush=True)
    rows = [(core, seed, *row) for core in args.cores for seed in args.seeds for row in fit(core, seed, data, args.updates, args.eval_every)]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        with (args.out / "value_fit.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["core", "seed", "update", "loss", "held_out_explained_variance"])
            writer.writerows(rows)
        print(f"wrote {args.out / 'value_fit.csv'}")


if __name__ == "__main__":
    main()
