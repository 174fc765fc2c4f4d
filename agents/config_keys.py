"""Which config keys a run takes, and the checks of their values.

The keys come from the constructors' signatures, not from hand-kept lists: the algorithm's
(:func:`agents.registry.algorithm_class`), the policy's (``policy_kwargs``), the BRIMs
core's (``policy_kwargs.core_kwargs``), the env factory's (:func:`envs.make_atari_vec_env`,
:func:`envs.make_vec_env`, and a gymnasium env's own for ``env_kwargs``), plus the run's own
keys (:data:`RUN_KEYS`). What a signature cannot say (the range of a value, a class given by
name) the tables of checks below say; a key without a check goes to its constructor as written.
An unknown key or a bad value is a one-line ``ValueError`` that names the key.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

import envs
from agents.config_values import (
    ACTIVATIONS,
    FEATURES_EXTRACTORS,
    OPTIMIZERS,
    Check,
    boolean,
    choice,
    float_in,
    int_in,
    mapping,
    optional,
    robustness,
    schedule,
)
from agents.registry import POLICIES, algorithm_class
from brims_rl.core import BRIMs
from brims_rl.policies import CORE_ARGUMENTS, CRITIC_CORES, LSTM_ONLY_ARGUMENTS

# Keys of the training run itself (not passed to the algorithm).
RUN_KEYS: dict[str, Check] = {
    "total_timesteps": int_in(1),
    "eval_freq": int_in(0),  # env steps between evaluations; 0 turns evaluation off
    "eval_episodes": int_in(1),
    "n_eval_envs": int_in(1),
    "checkpoint_freq": int_in(0),  # env steps between checkpoints; 0 turns them off
    "activation_log_interval": int_in(0),  # rollouts between BRIMs activation logs; 0 turns it off
    "log_interval": int_in(1),  # rollouts between console/TensorBoard log dumps
    "compile_core": boolean,  # torch.compile the BRIMs core (for GPUs: BrimsPolicy.compile_cores)
    "top_k_warmup_steps": int_in(0),  # env steps with every BRIMs module updated before top_k applies
}
# Run keys that only a BRIMs policy takes.
BRIMS_RUN_KEYS = frozenset({"activation_log_interval", "compile_core", "top_k_warmup_steps"})
# Constructor arguments of a non-Atari gymnasium env (``env_kwargs: {delay: 8}`` for CueMemory).
ENV_KWARGS_KEY = "env_kwargs"

# Constructor arguments that the run sets itself (or that YAML cannot give: classes, buffers).
_SET_BY_RUN = frozenset({
    "policy", "env", "env_id", "seed", "device", "tensorboard_log", "verbose", "_init_setup_model",
    "rollout_buffer_class", "rollout_buffer_kwargs",
})
# Policy constructor arguments that the algorithm sets (or that YAML cannot give: a class).
_SET_BY_ALGORITHM = frozenset({"observation_space", "action_space", "lr_schedule", "use_sde"})

# Checks of the values, by key (the same key means the same thing in every constructor).
CHECKS: dict[str, Check] = {
    # the algorithms
    "learning_rate": schedule(),
    "n_steps": int_in(1),
    "batch_size": int_in(2),
    "n_epochs": int_in(1),
    "gamma": float_in(0.0, 1.0),
    "gae_lambda": float_in(0.0, 1.0),
    "clip_range": schedule(),
    "clip_range_vf": optional(schedule()),
    "normalize_advantage": boolean,
    "ent_coef": float_in(0.0),
    "vf_coef": float_in(0.0),
    "max_grad_norm": float_in(0.0, low_open=True),
    "use_sde": boolean,
    "sde_sample_freq": int_in(-1),
    "target_kl": optional(float_in(0.0, low_open=True)),
    "stats_window_size": int_in(1),
    "policy_kwargs": mapping,
    "rms_prop_eps": float_in(0.0, low_open=True),
    "use_rms_prop": boolean,
    "sequence_length": optional(int_in(1)),
    "refresh_states": boolean,
    # the envs
    "n_envs": int_in(1),
    "frame_stack": int_in(1),
    "backend": choice("ale", "sb3"),
    "terminal_on_life_loss": boolean,
    "clip_reward": boolean,
    "sticky_actions": float_in(0.0, 1.0),
    "max_episode_steps": int_in(1),
    "noop_max": int_in(0),
    "frame_skip": int_in(1),
    "screen_size": int_in(8),
    "num_threads": int_in(0),
    "noise": robustness,
    "flicker": robustness,
    "occlusion": robustness,
    ENV_KWARGS_KEY: mapping,
}
POLICY_CHECKS: dict[str, Check] = {
    "activation_fn": choice(*ACTIVATIONS),
    "optimizer_class": choice(*OPTIMIZERS),
    "features_extractor_class": choice(*FEATURES_EXTRACTORS),
    "critic_core": choice(*CRITIC_CORES),
    "optimizer_kwargs": mapping,
    "features_extractor_kwargs": mapping,
    "lstm_kwargs": mapping,
    "core_kwargs": mapping,
    "hidden_size": int_in(1),
    "lstm_hidden_size": int_in(1),
    "num_layers": int_in(1),
    "n_lstm_layers": int_in(1),
}


def constructor_keys(target: Callable[..., Any]) -> list[str]:
    """The keyword arguments ``target`` takes (a class: its ``__init__``, following ``**kwargs``
    up the classes it inherits from until a signature ends without them)."""
    if not isinstance(target, type):
        return [p.name for p in inspect.signature(target).parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names: list[str] = []
    for cls in target.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        parameters = list(inspect.signature(vars(cls)["__init__"]).parameters.values())[1:]  # not self
        names += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def algorithm_keys(algo: str, policy: str) -> list[str]:
    """The constructor keys of the algorithm class that trains ``policy``."""
    return [key for key in constructor_keys(algorithm_class(algo, policy)) if key not in _SET_BY_RUN]


def policy_keys(policy: str) -> list[str]:
    """The keys ``policy_kwargs`` takes for a ``--policy`` (the policy class's constructor keys)."""
    refused = _SET_BY_ALGORITHM | (frozenset(LSTM_ONLY_ARGUMENTS) if policy == "brims" else frozenset())
    return [key for key in constructor_keys(POLICIES[policy].base) if key not in refused]


def brims_core_kwargs() -> tuple[str, ...]:
    """Keys ``policy_kwargs.core_kwargs`` takes: the BRIMs constructor's, minus those the policy sets."""
    return tuple(key for key in constructor_keys(BRIMs) if key not in CORE_ARGUMENTS)


def env_keys(atari: bool, minatar: bool = False) -> list[str]:
    """The env keys: ``envs.make_atari_vec_env``'s arguments for a game, ``envs.make_minatar_vec_env``'s
    for a MinAtar game, else ``envs.make_vec_env``'s; the non-Atari kinds take ``env_kwargs`` too."""
    factory = envs.make_atari_vec_env if atari else envs.make_minatar_vec_env if minatar else envs.make_vec_env
    keys = [key for key in constructor_keys(factory) if key not in _SET_BY_RUN]
    return keys if atari else [*keys, ENV_KWARGS_KEY]


# Every env key of any kind: what TrainConfig hands to envs.make_env.
ENV_KEYS = frozenset(env_keys(atari=True)) | (
    frozenset(env_keys(atari=False)) | frozenset(env_keys(atari=False, minatar=True))
) - {ENV_KWARGS_KEY}


def allowed_keys(algo: str, policy: str, atari: bool, minatar: bool = False) -> dict[str, Check]:
    """Every hyperparameter key valid for this (algorithm, policy, env kind), with its check
    (a key without a check passes through as written)."""
    run_keys = [key for key in RUN_KEYS if policy == "brims" or key not in BRIMS_RUN_KEYS]
    keys = [*env_keys(atari, minatar), *run_keys, *algorithm_keys(algo, policy)]
    return {key: RUN_KEYS.get(key) or CHECKS.get(key, as_written) for key in keys}


def as_written(key: str, value: Any) -> Any:
    """The check of a key no table names: the value goes to its constructor as written."""
    return value


# --------------------------------------------------------------------------- validation


def validate_hyperparams(hyperparams: dict[str, Any], algo: str, policy: str, env_id: str) -> dict[str, Any]:
    """Check every key and value; return the normalised hyperparameters.

    Raises:
        ValueError: an unknown key (the message lists the allowed ones) or a bad value.
    """
    atari = envs.is_atari_id(env_id)
    allowed = allowed_keys(algo, policy, atari, minatar=envs.is_minatar_id(env_id))
    checked: dict[str, Any] = {}
    for key, value in hyperparams.items():
        if key not in allowed:
            if key in envs.ATARI_ONLY_KEYS:
                raise ValueError(f"config key {key!r} applies to Atari games only, not to {env_id!r}")
            raise ValueError(
                f"unknown config key {key!r} for {algo}/{policy} on {env_id!r}; allowed keys: {', '.join(sorted(allowed))}"
            )
        checked[key] = allowed[key](key, value)
    if "policy_kwargs" in checked:
        checked["policy_kwargs"] = validate_policy_kwargs(checked["policy_kwargs"], policy)
    if checked.get(ENV_KWARGS_KEY):
        check_env_kwargs(env_id, checked[ENV_KWARGS_KEY])
    check_consistency(checked, algo)
    return checked


def validate_policy_kwargs(policy_kwargs: dict[str, Any], policy: str) -> dict[str, Any]:
    """Check the keys of ``policy_kwargs`` (and ``core_kwargs``) and the values we check or convert."""
    allowed = policy_keys(policy)
    checked = dict(policy_kwargs)
    for key, value in policy_kwargs.items():
        if key not in allowed:
            raise ValueError(
                f"unknown config key 'policy_kwargs.{key}' for the {policy} policy; "
                f"allowed policy_kwargs: {', '.join(sorted(allowed))}"
            )
        if key in POLICY_CHECKS:
            checked[key] = POLICY_CHECKS[key](f"policy_kwargs.{key}", value)
    core_allowed = brims_core_kwargs()
    for key in checked.get("core_kwargs") or {}:
        if key not in core_allowed:
            raise ValueError(f"unknown config key 'policy_kwargs.core_kwargs.{key}'; allowed: {', '.join(core_allowed)}")
    return checked


def check_env_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """Every key of ``env_kwargs`` must be an argument of the env's constructor."""
    if env_id not in gym.registry:
        return  # an unknown env is refused by name elsewhere
    entry_point = gym.registry[env_id].entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    parameters = inspect.signature(creator).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return  # takes anything: the env itself will judge
    allowed = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "render_mode"]
    for key in env_kwargs:
        if key not in allowed:
            raise ValueError(
                f"unknown config key 'env_kwargs.{key}': {env_id!r} takes {', '.join(allowed) or 'no arguments'}"
            )


def check_consistency(hyperparams: dict[str, Any], algo: str) -> None:
    """Rules between keys that would otherwise fail only after the first rollout."""
    n_steps, n_envs = hyperparams.get("n_steps"), hyperparams.get("n_envs")
    batch_size, sequence_length = hyperparams.get("batch_size"), hyperparams.get("sequence_length")
    if algo != "ppo" or n_steps is None:
        return
    if batch_size is not None and n_envs is not None and batch_size > n_steps * n_envs:
        raise ValueError(
            f"config key 'batch_size': got {batch_size}, expected at most n_steps * n_envs = {n_steps * n_envs}"
        )
    if sequence_length is not None:
        if n_steps % sequence_length != 0:
            raise ValueError(
                f"config key 'sequence_length': got {sequence_length}, expected a divisor of n_steps={n_steps}"
            )
        if batch_size is not None and batch_size % sequence_length != 0:
            raise ValueError(
                f"config key 'batch_size': got {batch_size}, expected a multiple of sequence_length={sequence_length}"
            )
