"""One BRIMs layer: N recurrent modules of which the top-k are updated each step.

Shapes use B for batch, N for the layer's modules, d for one module's block size
(``hidden_size // N``), H for attention heads. A layer's state is ``(B, N, d)`` for h
(and c for LSTM cells).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from brims_rl.utils import check_positive_number

CELL_TYPES = ("lstm", "gru")
WEIGHT_INITS = ("fan_in", "uniform", "authors")
BOTTOM_UP_VALUES = ("shared", "per_module")


class LayerStep(NamedTuple):
    """Result of one layer step.

    h, c: new state, ``(B, N, d)`` each (c is the previous c for GRU cells).
    mask: ``(B, N)`` bool, the modules that were updated.
    slot_attention: ``(B, N, S)`` head-averaged input attention over slots
    ``[null, bottom-up, (top-down)]``; only filled when asked for, else None.
    """

    h: torch.Tensor
    c: torch.Tensor
    mask: torch.Tensor
    slot_attention: Optional[torch.Tensor]


def _grouped_weight(groups: int, fan_in: int, fan_out: int) -> nn.Parameter:
    """A stack of ``groups`` independent (fan_in, fan_out) matrices (initialised by the layer)."""
    return nn.Parameter(torch.empty(groups, fan_in, fan_out))


class BrimsLayer(nn.Module):
    """Input attention, top-k selection, independent cells, communication, masked update.

    Args:
        bottom_up_size: width of the bottom-up input (the encoded observation for the
            first layer, the layer below's hidden size otherwise).
        top_down_size: width of the top-down input (previous state of the layer above),
            or None when this layer has no top-down slot.
        hidden_size: this layer's state size, split into ``num_modules`` blocks.
        num_modules: N, the number of modules.
        top_k: k, how many modules are updated each step.
        cell: "lstm" or "gru".
        input_heads, input_key_size, input_value_size: input attention geometry; each
            module's cell input is the concatenation of the heads, ``input_heads *
            input_value_size`` wide.
        comm_heads, comm_key_size, comm_value_size: communication attention geometry.
        communication: False turns module-to-module communication off (an ablation).
        dropout: dropout on both attention maps.
        bottom_up_norm: LayerNorm of the bottom-up input before its key/value projection.
        weight_init: one of :data:`WEIGHT_INITS`, see :meth:`reset_parameters`.
        bottom_up_values: "shared" (RIMs' attention: one value projection of the bottom-up
            input that every module reads, weighted by its own attention) or "per_module"
            (each module reads its own value projection of it; the keys stay shared, so the
            attention and the top-k choice are computed as with "shared"). The top-down
            slot's values are shared in both.
        input_temperature: the input attention's softmax temperature: logits ``q.k /
            (sqrt(dk) * input_temperature)``. Above 1 the attention (and what each module
            reads) spreads more evenly over the slots and moves less per step of the query
            and key weights; below 1 it sharpens. The top-k choice ranks the same logits.
        cell_init_gain: factor on the module cells' initial weights (input and recurrent),
            on top of ``weight_init``'s rule. Below 1 the cells start nearer their linear
            range: smaller, smoother states, as ``nn.LSTM``'s default init gives on a CNN's
            features (see :meth:`reset_parameters`).
    """

    def __init__(
        self,
        bottom_up_size: int,
        top_down_size: Optional[int],
        hidden_size: int,
        num_modules: int,
        top_k: int,
        cell: str = "lstm",
        input_heads: int = 2,
        input_key_size: int = 64,
        input_value_size: int = 64,
        comm_heads: int = 4,
        comm_key_size: int = 32,
        comm_value_size: int = 32,
        communication: bool = True,
        dropout: float = 0.0,
        bottom_up_norm: bool = True,
        weight_init: str = "fan_in",
        bottom_up_values: str = "shared",
        input_temperature: float = 1.0,
        cell_init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        if bottom_up_values not in BOTTOM_UP_VALUES:
            raise ValueError(f"bottom_up_values={bottom_up_values!r}: expected one of {BOTTOM_UP_VALUES}")
        self.input_temperature = check_positive_number("input_temperature", input_temperature)
        self.cell_init_gain = check_positive_number("cell_init_gain", cell_init_gain)
        self.num_modules = num_modules
        self.top_k = top_k
        self.block_size = hidden_size // num_modules
        self.hidden_size = hidden_size
        self.cell = cell
        self.has_top_down = top_down_size is not None
        self.input_heads = input_heads
        self.input_key_size = input_key_size
        self.input_value_size = input_value_size
        self.comm_heads = comm_heads
        self.comm_key_size = comm_key_size
        self.comm_value_size = comm_value_size
        self.communication = communication
        self.dropout = dropout

        self.weight_init = weight_init
        self.per_module_values = bottom_up_values == "per_module"

        n, d = num_modules, self.block_size
        kv_width = input_heads * (input_key_size + input_value_size)
        # "per_module": the keys of every head, then the values of every module and head.
        bottom_up_width = input_heads * (input_key_size + n * input_value_size) if self.per_module_values else kv_width
        # LayerNorm of the bottom-up input puts its keys and values at unit scale, whatever the
        # encoder's or the layer below's: without it the observation's signal shrinks at each
        # attention hop (a lower layer's h is small at init).
        self.bottom_up_norm = nn.LayerNorm(bottom_up_size) if bottom_up_norm else nn.Identity()
        # One key/value projection per input slot, no bias: the null slot is a zero
        # vector whose key and value stay exactly zero, so its logit is always 0.
        self.bottom_up_kv = nn.Linear(bottom_up_size, bottom_up_width, bias=False)
        self.top_down_kv = nn.Linear(top_down_size, kv_width, bias=False) if self.has_top_down else None
        self.query = _grouped_weight(n, d, input_heads * input_key_size)

        cell_input = input_heads * input_value_size
        gate_count = 4 if cell == "lstm" else 3
        if cell == "lstm":
            # [u, h] @ W in one grouped matmul: gates i, f, g, o.
            self.cell_weight = _grouped_weight(n, cell_input + d, gate_count * d)
            self.cell_hidden_weight = None
        else:
            # GRU needs W_h h separately (the reset gate multiplies its candidate part).
            self.cell_weight = _grouped_weight(n, cell_input, gate_count * d)
            self.cell_hidden_weight = _grouped_weight(n, d, gate_count * d)
        self.cell_bias = nn.Parameter(torch.empty(n, gate_count * d))

        if communication:
            qkv_width = comm_heads * (2 * comm_key_size + comm_value_size)
            self.comm_qkv = _grouped_weight(n, d, qkv_width)
            out_width = comm_heads * comm_value_size
            # Gate and candidate of the residual update, fused: h += sigmoid(G o) * tanh(F o).
            self.comm_gate_candidate = _grouped_weight(n, out_width, 2 * d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every weight by ``weight_init`` (see :data:`WEIGHT_INITS`).

        "fan_in" (default): N(0, 1/fan_in) for every projection, so unit-variance inputs give
        unit-variance keys and gate pre-activations, values scaled up to make up for the
        near-uniform attention at init; cell biases 0 (a forget-gate bias of 1 was measured
        too: it lengthens the memory at init, and the output then follows the history more
        than the current input).
        "uniform": U(+-1/sqrt(n)) with n the module's block size for the cells, queries and
        communication keys (nn.LSTM's rule) and the input width for key/value projections
        (nn.Linear's): this project's first defaults, which starve the heads (README).
        "authors": "uniform" cells with 0.01 * N(0, 1) attention projections, as the
        released BRIMs code.
        Under every rule ``cell_init_gain`` multiplies the cells' weights (not their biases).
        """
        d = self.block_size
        attention = [self.bottom_up_kv.weight, self.query]
        if self.top_down_kv is not None:
            attention.append(self.top_down_kv.weight)
        cells = [self.cell_weight] + ([self.cell_hidden_weight] if self.cell_hidden_weight is not None else [])
        communication = [self.comm_qkv, self.comm_gate_candidate] if self.communication else []
        with torch.no_grad():
            for weight in attention + cells + communication:
                # nn.Linear stores (out, in), grouped weights (groups, in, out).
                fan_in = weight.shape[1]
                is_cell = any(weight is w for w in cells)
                gain = self.cell_init_gain if is_cell else 1.0
                if self.weight_init == "fan_in":
                    weight.normal_(0.0, gain / math.sqrt(fan_in))
                elif self.weight_init == "authors" and any(weight is w for w in attention):
                    weight.normal_(0.0, 0.01)
                else:
                    legacy_fan_in = d if is_cell else fan_in
                    bound = gain / math.sqrt(legacy_fan_in)
                    weight.uniform_(-bound, bound)
            if self.weight_init == "fan_in":
                # At init the queries are ~0, so each of the S slots (null included) gets
                # attention ~1/S and the cell input is ~(1/S) * (sum of S - 1 values): scale
                # the values by S / sqrt(S - 1) to hand the cells a unit-variance input.
                slots = 3 if self.has_top_down else 2
                value_gain = slots / math.sqrt(slots - 1)
                shared = [self.top_down_kv] if self.top_down_kv is not None else []
                if self.per_module_values:
                    self.bottom_up_kv.weight[self.input_heads * self.input_key_size :] *= value_gain
                else:
                    shared.append(self.bottom_up_kv)
                for projection in shared:
                    per_head = projection.weight.view(self.input_heads, self.input_key_size + self.input_value_size, -1)
                    per_head[:, self.input_key_size :] *= value_gain
                self.cell_bias.zero_()
            else:
                self.cell_bias.uniform_(-1.0 / math.sqrt(d), 1.0 / math.sqrt(d))

    def project_bottom_up(self, bottom_up: torch.Tensor) -> torch.Tensor:
        """Keys and values of the bottom-up slot: ``(..., bottom_up_size) -> (..., heads*(dk+dv))``,
        or ``(..., heads*dk + N*heads*dv)`` with per-module values."""
        return self.bottom_up_kv(self.bottom_up_norm(bottom_up))

    def extra_repr(self) -> str:
        return (
            f"modules={self.num_modules}, top_k={self.top_k}, block={self.block_size}, cell={self.cell}, "
            f"top_down={self.has_top_down}, communication={self.communication}"
        )

    def forward(
        self,
        h: torch.Tensor,
        c: torch.Tensor,
        bottom_up_kv: torch.Tensor,
        top_down: Optional[torch.Tensor],
        need_attention: bool = False,
    ) -> LayerStep:
        """One time step.

        Args:
            h, c: previous state, ``(B, N, d)``.
            bottom_up_kv: ``self.project_bottom_up(bottom_up_input)``, ``(B, heads*(dk+dv))``
                (``(B, heads*dk + N*heads*dv)`` with per-module values); projected by the
                caller so the first layer can project a whole sequence in one matmul.
            top_down: previous state of the layer above, ``(B, top_down_size)``, or None.
            need_attention: also return the head-averaged slot attention.
        """
        batch = h.shape[0]
        heads, dk, dv = self.input_heads, self.input_key_size, self.input_value_size

        module_values = None
        if self.per_module_values:
            bottom_up_keys, module_values = bottom_up_kv.split([heads * dk, self.num_modules * heads * dv], dim=-1)
            module_values = module_values.view(batch, self.num_modules, heads, dv)
            # A zero value block in the shared layout keeps one stack for the keys of every slot.
            bottom_up_kv = F.pad(bottom_up_keys.view(batch, heads, dk), (0, dv)).view(batch, heads * (dk + dv))
        slots = [bottom_up_kv]
        if self.top_down_kv is not None:
            slots.append(self.top_down_kv(top_down))
        kv = torch.stack(slots, dim=1).view(batch, len(slots), heads, dk + dv)
        keys, values = kv.split([dk, dv], dim=-1)

        queries = torch.einsum("bnd,ndk->bnk", h, self.query).view(batch, self.num_modules, heads, dk)
        logits = torch.einsum("bnhk,bshk->bnhs", queries, keys) * (1.0 / (math.sqrt(dk) * self.input_temperature))
        # Null slot first, with logit exactly 0 (its key is the zero vector).
        attention = torch.softmax(F.pad(logits, (1, 0)), dim=-1)  # (B, N, H, 1 + S)
        null_attention = attention[..., 0].mean(dim=-1)  # (B, N)

        # The k modules that put the least attention on the null slot are updated.
        # topk + scatter stay on the device: no host sync, no gradient.
        active = torch.topk(null_attention, self.top_k, dim=1, largest=False).indices
        mask = torch.zeros_like(null_attention, dtype=torch.bool).scatter_(1, active, True)

        weights = F.dropout(attention[..., 1:], self.dropout, self.training)
        cell_input = torch.einsum("bnhs,bshv->bnhv", weights, values)
        if module_values is not None:
            # The bottom-up slot's shared value above is zero; each module adds its own.
            cell_input = cell_input + weights[..., 0].unsqueeze(-1) * module_values
        cell_input = cell_input.reshape(batch, self.num_modules, heads * dv)

        h_new, c_new = self._cell(cell_input, h, c)
        if self.communication:
            h_new = self._communicate(h_new, mask)

        update = mask.unsqueeze(-1)
        h_out = torch.where(update, h_new, h)
        c_out = torch.where(update, c_new, c) if self.cell == "lstm" else c
        slot_attention = attention.mean(dim=2) if need_attention else None
        return LayerStep(h_out, c_out, mask, slot_attention)

    def _cell(self, cell_input: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All N module cells as one grouped matmul: ``(B, N, in), (B, N, d) -> (B, N, d)``."""
        if self.cell == "lstm":
            gates = torch.einsum("bni,nio->bno", torch.cat([cell_input, h], dim=-1), self.cell_weight) + self.cell_bias
            in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=-1)
            c_new = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(candidate)
            h_new = torch.sigmoid(out_gate) * torch.tanh(c_new)
            return h_new, c_new
        x_gates = torch.einsum("bni,nio->bno", cell_input, self.cell_weight) + self.cell_bias
        h_gates = torch.einsum("bnd,ndo->bno", h, self.cell_hidden_weight)
        x_r, x_z, x_n = x_gates.chunk(3, dim=-1)
        h_r, h_z, h_n = h_gates.chunk(3, dim=-1)
        reset = torch.sigmoid(x_r + h_r)
        update = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        h_new = candidate + update * (h - candidate)
        return h_new, c

    def _communicate(self, h_new: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Modules attend to each other's new states; gated residual update.

        Inactive modules' new states are read here but are not trained through it:
        forward is the identity, backward multiplies the gradient by the mask.
        """
        if h_new.requires_grad:
            h_new = torch.where(mask.unsqueeze(-1), h_new, h_new.detach())
        batch, n = h_new.shape[:2]
        heads, dk, dv = self.comm_heads, self.comm_key_size, self.comm_value_size
        qkv = torch.einsum("bnd,ndk->bnk", h_new, self.comm_qkv).view(batch, n, heads, 2 * dk + dv)
        q, k, v = qkv.transpose(1, 2).split([dk, dk, dv], dim=-1)  # (B, H, N, .)
        attention = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(dk)), dim=-1)
        attention = F.dropout(attention, self.dropout, self.training)
        out = (attention @ v).transpose(1, 2).reshape(batch, n, heads * dv)
        gate, candidate = torch.einsum("bni,nio->bno", out, self.comm_gate_candidate).chunk(2, dim=-1)
        return h_new + torch.sigmoid(gate) * torch.tanh(candidate)
