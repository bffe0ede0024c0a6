"""A model or batch bigger than memory: one line before anything is allocated, from an estimate
that counts the model's own parameters; an allocation that still fails mid-run: one line, and
the last checkpoint intact."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CELL_DEPTHS, SMALL_FIT

from torch_charrnn import CharRNN
from torch_charrnn.cli import main
from torch_charrnn.rnn import memory
from torch_charrnn.rnn.cells import get_cell
from torch_charrnn.rnn.memory import footprint, parameter_count
from torch_charrnn.training.callbacks import optimizer_slots

CHARRNN = str(Path(sys.executable).parent / "charrnn")


@pytest.mark.parametrize(("cell", "L"), [*CELL_DEPTHS, ("gru", 3)])
def test_the_estimate_counts_the_models_parameters(cell, L):
    model = CharRNN(11, 7, cell=cell, num_layers=L)
    assert parameter_count(get_cell(cell), 11, 7, L) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("optimizer", "slots"),
    [
        (torch.optim.Adagrad, 1),
        (torch.optim.Adam, 2),
        (torch.optim.AdamW, 2),
        (torch.optim.RMSprop, 1),
        (torch.optim.SGD, 0),
    ],
)
def test_the_optimizers_state_is_counted_from_the_optimizer_itself(optimizer, slots):
    assert optimizer_slots(optimizer([torch.zeros(2, requires_grad=True)], lr=0.1)) == slots


def test_the_window_grows_with_the_streams_and_the_steps_and_the_rest_does_not():
    small = footprint(get_cell("lstm"), 65, 128, 2, 16, 32)
    big = footprint(get_cell("lstm"), 65, 128, 2, 32, 64)
    assert (
        big.window == 4 * small.window and big.weights == small.weights and big.optimizer == small.optimizer
    )


def test_an_oversized_model_is_one_line_before_anything_is_allocated(tmp_path):
    """57.6 GB for W_hh alone, under a 3 GiB address-space limit: the allocation would fail with the
    allocator's traceback; the estimate stops it first."""
    limit = 3 * 2**30
    code = (
        "import resource, subprocess, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
        "sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            CHARRNN,
            "fit",
            "--model.hidden_size=120000",
            "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in run.stderr.splitlines() if line.startswith("charrnn: error:")]
    assert run.returncode == 2 and "Traceback" not in run.stderr and "DefaultCPUAllocator" not in run.stderr
    assert len(errors) == 1, run.stderr
    assert "the model's 14,424,840,103 parameters need about 53.7 GiB" in errors[0]
    assert "the address-space limit (ulimit -v, 3.0 GiB) leaves" in errors[0]
    assert "lower --model.hidden_size or --model.num_layers" in errors[0]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_batch_too_large_for_the_memory_is_one_line_before_the_first_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device: (6 * 2**20, "a test machine has 6 MiB"))
    args = [
        *SMALL_FIT,
        "--data.max_chars=50000",
        "--data.batch_size=64",
        "--trainer.max_steps=3",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(["fit", *args]) == 2
    err = capsys.readouterr().err
    assert "charrnn: error: the run (" in err and " parameters; a training step holds about" in err
    assert (
        "but a test machine has 6 MiB: lower --data.batch_size, --data.seq_len or --model.hidden_size" in err
    )
    assert "Traceback" not in err and not list(tmp_path.rglob("*.ckpt"))
    monkeypatch.setenv("CHARRNN_MEMORY_CHECK", "0")  # the way around it, as the line says
    assert main(["fit", *args]) == 0


def test_the_estimate_is_in_the_model_summary(tmp_path, caplog):
    args = [*SMALL_FIT, "--trainer.enable_model_summary=true", "--trainer.max_steps=1"]
    with caplog.at_level("INFO"):  # Lightning's summary goes through its logger
        assert main(["fit", *args, f"--trainer.default_root_dir={tmp_path}"]) == 0
    assert re.search(r"Memory: [\d,]+ parameters; a training step holds about [\d.,]+ MiB", caplog.text)


def test_running_out_of_memory_mid_run_is_one_line_and_the_last_checkpoint_stays(
    tmp_path, capsys, monkeypatch
):
    real = CharRNN.training_step
    seen = []

    def allocation_fails_at_step_5(self, batch, batch_idx):
        seen.append(self.global_step)
        if self.global_step == 5:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)"
            )
        return real(self, batch, batch_idx)

    monkeypatch.setattr(CharRNN, "training_step", allocation_fails_at_step_5)
    args = [*SMALL_FIT, "--trainer.max_steps=20", "--last.every_n_train_steps=2"]
    assert main(["fit", *args, f"--trainer.default_root_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("charrnn: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    last = next(tmp_path.rglob("last.ckpt"))
    assert "out of memory at step 5 on cpu (" in lines[0] and "can't allocate memory" in lines[0]
    assert "Lower --data.batch_size, --data.seq_len or --model.hidden_size." in lines[0]
    assert f"the last at {last}: resume with --ckpt_path last" in lines[0]
    assert seen[-1] == 5  # what the test relies on: the failure came mid-run, after a checkpoint
    assert torch.load(last, weights_only=True)["global_step"] == 4


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("check", "code", "said"), [("1", 2, "lower --data.batch_size"), ("0", 1, "out of memory")]
)
def test_a_batch_bigger_than_the_gpu_is_one_line(tmp_path, capsys, monkeypatch, check, code, said):
    """An LSTM of 8,192 units (1 GB of parameters, which the host holds) at B3000 T100: its tape,
    about 170 GiB, is more than the GPU has. With the check: one line before the first step; without
    it (CHARRNN_MEMORY_CHECK=0), CUDA's own failure as one line."""
    monkeypatch.setenv("CHARRNN_MEMORY_CHECK", check)
    args = [
        "fit",
        "--trainer.accelerator=gpu",
        "--trainer.devices=1",
        "--model.cell=lstm",
        "--model.hidden_size=8192",
        "--data.batch_size=3000",
        "--data.seq_len=100",
        "--data.val_fraction=0",
        "--data.test_fraction=0",
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(args) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("charrnn: error:")]
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in err, err


def test_an_allocation_failure_behind_a_capture_error_is_still_found():
    """Out of memory inside a CUDA graph's capture ends the capture with an error of its own,
    raised while handling the allocation's: the one line still reports the allocation."""
    from torch_charrnn.cli.fit import out_of_memory_in

    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    try:
        try:
            raise oom
        except torch.OutOfMemoryError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")  # noqa: B904
    except RuntimeError as capture:
        assert out_of_memory_in(capture) is oom
    assert out_of_memory_in(RuntimeError("an error of another kind")) is None
