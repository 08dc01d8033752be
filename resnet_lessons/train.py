"""Training and evaluation: the loop, a progress bar, live curves, time budgets, data parallel.

:func:`fit` trains a model on a :class:`~resnet_lessons.data.FashionMNIST` and returns its
history, one dict per epoch (``epoch, train_loss, train_acc, test_acc, seconds``), the
numbers the lecture plots. It takes a recipe (:mod:`resnet_lessons.recipes`: ``LECTURE``,
the lecture's settings exactly, or ``FAST``, the same ResNet-18 tuned for a laptop CPU;
both re-exported here), optionally a time budget (:mod:`resnet_lessons.budget`, timed by
:mod:`resnet_lessons.probing`), and computes on the device in the fastest exact way measured
there (:mod:`resnet_lessons.speed`). Checkpoints live in :mod:`resnet_lessons.checkpoints`,
:func:`predict` and :func:`evaluate` in :mod:`resnet_lessons.evaluation`. With a validation
split (``data.split_validation(n)``) ``fit(patience=k)`` stops early.

With ``torch.distributed`` initialised (``torchrun``; the set-up is in
:mod:`resnet_lessons.parallel`), the model is wrapped in ``DistributedDataParallel``: every
rank draws the same shuffled order, trains on its share of every global batch, and rank 0
alone logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._checks import check_int
from .budget import Plan, check_budget
from .checkpoints import (  # noqa: F401 (re-exported: train is where students look)
    CHECKPOINT_VERSION,
    _check_resumable,
    _rng_state,
    _set_rng_state,
    load_checkpoint,
    save_checkpoint,
)
from .data import FashionMNIST, iterate_batches, prepare_batch
from .evaluation import _autocast, evaluate, predict, synchronize  # noqa: F401 (re-exported)
from .parallel import distributed
from .parallel import share as _share
from .probing import PROBE_MARGIN, _probe_and_plan, measure_speed  # noqa: F401 (re-exported)
from .recipes import (  # noqa: F401 (re-exported)
    FAST,
    LECTURE,
    RECIPES,
    SCHEDULES,
    Recipe,
    _optimizer,
    _scheduler,
    _xavier_init,
    get_recipe,
    recipe_for,
)
from .runtime import device_name, resolve_device  # noqa: F401 (re-exported)
from .speed import Speedups, native_bf16, pick_speedups, use_small_map_convs


class History(list):
    """What :func:`fit` returns: a list with one dict per epoch, plus how the run was made.

    ``plan`` is the :class:`~resnet_lessons.budget.Plan` of a run with a time budget (else
    ``None``); ``speedups`` the :class:`~resnet_lessons.speed.Speedups` it computed with.
    With early stopping (``fit(patience=...)``), ``best_epoch`` is the epoch whose weights the
    model was given back (the best validation accuracy) and ``stopped_early`` says whether
    training stopped before its last epoch.
    """

    plan: Plan | None = None
    speedups: Speedups | None = None
    best_epoch: int | None = None
    stopped_early: bool = False


#: The keys of one history entry, in order (``val_acc`` follows ``test_acc`` when the data has a
#: validation split).
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_acc", "seconds")


# --------------------------------------------------------------------------- notebooks


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, classic Notebook, VS Code, Colab).

    False in a terminal, in plain IPython and under pytest (no kernel there).
    """
    if "IPython" not in sys.modules:  # a notebook kernel always has IPython imported
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    if shell is None:
        return False
    names = {cls.__name__ for cls in type(shell).__mro__}
    return "ZMQInteractiveShell" in names or "IPKernelApp" in getattr(shell, "config", {})


# --------------------------------------------------------------------------- training


