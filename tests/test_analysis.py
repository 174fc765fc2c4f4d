"""Module-activity analysis: the recorder, the TensorBoard callback and ``run_analysis``.

Event files are read back with TensorBoard's own ``EventAccumulator`` (and, once, through a
real ``tensorboard`` server's HTTP API).
"""

from __future__ import annotations

import io
import json
import math
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

import envs
from agents import RecurrentPPO
from agents.analyze import run_analysis
from brims_rl.activations import (
    SLOTS,
    ActivationRecorder,
    activation_heatmap,
    coactivation_image,
    step_statistics,
    summarize,
)
from brims_rl.callbacks import ModuleActivationCallback
from brims_rl.core import BrimsInfo

NUM_MODULES = [4, 3]
TOP_K = [2, 1]
TINY_BRIMS = dict(hidden_size=24, num_layers=2, num_modules=NUM_MODULES, top_k=TOP_K)
N_ENVS = 2
N_STEPS = 16
ROLLOUT = N_ENVS * N_STEPS
CUE = "BrimsRL/CueMemory-v0"


def load_events(logdir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalar_values(events: EventAccumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in events.Scalars(tag)}


def tiny_ppo(env, **kwargs) -> RecurrentPPO:
    policy_kwargs = dict(TINY_BRIMS, **kwargs.pop("policy_kwargs", {}))
    return RecurrentPPO(
        "MlpBrimsPolicy", env, n_steps=N_STEPS, batch_size=ROLLOUT, n_epochs=1, seed=0, policy_kwargs=policy_kwargs, **kwargs
    )


def run_dir(tensorboard_log: Path) -> Path:
    (run,) = [path for path in tensorboard_log.iterdir() if path.is_dir()]
    return run


def check_layer_invariants(values: dict[str, float], layer: int, top_k: int, num_modules: int, has_top_down: bool) -> None:
    """What must hold for one layer's scalars at one step, whatever the weights."""
    fractions = [values[f"brims/layer{layer}/module{i}/active_frac"] for i in range(num_modules)]
    assert sum(fractions) == pytest.approx(top_k, abs=1e-5)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    attention = [values[f"brims/layer{layer}/attention/{slot}"] for slot in SLOTS]
    assert sum(attention) == pytest.approx(1.0, abs=1e-5)
    assert all(a >= 0.0 for a in attention)
    if not has_top_down:
        assert attention[2] == 0.0
    entropy = values[f"brims/layer{layer}/usage_entropy"]
    # Each module is active at most always, so usage is spread over at least top_k modules.
    assert math.log(top_k) - 1e-5 <= entropy <= math.log(num_modules) + 1e-5
    switch = values.get(f"brims/layer{layer}/switch_rate")
    if switch is not None:
        assert 0.0 <= switch <= 1.0


# --- The training callback ---------------------------------------------------------------


class CoreCalls:
    """The policy's OWN record of its actor core, kept apart from the code under test: a
    forward hook stores what every call that asked for module info got and returned."""

    def __init__(self, core: torch.nn.Module) -> None:
        self.masks: list[list[np.ndarray]] = []
        self.starts: list[np.ndarray] = []
        self.handle = core.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output) -> None:
        if not kwargs.get("return_info"):
            return
        steps, batch = args[0].shape[:2]
        starts = kwargs.get("episode_starts")
        assert starts is not None, "the core was called without episode_starts"
        self.starts.append(starts.detach().cpu().numpy().astype(bool).reshape(steps, batch))
        self.masks.append([mask.detach().cpu().numpy() for mask in output[2].masks])

    def layer_masks(self, layer: int) -> np.ndarray:
        """Bool ``(calls * T, B, N_l)``."""
        return np.concatenate([masks[layer] for masks in self.masks])

    def episode_starts(self) -> np.ndarray:
        """Bool ``(calls * T, B)``: where the core reset an env's state."""
        return np.concatenate(self.starts)


