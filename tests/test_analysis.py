"""Module-activity analysis: the recorder, the TensorBoard callback and ``run_analysis``.

Event files are read back with TensorBoard's own ``EventAccumulator`` (and, once, through a
real ``tensorboard`` server's HTTP API).
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image as PILImage
from stable_baselines3.common.vec_env import VecEnvWrapper
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

import envs
from agents import RecurrentPPO
from agents.analyze import run_analysis
from brims_rl.activations import (
    SERIES_DIR,
    SLOTS,
    ActivationRecorder,
    activation_heatmap,
    coactivation_image,
    step_statistics,
    summarize,
)
from brims_rl.callbacks import ModuleActivationCallback, TopKWarmup
from brims_rl.core import BrimsInfo
from brims_rl.figures import (
    ACTIVE,
    COACTIVATION_COLOURMAP,
    EPISODE_START,
    INACTIVE,
    REWARD_DOWN,
    REWARD_UP,
    USAGE_COLOURMAP,
    activation_layout,
    coactivation_layout,
    usage_layout,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
from tensorboard_screenshots import serve_tensorboard  # noqa: E402  (the server the README's screenshots use)

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


def decoded(image_event) -> np.ndarray:
    """An image event's pixels, int ``(H, W, 3)`` RGB."""
    return np.asarray(PILImage.open(io.BytesIO(image_event.encoded_image_string)).convert("RGB")).astype(int)


def rgb(colour) -> np.ndarray:
    """``"#rrggbb"`` or a matplotlib RGBA tuple in [0, 1] as int RGB."""
    if isinstance(colour, str):
        return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.rint(np.asarray(colour[:3]) * 255).astype(int)


def assert_colour(pixel: np.ndarray, colour, what: str, tolerance: int = 40) -> None:
    assert np.abs(pixel - rgb(colour)).max() <= tolerance, f"{what}: pixel {pixel.tolist()}, expected {rgb(colour).tolist()}"


class RewardLog(VecEnvWrapper):
    """Keeps the rewards of every step, ``(B,)`` each, as the env returned them."""

    def __init__(self, venv) -> None:
        super().__init__(venv)
        self.rewards: list[np.ndarray] = []

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.rewards.append(np.array(rewards, copy=True))
        return obs, rewards, dones, infos


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
def trained(tmp_path_factory) -> tuple[Path, CoreCalls, np.ndarray]:
    """Three rollouts of a tiny BRIMs PPO on CueMemory, logged by the callback, the actor
    core's own record of its acting calls and the env's rewards ``(steps, B)``."""
    tensorboard_log = tmp_path_factory.mktemp("tb")
    env = RewardLog(envs.make_env(CUE, n_envs=N_ENVS, seed=0))
    model = tiny_ppo(env, tensorboard_log=str(tensorboard_log))
    calls = CoreCalls(model.policy.lstm_actor)
    callback = ModuleActivationCallback(heatmap_env=1)
    model.learn(3 * ROLLOUT, callback=callback)
    calls.handle.remove()
    # Only the rollouts were recorded: the recorder is off during (and after) the updates.
    assert model.policy.activation_recorder is None
    env.close()
    return run_dir(tensorboard_log), calls, np.stack(env.rewards)


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
        expected |= {f"brims/layer{layer}/dead_modules"}
    assert expected <= set(tags["scalars"])
    # No module that does not exist.
    assert not any(tag.startswith("brims/layer1/module3") or tag.startswith("brims/layer2") for tag in tags["scalars"])
    assert set(tags["images"]) == {
        f"brims/layer{layer}/{name}" for layer in range(2) for name in ("activation_heatmap", "module_usage")
    }
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
    logdir, calls, _ = trained
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


