"""Training and evaluation: the loop, a progress bar, live curves, time budgets, data parallel.

:func:`fit` trains a model on a :class:`~resnet_lessons.data.FashionMNIST` and returns its
history, one dict per epoch (``epoch, train_loss, train_acc, test_acc, seconds``), the
numbers the lecture plots. It takes a recipe (:mod:`~resnet_lessons.training.recipes`:
``LECTURE``, the lecture's settings exactly, or ``FAST``, the same ResNet-18 tuned for a laptop
CPU), optionally a time budget (:mod:`~resnet_lessons.training.budget`: the probe and the
plan), and computes on the device in the fastest exact way measured there
(:mod:`~resnet_lessons.training.speed`). Checkpoints live in
:mod:`~resnet_lessons.training.checkpoints`, :func:`predict` and :func:`evaluate` in
:mod:`~resnet_lessons.training.evaluation`. With a validation
split (``data.split_validation(n)``) ``fit(patience=k)`` stops early.

With ``torch.distributed`` initialised (``torchrun``; the set-up is in
:mod:`~resnet_lessons.training.distributed`), the model is wrapped in
``DistributedDataParallel``: every rank draws the same shuffled order, trains on its share of
every global batch, and rank 0 alone logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..data import FashionMNIST
from .budget import PROBE_FRACTION, Plan, measure_speed, plan_run
from .budget import steps_per_epoch as count_steps
from .checkpoints import (
    CHECKPOINT_VERSION,
    check_resumable,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .epoch import LIVE_POINTS, LIVE_TEST_IMAGES, LivePoints, live_steps, subset_evaluator
from .epoch import train_epoch as _train_epoch
from .evaluation import evaluate
from .live import LivePlot, in_notebook, progress_bar, reference_curves, time_one_drawing
from .recipes import Recipe, get_recipe, make_optimizer, make_scheduler, xavier_init
from .revision import PlanRevision, show_revision
from .settings import RunSettings, check_settings
from .speed import Speedups, device_name, native_bf16, pick_speedups, use_small_map_convs


class History(list):
    """What :func:`fit` returns: a list with one dict per epoch, plus how the run was made.

    ``plan``: the :class:`~resnet_lessons.training.budget.Plan` of a budgeted run (revised
    as it ran), else ``None``; ``speedups``: how it computed. With early stopping
    (``fit(patience=...)``), ``best_epoch`` is the epoch whose weights the model was given
    back and ``stopped_early`` whether training stopped before its last epoch. ``points``:
    the live points (``fit(live_points=...)``; :mod:`~resnet_lessons.training.epoch`), dicts
    ``epoch`` (a fraction), ``train_loss`` and ``train_acc`` (since the previous point),
    ``test_acc`` (on the first 1,000 test images; the whole test set at an epoch's end).
    """

    plan: Plan | None = None
    speedups: Speedups | None = None
    best_epoch: int | None = None
    stopped_early: bool = False

    def __init__(self, *entries: Any) -> None:
        super().__init__(*entries)
        self.points: list[dict[str, float]] = []  # each history its own list


#: The keys of one history entry, in order (``val_acc`` follows ``test_acc`` when the data has a
#: validation split).
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_acc", "seconds")


# --------------------------------------------------------------------------- training


def fit(
    model: nn.Module,
    data: FashionMNIST,
    recipe: Recipe | str = "fast",
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    resize: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    plot: bool | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    budget: float | None = None,
    plan: Plan | None = None,
    reference: dict[str, Any] | None = None,
    verbose: bool | None = None,
    patience: int | None = None,
    test_each_epoch: bool = True,
    live_points: int | None = None,
) -> History:
    """Train ``model`` on ``data.train_*``, test on ``data.test_*`` after every epoch (or
    once, at the end, with ``test_each_epoch=False``).

    Args:
        model: takes ``(N, 1, S, S)`` normalised images, returns ``(N, 10)`` scores; moved
            to ``device`` (and to channels_last when the recipe says so). With the lecture
            recipe (``xavier_init``) its conv and linear weights are re-initialised first,
            as ``d2l.train_ch6`` does.
        data: a :class:`~resnet_lessons.data.FashionMNIST` (or ``.subset(...)`` of one).
        recipe: ``"fast"``, ``"lecture"`` or a :class:`Recipe`; ``epochs``, ``batch_size``,
            ``lr`` and ``resize`` override its fields.
        device: ``None``/``"auto"`` (CUDA, MPS, CPU), or a device.
        seed: seeds the shuffling of every epoch (epoch ``e`` uses ``seed * 1000 + e``), so a
            resumed run draws the same batches as an uninterrupted one.
        checkpoint: a file written (atomically) after every epoch: model, optimizer,
            scheduler, RNG state and history.
        resume: continue from ``checkpoint`` at the epoch after the last one saved; the
            recipe and data sizes must match the saved ones.
        progress: show a tqdm progress bar (a widget in a notebook).
        plot: draw the live curves; ``None`` draws them in a notebook only.
        on_epoch: called with each new history entry (on rank 0).
        budget: train for about this many seconds, all included: a probe (about 3% of it)
            times this machine, then the run takes as many optimizer steps as fit (whole
            epochs or a part of one; see :mod:`resnet_lessons.training.budget`), and the one-cycle
            schedule spans exactly those steps. ``epochs`` is then ignored. After 10%, 30%
            and 60% of those steps the run re-plans the rest from its own speed (a printed
            line each; :mod:`resnet_lessons.training.revision`). The plan is printed, returned as
            ``history.plan`` and saved in the checkpoint, so a resumed run follows it.
        plan: a ready :class:`~resnet_lessons.training.budget.Plan` to follow instead of probing.
        reference: a recorded run (the contents of a ``metrics.json`` written by
            ``python -m resnet_lessons train``; see :func:`resnet_lessons.plots.load_run`)
            drawn underneath the live curves from the start, before the first epoch ends.
        verbose: print what was picked for the device and the budget's plan (one line
            each); ``None`` follows ``progress``.
        patience: early stopping. Needs a validation split
            (:meth:`~resnet_lessons.data.FashionMNIST.split_validation`): training stops after
            ``patience`` epochs in a row without a better validation accuracy, and the model
            gets back the weights of its best epoch (``history.best_epoch``). The test set
            plays no part in the decision.
        test_each_epoch: ``False`` tests once, after the last epoch trained (the one early
            stopping stopped at, if it did); the other entries' ``test_acc`` is ``nan``. For
            comparisons that need only the final accuracy: training is the same, step for
            step, and a run on few training images no longer spends much of its time testing. A
            budget's plan still counts a test per epoch, so such a run ends early, not late.
        live_points: how many points to take during the run for the live curves (training
            loss and accuracy since the previous point, accuracy on a fixed subset of 1,000
            test images), kept in ``history.points``; ``None`` takes 20 when the curves are
            drawn and none otherwise. A budget's plan counts their time.

    How the numbers are computed is picked for the device (and said when ``progress``):
    see :func:`resnet_lessons.training.speed.pick_speedups`. The network and its float32 weights are
    the same whatever is picked.

    Returns:
        A :class:`History`: one dict per epoch with ``epoch`` (1-based; a fraction such as
        ``1.6`` for a budget's last, partial epoch), ``train_loss`` (mean
        cross-entropy, label smoothing included), ``train_acc`` (during training, in train
        mode), ``test_acc``, ``val_acc`` (with a validation split only) and ``seconds``
        (the epoch's wall time, evaluation included).
        Under ``torchrun`` every rank returns the history of rank 0.
    """
    recipe = get_recipe(recipe)
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "resize": resize}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    if live_points is None:  # points when the curves are drawn
        drawn = in_notebook() if plot is None else plot
        live_points = LIVE_POINTS if drawn else 0
    settings = RunSettings(
        seed=seed,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        plot=plot,
        on_epoch=on_epoch,
        budget=budget,
        plan=plan,
        reference=reference,
        verbose=progress if verbose is None else verbose,
        patience=patience,
        test_each_epoch=test_each_epoch,
        live_points=live_points,
    )
    settings = check_settings(settings, data, recipe, device)
    started = time.perf_counter()  # a budget counts from here, preparing the model included
    speedups = prepare_model(model, recipe, settings.device)
    try:
        return _fit(
            model, data, recipe, dataclasses.replace(settings, speedups=speedups, started=started)
        )
    finally:
        if speedups.small_maps:  # hand the model back as it came: plain nn.Conv2d layers
            use_small_map_convs(model, enable=False)


def prepare_model(model: nn.Module, recipe: Recipe, device: torch.device) -> Speedups:
    """Move ``model`` to ``device`` and set it up to compute the way that is fastest there
    for ``recipe`` (:func:`~resnet_lessons.training.speed.pick_speedups`): NHWC memory layout,
    small-map convolutions. The numbers it computes stay the same. Returns the choice."""
    speedups = pick_speedups(
        device,
        channels_last=recipe.channels_last,
        bf16=recipe.bf16,
        native_bf16=native_bf16(device),
    )
    model.to(device)
    if speedups.channels_last:
        model.to(memory_format=torch.channels_last)
    if speedups.small_maps:
        use_small_map_convs(model)
    return speedups


@dataclasses.dataclass
class _Run:
    """What one run of :func:`fit` builds and changes while it trains."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    history: History
    steps_per_epoch: int
    total_steps: int
    plan: Plan | None
    best: dict[str, Any] | None  # early stopping: the best epoch so far and its weights
    sizes: dict[str, int]
    live: LivePoints | None = None  # takes the live points (rank 0)
    revision: PlanRevision | None = None  # a fresh budgeted run re-plans as it goes

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


def _fit(model: nn.Module, data: FashionMNIST, recipe: Recipe, settings: RunSettings) -> History:
    run = _start(model, data, recipe, settings)
    history = run.history
    world = settings.world
    trained = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    live = _live_plot(settings, run)
    if settings.rank == 0 and settings.live_points:
        run.live = LivePoints(
            live_steps(run.total_steps, settings.live_points),
            run.steps_per_epoch,
            subset_evaluator(model, data, recipe, settings),
            history.points,
            draw=None if live is None else functools.partial(live.update, history),
        )
    bar = progress_bar(settings, recipe, run.total_steps, len(history) * run.steps_per_epoch)
    if run.revision is not None:
        run.revision.on_revised = functools.partial(show_revision, settings, run, bar, live)
    after_step = run.revision.after_step if run.revision is not None else None
    try:
        epoch = len(history)
        if run.best is not None and epoch - run.best["epoch"] >= settings.patience:
            history.stopped_early = epoch < run.num_epochs  # resumed after early stopping
        elif run.revision is not None:
            run.revision.start()
        while epoch < run.num_epochs and not history.stopped_early:
            epoch += 1
            start = time.perf_counter()
            loss, acc = _train_epoch(
                trained, data, recipe, settings, run, epoch, bar, run.live, after_step
            )
            paused = time.perf_counter()
            steps = min(run.steps_per_epoch, run.total_steps - (epoch - 1) * run.steps_per_epoch)
            last = run.num_epochs  # the plan may have been revised during the epoch
            entry, stop = _end_epoch(model, data, recipe, settings, run, epoch, steps, last)
            if run.live is not None:
                run.live.end_epoch(entry["test_acc"])
            entry.update(train_loss=loss, train_acc=acc)
            entry["seconds"] = time.perf_counter() - start
            history.append(entry)
            bar.set_postfix(loss=f"{loss:.3f}", train=f"{acc:.3f}", test=f"{entry['test_acc']:.3f}")
            if settings.rank == 0:
                _after_epoch(model, recipe, settings, run, entry, live)
            if world > 1:
                dist.barrier()  # the others wait for rank 0's evaluation and checkpoint
            if run.revision is not None:
                run.revision.add_pause(time.perf_counter() - paused)
            if stop:
                history.stopped_early = epoch < run.num_epochs
                break
    finally:
        bar.close()
    if run.best is not None:  # early stopping: give the model its best epoch's weights back
        model.load_state_dict(run.best["model"])
        history.best_epoch = run.best["epoch"]
    if world > 1:
        shared = [list(history), history.points]
        dist.broadcast_object_list(shared, src=0)
        history[:], history.points = shared
    return history


def _start(model: nn.Module, data: FashionMNIST, recipe: Recipe, settings: RunSettings) -> _Run:
    """The optimizer, the plan and the schedule of a run; a resumed run gets back its weights,
    optimizer, schedule, random state and history, a fresh one the recipe's initialisation."""
    optimizer = make_optimizer(model, recipe)
    n_train = len(data.train_labels)
    steps_per_epoch = count_steps(n_train, recipe.batch_size, settings.world)
    if steps_per_epoch == 0:
        raise ValueError(f"{n_train} training images are too few for {settings.world} processes.")
    sizes = {"train": n_train, "test": len(data.test_labels)}
    state = _resumed_state(recipe, settings, sizes) if settings.resume else None
    plan, revise = settings.plan, False
    if state is not None and state.get("plan") is not None:  # follow the plan it started with
        plan = Plan.from_dict(state["plan"])
    elif state is None and plan is None and settings.budget is not None:
        plan = _probe_and_plan(model, data, recipe, settings)
        revise = plan.steps > 10  # a fresh budgeted run re-plans from its own steps
    if plan is not None and plan.steps_per_epoch != steps_per_epoch:
        raise ValueError(
            f"the plan counts {plan.steps_per_epoch} steps per epoch but this data and batch "
            f"size give {steps_per_epoch}; make a new plan."
        )
    total_steps = plan.steps if plan is not None else recipe.epochs * steps_per_epoch
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch, total_steps)
    history = History()
    history.plan, history.speedups, history.points = plan, settings.speedups, []
    if settings.rank == 0 and settings.verbose:
        where = device_name(settings.device)
        print(f"{recipe.name} recipe on {where}: {settings.speedups.describe()}", flush=True)
        if plan is not None:
            print(plan.describe(), flush=True)
    best = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        history.extend(dict(entry) for entry in state["history"])
        history.points.extend(dict(point) for point in state.get("points", []))
        best = state.get("best")
    elif recipe.xavier_init:
        xavier_init(model)
    run = _Run(optimizer, scheduler, history, steps_per_epoch, total_steps, plan, best, sizes)
    if revise:
        run.revision = PlanRevision(run, recipe, settings)
    return run