def switch_rate_by_hand(masks: np.ndarray, starts: np.ndarray) -> float:
    """Fraction of (env, step) pairs within one episode whose active set changed."""
    switches = pairs = 0
    for t in range(1, len(masks)):
        for env in range(masks.shape[1]):
            if not starts[t, env]:
                pairs += 1
                switches += int((masks[t, env] != masks[t - 1, env]).any())
    return switches / pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, CoreCalls]:
    """Three rollouts of a tiny BRIMs PPO on CueMemory, logged by the callback, and the
    actor core's own record of its acting calls."""
    tensorboard_log = tmp_path_factory.mktemp("tb")
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    model = tiny_ppo(env, tensorboard_log=str(tensorboard_log))
    calls = CoreCalls(model.policy.lstm_actor)
    callback = ModuleActivationCallback(heatmap_env=1)
    model.learn(3 * ROLLOUT, callback=callback)
    calls.handle.remove()
    # Only the rollouts were recorded: the recorder is off during (and after) the updates.
    assert model.policy.activation_recorder is None
    env.close()
    return run_dir(tensorboard_log), calls


@pytest.fixture(scope="module")
def trained_logdir(trained) -> Path:
    return trained[0]


def test_callback_writes_every_tag_for_every_layer_and_module(trained_logdir):
    events = load_events(trained_logdir)
    tags = events.Tags()
    expected = set()
    for layer, n in enumerate(NUM_MODULES):
        expected |= {f"brims/layer{layer}/module{i}/active_frac" for i in range(n)}
        expected |= {f"brims/layer{layer}/attention/{slot}" for slot in SLOTS}
        expected |= {f"brims/layer{layer}/switch_rate", f"brims/layer{layer}/usage_entropy"}
    assert expected <= set(tags["scalars"])
    # No module that does not exist.
    assert not any(tag.startswith("brims/layer1/module3") or tag.startswith("brims/layer2") for tag in tags["scalars"])
    assert set(tags["images"]) == {f"brims/layer{layer}/activation_heatmap" for layer in range(2)}
    assert set(tags["histograms"]) == {f"brims/layer{layer}/activation_frequency" for layer in range(2)}
    for tag in expected:
        assert sorted(scalar_values(events, tag)) == [ROLLOUT, 2 * ROLLOUT, 3 * ROLLOUT]


def test_callback_values_are_consistent_with_the_model(trained_logdir):
    events = load_events(trained_logdir)
    tags = [tag for tag in events.Tags()["scalars"] if tag.startswith("brims/")]
    by_step: dict[int, dict[str, float]] = {}
    for tag in tags:
        for step, value in scalar_values(events, tag).items():
            by_step.setdefault(step, {})[tag] = value
    assert len(by_step) == 3
    for values in by_step.values():
        for layer, (k, n) in enumerate(zip(TOP_K, NUM_MODULES)):
            # Default wiring "adjacent": only the top layer has no top-down slot.
            check_layer_invariants(values, layer, k, n, has_top_down=layer == 0)
    # The bottom layer does read its top-down slot somewhere.
    assert any(values["brims/layer0/attention/top_down"] > 0 for values in by_step.values())


def test_callback_histograms_count_every_step_and_module(trained_logdir):
    events = load_events(trained_logdir)
    for layer, (k, n) in enumerate(zip(TOP_K, NUM_MODULES)):
        histograms = events.Histograms(f"brims/layer{layer}/activation_frequency")
        assert [h.step for h in histograms] == [ROLLOUT, 2 * ROLLOUT, 3 * ROLLOUT]
        for histogram in histograms:
            value = histogram.histogram_value
            assert len(value.bucket) == n
            assert sum(value.bucket) == N_STEPS * N_ENVS * k
        # The histogram and the scalars describe the same rollout.
        last = histograms[-1].histogram_value.bucket
        for i in range(n):
            fraction = scalar_values(events, f"brims/layer{layer}/module{i}/active_frac")[3 * ROLLOUT]
            assert last[i] / (N_STEPS * N_ENVS) == pytest.approx(fraction, abs=1e-6)


