"""Training sized to a time budget: the planner's arithmetic and the probe, on a fake clock."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_lessons.training.budget import (
    Plan,
    check_budget,
    format_seconds,
    make_plan,
    probe,
    revise_plan,
    revision_step,
)
from resnet_lessons.training.epoch import LivePoints, live_steps
from resnet_lessons.training.recipes import FAST, make_optimizer, make_scheduler
from resnet_lessons.training.revision import PlanRevision
from resnet_lessons.training.settings import RunSettings


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


# --------------------------------------------------------------------------- the revision


def test_the_revision_comes_after_a_tenth_of_the_steps():
    assert revision_step(plan(180, seconds_per_step=0.56, probe_seconds=9)) == 29  # 287 steps
    assert revision_step(plan(30, seconds_per_step=0.5)) == 10  # 50 steps: at least 10
    assert revision_step(plan(6.5, seconds_per_step=0.5, seconds_per_eval=4)) == 4  # 5 steps
    # the later revisions: 30% and 60% of the plan as it then stands, after the previous one
    assert revision_step(plan(180, seconds_per_step=0.56, probe_seconds=9), 0.3, after=29) == 87
    assert revision_step(plan(30, seconds_per_step=0.5), 0.3, after=20) == 21
    assert revision_step(plan(30, seconds_per_step=0.5), 0.6, after=49) is None  # the last step


def test_steps_faster_than_the_probe_buy_more_steps():
    """The probe said 0.56 s a step; the first 27 steps took 0.465 s each. The rest of the
    budget (live points and two tests still to pay) then holds 54 more steps."""
    p = plan(180, seconds_per_step=0.56, seconds_per_eval=5.6, probe_seconds=9, live_seconds=11.2)
    assert p.steps == 265
    revised = revise_plan(
        p, done_steps=27, elapsed=9 + 27 * 0.465 + 1.12, step_seconds=27 * 0.465,
        live_seconds_left=18 * 0.56,
    )  # fmt: skip
    assert revised.seconds_per_step == pytest.approx(0.465)
    left = 180 - (9 + 27 * 0.465 + 1.12) - 18 * 0.56 - 2 * 5.6
    assert revised.steps == 27 + math.floor(left / 0.465) == 319
    assert revised.revised_at == 27 and revised.budget == 180
    assert revised.describe_revision(p) == (
        "after 27 steps: ~551 images/s, not ~457; 319 steps, not 265 (1.4 epochs)"
    )
    assert Plan.from_dict(revised.to_dict()) == revised
    same = revise_plan(p, done_steps=27, elapsed=9 + 27 * 0.56 + 1.12, step_seconds=27 * 0.56,
                       live_seconds_left=18 * 0.56)  # fmt: skip
    assert same.describe_revision(p) == (
        "after 27 steps: ~457 images/s, not ~457; the 265 steps stand"
    )


def test_slower_steps_shrink_the_plan_and_drop_a_test_they_no_longer_reach():
    p = plan(100, seconds_per_step=0.3, seconds_per_eval=5.0)  # 300 steps: 2 tests
    assert p.steps == 300 and p.evaluations == 2
    revised = revise_plan(p, done_steps=30, elapsed=30 * 0.6, step_seconds=30 * 0.6,
                          live_seconds_left=0)  # fmt: skip
    assert revised.steps == 30 + math.floor((100 - 30 * 0.6 - 5.0) / 0.6) == 158
    assert revised.evaluations == 1


def test_a_revision_after_an_epoch_does_not_pay_for_its_test_again():
    p = plan(600, seconds_per_step=0.5, seconds_per_eval=5.0)  # 1130 steps, 5 tests
    revised = revise_plan(p, done_steps=300, elapsed=160.0, step_seconds=150.0,
                          live_seconds_left=0)  # fmt: skip
    # epoch 1 (235 steps) was tested already; 440 s left: 4 more tests (the last in epoch 5)
    assert revised.steps == 300 + math.floor((600 - 160 - 4 * 5.0) / 0.5) == 1140
    assert revised.evaluations == 5


def test_a_run_far_past_its_budget_stops_at_once():
    p = plan(60, seconds_per_step=0.2)
    revised = revise_plan(p, done_steps=27, elapsed=70.0, step_seconds=60.0, live_seconds_left=0)
    assert revised.steps == 27
    with pytest.raises(ValueError, match="steps already taken"):
        revise_plan(p, done_steps=0, elapsed=1.0, step_seconds=0.0, live_seconds_left=0)


def test_the_live_points_left_are_spread_over_the_revised_run():
    points: list = []
    live = LivePoints(live_steps(100, 10), 235, lambda: 0.5, points)
    for step in range(1, 26):
        live.after_step(step, torch.tensor(0.0), torch.tensor(0), step)
    assert live.taken == 2  # at steps 10 and 20
    live.respan(160, 25, 10)
    assert sorted(live.steps) == [10, 20, 42, 59, 76, 93, 109, 126, 143, 160]
    assert live.last_step == 160


class _Run:
    """What PlanRevision needs of fit's run."""

    def __init__(self, p: Plan, live: LivePoints | None) -> None:
        model = torch.nn.Linear(2, 2)
        self.optimizer = make_optimizer(model, FAST)
        self.scheduler = make_scheduler(self.optimizer, FAST, p.steps_per_epoch, p.steps)
        self.plan, self.total_steps, self.live = p, p.steps, live
        self.history = type("H", (), {"plan": p})()