def _resumed_state(recipe: Recipe, settings: RunSettings, sizes: dict[str, int]) -> dict:
    """The checkpoint to resume from, checked against this run's settings."""
    checkpoint, patience = settings.checkpoint, settings.patience
    state = load_checkpoint(checkpoint)
    check_resumable(state, recipe, sizes, settings.seed, checkpoint)
    if state.get("patience") != patience:
        raise ValueError(
            f"cannot resume from {checkpoint}: it was trained with patience="
            f"{state.get('patience')}, not {patience}. Use the same patience, or start a "
            "fresh run."
        )
    if state.get("plan") is None and (settings.budget is not None or settings.plan is not None):
        raise ValueError(
            f"cannot resume from {checkpoint} with a time budget: it was started without "
            "one. Resume without the budget, or start a fresh run."
        )
    return state


def _live_plot(settings: RunSettings, run: _Run) -> LivePlot | None:
    """The live curves on rank 0, drawn already when there is a history or a reference."""
    draw = in_notebook() if settings.plot is None else settings.plot
    if settings.rank != 0 or not draw:
        return None
    live = LivePlot(run.total_steps / run.steps_per_epoch, reference_curves(settings.reference))
    if run.history or settings.reference is not None:  # the reference shows before epoch 1
        live.update(run.history, run.history.points)
    return live


