"""The hand-written BPTT (NumPy and torch) against PyTorch's own nn.RNN / nn.GRU / nn.LSTM with
``num_layers=L`` and an nn.Linear head, the weights copied through docs/design.md's layout:
W_xh = weight_ih_l{l}.T, W_hh = weight_hh_l{l}.T, and the biases as the model adds them."""

import numpy as np
import pytest
import torch
from conftest import FUSED_CELLS, model_from_numpy, problems, torch_state
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

import reference_numpy as rn
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn.bptt import cross_entropy
from torch_charrnn.rnn.cells import get_cell


def pytorch_module(params, cell):
    """nn.RNN/GRU/LSTM + nn.Linear holding the same function as ``params`` (float64).

    bias_ih carries b_h; bias_hh is zero except the GRU's n block, which carries b_hn (it sits
    inside the reset product in both formulations).
    """
    layers = params["layers"]
    V, H = layers[0]["W_xh"].shape[0], params["W_hy"].shape[0]
    rnn = getattr(nn, get_cell(cell).FUSED)(V, H, num_layers=len(layers), dtype=torch.float64)
    head = nn.Linear(H, V, dtype=torch.float64)
    with torch.no_grad():
        for l, p in enumerate(layers):
            getattr(rnn, f"weight_ih_l{l}").copy_(torch.from_numpy(p["W_xh"].T))
            getattr(rnn, f"weight_hh_l{l}").copy_(torch.from_numpy(p["W_hh"].T))
            getattr(rnn, f"bias_ih_l{l}").copy_(torch.from_numpy(p["b_h"]))
            bias_hh = getattr(rnn, f"bias_hh_l{l}")
            bias_hh.zero_()
            if "b_hn" in p:
                bias_hh[2 * H :] = torch.from_numpy(p["b_hn"])
        head.weight.copy_(torch.from_numpy(params["W_hy"].T))
        head.bias.copy_(torch.from_numpy(params["b_y"]))
    return rnn, head


def pytorch_grads(rnn, head, cell, L):
    """The module's gradients in the model's names (b_h's gradient is bias_ih's)."""
    grads = {"W_hy": head.weight.grad.T, "b_y": head.bias.grad}
    for l in range(L):
        grads[f"layers.{l}.W_xh"] = getattr(rnn, f"weight_ih_l{l}").grad.T
        grads[f"layers.{l}.W_hh"] = getattr(rnn, f"weight_hh_l{l}").grad.T
        grads[f"layers.{l}.b_h"] = getattr(rnn, f"bias_ih_l{l}").grad
        if cell == "gru":
            grads[f"layers.{l}.b_hn"] = getattr(rnn, f"bias_hh_l{l}").grad[-rnn.hidden_size :]
    return grads


@given(
    **problems(
        cell=st.sampled_from(FUSED_CELLS),
        V=st.integers(2, 7),
        H=st.integers(1, 6),
        B=st.integers(1, 3),
        T=st.integers(1, 8),
        scale=st.sampled_from([0.5, 3.0]),
    )
)
@example(cell="gru", L=2, V=2, H=1, B=1, T=1, scale=3.0, seed=0)
@example(cell="lstm", L=3, V=7, H=6, B=3, T=8, scale=3.0, seed=1)
def test_bptt_matches_pytorchs_own_modules(cell, L, V, H, B, T, scale, seed):
    params, state, inputs, targets = random_problem(V, H, B, T, scale, seed, cell, L)
    rnn, head = pytorch_module(params, cell)
    state_t = torch_state(state, requires_grad=True)
    hx = state_t if cell == "lstm" else state_t[0]
    x = nn.functional.one_hot(torch.from_numpy(inputs).T, V).double()  # (T, B, V): the model's one-hot input
    out, last = rnn(x, hx)
    logits = head(out).transpose(0, 1)  # (B, T, V)
    cross_entropy(logits, torch.from_numpy(targets)).backward()
    last = last if cell == "lstm" else (last,)
    want = pytorch_grads(rnn, head, cell, L)
    want.update({f"state.{n}": s.grad for n, s in zip(rn.get_cell(cell).STATE, state_t, strict=True)})

    tol = {"rtol": 1e-10, "atol": 1e-12}
    # NumPy's hand-written BPTT
    loss, grads, np_last = rn.loss_and_grads(params, inputs, targets, state, cell)
    np_logits, _, _ = rn.forward(params, inputs, state, cell)
    torch.testing.assert_close(torch.from_numpy(np_logits), logits.detach(), **tol)
    for s, t_s in zip(np_last, last, strict=True):
        torch.testing.assert_close(torch.from_numpy(s), t_s.detach(), **tol)
    got = {**rn.named_arrays(grads), **rn.state_names(grads["state"], cell)}
    assert set(got) == set(want)
    for name, g in want.items():
        torch.testing.assert_close(
            torch.from_numpy(got[name]), g, **tol, msg=lambda m, n=name: f"numpy {n}: {m}"
        )

    # torch's hand-written BPTT, through CharRNN
    model = model_from_numpy(params, cell)
    state_m = torch_state(state, requires_grad=True)
    m_logits, m_last = model(torch.from_numpy(inputs), state_m)
    m_loss = cross_entropy(m_logits, torch.from_numpy(targets))
    m_loss.backward()
    torch.testing.assert_close(m_loss.detach(), torch.tensor(loss, dtype=torch.float64), **tol)
    torch.testing.assert_close(m_logits.detach(), logits.detach(), **tol)
    for s, t_s in zip(m_last, last, strict=True):
        torch.testing.assert_close(s.detach(), t_s.detach(), **tol)
    mine = {n: p.grad for n, p in model.named_parameters()}
    mine.update({f"state.{n}": s.grad for n, s in zip(rn.get_cell(cell).STATE, state_m, strict=True)})
    for name, g in want.items():
        torch.testing.assert_close(mine[name], g, **tol, msg=lambda m, n=name: f"torch {n}: {m}")


@pytest.mark.parametrize("cell", FUSED_CELLS)
def test_the_layout_is_pytorchs_gate_order(cell):
    """A model's W_xh is exactly weight_ih_l0.T: the same module given those weights agrees."""
    params = rn.init_params(6, 4, np.random.default_rng(0), cell=cell, num_layers=1)
    rnn, _ = pytorch_module(params, cell)
    assert rnn.weight_ih_l0.shape == params["layers"][0]["W_xh"].T.shape
    assert rnn.weight_hh_l0.shape == params["layers"][0]["W_hh"].T.shape
