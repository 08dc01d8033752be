"""Notebook 07's network: a narrow ResNet of 8 weighted layers, built from the package's own
:func:`~resnet_lessons.network.resnet_block`, with the two switches of
:func:`~resnet_lessons.resnet18`: ``dropout`` before the final linear layer and
``batch_norm=False``."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .._checks import check_int
from ..blocks import check_batch_norm, norm_layer
from ..network import check_dropout, resnet_block


def narrow_resnet(
    width: int = 16,
    *,
    dropout: float = 0.0,
    batch_norm: bool = True,
    in_channels: int = 1,
    num_classes: int = 10,
) -> nn.Sequential:
    """A small ResNet for CPU experiments: He et al.'s CIFAR layout with one block a stage.

    Children: ``stem`` (3x3 conv with ``width`` channels, BN, ReLU), ``stage1`` ...
    ``stage3`` (one :class:`~resnet_lessons.Residual` each, ``width``, ``2 * width``,
    ``4 * width`` channels, the last two with stride 2), ``avgpool``, ``flatten``,
    ``dropout`` (only when ``dropout > 0``), ``fc``: 8 weighted layers, 77,898 parameters at
    ``width=16``. ``dropout`` and ``batch_norm`` mean what they mean for
    :func:`~resnet_lessons.resnet18`.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``; the stages see ``H``,
    ``ceil(H / 2)``, ``ceil(H / 4)``.
    """
    check_int("width", width)
    check_int("in_channels", in_channels)
    check_int("num_classes", num_classes)
    dropout = check_dropout(dropout)
    check_batch_norm(batch_norm)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), norm_layer(width, batch_norm), nn.ReLU()
    )  # (N, width, H, W)
    channels = width
    for i, factor in enumerate((1, 2, 4)):
        out = width * factor
        layers[f"stage{i + 1}"] = resnet_block(
            channels, out, 1, first_block=i == 0, batch_norm=batch_norm
        )
        channels = out
    layers["avgpool"] = nn.AdaptiveAvgPool2d((1, 1))  # (N, 4 * width, 1, 1)
    layers["flatten"] = nn.Flatten()  # (N, 4 * width)
    if dropout > 0:
        layers["dropout"] = nn.Dropout(dropout)
    layers["fc"] = nn.Linear(channels, num_classes)  # (N, num_classes)
    return nn.Sequential(layers)
