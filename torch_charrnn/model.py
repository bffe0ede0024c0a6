"""``CharRNN``: the LightningModule around the equations in ``torch_charrnn.rnn``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from torch_charrnn.corpus import encode
from torch_charrnn.errors import CharRNNError, DivergedError, require
from torch_charrnn.rnn import LN2, PARAM_NAMES, cross_entropy, rnn_forward, rnn_forward_manual
from torch_charrnn.sampling import sample_chunks, sample_text


def step_is_due(trainer: L.Trainer, every: int | None = None) -> bool:
    """Whether the training step now running is one of every ``every`` steps (default: the
    trainer's ``log_every_n_steps``, so: whether Lightning writes this step's metrics).

    Counted as Lightning counts when it decides which steps to write, ``(global_step + 1) % every``;
    valid from ``on_train_batch_start`` to ``on_before_optimizer_step``, before the step counter moves.
    """
    every = trainer.log_every_n_steps if every is None else every
    return every > 0 and (trainer.global_step + 1) % every == 0


class CharRNN(L.LightningModule):
    """A character-level vanilla tanh RNN trained with truncated BPTT, clipping and Adagrad.

    The hidden state of every stream is carried, detached, from one window to the next and reset
    to zero at the first window of each epoch (and of each evaluation). Clipping is Lightning's
    own (``Trainer(gradient_clip_val=..., gradient_clip_algorithm=...)``); this module logs the
    gradient norm before clipping and whether clipping fired.

    Args:
        vocab_size: number of distinct characters (V).
        hidden_size: number of hidden units (H).
        lr: Adagrad learning rate.
        eps: Adagrad epsilon (added outside the square root, as in torch.optim.Adagrad).
        whh_scale: W_hh starts as ``whh_scale`` times the identity.
        init_std: standard deviation of the Gaussian init of W_xh and W_hy.
        bptt: ``manual`` (the default, fast) runs the hand-written backward pass of
            ``torch_charrnn.rnn.ManualBPTT``; ``autograd`` runs the recurrence through plain
            autograd, the oracle the manual pass is tested against.
        vocab: the characters, index order; stored in checkpoints so sampling needs no corpus.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 256,
        lr: float = 0.01,
        eps: float = 1e-10,
        whh_scale: float = 0.01,
        init_std: float = 0.01,
        bptt: Literal["manual", "autograd"] = "manual",
        vocab: str | None = None,
    ):
        super().__init__()
        require(vocab_size >= 2, f"`vocab_size` must be at least 2, got {vocab_size}")
        require(hidden_size >= 1, f"`hidden_size` must be a positive integer, got {hidden_size}")
        require(lr > 0, f"`lr` must be positive, got {lr}")
        require(eps > 0, f"`eps` must be positive, got {eps}")
        require(whh_scale >= 0, f"`whh_scale` must be non-negative, got {whh_scale}")
        require(init_std >= 0, f"`init_std` must be non-negative, got {init_std}")
        require(
            vocab is None or len(vocab) == vocab_size,
            f"`vocab` has {len(vocab or '')} characters but `vocab_size` is {vocab_size}",
        )
        self.save_hyperparameters()
        V, H = vocab_size, hidden_size
        self.W_xh = nn.Parameter(torch.randn(V, H) * init_std)
        self.W_hh = nn.Parameter(torch.eye(H) * whh_scale)
        self.b_h = nn.Parameter(torch.zeros(H))
        self.W_hy = nn.Parameter(torch.randn(H, V) * init_std)
        self.b_y = nn.Parameter(torch.zeros(V))
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self._h: dict[str, Tensor | None] = {"train": None, "val": None, "test": None, "predict": None}
        self.best_val_bpc = float("inf")
        self._loss = torch.zeros(())
        self._grad_norm = torch.zeros(())
        self._clipped, self._unlogged_steps = torch.zeros(()), 0

    def params(self) -> dict[str, Tensor]:
        """The five parameters by name, in SPEC.md's order."""
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def initial_state(self, batch_size: int) -> Tensor:
        """The zero state every stream starts from, (B, H), on the parameters' device and dtype."""
        return self.W_hh.new_zeros(batch_size, self.hparams.hidden_size)

    def forward(self, inputs: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Logits (B, T, V) and the last hidden state (B, H) for a window of indices (B, T)."""
        B, T = inputs.shape
        if h0 is None:
            h0 = self.initial_state(B)
        run = rnn_forward_manual if self.hparams.bptt == "manual" else rnn_forward
        logits, hs = run(inputs, h0, *self.params().values())
        return logits, hs[:, -1]

    def carried_state(self, stage: str, batch_idx: int, batch_size: int) -> Tensor:
        """The state carried into window ``batch_idx`` of ``stage``; zeros at an epoch's start."""
        h0 = self._h[stage]
        return self.initial_state(batch_size) if batch_idx == 0 or h0 is None else h0.to(self.W_hh)

    def _shared_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> Tensor:
        inputs, targets = batch
        logits, h_last = self(inputs, self.carried_state(stage, batch_idx, inputs.shape[0]))
        self._h[stage] = h_last.detach()
        loss = cross_entropy(logits, targets)
        if stage == "train":
            self._loss = loss.detach()
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._shared_step(batch, batch_idx, "train")
        # Each self.log costs Lightning about a millisecond of Python, several per step at B=64:
        # step metrics are logged only on the steps Lightning writes anyway.
        if step_is_due(self.trainer):
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/bpc", loss / LN2)
            self.log("lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def validation_step(self, batch, batch_idx):
        self.val_loss.update(self._shared_step(batch, batch_idx, "val"))

    def test_step(self, batch, batch_idx):
        self.test_loss.update(self._shared_step(batch, batch_idx, "test"))

    def on_validation_epoch_start(self) -> None:
        self.val_loss.set_dtype(self.W_hh.dtype)  # metrics ignore .double(); keep float64 runs float64

    def on_test_epoch_start(self) -> None:
        self.test_loss.set_dtype(self.W_hh.dtype)

    def _log_eval(self, stage: str, metric: MeanMetric) -> float:
        loss = metric.compute()  # averaged over every process's windows
        metric.reset()
        # already reduced over processes by the metric; sync_dist only silences Lightning's warning
        self.log(f"{stage}/loss", loss, sync_dist=True)
        self.log(f"{stage}/bpc", loss / LN2, prog_bar=True, sync_dist=True)
        return (loss / LN2).item()

    def on_validation_epoch_end(self) -> None:
        bpc = self._log_eval("val", self.val_loss)
        if not self.trainer.sanity_checking:
            self.best_val_bpc = min(self.best_val_bpc, bpc)
            self.log("hp_metric", self.best_val_bpc)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss)

    def predict_step(self, batch, batch_idx) -> list[str]:
        """The most likely next character at every position of a window, one string per stream."""
        inputs, _ = batch
        logits, self._h["predict"] = self(inputs, self.carried_state("predict", batch_idx, inputs.shape[0]))
        return ["".join(self.hparams.vocab[i] for i in row) for row in logits.argmax(-1).tolist()]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # With the loader's position and the optimizer, this makes a resumed run continue exactly.
        checkpoint["best_val_bpc"] = self.best_val_bpc
        checkpoint["carried_state"] = None if self._h["train"] is None else self._h["train"].cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._trainer is not None and str(self.trainer.precision).startswith("64"):
            # Lightning loads the weights before its 64-bit plugin converts the module: without
            # this, float64 weights would be rounded through float32 parameters on resume.
            self.double()
        self._take_current_optimizer_settings(checkpoint)
        self.best_val_bpc = checkpoint.get("best_val_bpc", float("inf"))
        carried = checkpoint.get("carried_state")
        self._h["train"] = carried  # moved to the parameters' device and dtype at first use

    def _take_current_optimizer_settings(self, checkpoint: dict) -> None:
        """A resumed run keeps the optimizer's state (Adagrad's sums) but uses the settings it was
        given now (``lr``, ``eps``), from its next step: restoring the saved param groups as they
        are would bring the old learning rate back."""
        saved = checkpoint.get("optimizer_states") or []
        if not saved:
            return
        fresh = self.configure_optimizers()
        for state, group in zip(saved[0]["param_groups"], fresh.param_groups, strict=True):
            state.update({k: v for k, v in group.items() if k != "params"})

    def encode(self, text: str) -> Tensor:
        """Indices (1, len(text)) of ``text`` in this model's vocabulary; unknown characters are listed."""
        return encode(text, self._vocab())[None].to(self.device)

    def _vocab(self) -> str:
        if self.hparams.vocab is None:
            raise CharRNNError("this model has no vocabulary: build it with CharRNN(..., vocab=...)")
        return self.hparams.vocab

    def sample(self, length: int, prime: str = "", **kwargs) -> Iterator[list[str]]:
        """Generate ``length`` characters after ``prime``, yielding text a chunk at a time per stream;
        ``temperature``, ``top_k``, ``generator``, ``num_streams`` as in ``sampling.sample_chunks``."""
        return sample_chunks(self.params(), self._vocab(), length, prime, **kwargs)

    def sample_text(self, length: int, prime: str = "", **kwargs) -> str:
        """The ``length`` characters generated after ``prime``, as one string (see ``sample``)."""
        return sample_text(self.params(), self._vocab(), length, prime, **kwargs)

    def configure_optimizers(self):
        return torch.optim.Adagrad(self.parameters(), lr=self.hparams.lr, eps=self.hparams.eps)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop before a non-finite step is applied; log the gradient norm before clipping."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self._grad_norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(self._grad_norm + self._loss):
            raise DivergedError(
                f"training diverged at step {self.global_step}: the loss is {self._loss.item():.4g} and the "
                f"gradient norm {self._grad_norm.item():.4g}. Nothing from this step was applied or saved; "
                "resume from the last good checkpoint (--ckpt_path last) with a lower `lr` (now "
                f"{optimizer.param_groups[0]['lr']:g}) or a smaller `gradient_clip_val` (now "
                f"{self.trainer.gradient_clip_val})."
            )
        if step_is_due(self.trainer):
            self.log("grad/norm", self._grad_norm)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Log the share of steps on which clipping fired since the last logged step, then let
        Lightning clip."""
        if gradient_clip_val:
            if gradient_clip_algorithm in (None, "norm"):
                fired = gradient_clip_val / (self._grad_norm + 1e-6) < 1.0  # clip_grad_norm_'s own test
            else:
                grads = [p.grad for p in self.parameters() if p.grad is not None]
                fired = torch.stack([g.abs().max() for g in grads]).max() > gradient_clip_val
            self._clipped = self._clipped + fired  # steps clipped since the last logged step
            self._unlogged_steps += 1
            if step_is_due(self.trainer):
                self.log("grad/clipped", self._clipped.float() / self._unlogged_steps)
                self._clipped, self._unlogged_steps = torch.zeros((), device=self.device), 0
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
