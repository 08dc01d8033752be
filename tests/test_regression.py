"""Regression: the residual MLP and its plain twin, the ResNet-18 regressor, rotation targets,
the training loop on a tiny problem, and every bad argument."""

import math

import pytest
import torch
from torch import nn

from resnet_lessons import set_seed
from resnet_lessons.data import MEAN, STD
from resnet_lessons.experiments.regression import (
    BLACK,
    MLPBlock,
    ResidualMLP,
    block_outputs,
    fit_regression,
    predict_regression,
    random_rotations,
    regression_head,
    residual_mlp,
    resnet18_regressor,
    rotate,
    show_rotations,
    wiggly_dataset,
    wiggly_function,
)

# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("shortcuts", [True, False])
@pytest.mark.parametrize(("in_features", "out_features"), [(1, 1), (3, 2)])
def test_residual_mlp_shapes(shortcuts, in_features, out_features):
    model = residual_mlp(in_features, 8, 3, shortcuts=shortcuts, out_features=out_features)
    assert isinstance(model, ResidualMLP)
    assert model(torch.randn(5, in_features)).shape == (5, out_features)
    assert len(model.blocks) == 3
    assert [len(h[0]) for h in block_outputs(model, torch.randn(2, in_features))] == [8] * 4


def test_plain_and_residual_have_the_same_layers():
    residual = residual_mlp(2, 8, 4)
    plain = residual_mlp(2, 8, 4, shortcuts=False)
    shapes = [p.shape for p in residual.parameters()]
    assert shapes == [p.shape for p in plain.parameters()]


def test_block_is_x_plus_g_or_g():
    set_seed(0)
    block = MLPBlock(6)
    x = torch.randn(4, 6)
    torch.testing.assert_close(block(x), x + block.g(x))
    block.shortcut = False
    torch.testing.assert_close(block(x), block.g(x))


def test_plain_variant_has_no_shortcut():
    """With the branch g zeroed, a residual block is the identity; a plain one outputs 0."""
    x = torch.randn(4, 6)
    for shortcut, expected in ((True, x), (False, torch.zeros_like(x))):
        block = MLPBlock(6, shortcut=shortcut)
        nn.init.zeros_(block.g[-1].weight)
        nn.init.zeros_(block.g[-1].bias)
        torch.testing.assert_close(block(x), expected)
    plain = residual_mlp(1, 4, 2, shortcuts=False)
    assert all(not block.shortcut for block in plain.blocks)
    assert "shortcut=False" in repr(plain)


def test_regression_head_normalises_before_the_output():
    head = regression_head(16, 3)
    assert isinstance(head[0], nn.LayerNorm) and isinstance(head[1], nn.Linear)
    small, large = torch.randn(4, 16), 1000 * torch.randn(4, 16)
    torch.testing.assert_close(head(large), head(large / 1000), rtol=1e-4, atol=1e-4)
    assert head(small).shape == (4, 3)


def test_resnet18_regressor_one_output():
    model = resnet18_regressor().eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 1)
    assert isinstance(model.fc[0], nn.LayerNorm)
    assert model.fc[1].in_features == 512
    three = resnet18_regressor(in_channels=3, out_features=2).eval()
    assert three(torch.randn(2, 3, 32, 32)).shape == (2, 2)


def test_mlp_bad_input_says_how_to_fix():
    model = residual_mlp(1, 4, 1)
    with pytest.raises(ValueError, match=r"unsqueeze\(1\)"):
        model(torch.randn(5))
    with pytest.raises(ValueError, match=r"in_features=3"):
        model(torch.randn(5, 3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_features": 0, "width": 4, "depth": 1}, ValueError, "in_features must be at least"),
        ({"in_features": 1, "width": 4.0, "depth": 1}, TypeError, "width must be a whole"),
        ({"in_features": 1, "width": 4, "depth": 0}, ValueError, "depth must be at least 1"),
        ({"in_features": 1, "width": 4, "depth": 2, "out_features": 0}, ValueError, "out_"),
        ({"in_features": 1, "width": 4, "depth": 2, "shortcuts": 1}, TypeError, "True or False"),
    ],
)
def test_mlp_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        residual_mlp(**kwargs)


def test_block_outputs_needs_a_residual_mlp():
    with pytest.raises(TypeError, match="ResidualMLP"):
        block_outputs(nn.Linear(1, 1), torch.zeros(1, 1))


# --------------------------------------------------------------------------- targets


