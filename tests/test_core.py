"""Invariants of the BRIMs core, pinned down exactly."""

from __future__ import annotations

import pytest
import torch

from brims_rl import BRIMs

INPUT, HIDDEN = 12, 24


def make_core(**kwargs) -> BRIMs:
    torch.manual_seed(0)
    options = dict(num_layers=2, num_modules=[6, 4], top_k=[4, 2])
    options.update(kwargs)
    return BRIMs(INPUT, HIDDEN, **options)


def random_state(core: BRIMs, batch: int, dtype=torch.float32):
    shape = (core.num_layers, batch, core.hidden_size)
    return torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("top_down", ["adjacent", "last_to_first", "none"])
def test_shapes_like_nn_lstm(cell, top_down):
    core = make_core(cell=cell, top_down=top_down)
    assert (core.input_size, core.hidden_size, core.num_layers) == (INPUT, HIDDEN, 2)
    x = torch.randn(5, 3, INPUT)
    out, (h, c) = core(x)
    assert out.shape == (5, 3, HIDDEN)
    assert h.shape == c.shape == (2, 3, HIDDEN)
    # The output is the top layer's state at each step.
    assert torch.equal(out[-1], h[-1])
    out2, state2, info = core(x, (h, c), return_info=True)
    assert out2.shape == (5, 3, HIDDEN)
    assert [m.shape for m in info.masks] == [(5, 3, 6), (5, 3, 4)]
    assert [m.dtype for m in info.masks] == [torch.bool, torch.bool]
    assert [a.shape for a in info.input_attention] == [(5, 3, 6, 3), (5, 3, 4, 3)]
    for attention in info.input_attention:
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sum_output_is_every_layers_state_and_changes_nothing_else(cell):
    top, summed = make_core(cell=cell), make_core(cell=cell, output="sum")
    x = torch.randn(6, 3, INPUT)
    starts = torch.zeros(6, 3)
    starts[3, 1] = 1.0
    state = random_state(top, 3)
    out_top, (h_top, c_top), info_top = top(x, state, starts, return_info=True)
    states = []
    for t in range(6):  # one step at a time, to read both layers' states at every step
        _, step_state = summed(x[t : t + 1], state if t == 0 else states[-1], starts[t : t + 1])
        states.append(step_state)
    out_sum, (h_sum, c_sum), info_sum = summed(x, state, starts, return_info=True)
    # The same parameters (same seed) and the same recurrence: only the output differs.
    assert torch.equal(h_sum, h_top) and torch.equal(c_sum, c_top)
    assert all(torch.equal(a, b) for a, b in zip(info_sum.masks, info_top.masks))
    assert torch.equal(out_top[-1], h_top[-1])
    assert out_sum.shape == out_top.shape
    for t, (h, _) in enumerate(states):
        torch.testing.assert_close(out_sum[t], h[0] + h[1])


@pytest.mark.parametrize("output", ["top", "sum"])
def test_output_scale_scales_the_output_and_nothing_else(output):
    plain, scaled = make_core(output=output), make_core(output=output, output_scale=0.25)
    x = torch.randn(6, 3, INPUT)
    state = random_state(plain, 3)
    out, (h, c), info = plain(x, state, return_info=True)
    out_scaled, (h_scaled, c_scaled), info_scaled = scaled(x, state, return_info=True)
    assert torch.equal(h_scaled, h) and torch.equal(c_scaled, c)
    assert all(torch.equal(a, b) for a, b in zip(info_scaled.masks, info.masks))
    assert torch.equal(out_scaled, out * 0.25)


def test_set_top_k_changes_only_the_selection():
    core = make_core()
    weights = {name: p.clone() for name, p in core.named_parameters()}
    x = torch.randn(5, 3, INPUT)
    core.set_top_k([6, 4])  # every module of both layers
    _, _, info = core(x, return_info=True)
    assert core.top_k == [6, 4] and all(m.all() for m in info.masks)
    core.set_top_k(1)
    _, _, info = core(x, return_info=True)
    assert [layer.top_k for layer in core.layers] == [1, 1]
    assert all((m.sum(-1) == 1).all() for m in info.masks)
    assert all(torch.equal(p, weights[name]) for name, p in core.named_parameters())
    with pytest.raises(ValueError, match=r"top_k=5 for layer 1: expected 1 <= top_k <= num_modules \(4\)"):
        core.set_top_k([2, 5])
    assert core.top_k == [1, 1]  # a refused value changes nothing


