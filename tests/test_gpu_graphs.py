"""On a GPU: training windows captured as CUDA graphs and replayed, against the same hand-written
steps launched one by one, and a training step that never waits for the device. (Skipped without
CUDA; ``tests/test_graphs.py`` holds everything around the capture on the CPU.)"""

import lightning as L
import pytest
import torch
from conftest import CELLS
from lightning.pytorch.loggers import TensorBoardLogger

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.cli import main
from torch_charrnn.rnn.bptt import cross_entropy, dropout_masks, forward_manual
from torch_charrnn.rnn.compiled import compiled_cell
from torch_charrnn.training import graphs as graph_module
from torch_charrnn.training.graphs import CUDAGraph, WindowGraphs
from torch_charrnn.training.guard import step_is_due

pytestmark = pytest.mark.gpu

TOL = {
    torch.float64: {"rtol": 1e-12, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-3},
}


class Counted(CUDAGraph):
    replays = 0

    def replay(self):
        Counted.replays += 1
        return super().replay()


def twin_models(cell, layers, dropout, dtype):
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = CharRNN(11, 32, cell=cell, num_layers=layers, dropout=dropout).cuda().train()
        models.append(model.double() if dtype == torch.float64 else model)
    return models


def same_windows(cell, layers, dropout, dtype, windows, compiled=False):
    """``windows`` windows through the graph and through the eager hand-written step, the state
    carried and the weights stepped between them (so the graph must read the parameters where
    they are): the loss, the last state and every gradient agree."""
    eager, replayed = twin_models(cell, layers, dropout, dtype)
    graphs = WindowGraphs(replayed, CUDAGraph, compiled_cell(replayed.cell) if compiled else None)
    g = torch.Generator("cuda").manual_seed(1)
    B, T = 4, 9
    states = [eager.initial_state(B), replayed.initial_state(B)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    for _ in range(windows):
        x, y = torch.randint(0, 11, (B, T), device="cuda"), torch.randint(0, 11, (B, T), device="cuda")
        masks = dropout_masks(dropout, (T, B, 32), layers, g, eager.W_hy) if dropout else None
        with autocast:
            eager.zero_grad(set_to_none=True)
            w = eager.weights()
            logits, last_e = forward_manual(x, states[0], w["layers"], w["W_hy"], w["b_y"], eager.cell, masks)
            loss_e = cross_entropy(logits, y)
            loss_e.backward()
            loss_r, last_r = graphs.run(x, y, states[1], masks)
        torch.testing.assert_close(loss_r, loss_e.detach(), **TOL[dtype])
        for a, b in zip(last_r, last_e, strict=True):
            torch.testing.assert_close(a, b.detach(), **TOL[dtype])
        for (name, p), q in zip(replayed.named_parameters(), eager.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, **TOL[dtype], msg=lambda m, n=name: f"{n}: {m}")
        with torch.no_grad():
            for p, q in zip(replayed.parameters(), eager.parameters(), strict=True):
                p.sub_(0.1 * p.grad)
                q.sub_(0.1 * q.grad)
        states = [tuple(s.detach() for s in last_e), tuple(s.clone() for s in last_r)]
    assert len(graphs.windows) == 1, "one shape, one graph"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_a_replayed_window_equals_the_eager_hand_written_step(cell, layers, dropout, dtype):
    same_windows(cell, layers, dropout, dtype, windows=5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cell", CELLS)
def test_a_replayed_window_with_compiled_steps_equals_the_eager_hand_written_step(cell, dtype):
    """The steps compiled to Triton kernels (``rnn/compiled.py``) inside the graph."""
    same_windows(cell, 2, 0.3, dtype, windows=3, compiled=True)


def trainer(root, steps, **kwargs):
    return L.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=steps,
        gradient_clip_val=1.0,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    )


def data():
    return CharDataModule(max_chars=20_000, batch_size=8, seq_len=32)


def gpu_model(**kwargs):
    torch.manual_seed(0)
    dm = data()
    return CharRNN(dm.vocab_size, 64, vocab=dm.vocab, **kwargs)


def test_a_replayed_run_resumed_from_last_ckpt_continues_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """To float32's rounding, not bit for bit: on a GPU the gathered rows' gradient of layer 0
    (``index_add_``) adds with atomics, in an order that differs from run to run (on a CPU the
    same resume is bit for bit: tests/test_graphs.py)."""
    monkeypatch.setattr(graph_module, "replayer", lambda model: Counted)  # CUDAGraph, its replays counted
    kwargs = {"cell": "lstm", "num_layers": 2, "dropout": 0.3}
    whole = gpu_model(**kwargs)
    trainer(tmp_path / "whole", 12, logger=False, enable_checkpointing=False).fit(whole, data())
    first = gpu_model(**kwargs)
    trainer(tmp_path / "run", 6, logger=False).fit(first, data())
    (ckpt,) = (tmp_path / "run").glob("**/*.ckpt")
    resumed = gpu_model(**kwargs)
    Counted.replays = 0
    t = trainer(tmp_path / "resumed", 12, logger=False, enable_checkpointing=False)
    t.fit(resumed, data(), ckpt_path=ckpt)
    assert Counted.replays == 6 and t.global_step == 12, "resumed at step 6, every window replayed"
    for (name, p), q in zip(resumed.named_parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_a_run_pushed_to_diverge_on_a_gpu_stops_with_the_one_line_error(tmp_path, capsys):
    args = [
        "fit",
        "--data.max_chars=20000",
        "--data.batch_size=8",
        "--data.seq_len=32",
        "--model.hidden_size=64",
        "--trainer.accelerator=gpu",
        "--trainer.enable_progress_bar=false",
        "--monitor.every_n_steps=0",
        f"--trainer.default_root_dir={tmp_path}",
        # the first non-finite step (4) neither writes metrics nor a checkpoint, where the flag
        # would be read at once: it is read at step 9, the next that writes metrics
        "--trainer.log_every_n_steps=10",
        "--last.every_n_train_steps=0",
    ]
    assert main([*args, "--trainer.max_steps=3"]) == 0
    code = main([*args, "--trainer.max_steps=30", "--model.lr=1e38", "--ckpt_path=last"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "training diverged at step 4" in err and "read at step" in err, err
    for path in tmp_path.glob("**/*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(w).all() for w in state.values()), path


def test_a_window_of_another_shape_gets_its_own_graph_and_trains():
    model = gpu_model(cell="gru").cuda().train()
    eager = gpu_model(cell="gru").cuda().train()
    graphs = WindowGraphs(model, CUDAGraph)
    for B, T in [(8, 32), (5, 7), (8, 32)]:
        x = torch.randint(0, model.hparams.vocab_size, (B, T), device="cuda")
        loss, _ = graphs.run(x, x, model.initial_state(B), None)
        eager.zero_grad(set_to_none=True)
        want = cross_entropy(eager(x, eager.initial_state(B))[0], x)
        want.backward()
        torch.testing.assert_close(loss, want.detach(), **TOL[torch.float32])
        for p, q in zip(model.parameters(), eager.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, **TOL[torch.float32])
    assert len(graphs.windows) == 2


class NoSync(L.Callback):
    """Turns any host synchronisation into an error from the start of a training step that does
    not write metrics to the start of the next one (everything Lightning does in between too)."""

    def __init__(self):
        self.checked = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.cuda.set_sync_debug_mode(0)
        if trainer.global_step >= 2 and not step_is_due(trainer):  # after the capture
            torch.cuda.set_sync_debug_mode("error")
            self.checked += 1

    def on_train_end(self, trainer, pl_module):
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_training_step_waits_for_the_device_only_on_the_steps_that_write_metrics(tmp_path, dropout):
    model = gpu_model(cell="lstm", dropout=dropout)
    Counted.replays = 0
    watch = NoSync()
    t = trainer(
        tmp_path,
        40,
        log_every_n_steps=10,
        logger=TensorBoardLogger(tmp_path),
        enable_checkpointing=False,
        callbacks=[watch],
    )
    try:
        t.fit(model, data())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert watch.checked >= 30 and Counted.replays == 40
    assert model.guard.deferred, "the default Adagrad is fused on a GPU: the check stays there"