def test_rotate_by_zero_is_the_identity_and_by_90_is_rot90():
    set_seed(0)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(rotate(x, torch.zeros(3)), x)
    # counter-clockwise on screen (row 0 at the top), as torch.rot90 / numpy.rot90 turn arrays
    turned = rotate(x, torch.full((3,), 90.0))
    torch.testing.assert_close(turned, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotate_fills_corners_with_black():
    x = torch.full((1, 1, 9, 9), 2.0)
    turned = rotate(x, torch.tensor([45.0]))
    assert turned[0, 0, 0, 0] == pytest.approx(BLACK, abs=1e-5)
    assert turned[0, 0, 4, 4] == pytest.approx(2.0, abs=1e-5)
    assert BLACK == pytest.approx(-MEAN / STD)


def test_random_rotations_reproducible_and_in_range():
    x = torch.randn(500, 1, 6, 6)
    a1 = random_rotations(x, 30.0, generator=torch.Generator().manual_seed(7))
    a2 = random_rotations(x, 30.0, generator=torch.Generator().manual_seed(7))
    b = random_rotations(x, 30.0, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a1[0], a2[0])
    torch.testing.assert_close(a1[1], a2[1])
    assert not torch.equal(a1[1], b[1])
    images, degrees = a1
    assert images.shape == x.shape and degrees.shape == (500,)
    assert degrees.abs().max() <= 30.0
    assert degrees.min() < -25 and degrees.max() > 25  # spread over the whole range
    torch.testing.assert_close(images, rotate(x, degrees))


@pytest.mark.parametrize(
    ("max_degrees", "error", "match"),
    [(0, ValueError, r"\(0, 180\]"), (200, ValueError, "ambiguous"), ("60", TypeError, "number")],
)
def test_random_rotations_bad_range(max_degrees, error, match):
    with pytest.raises(error, match=match):
        random_rotations(torch.zeros(2, 1, 4, 4), max_degrees)


def test_rotate_bad_inputs():
    with pytest.raises(TypeError, match="prepare_batch"):
        rotate(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        rotate(torch.zeros(1, 4, 4), torch.zeros(1))
    with pytest.raises(ValueError, match=r"one angle per image: shape \(2,\)"):
        rotate(torch.zeros(2, 1, 4, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_rotations(torch.zeros(4, 4), 10.0)


def test_wiggly_dataset():
    a = wiggly_dataset(20, 10, seed=3)
    b = wiggly_dataset(20, 10, seed=3)
    for t, u in zip(a, b, strict=True):
        torch.testing.assert_close(t, u)
    x_train, y_train, x_test, y_test = a
    assert x_train.shape == y_train.shape == (20, 1) and x_test.shape == y_test.shape == (10, 1)
    assert x_train.abs().max() <= 1
    torch.testing.assert_close(y_test, wiggly_function(x_test))
    assert wiggly_function(torch.tensor(0.125)).item() == pytest.approx(
        math.sin(math.pi / 2) + 0.0625 * math.sin(11 * math.pi / 8)
    )
    with pytest.raises(ValueError, match="noise"):
        wiggly_dataset(noise=-1.0)


# --------------------------------------------------------------------------- training


def _endless(x, y, batch_size=16):
    generator = torch.Generator().manual_seed(0)
    while True:
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            yield x[order[i : i + batch_size]], y[order[i : i + batch_size]]


def test_fit_regression_learns_a_line():
    set_seed(0)
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 3 * x - 1
    model = residual_mlp(1, 8, 2)
    losses = fit_regression(model, _endless(x, y), 150, lr=1e-2, warmup=10)
    assert len(losses) == 150
    assert losses[-1] < 0.05 * losses[0]
    predictions = predict_regression(model, x, batch_size=10)
    assert predictions.shape == (64, 1)
    assert (predictions - y).abs().mean() < 0.2
    assert model.training  # predict_regression puts the mode back


def test_fit_regression_trains_the_resnet_regressor():
    set_seed(0)
    model = resnet18_regressor()
    x = torch.randn(8, 1, 12, 12)
    y = torch.randn(8, 1)
    losses = fit_regression(model, _endless(x, y, batch_size=8), 3, lr=1e-3)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert predict_regression(model, x).shape == (8, 1)


def test_fit_regression_bad_arguments():
    model = residual_mlp(1, 4, 1)
    x, y = torch.zeros(4, 1), torch.zeros(4, 1)
    with pytest.raises(ValueError, match="ran out after 1 of 3"):
        fit_regression(model, [(x, y)], 3)
    with pytest.raises(ValueError, match=r"unsqueeze\(1\)"):
        fit_regression(model, _endless(x, torch.zeros(4)), 2)
    with pytest.raises(ValueError, match="lr must be"):
        fit_regression(model, _endless(x, y), 2, lr=0)
    with pytest.raises(ValueError, match="warmup"):
        fit_regression(model, _endless(x, y), 2, warmup=2)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        fit_regression(model, _endless(x, y), 0)
    with pytest.raises(ValueError, match="no inputs"):
        predict_regression(model, torch.zeros(0, 1))


def test_fit_regression_stops_on_nan():
    model = residual_mlp(1, 4, 1)
    x, y = torch.zeros(4, 1), torch.full((4, 1), float("nan"))
    with pytest.raises(FloatingPointError, match="at step 0"):
        fit_regression(model, _endless(x, y), 2)


# --------------------------------------------------------------------------- figures


def test_show_rotations():
    fig = show_rotations(torch.zeros(3, 1, 5, 5), torch.tensor([1.0, 2, 3]), [4.0, 5, 6], ncols=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "true +1\N{DEGREE SIGN}\npred +4\N{DEGREE SIGN}"
    assert len(titles) == 3
    with pytest.raises(ValueError, match="3 images, 2 true"):
        show_rotations(torch.zeros(3, 1, 5, 5), [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        show_rotations(torch.zeros(3, 5, 5), [1.0, 2.0, 3.0])
    plain = show_rotations(torch.zeros(2, 1, 5, 5), [-3.0, 40.0])
    assert [ax.get_title() for ax in plain.axes] == ["-3\N{DEGREE SIGN}", "+40\N{DEGREE SIGN}"]
