"""Which module tracks what: mutual information between module activity and game variables.

Game variables come from the emulator RAM at published addresses. Module ``i`` of layer ``l``
is a 0/1 variable per (step, env) (active or not); each game variable is cut into equally
filled bins; the image shows I(module active; variable) in bits (plug-in estimate over all
recorded steps and envs), modules as rows (layer by layer), variables as columns.

Reading the RAM needs the gymnasium Atari envs of the ``"sb3"`` backend (a ``DummyVecEnv``);
the ``"ale"`` backend's C++ vector env does not expose it.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

# RAM addresses from the Atari Annotated RAM Interface (AtariARI): Anand et al., 2019,
# "Unsupervised State Representation Learning in Atari" (NeurIPS), file
# atariari/benchmark/ram_annotations.py of github.com/mila-iqia/atari-representation-learning.
# Pong's paddles move only vertically, so their x addresses (46, 45) are left out.
RAM_ADDRESSES: dict[str, dict[str, int]] = {
    "pong": {"ball_x": 49, "ball_y": 54, "player_y": 51, "enemy_y": 50},
    "breakout": {"ball_x": 99, "ball_y": 101, "player_x": 72},
}
DEFAULT_BINS = 8


class RamRecorder(VecEnvWrapper):
    """Records the RAM variables of every env at each observation it returns.

    Row t of :meth:`values` is the state behind the observation the policy acts on at step t
    (the ``reset`` state, then the state after each step; after an auto-reset that is the new
    game's first state, as the observation is).
    """

    def __init__(self, venv: VecEnv, game: str) -> None:
        if game not in RAM_ADDRESSES:
            raise ValueError(f"no RAM addresses for game {game!r}: known games are {', '.join(RAM_ADDRESSES)}")
        base = venv.unwrapped
        games = getattr(base, "envs", None)
        if games is None or not all(hasattr(g.unwrapped, "ale") for g in games):
            raise ValueError(
                f"reading the Atari RAM needs the 'sb3' backend's gymnasium envs; this env is a {type(base).__name__} "
                "(build it with backend='sb3')"
            )
        super().__init__(venv)
        self.games = [g.unwrapped for g in games]
        self.game = game
        self.names = tuple(RAM_ADDRESSES[game])
        self.addresses = np.array([RAM_ADDRESSES[game][name] for name in self.names])
        self.rows: list[np.ndarray] = []

    def _read(self) -> None:
        self.rows.append(np.stack([g.ale.getRAM()[self.addresses] for g in self.games]))

    def reset(self):
        obs = self.venv.reset()
        self.rows = []
        self._read()
        return obs

    def step_wait(self):
        result = self.venv.step_wait()
        self._read()
        return result

    def values(self, steps: int) -> np.ndarray:
        """uint8 ``(steps, B, V)``."""
        return np.stack(self.rows[:steps])


def find_ram_recorder(env: VecEnv) -> Optional[RamRecorder]:
    """The :class:`RamRecorder` in ``env``'s wrapper chain, if any."""
    while True:
        if isinstance(env, RamRecorder):
            return env
        if not isinstance(env, VecEnvWrapper):
            return None
        env = env.venv


def quantile_bins(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Integer bin of each value, bins of (about) equal counts; at most ``bins`` distinct values."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in mutual information (bits) of two integer sequences of equal length."""
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(joint, (xi, yi), 1.0)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log2(joint[nonzero] / (px @ py)[nonzero])).sum())


def module_information(masks: list[np.ndarray], ram: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """``(sum N_l, V)``: I(module active; binned variable) in bits, modules of layer 0 first.

    Args:
        masks: per layer bool ``(T, B, N_l)``.
        ram: ``(T, B, V)`` game variables.
    """
    variables = [quantile_bins(ram[..., v].reshape(-1), bins) for v in range(ram.shape[-1])]
    rows = []
    for mask in masks:
        flat = mask.reshape(-1, mask.shape[-1])
        rows.extend([mutual_information(flat[:, i], var) for var in variables] for i in range(flat.shape[1]))
    return np.asarray(rows, dtype=np.float64)


def information_figure(information: np.ndarray, num_modules: list[int], names: tuple[str, ...], title: Optional[str] = None) -> Any:
    """Modules x variables image of the mutual information (bits), each cell labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"layer {layer} module {i}" for layer, n in enumerate(num_modules) for i in range(n)]
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 3.5, 0.42 * len(labels) + 1.8))
    image = ax.imshow(information, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("game variable (emulator RAM)")
    ax.set_ylabel("module")
    high = float(information.max()) if information.size else 0.0
    for (row, col), value in np.ndenumerate(information):
        ax.text(col, row, f"{value:.3f}", ha="center", va="center", fontsize=8,
                color="black" if value > 0.6 * high else "white")
    boundary = -0.5
    for n in num_modules[:-1]:
        boundary += n
        ax.axhline(boundary, color="white", linewidth=2)
    fig.colorbar(image, ax=ax, label="mutual information (bits)")
    ax.set_title(title or "I(module active; variable)")
    fig.tight_layout()
    return fig
