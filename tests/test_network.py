"""The network: stem, stages, ResNet-18..152, and agreement with torchvision weight for weight."""

import pytest
import torch
import torchvision
from torch import nn

from resnet_lessons import (
    Bottleneck,
    Residual,
    ResNet,
    from_torchvision,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_block,
    set_seed,
    stem,
)

BUILDERS = {18: resnet18, 34: resnet34, 50: resnet50, 101: resnet101, 152: resnet152}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tv_model(depth: int, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet, with the first conv swapped for the given input channels."""
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def test_stem_shapes_and_layers():
    b1 = stem()
    assert b1(torch.zeros(2, 1, 224, 224)).shape == (2, 64, 56, 56)
    conv, bn, relu, pool = b1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert conv.out_channels == 64 and isinstance(bn, nn.BatchNorm2d)
    assert isinstance(relu, nn.ReLU)
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)


def test_stem_rgb():
    assert stem(3)(torch.zeros(1, 3, 96, 96)).shape == (1, 64, 24, 24)


def test_first_stage_keeps_size():
    stage = resnet_block(64, 64, 2, first_block=True)
    assert all(isinstance(b.shortcut, nn.Identity) for b in stage)
    assert stage(torch.zeros(1, 64, 56, 56)).shape == (1, 64, 56, 56)


def test_later_stage_downsamples_in_first_block_only():
    stage = resnet_block(64, 128, 2)
    assert stage[0].stride == 2 and stage[0].use_1x1conv
    assert stage[1].stride == 1 and not stage[1].use_1x1conv
    assert stage(torch.zeros(1, 64, 56, 56)).shape == (1, 128, 28, 28)


def test_bottleneck_first_stage_projects_without_stride():
    stage = resnet_block(64, 64, 3, first_block=True, block=Bottleneck)
    assert stage[0].use_1x1conv and stage[0].stride == 1  # 64 -> 256 channels
    assert not stage[1].use_1x1conv
    assert stage(torch.zeros(1, 64, 8, 8)).shape == (1, 256, 8, 8)


def test_resnet_block_bad_arguments():
    with pytest.raises(ValueError, match="num_residuals must be at least 1, got 0"):
        resnet_block(64, 64, 0)


def test_resnet18_top_level_children():
    model = resnet18()
    names = [name for name, _ in model.named_children()]
    assert names == ["stem", "stage1", "stage2", "stage3", "stage4", "avgpool", "flatten", "fc"]
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert isinstance(model.flatten, nn.Flatten)
    assert model.fc.in_features == 512 and model.fc.out_features == 10


def test_resnet18_per_layer_shapes_real_forward():
    """The lecture's table, by a real forward pass (the trace test checks the meta version)."""
    set_seed(0)
    model = resnet18().eval()
    x = torch.randn(1, 1, 224, 224)
    shapes = []
    for layer in model:
        x = layer(x)
        shapes.append(tuple(x.shape))
    assert shapes == [
        (1, 64, 56, 56),
        (1, 64, 56, 56),
        (1, 128, 28, 28),
        (1, 256, 14, 14),
        (1, 512, 7, 7),
        (1, 512, 1, 1),
        (1, 512),
        (1, 10),
    ]


def test_lecture_resnet18_parameter_count():
    assert n_params(resnet18()) == 11_178_378


def test_lecture_resnet18_is_the_lecture_network():
    model = resnet18()
    assert model.stem[0].bias is not None
    assert len(model.stage2[0].shortcut) == 1  # 1x1 conv, no BN
    assert model.depth == 18
    assert [resnet34().depth, resnet50().depth, resnet101().depth, resnet152().depth] == [
        34,
        50,
        101,
        152,
    ]


@pytest.mark.parametrize("depth", sorted(BUILDERS))
def test_parameter_counts_match_torchvision(depth):
    ours = BUILDERS[depth](in_channels=3, num_classes=1000, variant="torchvision")
    assert n_params(ours) == n_params(tv_model(depth, 3, 1000))


@pytest.mark.parametrize("depth", [18, 50])
def test_parameter_counts_match_torchvision_fashion_mnist(depth):
    assert n_params(BUILDERS[depth](variant="torchvision")) == n_params(tv_model(depth))


def _randomise_bn(model: nn.Module) -> None:
    """Give every BN non-trivial running statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, model.conv1.in_channels, 64, 64) * 2 + 0.5)
    model.eval()


@pytest.mark.parametrize(("depth", "in_channels"), [(18, 1), (18, 3), (50, 3), (34, 1)])
def test_from_torchvision_gives_identical_outputs(depth, in_channels):
    set_seed(depth)
    tv = tv_model(depth, in_channels)
    _randomise_bn(tv)
    ours = from_torchvision(tv).eval()
    assert ours.variant == "torchvision" and ours.in_channels == in_channels
    x = torch.randn(2, in_channels, 80, 80)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert expected.abs().max() > 0.1  # not a trivial output
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_from_torchvision_rejects_other_models():
    with pytest.raises(TypeError, match="resnet18/34/50/101/152"):
        from_torchvision(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="ResNeXt"):
        from_torchvision(torchvision.models.resnext50_32x4d())


def test_forward_wrong_channels_says_expected_and_got():
    with pytest.raises(ValueError) as err:
        resnet18()(torch.zeros(2, 3, 96, 96))
    msg = str(err.value)
    assert "(N, 1, H, W)" in msg and "3 channels" in msg and "in_channels=3" in msg


def test_forward_missing_batch_dimension():
    with pytest.raises(ValueError, match=r"3-d tensor.*unsqueeze\(0\)"):
        resnet18()(torch.zeros(1, 28, 28))


def test_single_small_image_in_training_mode_explains_eval():
    model = resnet18()
    with pytest.raises(ValueError, match=r"batch of 1 image\(s\) of 28x28.*model\.eval\(\)"):
        model(torch.zeros(1, 1, 28, 28))
    assert model.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_resnet_argument_checks():
    with pytest.raises(ValueError, match="one count per stage"):
        ResNet(Residual, (2, 2, 2))
    with pytest.raises(TypeError, match="Residual or Bottleneck"):
        ResNet(nn.Conv2d, (2, 2, 2, 2))
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        resnet18(num_classes=0)
    with pytest.raises(ValueError, match="in_channels must be at least 1"):
        resnet18(in_channels=0)


@pytest.mark.parametrize("depth", [34, 50])
def test_deeper_variants_forward(depth):
    model = BUILDERS[depth]().eval()
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 10)


def test_training_step_on_small_images():
    """A 28x28 Fashion-MNIST batch trains without any resize."""
    set_seed(0)
    model = resnet18()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and model.stem[0].weight.grad is not None


# --------------------------------------------------------------------------- dropout, batch_norm


@pytest.mark.parametrize("depth", [18, 50])
def test_defaults_are_the_lecture_network(depth):
    plain = BUILDERS[depth]()
    explicit = BUILDERS[depth](dropout=0.0, batch_norm=True)
    assert list(plain.state_dict()) == list(explicit.state_dict())
    assert [name for name, _ in plain.named_modules()] == [
        name for name, _ in explicit.named_modules()
    ]
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())


def test_dropout_sits_before_fc_and_adds_no_parameters():
    model = resnet18(dropout=0.5)
    names = [name for name, _ in model.named_children()]
    assert names[-3:] == ["flatten", "dropout", "fc"]
    assert model.dropout.p == 0.5 and model.dropout_p == 0.5
    assert list(model.state_dict()) == list(resnet18().state_dict())
    assert n_params(model) == 11_178_378


def test_dropout_changes_training_outputs_only():
    set_seed(0)
    model = resnet18(dropout=0.5).eval()
    x = torch.randn(4, 1, 32, 32)
    assert torch.equal(model(x), model(x))  # eval: dropout is off
    model.train()
    features = nn.Sequential(*list(model.children())[:-2])(x)  # (4, 512): pooled, flattened
    set_seed(1)
    dropped = model.dropout(features)
    kept = dropped != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(dropped[kept], 2 * features[kept])  # survivors scaled by 1/(1-p)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_outside_0_1_explains(bad):
    with pytest.raises(ValueError, match=r"not a probability in \[0, 1\).*Use 0 for none"):
        resnet18(dropout=bad)


@pytest.mark.parametrize("bad", ["0.5", True, None])
def test_dropout_must_be_a_number(bad):
    with pytest.raises(TypeError, match=r"dropout must be a number in \[0, 1\)"):
        resnet18(dropout=bad)


@pytest.mark.parametrize("depth", [18, 50])
def test_without_batch_norm(depth):
    model = BUILDERS[depth](batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    with_bn = BUILDERS[depth]()
    bn_params = sum(
        p.numel()
        for m in with_bn.modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in m.parameters()
    )
    assert n_params(model) == n_params(with_bn) - bn_params
    assert model.batch_norm is False
    set_seed(0)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_without_batch_norm_torchvision_variant_gets_conv_bias():
    model = resnet18(variant="torchvision", batch_norm=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_stem_and_stage_without_batch_norm():
    assert isinstance(stem(batch_norm=False)[1], nn.Identity)
    stage = resnet_block(64, 128, 2, batch_norm=False)
    assert all(block.batch_norm is False for block in stage)


@pytest.mark.parametrize("bad", [0, "False", None])
def test_batch_norm_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="batch_norm must be True"):
        resnet18(batch_norm=bad)
    with pytest.raises(TypeError, match="batch_norm must be True"):
        stem(batch_norm=bad)
    with pytest.raises(TypeError, match="batch_norm must be True"):
        resnet_block(64, 64, 1, batch_norm=bad)
