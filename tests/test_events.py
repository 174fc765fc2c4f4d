"""Event-aligned module analysis (``brims-rl analyze --events`` / ``--perturb``) and bursts.

Known events: on ``BrimsRL/CueMemory-v0`` (delay 5) the reward comes exactly at episode step 6
(the query answer) and the observation changes only at steps 1 (cue -> blank) and 6 (query);
a burst from :func:`envs.robustness.apply_burst` corrupts exactly the frames of its window.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

import envs
from agents import RecurrentPPO
from agents.analyze import run_analysis
from agents.events import (
    EventSettings,
    average,
    find_events,
    layer_step_values,
    parse_event_kinds,
    windows,
)
from agents.cli import main
from envs.robustness import apply_burst

CUE = "BrimsRL/CueMemory-v0"
DELAY = 5  # CueMemory's default: cue at step 0, query at step DELAY + 1, episode of DELAY + 2 steps
TINY_BRIMS = dict(hidden_size=24, num_layers=2, num_modules=[4, 3], top_k=[2, 1])
WINDOW = 3


def tiny_ppo(env, policy: str = "MlpBrimsPolicy") -> RecurrentPPO:
    return RecurrentPPO(policy, env, n_steps=16, batch_size=32, n_epochs=1, seed=0, policy_kwargs=TINY_BRIMS)


def test_windows_and_averages_by_hand():
    masks = np.array([[[1, 0]], [[0, 1]], [[0, 1]], [[1, 0]]], dtype=bool)  # (T=4, B=1, N=2)
    starts = np.array([[True], [False], [True], [False]])
    attention = np.zeros((4, 1, 2, 3), dtype=np.float32)
    attention[..., 1] = 1.0
    values = layer_step_values(masks, attention, starts)
    np.testing.assert_array_equal(values["switch"][:, 0], [np.nan, 1.0, np.nan, 1.0])
    np.testing.assert_array_equal(values["attention"][:, 0], [[0, 1, 0]] * 4)
    occurrences = np.array([[1, 0], [3, 0]])
    cut = windows(values["active"], occurrences, 1)
    np.testing.assert_array_equal(cut[0], [[1, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(cut[1], [[0, 1], [1, 0], [np.nan, np.nan]])
    mean, half, n = average(cut)
    np.testing.assert_allclose(mean, [[0.5, 0.5], [0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_array_equal(n, [[2, 2], [2, 2], [1, 1]])
    # Two values 1 and 0: std (n - 1) = sqrt(0.5), standard error 0.5; one value: no band.
    np.testing.assert_allclose(half[:2], 1.959964 * 0.5, rtol=1e-6)
    assert np.isnan(half[2]).all()
    mean, half, n = average(windows(values["switch"], occurrences, 1))
    np.testing.assert_array_equal(n, [0, 2, 0])
    assert mean[1] == 1.0 and np.isnan(mean[0]) and np.isnan(mean[2])


def test_find_events_kinds_and_threshold():
    rewards = np.array([[0, 1], [-1, 0], [0, 0]], dtype=np.float32)
    starts = np.array([[True, True], [False, False], [True, False]])
    change = np.array([[np.nan, np.nan], [5.0, 0.5], [np.nan, 2.0]])
    lost = np.array([[False, False], [False, False], [False, True]])
    episode_step = np.array([[0, 0], [1, 1], [0, 2]])
    found = find_events(("reward", "life_lost", "episode_start", "surprise", "perturbation"),
                        rewards, starts, change, lost, episode_step, surprise_threshold=1.0, perturb_at=2)
    assert found["reward"].tolist() == [[0, 1], [1, 0]]
    assert found["life_lost"].tolist() == [[2, 1]]
    assert found["episode_start"].tolist() == [[0, 0], [0, 1], [2, 0]]
    assert found["surprise"].tolist() == [[1, 0], [2, 1]]
    assert found["perturbation"].tolist() == [[2, 1]]
    assert parse_event_kinds("all") == ("reward", "life_lost", "episode_start", "surprise")
    assert parse_event_kinds("surprise, reward,surprise") == ("surprise", "reward")
    with pytest.raises(ValueError, match="'bogus' is unknown"):
        parse_event_kinds("reward,bogus")


@pytest.fixture(scope="module")
def cue_events(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("events")
    env = envs.make_env(CUE, n_envs=2, seed=1)
    model = tiny_ppo(env)
    settings = EventSettings(window=WINDOW, surprise_threshold=0.1)
    run_analysis(model, env, n_episodes=4, out_dir=out_dir, events=settings)
    env.close()
    return out_dir, np.load(out_dir / "analysis.npz"), np.load(out_dir / "events.npz")


def episode_steps(starts: np.ndarray) -> np.ndarray:
    steps = np.zeros(starts.shape, dtype=int)
    for t in range(1, len(starts)):
        steps[t] = np.where(starts[t], 0, steps[t - 1] + 1)
    return steps


def test_cue_memory_events_sit_on_the_exact_steps(cue_events):
    _, trace, events = cue_events
    starts = trace["episode_start"]
    steps = episode_steps(starts)
    found = {kind: {tuple(x) for x in events[f"{kind}_steps"].tolist()} for kind in events["kinds"].tolist()}
    answers = {(t, b) for t, b in np.argwhere(steps == DELAY + 1).tolist()}
    assert len(answers) >= 4 and found["reward"] == answers
    assert found["episode_start"] == {(t, b) for t, b in np.argwhere(starts).tolist()}
    # |one-hot cue - blank| and |blank - query flag| are both 1/3 of the 3 entries; blanks repeat.
    assert found["surprise"] == {(t, b) for t, b in np.argwhere((steps == 1) | (steps == DELAY + 1)).tolist()}
    assert found["life_lost"] == set()
    np.testing.assert_allclose(events["frame_change"][steps == 1], 1 / 3)
    assert float(events["surprise_threshold"]) == 0.1


def test_cue_memory_averages_match_a_hand_computation(cue_events):
    _, trace, events = cue_events
    starts = trace["episode_start"]
    occurrences = events["reward_steps"].tolist()
    total = len(starts)
    for layer in range(2):
        masks = trace[f"layer{layer}_masks"]
        attention = trace[f"layer{layer}_attention"]
        for w, offset in enumerate(range(-WINDOW, WINDOW + 1)):
            active, switches, shares = [], [], []
            for t, b in occurrences:
                row = t + offset
                if not 0 <= row < total:
                    continue
                active.append(masks[row, b].astype(float))
                shares.append(attention[row, b].mean(0))
                if row > 0 and not starts[row, b]:
                    switches.append(float((masks[row, b] != masks[row - 1, b]).any()))
            key = f"reward_layer{layer}"
            np.testing.assert_allclose(events[f"{key}_active_mean"][w], np.mean(active, 0), atol=1e-12)
            np.testing.assert_allclose(events[f"{key}_attention_mean"][w], np.mean(shares, 0), atol=1e-6)
            assert events[f"{key}_active_n"][w].tolist() == [len(active)] * masks.shape[-1]
            assert events[f"{key}_switch_n"][w] == len(switches)
            if switches:
                assert events[f"{key}_switch_mean"][w] == pytest.approx(np.mean(switches))
            else:
                assert np.isnan(events[f"{key}_switch_mean"][w])
        # The answer ends the episode: the step after it starts a new one (no switch there).
        assert events[f"reward_layer{layer}_switch_n"][WINDOW + 1] == 0


def test_cue_memory_event_files(cue_events):
    out_dir, _, events = cue_events
    with open(out_dir / "events.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked = [r for r in rows if (r["event"], r["layer"], r["quantity"], r["index"], r["offset"]) ==
              ("reward", "1", "active", "module2", "0")]
    assert len(picked) == 1
    assert float(picked[0]["mean"]) == pytest.approx(events["reward_layer1_active_mean"][WINDOW, 2], abs=1e-6)
    assert int(picked[0]["n"]) == len(events["reward_steps"])
    assert {r["event"] for r in rows} == {"reward", "life_lost", "episode_start", "surprise"}
    pngs = sorted(p.name for p in out_dir.glob("events_*.png"))
    assert pngs == ["events_episode_start.png", "events_reward.png", "events_surprise.png"]  # no life lost here
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = set()
    for path in out_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"images": 0})
        accumulator.Reload()
        images |= set(accumulator.Tags()["images"])
    assert {"events/reward", "events/episode_start", "events/surprise"} <= images


def pong_frames(env, actions, steps: int) -> np.ndarray:
    """Newest frames of env 0 for episode steps 0 .. steps - 1 (fixed actions)."""
    frames = [env.reset()[0, -1].copy()]
    for t in range(steps - 1):
        obs, _, dones, _ = env.step(np.array([actions[t]]))
        assert not dones[0]
        frames.append(obs[0, -1].copy())
    env.close()
    return np.stack(frames)


@pytest.mark.parametrize("kind", ["flicker", "noise", "occlusion"])
def test_burst_corrupts_exactly_its_window(kind):
    actions = np.random.default_rng(0).integers(0, 6, size=12)
    clean = pong_frames(envs.make_env("pong", n_envs=1, seed=0), actions, 12)
    burst = pong_frames(apply_burst(envs.make_env("pong", n_envs=1, seed=0), kind, at=4, length=3), actions, 12)
    differs = (clean != burst).any(axis=(1, 2))
    assert differs.tolist() == [False] * 4 + [True] * 3 + [False] * 5
    if kind == "flicker":
        assert not burst[4:7].any()


def test_burst_refuses_bad_settings():
    env = envs.make_env(CUE, n_envs=1, seed=0)
    with pytest.raises(ValueError, match="uint8 frame-stack"):
        apply_burst(env, "noise", at=1, length=1)
    env.close()
    with pytest.raises(ValueError, match="burst at=-1 is invalid"):
        apply_burst(None, "noise", at=-1, length=1)
    with pytest.raises(ValueError, match="'smear' is unknown"):
        apply_burst(None, "smear", at=1, length=1)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--perturb", "flicker", "--at", "-1", "--length", "3"], "--at -1 is invalid: it must be an integer >= 0"),
        (["--perturb", "flicker", "--at", "2", "--length", "0"], "--length 0 is invalid: it must be an integer >= 1"),
        (["--perturb", "flicker", "--at", "x", "--length", "3"], "--at 'x' is invalid"),
        (["--events", "reward,bogus"], "event kind 'bogus' is unknown"),
        (["--at", "3"], "--at only apply with --perturb"),
        (["--perturb", "smear", "--at", "3", "--length", "2"], "--perturb 'smear' is unknown"),
        (["--perturb", "noise", "--at", "3"], "needs --at STEP and --length L"),
        (["--events", "--window", "0"], "--window 0 is invalid"),
        (["--window", "5"], "--window only apply with --events"),
    ],
)
def test_cli_bad_event_options_are_one_line_exit_2(args, named, capsys, tmp_path):
    # The options are checked before the model is read, so a missing model does not mask them.
    code = main(["analyze", str(tmp_path / "missing.zip"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and named in err and "Traceback" not in err, err


@pytest.mark.slow
def test_cli_perturbation_on_pong(tmp_path):
    """A burst of flicker at episode step 5 on Pong: one perturbation event per episode, at
    exactly that step, and the blanked frame is the largest frame change of the trace; with
    --ram, the modules x RAM variables information image."""
    env = envs.make_env("pong", n_envs=1, seed=0)
    tiny_ppo(env, "CnnBrimsPolicy").save(tmp_path / "model.zip")
    env.close()
    out = tmp_path / "out"
    code = main(["analyze", str(tmp_path / "model.zip"), "--env", "pong", "--max-steps", "14", "--out", str(out),
                 "--perturb", "flicker", "--at", "5", "--length", "3", "--window", "4", "--ram"])
    assert code == 0
    events = np.load(out / "events.npz")
    assert events["perturbation_steps"].tolist() == [[5, 0]]
    change = events["frame_change"][:, 0]
    assert int(np.nanargmax(change)) in (5, 8)  # the frame blanks at 5 and comes back at 8
    assert change[6] == 0 and change[7] == 0
    assert (out / "events_perturbation.png").exists()
    # --ram: one row per module, one column per Pong variable; a 0/1 variable has at most 1 bit.
    assert events["ram_variables"].tolist() == ["ball_x", "ball_y", "player_y", "enemy_y"]
    assert events["ram_values"].shape == (14, 1, 4)
    information = events["ram_information"]
    assert information.shape == (sum(TINY_BRIMS["num_modules"]), 4)
    assert (information >= -1e-12).all() and (information <= 1 + 1e-9).all()
    assert (out / "ram_information.png").exists()


# --- which module tracks what (RAM variables) ------------------------------------------------


def test_mutual_information_by_hand():
    from agents.ram_info import module_information, mutual_information, quantile_bins

    assert mutual_information(np.array([0, 0, 1, 1]), np.array([5, 5, 7, 7])) == pytest.approx(1.0)
    assert mutual_information(np.array([0, 1, 0, 1]), np.array([5, 5, 7, 7])) == pytest.approx(0.0)
    # x = y on 3 of 4 equally likely pairs: H(x) + H(y) - H(x, y) = 1 + 0.811 - 1.5.
    assert mutual_information(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0])) == pytest.approx(1 + 0.811278 - 1.5, abs=1e-6)
    assert quantile_bins(np.array([3, 1, 2, 4, 4, 4]), bins=2).tolist() == [0, 0, 0, 1, 1, 1]  # median 3.5
    masks = [np.array([[[1, 0]], [[1, 0]], [[0, 1]], [[0, 1]]], dtype=bool)]  # (T=4, B=1, N=2)
    ram = np.array([[[10, 3]], [[10, 4]], [[20, 3]], [[20, 4]]])  # variable 0 follows module 0
    np.testing.assert_allclose(module_information(masks, ram, bins=2), [[1.0, 0.0], [1.0, 0.0]], atol=1e-12)


def test_ram_recorder_reads_the_players_paddle_on_pong():
    from agents.ram_info import RAM_ADDRESSES, RamRecorder

    env = RamRecorder(envs.make_env("pong", n_envs=1, seed=0, backend="sb3"), "pong")
    env.reset()
    for action in [2] * 12 + [3] * 12:  # Pong: 2 = UP, 3 = DOWN
        env.step(np.array([action]))
    paddle = env.values(25)[:, 0, env.names.index("player_y")].astype(int)
    assert len(env.rows) == 25 and env.names == tuple(RAM_ADDRESSES["pong"])
    # The player's paddle goes one way under UP and back under DOWN.
    # (it stops at the wall, so some steps do not move it).
    up, down = np.diff(paddle[:13]), np.diff(paddle[13:])
    assert up.sum() != 0 and set(np.sign(up).tolist()) <= {0, int(np.sign(up.sum()))}
    assert down.sum() != 0 and set(np.sign(down).tolist()) <= {0, -int(np.sign(up.sum()))}
    env.close()
    ale = envs.make_env("pong", n_envs=1, seed=0)
    with pytest.raises(ValueError, match="needs the 'sb3' backend"):
        RamRecorder(ale, "pong")
    ale.close()
