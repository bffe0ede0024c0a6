"""``CharRNN``: the LightningModule around the equations in ``torch_charrnn.rnn``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from torch_charrnn.errors import CharRNNError, DivergedError, require
from torch_charrnn.rnn import LN2, PARAM_NAMES, cross_entropy, generate, rnn_forward, rnn_forward_manual


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
        require(vocab_size >= 2, f"--model.vocab_size must be at least 2, got {vocab_size}")
        require(hidden_size >= 1, f"--model.hidden_size must be a positive integer, got {hidden_size}")
        require(lr > 0, f"--model.lr must be positive, got {lr}")
        require(eps > 0, f"--model.eps must be positive, got {eps}")
        require(whh_scale >= 0, f"--model.whh_scale must be non-negative, got {whh_scale}")
        require(init_std >= 0, f"--model.init_std must be non-negative, got {init_std}")
        require(
            vocab is None or len(vocab) == vocab_size,
            f"vocab has {len(vocab or '')} characters but vocab_size is {vocab_size}",
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
        self._clipped, self._unlogged_steps = torch.zeros(()), 0

    def params(self) -> dict[str, Tensor]:
        """The five parameters by name, in SPEC.md's order."""
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def forward(self, inputs: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Logits (B, T, V) and the last hidden state (B, H) for a window of indices (B, T)."""
        B, T = inputs.shape
        if h0 is None:
            h0 = self.W_hh.new_zeros(B, self.hparams.hidden_size)
        run = rnn_forward_manual if self.hparams.bptt == "manual" else rnn_forward
        logits, hs = run(inputs, h0, *self.params().values())
        return logits, hs[:, -1]

    def carried_state(self, stage: str, batch_idx: int) -> Tensor | None:
        """The state carried into window ``batch_idx`` of ``stage``; None (zeros) at an epoch's start."""
        h0 = self._h[stage]
        return None if batch_idx == 0 or h0 is None else h0.to(self.W_hh)

    def _shared_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> Tensor:
        inputs, targets = batch
        logits, h_last = self(inputs, self.carried_state(stage, batch_idx))
        self._h[stage] = h_last.detach()
        loss = cross_entropy(logits, targets)
        if stage == "train":
            self._loss = loss.detach()
        return loss

    def _logging_step(self) -> bool:
        """Whether Lightning writes this step's metrics (every ``Trainer(log_every_n_steps)``).

        Each ``self.log`` call costs Lightning about a millisecond of Python, several per step at
        B=64, so step metrics are only logged on the steps that are written anyway.
        """
        n = self.trainer.log_every_n_steps
        return n > 0 and (self.global_step + 1) % n == 0

    def training_step(self, batch, batch_idx):
        loss = self._shared_step(batch, batch_idx, "train")
        if self._logging_step():
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
        logits, self._h["predict"] = self(inputs, self.carried_state("predict", batch_idx))
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
        self.best_val_bpc = checkpoint.get("best_val_bpc", float("inf"))
        carried = checkpoint.get("carried_state")
        self._h["train"] = carried  # moved to the parameters' device and dtype at first use

    def encode(self, text: str) -> Tensor:
        """Indices (1, len(text)) of ``text`` in this model's vocabulary; unknown characters are listed."""
        vocab = self.hparams.vocab
        if vocab is None:
            raise CharRNNError("this model has no vocabulary: build it with CharRNN(..., vocab=...)")
        index = {c: i for i, c in enumerate(vocab)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            raise CharRNNError(f"characters not in the model's vocabulary: {unknown}")
        return torch.tensor([[index[c] for c in text]], device=self.device)

    @torch.no_grad()
    def sample(
        self,
        length: int,
        prime: str = "",
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        num_streams: int = 1,
    ) -> Iterator[list[str]]:
        """Generate ``length`` characters after ``prime``, yielding text a chunk at a time per stream.

        The hidden state is warmed up on the prime; with no prime, generation starts from a
        newline (or the first character of the vocabulary if it has no newline).
        """
        vocab = self.hparams.vocab
        if not prime:
            prime = "\n" if "\n" in (vocab or "") else (vocab or "")[:1]
        ids = self.encode(prime).expand(num_streams, -1)  # (B, P); encode checks the vocabulary
        h = self.W_hh.new_zeros(num_streams, self.hparams.hidden_size)
        if ids.shape[1] > 1:
            h = rnn_forward(ids[:, :-1], h, *self.params().values())[1][:, -1]  # warm up on the prime
        for chunk in generate(self.params(), h, ids[:, -1], length, generator, temperature, top_k):
            yield ["".join(vocab[i] for i in row) for row in chunk.tolist()]

    def configure_optimizers(self):
        return torch.optim.Adagrad(self.parameters(), lr=self.hparams.lr, eps=self.hparams.eps)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Log the gradient norm before clipping and the share of steps on which clipping fired since
        the last logged step, then let Lightning clip."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(norm + self._loss):  # before the optimizer step: no weight turns non-finite
            raise DivergedError(
                f"training diverged at step {self.global_step}: the loss is {self._loss.item():.4g} and the "
                f"gradient norm {norm.item():.4g}. Nothing from this step was applied or saved; resume from "
                "the last good checkpoint (--ckpt_path last) with a lower --model.lr (now "
                f"{self.hparams.lr:g}) or a smaller --trainer.gradient_clip_val (now {gradient_clip_val})."
            )
        if gradient_clip_val:
            if gradient_clip_algorithm in (None, "norm"):
                fired = gradient_clip_val / (norm + 1e-6) < 1.0  # clip_grad_norm_'s own test
            else:
                fired = torch.stack([g.abs().max() for g in grads]).max() > gradient_clip_val
            self._clipped = self._clipped + fired  # steps clipped since the last logged step
            self._unlogged_steps += 1
        if self._logging_step():
            self.log("grad/norm", norm)
            if gradient_clip_val:
                self.log("grad/clipped", self._clipped.float() / self._unlogged_steps)
                self._clipped, self._unlogged_steps = torch.zeros((), device=self.device), 0
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
