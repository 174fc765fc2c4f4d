"""``brims_rl.load``: open a model zip written by brims-rl's algorithms or by sb3-contrib's ``RecurrentPPO``.

It lives with the application because it must know the application's algorithms (the
classes of :data:`agents.registry.SAVED_ALGORITHMS`); ``brims_rl.load`` hands it on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import sb3_contrib
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.registry import SAVED_ALGORITHMS
from brims_rl.loading import NotABrimsModelError, read_model_data, saved_policy_class


def saved_algorithm_class(path: Union[str, Path]) -> type[BaseAlgorithm]:
    """The class that opens the zip at ``path`` (read from its data, no weights loaded).

    * zips written by brims-rl name their class (``brims_rl_algorithm``): ``agents.RecurrentPPO``,
      ``agents.RecurrentA2C``, or the SB3 ``PPO`` / ``A2C`` baselines of ``brims-rl train``;
    * zips of plain ``sb3_contrib.RecurrentPPO`` (a BRIMs or an LSTM policy) open with that class.

    Raises:
        FileNotFoundError: no file at ``path``.
        NotABrimsModelError: anything else (a plain SB3 zip names the SB3 class to use).
    """
    path = Path(path)
    data = read_model_data(path)
    name = data.get("brims_rl_algorithm")
    if name in SAVED_ALGORITHMS:
        return SAVED_ALGORITHMS[name]
    if name is not None:
        raise NotABrimsModelError(f"{str(path)!r} names algorithm {name!r}; known: {sorted(SAVED_ALGORITHMS)}")
    policy_class = saved_policy_class(data, path)
    recurrent = isinstance(policy_class, type) and issubclass(policy_class, RecurrentActorCriticPolicy)
    if recurrent and "clip_range" in data:
        return sb3_contrib.RecurrentPPO
    sb3_class = ("PPO" if "clip_range" in data else "A2C") if "gae_lambda" in data else "the class that saved it"
    raise NotABrimsModelError(
        f"{str(path)!r} is an SB3-style zip but not one brims-rl wrote (no 'brims_rl_algorithm' entry, "
        f"policy {getattr(policy_class, '__name__', policy_class)}); load it with {sb3_class}.load from stable_baselines3"
    )


def load(path: Union[str, Path], env: Any = None, device: str = "auto", **kwargs: Any) -> BaseAlgorithm:
    """Load a model saved by brims-rl's ``RecurrentPPO``, ``RecurrentA2C`` or PPO/A2C baselines,
    or by plain ``sb3_contrib.RecurrentPPO`` (with a BRIMs or an LSTM policy).

    Raises:
        FileNotFoundError: no file at ``path``.
        NotABrimsModelError: the file is not such a model zip.
    """
    return saved_algorithm_class(path).load(path, env=env, device=device, **kwargs)
