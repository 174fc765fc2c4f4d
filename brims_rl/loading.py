"""Reading SB3 model zips without loading their weights: the data entry and the policy class.

:func:`brims_rl.load` itself opens the zips of the application's algorithms too, so it lives
in :mod:`agents.loading`; this module holds what needs no algorithm.
"""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path
from typing import Any, Union

import cloudpickle


class NotABrimsModelError(ValueError):
    """The file is not a model saved by brims-rl (or by SB3 / sb3-contrib)."""


def read_model_data(path: Union[str, Path]) -> dict[str, Any]:
    """The JSON ``data`` entry of an SB3 model zip (hyperparameters, ``num_timesteps``, ...), no weights loaded.

    Raises:
        FileNotFoundError: no file at ``path``.
        NotABrimsModelError: not a zip, or a zip without SB3's ``data`` entry (e.g. half written).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {str(path)!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NotABrimsModelError(
            f"{str(path)!r} is not a brims-rl model: expected a zip written by model.save() "
            f"(with a 'data' entry), got {type(error).__name__}: {error}"
        ) from None


def saved_policy_class(data: dict[str, Any], path: Path) -> type:
    """The policy class named in a zip's ``data`` (unpickled as SB3's own ``load`` does).

    Raises:
        NotABrimsModelError: the data names no policy class, or it cannot be loaded here.
    """
    entry = data.get("policy_class")
    if not isinstance(entry, dict) or ":serialized:" not in entry:
        raise NotABrimsModelError(f"{str(path)!r} is not a brims-rl model: its data names no policy class")
    try:
        return cloudpickle.loads(base64.b64decode(entry[":serialized:"].encode()))
    except Exception as error:  # a missing module, a renamed class, a mangled entry
        raise NotABrimsModelError(
            f"{str(path)!r}: its policy class cannot be loaded here ({type(error).__name__}: {error})"
        ) from None
