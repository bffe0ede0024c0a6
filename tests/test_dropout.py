"""Dropout on the h each layer passes on: the hand-written backward through the masks in NumPy and
torch (both loops) against autograd and finite differences at fixed masks, the masks drawn once a
window from the model's generator, p = 0 unchanged, evaluation equal to PyTorch's modules, and the
fused backend refused."""

import numpy as np
import pytest
import torch
from conftest import CELLS, FUSED_CELLS, LOOPS, assert_close_at_scale, bptt_loop, problems
from hypothesis import example, given
from hypothesis import strategies as st
from test_torch_modules import pytorch_module

import reference_numpy as rn
from torch_charrnn import CharRNN
from torch_charrnn.errors import ConfigError
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn import native
from torch_charrnn.rnn.bptt import (
    LANES,
    cross_entropy,
    dropout_masks,
    forward_autograd,
    forward_manual,
    hashed_lanes,
)
from torch_charrnn.rnn.cells import get_cell

TOL = {"rtol": 1e-10, "atol": 1e-12}


def problem_with_masks(cell, L, V, H, B, T, scale, seed, p):
    params, state, inputs, targets = random_problem(V, H, B, T, scale, seed, cell, L)
    g = torch.Generator().manual_seed(seed)
    masks = dropout_masks(p, (T, B, H), L, g, torch.zeros((), dtype=torch.float64))
    return params, state, inputs, targets, masks


def torch_window(run, params, state, inputs, targets, masks, cell):
    """Loss, logits, last state and every gradient (the last state's too) through ``run``."""
    leaf = lambda a: torch.from_numpy(a).requires_grad_()  # noqa: E731
    layers = [{k: leaf(v) for k, v in p.items()} for p in params["layers"]]
    state_t = tuple(leaf(s) for s in state)
    W_hy, b_y = leaf(params["W_hy"]), leaf(params["b_y"])
    logits, last = run(torch.from_numpy(inputs), state_t, layers, W_hy, b_y, get_cell(cell), masks)
    loss = cross_entropy(logits, torch.from_numpy(targets))
    wrt = [*state_t, *(p for lay in layers for p in lay.values()), W_hy, b_y]
    grads = torch.autograd.grad(loss + sum((s * s.detach().cos()).sum() for s in last), wrt)
    return (loss, logits, *last, *grads)


@pytest.mark.parametrize("loop", LOOPS)
@given(**problems(p=st.sampled_from([0.1, 0.5, 0.9])))
@example(cell="lstm", L=2, V=2, H=1, B=1, T=1, scale=1.0, seed=0, p=0.5)
@example(cell="gru", L=3, V=3, H=2, B=2, T=3, scale=3.0, seed=4, p=0.5)
def test_the_hand_written_backward_through_the_masks_equals_autograd(
    loop, cell, L, V, H, B, T, scale, seed, p
):
    params, state, inputs, targets, masks = problem_with_masks(cell, L, V, H, B, T, scale, seed, p)
    want = torch_window(forward_autograd, params, state, inputs, targets, masks, cell)
    with bptt_loop(loop):
        got = torch_window(forward_manual, params, state, inputs, targets, masks, cell)
    for g, w in zip(got, want, strict=True):
        assert_close_at_scale(g, w)


@given(**problems(p=st.sampled_from([0.2, 0.7])))
@example(cell="tanh", L=2, V=2, H=1, B=1, T=1, scale=1.0, seed=0, p=0.5)
def test_the_numpy_reference_drops_the_same_units_and_equals_torch(cell, L, V, H, B, T, scale, seed, p):
    params, state, inputs, targets, masks = problem_with_masks(cell, L, V, H, B, T, scale, seed, p)
    np_masks = [m.numpy() for m in masks]
    loss, grads, last = rn.loss_and_grads(params, inputs, targets, state, cell, np_masks)
    t_loss, t_logits, *rest = torch_window(forward_manual, params, state, inputs, targets, masks, cell)
    np_logits, _, _ = rn.forward(params, inputs, state, cell, np_masks)
    torch.testing.assert_close(torch.tensor(loss, dtype=torch.float64), t_loss.detach(), **TOL)
    torch.testing.assert_close(torch.from_numpy(np_logits), t_logits.detach(), **TOL)
    for s, t_s in zip(last, rest, strict=False):
        torch.testing.assert_close(torch.from_numpy(s), t_s.detach(), **TOL)
    # the weights' gradients of the mean loss alone (torch_window adds a term on the last state)
    leaf = lambda a: torch.from_numpy(a).requires_grad_()  # noqa: E731
    layers = [{k: leaf(v) for k, v in q.items()} for q in params["layers"]]
    W_hy = leaf(params["W_hy"])
    logits, _ = forward_manual(
        torch.from_numpy(inputs),
        tuple(torch.from_numpy(s) for s in state),
        layers,
        W_hy,
        torch.from_numpy(params["b_y"]),
        get_cell(cell),
        masks,
    )
    cross_entropy(logits, torch.from_numpy(targets)).backward()
    for l, q in enumerate(layers):
        for name, t in q.items():
            torch.testing.assert_close(torch.from_numpy(grads["layers"][l][name]), t.grad, **TOL)
    torch.testing.assert_close(torch.from_numpy(grads["W_hy"]), W_hy.grad, **TOL)