class _LivePlot:
    """The lecture's training curves in a notebook output, redrawn after every epoch."""

    def __init__(self, num_epochs: float, reference: dict[str, Any] | None = None) -> None:
        self.num_epochs = num_epochs  # fixed x range: the axes do not jump while training
        self.reference = reference  # {"history": [...], "label": "..."} drawn underneath
        self.handle = None

    def update(self, history: History) -> None:
        from IPython.display import Image, display

        from .plots import plot_history

        ref = self.reference or {}
        figure = plot_history(
            history,
            num_epochs=self.num_epochs,
            reference=ref.get("history"),
            reference_label=ref.get("label", "reference run"),
        )
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        image = Image(data=buffer.getvalue(), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)


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
        budget: train for about this many seconds, all included: a probe (at most 5% of it)
            times this machine, then the run takes as many optimizer steps as fit (whole
            epochs or a part of one; see :mod:`resnet_lessons.budget`), and the one-cycle
            schedule spans exactly those steps. ``epochs`` is then ignored. The plan is
            printed, returned as ``history.plan`` and saved in the checkpoint, so a resumed
            run follows it.
        plan: a ready :class:`~resnet_lessons.budget.Plan` to follow instead of probing.
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

    How the numbers are computed is picked for the device (and said when ``progress``):
    see :func:`resnet_lessons.speed.pick_speedups`. The network and its float32 weights are
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
    if not isinstance(data, FashionMNIST):
        raise TypeError(
            f"data must be a FashionMNIST from load_fashion_mnist(), got {type(data).__name__}."
        )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<file> to resume from.")
    check_int("seed", seed, 0)
    if patience is not None:
        check_int("patience", patience, 1)
        if data.val_images is None:
            raise ValueError(
                f"patience={patience} (early stopping) needs a validation split to watch, and "
                "this data has none. Fix: data = data.split_validation(n), e.g. n = a fifth of "
                f"the {len(data.train_labels)} training images; the test set must not decide "
                "when to stop."
            )
    if not isinstance(test_each_epoch, bool):
        raise TypeError(f"test_each_epoch must be True or False, got {test_each_epoch!r}.")
    if budget is not None:
        budget = check_budget(budget)
    if plan is not None and not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan from resnet_lessons.budget, got {plan!r}.")
    rank, world = distributed()
    device = resolve_device(device)
    device = rank_device(device, rank, world)
    if recipe.batch_size < 2 * world:
        raise ValueError(
            f"batch_size={recipe.batch_size} leaves fewer than 2 images per process for "
            f"{world} processes (BN needs 2); use batch_size >= {2 * world}."
        )

    started = time.perf_counter()
    speedups = prepare_model(model, recipe, device)
    try:
        return _fit(
            model,
            data,
            recipe,
            device=device,
            speedups=speedups,
            seed=seed,
            checkpoint=checkpoint,
            resume=resume,
            progress=progress,
            plot=plot,
            on_epoch=on_epoch,
            budget=budget,
            plan=plan,
            rank=rank,
            world=world,
            started=started,
            reference=reference,
            verbose=progress if verbose is None else verbose,
            patience=patience,
            test_each_epoch=test_each_epoch,
        )
    finally:
        if speedups.small_maps:  # hand the model back as it came: plain nn.Conv2d layers
            use_small_map_convs(model, enable=False)


def rank_device(device: torch.device, rank: int, world: int) -> torch.device:
    """The device one process trains on: under torchrun (``world`` > 1) a plain ``cuda``
    becomes this process's own GPU, ``cuda:LOCAL_RANK`` (``rank`` without ``LOCAL_RANK``);
    anything else stays as it is."""
    if world > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    return device


