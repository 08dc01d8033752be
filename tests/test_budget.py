"""Training sized to a time budget: the planner's arithmetic and the probe, on a fake clock."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_lessons.training.budget import Plan, check_budget, format_seconds, make_plan, probe
from resnet_lessons.training.epoch import LivePoints, live_steps


class FakeClock:
    """A clock that only moves when the code under test does something."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float):
        def action() -> None:
            self.now += seconds

        return action


def plan(budget: float, **kwargs) -> Plan:
    defaults = dict(seconds_per_step=0.5, seconds_per_eval=5.0, steps_per_epoch=235, batch_size=256)
    return make_plan(budget, **{**defaults, **kwargs})


def test_a_part_of_one_epoch():
    # 100 s: one test (5 s) leaves 95 s, 190 steps of 0.5 s: less than the 235 of an epoch
    p = plan(100)
    assert p.steps == 190 and p.evaluations == 1
    assert p.epochs == pytest.approx(190 / 235)
    assert p.images == 190 * 256
    assert p.expected_seconds == pytest.approx(100)


def test_more_than_one_epoch_pays_for_a_test_at_each_epoch_end():
    # 180 s, probe 9 s: 171 s; with 2 tests (10 s) 161 s -> 322 steps = 1.37 epochs
    p = plan(180, probe_seconds=9)
    assert p.steps == 322 and p.evaluations == 2
    assert p.expected_seconds <= 180


def test_a_checkpoint_at_every_epoch_end_is_counted():
    with_ckpt = plan(180, probe_seconds=9, seconds_per_epoch_end=1.0)
    assert with_ckpt.steps == 318  # 171 - 2 * 6 = 159 s -> 318 steps
    assert with_ckpt.expected_seconds == pytest.approx(
        9 + 318 * 0.5 + 2 * 5.0, abs=1e-9
    )  # expected_seconds leaves out the 2 s of checkpoints: they are the only slack


def test_the_boundary_between_one_and_two_epochs():
    # exactly one epoch and one test: 235 * 0.5 + 5 = 122.5 s
    assert plan(122.5).steps == 235
    # one step more than an epoch would need a second test: 5 s more
    assert plan(123.0).steps == 235
    assert plan(128.0).steps == 236


def test_long_budgets_count_one_test_per_epoch():
    p = plan(3600)
    assert p.evaluations == math.ceil(p.steps / 235)
    assert p.expected_seconds <= 3600
    assert 3600 - p.expected_seconds < 0.5 + 5.0  # nothing big is left unused


def test_too_short_a_budget_says_how_long_it_must_be():
    with pytest.raises(ValueError, match=r"too short here.*give at least 16 s"):
        plan(10, probe_seconds=10)


@pytest.mark.parametrize("bad", [0, -3, float("nan"), float("inf")])
def test_bad_budgets(bad):
    with pytest.raises(ValueError, match="budget must be a positive number of seconds"):
        check_budget(bad)


@pytest.mark.parametrize("bad", ["3 min", None, True])
def test_budgets_are_numbers(bad):
    with pytest.raises(TypeError, match="budget is in seconds"):
        check_budget(bad)


def test_bad_measurements_are_refused():
    with pytest.raises(ValueError, match="seconds_per_step must be above 0"):
        plan(100, seconds_per_step=0)
    with pytest.raises(ValueError, match="seconds_per_eval"):
        plan(100, seconds_per_eval=-1)


def test_the_plan_reads_as_one_line():
    p = plan(180, probe_seconds=9, device="cpu (AVX2)")
    assert p.describe() == (
        "this CPU trains ~512 images/s; 3 min is ~82,432 images, 1.4 epochs "
        "(322 steps of 256, 2 tests, probe 9.0 s)"
    )
    assert plan(60, device="cuda (H100)").describe().startswith("this GPU trains")


