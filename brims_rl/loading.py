"""``brims_rl.load``: open a model zip written by our algorithms or by sb3-contrib's ``RecurrentPPO``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Union

from stable_baselines3.common.base_class import BaseAlgorithm


class NotABrimsModelError(ValueError):
    """The file is not a model saved by brims-rl (or by SB3 / sb3-contrib)."""


def _algorithm_classes() -> dict[str, type[BaseAlgorithm]]:
    # Imported here: agents depends on brims_rl, not the other way round.
    from stable_baselines3 import A2C, PPO

    from agents import RecurrentA2C, RecurrentPPO

    return {"RecurrentPPO": RecurrentPPO, "RecurrentA2C": RecurrentA2C, "PPO": PPO, "A2C": A2C}


def read_model_data(path: Union[str, Path]) -> dict[str, Any]:
    """The JSON ``data`` entry of an SB3 model zip (hyperparameters, ``num_timesteps``, ...), no weights loaded.

    Raises:
        FileNotFoundError: no file at ``path``.
        NotABrimsModelError: not a zip, or a zip without SB3's ``data`` entry (e.g. half written).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {str(path)!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NotABrimsModelError(
            f"{str(path)!r} is not a brims-rl model: expected a zip written by model.save() "
            f"(with a 'data' entry), got {type(error).__name__}: {error}"
        ) from None


def _policy_class(data: dict[str, Any], path: Path) -> type:
    """The policy class stored in a zip's data (unpickled as SB3's own ``load`` does)."""
    import base64

    import cloudpickle

    entry = data.get("policy_class")
    if not isinstance(entry, dict) or ":serialized:" not in entry:
        raise NotABrimsModelError(f"{str(path)!r} is not a brims-rl model: its data names no policy class")
    try:
        return cloudpickle.loads(base64.b64decode(entry[":serialized:"].encode()))
    except Exception as error:  # a missing module, a renamed class, a mangled entry
        raise NotABrimsModelError(
            f"{str(path)!r}: its policy class cannot be loaded here ({type(error).__name__}: {error})"
        ) from None


def saved_algorithm_class(path: Union[str, Path]) -> type[BaseAlgorithm]:
    """The class that opens the zip at ``path`` (read from its data, no weights loaded).

    * zips written by brims-rl name their class (``brims_rl_algorithm``): ``agents.RecurrentPPO``,
      ``agents.RecurrentA2C``, or the SB3 ``PPO`` / ``A2C`` baselines of ``brims-rl train``;
    * zips of plain ``sb3_contrib.RecurrentPPO`` (a BRIMs or an LSTM policy) open with that class.

    Raises:
        NotABrimsModelError: anything else (a plain SB3 zip names the SB3 class to use).
    """
    import sb3_contrib
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    path = Path(path)
    data = read_model_data(path)
    name = data.get("brims_rl_algorithm")
    classes = _algorithm_classes()
    if name in classes:
        return classes[name]
    if name is not None:
        raise NotABrimsModelError(f"{str(path)!r} names algorithm {name!r}; known: {sorted(classes)}")
    policy_class = _policy_class(data, path)
    recurrent = isinstance(policy_class, type) and issubclass(policy_class, RecurrentActorCriticPolicy)
    if recurrent and "clip_range" in data:
        return sb3_contrib.RecurrentPPO
    sb3_class = ("PPO" if "clip_range" in data else "A2C") if "gae_lambda" in data else "the class that saved it"
    raise NotABrimsModelError(
        f"{str(path)!r} is an SB3-style zip but not one brims-rl wrote (no 'brims_rl_algorithm' entry, "
        f"policy {getattr(policy_class, '__name__', policy_class)}); load it with {sb3_class}.load from stable_baselines3"
    )


def saved_algorithm_name(path: Union[str, Path]) -> str:
    """The name of :func:`saved_algorithm_class` (``"RecurrentPPO"`` for sb3-contrib's too)."""
    return saved_algorithm_class(path).__name__


def load(path: Union[str, Path], env: Any = None, device: str = "auto", **kwargs: Any) -> BaseAlgorithm:
    """Load a model saved by brims-rl's ``RecurrentPPO``, ``RecurrentA2C`` or PPO/A2C baselines,
    or by plain ``sb3_contrib.RecurrentPPO`` (with a BRIMs or an LSTM policy).

    Raises:
        FileNotFoundError: no file at ``path``.
        NotABrimsModelError: the file is not such a model zip.
    """
    return saved_algorithm_class(path).load(path, env=env, device=device, **kwargs)
