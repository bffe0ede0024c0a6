"""What the TensorBoard monitor computes of the gates and states (the event files themselves are
read back in test_cli.py)."""

import pytest
import torch
from conftest import CELLS

from torch_charrnn.rnn.bptt import run_layers
from torch_charrnn.rnn.cells import cell_options, get_cell
from torch_charrnn.rnn.diagnostics import activation_statistics, hidden_gradients

V, H, B, T = 7, 5, 3, 6


def layer(cell, in_size=V, **options):
    g = torch.Generator().manual_seed(0)
    c = get_cell(cell)
    options = cell_options(c, **{"whh_scale": 0.5, "init_std": 0.5, **options})
    return {k: v.double() for k, v in c.init(in_size, H, g, first_layer=in_size == V, **options).items()}


def window(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


def caches_of(cell, p, state):
    inputs, _ = window()
    # with autograd on, as the monitor runs it: step by step, a cache per step (the C++ loop of
    # bptt="manual" keeps whole-window tensors instead)
    with torch.enable_grad():
        _, last, tape = run_layers(inputs, state, [p], get_cell(cell))
    return tape[0].caches, last


def statistics(cell, caches):
    return activation_statistics(caches, get_cell(cell))


@pytest.mark.parametrize(("bias", "mean"), [(30.0, 1.0), (-30.0, 0.0)])
def test_a_forget_gate_held_open_or_shut_is_saturated_with_its_mean_at_the_end(bias, mean):
    p = layer("lstm", forget_bias=bias)
    state = (torch.zeros(1, B, H, dtype=torch.float64), torch.zeros(1, B, H, dtype=torch.float64))
    stats = statistics("lstm", caches_of("lstm", p, state)[0])
    assert stats["mean", "f"].item() == pytest.approx(mean, abs=1e-9)
    assert stats["saturation", "f"].item() == 1.0


def test_the_lstm_cell_state_norm_is_the_norm_of_c_over_the_window():
    p = layer("lstm")
    g = torch.Generator().manual_seed(1)
    state = tuple(torch.randn(1, B, H, generator=g, dtype=torch.float64) for _ in range(2))
    caches, last = caches_of("lstm", p, state)
    # c_t of every step: the next step's c_{t-1} (its cache's third entry), and the last state at the end
    cs = torch.stack([cache[2] for cache in caches[1:]] + [last[1][0]])
    stats = statistics("lstm", caches)
    assert stats["norm", "c"].item() == pytest.approx(cs.norm(dim=-1).mean().item(), rel=1e-12)
    assert get_cell("lstm").activations(caches[-1])["c"][1].equal(last[1][0])


def test_saturation_counts_the_units_past_the_threshold():
    p = layer("gru")
    state = (torch.zeros(1, B, H, dtype=torch.float64),)
    caches, _ = caches_of("gru", p, state)
    p["b_h"][H : 2 * H] = 40.0  # z's bias: every update gate shut at 1
    saturated, _ = caches_of("gru", p, state)
    open_stats, shut = statistics("gru", caches), statistics("gru", saturated)
    z = torch.stack([get_cell("gru").activations(c)["z"][1] for c in caches])
    assert open_stats["saturation", "z"].item() == pytest.approx(
        ((2 * z - 1).abs() > 0.99).double().mean().item()
    )
    assert open_stats["saturation", "z"].item() < 1.0 and shut["saturation", "z"].item() == 1.0
    assert set(shut) == {("saturation", n) for n in "rzn"} | {("mean", "r"), ("mean", "z")}


@pytest.mark.parametrize("cell", CELLS)
def test_hidden_gradients_gives_every_layer_its_statistics(cell):
    layers = [layer(cell), layer(cell, in_size=H)]
    state = tuple(torch.zeros(2, B, H, dtype=torch.float64) for _ in get_cell(cell).STATE)
    W_hy, b_y = torch.randn(H, V, dtype=torch.float64), torch.zeros(V, dtype=torch.float64)
    inputs, targets = window()
    norms, last, hs, stats = hidden_gradients(inputs, targets, state, layers, W_hy, b_y, get_cell(cell))
    assert norms.shape == last.shape == (2, T) and hs.shape == (2, T, B, H)
    assert len(stats) == 2 and stats[0].keys() == stats[1].keys()
    assert (norms > 0).all() and last[:, -1].gt(0).all()
