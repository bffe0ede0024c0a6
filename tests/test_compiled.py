"""The cells' steps compiled (``rnn/compiled.py``), on inductor's CPU backend: each cell's step and
step_backward equal the eager ones, and training through replayed windows with compiled steps
ends where eager training does. (The same code compiles to Triton on a GPU: tests/test_gpu_graphs.py.)"""

import pytest
import torch
from conftest import CELLS
from test_graphs import fit, model_for

from torch_charrnn.rnn.cells import get_cell
from torch_charrnn.rnn.compiled import cannot_compile, compiled_cell
from torch_charrnn.rnn.products import plain_product

pytestmark = pytest.mark.skipif(cannot_compile("cpu") is not None, reason="inductor needs a C++ compiler")

TOL = {torch.float64: {"rtol": 1e-12, "atol": 1e-12}}


@pytest.mark.parametrize("cell_name", CELLS)
def test_a_compiled_step_and_its_backward_equal_the_eager_ones(cell_name, B=2, H=1, dtype=torch.float64):
    """One shape each (a compile takes seconds): float64, H = 1."""
    cell, compiled = get_cell(cell_name), compiled_cell(get_cell(cell_name))
    assert compiled.layer_forward is None, "a compiled cell runs the pure-torch loop"
    g = torch.Generator().manual_seed(0)
    p = {k: v.to(dtype) for k, v in cell.init(4, H, g).items()}
    a = torch.randn(B, cell.GATES * H, generator=g, dtype=dtype)
    state = tuple(torch.randn(B, H, generator=g, dtype=dtype) for _ in cell.STATE)
    dstate = tuple(torch.randn(B, H, generator=g, dtype=dtype) for _ in cell.STATE)
    with torch.no_grad():  # as the hand-written BPTT runs them
        outs = [torch.empty(B, H, dtype=dtype) for _ in range(2)]
        (s1, c1), (s2, c2) = (
            c.step(a, state, p, plain_product(p["W_hh"]), out=o)
            for c, o in zip((cell, compiled), outs, strict=True)
        )
        for x, y in zip([*s1, outs[0]], [*s2, outs[1]], strict=True):
            torch.testing.assert_close(y, x, **TOL[dtype])
        bufs = [torch.full((B, cell.GATES * H), float("nan"), dtype=dtype) for _ in range(2)]
        eager = cell.step_backward(dstate, c1, p, bufs[0])
        got = compiled.step_backward(dstate, c2, p, bufs[1])
    torch.testing.assert_close(bufs[1], bufs[0], **TOL[dtype], msg="dL/da, written into the buffer handed in")
    torch.testing.assert_close(got[1], eager[1], **TOL[dtype])
    assert (got[1] is got[0]) == (eager[1] is eager[0]), "dL/du is dL/da where the cell says so"
    for x, y in zip(eager[2], got[2], strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(y, x, **TOL[dtype])


def lstm(graphs=False, **kwargs):
    return model_for("lstm", 2, 0.3, graphs, **kwargs)


def test_replayed_windows_with_compiled_steps_train_as_eager_ones():
    eager = lstm()
    fit(eager, 4, precision="64-true")
    model = lstm(graphs=True, compile_steps=True)
    fit(model, 4, precision="64-true")
    for (name, p), q in zip(model.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def test_where_inductor_cannot_compile_the_graphs_replay_the_eager_kernels_and_say_so(monkeypatch, capsys):
    import torch_charrnn.training.graphs as graphs

    said = "`compile_steps` is on but X: the graphs replay the eager kernels"
    monkeypatch.setattr(graphs, "cannot_compile", lambda device: said)
    eager = lstm()
    fit(eager, 3, precision="64-true")
    model = lstm(graphs=True, compile_steps=True)
    fit(model, 3, precision="64-true")
    assert capsys.readouterr().err.count("charrnn: `compile_steps` is on but X") == 1
    for p, q in zip(model.parameters(), eager.parameters(), strict=True):
        assert torch.equal(p, q), "the eager kernels, to the bit"
