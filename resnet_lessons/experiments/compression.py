"""Compression, the lecture's last words on regularisation (notebook 07, sections 6 and 7).

The lecture: in conv nets batch norm has almost replaced dropout; sparsity is another
regulariser, though it "makes optimisation less pleasant"; parameters can be quantised;
and the strategies are complementary. This module measures each:

* :data:`ZOO` and :func:`layer_census`: the dropout, batch norm, layer norm and stochastic
  depth layers in torchvision's definitions of five conv nets from 2012 to 2022, and
  whether each dropout sits in the classifier head (after the last convolution) or among
  the convolutions. The networks are built with ``weights=None`` on PyTorch's ``meta``
  device: their layers, no numbers, nothing downloaded.
* :func:`l1_penalty` and :func:`train_l1`: SGD steps with an L1 penalty
  ``l1 * sum |w|`` on the conv and linear weights, with the package's
  :func:`~resnet_lessons.training.steps.run_steps`. With ``l1=0`` it trains exactly as
  :func:`~resnet_lessons.experiments.regularisation.train_steps` (same optimiser, same
  batches).
* :func:`prune_weights`: magnitude pruning with ``torch.nn.utils.prune``: the smallest
  conv and linear weights of the whole network (global, the default) or the same fraction
  of each layer, set to zero.
* :func:`quantise_weights`: fake quantisation of the conv and linear weights, symmetric
  and per output channel: each channel's weights rounded to ``2**(bits-1) - 1`` steps
  either side of zero, stored back as float32 (the accuracy of the rounded network; no
  integer kernels).
* :func:`weight_bytes`: what those weights take at a bit width, dense or sparse.
* :func:`accuracy`: top-1 accuracy on prepared images, in eval mode.

Nothing here seeds, prints or picks a device; the notebook does.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from .._checks import check_int
from ..data import shuffled_batches
from ..training.evaluation import outputs
from ..training.recipes import parameter_groups
from ..training.steps import run_steps

__all__ = [
    "CONVS",
    "LAYER_KINDS",
    "POOLS",
    "SCHEDULES",
    "SCOPES",
    "ZOO",
    "L1Run",
    "LayerCount",
    "accuracy",
    "count_layers",
    "l1_penalty",
    "layer_census",
    "layer_types",
    "prunable_weights",
    "prune_weights",
    "quantise_weights",
    "sparsity",
    "train_l1",
    "weight_bytes",
]

# --------------------------------------------------------------------------- 1. the census

#: name -> (year of the paper, torchvision builder): AlexNet (Krizhevsky et al. 2012),
#: VGG-16 (Simonyan and Zisserman 2014), ResNet-50 (He et al. 2015), EfficientNet-B0 (Tan
#: and Le 2019), ConvNeXt-Tiny (Liu et al. 2022).
ZOO: dict[str, tuple[int, str]] = {
    "AlexNet": (2012, "alexnet"),
    "VGG-16": (2014, "vgg16"),
    "ResNet-50": (2015, "resnet50"),
    "EfficientNet-B0": (2019, "efficientnet_b0"),
    "ConvNeXt-Tiny": (2022, "convnext_tiny"),
}

#: The kinds of layer :func:`count_layers` counts (:func:`layer_types` has their classes).
LAYER_KINDS = ("Dropout", "BatchNorm", "LayerNorm", "GroupNorm", "StochasticDepth")


def layer_types() -> dict[str, tuple[type[nn.Module], ...]]:
    """The classes of each kind of :data:`LAYER_KINDS`. torchvision's ``LayerNorm2d``
    (ConvNeXt) is an ``nn.LayerNorm``. ``StochasticDepth`` (``torchvision.ops``: a residual
    branch dropped for a whole sample) is looked up only where torchvision is already
    loaded (a model that holds one loaded it), so importing this module stays light."""
    torchvision = sys.modules.get("torchvision")
    return {
        "Dropout": (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout),
        "BatchNorm": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm),
        "LayerNorm": (nn.LayerNorm,),
        "GroupNorm": (nn.GroupNorm,),
        "StochasticDepth": (torchvision.ops.StochasticDepth,) if torchvision else (),
    }


#: Convolutions, and the pooling layers that may end a network's features.
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
)


@dataclass(frozen=True)
class LayerCount:
    """The layers of one network: ``counts`` by kind (:data:`LAYER_KINDS`), ``in_head`` the
    same for the classifier head (the layers after the last pooling layer), and the number
    of ``parameters``."""

    name: str
    year: int | None
    parameters: int
    counts: dict[str, int]
    in_head: dict[str, int]

    def where(self, kind: str) -> str:
        """``"head"``, ``"features"``, ``"both"`` or ``"-"`` (no layer of ``kind``)."""
        head, total = self.in_head[kind], self.counts[kind]
        if total == 0:
            return "-"
        return "head" if head == total else "features" if head == 0 else "both"


def count_layers(model: nn.Module, name: str = "", year: int | None = None) -> LayerCount:
    """Count ``model``'s layers of each kind of :data:`LAYER_KINDS`, and how many of them
    are in its classifier head: after its last pooling layer (torchvision's ``avgpool``,
    which pools the feature maps for the classifier), in the order the modules are
    registered, the forward order of torchvision's conv nets. A network without pooling
    has its head after its last convolution."""
    modules = list(model.modules())
    pools = [i for i, module in enumerate(modules) if isinstance(module, POOLS)]
    convs = [i for i, module in enumerate(modules) if isinstance(module, CONVS)]
    head_start = max(pools or convs or [len(modules)])
    counts = dict.fromkeys(LAYER_KINDS, 0)
    in_head = dict.fromkeys(LAYER_KINDS, 0)
    for kind, types in layer_types().items():
        for i, module in enumerate(modules):
            if types and isinstance(module, types):
                counts[kind] += 1
                in_head[kind] += i > head_start
    parameters = sum(p.numel() for p in model.parameters())
    return LayerCount(name or type(model).__name__, year, parameters, counts, in_head)


def layer_census(names: Sequence[str] | None = None, device: str = "meta") -> list[LayerCount]:
    """:func:`count_layers` of each network of :data:`ZOO` named in ``names`` (all, in
    order of year, by default), built by torchvision with ``weights=None`` on ``device``:
    ``"meta"`` builds the layers and shapes without any numbers (instant, no memory)."""
    import torchvision.models  # here, not at the top: it takes seconds to import

    names = list(ZOO) if names is None else list(names)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise ValueError(f"unknown network(s) {unknown}; the known ones are {list(ZOO)}.")
    rows = []
    for name in names:
        year, builder = ZOO[name]
        with torch.device(device):
            model = getattr(torchvision.models, builder)(weights=None)  # nothing downloaded
        rows.append(count_layers(model, name, year))
    return rows


# --------------------------------------------------------------------------- 2. L1 training

#: Learning-rate schedules :func:`train_l1` knows: ``"constant"``, or ``"cosine"`` from
#: ``lr`` down to 0 over the run (``torch.optim.lr_scheduler.CosineAnnealingLR``).
SCHEDULES = ("constant", "cosine")


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose ``weight`` the L1 penalty, pruning and quantisation act on: every
    conv and linear layer, as ``(name, module)`` in registration order. Biases and batch
    norm's scale and shift stay as they are (they are few, and float32)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (*CONVS, nn.Linear))
    ]


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """``sum |w|`` over the weights of :func:`prunable_weights` (a scalar with gradient)."""
    return sum(module.weight.abs().sum() for _, module in prunable_weights(model))


@dataclass
class L1Run:
    """What :func:`train_l1` recorded, one entry per step: ``losses``, the cross-entropy
    alone (comparable with a run without the penalty), and ``penalties``, ``l1 * sum |w|``
    (what was added to it), both measured before the step's update."""

    l1: float
    weight_decay: float
    losses: list[float] = field(default_factory=list)
    penalties: list[float] = field(default_factory=list)


