"""Timing this machine for a time budget: a few real training steps and one test batch on a
throw-away copy of the model (:func:`measure_speed`), and the plan made from them.

The arithmetic (:func:`~resnet_lessons.budget.probe`, :func:`~resnet_lessons.budget.make_plan`)
lives in :mod:`resnet_lessons.budget`, tested with a fake clock; this module runs it on the
real model, data and device.
"""

from __future__ import annotations

import copy
import math
import os
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .budget import PROBE_FRACTION, Plan, make_plan, probe
from .data import FashionMNIST, prepare_batch
from .evaluation import _autocast, predict, synchronize
from .recipes import Recipe, _optimizer
from .runtime import device_name
from .speed import Speedups

#: The probe repeats one batch; a run gathers every batch from random rows and evaluates
#: the whole test set. A run of 3 minutes on a 2-core AVX2 CPU took 4% longer per step than
#: its probe, so the plan counts steps that much longer.
PROBE_MARGIN = 1.04


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
    optimizer = _optimizer(copy_, recipe)
    local = math.ceil(recipe.batch_size / world)  # rank 0's share of a batch, the largest
    local = min(local, len(data.train_labels))
    images, labels = data.train_images[:local], data.train_labels[:local].to(device)
    n_eval = min(recipe.eval_batch_size, len(data.test_labels))

    def step() -> None:
        copy_.train()
        x = prepare_batch(
            images, device, resize=recipe.resize, channels_last=speedups.channels_last
        )
        with _autocast(device, speedups.bf16):
            scores = copy_(x)
        loss = F.cross_entropy(scores.float(), labels, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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


def _probe_and_plan(
    model: nn.Module,
    data: FashionMNIST,
    recipe: Recipe,
    device: torch.device,
    speedups: Speedups,
    budget: float,
    steps_per_epoch: int,
    checkpoint: str | os.PathLike | None,
    rank: int,
    world: int,
    started: float,
) -> Plan:
    """Time a few steps and one test batch on a copy of ``model``; plan the budget (rank 0
    probes, every rank follows its plan)."""
    shared: list[Any] = [None]
    if rank == 0:
        limit = PROBE_FRACTION * budget - (time.perf_counter() - started)
        per_step, per_eval = measure_speed(model, data, recipe, device, speedups, limit, world)
        shared[0] = make_plan(
            budget,
            seconds_per_step=per_step,
            seconds_per_eval=per_eval,
            steps_per_epoch=steps_per_epoch,
            batch_size=recipe.batch_size,
            probe_seconds=time.perf_counter() - started,
            seconds_per_epoch_end=0.5 if checkpoint is not None else 0.0,
            device=device_name(device),
        ).to_dict()
    if world > 1:
        dist.broadcast_object_list(shared, src=0)
    return Plan.from_dict(shared[0])
