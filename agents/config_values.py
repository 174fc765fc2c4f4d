"""Checks and conversions of config values: what YAML gives, what the constructors take.

Each check takes ``(key, value)`` and returns the normalised value or raises a one-line
``ValueError`` that names the key (``config key 'n_steps': got 0, expected an integer >= 1``).
YAML 1.1 (PyYAML) reads "1e-4" and "1e7" as strings, so numeric checks accept any string
that Python's ``float()`` parses.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Callable, Optional, Union

import torch
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.utils import LinearSchedule

from brims_rl.extractor import MinAtarCNN
from envs.robustness import parse_robustness

Check = Callable[[str, Any], Any]

# Names YAML may give for policy_kwargs.activation_fn, .optimizer_class and .features_extractor_class.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = dict(
    tanh=torch.nn.Tanh, relu=torch.nn.ReLU, elu=torch.nn.ELU, leaky_relu=torch.nn.LeakyReLU, gelu=torch.nn.GELU,
    silu=torch.nn.SiLU,
)
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = dict(
    Adam=torch.optim.Adam, AdamW=torch.optim.AdamW, RMSprop=torch.optim.RMSprop, RMSpropTFLike=RMSpropTFLike,
    SGD=torch.optim.SGD,
)
# MinAtarCNN reads MinAtar's 10x10 grids; NatureCNN is the policies' default on images.
FEATURES_EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = dict(
    NatureCNN=NatureCNN, MinAtarCNN=MinAtarCNN, FlattenExtractor=FlattenExtractor
)


def bad_value(key: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"config key {key!r}: got {value!r}, expected {expected}")


def _as_number(key: str, value: Any, expected: str) -> float:
    if isinstance(value, bool):
        raise bad_value(key, value, expected)
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise bad_value(key, value, expected) from None
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise bad_value(key, value, expected)
    return value


def int_in(low: int, high: Optional[int] = None) -> Check:
    """An integer >= low (and <= high); integral floats such as ``1e7`` are accepted."""
    expected = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")

    def check(key: str, value: Any) -> int:
        number = _as_number(key, value, expected)
        if number != int(number) or number < low or (high is not None and number > high):
            raise bad_value(key, value, expected)
        return int(number)

    return check


def float_in(low: float, high: float = math.inf, low_open: bool = False) -> Check:
    """A float in [low, high] (or (low, high] when ``low_open``)."""
    bracket = "(" if low_open else "["
    expected = f"a number in {bracket}{low}, {high}]"

    def check(key: str, value: Any) -> float:
        number = float(_as_number(key, value, expected))
        if number < low or number > high or (low_open and number == low):
            raise bad_value(key, value, expected)
        return number

    return check


def optional(inner: Check) -> Check:
    """None (YAML ``null``) or what ``inner`` accepts."""

    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_value(key, value, "true or false")
    return value


def choice(*options: str) -> Check:
    def check(key: str, value: Any) -> str:
        if value not in options:
            raise bad_value(key, value, f"one of {', '.join(map(repr, options))}")
        return value

    return check


def mapping(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_value(key, value, "a mapping (YAML dict)")
    return value


_SCHEDULE_TEXT = re.compile(r"^(lin|linear)_(.+)$")


def schedule(low_open: bool = True) -> Check:
    """A constant, ``"lin_<initial>"`` or ``{type: linear|constant, ...}``; see :func:`make_schedule`.

    The written form is kept (so the resolved config stays readable YAML); only the numbers
    are checked here.
    """
    positive = float_in(0.0, low_open=low_open)
    expected = "a number, 'lin_<initial>' or {type: linear, initial: X[, final: Y]} / {type: constant, value: X}"

    def check(key: str, value: Any) -> Any:
        if isinstance(value, str):
            match = _SCHEDULE_TEXT.match(value.strip())
            if match:
                positive(key, match.group(2))
                return value.strip()
        if isinstance(value, dict):
            kind = value.get("type")
            allowed = {"linear": {"type", "initial", "final"}, "constant": {"type", "value"}}.get(kind)
            if allowed is None or not set(value) <= allowed or ("initial" if kind == "linear" else "value") not in value:
                raise bad_value(key, value, expected)
            for name in set(value) - {"type"}:
                float_in(0.0)(f"{key}.{name}", value[name])
            return dict(value)
        try:
            return positive(key, value)
        except ValueError:
            raise bad_value(key, value, expected) from None

    return check


def robustness(key: str, value: Any) -> Any:
    """None, a number or a dict of wrapper arguments (checked by ``envs.parse_robustness``)."""
    if value is None:
        return None
    try:
        parse_robustness(**{key: value})
    except (TypeError, ValueError) as error:
        raise ValueError(f"config key {key!r}: {error}") from None
    return value


def make_schedule(value: Any) -> Union[float, Callable[[float], float]]:
    """Turn a checked schedule value into what SB3 takes: a float or a schedule callable.

    ``2.5e-4`` -> ``2.5e-4``; ``"lin_2.5e-4"`` and ``{type: linear, initial: 2.5e-4}`` ->
    ``LinearSchedule(2.5e-4, 0.0, 1.0)``: decays with SB3's ``progress_remaining``
    (``1 - num_timesteps / total_timesteps``), so a resumed run continues the decay where it
    stopped; ``{type: linear, initial: a, final: b}`` ends at b instead of 0.
    """
    if isinstance(value, str):
        match = _SCHEDULE_TEXT.match(value.strip())
        if match is None:
            return float(value)
        return LinearSchedule(float(match.group(2)), 0.0, 1.0)
    if isinstance(value, dict):
        if value["type"] == "constant":
            return float(value["value"])
        return LinearSchedule(float(value["initial"]), float(value.get("final", 0.0)), 1.0)
    return float(value)
