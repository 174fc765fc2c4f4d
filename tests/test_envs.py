"""The ``envs`` package on real ALE games and real SB3 vector envs.

Covers the Atari factory (layouts, game names, both backends), the "ale" backend's SB3
conventions (life loss, reward clipping vs raw scores, terminal observations, truncation,
seeding), agreement between the backends, the robustness wrappers, the small BrimsRL tasks,
``envs.make_env`` routing and the errors for bad input.

Games are chosen for short random-play episodes: Breakout (5 lives, about 150-250 agent steps
per random game), Asterix (3 lives, 50 points per item so clipping is visible, about 250-350
steps), Pong (frames never contain a 0 pixel, which makes blanks and patches easy to find).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, dataclass, field, replace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

import envs
from envs.robustness import _FrameCorruption

BACKENDS = ("ale", "sb3")


# ---------------------------------------------------------------------------------- helpers


def random_actions(venv: VecEnv, steps: int, seed: int = 0) -> np.ndarray:
    """A fixed ``(steps, n_envs)`` array of uniformly random actions."""
    return np.random.default_rng(seed).integers(0, venv.action_space.n, size=(steps, venv.num_envs))


def filled_slots(stack: np.ndarray) -> list[bool]:
    """Which frames of one ``(stack, H, W)`` observation hold any non-zero pixel."""
    return stack.reshape(stack.shape[0], -1).any(axis=1).tolist()


def corruption_wrappers(venv: VecEnv) -> list[type]:
    """Types of the robustness wrappers anywhere in a ``VecEnvWrapper`` chain."""
    found = []
    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, _FrameCorruption):
            found.append(type(venv))
        venv = venv.venv
    return found


def rollout(venv: VecEnv, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reset, play ``actions``; returns stacked observations (reset first), rewards and dones."""
    observations = [venv.reset()]
    rewards, dones = [], []
    for action in actions:
        obs, reward, done, _ = venv.step(action)
        observations.append(obs)
        rewards.append(reward)
        dones.append(done)
    return np.stack(observations), np.stack(rewards), np.stack(dones)


@pytest.fixture
def make_venv() -> Iterator:
    """``envs.make_atari_vec_env`` that closes every env it built when the test ends."""
    built: list[VecEnv] = []

    def make(game: str, **kwargs) -> VecEnv:
        kwargs.setdefault("n_envs", 2)
        venv = envs.make_atari_vec_env(game, **kwargs)
        built.append(venv)
        return venv

    yield make
    for venv in built:
        venv.close()


# ---------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("frame_stack", [1, 4])
def test_layout_uint8_channel_first(make_venv, backend, frame_stack):
    venv = make_venv("pong", n_envs=3, frame_stack=frame_stack, backend=backend)
    assert venv.num_envs == 3
    assert venv.observation_space.shape == (frame_stack, 84, 84)
    assert venv.observation_space.dtype == np.uint8
    assert venv.action_space == gym.spaces.Discrete(6)  # Pong's minimal action set
    obs = venv.reset()
    assert obs.shape == (3, frame_stack, 84, 84) and obs.dtype == np.uint8
    # At the start of an episode only the newest slot holds a frame; older slots are zero.
    assert all(filled_slots(o) == [False] * (frame_stack - 1) + [True] for o in obs)
    obs, rewards, dones, infos = venv.step(np.zeros(3, dtype=np.int64))
    assert obs.shape == (3, frame_stack, 84, 84) and obs.dtype == np.uint8
    assert rewards.shape == (3,) and dones.shape == (3,) and dones.dtype == bool
    assert len(infos) == 3 and all("lives" in info for info in infos)
    # SB3's evaluate_policy counts whole games (info["episode"]) only behind a Monitor.
    assert venv.env_is_wrapped(Monitor) == [True] * 3


