"""The pre-activation residual block of He et al. (2016), "Identity Mappings in Deep Residual
Networks": batch norm and ReLU move *before* each convolution, and nothing follows the addition.

``out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)``

With no ReLU after the addition, the shortcut is a clean identity path from any block to
any later one: the signal (and the gradient) passes through a stack of blocks unchanged
plus a sum of corrections. The reference for the stretch exercise of notebook 01
(:func:`resnet_lessons.exercises.check_preactivation`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_int
from .blocks import check_input, check_shortcut


class PreActResidual(nn.Module):
    """He et al.'s pre-activation block: ``BN -> ReLU -> conv3x3(stride) -> BN -> ReLU ->
    conv3x3``, plus the shortcut, added; no ReLU after the addition.

    The shortcut is the identity, or a 1x1 convolution with the same stride. Like He et
    al.'s code, the 1x1 convolution reads the pre-activated input ``relu(bn1(x))`` (the
    identity reads ``x`` itself). The first batch norm sees the input, so it has
    ``in_channels`` features; the second has ``out_channels``.

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.
    """

    expansion = 1

    def __init__(
        self, in_channels: int, out_channels: int, use_1x1conv: bool = False, stride: int = 1
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("out_channels", out_channels)
        check_int("stride", stride)
        check_shortcut("PreActResidual", in_channels, out_channels, use_1x1conv, stride)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.use_1x1conv = use_1x1conv
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride) if use_1x1conv else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.in_channels)
        pre = F.relu(self.bn1(x))  # (N, C_in, H, W): pre-activation
        out = self.conv1(pre)  # (N, C_out, H / s, W / s)
        out = self.conv2(F.relu(self.bn2(out)))  # (N, C_out, H / s, W / s)
        identity = x if self.shortcut is None else self.shortcut(pre)
        return out + identity  # no ReLU: the identity path stays clean

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, use_1x1conv={self.use_1x1conv}, "
            f"stride={self.stride}"
        )
