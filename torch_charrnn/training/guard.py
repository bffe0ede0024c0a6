"""What happens to the gradients between backward and the optimizer's step: the divergence check,
the norm logged before clipping, clipping with that norm, and how often clipping fired; and which
steps write their metrics.

The check runs one of two ways. On the CPU it reads the loss and the norm as Python numbers every
step (free there) and raises before a non-finite step is applied. On a GPU that would stop the host
until the device has caught up, every step; there it stays on the device (``GradientGuard.start``):
a non-finite loss or norm sets a flag that the optimizer's step reads (``found_inf``, as AMP's
GradScaler skips an update: torch's fused optimizers honour it), so that step and every one after
it change nothing, and the flag is read on the steps that write metrics, where the run stops with
the same error, naming the first non-finite step."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor

from torch_charrnn.errors import DivergedError


def step_is_due(trainer: L.Trainer, every: int | None = None) -> bool:
    """Whether the training step now running is one of every ``every`` steps (default: the
    trainer's ``log_every_n_steps``, so: whether Lightning writes this step's metrics).

    Counted as Lightning counts when it decides which steps to write, ``(global_step + 1) % every``;
    valid from ``on_train_batch_start`` to ``on_before_optimizer_step``, before the step counter moves.
    """
    every = trainer.log_every_n_steps if every is None else every
    return every > 0 and (trainer.global_step + 1) % every == 0


def parameters(optimizer) -> list[Tensor]:
    """The parameters ``optimizer`` steps: those whose gradients are checked and clipped."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def step_overflowed(error: RuntimeError, trainer: L.Trainer) -> DivergedError | None:
    """The optimizer's own step overflowing float32, as the DivergedError the check above raises
    for a non-finite loss; None for any other error. torch.optim raises a RuntimeError of its own
    there ("value cannot be converted to type float without overflow"): Adam's step size is
    lr / (1 - beta1^t), past float32's 3.4e38 from lr 3.4e37 at its first step."""
    if "without overflow" not in str(error) or not trainer.optimizers:
        return None
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    return DivergedError(
        f"training diverged at step {trainer.global_step}: the optimizer's step overflowed float32 "
        f"({str(error).strip()}). Nothing from this step was saved; resume from the last good "
        f"checkpoint (`ckpt_path` last) with a lower `lr` (now {lr:g})."
    )


def scales_loss(trainer: L.Trainer) -> bool:
    """Whether the run's precision is fp16's, whose GradScaler scales the loss and decides on the
    host which steps the optimizer skips."""
    return str(trainer.precision).startswith("16")


def skips_on_found_inf(optimizer) -> bool:
    """Whether ``optimizer``'s step reads a ``found_inf`` flag and changes nothing where it is set:
    torch's fused implementations (``fused=True``: Adam, AdamW, SGD, Adagrad)."""
    return getattr(optimizer, "_step_supports_amp_scaling", False) and all(
        group.get("fused") for group in optimizer.param_groups
    )


def diverged(step: int, loss: float, norm: float, optimizer, clip_val, found_at: int | None = None):
    """The one-line error of a run whose loss or gradient norm at ``step`` is not finite."""
    read = (
        ""
        if found_at is None or found_at == step
        else f" (read at step {found_at}: on a GPU the check is read on the steps that write metrics, "
        "every `log_every_n_steps`; no step from the first non-finite one on was applied)"
    )
    return DivergedError(
        f"training diverged at step {step}: the loss is {loss:.4g} and the gradient norm {norm:.4g}{read}. "
        f"Nothing from this step was applied or saved; resume from the last good checkpoint "
        f"(`ckpt_path` last) with a lower `lr` (now {optimizer.param_groups[0]['lr']:g}) or a smaller "
        f"`gradient_clip_val` (now {clip_val})."
    )


