"""He et al.'s thin CIFAR nets (plain and residual) and the measurements of notebook 06."""

import math

import pytest
import torch
from torch import nn

from resnet_lessons import Residual, set_seed, trace_shapes
from resnet_lessons.experiments.depth import (
    DenseBlock,
    PlainBlock,
    autocorrelation,
    block_names,
    check_depth,
    deep_mlp,
    gradient_norms,
    input_gradients,
    remove_block,
    smooth,
    thin_resnet,
    train_classifier,
    weighted_layers,
    zero_init_residual,
)

#: He et al. (2015), Table 6: depth -> parameters (their option A shortcuts have none).
PAPER_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}


@pytest.mark.parametrize("depth", [8, 14, 20, 32, 44, 56, 110])
@pytest.mark.parametrize("shortcuts", [True, False])
def test_layer_counts_and_shapes_for_every_depth(depth, shortcuts):
    model = thin_resnet(depth, shortcuts=shortcuts)
    n = (depth - 2) // 6
    assert len(weighted_layers(model)) == depth
    assert [len(getattr(model, f"stage{i}")) for i in (1, 2, 3)] == [n, n, n]
    table = trace_shapes(model, (2, 1, 32, 32))
    shapes = {row.name: row.output_shape for row in table}
    assert shapes["stem"] == (2, 16, 32, 32)
    assert shapes["stage1"] == (2, 16, 32, 32)
    assert shapes["stage2"] == (2, 32, 16, 16)
    assert shapes["stage3"] == (2, 64, 8, 8)
    assert shapes["fc"] == (2, 10)


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_parameter_counts_close_to_the_paper(depth):
    params = sum(p.numel() for p in thin_resnet(depth, in_channels=3).parameters())
    # our two 1x1 projections (option B) and conv biases add about 1%
    assert params == pytest.approx(PAPER_PARAMS[depth], rel=0.03)


def test_width_channels_and_a_real_forward_pass():
    model = thin_resnet(8, width=4, in_channels=3, num_classes=5)
    shapes = {r.name: r.output_shape for r in trace_shapes(model, (2, 3, 14, 14))}
    assert shapes["stage3"] == (2, 16, 4, 4)
    assert model(torch.randn(2, 3, 14, 14)).shape == (2, 5)


def test_plain_variant_has_no_shortcut():
    plain = thin_resnet(20, shortcuts=False)
    residual = thin_resnet(20)
    assert not any(isinstance(m, Residual) for m in plain.modules())
    assert all(isinstance(b, PlainBlock) for b in plain.get_submodule("stage2"))
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in plain.modules())
    assert sum(isinstance(m, Residual) for m in residual.modules()) == 9
    # the same 3x3 convs, layer for layer
    shapes = [tuple(m.weight.shape) for _, m in weighted_layers(plain)]
    assert shapes == [tuple(m.weight.shape) for _, m in weighted_layers(residual)]


def test_plain_block_is_residual_without_the_addition():
    set_seed(0)
    residual = Residual(4, 4)
    plain = PlainBlock(4, 4)
    plain.load_state_dict(residual.state_dict())
    x = torch.rand(3, 4, 5, 5)
    branch = residual.bn2(residual.conv2(torch.relu(residual.bn1(residual.conv1(x)))))
    torch.testing.assert_close(plain(x), torch.relu(branch))
    torch.testing.assert_close(residual(x), torch.relu(branch + x))


@pytest.mark.parametrize(
    ("depth", "nearest"), [(21, "20 or 26"), (9, "8 or 14"), (3, "8"), (100, "98 or 104")]
)
def test_bad_depth_names_the_nearest_valid_ones(depth, nearest):
    with pytest.raises(ValueError, match=f"nearest valid depths? (is|are) {nearest}"):
        thin_resnet(depth)


def test_bad_arguments():
    with pytest.raises(TypeError, match="whole number"):
        thin_resnet(20.0)
    with pytest.raises(ValueError, match="at least 1"):
        thin_resnet(0)
    with pytest.raises(TypeError, match="shortcuts"):
        thin_resnet(20, shortcuts="no")
    assert check_depth(56) == 9


def test_deep_mlp_layers_blocks_and_identity_init():
    x = torch.randn(5, 3)
    outputs = []
    for shortcuts in (True, False):
        set_seed(0)
        net = deep_mlp(
            10,
            shortcuts=shortcuts,
            width=6,
            in_features=3,
            out_features=2,
            batch_norm=False,
            init="identity",
        )
        assert len(weighted_layers(net)) == 10
        assert len(block_names(net)) == 8
        h = torch.relu(net.inp(x))  # non-negative features
        for name in block_names(net):
            torch.testing.assert_close(net.get_submodule(name)(h), h)
        outputs.append(net(x))
    # same seed, same inp/out layers: both nets start as the same function
    torch.testing.assert_close(outputs[0], outputs[1])
    block = deep_mlp(3, width=4).block1
    assert isinstance(block, DenseBlock) and isinstance(block.bn, nn.BatchNorm1d)
    z = torch.randn(6, 4)
    torch.testing.assert_close(block(z), z + block.fc(torch.relu(block.bn(z))))
    with pytest.raises(ValueError, match="init"):
        deep_mlp(8, init="zeros")
    with pytest.raises(ValueError, match="at least 2"):
        deep_mlp(1)


