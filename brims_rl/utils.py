"""Small shared helpers."""

from __future__ import annotations

import os
from typing import Union

import torch


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; anything else goes to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from error


def default_threads() -> int:
    """torch CPU threads for RL work: half the cores (at least 1), never more than torch takes.

    The Atari emulators run in threads of their own, and torch's intra-op threads spin-wait:
    on oversubscribed cores a tiny op can take 100x longer than on one free core.
    """
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2))
