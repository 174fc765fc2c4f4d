"""BRIMs inside Stable-Baselines3: policies, algorithms, buffer, save/load, extractor."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import sb3_contrib
import torch
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecEnvWrapper, VecFrameStack

import brims_rl
from agents import RecurrentA2C, RecurrentPPO, SequenceRolloutBuffer
from brims_rl import BRIMs, BrimsExtractor, CnnBrimsPolicy, MlpBrimsPolicy, MultiInputBrimsPolicy
from brims_rl.policies import CRITIC_CORES

TINY_BRIMS = dict(hidden_size=24, num_layers=2, num_modules=[4, 3], top_k=[2, 1])


@pytest.fixture(scope="module")
def pong_env():
    import ale_py

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=2, seed=0), n_stack=4, channels_order="last")
    yield env
    env.close()


@pytest.fixture
def cartpole_env():
    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    yield env
    env.close()


def core_snapshot(core: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in core.state_dict().items()}


def test_cnn_policy_class_with_sb3_contrib_trains_the_core(pong_env):
    model = sb3_contrib.RecurrentPPO(
        CnnBrimsPolicy, pong_env, n_steps=16, batch_size=32, n_epochs=1, policy_kwargs=TINY_BRIMS, seed=0
    )
    assert isinstance(model.policy.lstm_actor, BRIMs) and model.policy.critic_core == "shared"
    optimised = {id(p) for group in model.policy.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in model.policy.parameters()} == optimised
    before = core_snapshot(model.policy.lstm_actor)
    model.learn(32)
    after = model.policy.lstm_actor.state_dict()
    assert all(not torch.equal(before[name], after[name]) for name in before)


def test_policy_by_name_and_options(cartpole_env):
    model = RecurrentPPO(
        "MlpBrimsPolicy",
        cartpole_env,
        n_steps=16,
        batch_size=32,
        seed=0,
        policy_kwargs=dict(TINY_BRIMS, cell="gru", top_down="last_to_first", core_kwargs=dict(input_heads=3)),
    )
    core = model.policy.lstm_actor
    assert isinstance(model.policy, MlpBrimsPolicy)
    assert (core.cell, core.top_down, core.num_modules, core.top_k) == ("gru", "last_to_first", [4, 3], [2, 1])
    assert core.layers[0].input_heads == 3


def value_loss_gradient(policy, obs: torch.Tensor) -> dict[str, bool]:
    """Which parameter groups get gradient from the value head alone."""
    policy.zero_grad()
    obs = obs.to(policy.device)
    n_envs = obs.shape[0]
    core = policy.lstm_actor
    zeros = torch.zeros(core.num_layers, n_envs, core.hidden_size, device=policy.device)
    states = RNNStates((zeros, zeros), (zeros, zeros))
    actions = torch.zeros(n_envs, device=policy.device)
    values, _, _ = policy.evaluate_actions(obs, actions, states, torch.zeros(n_envs, device=policy.device))
    values.sum().backward()
    def has_grad(module):
        return module is not None and any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    return {"actor_core": has_grad(policy.lstm_actor), "critic_core": has_grad(policy.lstm_critic)}


@pytest.mark.parametrize(
    "critic_core, expected",
    [
        ("shared", {"actor_core": True, "critic_core": False}),
        ("separate", {"actor_core": False, "critic_core": True}),
        ("none", {"actor_core": False, "critic_core": False}),
    ],
)
def test_critic_core_modes(cartpole_env, critic_core, expected):
    model = RecurrentPPO(
        "MlpBrimsPolicy", cartpole_env, n_steps=16, batch_size=32, seed=0,
        policy_kwargs=dict(TINY_BRIMS, critic_core=critic_core),
    )
    policy = model.policy
    assert isinstance(policy.lstm_critic, BRIMs) == (critic_core == "separate")
    if critic_core == "none":
        assert isinstance(policy.critic, torch.nn.Linear)
    obs = torch.as_tensor(cartpole_env.reset(), dtype=torch.float32)
    # "shared": the value loss trains the one core (sb3-contrib's shared_lstm would detach it).
    assert value_loss_gradient(policy, obs) == expected
    model.learn(32)


def test_bad_policy_options_are_clear(cartpole_env):
    with pytest.raises(ValueError, match=r"top_k=5 .*num_modules \(4\)"):
        RecurrentPPO("MlpBrimsPolicy", cartpole_env, policy_kwargs=dict(hidden_size=24, num_modules=4, top_k=5))
    with pytest.raises(ValueError, match=r"'lstm_hidden_size' does not apply"):
        RecurrentPPO("MlpBrimsPolicy", cartpole_env, policy_kwargs=dict(lstm_hidden_size=64))
    with pytest.raises(ValueError, match=r"core_kwargs 'top_k'.*own argument"):
        RecurrentPPO("MlpBrimsPolicy", cartpole_env, policy_kwargs=dict(TINY_BRIMS, core_kwargs=dict(top_k=1)))
    with pytest.raises(ValueError, match=r"batch_size=20: expected a multiple of sequence_length=8"):
        RecurrentPPO("MlpBrimsPolicy", cartpole_env, n_steps=32, batch_size=20, policy_kwargs=TINY_BRIMS)
    with pytest.raises(ValueError, match=r"critic_core='both'.*'shared', 'separate', 'none'"):
        RecurrentPPO("MlpBrimsPolicy", cartpole_env, policy_kwargs=dict(TINY_BRIMS, critic_core="both"))
    with pytest.raises(ValueError, match=r"'shared_lstm' does not apply.*critic_core"):
        RecurrentPPO("MlpBrimsPolicy", cartpole_env, policy_kwargs=dict(TINY_BRIMS, shared_lstm=True))
    with pytest.raises(ValueError, match=r"sequence_length=7.*dividing n_steps=32"):
        RecurrentPPO("MlpBrimsPolicy", cartpole_env, n_steps=32, sequence_length=7, policy_kwargs=TINY_BRIMS)


def count_core_calls(core: torch.nn.Module) -> list[int]:
    calls = [0]
    core.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("sequence_length", [8, None])
def test_training_calls_the_core_once_per_minibatch(cartpole_env, sequence_length):
    """Episode starts inside a minibatch go into the core: no per-step Python fallback."""
    model = RecurrentPPO(
        "MlpBrimsPolicy", cartpole_env, n_steps=32, batch_size=32, n_epochs=2,
        sequence_length=sequence_length, policy_kwargs=TINY_BRIMS, seed=0,
    )
    model.learn(128)  # a rollout and an update, so the rollout below starts mid-episode
    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    # CartPole episodes end inside the rollout: starts past its first step (row 0 may be all ones).
    assert model.rollout_buffer.episode_starts[1:].any()
    calls = count_core_calls(model.policy.lstm_actor)
    minibatches = sum(1 for _ in model.rollout_buffer.get(32))
    starts_seen = []
    model.policy.lstm_actor.register_forward_hook(
        lambda module, args, kwargs, out: starts_seen.append(kwargs.get("episode_starts")), with_kwargs=True
    )
    calls[0] = 0
    model.train()
    assert calls[0] == 2 * minibatches
    # ... and the core itself gets them: inside its sequences with our chunks (sb3-contrib's
    # buffer cuts its sequences at episode starts, so there they sit on a sequence's first step).
    assert all(starts is not None for starts in starts_seen)
    inside = slice(1, None) if sequence_length else slice(None)
    assert any(starts[inside].any() for starts in starts_seen)


@pytest.mark.parametrize("policy", ["MlpBrimsPolicy", "MlpLstmPolicy"])
def test_chunks_reproduce_rollout_log_probs(cartpole_env, policy):
    """Training sequences restart from the stored state at each chunk's first step, so
    evaluating the rollout's actions gives back the rollout's own log-probs and values."""
    kwargs = TINY_BRIMS if policy == "MlpBrimsPolicy" else dict(lstm_hidden_size=16)
    model = RecurrentPPO(policy, cartpole_env, n_steps=32, batch_size=64, sequence_length=8, policy_kwargs=kwargs, seed=1)
    model.learn(128)  # a rollout plus an update, so the states are not all zeros
    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    buffer = model.rollout_buffer
    assert buffer.episode_starts[1:].any()  # a real start inside the rollout, not just row 0
    model.policy.set_training_mode(False)
    seen = 0
    with torch.no_grad():
        for batch in buffer.get(64):
            values, log_prob, _ = model.policy.evaluate_actions(
                batch.observations, batch.actions.long().flatten(), batch.lstm_states, batch.episode_starts
            )
            torch.testing.assert_close(log_prob, batch.old_log_prob, rtol=0, atol=1e-5)
            torch.testing.assert_close(values.flatten(), batch.old_values, rtol=0, atol=1e-5)
            seen += len(log_prob)
    assert seen == 32 * 4


def test_sequence_buffer_chunks_are_consecutive_steps_of_one_env():
    n_steps, n_envs, length, layers, hidden = 12, 3, 4, 2, 5
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    buffer = SequenceRolloutBuffer(
        n_steps, space, gym.spaces.Discrete(2), (n_steps, layers, n_envs, hidden), "cpu", n_envs=n_envs,
        sequence_length=length,
    )
    for step in range(n_steps):
        code = torch.tensor([100.0 * env + step for env in range(n_envs)])
        state = code.view(1, n_envs, 1).expand(layers, n_envs, hidden).contiguous()
        buffer.add(
            code.numpy().reshape(n_envs, 1), np.zeros((n_envs, 1)), np.zeros(n_envs), np.zeros(n_envs),
            torch.zeros(n_envs), torch.zeros(n_envs), lstm_states=RNNStates((state, -state), (state, state)),
        )
    buffer.compute_returns_and_advantage(torch.zeros(n_envs), np.zeros(n_envs))
    codes = []
    for batch in buffer.get(8):
        chunks = batch.observations.view(-1, length)
        assert torch.equal(chunks - chunks[:, :1], torch.arange(length).expand_as(chunks).float())
        assert torch.equal(batch.lstm_states.pi[0][0, :, 0], chunks[:, 0])
        assert torch.equal(batch.lstm_states.pi[1][1, :, 0], -chunks[:, 0])
        codes.append(batch.observations.flatten())
    assert sorted(torch.cat(codes).tolist()) == sorted(100.0 * e + s for e in range(n_envs) for s in range(n_steps))
    # batch_size None (RecurrentA2C's one step): the whole rollout in one minibatch, whole chunks.
    (whole,) = list(buffer.get(None))
    assert sorted(whole.observations.flatten().tolist()) == sorted(torch.cat(codes).tolist())
    assert whole.lstm_states.pi[0].shape == (layers, n_steps * n_envs // length, hidden)
    with pytest.raises(ValueError, match=r"batch_size=6.*multiple of sequence_length=4"):
        next(buffer.get(6))


@pytest.mark.parametrize("discount", [{}, dict(gamma=0.9, gae_lambda=0.8)])
def test_sequence_buffer_returns_are_sb3_contribs(discount):
    """With its defaults (or the same gamma and lambda), the buffer computes the same returns
    and advantages as sb3-contrib's RecurrentRolloutBuffer, on the same device."""
    from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer

    n_steps, n_envs, shape = 32, 1, (32, 1, 1, 4)
    space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    ours = SequenceRolloutBuffer(n_steps, space, gym.spaces.Discrete(2), shape, **discount)
    theirs = RecurrentRolloutBuffer(n_steps, space, gym.spaces.Discrete(2), shape, **discount)
    assert ours.device == theirs.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert (ours.gamma, ours.gae_lambda) == (theirs.gamma, theirs.gae_lambda)
    assert (ours.n_envs, ours.sequence_length, ours.num_chunks) == (1, 16, 2)  # the documented default chunk
    rng = np.random.default_rng(0)
    zeros = torch.zeros(1, n_envs, 4)
    for step in range(n_steps):
        row = [rng.standard_normal((n_envs, 1)), np.zeros((n_envs, 1)), rng.standard_normal(n_envs),
               (rng.random(n_envs) < 0.2).astype(np.float32), torch.randn(n_envs), torch.zeros(n_envs)]
        for buffer in (ours, theirs):
            buffer.add(*row, lstm_states=RNNStates((zeros, zeros), (zeros, zeros)))
    last_values, dones = torch.randn(n_envs), np.array([1.0])
    for buffer in (ours, theirs):
        buffer.compute_returns_and_advantage(last_values, dones)
    np.testing.assert_array_equal(ours.returns, theirs.returns)
    np.testing.assert_array_equal(ours.advantages, theirs.advantages)


