"""Training configuration: YAML files, ``--set`` overrides, validation and conversion.

A config file (``configs/ppo.yaml``, ``configs/a2c.yaml``) holds one algorithm's
hyperparameters. Top-level sections:

* ``atari``: defaults for every Atari game;
* ``<game>`` (``pong``, ``breakout``, ...): per-game overrides, merged over ``atari``;
* ``default``: defaults for every non-Atari env (gymnasium ids, the ``BrimsRL/`` tasks);
* ``<env id>`` (``BrimsRL/CueMemory-v0``, ``CartPole-v1``): overrides merged over ``default``;
* ``quickstart``: what ``brims-rl train`` does when no ``--env`` is given.

Every section but ``quickstart`` holds ``common:`` (all policies) and per-policy blocks
``brims:``, ``lstm:``, ``cnn:``. Resolution order, later wins::

    atari.common < atari.<policy> < <game>.common < <game>.<policy> < quickstart < --set < flags

All keys live in ONE flat namespace of "hyperparameters" (rl-zoo style) that this module
splits into three groups: env-construction keys (:data:`ENV_KEYS`), run keys (how long,
how often to evaluate / checkpoint, :data:`RUN_KEYS`) and the algorithm's constructor
arguments. Unknown keys and bad values raise ``ValueError`` naming the key: a typo is never
silently ignored.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import yaml

from agents.run_folder import atomic_write

ALGORITHMS = ("ppo", "a2c")
POLICIES = ("brims", "lstm", "cnn")
POLICY_SECTIONS = ("common", *POLICIES)
# Top-level config sections that are not an env name.
SPECIAL_SECTIONS = ("atari", "default", "quickstart")

# The wheel ships the repository's configs/ as agents/configs/ (see pyproject.toml); a source
# checkout or an editable install reads configs/ next to agents/.
_PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
CONFIG_DIR = _PACKAGED_CONFIGS if _PACKAGED_CONFIGS.is_dir() else Path(__file__).resolve().parent.parent / "configs"

Validator = Callable[[str, Any], Any]


# --------------------------------------------------------------------------- value checks
# Each validator takes (key, value) and returns the normalised value or raises ValueError.
# YAML 1.1 (PyYAML) reads "1e-4" and "1e7" as strings, so numeric checks accept any string
# that Python's float() parses.


def _bad(key: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"config key {key!r}: got {value!r}, expected {expected}")


def _as_number(key: str, value: Any, expected: str) -> float:
    if isinstance(value, bool):
        raise _bad(key, value, expected)
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise _bad(key, value, expected) from None
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _bad(key, value, expected)
    return value


def int_in(low: int, high: Optional[int] = None) -> Validator:
    """An integer >= low (and <= high); integral floats such as ``1e7`` are accepted."""
    expected = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")

    def check(key: str, value: Any) -> int:
        number = _as_number(key, value, expected)
        if number != int(number) or number < low or (high is not None and number > high):
            raise _bad(key, value, expected)
        return int(number)

    return check


def float_in(low: float, high: float = math.inf, low_open: bool = False) -> Validator:
    """A float in [low, high] (or (low, high] when ``low_open``)."""
    bracket = "(" if low_open else "["
    expected = f"a number in {bracket}{low}, {high}]"

    def check(key: str, value: Any) -> float:
        number = float(_as_number(key, value, expected))
        if number < low or number > high or (low_open and number == low):
            raise _bad(key, value, expected)
        return number

    return check


def optional(inner: Validator) -> Validator:
    """None (YAML ``null``) or what ``inner`` accepts."""

    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, value, "true or false")
    return value


def choice(*options: str) -> Validator:
    def check(key: str, value: Any) -> str:
        if value not in options:
            raise _bad(key, value, f"one of {', '.join(map(repr, options))}")
        return value

    return check


def mapping(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(key, value, "a mapping (YAML dict)")
    return value


_SCHEDULE_TEXT = re.compile(r"^(lin|linear)_(.+)$")


def schedule(low_open: bool = True) -> Validator:
    """A constant, ``"lin_<initial>"`` or ``{type: linear|constant, ...}``; see :func:`make_schedule`.

    The written form is kept (so the resolved config stays readable YAML); only the numbers
    are checked here.
    """
    positive = float_in(0.0, low_open=low_open)
    expected = "a number, 'lin_<initial>' or {type: linear, initial: X[, final: Y]} / {type: constant, value: X}"

    def check(key: str, value: Any) -> Any:
        if isinstance(value, str):
            match = _SCHEDULE_TEXT.match(value.strip())
            if match:
                positive(key, match.group(2))
                return value.strip()
        if isinstance(value, dict):
            kind = value.get("type")
            allowed = {"linear": {"type", "initial", "final"}, "constant": {"type", "value"}}.get(kind)
            if allowed is None or not set(value) <= allowed or ("initial" if kind == "linear" else "value") not in value:
                raise _bad(key, value, expected)
            for name in set(value) - {"type"}:
                float_in(0.0)(f"{key}.{name}", value[name])
            return dict(value)
        try:
            return positive(key, value)
        except ValueError:
            raise _bad(key, value, expected) from None

    return check


def robustness(key: str, value: Any) -> Any:
    """None, a number or a dict of wrapper arguments (checked by ``envs.parse_robustness``)."""
    if value is None:
        return None
    from envs.robustness import parse_robustness

    try:
        parse_robustness(**{key: value})
    except (TypeError, ValueError) as error:
        raise ValueError(f"config key {key!r}: {error}") from None
    return value


def make_schedule(value: Any) -> Union[float, Callable[[float], float]]:
    """Turn a checked schedule value into what SB3 takes: a float or a schedule callable.

    ``2.5e-4`` -> ``2.5e-4``; ``"lin_2.5e-4"`` and ``{type: linear, initial: 2.5e-4}`` ->
    ``LinearSchedule(2.5e-4, 0.0, 1.0)``: decays with SB3's ``progress_remaining``
    (``1 - num_timesteps / total_timesteps``), so a resumed run continues the decay where it
    stopped; ``{type: linear, initial: a, final: b}`` ends at b instead of 0.
    """
    from stable_baselines3.common.utils import LinearSchedule

    if isinstance(value, str):
        match = _SCHEDULE_TEXT.match(value.strip())
        if match is None:
            return float(value)
        return LinearSchedule(float(match.group(2)), 0.0, 1.0)
    if isinstance(value, dict):
        if value["type"] == "constant":
            return float(value["value"])
        return LinearSchedule(float(value["initial"]), float(value.get("final", 0.0)), 1.0)
    return float(value)


# --------------------------------------------------------------------------- key tables

# Keys that build the environments (envs.make_atari_vec_env arguments, plus n_envs).
ENV_KEYS: dict[str, Validator] = {
    "n_envs": int_in(1),
    "frame_stack": int_in(1),
    "backend": choice("ale", "sb3"),
    "terminal_on_life_loss": boolean,
    "clip_reward": boolean,
    "sticky_actions": float_in(0.0, 1.0),
    "max_episode_steps": int_in(1),
    "noise": robustness,
    "flicker": robustness,
    "occlusion": robustness,
}
# The env keys only Atari games take: the robustness wrappers corrupt image frames, and
# envs.make_env refuses them for the small vector-observation tasks.
ATARI_ONLY_KEYS = (
    "backend", "terminal_on_life_loss", "clip_reward", "sticky_actions", "max_episode_steps", "noise", "flicker", "occlusion"
)
# The Atari-only keys a MinAtar grid takes too (envs.make_minatar_vec_env): its frames are images.
MINATAR_ENV_KEYS = ("max_episode_steps", "noise", "flicker", "occlusion")
# Constructor arguments of a non-Atari gymnasium env (``env_kwargs: {delay: 8}`` for CueMemory).
NON_ATARI_ENV_KEYS: dict[str, Validator] = {"env_kwargs": mapping}

# Keys of the training run itself (not passed to the algorithm).
RUN_KEYS: dict[str, Validator] = {
    "total_timesteps": int_in(1),
    "eval_freq": int_in(0),  # env steps between evaluations; 0 turns evaluation off
    "eval_episodes": int_in(1),
    "n_eval_envs": int_in(1),
    "checkpoint_freq": int_in(0),  # env steps between checkpoints; 0 turns them off
    "activation_log_interval": int_in(0),  # rollouts between BRIMs activation logs; 0 turns it off
    "log_interval": int_in(1),  # rollouts between console/TensorBoard log dumps
}

_ON_POLICY_KEYS: dict[str, Validator] = {
    "learning_rate": schedule(),
    "n_steps": int_in(1),
    "gamma": float_in(0.0, 1.0),
    "gae_lambda": float_in(0.0, 1.0),
    "ent_coef": float_in(0.0),
    "vf_coef": float_in(0.0),
    "max_grad_norm": float_in(0.0, low_open=True),
    "normalize_advantage": boolean,
    "stats_window_size": int_in(1),
    "policy_kwargs": mapping,
}
_PPO_KEYS: dict[str, Validator] = {
    **_ON_POLICY_KEYS,
    "batch_size": int_in(2),
    "n_epochs": int_in(1),
    "clip_range": schedule(),
    "clip_range_vf": optional(schedule()),
    "target_kl": optional(float_in(0.0, low_open=True)),
}
_A2C_KEYS: dict[str, Validator] = {**_ON_POLICY_KEYS, "rms_prop_eps": float_in(0.0, low_open=True)}

# Algorithm constructor keys per (algo, recurrent?).
ALGORITHM_KEYS: dict[tuple[str, bool], dict[str, Validator]] = {
    ("ppo", True): {**_PPO_KEYS, "sequence_length": optional(int_in(1))},
    ("ppo", False): _PPO_KEYS,
    ("a2c", True): _A2C_KEYS,
    ("a2c", False): {**_A2C_KEYS, "use_rms_prop": boolean},
}

# policy_kwargs every policy takes; then the recurrent cores' own.
_COMMON_POLICY_KWARGS = (
    "net_arch",
    "activation_fn",
    "ortho_init",
    "normalize_images",
    "optimizer_class",
    "optimizer_kwargs",
    "features_extractor_class",
    "features_extractor_kwargs",
    "share_features_extractor",
)
POLICY_KWARGS: dict[str, tuple[str, ...]] = {
    "brims": (
        *_COMMON_POLICY_KWARGS,
        "hidden_size",
        "num_layers",
        "num_modules",
        "top_k",
        "cell",
        "top_down",
        "core_kwargs",
        "critic_core",
    ),
    "lstm": (*_COMMON_POLICY_KWARGS, "lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm", "lstm_kwargs"),
    "cnn": _COMMON_POLICY_KWARGS,
}
ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu", "gelu", "silu")
OPTIMIZERS = ("Adam", "AdamW", "RMSprop", "RMSpropTFLike", "SGD")
# features_extractor_class by name; MinAtarCNN reads MinAtar's 10x10 grids.
FEATURES_EXTRACTORS = ("NatureCNN", "MinAtarCNN", "FlattenExtractor")


def brims_core_kwargs() -> tuple[str, ...]:
    """Keys ``policy_kwargs.core_kwargs`` takes: the BRIMs constructor's, minus those the policy sets."""
    from brims_rl.core import BRIMs

    set_by_policy = {"self", "input_size", "hidden_size", "num_layers", "num_modules", "top_k", "cell", "top_down"}
    return tuple(name for name in inspect.signature(BRIMs.__init__).parameters if name not in set_by_policy)


