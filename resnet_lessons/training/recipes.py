"""Recipes: every number training needs, and the optimizer and schedule they make.

:data:`LECTURE` is the lecture's recipe exactly; :data:`FAST` the same ResNet-18 tuned for
a laptop CPU. :func:`~resnet_lessons.training.fit` takes either (or its name), and a time
budget sizes either to the machine (:mod:`resnet_lessons.training.budget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int

SCHEDULES = ("constant", "onecycle", "warmup")


@dataclass(frozen=True)
class Recipe:
    """How to train: every number :func:`fit` needs, with the reason for each default.

    Change one field with ``dataclasses.replace(FAST, epochs=5)`` or the overrides of
    :func:`fit` (``epochs=``, ``batch_size=``, ``lr=``, ``resize=``).
    """

    name: str = "custom"  # shown on the progress bar and stored in checkpoints
    epochs: int = 10  # passes over the 60000 training images
    batch_size: int = 256  # images per optimizer step (summed over all ranks under torchrun)
    lr: float = 0.05  # the learning rate (the peak learning rate with the one-cycle schedule)
    resize: int | None = None  # side in pixels the 28x28 images are resized to; None keeps 28
    momentum: float = 0.0  # SGD momentum; 0 is plain SGD
    nesterov: bool = False  # Nesterov's look-ahead momentum
    weight_decay: float = 0.0  # L2 penalty on the weights (not on BN and biases)
    schedule: str = "constant"  # "constant", "onecycle" (warm up, cosine to ~0) or "warmup"
    warmup: float = 0.25  # fraction of all steps spent warming up ("onecycle", "warmup")
    label_smoothing: float = 0.0  # target 1 - eps on the true class, eps/10 spread on all
    flip: bool = False  # mirror half of the training images left-right (clothes are symmetric)
    noise: float = 0.0  # std of Gaussian noise added to the normalised training images
    xavier_init: bool = False  # re-initialise conv and linear weights as d2l.train_ch6 does
    channels_last: bool = False  # NHWC layout on a GPU (fit uses NHWC on every CPU: faster)
    bf16: bool = False  # bfloat16 autocast for the forward pass, where native (fp32 weights)
    eval_batch_size: int = 1000  # evaluation has no backward pass, so larger batches fit

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        if self.resize is not None:
            check_int("resize", self.resize, 1)
        for name in ("lr", "momentum", "weight_decay", "warmup", "label_smoothing", "noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {value!r}.")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be above 0, got {self.lr}; the lecture uses 0.05.")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}.")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule={self.schedule!r} is not known; use one of {', '.join(SCHEDULES)}."
            )


#: The lecture's recipe, exactly: ``lr, num_epochs, batch_size = 0.05, 10, 256`` with
#: ``load_data_fashion_mnist(batch_size, resize=96)`` and ``d2l.train_ch6`` (plain SGD,
#: cross-entropy, Xavier-uniform weights). One difference: batches are normalised with the
#: data set's mean and standard deviation (BN right after the first conv makes that nearly
#: irrelevant).
LECTURE = Recipe(
    name="lecture",
    epochs=10,  # the lecture's num_epochs
    batch_size=256,  # the lecture's batch_size
    lr=0.05,  # the lecture's lr, constant, plain SGD (momentum 0)
    resize=96,  # load_data_fashion_mnist(batch_size, resize=96)
    xavier_init=True,  # d2l.train_ch6 applies nn.init.xavier_uniform_ to convs and linears
)

#: The same ResNet-18 tuned for a laptop CPU (measured in ``benchmarks/README.md``).
FAST = Recipe(
    name="fast",
    epochs=5,  # 0.923 after 5, 0.916 after 4, 0.905 after 3; ~35 s each on AVX-512 BF16
    batch_size=256,  # as fast to learn per epoch as 128 here, and ~12% more images/s
    lr=0.1,  # peak of the one-cycle schedule; 0.2 was no better, 0.05 suits batch 128
    resize=None,  # native 28x28: 12x fewer pixels than 96x96 (the stem still leaves 7x7)
    momentum=0.9,  # momentum averages the noisy gradients of small batches
    nesterov=True,  # a small, free improvement over heavy-ball momentum
    weight_decay=5e-4,  # the usual ResNet value; keeps BN-scaled weights from growing
    schedule="onecycle",  # warm up then anneal: large steps early, fine steps at the end
    warmup=0.2,  # a fifth of the steps warming up tames the first, unnormalised updates
    label_smoothing=0.1,  # softer targets keep a short, high-lr run from overconfidence
    flip=False,  # random flips did not help in 4 epochs (0.915 vs 0.916, measured)
    channels_last=True,  # NHWC lets oneDNN use its fast CPU kernels (needed for bf16 below)
    bf16=True,  # with NHWC: ~1.3x (28 px) to 1.9x (96 px) images/s on AVX-512 BF16
)

RECIPES: dict[str, Recipe] = {"lecture": LECTURE, "fast": FAST}


def get_recipe(recipe: Recipe | str) -> Recipe:
    """The recipe called ``recipe`` (``"lecture"`` or ``"fast"``), or ``recipe`` itself."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}.")
    return RECIPES[recipe]


