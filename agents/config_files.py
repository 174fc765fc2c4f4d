"""Config files: the YAML of hyperparameters, its sections, and ``--set`` overrides.

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
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import gymnasium as gym
import yaml

import envs
from agents.registry import ALGOS, POLICIES

POLICY_SECTIONS = ("common", *POLICIES)
# Top-level config sections that are not an env name.
SPECIAL_SECTIONS = ("atari", "default", "quickstart")

# The wheel ships the repository's configs/ as agents/configs/ (see pyproject.toml); a source
# checkout or an editable install reads configs/ next to agents/.
_PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
CONFIG_DIR = _PACKAGED_CONFIGS if _PACKAGED_CONFIGS.is_dir() else Path(__file__).resolve().parent.parent / "configs"


def check_name(what: str, value: Any, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``, else a one-line ValueError naming it and them."""
    if value not in options:
        raise ValueError(f"{what} {value!r} is not known; choose one of {', '.join(options)}")
    return value


def default_config_file(algo: str) -> Path:
    """``configs/<algo>.yaml`` of this installation."""
    check_name("algorithm", algo, tuple(ALGOS))
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
    if envs.is_atari_id(env_id):
        game = envs.normalize_game_id(env_id)
        for name in raw:
            if name not in SPECIAL_SECTIONS and envs.is_atari_id(name) and envs.normalize_game_id(name) == game:
                return name
        return None
    return env_id if env_id in raw else None


def check_sections(raw: dict[str, Any], path: str) -> None:
    """Every top-level section must be special, an Atari game or a known env id: catches typos."""
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
    base = "atari" if envs.is_atari_id(env_id) else "default"
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
