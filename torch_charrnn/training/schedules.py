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
    return cosine((step - warmup_steps) / max(1, total_steps - warmup_steps), final_lr_ratio)


def cosine(progress: float, final_lr_ratio: float = 0.0) -> float:
    """Half a cosine from 1 at ``progress`` 0 down to ``final_lr_ratio`` at 1 (and after it)."""
    return final_lr_ratio + (1.0 - final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


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

    The schedule keeps the cosine's progress (0 to 1) rather than a step count. After
    ``skip_steps`` steps (the first ones are slow to warm up) it times every ``measure_steps``
    steps, and each step past the warmup moves the progress by what is left of it divided by the
    steps that fit, at the latest pace, in what is left of ``minutes``. On a steady machine that
    is the cosine over a fixed number of steps; on one whose pace drifts (validation, checkpoints,
    a machine that speeds up or slows down) the decay follows the clock and still ends with the
    budget. Until the first timing the rate follows the warmup (or stays at the base rate without
    one).

    The progress, the training seconds so far and the latest pace are the schedule's state, and
    so part of every checkpoint: a resumed run takes the rate up where it was and spends only
    what is left of the budget, as ``--trainer.max_time`` does. Keep ``max_time`` at the same
    budget as the hard stop; past the end the rate stays at ``final_lr_ratio`` times the base.

    Args:
        minutes: the training budget the decay should fill.
        warmup_steps: steps of linear warmup from the start (0: none).
        final_lr_ratio: the learning rate at the end, as a share of the optimizer's base rate.
        skip_steps: steps of each process left out of the timing.
        measure_steps: steps per timing.
    """

    PENDING = 2**62  # total_steps until the first timing: the cosine stays at its start

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
        self.progress = 0.0  # of the cosine: 0 at the end of the warmup, 1 at the end of the budget
        self.elapsed_s = 0.0  # training seconds before the last step ended, over every process
        self.pace: float | None = None  # seconds a step, as last timed
        self.measured = False  # whether total_steps is an estimate from a timing
        self._last: float | None = None  # this process's clock at the end of the last step
        self._steps_here = 0  # steps ended in this process
        self._timing_from: float | None = None
        super().__init__(optimizer, self.PENDING, warmup_steps, final_lr_ratio, last_epoch)

    def step(self, epoch=None) -> None:
        if self.last_epoch >= 0:  # a training step has just ended
            self._advance(self.last_epoch + 1, time.monotonic())
        super().step(epoch)

    def _advance(self, done: int, now: float) -> None:
        """``done`` steps are over at ``now``: time them, and move the cosine on."""
        if self._last is not None:  # the first step of a process is not counted: it warms up
            self.elapsed_s += now - self._last
        self._last = now
        self._steps_here += 1
        if self._steps_here == self.skip_steps:
            self._timing_from = now
        elif self._timing_from is not None and (self._steps_here - self.skip_steps) % self.measure_steps == 0:
            self.pace = (now - self._timing_from) / self.measure_steps
            self._timing_from = now
        if self.pace is None:
            return
        steps_left = max(0.0, self.budget_s - self.elapsed_s) / self.pace  # that fit at the latest pace
        self.total_steps = done + math.ceil(steps_left)
        if done > self.warmup_steps:  # the first step after the warmup runs at the base rate
            if self.measured:
                self.progress += (1.0 - self.progress) / max(1.0, steps_left)
            else:  # the first timing: as if the decay had followed it since the warmup
                self.progress = (done - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        self.warmup_steps = min(self.warmup_steps, max(done, self.total_steps - 1))
        self.measured = True

    def get_lr(self) -> list[float]:
        if self.last_epoch < self.warmup_steps:
            return super().get_lr()
        factor = cosine(self.progress, self.final_lr_ratio)
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict:
        state = super().state_dict()
        for key in ("_last", "_steps_here", "_timing_from"):  # this process's clock means nothing to another
            state.pop(key, None)
        return state
