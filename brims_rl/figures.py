"""Pictures of BRIMs module activity, laid out for a person to read at a glance.

TensorBoard's Time Series tab shows an image inside a card box about 320-450 CSS px wide and
215 px tall (``object-fit: contain``). The figures here are drawn for that box: about 400
logical pixels wide, 9-10 px fonts, module rows of 22 px, and rendered at :data:`SCALE` times
that size so that they stay sharp in a widened card, with "show actual size" and on hi-DPI
screens. Every figure is a matplotlib ``Figure`` on the Agg canvas (no pyplot, no global
backend) and is returned as a uint8 ``(H, W, 3)`` RGB array.

* :func:`activation_figure`: modules (rows m0..m(N-1)) by steps, active cells bright, episode
  starts as vertical lines, an optional reward track above, a colour legend.
* :func:`usage_figure`: modules by logged rollouts, coloured by active fraction, with a
  colour bar; modules under :data:`DEAD_FRACTION` in the last rollout are labelled in red.
* :func:`coactivation_figure`: the ``N x N`` co-activation matrix with labels, a cell grid,
  the values and a colour bar.
* :func:`module_panel`: the strip drawn under each video frame by ``brims-rl record
  --modules`` (OpenCV, fast enough for every frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# Logical pixels are multiplied by SCALE in the returned images.
SCALE = 2
WIDTH = 400
ROW = 22  # module row height, logical px
TITLE = 22
REWARD_TRACK = 26
GAP = 4
X_AXIS = 32
LEFT = 54
RIGHT = 10
FONT = 9.0

ACTIVE = "#f5b700"
INACTIVE = "#262a36"
EPISODE_START = "#ff2a6d"
REWARD_UP = "#2ca25f"
REWARD_DOWN = "#d7301f"
DEAD_LABEL = "#d7301f"
USAGE_COLOURMAP = "viridis"
COACTIVATION_COLOURMAP = "magma"
# A module active in less than this fraction of (step, env) pairs is counted as dead.
DEAD_FRACTION = 0.05
SLOT_LABELS = ("null", "bottom-up", "top-down")


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@dataclass(frozen=True)
class Box:
    """A rectangle in logical pixels, measured from the image's top-left corner."""

    left: float
    top: float
    width: float
    height: float

    def pixels(self) -> "Box":
        """The same box in the returned image's pixels."""
        return Box(self.left * SCALE, self.top * SCALE, self.width * SCALE, self.height * SCALE)


@dataclass(frozen=True)
class ActivationLayout:
    """Where :func:`activation_figure` draws, in logical pixels."""

    width: float
    height: float
    rewards: Optional[Box]
    modules: Box

    def cell_centre(self, step: int, module: int, steps: int) -> tuple[int, int]:
        """Image pixel ``(x, y)`` at the centre of the cell of ``module`` at ``step`` (of ``steps``)."""
        box = self.modules.pixels()
        return int(box.left + (step + 0.5) * box.width / steps), int(box.top + (module + 0.5) * ROW * SCALE)

    def step_edge(self, step: int, steps: int) -> int:
        """Image x of the left edge of ``step``: where its episode-start line is drawn."""
        box = self.modules.pixels()
        return int(round(box.left + step * box.width / steps))


def activation_layout(num_modules: int, with_rewards: bool) -> ActivationLayout:
    top = TITLE + GAP
    rewards = None
    if with_rewards:
        rewards = Box(LEFT, top, WIDTH - LEFT - RIGHT, REWARD_TRACK)
        top += REWARD_TRACK + GAP
    modules = Box(LEFT, top, WIDTH - LEFT - RIGHT, ROW * num_modules)
    return ActivationLayout(WIDTH, top + ROW * num_modules + X_AXIS, rewards, modules)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / 100, height / 100), dpi=100 * SCALE, facecolor="white")
    return figure


