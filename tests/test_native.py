"""The C++ kernels (torch_charrnn/rnn/csrc) against the pure-torch loop they replace on a CPU, the
recurrent product's two forms against each other, and the fallback when the kernels cannot load."""

import logging
from unittest import mock

import pytest
import torch
from conftest import bptt_loop, problems
from hypothesis import example, given
from hypothesis import strategies as st

from torch_charrnn import CharRNN
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn import native, products
from torch_charrnn.rnn.bptt import forward_manual, run_layers
from torch_charrnn.rnn.cells import CELLS, get_cell


def window_gradients(loop, cell, L, V, H, B, T, scale, seed, dtype=torch.float64):
    """Logits, last state and every gradient of one window through ``forward_manual``, with a
    gradient flowing into the last state too (as the next window's would)."""
    params, state, inputs, targets = random_problem(V, H, B, T, scale, seed, cell, L)
    leaf = lambda a: torch.from_numpy(a).to(dtype).requires_grad_()  # noqa: E731
    layers = [{k: leaf(v) for k, v in p.items()} for p in params["layers"]]
    state = tuple(leaf(s) for s in state)
    W_hy, b_y = leaf(params["W_hy"]), leaf(params["b_y"])
    with bptt_loop(loop):
        logits, last = forward_manual(torch.from_numpy(inputs), state, layers, W_hy, b_y, get_cell(cell))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1))
    loss = loss + sum((s * s.detach().sin()).sum() for s in last)
    wrt = [*state, *(p for lay in layers for p in lay.values()), W_hy, b_y]
    return (logits, *last, *torch.autograd.grad(loss, wrt))


def assert_loops_agree(cpp, pure):
    """Each of the C++ loop's outputs and gradients within 1e-12 of the torch loop's, of itself and of
    its tensor's largest entry (see the float64 test below for why both)."""
    for c, p in zip(cpp, pure, strict=True):
        torch.testing.assert_close(c, p, rtol=1e-12, atol=1e-12 * max(0.1, p.abs().max().item()))


@given(**problems(), parts=st.integers(1, 5))
@example(cell="lstm", L=2, V=2, H=1, B=1, T=1, scale=1.0, seed=0, parts=1)
@example(cell="gru", L=1, V=2, H=1, B=1, T=1, scale=4.0, seed=1, parts=1)
@example(cell="tanh", L=3, V=2, H=1, B=1, T=1, scale=1.0, seed=2, parts=1)
@example(cell="lstm", L=2, V=3, H=7, B=3, T=5, scale=3.0, seed=3, parts=3)  # 3 shares on 2 threads
@example(cell="lstm", L=1, V=2, H=2, B=1, T=2, scale=1.0, seed=4, parts=5)  # shares without rows
@example(cell="lnlstm", L=2, V=2, H=1, B=1, T=1, scale=1.0, seed=5, parts=1)  # LN over one unit of c
@example(cell="lngru", L=3, V=3, H=7, B=3, T=5, scale=3.0, seed=6, parts=3)
def test_the_cpp_loop_equals_the_torch_loop_in_float64(cell, L, V, H, B, T, scale, seed, parts):
    """The same arithmetic, but C++ fuses each step's elementwise work and computes tanh from
    expm1 (csrc/vec.h), and the GRU adds b_hn inside the product: a few units in the last place
    apart, nothing more. ``parts`` threads share out the streams of a loop over time and the
    columns of a weight gradient (csrc/shares.h), as many as there are of them or more. The two
    loops add up the weight gradients in different orders (the LSTM's C++ loop adds W_xh's and
    b_h's backward in time, each thread its streams; W_hh's comes from one product in C++, from two
    in torch): where such a sum cancels, an entry differs by rounding at the scale of the terms,
    not of the entry, so each entry is held to 1e-12 of its tensor's largest as well as of itself."""
    with mock.patch.object(native, "parts", lambda n, per_thread: parts):
        cpp = window_gradients("C++", cell, L, V, H, B, T, scale, seed)
    pure = window_gradients("torch", cell, L, V, H, B, T, scale, seed)
    assert_loops_agree(cpp, pure)


