"""TensorBoard logging of which BRIMs modules activate in which layer during training."""

from __future__ import annotations

from typing import Optional

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image, TensorBoardOutputFormat

from brims_rl.activations import (
    ActivationRecorder,
    SeriesRuns,
    custom_scalars_layout,
    dead_modules,
    has_top_down,
    layer_scalars,
    layer_tag,
    write_usage_histogram,
)
from brims_rl.figures import activation_figure, usage_figure
from brims_rl.policies import BrimsPolicy
from brims_rl.utils import check_int

# The per-module scalars would swamp SB3's console table; they go to TensorBoard, CSV and JSON.
_NOT_ON_CONSOLE = ("stdout", "log")
_TENSORBOARD_ONLY = ("stdout", "log", "json", "csv")


class ModuleActivationCallback(BaseCallback):
    """Log the BRIMs actor core's module activity to TensorBoard, once per ``log_interval`` rollouts.

    During a logged rollout an :class:`~brims_rl.activations.ActivationRecorder` is attached
    to ``model.policy.activation_recorder`` (and detached before the gradient updates, so only
    the acting passes are seen). Other rollouts run without it and cost nothing.

    Written per layer ``l`` (see the module docstring of :mod:`brims_rl.activations`):
    scalars ``brims/layer{l}/module{i}/active_frac``, ``brims/layer{l}/attention/{null,
    bottom_up,top_down}``, ``brims/layer{l}/switch_rate``, ``brims/layer{l}/usage_entropy``,
    ``brims/layer{l}/dead_modules`` (modules updated in less than 5% of the rollout's steps)
    (through SB3's logger, so they are dumped with the other training scalars); and, when
    the model logs to TensorBoard: the images ``brims/layer{l}/activation_heatmap`` (modules
    x steps of env ``heatmap_env`` over the rollout, with its rewards and episode starts)
    and ``brims/layer{l}/module_usage`` (modules x the rollouts logged so far, coloured by
    active fraction), the histogram ``brims/layer{l}/activation_frequency`` (one bucket per
    module), the per-module and per-slot series runs of
    :class:`~brims_rl.activations.SeriesRuns` under ``<run>/brims/`` and, once, a
    custom-scalars layout with one category per layer.

    Args:
        log_interval: record and log every this many rollouts (>= 1).
        heatmap_env: which env of the vector env the heatmap shows.
        verbose: 1 prints each layer's active fractions when logged.
    """

    def __init__(self, log_interval: int = 1, heatmap_env: int = 0, verbose: int = 0) -> None:
        check_int("log_interval", log_interval, 1)
        check_int("heatmap_env", heatmap_env, 0)
        super().__init__(verbose)
        self.log_interval = log_interval
        self.heatmap_env = heatmap_env
        self.recorder = ActivationRecorder()
        self._rollouts = 0
        self._recording = False
        self._next_starts: Optional[np.ndarray] = None
        self._rewards: list[float] = []
        # Per logged rollout: (env steps trained, per layer active fractions (N_l,)).
        self._usage: list[tuple[int, list[np.ndarray]]] = []
        self._series: Optional[SeriesRuns] = None
        self._layout_written = False

    def _init_callback(self) -> None:
        policy = self.model.policy
        if not isinstance(policy, BrimsPolicy):
            raise ValueError(
                f"ModuleActivationCallback needs a BRIMs policy (CnnBrimsPolicy, MlpBrimsPolicy or "
                f"MultiInputBrimsPolicy), but the model's policy is {type(policy).__name__}"
            )
        n_envs = self.training_env.num_envs
        if self.heatmap_env >= n_envs:
            raise ValueError(f"heatmap_env={self.heatmap_env}: the training env has {n_envs} envs (0..{n_envs - 1})")

    def _tensorboard_writer(self):
        for output in self.logger.output_formats:
            if isinstance(output, TensorBoardOutputFormat):
                return output.writer
        return None

    def _on_rollout_start(self) -> None:
        self._rollouts += 1
        self._recording = (self._rollouts - 1) % self.log_interval == 0
        if not self._recording:
            return
        self.recorder.reset()
        self._rewards = []
        self.model.policy.activation_recorder = self.recorder
        # The flags sb3-contrib feeds the core at this rollout's first step.
        starts = getattr(self.model, "_last_episode_starts", None)
        self._next_starts = None if starts is None else np.asarray(starts, dtype=bool).copy()

    def _on_step(self) -> bool:
        if self._recording:
            self.recorder.end_step(self._next_starts)
            dones = self.locals.get("dones")
            self._next_starts = None if dones is None else np.asarray(dones, dtype=bool)
            rewards = self.locals.get("rewards")
            if rewards is not None:
                self._rewards.append(float(np.asarray(rewards).reshape(-1)[self.heatmap_env]))
        return True

    def _on_rollout_end(self) -> None:
        if not self._recording:
            return
        self.model.policy.activation_recorder = None
        self._recording = False
        if self.recorder.num_steps == 0:
            return
        self._log()
        # Drop the references to the rollout's tensors until the next logged rollout.
        self.recorder.reset()

    def _on_training_end(self) -> None:
        # learn() may stop mid-rollout (a callback returning False): never leave the recorder on.
        self.model.policy.activation_recorder = None
        self._recording = False
        if self._series is not None:
            self._series.close()
            self._series = None

    def _log(self) -> None:
        stats = self.recorder.statistics()
        for layer, layer_stats in enumerate(stats):
            scalars = layer_scalars(
                layer, layer_stats.active_frac, layer_stats.attention, layer_stats.switch_rate, layer_stats.usage_entropy
            )
            scalars[layer_tag(layer, "dead_modules")] = float(dead_modules(layer_stats.active_frac))
            for tag, value in scalars.items():
                self.logger.record(tag, value, exclude=_NOT_ON_CONSOLE)
            if self.verbose >= 1:
                fractions = np.array2string(layer_stats.active_frac, precision=2)
                print(f"brims layer {layer}: active fractions {fractions}, switch rate {layer_stats.switch_rate:.3f}")

        writer = self._tensorboard_writer()
        if writer is None:
            return
        step = self.num_timesteps
        core = self.model.policy.lstm_actor
        if not self._layout_written:
            writer.add_custom_scalars(custom_scalars_layout([len(s.active_frac) for s in stats]))
            self._layout_written = True
        if self._series is None:
            self._series = SeriesRuns(writer.log_dir, has_top_down(core))
        self._usage.append((step, [s.active_frac for s in stats]))
        starts = self.recorder.episode_starts()
        env_starts = None if starts is None else starts[:, self.heatmap_env]
        masks = self.recorder.masks()
        rewards = np.asarray(self._rewards) if len(self._rewards) == masks[0].shape[0] else None
        for layer, (mask, layer_stats) in enumerate(zip(masks, stats)):
            self._series.write(layer, layer_stats.active_frac, layer_stats.attention, step)
            heatmap = activation_figure(
                mask[:, self.heatmap_env].cpu().numpy(), env_starts, rewards,
                title=f"layer {layer} · env {self.heatmap_env}",
                xlabel=f"step of the rollout that ended at {step:,} env steps",
            )
            self.logger.record(layer_tag(layer, "activation_heatmap"), Image(heatmap, "HWC"), exclude=_TENSORBOARD_ONLY)
            usage = usage_figure(
                np.array([logged for logged, _ in self._usage]),
                np.stack([fractions[layer] for _, fractions in self._usage]),
                title=f"layer {layer} · module usage (top-{core.top_k[layer]} of {core.num_modules[layer]})",
            )
            self.logger.record(layer_tag(layer, "module_usage"), Image(usage, "HWC"), exclude=_TENSORBOARD_ONLY)
            write_usage_histogram(writer, layer_tag(layer, "activation_frequency"), layer_stats.usage_counts, step)
        writer.flush()
        self._series.flush()


