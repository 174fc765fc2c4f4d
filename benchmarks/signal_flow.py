"""Init-time signal flow of BRIMs variants against nn.LSTM (the README's lever table).

For each variant of the core (hidden 264, input 512, the policies' defaults otherwise):

* sensitivity: std of the change in the last output when only the last input step of a
  T=32, B=32 sequence of ReLU features is redrawn (``brims_rl.diagnostics.input_sensitivity``);
* input gradient: norm of the gradient a unit-scale readout of the last output sends to the
  last input step (``input_gradient``);
* output rms: the scale of the output the heads read (``output_rms``);
* CNN gradient: the Nature CNN's gradient norm at the first minibatch of one PPO update on
  Breakout (4 envs x 32 steps), as a fraction of CnnLstmPolicy's (``--ppo``; slower).

    python benchmarks/signal_flow.py [--ppo]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

VARIANTS: dict[str, dict[str, Any]] = {
    "first defaults: U(+-1/sqrt(d)), no LayerNorm": dict(input_norm=False, state_norm=False, weight_init="uniform"),
    "authors' init: attention 0.01 N(0,1), no LayerNorm": dict(input_norm=False, state_norm=False, weight_init="authors"),
    "fan-in init (values x S/sqrt(S-1)), no LayerNorm": dict(state_norm=False),
    "fan-in + LayerNorm between layers (default)": dict(),
    "default + LayerNorm of the input": dict(input_norm=True),
    "default, 1 layer": dict(num_layers=1),
    "default, top_down=none": dict(top_down="none"),
    "default, communication off": dict(communication=False),
    "default, output=sum (every layer's state)": dict(output="sum"),
    "Atari config: top_k [6, 5]": dict(top_k=[6, 5]),
    "Atari config + output=sum": dict(top_k=[6, 5], output="sum"),
    "Atari config + output_scale 2.5": dict(top_k=[6, 5], output_scale=2.5),
    "Atari config + per-module values": dict(top_k=[6, 5], bottom_up_values="per_module"),
    "Atari config + input_temperature 2": dict(top_k=[6, 5], input_temperature=2.0),
    "Atari config + input_temperature 0.5": dict(top_k=[6, 5], input_temperature=0.5),
    "Atari config + LayerNorm of the input": dict(top_k=[6, 5], input_norm=True),
    "Atari config, GRU cells": dict(top_k=[6, 5], cell="gru"),
    "Atari config + cell_init_gain 0.5": dict(top_k=[6, 5], cell_init_gain=0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ppo", action="store_true", help="also measure the CNN gradient after one PPO update on Breakout")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from brims_rl import BRIMs
    from brims_rl.diagnostics import first_update_gradient_norms, input_gradient, input_sensitivity, output_rms, relu_features

    inputs = relu_features(32, 32, 512)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(512, 264)
    lstm_row = (input_sensitivity(lstm, inputs), input_gradient(lstm, inputs), output_rms(lstm, inputs))
    cnn_reference = cnn_gradient(first_update_gradient_norms, "CnnLstmPolicy", {}) if args.ppo else None

    print("| core | sensitivity | vs LSTM | input gradient | vs LSTM | output rms |" + (" CNN gradient vs LSTM-PPO |" if args.ppo else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if args.ppo else ""))
    print(f"| nn.LSTM(512, 264) | {lstm_row[0]:.4f} | 1.00x | {lstm_row[1]:.3f} | 1.00x | {lstm_row[2]:.3f} |" + (" 1.00x |" if args.ppo else ""))
    for name, kwargs in VARIANTS.items():
        torch.manual_seed(0)
        core = BRIMs(512, 264, **kwargs)
        sensitivity, gradient = input_sensitivity(core, inputs), input_gradient(core, inputs)
        rms = output_rms(core, inputs)
        row = f"| {name} | {sensitivity:.4f} | {sensitivity / lstm_row[0]:.2f}x | {gradient:.3f} | {gradient / lstm_row[1]:.2f}x | {rms:.3f} |"
        if args.ppo:
            row += f" {cnn_gradient(first_update_gradient_norms, 'CnnBrimsPolicy', dict(core_kwargs=kwargs)) / cnn_reference:.3f}x |"
        print(row, flush=True)


def cnn_gradient(measure: Any, policy: str, policy_kwargs: dict[str, Any]) -> float:
    import envs
    from agents import RecurrentPPO
    from brims_rl.policies import CORE_ARGUMENTS

    # The variants are BRIMs arguments; the policy takes the ones it sets itself by name.
    core_kwargs = dict(policy_kwargs.get("core_kwargs", {}))
    named = {key: core_kwargs.pop(key) for key in CORE_ARGUMENTS if key in core_kwargs}
    env = envs.make_atari_vec_env("breakout", n_envs=4, seed=0)
    try:
        kwargs = dict(core_kwargs=core_kwargs, **named) if policy == "CnnBrimsPolicy" else {}
        model = RecurrentPPO(policy, env, n_steps=32, batch_size=64, n_epochs=1, seed=0, policy_kwargs=kwargs)
        return measure(model)["features_extractor"]
    finally:
        env.close()


if __name__ == "__main__":
    main()