def test_gru_carries_c_unchanged():
    core = make_core(cell="gru")
    h0, c0 = random_state(core, 3)
    _, (_, c) = core(torch.randn(4, 3, INPUT), (h0, c0))
    assert torch.equal(c, c0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_exactly_top_k_active_per_layer_batch_and_step(cell):
    core = make_core(cell=cell, num_layers=3, num_modules=[6, 4, 3], top_k=[4, 1, 3])
    _, _, info = core(torch.randn(9, 5, INPUT), random_state(core, 5), return_info=True)
    for mask, k in zip(info.masks, [4, 1, 3]):
        assert torch.equal(mask.sum(-1), torch.full(mask.shape[:2], k))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_inactive_modules_keep_state_bit_for_bit(cell):
    core = make_core(cell=cell)
    batch = 4
    h, c = random_state(core, batch)
    x = torch.randn(6, batch, INPUT)
    changed_somewhere = False
    for t in range(6):
        _, (h_new, c_new), info = core(x[t : t + 1], (h, c), return_info=True)
        for layer, mask in enumerate(info.masks):
            n = core.num_modules[layer]
            blocks = lambda s: s[layer].view(batch, n, -1)  # noqa: E731
            inactive = ~mask[0]
            assert torch.equal(blocks(h_new)[inactive], blocks(h)[inactive])
            assert torch.equal(blocks(c_new)[inactive], blocks(c)[inactive])
            # Active modules really are updated (else the check above proves nothing).
            changed_somewhere |= not torch.equal(blocks(h_new)[mask[0]], blocks(h)[mask[0]])
        h, c = h_new, c_new
    assert changed_somewhere


def test_episode_starts_reset_only_flagged_elements():
    core = make_core().double()
    batch, steps, reset_at = 3, 7, 3
    x = torch.randn(steps, batch, INPUT, dtype=torch.float64)
    state = random_state(core, batch, torch.float64)
    starts = torch.zeros(steps, batch)
    starts[reset_at, 1] = 1.0

    out_reset, _ = core(x, state, episode_starts=starts)
    out_plain, _ = core(x, state)
    out_fresh, _ = core(x[reset_at:, 1:2], None)

    # Unflagged elements are untouched; the flagged one matches a fresh start from zeros.
    assert torch.equal(out_reset[:, [0, 2]], out_plain[:, [0, 2]])
    assert torch.equal(out_reset[:reset_at, 1], out_plain[:reset_at, 1])
    torch.testing.assert_close(out_reset[reset_at:, 1:2], out_fresh, rtol=0, atol=1e-12)
    assert not torch.allclose(out_reset[reset_at:, 1], out_plain[reset_at:, 1])


def test_bool_episode_starts_match_float():
    core = make_core()
    x = torch.randn(5, 2, INPUT)
    starts = torch.tensor([[0, 1], [0, 0], [1, 0], [0, 0], [1, 1]])
    out_float, _ = core(x, episode_starts=starts.float())
    out_bool, _ = core(x, episode_starts=starts.bool())
    assert torch.equal(out_float, out_bool)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("top_down", ["adjacent", "last_to_first"])
def test_stepwise_equals_one_call(cell, top_down):
    # float64 so that the different matmul blocking of T steps vs 1 step cannot flip a top-k choice.
    core = make_core(cell=cell, top_down=top_down).double()
    x = torch.randn(10, 3, INPUT, dtype=torch.float64)
    state = random_state(core, 3, torch.float64)
    out_all, (h_all, c_all), info_all = core(x, state, return_info=True)

    outputs, masks = [], [[], []]
    step_state = state
    for t in range(10):
        out, step_state, info = core(x[t : t + 1], step_state, return_info=True)
        outputs.append(out)
        for layer in range(2):
            masks[layer].append(info.masks[layer])
    torch.testing.assert_close(torch.cat(outputs), out_all, rtol=0, atol=1e-12)
    torch.testing.assert_close(step_state[0], h_all, rtol=0, atol=1e-12)
    torch.testing.assert_close(step_state[1], c_all, rtol=0, atol=1e-12)
    for layer in range(2):
        assert torch.equal(torch.cat(masks[layer]), info_all.masks[layer])


def first_step_attention(core: BRIMs, state, layer: int) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(1, 2, INPUT)
    return core(x, state, return_info=True)[2].input_attention[layer]


@pytest.mark.parametrize("top_down", ["adjacent", "last_to_first", "none"])
def test_top_down_signal_reaches_lower_layer(top_down):
    core = make_core(top_down=top_down)
    h, c = random_state(core, 2)
    h_other = h.clone()
    h_other[1] += 1.0  # only the upper layer's previous state changes
    before = first_step_attention(core, (h, c), 0)
    after = first_step_attention(core, (h_other, c), 0)
    if top_down == "none":
        assert torch.equal(before, after)
        assert torch.equal(before[..., 2], torch.zeros_like(before[..., 2]))
    else:
        assert not torch.allclose(before, after)
        assert (before[..., 2] > 0).all()


def test_top_down_wiring_in_three_layers():
    h_change = lambda h, layer: h.index_add(0, torch.tensor([layer]), torch.ones(1, *h.shape[1:]))  # noqa: E731
    for mode, (source_reaches_layer0, middle_reaches_layer0) in {
        "adjacent": (False, True),  # layer 0 reads layer 1; layer 2 feeds layer 1 only
        "last_to_first": (True, False),  # layer 0 reads layer 2 only
    }.items():
        core = make_core(top_down=mode, num_layers=3, num_modules=[6, 4, 3], top_k=[4, 2, 2])
        h, c = random_state(core, 2)
        base = first_step_attention(core, (h, c), 0)
        top_changed = first_step_attention(core, (h_change(h, 2), c), 0)
        middle_changed = first_step_attention(core, (h_change(h, 1), c), 0)
        assert torch.equal(base, top_changed) != source_reaches_layer0, mode
        assert torch.equal(base, middle_changed) != middle_reaches_layer0, mode


def test_gradients_reach_cells_and_skip_selection():
    core = make_core()
    out, _, info = core(torch.randn(6, 4, INPUT), random_state(core, 4), return_info=True)
    out.square().mean().backward()
    for layer in core.layers:
        for name in ("cell_weight", "cell_bias", "query", "comm_qkv", "comm_gate_candidate"):
            grad = getattr(layer, name).grad
            assert grad is not None and grad.abs().sum() > 0, name
    for mask in info.masks:
        assert mask.grad_fn is None and not mask.requires_grad


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_inactive_modules_get_no_gradient(cell):
    """One step, one env: an inactive module's cell and query are read by communication
    but receive exactly zero gradient, while every active module's receive some."""
    core = make_core(cell=cell, num_layers=1, num_modules=6, top_k=2)
    out, _, info = core(torch.randn(1, 1, INPUT), random_state(core, 1), return_info=True)
    out.sum().backward()
    layer = core.layers[0]
    active = info.masks[0][0, 0]
    for name in ("cell_weight", "query", "cell_bias"):
        grad = getattr(layer, name).grad
        per_module = grad.flatten(1).abs().sum(1)
        assert torch.equal(per_module[~active], torch.zeros(4)), name
        assert (per_module[active] > 0).all(), name


def test_batch_elements_are_independent():
    core = make_core()
    x = torch.randn(5, 4, INPUT, dtype=torch.float64)
    core = core.double()
    out_batch, _ = core(x)
    out_single, _ = core(x[:, 2:3])
    torch.testing.assert_close(out_batch[:, 2:3], out_single, rtol=0, atol=1e-12)


def test_dropout_only_in_training():
    core = make_core(dropout=0.5)
    x = torch.randn(4, 2, INPUT)
    core.eval()
    assert torch.equal(core(x)[0], core(x)[0])
    core.train()
    torch.manual_seed(0)
    first = core(x)[0]
    torch.manual_seed(1)
    assert not torch.equal(first, core(x)[0])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(top_k=7), r"top_k=7 .*1 <= top_k <= num_modules \(6\)"),
        (dict(top_k=0), r"top_k=0"),
        (dict(num_modules=5), r"hidden_size=24 is not divisible by num_modules=5"),
        (dict(num_modules=[6, 4, 3]), r"num_modules=\[6, 4, 3\].*list of 2 ints"),
        (dict(top_k=[4]), r"top_k=\[4\].*list of 2 ints"),
        (dict(cell="rnn"), r"cell='rnn'.*'lstm', 'gru'"),
        (dict(top_down="sideways"), r"top_down='sideways'.*'adjacent'"),
        (dict(num_layers=0), r"num_layers=0"),
        (dict(dropout=1.5), r"dropout=1.5"),
        (dict(output="mean"), r"output='mean'.*'top', 'sum'"),
        (dict(output_scale=0.0), r"output_scale=0.0: expected a positive number"),
        (dict(output_scale="0.3"), r"output_scale='0.3'"),
        (dict(bottom_up_values="private"), r"bottom_up_values='private'.*'shared', 'per_module'"),
        (dict(input_temperature=0), r"input_temperature=0: expected a positive number"),
        (dict(cell_init_gain=-0.5), r"cell_init_gain=-0.5: expected a positive number"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, pattern):
    options = dict(num_layers=2, num_modules=6, top_k=4)
    options.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        BRIMs(INPUT, HIDDEN, **options)


