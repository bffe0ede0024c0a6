"""Zoneout of h (and of c, in the cells that carry one): the hand-written backward through the
masks in NumPy and torch (both loops) against autograd at fixed masks, with dropout too; masks of
all zeros and all ones; the masks drawn from the model's generator after dropout's (the same for
manual and autograd: test_dropout) and resumed;
zoneout 0 unchanged; evaluation, sampling and the C++ loop moving by the expectation; the fused
backend refused. The rates' one-line errors are in test_reliability, the export in test_export,
the replayed windows in test_graphs, finite differences and a wrong backward in test_gradcheck_cli."""

import dataclasses

import pytest
import torch
from conftest import CELLS, LOOPS, assert_close_at_scale, bptt_loop, problems
from hypothesis import example, given
from hypothesis import strategies as st
from test_dropout import torch_window

import reference_numpy as rn
from torch_charrnn import CharRNN
from torch_charrnn.errors import ConfigError
from torch_charrnn.inference.sampling import expectation, step_layers
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn.bptt import dropout_masks, forward_autograd, forward_manual, map_zones, zoneout_masks
from torch_charrnn.rnn.cells import get_cell
from torch_charrnn.rnn.memory import footprint
from torch_charrnn.rnn.products import product

TOL = {"rtol": 1e-10, "atol": 1e-12}


def rates_of(cell: str, p: float, p_c: float) -> dict:
    """Zoneout's rates by state name: c's only where the cell carries one."""
    return {"h": p, "c": p_c} if "c" in get_cell(cell).STATE else {"h": p}


def zoned_problem(cell, L, V, H, B, T, scale, seed, p, p_c, dropout):
    """A random problem (float64) with dropout's masks (or None) and zoneout's, drawn as the model
    draws them: dropout's first, from one generator."""
    params, state, inputs, targets = random_problem(V, H, B, T, scale, seed, cell, L)
    g, like = torch.Generator().manual_seed(seed), torch.zeros((), dtype=torch.float64)
    masks = dropout_masks(dropout, (T, B, H), L, g, like) if dropout else None
    rates = get_cell(cell).zoned(**rates_of(cell, p, p_c)).zoneout
    zones = zoneout_masks(rates, (T, B, H), L, g, like)
    return params, state, inputs, targets, masks, zones


def with_zones(run, zones):
    """``run`` (a forward of bptt.py) with zoneout's masks, in torch_window's signature."""
    return lambda *args: run(*args, zones)


@pytest.mark.parametrize("loop", LOOPS)
@given(
    **problems(
        p=st.sampled_from([0.1, 0.5, 0.9]),
        p_c=st.sampled_from([0.0, 0.3, 0.8]),
        dropout=st.sampled_from([0.0, 0.4]),
    )
)
@example(cell="lnlstm", L=2, V=2, H=1, B=1, T=1, scale=1.0, seed=0, p=0.5, p_c=0.5, dropout=0.4)
@example(cell="tanh", L=1, V=2, H=1, B=1, T=1, scale=1.0, seed=0, p=0.5, p_c=0.0, dropout=0.0)
@example(cell="lstm", L=2, V=3, H=2, B=2, T=4, scale=3.0, seed=4, p=0.1, p_c=0.8, dropout=0.0)
@example(cell="lngru", L=3, V=3, H=2, B=2, T=3, scale=6.0, seed=1, p=0.9, p_c=0.0, dropout=0.4)
def test_the_hand_written_backward_through_zoneout_equals_autograd(
    loop, cell, L, V, H, B, T, scale, seed, p, p_c, dropout
):
    """Loss, logits, the last state and every gradient (the initial state's too, and with a
    gradient into the last state from after the window), under the same masks."""
    params, state, inputs, targets, masks, zones = zoned_problem(
        cell, L, V, H, B, T, scale, seed, p, p_c, dropout
    )
    want = torch_window(with_zones(forward_autograd, zones), params, state, inputs, targets, masks, cell)
    with bptt_loop(loop):
        got = torch_window(with_zones(forward_manual, zones), params, state, inputs, targets, masks, cell)
    for g, w in zip(got, want, strict=True):
        assert_close_at_scale(g, w)