@pytest.mark.parametrize("length, valid", [(1, True), (3, True), (12, True), (0, False), (5, False), (2.0, False)])
def test_sequence_buffer_takes_lengths_dividing_the_rollout(length, valid):
    def build():
        return SequenceRolloutBuffer(
            12, gym.spaces.Box(-1.0, 1.0, (1,), np.float32), gym.spaces.Discrete(2), (12, 1, 2, 4), "cpu", n_envs=2,
            sequence_length=length,
        )

    if valid:
        assert build().num_chunks == 12 // length * 2
    else:
        with pytest.raises(ValueError, match=rf"sequence_length={length!r}: expected a positive int dividing n_steps=12"):
            build()


SAVED_PREDICT = textwrap.dedent(
    """
    import sys, numpy as np, sb3_contrib
    data = np.load(sys.argv[2])
    model = sb3_contrib.RecurrentPPO.load(sys.argv[1], device=sys.argv[4])
    print(type(model.policy).__module__, type(model.policy).__name__, type(model.policy.lstm_actor).__name__)
    state, actions = None, []
    for obs, start in zip(data["obs"], data["starts"]):
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        actions.append(action)
    np.save(sys.argv[3], np.array(actions))
    """
)


def deterministic_actions(model, observations, starts):
    state, actions = None, []
    for obs, start in zip(observations, starts):
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        actions.append(action)
    return np.array(actions)


