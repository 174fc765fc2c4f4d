"""Recurrent A2C: advantage actor-critic with an LSTM or BRIMs policy.

Neither Stable-Baselines3 nor sb3-contrib has one. Like SB3's A2C: short rollouts (n_steps
5), ONE gradient step per rollout on the whole rollout, plain policy-gradient loss (no ratio,
no clipping), PyTorch's RMSprop (alpha 0.99, eps 1e-5). The recurrent part, shared with
:class:`agents.RecurrentPPO` through :class:`agents.recurrent_base.RecurrentOnPolicyMixin`:
rollouts carry the recurrent state, and every env's rollout is one sequence, started from
the state the policy had at its first step, with episode starts handled inside the core.

Why not SB2's TF-like RMSprop (``RMSpropTFLike``, rl-zoo's choice for feed-forward A2C on
Atari): its running average of squared gradients starts at ONE, so for the first ~1/(1-alpha)
* ln(1/grad^2) updates a parameter moves by about ``lr * grad`` instead of ``lr``. An actor
core whose only signal is the policy gradient (sb3-contrib's LSTM policies, or
``critic_core="separate"`` / ``"none"``) gets it through the action head's 0.01-gain
initialisation, gradients of 1e-4 to 1e-6: measured on CueMemory, the actor LSTM moved by
3e-6 in 20k steps and never learned. PyTorch's RMSprop starts the average at zero, so a
parameter steps on the learning rate's scale from the first update (unless its gradient is
below eps).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance

from agents.recurrent_base import RecurrentOnPolicyMixin


class RecurrentA2C(RecurrentOnPolicyMixin, OnPolicyAlgorithm):
    """A2C with a recurrent policy (``"CnnBrimsPolicy"``, ``"CnnLstmPolicy"``, ... or a class).

    Args:
        learning_rate, n_steps, gamma, gae_lambda, ent_coef, vf_coef, max_grad_norm:
            as SB3's ``A2C`` (gae_lambda 1.0 gives the classic n-step returns).
        rms_prop_eps: epsilon of the RMSprop (``torch.optim.RMSprop``, alpha 0.99), used
            unless ``policy_kwargs`` names another ``optimizer_class``.
        normalize_advantage: normalise advantages over the rollout (off, as in A2C).
        use_sde, sde_sample_freq, stats_window_size, tensorboard_log, policy_kwargs, verbose,
            seed, device: as SB3's ``A2C``.
    """

    algorithm_name = "RecurrentA2C"

    def __init__(
        self,
        policy: Any,
        env: Union[GymEnv, str],
        learning_rate: Union[float, Schedule] = 7e-4,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.01,
        vf_coef: float = 0.25,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        normalize_advantage: bool = False,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        stats_window_size: int = 100,
        tensorboard_log: Optional[str] = None,
        policy_kwargs: Optional[dict[str, Any]] = None,
        verbose: int = 0,
        seed: Optional[int] = None,
        device: Union[torch.device, str] = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        policy_kwargs = dict(policy_kwargs or {})
        if "optimizer_class" not in policy_kwargs:
            policy_kwargs["optimizer_class"] = torch.optim.RMSprop
            # The user's own optimizer_kwargs win over the RMSprop defaults.
            policy_kwargs["optimizer_kwargs"] = {
                "alpha": 0.99, "eps": rms_prop_eps, "weight_decay": 0.0, **policy_kwargs.get("optimizer_kwargs", {})
            }
        self.rms_prop_eps = rms_prop_eps
        self.normalize_advantage = normalize_advantage
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
            sequence_length=n_steps,  # one sequence per env and rollout
        )

    def train(self) -> None:
        """One gradient step on the whole rollout."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        for rollout_data in self.rollout_buffer.get(batch_size=None):
            actions = rollout_data.actions
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.long().flatten()
            values, log_prob, entropy = self.policy.evaluate_actions(
                rollout_data.observations, actions, rollout_data.lstm_states, rollout_data.episode_starts
            )
            values = values.flatten()
            advantages = rollout_data.advantages
            if self.normalize_advantage:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            policy_loss = -(advantages * log_prob).mean()
            value_loss = F.mse_loss(rollout_data.returns, values)
            entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
            loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        self._n_updates += 1
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", np.exp(self.policy.log_std.detach().cpu().numpy()).mean())

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "RecurrentA2C",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> "RecurrentA2C":
        return super().learn(total_timesteps, callback=callback, log_interval=log_interval, tb_log_name=tb_log_name,
                             reset_num_timesteps=reset_num_timesteps, progress_bar=progress_bar)