@given(**problems(p=st.sampled_from([0.2, 0.7]), p_c=st.sampled_from([0.0, 0.5]), dropout=st.just(0.3)))
@example(cell="lnlstm", L=2, V=2, H=1, B=1, T=1, scale=1.0, seed=0, p=0.5, p_c=0.5, dropout=0.3)
def test_the_numpy_reference_zones_out_the_same_units_and_equals_torch(
    cell, L, V, H, B, T, scale, seed, p, p_c, dropout
):
    params, state, inputs, targets, masks, zones = zoned_problem(
        cell, L, V, H, B, T, scale, seed, p, p_c, dropout
    )
    np_masks, np_zones = [m.numpy() for m in masks], map_zones(zones, torch.Tensor.numpy)
    loss, grads, last = rn.loss_and_grads(params, inputs, targets, state, cell, np_masks, np_zones)
    leaf = lambda a: torch.from_numpy(a).requires_grad_()  # noqa: E731
    layers = [{k: leaf(v) for k, v in q.items()} for q in params["layers"]]
    W_hy, b_y, state_t = leaf(params["W_hy"]), leaf(params["b_y"]), tuple(map(leaf, state))
    logits, t_last = forward_manual(
        torch.from_numpy(inputs), state_t, layers, W_hy, b_y, get_cell(cell), masks, zones
    )
    t_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1))
    t_loss.backward()
    torch.testing.assert_close(torch.tensor(loss, dtype=torch.float64), t_loss.detach(), **TOL)
    for s, t_s in zip(last, t_last, strict=True):
        torch.testing.assert_close(torch.from_numpy(s), t_s.detach(), **TOL)
    for l, q in enumerate(layers):
        for name, t in q.items():
            torch.testing.assert_close(torch.from_numpy(grads["layers"][l][name]), t.grad, **TOL)
    torch.testing.assert_close(torch.from_numpy(grads["W_hy"]), W_hy.grad, **TOL)
    for g, t in zip(grads["state"], state_t, strict=True):
        torch.testing.assert_close(torch.from_numpy(g), t.grad, **TOL)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("cell", CELLS)
def test_masks_of_zeros_change_nothing_and_masks_of_ones_keep_the_initial_state(loop, cell):
    """A unit that never zones out is the cell's own, bit for bit (forward and every gradient); one
    that always does carries the initial state exactly, and no gradient reaches the weights through
    the recurrence of a layer whose every state is kept."""
    L, V, H, B, T = 2, 5, 4, 3, 6
    params, state, inputs, targets = random_problem(V, H, B, T, 1.0, 0, cell, L)
    like = torch.zeros((T, B, H), dtype=torch.float64)
    names = get_cell(cell).STATE
    with bptt_loop(loop):
        plain = torch_window(forward_manual, params, state, inputs, targets, None, cell)
        zeros = [tuple(like for _ in names) for _ in range(L)]
        zoned = torch_window(with_zones(forward_manual, zeros), params, state, inputs, targets, None, cell)
        for a, b in zip(zoned, plain, strict=True):
            assert torch.equal(a, b)
        ones = [tuple(like + 1 for _ in names) for _ in range(L)]
        _, _, *kept = torch_window(
            with_zones(forward_manual, ones), params, state, inputs, targets, None, cell
        )
    n = len(names)
    for s, initial in zip(kept[:n], state, strict=True):
        assert torch.equal(s.detach(), torch.from_numpy(initial)), "every state kept its initial value"
    assert all(torch.count_nonzero(g) == 0 for g in kept[2 * n : -2]), (
        "a new state never kept passes nothing back"
    )
    assert all(torch.count_nonzero(g) > 0 for g in kept[n : 2 * n]), "the initial state reaches the output"


def test_the_masks_keep_units_at_the_asked_rate_one_tuple_per_layer():
    g = torch.Generator().manual_seed(0)
    zones = zoneout_masks((0.3, 0.0), (50, 40, 30), 2, g, torch.zeros(()))
    assert len(zones) == 2 and all(z[1] is None and z[0].shape == (50, 40, 30) for z in zones)
    values = torch.cat([z[0].flatten() for z in zones])
    assert set(values.unique().tolist()) == {0.0, 1.0}
    assert abs(values.mean().item() - 0.3) < 0.01
    assert not torch.equal(zones[0][0], zones[1][0])