@pytest.mark.parametrize("cell", CELLS)
def test_the_cpp_loop_equals_the_torch_loop_where_its_products_take_several_blocks(cell):
    """The loops multiply by W_hh (and by its transpose, backward) in blocks of at most 256 rows
    and columns (csrc/shares.h's blocked_matmul), which the sweep above, at H up to 9, never splits:
    at H = 260 every product has whole blocks and a remainder, the forward's columns and the
    backward's sum alike, in both layers."""
    with mock.patch.object(native, "parts", lambda n, per_thread: 2):
        cpp = window_gradients("C++", cell, 2, 5, 260, 3, 4, 1.0, 0)
    pure = window_gradients("torch", cell, 2, 5, 260, 3, 4, 1.0, 0)
    assert_loops_agree(cpp, pure)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_activations_stay_within_1e6_of_torchs_and_keep_nan_and_saturation(cell):
    """In float32 the C++ loop's sigmoid and tanh use ATen's faster exp (csrc/vec.h): within about
    1e-7 of torch's, saturating to 0 and 1 at any size, and a NaN stays a NaN (exp_u20 alone would
    clamp it to a number and hide a diverged run). A layer-normalised cell divides c_t and each
    product by its spread, which grows those errors by up to its inverse: within 4e-6 there."""
    torch.manual_seed(0)
    model = CharRNN(6, 40, cell, num_layers=2)
    atol = 4e-6 if "g_h" in dict(model.layers[0].named_parameters()) else 1e-6
    with torch.no_grad():
        W = model.layers[0].W_xh
        W.normal_(0, 3.0)
        W[1] *= 1e4  # pre-activations far beyond where exp overflows in float32
        W[2] = 1e-6  # where tanh(x) is x: an absolute error, not a relative one
        W[3, 5] = float("nan")
    inputs = torch.tensor([[0, 1, 2, 0, 4, 3, 0], [2, 2, 1, 4, 0, 5, 1]])
    outs, layers = {}, model.weights()["layers"]
    for loop in ("C++", "torch"):
        with bptt_loop(loop), torch.no_grad():
            top, last, tape = run_layers(inputs, model.initial_state(2), layers, model.cell)
        assert [layer.kernel is not None for layer in tape] == [loop == "C++"] * 2
        outs[loop] = (top, *last)
    top = outs["C++"][0]  # (T, B, H): character 3 comes at t = 5 in the first row, never in the second
    assert torch.isnan(top[5:, 0]).any() and not torch.isnan(top[:5]).any()
    assert not torch.isnan(top[:, 1]).any()
    for c, p in zip(outs["C++"], outs["torch"], strict=True):
        torch.testing.assert_close(c, p, rtol=0, atol=atol, equal_nan=True)


@pytest.mark.parametrize("cell", CELLS)
def test_the_cpp_loop_runs_on_a_cpu_and_the_torch_loop_under_autograd(cell):
    """What the equality above relies on: a CPU window without autograd goes through C++ (the
    tape says so), one that autograd records (the oracle, the monitor) steps in torch."""
    model = CharRNN(5, 4, cell, num_layers=2).double()
    weights = model.weights()
    inputs = torch.randint(0, 5, (2, 3))
    state = model.initial_state(2)
    with torch.no_grad():
        _, _, tape = run_layers(inputs, state, weights["layers"], model.cell)
    assert [layer.kernel is not None for layer in tape] == [True, True]
    _, _, tape = run_layers(inputs, state, weights["layers"], model.cell)
    assert [layer.kernel is not None for layer in tape] == [False, False]
    assert len(tape[0].caches) == 3


