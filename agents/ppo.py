"""Recurrent PPO (LSTM or BRIMs policies) with truncated-BPTT minibatches."""

from __future__ import annotations

from typing import Any, Optional

import sb3_contrib

from agents.recurrent_base import RecurrentOnPolicyMixin


class RecurrentPPO(RecurrentOnPolicyMixin, sb3_contrib.RecurrentPPO):
    """sb3-contrib's ``RecurrentPPO`` that also knows the BRIMs policies by name
    (``"CnnBrimsPolicy"``, ``"MlpBrimsPolicy"``, ``"MultiInputBrimsPolicy"``) and trains on
    fixed-length sequences.

    Args:
        sequence_length: steps per training sequence (truncated BPTT); each sequence starts
            from the recurrent state stored at its first step, so nothing is padded. Must
            divide ``n_steps``, and ``batch_size`` must be a multiple of it. The default 8
            truncates only the gradient: the state each chunk starts from was carried
            through the whole rollout, so memory reaches further back. Longer chunks (16-32)
            give longer credit assignment at a higher cost per update (the core runs that
            many strictly sequential steps per minibatch). None keeps sb3-contrib's buffer
            (whole-episode sequences, padded).
        refresh_states: before every pass over the rollout but the first, recompute the
            state each chunk starts from with the current weights (one forward pass over the
            rollout, no gradient); off keeps the states the policy had while acting.
        Everything else: as ``sb3_contrib.RecurrentPPO``.

    A model saved by this class loads with plain ``sb3_contrib.RecurrentPPO.load`` too. (The
    same name as sb3-contrib's class, which it extends: ``agents.RecurrentPPO`` is this one.)
    """

    algorithm_name = "RecurrentPPO"

    def __init__(
        self,
        policy: Any,
        env: Any,
        *args: Any,
        sequence_length: Optional[int] = 8,
        refresh_states: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, *args, sequence_length=sequence_length, refresh_states=refresh_states, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        # Checked here, at construction, not after the first rollout (the buffer's get()).
        if self.sequence_length is not None and self.batch_size is not None and self.batch_size % self.sequence_length:
            raise ValueError(
                f"batch_size={self.batch_size}: expected a multiple of sequence_length={self.sequence_length} "
                "(a minibatch holds whole sequences)"
            )
