"""Residual blocks: the lecture's basic block and the bottleneck of ResNet-50 and deeper.

A residual block learns a *deviation from the identity*: its output is
``relu(f(x) + shortcut(x))``. When the shortcut is the identity, driving ``f``
to zero gives back the input, which is why very deep stacks stay trainable.

Two variants share one code path:

* ``variant="lecture"`` (default) is the lecture's block exactly: convolutions
  with bias, and a plain 1x1 convolution on the projection shortcut.
* ``variant="torchvision"`` matches ``torchvision.models.resnet``: bias-free
  convolutions (batch norm follows each one, so a bias is redundant), batch
  norm on the projection shortcut, and in the bottleneck the stride on the 3x3
  convolution rather than the first 1x1. With it, weights can be copied from
  torchvision one for one (see :func:`resnet_lessons.from_torchvision`).

``batch_norm=False`` builds either block without batch norm: every ``BatchNorm2d``
becomes an ``nn.Identity`` and every convolution keeps its bias (the lecture's
convolutions, whatever the variant), so the same network can be trained with and
without batch norm (notebook 07).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_int

Variant = Literal["lecture", "torchvision"]
VARIANTS: tuple[str, ...] = ("lecture", "torchvision")


def check_variant(variant: str) -> None:
    """Raise ``ValueError`` unless ``variant`` is one of :data:`VARIANTS`."""
    if variant not in VARIANTS:
        raise ValueError(
            f"variant={variant!r} is not known; use one of {', '.join(map(repr, VARIANTS))} "
            "('lecture' is the lecture's network, 'torchvision' matches torchvision.models)."
        )


def check_shortcut(
    block: str,
    in_channels: int,
    out_channels: int,
    use_1x1conv: bool,
    stride: int,
) -> None:
    """Raise ``ValueError`` when an identity shortcut cannot be added to the block's output.

    ``f(x) + x`` needs ``f(x)`` and ``x`` to have the same shape. The identity
    keeps ``in_channels`` and the full resolution, so a block that changes the
    channel count (``out_channels``) or downsamples (``stride > 1``) needs the
    1x1 convolution on the shortcut.
    """
    problems = []
    if in_channels != out_channels:
        problems.append(f"the channels change from {in_channels} to {out_channels}")
    if stride != 1:
        problems.append(f"stride={stride} shrinks the height and width")
    if problems and not use_1x1conv:
        raise ValueError(
            f"{block}: the identity shortcut cannot be added to the block's output because "
            f"{' and '.join(problems)}, but use_1x1conv=False. The shortcut would carry "
            f"{in_channels} channels at full size while the block's output has {out_channels} "
            f"channels{' at 1/' + str(stride) + ' of the size' if stride != 1 else ''}. "
            f"Fix: pass use_1x1conv=True (a 1x1 conv with stride={stride} reshapes the shortcut), "
            f"or keep out_channels={in_channels} and stride=1."
        )


def check_batch_norm(batch_norm: object) -> bool:
    """Return ``batch_norm`` if it is ``True`` or ``False``; else raise ``TypeError``."""
    if not isinstance(batch_norm, bool):
        raise TypeError(
            f"batch_norm must be True (the lecture's network) or False (no batch norm: "
            f"nn.Identity in its place), got {batch_norm!r} ({type(batch_norm).__name__})."
        )
    return batch_norm


def norm_layer(channels: int, batch_norm: bool) -> nn.Module:
    """``BatchNorm2d(channels)``, or ``nn.Identity()`` when ``batch_norm`` is False."""
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def check_input(block: nn.Module, x: torch.Tensor, in_channels: int) -> None:
    """Raise a ``ValueError`` that says the fix unless ``x`` is ``(N, in_channels, H, W)``."""
    if x.dim() != 4:
        raise ValueError(
            f"{type(block).__name__} expects a batch of images (N, C, H, W); got a tensor with "
            f"shape {tuple(x.shape)}. Add a batch dimension with x.unsqueeze(0) for one image."
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{type(block).__name__} was built for {in_channels} input channels but got "
            f"{x.shape[1]} (input shape {tuple(x.shape)}). Fix: build it with "
            f"in_channels={x.shape[1]}, or feed it the output of a layer with "
            f"{in_channels} channels."
        )


#: The name the blocks' ``forward`` calls: notebook 01 shows ``Residual.forward``'s source.
_check_input = check_input


class Residual(nn.Module):
    """The lecture's residual block (basic block of ResNet-18 and ResNet-34).

    ``conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN``, plus the shortcut
    (the identity, or a 1x1 convolution with the same stride), added, then ReLU.

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``
    (a 3x3 convolution with padding 1 gives ``floor((H - 1) / stride) + 1``).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        use_1x1conv: put a 1x1 convolution on the shortcut. Required when the
            channels change or ``stride > 1``.
        stride: stride of the first 3x3 convolution (and of the 1x1 shortcut).
        variant: ``"lecture"`` or ``"torchvision"`` (see the module docstring).
        batch_norm: ``False`` puts ``nn.Identity`` where each batch norm was, and gives
            every convolution a bias.
    """

    expansion = 1  # output channels = out_channels * expansion

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        use_1x1conv: bool = False,
        stride: int = 1,
        *,
        variant: Variant = "lecture",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("out_channels", out_channels)
        check_int("stride", stride)
        check_variant(variant)
        check_batch_norm(batch_norm)
        check_shortcut("Residual", in_channels, out_channels, use_1x1conv, stride)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.use_1x1conv = use_1x1conv
        self.batch_norm = batch_norm
        bias = variant == "lecture" or not batch_norm  # without BN a conv needs its bias
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.shortcut = _shortcut(
            in_channels, out_channels, use_1x1conv, stride, variant, batch_norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, self.in_channels)
        out = F.relu(self.bn1(self.conv1(x)))  # (N, C_out, H / s, W / s)
        out = self.bn2(self.conv2(out))  # (N, C_out, H / s, W / s)
        out = out + self.shortcut(x)  # shortcut: identity or 1x1 conv, same shape as out
        return F.relu(out)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, use_1x1conv={self.use_1x1conv}, "
            f"stride={self.stride}" + ("" if self.batch_norm else ", batch_norm=False")
        )


class Bottleneck(nn.Module):
    """The bottleneck block of ResNet-50, -101 and -152.

    ``conv1x1 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv1x1 -> BN``, plus the
    shortcut, added, then ReLU. The 1x1 convolutions squeeze the channels to
    ``mid_channels`` for the expensive 3x3 convolution and expand them again to
    ``mid_channels * expansion`` (4x), which keeps deep networks affordable.

    Shapes: ``(N, in_channels, H, W) -> (N, 4 * mid_channels, ceil(H / stride), ceil(W / stride))``.

    The ``"lecture"`` variant strides the first 1x1 convolution (the original
    paper); ``"torchvision"`` strides the 3x3 convolution ("ResNet v1.5"),
    which sees every input pixel and is slightly more accurate. ``batch_norm=False``
    replaces every batch norm by ``nn.Identity`` and gives every convolution a bias.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        use_1x1conv: bool = False,
        stride: int = 1,
        *,
        variant: Variant = "lecture",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("mid_channels", mid_channels)
        check_int("stride", stride)
        check_variant(variant)
        check_batch_norm(batch_norm)
        out_channels = mid_channels * self.expansion
        check_shortcut("Bottleneck", in_channels, out_channels, use_1x1conv, stride)
        self.in_channels = in_channels
        self.mid_channels = mid_channels
        self.out_channels = out_channels
        self.stride = stride
        self.use_1x1conv = use_1x1conv
        self.batch_norm = batch_norm
        bias = variant == "lecture" or not batch_norm
        stride_1x1, stride_3x3 = (stride, 1) if variant == "lecture" else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, stride=stride_1x1, bias=bias)
        self.bn1 = norm_layer(mid_channels, batch_norm)
        self.conv2 = nn.Conv2d(
            mid_channels, mid_channels, 3, stride=stride_3x3, padding=1, bias=bias
        )
        self.bn2 = norm_layer(mid_channels, batch_norm)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=bias)
        self.bn3 = norm_layer(out_channels, batch_norm)
        self.shortcut = _shortcut(
            in_channels, out_channels, use_1x1conv, stride, variant, batch_norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, self.in_channels)
        out = F.relu(self.bn1(self.conv1(x)))  # (N, C_mid, ...): squeeze
        out = F.relu(self.bn2(self.conv2(out)))  # (N, C_mid, H / s, W / s)
        out = self.bn3(self.conv3(out))  # (N, 4 * C_mid, H / s, W / s): expand
        out = out + self.shortcut(x)  # shortcut: identity or 1x1 conv, same shape as out
        return F.relu(out)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.mid_channels} (out {self.out_channels}), "
            f"use_1x1conv={self.use_1x1conv}, stride={self.stride}"
            + ("" if self.batch_norm else ", batch_norm=False")
        )


def _shortcut(
    in_channels: int,
    out_channels: int,
    use_1x1conv: bool,
    stride: int,
    variant: str,
    batch_norm: bool = True,
) -> nn.Module:
    """The identity, or a 1x1 convolution (with BN in the torchvision variant, unless
    ``batch_norm`` is False: then ``nn.Identity`` and a conv bias in its place)."""
    if not use_1x1conv:
        return nn.Identity()
    if variant == "lecture":
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride))
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batch_norm),
        norm_layer(out_channels, batch_norm),
    )