def test_callback_heatmap_shows_the_policys_masks_episode_starts_and_rewards(trained):
    """The last rollout's heatmap of env 1 (the geometry of ``activation_layout``: module rows
    of 22 logical px under a reward track): each cell bright exactly where the core updated
    that module, an episode-start line exactly where the core reset env 1, a reward bar
    exactly where the env paid env 1."""
    logdir, calls, rewards = trained
    events = load_events(logdir)
    starts = calls.episode_starts()[2 * N_STEPS :, 1]
    paid = rewards[2 * N_STEPS :, 1]
    assert starts[1:].any() and (paid != 0).any()
    for layer, n in enumerate(NUM_MODULES):
        images = events.Images(f"brims/layer{layer}/activation_heatmap")
        assert len(images) == 3
        pixels = decoded(images[-1])
        layout = activation_layout(n, with_rewards=True)
        assert pixels.shape[:2] == (layout.height * 2, layout.width * 2)
        masks = calls.layer_masks(layer)[2 * N_STEPS :, 1]
        track = layout.rewards.pixels()
        zero = int(track.top + track.height / 2)
        for t in range(N_STEPS):
            for module in range(n):
                x, y = layout.cell_centre(t, module, N_STEPS)
                colour = ACTIVE if masks[t, module] else INACTIVE
                assert_colour(pixels[y, x], colour, f"layer {layer}, step {t}, module {module}")
            if t > 0:  # step 0's line lies on the axis' edge
                edge = pixels[layout.cell_centre(t, 0, N_STEPS)[1], layout.step_edge(t, N_STEPS)]
                is_line = np.abs(edge - rgb(EPISODE_START)).max() <= 40
                assert is_line == starts[t], f"layer {layer}, step {t}: episode start {starts[t]}, pixel {edge.tolist()}"
            x = layout.cell_centre(t, 0, N_STEPS)[0]
            above, below = pixels[zero - 4, x], pixels[zero + 4, x]
            assert (np.abs(above - rgb(REWARD_UP)).max() <= 40) == (paid[t] > 0), f"step {t}, reward {paid[t]}"
            assert (np.abs(below - rgb(REWARD_DOWN)).max() <= 40) == (paid[t] < 0), f"step {t}, reward {paid[t]}"


def test_callback_module_usage_image_colours_each_rollouts_fractions(trained_logdir):
    """The latest usage image has one column per logged rollout, each cell the colour of
    that rollout's active fraction for that module; dead_modules counts fractions < 5%."""
    events = load_events(trained_logdir)
    colours = colormaps[USAGE_COLOURMAP]
    for layer, n in enumerate(NUM_MODULES):
        images = events.Images(f"brims/layer{layer}/module_usage")
        assert [image.step for image in images] == [ROLLOUT, 2 * ROLLOUT, 3 * ROLLOUT]
        pixels = decoded(images[-1])
        layout = usage_layout(n, rollouts=3)
        assert pixels.shape[:2] == (layout.height * 2, layout.width * 2)
        fractions = {i: scalar_values(events, f"brims/layer{layer}/module{i}/active_frac") for i in range(n)}
        for column, step in enumerate((ROLLOUT, 2 * ROLLOUT, 3 * ROLLOUT)):
            for module in range(n):
                box = layout.cell_box(module, column)
                pixel = pixels[int(box.top + box.height / 2), int(box.left + box.width / 2)]
                assert_colour(pixel, colours(fractions[module][step]), f"layer {layer}, rollout {column}, m{module}", 6)
            dead = scalar_values(events, f"brims/layer{layer}/dead_modules")[step]
            assert dead == sum(fractions[i][step] < 0.05 for i in range(n))


def series_events(logdir: Path) -> dict[str, EventAccumulator]:
    """The series runs under ``logdir/brims/``, by run name."""
    return {path.name: load_events(path) for path in sorted((logdir / SERIES_DIR).iterdir())}


