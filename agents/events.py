"""Event-aligned averages of BRIMs module activity: what each layer does around game events.

``brims-rl analyze RUN --events`` plays episodes (see :mod:`agents.analyze`), finds the steps
where something happens, and averages the ``2K + 1`` steps around every occurrence: per
layer, each module's active fraction, the switch rate and the input attention shares
[null, bottom_up, top_down]. Step ``t`` is the step whose observation the policy acted on
(row ``t`` of ``analysis.npz``); event kinds, per env:

* ``reward``: the action of step t earned a non-zero reward (clipped on Atari: a point won
  or lost);
* ``life_lost``: ``info["lives"]`` fell at step t (Atari; the game over included);
* ``episode_start``: the recurrent state was reset before step t (step 0 included);
* ``surprise``: the observation of step t differs from that of step t - 1 (same episode) by
  more than a threshold: the mean absolute difference of the newest frame (of the whole
  observation without a frame stack), in grey levels on Atari. The threshold defaults to
  mean + 3 std of that difference over all recorded step pairs, and is written out;
* ``perturbation``: the first observation of a burst (``--perturb``, see
  :func:`envs.robustness.apply_burst`): episode step == ``at``.

Windows are cut from one env's trace and may reach into the neighbouring episode (an
``episode_start`` window shows the end of the previous one); offsets outside the trace are
missing (NaN) and each offset's average counts only the occurrences that have it. The 95%
band is mean +/- 1.96 standard errors over occurrences (``n`` per offset).

Outputs in the analysis folder: ``events.npz`` (keys below), ``events.csv`` (one row per
event kind, layer, quantity, index and offset), ``events_<kind>.png`` (one figure per kind
with at least one occurrence) and the same figures in TensorBoard as ``events/<kind>``.

Keys of ``events.npz`` (``W = 2K + 1`` offsets, ``N_l`` modules of layer ``l``):
``offsets`` int ``(W,)``; ``surprise_threshold`` float; ``kinds`` str; per kind
``{kind}_steps`` int ``(E, 2)`` the (step, env) of each occurrence; ``frame_change`` float
``(T, B)`` the surprise measure per step (NaN at episode starts); ``perturb_length`` (0: no burst); per kind and layer
``{kind}_layer{l}_{quantity}_{mean|half|n}`` with quantity ``active`` ``(W, N_l)``,
``switch`` ``(W,)`` and ``attention`` ``(W, 3)``: the mean, the 95% half-width and the
number of occurrences averaged.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from agents.ram_info import find_ram_recorder, information_figure, module_information
from agents.run_folder import atomic_write
from envs.robustness import BURST_DEFAULTS, check_burst

EVENT_KINDS = ("reward", "life_lost", "episode_start", "surprise", "perturbation")
# Kinds found in every trace; ``perturbation`` only exists with a burst.
PLAYED_KINDS = EVENT_KINDS[:4]
QUANTITIES = ("active", "switch", "attention")
NPZ_NAME = "events.npz"
CSV_NAME = "events.csv"
DEFAULT_WINDOW = 20
SURPRISE_STDS = 3.0
Z_95 = 1.959964
_SLOT_LABELS = ("null", "bottom-up", "top-down")
_LABELS = {
    "reward": "reward received",
    "life_lost": "life lost",
    "episode_start": "episode start (state reset)",
    "surprise": "surprise (large frame change)",
    "perturbation": "perturbation burst onset",
}


@dataclass(frozen=True)
class EventSettings:
    """What to average: the event kinds, ``window`` (K) steps each side, the surprise
    threshold (None: mean + 3 std of the frame differences) and, with a burst, its first
    episode step ``perturb_at`` and ``perturb_length``."""

    kinds: tuple[str, ...] = PLAYED_KINDS
    window: int = DEFAULT_WINDOW
    surprise_threshold: Optional[float] = None
    perturb_at: Optional[int] = None
    perturb_length: Optional[int] = None


def parse_event_kinds(text: str) -> tuple[str, ...]:
    """``"all"`` or comma-separated kinds; raises ValueError naming an unknown kind."""
    if text.strip() == "all":
        return PLAYED_KINDS
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    for kind in kinds:
        if kind not in EVENT_KINDS:
            raise ValueError(f"event kind {kind!r} is unknown: choose from all, {', '.join(EVENT_KINDS)}")
    if not kinds:
        raise ValueError(f"--events {text!r} names no event kind: choose from all, {', '.join(EVENT_KINDS)}")
    return tuple(dict.fromkeys(kinds))


def parse_int(name: str, text: Any, low: int) -> int:
    """An integer option given as text, >= ``low``; raises ValueError in one line."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {text!r} is invalid: it must be an integer >= {low}") from None
    if value < low:
        raise ValueError(f"{name} {value} is invalid: it must be an integer >= {low}")
    return value