def test_save_then_plain_sb3_contrib_load_in_fresh_process(tmp_path, pong_env):
    model = RecurrentPPO("CnnBrimsPolicy", pong_env, n_steps=16, batch_size=32, policy_kwargs=TINY_BRIMS, seed=0)
    model.learn(32)
    obs = [pong_env.reset()]
    for _ in range(11):
        obs.append(pong_env.step(np.array([pong_env.action_space.sample() for _ in range(2)]))[0])
    observations = np.array(obs)
    starts = np.zeros((12, 2), dtype=bool)
    starts[0] = starts[6, 1] = True
    expected = deterministic_actions(model, observations, starts)
    model.save(tmp_path / "model.zip")
    np.savez(tmp_path / "inputs.npz", obs=observations, starts=starts)
    script = tmp_path / "predict.py"
    script.write_text(SAVED_PREDICT)
    result = subprocess.run(
        # On the model's device: a briefly trained core's top-k choices are near ties (exact
        # ties at zero states, which torch.topk breaks differently on CPU and CUDA).
        [sys.executable, str(script), str(tmp_path / "model.zip"), str(tmp_path / "inputs.npz"), str(tmp_path / "a.npy"),
         str(model.device)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "brims_rl.policies CnnBrimsPolicy BRIMs" in result.stdout
    assert np.array_equal(np.load(tmp_path / "a.npy"), expected)


def test_recurrent_a2c_one_step_per_rollout_and_roundtrip(tmp_path, cartpole_env):
    model = RecurrentA2C("MlpBrimsPolicy", cartpole_env, policy_kwargs=TINY_BRIMS, seed=0)
    assert type(model.policy.optimizer) is torch.optim.RMSprop  # SB3 A2C's; see tests/test_a2c.py
    assert model.policy.optimizer.defaults["eps"] == 1e-5 and model.policy.optimizer.defaults["alpha"] == 0.99
    assert model.n_steps == 5 and model.rollout_buffer.sequence_length == 5
    # The user's optimizer_kwargs win over the RMSprop defaults.
    tuned = RecurrentA2C(
        "MlpBrimsPolicy", cartpole_env, policy_kwargs=dict(TINY_BRIMS, optimizer_kwargs=dict(eps=0.5)), seed=0
    )
    assert tuned.policy.optimizer.defaults["eps"] == 0.5 and tuned.policy.optimizer.defaults["alpha"] == 0.99
    steps = [0]
    model.policy.optimizer.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    model.learn(5 * 4 * 7)
    assert steps[0] == 7
    observations = np.array([cartpole_env.reset()] * 3)
    starts = np.array([[True] * 4, [False] * 4, [False] * 4])
    expected = deterministic_actions(model, observations, starts)
    model.save(tmp_path / "a2c.zip")
    loaded = brims_rl.load(tmp_path / "a2c.zip")
    assert type(loaded) is RecurrentA2C and isinstance(loaded.policy, MlpBrimsPolicy)
    assert np.array_equal(deterministic_actions(loaded, observations, starts), expected)
    # A2C takes one step on the whole rollout: it has no minibatches, and is no PPO.
    with pytest.raises(TypeError, match="batch_size"):
        RecurrentA2C("MlpBrimsPolicy", cartpole_env, batch_size=32)
    assert not isinstance(model, sb3_contrib.RecurrentPPO)


def test_brims_load_knows_our_algorithms_and_rejects_others(tmp_path, cartpole_env):
    model = RecurrentPPO("MlpBrimsPolicy", cartpole_env, n_steps=16, batch_size=32, policy_kwargs=TINY_BRIMS, seed=0)
    model.save(tmp_path / "ppo.zip")
    assert type(brims_rl.load(tmp_path / "ppo.zip")) is RecurrentPPO
    plain = sb3_contrib.RecurrentPPO("MlpLstmPolicy", cartpole_env, n_steps=16, batch_size=32, seed=0)
    plain.save(tmp_path / "contrib.zip")
    assert isinstance(brims_rl.load(tmp_path / "contrib.zip"), sb3_contrib.RecurrentPPO)

    PPO("MlpPolicy", cartpole_env, n_steps=16, seed=0).save(tmp_path / "foreign.zip")
    (tmp_path / "notes.txt").write_text("not a model")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("readme", "hello")
    with pytest.raises(brims_rl.NotABrimsModelError, match=r"foreign.zip.*not one brims-rl wrote"):
        brims_rl.load(tmp_path / "foreign.zip")
    with pytest.raises(brims_rl.NotABrimsModelError, match=r"notes.txt.*is not a brims-rl model"):
        brims_rl.load(tmp_path / "notes.txt")
    with pytest.raises(brims_rl.NotABrimsModelError, match=r"empty.zip.*is not a brims-rl model"):
        brims_rl.load(tmp_path / "empty.zip")
    with pytest.raises(FileNotFoundError, match=r"missing.zip"):
        brims_rl.load(tmp_path / "missing.zip")


def test_lstm_baseline_through_our_ppo(pong_env):
    model = RecurrentPPO(
        "CnnLstmPolicy", pong_env, n_steps=16, batch_size=32, policy_kwargs=dict(lstm_hidden_size=32), seed=0
    )
    before = core_snapshot(model.policy.lstm_actor)
    model.learn(32)
    assert any(not torch.equal(before[k], v) for k, v in model.policy.lstm_actor.state_dict().items())


@pytest.mark.parametrize("algorithm", [PPO, A2C])
def test_brims_extractor_with_plain_sb3(pong_env, algorithm):
    kwargs = dict(n_steps=16, batch_size=32) if algorithm is PPO else dict(n_steps=5)
    model = algorithm(
        "CnnPolicy", pong_env,
        policy_kwargs=dict(
            features_extractor_class=BrimsExtractor,
            features_extractor_kwargs=dict(hidden_size=24, frame_features=32, core_kwargs=dict(num_modules=4, top_k=2)),
        ),
        seed=0,
        **kwargs,
    )
    extractor = model.policy.features_extractor
    assert isinstance(extractor, BrimsExtractor) and extractor.features_dim == 24
    before = core_snapshot(extractor.core)
    model.learn(32)
    assert any(not torch.equal(before[k], v) for k, v in extractor.core.state_dict().items())
    obs = torch.as_tensor(model.env.reset(), device=model.device).float() / 255.0  # SB3 made the stack channel-first
    assert obs.shape == (2, 4, 84, 84)
    assert extractor(obs).shape == (2, 24)


def test_brims_extractor_rejects_bad_input():
    with pytest.raises(ValueError, match=r"channel-first image stacks"):
        BrimsExtractor(gym.spaces.Box(0, 1, (8,), np.float32))
    with pytest.raises(ValueError, match=r"core_kwargs 'hidden_size'.*own argument"):
        BrimsExtractor(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), core_kwargs=dict(hidden_size=10))


# --- The policy's core: the optimizer holds it, the episode starts reach it -------------------

VECTOR_SPACE = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
IMAGE_SPACE = gym.spaces.Box(0, 255, (1, 36, 36), np.uint8)  # the smallest frame NatureCNN takes
POLICY_SPACES = {
    MlpBrimsPolicy: VECTOR_SPACE,
    CnnBrimsPolicy: IMAGE_SPACE,
    MultiInputBrimsPolicy: gym.spaces.Dict({"frame": IMAGE_SPACE, "vector": VECTOR_SPACE}),
}


def make_policy(policy_class, critic_core: str = "shared", **kwargs):
    torch.manual_seed(0)
    return policy_class(
        POLICY_SPACES[policy_class], gym.spaces.Discrete(3), lambda _: 1e-3,
        **dict(TINY_BRIMS, critic_core=critic_core, **kwargs),
    )


@pytest.mark.parametrize("critic_core", CRITIC_CORES)
@pytest.mark.parametrize("policy_class", list(POLICY_SPACES))
def test_optimizer_holds_exactly_the_policy_parameters(policy_class, critic_core):
    policy = make_policy(policy_class, critic_core)
    optimised = [id(p) for group in policy.optimizer.param_groups for p in group["params"]]
    assert len(optimised) == len(set(optimised))
    assert set(optimised) == {id(p) for p in policy.parameters()}
    cores = [policy.lstm_actor] + ([policy.lstm_critic] if critic_core == "separate" else [])
    for core in cores:
        assert isinstance(core, BRIMs)
        assert {id(p) for p in core.parameters()} <= set(optimised)


def _zero_states(core: BRIMs, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = torch.zeros(core.num_layers, batch, core.hidden_size)
    return zeros, zeros


def _random_states(core: BRIMs, batch: int = 1, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    shape = (core.num_layers, batch, core.hidden_size)
    return torch.randn(shape, device=device), torch.randn(shape, device=device)


@pytest.mark.parametrize("critic_core", CRITIC_CORES)
def test_episode_start_inside_a_sequence_resets_the_core(critic_core):
    """evaluate_actions over one sequence with an episode start at step 3 equals the two
    episodes evaluated apart (the second from a zero state)."""
    policy = make_policy(MlpBrimsPolicy, critic_core)
    policy.set_training_mode(False)
    steps, cut = 7, 3
    obs = torch.rand(steps, 3) * 2 - 1
    actions = torch.randint(0, 3, (steps,))
    critic = policy.lstm_critic if critic_core == "separate" else policy.lstm_actor
    states = RNNStates(_random_states(policy.lstm_actor), _random_states(critic))
    starts = torch.zeros(steps)
    starts[cut] = 1.0
    fresh = RNNStates(_zero_states(policy.lstm_actor), _zero_states(critic))
    with torch.no_grad():
        whole = policy.evaluate_actions(obs, actions, states, starts)
        first = policy.evaluate_actions(obs[:cut], actions[:cut], states, torch.zeros(cut))
        second = policy.evaluate_actions(obs[cut:], actions[cut:], fresh, torch.zeros(steps - cut))
        carried = policy.evaluate_actions(obs, actions, states, torch.zeros(steps))
    for got, part1, part2, no_reset in zip(whole, first, second, carried):
        torch.testing.assert_close(got, torch.cat([part1, part2]), rtol=0, atol=1e-5)
    # Not vacuous: without the start the carried state gives other log-probabilities.
    assert not torch.allclose(whole[1][cut:], carried[1][cut:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("critic_core", CRITIC_CORES)
def test_acting_step_with_episode_start_forgets_the_state(critic_core):
    """forward() (the rollout's acting call) with episode_start=1 acts as from a zero state."""
    policy = make_policy(MlpBrimsPolicy, critic_core)
    critic = policy.lstm_critic if critic_core == "separate" else policy.lstm_actor
    obs = torch.rand(2, 3)
    states = RNNStates(_random_states(policy.lstm_actor, 2), _random_states(critic, 2))
    fresh = RNNStates(_zero_states(policy.lstm_actor, 2), _zero_states(critic, 2))
    with torch.no_grad():
        _, values, log_prob, new_states = policy(obs, states, torch.tensor([1.0, 0.0]), deterministic=True)
        _, values_fresh, log_prob_fresh, states_fresh = policy(obs, fresh, torch.zeros(2), deterministic=True)
        _, values_kept, _, states_kept = policy(obs, states, torch.zeros(2), deterministic=True)
    torch.testing.assert_close(values[0], values_fresh[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(new_states.pi[0][:, 0], states_fresh.pi[0][:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(new_states.pi[0][:, 1], states_kept.pi[0][:, 1], rtol=0, atol=1e-6)
    assert not torch.allclose(states_kept.pi[0][:, 0], states_fresh.pi[0][:, 0])


# --- The separate critic core trains and is saved ---------------------------------------------


def test_separate_critic_core_trains_and_survives_save_load(tmp_path, cartpole_env):
    model = RecurrentPPO(
        "MlpBrimsPolicy", cartpole_env, n_steps=16, batch_size=32, n_epochs=2, seed=0,
        policy_kwargs=dict(TINY_BRIMS, critic_core="separate"),
    )
    critic = model.policy.lstm_critic
    assert isinstance(critic, BRIMs) and critic is not model.policy.lstm_actor
    before = core_snapshot(critic)
    model.learn(64)
    # The value loss trains the critic's own core: its cells changed (attention keys of a
    # layer that no gradient reaches would not; cell weights always take part).
    for layer in range(critic.num_layers):
        assert not torch.equal(before[f"layers.{layer}.cell_weight"], critic.layers[layer].cell_weight)
    model.save(tmp_path / "separate.zip")
    loaded = brims_rl.load(tmp_path / "separate.zip", device=model.device)
    assert loaded.policy.critic_core == "separate" and isinstance(loaded.policy.lstm_critic, BRIMs)
    for name, value in critic.state_dict().items():
        assert torch.equal(loaded.policy.lstm_critic.state_dict()[name], value), name
    device = model.device
    obs = torch.as_tensor(cartpole_env.reset(), dtype=torch.float32, device=device)
    states = RNNStates(_random_states(critic, 4, device), _random_states(critic, 4, device))
    starts, actions = torch.zeros(4, device=device), torch.zeros(4, device=device)
    with torch.no_grad():
        expected = model.policy.evaluate_actions(obs, actions, states, starts)[0]
        got = loaded.policy.evaluate_actions(obs, actions, states, starts)[0]
    assert torch.equal(got, expected)


def test_mlp_policy_core_defaults_are_its_own_and_survive_save_load(tmp_path, cartpole_env, pong_env):
    """MlpBrimsPolicy starts its core from uniform weights without LayerNorm between layers;
    core_kwargs overrides that, CnnBrimsPolicy keeps the core's defaults, and a saved model
    rebuilds the core it trained (the options are stored resolved)."""
    model = RecurrentPPO("MlpBrimsPolicy", cartpole_env, n_steps=16, batch_size=32, seed=0, policy_kwargs=TINY_BRIMS)
    top = model.policy.lstm_actor.layers[1]
    assert top.weight_init == "uniform" and isinstance(top.bottom_up_norm, torch.nn.Identity)
    overridden = RecurrentPPO(
        "MlpBrimsPolicy", cartpole_env, n_steps=16, batch_size=32, seed=0,
        policy_kwargs=dict(TINY_BRIMS, core_kwargs=dict(state_norm=True)),
    ).policy.lstm_actor.layers[1]
    assert overridden.weight_init == "uniform" and isinstance(overridden.bottom_up_norm, torch.nn.LayerNorm)
    cnn_top = RecurrentPPO("CnnBrimsPolicy", pong_env, n_steps=16, batch_size=32, seed=0, policy_kwargs=TINY_BRIMS)
    assert cnn_top.policy.lstm_actor.layers[1].weight_init == "fan_in"
    assert isinstance(cnn_top.policy.lstm_actor.layers[1].bottom_up_norm, torch.nn.LayerNorm)
    model.save(tmp_path / "mlp.zip")
    loaded = brims_rl.load(tmp_path / "mlp.zip", device="cpu")
    assert loaded.policy.core_options == model.policy.core_options
    assert loaded.policy.core_options["weight_init"] == "uniform" and loaded.policy.core_options["state_norm"] is False


# --- MultiInputBrimsPolicy on dict observations ----------------------------------------------


class SplitCue(gym.ObservationWrapper):
    """CueMemory with its observation split in a dict: the cue channels and the query flag."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        n = env.observation_space.shape[0]
        low, high = env.observation_space.low, env.observation_space.high
        self.observation_space = gym.spaces.Dict(
            {"cue": gym.spaces.Box(low[:-1], high[:-1], (n - 1,), np.float32),
             "query": gym.spaces.Box(low[-1:], high[-1:], (1,), np.float32)}
        )

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {"cue": observation[:-1], "query": observation[-1:]}


def test_multi_input_policy_trains_and_round_trips(tmp_path):
    from stable_baselines3.common.torch_layers import CombinedExtractor

    import envs

    env = make_vec_env(envs.CUE_MEMORY_ID, n_envs=2, seed=0, wrapper_class=SplitCue)
    # Our sequence buffer takes array observations only; dict spaces use sb3-contrib's buffer.
    with pytest.raises(ValueError, match="dict observation spaces are not supported"):
        RecurrentPPO("MultiInputBrimsPolicy", env, n_steps=16, batch_size=32, policy_kwargs=TINY_BRIMS)
    model = RecurrentPPO(
        "MultiInputBrimsPolicy", env, n_steps=16, batch_size=32, sequence_length=None, seed=0, policy_kwargs=TINY_BRIMS
    )
    assert isinstance(model.policy, MultiInputBrimsPolicy)
    assert isinstance(model.policy.features_extractor, CombinedExtractor)
    assert model.policy.lstm_actor.input_size == model.policy.features_dim == 3
    before = core_snapshot(model.policy.lstm_actor)
    model.learn(64)
    after = model.policy.lstm_actor.state_dict()
    for layer in range(2):
        assert not torch.equal(before[f"layers.{layer}.cell_weight"], after[f"layers.{layer}.cell_weight"])
    observations = [env.reset()]
    for _ in range(5):
        observations.append(env.step(np.zeros(2, dtype=np.int64))[0])
    starts = np.zeros((6, 2), dtype=bool)
    starts[0] = True
    expected = deterministic_actions(model, observations, starts)
    model.save(tmp_path / "dict.zip")
    loaded = brims_rl.load(tmp_path / "dict.zip", device=model.device)  # same device: an exact round trip
    assert isinstance(loaded.policy, MultiInputBrimsPolicy)
    assert np.array_equal(deterministic_actions(loaded, observations, starts), expected)
    env.close()


# --- BrimsExtractor on float frames -------------------------------------------------------------


class FloatFrames(VecEnvWrapper):
    """uint8 frame stacks as float32 in [0, 1] (already normalised: SB3 must not divide again)."""

    def __init__(self, venv) -> None:
        space = venv.observation_space
        super().__init__(venv, observation_space=gym.spaces.Box(0.0, 1.0, space.shape, np.float32))

    def reset(self):
        return self.venv.reset().astype(np.float32) / 255.0

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return obs.astype(np.float32) / 255.0, rewards, dones, infos


def test_brims_extractor_on_float_frames_trains_and_matches_uint8():
    import envs

    extractor_kwargs = dict(hidden_size=24, frame_features=32, core_kwargs=dict(num_modules=4, top_k=2))
    policy_kwargs = dict(features_extractor_class=BrimsExtractor, features_extractor_kwargs=extractor_kwargs)
    frames = envs.make_env("pong", n_envs=2, seed=0, frame_stack=4)  # (2, 4, 84, 84) uint8
    floats = FloatFrames(envs.make_env("pong", n_envs=2, seed=0, frame_stack=4))
    model = PPO("CnnPolicy", floats, n_steps=16, batch_size=32, n_epochs=1, seed=0, policy_kwargs=policy_kwargs)
    extractor = model.policy.features_extractor
    assert isinstance(extractor, BrimsExtractor) and extractor.stack == 4
    before = core_snapshot(extractor.core)
    model.learn(32)
    assert any(not torch.equal(before[k], v) for k, v in extractor.core.state_dict().items())

    # The same weights see the same picture whether frames come as uint8 or as floats in [0, 1].
    reference = PPO("CnnPolicy", frames, n_steps=16, batch_size=32, seed=0, policy_kwargs=policy_kwargs)
    reference.policy.features_extractor.load_state_dict(extractor.state_dict())
    uint8_obs = frames.reset()
    float_obs = floats.reset()
    np.testing.assert_array_equal(float_obs, uint8_obs.astype(np.float32) / 255.0)
    with torch.no_grad():
        from_uint8 = reference.policy.extract_features(torch.as_tensor(uint8_obs, device=reference.device))
        from_float = model.policy.extract_features(torch.as_tensor(float_obs, device=model.device))
    torch.testing.assert_close(from_float, from_uint8, rtol=0, atol=1e-6)
    frames.close()
    floats.close()


# --- torch.compile ---------------------------------------------------------------------------------


def test_compiled_cores_match_eager_and_save_as_before(tmp_path, cartpole_env):
    """compile_cores ("aot_eager" here: torch.compile's graph capture and autograd, without
    the C++/Triton code generation a GPU run uses) keeps the core's outputs, gradients and
    state_dict, and the model saves and loads as before (training with it: train_speed's (d))."""
    model = RecurrentPPO(
        "MlpBrimsPolicy", cartpole_env, n_steps=16, batch_size=32, seed=0, device="cpu",
        policy_kwargs=dict(TINY_BRIMS, critic_core="separate"),
    )
    core = model.policy.lstm_actor
    torch.manual_seed(1)
    x = torch.randn(5, 3, core.input_size, requires_grad=True)
    starts = torch.zeros(5, 3)
    starts[2, 1] = 1.0

    def run() -> tuple[torch.Tensor, ...]:
        out, (h, c) = core(x, _random_states(core, 3), episode_starts=starts)
        (gradient,) = torch.autograd.grad(out.square().sum() + h.sum(), x)
        return out, h, c, gradient

    torch.manual_seed(2)
    eager = run()
    keys = list(model.policy.state_dict())
    model.policy.compile_cores(backend="aot_eager")
    torch.manual_seed(2)
    for got, expected in zip(run(), eager):
        torch.testing.assert_close(got, expected)
    assert list(model.policy.state_dict()) == keys
    model.save(tmp_path / "compiled.zip")
    loaded = brims_rl.load(tmp_path / "compiled.zip", device="cpu")
    for name, value in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[name], value), name


# --- CUDA --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the CUDA-only branches "
                    "(device='auto' picking CUDA, pinned-memory rollout transfers) were NOT run")
def test_cuda_training_path(tmp_path, cartpole_env):
    from brims_rl.utils import resolve_device

    assert resolve_device("auto").type == "cuda"
    model = RecurrentPPO(
        "MlpBrimsPolicy", cartpole_env, n_steps=32, batch_size=64, sequence_length=8, seed=1, device="auto",
        policy_kwargs=TINY_BRIMS,
    )
    assert next(model.policy.lstm_actor.parameters()).device.type == "cuda"
    model.learn(128)
    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    model.policy.set_training_mode(False)
    with torch.no_grad():
        for batch in model.rollout_buffer.get(64):
            assert batch.observations.device.type == "cuda" and batch.lstm_states.pi[0].device.type == "cuda"
            _, log_prob, _ = model.policy.evaluate_actions(
                batch.observations, batch.actions.long().flatten(), batch.lstm_states, batch.episode_starts
            )
            torch.testing.assert_close(log_prob, batch.old_log_prob, rtol=0, atol=1e-4)
    observations = np.array([cartpole_env.reset()] * 3)
    starts = np.array([[True] * 4, [False] * 4, [False] * 4])
    expected = deterministic_actions(model, observations, starts)
    model.save(tmp_path / "cuda.zip")
    on_cpu = brims_rl.load(tmp_path / "cuda.zip", device="cpu")
    assert next(on_cpu.policy.parameters()).device.type == "cpu"
    assert np.array_equal(deterministic_actions(on_cpu, observations, starts), expected)


def _one_sgd_step(policy, obs: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
    """The change of every parameter (by name) after one SGD step at base rate ``lr`` on a
    value + policy loss, with the rate written into every group first, as SB3 does."""
    for group in policy.optimizer.param_groups:
        group["lr"] = lr
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    states = RNNStates(_random_states(policy.lstm_actor, obs.shape[0]), _random_states(policy.lstm_actor, obs.shape[0]))
    values, log_prob, _ = policy.evaluate_actions(obs, torch.zeros(obs.shape[0]), states, torch.zeros(obs.shape[0]))
    policy.optimizer.zero_grad()
    (values.pow(2).mean() - log_prob.mean()).backward()
    policy.optimizer.step()
    return {name: p.detach() - before[name] for name, p in policy.named_parameters()}


@pytest.mark.parametrize("critic_core", ["shared", "separate"])
def test_core_lr_scale_multiplies_the_cores_step_only(critic_core):
    obs = torch.rand(4, 3) * 2 - 1
    sgd = dict(optimizer_class=torch.optim.SGD)
    plain = _one_sgd_step(make_policy(MlpBrimsPolicy, critic_core, **sgd), obs, lr=1.0)
    scaled_policy = make_policy(MlpBrimsPolicy, critic_core, core_lr_scale=3.0, **sgd)
    seen: list[list[float]] = []
    scaled_policy.optimizer.register_step_pre_hook(lambda opt, *_: seen.append([g["lr"] for g in opt.param_groups]))
    scaled = _one_sgd_step(scaled_policy, obs, lr=1.0)
    assert seen == [[3.0, 1.0]]  # during the step: the cores' group at 3x
    assert [group["lr"] for group in scaled_policy.optimizer.param_groups] == [1.0, 1.0]  # after it: the base rate
    in_cores = {name for name, _ in scaled_policy.named_parameters() if name.startswith(("lstm_actor.", "lstm_critic."))}
    assert in_cores and set(scaled) - in_cores
    for name, change in plain.items():
        if name in in_cores:
            # float32 rounding of small steps: compare each tensor's step size, not elements
            assert change.norm() > 0, name
            assert scaled[name].norm() / change.norm() == pytest.approx(3.0, rel=0.02), name
        else:
            assert torch.equal(scaled[name], change), name


def test_core_lr_scale_saves_loads_and_is_checked(tmp_path, cartpole_env):
    default = make_policy(MlpBrimsPolicy)
    assert len(default.optimizer.param_groups) == 1  # at 1.0 the optimizer is SB3's usual one group
    model = RecurrentPPO(
        "MlpBrimsPolicy", cartpole_env, n_steps=16, batch_size=32, policy_kwargs=dict(TINY_BRIMS, core_lr_scale=2.0), seed=0
    )
    model.learn(32)
    model.save(tmp_path / "scaled.zip")
    loaded = brims_rl.load(tmp_path / "scaled.zip", env=cartpole_env)
    assert loaded.policy.core_lr_scale == 2.0
    assert [group.get("lr_scale") for group in loaded.policy.optimizer.param_groups] == [2.0, None]
    loaded.learn(32)  # the loaded optimizer state fits its two groups
    for bad in (0, -1.0, "2", True):
        with pytest.raises(ValueError, match=rf"core_lr_scale={bad!r}: expected a positive number"):
            make_policy(MlpBrimsPolicy, core_lr_scale=bad)
