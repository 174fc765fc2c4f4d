"""The BRIMs panels as a person sees them: a real TensorBoard on a finished short
``brims-rl train`` run, its pages loaded in headless system Chromium (Debian's ``chromium``,
driven by playwright; never a browser that playwright downloads).

Skipped, saying why, only where the machine has no ``chromium`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brims_rl.figures import ACTIVE, INACTIVE, ROW, SCALE, activation_layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
from tensorboard_screenshots import (  # noqa: E402
    chromium_page,
    custom_scalar_charts,
    find_chromium,
    image_cards,
    image_locator,
    serve_tensorboard,
)

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no system Chromium on this machine (Debian's `chromium` package; `.ci/run` installs it)",
    ),
]

NUM_MODULES = [6, 4]
TOP_K = [4, 2]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``brims-rl train`` run: BRIMs-PPO on CueMemory, 2 layers of 6 and 4
    modules, 3 rollouts, module activity logged every rollout."""
    root = tmp_path_factory.mktemp("runs")
    process = subprocess.run(
        [sys.executable, "-m", "agents.cli", "train", "--env", "BrimsRL/CueMemory-v0", "--run-dir", str(root),
         "--name", "short", "--n-envs", "2", "--timesteps", "192", "--no-progress-bar", "--threads", "1",
         "--set", "n_steps=32", "--set", "batch_size=32", "--set", "n_epochs=1", "--set", "eval_freq=0",
         "--set", "policy_kwargs.hidden_size=24", "--set", f"policy_kwargs.num_modules={NUM_MODULES}",
         "--set", f"policy_kwargs.top_k={TOP_K}", "--set", "activation_log_interval=1"],
        capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr
    return root / "short"


def colour_share(png: bytes, colour: str, tolerance: int = 40) -> float:
    """Fraction of a screenshot's pixels within ``tolerance`` of ``colour`` (``"#rrggbb"``)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(pixels - target).max(-1) <= tolerance).mean())


def test_tensorboard_in_chromium_shows_every_layers_panels(finished_run: Path) -> None:
    with serve_tensorboard(finished_run) as board, chromium_page(CHROMIUM) as page:
        # Custom Scalars: one category per layer; each module and each live attention slot
        # a line of its own colour; no flat top_down series for the top layer.
        charts = custom_scalar_charts(page, board.url, count=3 * len(NUM_MODULES))
        by_title = {chart["title"]: chart for chart in charts}
        for layer, n in enumerate(NUM_MODULES):
            modules = by_title[f"layer {layer}: active fraction per module"]
            assert modules["category"] == f"BRIMs layer {layer}"
            assert len(modules["colours"]) == n and len(set(modules["colours"])) == n, modules
            slots = by_title[f"layer {layer}: input attention per slot"]
            live = 3 if layer < len(NUM_MODULES) - 1 else 2
            assert len(slots["colours"]) == live and len(set(slots["colours"])) == live, slots
            assert len(by_title[f"layer {layer}: switch rate"]["colours"]) == 1
        card = page.locator("tf-custom-scalar-multi-line-chart-card").first
        assert np.asarray(Image.open(io.BytesIO(card.screenshot())).convert("L")).std() > 10, "a blank chart"

        # Time Series: every layer's heatmap as a default thumbnail, non-blank, rows >= 20 px.
        cards = image_cards(page, board.url, "activation_heatmap", count=len(NUM_MODULES))
        by_tag = {card["tag"]: card for card in cards}
        for layer, n in enumerate(NUM_MODULES):
            tag = f"brims/layer{layer}/activation_heatmap"
            assert tag in by_tag, f"no loaded image card for {tag}: {cards}"
            layout = activation_layout(n, with_rewards=True)
            natural_width, natural_height = by_tag[tag]["natural"]
            assert (natural_width, natural_height) == (layout.width * SCALE, layout.height * SCALE)
            _, _, box_width, box_height = by_tag[tag]["box"]
            shown = min(box_width / natural_width, box_height / natural_height)  # object-fit: contain
            assert ROW * SCALE * shown >= 20, f"{tag}: module rows drawn {ROW * SCALE * shown:.1f} px tall"
            png = image_locator(page, tag).screenshot()
            # top-k of N modules are updated at every step: both colours fill a good part of it.
            assert colour_share(png, ACTIVE) > 0.1 and colour_share(png, INACTIVE) > 0.05, tag
    assert board.process.poll() is not None, "the TensorBoard server outlived the test"
