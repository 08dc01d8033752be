"""count_flops: hand-computed counts for single layers, and the ResNet family's ordering."""

import pytest
import torch
from torch import nn

from resnet_lessons import (
    Residual,
    count_flops,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)


def test_conv_counts_two_flops_per_multiply_add():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    # output (2, 8, 5, 5); each output value: 3 * 3 * 3 multiply-adds
    assert count_flops(conv, (2, 3, 10, 10)) == 2 * (2 * 8 * 5 * 5) * (3 * 3 * 3)


def test_linear_counts_two_flops_per_multiply_add():
    assert count_flops(nn.Linear(512, 10), (4, 512)) == 2 * 4 * 512 * 10


def test_residual_block_is_its_convolutions():
    block = Residual(3, 6, use_1x1conv=True, stride=2)  # (4, 3, 6, 6) -> (4, 6, 3, 3)
    out = 4 * 6 * 3 * 3
    conv1, conv2, shortcut = out * 3 * 9, out * 6 * 9, out * 3 * 1
    assert count_flops(block, (4, 3, 6, 6)) == 2 * (conv1 + conv2 + shortcut)


def test_resnet18_matches_the_paper():
    # He et al. (2016), Table 1: 1.8 x 10^9 multiply-adds for a 3x224x224 image
    flops = count_flops(resnet18(in_channels=3, num_classes=1000), (1, 3, 224, 224))
    assert flops / 2 == pytest.approx(1.8e9, rel=0.02)


def test_deeper_networks_cost_more():
    shape = (1, 1, 224, 224)
    flops = [count_flops(f(), shape) for f in (resnet18, resnet34, resnet50, resnet101, resnet152)]
    assert flops == sorted(flops) and len(set(flops)) == len(flops)


def test_flops_scale_with_batch_and_model_is_untouched():
    model = resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_flops(model, (3, 1, 96, 96)) == 3 * count_flops(model, (1, 1, 96, 96))
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="input shape"):
        count_flops(resnet18(), (1, 3, 224, 224))  # built for 1 channel
    with pytest.raises(ValueError, match="whole numbers"):
        count_flops(resnet18(), (1, 1, 0, 224))
