"""Screenshots of the BRIMs panels in a real TensorBoard, taken in headless Chromium.

    python docs/tensorboard_screenshots.py runs/ppo_brims_pong_<time>_s0_<pid> --out docs/

starts ``tensorboard`` on the run's ``tb/`` folder (then on its ``analysis/``), opens its pages in Debian's system Chromium
(driven by playwright, never a browser that playwright downloads) at 1600 x 1000 CSS px,
and writes the README's screenshots: ``tb_heatmaps.png`` (Time Series, the heatmap cards
as TensorBoard's default thumbnails), ``tb_module_usage.png``, ``tb_custom_scalars.png``
(the "BRIMs layer l" categories, smoothing 0) and, when the run has been analysed
(``brims-rl analyze``: ``<run>/analysis``), ``tb_coactivation.png``.

The pages are found as TensorBoard 2.21 builds them (``image-card``, ``tb-truncated-path``,
``tf-custom-scalar-multi-line-chart-card``, ``path.line``); another TensorBoard version
may need these names changed.

The helpers are also what ``tests/test_tensorboard_browser.py`` drives TensorBoard with:
:func:`serve_tensorboard` (a server on a port the OS picks, stopped on exit) and
:func:`chromium_page`.
"""

from __future__ import annotations

import argparse
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

# Without the networking switches Chromium keeps trying to reach Google's services, which a
# machine without internet access refuses, many times a second.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1600, "height": 1000}


def find_chromium() -> Optional[str]:
    """The system Chromium (Debian's ``chromium`` package), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


@dataclass
class TensorBoard:
    """A running ``tensorboard`` server."""

    url: str
    process: subprocess.Popen


def _served_port(server: subprocess.Popen, lines: "queue.Queue[str]", deadline: float) -> int:
    """The port a ``tensorboard --port 0`` server bound, read from its "TensorBoard ... at
    http://host:PORT/" line on stderr (the OS picks a free port: nothing to race for)."""
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if server.poll() is not None:
                raise RuntimeError("tensorboard exited:\n" + "".join(seen)) from None
            continue
        seen.append(line)
        match = re.search(r"TensorBoard \S+ at http://[^:/]+:(\d+)/", line)
        if match:
            return int(match.group(1))
    raise TimeoutError("tensorboard did not say which port it serves on in time:\n" + "".join(seen))


@contextmanager
def serve_tensorboard(logdir: Path, timeout: float = 240, extra_args: Sequence[str] = ()) -> Iterator[TensorBoard]:
    """Run ``tensorboard --logdir logdir`` on 127.0.0.1 (up to 100 images per tag kept:
    ``--samples_per_plugin images=100``) for the block; the server is stopped (SIGTERM, then
    SIGKILL) on exit.

    Args:
        timeout: seconds to wait for the server to start (a loaded 2-core machine needs a minute).
    """
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", "0", "--host", "127.0.0.1",
         "--load_fast", "false", "--samples_per_plugin", "images=100", *extra_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: "queue.Queue[str]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in server.stderr], daemon=True)
    reader.start()
    try:
        port = _served_port(server, lines, time.monotonic() + timeout)
        yield TensorBoard(f"http://127.0.0.1:{port}", server)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        reader.join(timeout=10)
        server.stderr.close()


@contextmanager
def chromium_page(executable: Optional[str] = None, viewport: Optional[dict] = None):
    """A playwright page in headless system Chromium; the browser is closed on exit.

    Raises:
        FileNotFoundError: no system Chromium (install Debian's ``chromium`` package).
    """
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no system Chromium: install it with `apt-get install -y chromium`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport=viewport or VIEWPORT)
            page.set_default_timeout(120_000)
            yield page
        finally:
            browser.close()


# Every element under ``root``, shadow trees included (TensorBoard's Polymer dashboards
# keep their content in shadow roots that CSS selectors do not cross).
_DEEP = """
(root, selector) => {
  const found = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    node.querySelectorAll('*').forEach((element) => {
      if (element.matches(selector)) found.push(element);
      if (element.shadowRoot) walk(element.shadowRoot);
    });
  };
  walk(root);
  return found;
}
"""


