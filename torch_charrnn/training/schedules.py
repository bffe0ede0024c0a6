"""Learning-rate schedules for runs budgeted in steps: name one with ``--lr_scheduler``.

    charrnn fit --optimizer Adam --optimizer.lr 2e-3 \\
        --lr_scheduler torch_charrnn.training.schedules.WarmupCosine --lr_scheduler.total_steps 20000

Schedules step every training step (``charrnn fit`` sets ``interval: step``).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from torch_charrnn.errors import require


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, final_lr_ratio: float = 0.0) -> float:
    """The factor on the base learning rate at ``step`` (0-based): linear from 1/warmup_steps to 1
    over ``warmup_steps``, then half a cosine down to ``final_lr_ratio`` at ``total_steps``, and
    ``final_lr_ratio`` after it."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_lr_ratio + (1.0 - final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(LRScheduler):
    """Linear warmup, then cosine decay that ends at ``total_steps``: the schedule of a fixed budget.

    For a time budget (``--trainer.max_time``), set ``total_steps`` to the steps that fit in it (the
    ``throughput/chars_per_s`` tag divided by B*T, times the seconds) and ``--trainer.max_steps`` to
    the same number, keeping ``max_time`` as a guard; past ``total_steps`` the rate stays at
    ``final_lr_ratio`` times the base rate.

    Args:
        total_steps: the step at which the decay ends.
        warmup_steps: steps of linear warmup from the start (0: none).
        final_lr_ratio: the learning rate at the end, as a share of the optimizer's base rate.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        final_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ):
        require(total_steps >= 1, f"`total_steps` must be a positive integer, got {total_steps}")
        require(
            0 <= warmup_steps < total_steps,
            f"`warmup_steps` must be in [0, total_steps), got {warmup_steps}",
        )
        require(0 <= final_lr_ratio <= 1, f"`final_lr_ratio` must be in [0, 1], got {final_lr_ratio}")
        self.total_steps, self.warmup_steps, self.final_lr_ratio = total_steps, warmup_steps, final_lr_ratio
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = warmup_cosine(self.last_epoch, self.total_steps, self.warmup_steps, self.final_lr_ratio)
        return [base * factor for base in self.base_lrs]
