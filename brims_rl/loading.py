"""``brims_rl.load``: open a model zip written by any of our algorithms."""

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


def saved_algorithm_name(path: Union[str, Path]) -> str:
    """Which of our algorithms wrote the zip at ``path`` (read from its data, no weights loaded)."""
    data = read_model_data(path)
    name = data.get("brims_rl_algorithm")
    if name in _algorithm_classes():
        return name
    if name is not None:
        raise NotABrimsModelError(f"{str(path)!r} names algorithm {name!r}; known: {sorted(_algorithm_classes())}")
    # Written by plain sb3-contrib RecurrentPPO: recurrent hidden-state settings, PPO clipping.
    if "clip_range" in data and "policy_class" in data and "lstm" in json.dumps(data["policy_class"]).lower():
        return "RecurrentPPO"
    raise NotABrimsModelError(
        f"{str(path)!r} is an SB3-style zip but not one brims-rl wrote (no 'brims_rl_algorithm' entry); "
        f"load it with the SB3 class that saved it"
    )


def load(path: Union[str, Path], env: Any = None, device: str = "auto", **kwargs: Any) -> BaseAlgorithm:
    """Load a model saved by ``RecurrentPPO``, ``RecurrentA2C`` or our PPO/A2C baselines.

    Raises:
        FileNotFoundError: no file at ``path``.
        NotABrimsModelError: the file is not a model zip of ours.
    """
    name = saved_algorithm_name(path)
    return _algorithm_classes()[name].load(path, env=env, device=device, **kwargs)
