"""One epoch of :func:`~resnet_lessons.training.fit`: its steps, and the live points.

Every step is :func:`~resnet_lessons.training.steps.train_step` on this process's share of a
shuffled batch. A live point (:class:`LivePoints`) is taken after chosen steps: the training
loss and accuracy over the steps since the previous point, and the accuracy on a fixed
subset of the test images (the whole test set is tested at the end of every epoch, by the
loop). Twenty points make a curve worth watching during a 3-minute run that has only two
epoch ends.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..data import FashionMNIST, iterate_batches, prepare_batch
from .distributed import share
from .evaluation import autocast, evaluate
from .recipes import Recipe, classification_loss
from .settings import RunSettings
from .steps import train_step

#: Live points a drawn run takes by default (``fit(live_points=...)``).
LIVE_POINTS = 20

#: The first this many test images are the fixed subset a live point is tested on: enough to
#: tell 0.85 from 0.90 (a standard error of about 0.01), 10x cheaper than the whole set.
LIVE_TEST_IMAGES = 1000


def live_steps(total_steps: int, points: int) -> list[int]:
    """The steps (1-based, counted over the whole run) after which a live point is taken:
    ``points`` of them, evenly spread, the last one at ``total_steps``; fewer when the run
    has fewer steps than points."""
    points = min(points, total_steps)
    return sorted({round(i * total_steps / points) for i in range(1, points + 1)})


class LivePoints:
    """Takes the live points of a run: ``points`` (a list of dicts ``epoch, train_loss,
    train_acc, test_acc``) grows after each chosen step; ``draw`` (if given) is called with
    the list after each new point. ``clock`` times the points' tests and drawings
    (``seconds``, the total), which a budget's plan counts in."""

    def __init__(
        self,
        steps: list[int],
        steps_per_epoch: int,
        evaluate_subset: Callable[[], float],
        points: list[dict[str, float]],
        draw: Callable[[list[dict[str, float]]], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.steps = set(steps)
        self.last_step = max(steps, default=0)
        self.steps_per_epoch = steps_per_epoch
        self.evaluate_subset = evaluate_subset
        self.points = points
        self.draw = draw
        self.clock = clock
        self.seconds = 0.0
        self._since = (0.0, 0.0, 0)  # loss sum, correct, count at the previous point
        self._pending: dict[str, float] | None = None  # a point waiting for its epoch's test

    def respan(self, total_steps: int, done_steps: int, points: int) -> None:
        """The run now ends at ``total_steps`` (its plan was revised after ``done_steps``):
        the points not yet taken, of ``points`` in all, are spread evenly over the rest."""
        taken = {step for step in self.steps if step <= done_steps}
        later = live_steps(total_steps - done_steps, points - len(taken))
        self.steps = taken | {done_steps + step for step in later}
        self.last_step = total_steps

    @property
    def taken(self) -> int:
        """Points taken so far."""
        return len(self.points)

    def start_epoch(self) -> None:
        """The epoch's sums start again from zero."""
        self._since = (0.0, 0.0, 0)

    def after_step(self, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, count: int):
        """Called after every step with the epoch's running sums: takes a point when ``step``
        (1-based, over the run) is one of the chosen steps. A point on an epoch's last step
        waits for that epoch's test of the whole test set (:meth:`end_epoch`)."""
        if step not in self.steps:
            return
        started = self.clock()
        loss_total, correct_total = loss_sum.item(), correct.item()
        last_loss, last_correct, last_count = self._since
        n = max(1, count - last_count)
        self._since = (loss_total, correct_total, count)
        point = {
            "epoch": round(step / self.steps_per_epoch, 3),
            "train_loss": (loss_total - last_loss) / n,
            "train_acc": (correct_total - last_correct) / n,
            "test_acc": float("nan"),
        }
        self.points.append(point)
        if step % self.steps_per_epoch == 0 or step == self.last_step:
            self._pending = point  # the epoch ends here: its whole test set follows
        else:
            point["test_acc"] = self.evaluate_subset()
            self._draw()
        self.seconds += self.clock() - started

    def end_epoch(self, test_acc: float) -> None:
        """The epoch's test accuracy on the whole test set completes a point taken on its last
        step (the subset is tested instead when the epoch was not tested). Not drawn here:
        the loop redraws the curves after every epoch."""
        point, self._pending = self._pending, None
        if point is None:
            return
        started = self.clock()
        point["test_acc"] = test_acc if test_acc == test_acc else self.evaluate_subset()
        self.seconds += self.clock() - started

    def _draw(self) -> None:
        if self.draw is not None:
            self.draw(self.points)


def subset_evaluator(
    model: nn.Module, data: FashionMNIST, recipe: Recipe, settings: RunSettings
) -> Callable[[], float]:
    """Accuracy of ``model`` (as it is when called) on the fixed live subset of the test
    images, computed the way the epoch's test is."""
    n = min(LIVE_TEST_IMAGES, len(data.test_labels))
    return functools.partial(
        evaluate,
        model,
        data.test_images[:n],
        data.test_labels[:n],
        device=settings.device,
        resize=recipe.resize,
        batch_size=recipe.eval_batch_size,
        channels_last=settings.speedups.channels_last,
        bf16=settings.speedups.bf16,
    )


def _layout(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def augment(x: torch.Tensor, recipe: Recipe, device: torch.device) -> torch.Tensor:
    """The recipe's augmentation of a prepared batch ``(N, 1, S, S)``: random horizontal
    flips and input noise, both drawn from the (checkpointed) CPU torch RNG."""
    if recipe.flip:
        mirror = torch.rand(x.shape[0]) < 0.5
        x = torch.where(mirror.to(device)[:, None, None, None], x.flip(3), x)
    if recipe.noise > 0:  # the images are normalised: std 1 before the noise
        noise = torch.randn(x.shape).to(device).contiguous(memory_format=_layout(x))
        x = x + recipe.noise * noise
    return x


def train_epoch(
    model: nn.Module,
    data: FashionMNIST,
    recipe: Recipe,
    settings: RunSettings,
    run: Any,
    epoch: int,
    bar: Any,
    live: LivePoints | None = None,
    after_step: Callable[[int], None] | None = None,
) -> tuple[float, float]:
    """One pass over the training images with :func:`train_step`, or as much of one as
    ``run.total_steps`` (the steps of the whole run, which a revised plan may change while
    the epoch runs) leaves; ``run`` holds the optimizer and scheduler. ``after_step(step)``
    is called after every step (``step`` counted over the whole run). Returns (mean loss,
    accuracy) over all ranks."""
    device, speedups = settings.device, settings.speedups
    rank, world = settings.rank, settings.world
    model.train()
    generator = torch.Generator().manual_seed(settings.seed * 1000 + epoch)  # same on every rank
    batches = iterate_batches(
        data.train_images, data.train_labels, recipe.batch_size, shuffle=True, generator=generator
    )
    forward_context = functools.partial(autocast, device, speedups.bf16)
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = steps = 0
    first_step = (epoch - 1) * run.steps_per_epoch
    if live is not None:
        live.start_epoch()
    for images, labels in batches:
        n = labels.shape[0]
        if n < 2 * world:  # a last batch too small to share: BN needs 2 images per rank
            continue
        if first_step + steps >= run.total_steps:  # a time budget's last, partial epoch
            break
        steps += 1
        part = share(n, rank, world)
        x = prepare_batch(
            images[part], device, resize=recipe.resize, channels_last=speedups.channels_last
        )  # (n / world, 1, S, S)
        x = augment(x, recipe, device)
        y = labels[part].to(device, non_blocking=True)
        # sum * world / n: DDP averages gradients over ranks, so this gives the mean over
        # the whole global batch even when the shares differ by one image
        loss_fn = classification_loss(recipe, world / n)
        loss, scores = train_step(
            model,
            run.optimizer,
            x,
            y,
            loss_fn,
            scheduler=run.scheduler,
            forward_context=forward_context,
        )
        with torch.no_grad():
            loss_sum += loss.detach() * (n / world)
            correct += (scores.argmax(1) == y).sum()
        count += y.shape[0]
        bar.update(1)
        if live is not None:
            live.after_step(first_step + steps, loss_sum, correct, count)
        if after_step is not None:
            after_step(first_step + steps)
    totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(count, device=device)])
    if world > 1:
        on_gpu = dist.get_backend() == "nccl"  # nccl reduces GPU tensors, gloo CPU ones
        totals = totals.to(device if on_gpu else "cpu")
        dist.all_reduce(totals)
    total_loss, total_correct, total_count = totals.tolist()
    return total_loss / total_count, total_correct / total_count
