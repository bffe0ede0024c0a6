"""Training windows replayed from static buffers (``training/graphs.py``), on the CPU: ``EagerReplay``
stands in for the CUDA graph and runs the captured body at each replay, so everything around the
capture (the buffers copied in, the state carried, dropout's and zoneout's masks, the gradients
handed back, the hooks Lightning calls, a checkpoint and its resume, the eager fallback and its
line) is held here;
the capture itself is held on a GPU (``tests/test_gpu.py``)."""

import lightning as L
import pytest
import torch
from conftest import CELLS, REPLAYED, Counted

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.rnn.bptt import cross_entropy
from torch_charrnn.training.graphs import EagerReplay, WindowGraphs


def fit(model, steps, *, root=None, ckpt_path=None, **trainer_args):
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        gradient_clip_val=1.0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=root is not None,
        default_root_dir=root,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    trainer.fit(model, CharDataModule(max_chars=4000, batch_size=3, seq_len=8), ckpt_path=ckpt_path)
    return trainer


def model_for(cell, layers, p, graphs: bool, **kwargs):
    """A small model with dropout and zoneout (of h, and of c where the cell carries one) at ``p``."""
    torch.manual_seed(0)
    dm = CharDataModule(max_chars=4000, batch_size=3, seq_len=8)
    masks = {"dropout": p, "zoneout": p, "zoneout_c": p if cell in ("lstm", "lnlstm") else 0.0}
    model = CharRNN(dm.vocab_size, 6, cell=cell, num_layers=layers, vocab=dm.vocab, **masks, **kwargs)
    if graphs:
        REPLAYED.add(model)
    return model


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_replayed_windows_train_the_same_weights_as_eager_ones(cell, layers, p):
    """Eight windows, the state carried from one to the next, dropout's and zoneout's masks drawn as eagerly:
    the same weights to the bit, every window replayed."""
    eager = model_for(cell, layers, p, graphs=False)
    fit(eager, 8)
    Counted.replays = 0
    replayed = model_for(cell, layers, p, graphs=True)
    fit(replayed, 8)
    assert Counted.replays == 8, "every training window went through the replay"
    assert replayed.graphs is None, "the graphs are let go at the end of training"
    for name, w in weights(eager).items():
        assert torch.equal(weights(replayed)[name], w), name
    assert torch.equal(replayed._state["train"][0], eager._state["train"][0]), "the state carried"


def test_under_bf16_autocast_replayed_windows_train_the_same_weights_as_eager_ones(monkeypatch):
    """The replay runs the backward outside autocast, as Lightning runs the eager one (after the
    training step, whose forward alone is under autocast): each backward is seen from the loss's
    own gradient hook, and the weights are the same bits in bf16-mixed."""
    from torch_charrnn.training import graphs as graphs_module
    from torch_charrnn.training import module as module_module

    under_autocast = []

    def watched(logits, targets):
        loss = cross_entropy(logits, targets)
        loss.register_hook(lambda g: under_autocast.append(torch.is_autocast_enabled("cpu")))
        return loss

    monkeypatch.setattr(graphs_module, "cross_entropy", watched)
    monkeypatch.setattr(module_module, "cross_entropy", watched)
    runs = {}
    for graphs in (False, True):
        model = model_for("lstm", 2, 0.3, graphs=graphs)
        fit(model, 6, precision="bf16-mixed")
        runs[graphs] = weights(model)
    assert under_autocast == [False] * 12, under_autocast
    for name, w in runs[False].items():
        assert torch.equal(runs[True][name], w), name


def test_anomaly_detection_runs_eagerly_and_says_why():
    """Anomaly mode checks every backward op on the host: no graph can hold that."""
    from torch_charrnn.training.graphs import window_graphs

    model = model_for("gru", 1, 0.0, graphs=True)
    trainer = fit(model, 1)
    with torch.autograd.set_detect_anomaly(True):
        graphs, said = window_graphs(model, trainer)
    assert graphs is None and said == [
        "training steps run eagerly: `detect_anomaly` checks every step on the host"
    ]


