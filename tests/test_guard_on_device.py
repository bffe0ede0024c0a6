"""The divergence check kept on the device (a GPU's way, forced here on the CPU): a non-finite step
and every one after it change nothing, the flag is read on the steps that write metrics, at a
checkpoint and at the end, and the run stops there with the error of the first non-finite step,
holding the weights the host's check would have stopped with."""

from unittest import mock

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.errors import DivergedError
from torch_charrnn.training.callbacks import StepBar
from torch_charrnn.training.guard import GradientGuard, skips_on_found_inf, step_is_due


class Fused(CharRNN):
    """CharRNN with the fused Adagrad a GPU run gets (the CPU's default is the unfused one)."""

    def configure_optimizers(self):
        return torch.optim.Adagrad(self.parameters(), lr=self.hparams.lr, eps=self.hparams.eps, fused=True)


def data():
    return CharDataModule(max_chars=5000, batch_size=4, seq_len=16)


def train(on_device, lr, *, steps=12, every=4, clip=0.5, model_class=Fused, callbacks=(), root=None):
    """A small run whose check is on the device or on the host; the model, and the error it raised."""
    dm = data()
    torch.manual_seed(0)
    model = model_class(dm.vocab_size, 12, lr=lr, vocab=dm.vocab)
    model.guard = GradientGuard(on_device=on_device)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        log_every_n_steps=every,
        gradient_clip_val=clip,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    try:
        trainer.fit(model, dm)
    except DivergedError as error:
        return model, trainer, error
    return model, trainer, None


class Shares(L.Callback):
    """The share of steps clipped, as logged on each step that writes metrics."""

    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, *args):
        share = trainer.callback_metrics.get("grad/clipped")
        if share is not None and trainer.global_step % trainer.log_every_n_steps == 0:
            self.seen.append(float(share))


def optimizer_state(optimizer) -> dict:
    return {(i, k): v.clone() for i, s in enumerate(optimizer.state.values()) for k, v in s.items()}


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_a_finite_run_trains_the_same_with_the_check_on_the_device_as_on_the_host():
    """No bit differs: the norm, the clipping (the device multiplies by 1 where the host skips the
    multiply) and the optimizer's step with its flag down; the share clipped is logged the same."""
    runs = []
    for on_device in (False, True):
        shares = Shares()
        model, trainer, error = train(on_device, lr=0.05, every=3, clip=0.5, callbacks=[shares])
        assert error is None and model.guard.deferred is on_device and trainer.global_step == 12
        runs.append((weights(model), shares.seen))
    (host, host_shares), (device, device_shares) = runs
    for name, w in host.items():
        assert torch.equal(device[name], w), name
    assert host_shares == device_shares and len(host_shares) == 4
    assert 0 < max(host_shares) and min(host_shares) < 1, f"clipping fired on some steps: {host_shares}"


def test_a_diverging_run_stops_where_the_flag_is_read_with_the_weights_the_host_stops_with():
    """lr 1e38: step 0 moves every weight by about 1e38 and step 1's loss is not finite. The host's
    check stops at step 1; the device's makes steps 1 to 3 no-ops and stops at step 3, the first
    that writes metrics, naming step 1; both hold the weights step 0 left."""
    host, _, host_error = train(on_device=False, lr=1e38)
    assert "training diverged at step 1:" in str(host_error) and "read at" not in str(host_error)
    device, trainer, error = train(on_device=True, lr=1e38)
    assert error is not None, "the run was stopped"
    said = str(error)
    assert "training diverged at step 1:" in said and "read at step 3" in said, said
    assert "`log_every_n_steps`" in said and "lower `lr` (now 1e+38)" in said, said
    assert trainer.global_step == 3, "steps 1 and 2 ran (as no-ops) before the flag was read"
    assert int(device.guard.found_inf) == 1
    for name, w in weights(host).items():
        assert torch.isfinite(w).all(), name
        assert torch.equal(weights(device)[name], w), name


def test_no_checkpoint_is_written_after_a_divergence_the_device_has_not_reported_yet(tmp_path):
    """A checkpoint every step and metrics every 50: the checkpoint after the non-finite step reads
    the flag and stops the run; what is on disk is the last good step's, finite."""
    every_step = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True, save_top_k=0)
    _, trainer, error = train(on_device=True, lr=1e38, every=50, callbacks=[every_step], root=tmp_path)
    assert error is not None and "training diverged at step 1:" in str(error)
    assert "read at step 2" in str(error), "read when the step's checkpoint was about to be written"
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1, "the checkpoint after step 0, nothing after it"
    assert all(torch.isfinite(w).all() for w in last["state_dict"].values())


