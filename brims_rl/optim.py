"""Learning-rate factors per parameter group that survive SB3's learning-rate schedule."""

from __future__ import annotations

from typing import Any

import torch

#: Key of a parameter group's learning-rate factor (a group without it keeps the base rate).
LR_SCALE = "lr_scale"
# Where a group keeps its base rate during a step (never in a saved state: removed after it).
_BASE_LR = "_lr_before_scale"


def apply_lr_scales(optimizer: torch.optim.Optimizer) -> None:
    """Make each parameter group's ``"lr_scale"`` multiply its learning rate in ``step()``.

    SB3 writes the schedule's rate into every group before each update
    (``update_learning_rate``), which would erase a rate set per group; so the factor is put on
    just before each step and taken off just after. The schedule, the logged
    ``train/learning_rate`` and the saved optimizer state all keep the base rate. Works with
    any ``torch.optim`` optimizer (Adam for PPO, RMSprop for A2C).
    """

    def scale_up(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:
            group[_BASE_LR] = group["lr"]
            group["lr"] = group["lr"] * group.get(LR_SCALE, 1.0)

    def restore(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:
            group["lr"] = group.pop(_BASE_LR)  # exactly the base rate: no drift over many steps

    optimizer.register_step_pre_hook(scale_up)
    optimizer.register_step_post_hook(restore)
