"""Learning-rate schedules for runs budgeted in steps: name one with ``--lr_scheduler``.

    charrnn fit --optimizer Adam --optimizer.lr 2e-3 \\
        --lr_scheduler torch_charrnn.training.schedules.WarmupCosine --lr_scheduler.total_steps 20000

``WarmupCosineInTime`` ends its decay with a wall-clock budget instead, measured on the machine:

    charrnn fit --optimizer Adam --optimizer.lr 3e-3 --trainer.max_time 00:00:05:00 \
        --lr_scheduler torch_charrnn.training.schedules.WarmupCosineInTime --lr_scheduler.minutes 5

Schedules step every training step (``charrnn fit`` sets ``interval: step``).
"""

from __future__ import annotations

import math
import time

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


class WarmupCosineInTime(WarmupCosine):
    """``WarmupCosine`` for a wall-clock budget on a machine of any speed: its decay ends when
    ``minutes`` of training have passed, as timed on this machine.

    ``total_steps`` is not given but measured: after ``skip_steps`` steps (the first ones are slow
    to warm up) the schedule times the next ``measure_steps``, and sets ``total_steps`` to the
    steps done plus those that fit at that pace in what is left of ``minutes`` from the first
    step. Until then the rate follows the warmup (or stays at the base rate without one). Once set,
    ``total_steps`` is part of the schedule's state, and so of every checkpoint: a resumed run
    keeps it and does not measure again, so resuming stays exact.

    The trade-off: the first steps' pace stands for the whole run. Validation, checkpoints and the
    monitor, which come later, and a machine whose speed drifts make the decay end a little early
    or late; keep ``--trainer.max_time`` at the same budget as the hard stop (past
    ``total_steps`` the rate stays at ``final_lr_ratio`` times the base rate).

    Args:
        minutes: the training budget the decay should fill.
        warmup_steps: steps of linear warmup from the start (0: none).
        final_lr_ratio: the learning rate at the end, as a share of the optimizer's base rate.
        skip_steps: steps left out of the timing.
        measure_steps: steps timed.
    """

    PENDING = 2**62  # total_steps until it is measured: the cosine stays at its start

    def __init__(
        self,
        optimizer: Optimizer,
        minutes: float,
        warmup_steps: int = 0,
        final_lr_ratio: float = 0.0,
        skip_steps: int = 10,
        measure_steps: int = 50,
        last_epoch: int = -1,
    ):
        require(minutes > 0, f"`minutes` must be positive, got {minutes}")
        require(skip_steps >= 1 and measure_steps >= 1, "`skip_steps` and `measure_steps` must be positive")
        self.budget_s, self.skip_steps, self.measure_steps = 60.0 * minutes, skip_steps, measure_steps
        self.measured = False  # whether total_steps is the measured one
        self._started: float | None = None
        self._timing_from: float | None = None
        super().__init__(optimizer, self.PENDING, warmup_steps, final_lr_ratio, last_epoch)

    def step(self, epoch=None) -> None:
        if not self.measured and self.last_epoch >= 0:  # a training step has just ended
            self._time(self.last_epoch + 1, time.monotonic())
        super().step(epoch)

    def _time(self, done: int, now: float) -> None:
        """``done`` steps are over at ``now``."""
        if self._started is None:
            self._started = now  # the end of the first step this process runs
            self._first = done
        if done == self._first + self.skip_steps:
            self._timing_from = now
        elif self._timing_from is not None and done == self._first + self.skip_steps + self.measure_steps:
            pace = (now - self._timing_from) / self.measure_steps  # seconds a step
            left = self.budget_s - (now - self._started)  # a run resumed before this counts from its restart
            self.total_steps = max(done + 1, done + int(left / pace))
            self.warmup_steps = min(self.warmup_steps, self.total_steps - 1)
            self.measured = True

    def state_dict(self) -> dict:
        state = super().state_dict()
        for key in ("_started", "_timing_from", "_first"):  # this process's clock means nothing to another
            state.pop(key, None)
        return state