def test_callback_matches_the_policys_own_acting_calls(trained):
    """Switch rate, active fractions and histograms of each logged rollout, recomputed from
    the masks and episode starts the actor core itself saw (one call per rollout step)."""
    logdir, calls = trained
    events = load_events(logdir)
    assert len(calls.masks) == 3 * N_STEPS and all(m[0].shape[0] == 1 for m in calls.masks)
    starts = calls.episode_starts()
    # CueMemory episodes are a few steps long: the core reset envs inside every rollout.
    assert all(starts[r * N_STEPS + 1 : (r + 1) * N_STEPS].any() for r in range(3))
    for layer, n in enumerate(NUM_MODULES):
        switch = scalar_values(events, f"brims/layer{layer}/switch_rate")
        histograms = events.Histograms(f"brims/layer{layer}/activation_frequency")
        for rollout in range(3):
            steps = slice(rollout * N_STEPS, (rollout + 1) * N_STEPS)
            masks = calls.layer_masks(layer)[steps]
            step = (rollout + 1) * ROLLOUT
            assert switch[step] == pytest.approx(switch_rate_by_hand(masks, starts[steps]), abs=1e-6)
            for i in range(n):
                fraction = scalar_values(events, f"brims/layer{layer}/module{i}/active_frac")[step]
                assert fraction == pytest.approx(masks[..., i].mean(), abs=1e-6)
            assert list(histograms[rollout].histogram_value.bucket) == masks.sum((0, 1)).tolist()


RED = np.array([230, 30, 30])


