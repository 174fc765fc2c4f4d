"""A2C: every policy ``brims-rl train --algo a2c`` builds trains its cores, RecurrentA2C's loss
has the right sign, and LSTM-A2C and BRIMs-A2C learn a memory task."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList

import envs
from agents import RecurrentA2C
from agents.config import resolve_config
from agents.train import build_model, make_run_env
from test_learning import RandomAgent, mean_return, task_env

PONG = "PongNoFrameskip-v4"

# (policy, env, --set overrides): every A2C policy the CLI offers, on images and on vectors.
CLI_A2C_POLICIES = [
    (policy, env, overrides)
    for env in (PONG, envs.CUE_MEMORY_ID)
    for policy, overrides in [
        ("brims", ["policy_kwargs.critic_core=shared"]),
        ("brims", ["policy_kwargs.critic_core=separate"]),
        ("brims", ["policy_kwargs.critic_core=none"]),
        ("lstm", []),
        ("cnn", []),
    ]
]


def actor_modules(model: BaseAlgorithm) -> dict[str, torch.nn.Module]:
    """The modules between the observation and the action head that hold parameters."""
    policy = model.policy
    core = policy.lstm_actor if isinstance(model, RecurrentA2C) else policy.mlp_extractor.policy_net
    modules = {"encoder": policy.features_extractor, "actor core": core}
    return {name: module for name, module in modules.items() if any(True for _ in module.parameters())}


def weights(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """A copy of every parameter, named ``"<module>.<parameter>"``."""
    return {
        f"{name}.{tensor}": value.detach().clone()
        for name, module in modules.items() for tensor, value in module.named_parameters()
    }


@pytest.mark.parametrize("policy, env_id, overrides", CLI_A2C_POLICIES)
def test_one_a2c_update_trains_the_actor_core_and_encoder(policy: str, env_id: str, overrides: list[str]) -> None:
    """The optimizer holds exactly the policy's trainable parameters, and one update moves
    every tensor of the actor core and encoder.

    For RecurrentA2C each of these modules must also take a step on the learning rate's
    scale: its largest weight change is at least lr / 50 (measured: 0.09 lr to 10 lr; the
    smallest, 0.09 lr, is Pong's actor core without a critic core, whose first rollout has
    almost no policy gradient). SB2's TF-like RMSprop, whose average of squared gradients
    starts at one, moved these modules by about ``lr * |grad|``, 1e-6 lr to 5e-3 lr, and the
    actor LSTM never learned (issue 18). SB3's A2C on Atari keeps rl-zoo's TF-like RMSprop
    (its CNN is trained by the value loss), so there the weights only have to move.
    """
    config = resolve_config("a2c", policy, env_id, overrides=overrides, n_envs=2)
    env = make_run_env(config, n_envs=2, seed=0)
    try:
        model = build_model(config, env)
        trainable = [p for p in model.policy.parameters() if p.requires_grad]
        optimised = [p for group in model.policy.optimizer.param_groups for p in group["params"]]
        assert len(optimised) == len(trainable) and {id(p) for p in optimised} == {id(p) for p in trainable}

        modules = actor_modules(model)
        assert "actor core" in modules or (policy == "cnn" and "encoder" in modules)
        before = weights(modules)
        model.learn(model.n_steps * model.n_envs)  # one rollout, one update
        assert model._n_updates == 1
        after = weights(modules)
        unchanged = [name for name in before if torch.equal(before[name], after[name])]
        assert not unchanged, f"tensors one update left unchanged: {unchanged}"
        if isinstance(model, RecurrentA2C):
            learning_rate = model.lr_schedule(1)
            for module in modules:
                changes = [(after[name] - before[name]).abs().max().item() for name in before if name.startswith(module)]
                step = max(changes)
                assert step >= learning_rate / 50, f"{module}: largest weight change {step:.2g}, lr {learning_rate:g}"
    finally:
        env.close()


def log_probs(model: RecurrentA2C, batch: RecurrentRolloutBufferSamples) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n,)`` each: the log-probabilities of the batch's actions and of action 0."""
    actions = batch.actions.flatten().long()
    with torch.no_grad():
        return tuple(
            model.policy.evaluate_actions(batch.observations, a, batch.lstm_states, batch.episode_starts)[1]
            for a in (actions, torch.zeros_like(actions))
        )


