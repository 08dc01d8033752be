"""The residual blocks: every shape the lecture states, every error path."""

import pytest
import torch
from torch import nn

from resnet_lessons import Bottleneck, Residual, set_seed
from resnet_lessons.shapes import conv_output_size


@pytest.fixture
def x() -> torch.Tensor:
    set_seed(0)
    return torch.randn(4, 3, 6, 6)  # the lecture's batch


def test_residual_keeps_shape(x):
    assert Residual(3, 3)(x).shape == (4, 3, 6, 6)


def test_1x1conv_changes_channels(x):
    assert Residual(3, 6, use_1x1conv=True)(x).shape == (4, 6, 6, 6)


@pytest.mark.parametrize(("stride", "size"), [(2, 3), (3, 2)])
def test_stride_with_1x1conv(x, stride, size):
    assert Residual(3, 6, use_1x1conv=True, stride=stride)(x).shape == (4, 6, size, size)


def test_1x1conv_with_same_channels_is_allowed(x):
    blk = Residual(3, 3, use_1x1conv=True)
    assert isinstance(blk.shortcut[0], torch.nn.Conv2d)
    assert blk(x).shape == (4, 3, 6, 6)


@pytest.mark.parametrize("size", range(1, 20))
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_shape_matches_formula(size, stride):
    blk = Residual(2, 5, use_1x1conv=True, stride=stride).eval()
    out = blk(torch.zeros(1, 2, size, size))
    expected = conv_output_size(size, 3, stride=stride, padding=1)
    assert expected == conv_output_size(size, 1, stride=stride)  # main path and shortcut agree
    assert out.shape == (1, 5, expected, expected)


def test_lecture_block_layers():
    blk = Residual(3, 6, use_1x1conv=True, stride=2)
    assert blk.conv1.kernel_size == (3, 3) and blk.conv1.padding == (1, 1)
    assert blk.conv1.stride == (2, 2) and blk.conv2.stride == (1, 1)
    assert blk.conv1.bias is not None  # the lecture's convs have a bias
    assert len(blk.shortcut) == 1 and blk.shortcut[0].kernel_size == (1, 1)
    assert blk.shortcut[0].stride == (2, 2)


def test_torchvision_variant_layers():
    blk = Residual(3, 6, use_1x1conv=True, stride=2, variant="torchvision")
    assert blk.conv1.bias is None and blk.conv2.bias is None
    assert isinstance(blk.shortcut[1], torch.nn.BatchNorm2d)


def test_identity_block_is_identity_when_residual_is_zero():
    """With the last BN's scale at zero, f(x) = 0 and the block returns relu(x)."""
    blk = Residual(3, 3).eval()
    torch.nn.init.zeros_(blk.bn2.weight)
    torch.nn.init.zeros_(blk.bn2.bias)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(blk(x), torch.relu(x))


def test_channels_change_without_1x1conv_explains_fix():
    with pytest.raises(ValueError) as err:
        Residual(3, 6)
    msg = str(err.value)
    assert "use_1x1conv" in msg and "3" in msg and "6" in msg
    assert "use_1x1conv=True" in msg  # the fix


def test_stride_without_1x1conv_explains_fix():
    with pytest.raises(ValueError, match=r"stride=2.*use_1x1conv=True"):
        Residual(3, 3, stride=2)


@pytest.mark.parametrize(
    ("args", "exc", "pattern"),
    [
        ((0, 3), ValueError, "in_channels must be at least 1, got 0"),
        ((3, -1), ValueError, "out_channels must be at least 1, got -1"),
        ((3, 3, True, 0), ValueError, "stride must be at least 1, got 0"),
        ((3.0, 3), TypeError, "in_channels must be a whole number"),
        ((3, 3, False, True), TypeError, "stride must be a whole number"),
    ],
)
def test_nonsense_arguments(args, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Residual(*args)


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant='resnet'.*'lecture'"):
        Residual(3, 3, variant="resnet")


def test_forward_with_wrong_channels(x):
    with pytest.raises(ValueError, match=r"built for 4 input channels but got 3.*in_channels=3"):
        Residual(4, 4)(x)


def test_forward_without_batch_dimension():
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        Residual(3, 3)(torch.randn(3, 6, 6))


@pytest.mark.parametrize("variant", ["lecture", "torchvision"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_bottleneck_shapes(variant, stride):
    blk = Bottleneck(64, 16, use_1x1conv=True, stride=stride, variant=variant)
    assert blk.expansion == 4 and blk.out_channels == 64
    size = conv_output_size(9, 3, stride=stride, padding=1)
    assert blk(torch.randn(2, 64, 9, 9)).shape == (2, 64, size, size)


def test_bottleneck_identity_shortcut_when_shapes_match():
    blk = Bottleneck(256, 64)
    assert isinstance(blk.shortcut, torch.nn.Identity)
    assert blk(torch.randn(1, 256, 7, 7)).shape == (1, 256, 7, 7)


def test_bottleneck_stride_placement():
    lecture = Bottleneck(64, 64, use_1x1conv=True, stride=2)
    tv = Bottleneck(64, 64, use_1x1conv=True, stride=2, variant="torchvision")
    assert lecture.conv1.stride == (2, 2) and lecture.conv2.stride == (1, 1)
    assert tv.conv1.stride == (1, 1) and tv.conv2.stride == (2, 2)


def test_bottleneck_needs_1x1conv_to_expand():
    with pytest.raises(ValueError, match=r"from 64 to 256.*use_1x1conv=True"):
        Bottleneck(64, 64)


# --------------------------------------------------------------------------- batch_norm=False


@pytest.mark.parametrize("variant", ["lecture", "torchvision"])
def test_residual_without_batch_norm(variant):
    block = Residual(3, 6, use_1x1conv=True, stride=2, variant=variant, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert isinstance(block.bn1, nn.Identity) and isinstance(block.bn2, nn.Identity)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(c.bias is not None for c in convs)  # the lecture's bias
    assert block(torch.randn(4, 3, 6, 6)).shape == (4, 6, 3, 3)
    assert "batch_norm=False" in repr(block)


def test_bottleneck_without_batch_norm():
    block = Bottleneck(8, 4, use_1x1conv=True, stride=2, variant="torchvision", batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert all(m.bias is not None for m in block.modules() if isinstance(m, nn.Conv2d))
    assert block(torch.randn(2, 8, 6, 6)).shape == (2, 16, 3, 3)


def test_batch_norm_default_keeps_the_lecture_block():
    a, b = Residual(3, 6, use_1x1conv=True), Residual(3, 6, use_1x1conv=True, batch_norm=True)
    assert list(a.state_dict()) == list(b.state_dict())
    assert isinstance(a.bn1, nn.BatchNorm2d)


@pytest.mark.parametrize("bad", [0, 1, "no", None])
def test_batch_norm_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="batch_norm must be True .* or False"):
        Residual(3, 3, batch_norm=bad)
    with pytest.raises(TypeError, match="batch_norm must be True"):
        Bottleneck(4, 1, batch_norm=bad)
