"""The resolved config of a training run: :class:`TrainConfig` and :func:`resolve_config`.

All keys live in ONE flat namespace of "hyperparameters" (rl-zoo style) that the config
splits into three groups: env keys (:data:`agents.config_keys.ENV_KEYS`), run keys (how
long, how often to evaluate / checkpoint: :data:`agents.config_keys.RUN_KEYS`) and the
algorithm's constructor arguments. The files and their sections: :mod:`agents.config_files`;
which keys are allowed and their checks: :mod:`agents.config_keys`; the values' checks and
conversions: :mod:`agents.config_values`. Unknown keys and bad values raise ``ValueError``
naming the key: a typo is never silently ignored.
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import gymnasium as gym
import yaml

import envs
from agents.config_files import (
    CONFIG_DIR,
    apply_overrides,
    check_name,
    default_config_file,
    load_yaml,
    quickstart_settings,
    select_hyperparams,
)
from agents.config_keys import ENV_KEYS, ENV_KWARGS_KEY, RUN_KEYS, validate_hyperparams
from agents.config_values import ACTIVATIONS, FEATURES_EXTRACTORS, OPTIMIZERS, int_in, make_schedule
from agents.registry import ALGOS, POLICIES
from agents.run_folder import atomic_write

# Algorithm arguments written as schedules in YAML (constants or "lin_<initial>").
_SCHEDULE_ARGUMENTS = ("learning_rate", "clip_range", "clip_range_vf")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as the run folder's ``config.yaml``.

    Attributes:
        algo: ``"ppo"`` or ``"a2c"``.
        policy: ``"brims"`` (BRIMs core), ``"lstm"`` (sb3-contrib LSTM) or ``"cnn"``
            (feed-forward: Nature CNN on a frame stack, or an MLP on vector observations).
        env_id: the environment as the user wrote it (``"PongNoFrameskip-v4"``, ``"BrimsRL/CueMemory-v0"``).
        seed, device: as given on the command line.
        hyperparams: the flat, validated hyperparameters (written form: schedules stay strings).
        config_file: where the defaults came from.
    """

    algo: str
    policy: str
    env_id: str
    seed: int = 0
    device: str = "auto"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    config_file: Optional[str] = None

    @property
    def is_atari(self) -> bool:
        return envs.is_atari_id(self.env_id)

    def env_kwargs(self) -> dict[str, Any]:
        """Arguments for ``envs.make_env`` (besides env id and seed), n_envs included.

        A non-Atari env's own constructor arguments (``env_kwargs``) are spread in.
        """
        kwargs = {k: v for k, v in self.hyperparams.items() if k in ENV_KEYS}
        kwargs.update(self.hyperparams.get(ENV_KWARGS_KEY) or {})
        return kwargs

    def run_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.hyperparams.items() if k in RUN_KEYS}

    def algorithm_kwargs(self) -> dict[str, Any]:
        """Constructor arguments for the algorithm: schedules and class names converted."""
        kwargs = {
            k: copy.deepcopy(v)
            for k, v in self.hyperparams.items()
            if k not in ENV_KEYS and k not in RUN_KEYS and k != ENV_KWARGS_KEY
        }
        for key in _SCHEDULE_ARGUMENTS:
            if kwargs.get(key) is not None:
                kwargs[key] = make_schedule(kwargs[key])
        policy_kwargs = kwargs.get("policy_kwargs")
        if policy_kwargs:  # names written in YAML -> the classes SB3 wants
            if "activation_fn" in policy_kwargs:
                policy_kwargs["activation_fn"] = ACTIVATIONS[policy_kwargs["activation_fn"]]
            if "optimizer_class" in policy_kwargs:
                policy_kwargs["optimizer_class"] = OPTIMIZERS[policy_kwargs["optimizer_class"]]
            if "features_extractor_class" in policy_kwargs:
                policy_kwargs["features_extractor_class"] = FEATURES_EXTRACTORS[policy_kwargs["features_extractor_class"]]
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return dict(
            algo=self.algo,
            policy=self.policy,
            env=self.env_id,
            seed=self.seed,
            device=self.device,
            config_file=self.config_file,
            hyperparams=copy.deepcopy(self.hyperparams),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Rebuild (and re-validate) a config saved by :meth:`to_dict`."""
        if not isinstance(data, dict):
            raise ValueError("a resolved config must be a YAML mapping")
        known = {"algo", "policy", "env", "seed", "device", "config_file", "hyperparams"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in a resolved config; allowed: {sorted(known)}")
        if not isinstance(data.get("env"), str):
            raise ValueError(f"a resolved config needs 'env' (an env id string), got {data.get('env')!r}")
        config = cls(
            algo=check_name("algo", data.get("algo"), tuple(ALGOS)),
            policy=check_name("policy", data.get("policy"), tuple(POLICIES)),
            env_id=str(data.get("env")),
            seed=int_in(0)("seed", data.get("seed", 0)),
            device=str(data.get("device", "auto")),
            hyperparams=dict(data.get("hyperparams") or {}),
            config_file=data.get("config_file"),
        )
        config.hyperparams = validate_hyperparams(config.hyperparams, config.algo, config.policy, config.env_id)
        return config

    def save(self, path: Union[str, Path]) -> None:
        """Write the YAML with :func:`agents.run_folder.atomic_write`."""
        path = Path(path)
        text = (
            "# Resolved brims-rl training config (what this run used). Continue the run with:\n"
            f"#   brims-rl train --resume {shlex.quote(str(path.parent))}\n"
            + yaml.safe_dump(self.to_dict(), sort_keys=False)
        )
        with atomic_write(path) as tmp:
            tmp.write_text(text)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TrainConfig":
        return cls.from_dict(load_yaml(path))


def resolve_config(
    algo: str,
    policy: Optional[str] = None,
    env_id: Optional[str] = None,
    config_file: Optional[Union[str, Path]] = None,
    overrides: Sequence[str] = (),
    seed: int = 0,
    device: str = "auto",
    total_timesteps: Optional[int] = None,
    n_envs: Optional[int] = None,
) -> TrainConfig:
    """Build the validated config of a training run.

    Args:
        algo: ``"ppo"`` or ``"a2c"``.
        policy: ``"brims"``, ``"lstm"`` or ``"cnn"``; None takes the quickstart's (or brims).
        env_id: the env; None selects the file's ``quickstart`` section (env, policy and
            short-run settings: what ``brims-rl train`` with no arguments runs).
        config_file: YAML file; None uses ``configs/<algo>.yaml``.
        overrides: ``key=value`` strings (``--set``), applied after the file.
        seed, device: recorded in the config.
        total_timesteps, n_envs: command-line shortcuts, applied last.
    """
    algo = check_name("algorithm", algo, tuple(ALGOS))
    path = Path(config_file) if config_file is not None else default_config_file(algo)
    raw = load_yaml(path)
    if not raw:
        raise ValueError(
            f"config file {str(path)!r} is empty: expected sections such as atari, default and quickstart "
            f"(see {CONFIG_DIR / (algo + '.yaml')})"
        )
    quickstart = env_id is None
    if quickstart:
        section = quickstart_settings(raw, str(path))
        env_id = section.get("env") or "PongNoFrameskip-v4"
        policy = policy or section.get("policy") or "brims"
    policy = check_name("policy", policy or "brims", tuple(POLICIES))
    _check_env_id(env_id)
    hyperparams = select_hyperparams(raw, algo, policy, env_id, str(path), quickstart=quickstart)
    hyperparams = apply_overrides(hyperparams, overrides)
    if total_timesteps is not None:
        hyperparams["total_timesteps"] = total_timesteps
    if n_envs is not None:
        hyperparams["n_envs"] = n_envs
    hyperparams = validate_hyperparams(hyperparams, algo, policy, env_id)
    if "total_timesteps" not in hyperparams:
        raise ValueError(f"no total_timesteps for {algo}/{policy} on {env_id!r}: set it in {path} or pass --timesteps")
    return TrainConfig(
        algo=algo, policy=policy, env_id=env_id, seed=seed, device=device, hyperparams=hyperparams, config_file=str(path)
    )


def _check_env_id(env_id: str) -> None:
    """Unknown env ids fail here, before anything is built (same message as the env factory)."""
    if envs.is_atari_id(env_id) or env_id in gym.registry:
        return
    looks_atari = "noframeskip" in env_id.lower() or env_id.lower().startswith("ale/")
    if looks_atari:
        envs.normalize_game_id(env_id)  # raises its ValueError with close matches
    raise ValueError(
        f"unknown env {env_id!r}: not an Atari game and not a registered gymnasium id "
        "(run `brims-rl list-envs` for the Atari games and BrimsRL/ tasks)"
    )
