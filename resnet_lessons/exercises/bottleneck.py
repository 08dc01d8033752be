"""Stretch exercise (notebook 04): ResNet-50's bottleneck block."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from .feedback import Feedback
from .tracing import (
    BOTTLENECK_CONFIGS,
    BlockSpec,
    check_block,
    shortcut_of,
)


def _bottleneck_main(x, c, n):  # noqa: ANN001, ANN202 - private wiring
    h = F.relu(n[0](c[0](x)))
    h = F.relu(n[1](c[1](h)))
    return n[2](c[2](h))


_BOTTLENECK = BlockSpec(
    exercise="Bottleneck block",
    what="your bottleneck's __init__ and forward",
    configs=BOTTLENECK_CONFIGS,
    kernels=(1, 3, 1),
    norms=3,
    out_channels=lambda cfg: 4 * cfg.out_channels,
    correct=(lambda x, c, sc, n, cfg: F.relu(_bottleneck_main(x, c, n) + shortcut_of(x, sc)),),
    mistakes=(
        (
            "relu_before_add",
            lambda x, c, sc, n, cfg: F.relu(_bottleneck_main(x, c, n)) + shortcut_of(x, sc),
            "The ReLU comes before the addition: apply it after adding the shortcut.",
        ),
        (
            "no_final_relu",
            lambda x, c, sc, n, cfg: _bottleneck_main(x, c, n) + shortcut_of(x, sc),
            "The final ReLU is missing: the block returns relu(main path + shortcut).",
        ),
        (
            "no_shortcut",
            lambda x, c, sc, n, cfg: F.relu(_bottleneck_main(x, c, n)),
            "The shortcut is never added: the output should be relu(main path + shortcut(x)).",
        ),
    ),
    expansion=4,
    order="1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 (4x channels) -> BN, add, ReLU",
)


def check_bottleneck(cls: type[nn.Module] | None) -> Feedback:
    """Check a bottleneck block class ``(in_channels, mid_channels, use_1x1conv=False,
    stride=1)`` whose output has ``4 * mid_channels`` channels (ResNet-50's block).

    The stride may sit on the first 1x1 conv (the original paper) or on the 3x3 conv
    (torchvision's "v1.5"). Hints: no 4x expansion, layers in the wrong order, the 3x3
    without padding, the stride missing or twice, the shortcut without the stride, ReLU
    before the addition, no final ReLU, the shortcut never added.
    """
    return check_block(_BOTTLENECK, cls)