def _axes(figure, box: Box, width: float, height: float):
    """Axes placed at ``box`` (logical px from the top-left) in a ``width x height`` figure."""
    return figure.add_axes((box.left / width, 1 - (box.top + box.height) / height, box.width / width, box.height / height))


def _render(figure) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def _module_labels(axes, num_modules: int, colours: Optional[Sequence[str]] = None) -> None:
    axes.set_yticks(range(num_modules), [f"m{i}" for i in range(num_modules)], fontsize=FONT)
    if colours is not None:
        for label, colour in zip(axes.get_yticklabels(), colours):
            label.set_color(colour)
    axes.tick_params(axis="y", length=0, pad=4)


def _step_ticks(axes, first_step: int, steps: int) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(round(x)) + first_step:,}"))
    axes.set_xlim(-0.5, steps - 0.5)
    axes.tick_params(axis="x", labelsize=FONT, length=3, pad=2)


def activation_figure(
    mask: np.ndarray,
    episode_start: Optional[np.ndarray] = None,
    rewards: Optional[np.ndarray] = None,
    title: str = "",
    first_step: int = 0,
    xlabel: str = "step",
) -> np.ndarray:
    """Modules x steps of one env: which modules were updated at each step.

    Args:
        mask: bool ``(T, N)``: module i updated at step t.
        episode_start: optional bool ``(T,)``: a new episode began (state reset) before step t;
            drawn as a vertical line on the left edge of that step.
        rewards: optional ``(T,)``: the reward of step t, drawn as bars above the modules.
        title: drawn top left (the legend is top right).
        first_step: the step number of column 0 (tick labels are ``first_step + t``).
        xlabel: the x axis label.

    Returns:
        uint8 ``(H, W, 3)`` RGB; :func:`activation_layout` gives the geometry (row i is
        module i, top: module 0).
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    mask = np.asarray(mask, dtype=bool)
    steps, n = mask.shape
    layout = activation_layout(n, rewards is not None)
    figure = _figure(layout.width, layout.height)
    starts = np.flatnonzero(np.asarray(episode_start, dtype=bool)) if episode_start is not None else np.array([], int)

    axes = _axes(figure, layout.modules, layout.width, layout.height)
    axes.imshow(
        mask.T, aspect="auto", interpolation="nearest", cmap=ListedColormap([INACTIVE, ACTIVE]), vmin=0, vmax=1,
        extent=(-0.5, steps - 0.5, n - 0.5, -0.5),
    )
    for boundary in range(1, n):
        axes.axhline(boundary - 0.5, color="white", linewidth=1.0)
    _module_labels(axes, n)
    _step_ticks(axes, first_step, steps)
    axes.set_xlabel(xlabel, fontsize=FONT, labelpad=1)
    for side in axes.spines.values():
        side.set_visible(False)

    panels = [axes]
    if rewards is not None:
        track = _axes(figure, layout.rewards, layout.width, layout.height)
        values = np.asarray(rewards, dtype=np.float64)
        track.bar(np.arange(steps), values, width=1.0, color=np.where(values >= 0, REWARD_UP, REWARD_DOWN))
        track.axhline(0.0, color="#888888", linewidth=0.6)
        limit = max(float(np.abs(values).max(initial=0.0)), 1e-9)
        track.set_ylim(-limit * 1.1, limit * 1.1)
        track.set_xlim(-0.5, steps - 0.5)
        track.set_xticks([])
        track.set_yticks([0.0], ["reward"], fontsize=FONT)
        track.tick_params(axis="y", length=0, pad=4)
        for side in track.spines.values():
            side.set_color("#bbbbbb")
        panels.append(track)
    for panel in panels:
        for t in starts:
            panel.axvline(t - 0.5, color=EPISODE_START, linewidth=1.5, zorder=5)

    figure.text(6 / layout.width, 1 - 14 / layout.height, title, fontsize=FONT + 1, fontweight="bold", ha="left")
    handles = [
        Patch(color=ACTIVE, label="updated"),
        Patch(color=INACTIVE, label="kept"),
        Line2D([], [], color=EPISODE_START, linewidth=1.5, label="new episode"),
    ]
    figure.legend(
        handles=handles, loc="upper right", bbox_to_anchor=(1 - 4 / layout.width, 1 - 1 / layout.height), ncol=3,
        frameon=False, fontsize=FONT, handlelength=1.1, handleheight=0.9, columnspacing=0.8, handletextpad=0.4,
        borderaxespad=0.2,
    )
    return _render(figure)


def _steps_label(steps: float) -> str:
    """20480 -> "20k", 1_500_000 -> "1.5M"."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if abs(steps) >= size:
            return f"{steps / size:.3g}{suffix}"
    return f"{steps:g}"