@pytest.mark.parametrize(
    "policy, policy_kwargs",
    [
        ("MlpLstmPolicy", dict(lstm_hidden_size=16)),
        ("MlpBrimsPolicy", dict(hidden_size=16, num_modules=4, top_k=2)),
    ],
)
def test_positive_advantage_raises_the_log_probability_of_its_action(policy: str, policy_kwargs: dict[str, Any]) -> None:
    """One update on a real rollout whose advantages say action 0 was good (+1) and action 1
    bad (-1), with the value and entropy terms off. The policy-gradient objective
    mean(advantage * log p(action taken)) must rise, and with it the log-probability of
    action 0; a flipped policy-loss sign lowers both."""
    env = envs.make_env(envs.CUE_MEMORY_ID, n_envs=4, seed=0, delay=4)
    model = RecurrentA2C(
        policy, env, n_steps=8, learning_rate=1e-4, ent_coef=0.0, vf_coef=0.0, policy_kwargs=policy_kwargs, seed=0
    )
    callback = CallbackList([])
    model._setup_learn(model.n_steps * model.n_envs, callback)
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    buffer = model.rollout_buffer
    assert set(np.unique(buffer.actions)) == {0, 1}
    buffer.advantages[:] = np.where(buffer.actions[..., 0] == 0, 1.0, -1.0)
    rollout = next(buffer.get(batch_size=None))
    taken_before, zero_before = log_probs(model, rollout)
    model.train()
    taken_after, zero_after = log_probs(model, rollout)
    objective_rise = (rollout.advantages * (taken_after - taken_before)).mean().item()
    assert objective_rise > 0, f"mean(advantage * log p) changed by {objective_rise:.3g}"
    rise = (zero_after - zero_before).mean().item()
    assert rise > 0, f"mean log p(action 0) changed by {rise:.3g}"
    env.close()


# On BrimsRL/CueMemory-v0 with delay 4 (test_learning's task_env / mean_return: 8 envs, 200
# held-out episodes) guessing scores 0 in expectation, remembering the cue 1.
LEARNING_SETTINGS = dict(n_steps=16, learning_rate=1e-3, gamma=0.9, seed=0)


@pytest.mark.parametrize(
    "policy, policy_kwargs, budget",
    [
        # Measured (seeds 0, 1, 2): 1.00 from 10k, 14k, 10k steps on; -0.10 to 0.05 before.
        # With TF-like RMSprop: 0.07 after 60k.
        ("MlpLstmPolicy", dict(lstm_hidden_size=32, net_arch=[]), 20_000),
        # Measured (seeds 0, 1, 2): 1.00 from 2k, 2k, 4k steps on.
        ("MlpBrimsPolicy", dict(hidden_size=32, num_modules=4, top_k=2, net_arch=[]), 8_000),
    ],
)
def test_recurrent_a2c_remembers_the_cue(policy: str, policy_kwargs: dict[str, Any], budget: int) -> None:
    model = RecurrentA2C(policy, task_env(seed=0), policy_kwargs=policy_kwargs, **LEARNING_SETTINGS)
    untrained_return = mean_return(model)
    model.learn(budget)
    trained_return = mean_return(model)
    random_return = mean_return(RandomAgent(n_actions=2, seed=0))
    # Guessing scores 0 in expectation; 200 episodes put 0.3 more than 4 std away, 0.6 more than 8.
    # An untrained deterministic policy maps the 2 cues to answers by chance (1 in 4 maps both
    # right: the BRIMs default init at seed 0 does), so it is reported, not required to guess.
    assert abs(random_return) < 0.3
    assert trained_return > 0.6, (
        f"{policy} A2C mean return {trained_return:.2f} after {budget} steps (untrained: {untrained_return:.2f})"
    )