def test_bad_call_inputs_name_the_input():
    core = make_core()
    with pytest.raises(ValueError, match=r"input has shape \(3, 2, 11\).*input_size=12"):
        core(torch.randn(3, 2, INPUT - 1))
    with pytest.raises(ValueError, match=r"input has shape \(2, 12\)"):
        core(torch.randn(2, INPUT))
    good = torch.zeros(2, 2, HIDDEN)
    with pytest.raises(ValueError, match=r"state h has shape \(1, 2, 24\).*\(2, 2, 24\)"):
        core(torch.randn(3, 2, INPUT), (torch.zeros(1, 2, HIDDEN), good))
    with pytest.raises(ValueError, match=r"state c has shape"):
        core(torch.randn(3, 2, INPUT), (good, torch.zeros(2, 3, HIDDEN)))
    with pytest.raises(ValueError, match=r"episode_starts has shape \(3,\).*\(3, 2\)"):
        core(torch.randn(3, 2, INPUT), episode_starts=torch.zeros(3))


def test_active_modules_are_those_attending_least_to_null():
    core = make_core()
    _, _, info = core(torch.randn(8, 5, INPUT), random_state(core, 5), return_info=True)
    for mask, attention in zip(info.masks, info.input_attention):
        null = attention[..., 0]
        most_null_active = torch.where(mask, null, torch.full_like(null, -1.0)).amax(-1)
        least_null_inactive = torch.where(mask, torch.full_like(null, 2.0), null).amin(-1)
        assert (most_null_active <= least_null_inactive).all()
        # Not vacuous: the null attention really differs between modules.
        assert (most_null_active < least_null_inactive).any()