def train_l1(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    l1: float,
    lr: float = 0.05,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    schedule: str = "constant",
) -> L1Run:
    """Train ``model`` in place for ``steps`` mini-batches of SGD with ``momentum`` on the
    loss ``cross_entropy + l1 * sum |w|`` (:func:`l1_penalty`).

    The penalty's gradient is ``l1 * sign(w)``: the same pull towards zero for a large
    weight as for a tiny one, which is why L1 makes weights small enough to prune. Batches
    and the optimiser are those of
    :func:`~resnet_lessons.experiments.regularisation.train_steps` (``weight_decay`` on
    conv and linear weights only), so ``l1=0`` with the ``"constant"`` schedule trains
    exactly as it does; ``schedule="cosine"`` lowers the learning rate from ``lr`` to 0 over
    the ``steps``, so the run ends in a minimum rather than wherever its last step threw it.

    Shapes: ``images (N, C, H, W)`` normalised floats, ``labels (N,)`` -> :class:`L1Run`.
    """
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    for name, value in (("l1", l1), ("lr", lr), ("weight_decay", weight_decay)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not known; use one of {SCHEDULES}.")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels differ in length: {images.shape[0]} vs {labels.shape[0]}."
        )
    if batch_size > images.shape[0]:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {images.shape[0]} images; "
            "use a smaller batch or more images."
        )
    optimizer = torch.optim.SGD(parameter_groups(model, weight_decay), lr=lr, momentum=momentum)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        if schedule == "cosine"
        else None
    )
    run = L1Run(l1, weight_decay)

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, targets)
        run.losses.append(loss.item())
        if l1 == 0:
            run.penalties.append(0.0)
            return loss
        penalty = l1 * l1_penalty(model)
        run.penalties.append(penalty.item())
        return loss + penalty

    generator = torch.Generator().manual_seed(seed)
    indices = shuffled_batches(images.shape[0], batch_size, steps, generator)
    batches = ((images[i], labels[i]) for i in indices)
    run_steps(model, optimizer, batches, loss_fn, scheduler=scheduler)
    return run


