"""A cell is what its protocol says: one defined here, a ReLU RNN (Le et al. 2015's IRNN) with a
NumPy step and a torch step, each with its backward, and nothing else (no C++ kernels, no
torch.nn module, no monitor activations, no extra parameters), registered in both registries,
passes the gradient oracle against autograd and finite differences, runs the pure-torch loop, and
trains through ``charrnn fit``.

    h_t = relu(a_t + h_{t-1} W_hh)      a_t = x_t W_xh + b_h
"""

import math
import types

import numpy as np
import pytest
import torch
from conftest import SMALL_FIT

import reference_numpy as rn
from reference_numpy import cells as numpy_cells
from torch_charrnn.oracle import gradcheck
from torch_charrnn.rnn import cells as torch_cells
from torch_charrnn.rnn.bptt import run_layers


def numpy_module():
    def init(in_size, hidden_size, rng, *, first_layer=True):
        std = 0.1 if first_layer else in_size**-0.5
        return {
            "W_xh": rng.standard_normal((in_size, hidden_size)) * std,
            "W_hh": np.eye(hidden_size) * 0.5,
            "b_h": np.zeros(hidden_size),
        }

    def step(a, state, p, out=None):
        (h_prev,) = state
        h = np.maximum(a + h_prev @ p["W_hh"], 0.0, out=out)
        return (h,), (h,)

    def step_backward(dstate, cache, p, out):
        (dh,), (h,) = dstate, cache
        da = np.multiply(dh, h > 0, out=out)  # backprop through relu: dh where h > 0
        return da, da, (None,)

    return types.SimpleNamespace(
        NAME="relu", GATES=1, STATE=("h",), init=init, step=step, step_backward=step_backward
    )


def torch_module():
    def init(in_size, hidden_size, generator, *, first_layer=True):
        std = 0.1 if first_layer else in_size**-0.5
        return {
            "W_xh": torch.randn(in_size, hidden_size, generator=generator) * std,
            "W_hh": torch.eye(hidden_size) * 0.5,
            "b_h": torch.zeros(hidden_size),
        }

    def step(a, state, p, recur, out=None):
        (h_prev,) = state
        h = torch.clamp_min(recur(h_prev, a), 0.0, out=out)  # recur(h, a): a + h W_hh
        return (h,), (h,)

    def step_backward(dstate, cache, p, out):
        (dh,), (h,) = dstate, cache
        da = torch.mul(dh, h > 0, out=out)  # backprop through relu: dh where h > 0
        return da, da, (None,)

    module = types.SimpleNamespace(NAME="relu", GATES=1, STATE=("h",))
    module.__name__ = "test_new_cell.relu"
    module.init, module.step, module.step_backward = init, step, step_backward
    return module


@pytest.fixture
def relu(monkeypatch):
    cell = torch_cells.Cell.of(torch_module())
    assert cell.layer_forward is None and cell.FUSED is None
    monkeypatch.setitem(torch_cells.CELLS, "relu", cell)
    monkeypatch.setitem(numpy_cells.CELLS, "relu", numpy_module())
    return cell


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_cell_defined_here_passes_the_gradient_oracle(relu, num_layers, dropout):
    rows = gradcheck(
        cell="relu", num_layers=num_layers, dropout=dropout, vocab_size=4, hidden_size=5, seq_len=7
    )
    assert {r.bptt for r in rows} == {"numpy", "torch"} and {r.oracle for r in rows} == {
        "autograd",
        "finite-diff",
    }
    assert {r.name for r in rows} >= {f"layers.{num_layers - 1}.W_hh", "W_hy", "state.h"}
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_a_cell_without_kernels_runs_the_pure_torch_loop_with_autograd_off(relu):
    layers = [relu.init(5, 4, None), relu.init(4, 4, None, first_layer=False)]
    with torch.no_grad():
        _, _, tape = run_layers(torch.tensor([[0, 3, 1]]), (torch.zeros(2, 1, 4),), layers, relu)
    assert [layer.kernel for layer in tape] == [None, None] and [len(layer.caches) for layer in tape] == [
        3,
        3,
    ]


def test_a_wrong_step_backward_fails_the_oracle(relu, monkeypatch):
    """The oracle test above could not pass by accident: half the derivative fails it."""
    module = torch_module()
    right = module.step_backward

    def wrong(dstate, cache, p, out):
        da, du, direct = right(dstate, cache, p, out)
        return da.mul_(0.5), da, direct

    module.step_backward = wrong
    monkeypatch.setitem(torch_cells.CELLS, "relu", torch_cells.Cell.of(module))
    rows = gradcheck(cell="relu", vocab_size=4, hidden_size=5, seq_len=7)
    assert not all(r.ok for r in rows if r.bptt == "torch") and all(r.ok for r in rows if r.bptt == "numpy")


def test_a_cell_defined_here_trains_through_charrnn_fit(relu, tmp_path):
    from torch_charrnn.cli.fit import cli_main

    args = [
        *SMALL_FIT,
        "--model.cell=relu",
        "--model.num_layers=2",
        "--model.hidden_size=32",
        "--model.lr=0.1",
    ]
    cli = cli_main(
        [
            "fit",
            *args,
            "--trainer.max_steps=120",
            "--monitor.every_n_steps=40",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.model.cell is relu and cli.trainer.global_step == 120
    chance = math.log2(cli.datamodule.vocab_size)  # bits per character of a uniform guess
    assert cli.trainer.callback_metrics["val/bpc"] < chance - 1.0
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    with pytest.raises(Exception, match="has none"):  # fused needs a torch.nn module the cell does not name
        cli_main(
            [
                "fit",
                *args,
                "--model.bptt=fused",
                "--trainer.max_steps=1",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    assert rn.get_cell("relu").NAME == "relu"