# --- One module's cell is a textbook LSTM / GRU cell ------------------------------------------


def _randomize_cell(layer, generator: torch.Generator) -> None:
    """Random cell weights, so the comparison does not depend on how they are initialised."""
    with torch.no_grad():
        for name in ("cell_weight", "cell_hidden_weight", "cell_bias"):
            parameter = getattr(layer, name)
            if parameter is not None:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)


def _reference_cell(layer, module: int) -> torch.nn.Module:
    """``nn.LSTMCell`` / ``nn.GRUCell`` holding module ``module``'s weights (torch's gate order:
    LSTM i, f, g, o; GRU r, z, n). BRIMs adds its one bias to the input side only."""
    d = layer.block_size
    weight = layer.cell_weight[module].detach()
    if layer.cell == "lstm":
        inputs = weight.shape[0] - d
        reference = torch.nn.LSTMCell(inputs, d).double()
        w_input, w_hidden = weight[:inputs], weight[inputs:]
    else:
        inputs = weight.shape[0]
        reference = torch.nn.GRUCell(inputs, d).double()
        w_input, w_hidden = weight, layer.cell_hidden_weight[module].detach()
    with torch.no_grad():
        reference.weight_ih.copy_(w_input.T)
        reference.weight_hh.copy_(w_hidden.T)
        reference.bias_ih.copy_(layer.cell_bias[module].detach())
        reference.bias_hh.zero_()
    return reference


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_each_module_cell_equals_torch_cell_with_its_weights(cell):
    core = make_core(cell=cell, num_layers=1, num_modules=4, top_k=2).double()
    layer = core.layers[0]
    generator = torch.Generator().manual_seed(3)
    _randomize_cell(layer, generator)
    batch, d = 5, layer.block_size
    inputs = layer.input_heads * layer.input_value_size
    cell_input = torch.randn(batch, 4, inputs, generator=generator, dtype=torch.float64)
    h = torch.randn(batch, 4, d, generator=generator, dtype=torch.float64)
    c = torch.randn(batch, 4, d, generator=generator, dtype=torch.float64)
    h_new, c_new = layer._cell(cell_input, h, c)
    for module in range(4):
        reference = _reference_cell(layer, module)
        if cell == "lstm":
            h_ref, c_ref = reference(cell_input[:, module], (h[:, module], c[:, module]))
            torch.testing.assert_close(c_new[:, module], c_ref, rtol=0, atol=1e-12)
        else:
            h_ref = reference(cell_input[:, module], h[:, module])
            assert torch.equal(c_new, c)
        torch.testing.assert_close(h_new[:, module], h_ref, rtol=0, atol=1e-12)