def allowed_keys(algo: str, policy: str, atari: bool, minatar: bool = False) -> dict[str, Validator]:
    """Every hyperparameter key valid for this (algorithm, policy, env kind), with its check."""
    env_keys = {
        k: v for k, v in ENV_KEYS.items() if atari or k not in ATARI_ONLY_KEYS or (minatar and k in MINATAR_ENV_KEYS)
    }
    if not atari:
        env_keys.update(NON_ATARI_ENV_KEYS)
    run_keys = {k: v for k, v in RUN_KEYS.items() if policy == "brims" or k != "activation_log_interval"}
    return {**env_keys, **run_keys, **ALGORITHM_KEYS[(algo, policy != "cnn")]}


# --------------------------------------------------------------------------- the resolved config


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
        return _is_atari(self.env_id)

    def env_kwargs(self) -> dict[str, Any]:
        """Arguments for ``envs.make_env`` (besides env id and seed), n_envs included.

        A non-Atari env's own constructor arguments (``env_kwargs``) are spread in.
        """
        kwargs = {k: v for k, v in self.hyperparams.items() if k in ENV_KEYS}
        kwargs.update(self.hyperparams.get("env_kwargs") or {})
        return kwargs

    def run_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.hyperparams.items() if k in RUN_KEYS}

    def algorithm_kwargs(self) -> dict[str, Any]:
        """Constructor arguments for the algorithm: schedules and class names converted."""
        kwargs = {
            k: copy.deepcopy(v)
            for k, v in self.hyperparams.items()
            if k not in ENV_KEYS and k not in RUN_KEYS and k not in NON_ATARI_ENV_KEYS
        }
        for key in ("learning_rate", "clip_range", "clip_range_vf"):
            if kwargs.get(key) is not None:
                kwargs[key] = make_schedule(kwargs[key])
        if "policy_kwargs" in kwargs:
            kwargs["policy_kwargs"] = convert_policy_kwargs(kwargs["policy_kwargs"])
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
            algo=_check_name("algo", data.get("algo"), ALGORITHMS),
            policy=_check_name("policy", data.get("policy"), POLICIES),
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