def prepare_model(model: nn.Module, recipe: Recipe, device: torch.device) -> Speedups:
    """Move ``model`` to ``device`` and set it up to compute the way that is fastest there
    for ``recipe`` (:func:`~resnet_lessons.speed.pick_speedups`): NHWC memory layout,
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


def _fit(
    model: nn.Module,
    data: FashionMNIST,
    recipe: Recipe,
    *,
    device: torch.device,
    speedups: Speedups,
    seed: int,
    checkpoint: str | os.PathLike | None,
    resume: bool,
    progress: bool,
    plot: bool | None,
    on_epoch: Callable[[dict[str, float]], None] | None,
    budget: float | None,
    plan: Plan | None,
    rank: int,
    world: int,
    started: float,
    reference: dict[str, Any] | None,
    verbose: bool,
    patience: int | None,
    test_each_epoch: bool,
) -> History:
    optimizer = _optimizer(model, recipe)
    best: dict[str, Any] | None = None  # early stopping: the best epoch so far and its weights
    n_train = len(data.train_labels)
    steps_per_epoch = sum(1 for n in _batch_sizes(n_train, recipe.batch_size) if n >= 2 * world)
    if steps_per_epoch == 0:
        raise ValueError(f"{n_train} training images are too few for {world} processes.")
    history = History()
    sizes = {"train": n_train, "test": len(data.test_labels)}
    state = None
    if resume:
        state = load_checkpoint(checkpoint)
        _check_resumable(state, recipe, sizes, seed, checkpoint)
        if state.get("patience") != patience:
            raise ValueError(
                f"cannot resume from {checkpoint}: it was trained with patience="
                f"{state.get('patience')}, not {patience}. Use the same patience, or start a "
                "fresh run."
            )
        if state.get("plan") is not None:  # follow the plan the run was started with
            plan = Plan.from_dict(state["plan"])
        elif budget is not None or plan is not None:
            raise ValueError(
                f"cannot resume from {checkpoint} with a time budget: it was started without "
                "one. Resume without the budget, or start a fresh run."
            )
    elif plan is None and budget is not None:
        plan = _probe_and_plan(
            model,
            data,
            recipe,
            device,
            speedups,
            budget,
            steps_per_epoch,
            checkpoint,
            rank,
            world,
            started,
        )
    if plan is not None and plan.steps_per_epoch != steps_per_epoch:
        raise ValueError(
            f"the plan counts {plan.steps_per_epoch} steps per epoch but this data and batch "
            f"size give {steps_per_epoch}; make a new plan."
        )
    total_steps = plan.steps if plan is not None else recipe.epochs * steps_per_epoch
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = _scheduler(optimizer, recipe, steps_per_epoch, total_steps)
    history.plan, history.speedups = plan, speedups
    if rank == 0 and verbose:
        print(f"{recipe.name} recipe on {device_name(device)}: {speedups.describe()}", flush=True)
        if plan is not None:
            print(plan.describe(), flush=True)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        history.extend(dict(entry) for entry in state["history"])
        best = state.get("best")
    elif recipe.xavier_init:
        _xavier_init(model)

    trained = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    # the progress bar and the plot only on rank 0
    show = progress and rank == 0
    draw = in_notebook() if plot is None else plot
    live = None
    if rank == 0 and draw:
        live = _LivePlot(total_steps / steps_per_epoch, _reference_curves(reference))
        if history or reference is not None:  # the reference shows before the first epoch
            live.update(history)
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=min(total_steps, len(history) * steps_per_epoch),
        disable=not show,
        desc=f"{recipe.name}",
        unit="batch",
        dynamic_ncols=True,
        leave=True,
        # At most one update a second: in a notebook each update is a widget message, and
        # thousands of them over a few minutes overflow the kernel's output queue (nbval
        # then loses the end-of-cell message and fails the cell).
        mininterval=1.0,
    )
    try:
        last = num_epochs
        if best is not None and len(history) - best["epoch"] >= patience:
            last = len(history)  # resumed after early stopping: nothing left to train
            history.stopped_early = last < num_epochs
        for epoch in range(len(history) + 1, last + 1):
            start = time.perf_counter()
            steps = min(steps_per_epoch, total_steps - (epoch - 1) * steps_per_epoch)
            loss, acc = _train_epoch(
                trained,
                data,
                recipe,
                device,
                speedups,
                epoch,
                seed,
                optimizer,
                scheduler,
                rank,
                world,
                bar,
                steps,
            )
            test_acc = val_acc = float("nan")
            kwargs = {
                "device": device,
                "resize": recipe.resize,
                "batch_size": recipe.eval_batch_size,
                "channels_last": speedups.channels_last,
                "bf16": speedups.bf16,
            }
            if rank == 0 and data.val_images is not None:
                val_acc = evaluate(model, data.val_images, data.val_labels, **kwargs)
            stop = False
            if patience is not None:
                # rank 0 evaluated; every rank keeps the same best weights (DDP keeps them equal)
                decision = [best is None or val_acc > best["val_acc"]]
                if world > 1:
                    dist.broadcast_object_list(decision, src=0)
                if decision[0]:
                    best = {"epoch": epoch, "val_acc": val_acc, "model": _copy_state(model)}
                stop = epoch - best["epoch"] >= patience
            if rank == 0 and (test_each_epoch or stop or epoch == last):
                test_acc = evaluate(model, data.test_images, data.test_labels, **kwargs)
            done = epoch - 1 + steps / steps_per_epoch  # a fraction for a partial last epoch
            entry = {
                "epoch": epoch if steps == steps_per_epoch else round(done, 2),
                "train_loss": loss,
                "train_acc": acc,
                "test_acc": test_acc,
            }
            if data.val_images is not None:
                entry["val_acc"] = val_acc
            entry["seconds"] = time.perf_counter() - start
            history.append(entry)
            bar.set_postfix(loss=f"{loss:.3f}", train=f"{acc:.3f}", test=f"{test_acc:.3f}")
            if rank == 0:
                if checkpoint is not None:
                    save_checkpoint(
                        checkpoint,
                        {
                            "version": CHECKPOINT_VERSION,
                            "recipe": dataclasses.asdict(recipe),
                            "sizes": sizes,
                            "seed": seed,
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rng": _rng_state(),
                            "history": list(history),
                            "plan": plan.to_dict() if plan is not None else None,
                            "speedups": speedups.describe(),
                            "patience": patience,
                            "best": best,
                        },
                    )
                if live is not None:
                    live.update(history)
                if on_epoch is not None:
                    on_epoch(entry)
            if world > 1:
                dist.barrier()  # the others wait for rank 0's evaluation and checkpoint
            if stop:
                history.stopped_early = epoch < num_epochs
                break
    finally:
        bar.close()
    if best is not None:  # early stopping: give the model its best epoch's weights back
        model.load_state_dict(best["model"])
        history.best_epoch = best["epoch"]
    if world > 1:
        shared = [list(history)]
        dist.broadcast_object_list(shared, src=0)
        history[:] = shared[0]
    return history


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s weights and buffers, on the CPU (the device keeps training)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _reference_curves(run: dict[str, Any] | None) -> dict[str, Any] | None:
    if run is None:
        return None
    from .plots import run_label

    if not isinstance(run, dict) or not isinstance(run.get("history"), list):
        raise TypeError(
            "reference must be a recorded run: the dict in a metrics.json written by "
            "`python -m resnet_lessons train` (load it with resnet_lessons.plots.load_run)."
        )
    return {"history": run["history"], "label": run_label(run)}


def _layout(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _batch_sizes(n: int, batch_size: int) -> list[int]:
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def _train_epoch(
    model: nn.Module,
    data: FashionMNIST,
    recipe: Recipe,
    device: torch.device,
    speedups: Speedups,
    epoch: int,
    seed: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int,
    world: int,
    bar: Any,
    max_steps: int,
) -> tuple[float, float]:
    """One pass over the training images (or its first ``max_steps`` batches); returns
    (mean loss, accuracy) over all ranks."""
    model.train()
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)  # same order on every rank
    batches = iterate_batches(
        data.train_images, data.train_labels, recipe.batch_size, shuffle=True, generator=generator
    )
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = steps = 0
    for images, labels in batches:
        n = labels.shape[0]
        if n < 2 * world:  # a last batch too small to share: BN needs 2 images per rank
            continue
        if steps == max_steps:  # a time budget's last, partial epoch
            break
        steps += 1
        part = _share(n, rank, world)
        x = prepare_batch(
            images[part], device, resize=recipe.resize, channels_last=speedups.channels_last
        )  # (n / world, 1, S, S)
        if recipe.flip:  # random horizontal flips, drawn from the (checkpointed) torch RNG
            mirror = torch.rand(x.shape[0]) < 0.5
            x = torch.where(mirror.to(device)[:, None, None, None], x.flip(3), x)
        if recipe.noise > 0:  # input noise, a regulariser; drawn from the checkpointed CPU RNG
            noise = torch.randn(x.shape).to(device).contiguous(memory_format=_layout(x))
            x = x + recipe.noise * noise  # the images are normalised: std 1 before the noise
        y = labels[part].to(device, non_blocking=True)
        with _autocast(device, speedups.bf16):
            scores = model(x)  # (n / world, 10)
        losses = F.cross_entropy(
            scores.float(), y, reduction="none", label_smoothing=recipe.label_smoothing
        )
        # sum / n * world: DDP averages gradients over ranks, so this gives the mean over
        # the whole global batch even when the shares differ by one image
        loss = losses.sum() * (world / n)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            loss_sum += losses.sum()
            correct += (scores.argmax(1) == y).sum()
        count += y.shape[0]
        bar.update(1)
    totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(count, device=device)])
    if world > 1:
        on_gpu = dist.get_backend() == "nccl"  # nccl reduces GPU tensors, gloo CPU ones
        totals = totals.to(device if on_gpu else "cpu")
        dist.all_reduce(totals)
    total_loss, total_correct, total_count = totals.tolist()
    return total_loss / total_count, total_correct / total_count
