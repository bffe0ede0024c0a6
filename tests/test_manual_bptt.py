"""The torch hand-written BPTT (ManualBPTT): autograd.gradcheck, and equal to the autograd path."""

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from torch_charrnn import CharRNN
from torch_charrnn.gradcheck import random_problem
from torch_charrnn.rnn import PARAM_NAMES, ManualBPTT, cross_entropy, rnn_forward, rnn_forward_manual

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def random_args(V, H, B, T, scale, seed, device="cpu"):
    """gradcheck's random problem as float64 leaves: inputs (B, T), [h0, W_xh, W_hh, b_h, W_hy, b_y]."""
    params, h0, inputs, _ = random_problem(V, H, B, T, scale, seed)
    tensors = [
        torch.from_numpy(a).to(device).requires_grad_() for a in (h0, *(params[k] for k in PARAM_NAMES))
    ]
    return torch.from_numpy(inputs).to(device), tensors


@given(
    V=st.integers(2, 6),
    H=st.integers(1, 5),
    B=st.integers(1, 3),
    T=st.integers(1, 6),
    scale=st.sampled_from([0.3, 1.0, 4.0]),
    seed=st.integers(0, 1000),
)
@example(V=2, H=1, B=1, T=1, scale=1.0, seed=0)
def test_manual_bptt_passes_torch_gradcheck(V, H, B, T, scale, seed):
    """Both outputs, logits and hidden states, against torch's own finite differences."""
    inputs, tensors = random_args(V, H, B, T, scale, seed)
    assert torch.autograd.gradcheck(lambda *a: ManualBPTT.apply(inputs, *a), tensors)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("V", "H", "B", "T"), [(2, 1, 1, 1), (65, 32, 8, 20), (11, 7, 1, 30)])
def test_manual_bptt_matches_autograd(device, V, H, B, T):
    inputs, tensors = random_args(V, H, B, T, 1.0, seed=V + H, device=device)
    targets = torch.randint(0, V, (B, T), device=device)
    outs = {}
    for name, run in (("autograd", rnn_forward), ("manual", rnn_forward_manual)):
        logits, hs = run(inputs, *tensors)
        loss = cross_entropy(logits, targets) + hs[:, -1].sum()  # a gradient into h_last too
        outs[name] = (logits, hs, *torch.autograd.grad(loss, tensors))
    for a, m in zip(outs["autograd"], outs["manual"], strict=True):
        torch.testing.assert_close(m, a, rtol=1e-10, atol=1e-12)


def test_charrnn_defaults_to_the_manual_path_and_float32_agrees():
    torch.manual_seed(0)
    model = CharRNN(vocab_size=30, hidden_size=64, whh_scale=0.9, init_std=0.3)
    assert model.hparams.bptt == "manual"
    inputs, targets = torch.randint(0, 30, (16, 50)), torch.randint(0, 30, (16, 50))
    grads = {}
    for bptt in ("manual", "autograd"):
        model.hparams.bptt = bptt
        model.zero_grad()
        cross_entropy(model(inputs)[0], targets).backward()
        grads[bptt] = [p.grad.clone() for p in model.parameters()]
    for m, a in zip(grads["manual"], grads["autograd"], strict=True):
        torch.testing.assert_close(m, a, rtol=1e-4, atol=1e-6)
