"""``charrnn gradcheck``: passes on correct code, fails loudly on a wrong gradient."""

import subprocess
import sys
from pathlib import Path

import pytest

import reference_numpy
from torch_charrnn.cli import main


def test_gradcheck_passes_on_correct_code(capsys):
    assert (
        main(["gradcheck", "--vocab_size", "6", "--hidden_size", "5", "--batch_size", "3", "--seq_len", "7"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.count(" ok") == 12 and "MISMATCH" not in out
    assert "12 of 12 gradients agree" in out


@pytest.mark.parametrize("name", ["W_xh", "W_hh", "b_h", "W_hy", "b_y", "h0"])
def test_gradcheck_fails_on_a_wrong_gradient(monkeypatch, capsys, name):
    correct = reference_numpy.loss_and_grads

    def wrong(params, inputs, targets, h0):
        loss, grads, h_last = correct(params, inputs, targets, h0)
        grads[name].flat[0] += 1e-4  # a small, realistic slip
        return loss, grads, h_last

    monkeypatch.setattr(reference_numpy, "loss_and_grads", wrong)
    assert main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert f"autograd     {name:<8}" in out and f"finite-diff  {name:<8}" in out
    assert out.count("MISMATCH") == 2 and f"disagreeing: autograd:{name}, finite-diff:{name}" in out


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
    with pytest.raises(SystemExit) as exc:
        main(["gradcheck", "--hidden_size", "0"])
    assert exc.value.code == 2
    assert "--hidden_size must be at least 1, got 0" in capsys.readouterr().err


def test_charrnn_console_script_runs_gradcheck():
    result = subprocess.run(
        [Path(sys.executable).parent / "charrnn", "gradcheck", "--scale", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "12 of 12 gradients agree" in result.stdout
