"""``CharRNN``: the LightningModule around the cells in ``torch_charrnn/rnn/cells`` and the BPTT in
``torch_charrnn/rnn/bptt.py``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from torch_charrnn.data.encoded import decode
from torch_charrnn.errors import CharRNNError, require
from torch_charrnn.inference.checkpoint import upgrade_checkpoint
from torch_charrnn.inference.sampling import sample_chunks, sample_text
from torch_charrnn.rnn.backends import BACKENDS
from torch_charrnn.rnn.bptt import LN2, cross_entropy, dropout_masks, zoneout_masks
from torch_charrnn.rnn.cells import CELLS, cell_options, get_cell
from torch_charrnn.rnn.fused import FUSED_ZONEOUT
from torch_charrnn.rnn.memory import parameter_count, require_memory
from torch_charrnn.training.graphs import WindowGraphs, window_graphs
from torch_charrnn.training.guard import GradientGuard, scales_loss, step_is_due
from torch_charrnn.training.optimizer_state import take_current_optimizer_settings


def detach_state(state: tuple[Tensor, ...] | None) -> tuple[Tensor, ...] | None:
    """The carried state, cut from the graph of the window that produced it (a tuple or None)."""
    return None if state is None else tuple(s.detach() for s in state)


def own_streams(state: tuple[Tensor, ...] | None, trainer) -> tuple[Tensor, ...] | None:
    """This process's share of a checkpoint's carried state of every global stream (L, W*B, H):
    rank r's streams are the r-th of W equal blocks, as the data module deals them out."""
    if state is None or trainer is None or trainer.world_size == 1:
        return state
    W = trainer.world_size
    if state[0].shape[1] % W:  # written by a run of another size: its streams are not these
        return None
    return tuple(s.chunk(W, dim=1)[trainer.global_rank].clone() for s in state)


class Layer(nn.Module):
    """One recurrent layer's parameters (``W_xh``, ``W_hh``, ``b_h`` and whatever its cell adds),
    registered under the names of the equations so the state dict reads ``layers.{l}.W_xh``."""

    def __init__(self, tensors: dict[str, Tensor]):
        super().__init__()
        for name, value in tensors.items():
            self.register_parameter(name, nn.Parameter(value))

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.named_parameters())


