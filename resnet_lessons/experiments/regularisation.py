"""Regularisation, the lecture's answer tested: batch norm's noise and scale invariance,
weight decay as an effective learning rate, the regularisers side by side, Adam vs AdamW.

A student asked why the network uses no regulariser. The lecture's answer: batch norm is
the important one here; weight decay, dropout, noise and early stopping are the
alternatives. This module holds the network and the measurements of notebook 07:

* :func:`narrow_resnet` (:mod:`.narrow`), a small ResNet (8 weighted layers) built from the
  package's own :func:`~resnet_lessons.network.resnet_block`, with the two switches of
  :func:`~resnet_lessons.resnet18`: ``dropout`` before the final linear layer and
  ``batch_norm=False``.
* :func:`batch_norm_noise`: in training mode, batch norm normalises each image with the
  statistics of *its batch*, so one image's outputs change with the other images in its
  batch (Ioffe and Szegedy 2015, section 3.4: "a training example is seen in conjunction
  with other examples in the mini-batch"); in eval mode they do not.
* :func:`scale_invariance`: a convolution followed by batch norm computes the same thing
  when its weights are multiplied by ``c``, and its gradient is divided by ``c``
  (Ioffe and Szegedy 2015, section 3.3; van Laarhoven 2017).
* :func:`activation_scales`: the scale of each stage's output, with and without batch norm.
* :func:`train_steps` records the norm of those scale-invariant weights while training,
  with and without weight decay: the *effective learning rate* ``lr / ||w||^2`` of van
  Laarhoven (2017), "L2 Regularization versus Batch and Weight Normalization".
* :func:`compare_regularisers` (:mod:`.comparison`) trains one network per setting and seed
  with :func:`~resnet_lessons.training.fit` and returns a :class:`Comparison` (a tidy table,
  mean and spread over seeds); :func:`plot_comparison` draws it. Early stopping (Goodfellow,
  Bengio and Courville 2016, *Deep Learning*, section 7.8) is ``fit(patience=...)`` on a
  validation split.
* :func:`adam_decay_step` and :func:`train_steps` with ``optimizer="adam"`` / ``"adamw"``:
  an L2 penalty inside Adam is not weight decay (Loshchilov and Hutter 2019, "Decoupled
  Weight Decay Regularization").

Nothing here seeds, prints or picks a device; the notebook does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import check_int
from ..blocks import Bottleneck, Residual
from ..data import shuffled_batches
from ..training.recipes import parameter_groups
from ..training.steps import run_steps
from .comparison import ROW_KEYS, Comparison, Setting, compare_regularisers, plot_comparison
from .narrow import narrow_resnet

__all__ = [
    "OPTIMIZERS",
    "ROW_KEYS",
    "BatchNoise",
    "Comparison",
    "ScaleCheck",
    "Setting",
    "StepRun",
    "activation_scales",
    "adam_decay_step",
    "batch_norm_noise",
    "compare_regularisers",
    "narrow_resnet",
    "plot_comparison",
    "scale_invariance",
    "scale_invariant_weights",
    "train_steps",
]

#: Optimisers :func:`train_steps` knows.
OPTIMIZERS = ("sgd", "adam", "adamw")


# --------------------------------------------------------------------------- 1. BN's noise


@dataclass(frozen=True)
class BatchNoise:
    """One image's outputs over random batches, in train and in eval mode.

    ``train_outputs`` and ``eval_outputs``: ``(batches, num_classes)``, one row per batch
    the image was put in. ``train_spread`` / ``eval_spread``: the standard deviation over
    the batches, averaged over the outputs (0 means the batch makes no difference).
    ``scale``: the standard deviation of the eval outputs over the classes, to compare with.
    """

    batch_size: int
    train_outputs: torch.Tensor
    eval_outputs: torch.Tensor

    @property
    def train_spread(self) -> float:
        return self.train_outputs.std(dim=0).mean().item()

    @property
    def eval_spread(self) -> float:
        return self.eval_outputs.std(dim=0).mean().item()

    @property
    def scale(self) -> float:
        return self.eval_outputs[0].std().item()


@torch.no_grad()
def batch_norm_noise(
    model: nn.Module,
    image: torch.Tensor,
    others: torch.Tensor,
    *,
    batches: int = 50,
    batch_size: int = 32,
    seed: int = 0,
) -> BatchNoise:
    """Put ``image`` in ``batches`` random batches of ``others`` and record its outputs.

    Each batch is ``image`` plus ``batch_size - 1`` images drawn from ``others`` (a
    generator seeded with ``seed``: the same batches for both modes). In training mode
    batch norm normalises with the batch's mean and variance, so the image's outputs
    depend on its neighbours: noise, calibrated to the scale of the activations (Ioffe
    and Szegedy 2015, section 3.4). In eval mode it uses the running averages, and the
    outputs are the same in every batch. The model is not changed: a copy runs in
    training mode, so its running statistics stay as they were.

    Shapes: ``image (C, H, W)`` or ``(1, C, H, W)``, ``others (M, C, H, W)`` normalised
    floats -> :class:`BatchNoise` with ``(batches, num_classes)`` outputs.
    """
    check_int("batches", batches, 2)
    check_int("batch_size", batch_size, 2)
    image = image.reshape(1, *image.shape[-3:])  # (1, C, H, W)
    if others.shape[0] < batch_size - 1:
        raise ValueError(
            f"batch_size={batch_size} needs at least {batch_size - 1} other images; got "
            f"{others.shape[0]}. Pass more images or a smaller batch_size."
        )
    generator = torch.Generator().manual_seed(seed)
    picks = [
        torch.randperm(others.shape[0], generator=generator)[: batch_size - 1]
        for _ in range(batches)
    ]
    outputs = {}
    for mode in ("train", "eval"):
        net = copy.deepcopy(model).train(mode == "train")
        rows = [net(torch.cat([image, others[pick]]))[0] for pick in picks]  # (num_classes,)
        outputs[mode] = torch.stack(rows)  # (batches, num_classes)
    return BatchNoise(batch_size, outputs["train"], outputs["eval"])


# --------------------------------------------------------------------------- 2. scale invariance


def scale_invariant_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The convolution weights that batch norm makes scale-invariant: every conv followed
    directly by a ``BatchNorm2d`` (in a ``nn.Sequential``, or ``convK``/``bnK`` of a
    residual block), in forward order. The lecture's 1x1 shortcut convs (no BN after
    them) and the final linear layer are not among them."""
    found: list[tuple[str, nn.Parameter]] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, Residual | Bottleneck):
            for k in (1, 2, 3):
                conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    found.append((f"{prefix}conv{k}.weight", conv.weight))
        elif isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (conv_name, conv), (_, bn) in zip(children, children[1:], strict=False):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    found.append((f"{prefix}{conv_name}.weight", conv.weight))
    return found


