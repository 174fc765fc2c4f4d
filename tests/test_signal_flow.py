"""The observation's signal reaches the heads through the BRIMs core, and the heads'
gradient reaches the encoder (guards for the fix of the issue "BRIMs-PPO must learn
Atari"). Deterministic and seeded; nothing is timed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents import RecurrentPPO
from agents.config import resolve_config
from brims_rl import BRIMs
from brims_rl.diagnostics import first_update_gradient_norms, input_gradient, input_sensitivity, output_rms, relu_features

WIDTH = 264  # the policies' default hidden size (6 modules of 44)
FIRST_DEFAULTS = dict(input_norm=False, state_norm=False, weight_init="uniform")


@pytest.fixture(scope="module")
def lstm_reference() -> tuple[torch.Tensor, float, float]:
    """CNN-like inputs (T=32, B=32, 512 wide) and an nn.LSTM's sensitivity and input gradient."""
    inputs = relu_features(32, 32, 512)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(512, WIDTH)
    return inputs, input_sensitivity(lstm, inputs), input_gradient(lstm, inputs)


def brims(**kwargs) -> BRIMs:
    torch.manual_seed(0)
    return BRIMs(512, WIDTH, **kwargs)


def test_default_core_is_as_sensitive_to_the_current_input_as_an_lstm(lstm_reference):
    inputs, lstm_sensitivity, lstm_gradient = lstm_reference
    core = brims()
    sensitivity, gradient = input_sensitivity(core, inputs), input_gradient(core, inputs)
    assert lstm_sensitivity / 3 <= sensitivity <= 3 * lstm_sensitivity, (sensitivity, lstm_sensitivity)
    assert lstm_gradient / 3 <= gradient <= 3 * lstm_gradient, (gradient, lstm_gradient)


def test_first_defaults_starve_the_output(lstm_reference):
    """The measurement tells the two designs apart: the first defaults (no normalisation,
    U(+-1/sqrt(d)) weights) pass the signal 10x worse than nn.LSTM over two layers."""
    inputs, lstm_sensitivity, lstm_gradient = lstm_reference
    core = brims(**FIRST_DEFAULTS)
    assert input_sensitivity(core, inputs) < lstm_sensitivity / 10
    assert input_gradient(core, inputs) < lstm_gradient / 10


@pytest.mark.parametrize("top_down", ["adjacent", "last_to_first", "none"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_wiring_passes_the_signal(lstm_reference, top_down, cell):
    inputs, lstm_sensitivity, lstm_gradient = lstm_reference
    core = brims(top_down=top_down, cell=cell)
    assert input_sensitivity(core, inputs) >= lstm_sensitivity / 3
    assert input_gradient(core, inputs) >= lstm_gradient / 3


def test_output_scale_multiplies_every_output_measure(lstm_reference):
    inputs, _, _ = lstm_reference
    plain, scaled = brims(), brims(output_scale=2.5)
    assert output_rms(plain, inputs) > 0
    for measure in (input_sensitivity, input_gradient, output_rms):
        assert measure(scaled, inputs) == pytest.approx(2.5 * measure(plain, inputs), rel=1e-5)


def test_ppo_update_reaches_the_cnn_through_brims():
    """After one PPO update on real Breakout frames, the CNN encoder's gradient under
    CnnBrimsPolicy is at least a tenth of what it is under CnnLstmPolicy: with the policy's
    defaults and with configs/ppo.yaml's Atari settings (what `brims-rl train --env breakout` builds)."""
    atari = resolve_config("ppo", "brims", "breakout").hyperparams["policy_kwargs"]
    norms = {}
    for name, policy, kwargs in [
        ("CnnLstmPolicy", "CnnLstmPolicy", {}),
        ("CnnBrimsPolicy", "CnnBrimsPolicy", {}),
        ("Atari config", "CnnBrimsPolicy", atari),
        ("first defaults", "CnnBrimsPolicy", dict(core_kwargs=FIRST_DEFAULTS)),
    ]:
        env = envs.make_atari_vec_env("breakout", n_envs=4, seed=0)
        try:
            # On the CPU: which actions a seed samples (so the rollout the update sees) differs by device.
            model = RecurrentPPO(
                policy, env, n_steps=32, batch_size=64, n_epochs=1, seed=0, policy_kwargs=kwargs, device="cpu"
            )
            norms[name] = first_update_gradient_norms(model)["features_extractor"]
        finally:
            env.close()
    assert norms["CnnBrimsPolicy"] >= norms["CnnLstmPolicy"] / 10, norms
    assert norms["Atari config"] >= norms["CnnLstmPolicy"] / 10, norms
    assert norms["first defaults"] < norms["CnnLstmPolicy"] / 10, norms  # the guard can fail


def test_breakout_relaunches_the_ball_after_a_lost_life():
    """A policy that only presses NOOP loses all five lives quickly when FIRE is pressed for it
    after each life loss; without that the ball is never relaunched after the first loss."""
    from envs.ale_vec_env import AleVecEnv

    lives_lost = {}
    for fire in (True, False):
        env = AleVecEnv("breakout", 1, frame_stack=1, fire_after_life_loss=fire)
        env.seed(0)
        env.reset()
        lost = 0
        for _ in range(1000):
            _, _, dones, infos = env.step(np.zeros(1, dtype=np.int64))
            lost += int(dones[0])
            if "episode" in infos[0]:
                break
        env.close()
        lives_lost[fire] = lost
    assert lives_lost[True] == 5
    assert lives_lost[False] == 1
