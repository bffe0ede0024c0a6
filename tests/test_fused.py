"""``bptt="fused"``: PyTorch's own fused kernels on the model's parameters, proven equal to the
hand-written BPTT and to autograd, and interchangeable with them through checkpoints."""

from pathlib import Path

import pytest
import torch
from conftest import FUSED_CELLS, SMALL_FIT, model_from_numpy, problems, through_model
from hypothesis import example, given
from hypothesis import strategies as st

import reference_numpy as rn
from torch_charrnn.cli.fit import cli_main
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn.backends import BACKENDS
from torch_charrnn.rnn.fused import fused_parameters


@given(**problems(cell=st.sampled_from(FUSED_CELLS), scale=st.sampled_from([0.5, 3.0])))
@example(cell="lstm", L=2, V=2, H=1, B=1, T=1, scale=3.0, seed=0)
def test_fused_equals_manual_and_autograd(cell, L, V, H, B, T, scale, seed):
    params, state, inputs, targets = random_problem(V, H, B, T, scale, seed, cell, L)
    outs = {b: through_model(params, inputs, targets, state, cell, b) for b in BACKENDS}
    tol = {"rtol": 1e-10, "atol": 1e-12}
    for other in set(BACKENDS) - {"fused"}:
        loss, logits, last, grads = outs[other]
        f_loss, f_logits, f_last, f_grads = outs["fused"]
        for got, want in zip((f_loss, f_logits, *f_last), (loss, logits, *last), strict=True):
            torch.testing.assert_close(got.detach(), want.detach(), **tol)
        assert set(f_grads) == set(grads)
        for name, g in grads.items():
            torch.testing.assert_close(f_grads[name], g, **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("cell", FUSED_CELLS)
def test_fused_runs_on_views_of_the_models_own_weights(cell):
    """No copy kept in a second module: the torch.nn weights are transposed views of the model's."""
    params = rn.init_params(5, 4, __import__("numpy").random.default_rng(0), cell=cell, num_layers=2)
    model = model_from_numpy(params, cell, bptt="fused")
    named = fused_parameters(model.weights()["layers"], model.cell)
    assert named["weight_ih_l1"].data_ptr() == model.layers[1].W_xh.data_ptr()
    assert named["weight_hh_l0"].data_ptr() == model.layers[0].W_hh.data_ptr()
    assert {n for n, _ in model.named_parameters()} == set(rn.named_arrays(params))


RUN = [
    *SMALL_FIT,
    "--model.hidden_size=12",
    "--model.cell=lstm",
    "--model.num_layers=2",
    "--trainer.precision=64-true",
]


def last(root: Path) -> dict:
    newest = max(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return torch.load(newest, weights_only=True)


@pytest.mark.parametrize(("first", "then"), [("fused", "manual"), ("manual", "fused")])
def test_a_checkpoint_of_one_backend_resumes_on_the_other(tmp_path, capsys, first, then):
    """Trained 10 steps with one backend, resumed to 20 with the other: the same run as 20 steps of
    the second, up to the rounding in which the two backends differ (1e-15 a step, measured)."""
    a, b = tmp_path / "a", tmp_path / "b"
    cli_main(
        ["fit", *RUN, f"--model.bptt={first}", "--trainer.max_steps=10", f"--trainer.default_root_dir={a}"]
    )
    written = last(a)
    assert written["global_step"] == 10 and written["hyper_parameters"]["bptt"] == first
    cli = cli_main(
        [
            "fit",
            *RUN,
            f"--model.bptt={then}",
            "--trainer.max_steps=20",
            f"--trainer.default_root_dir={a}",
            "--ckpt_path=last",
        ]
    )
    assert f"--model.bptt {first} -> {then}" in capsys.readouterr().err
    assert cli.trainer.global_step == 20 and cli.model.hparams.bptt == then
    cli_main(
        ["fit", *RUN, f"--model.bptt={then}", "--trainer.max_steps=20", f"--trainer.default_root_dir={b}"]
    )
    resumed, straight = last(a)["state_dict"], last(b)["state_dict"]
    assert set(resumed) == set(straight) == set(written["state_dict"])
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-9, atol=1e-12, msg=name)
