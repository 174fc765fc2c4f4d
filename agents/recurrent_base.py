"""What our recurrent algorithms share: policy names and the fixed-length sequence buffer."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import sb3_contrib
from stable_baselines3.common.policies import BasePolicy

from agents.sequence_buffer import SequenceRolloutBuffer
from brims_rl.policies import CnnBrimsPolicy, MlpBrimsPolicy, MultiInputBrimsPolicy


class SequenceBufferAlgorithm(sb3_contrib.RecurrentPPO):
    """sb3-contrib's recurrent on-policy machinery (rollouts carrying the recurrent state,
    GAE) with our policy names and, when ``sequence_length`` is set, the
    :class:`SequenceRolloutBuffer` (truncated BPTT in fixed-length chunks).

    Subclasses set ``algorithm_name``; it is saved in the model zip so that
    :func:`brims_rl.load` knows which class wrote it.
    """

    algorithm_name: ClassVar[str]
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        **sb3_contrib.RecurrentPPO.policy_aliases,
        "MlpBrimsPolicy": MlpBrimsPolicy,
        "CnnBrimsPolicy": CnnBrimsPolicy,
        "MultiInputBrimsPolicy": MultiInputBrimsPolicy,
    }

    def __init__(self, *args: Any, sequence_length: Optional[int] = None, **kwargs: Any) -> None:
        # Set before the parent's __init__, which calls _setup_model.
        self.sequence_length = sequence_length
        self.brims_rl_algorithm = self.algorithm_name
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.sequence_length is None:
            return
        core = self.policy.lstm_actor
        self.rollout_buffer = SequenceRolloutBuffer(
            self.n_steps,
            self.observation_space,
            self.action_space,
            (self.n_steps, core.num_layers, self.n_envs, core.hidden_size),
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            sequence_length=self.sequence_length,
        )
        # Checked here, at construction, not after the first rollout (the buffer's get()).
        if self.batch_size is not None and self.batch_size % self.sequence_length != 0:
            raise ValueError(
                f"batch_size={self.batch_size}: expected a multiple of sequence_length={self.sequence_length} "
                "(a minibatch holds whole sequences)"
            )