class TopKWarmup(BaseCallback):
    """Update every module of every layer for the first ``warmup_steps`` env steps, then each
    layer's configured ``top_k``.

    The switch happens at a rollout's start, so each PPO/A2C update re-evaluates its rollout
    with the selection that acted in it. A run resumed before ``warmup_steps`` finishes the
    warm-up; the model always saves (and loads with) its configured ``top_k``. Logs
    ``brims/dense_warmup`` (1 during the warm-up) with each rollout.

    Why: at initialisation the input attention is near uniform, so which modules a sparse layer
    leaves idle is arbitrary; a dense start lets every module learn from the input before they
    compete. Measured on Breakout PPO (README, learning results): 50k dense steps did not make
    the value head fit earlier over four seeds, so no config turns it on.

    Args:
        warmup_steps: env steps (over all envs, as ``total_timesteps``) of dense updates (>= 0).
    """

    def __init__(self, warmup_steps: int, verbose: int = 0) -> None:
        check_int("warmup_steps", warmup_steps, 0)
        super().__init__(verbose)
        self.warmup_steps = warmup_steps
        self._dense = False

    def _init_callback(self) -> None:
        if not isinstance(self.model.policy, BrimsPolicy):
            raise ValueError(f"TopKWarmup needs a BRIMs policy, but the model's policy is {type(self.model.policy).__name__}")

    def _set_dense(self, dense: bool) -> None:
        configured = self.model.policy.core_options["top_k"]
        for core in self.model.policy.brims_cores():
            core.set_top_k(list(core.num_modules) if dense else configured)
        self._dense = dense

    def _on_rollout_start(self) -> None:
        dense = self.model.num_timesteps < self.warmup_steps
        if dense != self._dense:
            self._set_dense(dense)
        self.logger.record("brims/dense_warmup", float(dense))

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self._dense:
            self._set_dense(False)
