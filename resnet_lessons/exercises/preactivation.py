"""Stretch exercise (notebook 01): He et al.'s (2016) pre-activation block."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .feedback import NOT_DONE, Feedback, failure
from .tracing import (
    BLOCK_CONFIGS,
    BlockSpec,
    build_block,
    check_block,
    run_traced,
)


def _preact_main(x, c, n):  # noqa: ANN001, ANN202 - private wiring
    return c[1](F.relu(n[1](c[0](F.relu(n[0](x))))))


def _preact_shortcut(x, sc, n, pre_activated):  # noqa: ANN001, ANN202 - private wiring
    if sc is None:
        return x
    return sc(F.relu(n[0](x))) if pre_activated else sc(x)


_PREACTIVATION = BlockSpec(
    exercise="Pre-activation block",
    what="your pre-activation block's __init__ and forward",
    configs=BLOCK_CONFIGS,
    kernels=(3, 3),
    norms=2,
    out_channels=lambda cfg: cfg.out_channels,
    # He et al.'s code feeds the 1x1 shortcut the pre-activated input; x itself is fine too.
    correct=(
        lambda x, c, sc, n, cfg: _preact_main(x, c, n) + _preact_shortcut(x, sc, n, True),
        lambda x, c, sc, n, cfg: _preact_main(x, c, n) + _preact_shortcut(x, sc, n, False),
    ),
    mistakes=(
        (
            "final_relu",
            lambda x, c, sc, n, cfg: F.relu(
                _preact_main(x, c, n) + _preact_shortcut(x, sc, n, True)
            ),
            "There is a ReLU after the addition: the pre-activation block returns "
            "main path + shortcut as it is, so the identity path stays clean.",
        ),
        (
            "final_relu",
            lambda x, c, sc, n, cfg: F.relu(
                _preact_main(x, c, n) + _preact_shortcut(x, sc, n, False)
            ),
            "There is a ReLU after the addition: the pre-activation block returns "
            "main path + shortcut as it is, so the identity path stays clean.",
        ),
        (
            "no_shortcut",
            lambda x, c, sc, n, cfg: _preact_main(x, c, n),
            "The shortcut is never added: the output should be main path + shortcut(x).",
        ),
    ),
    order="BN -> ReLU -> conv1 (3x3, stride) -> BN -> ReLU -> conv2 (3x3), add the shortcut",
)


def check_preactivation(cls: type[nn.Module] | None) -> Feedback:
    """Check He et al.'s (2016) pre-activation block ``(in_channels, out_channels,
    use_1x1conv=False, stride=1)``: ``BN -> ReLU -> conv -> BN -> ReLU -> conv``, plus the
    shortcut, no ReLU after the addition (reference:
    :class:`resnet_lessons.preactivation.PreActResidual`).

    The 1x1 shortcut may read ``x`` or the pre-activated ``relu(bn1(x))``. Hints: the
    original (post-activation) order, a ReLU after the addition, the shortcut never
    added, and the structural ones of :func:`check_residual`.
    """
    name = _PREACTIVATION.exercise
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        with torch.random.fork_rng(devices=[]):
            block, problem = build_block(name, cls, (3, 6, True, 2), _PREACTIVATION.what)
            if problem is None and block is not None:
                trace = run_traced(block.eval(), torch.randn(4, 3, 6, 6))
                if trace.order and isinstance(trace.order[0][1], nn.Conv2d):
                    return failure(
                        name,
                        "post_activation",
                        "Your block starts with a convolution, like the original block: the "
                        "pre-activation block puts batch norm and ReLU before each conv "
                        "(BN -> ReLU -> conv, twice) and adds the shortcut with no ReLU after.",
                    )
            if problem is not None and problem.hint == NOT_DONE:
                return problem
    return check_block(_PREACTIVATION, cls)
