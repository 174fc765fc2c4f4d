"""Signal-propagation diagnostics for recurrent cores (BRIMs or ``nn.LSTM``).

A recurrent policy learns only if the current observation reaches the heads and the
heads' gradient reaches the encoder. Two numbers measured at initialisation tell whether
a core lets that happen, and compare a BRIMs core with an ``nn.LSTM`` of the same width:

* :func:`input_sensitivity`: how much the core's last output moves when only the last
  step's input is replaced (std over batch and units);
* :func:`input_gradient`: the norm of the gradient that a random unit-variance readout of
  the last output sends back to the last step's input (mean over the batch).

A third, :func:`output_rms`, is the scale of what the heads read: with Adam, a linear head's
step in function space grows with it (README, "What changed BRIMs' curve").

Both take any module with ``nn.LSTM``'s call ``core(x[T, B, in]) -> (out[T, B, H], state)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def relu_features(steps: int, batch: int, width: int, seed: int = 0) -> torch.Tensor:
    """``(steps, batch, width)`` non-negative inputs shaped like a CNN encoder's ReLU output."""
    generator = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(steps, batch, width, generator=generator))


def input_sensitivity(core: nn.Module, inputs: torch.Tensor, seed: int = 1) -> float:
    """Std of the change in the last output when only the last input step is redrawn.

    inputs: ``(T, B, input_size)``; the replacement step is drawn like :func:`relu_features`.
    """
    generator = torch.Generator().manual_seed(seed)
    changed = inputs.clone()
    changed[-1] = torch.relu(torch.randn(inputs.shape[1:], generator=generator))
    with torch.no_grad():
        out, _ = core(inputs)
        out_changed, _ = core(changed)
    return (out[-1] - out_changed[-1]).std().item()


def output_rms(core: nn.Module, inputs: torch.Tensor) -> float:
    """Root mean square of the core's output over every step, batch entry and unit.

    inputs: ``(T, B, input_size)``.
    """
    with torch.no_grad():
        out, _ = core(inputs)
    return out.pow(2).mean().sqrt().item()


def input_gradient(core: nn.Module, inputs: torch.Tensor, seed: int = 2) -> float:
    """Mean over the batch of the norm of d(readout)/d(last input step).

    The readout is ``sum(out[-1] * w)`` with ``w ~ N(0, 1)`` of the output's shape: a
    head at unit scale, the same for every core measured with the same seed.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = inputs.clone().requires_grad_(True)
    out, _ = core(inputs)
    readout = torch.randn(out[-1].shape, generator=generator)
    (grad,) = torch.autograd.grad((out[-1] * readout).sum(), inputs)
    return grad[-1].norm(dim=-1).mean().item()


def first_update_gradient_norms(model: Any) -> dict[str, float]:
    """Gradient norm per top-level parameter group of ``model.policy`` at its first
    optimizer step (one rollout, then the first minibatch of the first update).

    ``model`` is an on-policy SB3 / sb3-contrib algorithm, not trained yet. Gradient
    clipping is lifted for the measurement so the norms are the loss's own. Groups are the
    policy's direct children (``features_extractor``, ``lstm_actor``, ``value_net``, ...).
    """
    captured: dict[str, float] = {}
    optimizer = model.policy.optimizer
    original_step = optimizer.step

    def step_and_capture(*args: Any, **kwargs: Any) -> Any:
        if not captured:
            for name, child in model.policy.named_children():
                grads = [p.grad for p in child.parameters() if p.grad is not None]
                if grads:
                    captured[name] = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
        return original_step(*args, **kwargs)

    max_grad_norm, model.max_grad_norm = model.max_grad_norm, float("inf")
    optimizer.step = step_and_capture
    try:
        model.learn(model.n_steps * model.n_envs)
    finally:
        optimizer.step = original_step
        model.max_grad_norm = max_grad_norm
    return captured
