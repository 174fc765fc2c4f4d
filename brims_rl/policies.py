"""Stable-Baselines3 recurrent actor-critic policies whose recurrent core is BRIMs.

They subclass sb3-contrib's ``RecurrentActorCriticPolicy``, so sb3-contrib's
``RecurrentPPO`` (and our ``agents.RecurrentPPO`` / ``agents.RecurrentA2C``) use them
like its LSTM policies: ``RecurrentPPO(CnnBrimsPolicy, env)``. The actor and critic heads
read the top BRIMs layer's output on both the acting and the training path.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule

from brims_rl.core import BRIMs
from brims_rl.optim import LR_SCALE, apply_lr_scales
from brims_rl.utils import check_core_kwargs, check_positive_number

CRITIC_CORES = ("shared", "separate", "none")
# BRIMs arguments the policy takes directly (the input size is the features' width).
CORE_ARGUMENTS = ("input_size", "hidden_size", "num_layers", "num_modules", "top_k", "cell", "top_down")
# sb3-contrib's LSTM options that the BRIMs options above replace (refused by name).
LSTM_ONLY_ARGUMENTS = ("lstm_hidden_size", "n_lstm_layers", "lstm_kwargs", "shared_lstm", "enable_critic_lstm")

# 6 modules of 44 units: as wide as sb3-contrib's default 256-unit LSTM, divisible by 6.
DEFAULT_HIDDEN_SIZE = 264


class BrimsPolicy(RecurrentActorCriticPolicy):
    """Recurrent actor-critic policy with a BRIMs core (MLP features by default).

    BRIMs options (everything else is ``RecurrentActorCriticPolicy``'s):
        hidden_size: state size of every BRIMs layer.
        num_layers, num_modules, top_k, cell, top_down: see :class:`brims_rl.BRIMs`.
        core_kwargs: any further ``BRIMs`` argument (attention sizes, dropout, ...), on top of
            the class's :attr:`core_defaults`.
        critic_core: where the value head reads from.
            ``"shared"`` (default): the actor's core output, and the value loss trains the
            core too (one core per step: half the cost of two; CleanRL's LSTM agents share
            likewise). ``"separate"``: a BRIMs core of its own (sb3-contrib's default for
            LSTMs). ``"none"``: a linear layer on the features, no memory.
            (sb3-contrib's ``shared_lstm`` / ``enable_critic_lstm`` are replaced by this.)
        core_lr_scale: factor on the learning rate of the BRIMs core(s) only (the features
            extractor and the heads keep the algorithm's rate, schedule included). At 1.0
            (default) the optimizer has one parameter group, as SB3's policies do.

    Shapes: the core is fed ``(T, n_seq, features_dim)`` and its state is
    ``(num_layers, n_seq, hidden_size)`` for h and c, exactly as sb3-contrib's LSTM.
    """

    #: ``BRIMs`` arguments this policy class sets unless ``core_kwargs`` gives them (the core's
    #: own defaults are made for a CNN's wide ReLU features; see :class:`MlpBrimsPolicy`).
    core_defaults: dict[str, Any] = {}

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *args: Any,
        hidden_size: int = DEFAULT_HIDDEN_SIZE,
        num_layers: int = 2,
        num_modules: Union[int, Sequence[int]] = 6,
        top_k: Union[int, Sequence[int]] = 4,
        cell: str = "lstm",
        top_down: str = "adjacent",
        core_kwargs: Optional[dict[str, Any]] = None,
        critic_core: str = "shared",
        core_lr_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        for replaced in LSTM_ONLY_ARGUMENTS:
            if replaced in kwargs:
                raise ValueError(
                    f"policy_kwargs {replaced!r} does not apply to a BRIMs policy: use hidden_size, "
                    f"num_layers, num_modules, top_k, cell, top_down, critic_core and core_kwargs"
                )
        if critic_core not in CRITIC_CORES:
            raise ValueError(f"critic_core={critic_core!r}: expected one of {CRITIC_CORES}")
        if critic_core == "shared" and kwargs.get("share_features_extractor") is False:
            raise ValueError(
                "critic_core='shared' needs share_features_extractor=True (one core reads one feature "
                "stream); use critic_core='separate' for separate feature extractors"
            )
        self.critic_core = critic_core
        self.core_lr_scale = check_positive_number("core_lr_scale", core_lr_scale)
        self.core_options = dict(
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_modules=num_modules,
            top_k=top_k,
            cell=cell,
            top_down=top_down,
            **{**self.core_defaults, **check_core_kwargs(core_kwargs, CORE_ARGUMENTS, "the policy")},
        )
        # Check the core's arguments before the parent builds anything, so a bad value
        # fails with BRIMs' own message, not deep inside SB3.
        BRIMs(1, **self.core_options)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            *args,
            lstm_hidden_size=hidden_size,
            n_lstm_layers=num_layers,
            shared_lstm=critic_core == "shared",
            enable_critic_lstm=critic_core == "separate",
            **kwargs,
        )
        self.lstm_actor = BRIMs(self.features_dim, **self.core_options)
        if self.lstm_critic is not None:
            self.lstm_critic = BRIMs(self.features_dim, **self.core_options)
        # The parent built its optimizer over the nn.LSTM it made; without a new one the
        # BRIMs weights would never be trained.
        self.optimizer = self.optimizer_class(self._parameter_groups(), lr=lr_schedule(1), **self.optimizer_kwargs)
        if self.core_lr_scale != 1.0:
            apply_lr_scales(self.optimizer)
        self.activation_recorder = None

    def compile_cores(self, **compile_kwargs: Any) -> None:
        """``torch.compile`` the BRIMs core(s) in place; ``compile_kwargs`` go to ``torch.compile``.

        For GPUs: there the eager core is bound by kernel launches (one step is about 80 small
        operations), and a compiled core trained Atari PPO 1.8x faster on an H100 (README,
        Performance). Each (steps, batch) shape compiles once, a minute or more the first time
        (rollout, minibatch, evaluation); nothing of it is saved with the model.
        """
        for core in self.brims_cores():
            core.compile(**{"dynamic": False, **compile_kwargs})

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """One group of every parameter, or (``core_lr_scale`` != 1) the cores' and the rest's."""
        if self.core_lr_scale == 1.0:
            return [{"params": list(self.parameters())}]
        in_cores = {id(parameter) for core in self.brims_cores() for parameter in core.parameters()}
        cores = [parameter for parameter in self.parameters() if id(parameter) in in_cores]
        rest = [parameter for parameter in self.parameters() if id(parameter) not in in_cores]
        return [{"params": cores, LR_SCALE: self.core_lr_scale}, {"params": rest}]

    def brims_cores(self) -> list[BRIMs]:
        """The actor core, and the critic's when ``critic_core="separate"``."""
        return [core for core in (self.lstm_actor, self.lstm_critic) if isinstance(core, BRIMs)]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        """What ``policy.save`` needs to rebuild this policy, the core's options included."""
        data = super()._get_constructor_parameters()
        options = dict(self.core_options)
        named = ("hidden_size", "num_layers", "num_modules", "top_k", "cell", "top_down")
        data.update({name: options.pop(name) for name in named})
        data.update(core_kwargs=options, critic_core=self.critic_core, core_lr_scale=self.core_lr_scale)
        for replaced in ("shared_lstm", "enable_critic_lstm", "lstm_hidden_size", "n_lstm_layers", "lstm_kwargs"):
            data.pop(replaced, None)
        return data

    def evaluate_actions(  # type: ignore[override]
        self, obs: torch.Tensor, actions: torch.Tensor, lstm_states: RNNStates, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values ``(n, 1)``, log-probabilities ``(n,)`` and entropies ``(n,)`` of ``actions``.

        With ``critic_core="shared"`` the value head reads the core's output WITH gradient
        (sb3-contrib's ``shared_lstm`` detaches it, so the value loss would never shape the
        memory); the other modes are sb3-contrib's own path.
        """
        if self.critic_core != "shared":
            return super().evaluate_actions(obs, actions, lstm_states, episode_starts)
        features = self.extract_features(obs)
        latent, _ = self._process_sequence(features, lstm_states.pi, episode_starts, self.lstm_actor)
        distribution = self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(latent))
        values = self.value_net(self.mlp_extractor.forward_critic(latent))
        return values, distribution.log_prob(actions), distribution.entropy()

    def predict_values(  # type: ignore[override]
        self, obs: torch.Tensor, lstm_states: tuple[torch.Tensor, torch.Tensor], episode_starts: torch.Tensor
    ) -> torch.Tensor:
        """Values ``(n, 1)`` (bootstrap at the end of a rollout); never recorded as an acting step."""
        with self.recording(None):
            return super().predict_values(obs, lstm_states, episode_starts)

    @contextmanager
    def recording(self, recorder: Optional[Any]) -> Iterator[None]:
        """Attach ``recorder`` (None: none) as ``activation_recorder`` for the block, then restore the previous one."""
        previous, self.activation_recorder = self.activation_recorder, recorder
        try:
            yield
        finally:
            self.activation_recorder = previous

    def _process_sequence(  # type: ignore[override]
        self,
        features: torch.Tensor,
        lstm_states: tuple[torch.Tensor, torch.Tensor],
        episode_starts: torch.Tensor,
        lstm: BRIMs,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run a core over ``n_seq`` sequences in one call, resets included.

        features: ``(n_seq * T, features_dim)``, sequence-major (as sb3-contrib lays it out);
        episode_starts: ``(n_seq * T,)``. Returns ``(n_seq * T, hidden_size)`` and the state.
        """
        n_seq = lstm_states[0].shape[1]
        sequence = features.reshape(n_seq, -1, lstm.input_size).transpose(0, 1)
        starts = episode_starts.reshape(n_seq, -1).transpose(0, 1)
        recorder = self.activation_recorder if lstm is self.lstm_actor else None
        if recorder is not None:
            out, states, info = lstm(sequence, lstm_states, episode_starts=starts, return_info=True)
            recorder.record(info)
        else:
            out, states = lstm(sequence, lstm_states, episode_starts=starts)
        return out.transpose(0, 1).reshape(-1, lstm.hidden_size), states


class MlpBrimsPolicy(BrimsPolicy):
    """BRIMs policy over flat observations (``FlattenExtractor``).

    Its core starts from ``nn.LSTM``-style uniform weights with no LayerNorm between layers
    (``weight_init="uniform"``, ``state_norm=False``): a few normalised observation features
    carry their signal through both layers without them, and with them the loop between two
    layers (bottom-up, then top-down back) amplified small weight steps along the sequence
    (README, "sb3-contrib's memory benchmark": with these it learns that task as the LSTM does).
    """

    core_defaults = dict(weight_init="uniform", state_norm=False)

    def __init__(self, *args: Any, features_extractor_class=FlattenExtractor, **kwargs: Any) -> None:
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class CnnBrimsPolicy(BrimsPolicy):
    """BRIMs policy over image observations (Nature CNN encoder per step)."""

    def __init__(self, *args: Any, features_extractor_class=NatureCNN, **kwargs: Any) -> None:
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputBrimsPolicy(BrimsPolicy):
    """BRIMs policy over dict observations (``CombinedExtractor``)."""

    def __init__(self, *args: Any, features_extractor_class=CombinedExtractor, **kwargs: Any) -> None:
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)
