"""Why residuals work: He et al.'s thin CIFAR networks, plain and residual, and what we measure.

The lecture's sentence is that a residual block learns a *deviation from the
identity*, ``x + f(x)``, where a plain layer learns a deviation from zero,
``f(x)``. This module holds the networks and the measurements of notebook 06:

* :func:`thin_resnet` is the network of He et al. (2015), "Deep Residual
  Learning for Image Recognition", section 4.2 (their CIFAR-10 experiments):
  ``6n + 2`` weighted layers, with or without shortcuts (the *plain* net).
* :func:`deep_mlp`, the same comparison with fully connected layers (cheap
  enough to run at depth 64 in seconds; used for shattered gradients and the
  weight-decay experiment).
* :func:`train_classifier`, a deliberately tiny SGD loop (fixed learning rate,
  one loss per step) so the notebook can train four networks for the same budget.
* :func:`gradient_norms` (per-layer gradient norms at initialisation),
  :func:`input_gradients` and :func:`autocorrelation` (Balduzzi et al. 2017,
  "The Shattered Gradients Problem"), :func:`zero_init_residual` (Goyal et al.
  2017; torchvision's ``zero_init_residual``), :func:`remove_block` and
  :func:`block_names` (Veit et al. 2016, "Residual Networks Behave Like
  Ensembles of Relatively Shallow Networks").

Nothing here seeds, prints or picks a device; the notebook does.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import check_int
from ..blocks import Residual
from ..data import shuffled_batches
from ..network import resnet_block
from ..training.evaluation import outputs
from ..training.steps import run_steps

#: Channels of the three stages of He et al.'s CIFAR network at ``width=16``.
STAGE_WIDTHS = (1, 2, 4)  # times ``width``: 16, 32, 64


def check_depth(depth: int) -> int:
    """Return ``n``, the blocks per stage, for a valid ``depth = 6n + 2``; else raise.

    ``TypeError`` for a non-integer; ``ValueError`` naming the nearest valid
    depths otherwise (He et al. used 20, 32, 44, 56 and 110).

    >>> check_depth(20)
    3
    """
    check_int("depth", depth, 1)
    n, rest = divmod(depth - 2, 6)
    if rest != 0 or n < 1:
        below = 6 * n + 2 if n >= 1 else None
        above = 6 * (n + 1) + 2 if depth >= 8 else 8
        nearest = f"depths are {below} or {above}" if below is not None else f"depth is {above}"
        raise ValueError(
            f"depth={depth} is not of the form 6n + 2 (a stem conv, three stages of n blocks "
            f"with two 3x3 convs each, and the linear layer). The nearest valid {nearest}; "
            "He et al. used 20, 32, 44, 56 and 110."
        )
    return n


class PlainBlock(nn.Module):
    """A :class:`~resnet_lessons.Residual` block without its shortcut: the *plain* block.

    ``conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN -> ReLU``: the same layers,
    but nothing is added, so the block learns its output from zero.

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("out_channels", out_channels)
        check_int("stride", stride)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (N, C_out, H / s, W / s)
        out = self.bn2(self.conv2(out))  # (N, C_out, H / s, W / s)
        return F.relu(out)  # no "+ x": a deviation from zero

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def plain_block(
    in_channels: int, out_channels: int, num_blocks: int, first_block: bool = False
) -> nn.Sequential:
    """A stage of :class:`PlainBlock`; the first one has stride 2 unless ``first_block``
    (the same rule as :func:`~resnet_lessons.resnet_block`).

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H', W')``, ``H' = H`` if
    ``first_block`` else ``ceil(H / 2)``.
    """
    check_int("num_blocks", num_blocks)
    blocks = []
    channels = in_channels
    for i in range(num_blocks):
        stride = 2 if i == 0 and not first_block else 1
        blocks.append(PlainBlock(channels, out_channels, stride))
        channels = out_channels
    return nn.Sequential(*blocks)