def _end_epoch(
    model: nn.Module,
    data: FashionMNIST,
    recipe: Recipe,
    settings: RunSettings,
    run: _Run,
    epoch: int,
    steps: int,
    last: int,
) -> tuple[dict[str, float], bool]:
    """Validate and test after an epoch (on rank 0), decide about early stopping; returns
    the epoch's history entry (without its training numbers) and whether to stop."""
    test_acc = val_acc = float("nan")
    kwargs = {
        "device": settings.device,
        "resize": recipe.resize,
        "batch_size": recipe.eval_batch_size,
        "channels_last": settings.speedups.channels_last,
        "bf16": settings.speedups.bf16,
    }
    rank, patience = settings.rank, settings.patience
    if rank == 0 and data.val_images is not None:
        val_acc = evaluate(model, data.val_images, data.val_labels, **kwargs)
    stop = False
    if patience is not None:
        # rank 0 evaluated; every rank keeps the same best weights (DDP keeps them equal)
        decision = [run.best is None or val_acc > run.best["val_acc"]]
        if settings.world > 1:
            dist.broadcast_object_list(decision, src=0)
        if decision[0]:
            run.best = {"epoch": epoch, "val_acc": val_acc, "model": _copy_state(model)}
        stop = epoch - run.best["epoch"] >= patience
    if rank == 0 and (settings.test_each_epoch or stop or epoch == last):
        test_acc = evaluate(model, data.test_images, data.test_labels, **kwargs)
    done = epoch - 1 + steps / run.steps_per_epoch  # a fraction for a partial last epoch
    entry = {
        "epoch": epoch if steps == run.steps_per_epoch else round(done, 2),
        "train_loss": float("nan"),
        "train_acc": float("nan"),
        "test_acc": test_acc,
    }
    if data.val_images is not None:
        entry["val_acc"] = val_acc
    return entry, stop


