"""One training step, and the short loop the experiments of notebooks 06-09 train with.

:func:`train_step` is forward, loss, backward, update; :func:`run_steps` repeats it over a
stream of batches and returns each step's loss (measured before its update). ``fit`` keeps
its own epoch loop (:mod:`~resnet_lessons.training.loop`): it shares each batch across
processes, computes in bfloat16 where that is native and sums its metrics on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn = F.cross_entropy,
) -> torch.Tensor:
    """One optimizer step on one batch; returns the loss, computed before the update."""
    loss = loss_fn(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def run_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn = F.cross_entropy,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    after_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``model`` in place (training mode) with one :func:`train_step` per ``(inputs,
    targets)`` in ``batches``; step the ``scheduler`` after each. ``after_step(n)`` is called
    after the ``n``-th step (1-based), to record something. Returns every step's loss."""
    model.train()
    losses: list[float] = []
    for step, (inputs, targets) in enumerate(batches, start=1):
        loss = train_step(model, optimizer, inputs, targets, loss_fn)
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step(step)
    return losses