def test_a_run_revises_its_plan_as_it_goes_on_a_fake_clock():
    """Probe 9 s, planned 0.56 s a step; the run's steps take 0.465 s and its live points 0.5 s.
    After step 27 the plan, the schedule and the live points follow the measured speed; when
    the steps then slow down, the next revision shrinks the plan again."""
    clock = FakeClock()
    p = plan(180, seconds_per_step=0.56, seconds_per_eval=5.6, probe_seconds=9, live_seconds=10.0)
    live = LivePoints(live_steps(p.steps, 20), p.steps_per_epoch, clock.advance(0.5), [],
                      clock=clock)  # fmt: skip
    run = _Run(p, live)
    settings = RunSettings(seed=0, budget=180.0, started=clock.now - 9.0, live_points=20)
    seen = []
    revision = PlanRevision(run, FAST, settings, lambda a, b: seen.append((a, b)), clock=clock)
    assert revision.step == 27

    def take(steps: range, seconds: float) -> None:
        for step in steps:
            clock.advance(seconds)()
            run.optimizer.step()
            run.scheduler.step()
            live.after_step(step, torch.tensor(0.0), torch.tensor(0), step)
            revision.after_step(step)

    revision.start()
    take(range(1, 28), 0.465)
    assert live.taken == 2 and live.seconds == pytest.approx(1.0)
    after = run.plan
    assert after.seconds_per_step == pytest.approx(0.465) and after.revised_at == 27
    # 180 s less the 22.555 s used, 18 points (0.5 s each) and 2 tests still to come
    assert after.steps == 27 + math.floor((180 - 22.555 - 18 * 0.5 - 2 * 5.6) / 0.465) == 322
    assert run.total_steps == run.history.plan.steps == 322
    assert after.live_seconds == pytest.approx(1.0 + 18 * 0.5)  # spent, and still to come
    assert seen == [(p, after)] and live.last_step == 322 and len(live.steps) == 20
    factor = run.scheduler.lr_lambdas[0]
    assert (factor.total_steps, factor.warmup_steps) == (322, 64)
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * factor(27))
    assert revision.step == math.ceil(0.3 * 322) == 97
    # the steps that follow run slower (0.6 s): the revision after step 97 shrinks the plan
    take(range(28, 97), 0.6)
    assert len(seen) == 1  # nothing between the revisions
    take(range(97, 98), 0.6)
    second = run.plan
    assert len(seen) == 2 and second.revised_at == 97 and second.steps < 322
    assert second.seconds_per_step == pytest.approx((27 * 0.465 + 70 * 0.6) / 97)
    assert factor.warmup_steps == 64  # the warm-up was over: its length stays
    assert revision.step == math.ceil(0.6 * second.steps)