def test_the_live_points_are_paid_for_first():
    """20 live points of 0.5 s each cost 10 s of the budget, whatever the steps: 20 steps of
    0.5 s fewer, and the plan says so."""
    without = plan(180, probe_seconds=9)
    with_points = plan(180, probe_seconds=9, live_seconds=10)
    assert with_points.steps == without.steps - 20
    assert with_points.expected_seconds <= 180
    assert "live points 10.0 s" in with_points.describe()
    old = {k: v for k, v in with_points.to_dict().items() if k != "live_seconds"}
    assert Plan.from_dict(old).live_seconds == 0  # a plan saved before live points
    with pytest.raises(ValueError, match="the live points 200.0 s"):
        plan(180, probe_seconds=9, live_seconds=200)


def test_live_steps_spread_the_points_and_end_on_the_last_step():
    assert live_steps(446, 20)[:3] == [22, 45, 67] and live_steps(446, 20)[-1] == 446
    assert len(live_steps(446, 20)) == 20
    assert live_steps(3, 20) == [1, 2, 3]  # fewer steps than points: one per step
    assert live_steps(10, 0) == []


def test_live_points_on_a_fake_clock():
    """A point is the training since the previous one and a test of the subset; on an
    epoch's last step it waits for the whole test set's accuracy."""
    clock, tests, drawn = FakeClock(), [], []

    def subset() -> float:
        clock.advance(0.5)()
        tests.append(1)
        return 0.75

    points: list = []
    live = LivePoints([2, 4], 4, subset, points, draw=drawn.append, clock=clock)
    live.start_epoch()
    sums = {1: (2.0, 1, 8), 2: (3.0, 3, 16), 3: (4.5, 5, 24), 4: (5.0, 8, 32)}
    for step, (loss, correct, count) in sums.items():
        live.after_step(step, torch.tensor(loss), torch.tensor(correct), count)
    assert points[0] == {"epoch": 0.5, "train_loss": 3.0 / 16, "train_acc": 3 / 16,
                         "test_acc": 0.75}  # fmt: skip
    assert points[1]["train_loss"] == 2.0 / 16 and points[1]["train_acc"] == 5 / 16
    assert math.isnan(points[1]["test_acc"]) and len(tests) == 1 and len(drawn) == 1
    live.end_epoch(0.8)
    assert points[1]["test_acc"] == 0.8 and len(tests) == 1
    assert live.seconds == 0.5  # what the points cost: one test of the subset


def test_a_plan_survives_json_and_checkpoints():
    p = plan(180, probe_seconds=9)
    assert Plan.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="lacks steps"):
        Plan.from_dict({k: v for k, v in p.to_dict().items() if k != "steps"})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(180, "3 min"), (90, "1.5 min"), (45, "45 s"), (600, "10 min"), (10800, "3.0 h")],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_probe_times_steps_after_a_warm_up():
    clock = FakeClock()
    calls = []

    def step():
        calls.append("step")
        clock.now += 3.0 if len(calls) == 1 else 0.5  # the first step is slow

    result = probe(step, clock.advance(2.0), limit=9.0, clock=clock)
    # warm-up 3 s, test batch 2 s, then 0.5 s steps while one more still fits in 9 s
    assert result.seconds_per_step == pytest.approx(0.5)
    assert result.seconds_per_eval_batch == pytest.approx(2.0)
    assert result.timed_steps == 8  # 3 + 2 + 8 * 0.5 = 9 s: a 9th would pass the limit
    assert result.seconds == pytest.approx(9.0)
    assert result.seconds <= 9.0


def test_probe_takes_two_steps_even_when_one_is_longer_than_the_limit():
    clock = FakeClock()
    result = probe(clock.advance(5.0), clock.advance(1.0), limit=2.0, clock=clock)
    assert result.timed_steps == 2 and result.seconds_per_step == pytest.approx(5.0)


def test_probe_then_plan_on_a_fake_clock():
    clock = FakeClock()
    measured = probe(clock.advance(0.4), clock.advance(0.3), limit=9.0, clock=clock)
    p = make_plan(
        180,
        seconds_per_step=measured.seconds_per_step,
        seconds_per_eval=measured.seconds_per_eval_batch * 10,  # 10 test batches
        steps_per_epoch=235,
        batch_size=256,
        probe_seconds=measured.seconds,
    )
    assert measured.seconds <= 9.0
    assert p.images_per_second == pytest.approx(640)
    assert p.expected_seconds <= 180
    assert p.steps == math.floor((180 - measured.seconds - 2 * 3.0) / 0.4)