@pytest.mark.parametrize(
    "spelling, game",
    [
        ("PongNoFrameskip-v4", "pong"),
        ("ALE/Pong-v5", "pong"),
        ("Pong", "pong"),
        ("pong", "pong"),
        ("PongDeterministic-v4", "pong"),
        ("MsPacmanNoFrameskip-v4", "ms_pacman"),
        ("ALE/MsPacman-v5", "ms_pacman"),
        ("ms_pacman", "ms_pacman"),
        ("space-invaders", "space_invaders"),
    ],
)
def test_game_spellings_resolve_to_one_rom(spelling, game):
    assert envs.normalize_game_id(spelling) == game
    assert envs.is_atari_id(spelling)


@pytest.mark.parametrize("backend, spelling", [("ale", "PongNoFrameskip-v4"), ("sb3", "ALE/Pong-v5"), ("ale", "pong")])
def test_factory_accepts_every_spelling(make_venv, backend, spelling):
    venv = make_venv(spelling, backend=backend)
    assert venv.reset().shape == (2, 1, 84, 84)


def test_list_atari_games():
    games = envs.list_atari_games()
    assert games == sorted(games)
    assert {"pong", "breakout", "ms_pacman", "asterix"} <= set(games)
    assert "combat" not in games  # multi-player only: no single-player game to build
    assert not envs.is_atari_id("BrimsRL/CueMemory-v0") and not envs.is_atari_id("CartPole-v1")


@pytest.mark.parametrize("bad", ["Pongg", "NotAGameNoFrameskip-v4", "ALE/Chess-v5"])
def test_unknown_game_says_how_to_list_games(bad):
    with pytest.raises(ValueError) as err:
        envs.make_atari_vec_env(bad, n_envs=1)
    message = str(err.value)
    assert repr(bad) in message
    assert "list_atari_games" in message and "list-envs" in message


def test_unknown_game_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'pong'"):
        envs.normalize_game_id("Pongg")


# ---------------------------------------------------------------------------------- "ale" backend


