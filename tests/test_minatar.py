"""The MinAtar tier: MinAtar's own games behind SB3, the robustness wrappers on its grids, and
brims / lstm / cnn agents with the MinAtar paper's encoder trained from the config defaults."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs

pytest.importorskip("minatar", reason="the minatar extra is not installed: pip install 'brims-rl[minatar]'")

# Planes per game (MinAtar's state_shape): the channel axis of our observations.
CHANNELS = {"Breakout": 4, "Asterix": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}


@pytest.mark.parametrize("game", sorted(CHANNELS))
def test_observations_are_the_games_own_grids_channel_first(game: str) -> None:
    env_id = f"MinAtar/{game}-v1"
    venv = envs.make_minatar_vec_env(env_id, n_envs=2, seed=3)
    reference = gym.make(env_id)
    try:
        assert venv.observation_space.shape == (CHANNELS[game], 10, 10) and venv.observation_space.dtype == np.uint8
        obs = venv.reset()
        raw, _ = reference.reset(seed=3)  # env 0 of the vector env is seeded with seed + 0
        rng = np.random.default_rng(0)
        for _ in range(60):
            assert set(np.unique(obs)) <= {0, 255}
            np.testing.assert_array_equal(obs[0], np.moveaxis(raw, -1, 0).astype(np.uint8) * 255)
            action = int(rng.integers(venv.action_space.n))
            obs, rewards, dones, infos = venv.step(np.array([action, 0]))
            raw, reward, terminated, truncated, _ = reference.step(action)
            assert rewards[0] == reward and dones[0] == (terminated or truncated)
            if dones[0]:
                assert infos[0]["episode"]["r"] >= 0
                break
    finally:
        venv.close()
        reference.close()


def test_robustness_wrappers_corrupt_whole_grids() -> None:
    blank = envs.make_minatar_vec_env("MinAtar/Breakout-v1", n_envs=3, seed=0, flicker=1.0)
    obs = blank.reset()
    assert not obs.any()
    for _ in range(5):
        obs, *_ = blank.step(np.zeros(3, dtype=int))
        assert not obs.any()  # every plane of every grid blanked
    blank.close()

    clean = envs.make_minatar_vec_env("MinAtar/Seaquest-v1", n_envs=2, seed=1)
    occluded = envs.make_minatar_vec_env("MinAtar/Seaquest-v1", n_envs=2, seed=1, occlusion={"size": 10})
    noisy = envs.make_minatar_vec_env("MinAtar/Seaquest-v1", n_envs=2, seed=1, noise=40)
    first, hidden, grainy = clean.reset(), occluded.reset(), noisy.reset()
    assert first.any() and not hidden.any()  # a 10-cell patch covers the whole grid, all planes
    assert (grainy != first).mean() > 0.5 and np.abs(grainy.astype(int) - first).max() <= 255
    for venv in (clean, occluded, noisy):
        venv.close()
    with pytest.raises(ValueError, match="10 cells"):
        envs.make_minatar_vec_env("MinAtar/Breakout-v1", n_envs=1, occlusion=11)


def test_flicker_blanks_whole_grids_at_the_rate_asked() -> None:
    flickering = envs.make_minatar_vec_env("MinAtar/Freeway-v1", n_envs=8, seed=2, flicker=0.3)
    clean = envs.make_minatar_vec_env("MinAtar/Freeway-v1", n_envs=8, seed=2)  # the same games, never blanked
    flickering.reset(), clean.reset()
    blanks = 0
    for _ in range(100):
        actions = np.ones(8, dtype=int)
        seen, *_ = flickering.step(actions)
        truth, *_ = clean.step(actions)
        assert truth.reshape(8, -1).any(axis=1).all()  # Freeway's chicken is always on the grid
        blank = ~seen.reshape(8, -1).any(axis=1)
        np.testing.assert_array_equal(seen[~blank], truth[~blank])  # a grid is shown whole or not at all
        blanks += int(blank.sum())
    flickering.close(), clean.close()
    assert 0.2 < blanks / 800 < 0.4


def test_minatar_cnn_is_the_papers_encoder() -> None:
    from gymnasium import spaces

    from brims_rl import MinAtarCNN

    extractor = MinAtarCNN(spaces.Box(0, 255, (6, 10, 10), np.uint8))
    conv, linear = extractor.conv[0], extractor.linear[0]
    assert conv.weight.shape == (16, 6, 3, 3) and conv.stride == (1, 1) and conv.padding == (0, 0)
    assert linear.weight.shape == (128, 16 * 8 * 8)
    assert extractor(torch.zeros(5, 6, 10, 10)).shape == (5, 128)


@pytest.mark.parametrize("policy, core_width", [("brims", 132), ("lstm", 128), ("cnn", None)])
def test_train_on_minatar_from_the_config_defaults(policy: str, core_width: int | None, tmp_path: Path) -> None:
    from agents.config import resolve_config
    from agents.train import train
    from brims_rl import MinAtarCNN, load

    overrides = ["n_envs=2", "n_steps=32", "batch_size=32", "n_epochs=1", "eval_freq=64", "eval_episodes=1",
                 "max_episode_steps=50", "flicker=0.3"]
    config = resolve_config("ppo", policy, "MinAtar/Breakout-v1", overrides=overrides, total_timesteps=128)
    assert config.hyperparams["policy_kwargs"]["features_extractor_class"] == "MinAtarCNN"
    assert config.hyperparams.get("frame_stack", 1) == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(config, tmp_path / "run", progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    model = load(result.model_path, device="cpu")
    assert result.num_timesteps == 128
    assert isinstance(model.policy.features_extractor, MinAtarCNN)
    assert model.observation_space.shape == (4, 10, 10)
    if core_width is not None:
        assert model.policy.lstm_actor.hidden_size == core_width
    with np.load(tmp_path / "run" / "evaluations.npz") as evaluations:
        assert evaluations["timesteps"].tolist() == [64, 128]


def test_atari_only_keys_stay_refused_for_vector_tasks() -> None:
    from agents.config import resolve_config

    resolve_config("ppo", "cnn", "MinAtar/Asterix-v1", overrides=["noise=20", "occlusion=3", "max_episode_steps=100"])
    with pytest.raises(ValueError, match="Atari games only"):
        resolve_config("ppo", "cnn", "BrimsRL/CueMemory-v0", overrides=["flicker=0.3"])


def test_list_envs_names_the_minatar_games(capsys: pytest.CaptureFixture[str]) -> None:
    from agents.cli import main

    assert main(["list-envs"]) == 0
    assert set(envs.MINATAR_IDS) <= set(capsys.readouterr().out.split())
