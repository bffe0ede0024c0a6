"""What the TensorBoard run shows beyond the losses: speed, samples, histograms, and the gradient
through time (the vanishing/exploding gradient the tutorial only talks about)."""

from __future__ import annotations

import logging
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from torch_charrnn.rnn.diagnostics import SATURATED, hidden_gradients
from torch_charrnn.rnn.memory import Footprint, footprint, require_memory
from torch_charrnn.training.guard import step_is_due

log = logging.getLogger("torch_charrnn")
STAT_TAGS = {"saturation": "gates/{}_saturation", "mean": "gates/{}_mean", "norm": "hidden/{}_norm"}


def _writer(trainer: L.Trainer):
    """The TensorBoard SummaryWriter, or None when no TensorBoardLogger is attached."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class StepBar(TQDMProgressBar):
    """Lightning's progress bar, whose figures (the training loss: on a GPU, a wait for the device
    each time they are read) are read on the training steps that write metrics; on the steps
    between, the bar moves on and shows those figures again. The loss is not logged with
    ``prog_bar`` (Lightning would read it back after every batch): the bar takes it from the
    metrics the step logged."""

    def __init__(self, refresh_rate: int = 1):
        super().__init__(refresh_rate)
        self._shown: dict | None = None

    def get_metrics(self, trainer, pl_module) -> dict:
        # called after the step, its counter moved on: the step just run wrote if this divides
        between = trainer.log_every_n_steps and trainer.global_step % trainer.log_every_n_steps
        if not (trainer.training and between and self._shown is not None):
            self._shown = super().get_metrics(trainer, pl_module)
            loss = trainer.callback_metrics.get("train/loss")
            if loss is not None:
                self._shown["train/loss"] = loss.item()
        return self._shown


class TrainingMonitor(L.Callback):
    """Throughput, generated text, histograms, dL/dh_t through the window in every layer, and
    what the cell's gates do: saturation of every gate, the mean of every sigmoid gate (the LSTM's
    forget gate: how much memory is kept), the norm of the LSTM's cell state.

    Args:
        every_n_steps: how often to log histograms and the gradient-through-time diagnostics.
        sample_length: characters of text generated at every validation (0 turns it off).
        sample_temperature: temperature of those samples.
    """

    def __init__(self, every_n_steps: int = 100, sample_length: int = 300, sample_temperature: float = 0.8):
        self.every_n_steps = every_n_steps
        self.sample_length = sample_length
        self.sample_temperature = sample_temperature
        self._chars = 0
        self._since = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._chars, self._since = 0, time.perf_counter()  # a resumed run may start mid-epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._chars, self._since = 0, time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if step_is_due(trainer) and self._chars > 0:  # the windows trained since the last written step
            now = time.perf_counter()
            pl_module.log("throughput/chars_per_s", self._chars / max(now - self._since, 1e-9))
            self._chars, self._since = 0, now
        if not step_is_due(trainer, self.every_n_steps):
            return
        inputs, targets = batch
        state = pl_module.carried_state("train", batch_idx, inputs.shape[0])
        w = pl_module.weights()
        norms, last, hs, stats = hidden_gradients(
            inputs, targets, state, w["layers"], w["W_hy"], w["b_y"], pl_module.cell
        )  # (L, T), (L, T), (L, T, B, H), a dict per layer
        scalars = {"hidden/saturation": (hs.abs() > SATURATED).float().mean()}
        for l in range(norms.shape[0]):
            # layer 0's tags have no suffix (a one-layer model's); a layer above adds _l1, _l2, ...
            suffix = f"_l{l}" if l else ""
            first, final = norms[l, 0], norms[l, -1]
            scalars[f"grad/dh_first{suffix}"] = first
            scalars[f"grad/dh_last{suffix}"] = final
            scalars[f"grad/dh_first_over_last{suffix}"] = first / final.clamp_min(1e-30)
            for (kind, name), value in stats[l].items():
                scalars[STAT_TAGS[kind].format(name) + suffix] = value
        # Straight to the loggers, at this step only: self.log from this hook would write the last
        # value again at every logged step until the next one (Lightning keeps hook results).
        for logger in trainer.loggers:
            logger.log_metrics({k: v.item() for k, v in scalars.items()}, step=trainer.global_step)
        self._log_through_time(trainer, norms, last, hs)

    @rank_zero_only
    def _log_through_time(self, trainer, norms, last, hs) -> None:
        writer = _writer(trainer)
        if writer is None:
            return
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3.5))  # fixed margins: layout="constrained" costs a third more
        fig.subplots_adjust(left=0.11, right=0.98, bottom=0.14, top=0.91)
        ax = fig.add_subplot()
        t = range(1, norms.shape[1] + 1)
        for l in range(norms.shape[0]):
            layer = f"layer {l}: " if norms.shape[0] > 1 else ""
            ax.semilogy(t, norms[l].float().cpu(), label=f"{layer}window loss: ||dL/dh_t||")
            ax.semilogy(
                t, last[l].float().cpu().clamp_min(1e-30), "--", label=f"{layer}last character's loss only"
            )
        ax.set(
            xlabel="t (position in the window)",
            ylabel="mean over streams",
            title=f"step {trainer.global_step}",
        )
        ax.legend()
        writer.add_figure("grad/dh_through_time", fig, trainer.global_step)
        writer.add_histogram("hidden/h", hs.float().cpu(), trainer.global_step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not step_is_due(trainer, self.every_n_steps) or not trainer.is_global_zero:
            return
        writer = _writer(trainer)
        if writer is None:
            return
        for name, p in pl_module.named_parameters():
            writer.add_histogram(f"params/{name}", p.detach().float().cpu(), trainer.global_step)
            if p.grad is not None:  # before clipping
                writer.add_histogram(f"grads/{name}", p.grad.float().cpu(), trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        inputs, _ = batch
        self._chars += inputs.numel() * trainer.world_size

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.sample_length <= 0 or pl_module.hparams.vocab is None:
            return
        writer = _writer(trainer)
        if writer is None:
            return
        generator = torch.Generator(pl_module.device).manual_seed(0)  # the same draws every time
        text = pl_module.sample_text(
            self.sample_length, temperature=self.sample_temperature, generator=generator
        )
        writer.add_text("samples", "    " + text.replace("\n", "\n    "), trainer.global_step)  # as code


class MemoryCheck(L.Callback):
    """Before the first step: what the run will hold (``rnn/memory.py``) against what the device
    has, one clear error where it does not fit; the figure in the model summary where one is shown.
    Processes on one CPU share its memory, so there it counts them all."""

    def __init__(self):
        self.footprint: Footprint | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data, hp = trainer.datamodule, pl_module.hparams
        if data is None or not hasattr(data, "seq_len") or not hasattr(pl_module, "cell"):
            return  # loaders of the user's own: the window's shape is not known here
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        itemsize = pl_module.W_hy.element_size()
        self.footprint = fp = footprint(
            pl_module.cell,
            hp.vocab_size,
            hp.hidden_size,
            hp.num_layers,
            data.batch_size,
            data.seq_len,
            hp.dropout,
            optimizer_slots(optimizer),
            itemsize,
        )
        held = fp.parameters * itemsize + sum(  # what is already allocated: the weights, some state
            t.numel() * t.element_size()
            for state in (optimizer.state.values() if optimizer else ())
            for t in state.values()
            if isinstance(t, torch.Tensor)
        )
        processes = trainer.num_devices if pl_module.device.type == "cpu" else 1
        what = f"{processes} training processes" if processes > 1 else "the run"
        require_memory(
            processes * max(fp.total - held, 0),
            pl_module.device,
            f"{what} ({fp.summary()})",
            "`batch_size`, `seq_len` or `hidden_size`",
        )
        if any(isinstance(c, ModelSummary) for c in trainer.callbacks):
            rank_zero_info(f"Memory: {fp.summary()}")


class ParameterSummary(ModelSummary):
    """Lightning's model summary without its FLOPs column: Lightning counts FLOPs by running the
    model on ``example_input_array``, which a character model has no use for, so the column and its
    total would read 0 on every run."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs,
    ) -> None:
        columns = [(name, [str(v) for v in values]) for name, values in summary_data if name != "FLOPs"]
        widths = [max([len(name), *map(len, values)]) for name, values in columns]
        rule = "-" * (sum(widths) + 3 * len(widths))
        rows = zip(*(values for _, values in columns), strict=True)
        table = [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
        totals = [
            (get_human_readable_count(trainable_parameters), "Trainable params"),
            (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
            (get_human_readable_count(total_parameters), "Total params"),
            (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
            (total_training_modes["train"], "Modules in train mode"),
            (total_training_modes["eval"], "Modules in eval mode"),
        ]
        header = " | ".join(name.ljust(w) for (name, _), w in zip(columns, widths, strict=True))
        lines = [header, rule, *table, rule, *(f"{str(n):<10}{what}" for n, what in totals)]
        rank_zero_info("\n" + "\n".join(lines))


def optimizer_slots(optimizer: torch.optim.Optimizer | None) -> float:
    """The numbers ``optimizer`` keeps per parameter (Adagrad 1, Adam 2), counted on a copy of it
    over a three-number parameter after one step; 2 where the copy cannot be made."""
    if optimizer is None:
        return 0.0
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(3)
    try:
        copy = type(optimizer)([p], **optimizer.defaults)
        copy.step()
    except Exception:  # an optimizer of the user's with arguments of its own: assume Adam's two
        return 2.0
    return (
        sum(t.numel() for t in copy.state[p].values() if isinstance(t, torch.Tensor) and t.numel() == 3) / 3
    )


class StallMargin(L.Callback):
    """Says once, as one line, when a validation pass or a checkpoint write took more than half
    the ``timeout`` the processes of a run wait for each other: a slower one would end the run as
    if a process had stalled (``cli/launch.py``)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.said: set[str] = set()
        self.started = 0.0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.started = time.monotonic()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.check("a validation pass", time.monotonic() - self.started)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        writes = getattr(trainer.strategy.checkpoint_io, "writes", None)
        if writes:
            self.check("a checkpoint write", max(writes))
            writes.clear()

    def check(self, what: str, seconds: float) -> None:
        if seconds > self.timeout / 2 and what not in self.said:
            self.said.add(what)
            log.warning(
                "charrnn: %s took %.1f s, more than half of the %.0f s the processes wait for each "
                "other (--trainer.strategy.init_args.timeout): raise it, or a slower one will end the "
                "run as a stall",
                what,
                seconds,
                self.timeout,
            )
