"""Exercise 2 (notebook 01): the lecture's residual block."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from .feedback import Feedback
from .tracing import (
    BLOCK_CONFIGS,
    BlockSpec,
    check_block,
    shortcut_of,
)


def _residual_main(x, c, n, relu_between=True):  # noqa: ANN001, ANN202 - private wiring
    h = n[0](c[0](x))
    return n[1](c[1](F.relu(h) if relu_between else h))


_RESIDUAL = BlockSpec(
    exercise="Residual block",
    what="your block's __init__ and forward",
    configs=BLOCK_CONFIGS,
    kernels=(3, 3),
    norms=2,
    out_channels=lambda cfg: cfg.out_channels,
    correct=(lambda x, c, sc, n, cfg: F.relu(_residual_main(x, c, n) + shortcut_of(x, sc)),),
    mistakes=(
        (
            "relu_before_add",
            lambda x, c, sc, n, cfg: F.relu(_residual_main(x, c, n)) + shortcut_of(x, sc),
            "The ReLU comes before the addition: apply it after adding the shortcut, "
            "relu(bn2(conv2(...)) + shortcut(x)).",
        ),
        (
            "no_final_relu",
            lambda x, c, sc, n, cfg: _residual_main(x, c, n) + shortcut_of(x, sc),
            "The final ReLU is missing: the block returns relu(main path + shortcut).",
        ),
        (
            "bn_after_add",
            lambda x, c, sc, n, cfg: F.relu(n[1](c[1](F.relu(n[0](c[0](x)))) + shortcut_of(x, sc))),
            "The second batch norm comes after the addition: it belongs to the main path, "
            "right after the second conv and before the shortcut is added.",
        ),
        (
            "no_shortcut",
            lambda x, c, sc, n, cfg: F.relu(_residual_main(x, c, n)),
            "The shortcut is never added: the output should be relu(main path + shortcut(x)), "
            "where the shortcut is x itself or the 1x1 conv of x.",
        ),
        (
            "no_relu_between",
            lambda x, c, sc, n, cfg: F.relu(_residual_main(x, c, n, False) + shortcut_of(x, sc)),
            "The ReLU between the two convolutions is missing: conv1 -> BN -> ReLU -> conv2 -> BN.",
        ),
    ),
    order="conv1 (3x3, stride) -> BN -> ReLU -> conv2 (3x3) -> BN, add the shortcut, ReLU",
)


def check_residual(cls: type[nn.Module] | None) -> Feedback:
    """Check a residual block class with the lecture's signature
    ``(in_channels, out_channels, use_1x1conv=False, stride=1)``.

    It builds the block for several configurations and checks, on inputs of shape
    ``(4, C_in, H, W)``, the layers that run, the output shape, and the output against
    the reference ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` computed with the
    block's own weights (set to random values), in evaluation and training mode. Layer
    names and order in ``__init__`` are free; ``nn.Sequential`` is fine.

    Hints: no padding on the 3x3 convs, the stride on both 3x3 convs, the 1x1 shortcut
    without the stride, ReLU before the addition, no final ReLU, batch norm missing or
    after the addition, the shortcut never added, no ReLU between the convs.
    """
    return check_block(_RESIDUAL, cls)