def test_callback_series_runs_give_each_module_and_slot_its_own_run(trained_logdir):
    """TensorBoard colours lines by run: each module and each attention slot is a run of its
    own holding the main run's values; a layer without top-down input writes no top_down series."""
    main = load_events(trained_logdir)
    series = series_events(trained_logdir)
    assert sorted(series) == sorted([f"m{i}" for i in range(max(NUM_MODULES))] + list(SLOTS))
    for layer, n in enumerate(NUM_MODULES):
        for i in range(n):
            values = scalar_values(series[f"m{i}"], f"brims/layer{layer}/active_frac")
            assert values == pytest.approx(scalar_values(main, f"brims/layer{layer}/module{i}/active_frac"))
        for slot in SLOTS:
            tag = f"brims/layer{layer}/attention"
            if slot == "top_down" and layer == 1:  # the top layer has no top-down input
                assert tag not in series[slot].Tags()["scalars"]
                continue
            values = scalar_values(series[slot], tag)
            assert values == pytest.approx(scalar_values(main, f"brims/layer{layer}/attention/{slot}"))
            assert any(value > 0 for value in values.values()), f"{slot} of layer {layer} is always 0"
    assert "brims/layer1/active_frac" not in series["m3"].Tags()["scalars"]  # layer 1 has 3 modules


def test_callback_custom_scalars_layout_has_one_category_per_layer(trained_logdir):
    """One category per layer; every chart's tag regexes match, as TensorBoard's plugin
    matches them (``re.match`` per run), exactly the series meant: one run per module, one
    per live attention slot, the switch rate."""
    events = load_events(trained_logdir)
    (config,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(config.tensor_proto.string_val[0])
    assert [category.title for category in layout.category] == ["BRIMs layer 0", "BRIMs layer 1"]
    runs = {".": main_tags(events)}
    runs.update({f"brims/{name}": main_tags(run) for name, run in series_events(trained_logdir).items()})

    def matched(chart) -> set[tuple[str, str]]:
        return {(run, tag) for run, tags in runs.items() for tag in tags for regex in chart.multiline.tag if re.match(regex, tag)}

    for layer, (category, n) in enumerate(zip(layout.category, NUM_MODULES)):
        charts = {chart.title: matched(chart) for chart in category.chart}
        assert charts == {
            f"layer {layer}: active fraction per module": {(f"brims/m{i}", f"brims/layer{layer}/active_frac") for i in range(n)},
            f"layer {layer}: input attention per slot": {
                (f"brims/{slot}", f"brims/layer{layer}/attention") for slot in SLOTS if slot != "top_down" or layer == 0
            },
            f"layer {layer}: switch rate": {(".", f"brims/layer{layer}/switch_rate")},
        }


def main_tags(events: EventAccumulator) -> set[str]:
    return set(events.Tags()["scalars"])


def test_callback_log_interval_skips_rollouts(tmp_path):
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    model = tiny_ppo(env, tensorboard_log=str(tmp_path))
    model.learn(3 * ROLLOUT, callback=ModuleActivationCallback(log_interval=2))
    events = load_events(run_dir(tmp_path))
    # Rollouts 1 and 3 are recorded; rollout 2 runs without a recorder.
    assert sorted(scalar_values(events, "brims/layer0/module0/active_frac")) == [ROLLOUT, 3 * ROLLOUT]
    assert sorted(scalar_values(events, "time/fps")) == [ROLLOUT, 2 * ROLLOUT, 3 * ROLLOUT]
    env.close()


def test_top_k_warmup_updates_every_module_then_the_configured_top_k(tmp_path):
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    model = tiny_ppo(env, tensorboard_log=str(tmp_path / "tb"))
    # The third rollout starts at 2 * ROLLOUT steps, where the warm-up ends.
    model.learn(4 * ROLLOUT, callback=[TopKWarmup(2 * ROLLOUT), ModuleActivationCallback()])
    events = load_events(run_dir(tmp_path / "tb"))
    assert scalar_values(events, "brims/dense_warmup") == {ROLLOUT: 1.0, 2 * ROLLOUT: 1.0, 3 * ROLLOUT: 0.0, 4 * ROLLOUT: 0.0}
    for layer, (modules, top_k) in enumerate(zip(NUM_MODULES, TOP_K)):
        fractions = [scalar_values(events, f"brims/layer{layer}/module{i}/active_frac") for i in range(modules)]
        updated_per_step = {step: sum(f[step] for f in fractions) for step in fractions[0]}
        expected = {ROLLOUT: modules, 2 * ROLLOUT: modules, 3 * ROLLOUT: top_k, 4 * ROLLOUT: top_k}
        assert updated_per_step == pytest.approx(expected)
    # After training, and in the saved model, the configured selection.
    assert model.policy.lstm_actor.top_k == TOP_K
    assert [layer.top_k for layer in model.policy.lstm_actor.layers] == TOP_K
    model.save(tmp_path / "model.zip")
    assert RecurrentPPO.load(tmp_path / "model.zip", device="cpu").policy.lstm_actor.top_k == TOP_K
    # Resumed past the warm-up, it never goes dense; resumed inside it, it finishes the warm-up.
    for warmup, expected in [(2 * ROLLOUT, [TOP_K]), (5 * ROLLOUT, [NUM_MODULES, TOP_K])]:
        resumed = RecurrentPPO.load(tmp_path / "model.zip", env=env, device="cpu")
        seen: list[list[int]] = []
        hook = resumed.policy.lstm_actor.register_forward_pre_hook(lambda core, args: seen.append(list(core.top_k)))
        resumed.learn(2 * ROLLOUT, callback=TopKWarmup(warmup), reset_num_timesteps=False)
        hook.remove()
        assert [k for i, k in enumerate(seen) if i == 0 or k != seen[i - 1]] == expected
        assert resumed.policy.lstm_actor.top_k == TOP_K
    env.close()


def test_top_k_warmup_refuses_a_non_brims_policy_and_bad_steps():
    env = envs.make_env(CUE, n_envs=N_ENVS, seed=0)
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=N_STEPS, batch_size=ROLLOUT, seed=0)
    with pytest.raises(ValueError, match="TopKWarmup needs a BRIMs policy.*RecurrentActorCriticPolicy"):
        model.learn(ROLLOUT, callback=TopKWarmup(ROLLOUT))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="warmup_steps"):
            TopKWarmup(bad)
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
    assert len(events.Tags()["images"]) == 4  # heatmap and module usage of each layer
    env.close()


