"""Compression measurements (notebook 07, sections 6 and 7): the layer census of torchvision's
conv nets, L1 training, magnitude pruning, fake quantisation, bytes. Small networks, few
steps, no timings."""

import pytest
import torch
from torch import nn

from resnet_lessons import set_seed
from resnet_lessons.experiments.compression import (
    LAYER_KINDS,
    ZOO,
    accuracy,
    count_layers,
    l1_penalty,
    layer_census,
    prunable_weights,
    prune_weights,
    quantise_weights,
    sparsity,
    train_l1,
    weight_bytes,
)
from resnet_lessons.experiments.regularisation import narrow_resnet, train_steps


@pytest.fixture
def images() -> torch.Tensor:
    set_seed(0)
    return torch.randn(40, 1, 12, 12)


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.arange(40) % 10


@pytest.fixture
def net() -> nn.Module:
    set_seed(0)
    return narrow_resnet(8)


# --------------------------------------------------------------------------- the census


def test_count_layers_by_kind_and_place():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.Dropout2d(0.1),  # among the features
        nn.Conv2d(4, 4, 3),
        nn.GroupNorm(2, 4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.LayerNorm(4),
        nn.Dropout(0.5),  # in the head
        nn.Linear(4, 2),
    )
    count = count_layers(model, "toy", 2000)
    assert count.counts == {
        "Dropout": 2,
        "BatchNorm": 1,
        "LayerNorm": 1,
        "GroupNorm": 1,
        "StochasticDepth": 0,
    }
    assert count.in_head == {
        "Dropout": 1,
        "BatchNorm": 0,
        "LayerNorm": 1,
        "GroupNorm": 0,
        "StochasticDepth": 0,
    }
    assert count.where("Dropout") == "both"
    assert count.where("LayerNorm") == "head"
    assert count.where("BatchNorm") == "features"
    assert count.where("StochasticDepth") == "-"
    assert count.parameters == sum(p.numel() for p in model.parameters())
    assert (count.name, count.year) == ("toy", 2000)


def test_count_layers_without_pooling_takes_the_head_after_the_last_conv():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Dropout(0.5), nn.Linear(2, 2))
    count = count_layers(model)
    assert count.name == "Sequential"
    assert count.where("Dropout") == "head"


def test_narrow_resnet_dropout_is_in_its_head():
    count = count_layers(narrow_resnet(8, dropout=0.3))
    assert count.counts["Dropout"] == count.in_head["Dropout"] == 1
    assert count.counts["BatchNorm"] == 7 and count.in_head["BatchNorm"] == 0


def test_layer_census_of_torchvision_nets():
    census = {row.name: row for row in layer_census()}
    assert list(census) == list(ZOO)
    assert [row.year for row in census.values()] == [2012, 2014, 2015, 2019, 2022]
    table = {name: (row.counts["Dropout"], row.counts["BatchNorm"]) for name, row in census.items()}
    assert table == {
        "AlexNet": (2, 0),
        "VGG-16": (2, 0),
        "ResNet-50": (0, 53),
        "EfficientNet-B0": (1, 49),
        "ConvNeXt-Tiny": (0, 0),
    }
    assert all(row.where("Dropout") in ("head", "-") for row in census.values())
    assert census["ConvNeXt-Tiny"].counts["LayerNorm"] == 23
    assert census["ConvNeXt-Tiny"].counts["StochasticDepth"] == 18
    assert census["EfficientNet-B0"].counts["StochasticDepth"] == 16
    assert census["ResNet-50"].parameters == 25_557_032  # torchvision's documented count
    assert set(census["AlexNet"].counts) == set(LAYER_KINDS)


def test_layer_census_subset_and_unknown_name():
    (row,) = layer_census(["ResNet-50"])
    assert row.name == "ResNet-50"
    with pytest.raises(ValueError, match="known ones are .*'AlexNet'"):
        layer_census(["ResNet-51"])


# --------------------------------------------------------------------------- L1 training


def test_l1_penalty_sums_conv_and_linear_weights(net):
    expected = sum(m.weight.abs().sum() for m in net.modules() if isinstance(m, nn.Conv2d))
    expected = expected + net.fc.weight.abs().sum()
    torch.testing.assert_close(l1_penalty(net), expected)
    # the stem, two 3x3 convs a stage, the 1x1 shortcuts of stages 2 and 3, the final layer
    assert len(prunable_weights(net)) == 1 + 3 * 2 + 2 + 1
    assert [name for name, _ in prunable_weights(net)][-1] == "fc"