class CharRNN(L.LightningModule):
    """A character-level RNN (tanh, GRU, LSTM or layer-normalised cells, stacked) trained with truncated
    BPTT, clipping and Adagrad.

    The state of every stream is carried, detached, from one window to the next and reset to zero
    at the first window of each epoch (and of each evaluation). Clipping is set as Lightning's
    (``Trainer(gradient_clip_val=..., gradient_clip_algorithm=...)``) and done in Lightning's
    ``configure_gradient_clipping`` hook with the norm the divergence check already took
    (``training/guard.py``); the gradient norm before clipping and the share of steps clipped are
    logged.

    Args:
        vocab_size: number of distinct characters (V).
        hidden_size: number of hidden units of every layer (H).
        cell: the recurrent cell, a name in ``torch_charrnn.rnn.cells.CELLS``: ``tanh``, ``gru``, ``lstm``;
            ``self.cell`` is the cell itself.
        num_layers: layers stacked (L); layer l > 0 reads layer l - 1's h at the same step.
        lr: Adagrad learning rate.
        eps: Adagrad epsilon (added outside the square root, as in torch.optim.Adagrad).
        whh_scale: the tanh cell's W_hh starts as ``whh_scale`` times the identity (a tanh option).
        init_std: standard deviation of the Gaussian init of W_hy and of the tanh cell's first W_xh.
        forget_bias: added to the LSTM's forget-gate bias at initialisation (an LSTM option).
        input_std: when set, layer 0's W_xh (the characters' rows, its input) starts as
            N(0, input_std^2) instead of the cell's own init, for every cell. A one-hot input
            gives each character one row; a larger start (about 1 to 2) lets the characters speak
            louder than PyTorch's U(-1/sqrt(H), 1/sqrt(H)), as an ``nn.Embedding``'s N(0, 1)
            before ``nn.LSTM`` does, and the model learns faster per step
            (``benchmarks/init_sweep.py --input-std``).
        dropout: inverted dropout's probability p on the h each layer passes on (to the layer
            above, and from the top layer to the output layer), in training only; the recurrence
            is never dropped. 0 (the default) leaves the model as it was, bit for bit. The masks
            are drawn once a window from the model's own generator, whose state checkpoints keep.
        zoneout: zoneout's probability p on h, for every cell: in training each unit of each
            stream keeps its previous h with probability p at each step (the zoned h is what the
            layer passes on and carries); in evaluation, sampling, scoring and export h moves by
            the expectation, p h_{t-1} + (1 - p) h_t. Masks as dropout's, drawn after them. 0 (the
            default) leaves the model as it was, bit for bit.
        zoneout_c: the same for c, in the cells that carry one (lstm, lnlstm).
        bptt: ``manual`` (the default) runs the hand-written backward pass of
            ``torch_charrnn.rnn.bptt.ManualBPTT``; ``autograd`` lets autograd differentiate the same
            cell steps, the oracle the manual pass is tested against; ``fused`` runs PyTorch's own
            nn.RNN/nn.GRU/nn.LSTM kernels (cuDNN on a GPU) on the same parameters
            (``torch_charrnn.rnn.fused``).
        cuda_graphs: on a CUDA device with ``bptt`` manual, each training window's forward and
            backward are captured once per shape as a CUDA graph and replayed
            (``torch_charrnn/training/graphs.py``), with the same numbers as launching them one by
            one; False launches them one by one. Elsewhere it changes nothing.
        compile_steps: in those graphs, each cell step's elementwise work, forward and backward, is
            compiled into a few fused kernels (``torch_charrnn/rnn/compiled.py``; Triton on a
            GPU), equal to the eager step to rounding. Off by default until measured on a GPU;
            where inductor cannot compile, one line says so and the eager kernels are replayed.
        vocab: the characters, index order; stored in checkpoints so sampling needs no corpus.
        unit: what a symbol is, from the data: ``chars`` or ``bytes`` (then ``vocab`` holds byte
            values as latin-1 characters, and text in and out is UTF-8).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 256,
        cell: str = "tanh",
        num_layers: int = 1,
        lr: float = 0.01,
        eps: float = 1e-10,
        whh_scale: float = 0.01,
        init_std: float = 0.01,
        forget_bias: float = 0.0,
        input_std: float | None = None,
        dropout: float = 0.0,
        zoneout: float = 0.0,
        zoneout_c: float = 0.0,
        bptt: Literal["manual", "autograd", "fused"] = "manual",
        cuda_graphs: bool = True,
        compile_steps: bool = False,
        vocab: str | None = None,
        unit: Literal["chars", "bytes"] = "chars",
    ):
        super().__init__()
        require(vocab_size >= 2, f"`vocab_size` must be at least 2, got {vocab_size}")
        require(hidden_size >= 1, f"`hidden_size` must be a positive integer, got {hidden_size}")
        require(cell in CELLS, f"`cell` must be one of {', '.join(CELLS)}, got {cell!r}")
        require(num_layers >= 1, f"`num_layers` must be a positive integer, got {num_layers}")
        require(lr > 0, f"`lr` must be positive, got {lr}")
        require(eps > 0, f"`eps` must be positive, got {eps}")
        require(whh_scale >= 0, f"`whh_scale` must be non-negative, got {whh_scale}")
        require(init_std >= 0, f"`init_std` must be non-negative, got {init_std}")
        require(input_std is None or input_std >= 0, f"`input_std` must be non-negative, got {input_std}")
        require(0 <= dropout < 1, f"`dropout` must be in [0, 1), got {dropout}")
        require(
            dropout == 0 or bptt != "fused",
            "`dropout` above 0 needs `bptt` manual or autograd: fused runs PyTorch's own kernels, "
            "which draw masks of their own",
        )
        require(0 <= zoneout < 1, f"`zoneout` must be in [0, 1), got {zoneout}")
        require(0 <= zoneout_c < 1, f"`zoneout_c` must be in [0, 1), got {zoneout_c}")
        require(zoneout == zoneout_c == 0 or bptt != "fused", FUSED_ZONEOUT)
        require(
            zoneout_c == 0 or "c" in CELLS[cell].STATE,
            f"`zoneout_c` zones out c, and the {cell} cell carries none: use `zoneout` (for h), or "
            f"a cell that carries c ({', '.join(n for n, c in CELLS.items() if 'c' in c.STATE)})",
        )
        require(
            vocab is None or len(vocab) == vocab_size,
            f"`vocab` has {len(vocab or '')} characters but `vocab_size` is {vocab_size}",
        )
        self.save_hyperparameters()
        V, H = vocab_size, hidden_size
        self.cell = get_cell(cell).zoned(h=zoneout, c=zoneout_c)  # resolved once: what the math is handed
        require(
            bptt != "fused" or self.cell.FUSED is not None,
            f"`bptt` fused runs PyTorch's own module for the cell, and the {cell} cell has none (its "
            "FUSED): use `bptt` manual or autograd",
        )
        options = cell_options(self.cell, whh_scale=whh_scale, init_std=init_std, forget_bias=forget_bias)
        P = parameter_count(self.cell, V, H, num_layers)  # counted, not allocated: first, the room for them
        require_memory(
            4 * P, torch.device("cpu"), f"the model's {P:,} parameters", "`hidden_size` or `num_layers`"
        )
        self.layers = nn.ModuleList(  # drawn from torch's global generator (torch.manual_seed)
            Layer(self.cell.init(V if l == 0 else H, H, None, first_layer=l == 0, **options))
            for l in range(num_layers)
        )
        if input_std is not None:
            with torch.no_grad():
                self.layers[0].W_xh.normal_(0.0, input_std)
        self.W_hy = nn.Parameter(torch.randn(H, V) * init_std)
        self.b_y = nn.Parameter(torch.zeros(V))
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self._state: dict[str, tuple[Tensor, ...] | None] = dict.fromkeys(("train", "val", "test", "predict"))
        self.best_val_bpc = float("inf")
        self._loss = torch.zeros(())
        self._last_step = (-1, True)  # the last training step run, and whether its metrics were written
        self.guard = GradientGuard()
        # Dropout's and zoneout's masks come from a generator of the model's own, seeded from
        # torch's global one (torch.manual_seed decides it) after the weights, and only with
        # either: p = 0 draws nothing.
        self.dropout_generator = torch.Generator()
        if dropout > 0 or self.cell.zoneout:
            self.dropout_generator.manual_seed(int(torch.randint(2**62, ())))
        # On a GPU they are drawn there, by a generator on the device seeded from that one (drawing
        # on the CPU and copying would wait for the device every window); a checkpoint keeps both.
        self._device_generator: torch.Generator | None = None
        self._device_generator_state: tuple[str, Tensor] | None = None  # read from a checkpoint
        self.graphs: WindowGraphs | None = None  # this run's CUDA graphs (``on_train_start``)

    def weights(self) -> dict:
        """The parameters as ``{"layers": [{"W_xh", "W_hh", "b_h", ...}, ...], "W_hy", "b_y"}``,
        the structure of ``reference_numpy`` and of ``torch_charrnn.rnn.bptt``."""
        return {"layers": [layer.tensors() for layer in self.layers], "W_hy": self.W_hy, "b_y": self.b_y}

    def initial_state(self, batch_size: int) -> tuple[Tensor, ...]:
        """The zero state every stream starts from: a tuple of (L, B, H), one per name in the cell's STATE."""
        L, H = self.hparams.num_layers, self.hparams.hidden_size
        return tuple(self.W_hy.new_zeros(L, batch_size, H) for _ in self.cell.STATE)

    def __setattr__(self, name: str, value) -> None:
        # Lightning names the hook it is in on the module, 44 times a training step. nn.Module's
        # __setattr__ checks each write against its parameters, buffers and submodules, a few
        # microseconds apiece; this name is a plain string attribute, never one of those.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, inputs: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple]:
        """Logits (B, T, V) and the last state (a tuple of (L, B, H)) for a window of indices (B, T)."""
        B, T = inputs.shape
        if state is None:
            state = self.initial_state(B)
        run = BACKENDS[self.hparams.bptt]
        w = self.weights()
        return run(inputs, state, w["layers"], w["W_hy"], w["b_y"], self.cell, *self.masks(B, T))

    def masks(self, B: int, T: int) -> tuple[list | None, list | None]:
        """Dropout's and zoneout's masks for a window of B streams and T steps, drawn from the
        model's own generator in that order: one (T, B, H) per layer for dropout, one tuple like
        the state per layer for zoneout (``bptt.zoneout_masks``); each None in evaluation or
        without it (in evaluation dropout is the identity and zoneout its expectation, the cell's)."""
        if not self.training:
            return None, None
        shape, L = (T, B, self.hparams.hidden_size), self.hparams.num_layers
        p, rates = self.hparams.dropout, self.cell.zoneout
        dropout = dropout_masks(p, shape, L, self.mask_generator(), self.W_hy) if p > 0 else None
        zones = zoneout_masks(rates, shape, L, self.mask_generator(), self.W_hy) if rates else None
        return dropout, zones

    def mask_generator(self) -> torch.Generator:
        """The generator dropout's masks are drawn from: the model's own, or on a GPU one on the
        device, seeded from it at its first draw (or restored from a checkpoint)."""
        device = self.W_hy.device
        if device.type == "cpu":
            return self.dropout_generator
        g = self._device_generator
        if g is None or g.device != device:
            g = self._device_generator = torch.Generator(device)
            saved = self._device_generator_state
            if saved is not None and saved[0] == device.type:
                g.set_state(saved[1])
            else:
                g.manual_seed(int(torch.randint(2**62, (), generator=self.dropout_generator)))
        return g

    def carried_state(self, stage: str, batch_idx: int, batch_size: int) -> tuple[Tensor, ...]:
        """The state carried into window ``batch_idx`` of ``stage``; zeros at an epoch's start."""
        state = self._state[stage]
        if batch_idx == 0 or state is None:
            return self.initial_state(batch_size)
        return tuple(s.to(self.W_hy) for s in state)

    def _shared_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> Tensor:
        inputs, targets = batch
        state = self.carried_state(stage, batch_idx, inputs.shape[0])
        if stage == "train" and self.graphs is not None:  # forward and backward, replayed
            loss, state = self.graphs.run(inputs, targets, state, *self.masks(*inputs.shape))
        else:
            logits, state = self(inputs, state)
            loss = cross_entropy(logits, targets)
        self._state[stage] = detach_state(state)
        if stage == "train":
            self._loss = loss.detach()
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._shared_step(batch, batch_idx, "train")
        # Each self.log costs Lightning about a millisecond of Python, several per step at B=64:
        # step metrics are logged only on the steps Lightning writes anyway.
        due = step_is_due(self.trainer)
        self._last_step = (self.trainer.global_step, due)
        if due:
            # not prog_bar: Lightning turns progress-bar metrics into numbers after every batch, the
            # last logged one again on the steps between, which on a GPU waits for the device;
            # the bar (``callbacks.StepBar``) reads the loss itself, on these steps only
            self.log("train/loss", loss)
            self.log("train/bpc", loss / LN2)
            self.log("lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_train_start(self) -> None:
        """Whether training windows replay as CUDA graphs, and where the divergence check reads its
        numbers (``GradientGuard.start``); on a GPU, where either cannot be as it should, one line
        says why."""
        self.graphs, said = window_graphs(self, self.trainer)
        if self.trainer.optimizers:
            optimizer, world = self.trainer.optimizers[0], self.trainer.world_size
            said.append(self.guard.start(optimizer, self.device, world, scales_loss(self.trainer)))
        for line in filter(None, said):
            if self.trainer.is_global_zero:
                print(f"charrnn: {line}", file=sys.stderr)

    def backward(self, loss: Tensor, *args, **kwargs) -> None:
        """Lightning's, except after a replayed window: its graph has written the gradients."""
        if self.graphs is None:
            super().backward(loss, *args, **kwargs)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        """Lightning's, except where windows replay: each replay writes the gradients whole, into
        buffers of its graph that must stay where they are."""
        if self.graphs is None:
            optimizer.zero_grad()

    def _raise_if_diverged(self) -> None:
        """Stop with the divergence error if a step since the last read was not finite (on a GPU
        the check's flag stays on the device until it is read here)."""
        if self._trainer is not None and self.trainer.optimizers:
            optimizer = self.trainer.optimizers[0]
            self.guard.raise_if_diverged(optimizer, self.global_step, self.trainer.gradient_clip_val)

    def on_train_end(self) -> None:
        """Write the last step's training loss when it was not a written step: a run shorter than
        ``log_every_n_steps`` would otherwise draw no training curve at all. (Lightning takes no
        ``self.log`` here: straight to the loggers, at that step.)"""
        self.graphs = None  # the graphs' memory goes back to the allocator
        self._raise_if_diverged()
        step, written = self._last_step
        if written or step < 0:
            return
        loss = self._loss.item()
        for logger in self.trainer.loggers:
            logger.log_metrics({"train/loss": loss, "train/bpc": loss / LN2}, step=step)
            logger.save()

    def validation_step(self, batch, batch_idx):
        self.val_loss.update(self._shared_step(batch, batch_idx, "val"))

    def test_step(self, batch, batch_idx):
        self.test_loss.update(self._shared_step(batch, batch_idx, "test"))

    def on_validation_epoch_start(self) -> None:
        self.val_loss.set_dtype(self.W_hy.dtype)  # metrics ignore .double(); keep float64 runs float64

    def on_test_epoch_start(self) -> None:
        self.test_loss.set_dtype(self.W_hy.dtype)

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
            self.log("hp_metric", self.best_val_bpc, sync_dist=True)  # the same in every process, as above

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss)

    def predict_step(self, batch, batch_idx) -> list[str]:
        """The most likely next character at every position of a window, one string per stream."""
        inputs, _ = batch
        logits, state = self(inputs, self.carried_state("predict", batch_idx, inputs.shape[0]))
        self._state["predict"] = detach_state(state)
        return [decode(row, self._vocab(), self.hparams.unit) for row in logits.argmax(-1)]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._raise_if_diverged()  # nothing is saved after a divergence
        # With the loader's position and the optimizer, this makes a resumed run continue exactly.
        checkpoint["best_val_bpc"] = self.best_val_bpc
        carried = self._state["train"]
        if carried is not None and self._trainer is not None and self.trainer.world_size > 1:
            # Every process writes its dict (rank 0 saves it): all of them, the global streams in
            # rank order, so that a resumed run gives each process its own streams' state again.
            carried = tuple(torch.cat(self.all_gather(s).unbind(0), dim=1) for s in carried)  # (L, W*B, H)
        checkpoint["carried_state"] = None if carried is None else tuple(s.cpu() for s in carried)
        checkpoint["dropout_generator"] = self.dropout_generator.get_state()  # the masks still to come
        if self._device_generator is not None:  # a GPU's, whose masks those are
            device = self._device_generator.device.type
            checkpoint["dropout_generator_device"] = (device, self._device_generator.get_state())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        upgrade_checkpoint(checkpoint)  # one written before cells existed: flat W_xh ... b_y
        if self._trainer is not None and str(self.trainer.precision).startswith("64"):
            # Lightning loads the weights before its 64-bit plugin converts the module: without
            # this, float64 weights would be rounded through float32 parameters on resume.
            self.double()
        fresh = self.configure_optimizers()  # an optimizer, or LightningCLI's dict with a schedule
        take_current_optimizer_settings(checkpoint, fresh["optimizer"] if isinstance(fresh, dict) else fresh)
        self.best_val_bpc = checkpoint.get("best_val_bpc", float("inf"))
        self._state["train"] = own_streams(
            checkpoint.get("carried_state"), self._trainer
        )  # moved at first use
        if "dropout_generator" in checkpoint:
            self.dropout_generator.set_state(checkpoint["dropout_generator"])
        self._device_generator = None  # made again at the first draw, from the state saved here
        self._device_generator_state = checkpoint.get("dropout_generator_device")

    def _vocab(self) -> str:
        if self.hparams.vocab is None:
            raise CharRNNError("this model has no vocabulary: build it with CharRNN(..., vocab=...)")
        return self.hparams.vocab

    def sample(self, length: int, prime: str = "", **kwargs) -> Iterator[list[str]]:
        """Generate ``length`` characters after ``prime``, yielding text a chunk at a time per stream;
        ``temperature``, ``top_k``, ``generator``, ``num_streams`` as in ``sampling.sample_chunks``."""
        kwargs.setdefault("unit", self.hparams.unit)
        return sample_chunks(self.weights(), self.cell, self._vocab(), length, prime, **kwargs)

    def sample_text(self, length: int, prime: str = "", **kwargs) -> str:
        """The ``length`` characters generated after ``prime``, as one string (see ``sample``)."""
        kwargs.setdefault("unit", self.hparams.unit)
        return sample_text(self.weights(), self.cell, self._vocab(), length, prime, **kwargs)

    def configure_optimizers(self):
        # In the model's order, layers then output, as release 0.1 had them: its Adagrad state resumes.
        params = [*self.layers.parameters(), self.W_hy, self.b_y]
        # On a GPU the fused step, which can skip a non-finite step on the device (training/guard.py);
        # the device the run trains on, also when a checkpoint is read before the model moves there.
        # Not under fp16's loss scaling: Lightning leaves a fused optimizer's gradients scaled (the
        # optimizer unscales them in its step), and clipping and the logged norm would see them so.
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        scaled = self._trainer is not None and scales_loss(self.trainer)
        fused = True if device.type == "cuda" and not scaled else None
        return torch.optim.Adagrad(params, lr=self.hparams.lr, eps=self.hparams.eps, fused=fused)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop before a non-finite step is applied (on a GPU: make it a no-op, and stop on the next
        step that writes metrics); log the gradient norm before clipping."""
        norm = self.guard.check(optimizer, self._loss, self.global_step, self.trainer.gradient_clip_val)
        if step_is_due(self.trainer):
            self._raise_if_diverged()
            self.log("grad/norm", norm)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip with the norm ``on_before_optimizer_step`` took (one pass over the gradients a step,
        not two), and log the share of steps clipped since the last logged step."""
        if not gradient_clip_val:
            return
        share = self.guard.clip(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
        if share is not None:
            self.log("grad/clipped", share)
