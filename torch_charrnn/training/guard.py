"""What happens to the gradients between backward and the optimizer's step: the divergence check,
the norm logged before clipping, clipping with that norm, and how often clipping fired; and which
steps write their metrics."""

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


class GradientGuard:
    """One pass over the gradients a step: their global norm, taken once, stops a non-finite step
    before it is applied and is the norm clipping uses (as ``clip_grad_norm_`` would compute it
    again). The module calls ``check`` from ``on_before_optimizer_step`` and ``clip`` from
    ``configure_gradient_clipping``, Lightning's own hooks, in that order."""

    def __init__(self):
        self.norm, self.norm_value = torch.zeros(()), 0.0
        self.clipped, self.steps = 0, 0  # steps clipped, and steps, since the last written step

    def check(self, optimizer, loss: Tensor, step: int, clip_val) -> Tensor:
        """The gradient norm before clipping; a DivergedError if it or the loss is not finite."""
        self.norm = torch.nn.utils.get_total_norm(
            [p.grad for p in parameters(optimizer) if p.grad is not None]
        )
        # As Python numbers: one host sync a step (on a GPU; none on the CPU), no tensor arithmetic
        self.norm_value, loss_value = self.norm.item(), loss.item()
        if not (math.isfinite(self.norm_value) and math.isfinite(loss_value)):
            raise DivergedError(
                f"training diverged at step {step}: the loss is {loss_value:.4g} and the gradient norm "
                f"{self.norm_value:.4g}. Nothing from this step was applied or saved; resume from the last "
                f"good checkpoint (`ckpt_path` last) with a lower `lr` (now "
                f"{optimizer.param_groups[0]['lr']:g}) or a smaller `gradient_clip_val` (now {clip_val})."
            )
        return self.norm

    def clip(
        self, module: L.LightningModule, optimizer, clip_val: float, algorithm: str | None
    ) -> float | None:
        """Clip as Lightning's ``clip_gradients`` would, by norm with the norm ``check`` took; returns
        the share of steps clipped since the last call that returned one, on the steps that write."""
        if algorithm in (None, "norm"):
            # clip_grad_norm_'s own test and scaling, given the total norm it would compute again.
            coef = clip_val / (self.norm_value + 1e-6)
            fired = coef < 1.0
            # Above 1 it clamps the coefficient to 1 and multiplies every gradient by it, a pass over
            # them all that changes no bit (0.1 to 0.2 ms a step at H256 on a 2-core CPU): skipped
            # there. Within 1e-6 of 1, where its float32 coefficient could round to either side of
            # ours, it runs and decides as it always does.
            if coef < 1.0 + 1e-6:
                torch.nn.utils.clip_grads_with_norm_(parameters(optimizer), clip_val, self.norm)
        else:
            grads = [p.grad for p in parameters(optimizer) if p.grad is not None]
            fired = bool(torch.stack([g.abs().max() for g in grads]).max() > clip_val)
            module.clip_gradients(optimizer, clip_val, algorithm)
        self.clipped += fired
        self.steps += 1
        if not step_is_due(module.trainer):
            return None
        share, self.clipped, self.steps = self.clipped / self.steps, 0, 0
        return share