def _check_name(what: str, value: Any, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{what} {value!r} is not known; choose one of {', '.join(options)}")
    return value


def _is_atari(env_id: str) -> bool:
    import envs

    return envs.is_atari_id(env_id)


# --------------------------------------------------------------------------- files and sections


def default_config_file(algo: str) -> Path:
    """``configs/<algo>.yaml`` of this installation."""
    _check_name("algorithm", algo, ALGORITHMS)
    return CONFIG_DIR / f"{algo}.yaml"


def load_yaml(path: Union[str, Path]) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a syntax error is a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {str(path)!r} is a directory; give a YAML file such as {CONFIG_DIR / 'ppo.yaml'}")
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not a text (UTF-8) YAML file: {error.reason} at byte {error.start}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {' '.join(str(error).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a YAML mapping at the top level")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``; nested dicts (policy_kwargs) merge key by key."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in _SCHEDULE_KEYS:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# A schedule written as a dict replaces the previous one whole, it is not merged into it.
_SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf", "noise", "flicker", "occlusion")


def _section_blocks(raw: dict[str, Any], name: str, policy: str, path: str) -> list[dict[str, Any]]:
    """The ``common`` and ``<policy>`` blocks of section ``name`` (checked), in merge order."""
    section = raw.get(name)
    if section is None:
        return []
    if not isinstance(section, dict):
        raise ValueError(f"section {name!r} of {path} must be a mapping with keys {', '.join(POLICY_SECTIONS)}")
    unknown = sorted(set(section) - set(POLICY_SECTIONS))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in section {name!r} of {path}; allowed: {', '.join(POLICY_SECTIONS)}"
        )
    blocks = []
    for block_name in ("common", policy):
        block = section.get(block_name) or {}
        if not isinstance(block, dict):
            raise ValueError(f"{name}.{block_name} in {path} must be a mapping of hyperparameters")
        blocks.append(block)
    return blocks


def _section_name_for(env_id: str, raw: dict[str, Any]) -> Optional[str]:
    """The per-env section of ``raw`` that applies to ``env_id`` (game name or exact env id)."""
    import envs

    if envs.is_atari_id(env_id):
        game = envs.normalize_game_id(env_id)
        for name in raw:
            if name not in SPECIAL_SECTIONS and envs.is_atari_id(name) and envs.normalize_game_id(name) == game:
                return name
        return None
    return env_id if env_id in raw else None


def check_sections(raw: dict[str, Any], path: str) -> None:
    """Every top-level section must be special, an Atari game or a known env id: catches typos."""
    import gymnasium as gym

    import envs

    for name in raw:
        if name in SPECIAL_SECTIONS or envs.is_atari_id(name) or name in gym.registry:
            continue
        raise ValueError(
            f"top-level section {name!r} of {path} is neither {', '.join(SPECIAL_SECTIONS)}, an Atari game "
            "(see `brims-rl list-envs`) nor a registered gymnasium env id"
        )


def select_hyperparams(
    raw: dict[str, Any], algo: str, policy: str, env_id: str, path: str = "config", quickstart: bool = False
) -> dict[str, Any]:
    """Merge the sections of a config file that apply to (policy, env), in resolution order."""
    check_sections(raw, path)
    base = "atari" if _is_atari(env_id) else "default"
    blocks = _section_blocks(raw, base, policy, path)
    specific = _section_name_for(env_id, raw)
    if base not in raw and specific is None:
        # Training on the algorithm's library defaults is never what a config file meant.
        kind = "every Atari game" if base == "atari" else "every non-Atari env"
        raise ValueError(
            f"config file {path} has no section for {env_id!r}: add a {base!r} section ({kind}) or an "
            f"{env_id!r} section"
        )
    if specific is not None:
        blocks += _section_blocks(raw, specific, policy, path)
    if quickstart:
        blocks.append(quickstart_settings(raw, path).get("hyperparams") or {})
    merged: dict[str, Any] = {}
    for block in blocks:
        merged = deep_merge(merged, block)
    return merged


def quickstart_settings(raw: dict[str, Any], path: str = "config") -> dict[str, Any]:
    """The ``quickstart`` section: ``{env, policy, hyperparams}`` for ``brims-rl train`` without ``--env``."""
    section = raw.get("quickstart") or {}
    if not isinstance(section, dict):
        raise ValueError(f"section 'quickstart' of {path} must be a mapping")
    unknown = sorted(set(section) - {"env", "policy", "hyperparams"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in section 'quickstart' of {path}; allowed: env, policy, hyperparams")
    return section


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"policy_kwargs.top_k=2"`` -> ``("policy_kwargs.top_k", 2)``; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected key=value (e.g. n_steps=64 or policy_kwargs.top_k=2)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value  # not YAML: keep the raw text, validation will judge it
    return key, parsed


def apply_overrides(hyperparams: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides; dotted keys reach into nested dicts (``policy_kwargs.top_k``)."""
    result = copy.deepcopy(hyperparams)
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        target = result
        for depth, part in enumerate(parts[:-1]):
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"--set {text!r}: {'.'.join(parts[: depth + 1])!r} is not a mapping")
            target = child
        target[parts[-1]] = value
    return result


# --------------------------------------------------------------------------- validation


def validate_hyperparams(hyperparams: dict[str, Any], algo: str, policy: str, env_id: str) -> dict[str, Any]:
    """Check every key and value; return the normalised hyperparameters.

    Raises:
        ValueError: an unknown key (the message lists the allowed ones) or a bad value.
    """
    import envs

    atari = _is_atari(env_id)
    allowed = allowed_keys(algo, policy, atari, minatar=envs.is_minatar_id(env_id))
    checked: dict[str, Any] = {}
    for key, value in hyperparams.items():
        if key not in allowed:
            if key in ENV_KEYS:
                raise ValueError(f"config key {key!r} applies to Atari games only, not to {env_id!r}")
            raise ValueError(
                f"unknown config key {key!r} for {algo}/{policy} on {env_id!r}; allowed keys: {', '.join(sorted(allowed))}"
            )
        checked[key] = allowed[key](key, value)
    if "policy_kwargs" in checked:
        checked["policy_kwargs"] = validate_policy_kwargs(checked["policy_kwargs"], policy)
    if checked.get("env_kwargs"):
        check_env_kwargs(env_id, checked["env_kwargs"])
    check_consistency(checked, algo)
    return checked


def check_env_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """Every key of ``env_kwargs`` must be an argument of the env's constructor."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    import envs  # noqa: F401  (registers the BrimsRL/ tasks)

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


def validate_policy_kwargs(policy_kwargs: dict[str, Any], policy: str) -> dict[str, Any]:
    """Check the keys of ``policy_kwargs`` (and ``core_kwargs``) and the values we convert."""
    allowed = POLICY_KWARGS[policy]
    for key, value in policy_kwargs.items():
        if key not in allowed:
            raise ValueError(
                f"unknown config key 'policy_kwargs.{key}' for the {policy} policy; "
                f"allowed policy_kwargs: {', '.join(sorted(allowed))}"
            )
    checked = dict(policy_kwargs)
    if "activation_fn" in checked:
        choice(*ACTIVATIONS)("policy_kwargs.activation_fn", checked["activation_fn"])
    if "critic_core" in checked:
        from brims_rl.policies import CRITIC_CORES

        choice(*CRITIC_CORES)("policy_kwargs.critic_core", checked["critic_core"])
    if "optimizer_class" in checked:
        choice(*OPTIMIZERS)("policy_kwargs.optimizer_class", checked["optimizer_class"])
    if "features_extractor_class" in checked:
        choice(*FEATURES_EXTRACTORS)("policy_kwargs.features_extractor_class", checked["features_extractor_class"])
    for key in ("optimizer_kwargs", "features_extractor_kwargs", "lstm_kwargs"):
        if key in checked:
            mapping(f"policy_kwargs.{key}", checked[key])
    for key in ("hidden_size", "lstm_hidden_size", "num_layers", "n_lstm_layers"):
        if key in checked:
            checked[key] = int_in(1)(f"policy_kwargs.{key}", checked[key])
    if "core_kwargs" in checked:
        core = mapping("policy_kwargs.core_kwargs", checked["core_kwargs"])
        core_allowed = brims_core_kwargs()
        for key in core:
            if key not in core_allowed:
                raise ValueError(
                    f"unknown config key 'policy_kwargs.core_kwargs.{key}'; allowed: {', '.join(core_allowed)}"
                )
    return checked


def convert_policy_kwargs(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Names written in YAML -> the classes SB3 wants (activation, optimizer)."""
    import torch
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    converted = copy.deepcopy(policy_kwargs)
    activations = dict(
        tanh=torch.nn.Tanh, relu=torch.nn.ReLU, elu=torch.nn.ELU, leaky_relu=torch.nn.LeakyReLU, gelu=torch.nn.GELU, silu=torch.nn.SiLU
    )
    optimizers = dict(
        Adam=torch.optim.Adam, AdamW=torch.optim.AdamW, RMSprop=torch.optim.RMSprop, RMSpropTFLike=RMSpropTFLike, SGD=torch.optim.SGD
    )
    if "activation_fn" in converted:
        converted["activation_fn"] = activations[converted["activation_fn"]]
    if "optimizer_class" in converted:
        converted["optimizer_class"] = optimizers[converted["optimizer_class"]]
    if "features_extractor_class" in converted:
        from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN

        from brims_rl.extractor import MinAtarCNN

        extractors = dict(NatureCNN=NatureCNN, MinAtarCNN=MinAtarCNN, FlattenExtractor=FlattenExtractor)
        converted["features_extractor_class"] = extractors[converted["features_extractor_class"]]
    return converted


# --------------------------------------------------------------------------- the entry point


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
    algo = _check_name("algorithm", algo, ALGORITHMS)
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
    policy = _check_name("policy", policy or "brims", POLICIES)
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
    import gymnasium as gym

    import envs

    if envs.is_atari_id(env_id) or env_id in gym.registry:
        return
    looks_atari = "noframeskip" in env_id.lower() or env_id.lower().startswith("ale/")
    if looks_atari:
        envs.normalize_game_id(env_id)  # raises its ValueError with close matches
    raise ValueError(
        f"unknown env {env_id!r}: not an Atari game and not a registered gymnasium id "
        "(run `brims-rl list-envs` for the Atari games and BrimsRL/ tasks)"
    )
