"""What our recurrent algorithms share: policy names, the recurrent state carried through the
rollouts, and the fixed-length sequence buffer.

:class:`RecurrentOnPolicyMixin` goes in front of an SB3 on-policy algorithm:
``RecurrentPPO(RecurrentOnPolicyMixin, sb3_contrib.RecurrentPPO)`` and
``RecurrentA2C(RecurrentOnPolicyMixin, OnPolicyAlgorithm)``; each algorithm keeps its own
constructor and ``train``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import sb3_contrib
import torch
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.policies import BasePolicy

from agents.sequence_buffer import SequenceRolloutBuffer
from brims_rl.policies import CnnBrimsPolicy, MlpBrimsPolicy, MultiInputBrimsPolicy


class RecurrentOnPolicyMixin:
    """The recurrent plumbing of an on-policy algorithm whose policy is an sb3-contrib
    ``RecurrentActorCriticPolicy`` (LSTM or BRIMs core):

    * the policy names ``"CnnBrimsPolicy"``, ``"MlpBrimsPolicy"``, ``"MultiInputBrimsPolicy"``
      besides sb3-contrib's LSTM ones;
    * rollouts that carry the recurrent state from step to step and store it with every
      step (sb3-contrib's rollout loop);
    * when ``sequence_length`` is set, the :class:`SequenceRolloutBuffer` (truncated BPTT in
      fixed-length chunks, each starting from its stored state).

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
    # sb3-contrib's rollout loop acts, carries and stores the recurrent state, bootstraps
    # time limits and computes GAE: nothing in it is PPO's, but it is defined on its
    # RecurrentPPO. The same function serves every algorithm here (reused, not copied).
    collect_rollouts = sb3_contrib.RecurrentPPO.collect_rollouts

    def __init__(
        self, *args: Any, sequence_length: Optional[int] = None, refresh_states: bool = False, **kwargs: Any
    ) -> None:
        # Set before the parent's __init__, which calls _setup_model.
        self.sequence_length = sequence_length
        self.refresh_states = refresh_states
        self.brims_rl_algorithm = self.algorithm_name
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, RecurrentActorCriticPolicy):
            raise ValueError(
                f"{type(self).__name__} needs a recurrent policy (an sb3-contrib RecurrentActorCriticPolicy such as "
                f"CnnBrimsPolicy or CnnLstmPolicy), got {type(self.policy).__name__}"
            )
        core = self.policy.lstm_actor

        def zeros() -> torch.Tensor:
            return torch.zeros((core.num_layers, self.n_envs, core.hidden_size), device=self.device)

        # (h, c) of the actor's core and of the critic's, before the first step.
        self._last_lstm_states = RNNStates((zeros(), zeros()), (zeros(), zeros()))
        if self.sequence_length is None:
            return
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
        if self.refresh_states:
            self.rollout_buffer.state_refresher = self._refresh_stored_states

    def _excluded_save_params(self) -> list[str]:
        excluded = super()._excluded_save_params()
        return excluded if "_last_lstm_states" in excluded else [*excluded, "_last_lstm_states"]

    @torch.no_grad()
    def _refresh_stored_states(self, tensors: dict[str, torch.Tensor]) -> None:
        """Recompute the recurrent state at every chunk start with the current policy.

        tensors: the rollout's ``(n_steps, n_envs, ...)`` tensors (states ``(n_steps, n_envs,
        layers, hidden)``), updated in place. The core runs over each env's whole rollout from
        the state stored at step 0 (the state the policy really had), chunk by chunk, so the
        state entering chunk ``j`` is what the current weights carry there. Costs one
        forward pass over the rollout per refresh (no gradient).
        """
        policy = self.policy
        observations, starts = tensors["observations"], tensors["episode_starts"]
        n_steps, n_envs = starts.shape
        features = policy.extract_features(observations.reshape(n_steps * n_envs, *observations.shape[2:]))
        pi_features, vf_features = (features, features) if policy.share_features_extractor else features
        cores = [("pi", policy.lstm_actor, pi_features)]
        if policy.lstm_critic is not None:
            cores.append(("vf", policy.lstm_critic, vf_features))
        length = self.sequence_length
        for suffix, core, core_features in cores:
            core_features = core_features.reshape(n_steps, n_envs, -1)
            hidden, cell = tensors[f"hidden_{suffix}"], tensors[f"cell_{suffix}"]
            state = (hidden[0].transpose(0, 1).contiguous(), cell[0].transpose(0, 1).contiguous())
            for start in range(0, n_steps - length, length):
                chunk = slice(start, start + length)
                # _process_sequence takes sequence-major (n_envs * length) rows.
                chunk_features = core_features[chunk].transpose(0, 1).reshape(n_envs * length, -1)
                chunk_starts = starts[chunk].transpose(0, 1).reshape(-1)
                _, state = policy._process_sequence(chunk_features, state, chunk_starts, core)
                hidden[start + length] = state[0].transpose(0, 1)
                cell[start + length] = state[1].transpose(0, 1)