# --------------------------------------------------------------------------- 3. pruning


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"fraction must be a number in [0, 1), got {fraction!r}.")
    if not 0 <= fraction < 1:
        raise ValueError(
            f"fraction must be in [0, 1) (the share of each layer's weights to remove), got "
            f"{fraction}; 0.9 removes 90% of them, 1 would remove every one."
        )
    return float(fraction)


#: Where :func:`prune_weights` ranks the weights: ``"global"`` (all layers together) or
#: ``"layer"`` (each layer on its own).
SCOPES = ("global", "layer")


def prune_weights(model: nn.Module, fraction: float, *, scope: str = "global") -> nn.Module:
    """A copy of ``model`` with a ``fraction`` of its conv and linear weights, the smallest
    in magnitude, set to zero; ``model`` is not changed. ``fraction`` in ``[0, 1)``.

    ``scope="global"`` ranks all those weights together
    (``torch.nn.utils.prune.global_unstructured``): a layer of small weights loses more of
    them. ``scope="layer"`` removes the same fraction from each layer
    (``prune.l1_unstructured``), the 144 weights of a 16-channel stem as much as the
    others. ``prune.remove`` then makes the zeros part of the weights.
    """
    fraction = _check_fraction(fraction)
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} is not known; use one of {SCOPES}.")
    pruned = copy.deepcopy(model)
    layers = [module for _, module in prunable_weights(pruned)]
    if scope == "global":
        prune.global_unstructured(
            [(module, "weight") for module in layers],
            pruning_method=prune.L1Unstructured,
            amount=fraction,
        )
    else:
        for module in layers:
            prune.l1_unstructured(module, "weight", amount=fraction)
    for module in layers:
        prune.remove(module, "weight")
    return pruned


def sparsity(model: nn.Module) -> float:
    """The fraction of the conv and linear weights that are exactly zero."""
    weights = [module.weight for _, module in prunable_weights(model)]
    zeros = sum((w == 0).sum().item() for w in weights)
    return zeros / sum(w.numel() for w in weights)


# --------------------------------------------------------------------------- 4. quantisation


@torch.no_grad()
def quantise_weights(model: nn.Module, bits: int) -> nn.Module:
    """A copy of ``model`` whose conv and linear weights are rounded to ``bits`` bits:
    symmetric, per output channel. Each channel's scale is ``max |w| / (2**(bits-1) - 1)``
    and each weight becomes ``round(w / scale) * scale``: 127 steps either side of zero at
    8 bits, 7 at 4. A zero stays zero, so a pruned network stays as sparse. The weights
    stay float32 ("fake" quantisation: the accuracy of the rounded numbers); biases and
    batch norm are not rounded. ``model`` is not changed. ``bits`` in 2..16."""
    check_int("bits", bits, 2)
    if bits > 16:
        raise ValueError(f"bits must be at most 16 (32 is float32 itself), got {bits}.")
    levels = 2 ** (bits - 1) - 1
    quantised = copy.deepcopy(model)
    for _, module in prunable_weights(quantised):
        w = module.weight  # (C_out, ...)
        scale = w.abs().flatten(1).amax(dim=1).clamp(min=1e-12) / levels  # (C_out,)
        scale = scale.reshape(-1, *[1] * (w.ndim - 1))  # (C_out, 1, ...)
        w.copy_(torch.round(w / scale).clamp(-levels, levels) * scale)
    return quantised


def weight_bytes(model: nn.Module, bits: int = 32, *, sparse: bool = False) -> int:
    """The bytes the conv and linear weights take at ``bits`` bits per weight, plus one
    float32 scale per output channel when ``bits < 32``. ``sparse=True`` stores only the
    nonzero weights, and a bitmask (one bit per weight) of where they are."""
    check_int("bits", bits, 1)
    total = 0.0
    for _, module in prunable_weights(model):
        w = module.weight
        kept = int((w != 0).sum().item()) if sparse else w.numel()
        total += kept * bits / 8 + (w.numel() / 8 if sparse else 0)
        total += 4 * w.shape[0] if bits < 32 else 0
    return math.ceil(total)


# --------------------------------------------------------------------------- 5. accuracy


def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``model`` (in eval mode: batch norm's running statistics) on
    prepared images ``(N, C, H, W)`` with ``labels (N,)``."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels differ in length: {images.shape[0]} vs {labels.shape[0]}."
        )
    predicted = outputs(model, images, batch_size).argmax(dim=1)  # (N,)
    return (predicted == labels).float().mean().item()