class StepObserver:
    """Step hook for :func:`agents.episodes.play_episodes`: per step and env, the observation
    change since the previous step of the same episode (NaN at episode starts), whether a
    life was lost, and the episode step."""

    def __init__(self) -> None:
        self._previous: Optional[np.ndarray] = None
        self._lives: Optional[np.ndarray] = None
        self._episode_step: Optional[np.ndarray] = None
        self._starts: Optional[np.ndarray] = None
        self.change: list[np.ndarray] = []
        self.life_lost: list[np.ndarray] = []
        self.episode_step: list[np.ndarray] = []

    @staticmethod
    def _newest(obs: Any) -> np.ndarray:
        """float64 ``(B, D)``: the newest frame of a uint8 frame stack, else the whole observation."""
        if isinstance(obs, dict):
            return np.concatenate([StepObserver._newest(value) for value in obs.values()], axis=1)
        obs = np.asarray(obs)
        if obs.ndim == 4 and obs.dtype == np.uint8:
            obs = obs[:, -1]
        return obs.reshape(len(obs), -1).astype(np.float64)

    def __call__(self, obs, actions, rewards, dones, infos) -> None:
        frame = self._newest(obs)
        n_envs = len(frame)
        starts = np.ones(n_envs, dtype=bool) if self._starts is None else self._starts
        change = np.full(n_envs, np.nan)
        if self._previous is not None:
            same = ~starts
            change[same] = np.abs(frame[same] - self._previous[same]).mean(axis=1)
        self.change.append(change)
        steps = np.zeros(n_envs, dtype=np.int64) if self._episode_step is None else self._episode_step + 1
        steps[starts] = 0
        self.episode_step.append(steps)
        lives = np.array([info.get("lives", -1) for info in infos], dtype=np.int64)
        lost = np.zeros(n_envs, dtype=bool)
        if self._lives is not None:
            lost = (lives < self._lives) & (lives >= 0)
        self.life_lost.append(lost)
        self._previous, self._lives, self._episode_step = frame, lives, steps
        self._starts = np.asarray(dones, dtype=bool).copy()


def find_events(
    kinds: tuple[str, ...],
    rewards: np.ndarray,
    episode_start: np.ndarray,
    change: np.ndarray,
    life_lost: np.ndarray,
    episode_step: np.ndarray,
    surprise_threshold: float,
    perturb_at: Optional[int] = None,
) -> dict[str, np.ndarray]:
    """Per kind, int ``(E, 2)``: the (step, env) of each occurrence, ordered by step then env.

    All inputs are ``(T, B)``; ``change`` is NaN where no previous step of the episode exists.
    """
    flags = {
        "reward": rewards != 0,
        "life_lost": life_lost,
        "episode_start": episode_start,
        "surprise": np.nan_to_num(change, nan=-np.inf) > surprise_threshold,
        "perturbation": episode_step == perturb_at if perturb_at is not None else np.zeros_like(episode_start),
    }
    return {kind: np.argwhere(np.asarray(flags[kind], dtype=bool)).astype(np.int64).reshape(-1, 2) for kind in kinds}


def default_surprise_threshold(change: np.ndarray) -> float:
    """mean + 3 std of the finite frame differences (inf when there are none)."""
    finite = change[np.isfinite(change)]
    return float(finite.mean() + SURPRISE_STDS * finite.std()) if finite.size else math.inf


