"""WarmupCosineInTime: the decay fitted to a wall-clock budget from the pace of the first steps,
and kept, once measured, by the checkpoint."""

import pytest
import torch

from torch_charrnn.errors import ConfigError
from torch_charrnn.training import schedules
from torch_charrnn.training.schedules import WarmupCosineInTime, warmup_cosine


class Clock:
    """A machine whose every step takes ``pace`` seconds."""

    def __init__(self, pace: float):
        self.now, self.pace = 1000.0, pace

    def __call__(self) -> float:
        return self.now


def run(schedule, clock, steps):
    lrs = []
    for _ in range(steps):
        clock.now += clock.pace  # the training step
        schedule.optimizer.step()
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    return lrs


def schedule_for(minutes=1.0, **kwargs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return WarmupCosineInTime(optimizer, minutes=minutes, **kwargs)


@pytest.mark.parametrize("pace", [0.01, 0.05, 0.2])
def test_the_decay_ends_when_the_budget_does_on_a_machine_of_any_speed(monkeypatch, pace):
    clock = Clock(pace)
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    schedule = schedule_for(minutes=1.0, warmup_steps=20, skip_steps=10, measure_steps=50)
    assert schedule.total_steps == WarmupCosineInTime.PENDING
    run(schedule, clock, 61)
    assert schedule.measured
    # 60 s at `pace` a step: the steps that fit, counted from the end of the first
    assert abs(schedule.total_steps - (1 + 60 / pace)) <= 2
    lrs = run(schedule, clock, schedule.total_steps)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    step = schedule.last_epoch
    assert schedule.get_last_lr()[0] == pytest.approx(
        0.1 * warmup_cosine(step, schedule.total_steps, 20, 0.0), abs=1e-12
    )


def test_before_the_measurement_the_rate_follows_the_warmup(monkeypatch):
    clock = Clock(0.1)
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    schedule = schedule_for(warmup_steps=100)
    lrs = run(schedule, clock, 40)
    assert lrs[:40] == pytest.approx([0.1 * (k + 2) / 100 for k in range(40)])


def test_a_resumed_schedule_keeps_the_measured_total_and_does_not_measure_again(monkeypatch):
    clock = Clock(0.05)
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    straight = schedule_for(warmup_steps=5)
    run(straight, clock, 100)
    saved = straight.state_dict()
    assert saved["measured"] and saved["total_steps"] == straight.total_steps
    assert "_started" not in saved and "_timing_from" not in saved
    rest = run(straight, clock, 200)

    clock.pace = 1.0  # the resumed run goes on on a machine twenty times slower
    resumed = schedule_for(warmup_steps=5)
    resumed.load_state_dict(saved)
    assert run(resumed, clock, 200) == pytest.approx(rest, abs=0)
    assert resumed.total_steps == straight.total_steps


def test_bad_budgets_are_refused():
    with pytest.raises(ConfigError, match="`minutes` must be positive"):
        schedule_for(minutes=0)