@pytest.mark.parametrize("loop", LOOPS)
@given(
    **problems(
        L=st.integers(1, 2),
        V=st.integers(2, 4),
        H=st.integers(1, 3),
        B=st.integers(1, 2),
        T=st.integers(1, 4),
    )
)
def test_the_backward_through_the_masks_passes_gradcheck(loop, cell, L, V, H, B, T, scale, seed):
    """Finite differences at fixed masks (p = 0.5): every output, logits and the last state."""
    params, state, inputs, _, masks = problem_with_masks(cell, L, V, H, B, T, min(scale, 3.0), seed, 0.5)
    leaf = lambda a: torch.from_numpy(a).requires_grad_()  # noqa: E731
    names = list(params["layers"][0])
    tensors = [
        *(leaf(s) for s in state),
        *(leaf(q[n]) for q in params["layers"] for n in names),
        leaf(params["W_hy"]),
        leaf(params["b_y"]),
    ]
    n, k = len(state), len(names)

    def run(*ts):
        rest = ts[n:-2]
        lay = [dict(zip(names, rest[i : i + k], strict=True)) for i in range(0, len(rest), k)]
        logits, last = forward_manual(
            torch.from_numpy(inputs), ts[:n], lay, ts[-2], ts[-1], get_cell(cell), masks
        )
        return (logits, *last)

    with bptt_loop(loop):
        assert torch.autograd.gradcheck(run, tensors)