def test_an_optimizer_that_cannot_skip_a_step_keeps_the_check_on_the_host_and_says_why_once(capsys):
    _, trainer, error = train(on_device=True, lr=1e38, model_class=CharRNN)  # Adagrad, not fused
    said = capsys.readouterr().err
    assert said.count("charrnn: the divergence check reads the loss") == 1, said
    assert "Adagrad is not fused" in said and "`fused: true`" in said
    assert "training diverged at step 1:" in str(error) and "read at" not in str(error)
    assert trainer.global_step == 1, "stopped at the step itself, as on the CPU"


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adagrad"])
def test_a_set_flag_makes_the_fused_step_and_every_one_after_it_a_no_op(name):
    """The guard alone: a non-finite gradient sets the flag the optimizer reads; the parameters and
    the optimizer's state stay as they were, at that step and at a finite one after it."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    extra = {"momentum": 0.9} if name == "SGD" else {}
    optimizer = getattr(torch.optim, name)(params, lr=0.1, fused=True, **extra)
    assert skips_on_found_inf(optimizer)
    guard = GradientGuard(on_device=True)
    assert guard.start(optimizer, torch.device("cpu")) is None and guard.deferred
    for p in params:
        p.grad = torch.randn_like(p)
    guard.check(optimizer, torch.tensor(2.0), 0, None)
    optimizer.step()  # a finite step: applied
    before = weights(torch.nn.ParameterList(params))
    state = optimizer_state(optimizer)
    for step, value in [(1, float("nan")), (2, 1.0)]:
        for p in params:
            p.grad = torch.full_like(p, value)
        guard.check(optimizer, torch.tensor(2.0), step, None)
        optimizer.step()
    after = weights(torch.nn.ParameterList(params))
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(torch.equal(v, optimizer_state(optimizer)[k]) for k, v in state.items())
    assert guard.first.tolist()[0] == 1.0, "the first non-finite step is the one named"
    with pytest.raises(DivergedError, match="diverged at step 1: the loss is 2 and the gradient norm nan"):
        guard.raise_if_diverged(optimizer, 2, None)


def test_unfused_optimizers_cannot_skip_a_step_on_the_device():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert not skips_on_found_inf(torch.optim.Adam(params))
    assert not skips_on_found_inf(torch.optim.Adam(params, foreach=True))
    assert skips_on_found_inf(torch.optim.Adam(params, fused=True))


@pytest.mark.parametrize(
    ("world_size", "scaled", "said"),
    [(2, False, "no process skips a step the others take"), (1, True, "GradScaler decides")],
)
def test_several_processes_or_fp16_loss_scaling_keep_the_check_on_the_host(world_size, scaled, said):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], fused=True)
    guard = GradientGuard(on_device=True)
    line = guard.start(optimizer, torch.device("cpu"), world_size, scaled)
    assert not guard.deferred and said in line
    assert getattr(optimizer, "found_inf", None) is None, "the optimizer's flag is left alone"


class HostReads(L.Callback):
    """How many times each training step reads a tensor back to the host (``Tensor.item``, which on
    a GPU waits for the device), counted from the step's start to the next step's: Lightning's own
    work after the step's hooks included."""

    def __init__(self):
        self.reads, self.due, self._at = [], [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._at is not None:
            self.reads.append(READS[0] - self._at)
        self._at = READS[0]
        self.due.append(step_is_due(trainer))


READS = [0]


def test_a_training_step_reads_nothing_back_from_the_device_but_on_the_steps_that_write_metrics(monkeypatch):
    """With the divergence check on the device (as on a GPU), the steps between those that write
    metrics read no tensor back: not the loss for the progress bar (which Lightning turns into a
    number on every batch when it is logged with ``prog_bar``), not the check's flag."""
    item = torch.Tensor.item

    def counted(self):
        READS[0] += 1
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    reads = HostReads()
    dm = data()
    torch.manual_seed(0)
    model = Fused(dm.vocab_size, 12, lr=0.05, vocab=dm.vocab)
    model.guard = GradientGuard(on_device=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=16,
        log_every_n_steps=5,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        callbacks=[reads, StepBar(refresh_rate=1)],
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    assert len(reads.reads) == 15 and sum(reads.due[:15]) == 3  # steps 5, 10 and 15 write metrics
    quiet = [n for n, due in zip(reads.reads, reads.due, strict=False) if not due]
    assert quiet == [0] * 12, reads.reads
    assert sum(reads.reads) > 0, "the steps that write metrics do read: the count sees reads"


def test_bf16_autocast_clips_by_value_with_a_fused_optimizer():
    """Lightning refuses to clip a fused optimizer's gradients under mixed precision (it cannot
    tell a bf16 run, which has no loss scale to undo, from an fp16 one): the guard clips them."""
    dm = data()
    torch.manual_seed(0)
    model = Fused(dm.vocab_size, 12, lr=0.05, vocab=dm.vocab)
    model.guard = GradientGuard(on_device=True)
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=4,
        gradient_clip_val=1e-3,
        gradient_clip_algorithm="value",
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = weights(model)
    trainer.fit(model, dm)
    moved = max((weights(model)[n] - w).abs().max().item() for n, w in before.items())
    assert 0 < moved <= 4 * 0.05 * 1.01, "every step clipped to 1e-3 a value: Adagrad moves by lr at most"


@pytest.mark.parametrize(
    ("precision", "fused"), [("32-true", True), ("bf16-mixed", True), ("16-mixed", None)]
)
def test_a_gpu_run_steps_a_fused_adagrad_except_under_fp16s_loss_scaling(precision, fused):
    """Under fp16 Lightning unscales the gradients only for an optimizer that does not do it in its
    step: a fused one would leave them scaled for clipping and the logged norm."""
    from types import SimpleNamespace

    model = CharRNN(5, 4)
    fake = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda")), precision=precision)
    model._trainer = fake  # as a run on a GPU attaches its trainer, without one
    with mock.patch.object(CharRNN, "trainer", fake):
        optimizer = model.configure_optimizers()
    assert optimizer.defaults["fused"] is fused