class GradientGuard:
    """One pass over the gradients a step: their global norm, taken once, stops a non-finite step
    before it is applied and is the norm clipping uses (as ``clip_grad_norm_`` would compute it
    again). The module calls ``start`` when training starts, ``check`` from
    ``on_before_optimizer_step`` and ``clip`` from ``configure_gradient_clipping``, Lightning's own
    hooks, in that order, and ``raise_if_diverged`` where a run must not go on past a divergence
    unseen (the steps that write metrics, a checkpoint, the end).

    ``on_device``: None (the default) checks on the device wherever it is not the CPU and the
    optimizer can skip a step there; True or False forces the choice (True still needs such an
    optimizer)."""

    def __init__(self, on_device: bool | None = None):
        self.on_device = on_device
        self.deferred = False  # whether this run's check stays on the device (``start``)
        self.norm, self.norm_value = torch.zeros(()), 0.0
        self.clipped, self.steps = 0, 0  # steps clipped, and steps, since the last written step
        self.found_inf: Tensor | None = None  # on the device: 1 from the first non-finite step on
        self.first: Tensor | None = None  # on the device: that step, its loss and its norm

    def start(self, optimizer, device: torch.device, world_size: int = 1, scaled: bool = False) -> str | None:
        """Choose for a run on ``device`` where the check reads its numbers; returns a line saying
        why the host reads them every step where a GPU would rather it did not, else None. A run of
        several processes keeps it on the host: each process's own loss would decide, alone,
        whether its copy of the weights takes a step. So does one whose loss is ``scaled`` (fp16's
        GradScaler sets and removes the optimizer's ``found_inf`` itself)."""
        wanted = device.type != "cpu" if self.on_device is None else self.on_device
        self.deferred = wanted and skips_on_found_inf(optimizer) and world_size == 1 and not scaled
        if self.deferred:
            self.found_inf = torch.zeros((), device=device)  # float32, as the fused kernels read it
            self.first = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=device)
            self.clipped = torch.zeros((), device=device)
            optimizer.found_inf = self.found_inf
            return None
        self.clipped = 0
        if not wanted:
            return None
        if world_size > 1:
            why = "a run of several processes keeps it there, so that no process skips a step the others take"
        elif scaled:
            why = "`precision` 16's GradScaler decides which steps the optimizer skips"
        else:
            why = (
                f"{type(optimizer).__name__} is not fused. Its `fused: true` (Adam, AdamW, SGD, Adagrad) "
                "lets the check stay on the device"
            )
        return (
            f"the divergence check reads the loss and gradient norm on the host every step, a wait for "
            f"the {device.type.upper()} each time: {why}"
        )

    def check(self, optimizer, loss: Tensor, step: int, clip_val) -> Tensor:
        """The gradient norm before clipping; a DivergedError if it or the loss is not finite (on
        the host), or the flag that makes this step and the next ones no-ops (on the device)."""
        self.norm = torch.nn.utils.get_total_norm(
            [p.grad for p in parameters(optimizer) if p.grad is not None]
        )
        if self.deferred:
            bad = ~(torch.isfinite(self.norm) & torch.isfinite(loss))
            at = self.norm.new_full((), step, dtype=torch.float64)  # a fill, not a copy from the host
            seen = torch.stack([at, loss.double(), self.norm.double()])
            self.first.copy_(torch.where(bad & (self.found_inf == 0), seen, self.first))
            self.found_inf.copy_(torch.maximum(self.found_inf, bad.to(self.found_inf.dtype)))
            return self.norm
        # As Python numbers: one host sync a step (on a GPU; none on the CPU), no tensor arithmetic
        self.norm_value, loss_value = self.norm.item(), loss.item()
        if not (math.isfinite(self.norm_value) and math.isfinite(loss_value)):
            raise diverged(step, loss_value, self.norm_value, optimizer, clip_val)
        return self.norm

    def raise_if_diverged(self, optimizer, step: int, clip_val) -> None:
        """On the device, read the flag (one wait for the device): the DivergedError of the first
        non-finite step, if there was one. On the host, ``check`` has raised already."""
        if not self.deferred:
            return
        first, loss, norm = self.first.tolist()
        if first >= 0:
            raise diverged(int(first), loss, norm, optimizer, clip_val, found_at=step)

    def clip(
        self, module: L.LightningModule, optimizer, clip_val: float, algorithm: str | None
    ) -> float | Tensor | None:
        """Clip as Lightning's ``clip_gradients`` would, by norm with the norm ``check`` took; returns
        the share of steps clipped since the last call that returned one, on the steps that write
        (a tensor, on the device)."""
        if algorithm in (None, "norm"):
            if self.deferred:  # no host decision: multiplying by a coefficient of 1 changes no bit
                fired = clip_val / (self.norm + 1e-6) < 1.0
                torch.nn.utils.clip_grads_with_norm_(parameters(optimizer), clip_val, self.norm)
            else:
                # clip_grad_norm_'s own test and scaling, given the total norm it would compute again.
                coef = clip_val / (self.norm_value + 1e-6)
                fired = coef < 1.0
                # Above 1 it clamps the coefficient to 1 and multiplies every gradient by it, a pass
                # over them all that changes no bit: skipped there. Within 1e-6 of 1, where its float32
                # coefficient could round to either side of ours, it runs and decides as it always does.
                if coef < 1.0 + 1e-6:
                    torch.nn.utils.clip_grads_with_norm_(parameters(optimizer), clip_val, self.norm)
        else:
            grads = [p.grad for p in parameters(optimizer) if p.grad is not None]
            fired = torch.stack([g.abs().max() for g in grads]).max() > clip_val
            fired = fired if self.deferred else bool(fired)
            # Lightning's clip_gradients does this, but refuses a fused optimizer under bf16-mixed
            torch.nn.utils.clip_grad_value_(parameters(optimizer), clip_val)
        self.clipped = self.clipped + fired
        self.steps += 1
        if not step_is_due(module.trainer):
            return None
        share = self.clipped / self.steps
        self.clipped, self.steps = torch.zeros_like(share) if self.deferred else 0, 0
        return share