@pytest.mark.parametrize("cell", CELLS)
def test_the_same_seed_draws_the_same_masks_for_manual_and_autograd(cell):
    """Dropout's masks, and zoneout's after them (of h, and of c where the cell carries one)."""
    zoneout = {"zoneout": 0.3, "zoneout_c": 0.2 if "c" in get_cell(cell).STATE else 0.0}
    x = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(2))
    out = {}
    for bptt in ("manual", "autograd"):
        torch.manual_seed(0)
        model = CharRNN(7, 6, cell, num_layers=2, dropout=0.4, bptt=bptt, **zoneout).double()
        losses = []
        for _ in range(2):  # two windows: the second draws new masks, the same for both
            logits, _ = model(x)
            loss = cross_entropy(logits, y)
            loss.backward()
            losses.append(loss.detach())
        out[bptt] = (*losses, *(p.grad for p in model.parameters()))
    assert not torch.equal(out["manual"][0], out["manual"][1]), "each window draws masks of its own"
    for m, a in zip(out["manual"], out["autograd"], strict=True):
        torch.testing.assert_close(m, a, **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_p_0_changes_nothing_bit_for_bit(cell):
    """No draw from torch's generator at construction (the same weights and what follows), none in
    training, and a training window equal to an evaluation window, bit for bit."""
    torch.manual_seed(3)
    plain = CharRNN(9, 8, cell, num_layers=2)
    after_plain = torch.rand(3)
    torch.manual_seed(3)
    zero = CharRNN(9, 8, cell, num_layers=2, dropout=0.0)
    assert torch.equal(torch.rand(3), after_plain)
    for a, b in zip(plain.parameters(), zero.parameters(), strict=True):
        assert torch.equal(a, b)
    x = torch.randint(0, 9, (2, 6))
    before = zero.dropout_generator.get_state()
    zero.train()
    trained = zero(x)[0]
    assert torch.equal(zero.dropout_generator.get_state(), before)
    zero.eval()
    assert torch.equal(trained, zero(x)[0])


@pytest.mark.parametrize("cell", CELLS)
def test_in_evaluation_dropout_is_the_identity_for_every_cell(cell):
    """The cells without a PyTorch module (below) are held to themselves at p = 0."""
    torch.manual_seed(0)
    dropped = CharRNN(6, 5, cell, num_layers=2, dropout=0.5).double().eval()
    plain = CharRNN(6, 5, cell, num_layers=2).double().eval()
    plain.load_state_dict(dropped.state_dict())
    x = torch.randint(0, 6, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(dropped(x)[0], plain(x)[0])
        dropped.train()
        assert not torch.equal(dropped(x)[0], plain(x)[0])


@pytest.mark.parametrize("cell", FUSED_CELLS)
def test_in_evaluation_every_backend_equals_pytorchs_module_with_that_dropout(cell):
    params, state, inputs, _ = random_problem(6, 5, 2, 7, 1.0, 0, cell, 2)
    rnn, head = pytorch_module(params, cell)
    rnn.dropout = 0.5  # as nn.LSTM(dropout=0.5) would hold it: inactive in eval()
    rnn.eval()
    hx = tuple(torch.from_numpy(s) for s in state)
    x = torch.nn.functional.one_hot(torch.from_numpy(inputs).T, 6).double()
    out, _ = rnn(x, hx if cell == "lstm" else hx[0])
    want = head(out).transpose(0, 1)
    for bptt in ("manual", "autograd"):
        model = CharRNN(6, 5, cell, num_layers=2, dropout=0.5, bptt=bptt).double().eval()
        with torch.no_grad():
            for l, q in enumerate(params["layers"]):
                for name, v in q.items():
                    getattr(model.layers[l], name).copy_(torch.from_numpy(v))
            model.W_hy.copy_(torch.from_numpy(params["W_hy"]))
            model.b_y.copy_(torch.from_numpy(params["b_y"]))
            got, _ = model(torch.from_numpy(inputs), hx)
        torch.testing.assert_close(got, want.detach(), **TOL)
    # and in training the masks are live: the same window gives another output
    model.train()
    assert not torch.allclose(model(torch.from_numpy(inputs), hx)[0], want)


def test_fused_with_dropout_is_refused_naming_the_backends_that_take_masks():
    with pytest.raises(ConfigError, match=r"`dropout` above 0 needs `bptt` manual or autograd"):
        CharRNN(5, 4, "lstm", dropout=0.2, bptt="fused")
    with pytest.raises(ConfigError, match=r"`dropout` must be in \[0, 1\), got 1.0"):
        CharRNN(5, 4, "lstm", dropout=1.0)


def test_the_masks_are_inverted_dropout_of_the_asked_rate():
    g = torch.Generator().manual_seed(0)
    masks = dropout_masks(0.3, (50, 40, 30), 2, g, torch.zeros(()))
    assert len(masks) == 2 and masks[0].shape == (50, 40, 30)
    values = torch.cat([m.flatten() for m in masks]).unique()
    torch.testing.assert_close(values, torch.tensor([0.0, 1 / 0.7]))
    kept = float(np.mean([(m > 0).float().mean().item() for m in masks]))
    assert abs(kept - 0.7) < 0.01
    assert not torch.equal(masks[0], masks[1])


@given(n=st.integers(1, 5000), seed=st.integers(0, 2**62 - 1), p=st.floats(0.0, 0.99))
@example(n=1, seed=0, p=0.5)
@example(n=7, seed=2**62 - 1, p=0.0)
@example(n=3 * 4096 * 4 + 4 * 64 + 3, seed=5, p=0.3)  # threads' shares, blocks of 64 hashes, a last part word
def test_the_cpp_kernels_masks_are_the_torch_hashs_bit_for_bit(n, seed, p):
    """On a CPU masks come from one seed: the C++ kernel (csrc/masks.cpp) and its torch twin,
    which runs where the kernels are not built, give the same values for any size, seed and rate,
    however the threads and the kernel's blocks of hashes split them."""
    ops = native.kernels()
    threshold = round(p * LANES)
    for dtype in (torch.float32, torch.float64):
        got = ops.bernoulli_masks([n], torch.zeros((), dtype=dtype), seed, threshold, 1.0, 0.0)
        want = torch.where(hashed_lanes(n, seed) < threshold, 1.0, 0.0).to(dtype)
        assert torch.equal(got, want)


def test_the_hashed_draws_are_uniform_and_independent_across_lanes_and_seeds():
    """Each 16-bit lane, and each value the masks read, is uniform over 0 to 65535 (chi-square over
    64 bins, 2^20 draws), neighbours are uncorrelated, and neighbouring seeds share nothing."""
    n = 2**20
    lanes = hashed_lanes(n, 12345).double()
    for k in range(4):
        counts = torch.bincount((lanes[k::4] / 1024).long(), minlength=64).double()
        expected = n / 4 / 64
        assert ((counts - expected) ** 2 / expected).sum() < 120  # chi-square, 63 dof: p ~ 1e-5
    centred = lanes - lanes.mean()
    for lag in (1, 2, 3, 4, 5):
        corr = (centred[:-lag] * centred[lag:]).mean() / centred.var()
        assert abs(corr) < 0.01, lag
    other = hashed_lanes(n, 12346).double() - lanes.mean()
    assert abs((centred * other).mean() / centred.var()) < 0.01


def test_the_generator_state_is_in_the_checkpoint_and_restored():
    torch.manual_seed(0)
    model = CharRNN(5, 4, "gru", dropout=0.3)
    model(torch.randint(0, 5, (2, 3)))  # a draw
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    following = dropout_masks(0.3, (3, 2, 4), 1, model.dropout_generator, model.W_hy)
    other = CharRNN(5, 4, "gru", dropout=0.3)
    other.configure_optimizers = model.configure_optimizers
    other.on_load_checkpoint(checkpoint)
    assert torch.equal(dropout_masks(0.3, (3, 2, 4), 1, other.dropout_generator, other.W_hy)[0], following[0])