# --- bottom_up_values="per_module" -------------------------------------------------------------


def test_per_module_values_equal_shared_values_when_every_module_has_the_same_projection():
    """Each module reading its own copy of the shared value projection is the shared core,
    exactly: the keys, attention, selection and cells are untouched by the option."""
    shared = make_core().double()
    per_module = make_core(bottom_up_values="per_module").double()
    per_module.load_state_dict(
        {name: tensor for name, tensor in shared.state_dict().items() if "bottom_up_kv" not in name}, strict=False
    )
    for shared_layer, layer in zip(shared.layers, per_module.layers):
        heads, dk, dv = layer.input_heads, layer.input_key_size, layer.input_value_size
        weight = shared_layer.bottom_up_kv.weight.detach().view(heads, dk + dv, -1)
        keys, values = weight[:, :dk].reshape(heads * dk, -1), weight[:, dk:].reshape(heads * dv, -1)
        with torch.no_grad():
            layer.bottom_up_kv.weight.copy_(torch.cat([keys] + [values] * layer.num_modules))
        assert layer.bottom_up_kv.weight.shape[0] == heads * (dk + layer.num_modules * dv)
    x = torch.randn(5, 3, INPUT, dtype=torch.float64)
    out_shared, (h_shared, _) = shared(x)
    out, (h, _) = per_module(x)
    torch.testing.assert_close(out, out_shared, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_shared, rtol=0, atol=1e-12)
    with torch.no_grad():  # not vacuous: a module's own values change what it computes
        per_module.layers[0].bottom_up_kv.weight[-1] += 1.0
    assert not torch.allclose(per_module(x)[0], out_shared)


# --- input_temperature ---------------------------------------------------------------------------


def test_input_temperature_equals_queries_divided_by_it():
    """The temperature divides the input attention's logits and nothing else: a core at
    temperature 2.5 is the default core with every layer's query weights divided by 2.5."""
    warm = make_core(input_temperature=2.5).double()
    plain = make_core().double()
    plain.load_state_dict(warm.state_dict())
    with torch.no_grad():
        for layer in plain.layers:
            layer.query /= 2.5
    x = torch.randn(6, 3, INPUT, dtype=torch.float64)
    out_warm, (h_warm, c_warm) = warm(x)
    out, (h, c) = plain(x)
    torch.testing.assert_close(out_warm, out, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_warm, c, rtol=0, atol=1e-12)
    plain.load_state_dict(warm.state_dict())  # not vacuous: the same weights at temperature 1 differ
    assert not torch.allclose(plain(x)[0], out_warm)


