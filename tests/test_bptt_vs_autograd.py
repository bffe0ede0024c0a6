"""The NumPy hand-written BPTT against torch autograd through CharRNN.forward, float64."""

import numpy as np
import pytest
import torch
from conftest import model_from_numpy
from hypothesis import example, given
from hypothesis import strategies as st

import reference_numpy as rn
from torch_charrnn.gradcheck import random_problem
from torch_charrnn.rnn import cross_entropy


def autograd_through_model(params, inputs, targets, h0, bptt):
    model = model_from_numpy(params, bptt=bptt)
    h0_t = torch.tensor(h0, requires_grad=True)
    logits, h_last = model(torch.from_numpy(inputs), h0_t)
    loss = cross_entropy(logits, torch.from_numpy(targets))
    loss.backward()
    grads = {name: getattr(model, name).grad for name in rn.PARAM_NAMES}
    return loss, logits, h_last, {**grads, "h0": h0_t.grad}


@pytest.mark.parametrize("bptt", ["autograd", "manual"])
@given(
    V=st.integers(2, 9),
    H=st.integers(1, 9),
    B=st.integers(1, 4),
    T=st.integers(1, 12),
    scale=st.sampled_from([0.01, 0.5, 1.0, 3.0, 6.0]),  # 3 and 6 saturate tanh
    seed=st.integers(0, 2**16),
)
@example(V=2, H=1, B=1, T=1, scale=0.5, seed=0)
@example(V=2, H=1, B=1, T=1, scale=6.0, seed=1)
@example(V=2, H=9, B=4, T=12, scale=6.0, seed=2)
def test_numpy_bptt_matches_autograd(V, H, B, T, scale, seed, bptt):
    """``bptt="autograd"`` is plain autograd through CharRNN.forward; ``"manual"`` the torch BPTT."""
    params, h0, inputs, targets = random_problem(V, H, B, T, scale, seed)
    loss, grads, h_last = rn.loss_and_grads(params, inputs, targets, h0)
    logits, _ = rn.forward(params, inputs, h0)

    t_loss, t_logits, t_h_last, t_grads = autograd_through_model(params, inputs, targets, h0, bptt)

    tol = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(torch.tensor(loss, dtype=torch.float64), t_loss.detach(), **tol)
    torch.testing.assert_close(torch.from_numpy(logits), t_logits.detach(), **tol)
    torch.testing.assert_close(torch.from_numpy(h_last), t_h_last.detach(), **tol)
    for name in (*rn.PARAM_NAMES, "h0"):
        torch.testing.assert_close(
            torch.from_numpy(grads[name]), t_grads[name], **tol, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_saturated_case_really_saturates():
    """The sweep's large scales are meant to drive |h| to 1; check that they do."""
    params, h0, inputs, _ = random_problem(5, 8, 4, 10, 6.0, seed=0)
    _, hs = rn.forward(params, inputs, h0)
    assert np.mean(np.abs(hs) > 0.99) > 0.5