def test_callback_heatmap_shows_the_policys_masks_and_episode_starts(trained):
    """The last rollout's heatmap of env 1: module rows by step columns (the layout the
    README documents, 12-pixel rows under a red-marks strip), each cell bright exactly where
    the core updated that module, a red mark exactly where the core reset env 1."""
    logdir, calls = trained
    events = load_events(logdir)
    starts = calls.episode_starts()[2 * N_STEPS :, 1]
    assert starts.any()
    row_height = 12
    for layer, n in enumerate(NUM_MODULES):
        images = events.Images(f"brims/layer{layer}/activation_heatmap")
        assert len(images) == 3
        pixels = np.asarray(PILImage.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB")).astype(int)
        height, width, _ = pixels.shape
        column = width // N_STEPS  # one column group per rollout step (no extra step recorded)
        assert column >= 2 and width == column * N_STEPS
        band = height - n * row_height
        assert band >= 3
        masks = calls.layer_masks(layer)[2 * N_STEPS :, 1]
        for t in range(N_STEPS):
            x = t * column + column // 2
            assert np.array_equal(pixels[0, x], RED) == starts[t], f"step {t}"
            for module in range(n):
                bright = pixels[band + module * row_height + row_height // 2, x].sum() > 400
                assert bright == masks[t, module], f"layer {layer}, step {t}, module {module}"


def test_callback_custom_scalars_layout_has_one_chart_per_layer(trained_logdir):
    events = load_events(trained_logdir)
    (config,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(config.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    for layer, n in enumerate(NUM_MODULES):
        assert charts[f"layer {layer}: active fraction per module"] == [
            f"brims/layer{layer}/module{i}/active_frac" for i in range(n)
        ]


def test_callback_log_interval_skips_rollouts(tmp_path):
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    model = tiny_ppo(env, tensorboard_log=str(tmp_path))
    model.learn(3 * ROLLOUT, callback=ModuleActivationCallback(log_interval=2))
    events = load_events(run_dir(tmp_path))
    # Rollouts 1 and 3 are recorded; rollout 2 runs without a recorder.
    assert sorted(scalar_values(events, "brims/layer0/module0/active_frac")) == [ROLLOUT, 3 * ROLLOUT]
    assert sorted(scalar_values(events, "time/fps")) == [ROLLOUT, 2 * ROLLOUT, 3 * ROLLOUT]
    env.close()


def test_callback_refuses_a_non_brims_policy_and_bad_options():
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=N_STEPS, batch_size=ROLLOUT, seed=0)
    with pytest.raises(ValueError, match="RecurrentActorCriticPolicy"):
        model.learn(ROLLOUT, callback=ModuleActivationCallback())
    brims_model = tiny_ppo(env)
    with pytest.raises(ValueError, match="heatmap_env=2"):
        brims_model.learn(ROLLOUT, callback=ModuleActivationCallback(heatmap_env=2))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="log_interval"):
            ModuleActivationCallback(log_interval=bad)
    with pytest.raises(ValueError, match="heatmap_env"):
        ModuleActivationCallback(heatmap_env=-1)
    env.close()


def test_callback_on_pong_with_the_cnn_policy(tmp_path):
    env = envs.make_env("pong", n_envs=2, seed=0)
    model = RecurrentPPO(
        "CnnBrimsPolicy", env, n_steps=16, batch_size=32, n_epochs=1, seed=0,
        policy_kwargs=TINY_BRIMS, tensorboard_log=str(tmp_path),
    )
    model.learn(32, callback=ModuleActivationCallback())
    events = load_events(run_dir(tmp_path))
    values = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("brims/")}
    for layer, (k, n) in enumerate(zip(TOP_K, NUM_MODULES)):
        check_layer_invariants(values, layer, k, n, has_top_down=layer == 0)
    assert len(events.Tags()["images"]) == 2
    env.close()


def _served_port(server: subprocess.Popen, lines: queue.Queue, deadline: float) -> int:
    """The port a ``tensorboard --port 0`` server bound, read from its "TensorBoard ... at
    http://host:PORT/" line on stderr (``lines``; the OS picks a free port: nothing to race for)."""
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert server.poll() is None, "tensorboard exited:\n" + "".join(seen)
            continue
        seen.append(line)
        match = re.search(r"TensorBoard \S+ at http://[^:/]+:(\d+)/", line)
        if match:
            return int(match.group(1))
    raise AssertionError("tensorboard did not say which port it serves on in time:\n" + "".join(seen))


def test_tensorboard_server_serves_the_tags(trained_logdir):
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(trained_logdir.parent),
         "--port", "0", "--host", "127.0.0.1", "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def fetch(route: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=5) as response:
            return json.loads(response.read())

    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in server.stderr], daemon=True)
    reader.start()
    try:
        # Generous: on a loaded 2-core machine tensorboard alone takes a minute to start.
        deadline = time.monotonic() + 240
        port = _served_port(server, lines, deadline)
        scalars = images = {}
        while time.monotonic() < deadline:
            assert server.poll() is None, "tensorboard exited"
            try:
                scalars = fetch("/data/plugin/scalars/tags")
                images = fetch("/data/plugin/images/tags")
            except OSError:
                pass
            if scalars.get(trained_logdir.name) and images.get(trained_logdir.name):
                break
            time.sleep(0.5)
        run = trained_logdir.name
        assert run in scalars, f"tensorboard served no scalars for run {run!r} in time: {scalars}"
        for layer, n in enumerate(NUM_MODULES):
            for i in range(n):
                assert f"brims/layer{layer}/module{i}/active_frac" in scalars[run]
            assert f"brims/layer{layer}/switch_rate" in scalars[run]
            assert f"brims/layer{layer}/activation_heatmap" in images[run]
        layout = fetch("/data/plugin/custom_scalars/layout")
        titles = [chart["title"] for category in layout["category"] for chart in category["chart"]]
        assert "layer 1: active fraction per module" in titles
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        reader.join(timeout=10)
        server.stderr.close()


# --- The recorder and the statistics -----------------------------------------------------


def test_step_statistics_by_hand():
    # One env, 2 modules, top-1: active sets 0, 0, 1 | (new episode) 0, 0.
    active = [0, 0, 1, 0, 0]
    mask = torch.nn.functional.one_hot(torch.tensor(active), 2).bool().view(5, 1, 2)
    attention = torch.tensor([0.5, 0.25, 0.25]).expand(5, 1, 2, 3)
    starts = np.array([[True], [False], [False], [True], [False]])
    steps = step_statistics(mask, attention, starts)
    # Comparable pairs: 0->1 (same), 1->2 (switch), 3->4 (same); 2->3 crosses an episode start.
    assert steps.switches.tolist() == [0, 0, 1, 0, 0]
    assert steps.pairs.tolist() == [0, 1, 1, 0, 1]
    summary = summarize(steps, mask)
    assert summary.switch_rate == pytest.approx(1 / 3)
    assert summary.active_frac.tolist() == pytest.approx([0.8, 0.2])
    assert summary.usage_entropy == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))
    assert summary.usage_counts.tolist() == [4, 1]
    assert summary.attention.tolist() == pytest.approx([0.5, 0.25, 0.25])
    np.testing.assert_allclose(summary.coactivation, [[0.8, 0.0], [0.0, 0.2]], atol=1e-6)
    # Without episode starts every consecutive pair counts.
    assert summarize(step_statistics(mask, attention), mask).switch_rate == pytest.approx(2 / 4)


