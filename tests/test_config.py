"""The config's keys come from the constructors they feed: the algorithm class the registry
names for (algo, policy), the policy class, the env factories; one list of Atari-only keys."""

from __future__ import annotations

import inspect

import pytest
import sb3_contrib

import envs
from agents.config import resolve_config
from agents.config_keys import algorithm_keys, allowed_keys, as_written, env_keys, policy_keys
from agents.registry import ALGOS, POLICIES, algorithm_class
from agents.train import build_model, make_run_env

CUE = envs.CUE_MEMORY_ID
RUN_SETS = {"policy", "env", "seed", "device", "tensorboard_log", "verbose", "_init_setup_model"}


def arguments(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}


@pytest.mark.parametrize("algo", sorted(ALGOS))
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_algorithm_keys_are_the_constructor_arguments(algo: str, policy: str) -> None:
    cls = algorithm_class(algo, policy)
    keys = set(algorithm_keys(algo, policy))
    assert arguments(cls) - RUN_SETS - {"rollout_buffer_class", "rollout_buffer_kwargs"} <= keys
    if issubclass(cls, sb3_contrib.RecurrentPPO):  # its own arguments and, through **kwargs, sb3-contrib's
        assert arguments(sb3_contrib.RecurrentPPO) - RUN_SETS <= keys
    for atari in (True, False):
        # Every key the run takes has its value checked before anything is built.
        assert not [key for key, check in allowed_keys(algo, policy, atari).items() if check is as_written]


def test_recurrent_ppo_takes_refresh_states_from_the_config() -> None:
    config = resolve_config("ppo", policy="brims", env_id=CUE, overrides=["refresh_states=true", "n_envs=2"])
    env = make_run_env(config, n_envs=2, seed=0)
    try:
        model = build_model(config, env)
        assert model.refresh_states is True
        assert model.rollout_buffer.state_refresher == model._refresh_stored_states
    finally:
        env.close()
    with pytest.raises(ValueError, match="'refresh_states': got 'sometimes'"):
        resolve_config("ppo", env_id=CUE, overrides=["refresh_states=sometimes"])


def test_a2c_takes_none_of_ppos_keys() -> None:
    for policy in POLICIES:
        keys = set(algorithm_keys("a2c", policy))
        assert not keys & {"batch_size", "n_epochs", "clip_range", "clip_range_vf", "target_kl", "sequence_length"}
    with pytest.raises(ValueError, match="unknown config key 'batch_size' for a2c/brims"):
        resolve_config("a2c", env_id=CUE, overrides=["batch_size=32"])


def test_policy_kwargs_are_the_policy_class_arguments() -> None:
    brims = set(policy_keys("brims"))
    assert {"hidden_size", "num_modules", "top_k", "critic_core", "core_kwargs", "net_arch"} <= brims
    assert not brims & {"lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm", "lstm_kwargs"}
    assert {"lstm_hidden_size", "shared_lstm", "net_arch"} <= set(policy_keys("lstm"))
    assert not set(policy_keys("cnn")) & {"hidden_size", "lstm_hidden_size", "observation_space", "use_sde"}


def test_atari_only_keys_are_one_list_that_config_and_make_env_refuse() -> None:
    assert envs.ATARI_ONLY_KEYS == set(env_keys(atari=True)) - set(env_keys(atari=False))
    assert {"backend", "noise", "sticky_actions", "noop_max", "screen_size"} <= envs.ATARI_ONLY_KEYS
    for key in sorted(envs.ATARI_ONLY_KEYS):
        with pytest.raises(ValueError, match=f"'{key}' applies to Atari games only"):
            resolve_config("ppo", env_id=CUE, overrides=[f"{key}=1"])
        with pytest.raises(ValueError, match=f"{key} only apply to Atari"):
            envs.make_env(CUE, n_envs=1, **{key: 1})


def test_top_k_warmup_steps_is_a_brims_run_key() -> None:
    config = resolve_config("ppo", policy="brims", env_id=CUE, overrides=["top_k_warmup_steps=5000"])
    assert config.run_settings()["top_k_warmup_steps"] == 5000 and "top_k_warmup_steps" not in config.algorithm_kwargs()
    with pytest.raises(ValueError, match="unknown config key 'top_k_warmup_steps' for ppo/lstm"):
        resolve_config("ppo", policy="lstm", env_id=CUE, overrides=["top_k_warmup_steps=5000"])
    with pytest.raises(ValueError, match="'top_k_warmup_steps'"):
        resolve_config("ppo", policy="brims", env_id=CUE, overrides=["top_k_warmup_steps=-1"])


def test_compile_core_is_a_brims_run_key() -> None:
    assert resolve_config("ppo", policy="brims", env_id=CUE, overrides=["compile_core=true"]).hyperparams["compile_core"] is True
    for policy in ("lstm", "cnn"):
        with pytest.raises(ValueError, match=f"unknown config key 'compile_core' for ppo/{policy}"):
            resolve_config("ppo", policy=policy, env_id=CUE, overrides=["compile_core=true"])
    with pytest.raises(ValueError, match="'compile_core': got 'fast'"):
        resolve_config("ppo", policy="brims", env_id=CUE, overrides=["compile_core=fast"])