# --- cell_init_gain ------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_init, cell", [("fan_in", "lstm"), ("fan_in", "gru"), ("uniform", "lstm"), ("authors", "gru")])
def test_cell_init_gain_scales_the_cell_weights_and_nothing_else(weight_init, cell):
    """Same seed, same draws: the cells' input and recurrent weights are the default core's
    times the gain; every other tensor (attention, communication, cell biases) is the same."""
    default = make_core(weight_init=weight_init, cell=cell).state_dict()
    scaled = make_core(weight_init=weight_init, cell=cell, cell_init_gain=0.4).state_dict()
    cell_weights = [name for name in default if name.endswith(("cell_weight", "cell_hidden_weight"))]
    assert len(cell_weights) == (2 if cell == "lstm" else 4)
    for name, tensor in default.items():
        if name in cell_weights:
            torch.testing.assert_close(scaled[name], 0.4 * tensor, rtol=1e-6, atol=0)
            assert not torch.equal(scaled[name], tensor)
        else:
            assert torch.equal(scaled[name], tensor), name


# --- communication=False ------------------------------------------------------------------------


@pytest.mark.parametrize("communication", [True, False])
def test_without_communication_modules_do_not_read_each_other(communication):
    """All modules active (top_k = N) so the selection cannot change: changing one module's
    previous state changes only that module's new state exactly when communication is off."""
    core = make_core(num_layers=1, num_modules=4, top_k=4, communication=communication).double()
    assert any(name.startswith("layers.0.comm_") for name in core.state_dict()) == communication
    x = torch.randn(1, 2, INPUT, dtype=torch.float64)
    h, c = (torch.randn(1, 2, HIDDEN, dtype=torch.float64) for _ in range(2))
    h_other = h.clone()
    h_other[0, :, :6] += 1.0  # module 0's block (4 modules of 6 units)
    out, _ = core(x, (h, c))
    out_other, _ = core(x, (h_other, c))
    changed = [(out[0, :, m * 6 : (m + 1) * 6] - out_other[0, :, m * 6 : (m + 1) * 6]).abs().max().item() > 0
               for m in range(4)]
    assert changed == [True, communication, communication, communication]


# --- One layer step equals a plain, loop-by-loop rendering of the README's five steps ---------


