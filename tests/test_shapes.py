"""The shape formula and the meta-device traces."""

import itertools

import pytest
import torch
from torch import nn

from resnet_lessons import (
    Residual,
    check_channel_progression,
    conv_output_size,
    resnet18,
    resnet50,
    resnet152,
    resnet_block,
    stem,
    trace_shapes,
)

RESNET18_224 = [
    ("stem", "Sequential", (1, 64, 56, 56)),
    ("stage1", "Sequential", (1, 64, 56, 56)),
    ("stage2", "Sequential", (1, 128, 28, 28)),
    ("stage3", "Sequential", (1, 256, 14, 14)),
    ("stage4", "Sequential", (1, 512, 7, 7)),
    ("avgpool", "AdaptiveAvgPool2d", (1, 512, 1, 1)),
    ("flatten", "Flatten", (1, 512)),
    ("fc", "Linear", (1, 10)),
]


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation"),
    [
        p
        for p in itertools.product(range(1, 18), (1, 2, 3, 5, 7), (1, 2, 3), (0, 1, 3), (1, 2))
        if (p[0] + 2 * p[3] - p[4] * (p[1] - 1) - 1) >= 0
    ],
)
def test_formula_matches_real_conv(size, kernel, stride, padding, dilation):
    conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    out = conv(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == conv_output_size(size, kernel, stride, padding, dilation)


def test_formula_lecture_examples():
    assert conv_output_size(6, 3, stride=2, padding=1) == 3
    assert conv_output_size(6, 3, stride=3, padding=1) == 2
    assert conv_output_size(224, 7, stride=2, padding=3) == 112
    assert conv_output_size(112, 3, stride=2, padding=1) == 56


def test_formula_kernel_too_large():
    with pytest.raises(ValueError) as err:
        conv_output_size(2, 5)
    msg = str(err.value)
    assert "size 5" in msg and "size 2" in msg and "at least 5 pixels" in msg


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"size": 0, "kernel_size": 3}, ValueError, "size must be at least 1, got 0"),
        ({"size": 5, "kernel_size": 0}, ValueError, "kernel_size must be at least 1"),
        ({"size": 5, "kernel_size": 3, "stride": 0}, ValueError, "stride must be at least 1"),
        ({"size": 5, "kernel_size": 3, "padding": -1}, ValueError, "padding must be at least 0"),
        ({"size": 5, "kernel_size": 3, "dilation": 0}, ValueError, "dilation must be at least 1"),
        ({"size": 5.5, "kernel_size": 3}, TypeError, "size must be a whole number"),
    ],
)
def test_formula_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        conv_output_size(**kwargs)


def test_trace_resnet18_lecture_table():
    table = trace_shapes(resnet18(), (1, 1, 224, 224))
    assert [(r.name, r.layer, r.output_shape) for r in table] == RESNET18_224
    assert sum(r.params for r in table) == table.total_params == 11_178_378


def test_trace_matches_real_forward_at_many_sizes():
    model = resnet18().eval()
    for size in (28, 33, 96, 97):
        x = torch.zeros(2, 1, size, size)
        expected = []
        for layer in model:
            x = layer(x)
            expected.append(tuple(x.shape))
        assert [r.output_shape for r in trace_shapes(model, (2, 1, size, size))] == expected


def test_trace_depth_two_lists_blocks():
    table = trace_shapes(resnet18(), (1, 1, 224, 224), depth=2)
    names = [r.name for r in table]
    assert names[:4] == ["stem.0", "stem.1", "stem.2", "stem.3"]
    assert "stage2.0" in names and "stage4.1" in names
    row = table[names.index("stage2.0")]
    assert row.layer == "Residual" and row.output_shape == (1, 128, 28, 28)


def test_trace_leaves_model_unchanged():
    model = resnet18()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace_shapes(model, (2, 1, 64, 64))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(v.device.type == "cpu" for v in after.values())
    assert all("forward" not in vars(m) for m in model.modules())  # BN stand-ins removed
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_trace_resnet152_is_instant_and_right():
    """On the meta device no numbers are computed, so even ResNet-152 at 224 is cheap."""
    table = trace_shapes(resnet152(), (1, 1, 224, 224))
    assert table[4].output_shape == (1, 2048, 7, 7)
    assert table[-1].output_shape == (1, 10)


def test_trace_single_module():
    table = trace_shapes(Residual(3, 6, use_1x1conv=True, stride=2), (4, 3, 6, 6), depth=1)
    assert [(r.name, r.output_shape) for r in table] == [
        ("conv1", (4, 6, 3, 3)),
        ("bn1", (4, 6, 3, 3)),
        ("conv2", (4, 6, 3, 3)),
        ("bn2", (4, 6, 3, 3)),
        ("shortcut", (4, 6, 3, 3)),
    ]
    leaf = trace_shapes(nn.Conv2d(1, 2, 3), (1, 1, 5, 5))
    assert leaf[0].output_shape == (1, 2, 3, 3)


def test_trace_prints_and_renders():
    table = trace_shapes(resnet18(), (1, 1, 224, 224))
    text = str(table)
    assert "stage4" in text and "(1, 512, 7, 7)" in text and "11,178,378" in text
    html = table._repr_html_()
    assert html.startswith("<table") and "<td style='text-align:left'>stage3</td>" in html
    assert repr(table) == text


def test_trace_image_too_small_names_layer():
    broken = nn.Sequential(nn.Conv2d(1, 4, 5), nn.Conv2d(4, 4, 5))
    with pytest.raises(ValueError, match=r"\(1, 1, 7, 7\) does not fit '1'.*larger image"):
        trace_shapes(broken, (1, 1, 7, 7))


def test_trace_wrong_channels():
    with pytest.raises(ValueError, match="3 channels"):
        trace_shapes(resnet18(), (1, 3, 224, 224))


def test_trace_catches_batch_norm_channel_mismatch():
    broken = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4\).*expected 4 channels"):
        trace_shapes(broken, (1, 1, 8, 8))


@pytest.mark.parametrize("shape", [(1, 0, 4, 4), (1, -1), "abc", (1.5, 2)])
def test_trace_bad_input_shape(shape):
    with pytest.raises((ValueError, TypeError), match="input_shape"):
        trace_shapes(resnet18(), shape)


def test_channel_progression_clean_for_resnets():
    assert check_channel_progression(resnet18(), (1, 1, 224, 224)) == []
    assert check_channel_progression(resnet50(), (1, 1, 96, 96)) == []
    assert check_channel_progression(resnet18(in_channels=3), (1, 3, 64, 64)) == []


def test_channel_progression_finds_a_shrinking_stage():
    broken = nn.Sequential(
        stem(),
        resnet_block(64, 64, 2, first_block=True),
        resnet_block(64, 128, 2),
        resnet_block(128, 64, 2),  # the bug: should be 256
    )
    findings = check_channel_progression(broken, (1, 1, 96, 96))
    assert len(findings) == 1
    assert findings[0].startswith("3.0 (Residual): channels shrink from 128 (after 2.1) to 64")
