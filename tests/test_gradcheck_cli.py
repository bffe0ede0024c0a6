"""``charrnn gradcheck``: passes on correct code, fails loudly on a wrong gradient."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import reference_numpy
from torch_charrnn.cli import main
from torch_charrnn.rnn import bptt
from torch_charrnn.rnn.cells import CELLS


@pytest.mark.parametrize(
    ("cell", "L", "names"),
    [
        ("tanh", 1, 5 + 1),
        ("gru", 2, 2 * 4 + 2 + 1),
        ("lstm", 2, 2 * 3 + 2 + 2),
        ("lnlstm", 2, 2 * 7 + 2 + 2),
        ("lngru", 3, 3 * 6 + 2 + 1),
    ],
)
def test_gradcheck_passes_on_correct_code(capsys, cell, L, names):
    args = ["--vocab_size", "6", "--hidden_size", "5", "--batch_size", "3", "--seq_len", "7"]
    assert main(["gradcheck", *args, "--cell", cell, "--num_layers", str(L)]) == 0
    out = capsys.readouterr().out
    rows = 2 * 2 * names  # NumPy's and torch's BPTT, each against autograd and finite differences
    assert out.count(" ok") == rows and "MISMATCH" not in out
    assert f"{rows} of {rows} gradients agree" in out


@pytest.mark.parametrize("name", ["layers.0.W_xh", "layers.1.W_hh", "layers.1.b_h", "W_hy", "b_y", "state.c"])
def test_gradcheck_fails_on_a_wrong_numpy_gradient(monkeypatch, capsys, name):
    correct = reference_numpy.loss_and_grads

    def wrong(*args):
        loss, grads, last = correct(*args)
        params, inputs, targets, state, cell, *_ = args
        named = {**reference_numpy.named_arrays(grads), **reference_numpy.state_names(grads["state"], cell)}
        named[name].flat[0] += 1e-4  # a small, realistic slip
        return loss, grads, last

    monkeypatch.setattr(reference_numpy, "loss_and_grads", wrong)
    assert main(["gradcheck", "--cell", "lstm", "--num_layers", "2"]) == 1
    out = capsys.readouterr().out
    assert out.count("MISMATCH") == 2
    assert f"disagreeing: numpy/autograd:{name}, numpy/finite-diff:{name}" in out


def test_gradcheck_fails_on_a_wrong_torch_gradient(monkeypatch, capsys):
    """The torch hand-written BPTT, the code that trains, is checked too (on a CPU its C++ loop,
    which forms b_hn's gradient itself)."""
    correct = CELLS["gru"].layer_backward

    def wrong(*args):
        dA, dstate, grads = correct(*args)
        return dA, dstate, {**grads, "b_hn": grads["b_hn"] * 1.001}

    monkeypatch.setitem(CELLS, "gru", dataclasses.replace(CELLS["gru"], layer_backward=wrong))
    assert main(["gradcheck", "--cell", "gru"]) == 1
    out = capsys.readouterr().out
    assert "disagreeing: torch/autograd:layers.0.b_hn, torch/finite-diff:layers.0.b_hn" in out


@pytest.mark.parametrize("cell", ["lnlstm", "lngru"])
def test_gradcheck_fails_on_a_layer_norm_backward_that_forgets_the_mean(monkeypatch, capsys, cell):
    """NumPy's normalisation backward without its mean(d) term (the sabotage: right where every
    entry of the gradient shifts alike, wrong elsewhere) disagrees with both oracles."""
    from reference_numpy.cells import layernorm, lngru, lnlstm

    def wrong(dy, kept, g):
        vhat, rstd = kept
        d = dy * g
        return rstd * (d - vhat * (d * vhat).mean(axis=-1, keepdims=True))

    for module in (layernorm, lnlstm, lngru):
        monkeypatch.setattr(module, "layer_norm_backward", wrong)
    assert main(["gradcheck", "--cell", cell, "--num_layers", "2"]) == 1
    out = capsys.readouterr().out.split("disagreeing:")[1]
    assert "numpy/autograd:layers.1.W_hh" in out and "numpy/finite-diff:layers.0.W_xh" in out
    assert "torch/" not in out, "torch's backward is its own"


def test_gradcheck_fails_on_a_wrong_gain_gradient_of_the_cpp_loop(monkeypatch, capsys):
    correct = CELLS["lnlstm"].layer_backward

    def wrong(*args):
        dP, dstate, grads = correct(*args)
        return dP, dstate, {**grads, "g_c": grads["g_c"] * 1.001}

    monkeypatch.setitem(CELLS, "lnlstm", dataclasses.replace(CELLS["lnlstm"], layer_backward=wrong))
    assert main(["gradcheck", "--cell", "lnlstm"]) == 1
    out = capsys.readouterr().out
    assert "disagreeing: torch/autograd:layers.0.g_c, torch/finite-diff:layers.0.g_c" in out


def test_gradcheck_checks_the_backward_through_dropouts_masks(monkeypatch, capsys):
    """With --dropout every BPTT and oracle runs under one set of masks; a backward that forgets
    the mask (the sabotage) disagrees with both oracles, for every gradient below the masks."""
    args = ["gradcheck", "--cell", "lstm", "--num_layers", "2", "--dropout", "0.5"]
    assert main(args) == 0
    assert "40 of 40 gradients agree" in capsys.readouterr().out
    monkeypatch.setattr(bptt, "through_dropout", lambda dh, mask: dh)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "torch/autograd:layers.0.W_xh" in out and "torch/finite-diff:layers.1.W_hh" in out
    assert "numpy/" not in out.split("disagreeing:")[1], "NumPy's backward is its own"


@pytest.mark.parametrize("cell", ["gru", "lnlstm"])
def test_gradcheck_checks_the_backward_through_zoneouts_masks(monkeypatch, capsys, cell):
    """With --zoneout (and --zoneout_c) every BPTT and oracle, finite differences included, runs
    under one set of masks, after dropout's; a NumPy backward that lets nothing around a kept step
    (the sabotage) disagrees with both oracles."""
    from reference_numpy import bptt as numpy_bptt

    args = ["gradcheck", "--cell", cell, "--num_layers", "2", "--dropout", "0.3", "--zoneout", "0.5"]
    args += ["--zoneout_c", "0.5"] if cell == "lnlstm" else []
    assert main(args) == 0
    assert "gradients agree" in capsys.readouterr().out

    def nothing_around(ds, keep):
        return tuple(d * (1 - m) for d, m in zip(ds, keep, strict=True)), None

    monkeypatch.setattr(numpy_bptt, "through_zoneout", nothing_around)
    assert main(args) == 1
    out = capsys.readouterr().out.split("disagreeing:")[1]
    assert "numpy/autograd:state.h" in out and "numpy/finite-diff:layers.0.W_hh" in out
    assert "torch/" not in out, "torch's backward is its own"


def test_gradcheck_saturated_edge_sizes(capsys):
    assert (
        main(
            [
                "gradcheck",
                "--vocab_size",
                "2",
                "--hidden_size",
                "1",
                "--batch_size",
                "1",
                "--seq_len",
                "1",
                "--scale",
                "4",
            ]
        )
        == 0
    )


def test_gradcheck_rejects_bad_sizes(capsys):
    assert main(["gradcheck", "--hidden_size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "charrnn: error: --hidden_size must be at least 1, got 0" in err


def test_charrnn_console_script_runs_gradcheck():
    result = subprocess.run(
        [Path(sys.executable).parent / "charrnn", "gradcheck", "--scale", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "24 of 24 gradients agree" in result.stdout