def test_tensorboard_server_serves_the_tags(trained_logdir):
    def fetch(route: str):
        with urllib.request.urlopen(f"{board.url}{route}", timeout=5) as response:
            return json.loads(response.read())

    run = trained_logdir.name
    with serve_tensorboard(trained_logdir.parent, extra_args=("--reload_interval", "1")) as board:
        # Generous: on a loaded 2-core machine tensorboard alone takes a minute to start.
        deadline = time.monotonic() + 240
        scalars = images = {}
        while time.monotonic() < deadline:
            assert board.process.poll() is None, "tensorboard exited"
            try:
                scalars = fetch("/data/plugin/scalars/tags")
                images = fetch("/data/plugin/images/tags")
            except OSError:
                pass
            if scalars.get(run) and images.get(run) and scalars.get(f"{run}/brims/m0"):
                break
            time.sleep(0.5)
        assert run in scalars, f"tensorboard served no scalars for run {run!r} in time: {scalars}"
        for layer, n in enumerate(NUM_MODULES):
            for i in range(n):
                assert f"brims/layer{layer}/module{i}/active_frac" in scalars[run]
                assert f"brims/layer{layer}/active_frac" in scalars[f"{run}/brims/m{i}"]
            assert f"brims/layer{layer}/switch_rate" in scalars[run]
            assert f"brims/layer{layer}/activation_heatmap" in images[run]
            assert f"brims/layer{layer}/module_usage" in images[run]
        layout = fetch("/data/plugin/custom_scalars/layout")
        titles = [chart["title"] for category in layout["category"] for chart in category["chart"]]
        assert "layer 1: active fraction per module" in titles
    assert board.process.poll() is not None, "the server outlived the block"


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


