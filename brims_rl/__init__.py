"""brims-rl: reinforcement learning with BRIMs recurrent cores for Stable-Baselines3."""

from brims_rl.activations import ActivationRecorder
from brims_rl.callbacks import ModuleActivationCallback
from brims_rl.core import BRIMs, BrimsInfo
from brims_rl.extractor import BrimsExtractor, MinAtarCNN
from brims_rl.loading import NotABrimsModelError, load
from brims_rl.policies import BrimsPolicy, CnnBrimsPolicy, MlpBrimsPolicy, MultiInputBrimsPolicy

__all__ = [
    "ActivationRecorder",
    "BRIMs",
    "BrimsInfo",
    "BrimsExtractor",
    "BrimsPolicy",
    "MinAtarCNN",
    "CnnBrimsPolicy",
    "MlpBrimsPolicy",
    "ModuleActivationCallback",
    "MultiInputBrimsPolicy",
    "NotABrimsModelError",
    "load",
]
__version__ = "0.1.0"