def test_train_l1_without_penalty_is_train_steps(images, labels):
    set_seed(0)
    a = narrow_resnet(8)
    set_seed(0)
    b = narrow_resnet(8)
    reference = train_steps(a, images, labels, steps=4, lr=0.05, batch_size=8, seed=3)
    run = train_l1(b, images, labels, steps=4, l1=0.0, lr=0.05, batch_size=8, seed=3)
    assert run.losses == reference.losses
    assert run.penalties == [0.0] * 4
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_train_l1_records_the_penalty_and_shrinks_the_weights(images, labels):
    nets = []
    for l1 in (0.0, 0.01):
        set_seed(0)
        model = narrow_resnet(8)
        run = train_l1(model, images, labels, steps=6, l1=l1, batch_size=8, schedule="cosine")
        nets.append(model)
    assert len(run.losses) == len(run.penalties) == 6
    set_seed(0)
    start = l1_penalty(narrow_resnet(8)).item()
    assert run.penalties[0] == pytest.approx(0.01 * start)  # measured before the first step
    assert l1_penalty(nets[1]) < l1_penalty(nets[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"l1": -1.0}, "l1 must be"),
        ({"lr": float("nan")}, "lr must be"),
        ({"schedule": "linear"}, "schedule='linear' is not known"),
        ({"batch_size": 41}, "larger than the 40 images"),
    ],
)
def test_train_l1_refuses_bad_settings(net, images, labels, kwargs, match):
    settings = {"steps": 1, "l1": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_l1(net, images, labels, **settings)


def test_train_l1_refuses_mismatched_labels(net, images, labels):
    with pytest.raises(ValueError, match="differ in length: 40 vs 39"):
        train_l1(net, images, labels[:39], steps=1, l1=0.0)


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_weights_removes_the_fraction_and_leaves_the_model(net, scope):
    before = [m.weight.detach().clone() for _, m in prunable_weights(net)]
    pruned = prune_weights(net, 0.75, scope=scope)
    assert sparsity(pruned) == pytest.approx(0.75, abs=0.01)
    assert sparsity(net) == 0.0
    for w, (_, m) in zip(before, prunable_weights(net), strict=True):
        assert torch.equal(w, m.weight)
    # no pruning machinery left behind: plain weights, no masks, no hooks
    assert all(not hasattr(m, "weight_mask") for m in pruned.modules())
    kept = [m.weight for _, m in prunable_weights(pruned)]
    if scope == "layer":
        for w in kept:
            assert (w == 0).float().mean().item() == pytest.approx(0.75, abs=0.5 / w.numel() + 0.01)


def test_global_pruning_removes_the_smallest_weights_of_the_network():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model[1].weight.copy_(torch.tensor([[0.1, 0.2], [5.0, 6.0]]))
    pruned = prune_weights(model, 0.5)
    assert pruned[0].weight.tolist() == [[0.0, 0.0], [3.0, 4.0]]
    assert pruned[1].weight.tolist() == [[0.0, 0.0], [5.0, 6.0]]
    per_layer = prune_weights(model, 0.5, scope="layer")
    assert (per_layer[0].weight == 0).sum() == (per_layer[1].weight == 0).sum() == 2


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_prune_weights_refuses_a_fraction_outside_0_1(net, fraction):
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        prune_weights(net, fraction)


def test_prune_weights_refuses_bad_type_and_scope(net):
    with pytest.raises(TypeError, match="fraction must be a number"):
        prune_weights(net, "half")
    with pytest.raises(ValueError, match="scope='all' is not known"):
        prune_weights(net, 0.5, scope="all")


# --------------------------------------------------------------------------- quantisation


def test_quantise_weights_per_channel_levels(net):
    quantised = quantise_weights(net, 4)
    for (_, m), (_, q) in zip(prunable_weights(net), prunable_weights(quantised), strict=True):
        w, wq = m.weight.detach(), q.weight.detach()
        scale = w.abs().flatten(1).amax(dim=1) / 7  # (C_out,)
        steps = wq.flatten(1) / scale[:, None]
        torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)  # whole steps
        assert steps.abs().max() <= 7 + 1e-4
        # rounding moves a weight by at most half a step
        error = (wq - w).abs().flatten(1)
        assert (error <= scale[:, None] / 2 + 1e-6).all()
        assert len(torch.unique(wq[0])) <= 15
    assert not torch.equal(quantised.fc.weight, net.fc.weight)  # the model is not changed


def test_quantise_weights_8_bits_is_close_and_zeros_stay_zero(net):
    pruned = prune_weights(net, 0.5)
    quantised = quantise_weights(pruned, 8)
    assert sparsity(quantised) == pytest.approx(sparsity(pruned))
    x = torch.randn(4, 1, 12, 12)
    net.eval(), quantised.eval(), pruned.eval()
    torch.testing.assert_close(quantised(x), pruned(x), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("bits, exc", [(1, ValueError), (17, ValueError), (8.0, TypeError)])
def test_quantise_weights_refuses_bad_bits(net, bits, exc):
    with pytest.raises(exc, match="bits"):
        quantise_weights(net, bits)


def test_weight_bytes():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 3))  # 18 + 12 weights
    assert weight_bytes(model) == 30 * 4
    assert weight_bytes(model, 8) == 30 + 4 * (2 + 3)  # one float32 scale per channel
    assert weight_bytes(model, 4) == 15 + 4 * 5
    with torch.no_grad():
        model[0].weight.zero_()
    # sparse: 12 nonzero weights at 8 bits, a bitmask of 30 bits, 5 scales
    assert weight_bytes(model, 8, sparse=True) == 12 + 4 + 20
    assert weight_bytes(model, 32, sparse=True) == 12 * 4 + 4


# --------------------------------------------------------------------------- accuracy


def test_accuracy_in_eval_mode(net, images):
    net.train()
    predicted = net.eval()(images).argmax(dim=1)
    net.train()
    assert accuracy(net, images, predicted) == 1.0
    assert net.training  # back in the mode it was in
    assert accuracy(net, images, (predicted + 1) % 10) == 0.0
    with pytest.raises(ValueError, match="40 vs 39"):
        accuracy(net, images, predicted[:39])
