"""A recurrent rollout buffer that serves fixed-length sequences (truncated BPTT).

sb3-contrib's ``RecurrentRolloutBuffer`` cuts each minibatch at env and episode
boundaries and pads the pieces, so a 256-sample minibatch of an 8 x 128 rollout holds
2-3 sequences of up to 128 steps: a recurrent core then runs 128 strictly sequential
steps at batch 2-3. This buffer instead cuts every env's rollout into chunks of
``sequence_length`` steps, each starting from the recurrent state the policy had at the
chunk's first step (stored during the rollout), and leaves episode starts inside a chunk
to the core (``episode_starts``). A minibatch of 256 samples with ``sequence_length=16``
is 16 sequences of 16 steps: no padding, 8x fewer sequential steps.

Samples come out chunk-major (all steps of chunk 0, then chunk 1, ...), the layout
sb3-contrib's ``_process_sequence`` expects, as ``RecurrentRolloutBufferSamples`` with
an all-true mask, so sb3-contrib's ``RecurrentPPO.train`` uses them unchanged.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples, RNNStates


class SequenceRolloutBuffer(RecurrentRolloutBuffer):
    """``RecurrentRolloutBuffer`` whose ``get`` yields shuffled fixed-length chunks.

    Args:
        sequence_length: steps per chunk; must divide ``buffer_size`` (the rollout's n_steps).
        Other arguments: as ``RecurrentRolloutBuffer``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_state_shape: tuple[int, int, int, int],
        device: torch.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        sequence_length: int = 16,
    ) -> None:
        if isinstance(observation_space, spaces.Dict):
            raise ValueError("SequenceRolloutBuffer takes array observations; dict observation spaces are not supported")
        if not isinstance(sequence_length, int) or sequence_length < 1 or buffer_size % sequence_length != 0:
            raise ValueError(
                f"sequence_length={sequence_length!r}: expected a positive int dividing n_steps={buffer_size}"
            )
        self.sequence_length = sequence_length
        # Called with the rollout's tensors before every pass over the rollout but the first
        # (see ``get``); the algorithm sets it to recompute the chunks' starting states.
        self.state_refresher: Optional[Callable[[dict[str, torch.Tensor]], None]] = None
        self._tensors: Optional[dict[str, torch.Tensor]] = None
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            hidden_state_shape,
            device=device,
            gae_lambda=gae_lambda,
            gamma=gamma,
            n_envs=n_envs,
        )

    def reset(self) -> None:
        super().reset()
        self._tensors = None

    @property
    def num_chunks(self) -> int:
        return (self.buffer_size // self.sequence_length) * self.n_envs

    def get(self, batch_size: Optional[int] = None) -> Iterator[RecurrentRolloutBufferSamples]:
        """Yield minibatches of ``batch_size`` samples (a multiple of ``sequence_length``);
        None yields the whole rollout as one minibatch."""
        assert self.full, "the rollout is not complete"
        total = self.buffer_size * self.n_envs
        batch_size = total if batch_size is None else batch_size
        if batch_size % self.sequence_length != 0:
            raise ValueError(
                f"batch_size={batch_size}: expected a multiple of sequence_length={self.sequence_length}"
            )
        if self._tensors is None:
            # First pass over this rollout: the states stored while acting are exact.
            self._tensors = self._rollout_tensors()
        elif self.state_refresher is not None:
            # Later passes: the policy has changed since the rollout, so the stored states no
            # longer match what it would carry; refresh them before cutting chunks again.
            self.state_refresher(self._tensors)
        tensors = self._tensors
        chunks_per_batch = max(1, batch_size // self.sequence_length)
        # numpy's global RNG (seeded by SB3's set_random_seed), moved to the device once per rollout
        order = torch.from_numpy(np.random.permutation(self.num_chunks)).to(self.device)
        for first in range(0, self.num_chunks, chunks_per_batch):
            yield self._chunk_samples(tensors, order[first : first + chunks_per_batch])

    def _rollout_tensors(self) -> dict[str, torch.Tensor]:
        """The rollout's arrays as tensors on the buffer's device, ``(n_steps, n_envs, ...)``
        (hidden states ``(n_steps, n_envs, layers, hidden)``), converted once per rollout, so
        minibatches are gathered on the device with no further host transfer."""
        arrays = {
            "observations": self.observations,
            "actions": self.actions,
            "old_values": self.values,
            "old_log_prob": self.log_probs,
            "advantages": self.advantages,
            "returns": self.returns,
            "episode_starts": self.episode_starts,
            "hidden_pi": self.hidden_states_pi.swapaxes(1, 2),
            "cell_pi": self.cell_states_pi.swapaxes(1, 2),
            "hidden_vf": self.hidden_states_vf.swapaxes(1, 2),
            "cell_vf": self.cell_states_vf.swapaxes(1, 2),
        }
        on_gpu = self.device.type == "cuda"
        tensors = {}
        for name, array in arrays.items():
            tensor = torch.as_tensor(np.ascontiguousarray(array))
            # Page-locked host memory lets the copy to the GPU run asynchronously.
            tensors[name] = tensor.pin_memory().to(self.device, non_blocking=True) if on_gpu else tensor
        return tensors

    def _chunk_samples(self, tensors: dict[str, torch.Tensor], chunks: torch.Tensor) -> RecurrentRolloutBufferSamples:
        """Gather chunks (numbered env-major: env * chunks_per_env + position) into a minibatch."""
        chunks_per_env = self.buffer_size // self.sequence_length
        envs = chunks // chunks_per_env
        starts = (chunks % chunks_per_env) * self.sequence_length
        steps = starts.unsqueeze(1) + torch.arange(self.sequence_length, device=self.device)  # (n_chunks, L)
        env_index = envs.unsqueeze(1).expand_as(steps)

        def flat(name: str) -> torch.Tensor:
            values = tensors[name][steps, env_index]  # (n_chunks, L, ...)
            return values.reshape(-1, *values.shape[2:])

        def first_step_state(name: str) -> torch.Tensor:
            return tensors[name][starts, envs].transpose(0, 1).contiguous()  # (layers, n_chunks, hidden)

        states = RNNStates(
            (first_step_state("hidden_pi"), first_step_state("cell_pi")),
            (first_step_state("hidden_vf"), first_step_state("cell_vf")),
        )
        episode_starts = flat("episode_starts")
        return RecurrentRolloutBufferSamples(
            observations=flat("observations"),
            actions=flat("actions"),
            old_values=flat("old_values"),
            old_log_prob=flat("old_log_prob"),
            advantages=flat("advantages"),
            returns=flat("returns"),
            lstm_states=states,
            episode_starts=episode_starts,
            mask=torch.ones_like(episode_starts),
        )
