"""One training step, and the short loop the experiments of notebooks 06-09 train with.

:func:`train_step` is forward, loss, backward, update, (schedule): every optimizer step the
package takes goes through it, ``fit``'s epochs, the probe that times them, the regression
fit and the experiments' short runs. :func:`run_steps` repeats it over a stream of batches
and returns each step's loss (measured before its update).
"""

from __future__ import annotations

import contextlib
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
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    forward_context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch: ``loss_fn(model(inputs), targets)``, backward, the
    optimizer's step, then the ``scheduler``'s. The forward pass runs inside
    ``forward_context()`` when given (``fit`` passes its bfloat16 autocast). Returns
    ``(loss, outputs)``, both computed before the update."""
    with forward_context() if forward_context is not None else contextlib.nullcontext():
        outputs = model(inputs)
    loss = loss_fn(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss, outputs


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
        loss, _ = train_step(model, optimizer, inputs, targets, loss_fn, scheduler=scheduler)
        losses.append(loss.item())
        if after_step is not None:
            after_step(step)
    return losses
