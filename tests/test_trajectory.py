"""Whole training runs: Lightning Trainer.fit against the NumPy training loop, step for step."""

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CELLS, FUSED_CELLS, model_from_numpy
from hypothesis import example, given
from hypothesis import strategies as st

import reference_numpy as rn
from torch_charrnn import CharDataModule
from torch_charrnn.rnn.backends import BACKENDS
from torch_charrnn.training.guard import GradientGuard

# At lr 0.1 this small model is chaotic: Adagrad turns rounding-level gradient differences into
# full-size steps and two correct implementations drift apart by 1e-4 within 50 steps (measured).
# At lr 0.01 they stay within 1e-15, so any real difference shows.
B, T, STEPS, LR, EPS = 4, 16, 50, 0.01, 1e-10


class RecordClipping(L.Callback):
    """Collects what CharRNN logged about clipping at every step."""

    def __init__(self):
        self.clipped, self.norms = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clipped.append(bool(trainer.callback_metrics["grad/clipped"]))
        self.norms.append(float(trainer.callback_metrics["grad/norm"]))


def fit_lightning(params, text, clip_val, clip_algorithm, cell, optimizers=None, **model_kwargs):
    """Train a float64 CharRNN holding ``params`` for STEPS steps; ``optimizers(model)`` replaces its
    configure_optimizers (as LightningCLI's --optimizer/--lr_scheduler do)."""
    data = CharDataModule(text=text, batch_size=B, seq_len=T, val_fraction=0.0, test_fraction=0.0)
    model = model_from_numpy(params, cell, lr=LR, eps=EPS, vocab=data.vocab, **model_kwargs)
    if optimizers is not None:
        model.configure_optimizers = lambda: optimizers(model)
    record = RecordClipping()
    trainer = L.Trainer(
        accelerator="cpu",
        precision="64-true",
        max_steps=STEPS,
        gradient_clip_val=clip_val,
        gradient_clip_algorithm=clip_algorithm,
        limit_val_batches=0,
        log_every_n_steps=1,  # grad/clipped is then this step's 0 or 1
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return model, record, trainer


# Every registered cell through every registered backend it has (fused needs PyTorch's module of
# the cell), at one layer clipped by norm and at two layers clipped by value: a new cell or backend
# is picked up here without editing the list.
TRAJECTORIES = [
    (cell, L, bptt, clip)
    for cell in CELLS
    for bptt in BACKENDS
    if bptt != "fused" or cell in FUSED_CELLS
    for L, clip in ((1, "norm"), (2, "value"))
] + [("tanh", 1, "manual", "value"), ("lstm", 2, "manual", "norm")]


@pytest.mark.parametrize(("cell", "L", "bptt", "clip_algorithm"), TRAJECTORIES)
def test_training_trajectory_matches_numpy(small_text, cell, L, bptt, clip_algorithm):
    vocab = rn.build_vocab(small_text)
    data = rn.encode(small_text, vocab)
    init = rn.init_params(len(vocab), 32, np.random.default_rng(0), cell, L, whh_scale=0.9, init_std=0.1)
    assert STEPS > rn.num_windows(rn.make_streams(data, B), T), "the run must cross an epoch boundary"

    # A clip value between the smallest and largest unclipped gradient so it fires on some steps only.
    dry = rn.train(rn.cast(init, np.float64), data, B, T, STEPS, LR, EPS, clip_val=None, cell=cell)
    scale = np.array(dry.grad_norm) if clip_algorithm == "norm" else np.array(dry.grad_norm) / 8
    clip_val = float(np.median(scale))

    params = rn.cast(init, np.float64)
    log = rn.train(params, data, B, T, STEPS, LR, EPS, clip_val, clip_algorithm, cell)
    model, record, _ = fit_lightning(init, small_text, clip_val, clip_algorithm, cell, bptt=bptt)

    assert any(log.clipped) and not all(log.clipped), "clipping must fire on some steps and not on others"
    assert record.clipped == log.clipped
    np.testing.assert_allclose(record.norms, log.grad_norm, rtol=1e-9)
    mine = dict(model.named_parameters())
    # Adagrad's first steps are lr * sign(g) for every weight, so a near-zero gradient that two
    # correct implementations round differently moves its weight differently; under a second
    # layer such gradients occur (measured: 7e-12 apart after 50 steps, alike on both torch paths).
    atol = 1e-12 if L == 1 else 1e-10
    for name, value in rn.named_arrays(params).items():
        torch.testing.assert_close(
            mine[name].detach(),
            torch.from_numpy(value),
            rtol=1e-9,
            atol=atol,
            msg=lambda m, n=name: f"{n}: {m}",
        )
    moved = rn.named_arrays(params)["layers.0.W_hh"] - rn.named_arrays(init)["layers.0.W_hh"]
    assert np.abs(moved).max() > 1e-3, "training must move the parameters"


def test_training_trajectory_with_adam_and_a_schedule_matches_numpy(small_text):
    """Adam with a warmup-cosine schedule stepped every step (what `charrnn fit --optimizer Adam
    --lr_scheduler torch_charrnn.training.schedules.WarmupCosine` builds) against NumPy's Adam and
    schedule."""
    from torch_charrnn.cli.fit import CharRNNCLI
    from torch_charrnn.training.schedules import WarmupCosine

    vocab = rn.build_vocab(small_text)
    data = rn.encode(small_text, vocab)
    init = rn.init_params(len(vocab), 32, np.random.default_rng(0), "lstm", 1, init_std=0.1)
    lr, total, warmup = 3e-3, 40, 5

    def schedule(step):
        return rn.warmup_cosine(step, total, warmup)

    def adam(params, grads, state, step_lr):
        rn.adam_step(params, grads, state, step_lr)

    kwargs = {"cell": "lstm", "optimizer": adam, "schedule": schedule}
    dry = rn.train(rn.cast(init, np.float64), data, B, T, STEPS, lr, clip_val=None, **kwargs)
    clip_val = float(np.median(dry.grad_norm))  # so that clipping fires on some steps only
    params = rn.cast(init, np.float64)
    log = rn.train(params, data, B, T, STEPS, lr, clip_val=clip_val, **kwargs)

    def optimizers(model):
        opt = torch.optim.Adam([*model.layers.parameters(), model.W_hy, model.b_y], lr=lr)
        return CharRNNCLI.configure_optimizers(model, opt, WarmupCosine(opt, total, warmup))

    model, record, trainer = fit_lightning(init, small_text, clip_val, "norm", "lstm", optimizers)
    assert any(log.clipped) and not all(log.clipped), "clipping must fire on some steps and not on others"
    assert record.clipped == log.clipped
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == STEPS
    mine = dict(model.named_parameters())
    for name, value in rn.named_arrays(params).items():
        torch.testing.assert_close(
            mine[name].detach(), torch.from_numpy(value), rtol=1e-9, atol=1e-12, msg=name
        )


@given(
    coef=st.floats(0.25, 4.0), dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 999)
)
@example(coef=1.0, dtype=torch.float32, seed=1)  # at 1 exactly, where float32 rounds it to 0.99999994
@example(coef=1.0 - 1e-7, dtype=torch.float32, seed=0)
@example(coef=1.0 + 1e-7, dtype=torch.float32, seed=2)
@example(coef=1.0 + 2e-6, dtype=torch.float32, seed=3)  # past the margin: the multiply by one is skipped
@example(coef=1.0 - 2e-6, dtype=torch.float64, seed=4)
def test_clipping_by_norm_equals_clip_grad_norm_to_the_bit(coef, dtype, seed):
    """CharRNN's clipping (the norm its check took, the multiply by one skipped where nothing is
    clipped) leaves every gradient as clip_grad_norm_ does, bit for bit, on both sides of the
    threshold and at it; ``coef`` is clip_grad_norm_'s coefficient max_norm / (norm + 1e-6)."""
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(shape, generator=g, dtype=dtype) for shape in [(5, 3), (3, 3), (3,), (3, 5), (5,)]]
    ours, theirs = ([torch.nn.Parameter(torch.zeros_like(x)) for x in grads] for _ in range(2))
    for a, b, x in zip(ours, theirs, grads, strict=True):
        a.grad, b.grad = x.clone(), x.clone()
    norm = float(torch.nn.utils.get_total_norm(grads))
    max_norm = coef * (norm + 1e-6)

    torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    optimizer = torch.optim.SGD(ours, lr=0.1)
    guard = GradientGuard()
    guard.check(optimizer, torch.tensor(1.0), 0, max_norm)
    module = SimpleNamespace(trainer=SimpleNamespace(log_every_n_steps=1, global_step=0))
    share = guard.clip(module, optimizer, max_norm, "norm")

    if abs(coef - 1.0) > 1e-9:  # counted as clipped where it applied (at 1, a rounding decides)
        assert share == float(coef < 1.0)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.grad, b.grad)


def test_clipping_changes_the_trajectory(small_text):
    """Without clipping the NumPy run ends elsewhere, so the match above depends on Lightning clipping."""
    vocab = rn.build_vocab(small_text)
    data = rn.encode(small_text, vocab)
    init = rn.init_params(len(vocab), 32, np.random.default_rng(0), whh_scale=0.9, init_std=0.1)
    clipped, free = rn.cast(init, np.float64), rn.cast(init, np.float64)
    log = rn.train(clipped, data, B, T, STEPS, LR, EPS, clip_val=0.05)
    rn.train(free, data, B, T, STEPS, LR, EPS, clip_val=None)
    assert any(log.clipped)
    assert np.abs(clipped["W_hy"] - free["W_hy"]).max() > 1e-6
