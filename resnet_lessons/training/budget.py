"""Training sized to a time budget: measure this machine, then plan the run to fit.

``fit(..., budget=180)`` first runs a short *probe* (about 3% of the budget): a few
training steps and one test batch on a throw-away copy of the model, timed. From those
times :func:`make_plan` works out how many optimizer steps fit in what is left, evaluation
included, and the one-cycle schedule then spans exactly those steps, so even a run of 1.6
epochs ends with its learning rate annealed. The plan is one line for people
(:meth:`Plan.describe`) and a dict for ``metrics.json`` and checkpoints
(:meth:`Plan.to_dict`), so ``--resume`` follows the same plan.

The probe repeats one batch for a few seconds; the run that follows can be faster or slower
(on a shared machine by 10-20%, and its speed can change as it runs). So after a tenth of
its steps, and again after 30% and 60% of them, a fresh run plans the rest from the steps it
really took (:func:`revise_plan`, applied by :mod:`~resnet_lessons.training.revision`), and
ends close to its budget either way.

The arithmetic (:func:`probe`, :func:`make_plan`) takes its clock as an argument: the tests
drive it with a fake clock, so it is checked without timing anything. :func:`measure_speed`
runs the probe on the real model, data and device, and :func:`plan_run` turns what it measured
into the plan: the one function ``fit``, the command line and the doctor plan a budget with.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn

from .._checks import format_seconds
from ..data import FashionMNIST, prepare_batch
from .evaluation import autocast, predict, synchronize
from .recipes import Recipe, classification_loss, make_optimizer
from .speed import Speedups
from .steps import train_step

__all__ = [
    "CHECKPOINT_SECONDS",
    "PROBE_FRACTION",
    "PROBE_MARGIN",
    "REVISE_AT",
    "Plan",
    "ProbeResult",
    "check_budget",
    "format_seconds",
    "make_plan",
    "measure_speed",
    "plan_run",
    "probe",
    "revise_plan",
    "revision_step",
    "steps_per_epoch",
]

#: Seconds a plan counts for writing a checkpoint at the end of every epoch.
CHECKPOINT_SECONDS = 0.5

#: The share of the budget the probe aims at, preparing the model included (its last step
#: can run a few tenths of a second past it).
PROBE_FRACTION = 0.03

Clock = Callable[[], float]


@dataclass(frozen=True)
class Plan:
    """How a run spends its budget. Seconds are wall-clock seconds on the probed machine."""

    budget: float  # seconds asked for, probe included
    probe_seconds: float  # what the probe took
    seconds_per_step: float  # one optimizer step of batch_size images (measured)
    seconds_per_eval: float  # one pass over the test images (estimated from one batch)
    batch_size: int  # images per optimizer step
    steps_per_epoch: int  # optimizer steps in one pass over the training images
    steps: int  # optimizer steps planned: the one-cycle schedule spans exactly these
    device: str = "cpu"  # where it was measured, e.g. "cpu (AVX2)"
    live_seconds: float = 0.0  # the live points' tests and drawings, all of them (estimated)
    revised_at: int = 0  # the step after which the run's own steps re-sized it (0: never)

    @property
    def images_per_second(self) -> float:
        """Training images per second, as the probe measured it."""
        return self.batch_size / self.seconds_per_step

    @property
    def epochs(self) -> float:
        """Passes over the training images the plan makes (a fraction for a part of one)."""
        return self.steps / self.steps_per_epoch

    @property
    def images(self) -> int:
        """Training images the plan shows the network (with repeats across epochs)."""
        return self.steps * self.batch_size

    @property
    def evaluations(self) -> int:
        """Tests on the test images: after every whole epoch and after the last step."""
        return math.ceil(self.steps / self.steps_per_epoch)

    @property
    def expected_seconds(self) -> float:
        """What the plan should take, probe included."""
        return (
            self.probe_seconds
            + self.steps * self.seconds_per_step
            + self.evaluations * self.seconds_per_eval
            + self.live_seconds
        )

    def describe(self) -> str:
        """One readable line: ``this CPU trains ~540 images/s; 3 min is ~86,000 images, ...``."""
        kind = self.device.split(" ")[0].split(":")[0]
        where = {"cpu": "CPU", "cuda": "GPU", "mps": "Mac GPU"}.get(kind, "machine")
        return (
            f"this {where} trains ~{self.images_per_second:,.0f} images/s; "
            f"{format_seconds(self.budget)} is ~{self.images:,} images, "
            f"{self.epochs:.1f} epochs ({self.steps} steps of {self.batch_size}, "
            f"{self.evaluations} test{'s' if self.evaluations != 1 else ''}, "
            + (f"live points {self.live_seconds:.1f} s, " if self.live_seconds else "")
            + f"probe {self.probe_seconds:.1f} s)"
        )

    def describe_revision(self, before: Plan) -> str:
        """One line on what :func:`revise_plan` changed: ``after 30 steps: ~470 images/s, not
        ~420; 290 steps, not 263 (1.2 epochs)``, or ``...; the 263 steps stand`` when the
        number of steps did not change."""
        steps = (
            f"{self.steps} steps, not {before.steps} ({self.epochs:.1f} epochs)"
            if self.steps != before.steps
            else f"the {self.steps} steps stand"
        )
        return (
            f"after {self.revised_at} steps: ~{self.images_per_second:,.0f} images/s, not "
            f"~{before.images_per_second:,.0f}; {steps}"
        )

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain data for JSON and ``torch.load(weights_only=True)``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        """The inverse of :meth:`to_dict`; derived keys (``epochs``, ...) are ignored."""
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - {"device", "live_seconds", "revised_at"}
        if missing:
            raise ValueError(f"a stored plan lacks {', '.join(sorted(missing))}: {data!r}")
        return cls(**{k: v for k, v in data.items() if k in names})


def check_budget(budget: object) -> float:
    """``budget`` in seconds as a float, or a ``TypeError``/``ValueError`` that says the fix."""
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise TypeError(f"budget is in seconds, a number; got {budget!r}.")
    if not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive number of seconds, got {budget}.")
    return float(budget)


def make_plan(
    budget: float,
    *,
    seconds_per_step: float,
    seconds_per_eval: float,
    steps_per_epoch: int,
    batch_size: int,
    probe_seconds: float = 0.0,
    seconds_per_epoch_end: float = 0.0,
    device: str = "cpu",
    live_seconds: float = 0.0,
) -> Plan:
    """The most optimizer steps that fit ``budget`` seconds.

    Spent: the probe, ``live_seconds`` (the live points, however long the run), ``steps *
    seconds_per_step``, and at the end of every (whole or last) epoch one test
    (``seconds_per_eval``) plus ``seconds_per_epoch_end`` (a checkpoint).
    Pure arithmetic. Raises ``ValueError`` when not even one step and one test fit, with
    the shortest budget that would.
    """
    budget = check_budget(budget)
    for name, value in (
        ("seconds_per_step", seconds_per_step),
        ("seconds_per_eval", seconds_per_eval),
        ("probe_seconds", probe_seconds),
        ("seconds_per_epoch_end", seconds_per_epoch_end),
        ("live_seconds", live_seconds),
    ):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    if seconds_per_step <= 0:
        raise ValueError(f"seconds_per_step must be above 0, got {seconds_per_step}.")
    if steps_per_epoch < 1 or batch_size < 1:
        raise ValueError(
            f"steps_per_epoch and batch_size must be at least 1, got {steps_per_epoch} and "
            f"{batch_size}."
        )
    per_end = seconds_per_eval + seconds_per_epoch_end
    left = budget - probe_seconds - live_seconds
    steps = _most_steps(left, seconds_per_step, per_end, steps_per_epoch)
    if steps < 1:
        shortest = probe_seconds + live_seconds + seconds_per_step + per_end
        live = f", the live points {live_seconds:.1f} s" if live_seconds else ""
        raise ValueError(
            f"a budget of {budget:g} s is too short here: the probe took {probe_seconds:.1f} s"
            f"{live}, "
            f"one step takes {seconds_per_step:.2f} s and one test {seconds_per_eval:.1f} s; "
            f"give at least {math.ceil(shortest)} s."
        )
    return Plan(
        budget=budget,
        probe_seconds=probe_seconds,
        seconds_per_step=seconds_per_step,
        seconds_per_eval=seconds_per_eval,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        steps=steps,
        device=device,
        live_seconds=live_seconds,
    )


#: A fresh budgeted run re-sizes its plan from its own steps when these fractions of its
#: (then) planned steps are done: early, while the learning rate still warms up, and twice
#: more, in case the machine's speed changes as it runs.
REVISE_AT = (0.1, 0.3, 0.6)


def revision_step(plan: Plan, fraction: float = REVISE_AT[0], after: int = 0) -> int | None:
    """The step after which a run following ``plan`` re-sizes it (:func:`revise_plan`):
    ``fraction`` of the planned steps, at least 10 (the first steps are slow) and at least
    ``after + 1`` (the previous revision's step). ``None`` when that is not before the last
    step; the first revision of a plan of more than 10 steps always comes before it."""
    step = max(10, math.ceil(fraction * plan.steps), after + 1)
    if after == 0 and plan.steps > 1:
        step = min(step, plan.steps - 1)
    return step if step < plan.steps else None


def revise_plan(
    plan: Plan,
    *,
    done_steps: int,
    elapsed: float,
    step_seconds: float,
    live_seconds_left: float,
    live_seconds_spent: float = 0.0,
    seconds_per_epoch_end: float = 0.0,
) -> Plan:
    """``plan`` re-sized from the run itself: ``done_steps`` real steps took ``step_seconds``
    (tests and live points excluded) and the run has used ``elapsed`` seconds of its budget,
    probe included. The probe times a few steps on one repeated batch, on a machine whose
    speed may change from minute to minute; the real steps are a better measure. Returns the
    plan with the most steps (at least ``done_steps``: stop now) whose rest fits the budget: the
    remaining steps at the measured speed, a test at the end of every epoch not yet tested,
    and ``live_seconds_left``. Its ``live_seconds`` become the points' measured seconds
    (``live_seconds_spent``) plus ``live_seconds_left``. Pure arithmetic."""
    if done_steps < 1 or step_seconds <= 0:
        raise ValueError(
            f"a revision needs steps already taken and their time, got {done_steps} steps "
            f"in {step_seconds} s."
        )
    per_step = step_seconds / done_steps
    per_end = plan.seconds_per_eval + seconds_per_epoch_end
    left = plan.budget - elapsed - live_seconds_left
    steps = _most_steps(left, per_step, per_end, plan.steps_per_epoch, done_steps)
    live = live_seconds_spent + live_seconds_left
    return replace(
        plan, seconds_per_step=per_step, steps=steps, revised_at=done_steps, live_seconds=live
    )


def _most_steps(
    left: float, per_step: float, per_end: float, steps_per_epoch: int, done: int = 0
) -> int:
    """The most steps a run can end at, ``done`` of them taken already, when ``left`` seconds
    pay for the steps still to take (``per_step`` each) and a test at the end of every epoch
    not yet tested (``per_end`` each; the test of an epoch ending at ``done`` is still to
    come). At least ``done``."""
    tested = (done - 1) // steps_per_epoch if done > 0 else 0  # epochs ended and tested
    steps = done
    # with t more tests the run can end anywhere in its (tested + t)-th epoch; more tests
    # leave less time for steps
    for tests in range(1, 100_000):
        fits = done + math.floor((left - tests * per_end) / per_step + 1e-9)
        if fits <= (tested + tests - 1) * steps_per_epoch:  # no longer reaches that epoch
            break
        steps = max(steps, min(fits, (tested + tests) * steps_per_epoch))
    return steps


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe` measured."""

    seconds_per_step: float  # mean over the timed steps (the warm-up step excluded)
    seconds_per_eval_batch: float  # one forward pass over one test batch
    timed_steps: int
    seconds: float  # the whole probe, warm-up included


def probe(
    step: Callable[[], object],
    eval_batch: Callable[[], object],
    limit: float,
    *,
    clock: Clock = time.perf_counter,
    max_steps: int = 50,
) -> ProbeResult:
    """Time ``step()`` (one training step) and ``eval_batch()`` (one test batch) within
    ``limit`` seconds.

    One untimed warm-up step (the first allocates memory and picks kernels), then at least
    two timed steps and more while the elapsed time leaves room for one more step and the
    test batch under ``limit``. The limit is kept unless a single step is longer than the
    limit itself. ``clock`` is ``time.perf_counter`` unless a test passes a fake one.
    """
    if not math.isfinite(limit) or limit <= 0:
        raise ValueError(f"the probe's limit must be a positive number of seconds, got {limit}.")
    start = clock()
    step()  # warm-up: not timed
    first = clock()
    eval_batch()
    evaluated = clock()
    eval_seconds = evaluated - first
    times: list[float] = []
    last = evaluated
    while len(times) < max_steps:
        step()
        now = clock()
        times.append(now - last)
        last = now
        mean = sum(times) / len(times)
        if len(times) >= 2 and (now - start) + mean > limit:
            break
    return ProbeResult(
        seconds_per_step=sum(times) / len(times),
        seconds_per_eval_batch=eval_seconds,
        timed_steps=len(times),
        seconds=last - start,
    )


# --------------------------------------------------------------------------- on this machine

#: The probe repeats one batch; a run gathers every batch from random rows and evaluates
#: the whole test set. A run of 3 minutes on a 2-core AVX2 CPU took 4% longer per step than
#: its probe, so the plan counts steps that much longer.
PROBE_MARGIN = 1.04


def steps_per_epoch(n_train: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps in one pass over ``n_train`` images: one per batch of ``batch_size``,
    the last, smaller batch included unless it leaves fewer than 2 images per process
    (batch norm needs 2), which ``fit`` skips."""
    sizes = (min(batch_size, n_train - start) for start in range(0, n_train, batch_size))
    return sum(1 for n in sizes if n >= 2 * world)


def measure_speed(
    model: nn.Module,
    data: FashionMNIST,
    recipe: Recipe,
    device: torch.device,
    speedups: Speedups,
    limit: float,
    world: int = 1,
) -> tuple[float, float]:
    """``(seconds per training step, seconds per evaluation)`` here, timed within about
    ``limit`` seconds on a throw-away copy of ``model``: a few real steps of this process's
    share of a batch, and one test batch scaled to what every epoch evaluates (the test
    images, and the validation images when the data has a split)."""
    copy_ = copy.deepcopy(model)
    optimizer = make_optimizer(copy_, recipe)
    local = math.ceil(recipe.batch_size / world)  # rank 0's share of a batch, the largest
    local = min(local, len(data.train_labels))
    images, labels = data.train_images[:local], data.train_labels[:local].to(device)
    n_eval = min(recipe.eval_batch_size, len(data.test_labels))

    loss_fn = classification_loss(recipe, 1 / local)  # fit's loss: the share's mean
    forward_context = functools.partial(autocast, device, speedups.bf16)

    def step() -> None:
        copy_.train()
        x = prepare_batch(
            images, device, resize=recipe.resize, channels_last=speedups.channels_last
        )
        train_step(copy_, optimizer, x, labels, loss_fn, forward_context=forward_context)
        synchronize(device)

    def eval_batch() -> None:
        predict(
            copy_,
            data.test_images[:n_eval],
            device=device,
            resize=recipe.resize,
            batch_size=n_eval,
            channels_last=speedups.channels_last,
            bf16=speedups.bf16,
        )
        synchronize(device)

    measured = probe(step, eval_batch, max(limit, 1e-3))
    batches = math.ceil(len(data.test_labels) / n_eval)
    if data.val_labels is not None:
        batches += math.ceil(len(data.val_labels) / n_eval)
    return measured.seconds_per_step * PROBE_MARGIN, measured.seconds_per_eval_batch * batches


def plan_run(
    budget: float,
    recipe: Recipe,
    n_train: int,
    *,
    seconds_per_step: float,
    seconds_per_eval: float,
    probe_seconds: float,
    world: int = 1,
    checkpoint: bool = False,
    device: str = "cpu",
    live_seconds: float = 0.0,
) -> Plan:
    """The plan for training ``recipe`` on ``n_train`` images in ``budget`` seconds, from
    what :func:`measure_speed` measured: the one answer ``fit(budget=)``, ``python -m
    resnet_lessons train --minutes`` and ``python -m resnet_lessons doctor`` give. Steps per
    epoch are counted as ``fit`` takes them (:func:`steps_per_epoch`); writing a checkpoint
    is counted as :data:`CHECKPOINT_SECONDS` per epoch."""
    return make_plan(
        budget,
        seconds_per_step=seconds_per_step,
        seconds_per_eval=seconds_per_eval,
        steps_per_epoch=steps_per_epoch(n_train, recipe.batch_size, world),
        batch_size=recipe.batch_size,
        probe_seconds=probe_seconds,
        seconds_per_epoch_end=CHECKPOINT_SECONDS if checkpoint else 0.0,
        device=device,
        live_seconds=live_seconds,
    )
