"""The layer-normalised cells (``lnlstm``, ``lngru``) beyond what every cell's sweep proves of them:
what layer normalisation gives over one unit, that layer 0 normalises each character's row once,
and that the benchmark's baseline (``benchmarks/layernorm_loop.py``, the cells as PyTorch's users
write them) is the same model."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reference_numpy as rn
from reference_numpy.cells.layernorm import layer_norm, layer_norm_backward
from torch_charrnn import CharRNN
from torch_charrnn.rnn.cells import get_cell

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from layernorm_loop import LayerNormLoop  # noqa: E402  (a benchmark's module, not a package)

LN_CELLS = ["lnlstm", "lngru"]


def test_layer_norm_over_one_unit_is_its_bias_and_passes_no_gradient_back():
    """v - mean(v) is 0 over one unit: LN(v; g, b) = b whatever v, and dL/dv = 0."""
    v = np.array([[3.0], [-7.5], [0.0]])
    y, kept = layer_norm(v, np.array([2.0]), np.array([0.25]))
    np.testing.assert_array_equal(y, np.full((3, 1), 0.25))
    np.testing.assert_array_equal(layer_norm_backward(np.ones((3, 1)), kept, np.array([2.0])), 0.0)


def test_at_one_hidden_unit_the_lnlstm_output_ignores_c_and_no_gradient_reaches_c_through_it():
    """With H = 1, LN(c_t) is b_c, so h_t = o * tanh(b_c) for any c; c is still carried (through f)
    and its gradient flows back only along the forget gate's path."""
    rng = np.random.default_rng(0)
    params, state, inputs, targets = rn_problem(rng, "lnlstm", H=1)
    b_c = params["layers"][0]["b_c"]
    _, _, tape = rn.forward(params, inputs, state, "lnlstm")
    o = np.stack([cache[0][:, 3:] for cache in tape[0].caches])  # (T, B, 1): the output gate
    np.testing.assert_allclose(tape[0].hs, o * np.tanh(b_c), rtol=1e-14)
    other = (state[0], state[1] + 5.0)  # another c_0: the same h_0 out
    _, _, moved = rn.forward(params, inputs, other, "lnlstm")
    np.testing.assert_allclose(moved[0].hs[0], tape[0].hs[0], rtol=1e-14)
    _, grads, _ = rn.loss_and_grads(params, inputs, targets, state, "lnlstm")
    assert np.all(grads["layers"][0]["g_c"] == 0.0)  # the gain multiplies v - mean(v) = 0


def rn_problem(rng, cell, H, V=4, B=2, T=3):
    params = rn.init_params(V, H, rng, cell=cell)
    params["layers"][0] = {k: rng.standard_normal(v.shape) for k, v in params["layers"][0].items()}
    state = tuple(rng.standard_normal((1, B, H)) for _ in rn.get_cell(cell).STATE)
    return params, state, rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


@pytest.mark.parametrize("cell", LN_CELLS)
def test_layer_0_normalises_each_characters_row_once_as_each_position_would(cell):
    """LN(x_t W_xh) for a one-hot x_t is the normalised row of W_xh: gathered from the V rows
    normalised once, it equals the product normalised at every position, forward and backward."""
    g = torch.Generator().manual_seed(0)
    c = get_cell(cell)
    p = {
        k: (v + torch.randn(v.shape, generator=g)).double().requires_grad_()
        for k, v in c.init(6, 5, g).items()
    }
    x = torch.randint(0, 6, (4, 3), generator=g)  # (T, B)
    a, _ = c.input_share(x, p)
    onehot = torch.nn.functional.one_hot(x, 6).double()
    dense, _ = c.input_share(onehot, p)  # the same product, as a layer above would make it
    torch.testing.assert_close(a, dense, rtol=1e-13, atol=1e-13)
    dA = torch.randn(a.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        _, grads = c.input_share_backward(dA, x, c.input_share(x, p)[1], p, None)
    want = torch.autograd.grad(dense, [p["W_xh"], p["g_x"], p["b_h"]], dA)
    for name, w in zip(("W_xh", "g_x", "b_h"), want, strict=True):
        torch.testing.assert_close(grads[name], w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", LN_CELLS)
@pytest.mark.parametrize("script", [False, True])
def test_the_benchmarks_nn_layernorm_loop_is_the_same_model(cell, script):
    """bench_train.py's baseline, given a CharRNN's weights, gives its logits and last state."""
    torch.manual_seed(0)
    model = CharRNN(7, 5, cell, num_layers=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    loop = LayerNormLoop(cell, 7, 5, 2, script=script).double()
    with torch.no_grad():
        for mine, theirs in zip(model.layers, loop.layers, strict=True):
            theirs.W_ih.copy_(mine.W_xh), theirs.W_hh.copy_(mine.W_hh), theirs.ln_h.weight.copy_(mine.g_h)
            theirs.ln_x.weight.copy_(mine.g_x), theirs.ln_x.bias.copy_(mine.b_h)
            if cell == "lnlstm":
                theirs.ln_c.weight.copy_(mine.g_c), theirs.ln_c.bias.copy_(mine.b_c)
            else:
                theirs.b_hn.copy_(mine.b_hn)
        loop.out.weight.copy_(model.W_hy.t()), loop.out.bias.copy_(model.b_y)
        x = torch.randint(0, 7, (3, 6))
        state = tuple(torch.randn(2, 3, 5, dtype=torch.float64) for _ in model.cell.STATE)
        want, want_last = model(x, state)
        got, got_last = loop(x, state)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g_, w in zip(got_last, want_last, strict=True):
        torch.testing.assert_close(g_, w, rtol=1e-12, atol=1e-12)
