"""The ResNet network: stem, stages of residual blocks, global average pooling, classifier.

ResNet-18 as the lecture builds it (for a 1x224x224 image):

====================  ==================  =======================================
part                  output              what happens
====================  ==================  =======================================
stem                  64 x 56 x 56        7x7 conv stride 2, BN, ReLU, 3x3 max pool stride 2
stage1 (2 blocks)     64 x 56 x 56        ``first_block``: no downsampling again
stage2 (2 blocks)     128 x 28 x 28       first block: stride 2 + 1x1 conv
stage3 (2 blocks)     256 x 14 x 14       channels double, size halves
stage4 (2 blocks)     512 x 7 x 7
avgpool, flatten      512                 global average pooling
fc                    10                  one score per Fashion-MNIST class
====================  ==================  =======================================

Two switches for the regularisation experiments of notebook 07, both off by default (the
lecture's network, module for module): ``dropout=p`` puts ``nn.Dropout(p)`` between the
pooled features and ``fc`` (the lecture's "regulariser on the final fully connected
layer"), and ``batch_norm=False`` builds the same network with ``nn.Identity`` where each
batch norm was (and a bias on every convolution).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ._checks import check_int
from .blocks import Bottleneck, Residual, Variant, check_batch_norm, check_variant, norm_layer

BlockType = type[Residual] | type[Bottleneck]

#: Residual blocks per stage for each depth (He et al., 2016, Table 1).
ARCHITECTURES: dict[int, tuple[BlockType, tuple[int, int, int, int]]] = {
    18: (Residual, (2, 2, 2, 2)),
    34: (Residual, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

#: Channels of the four stages: they double while the height and width halve.
STAGE_CHANNELS = (64, 128, 256, 512)

Downsample = Literal["start", "end"]
#: Where a stage halves the size: in its first block (ResNet's rule) or in its last.
DOWNSAMPLE_PLACES: tuple[str, ...] = ("start", "end")


def check_downsample(downsample: object) -> str:
    """Return ``downsample`` if it is ``"start"`` or ``"end"``; else raise with the fix."""
    if downsample not in DOWNSAMPLE_PLACES:
        raise ValueError(
            f"downsample={downsample!r} is not a place in the stage; use 'start' (the first "
            "block halves the size: ResNet's rule) or 'end' (the last block does, so the "
            "blocks before it run on the full-size map)."
        )
    return str(downsample)


def check_dropout(dropout: object) -> float:
    """Return ``dropout`` if it is a probability in ``[0, 1)``; else raise with the fix."""
    if isinstance(dropout, bool) or not isinstance(dropout, int | float):
        raise TypeError(
            f"dropout must be a number in [0, 1), got {dropout!r} ({type(dropout).__name__})."
        )
    if not (math.isfinite(dropout) and 0 <= dropout < 1):
        raise ValueError(
            f"dropout={dropout} is not a probability in [0, 1): it is the fraction of the "
            "pooled features zeroed in training (1 would zero them all). Use 0 for none "
            "(the lecture's network) or e.g. 0.2 to 0.5."
        )
    return float(dropout)


def stem(
    in_channels: int = 1, *, variant: Variant = "lecture", batch_norm: bool = True
) -> nn.Sequential:
    """The first module (``b1`` in the lecture), the same as GoogLeNet's first stage plus BN.

    ``7x7 conv (64 channels, stride 2, padding 3) -> BN -> ReLU
    -> 3x3 max pool (stride 2, padding 1)``.

    Shapes: ``(N, in_channels, H, W) -> (N, 64, H / 4, W / 4)`` (rounded up), e.g.
    ``(1, 1, 224, 224) -> (1, 64, 56, 56)``. ``batch_norm=False`` puts ``nn.Identity`` in
    the BN's place (and a bias on the conv).
    """
    check_int("in_channels", in_channels)
    check_variant(variant)
    check_batch_norm(batch_norm)
    bias = variant == "lecture" or not batch_norm
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=bias),
        norm_layer(64, batch_norm),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


def resnet_block(
    in_channels: int,
    out_channels: int,
    num_residuals: int,
    first_block: bool = False,
    *,
    block: BlockType = Residual,
    variant: Variant = "lecture",
    batch_norm: bool = True,
    downsample: Downsample = "start",
) -> nn.Sequential:
    """One stage: ``num_residuals`` blocks; the first one downsamples unless ``first_block``.

    The first block of every stage but the first halves the height and width
    (stride 2) and changes the channels, so it needs the 1x1 conv on its
    shortcut. The first stage follows the stem's max pool, which already
    halved the size, so it keeps the size (``first_block=True``).

    For the bottleneck, ``out_channels`` is the stage's width and its blocks
    output ``out_channels * 4`` channels. One rule serves both blocks: the
    shortcut needs a 1x1 conv when ``stride != 1 or in_channels != out_channels * expansion``.

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels * expansion, H', W')`` with
    ``H' = H`` if ``first_block`` else ``ceil(H / 2)``. ``batch_norm`` goes to every block.

    ``downsample="end"`` builds the variant the lecture warns against, for comparison: the
    first block changes the channels at full size (stride 1) and the *last* block halves
    the size (stride 2, with its own 1x1 conv), so every block before it runs on the
    full-size map: the same output shape, more FLOPs. With one block the two coincide.
    """
    check_int("in_channels", in_channels)
    check_int("out_channels", out_channels)
    check_int("num_residuals", num_residuals)
    check_batch_norm(batch_norm)
    halving = 0 if check_downsample(downsample) == "start" else num_residuals - 1
    blocks = []
    channels = in_channels
    for i in range(num_residuals):
        stride = 2 if i == halving and not first_block else 1
        use_1x1conv = stride != 1 or channels != out_channels * block.expansion
        blocks.append(
            block(
                channels, out_channels, use_1x1conv, stride, variant=variant, batch_norm=batch_norm
            )
        )
        channels = out_channels * block.expansion
    return nn.Sequential(*blocks)


class ResNet(nn.Sequential):
    """A ResNet: stem, four stages, global average pooling, flatten, linear classifier.

    The top-level children are, in order: ``stem``, ``stage1`` ... ``stage4``,
    ``avgpool``, ``flatten``, ``fc``, so ``trace_shapes(model, ...)`` lists the
    lecture's table row by row. With ``dropout > 0`` a ``dropout`` child sits between
    ``flatten`` and ``fc``; with the default 0 there is none (the lecture's network).

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``.

    Args:
        block: :class:`Residual` (ResNet-18/34) or :class:`Bottleneck` (50 and deeper).
        num_residuals: blocks in each of the four stages, e.g. ``(2, 2, 2, 2)``.
        in_channels: image channels; 1 for Fashion-MNIST, 3 for colour images.
        num_classes: outputs of the final linear layer; 10 for Fashion-MNIST.
        variant: ``"lecture"`` or ``"torchvision"`` (see :mod:`resnet_lessons.blocks`).
        dropout: probability in ``[0, 1)`` of zeroing each pooled feature before ``fc``
            in training (Srivastava et al. 2014); 0 adds no layer at all.
        batch_norm: ``False`` builds the network without batch norm (``nn.Identity`` in
            each BN's place, a bias on every convolution).
    """

    def __init__(
        self,
        block: BlockType,
        num_residuals: Sequence[int],
        in_channels: int = 1,
        num_classes: int = 10,
        *,
        variant: Variant = "lecture",
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        if block not in (Residual, Bottleneck):
            raise TypeError(f"block must be Residual or Bottleneck, got {block!r}.")
        if len(num_residuals) != len(STAGE_CHANNELS):
            raise ValueError(
                f"num_residuals needs one count per stage ({len(STAGE_CHANNELS)} stages), "
                f"got {len(num_residuals)}: {tuple(num_residuals)}. ResNet-18 uses (2, 2, 2, 2)."
            )
        check_int("num_classes", num_classes)
        dropout = check_dropout(dropout)
        check_batch_norm(batch_norm)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = stem(in_channels, variant=variant, batch_norm=batch_norm)
        channels = 64
        for i, (width, n) in enumerate(zip(STAGE_CHANNELS, num_residuals, strict=True)):
            layers[f"stage{i + 1}"] = resnet_block(
                channels,
                width,
                n,
                first_block=i == 0,
                block=block,
                variant=variant,
                batch_norm=batch_norm,
            )
            channels = width * block.expansion
        layers["avgpool"] = nn.AdaptiveAvgPool2d((1, 1))  # (N, C, H, W) -> (N, C, 1, 1)
        layers["flatten"] = nn.Flatten()  # -> (N, C)
        if dropout > 0:
            layers["dropout"] = nn.Dropout(dropout)  # (N, C), features zeroed in training
        layers["fc"] = nn.Linear(channels, num_classes)  # -> (N, num_classes)
        super().__init__(layers)
        self.block = block
        self.num_residuals = tuple(num_residuals)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.variant = variant
        self.dropout_p = dropout  # (the child "dropout" is the layer, when there is one)
        self.batch_norm = batch_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            got = f"{x.shape[1]} channels" if x.dim() == 4 else f"a {x.dim()}-d tensor"
            raise ValueError(
                f"ResNet expects images of shape (N, {self.in_channels}, H, W) but got {got} "
                f"(input shape {tuple(x.shape)}). Fix: build the model with "
                f"in_channels={x.shape[1] if x.dim() == 4 else '...'}"
                + (
                    " or convert the images (Fashion-MNIST is grayscale: 1 channel)."
                    if x.dim() == 4
                    else "; add a batch dimension with x.unsqueeze(0) for a single image."
                )
            )
        try:
            return super().forward(x)
        except ValueError as err:
            if "more than 1 value per channel" not in str(err):
                raise
            raise ValueError(
                f"batch norm in training mode needs more than one value per channel, but a "
                f"batch of {x.shape[0]} image(s) of {x.shape[2]}x{x.shape[3]} shrinks to "
                f"{str(err).rsplit('size ', 1)[-1]} on the way. Fix: call model.eval() "
                "before predicting single images, or train with batches of 2 or more images "
                "(or larger images)."
            ) from None

    @property
    def depth(self) -> int:
        """Layers with weights on the main path: the stem conv, the block convs, the fc."""
        convs_per_block = 2 if self.block is Residual else 3
        return 1 + convs_per_block * sum(self.num_residuals) + 1


def _build(
    depth: int,
    in_channels: int,
    num_classes: int,
    variant: Variant,
    dropout: float,
    batch_norm: bool,
) -> ResNet:
    block, num_residuals = ARCHITECTURES[depth]
    return ResNet(
        block,
        num_residuals,
        in_channels,
        num_classes,
        variant=variant,
        dropout=dropout,
        batch_norm=batch_norm,
    )


def resnet18(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    variant: Variant = "lecture",
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2). The lecture's variant has 11,178,378 parameters.

    ``dropout=p`` adds dropout before ``fc``; ``batch_norm=False`` removes every batch norm
    (see :class:`ResNet`). ``(N, in_channels, H, W) -> (N, num_classes)``.
    """
    return _build(18, in_channels, num_classes, variant, dropout, batch_norm)


def resnet34(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    variant: Variant = "lecture",
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3)."""
    return _build(34, in_channels, num_classes, variant, dropout, batch_norm)


def resnet50(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    variant: Variant = "lecture",
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3)."""
    return _build(50, in_channels, num_classes, variant, dropout, batch_norm)


def resnet101(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    variant: Variant = "lecture",
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> ResNet:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3)."""
    return _build(101, in_channels, num_classes, variant, dropout, batch_norm)


def resnet152(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    variant: Variant = "lecture",
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> ResNet:
    """ResNet-152: bottleneck blocks (3, 8, 36, 3)."""
    return _build(152, in_channels, num_classes, variant, dropout, batch_norm)


def from_torchvision(tv_model: nn.Module) -> ResNet:
    """A ``variant="torchvision"`` ResNet with the weights of a ``torchvision.models.resnet*``.

    The result gives the same outputs as ``tv_model`` (in eval mode, the batch
    norm running statistics are copied too). Only the names differ:
    ``conv1``/``bn1`` are ``stem.0``/``stem.1``, ``layerK`` is ``stageK``,
    ``downsample`` is ``shortcut``.
    """
    try:
        tv_layers = [getattr(tv_model, f"layer{i}") for i in range(1, 5)]
        conv1, fc = tv_model.conv1, tv_model.fc
    except AttributeError as err:
        raise TypeError(
            f"from_torchvision expects a torchvision.models.resnet18/34/50/101/152 model, got "
            f"{type(tv_model).__name__} without {err.name!r}."
        ) from None
    first = tv_layers[0][0]
    kind = type(first).__name__
    if kind not in ("BasicBlock", "Bottleneck"):
        raise TypeError(f"from_torchvision: unknown block type {kind}; expected a plain ResNet.")
    block = Residual if kind == "BasicBlock" else Bottleneck
    if first.conv2.groups != 1 or first.conv1.out_channels != 64:
        raise TypeError(
            "from_torchvision supports the plain ResNets (resnet18/34/50/101/152), not "
            "ResNeXt or wide ResNets."
        )
    num_residuals = tuple(len(layer) for layer in tv_layers)
    model = ResNet(block, num_residuals, conv1.in_channels, fc.out_features, variant="torchvision")
    renamed = {}
    for name, value in tv_model.state_dict().items():
        new = name.replace("downsample", "shortcut")
        new = new.replace("conv1.", "stem.0.", 1) if name.startswith("conv1.") else new
        new = new.replace("bn1.", "stem.1.", 1) if name.startswith("bn1.") else new
        if name.startswith("layer"):
            new = "stage" + new[len("layer") :]
        renamed[new] = value
    model.load_state_dict(renamed, strict=True)
    return model
