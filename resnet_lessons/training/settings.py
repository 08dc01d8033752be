"""The run's settings: how one call of :func:`~resnet_lessons.training.fit` runs, besides
its recipe, as one frozen object, checked once before training starts."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch

from .._checks import check_int
from ..data import FashionMNIST
from ..runtime import resolve_device
from .budget import Plan, check_budget
from .distributed import distributed
from .recipes import Recipe
from .speed import Speedups


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How one call of :func:`fit` runs, besides the recipe: one frozen object that travels
    through the loop instead of twenty keyword arguments. ``fit``'s arguments of the same
    names fill it in (see :func:`fit`); the last five it works out itself."""

    seed: int = 0  # epoch e shuffles with seed * 1000 + e: a resumed run draws the same batches
    checkpoint: str | os.PathLike | None = None  # written after every epoch
    resume: bool = False  # continue from checkpoint
    progress: bool = True  # a progress bar
    plot: bool | None = None  # live curves; None: in a notebook only
    on_epoch: Callable[[dict[str, float]], None] | None = None  # called with each new entry
    budget: float | None = None  # seconds for the whole run, probe included
    plan: Plan | None = None  # a ready plan to follow instead of probing
    reference: dict[str, Any] | None = None  # a recorded run drawn under the live curves
    verbose: bool = True  # print what was picked for the device, and the plan
    patience: int | None = None  # early stopping after this many epochs without improvement
    test_each_epoch: bool = True  # False: test once, after the last epoch
    live_points: int = 0  # points taken during the run for the live curves
    device: torch.device = torch.device("cpu")  # resolved from fit(device=...)
    rank: int = 0  # this process under torchrun
    world: int = 1  # the number of processes
    speedups: Speedups | None = None  # how the device computes (prepare_model's choice)
    started: float = 0.0  # time.perf_counter() when fit started: the budget counts from it


def rank_device(device: torch.device, rank: int, world: int) -> torch.device:
    """The device one process trains on: under torchrun (``world`` > 1) a plain ``cuda``
    becomes this process's own GPU, ``cuda:LOCAL_RANK`` (``rank`` without ``LOCAL_RANK``);
    anything else stays as it is."""
    if world > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    return device


def check_settings(
    settings: RunSettings, data: FashionMNIST, recipe: Recipe, device: torch.device | str | None
) -> RunSettings:
    """``settings`` checked against ``data`` and ``recipe``, with the budget as a float and the
    device, rank and world size filled in; raises with the fix for what cannot work."""
    if not isinstance(data, FashionMNIST):
        raise TypeError(
            f"data must be a FashionMNIST from load_fashion_mnist(), got {type(data).__name__}."
        )
    if settings.resume and settings.checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<file> to resume from.")
    check_int("seed", settings.seed, 0)
    patience = settings.patience
    if patience is not None:
        check_int("patience", patience, 1)
        if data.val_images is None:
            raise ValueError(
                f"patience={patience} (early stopping) needs a validation split to watch, and "
                "this data has none. Fix: data = data.split_validation(n), e.g. n = a fifth of "
                f"the {len(data.train_labels)} training images; the test set must not decide "
                "when to stop."
            )
    check_int("live_points", settings.live_points, 0)
    if not isinstance(settings.test_each_epoch, bool):
        raise TypeError(f"test_each_epoch must be True or False, got {settings.test_each_epoch!r}.")
    budget = settings.budget
    if budget is not None:
        budget = check_budget(budget)
    plan = settings.plan
    if plan is not None and not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan from resnet_lessons.training.budget, got {plan!r}.")
    rank, world = distributed()
    device = rank_device(resolve_device(device), rank, world)
    if recipe.batch_size < 2 * world:
        raise ValueError(
            f"batch_size={recipe.batch_size} leaves fewer than 2 images per process for "
            f"{world} processes (BN needs 2); use batch_size >= {2 * world}."
        )
    return dataclasses.replace(settings, budget=budget, device=device, rank=rank, world=world)
