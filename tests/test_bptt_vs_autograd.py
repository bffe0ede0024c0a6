"""The NumPy hand-written BPTT against the torch hand-written BPTT and torch autograd, through
CharRNN.forward, for every cell and depth, float64."""

import numpy as np
import pytest
import torch
from conftest import CELLS, model_from_numpy, torch_state
from hypothesis import example, given
from hypothesis import strategies as st

import reference_numpy as rn
from torch_charrnn.bptt import cross_entropy
from torch_charrnn.gradcheck import random_problem


def through_model(params, inputs, targets, state, cell, bptt):
    """Loss, logits, last state and every gradient (by state-dict name, and state.h/state.c)."""
    model = model_from_numpy(params, cell, bptt=bptt)
    state_t = torch_state(state, requires_grad=True)
    logits, last = model(torch.from_numpy(inputs), state_t)
    loss = cross_entropy(logits, torch.from_numpy(targets))
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    grads.update({f"state.{n}": s.grad for n, s in zip(rn.get_cell(cell).STATE, state_t, strict=True)})
    return loss, logits, last, grads


@pytest.mark.parametrize("bptt", ["autograd", "manual"])
@given(
    cell=st.sampled_from(CELLS),
    L=st.integers(1, 3),
    V=st.integers(2, 9),
    H=st.integers(1, 9),
    B=st.integers(1, 4),
    T=st.integers(1, 12),
    scale=st.sampled_from([0.01, 0.5, 1.0, 3.0, 6.0]),  # 3 and 6 saturate the gates
    seed=st.integers(0, 2**16),
)
@example(cell="tanh", L=1, V=2, H=1, B=1, T=1, scale=0.5, seed=0)
@example(cell="gru", L=1, V=2, H=1, B=1, T=1, scale=6.0, seed=1)
@example(cell="lstm", L=3, V=2, H=1, B=1, T=1, scale=6.0, seed=1)
@example(cell="lstm", L=2, V=9, H=9, B=4, T=12, scale=6.0, seed=2)
def test_numpy_bptt_matches_autograd(cell, L, V, H, B, T, scale, seed, bptt):
    """``bptt="autograd"`` is autograd through the cell steps; ``"manual"`` the torch BPTT."""
    params, state, inputs, targets = random_problem(V, H, B, T, scale, seed, cell, L)
    loss, grads, last = rn.loss_and_grads(params, inputs, targets, state, cell)
    logits, _, _ = rn.forward(params, inputs, state, cell)
    want = {**rn.named_arrays(grads), **rn.state_names(grads["state"], cell)}

    t_loss, t_logits, t_last, t_grads = through_model(params, inputs, targets, state, cell, bptt)

    tol = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(torch.tensor(loss, dtype=torch.float64), t_loss.detach(), **tol)
    torch.testing.assert_close(torch.from_numpy(logits), t_logits.detach(), **tol)
    for s, t_s in zip(last, t_last, strict=True):
        torch.testing.assert_close(torch.from_numpy(s), t_s.detach(), **tol)
    assert set(want) == set(t_grads)
    for name, g in want.items():
        torch.testing.assert_close(
            torch.from_numpy(g), t_grads[name], **tol, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("cell", CELLS)
def test_saturated_case_really_saturates(cell):
    """The sweep's large scales are meant to drive the gates to 0 or 1 and tanh to +-1; check that they do."""
    params, state, inputs, _ = random_problem(5, 8, 4, 10, 6.0, 0, cell, 2)
    logits, _, tape = rn.forward(params, inputs, state, cell)
    hs = np.concatenate([entry[2] for entry in tape])
    gates = [np.abs(v) for entry in tape for cache in entry[3] for v in cache if v.shape[-1] > 8]
    h_saturated = np.mean(np.abs(hs) > 0.99)
    gate_saturated = np.mean([np.mean((g < 0.01) | (g > 0.99)) for g in gates]) if gates else 0.0
    assert max(h_saturated, gate_saturated) > 0.4, (h_saturated, gate_saturated)