class ThinResNet(nn.Sequential):
    """He et al.'s CIFAR network (2015, section 4.2), plain or residual.

    Children in order: ``stem`` (3x3 conv with ``width`` channels, BN, ReLU),
    ``stage1`` ... ``stage3`` (n blocks each with ``width``, ``2 * width``,
    ``4 * width`` channels; the first block of stages 2 and 3 has stride 2),
    ``avgpool``, ``flatten``, ``fc``. ``depth = 6n + 2`` counts the stem conv,
    the two 3x3 convs of every block and the linear layer.

    Residual stages are :func:`~resnet_lessons.resnet_block` stages of the
    lecture's :class:`~resnet_lessons.Residual` block, so the two downsampling
    blocks have a 1x1 convolution on the shortcut (He et al.'s option B; for
    CIFAR they used option A, zero-padded identity shortcuts with no
    parameters, which is why their ResNet-20 has 0.27M parameters where ours
    has a few thousand more). Plain stages are :func:`plain_block` stages: the
    same 3x3 convolutions, no shortcut at all.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``; the stages see
    ``H``, ``ceil(H / 2)``, ``ceil(H / 4)`` (32, 16, 8 for CIFAR's 32x32).
    """

    def __init__(
        self,
        depth: int,
        *,
        shortcuts: bool = True,
        width: int = 16,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        n = check_depth(depth)
        check_int("width", width)
        check_int("in_channels", in_channels)
        check_int("num_classes", num_classes)
        if not isinstance(shortcuts, bool):
            raise TypeError(f"shortcuts must be True or False, got {shortcuts!r}.")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        channels = width
        for i, factor in enumerate(STAGE_WIDTHS):
            out = width * factor
            build = resnet_block if shortcuts else plain_block
            layers[f"stage{i + 1}"] = build(channels, out, n, first_block=i == 0)
            channels = out
        layers["avgpool"] = nn.AdaptiveAvgPool2d((1, 1))  # (N, C, H, W) -> (N, C, 1, 1)
        layers["flatten"] = nn.Flatten()  # -> (N, 4 * width)
        layers["fc"] = nn.Linear(channels, num_classes)  # -> (N, num_classes)
        super().__init__(layers)
        self.depth = depth
        self.shortcuts = shortcuts
        self.width = width
        self.in_channels = in_channels
        self.num_classes = num_classes


def thin_resnet(
    depth: int,
    *,
    shortcuts: bool = True,
    width: int = 16,
    in_channels: int = 1,
    num_classes: int = 10,
) -> ThinResNet:
    """He et al.'s ``6n + 2``-layer CIFAR network; ``shortcuts=False`` gives the plain net.

    ``thin_resnet(20)`` is ResNet-20 (n = 3), ``thin_resnet(56, shortcuts=False)``
    the plain-56 of the paper's Figure 1. ``width`` scales the stage channels
    ``(16, 32, 64)``; ``width=8`` halves them (a quarter of the cost). Any
    depth that is not ``6n + 2`` raises ``ValueError`` naming the nearest valid ones.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``. See :class:`ThinResNet`.
    """
    return ThinResNet(
        depth,
        shortcuts=shortcuts,
        width=width,
        in_channels=in_channels,
        num_classes=num_classes,
    )


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers that count in a network's depth, in forward order: every convolution
    with a kernel larger than 1x1 and every linear layer (1x1 projection shortcuts
    are not counted, as in He et al.). ``len(weighted_layers(thin_resnet(d))) == d``."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    ]


# --------------------------------------------------------------------------- dense nets


class DenseBlock(nn.Module):
    """One linear layer, pre-activated, with or without a shortcut (Balduzzi et al. 2017).

    residual: ``x + fc(relu(bn(x)))``; plain: ``fc(relu(bn(x)))``. The shortcut is the
    bare identity (He et al.'s 2016 "identity mappings" ordering: batch norm and ReLU
    inside the branch), so a zero ``fc`` makes the residual block exactly the identity.
    ``batch_norm=False`` drops the BN.

    Shapes: ``(N, width) -> (N, width)``.
    """

    def __init__(self, width: int, *, shortcut: bool, batch_norm: bool) -> None:
        super().__init__()
        check_int("width", width)
        self.shortcut = shortcut
        self.bn = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(F.relu(self.bn(x)))  # (N, width)
        return x + out if self.shortcut else out  # deviation from the identity, or from zero

    def extra_repr(self) -> str:
        return f"shortcut={self.shortcut}"


def deep_mlp(
    depth: int,
    *,
    shortcuts: bool = True,
    width: int = 64,
    in_features: int = 1,
    out_features: int = 1,
    batch_norm: bool = True,
    init: str = "default",
) -> nn.Sequential:
    """A fully connected net with ``depth`` weighted layers: ``inp`` (linear),
    ``depth - 2`` :class:`DenseBlock` s, ``out`` (BN, ReLU, linear).

    The nets of Balduzzi et al. (2017) for shattered gradients: width 200, batch
    norm, a scalar input and output (the defaults here but the width).

    ``init="identity"`` starts every block as the identity on non-negative
    features: residual blocks get a zero ``fc`` (``x + 0``), plain blocks an
    identity weight matrix and a zero bias (``I relu(x) = x`` for ``x >= 0``). Then
    the plain and the residual net compute the same function at the start,
    ``out(relu(inp(x)))``; the weight-decay experiment of notebook 06 uses this
    without batch norm. ``"default"`` is PyTorch's initialisation.

    Shapes: ``(N, in_features) -> (N, out_features)``.
    """
    check_int("depth", depth, 2)
    check_int("width", width)
    check_int("in_features", in_features)
    check_int("out_features", out_features)
    if init not in ("default", "identity"):
        raise ValueError(f"init must be 'default' or 'identity', got {init!r}.")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["inp"] = nn.Linear(in_features, width)
    for i in range(depth - 2):
        block = DenseBlock(width, shortcut=shortcuts, batch_norm=batch_norm)
        if init == "identity":
            with torch.no_grad():
                if shortcuts:
                    block.fc.weight.zero_()
                else:
                    block.fc.weight.copy_(torch.eye(width))
                block.fc.bias.zero_()
        layers[f"block{i + 1}"] = block
    layers["out"] = nn.Sequential(
        nn.BatchNorm1d(width) if batch_norm else nn.Identity(),
        nn.ReLU(),
        nn.Linear(width, out_features),
    )
    return nn.Sequential(layers)


# --------------------------------------------------------------------------- training


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` in place with SGD for ``steps`` mini-batches; return each step's loss.

    The smallest loop that makes a fair comparison: the same batches (drawn
    from ``images``/``labels`` with replacement-free shuffles seeded by ``seed``),
    the same fixed learning rate, the same number of steps for every network.
    The returned cross-entropy of each batch, measured before its update, is the
    *training loss* curve. Leaves the model in training mode.

    Shapes: ``images (N, ...)`` floats as the model takes them, ``labels (N,)`` int64.
    """
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels differ in length: {images.shape[0]} images, "
            f"{labels.shape[0]} labels."
        )
    if batch_size > images.shape[0]:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {images.shape[0]} training images; "
            "use a smaller batch or more images."
        )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    indices = shuffled_batches(images.shape[0], batch_size, steps, generator)
    return run_steps(model, optimizer, ((images[i], labels[i]) for i in indices))


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` the model classifies right, in eval mode (BN running
    statistics); restores the model's previous mode. ``(N, ...), (N,) -> float``."""
    return (outputs(model, images).argmax(dim=1) == labels).float().mean().item()


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average of ``values`` over ``window`` points (fewer at the start),
    for noisy per-step loss curves. ``smooth([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]``."""
    check_int("window", window)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


# --------------------------------------------------------------------------- gradients


def gradient_norms(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> list[tuple[str, float]]:
    """The L2 norm of the loss gradient of every weighted layer's weight, input to output.

    One forward and backward pass of the cross-entropy on ``images``/``labels``
    (the model's current mode is used: training mode, batch statistics, at
    initialisation); the model's parameters and ``.grad`` are left as they were.
    The layers are :func:`weighted_layers`. He et al. (2015) trace the trouble
    of deep plain nets to optimisation, not to vanishing gradients, which batch
    norm prevents; compare the two profiles in notebook 06.

    Shapes: ``images (N, ...)``, ``labels (N,)`` -> one ``(name, norm)`` per layer.
    """
    layers = weighted_layers(model)
    weights = [m.weight for _, m in layers]
    loss = F.cross_entropy(model(images), labels)
    grads = torch.autograd.grad(loss, weights)
    return [(name, g.norm().item()) for (name, _), g in zip(layers, grads, strict=True)]


def input_gradients(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``d sum(model(inputs)) / d inputs`` for a net with one output: ``(N, D) -> (N, D)``.

    Balduzzi et al. (2017) feed a line of scalar inputs, ``torch.linspace(-2, 2,
    256)[:, None]``, through a net of scalar output and look at this gradient
    along the line. In training mode batch norm couples the points (they share
    the batch statistics), as in the paper's experiments. The model is not changed.
    """
    x = inputs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad


def autocorrelation(values: torch.Tensor, lag: int = 1) -> float:
    """Normalised autocorrelation of a sequence at ``lag`` (Balduzzi et al. 2017, eq. 1):
    ``sum_i (g_i - m)(g_{i+lag} - m) / sum_i (g_i - m)^2`` with ``m`` the mean.

    Near 1 for a smooth sequence (neighbours alike), near 0 for white noise: the
    gradients of a deep plain net along a line of inputs *shatter* into noise,
    those of a residual net stay correlated. ``(L,) or (L, 1) -> float``. A
    constant sequence raises (its correlation is undefined).

    >>> round(autocorrelation(torch.tensor([1.0, -1.0, 1.0, -1.0])), 2)
    -0.75
    """
    check_int("lag", lag, 0)
    g = values.detach().reshape(-1).double()
    if lag >= g.numel():
        raise ValueError(f"lag={lag} needs more than {lag} values; got {g.numel()}.")
    g = g - g.mean()
    denominator = (g * g).sum()
    if denominator == 0:
        raise ValueError("the sequence is constant: its autocorrelation is undefined.")
    return ((g[: g.numel() - lag] * g[lag:]).sum() / denominator).item()


# --------------------------------------------------------------------------- identity, lesions


def zero_init_residual(model: nn.Module) -> nn.Module:
    """Zero the scale of the last batch norm in every residual block (in place; returns it).

    Goyal et al. (2017), "Accurate, Large Minibatch SGD", and torchvision's
    ``resnet(zero_init_residual=True)``: each branch ``f(x)`` then outputs 0 at
    initialisation, so a :class:`~resnet_lessons.Residual` block with an identity
    shortcut computes ``relu(0 + x) = x`` on its non-negative input. The whole
    stack of blocks starts as the identity; each learns a deviation from it.
    """
    found = 0
    for module in model.modules():
        if isinstance(module, Residual):
            nn.init.zeros_(module.bn2.weight)
            found += 1
    if found == 0:
        raise ValueError(
            f"{type(model).__name__} has no residual blocks; zero_init_residual only makes "
            "sense for a network with shortcuts (shortcuts=True)."
        )
    return model


def block_names(model: nn.Module) -> list[str]:
    """The names of the blocks of a :class:`ThinResNet` (``"stage1.0"`` ...) or of a
    :func:`deep_mlp` (``"block1"`` ...), in order."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, (Residual, PlainBlock, DenseBlock))
    ]


class _Lesioned(nn.Module):
    """What is left of a block after its residual branch is removed: the shortcut alone."""

    def __init__(self, shortcut: nn.Module) -> None:
        super().__init__()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x))  # identity (x >= 0 already) or the 1x1 projection


def remove_block(model: nn.Module, name: str) -> nn.Module:
    """A copy of ``model`` with the block ``name`` deleted (Veit et al. 2016, the lesion study).

    A residual block ``relu(f(x) + shortcut(x))`` loses its branch ``f`` and keeps
    ``relu(shortcut(x))``: the identity, or, for a downsampling block, its 1x1
    projection (the paper's "deleting" a block). A plain block that keeps the
    shape becomes the identity (the layer is skipped). A plain block that changes
    the shape cannot be removed: nothing would carry its input, so it raises.
    ``model`` itself is not changed (the copy shares nothing with it).
    """
    blocks = dict(model.named_modules())
    if name not in blocks or name not in block_names(model):
        raise ValueError(
            f"{name!r} is not a block of this {type(model).__name__}; its blocks are "
            f"{', '.join(block_names(model)[:4])}, ... (see block_names(model))."
        )
    block = blocks[name]
    if isinstance(block, PlainBlock) and (
        block.stride != 1 or block.in_channels != block.out_channels
    ):
        raise ValueError(
            f"{name} is a plain block that changes the shape ({block.in_channels} -> "
            f"{block.out_channels} channels, stride {block.stride}); without a shortcut "
            "nothing is left to carry its input. Remove a block that keeps the shape."
        )
    lesioned = copy.deepcopy(model)
    parent_name, _, child = name.rpartition(".")
    parent = lesioned.get_submodule(parent_name) if parent_name else lesioned
    old = parent.get_submodule(child)
    if isinstance(old, Residual):
        replacement: nn.Module = _Lesioned(old.shortcut)
    else:
        replacement = nn.Identity()
    setattr(parent, child, replacement)
    return lesioned