def test_ale_life_loss_is_terminal_and_the_game_plays_on(make_venv):
    venv = make_venv("breakout", n_envs=2, seed=3, frame_stack=1, backend="ale")
    obs = venv.reset()
    start_lives = venv.get_attr("lives")
    assert start_lives == [5, 5]
    lives_at_dones: list[list[int]] = [[], []]
    games_over = 0
    for action in random_actions(venv, 1500, seed=3):
        obs, _, dones, infos = venv.step(action)
        for i in np.flatnonzero(dones):
            info = infos[i]
            if "episode" in info:
                # A game counted as one episode through all its life losses: 4 life-loss dones, then
                # the game-over done; had each life loss restarted the game, lives would never fall.
                assert lives_at_dones[i] == [4, 3, 2, 1]
                assert info["lives"] == 0
                lives_at_dones[i] = []
                games_over += 1
            else:
                lives_at_dones[i].append(info["lives"])
                # No reset happened: the frame the agent sees next IS the terminal one.
                np.testing.assert_array_equal(info["terminal_observation"], obs[i])
        if games_over >= 2:
            break
    assert games_over >= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_terminal_on_life_loss_dones_only_at_game_over(make_venv, backend):
    venv = make_venv("breakout", n_envs=2, seed=3, frame_stack=1, backend=backend, terminal_on_life_loss=False)
    venv.reset()
    n_dones = 0
    for action in random_actions(venv, 1000, seed=3):
        _, _, dones, infos = venv.step(action)
        for i in np.flatnonzero(dones):
            assert "episode" in infos[i] and not infos[i]["TimeLimit.truncated"]
            n_dones += 1
        if n_dones >= 2:
            break
    assert n_dones >= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_limit_truncates_like_sb3(make_venv, backend):
    # 200 emulator frames = 50 agent steps, far shorter than a game of Pong.
    venv = make_venv("pong", n_envs=2, seed=0, frame_stack=2, backend=backend, max_episode_steps=200)
    obs = venv.reset()
    for step in range(1, 61):
        obs, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
        if dones.any():
            break
    assert dones.any(), "no truncation within 60 steps"
    # "ale" does not count the no-op start (the limit is exactly 50 steps); "sb3" does.
    assert (step == 50) if backend == "ale" else (35 <= step <= 50)
    for i in np.flatnonzero(dones):
        info = infos[i]
        assert info["TimeLimit.truncated"] is True
        assert info["episode"]["l"] == step and info["episode"]["r"] == 0.0
        terminal = info["terminal_observation"]
        assert terminal.shape == (2, 84, 84) and terminal.dtype == np.uint8
        assert filled_slots(terminal) == [True, True]
        assert filled_slots(obs[i]) == [False, True]  # the next game's stack starts afresh
    for i in np.flatnonzero(~dones):
        assert infos[i]["TimeLimit.truncated"] is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeding_is_reproducible(make_venv, backend):
    def play(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        venv = make_venv("breakout", n_envs=2, seed=seed, frame_stack=2, backend=backend)
        return rollout(venv, random_actions(venv, 150, seed=0))

    first, again, other = play(7), play(7), play(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert first[2].any(), "expected a life loss in 150 random Breakout steps"
    assert not np.array_equal(first[0], other[0])
    # Two envs of one vector env get different seeds (seed + i), so they play differently.
    assert not np.array_equal(first[0][:, 0], first[0][:, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sticky_actions_reach_the_emulator(make_venv, backend):
    # With probability 1 the emulator always repeats its previous action: the agent's actions
    # have no effect, so random actions and all-NOOP actions give the same frames.
    def frames(sticky: float, actions: np.ndarray) -> np.ndarray:
        venv = make_venv("breakout", n_envs=1, seed=0, backend=backend, sticky_actions=sticky)
        return rollout(venv, actions)[0]

    noop = np.zeros((40, 1), dtype=np.int64)
    moves = np.tile(np.array([[2], [2], [3], [2]]), (10, 1))  # RIGHT/LEFT: the paddle moves
    np.testing.assert_array_equal(frames(1.0, moves), frames(1.0, noop))
    assert not np.array_equal(frames(0.0, moves), frames(0.0, noop))


def test_ale_render_is_refused_with_a_pointer_to_sb3(make_venv):
    venv = make_venv("pong", n_envs=1, backend="ale")
    venv.reset()
    with pytest.raises(NotImplementedError, match="backend='sb3'"):
        venv.get_images()


def test_sb3_backend_renders(make_venv):
    venv = make_venv("pong", n_envs=2, backend="sb3")
    venv.reset()
    images = venv.get_images()
    assert len(images) == 2 and all(im.shape == (210, 160, 3) and im.dtype == np.uint8 for im in images)


# ---------------------------------------------------------------------------------- backends agree


@dataclass
class GameRecord:
    """One finished game, seen by a reward-clipping env and a raw-reward twin in lockstep."""

    episode: dict  # info["episode"] at game over
    raw_return: float = 0.0  # sum of the unclipped step rewards
    steps: int = 0  # agent steps
    clipped: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    lives_at_life_loss: list[int] = field(default_factory=list)
    lives_at_game_over: int = -1
    # filled_slots() of the observation right after every done, and of its terminal_observation
    stack_after_done: list[list[bool]] = field(default_factory=list)
    terminal_stack: list[list[bool]] = field(default_factory=list)


@functools.lru_cache(maxsize=None)  # shared by the tests below: play each backend once
def play_asterix(backend: str, games: int = 3, max_steps: int = 2500) -> tuple[list[GameRecord], gym.Space]:
    """Random play of Asterix (3 lives) until ``games`` games ended, clipped and raw in lockstep."""
    kwargs = dict(n_envs=2, seed=11, frame_stack=4, backend=backend)
    clipped_env = envs.make_atari_vec_env("asterix", clip_reward=True, **kwargs)
    raw_env = envs.make_atari_vec_env("asterix", clip_reward=False, **kwargs)
    try:
        obs = clipped_env.reset()
        np.testing.assert_array_equal(obs, raw_env.reset())
        running = [GameRecord(episode={}) for _ in range(2)]
        finished: list[GameRecord] = []
        for action in random_actions(clipped_env, max_steps, seed=11):
            prev = obs
            obs, clipped, dones, infos = clipped_env.step(action)
            raw_obs, raw, raw_dones, raw_infos = raw_env.step(action)
            # Same seed, same actions: clip_reward changes nothing but the returned reward.
            np.testing.assert_array_equal(obs, raw_obs)
            np.testing.assert_array_equal(dones, raw_dones)
            for i in range(2):
                game = running[i]
                game.steps += 1
                game.raw_return += float(raw[i])
                game.clipped.append(float(clipped[i]))
                game.raw.append(float(raw[i]))
                if not dones[i]:
                    continue
                terminal = infos[i]["terminal_observation"]
                # terminal_observation: the full stack the episode ended on, continuing prev's history.
                np.testing.assert_array_equal(terminal[:-1], prev[i][1:])
                game.terminal_stack.append(filled_slots(terminal))
                game.stack_after_done.append(filled_slots(obs[i]))
                assert ("episode" in infos[i]) == ("episode" in raw_infos[i])
                if "episode" in infos[i]:
                    assert infos[i]["episode"]["r"] == raw_infos[i]["episode"]["r"]
                    game.episode = infos[i]["episode"]
                    game.lives_at_game_over = infos[i]["lives"]
                    finished.append(game)
                    running[i] = GameRecord(episode={})
                else:
                    game.lives_at_life_loss.append(infos[i]["lives"])
            if len(finished) >= games:
                return finished, clipped_env.observation_space
        raise AssertionError(f"only {len(finished)} of {games} Asterix games ended in {max_steps} steps")
    finally:
        clipped_env.close()
        raw_env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_reward_clipping_keeps_raw_scores_in_episode_info(backend):
    games, _ = play_asterix(backend)
    for game in games:
        assert game.clipped == np.sign(game.raw).tolist()
        assert set(game.clipped) <= {-1.0, 0.0, 1.0}
        assert game.episode["r"] == pytest.approx(game.raw_return)  # raw score, not clipped
        assert game.episode["l"] == game.steps  # agent steps, across life losses
        assert set(game.episode) == {"r", "l", "t"}
    # Asterix pays 50 per item: clipping must visibly differ from the raw score.
    assert any(max(game.raw) > 1 for game in games)
    assert any(game.episode["r"] > sum(game.clipped) for game in games)


def test_backends_agree_on_layout_and_episode_statistics():
    ale_games, ale_space = play_asterix("ale")
    sb3_games, sb3_space = play_asterix("sb3")
    assert ale_space == sb3_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    for games in (ale_games, sb3_games):
        for game in games:
            # done on each of the 3 lives; "episode" only at the real game over
            assert game.lives_at_life_loss == [2, 1]
            assert game.lives_at_game_over == 0
            # after every done (life loss or game over) the stack restarts: zeros, newest frame
            assert game.stack_after_done == [[False, False, False, True]] * 3
            assert game.terminal_stack == [[True, True, True, True]] * 3
            assert game.episode["r"] == pytest.approx(game.raw_return)
            assert game.episode["l"] == game.steps
    # Different no-op draws, so the games differ, but a random agent's games are alike in scale.
    mean_length = {b: np.mean([g.steps for g in games]) for b, games in (("ale", ale_games), ("sb3", sb3_games))}
    assert 0.5 < mean_length["ale"] / mean_length["sb3"] < 2.0


# ---------------------------------------------------------------------------------- robustness wrappers


def test_robustness_is_off_by_default(make_venv):
    venv = make_venv("pong")
    assert corruption_wrappers(venv) == []
    for off in (None, False, 0, 0.0, {"sigma": 0}):
        assert corruption_wrappers(make_venv("pong", noise=off)) == []
    assert envs.apply_robustness(venv) is venv


@pytest.fixture
def pong_pair(make_venv):
    """Two identical seeded Pong envs (4-stack); the test wraps the second one."""
    return make_venv("pong", n_envs=4, seed=5, frame_stack=4), make_venv("pong", n_envs=4, seed=5, frame_stack=4)


def play_pair(clean: VecEnv, corrupted: VecEnv, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    actions = random_actions(clean, steps, seed=5)
    clean_obs, _, clean_dones = rollout(clean, actions)
    obs, _, dones = rollout(corrupted, actions)
    np.testing.assert_array_equal(dones, clean_dones)  # corruption never changes the game
    assert not dones.any(), "pick a horizon without episode ends"
    return clean_obs, obs, dones


def assert_consistent_history(obs: np.ndarray) -> None:
    """Each step's older slots are the previous step's slots, shifted (no re-corruption)."""
    np.testing.assert_array_equal(obs[1:, :, :-1], obs[:-1, :, 1:])


def test_gaussian_noise_has_the_requested_sigma(pong_pair):
    clean, base = pong_pair
    noisy_env = envs.GaussianNoise(base, sigma=12.0, seed=0)
    clean_obs, noisy, _ = play_pair(clean, noisy_env, 60)
    assert noisy.dtype == np.uint8 and noisy.shape == clean_obs.shape
    diff = noisy[:, :, -1].astype(np.float64) - clean_obs[:, :, -1]
    # Pong's pixels lie in 52..236, so clipping at 0/255 hardly ever bites at sigma 12.
    assert diff.std() == pytest.approx(12.0, rel=0.03)
    assert abs(diff.mean()) < 0.2
    assert (diff != 0).mean() > 0.9
    assert_consistent_history(noisy)


def test_flicker_blanks_about_p_of_the_frames(pong_pair):
    clean, base = pong_pair
    flicker_env = envs.Flicker(base, p=0.3, seed=0)
    clean_obs, flickered, _ = play_pair(clean, flicker_env, 150)
    newest = flickered[:, :, -1].reshape(-1, 84 * 84)
    blank = ~newest.any(axis=1)
    # 604 frames: the binomial standard error of the rate is about 0.02.
    assert blank.mean() == pytest.approx(0.3, abs=0.07)
    # Frames that were not blanked are untouched.
    np.testing.assert_array_equal(newest[~blank], clean_obs[:, :, -1].reshape(-1, 84 * 84)[~blank])
    # A blanked frame stays blank as it ages through the stack.
    assert_consistent_history(flickered)


@pytest.mark.parametrize("resample", ["step", "episode"])
def test_occlusion_zeros_one_square_patch(pong_pair, resample):
    clean, base = pong_pair
    size = 10
    occluded_env = envs.Occlusion(base, size=size, resample=resample, seed=0)
    clean_obs, occluded, _ = play_pair(clean, occluded_env, 30)
    corners: list[list[tuple[int, int]]] = [[] for _ in range(occluded.shape[1])]  # per env, per step
    for step in range(occluded.shape[0]):
        for env in range(occluded.shape[1]):
            frame, reference = occluded[step, env, -1], clean_obs[step, env, -1]
            rows, cols = np.nonzero(frame == 0)  # Pong frames have no 0 pixel of their own
            assert len(rows) == size * size
            top, left = int(rows.min()), int(cols.min())
            assert (rows.max() - top, cols.max() - left) == (size - 1, size - 1)
            outside = np.ones_like(frame, dtype=bool)
            outside[top : top + size, left : left + size] = False
            np.testing.assert_array_equal(frame[outside], reference[outside])
            corners[env].append((top, left))
    assert_consistent_history(occluded)
    if resample == "step":  # a new place (almost) every frame
        assert all(len(set(places)) > len(places) // 2 for places in corners)
    else:  # one place per env for the whole episode, drawn independently for each env
        assert all(len(set(places)) == 1 for places in corners)
        assert len({places[0] for places in corners}) == len(corners)


@pytest.mark.parametrize("backend", BACKENDS)
def test_factory_robustness_is_seeded_and_works_on_both_backends(make_venv, backend):
    settings = dict(noise=8.0, flicker={"p": 0.5}, occlusion={"size": 12, "resample": "episode"})

    def play(seed: int) -> np.ndarray:
        venv = make_venv("pong", n_envs=2, seed=seed, frame_stack=3, backend=backend, **settings)
        assert corruption_wrappers(venv) == [envs.Flicker, envs.GaussianNoise, envs.Occlusion]  # outermost first
        return rollout(venv, random_actions(venv, 40, seed=0))[0]

    first, again, other = play(1), play(1), play(2)
    assert first.shape == (41, 2, 3, 84, 84) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert_consistent_history(first)
    blank = ~first[:, :, -1].reshape(-1, 84 * 84).any(axis=1)
    assert 0.2 < blank.mean() < 0.8  # flicker p=0.5 over 82 frames
    # Un-blanked frames are noisy: many distinct grey levels, unlike Pong's handful.
    assert len(np.unique(first[:, :, -1][~blank.reshape(41, 2)])) > 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrappers_keep_history_and_padding_across_dones(make_venv, backend):
    venv = make_venv("breakout", n_envs=2, seed=2, frame_stack=4, backend=backend, noise=6.0, flicker=0.3)
    obs = venv.reset()
    n_dones = 0
    for action in random_actions(venv, 300, seed=2):
        prev = obs
        obs, _, dones, infos = venv.step(action)
        for i in np.flatnonzero(dones):
            terminal = infos[i]["terminal_observation"]
            # The terminal stack continues the corrupted history the agent saw ...
            np.testing.assert_array_equal(terminal[:-1], prev[i][1:])
            # ... and the next stack restarts from zeros, as without wrappers.
            assert filled_slots(obs[i])[:-1] == [False, False, False]
            n_dones += 1
        keep = ~dones
        np.testing.assert_array_equal(obs[keep, :-1], prev[keep, 1:])
        if n_dones >= 3:
            break
    assert n_dones >= 3


def test_wrapper_seed_method_reseeds(make_venv):
    venv = envs.Flicker(make_venv("pong", seed=0), p=0.5, seed=123)
    venv.seed(4)
    first = rollout(venv, random_actions(venv, 30))[0]
    venv.seed(4)
    np.testing.assert_array_equal(rollout(venv, random_actions(venv, 30))[0], first)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(noise=-1.0), "sigma"),
        (dict(noise=float("nan")), "sigma"),
        (dict(noise={"sigma": 5, "sigmaa": 1}), "sigmaa"),
        (dict(noise={"seed": 1}), "sigma"),
        (dict(noise="high"), "noise"),
        (dict(flicker=1.5), "p"),
        (dict(flicker={"p": 0.5, "seed": -3}), "seed"),
        (dict(occlusion=2.5), "size"),
        (dict(occlusion=-4), "size"),
        (dict(occlusion=85), "size"),
        (dict(occlusion={"size": 10, "resample": "sometimes"}), "resample"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_robustness_settings_are_rejected(kwargs, named, backend):
    with pytest.raises(ValueError, match=named):
        envs.make_atari_vec_env("pong", n_envs=1, backend=backend, **kwargs)


def test_wrappers_refuse_non_image_envs():
    venv = envs.make_env(envs.CUE_MEMORY_ID, n_envs=1)
    try:
        with pytest.raises(ValueError, match="uint8 frame-stack"):
            envs.GaussianNoise(venv, sigma=1.0)
    finally:
        venv.close()


# ---------------------------------------------------------------------------------- small tasks


def test_tasks_are_registered():
    assert envs.MASKED_CARTPOLE_ID == "BrimsRL/MaskedCartPole-v0"
    assert envs.CUE_MEMORY_ID == "BrimsRL/CueMemory-v0"
    assert {envs.MASKED_CARTPOLE_ID, envs.CUE_MEMORY_ID} <= set(gym.registry)
    assert gym.spec(envs.MASKED_CARTPOLE_ID).max_episode_steps == 500


def test_masked_cartpole_shows_position_and_angle_only():
    masked = gym.make(envs.MASKED_CARTPOLE_ID)
    full = gym.make("CartPole-v1")
    try:
        assert masked.observation_space.shape == (2,)
        obs, _ = masked.reset(seed=3)
        full_obs, _ = full.reset(seed=3)
        assert obs.shape == (2,) and obs.dtype == np.float32
        np.testing.assert_array_equal(obs, full_obs[[0, 2]])
        for action in [0, 1, 1, 0, 1]:
            obs, reward, *_ = masked.step(action)
            full_obs, full_reward, *_ = full.step(action)
            np.testing.assert_array_equal(obs, full_obs[[0, 2]])
            assert reward == full_reward == 1.0
        check_env(masked.unwrapped, skip_render_check=True)
    finally:
        masked.close()
        full.close()


@pytest.mark.parametrize("delay, n_cues", [(0, 2), (3, 2), (5, 4)])
def test_cue_memory_rewards_only_the_remembered_cue(delay, n_cues):
    env = gym.make(envs.CUE_MEMORY_ID, delay=delay, n_cues=n_cues)
    check_env(env.unwrapped)
    wrong = -1.0 / (n_cues - 1)
    query_observations = set()
    cue_counts = np.zeros(n_cues)
    returns_by_answer = np.full((n_cues, n_cues), np.nan)  # [cue, answer] -> reward
    for seed in range(60 * n_cues):
        obs, info = env.reset(seed=seed)
        cue = info["cue"]
        cue_counts[cue] += 1
        assert obs.tolist() == np.eye(n_cues + 1)[cue].tolist()  # one-hot cue, query flag 0
        answer = seed % n_cues
        steps, rewards, done = 0, [], False
        while not done:
            # Before the query, the action is ignored: answering the cue early earns nothing.
            is_query = obs[-1] == 1.0
            action = answer if is_query else cue
            if is_query:
                query_observations.add(obs.tobytes())
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            steps += 1
            done = terminated or truncated
        assert steps == delay + 2
        assert rewards[:-1] == [0.0] * (delay + 1)
        assert rewards[-1] == (1.0 if answer == cue else pytest.approx(wrong))
        returns_by_answer[cue, answer] = rewards[-1]
    # The query looks the same whatever the cue, so a memoryless policy answers independently
    # of it; with uniform cues every fixed answer then has expected return exactly 0.
    assert len(query_observations) == 1
    assert not np.isnan(returns_by_answer).any(), "every (cue, answer) pair should have been played"
    assert cue_counts.min() > 0.5 * cue_counts.mean()
    np.testing.assert_allclose(returns_by_answer.mean(axis=0), 0.0, atol=1e-12)
    env.close()


def test_random_policy_scores_zero_on_cue_memory():
    venv = envs.make_env(envs.CUE_MEMORY_ID, n_envs=4, seed=0, delay=2)
    try:
        venv.reset()
        returns = []
        for action in random_actions(venv, 2000, seed=1):
            _, _, _, infos = venv.step(action)
            returns += [info["episode"]["r"] for info in infos if "episode" in info]
        assert len(returns) == 4 * 2000 // 4
        assert abs(np.mean(returns)) < 0.1  # 2000 episodes of +-1: standard error 0.022
    finally:
        venv.close()


@pytest.mark.parametrize("kwargs, named", [(dict(delay=-1), "delay"), (dict(n_cues=1), "n_cues"), (dict(noise_std=-0.5), "noise_std")])
def test_cue_memory_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        gym.make(envs.CUE_MEMORY_ID, **kwargs)


# ---------------------------------------------------------------------------------- make_env routing


def test_make_env_routes_atari_names(make_venv):
    venv = envs.make_env("PongNoFrameskip-v4", n_envs=2, frame_stack=2)
    try:
        assert isinstance(venv, envs.AleVecEnv)
        assert venv.observation_space.shape == (2, 84, 84)
    finally:
        venv.close()
    venv = envs.make_env("pong", n_envs=2, backend="sb3", noise=5.0)
    try:
        assert corruption_wrappers(venv) == [envs.GaussianNoise]
        assert venv.reset().shape == (2, 1, 84, 84)
    finally:
        venv.close()


def test_make_env_builds_small_tasks_with_their_arguments():
    venv = envs.make_env(envs.CUE_MEMORY_ID, n_envs=3, seed=0, delay=4, n_cues=3, backend=None, noise=None)
    try:
        assert venv.reset().shape == (3, 4)
        lengths = set()
        for _ in range(12):
            _, _, _, infos = venv.step(np.zeros(3, dtype=np.int64))
            lengths |= {info["episode"]["l"] for info in infos if "episode" in info}
        assert lengths == {6}  # delay + 2: the env's own arguments arrived
    finally:
        venv.close()
    venv = envs.make_env(envs.MASKED_CARTPOLE_ID, n_envs=2, frame_stack=3)
    try:
        assert venv.reset().shape == (2, 6)
    finally:
        venv.close()


@pytest.mark.parametrize("option", [dict(noise=0.1), dict(backend="ale"), dict(sticky_actions=0.25)])
def test_make_env_refuses_atari_options_on_small_tasks(option):
    with pytest.raises(ValueError, match=f"{next(iter(option))}.*only apply to Atari"):
        envs.make_env(envs.MASKED_CARTPOLE_ID, n_envs=1, **option)


@pytest.mark.parametrize("bad", ["NotAnEnv-v9", "BrimsRL/Nothing-v0"])
def test_make_env_unknown_id(bad):
    with pytest.raises(ValueError) as err:
        envs.make_env(bad, n_envs=1)
    message = str(err.value)
    assert repr(bad) in message
    assert envs.CUE_MEMORY_ID in message and "list_atari_games" in message


def test_make_env_refuses_non_string_ids():
    with pytest.raises(ValueError, match="env_id"):
        envs.make_env(42)


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(n_envs=0), "n_envs"),
        (dict(n_envs=2.5), "n_envs"),
        (dict(n_envs=True), "n_envs"),
        (dict(backend="gpu"), "backend"),
        (dict(backend=None), "backend"),
        (dict(sticky_actions=1.5), "sticky_actions"),
        (dict(sticky_actions=-0.1), "sticky_actions"),
        (dict(sticky_actions="0.25"), "sticky_actions"),
        (dict(sticky_actions=float("nan")), "sticky_actions"),
        (dict(frame_stack=0), "frame_stack"),
        (dict(frame_stack=4.0), "frame_stack"),
        (dict(seed=-1), "seed"),
        (dict(max_episode_steps=0), "max_episode_steps"),
        (dict(noop_max=-1), "noop_max"),
    ],
)
def test_bad_arguments_are_rejected_by_name(kwargs, named):
    with pytest.raises(ValueError, match=rf"\b{named}="):
        envs.make_atari_vec_env("pong", **kwargs)


def test_emulation_settings_are_one_frozen_object() -> None:
    emulation = envs.AtariEmulation(frame_stack=2, sticky_actions=0.25, max_episode_steps=400)
    with pytest.raises(FrozenInstanceError):
        emulation.frame_stack = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"\bframe_skip="):
        envs.AtariEmulation(frame_skip=0)
    venv = envs.AleVecEnv("pong", 1, emulation, screen_size=42)  # keywords replace fields
    try:
        assert venv.emulation == replace(emulation, screen_size=42)
        assert venv.reset().shape == (1, 2, 42, 42)
    finally:
        venv.close()


@pytest.mark.parametrize("kwargs, named", [(dict(n_envs=0), "n_envs"), (dict(frame_stack=-2), "frame_stack"), (dict(seed=1.5), "seed")])
def test_bad_arguments_for_small_tasks(kwargs, named):
    with pytest.raises(ValueError, match=rf"\b{named}="):
        envs.make_env(envs.CUE_MEMORY_ID, **kwargs)