@pytest.mark.parametrize("cell", CELLS)
def test_zoneout_0_changes_nothing_bit_for_bit(cell):
    """No draw from torch's generator at construction, none from the model's in training, the
    cell's own evaluation: a model with rates of 0 is the model without zoneout."""
    torch.manual_seed(3)
    plain = CharRNN(9, 8, cell, num_layers=2)
    after_plain = torch.rand(3)
    torch.manual_seed(3)
    zero = CharRNN(9, 8, cell, num_layers=2, zoneout=0.0, zoneout_c=0.0)
    assert torch.equal(torch.rand(3), after_plain) and zero.cell == plain.cell
    x = torch.randint(0, 9, (2, 6))
    before = zero.dropout_generator.get_state()
    zero.train()
    trained = zero(x)[0]
    assert torch.equal(zero.dropout_generator.get_state(), before)
    assert torch.equal(trained, plain(x)[0])


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("cell", CELLS)
def test_in_evaluation_each_state_moves_by_the_expectation(loop, cell):
    """The window's loop (C++ or torch) in evaluation equals sampling's step, one symbol at a time,
    and that step is p * previous + (1 - p) * the cell's new state, for each state."""
    torch.manual_seed(0)
    rates = rates_of(cell, 0.3, 0.6)
    model = CharRNN(6, 5, cell, num_layers=2, zoneout=rates["h"], zoneout_c=rates.get("c", 0.0))
    model = model.double().eval()
    x = torch.randint(0, 6, (2, 7), generator=torch.Generator().manual_seed(1))
    state = tuple(torch.randn(2, 2, 5, dtype=torch.float64) for _ in model.cell.STATE)
    w = model.weights()
    with torch.no_grad(), bptt_loop(loop):
        window, last = model(x, state)
        states = [tuple(s[l] for s in state) for l in range(2)]
        recur = [product(p["W_hh"], 2) for p in w["layers"]]
        plain = dataclasses.replace(model.cell, zoneout=())
        for t in range(7):
            a, _ = model.cell.input_share(x[:, t], w["layers"][0])
            before = [s for s in states]
            top = step_layers(a, states, w["layers"], model.cell, recur, expectation(model.cell, w["W_hy"]))
            torch.testing.assert_close(top @ w["W_hy"] + w["b_y"], window[:, t], **TOL)
            # layer 0 by the formula, from the same previous state
            new, _ = plain.step(a, before[0], w["layers"][0], recur[0])
            for name, prev, n, got in zip(plain.STATE, before[0], new, states[0], strict=True):
                torch.testing.assert_close(got, rates[name] * prev + (1 - rates[name]) * n, **TOL)
    for s, got in zip(last, zip(*states, strict=True), strict=True):
        torch.testing.assert_close(s, torch.stack(got), **TOL)


@pytest.mark.parametrize("cell", ["gru", "lnlstm"])
def test_the_generator_state_is_in_the_checkpoint_and_zoneout_resumes_its_masks(cell):
    """Zoneout alone seeds the model's generator and draws from it, and a checkpoint restores it:
    the masks after a resume are the masks the run would have drawn."""
    torch.manual_seed(0)
    model = CharRNN(5, 4, cell, zoneout=0.3)
    model.train()
    model(torch.randint(0, 5, (2, 3)))  # a draw
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    following = model.masks(3, 2)[1]
    other = CharRNN(5, 4, cell, zoneout=0.3)
    other.configure_optimizers = model.configure_optimizers
    other.on_load_checkpoint(checkpoint)
    assert torch.equal(other.masks(3, 2)[1][0][0], following[0][0])
    fresh = CharRNN(5, 4, cell, zoneout=0.3)
    assert not torch.equal(fresh.masks(3, 2)[1][0][0], following[0][0]), "the masks come from the checkpoint"


def test_fused_and_a_state_the_cell_lacks_are_refused_naming_the_way_out():
    with pytest.raises(
        ConfigError, match=r"`zoneout` and `zoneout_c` above 0 need `bptt` manual or autograd"
    ):
        CharRNN(5, 4, "lstm", zoneout=0.2, bptt="fused")
    with pytest.raises(ConfigError, match=r"`zoneout_c` zones out c, and the gru cell carries none"):
        CharRNN(5, 4, "gru", zoneout_c=0.2)


@pytest.mark.parametrize("cell", CELLS)
def test_the_memory_estimate_counts_each_zoned_states_mask_and_new_value(cell):
    plain, V, H, L, B, T = get_cell(cell), 65, 32, 2, 8, 16
    zoned = plain.zoned(**rates_of(cell, 0.1, 0.1))
    base = footprint(plain, V, H, L, B, T).window
    assert footprint(zoned, V, H, L, B, T).window - base == 2 * len(plain.STATE) * L * H * B * T * 4
    assert footprint(plain.zoned(h=0.1), V, H, L, B, T).window - base == 2 * L * H * B * T * 4
