"""Where a stage halves the size: ``resnet_block(..., downsample="start" | "end")``.

ResNet's rule (the default) halves the size in the first block of a stage; the ``"end"``
variant, built for notebook 03's comparison, halves it in the last block, so the blocks
before it run on the full-size map. Same output shape, more FLOPs, one more 1x1 conv.
"""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from resnet_lessons import Bottleneck, count_flops, resnet18, resnet_block, trace_shapes
from resnet_lessons.network import DOWNSAMPLE_PLACES, check_downsample


def conv_flops(c_in: int, c_out: int, size: int, k: int) -> int:
    """A k x k convolution's FLOPs (2 per multiply-add) for one image, output size x size."""
    return 2 * c_out * size * size * c_in * k * k


def block_shapes(stage: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [row.output_shape for row in trace_shapes(stage, input_shape)]


def narrow_resnet(downsample: str, width: int = 8) -> nn.Sequential:
    """Notebook 03's network for 14x14 Fashion-MNIST images, built the same way."""
    return nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()),
            stage1=resnet_block(width, width, 2, first_block=True),
            stage2=resnet_block(width, 2 * width, 2, downsample=downsample),
            stage3=resnet_block(2 * width, 4 * width, 2, downsample=downsample),
            avgpool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * width, 10),
        )
    )


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_default_is_the_start_and_builds_the_same_stage_as_before():
    assert DOWNSAMPLE_PLACES == ("start", "end")
    for first_block in (False, True):
        torch.manual_seed(0)
        default = resnet_block(64, 128, 2, first_block=first_block)
        torch.manual_seed(0)
        start = resnet_block(64, 128, 2, first_block=first_block, downsample="start")
        assert repr(default) == repr(start)
        for (name, a), (_, b) in zip(
            default.state_dict().items(), start.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
    assert [block.stride for block in resnet_block(64, 128, 3)] == [2, 1, 1]
    assert params(resnet18()) == 11_178_378  # the lecture's network is unchanged


def test_at_the_end_the_first_block_keeps_the_size_and_the_last_halves_it():
    shape = (1, 8, 14, 14)
    start = block_shapes(resnet_block(8, 16, 2), shape)
    end = block_shapes(resnet_block(8, 16, 2, downsample="end"), shape)
    assert start == [(1, 16, 7, 7), (1, 16, 7, 7)]
    assert end == [(1, 16, 14, 14), (1, 16, 7, 7)]
    three = block_shapes(resnet_block(8, 16, 3, downsample="end"), (1, 8, 7, 7))
    assert three == [(1, 16, 7, 7), (1, 16, 7, 7), (1, 16, 4, 4)]
    stage = resnet_block(8, 16, 3, downsample="end")
    assert [b.stride for b in stage] == [1, 1, 2]
    shortcuts = [type(b.shortcut).__name__ for b in stage]
    assert shortcuts == ["Sequential", "Identity", "Sequential"]  # 1x1 convs: channels, size


def test_the_end_variant_costs_the_flops_of_its_full_size_blocks():
    """Stage (8 -> 16, two blocks) on 14x14, counted by hand: conv1, conv2, 1x1 shortcut."""
    start = (
        conv_flops(8, 16, 7, 3) + conv_flops(16, 16, 7, 3) + conv_flops(8, 16, 7, 1)  # block 1
        + 2 * conv_flops(16, 16, 7, 3)  # block 2: identity shortcut
    )  # fmt: skip
    end = (
        conv_flops(8, 16, 14, 3) + conv_flops(16, 16, 14, 3) + conv_flops(8, 16, 14, 1)
        + 2 * conv_flops(16, 16, 7, 3) + conv_flops(16, 16, 7, 1)  # the halving block
    )  # fmt: skip
    assert (start, end) == (802_816, 1_881_600)
    shape = (1, 8, 14, 14)
    assert count_flops(resnet_block(8, 16, 2), shape) == start
    assert count_flops(resnet_block(8, 16, 2, downsample="end"), shape) == end


def test_the_end_variant_has_one_more_1x1_conv_per_stage():
    c = 16
    extra = c * c + c  # the halving block's 1x1 conv (with a bias in the lecture's variant)
    assert params(resnet_block(8, c, 2, downsample="end")) - params(resnet_block(8, c, 2)) == extra
    tv = {d: resnet_block(8, c, 2, variant="torchvision", downsample=d) for d in DOWNSAMPLE_PLACES}
    assert params(tv["end"]) - params(tv["start"]) == c * c + 2 * c  # no bias, BN's two
    bottleneck = resnet_block(256, 128, 2, block=Bottleneck, downsample="end")
    assert block_shapes(bottleneck, (1, 256, 14, 14)) == [(1, 512, 14, 14), (1, 512, 7, 7)]


def test_one_block_or_the_first_stage_is_the_same_either_way():
    for kwargs in ({"num_residuals": 1}, {"num_residuals": 2, "first_block": True}):
        torch.manual_seed(0)
        start = resnet_block(16, 16, **kwargs)
        torch.manual_seed(0)
        end = resnet_block(16, 16, downsample="end", **kwargs)
        assert repr(start) == repr(end)


def test_notebook_03s_narrow_networks_shapes_flops_and_parameters():
    nets = {d: narrow_resnet(d) for d in DOWNSAMPLE_PLACES}
    shape = (1, 1, 14, 14)
    traces = {d: trace_shapes(net, shape, depth=2) for d, net in nets.items()}
    blocks = {d: {r.name: r.output_shape for r in t if "." in r.name} for d, t in traces.items()}
    assert blocks["start"]["stage2.0"] == (1, 16, 7, 7)
    assert blocks["end"]["stage2.0"] == (1, 16, 14, 14)
    assert blocks["start"]["stage3.0"] == (1, 32, 4, 4)
    assert blocks["end"]["stage3.0"] == (1, 32, 7, 7)
    for name in ("stem.2", "stage1.1", "stage2.1", "stage3.1"):  # the stages' outputs agree
        assert blocks["start"][name] == blocks["end"][name], name
    assert nets["start"](torch.zeros(2, 1, 14, 14)).shape == (2, 10)
    flops = {d: count_flops(net, shape) for d, net in nets.items()}
    assert flops == {"start": 2_783_424, "end": 4_841_152}
    assert 1.7 < flops["end"] / flops["start"] < 1.8
    assert params(nets["end"]) - params(nets["start"]) == (16 * 16 + 16) + (32 * 32 + 32)


@pytest.mark.parametrize("bad", ["middle", "START", None, 0])
def test_an_unknown_place_is_refused_with_the_two_choices(bad):
    with pytest.raises(ValueError, match=r"'start'.*'end'"):
        resnet_block(8, 16, 2, downsample=bad)
    with pytest.raises(ValueError, match="not a place in the stage"):
        check_downsample(bad)