@pytest.mark.parametrize("cell", CELLS)
def test_float32_with_onednns_products_stays_within_rounding_of_the_torch_loop(cell, monkeypatch):
    """In float32 the C++ loop multiplies by oneDNN's micro-kernel on each thread's streams
    (csrc/shares.h), and the torch loop by oneDNN's reordered W_hh (products.py), where addmm
    rounds otherwise: each within float32's rounding of the other (the streams shared out by 3 and
    W_hh packed here at any size, so that every cell takes those paths)."""
    with mock.patch.object(native, "parts", lambda n, per_thread: 3):
        cpp = window_gradients("C++", cell, 2, 11, 16, 4, 12, 1.0, 0, torch.float32)
    monkeypatch.setattr(products, "PACK_FROM", 0)
    with mock.patch.object(products, "_onednn", wraps=products._onednn) as onednn:
        pure = window_gradients("torch", cell, 2, 11, 16, 4, 12, 1.0, 0, torch.float32)
    assert onednn.called  # the packed product is what the torch loop ran
    for c, p in zip(cpp, pure, strict=True):
        torch.testing.assert_close(c, p, rtol=2e-4, atol=2e-5)


def test_the_packed_product_equals_addmm_and_is_used_only_where_it_pays():
    g = torch.Generator().manual_seed(0)
    W, x, add = (torch.randn(*s, generator=g) for s in ((256, 1024), (5, 256), (5, 1024)))
    with torch.no_grad():
        assert products.packed(W, 5) is not None  # float32 on a CPU with autograd off
        mul = products.product(W, 5)
        # sums of 256 products of N(0, 1): float32 rounding, about 1e-6 of their size of 16
        torch.testing.assert_close(mul(x, add), torch.addmm(add, x, W), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(mul(x), x @ W, rtol=1e-5, atol=1e-4)
        assert products.packed(W.double(), 5) is None
        assert products.packed(W.bfloat16(), 5) is None
        assert products.packed(W[:, :512], 5) is None  # too small to pay
    assert products.packed(W, 5) is None  # autograd on: the reordered copy would have no gradient


def test_the_window_product_goes_through_onednn_in_float32_and_equals_addmm():
    """A layer above the first multiplies a whole window by its W_xh, forward (x W_xh + b_h) and
    backward (dL/da W_xhᵀ): through oneDNN's matmul in float32 on a CPU with autograd off, within
    float32's rounding of addmm; addmm itself in float64 (the gradient proofs) and under autograd."""
    g = torch.Generator().manual_seed(0)
    x, W, b, dA = (torch.randn(*s, generator=g) for s in ((7, 3, 48), (48, 80), (80,), (7, 3, 80)))
    with torch.no_grad():
        assert products.onednn_runs(W)
        forward, backward = products.window_product(x, W, b), products.window_product(dA, W, transposed=True)
        assert forward.shape == (7, 3, 80) and backward.shape == (7, 3, 48)
        # sums of 48 or 80 products of N(0, 1): float32 rounding, about 1e-6 of their size of 7 to 9
        torch.testing.assert_close(forward, x @ W + b, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(backward, dA @ W.t(), rtol=1e-5, atol=1e-4)
        x64, W64, b64 = x.double(), W.double(), b.double()
        assert not products.onednn_runs(W64)
        assert torch.equal(products.window_product(x64, W64, b64), x64 @ W64 + b64)
    assert not products.onednn_runs(W)  # autograd on: its product must be recorded
    W.requires_grad_()
    products.window_product(x, W, b).sum().backward()
    torch.testing.assert_close(W.grad, x.reshape(-1, 48).t() @ torch.ones(21, 80))


def test_a_layer_aboves_input_weight_gradient_in_cpp_equals_the_product():
    """dW_xh of a layer above the first, sum_t below_tᵀ da_t, in C++ by threads sharing out its
    rows (as W_hh's), with da a column slice of a wider tensor as the GRU passes it."""
    g = torch.Generator().manual_seed(0)
    below, wide = torch.randn(5, 3, 40, generator=g, dtype=torch.float64), torch.randn(5, 3, 90, generator=g)
    dA = wide.double()[..., 10:70]
    for parts in (1, 3):
        got = native.kernels().input_weight_grad(below, [dA], parts)
        torch.testing.assert_close(
            got, below.reshape(15, 40).t() @ dA.reshape(15, 60), rtol=1e-12, atol=1e-12
        )


@pytest.fixture(scope="module")
def shares_check():
    """``tests/csrc/shares_check.cpp``, built against the kernels' shares.h with their flags (not
    shipped: the package's kernels are only what training runs)."""
    from pathlib import Path

    from torch.utils.cpp_extension import load

    native.kernels()  # the same library namespace, charrnn: the kernels first
    build = native.build_directory().with_name(native.build_directory().name + "-tests")
    build.mkdir(parents=True, exist_ok=True)
    load(
        name="charrnn_shares_check",
        sources=[str(Path(__file__).parent / "csrc" / "shares_check.cpp")],
        extra_include_paths=[str(native.SOURCES[0].parent)],
        extra_cflags=native.build_flags(),
        extra_ldflags=native._openmp_flags(),
        build_directory=str(build),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.charrnn.shares_check


@pytest.mark.parametrize(("parts", "n"), [(2, 64), (3, 7), (5, 3), (2, 1)])
def test_shares_cover_every_row_once_on_torchs_threads(shares_check, parts, n):
    """The loops over time share out the streams, the weight gradients the columns (csrc/shares.h):
    every row to exactly one share (checked in C++), and the shares on PyTorch's threads at once,
    which takes the kernels being built with OpenMP: without it ATen's parallel_for runs every
    share on the calling thread (correct, and no faster)."""
    threads = torch.get_num_threads()
    together = min(parts, threads, n) if native._openmp_flags() else 1
    assert shares_check(parts, n) == together
    torch.set_num_threads(1)
    try:
        assert shares_check(parts, n) == 1  # one thread runs every share
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("cell", CELLS)
def test_the_cpp_loop_on_four_threads_equals_the_torch_loop(cell):
    """Four threads at once, each with its own streams (more threads than this machine's cores,
    so that shares run truly side by side whatever the machine), give what the torch loop gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        assert native.row_parts(16) == 4
        cpp = window_gradients("C++", cell, 2, 5, 6, 16, 7, 1.0, 0)
    finally:
        torch.set_num_threads(threads)
    pure = window_gradients("torch", cell, 2, 5, 6, 16, 7, 1.0, 0)
    assert_loops_agree(cpp, pure)


def test_kernels_that_cannot_be_built_fall_back_to_the_torch_loop_said_once(monkeypatch, caplog):
    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension 'charrnn_kernels'\nc++: error: no such file\nfailed")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
    native.kernels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="torch_charrnn"):
            model = CharRNN(5, 4, "lstm").double()
            for _ in range(2):
                logits, _ = model(torch.randint(0, 5, (2, 3)))
                logits.sum().backward()
        said = [r.getMessage() for r in caplog.records if "could not be built" in r.getMessage()]
        assert len(said) == 1
        assert "c++: error: no such file" in said[0]
        assert "C++ compiler" in said[0] and "CHARRNN_NATIVE=0" in said[0]
        assert all(p.grad is not None for p in model.parameters())
    finally:
        native.kernels.cache_clear()


def test_charrnn_native_0_skips_the_kernels_without_a_word(monkeypatch, caplog):
    monkeypatch.setenv("CHARRNN_NATIVE", "0")
    native.kernels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="torch_charrnn"):
            assert native.kernels() is None
        assert caplog.records == []
    finally:
        native.kernels.cache_clear()


def test_a_lock_left_by_an_interrupted_build_is_removed_and_a_fresh_one_kept(tmp_path, caplog):
    """torch waits on a build's lock for as long as it exists: one left by a build cut short
    (Ctrl-C in the first minute) would hang every later run before its first step."""
    import os

    from torch_charrnn.rnn.native import STALE_LOCK, clear_stale_lock

    lock = tmp_path / "lock"
    lock.touch()
    assert not clear_stale_lock(tmp_path) and lock.exists()  # a build under way: its lock stays
    old = lock.stat().st_mtime - STALE_LOCK - 1
    os.utime(lock, (old, old))
    with caplog.at_level("WARNING", logger="torch_charrnn"):
        assert clear_stale_lock(tmp_path)
    assert not lock.exists() and "left by a build of the C++ kernels that was interrupted" in caplog.text
    assert not clear_stale_lock(tmp_path)  # no lock: nothing to do