@dataclass(frozen=True)
class GridLayout:
    """Where a grid figure (:func:`usage_figure`, :func:`coactivation_figure`) draws, in
    logical pixels: ``grid`` holds ``rows x columns`` equal cells."""

    width: float
    height: float
    grid: Box
    rows: int
    columns: int

    def cell_box(self, row: int, column: int) -> Box:
        """The cell in row ``row`` (module), column ``column``, in image pixels."""
        box = self.grid.pixels()
        cell_width, cell_height = box.width / self.columns, box.height / self.rows
        return Box(box.left + column * cell_width, box.top + row * cell_height, cell_width, cell_height)


def usage_layout(num_modules: int, rollouts: int) -> GridLayout:
    grid = Box(LEFT, TITLE + GAP, WIDTH - LEFT - 70, ROW * num_modules)
    return GridLayout(WIDTH, grid.top + grid.height + X_AXIS, grid, num_modules, rollouts)


def coactivation_layout(num_modules: int) -> GridLayout:
    # About 215 logical px tall for 6 modules: TensorBoard's card box height, so the figure
    # is shown near its logical size.
    cell = float(np.clip(168 / num_modules, 8, 28))
    side = cell * num_modules
    width = max(WIDTH, LEFT + side + 80)
    grid = Box(LEFT + (width - LEFT - side - 80) / 2, TITLE + GAP + 16, side, side)
    return GridLayout(width, grid.top + side + 8, grid, num_modules, num_modules)


