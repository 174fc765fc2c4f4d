"""brims-rl: reinforcement learning with BRIMs recurrent cores for Stable-Baselines3."""

from brims_rl.core import BRIMs, BrimsInfo

__all__ = ["BRIMs", "BrimsInfo"]
__version__ = "0.1.0"