@pytest.mark.parametrize(
    "counts, buckets",
    [
        ([3, 0, 4], [(-0.5, 0.5, 3), (0.5, 1.5, 0), (1.5, 2.5, 4)]),
        # Unused modules at either end are dropped by TensorBoard; the rest keep width 1.
        ([0, 5, 0, 7, 0, 0], [(0.5, 1.5, 5), (1.5, 2.5, 0), (2.5, 3.5, 7)]),
        ([0, 0, 0, 2], [(2.5, 3.5, 2)]),
    ],
)
def test_usage_histogram_buckets_are_centred_on_modules_as_tensorboard_draws_them(tmp_path, counts, buckets):
    """Read back, then converted by TensorBoard's own ``data_compat`` (what its histogram
    plugin serves): every bucket is [i - 0.5, i + 0.5] around its module id i."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
    from tensorboard.data_compat import migrate_value
    from tensorboard.util.tensor_util import make_ndarray
    from torch.utils.tensorboard import SummaryWriter

    from brims_rl.activations import write_usage_histogram

    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        write_usage_histogram(writer, "usage", np.array(counts), step=0)
    (event,) = load_events(tmp_path).Histograms("usage")
    value = event.histogram_value
    proto = HistogramProto(
        min=value.min, max=value.max, num=value.num, sum=value.sum, sum_squares=value.sum_squares,
        bucket_limit=value.bucket_limit, bucket=value.bucket,
    )
    served = make_ndarray(migrate_value(Summary.Value(tag="usage", histo=proto)).tensor)
    assert [tuple(row) for row in served.tolist()] == buckets


# --- brims-rl record --modules ---------------------------------------------------------------


def test_film_with_modules_draws_each_steps_modules_under_the_screen_it_acted_on(tmp_path):
    """Every GIF frame: the screen of the observation step t acted on (frame 0: the reset
    screen), enlarged 3x, over a panel whose module boxes are lit exactly where the actor
    core updated that module at step t, for every layer (top layer first)."""
    from PIL import ImageSequence

    from agents.record import film
    from brims_rl.figures import PANEL_ROW, panel_module_box

    steps = 12
    env = envs.make_env("pong", n_envs=1, seed=3, backend="sb3")
    model = RecurrentPPO("CnnBrimsPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs=TINY_BRIMS)
    calls = CoreCalls(model.policy.lstm_actor)
    frames_written, _ = film(model, env, tmp_path / "modules.gif", max_steps=steps, fps=10, modules=True)
    calls.handle.remove()
    env.close()
    reset_env = envs.make_env("pong", n_envs=1, seed=3, backend="sb3")
    reset_env.reset()
    reset_screen = np.repeat(np.repeat(reset_env.get_images()[0], 3, axis=0), 3, axis=1).astype(int)
    reset_env.close()

    with PILImage.open(tmp_path / "modules.gif") as gif:
        frames = [np.asarray(frame.convert("RGB")).astype(int) for frame in ImageSequence.Iterator(gif)]
    assert frames_written == steps and len(frames) == steps and len(calls.masks) == steps
    screen_height = reset_screen.shape[0]
    assert frames[0].shape == (screen_height + len(NUM_MODULES) * PANEL_ROW + 40, 480, 3)
    assert np.abs(frames[0][:screen_height] - reset_screen).mean() < 2
    for t, frame in enumerate(frames):
        panel = frame[screen_height:]
        for row, layer in enumerate(reversed(range(len(NUM_MODULES)))):
            mask = calls.masks[t][layer][0, 0]
            assert mask.sum() == TOP_K[layer]
            for module, active in enumerate(mask):
                x0, y0, x1, y1 = panel_module_box(row, module, len(mask), 480)
                colour = ACTIVE if active else INACTIVE
                assert_colour(panel[y1 - 5, x1 - 6], colour, f"frame {t}, layer {layer}, m{module}", 12)


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
    files = [p.name for p in out_dir.iterdir() if p.is_file() and not p.name.startswith("events.")]
    assert files == ["analysis.npz"] and (out_dir / SERIES_DIR).is_dir()
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
    series = series_events(out_dir)
    tags = events.Tags()
    for layer, (k, n) in enumerate(zip(TOP_K, NUM_MODULES)):
        assert f"brims/layer{layer}/coactivation" in tags["images"]
        assert f"brims/layer{layer}/activation_heatmap" in tags["images"]
        for i in range(n):
            trace = scalar_values(events, f"brims/layer{layer}/module{i}/active_frac")
            assert sorted(trace) == list(range(steps))
            expected = data[f"layer{layer}_masks"][:, :, i].mean(1)
            np.testing.assert_allclose([trace[t] for t in range(steps)], expected, atol=1e-6)
            assert scalar_values(series[f"m{i}"], f"brims/layer{layer}/active_frac") == pytest.approx(trace)
        for slot in SLOTS:
            main = scalar_values(events, f"brims/layer{layer}/attention/{slot}")
            if slot == "top_down" and layer == 1:
                assert f"brims/layer{layer}/attention" not in series[slot].Tags()["scalars"]
            else:
                assert scalar_values(series[slot], f"brims/layer{layer}/attention") == pytest.approx(main)
        for t in range(steps):
            values = {tag: v for tag in tags["scalars"] if tag.startswith(f"brims/layer{layer}/")
                      for v in [scalar_values(events, tag).get(t)] if v is not None}
            check_layer_invariants(values, layer, k, n, has_top_down=layer == 0)
    assert len(scalar_values(events, "analysis/episode_return")) == 5


def test_run_analysis_heatmap_and_coactivation_figures(analysis):
    """Env 0's heatmap: every cell as the npz masks say, every reward bar where env 0 was
    paid; the co-activation figure: each cell (sampled off its printed value) in the
    colour map's colour of the npz matrix."""
    out_dir, path, _ = analysis
    data = np.load(path)
    steps = data["actions"].shape[0]
    assert steps <= 256  # one heatmap image
    events = load_events(out_dir)
    colours = colormaps[COACTIVATION_COLOURMAP]
    paid = data["rewards"][:, 0]
    assert (paid != 0).any()
    for layer, n in enumerate(NUM_MODULES):
        (heatmap,) = events.Images(f"brims/layer{layer}/activation_heatmap")
        pixels = decoded(heatmap)
        layout = activation_layout(n, with_rewards=True)
        assert pixels.shape[:2] == (layout.height * 2, layout.width * 2)
        masks = data[f"layer{layer}_masks"][:, 0]
        track = layout.rewards.pixels()
        zero = int(track.top + track.height / 2)
        for t in range(steps):
            for module in range(n):
                x, y = layout.cell_centre(t, module, steps)
                assert_colour(pixels[y, x], ACTIVE if masks[t, module] else INACTIVE, f"step {t}, m{module}")
            bar = pixels[zero - 4, x] if paid[t] > 0 else pixels[zero + 4, x]
            assert (np.abs(bar - rgb(REWARD_UP if paid[t] > 0 else REWARD_DOWN)).max() <= 40) == (paid[t] != 0), t

        (coactivation,) = events.Images(f"brims/layer{layer}/coactivation")
        pixels = decoded(coactivation)
        layout = coactivation_layout(n)
        assert pixels.shape[:2] == (layout.height * 2, layout.width * 2)
        matrix = data[f"layer{layer}_coactivation"]
        for i in range(n):
            for j in range(n):
                box = layout.cell_box(i, j)
                pixel = pixels[int(box.top + box.height / 5), int(box.left + box.width / 5)]
                assert_colour(pixel, colours(matrix[i, j]), f"layer {layer}, cell ({i}, {j})", 6)


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
