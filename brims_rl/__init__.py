"""brims-rl: reinforcement learning with BRIMs recurrent cores for Stable-Baselines3.

The library: the core (:class:`BRIMs`), the policies, the frame-stack extractor, the
activation recorder and the callbacks (module activity, dense warm-up). ``brims_rl.load``
opens the zips of the application's algorithms (``agents.RecurrentPPO``,
``agents.RecurrentA2C``) too, so it lives in :mod:`agents.loading` and is handed on here on
first use: importing the library never imports the application.
"""

from typing import Any

from brims_rl.activations import ActivationRecorder
from brims_rl.callbacks import ModuleActivationCallback, TopKWarmup
from brims_rl.core import BRIMs, BrimsInfo
from brims_rl.extractor import BrimsExtractor, MinAtarCNN
from brims_rl.loading import NotABrimsModelError
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
    "TopKWarmup",
    "load",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load":
        # The one name the library takes from the application, on first use (see above).
        from agents.loading import load

        globals()["load"] = load  # later lookups skip __getattr__
        return load
    raise AttributeError(f"module 'brims_rl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
