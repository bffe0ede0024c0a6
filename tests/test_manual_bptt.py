"""The torch hand-written BPTT (ManualBPTT): autograd.gradcheck, and equal to the autograd path,
for every cell and depth."""

import pytest
import torch
from conftest import CELL_DEPTHS, CELLS, LOOPS, bptt_loop, problems
from hypothesis import example, given
from hypothesis import strategies as st

from torch_charrnn import CharRNN
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn.bptt import cross_entropy, flatten, forward_autograd, forward_manual
from torch_charrnn.rnn.cells import get_cell


def leaves(V, H, B, T, scale, seed, cell, L, device="cpu"):
    """gradcheck's random problem as float64 leaves: inputs (B, T), state, layers, W_hy, b_y."""
    params, state, inputs, _ = random_problem(V, H, B, T, scale, seed, cell, L)
    as_leaf = lambda a: torch.from_numpy(a).to(device).requires_grad_()  # noqa: E731
    layers = [{k: as_leaf(v) for k, v in p.items()} for p in params["layers"]]
    state = tuple(as_leaf(s) for s in state)
    return torch.from_numpy(inputs).to(device), state, layers, as_leaf(params["W_hy"]), as_leaf(params["b_y"])


@pytest.mark.parametrize("loop", LOOPS)
@given(  # small: torch's gradcheck perturbs every input element
    **problems(
        L=st.integers(1, 2),
        V=st.integers(2, 5),
        H=st.integers(1, 4),
        B=st.integers(1, 3),
        T=st.integers(1, 5),
        scale=st.sampled_from([0.3, 1.0, 4.0]),
        seed=st.integers(0, 1000),
    )
)
@example(cell="lstm", L=2, V=2, H=1, B=1, T=1, scale=1.0, seed=0)
def test_manual_bptt_passes_torch_gradcheck(loop, cell, L, V, H, B, T, scale, seed):
    """Every output (logits and the last state) against torch's own finite differences."""
    inputs, state, layers, W_hy, b_y = leaves(V, H, B, T, scale, seed, cell, L)
    names, tensors = flatten(state, layers, W_hy, b_y)

    def run(*tensors):
        n = len(state)
        rest, k = tensors[n:-2], len(names)
        lay = [dict(zip(names, rest[i : i + k], strict=True)) for i in range(0, len(rest), k)]
        logits, last = forward_manual(
            inputs, tuple(tensors[:n]), lay, tensors[-2], tensors[-1], get_cell(cell)
        )
        return (logits, *last)

    with bptt_loop(loop):
        assert torch.autograd.gradcheck(run, tensors)


ON_DEVICES = [("cpu", "C++"), ("cpu", "torch"), pytest.param("cuda", "torch", marks=pytest.mark.gpu)]


@pytest.mark.parametrize(("device", "loop"), ON_DEVICES)
@pytest.mark.parametrize(("cell", "L"), CELL_DEPTHS)
@pytest.mark.parametrize(("V", "H", "B", "T"), [(2, 1, 1, 1), (65, 32, 8, 20), (11, 7, 1, 30)])
def test_manual_bptt_matches_autograd(device, loop, cell, L, V, H, B, T):
    targets = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0)).to(device)
    outs = {}
    for name, run in (("autograd", forward_autograd), ("manual", forward_manual)):
        inputs, state, layers, W_hy, b_y = leaves(V, H, B, T, 1.0, V + H, cell, L, device)
        with bptt_loop(loop):
            logits, last = run(inputs, state, layers, W_hy, b_y, get_cell(cell))
        loss = cross_entropy(logits, targets) + sum(
            s.sum() for s in last
        )  # a gradient into the last state too
        wrt = [*state, *(p for lay in layers for p in lay.values()), W_hy, b_y]
        outs[name] = (logits, *last, *torch.autograd.grad(loss, wrt))
    for a, m in zip(outs["autograd"], outs["manual"], strict=True):
        torch.testing.assert_close(m, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_charrnn_defaults_to_the_manual_path_and_float32_agrees(cell):
    torch.manual_seed(0)
    model = CharRNN(vocab_size=30, hidden_size=64, cell=cell, num_layers=2, whh_scale=0.9, init_std=0.3)
    assert model.hparams.bptt == "manual"
    inputs, targets = torch.randint(0, 30, (16, 50)), torch.randint(0, 30, (16, 50))
    grads = {}
    for bptt in ("manual", "autograd"):
        model.hparams.bptt = bptt
        model.zero_grad()
        cross_entropy(model(inputs)[0], targets).backward()
        grads[bptt] = [p.grad.clone() for p in model.parameters()]
    # LN(c_t) divides by c's spread, small in the first steps from c = 0: there float32 rounding,
    # autograd's as much as the manual pass's (each about 5e-5 of a gradient's largest entry from
    # float64's), grows by 1/sigma, so the LN-LSTM is held to its gradients' scale
    scaled = any(name.endswith(".g_c") for name, _ in model.named_parameters())
    for m, a in zip(grads["manual"], grads["autograd"], strict=True):
        atol = 2e-4 * a.abs().max().item() if scaled else 1e-6
        torch.testing.assert_close(m, a, rtol=1e-4, atol=atol)