def image_cards(page, url: str, tag_filter: str, count: int, timeout: float = 240) -> list[dict]:
    """Open Time Series with ``tag_filter`` (smoothing 0) and wait until ``count`` image cards
    have loaded their image.

    Returns one dict per loaded card: ``tag`` (the card's title), ``run``, ``box`` (the
    drawn ``<img>``: x, y, width, height in CSS px) and ``natural`` (the image's width, height).
    """
    page.goto(f"{url}/?smoothing=0&tagFilter={tag_filter}#timeseries")
    script = """
    () => [...document.querySelectorAll('image-card')].flatMap((card) => {
      const image = card.querySelector('.img-container img');
      const tag = card.querySelector('tb-truncated-path');
      const run = card.querySelector('card-run-name-component');
      if (!image || !image.complete || image.naturalWidth === 0) return [];
      const box = image.getBoundingClientRect();
      return [{tag: tag ? tag.getAttribute('title') : '', run: run ? run.getAttribute('title') : '',
               box: [box.x, box.y, box.width, box.height], natural: [image.naturalWidth, image.naturalHeight]}];
    })
    """
    deadline = time.monotonic() + timeout
    cards: list[dict] = []
    while time.monotonic() < deadline:
        cards = page.evaluate(script)
        if len(cards) >= count:
            break
        time.sleep(0.5)
    return cards


def image_locator(page, tag: str):
    """The ``<img>`` of the Time Series image card titled ``tag``."""
    return page.locator("image-card", has=page.locator(f'tb-truncated-path[title="{tag}"]')).locator(".img-container img")


def custom_scalar_charts(page, url: str, count: int, timeout: float = 240) -> list[dict]:
    """Open Custom Scalars (smoothing 0) and wait until ``count`` charts have drawn lines.

    Returns one dict per chart: ``title``, ``category`` (the title of the category it is
    in) and ``colours``: the stroke colour of every drawn line (one per series).
    """
    page.goto(f"{url}/#custom_scalars&_smoothingWeight=0")
    script = """
    () => { const deep = %s;
      return deep(document, 'tf-category-paginated-view').flatMap((pane) =>
        deep(pane, 'tf-custom-scalar-multi-line-chart-card').map((card) => ({
          title: card.title,
          category: pane.category ? pane.category.name : '',
          colours: deep(card, 'path.line').filter((line) => (line.getAttribute('d') || '').length > 10)
                                          .map((line) => getComputedStyle(line).stroke),
        })));
    }
    """ % _DEEP
    deadline = time.monotonic() + timeout
    charts: list[dict] = []
    while time.monotonic() < deadline:
        charts = page.evaluate(script)
        if len([chart for chart in charts if chart["colours"]]) >= count:
            break
        time.sleep(0.5)
    return charts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder of `brims-rl train` (analysed or not)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    training = args.run / "tb"
    with serve_tensorboard(training if training.is_dir() else args.run) as board, chromium_page() as page:
        for name, tag_filter in (("heatmaps", "activation_heatmap"), ("module_usage", "module_usage")):
            image_cards(page, board.url, tag_filter, count=2)
            time.sleep(2)  # the thumbnails' fade-in
            page.screenshot(path=str(args.out / f"tb_{name}.png"))
        custom_scalar_charts(page, board.url, count=6)
        # TensorBoard's default clips lines it judges outliers; show every line whole.
        page.get_by_text("Ignore outliers in chart scaling").click()
        time.sleep(3)
        page.screenshot(path=str(args.out / "tb_custom_scalars.png"), full_page=True)
    analysis = args.run / "analysis"
    if analysis.is_dir():
        with serve_tensorboard(analysis) as board, chromium_page() as page:
            image_cards(page, board.url, "coactivation", count=2)
            time.sleep(2)
            page.screenshot(path=str(args.out / "tb_coactivation.png"))
    print(f"wrote the screenshots to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
