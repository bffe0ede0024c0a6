"""The NumPy hand-written BPTT against the torch hand-written BPTT and torch autograd, through
CharRNN.forward, for every cell and depth, float64."""

import numpy as np
import pytest
import torch
from conftest import CELLS, assert_close_at_scale, problems, through_model
from hypothesis import example, given

import reference_numpy as rn
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn.backends import OWN_STEPS


@pytest.mark.parametrize("bptt", OWN_STEPS)
@given(**problems())
@example(cell="tanh", L=1, V=2, H=1, B=1, T=1, scale=0.5, seed=0)
@example(cell="gru", L=1, V=2, H=1, B=1, T=1, scale=6.0, seed=1)
@example(cell="lstm", L=3, V=2, H=1, B=1, T=1, scale=6.0, seed=1)
@example(cell="lstm", L=2, V=9, H=9, B=4, T=12, scale=6.0, seed=2)
@example(cell="lnlstm", L=2, V=3, H=6, B=2, T=12, scale=6.0, seed=2640)
def test_numpy_bptt_matches_autograd(cell, L, V, H, B, T, scale, seed, bptt):
    """``bptt="autograd"`` is autograd through the cell steps, ``"manual"`` the torch BPTT: the
    backends that run the package's own cell steps (fused is held to them in test_fused.py)."""
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
    for name, g in want.items():  # atol 1e-11 of the largest entry, at least 1e-12 as above
        assert_close_at_scale(t_grads[name], torch.from_numpy(g), floor=0.1, msg=lambda m, n=name: f"{n} {m}")


@pytest.mark.parametrize("cell", CELLS)
def test_saturated_case_really_saturates(cell):
    """The sweep's large scales are meant to drive the gates to 0 or 1 and tanh to +-1; check that they do."""
    params, state, inputs, _ = random_problem(5, 8, 4, 10, 6.0, 0, cell, 2)
    logits, _, tape = rn.forward(params, inputs, state, cell)
    hs = np.concatenate([layer.hs for layer in tape])
    gates = [
        np.abs(v)
        for layer in tape
        for cache in layer.caches
        for v in cache
        if isinstance(v, np.ndarray) and v.shape[-1] > 8
    ]
    h_saturated = np.mean(np.abs(hs) > 0.99)
    gate_saturated = np.mean([np.mean((g < 0.01) | (g > 0.99)) for g in gates]) if gates else 0.0
    assert max(h_saturated, gate_saturated) > 0.4, (h_saturated, gate_saturated)