@dataclass(frozen=True)
class ScaleCheck:
    """What multiplying one layer's weights by ``factor`` did (train mode, batch statistics).

    ``output_change``: the largest change of any output (logit); ``output_size``: the
    largest output, for scale. ``grad_ratio``: ``||grad before|| / ||grad after||`` of that
    layer's weights (``factor`` when the layer is scale-invariant). ``cosine``: the cosine
    between the weights and their gradient before scaling (0: the gradient is orthogonal
    to the weights, so an SGD step can only lengthen them).
    """

    layer: str
    factor: float
    output_change: float
    output_size: float
    grad_ratio: float
    cosine: float


def scale_invariance(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    factor: float = 100.0,
) -> ScaleCheck:
    """Multiply the weights of ``layer`` (a conv module name, e.g. ``"stage2.0.conv1"``) of a
    copy of ``model`` by ``factor`` and compare outputs and gradients in training mode.

    With batch norm after the conv, ``BN(c W x) = BN(W x)``: the outputs do not change (to
    float precision: BN's ``eps`` is the only thing that sees the scale), and by the chain
    rule the gradient with respect to ``c W`` is the old one divided by ``c`` (Ioffe and
    Szegedy 2015, section 3.3). ``model`` is not changed.

    Shapes: ``images (N, C, H, W)``, ``labels (N,)`` -> :class:`ScaleCheck`.
    """
    if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be a positive number, got {factor!r}.")
    results = []
    for scale in (1.0, float(factor)):
        net = copy.deepcopy(model).train()
        try:
            conv = net.get_submodule(layer)
        except AttributeError:
            raise ValueError(
                f"{layer!r} is not a module of this {type(model).__name__}; pick one of the "
                "convs of scale_invariant_weights(model), without '.weight'."
            ) from None
        if not isinstance(conv, nn.Conv2d | nn.Linear):
            raise ValueError(f"{layer!r} is a {type(conv).__name__}, not a conv or linear layer.")
        with torch.no_grad():
            conv.weight.mul_(scale)
        out = net(images)  # (N, num_classes)
        (grad,) = torch.autograd.grad(F.cross_entropy(out, labels), conv.weight)
        results.append((out.detach(), grad, conv.weight.detach() / scale))
    (out1, grad1, weight), (out2, grad2, _) = results
    cosine = F.cosine_similarity(grad1.flatten(), weight.flatten(), dim=0).item()
    return ScaleCheck(
        layer=layer,
        factor=float(factor),
        output_change=(out2 - out1).abs().max().item(),
        output_size=out1.abs().max().item(),
        grad_ratio=(grad1.norm() / grad2.norm()).item(),
        cosine=cosine,
    )


# --------------------------------------------------------------------------- 3. sane scale


