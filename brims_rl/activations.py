"""Recording which BRIMs modules are active, and the statistics and images built from it.

A :class:`ActivationRecorder` is attached to a policy (``policy.activation_recorder``);
the policy then hands it a :class:`~brims_rl.core.BrimsInfo` for every call of its actor
core. The recorder only keeps references to those device tensors (no host sync per step);
the statistics are computed once, on the device, when somebody asks for them.

Per layer ``l`` with ``N_l`` modules and ``k_l`` of them active per step:

* ``active_frac`` ``(N_l,)``: how often each module was active; sums to ``k_l``.
* ``attention`` ``(3,)``: mean input attention mass on the slots [null, bottom_up, top_down]
  (over steps, envs and modules); sums to 1.
* ``switch_rate``: fraction of consecutive step pairs (same env, same episode) whose active
  set differs.
* ``usage_entropy``: entropy (nats) of ``active_frac / k_l``; at most ``log(N_l)`` (every
  module used equally), ``log(k_l)`` when the same ``k_l`` modules are always chosen.
* ``coactivation`` ``(N_l, N_l)``: P(module i and module j active at the same step).

The TensorBoard tag names, the custom-scalars layout and the per-module series runs
(:class:`SeriesRuns`) are defined here too, so that the training callback and ``brims-rl
analyze`` write exactly the same tags; the figures are drawn by :mod:`brims_rl.figures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from brims_rl.core import BRIMs, BrimsInfo
from brims_rl.figures import DEAD_FRACTION

SLOTS = ("null", "bottom_up", "top_down")
# The per-module and per-slot series runs (SeriesRuns) go in this sub-folder of a run.
SERIES_DIR = "brims"

# Heatmap colours (RGB): active cells bright, inactive dark, episode starts red.
_ACTIVE = np.array([255, 214, 64], dtype=np.uint8)
_INACTIVE = np.array([28, 28, 40], dtype=np.uint8)
_GRID = np.array([0, 0, 0], dtype=np.uint8)
_EPISODE_START = np.array([230, 30, 30], dtype=np.uint8)


class ActivationRecorder:
    """Collects the actor core's masks and input attention, one entry per env step.

    The policy calls :meth:`record` with each :class:`BrimsInfo`; the owner (a callback or
    an episode loop) calls :meth:`end_step` once per env step, which keeps the FIRST record
    of that step: the acting call, which always comes before anything else that may run the
    core during the step (an evaluation callback's ``predict`` on another env, say). Such
    later calls are dropped, so every step contributes exactly one entry of the acting batch.

    Nothing is copied to the host here; tensors stay on the model's device.
    """

    def __init__(self) -> None:
        self._pending: Optional[BrimsInfo] = None
        self._masks: list[list[torch.Tensor]] = []
        self._attention: list[list[torch.Tensor]] = []
        self._episode_starts: list[Optional[np.ndarray]] = []

    def record(self, info: BrimsInfo) -> None:
        """Called by the policy for every actor-core call (``T`` steps, ``B`` envs)."""
        if self._pending is None:
            self._pending = info

    def end_step(self, episode_start: Optional[Union[np.ndarray, torch.Tensor]] = None) -> None:
        """Keep this env step's first record (the acting call).

        Args:
            episode_start: optional bool ``(B,)``: the envs whose state was reset before this
                step (a new episode begins). Used to draw episode boundaries and to leave
                episode changes out of the switch rate.
        """
        info, self._pending = self._pending, None
        if info is None:
            return
        if not self._masks:
            self._masks = [[] for _ in info.masks]
            self._attention = [[] for _ in info.masks]
        for layer, (mask, attention) in enumerate(zip(info.masks, info.input_attention)):
            self._masks[layer].append(mask.detach())
            self._attention[layer].append(attention.detach())
        if episode_start is not None:
            episode_start = torch.as_tensor(episode_start).detach().cpu().numpy().astype(bool).reshape(-1)
            # A record of T > 1 steps gets the flags on its first step.
            steps = info.masks[0].shape[0]
            flags = np.zeros((steps, episode_start.shape[0]), dtype=bool)
            flags[0] = episode_start
            self._episode_starts.append(flags)
        else:
            self._episode_starts.append(None)

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.__init__()

    @property
    def num_layers(self) -> int:
        return len(self._masks)

    @property
    def num_steps(self) -> int:
        """Env steps recorded (the time length of :meth:`masks`)."""
        return sum(m.shape[0] for m in self._masks[0]) if self._masks else 0

    def masks(self) -> list[torch.Tensor]:
        """Per layer, bool ``(steps, B, N_l)`` on the model's device."""
        return [torch.cat(m) for m in self._masks]

    def attention(self) -> list[torch.Tensor]:
        """Per layer, float ``(steps, B, N_l, 3)`` on the model's device."""
        return [torch.cat(a) for a in self._attention]

    def last_step(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The last committed step, copied to the host: per layer, bool masks ``(B, N_l)``
        and float attention ``(B, N_l, 3)`` (of the record's last time step)."""
        if not self._masks:
            raise ValueError("no activations recorded: the policy's actor core was not called while recording")
        masks = [layer[-1][-1].cpu().numpy() for layer in self._masks]
        attention = [layer[-1][-1].float().cpu().numpy() for layer in self._attention]
        return masks, attention

    def episode_starts(self) -> Optional[np.ndarray]:
        """Bool ``(steps, B)`` on the host, or None unless every step was given its flags."""
        if not self._episode_starts or any(flags is None for flags in self._episode_starts):
            return None
        return np.concatenate(self._episode_starts)

    def statistics(self) -> list["LayerStats"]:
        """Summary statistics of every layer over everything recorded (one host transfer per layer)."""
        if not self._masks:
            raise ValueError("no activations recorded: the policy's actor core was not called while recording")
        starts = self.episode_starts()
        return [
            summarize(step_statistics(mask, attention, starts), mask)
            for mask, attention in zip(self.masks(), self.attention())
        ]


@dataclass
class StepStats:
    """Per-step statistics of one layer, averaged over the ``B`` envs (tensors on device).

    active_frac ``(T, N)``, attention ``(T, 3)``, switches and pairs ``(T,)``: the number
    of envs whose active set changed since the previous step, and the number of envs for
    which that comparison is meaningful (0 at the first step and at episode starts).
    """

    active_frac: torch.Tensor
    attention: torch.Tensor
    switches: torch.Tensor
    pairs: torch.Tensor

    @property
    def switch_rate(self) -> torch.Tensor:
        """``(T,)``; NaN where no env has a previous step in the same episode."""
        return self.switches / self.pairs

    @property
    def usage_entropy(self) -> torch.Tensor:
        """``(T,)``: entropy of each step's env-averaged module usage."""
        return usage_entropy(self.active_frac)


@dataclass
class LayerStats:
    """Summary of one layer over a rollout or an analysis run (host numpy / floats)."""

    active_frac: np.ndarray  # (N,)
    attention: np.ndarray  # (3,)
    switch_rate: float  # NaN when there was no pair of consecutive steps
    usage_entropy: float
    usage_counts: np.ndarray  # (N,) int: (step, env) pairs in which each module was active
    coactivation: np.ndarray  # (N, N)


def usage_entropy(active_frac: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over the last axis of ``active_frac`` normalised to a distribution."""
    p = active_frac / active_frac.sum(-1, keepdim=True)
    return -(torch.special.xlogy(p, p)).sum(-1)


def step_statistics(
    mask: torch.Tensor, attention: torch.Tensor, episode_start: Optional[Union[np.ndarray, torch.Tensor]] = None
) -> StepStats:
    """Per-step statistics of one layer.

    Args:
        mask: bool ``(T, B, N)``.
        attention: float ``(T, B, N, 3)``.
        episode_start: optional bool ``(T, B)``; a step that starts an episode is not
            compared with the one before it.
    """
    changed = (mask[1:] != mask[:-1]).any(-1)
    comparable = torch.ones_like(changed)
    if episode_start is not None:
        comparable = ~torch.as_tensor(episode_start, dtype=torch.bool, device=mask.device)[1:]
    first = changed.new_zeros((1, mask.shape[1]), dtype=torch.float32)
    return StepStats(
        active_frac=mask.float().mean(1),
        attention=attention.float().mean((1, 2)),
        switches=torch.cat([first.sum(1), (changed & comparable).float().sum(1)]),
        pairs=torch.cat([first.sum(1), comparable.float().sum(1)]),
    )


def summarize(steps: StepStats, mask: torch.Tensor) -> LayerStats:
    """Reduce per-step statistics (and the raw mask, for counts and co-activation) to a summary."""
    flat = mask.reshape(-1, mask.shape[-1]).float()
    active_frac = steps.active_frac.mean(0)
    on_device = {
        "active_frac": active_frac,
        "attention": steps.attention.mean(0),
        "switch_rate": steps.switches.sum() / steps.pairs.sum(),
        "usage_entropy": usage_entropy(active_frac),
        "usage_counts": flat.sum(0),
        "coactivation": flat.T @ flat / flat.shape[0],
    }
    host = {name: value.cpu().numpy() for name, value in on_device.items()}
    return LayerStats(
        active_frac=host["active_frac"].astype(np.float64),
        attention=host["attention"].astype(np.float64),
        switch_rate=float(host["switch_rate"]),
        usage_entropy=float(host["usage_entropy"]),
        usage_counts=np.rint(host["usage_counts"]).astype(np.int64),
        coactivation=host["coactivation"].astype(np.float64),
    )


# --- TensorBoard tags --------------------------------------------------------------------


def module_tag(layer: int, module: int) -> str:
    return f"brims/layer{layer}/module{module}/active_frac"


def attention_tag(layer: int, slot: str) -> str:
    return f"brims/layer{layer}/attention/{slot}"


def layer_tag(layer: int, name: str) -> str:
    """``brims/layer{l}/{name}`` for switch_rate, usage_entropy, activation_heatmap, ..."""
    return f"brims/layer{layer}/{name}"


def has_top_down(core: BRIMs) -> list[bool]:
    """Per layer, whether it reads a top-down input (its attention has a live third slot)."""
    return [source is not None for source in core.top_down_source]


def layer_scalars(
    layer: int, active_frac: np.ndarray, attention: np.ndarray, switch_rate: float, entropy: float
) -> dict[str, float]:
    """The scalar tags of one layer and their values; a NaN switch rate is left out."""
    scalars = {module_tag(layer, i): float(v) for i, v in enumerate(active_frac)}
    scalars.update({attention_tag(layer, slot): float(v) for slot, v in zip(SLOTS, attention)})
    if not math.isnan(switch_rate):
        scalars[layer_tag(layer, "switch_rate")] = float(switch_rate)
    scalars[layer_tag(layer, "usage_entropy")] = float(entropy)
    return scalars


def series_tag(layer: int, name: str) -> str:
    """``brims/layer{l}/{name}``: the tag a per-module (``active_frac``) or per-slot
    (``attention``) series run holds (see :class:`SeriesRuns`)."""
    return layer_tag(layer, name)


def dead_modules(active_frac: np.ndarray, threshold: float = DEAD_FRACTION) -> int:
    """How many modules were updated in less than ``threshold`` of the (step, env) pairs."""
    return int((np.asarray(active_frac) < threshold).sum())


def custom_scalars_layout(num_modules: list[int]) -> dict:
    """TensorBoard custom-scalars layout: one category per layer ("BRIMs layer l") with three
    charts, so each layer fills one row: the modules' active fractions and the input
    attention slots (both read from the :class:`SeriesRuns` runs, one colour per module or
    slot), and the switch rate."""
    categories = {}
    for layer in range(len(num_modules)):
        categories[f"BRIMs layer {layer}"] = {
            f"layer {layer}: active fraction per module": ["Multiline", [f"^{series_tag(layer, 'active_frac')}$"]],
            f"layer {layer}: input attention per slot": ["Multiline", [f"^{series_tag(layer, 'attention')}$"]],
            f"layer {layer}: switch rate": ["Multiline", [f"^{layer_tag(layer, 'switch_rate')}$"]],
        }
    return categories


class SeriesRuns:
    """One TensorBoard run per module and per attention slot, next to the main run.

    TensorBoard colours lines by run, so tags of one run (``module0/active_frac`` ...
    ``module5/active_frac``) all get the same colour. Here each module and each slot is
    its own run under ``log_dir/brims/``: runs ``m0`` .. ``m{N-1}`` hold
    ``brims/layer{l}/active_frac`` and runs ``null``, ``bottom_up``, ``top_down`` hold
    ``brims/layer{l}/attention``, so a chart of one of these tags shows every module (or
    slot) of the layer in its own colour, named in the legend. A layer without a top-down
    input writes no ``top_down`` series (it would be a flat 0).

    Args:
        log_dir: the main run's folder.
        top_down: per layer, whether it has a top-down input (``BRIMs.top_down_source[l] is not None``).
    """

    def __init__(self, log_dir: Union[str, Path], top_down: Sequence[bool]) -> None:
        self.root = Path(log_dir) / SERIES_DIR
        self.top_down = list(top_down)
        self._writers: dict[str, Any] = {}

    def _writer(self, name: str):
        if name not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[name] = SummaryWriter(log_dir=str(self.root / name))
        return self._writers[name]

    def write(self, layer: int, active_frac: np.ndarray, attention: np.ndarray, step: int) -> None:
        """Write one point of layer ``layer``: ``active_frac`` ``(N_l,)``, ``attention`` ``(3,)``."""
        for module, value in enumerate(active_frac):
            self._writer(f"m{module}").add_scalar(series_tag(layer, "active_frac"), float(value), step)
        for slot, value in zip(SLOTS, attention):
            if slot != "top_down" or self.top_down[layer]:
                self._writer(slot).add_scalar(series_tag(layer, "attention"), float(value), step)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()


def write_usage_histogram(writer, tag: str, counts: np.ndarray, step: int) -> None:
    """Histogram over module indices, one bucket per module, height = activation count.

    Buckets are ``[i - 0.5, i + 0.5]``: centred on the module ids, all of width 1.
    TensorBoard drops empty buckets at either end and draws the first and last remaining
    ones from the histogram's ``min`` / ``max``, so those are set to the outer edges of the
    first and last used module (not the module ids themselves, which would halve them).

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``.
        counts: int ``(N,)`` activation counts.
    """
    counts = np.asarray(counts, dtype=np.float64)
    index = np.arange(len(counts), dtype=np.float64)
    used = np.flatnonzero(counts) if counts.any() else np.array([0, len(counts) - 1])
    writer.add_histogram_raw(
        tag,
        min=float(used[0]) - 0.5,
        max=float(used[-1]) + 0.5,
        num=float(counts.sum()),
        sum=float((counts * index).sum()),
        sum_squares=float((counts * index**2).sum()),
        bucket_limits=(index + 0.5).tolist(),
        bucket_counts=counts.tolist(),
        global_step=step,
    )


# --- Images --------------------------------------------------------------------------------


def activation_heatmap(
    mask: np.ndarray,
    episode_start: Optional[np.ndarray] = None,
    cell_height: int = 12,
    max_width: int = 1024,
) -> np.ndarray:
    """Modules x time image of one env's activations.

    Args:
        mask: bool ``(T, N)``.
        episode_start: optional bool ``(T,)``; those steps get a red mark in a band above
            the grid and a red line on their left edge.
        cell_height: pixels per module row.
        max_width: the step columns are widened (up to 16 px) while the image stays below this.

    Returns:
        uint8 ``(H, W, 3)`` RGB: row i is module i (top: module 0), column t is step t.
    """
    mask = np.asarray(mask, dtype=bool)
    steps, n = mask.shape
    cell_width = int(np.clip(max_width // max(steps, 1), 1, 16))
    cells = np.where(mask.T[..., None], _ACTIVE, _INACTIVE)  # (N, T, 3)
    if cell_height >= 4:
        # A dark line under each module row keeps neighbouring rows apart.
        cells = np.repeat(cells, cell_height - 1, axis=0)
        cells = np.concatenate([cells.reshape(n, cell_height - 1, steps, 3), np.broadcast_to(_GRID, (n, 1, steps, 3))], 1)
        cells = cells.reshape(n * cell_height, steps, 3)
    else:
        cells = np.repeat(cells, cell_height, axis=0)
    grid = np.repeat(cells, cell_width, axis=1)
    band = np.broadcast_to(_GRID, (max(cell_height // 2, 3), grid.shape[1], 3)).copy()
    if episode_start is not None:
        starts = np.flatnonzero(np.asarray(episode_start, dtype=bool))
        for t in starts:
            band[:, t * cell_width : (t + 1) * cell_width] = _EPISODE_START
            if cell_width > 1:
                grid[:, t * cell_width] = _EPISODE_START
    return np.ascontiguousarray(np.concatenate([band, grid], axis=0))


def coactivation_image(coactivation: np.ndarray, cell: int = 24) -> np.ndarray:
    """``N x N`` co-activation matrix as a grey image (white = always together, black = never).

    Returns uint8 ``(N * cell, N * cell, 3)``; row i / column j is module i / j.
    """
    level = np.clip(np.rint(np.asarray(coactivation, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    image = np.repeat(np.repeat(level, cell, axis=0), cell, axis=1)
    return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2))
