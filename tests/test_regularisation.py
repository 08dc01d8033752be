"""Regularisation measurements (notebook 07): BN's noise, scale invariance, weight norms,
Adam vs AdamW, the side-by-side runner. Small networks, few steps, no timings."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from resnet_lessons import Residual, set_seed
from resnet_lessons.data import FashionMNIST
from resnet_lessons.experiments.regularisation import (
    Comparison,
    Setting,
    activation_scales,
    adam_decay_step,
    batch_norm_noise,
    compare_regularisers,
    narrow_resnet,
    plot_comparison,
    scale_invariance,
    scale_invariant_weights,
    train_steps,
)
from resnet_lessons.training.recipes import FAST


@pytest.fixture
def images() -> torch.Tensor:
    set_seed(0)
    return torch.randn(40, 1, 12, 12)


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.arange(40) % 10


def test_narrow_resnet_shapes_and_children():
    model = narrow_resnet(8)
    names = [name for name, _ in model.named_children()]
    assert names == ["stem", "stage1", "stage2", "stage3", "avgpool", "flatten", "fc"]
    assert all(
        isinstance(block, Residual) for stage in names[1:4] for block in model[names.index(stage)]
    )
    assert model(torch.randn(3, 1, 14, 14)).shape == (3, 10)
    assert model.stage3[0].conv1.stride == (2, 2)


def test_narrow_resnet_switches():
    with_dropout = narrow_resnet(8, dropout=0.3)
    assert isinstance(with_dropout.dropout, nn.Dropout) and with_dropout.dropout.p == 0.3
    no_bn = narrow_resnet(8, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    assert no_bn(torch.randn(2, 1, 14, 14)).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs, exc", [({"dropout": 1.0}, ValueError), ({"batch_norm": 1}, TypeError)]
)
def test_narrow_resnet_bad_values(kwargs, exc):
    with pytest.raises(exc, match="dropout|batch_norm"):
        narrow_resnet(8, **kwargs)


def test_batch_norm_noise_train_varies_eval_does_not(images):
    set_seed(0)
    model = narrow_resnet(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    noise = batch_norm_noise(model, images[0], images[1:], batches=6, batch_size=8)
    assert noise.train_outputs.shape == noise.eval_outputs.shape == (6, 10)
    assert noise.train_spread > 1e-4
    assert noise.eval_spread < 1e-5
    assert noise.scale > 0
    for key, value in model.state_dict().items():  # running statistics untouched
        assert torch.equal(value, before[key])


def test_batch_norm_noise_needs_enough_images(images):
    with pytest.raises(ValueError, match="needs at least 31 other images"):
        batch_norm_noise(narrow_resnet(4), images[0], images[1:5], batch_size=32)


def test_scale_invariant_weights_are_the_convs_before_bn():
    names = [name for name, _ in scale_invariant_weights(narrow_resnet(4))]
    assert names[0] == "stem.0.weight"
    assert "stage2.0.conv1.weight" in names and "stage2.0.conv2.weight" in names
    assert not any("shortcut" in n or "fc" in n for n in names)  # no BN after them
    assert len(names) == 1 + 3 * 2
    assert scale_invariant_weights(narrow_resnet(4, batch_norm=False)) == []


def test_scale_invariance_with_bn(images, labels):
    set_seed(0)
    check = scale_invariance(narrow_resnet(4), "stage2.0.conv1", images, labels, factor=100)
    assert check.output_change < 1e-3 * check.output_size
    assert check.grad_ratio == pytest.approx(100, rel=1e-2)
    assert abs(check.cosine) < 1e-3


def test_scale_invariance_without_bn_changes_the_output(images, labels):
    set_seed(0)
    check = scale_invariance(narrow_resnet(4, batch_norm=False), "stage2.0.conv1", images, labels)
    assert check.output_change > 0.1 * check.output_size


def test_scale_invariance_bad_layer(images, labels):
    with pytest.raises(ValueError, match="is not a module"):
        scale_invariance(narrow_resnet(4), "stage9.conv", images, labels)
    with pytest.raises(ValueError, match="not a conv or linear"):
        scale_invariance(narrow_resnet(4), "stem.1", images, labels)
    with pytest.raises(ValueError, match="positive"):
        scale_invariance(narrow_resnet(4), "stem.0", images, labels, factor=0)


def test_activation_scales_one_per_child(images):
    set_seed(0)
    model = narrow_resnet(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scales = activation_scales(model, images)
    assert [name for name, _ in scales] == [name for name, _ in model.named_children()]
    assert all(std > 0 for _, std in scales)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_train_steps_records_norms_and_decay_shrinks_them(images, labels):
    runs = {}
    for wd in (0.0, 0.1):
        set_seed(0)
        runs[wd] = train_steps(
            narrow_resnet(4),
            images,
            labels,
            steps=12,
            lr=0.1,
            weight_decay=wd,
            batch_size=8,
            every=4,
        )
    run = runs[0.0]
    assert run.steps == [0, 4, 8, 12] and len(run.losses) == 12
    assert len(run.norms) == len(run.all_norms) == len(run.effective_lr) == 4
    assert run.effective_lr[0] == pytest.approx(0.1 / run.norms[0] ** 2)
    assert run.norms[-1] > run.norms[0]  # the gradient is orthogonal: SGD lengthens the weights
    assert runs[0.1].norms[-1] < runs[0.0].norms[-1]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_train_steps_adam(images, labels, optimizer):
    set_seed(0)
    run = train_steps(
        narrow_resnet(4),
        images,
        labels,
        steps=3,
        optimizer=optimizer,
        lr=1e-3,
        weight_decay=0.1,
        batch_size=8,
    )
    assert all(math.isfinite(x) for x in run.losses)


def test_train_steps_bad_values(images, labels):
    with pytest.raises(ValueError, match="optimizer='rmsprop' is not known"):
        train_steps(narrow_resnet(4), images, labels, steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="larger than the 40 images"):
        train_steps(narrow_resnet(4), images, labels, steps=1, batch_size=64)
    with pytest.raises(ValueError, match="differ in length"):
        train_steps(narrow_resnet(4), images, labels[:5], steps=1)
    with pytest.raises(ValueError, match="weight_decay must be"):
        train_steps(narrow_resnet(4), images, labels, steps=1, batch_size=8, weight_decay=-1)


def test_adam_decay_step_l2_vs_decoupled():
    w = torch.tensor([1.0, -0.01, 2.0])
    adamw = adam_decay_step(w, lr=0.01, weight_decay=0.1, decoupled=True)
    torch.testing.assert_close(adamw, w * (1 - 0.01 * 0.1))
    l2 = adam_decay_step(w, lr=0.01, weight_decay=0.1, decoupled=False)
    torch.testing.assert_close(l2, w - 0.01 * w.sign(), rtol=0, atol=1e-6)  # lr, whatever |w|
    assert torch.equal(w, torch.tensor([1.0, -0.01, 2.0]))  # unchanged


def _tiny_data() -> FashionMNIST:
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=generator)
    test = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return FashionMNIST(train, torch.arange(60) % 10, test, torch.arange(20) % 10)


@pytest.mark.slow
def test_compare_regularisers_table_and_reuse():
    data = _tiny_data().split_validation(12)
    recipe = dataclasses.replace(FAST, epochs=2, batch_size=16, resize=8, bf16=False)
    settings = [
        Setting("none"),
        Setting("dropout", dropout=0.5),
        Setting("early stop", patience=1),
        Setting("no BN", batch_norm=False, lr=0.01),
    ]
    first = compare_regularisers(settings[:1], data, recipe, (0,), width=4)
    result = compare_regularisers(settings, data, recipe, (0, 1), width=4, reuse=first)
    assert result.rows[0] is first.rows[0]  # reused, not trained again
    assert result.settings == ["none", "dropout", "early stop", "no BN"]
    assert len(result.rows) == 8 and set(result.rows[0]) == {
        "setting",
        "seed",
        "test_acc",
        "train_acc",
        "gap",
        "epochs",
        "best_epoch",
        "seconds",
    }
    for row in result.rows:
        assert 0 <= row["test_acc"] <= 1 and row["gap"] == row["train_acc"] - row["test_acc"]
        assert 1 <= row["best_epoch"] <= row["epochs"] <= 2
    assert result.values("none", "seed") == [0, 1]
    summary = result.summary()
    assert [s["setting"] for s in summary] == result.settings
    assert summary[0]["test_acc_spread"] == pytest.approx(
        abs(result.rows[0]["test_acc"] - result.rows[4]["test_acc"]) / math.sqrt(2)
    )
    assert "+-" in result.format() and "no BN" in result.format()
    assert plot_comparison(result).axes


@pytest.mark.slow
def test_testing_only_at_the_end_gives_the_same_rows():
    """The same runs and rows either way; the histories have a test accuracy at their end
    only. (Before SmallMapConv2d sliced the input of 1x1 strided convs with few channels,
    PyTorch's kernel made these width-4 runs differ from call to call.)"""
    data = _tiny_data().split_validation(12)
    recipe = dataclasses.replace(FAST, epochs=3, batch_size=16, resize=8, bf16=False)
    settings = [Setting("none"), Setting("early stop", patience=1)]
    runs = {
        each: compare_regularisers(settings, data, recipe, (0,), width=4, test_each_epoch=each)
        for each in (True, False)
    }
    for every, once in zip(runs[True].rows, runs[False].rows, strict=True):
        assert {k: v for k, v in once.items() if k != "seconds"} == {
            k: v for k, v in every.items() if k != "seconds"
        }
        curve = [e["test_acc"] for e in runs[False].histories[once["setting"], 0]]
        assert len(curve) == once["epochs"]
        assert all(math.isnan(a) for a in curve[:-1]) and 0 <= curve[-1] <= 1


def test_comparison_helpers():
    c = Comparison(rows=[{"setting": "a", "seed": 0, "test_acc": 0.5}])
    assert c.spread("a", "test_acc") == 0.0
    with pytest.raises(KeyError, match="no runs of 'b'"):
        c.values("b", "test_acc")


def test_compare_regularisers_bad_settings():
    data = _tiny_data()
    with pytest.raises(ValueError, match="names must differ"):
        compare_regularisers([Setting("a"), Setting("a")], data, FAST, (0,))
    with pytest.raises(ValueError, match="seeds is empty"):
        compare_regularisers([Setting("a")], data, FAST, ())
    with pytest.raises(ValueError, match="settings is empty"):
        compare_regularisers([], data, FAST, (0,))