@torch.no_grad()
def activation_scales(model: nn.Module, images: torch.Tensor) -> list[tuple[str, float]]:
    """The standard deviation of the output of each top-level child of ``model`` (stem,
    stages, ..., fc) for one batch, in training mode, as ``(name, std)`` in forward order.

    With batch norm every stage's output stays near the same scale whatever the weights;
    without it the scale is whatever the initialisation makes of it, layer after layer
    (Ioffe and Szegedy 2015). The model is not changed (a copy runs).

    Shapes: ``images (N, C, H, W)`` -> one ``(name, std)`` per child.
    """
    net = copy.deepcopy(model).train()
    out = images
    scales = []
    for name, child in net.named_children():
        out = child(out)
        scales.append((name, out.std().item()))
    return scales


# --------------------------------------------------------------------------- training loops


@dataclass
class StepRun:
    """What :func:`train_steps` recorded: ``steps`` (the step after which each record was
    taken; 0 is before training), ``norms`` (the norm of all scale-invariant weights
    together, ``sqrt(sum ||w||^2)``), ``all_norms`` (the same over every conv and linear
    weight), ``losses`` (each step's training loss, before its update)."""

    optimizer: str
    lr: float
    weight_decay: float
    steps: list[int] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    all_norms: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    @property
    def effective_lr(self) -> list[float]:
        """``lr / ||w||^2`` at each record: the step size a scale-invariant layer feels
        (van Laarhoven 2017). Longer weights take relatively smaller steps."""
        return [self.lr / n**2 for n in self.norms]


def _make_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """The optimiser, with ``weight_decay`` on conv and linear weights only (as the recipes)."""
    groups = parameter_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":  # L2: weight_decay * w is added to the gradient, then normalised
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)  # decoupled: w -= lr * weight_decay * w


def _norm(params: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(p.detach().pow(2).sum().item() for p in params))


def train_steps(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    optimizer: str = "sgd",
    lr: float = 0.05,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    every: int = 10,
) -> StepRun:
    """Train ``model`` in place for ``steps`` mini-batches and record its weight norms.

    ``optimizer``: ``"sgd"`` (with ``momentum``), ``"adam"`` (``weight_decay`` is an L2
    penalty: added to the gradient before Adam divides by the gradient's running size) or
    ``"adamw"`` (decoupled weight decay: every step also multiplies the weights by
    ``1 - lr * weight_decay``; Loshchilov and Hutter 2019). Weight decay applies to conv
    and linear weights only. Batches are drawn from shuffles seeded by ``seed`` (the same
    batches for every run with the same seed). The norms are recorded every ``every``
    steps (and before the first).

    Shapes: ``images (N, C, H, W)`` normalised floats, ``labels (N,)`` -> :class:`StepRun`.
    """
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    check_int("every", every)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is not known; use one of {OPTIMIZERS}.")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels differ in length: {images.shape[0]} vs {labels.shape[0]}."
        )
    if batch_size > images.shape[0]:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {images.shape[0]} images; "
            "use a smaller batch or more images."
        )
    for name, value in (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    opt = _make_optimizer(optimizer, model, lr, weight_decay, momentum)
    invariant = [p for _, p in scale_invariant_weights(model)]
    weights = [p for p in model.parameters() if p.ndim > 1]
    run = StepRun(optimizer, lr, weight_decay)

    def record(step: int) -> None:
        run.steps.append(step)
        run.norms.append(_norm(invariant))
        run.all_norms.append(_norm(weights))

    generator = torch.Generator().manual_seed(seed)
    indices = shuffled_batches(images.shape[0], batch_size, steps, generator)
    model.train()
    record(0)

    def after_step(step: int) -> None:
        if step % every == 0 or step == steps:
            record(step)

    batches = ((images[i], labels[i]) for i in indices)
    run.losses = run_steps(model, opt, batches, after_step=after_step)
    return run


def adam_decay_step(
    weight: torch.Tensor, *, lr: float, weight_decay: float, decoupled: bool
) -> torch.Tensor:
    """The weights after one Adam step with a zero loss gradient, so only the decay acts.

    ``decoupled=False`` is ``torch.optim.Adam(weight_decay=...)``: the L2 gradient
    ``weight_decay * w`` goes through Adam's normalisation, and on the first step
    ``m / sqrt(v) = g / |g|``: every weight moves by ``lr`` towards zero, whatever its size
    and whatever ``weight_decay`` is. ``decoupled=True`` is ``torch.optim.AdamW``: every
    weight is multiplied by ``1 - lr * weight_decay``, as weight decay means (Loshchilov
    and Hutter 2019). ``weight`` is not changed. Shapes: ``(...) -> (...)``.
    """
    w = nn.Parameter(weight.detach().clone())
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = kind([w], lr=lr, weight_decay=weight_decay)
    w.grad = torch.zeros_like(w)
    opt.step()
    return w.detach()
