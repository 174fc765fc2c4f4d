"""Learning algorithms and pipelines built on Stable-Baselines3 and sb3-contrib."""

from agents.a2c import RecurrentA2C
from agents.ppo import RecurrentPPO
from agents.sequence_buffer import SequenceRolloutBuffer

__all__ = ["RecurrentA2C", "RecurrentPPO", "SequenceRolloutBuffer"]