def layer_step_values(masks: np.ndarray, attention: np.ndarray, episode_start: np.ndarray) -> dict[str, np.ndarray]:
    """Per step and env: ``active`` ``(T, B, N)`` (0/1), ``switch`` ``(T, B)`` (1 if the active
    set changed since the previous step of the episode, NaN at episode starts and step 0) and
    ``attention`` ``(T, B, 3)`` (averaged over modules)."""
    switch = np.full(episode_start.shape, np.nan)
    switch[1:] = (masks[1:] != masks[:-1]).any(-1)
    switch[episode_start] = np.nan
    return {"active": masks.astype(np.float64), "switch": switch, "attention": attention.astype(np.float64).mean(2)}


def windows(values: np.ndarray, occurrences: np.ndarray, window: int) -> np.ndarray:
    """``values`` ``(T, B, ...)`` cut around each (step, env): ``(E, 2K + 1, ...)``, NaN outside the trace."""
    steps = values.shape[0]
    offsets = np.arange(-window, window + 1)
    out = np.full((len(occurrences), len(offsets), *values.shape[2:]), np.nan)
    for row, (t, env) in enumerate(occurrences.tolist()):
        rows = t + offsets
        inside = (rows >= 0) & (rows < steps)
        out[row, inside] = values[rows[inside], env]
    return out