def test_zero_init_residual_makes_blocks_the_identity():
    set_seed(0)
    model = zero_init_residual(thin_resnet(20, width=4))
    model.eval()  # running statistics: mean 0, var 1
    x = torch.relu(torch.randn(2, 4, 6, 6))
    for block in model.stage1:
        torch.testing.assert_close(block(x), x)
    assert all(m.bn2.weight.abs().sum() == 0 for m in model.modules() if isinstance(m, Residual))
    with pytest.raises(ValueError, match="no residual blocks"):
        zero_init_residual(thin_resnet(20, shortcuts=False))


def test_train_classifier_learns_and_is_reproducible():
    set_seed(0)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long()

    def run():
        set_seed(1)
        net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        return train_classifier(net, x, y, steps=40, batch_size=16, lr=0.1, seed=3)

    losses = run()
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < losses[0] / 2
    assert run() == losses
    with pytest.raises(ValueError, match="larger than"):
        train_classifier(nn.Linear(8, 2), x, y, steps=1, batch_size=65)
    with pytest.raises(ValueError, match="differ in length"):
        train_classifier(nn.Linear(8, 2), x, y[:10], steps=1)


def test_smooth():
    assert smooth([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    assert smooth([5.0], 10) == [5.0]


def test_gradient_norms_match_autograd_and_leave_grads_alone():
    set_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    norms = gradient_norms(net, x, y)
    assert [name for name, _ in norms] == ["0", "2"]
    nn.functional.cross_entropy(net(x), y).backward()
    assert norms[0][1] == pytest.approx(net[0].weight.grad.norm().item())
    assert norms[1][1] == pytest.approx(net[2].weight.grad.norm().item())
    model = thin_resnet(8, width=4)
    assert len(gradient_norms(model, torch.randn(4, 1, 8, 8), torch.arange(4))) == 8
    assert all(p.grad is None for p in model.parameters())


def test_input_gradients_of_known_functions():
    line = torch.linspace(-2, 2, 9)[:, None]
    torch.testing.assert_close(input_gradients(lambda x: x**2, line), 2 * line)
    relu = input_gradients(torch.relu, line)
    assert relu.reshape(-1).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_autocorrelation_by_hand():
    # alternating signs: mean 0, sum of squares 4, lag-1 products 3 * (-1) -> -0.75
    assert autocorrelation(torch.tensor([1.0, -1.0, 1.0, -1.0])) == pytest.approx(-0.75)
    # a line: g - mean = (-1.5, -0.5, 0.5, 1.5), squares 5, lag-1 products 0.75 - 0.25 + 0.75
    assert autocorrelation(torch.tensor([0.0, 1.0, 2.0, 3.0])) == pytest.approx(1.25 / 5)
    assert autocorrelation(torch.tensor([0.0, 1.0, 2.0, 3.0]), lag=0) == pytest.approx(1.0)
    slow = torch.sin(torch.linspace(0, 3, 256))
    noise = torch.randn(256, generator=torch.Generator().manual_seed(0))
    assert autocorrelation(slow) > 0.95
    assert abs(autocorrelation(noise)) < 0.2
    with pytest.raises(ValueError, match="constant"):
        autocorrelation(torch.ones(5))
    with pytest.raises(ValueError, match="lag"):
        autocorrelation(torch.ones(3), lag=3)


def test_remove_block_residual_plain_and_downsampling():
    set_seed(0)
    residual = thin_resnet(20, width=4).eval()
    names = block_names(residual)
    assert names[:4] == ["stage1.0", "stage1.1", "stage1.2", "stage2.0"] and len(names) == 9
    x = torch.randn(2, 1, 8, 8)
    before = residual(x)
    lesioned = remove_block(residual, "stage1.1")
    torch.testing.assert_close(residual(x), before)  # the original is unchanged
    # without stage1.1, the network is the same function as its blocks minus that one
    h = residual.stem(x)
    h = residual.stage1[0](h)
    torch.testing.assert_close(lesioned.stage1[1](h), h)
    # a downsampling residual block keeps its 1x1 projection
    down = remove_block(residual, "stage2.0")
    assert down(x).shape == (2, 10)
    assert down.stage2[0].shortcut is not residual.stage2[0].shortcut

    plain = thin_resnet(20, shortcuts=False, width=4).eval()
    assert isinstance(remove_block(plain, "stage3.2").stage3[2], nn.Identity)
    with pytest.raises(ValueError, match="changes the shape"):
        remove_block(plain, "stage2.0")
    with pytest.raises(ValueError, match="not a block"):
        remove_block(plain, "stage4.0")
    assert math.isfinite(remove_block(plain, "stage1.0")(x).sum().item())