def test_a_replayed_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(tmp_path):
    whole = model_for("lstm", 2, 0.3, graphs=True)
    fit(whole, 8)
    first = model_for("lstm", 2, 0.3, graphs=True)
    fit(first, 4, root=tmp_path)
    (ckpt,) = tmp_path.glob("**/*.ckpt")
    resumed = model_for("lstm", 2, 0.3, graphs=True)
    Counted.replays = 0
    trainer = fit(resumed, 8, root=tmp_path / "resumed", ckpt_path=ckpt)
    assert Counted.replays == 4 and trainer.global_step == 8, "resumed at step 4, not from the start"
    for name, w in weights(whole).items():
        assert torch.equal(weights(resumed)[name], w), name


@pytest.mark.parametrize(
    ("kwargs", "trainer_args", "said"),
    [
        ({"bptt": "autograd"}, {}, "CUDA graphs replay the hand-written BPTT (`bptt` manual)"),
        ({}, {"accumulate_grad_batches": 2}, "`accumulate_grad_batches` adds gradients"),
    ],
)
def test_where_a_graph_cannot_serve_training_runs_eagerly_and_says_why_once(
    capsys, kwargs, trainer_args, said
):
    eager = model_for("gru", 1, 0.0, graphs=False, **kwargs)
    fit(eager, 6, **trainer_args)
    capsys.readouterr()
    Counted.replays = 0
    model = model_for("gru", 1, 0.0, graphs=True, **kwargs)
    fit(model, 6, **trainer_args)
    err = capsys.readouterr().err
    assert err.count("charrnn: training steps run eagerly") == 1 and said in err, err
    assert Counted.replays == 0
    for name, w in weights(eager).items():
        assert torch.equal(weights(model)[name], w), name


def test_graphs_turned_off_run_eagerly_without_a_word(capsys):
    model = model_for("tanh", 1, 0.0, graphs=True, cuda_graphs=False)
    Counted.replays = 0
    fit(model, 3)
    assert Counted.replays == 0 and "charrnn:" not in capsys.readouterr().err


def test_each_shape_and_each_placement_of_the_parameters_gets_a_graph_of_its_own():
    """A window of another shape is captured apart; so is one after the parameters were converted
    (new storage the first graph never read); a shape seen before replays its own graph."""
    model = model_for("lstm", 1, 0.0, graphs=False).train()
    graphs = WindowGraphs(model, Counted)
    losses = {}
    for B, T in [(3, 8), (2, 5), (3, 8)]:
        x = torch.randint(0, model.hparams.vocab_size, (B, T))
        state = model.initial_state(B)
        loss, last = graphs.run(x, x, state, None)
        losses[B, T] = loss
        assert last[0].shape == (1, B, 6) and model.W_hy.grad.shape == model.W_hy.shape
    assert len(graphs.windows) == 2
    model.double()
    x = torch.randint(0, model.hparams.vocab_size, (3, 8))
    loss, _ = graphs.run(x, x, model.initial_state(3), None)
    assert len(graphs.windows) == 3 and loss.dtype == torch.float64


def test_a_replay_returns_a_loss_of_its_own_and_leaves_the_gradients_on_the_parameters():
    model = model_for("tanh", 1, 0.0, graphs=False).train()
    graphs = WindowGraphs(model, EagerReplay)
    x = torch.randint(0, model.hparams.vocab_size, (3, 8))
    first, _ = graphs.run(x, x, model.initial_state(3), None)
    grads = [p.grad.clone() for p in model.parameters()]
    second, _ = graphs.run(x.flip(1), x, model.initial_state(3), None)
    assert not torch.equal(first, second), "the first loss was not written over"
    again, _ = graphs.run(x, x, model.initial_state(3), None)
    assert torch.equal(again, first)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True)), (
        "written whole at each replay, never added to"
    )