def usage_figure(steps: np.ndarray, active_frac: np.ndarray, title: str = "") -> np.ndarray:
    """Modules x logged rollouts, each cell coloured by the module's active fraction.

    Args:
        steps: ``(R,)`` env steps trained at each logged rollout (the x tick labels).
        active_frac: ``(R, N)``: fraction of the rollout's (step, env) pairs each module was updated in.
        title: drawn above the picture.

    Returns:
        uint8 ``(H, W, 3)`` RGB, laid out as :func:`usage_layout` says (row i: module i,
        column r: logged rollout r). Module rows whose last fraction is below
        :data:`DEAD_FRACTION` have red labels.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter

    steps = np.asarray(steps)
    fractions = np.asarray(active_frac, dtype=np.float64)
    rollouts, n = fractions.shape
    layout = usage_layout(n, rollouts)
    box, height = layout.grid, layout.height
    figure = _figure(WIDTH, height)
    axes = _axes(figure, box, WIDTH, height)
    image = axes.imshow(
        fractions.T, aspect="auto", interpolation="nearest", cmap=USAGE_COLOURMAP, vmin=0.0, vmax=1.0,
        extent=(-0.5, rollouts - 0.5, n - 0.5, -0.5),
    )
    for boundary in range(1, n):
        axes.axhline(boundary - 0.5, color="white", linewidth=1.0)
    dead = fractions[-1] < DEAD_FRACTION
    _module_labels(axes, n, [DEAD_LABEL if d else "black" for d in dead])
    ticks = np.unique(np.linspace(0, rollouts - 1, min(rollouts, 5)).round().astype(int))
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _steps_label(float(steps[int(round(x))]))))
    axes.tick_params(axis="x", labelsize=FONT, length=3, pad=2)
    axes.set_xlabel("env steps trained", fontsize=FONT, labelpad=1)
    for side in axes.spines.values():
        side.set_visible(False)

    bar_box = Box(box.left + box.width + 10, box.top, 9, box.height)
    bar_axes = _axes(figure, bar_box, WIDTH, height)
    bar = figure.colorbar(image, cax=bar_axes)
    bar.set_ticks([0.0, 0.5, 1.0], labels=["0", "0.5", "1"], fontsize=FONT - 1)
    bar.ax.axhline(DEAD_FRACTION, color=DEAD_LABEL, linewidth=1.5)
    figure.text(6 / WIDTH, 1 - 14 / height, title, fontsize=FONT + 1, fontweight="bold", ha="left")
    figure.text(
        1 - 4 / WIDTH, 1 - 14 / height, f"red: < {DEAD_FRACTION:.0%} (dead)", color=DEAD_LABEL, fontsize=FONT, ha="right"
    )
    return _render(figure)


def coactivation_figure(coactivation: np.ndarray, title: str = "") -> np.ndarray:
    """The ``N x N`` matrix P(module i and module j updated at the same step).

    Args:
        coactivation: ``(N, N)`` in [0, 1]; the diagonal is each module's active fraction.
        title: drawn above the matrix (say what a cell is: there is no other caption).

    Returns:
        uint8 ``(H, W, 3)`` RGB laid out as :func:`coactivation_layout` says: labelled rows
        and columns m0..m(N-1), white grid lines between cells, each cell's value (cells of
        at least 24 px) and a colour bar from 0 ("never") to 1 ("always").
    """
    matrix = np.asarray(coactivation, dtype=np.float64)
    n = matrix.shape[0]
    layout = coactivation_layout(n)
    box, width, height = layout.grid, layout.width, layout.height
    side, cell = box.width, box.width / n
    figure = _figure(width, height)
    axes = _axes(figure, box, width, height)
    image = axes.imshow(
        matrix, cmap=COACTIVATION_COLOURMAP, vmin=0.0, vmax=1.0, interpolation="nearest",
        extent=(-0.5, n - 0.5, n - 0.5, -0.5),
    )
    labels = [f"m{i}" for i in range(n)]
    axes.set_yticks(range(n), labels, fontsize=FONT)
    axes.set_xticks(range(n), labels, fontsize=FONT)
    axes.tick_params(length=0, pad=3)
    axes.xaxis.tick_top()
    for boundary in range(1, n):
        axes.axhline(boundary - 0.5, color="white", linewidth=1.0)
        axes.axvline(boundary - 0.5, color="white", linewidth=1.0)
    if cell >= 24:
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]  # row i, column j
                axes.text(
                    j, i, f"{value:.2f}", ha="center", va="center", fontsize=FONT - 1.5,
                    color="black" if value > 0.6 else "white",
                )
    for spine in axes.spines.values():
        spine.set_visible(False)
    bar_axes = _axes(figure, Box(box.left + side + 14, box.top, 9, side), width, height)
    bar = figure.colorbar(image, cax=bar_axes)
    bar.set_ticks([0.0, 0.5, 1.0], labels=["never", "0.5", "always"], fontsize=FONT - 1)
    figure.text(6 / width, 1 - 14 / height, title, fontsize=FONT + 1, fontweight="bold", ha="left")
    return _render(figure)


# --- The panel under each video frame (brims-rl record --modules) --------------------------

PANEL_ROW = 46
PANEL_LEGEND = 40
_PANEL_BACKGROUND = (250, 250, 250)
_PANEL_TEXT = (30, 30, 30)
# Input-attention slot colours (RGB): null grey, bottom-up teal, top-down purple.
SLOT_COLOURS = ((170, 170, 170), (0, 150, 160), (150, 60, 200))


def module_panel(masks: Sequence[np.ndarray], attention: Sequence[np.ndarray], width: int, caption: str = "") -> np.ndarray:
    """One frame's panel: for every layer (top layer first) its modules, lit when updated,
    each with a bar split by its input attention on [null, bottom-up, top-down].

    Args:
        masks: per layer ``l``, bool ``(N_l,)``.
        attention: per layer ``l``, float ``(N_l, 3)``; each row sums to 1.
        width: the panel's width in pixels (the video frame's).
        caption: text on the legend line (step, reward).

    Returns:
        uint8 ``(len(masks) * PANEL_ROW + PANEL_LEGEND, width, 3)`` RGB. Module ``i`` of the
        layer drawn in row ``r`` occupies :func:`panel_module_box` ``(r, i, N_l, width)``.
    """
    import cv2

    layers = len(masks)
    panel = np.empty((layers * PANEL_ROW + PANEL_LEGEND, width, 3), dtype=np.uint8)
    panel[:] = _PANEL_BACKGROUND
    font = cv2.FONT_HERSHEY_SIMPLEX
    for row, layer in enumerate(reversed(range(layers))):
        mask = np.asarray(masks[layer], dtype=bool)
        slots = np.asarray(attention[layer], dtype=np.float64)
        top = row * PANEL_ROW
        cv2.putText(panel, f"layer {layer}", (4, top + 27), font, 0.4, _PANEL_TEXT, 1, cv2.LINE_AA)
        for module, active in enumerate(mask):
            x0, y0, x1, y1 = panel_module_box(row, module, len(mask), width)
            colour = _hex_rgb(ACTIVE) if active else _hex_rgb(INACTIVE)
            cv2.rectangle(panel, (x0, y0), (x1 - 1, y1 - 1), colour, thickness=-1)
            text = (0, 0, 0) if active else (235, 235, 235)
            cv2.putText(panel, f"m{module}", (x0 + 4, y0 + 16), font, 0.4, text, 1, cv2.LINE_AA)
            # The attention bar under the box: null | bottom-up | top-down, widths proportional.
            edges = x0 + np.rint(np.cumsum(np.concatenate([[0.0], slots[module]])) * (x1 - x0)).astype(int)
            for slot, colour in enumerate(SLOT_COLOURS):
                if edges[slot + 1] > edges[slot]:
                    cv2.rectangle(panel, (edges[slot], y1 + 2), (edges[slot + 1] - 1, y1 + 9), colour, thickness=-1)
    legend_top = layers * PANEL_ROW + 4
    x = 4
    for label, colour in (("updated", _hex_rgb(ACTIVE)), ("kept", _hex_rgb(INACTIVE))):
        cv2.rectangle(panel, (x, legend_top + 2), (x + 10, legend_top + 12), colour, thickness=-1)
        cv2.putText(panel, label, (x + 14, legend_top + 11), font, 0.38, _PANEL_TEXT, 1, cv2.LINE_AA)
        x += 22 + 8 * len(label)
    cv2.putText(panel, "attention:", (x, legend_top + 11), font, 0.38, _PANEL_TEXT, 1, cv2.LINE_AA)
    x += 76
    for label, colour in zip(SLOT_LABELS, SLOT_COLOURS):
        cv2.rectangle(panel, (x, legend_top + 4), (x + 10, legend_top + 10), colour, thickness=-1)
        cv2.putText(panel, label, (x + 14, legend_top + 11), font, 0.38, _PANEL_TEXT, 1, cv2.LINE_AA)
        x += 22 + 8 * len(label)
    if caption:
        cv2.putText(panel, caption, (4, legend_top + 29), font, 0.4, _PANEL_TEXT, 1, cv2.LINE_AA)
    return panel


def panel_module_box(row: int, module: int, num_modules: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (end exclusive) of a module's box in :func:`module_panel`'s image;
    its attention bar lies below it, from ``y1 + 2`` to ``y1 + 9``."""
    left, right = 64, width - 4
    cell = (right - left) / num_modules
    x0 = int(left + module * cell) + 2
    x1 = int(left + (module + 1) * cell) - 2
    y0 = row * PANEL_ROW + 6
    return x0, y0, x1, y0 + 24