def test_recorder_keeps_the_acting_record_of_each_step():
    def info(value: bool, batch: int = 2) -> BrimsInfo:
        return BrimsInfo(masks=[torch.full((1, batch, 3), value)], input_attention=[torch.zeros(1, batch, 3, 3)])

    recorder = ActivationRecorder()
    recorder.record(info(True))
    recorder.record(info(False, batch=1))  # e.g. an evaluation predict() later in the same step: dropped
    recorder.end_step(np.array([True, False]))
    recorder.end_step(np.array([False, False]))  # nothing recorded since: no step added
    recorder.record(info(False))
    recorder.end_step(np.array([False, True]))
    recorder.record(info(True))  # never committed
    assert recorder.num_steps == 2
    (masks,) = recorder.masks()
    assert masks[:, 0, 0].tolist() == [True, False]
    assert recorder.episode_starts().tolist() == [[True, False], [False, True]]
    recorder.reset()
    assert recorder.num_steps == 0
    with pytest.raises(ValueError, match="no activations recorded"):
        recorder.statistics()


def test_heatmap_and_coactivation_pixels():
    mask = np.array([[True, False], [False, True], [True, False]])
    image = activation_heatmap(mask, np.array([True, False, True]), cell_height=10, max_width=30)
    band, cell_width = 5, 10
    assert image.shape == (band + 2 * 10, 3 * cell_width, 3)
    # Sample the middle of each cell: active bright, inactive dark.
    for t in range(3):
        for module in range(2):
            pixel = image[band + module * 10 + 4, t * cell_width + 5]
            assert (pixel.sum() > 400) == mask[t, module]
    red = (image[0, :, 0] > 200) & (image[0, :, 1] < 60)
    assert red.tolist() == [True] * 10 + [False] * 10 + [True] * 10
    matrix = coactivation_image(np.array([[1.0, 0.0], [0.0, 0.5]]), cell=4)
    assert matrix.shape == (8, 8, 3) and matrix[0, 0, 0] == 255 and matrix[0, 4, 0] == 0 and matrix[4, 4, 0] == 128


# --- run_analysis ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("analysis")
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    model = tiny_ppo(env)
    eval_env = envs.make_env(CUE, n_envs=N_ENVS, seed=1)
    calls = CoreCalls(model.policy.lstm_actor)
    path = run_analysis(model, eval_env, n_episodes=5, out_dir=out_dir)
    calls.handle.remove()
    env.close()
    eval_env.close()
    return out_dir, path, calls


def test_run_analysis_npz_is_aligned_on_the_step_axis(analysis):
    out_dir, path, _ = analysis
    assert path == out_dir / "analysis.npz"
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("events.")) == ["analysis.npz"]
    data = np.load(path)
    steps = data["actions"].shape[0]
    assert data["actions"].shape == (steps, N_ENVS)
    for key in ("rewards", "dones", "episode_start"):
        assert data[key].shape == (steps, N_ENVS)
    assert data["episode_start"][0].all()
    assert np.array_equal(data["episode_start"][1:], data["dones"][:-1])
    # CueMemory pays only on the query step, which ends the episode: rewards sit on dones.
    assert not (data["rewards"] != 0)[~data["dones"]].any()
    assert len(data["episode_returns"]) == 5 and len(data["episode_lengths"]) == 5
    assert data["num_modules"].tolist() == NUM_MODULES and data["top_k"].tolist() == TOP_K
    assert data["slots"].tolist() == list(SLOTS)
    for layer, (k, n) in enumerate(zip(TOP_K, NUM_MODULES)):
        masks = data[f"layer{layer}_masks"]
        attention = data[f"layer{layer}_attention"]
        assert masks.dtype == bool and masks.shape == (steps, N_ENVS, n)
        assert attention.shape == (steps, N_ENVS, n, 3)
        assert (masks.sum(-1) == k).all()
        np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
        flat = masks.reshape(-1, n).astype(float)
        np.testing.assert_allclose(data[f"layer{layer}_coactivation"], flat.T @ flat / len(flat), atol=1e-6)


