"""The BRIMs recurrent core with ``nn.LSTM``'s interface.

``out, (h, c) = core(x, (h0, c0))`` with x ``(T, B, input_size)``, h and c
``(num_layers, B, hidden_size)`` and out ``(T, B, hidden_size)``: the top layer's state
at every step (or, with ``output="sum"``, the sum of every layer's state). Layers are
updated bottom to top at each step; a layer's top-down slot reads the state that the layer
above had at the previous step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import nn

from brims_rl.layer import CELL_TYPES, WEIGHT_INITS, BrimsLayer
from brims_rl.utils import check_positive_number

TOP_DOWN_MODES = ("adjacent", "last_to_first", "none")
OUTPUT_MODES = ("top", "sum")
State = tuple[torch.Tensor, torch.Tensor]


@dataclass
class BrimsInfo:
    """What the core did, per layer l (only built with ``return_info=True``).

    masks[l]: bool ``(T, B, N_l)``, the modules updated at each step.
    input_attention[l]: float ``(T, B, N_l, 3)``, head-averaged input attention on the
    slots [null, bottom-up, top-down]; the top-down column is 0 where a layer has none.
    """

    masks: list[torch.Tensor] = field(default_factory=list)
    input_attention: list[torch.Tensor] = field(default_factory=list)


def _per_layer(name: str, value: Union[int, Sequence[int]], num_layers: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * num_layers
    values = list(value)
    if len(values) != num_layers or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name}={value!r}: expected an int or a list of {num_layers} ints (one per layer)")
    return values


def _checked_top_k(top_k: Union[int, Sequence[int]], modules: list[int]) -> list[int]:
    top_ks = _per_layer("top_k", top_k, len(modules))
    for layer, (n, k) in enumerate(zip(modules, top_ks)):
        if not 1 <= k <= n:
            raise ValueError(f"top_k={k} for layer {layer}: expected 1 <= top_k <= num_modules ({n})")
    return top_ks


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive int")


class BRIMs(nn.Module):
    """Bidirectional Recurrent Independent Mechanisms (Mittal et al., ICML 2020).

    Args:
        input_size: width of the input features.
        hidden_size: state size of every layer, split evenly into that layer's modules.
        num_layers: number of stacked layers L.
        num_modules: modules per layer, an int or one per layer.
        top_k: modules updated per step, an int or one per layer (1 <= top_k <= modules).
        cell: "lstm" or "gru" module cells. A GRU core still takes and returns an (h, c)
            pair so that code written for ``nn.LSTM`` can store its state; c is unused.
        top_down: "adjacent" (layer l reads layer l+1 at t-1, the paper's wiring),
            "last_to_first" (only the first layer reads the last layer at t-1, as the
            authors' released code does) or "none" (stacked RIMs, the ablation).
        input_heads, input_key_size, input_value_size: input attention geometry.
        comm_heads, comm_key_size, comm_value_size: communication attention geometry.
        communication: module-to-module communication on (default) or off.
        dropout: attention dropout.
        input_norm: LayerNorm of the input x before the first layer's key/value projection.
            Default off, as nn.LSTM: it would erase the scale and mean of low-dimensional
            observations, and on a CNN's features it multiplies the encoder's gradient by
            the inverse of their small spread (4x an LSTM policy's at the first PPO update,
            so gradient clipping then shrinks every other group's step; README).
        state_norm: LayerNorm of a layer's state where it feeds the layer above (bottom-up).
            Default on: without it the observation's signal shrinks at each layer. The
            top-down input is never normalised: at its natural, small scale it modulates the
            layer below; normalised, the loop between two layers amplified itself and the
            output followed that loop instead of the frames (README, signal-flow table).
        weight_init: "fan_in" (default, variance preserving), "uniform" (nn.LSTM-style, the
            first defaults) or "authors" (0.01 N(0, 1) attention, as the released code).
        output: "top" (default, as nn.LSTM: the top layer's state) or "sum" (the sum of
            every layer's state, a residual path inside the core: with a sparse top layer,
            the heads also read the layers below, whose every module is fresh each step
            when their top_k equals their module count).
        output_scale: constant factor on the output (the states themselves are unscaled). It
            sets how far one optimiser step on the heads moves what they compute: with Adam a
            linear head's step in function space grows with the scale of the features it reads,
            and at 1.0 CnnBrimsPolicy's heads read 2.8x what CnnLstmPolicy's do on Breakout
            frames. Neither 0.35 (the LSTM's scale) nor 2.5 made the value fit sooner (README).
        bottom_up_values: "shared" (default, RIMs' input attention: every module of a layer
            reads one value projection of the layer's bottom-up input, weighted by its own
            attention) or "per_module" (each module reads a projection of its own, N times as
            many value weights; keys, attention and top-k selection unchanged). With "shared"
            a layer's modules all read the same ``input_heads * input_value_size`` numbers.
        input_temperature: softmax temperature of every layer's input attention (default
            1.0: logits ``q.k / sqrt(dk)``); it divides the logits, so it equals dividing the
            query weights by it (tests/test_core.py).
        cell_init_gain: factor on every module cell's initial weights (default 1.0: the
            ``weight_init`` rule as it is). At 0.5 the cells start nearer their linear range:
            on Breakout frames the output's rms falls from 0.29 to 0.18 and its change from
            step to step halves (0.057 -> 0.028; ``nn.LSTM``'s default init gives 0.105 and
            0.012), and the input sensitivity falls to about half an ``nn.LSTM``'s (README).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 2,
        num_modules: Union[int, Sequence[int]] = 6,
        top_k: Union[int, Sequence[int]] = 4,
        cell: str = "lstm",
        top_down: str = "adjacent",
        input_heads: int = 2,
        input_key_size: int = 64,
        input_value_size: int = 64,
        comm_heads: int = 4,
        comm_key_size: int = 32,
        comm_value_size: int = 32,
        communication: bool = True,
        dropout: float = 0.0,
        input_norm: bool = False,
        state_norm: bool = True,
        weight_init: str = "fan_in",
        output: str = "top",
        output_scale: float = 1.0,
        bottom_up_values: str = "shared",
        input_temperature: float = 1.0,
        cell_init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in [
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("input_heads", input_heads),
            ("input_key_size", input_key_size),
            ("input_value_size", input_value_size),
            ("comm_heads", comm_heads),
            ("comm_key_size", comm_key_size),
            ("comm_value_size", comm_value_size),
        ]:
            _check_positive(name, value)
        modules = _per_layer("num_modules", num_modules, num_layers)
        for layer, n in enumerate(modules):
            if n < 1:
                raise ValueError(f"num_modules={n} for layer {layer}: expected at least 1 module")
            if hidden_size % n != 0:
                raise ValueError(
                    f"hidden_size={hidden_size} is not divisible by num_modules={n} (layer {layer}): "
                    f"each module gets hidden_size / num_modules units"
                )
        top_ks = _checked_top_k(top_k, modules)
        if cell not in CELL_TYPES:
            raise ValueError(f"cell={cell!r}: expected one of {CELL_TYPES}")
        if top_down not in TOP_DOWN_MODES:
            raise ValueError(f"top_down={top_down!r}: expected one of {TOP_DOWN_MODES}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init={weight_init!r}: expected one of {WEIGHT_INITS}")
        if output not in OUTPUT_MODES:
            raise ValueError(f"output={output!r}: expected one of {OUTPUT_MODES}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r}: expected 0 <= dropout < 1")

        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_modules = modules
        self.top_k = top_ks
        self.cell = cell
        self.top_down = top_down
        self.output = output
        self.output_scale = check_positive_number("output_scale", output_scale)
        self.top_down_source = [self._top_down_source(layer) for layer in range(num_layers)]
        self.layers = nn.ModuleList(
            BrimsLayer(
                bottom_up_size=input_size if layer == 0 else hidden_size,
                top_down_size=None if self.top_down_source[layer] is None else hidden_size,
                hidden_size=hidden_size,
                num_modules=modules[layer],
                top_k=top_ks[layer],
                cell=cell,
                input_heads=input_heads,
                input_key_size=input_key_size,
                input_value_size=input_value_size,
                comm_heads=comm_heads,
                comm_key_size=comm_key_size,
                comm_value_size=comm_value_size,
                communication=communication,
                dropout=dropout,
                bottom_up_norm=input_norm if layer == 0 else state_norm,
                weight_init=weight_init,
                bottom_up_values=bottom_up_values,
                input_temperature=input_temperature,
                cell_init_gain=cell_init_gain,
            )
            for layer in range(num_layers)
        )

    def set_top_k(self, top_k: Union[int, Sequence[int]]) -> None:
        """Change how many modules each layer updates per step (an int or one per layer).

        Only the selection changes: no parameter depends on k. Used for a dense warm-up
        (every module updated for the first steps of training, :class:`brims_rl.TopKWarmup`).
        """
        self.top_k = _checked_top_k(top_k, self.num_modules)
        for layer, k in zip(self.layers, self.top_k):
            layer.top_k = k

    def _top_down_source(self, layer: int) -> Optional[int]:
        """Which layer's previous state feeds ``layer``'s top-down slot (None: no slot)."""
        last = self.num_layers - 1
        if self.top_down == "adjacent":
            return layer + 1 if layer < last else None
        if self.top_down == "last_to_first":
            return last if layer == 0 else None
        return None

    def forward(
        self,
        x: torch.Tensor,
        state: Optional[State] = None,
        episode_starts: Optional[torch.Tensor] = None,
        return_info: bool = False,
    ):
        """Run the core over a sequence.

        Args:
            x: ``(T, B, input_size)``.
            state: ``(h, c)``, each ``(num_layers, B, hidden_size)``; None means zeros.
            episode_starts: optional ``(T, B)`` of 0/1 (or bool): where
                ``episode_starts[t, b]`` is 1, env b's state is zeroed before step t.
            return_info: also return a :class:`BrimsInfo` with masks and attention.

        Returns:
            ``(out, (h, c))``, or ``(out, (h, c), info)`` with ``return_info``;
            out is ``(T, B, hidden_size)``.
        """
        h0, c0 = self._check_inputs(x, state, episode_starts)
        steps, batch = x.shape[:2]
        shapes = [(batch, layer.num_modules, layer.block_size) for layer in self.layers]
        hs = [h0[layer].reshape(shape) for layer, shape in enumerate(shapes)]
        cs = [c0[layer].reshape(shape) for layer, shape in enumerate(shapes)]
        keep = None
        if episode_starts is not None:
            keep = (1.0 - episode_starts.to(x.dtype)).view(steps, batch, 1, 1)

        # The first layer's bottom-up keys/values do not depend on the recurrence:
        # project the whole sequence in one matmul.
        first_kv = self.layers[0].project_bottom_up(x)
        outputs = []
        masks: list[list[torch.Tensor]] = [[] for _ in self.layers]
        attention: list[list[torch.Tensor]] = [[] for _ in self.layers]
        for t in range(steps):
            if keep is not None:
                hs = [h * keep[t] for h in hs]
                cs = [c * keep[t] for c in cs]
            previous_h = list(hs)
            for index, layer in enumerate(self.layers):
                bottom_up_kv = first_kv[t] if index == 0 else layer.project_bottom_up(hs[index - 1].reshape(batch, -1))
                source = self.top_down_source[index]
                top_down = None if source is None else previous_h[source].reshape(batch, -1)
                result = layer(hs[index], cs[index], bottom_up_kv, top_down, need_attention=return_info)
                hs[index], cs[index] = result.h, result.c
                if return_info:
                    masks[index].append(result.mask)
                    attention[index].append(result.slot_attention)
            if self.output == "top":
                outputs.append(hs[-1].reshape(batch, self.hidden_size))
            else:
                outputs.append(torch.stack([h.reshape(batch, self.hidden_size) for h in hs]).sum(dim=0))

        out = torch.stack(outputs)
        if self.output_scale != 1.0:
            out = out * self.output_scale
        h_n = torch.stack([h.reshape(batch, self.hidden_size) for h in hs])
        c_n = torch.stack([c.reshape(batch, self.hidden_size) for c in cs])
        if not return_info:
            return out, (h_n, c_n)
        info = BrimsInfo(
            masks=[torch.stack(m) for m in masks],
            input_attention=[self._three_slots(torch.stack(a)) for a in attention],
        )
        return out, (h_n, c_n), info

    @staticmethod
    def _three_slots(attention: torch.Tensor) -> torch.Tensor:
        """Pad ``(T, B, N, S)`` slot attention to the 3 slots [null, bottom-up, top-down]."""
        missing = 3 - attention.shape[-1]
        return torch.nn.functional.pad(attention, (0, missing)) if missing else attention

    def _check_inputs(
        self, x: torch.Tensor, state: Optional[State], episode_starts: Optional[torch.Tensor]
    ) -> State:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"input has shape {tuple(x.shape)}: expected (seq_len, batch, input_size={self.input_size})"
            )
        steps, batch = x.shape[:2]
        if episode_starts is not None and tuple(episode_starts.shape) != (steps, batch):
            raise ValueError(
                f"episode_starts has shape {tuple(episode_starts.shape)}: expected (seq_len, batch) = {(steps, batch)}"
            )
        expected = (self.num_layers, batch, self.hidden_size)
        if state is None:
            zeros = x.new_zeros(expected)
            return zeros, zeros
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError("state: expected a pair (h, c) of tensors, or None for zeros")
        for name, tensor in zip(("h", "c"), state):
            if tuple(tensor.shape) != expected:
                raise ValueError(
                    f"state {name} has shape {tuple(tensor.shape)}: expected (num_layers, batch, hidden_size) = {expected}"
                )
        return state[0], state[1]
