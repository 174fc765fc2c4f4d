"""Small shared helpers."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Union

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


def check_int(name: str, value: Any, low: int, allow_none: bool = False) -> Optional[int]:
    """``value`` if it is an integer >= ``low`` (or None, when allowed), else a one-line
    ValueError naming ``name`` and the rule."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= {low}" + (" or None" if allow_none else ""))
    return value


def check_positive_number(name: str, value: Any) -> float:
    """``value`` as a float if it is a positive int or float (not a bool), else a one-line
    ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}={value!r}: expected a positive number")
    return float(value)


def check_core_kwargs(core_kwargs: Optional[dict[str, Any]], reserved: Iterable[str], owner: str) -> dict[str, Any]:
    """``core_kwargs`` as a dict, refusing keys that ``owner`` sets through its own arguments."""
    core_kwargs = dict(core_kwargs or {})
    clashes = sorted(set(core_kwargs) & set(reserved))
    if clashes:
        raise ValueError(
            f"core_kwargs {clashes[0]!r}: {owner} sets it through its own argument {clashes[0]!r}; "
            f"core_kwargs takes the other BRIMs arguments only (not {', '.join(sorted(reserved))})"
        )
    return core_kwargs