def test_run_analysis_is_reproducible(analysis, tmp_path):
    # Deterministic play of the same weights on the same env seed gives the same trace.
    _, path, _ = analysis
    data = np.load(path)
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    model = tiny_ppo(env)
    eval_env = envs.make_env(CUE, n_envs=N_ENVS, seed=1)
    again = np.load(run_analysis(model, eval_env, n_episodes=5, out_dir=tmp_path))
    for key in ("layer0_masks", "layer1_masks", "actions", "dones"):
        assert np.array_equal(again[key], data[key])
    env.close()
    eval_env.close()


def test_run_analysis_matches_the_policys_own_acting_calls(analysis):
    """Every npz row is the acting call of that step: the same masks and the same resets as
    the core itself saw; the per-step switch rate is recomputed from them."""
    out_dir, path, calls = analysis
    data = np.load(path)
    steps = data["actions"].shape[0]
    assert len(calls.masks) == steps
    starts = calls.episode_starts()
    assert starts[1:].any()
    assert np.array_equal(data["episode_start"], starts)
    events = load_events(out_dir)
    for layer in range(len(NUM_MODULES)):
        masks = calls.layer_masks(layer)
        assert np.array_equal(data[f"layer{layer}_masks"], masks)
        switch = scalar_values(events, f"brims/layer{layer}/switch_rate")
        for t in range(1, steps):
            comparable = ~starts[t]
            if comparable.any():
                changed = (masks[t] != masks[t - 1]).any(-1)
                assert switch[t] == pytest.approx(changed[comparable].mean(), abs=1e-6), t
            else:
                assert t not in switch
        assert 0 not in switch


def test_run_analysis_tensorboard_traces(analysis):
    out_dir, path, _ = analysis
    data = np.load(path)
    steps = data["actions"].shape[0]
    events = load_events(out_dir)
    tags = events.Tags()
    for layer, (k, n) in enumerate(zip(TOP_K, NUM_MODULES)):
        assert f"brims/layer{layer}/coactivation" in tags["images"]
        assert f"brims/layer{layer}/activation_heatmap" in tags["images"]
        (coactivation,) = events.Images(f"brims/layer{layer}/coactivation")
        assert (coactivation.height, coactivation.width) == (24 * n, 24 * n)
        for i in range(n):
            trace = scalar_values(events, f"brims/layer{layer}/module{i}/active_frac")
            assert sorted(trace) == list(range(steps))
            expected = data[f"layer{layer}_masks"][:, :, i].mean(1)
            np.testing.assert_allclose([trace[t] for t in range(steps)], expected, atol=1e-6)
        for t in range(steps):
            values = {tag: v for tag in tags["scalars"] if tag.startswith(f"brims/layer{layer}/")
                      for v in [scalar_values(events, tag).get(t)] if v is not None}
            check_layer_invariants(values, layer, k, n, has_top_down=layer == 0)
    assert len(scalar_values(events, "analysis/episode_return")) == 5


def test_run_analysis_refuses_bad_input(tmp_path):
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    lstm_model = RecurrentPPO("MlpLstmPolicy", env, n_steps=N_STEPS, batch_size=ROLLOUT, seed=0)
    with pytest.raises(ValueError, match="RecurrentActorCriticPolicy"):
        run_analysis(lstm_model, env, 1, tmp_path / "lstm")
    model = tiny_ppo(env)
    with pytest.raises(ValueError, match="n_episodes=0"):
        run_analysis(model, env, 0, tmp_path / "zero")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        run_analysis(model, env, 1, a_file)
    assert not (tmp_path / "lstm").exists() and not (tmp_path / "zero").exists()
    env.close()
