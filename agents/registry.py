"""The algorithms and policies brims-rl trains: the one table that train, load and the config read.

As rl-zoo's ``ALGOS``: ``--algo`` names a row of :data:`ALGOS` (its class for recurrent
policies and its class for feed-forward ones), ``--policy`` a row of :data:`POLICIES`; the
SB3 policy name follows from the policy and the observation space (``CnnBrimsPolicy``,
``MlpLstmPolicy``, ``MultiInputPolicy``, ...). The config takes its allowed keys from the
constructors named here, and :func:`agents.loading.load` opens the zips of every class here.
"""

from __future__ import annotations

from dataclasses import dataclass

from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space

from agents.a2c import RecurrentA2C
from agents.ppo import RecurrentPPO
from brims_rl.policies import BrimsPolicy


@dataclass(frozen=True)
class Algorithm:
    """One ``--algo``: the class that trains the recurrent policies and the one for ``cnn``."""

    recurrent: type[BaseAlgorithm]
    feedforward: type[BaseAlgorithm]


@dataclass(frozen=True)
class Policy:
    """One ``--policy``.

    Attributes:
        suffix: the SB3 policy name is ``<Cnn|Mlp|MultiInput><suffix>``.
        recurrent: trained by the algorithm's recurrent class.
        base: the class whose constructor arguments ``policy_kwargs`` may set.
    """

    suffix: str
    recurrent: bool
    base: type[ActorCriticPolicy]


ALGOS: dict[str, Algorithm] = {
    "ppo": Algorithm(recurrent=RecurrentPPO, feedforward=PPO),
    "a2c": Algorithm(recurrent=RecurrentA2C, feedforward=A2C),
}
POLICIES: dict[str, Policy] = {
    "brims": Policy("BrimsPolicy", recurrent=True, base=BrimsPolicy),
    "lstm": Policy("LstmPolicy", recurrent=True, base=RecurrentActorCriticPolicy),
    "cnn": Policy("Policy", recurrent=False, base=ActorCriticPolicy),
}
# Class name -> class, for the name brims-rl saves in every zip (``brims_rl_algorithm``).
SAVED_ALGORITHMS: dict[str, type[BaseAlgorithm]] = {
    cls.__name__: cls for algorithm in ALGOS.values() for cls in (algorithm.recurrent, algorithm.feedforward)
}


def algorithm_class(algo: str, policy: str) -> type[BaseAlgorithm]:
    """``RecurrentPPO`` / ``RecurrentA2C`` for recurrent policies, SB3's ``PPO`` / ``A2C`` for cnn."""
    row = ALGOS[algo]
    return row.recurrent if POLICIES[policy].recurrent else row.feedforward


def policy_name(policy: str, observation_space: spaces.Space) -> str:
    """The SB3 policy name for a ``--policy`` on this observation space (``"CnnBrimsPolicy"``, ...)."""
    if isinstance(observation_space, spaces.Dict):
        prefix = "MultiInput"
    elif is_image_space(observation_space, check_channels=False):
        prefix = "Cnn"
    else:
        prefix = "Mlp"
    return prefix + POLICIES[policy].suffix