def _after_epoch(
    model: nn.Module,
    recipe: Recipe,
    settings: RunSettings,
    run: _Run,
    entry: dict[str, float],
    live: LivePlot | None,
) -> None:
    """On rank 0: write the checkpoint, redraw the curves, call ``on_epoch``."""
    if settings.checkpoint is not None:
        save_checkpoint(
            settings.checkpoint,
            {
                "version": CHECKPOINT_VERSION,
                "recipe": dataclasses.asdict(recipe),
                "sizes": run.sizes,
                "seed": settings.seed,
                "model": model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "rng": rng_state(),
                "history": list(run.history),
                "points": list(run.history.points),
                "plan": run.plan.to_dict() if run.plan is not None else None,
                "speedups": settings.speedups.describe(),
                "patience": settings.patience,
                "best": run.best,
            },
        )
    if live is not None:
        live.update(run.history, run.history.points)
    if settings.on_epoch is not None:
        settings.on_epoch(entry)


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s weights and buffers, on the CPU (the device keeps training)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _probe_and_plan(
    model: nn.Module, data: FashionMNIST, recipe: Recipe, settings: RunSettings
) -> Plan:
    """Time a few steps and one test batch on a copy of ``model``; plan the budget (rank 0
    probes, every rank follows its plan)."""
    shared: list[Any] = [None]
    budget, started, world = settings.budget, settings.started, settings.world
    if settings.rank == 0:
        limit = PROBE_FRACTION * budget - (time.perf_counter() - started)
        device, speedups = settings.device, settings.speedups
        per_step, per_eval = measure_speed(model, data, recipe, device, speedups, limit, world)
        live_seconds = 0.0
        if settings.live_points:  # each point tests the subset, and redraws the curves
            n_test = len(data.test_labels)
            per_point = per_eval * min(LIVE_TEST_IMAGES, n_test) / n_test
            if settings.plot or (settings.plot is None and in_notebook()):
                per_point += time_one_drawing()
            live_seconds = settings.live_points * per_point
        shared[0] = plan_run(
            budget,
            recipe,
            len(data.train_labels),
            seconds_per_step=per_step,
            seconds_per_eval=per_eval,
            probe_seconds=time.perf_counter() - started,
            world=world,
            checkpoint=settings.checkpoint is not None,
            device=device_name(device),
            live_seconds=live_seconds,
        )
    if world > 1:  # a Plan travels as plain data
        shared[0] = shared[0].to_dict() if settings.rank == 0 else None
        dist.broadcast_object_list(shared, src=0)
        return Plan.from_dict(shared[0])
    return shared[0]