def recipe_for(device: torch.device | str) -> Recipe:
    """The recipe notebook 05 trains with on ``device``: :data:`LECTURE` on a GPU (CUDA or
    MPS), where its 10 epochs at 96x96 are affordable, :data:`FAST` on a CPU (on a time
    budget), where the lecture's epochs would take hours."""
    return FAST if torch.device(device).type == "cpu" else LECTURE


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The optimizer's two parameter groups: ``weight_decay`` on conv and linear weights,
    none on BN scales and biases (decaying those only shrinks what BN re-normalises anyway)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with the recipe's momentum; weight decay on conv and linear weights only
    (:func:`parameter_groups`)."""
    groups = parameter_groups(model, recipe.weight_decay)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    steps_per_epoch: int,
    total_steps: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's learning rate per step: constant; ``"onecycle"``
    (:func:`one_cycle_schedule`, warm-up over ``warmup`` of the steps); or ``"warmup"``, the
    same linear warm-up and then constant (Goyal et al. 2017's gradual warm-up, for a
    learning rate scaled up with the batch). The steps span ``total_steps`` (a time budget's
    plan) or ``recipe.epochs * steps_per_epoch``."""
    total = recipe.epochs * steps_per_epoch if total_steps is None else total_steps
    if recipe.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = round(recipe.warmup * total)
    if recipe.schedule == "warmup":
        return warmup_schedule(optimizer, warmup)
    return one_cycle_schedule(optimizer, total, warmup)


def one_cycle_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    *,
    start: float = 1 / 25,
    end: float = 1 / 25e3,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The package's one warm-up-and-cosine schedule, for ``fit`` and the regression fit
    alike: the learning rate times :class:`OneCycle`'s factor (from ``start`` up to 1 over
    ``warmup_steps``, then down along a cosine to ``end`` at step ``total_steps - 1``, the
    last step taken)."""
    factor = OneCycle(total_steps, warmup_steps, start, end)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class OneCycle:
    """The factor of :func:`one_cycle_schedule` at a step. An object, not a closure, so that
    :func:`respan` can stretch it to a revised number of steps and ``LambdaLR.state_dict()``
    saves its numbers with a checkpoint."""

    def __init__(self, total_steps: int, warmup_steps: int, start: float, end: float) -> None:
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.start, self.end = start, end

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return warmup_factor(step, self.warmup_steps, self.start)
        span = max(1, self.total_steps - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.end + (1 - self.end) * 0.5 * (1 + math.cos(math.pi * progress))


class Warmup:
    """The factor of :func:`warmup_schedule`: :func:`warmup_factor` over ``warmup_steps``."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        return warmup_factor(step, self.warmup_steps)


def warmup_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate times :func:`warmup_factor`: a linear warm-up over ``warmup_steps``
    steps, then constant."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Warmup(warmup_steps))


def respan(
    scheduler: torch.optim.lr_scheduler.LRScheduler, recipe: Recipe, total_steps: int
) -> None:
    """Stretch (or shrink) the schedule :func:`make_scheduler` made to ``total_steps``, in the
    middle of a run: a budget's plan revised from the run's own speed. A warm-up still under
    way stays ``recipe.warmup`` of all the steps (one already over keeps its length); the
    next step already takes the new learning rate."""
    factors = getattr(scheduler, "lr_lambdas", [])
    for factor in factors:
        if isinstance(factor, OneCycle):
            factor.total_steps = total_steps
        warming = (
            isinstance(factor, OneCycle | Warmup) and scheduler.last_epoch < factor.warmup_steps
        )
        if warming:
            factor.warmup_steps = max(scheduler.last_epoch, round(recipe.warmup * total_steps))
    groups = scheduler.optimizer.param_groups
    for group, base, factor in zip(groups, scheduler.base_lrs, factors, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in groups]


def warmup_factor(step: int, warmup_steps: int, start: float = 1 / 25) -> float:
    """The learning rate's factor at ``step`` of a linear warm-up (Goyal et al. 2017): from
    ``start`` at step 0 up to 1 at ``warmup_steps``, and 1 from then on."""
    if step >= warmup_steps:
        return 1.0
    return start + (1 - start) * step / warmup_steps


def classification_loss(recipe: Recipe, scale: float) -> Callable:
    """``fit``'s loss for one share of a batch: the cross-entropy of the float32 scores with
    the recipe's label smoothing, summed over the share and times ``scale``."""

    def loss_fn(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = F.cross_entropy(
            scores.float(), labels, reduction="none", label_smoothing=recipe.label_smoothing
        )
        return losses.sum() * scale

    return loss_fn


def xavier_init(model: nn.Module) -> None:
    """``d2l.train_ch6``'s initialisation: Xavier-uniform weights for convs and linears."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)


def scale_lr(lr: float, batch_size: int, base_batch_size: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): when the batch grows k-fold, multiply the
    learning rate by k. ``lr`` suits ``base_batch_size``; returns the rate for
    ``batch_size``. With k times fewer steps per epoch, each step must go k times further."""
    check_int("batch_size", batch_size)
    check_int("base_batch_size", base_batch_size)
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number above 0, got {lr!r}.")
    return lr * batch_size / base_batch_size
