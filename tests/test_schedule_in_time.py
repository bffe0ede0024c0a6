"""WarmupCosineInTime: the decay fitted to a wall-clock budget from the pace of the first steps,
and kept, once measured, by the checkpoint."""

import itertools
import math

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


class DriftingClock(Clock):
    """A machine whose steps take ``pace`` seconds until ``at`` seconds, then ``then`` seconds."""

    def __init__(self, pace: float, at: float, then: float):
        super().__init__(pace)
        self.at, self.then, self.began = 1000.0 + at, then, 1000.0

    def __call__(self) -> float:
        if self.now >= self.at:
            self.pace = self.then
        return self.now


def first_at_final_rate(schedule, clock, final=0.0, after=0, limit=100_000):
    """The clock's seconds, from the first step's end, when the rate first reaches ``final`` after
    ``after`` steps (the warmup); and the rates on the way."""
    lrs = []
    start = None
    for _ in range(limit):
        clock.now += clock.pace
        schedule.optimizer.step()
        schedule.step()
        start = clock.now if start is None else start
        lrs.append(schedule.get_last_lr()[0])
        if len(lrs) > after and lrs[-1] <= final + 1e-12:
            return clock.now - start, lrs
    raise AssertionError("the rate never reached its final value")


@pytest.mark.parametrize("pace", [0.01, 0.05, 0.2])
def test_the_decay_ends_when_the_budget_does_on_a_machine_of_any_speed(monkeypatch, pace):
    clock = Clock(pace)
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    schedule = schedule_for(minutes=1.0, warmup_steps=20, skip_steps=10, measure_steps=50)
    assert schedule.total_steps == WarmupCosineInTime.PENDING
    run(schedule, clock, 61)
    assert schedule.measured
    # 60 s at `pace` a step: the steps that fit, counted from the end of the first
    total = schedule.total_steps
    assert abs(total - (1 + 60 / pace)) <= 2
    lrs = run(schedule, clock, total - 61)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    # on a steady machine it is WarmupCosine over the steps that fit, to within a step
    for step, lr in enumerate(lrs, start=62):  # within a step's worth of the cosine
        assert lr == pytest.approx(
            0.1 * warmup_cosine(step, total, 20, 0.0), abs=0.1 * math.pi / (total - 20)
        )


@pytest.mark.parametrize("then", [0.04, 0.06])
def test_the_decay_follows_a_pace_that_drifts_and_ends_within_two_percent_of_the_budget(monkeypatch, then):
    # steps of 50 ms for the first 30 s, then 20% faster (or slower): a first-steps estimate alone
    # would end the decay 10% late (early)
    clock = DriftingClock(0.05, at=30.0, then=then)
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    schedule = schedule_for(minutes=1.0, warmup_steps=20, final_lr_ratio=0.1)
    seconds, lrs = first_at_final_rate(schedule, clock, final=0.01, after=20)
    assert abs(seconds - 60.0) <= 0.02 * 60.0, seconds
    after_warmup = lrs[20:]
    drops = [a - b for a, b in itertools.pairwise(after_warmup)]
    assert min(drops) >= -1e-15, "the rate never climbs back"
    # no jump: after the first timing (step 61) the drift bends the decay, and no step moves the
    # rate by more than twice the cosine's steepest step over the ~1,100 steps the budget holds
    assert max(drops[61 - 20 :]) < 2 * 0.09 * (math.pi / 2) / 1100


def test_before_the_measurement_the_rate_follows_the_warmup(monkeypatch):
    clock = Clock(0.1)
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    schedule = schedule_for(warmup_steps=100)
    lrs = run(schedule, clock, 40)
    assert lrs[:40] == pytest.approx([0.1 * (k + 2) / 100 for k in range(40)])


def test_a_resumed_schedule_takes_the_rate_up_where_it_was_and_spends_what_is_left(monkeypatch):
    clock = Clock(0.05)
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    straight = schedule_for(warmup_steps=5)
    run(straight, clock, 400)
    saved = straight.state_dict()
    assert saved["measured"] and 0 < saved["progress"] < 1 and saved["pace"] == pytest.approx(0.05)
    assert saved["elapsed_s"] == pytest.approx(399 * 0.05)
    assert not {"_last", "_steps_here", "_timing_from"} & set(saved)
    last_lr = straight.get_last_lr()
    next_lr = run(straight, clock, 1)[0]

    clock.now += 3600.0  # the machine was down for an hour: that is not training time
    resumed = schedule_for(warmup_steps=5)
    resumed.load_state_dict(saved)
    assert resumed.progress == saved["progress"] and resumed.get_last_lr() == last_lr
    # the first step of the resumed process is not timed, so its rate trails by at most a step's worth
    assert run(resumed, clock, 1)[0] == pytest.approx(next_lr, rel=2e-3)

    clock.pace = 0.25  # and it goes on on a machine five times slower: the decay still ends with the budget
    left = 60.0 - resumed.elapsed_s
    seconds, _ = first_at_final_rate(resumed, clock)
    assert abs(seconds - left) <= 0.02 * 60.0, (seconds, left)


def test_bad_budgets_are_refused():
    with pytest.raises(ConfigError, match="`minutes` must be positive"):
        schedule_for(minutes=0)
