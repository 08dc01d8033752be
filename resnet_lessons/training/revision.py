"""A budgeted run re-sizes its plan from its own steps, three times.

The probe (:mod:`~resnet_lessons.training.budget`) times a few steps on one repeated batch
before training starts. On a shared or throttled machine that can be 10-20% off the speed
of the run that follows, and the speed can change during the run; a plan made from the
probe alone then ends well short of its budget, or runs past it. So after a tenth of its
planned steps, and again after 30% and 60% of them (:data:`~resnet_lessons.training.budget.
REVISE_AT`), a fresh budgeted run times the steps it has really taken and plans the rest
again (:func:`~resnet_lessons.training.budget.revise_plan`): the schedule, the live points,
the progress bar and the curves' x-axis follow the new number of steps. The first revision
comes while the learning rate still warms up; the later ones stretch or shrink the rest of
its cosine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch.distributed as dist

from .budget import CHECKPOINT_SECONDS, REVISE_AT, Plan, revise_plan, revision_step
from .evaluation import synchronize
from .recipes import Recipe, respan
from .settings import RunSettings

Clock = Callable[[], float]


class PlanRevision:
    """Re-plans ``run`` (``fit``'s run: ``plan``, ``total_steps``, ``scheduler``, ``live``,
    ``history``) after the steps :func:`revision_step` picks for each of :data:`REVISE_AT`.
    Call :meth:`start` when the first step begins, add the seconds spent testing between
    steps with :meth:`add_pause`, and call :meth:`after_step` after every step.
    ``on_revised(before, after)`` is called on every rank with the two plans. Times come from
    ``clock`` (a fake one in the tests)."""

    def __init__(
        self,
        run: Any,
        recipe: Recipe,
        settings: RunSettings,
        on_revised: Callable[[Plan, Plan], None] | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.run, self.recipe, self.settings = run, recipe, settings
        self.fractions = list(REVISE_AT[1:])  # the revisions after the first
        self.step = revision_step(run.plan, REVISE_AT[0])
        self.on_revised = on_revised
        self.clock = clock
        self.started = 0.0
        self.paused = 0.0  # seconds of tests between the steps so far

    def start(self) -> None:
        """The run's first step begins now."""
        self.started = self.clock()

    def add_pause(self, seconds: float) -> None:
        """``seconds`` went to something other than steps (an epoch's test, a checkpoint)."""
        self.paused += seconds

    def after_step(self, step: int) -> None:
        """Re-plan after a chosen step; nothing after any other."""
        if step != self.step:
            return
        run, settings = self.run, self.settings
        shared: list[Any] = [None]
        if settings.rank == 0:
            synchronize(settings.device)  # a GPU's queued steps count in the time
            now = self.clock()
            live = run.live
            live_seconds = live.seconds if live is not None else 0.0
            planned_points = settings.live_points if live is not None else 0
            left = planned_points - (live.taken if live is not None else 0)
            per_point = (
                live_seconds / live.taken
                if live is not None and live.taken
                else run.plan.live_seconds / max(1, planned_points)
            )
            revised = revise_plan(
                run.plan,
                done_steps=step,
                elapsed=now - settings.started,
                step_seconds=now - self.started - self.paused - live_seconds,
                live_seconds_left=max(0, left) * per_point,
                live_seconds_spent=live_seconds,
                seconds_per_epoch_end=CHECKPOINT_SECONDS if settings.checkpoint else 0.0,
            )
            shared[0] = revised.to_dict()
        if settings.world > 1:  # every rank takes the same steps
            dist.broadcast_object_list(shared, src=0)
        before, after = run.plan, Plan.from_dict(shared[0])
        run.plan = run.history.plan = after
        run.total_steps = after.steps
        respan(run.scheduler, self.recipe, after.steps)
        if run.live is not None:
            run.live.respan(after.steps, step, settings.live_points)
        self.step = None
        while self.fractions and self.step is None:
            self.step = revision_step(after, self.fractions.pop(0), after=step)
        if self.on_revised is not None:
            self.on_revised(before, after)


def show_revision(
    settings: RunSettings, run: Any, bar: Any, live: Any, before: Plan, after: Plan
) -> None:
    """What shows the run's length follows its revised plan: the progress ``bar``, the live
    curves' x-axis (``live``, a :class:`~resnet_lessons.training.live.LivePlot` or ``None``),
    and, when ``settings.verbose``, one printed line on what changed (rank 0)."""
    bar.total = after.steps
    bar.refresh()
    if live is not None:
        live.num_epochs = after.steps / run.steps_per_epoch
    if settings.rank == 0 and settings.verbose:
        bar.write(after.describe_revision(before))
