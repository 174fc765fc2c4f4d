"""Per-step traces of a BRIMs model's module activity over evaluation episodes.

``run_analysis`` plays episodes (with :func:`agents.episodes.play_episodes`) while an
:class:`~brims_rl.activations.ActivationRecorder` records the actor core at every step,
then writes everything aligned on one step axis to ``analysis.npz`` and to TensorBoard.

Keys of ``analysis.npz`` (``steps`` = vector-env steps played, ``n_envs`` envs, layer ``l``
with ``N_l`` modules; row ``t`` of every per-step array describes the same step):

* ``layer{l}_masks``: bool ``(steps, n_envs, N_l)``, the modules updated at step t.
* ``layer{l}_attention``: float32 ``(steps, n_envs, N_l, 3)``, input attention on the slots
  [null, bottom_up, top_down] (top_down is 0 in a layer without that slot).
* ``layer{l}_coactivation``: float64 ``(N_l, N_l)``, P(modules i and j active together)
  over all steps and envs (the diagonal is each module's active fraction).
* ``actions``: ``(steps, n_envs, *action_shape)``, the action chosen at step t.
* ``rewards``: float32 ``(steps, n_envs)``, the reward that action earned.
* ``dones``: bool ``(steps, n_envs)``, the episode ended with step t (on Atari with
  ``terminal_on_life_loss`` a lost life counts, as the policy's state is reset then).
* ``episode_start``: bool ``(steps, n_envs)``, the recurrent state was reset before step t
  (step 0, and every step after a done).
* ``episode_returns``, ``episode_lengths``: the finished episodes' raw returns and lengths,
  in the order they ended (as :class:`agents.episodes.EpisodeStats`).
* ``num_modules``, ``top_k``: int ``(L,)``; ``slots``: the slot names.

Envs keep playing until every env has played its share of episodes, so some steps at the
end may belong to episodes that are not counted in ``episode_returns``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv
from torch.utils.tensorboard import SummaryWriter

from agents.episodes import StepHook, play_episodes
from agents.events import EventSettings, StepObserver, write_events
from agents.run_folder import atomic_write
from brims_rl.activations import (
    SLOTS,
    ActivationRecorder,
    SeriesRuns,
    custom_scalars_layout,
    has_top_down,
    layer_scalars,
    layer_tag,
    step_statistics,
    summarize,
    write_usage_histogram,
)
from brims_rl.figures import activation_figure, coactivation_figure
from brims_rl.policies import BrimsPolicy
from brims_rl.utils import check_int

NPZ_NAME = "analysis.npz"
# Long traces are cut into heatmap images of this many steps (TensorBoard's step slider
# walks through them) so that every step keeps a column at least 2 pixels wide.
HEATMAP_STEPS = 256


def run_analysis(
    model: BaseAlgorithm,
    env: VecEnv,
    n_episodes: int,
    out_dir: Union[str, Path],
    deterministic: bool = True,
    max_steps: Optional[int] = None,
    events: Optional[EventSettings] = None,
) -> Path:
    """Play ``n_episodes`` episodes of ``model`` on ``env`` and write the module-activity traces.

    ``max_steps`` stops after that many vector steps even if episodes are unfinished (long
    Atari games); the trace then ends mid-episode.

    Writes ``out_dir/analysis.npz`` (keys in this module's docstring) and TensorBoard events
    into ``out_dir``: per step t (as the global step) the env-averaged scalars
    ``brims/layer{l}/module{i}/active_frac``, ``brims/layer{l}/attention/{slot}``,
    ``brims/layer{l}/switch_rate``, ``brims/layer{l}/usage_entropy`` and
    ``analysis/mean_reward`` (and the per-module and per-slot series runs of
    :class:`~brims_rl.activations.SeriesRuns` under ``out_dir/brims/``); per episode
    ``analysis/episode_return``; images ``brims/layer{l}/activation_heatmap`` (env 0 with its
    rewards, one image per 256 steps, global step = first step) and
    ``brims/layer{l}/coactivation``; histogram ``brims/layer{l}/activation_frequency``; the
    custom-scalars layout.

    Returns:
        The path of the ``.npz`` file.

    Raises:
        ValueError: the model's policy is not a BRIMs policy, ``n_episodes`` is not an
            integer >= 1, or ``out_dir`` is not a usable directory.
        OSError: ``out_dir`` cannot be written (read-only, full disk), naming the path.
    """
    policy = getattr(model, "policy", None)
    if not isinstance(policy, BrimsPolicy):
        raise ValueError(
            f"run_analysis needs a model with a BRIMs policy (CnnBrimsPolicy, MlpBrimsPolicy or "
            f"MultiInputBrimsPolicy), but its policy is {type(policy).__name__}"
        )
    check_int("n_episodes", n_episodes, 1)
    check_int("max_steps", max_steps, 1, allow_none=True)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir={str(out_dir)!r} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)

    observer = StepObserver() if events is not None else None
    trace = _play_and_record(model, env, n_episodes, deterministic, max_steps, observer)
    npz_path = _write_npz(out_dir, trace)
    _write_tensorboard(out_dir, trace)
    if events is not None:
        write_events(out_dir, trace, observer, events, env)
    return npz_path


def _play_and_record(
    model: BaseAlgorithm,
    env: VecEnv,
    n_episodes: int,
    deterministic: bool,
    max_steps: Optional[int],
    also_on_step: Optional[StepHook] = None,
) -> dict[str, Any]:
    """Play the episodes with a recorder attached (and ``also_on_step`` called after every
    step); return the host arrays of the trace."""
    recorder = ActivationRecorder()
    actions: list[np.ndarray] = []
    rewards: list[np.ndarray] = []
    dones: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    next_start = np.ones(env.num_envs, dtype=bool)

    def on_step(obs, step_actions, step_rewards, step_dones, infos) -> None:
        nonlocal next_start
        recorder.end_step(next_start)
        starts.append(next_start)
        actions.append(np.asarray(step_actions).copy())
        rewards.append(np.asarray(step_rewards, dtype=np.float32).copy())
        dones.append(np.asarray(step_dones, dtype=bool).copy())
        next_start = dones[-1]
        if also_on_step is not None:
            also_on_step(obs, step_actions, step_rewards, step_dones, infos)

    with model.policy.recording(recorder):
        stats = play_episodes(model, env, n_episodes, deterministic=deterministic, on_step=on_step, max_steps=max_steps)

    core = model.policy.lstm_actor
    masks = recorder.masks()
    attention = recorder.attention()
    episode_start = np.stack(starts)
    layers = []
    for mask, att in zip(masks, attention):
        steps = step_statistics(mask, att, episode_start)
        layers.append(
            {
                "masks": mask.cpu().numpy(),
                "attention": att.float().cpu().numpy(),
                "steps": {
                    "active_frac": steps.active_frac.cpu().numpy(),
                    "attention": steps.attention.cpu().numpy(),
                    "switch_rate": steps.switch_rate.cpu().numpy(),
                    "usage_entropy": steps.usage_entropy.cpu().numpy(),
                },
                "summary": summarize(steps, mask),
            }
        )
    return {
        "layers": layers,
        "actions": np.stack(actions),
        "rewards": np.stack(rewards),
        "dones": np.stack(dones),
        "episode_start": episode_start,
        "episode_returns": np.asarray(stats.returns, dtype=np.float64),
        "episode_lengths": np.asarray(stats.lengths, dtype=np.int64),
        "num_modules": np.asarray(core.num_modules, dtype=np.int64),
        "top_k": np.asarray(core.top_k, dtype=np.int64),
        "has_top_down": has_top_down(core),
    }


def _write_npz(out_dir: Path, trace: dict[str, Any]) -> Path:
    arrays: dict[str, np.ndarray] = {}
    for layer, data in enumerate(trace["layers"]):
        arrays[f"layer{layer}_masks"] = data["masks"]
        arrays[f"layer{layer}_attention"] = data["attention"]
        arrays[f"layer{layer}_coactivation"] = data["summary"].coactivation
    for key in ("actions", "rewards", "dones", "episode_start", "episode_returns", "episode_lengths", "num_modules", "top_k"):
        arrays[key] = trace[key]
    arrays["slots"] = np.asarray(SLOTS)
    path = out_dir / NPZ_NAME
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def _write_tensorboard(out_dir: Path, trace: dict[str, Any]) -> None:
    layers = trace["layers"]
    writer = SummaryWriter(log_dir=str(out_dir))
    series = SeriesRuns(out_dir, trace["has_top_down"])
    try:
        writer.add_custom_scalars(custom_scalars_layout([int(n) for n in trace["num_modules"]]))
        env0_starts = trace["episode_start"][:, 0]
        env0_rewards = trace["rewards"][:, 0]
        for layer, data in enumerate(layers):
            steps = data["steps"]
            for t in range(len(steps["active_frac"])):
                scalars = layer_scalars(
                    layer,
                    steps["active_frac"][t],
                    steps["attention"][t],
                    float(steps["switch_rate"][t]),
                    float(steps["usage_entropy"][t]),
                )
                for tag, value in scalars.items():
                    writer.add_scalar(tag, value, global_step=t)
                series.write(layer, steps["active_frac"][t], steps["attention"][t], t)
            summary = data["summary"]
            write_usage_histogram(writer, layer_tag(layer, "activation_frequency"), summary.usage_counts, 0)
            coactivation = coactivation_figure(
                summary.coactivation, title=f"layer {layer} · P(mi and mj updated at the same step)"
            )
            writer.add_image(layer_tag(layer, "coactivation"), coactivation, 0, dataformats="HWC")
            env0_mask = data["masks"][:, 0]
            for first in range(0, len(env0_mask), HEATMAP_STEPS):
                window = slice(first, first + HEATMAP_STEPS)
                heatmap = activation_figure(
                    env0_mask[window], env0_starts[window], env0_rewards[window], title=f"layer {layer} · env 0",
                    first_step=first, xlabel="evaluation step",
                )
                writer.add_image(layer_tag(layer, "activation_heatmap"), heatmap, first, dataformats="HWC")
        for t, reward in enumerate(trace["rewards"].mean(axis=1)):
            writer.add_scalar("analysis/mean_reward", float(reward), global_step=t)
        for episode, episode_return in enumerate(trace["episode_returns"]):
            writer.add_scalar("analysis/episode_return", float(episode_return), global_step=episode)
    finally:
        writer.close()
        series.close()