def average(cut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, 95% half-width (1.96 standard errors; NaN with fewer than 2) and count over axis 0, NaN ignored."""
    n = np.isfinite(cut).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(cut, 0)
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        squares = np.nansum((cut - mean) ** 2, 0)
        std = np.sqrt(squares / np.maximum(n - 1, 1))
        half = np.where(n > 1, Z_95 * std / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, half, n


def event_averages(trace: dict[str, Any], observer: StepObserver, settings: EventSettings) -> dict[str, np.ndarray]:
    """The ``events.npz`` arrays (see the module docstring) from an analysis trace."""
    change = np.stack(observer.change)
    threshold = settings.surprise_threshold
    if threshold is None:
        threshold = default_surprise_threshold(change)
    kinds = settings.kinds
    if settings.perturb_at is not None and "perturbation" not in kinds:
        kinds = kinds + ("perturbation",)
    occurrences = find_events(
        kinds, trace["rewards"], trace["episode_start"], change, np.stack(observer.life_lost),
        np.stack(observer.episode_step), threshold, settings.perturb_at,
    )
    arrays: dict[str, np.ndarray] = {
        "offsets": np.arange(-settings.window, settings.window + 1),
        "surprise_threshold": np.asarray(threshold, dtype=np.float64),
        "frame_change": change,
        "kinds": np.asarray(kinds),
        "num_layers": np.asarray(len(trace["layers"])),
        "perturb_length": np.asarray(settings.perturb_length or 0),
    }
    per_layer = [layer_step_values(data["masks"], data["attention"], trace["episode_start"]) for data in trace["layers"]]
    for kind, found in occurrences.items():
        arrays[f"{kind}_steps"] = found
        for layer, values in enumerate(per_layer):
            for quantity in QUANTITIES:
                mean, half, n = average(windows(values[quantity], found, settings.window))
                for suffix, array in (("mean", mean), ("half", half), ("n", n)):
                    arrays[f"{kind}_layer{layer}_{quantity}_{suffix}"] = array
    return arrays


def write_events(
    out_dir: Path, trace: dict[str, Any], observer: StepObserver, settings: EventSettings, env: Optional[Any] = None
) -> Path:
    """Write ``events.npz``, ``events.csv``, the figures and their TensorBoard copies; returns the npz path.

    When ``env`` holds a :class:`agents.ram_info.RamRecorder`, also the modules x RAM-variables
    mutual information: npz keys ``ram_information`` ``(sum N_l, V)`` (bits), ``ram_variables``,
    ``ram_values`` ``(T, B, V)``, and the figure ``ram_information.png`` / ``events/ram_information``.
    """
    arrays = event_averages(trace, observer, settings)
    recorder = find_ram_recorder(env) if env is not None else None
    if recorder is not None:
        ram = recorder.values(len(trace["episode_start"]))
        arrays["ram_values"] = ram
        arrays["ram_variables"] = np.asarray(recorder.names)
        arrays["ram_game"] = np.asarray(recorder.game)
        arrays["ram_information"] = module_information([layer["masks"] for layer in trace["layers"]], ram)
        arrays["num_modules"] = np.asarray([layer["masks"].shape[-1] for layer in trace["layers"]])
    path = out_dir / NPZ_NAME
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    _write_csv(out_dir / CSV_NAME, arrays)
    _write_figures(out_dir, arrays)
    return path


def _rows(arrays: dict[str, np.ndarray]):
    """CSV rows: kind, layer, quantity, index (module or slot), offset, mean, lo95, hi95, n."""
    offsets = arrays["offsets"].tolist()
    for kind in arrays["kinds"].tolist():
        for layer in range(int(arrays["num_layers"])):
            for quantity in QUANTITIES:
                key = f"{kind}_layer{layer}_{quantity}"
                mean, half, n = (arrays[f"{key}_{suffix}"] for suffix in ("mean", "half", "n"))
                columns = [(None, mean, half, n)] if mean.ndim == 1 else [
                    (_SLOT_LABELS[i] if quantity == "attention" else f"module{i}", mean[:, i], half[:, i], n[:, i])
                    for i in range(mean.shape[1])
                ]
                for index, m, h, c in columns:
                    for w, offset in enumerate(offsets):
                        yield [kind, layer, quantity, "" if index is None else index, offset,
                               _fmt(m[w]), _fmt(m[w] - h[w]), _fmt(m[w] + h[w]), int(c[w])]


def _fmt(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"


def _write_csv(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event", "layer", "quantity", "index", "offset", "mean", "lo95", "hi95", "n"])
        writer.writerows(_rows(arrays))


def event_figure(arrays: dict[str, np.ndarray], kind: str):
    """One matplotlib figure: layers side by side (columns); rows: module active fraction,
    switch rate, input attention shares; mean lines with 95% bands, the event at offset 0."""
    import matplotlib  # on first figure only: selecting the Agg backend is a process-wide choice

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offsets = arrays["offsets"]
    layers = int(arrays["num_layers"])
    count = len(arrays[f"{kind}_steps"])
    fig, axes = plt.subplots(3, layers, figsize=(6.4 * layers, 9.0), sharex=True, squeeze=False)
    titles = ("active fraction per module", "switch rate (active set changed)", "input attention share")
    for layer in range(layers):
        for row, quantity in enumerate(QUANTITIES):
            ax = axes[row, layer]
            key = f"{kind}_layer{layer}_{quantity}"
            mean, half = arrays[f"{key}_mean"], arrays[f"{key}_half"]
            if mean.ndim == 1:
                mean, half = mean[:, None], half[:, None]
            labels = (
                [f"module {i}" for i in range(mean.shape[1])] if quantity == "active"
                else ["switch rate"] if quantity == "switch" else list(_SLOT_LABELS)
            )
            for i, label in enumerate(labels):
                # Dashes tell the attention slots apart where their lines coincide (1/3 each).
                style = ("-", "--", ":")[i] if quantity == "attention" else "-"
                line, = ax.plot(offsets, mean[:, i], style, label=label, linewidth=1.8)
                low, high = np.clip(mean[:, i] - half[:, i], 0, 1), np.clip(mean[:, i] + half[:, i], 0, 1)
                ax.fill_between(offsets, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
            ax.axvline(0, color="black", linestyle="--", linewidth=1)
            if kind == "perturbation" and int(arrays["perturb_length"]) > 0:
                ax.axvspan(-0.5, int(arrays["perturb_length"]) - 0.5, color="grey", alpha=0.15, linewidth=0,
                           label="burst" if quantity == "switch" else None)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            ax.set_title(f"layer {layer}{' (bottom)' if layer == 0 else ' (top)' if layer == layers - 1 else ''}: {titles[row]}", fontsize=10)
            ax.set_ylabel(("fraction of steps active", "fraction of steps", "attention share")[row])
            if row == 2:
                ax.set_xlabel("steps from the event (0 = event step)")
            if quantity != "switch":
                ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    note = f"; threshold: mean |frame difference| > {float(arrays['surprise_threshold']):.3g}" if kind == "surprise" else ""
    band = "95% band" if count > 1 else "no band (one occurrence)"
    burst = f"; grey: the {int(arrays['perturb_length'])}-step burst" if kind == "perturbation" else ""
    fig.suptitle(f"{_LABELS[kind]}: mean over {count} occurrence{'s' * (count != 1)}, {band}{note}{burst}", fontsize=12)
    fig.tight_layout()
    return fig


def _write_figures(out_dir: Path, arrays: dict[str, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    writer = SummaryWriter(log_dir=str(out_dir))
    try:
        writer.add_text("events/surprise_threshold", f"mean frame change > {float(arrays['surprise_threshold']):.6g}", 0)
        for kind in arrays["kinds"].tolist():
            if len(arrays[f"{kind}_steps"]) == 0:
                continue
            fig = event_figure(arrays, kind)
            path = out_dir / f"events_{kind}.png"
            with atomic_write(path) as tmp:
                fig.savefig(tmp, format="png", dpi=90)
            writer.add_figure(f"events/{kind}", fig, 0, close=True)
            plt.close(fig)
        if "ram_information" in arrays:
            fig = information_figure(
                arrays["ram_information"], arrays["num_modules"].tolist(), tuple(arrays["ram_variables"].tolist()),
                f"{arrays['ram_game']}: I(module active; RAM variable), {arrays['ram_values'].shape[0]} steps",
            )
            with atomic_write(out_dir / "ram_information.png") as tmp:
                fig.savefig(tmp, format="png", dpi=90)
            writer.add_figure("events/ram_information", fig, 0, close=True)
            plt.close(fig)
    finally:
        writer.close()


def summary_lines(npz_path: Path) -> list[str]:
    """What the CLI prints: occurrences per kind and the surprise threshold."""
    data = np.load(npz_path)
    lines = [f"{kind}: {len(data[f'{kind}_steps'])} occurrences" for kind in data["kinds"].tolist()]
    lines.append(f"surprise threshold: mean absolute frame change > {float(data['surprise_threshold']):.4g} "
                 f"(default: mean + {SURPRISE_STDS:g} std over all step pairs)")
    return lines


def event_settings(
    kinds: Optional[str],
    window: Optional[str],
    surprise_threshold: Optional[float],
    perturb: Optional[str],
    at: Optional[str],
    length: Optional[str],
    level: Optional[float],
    ram: bool = False,
) -> Optional[EventSettings]:
    """The CLI's event options (as typed) checked into settings; None when no event option is given.

    ``--perturb`` and ``--ram`` imply ``--events``; ``--perturb`` needs ``--at`` and ``--length``; ``--at``,
    ``--length`` and ``--perturb-level`` need ``--perturb``. Raises ValueError in one line.
    """
    if perturb is None:
        orphans = [flag for flag, value in (("--at", at), ("--length", length), ("--perturb-level", level)) if value is not None]
        if orphans:
            raise ValueError(f"{', '.join(orphans)} only apply with --perturb {{{', '.join(BURST_DEFAULTS)}}}")
    if kinds is None and perturb is None and not ram:
        given = [flag for flag, value in (("--window", window), ("--surprise-threshold", surprise_threshold)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --events (or --perturb, --ram)")
        return None
    parsed_kinds = parse_event_kinds(kinds if kinds is not None else "all")
    k = DEFAULT_WINDOW if window is None else parse_int("--window", window, 1)
    if surprise_threshold is not None and not (math.isfinite(surprise_threshold) and surprise_threshold >= 0):
        raise ValueError(f"--surprise-threshold {surprise_threshold!r} is invalid: it must be a number >= 0")
    if perturb is None:
        if "perturbation" in parsed_kinds:
            raise ValueError("event kind 'perturbation' needs --perturb KIND --at STEP --length L")
        return EventSettings(parsed_kinds, k, surprise_threshold)
    if perturb not in BURST_DEFAULTS:
        raise ValueError(f"--perturb {perturb!r} is unknown: choose one of {', '.join(BURST_DEFAULTS)}")
    if at is None or length is None:
        raise ValueError(f"--perturb {perturb} needs --at STEP and --length L (the burst's first episode step and duration)")
    first, steps = check_burst(parse_int("--at", at, 0), parse_int("--length", length, 1))
    return EventSettings(parsed_kinds, k, surprise_threshold, first, steps)