def _reference_layer_step(layer, h, c, x, top_down):
    """Input attention, top-k selection, the module's own cell, communication and the sparse
    update, written per env, module and head with explicit indexing (float64)."""
    heads, dk, dv = layer.input_heads, layer.input_key_size, layer.input_value_size
    batch, n, d = h.shape
    slot_inputs = [(x, layer.bottom_up_kv.weight)]
    if layer.top_down_kv is not None:
        slot_inputs.append((top_down, layer.top_down_kv.weight))
    width = dk + dv
    h_out, c_out = h.clone(), c.clone()
    masks = torch.zeros(batch, n, dtype=torch.bool)
    slot_attention = torch.zeros(batch, n, 1 + len(slot_inputs), dtype=h.dtype)
    for b in range(batch):
        kvs = [inp[b] @ weight.T for inp, weight in slot_inputs]
        keys = [[kv[i * width : i * width + dk] for i in range(heads)] for kv in kvs]
        # values[s][m][i]: what module m reads from slot s through head i.
        values = [[[kv[i * width + dk : (i + 1) * width] for i in range(heads)] for _ in range(n)] for kv in kvs]
        if layer.per_module_values:  # bottom-up: keys of every head, then each module's values
            keys[0] = [kvs[0][i * dk : (i + 1) * dk] for i in range(heads)]
            start = heads * dk
            values[0] = [[kvs[0][start + (m * heads + i) * dv : start + (m * heads + i + 1) * dv] for i in range(heads)]
                         for m in range(n)]
        attention = torch.zeros(n, heads, 1 + len(kvs), dtype=h.dtype)
        for m in range(n):
            query = h[b, m] @ layer.query[m]
            for i in range(heads):
                q = query[i * dk : (i + 1) * dk]
                scale = dk**0.5 * layer.input_temperature
                logits = torch.stack([torch.zeros((), dtype=h.dtype)] + [q @ k[i] / scale for k in keys])
                attention[m, i] = torch.softmax(logits, 0)
        slot_attention[b] = attention.mean(1)
        null = attention[:, :, 0].mean(1)
        active = sorted(range(n), key=lambda m: null[m].item())[: layer.top_k]
        masks[b, active] = True
        new_h, new_c = torch.zeros(n, d, dtype=h.dtype), torch.zeros(n, d, dtype=h.dtype)
        for m in range(n):
            u = torch.cat([sum(attention[m, i, 1 + s] * values[s][m][i] for s in range(len(kvs))) for i in range(heads)])
            cell = _reference_cell(layer, m)
            if layer.cell == "lstm":
                new_h[m], new_c[m] = cell(u[None], (h[b, m][None], c[b, m][None]))
            else:
                new_h[m], new_c[m] = cell(u[None], h[b, m][None]), c[b, m]
        if layer.communication:
            ch, ck, cv = layer.comm_heads, layer.comm_key_size, layer.comm_value_size
            qkv = [new_h[m] @ layer.comm_qkv[m] for m in range(n)]
            part = lambda m, i, lo, hi: qkv[m][i * (2 * ck + cv) + lo : i * (2 * ck + cv) + hi]  # noqa: E731
            communicated = new_h.clone()
            for m in range(n):
                out = []
                for i in range(ch):
                    scores = torch.stack([part(m, i, 0, ck) @ part(j, i, ck, 2 * ck) / ck**0.5 for j in range(n)])
                    weights = torch.softmax(scores, 0)
                    out.append(sum(weights[j] * part(j, i, 2 * ck, 2 * ck + cv) for j in range(n)))
                gate, candidate = (torch.cat(out) @ layer.comm_gate_candidate[m]).split(d)
                communicated[m] = new_h[m] + torch.sigmoid(gate) * torch.tanh(candidate)
            new_h = communicated
        for m in active:
            h_out[b, m] = new_h[m]
            c_out[b, m] = new_c[m]
    return h_out, c_out, masks, slot_attention


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "top_down, communication, bottom_up_values, input_temperature",
    [(True, True, "shared", 1.0), (False, True, "shared", 1.0), (True, False, "shared", 1.0),
     (True, True, "per_module", 1.0), (False, True, "per_module", 1.0), (True, True, "shared", 0.25),
     (True, True, "per_module", 3.0)],
)
def test_layer_step_equals_a_reference_implementation(cell, top_down, communication, bottom_up_values, input_temperature):
    from brims_rl.layer import BrimsLayer

    torch.manual_seed(5)
    layer = BrimsLayer(
        bottom_up_size=INPUT, top_down_size=HIDDEN if top_down else None, hidden_size=HIDDEN, num_modules=4,
        top_k=2, cell=cell, input_heads=2, input_key_size=5, input_value_size=3, comm_heads=2, comm_key_size=4,
        comm_value_size=3, communication=communication, bottom_up_values=bottom_up_values,
        input_temperature=input_temperature,
    ).double()
    _randomize_cell(layer, torch.Generator().manual_seed(6))
    batch = 3
    h, c = (torch.randn(batch, 4, 6, dtype=torch.float64) for _ in range(2))
    x = torch.randn(batch, INPUT, dtype=torch.float64)
    above = torch.randn(batch, HIDDEN, dtype=torch.float64) if top_down else None
    with torch.no_grad():
        step = layer(h, c, layer.bottom_up_kv(x), above, need_attention=True)
        h_ref, c_ref, mask_ref, attention_ref = _reference_layer_step(layer, h, c, x, above)
    assert torch.equal(step.mask, mask_ref)
    torch.testing.assert_close(step.slot_attention, attention_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(step.h, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(step.c, c_ref, rtol=0, atol=1e-12)
    assert not torch.equal(step.h, h)  # not vacuous: the active modules moved
