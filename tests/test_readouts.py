"""The explorers' readouts (notebook 02): the formula, a block's paths and a network's stages,
against real blocks and real forwards."""

import html
import itertools
import math
import re

import pytest
import torch
from torch import nn

from resnet_lessons import (
    Residual,
    conv_formula,
    conv_output_size,
    residual_shape,
    resnet18,
    resnet_shapes,
    trace_shapes,
)

CHANNELS = (1, 3, 4, 6)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny forwards: one thread is ~100x faster than several fighting over a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _formula_value(text: str) -> tuple[int, int]:
    """Evaluate ``floor((a + 2*p - k) / s) + 1 = out``: (value of the left side, out)."""
    match = re.fullmatch(r"floor\(\((\d+) \+ 2\*(\d+) - (\d+)\) / (\d+)\) \+ 1 = (\d+)", text)
    assert match, text
    size, padding, kernel, stride, out = map(int, match.groups())
    return math.floor((size + 2 * padding - kernel) / stride) + 1, out


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [(6, 3, 2, 1), (6, 3, 3, 1), (224, 7, 2, 3), (7, 1, 2, 0), (1, 3, 4, 1), (31, 5, 3, 0)],
)
def test_conv_formula_fills_in_the_numbers(size, kernel, stride, padding):
    text = conv_formula(size, kernel, stride, padding)
    assert text.startswith(f"floor(({size} + 2*{padding} - {kernel}) / {stride}) + 1 = ")
    left, out = _formula_value(text)
    assert left == out == conv_output_size(size, kernel, stride, padding)


def test_conv_formula_refuses_a_kernel_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        conv_formula(2, 5)


@pytest.mark.parametrize(
    ("size", "stride"), list(itertools.product((1, 2, 3, 5, 6, 7, 12, 13), (1, 2, 3, 4)))
)
def test_residual_shape_matches_a_real_block(size, stride):
    """Every channel pair, with and without the 1x1 conv: the shape a forward pass gives,
    or the very error the constructor raises."""
    torch.manual_seed(0)
    for c_in, c_out, use_1x1conv in itertools.product(CHANNELS, CHANNELS, (False, True)):
        result = residual_shape(size, c_in, c_out, stride, use_1x1conv, batch_size=2)
        label = f"size={size} {c_in}->{c_out} stride={stride} use_1x1conv={use_1x1conv}"
        assert result.input_shape == (2, c_in, size, size), label
        expected_h = conv_output_size(size, 3, stride, 1)
        assert result.main_shape == (2, c_out, expected_h, expected_h), label
        if c_in != c_out or stride != 1:
            if not use_1x1conv:
                with pytest.raises(ValueError) as err:
                    Residual(c_in, c_out, use_1x1conv, stride)
                assert not result.ok and result.output_shape is None, label
                assert result.error == str(err.value), label
                continue
        block = Residual(c_in, c_out, use_1x1conv, stride)
        with torch.no_grad():
            y = block(torch.randn(2, c_in, size, size))
        assert result.ok and result.error is None, label
        assert result.output_shape == tuple(y.shape), label
        assert result.shortcut_shape == tuple(
            block.shortcut(torch.zeros(2, c_in, size, size)).shape
        )


def test_residual_shape_formulas_carry_the_numbers():
    result = residual_shape(6, 3, 6, stride=2, use_1x1conv=True)
    assert result.output_shape == (4, 6, 3, 3)
    steps = dict(result.formulas)
    assert steps["conv1 3x3, padding 1, stride 2"] == "floor((6 + 2*1 - 3) / 2) + 1 = 3"
    assert steps["conv2 3x3, padding 1, stride 1"] == "floor((3 + 2*1 - 3) / 1) + 1 = 3"
    assert steps["shortcut 1x1 conv, stride 2"] == "floor((6 + 2*0 - 1) / 2) + 1 = 3"
    for step, formula in result.formulas:
        left, out = _formula_value(formula)
        assert left == out, step
    text = str(result)
    assert "Residual(3, 6, use_1x1conv=True, stride=2) on (4, 3, 6, 6)" in text
    assert "output    (4, 6, 3, 3)" in text
    assert "<b><code>(4, 6, 3, 3)</code></b>" in result._repr_html_()


@pytest.mark.parametrize(
    ("c_in", "c_out", "stride", "words"),
    [
        (3, 6, 1, ["channels change from 3 to 6", "use_1x1conv=True", "out_channels=3"]),
        (3, 3, 2, ["stride=2 shrinks", "use_1x1conv=True", "stride=1"]),
        (64, 128, 2, ["from 64 to 128", "stride=2", "1/2 of the size"]),
    ],
)
def test_residual_shape_error_says_why_and_the_fix(c_in, c_out, stride, words):
    result = residual_shape(6, c_in, c_out, stride, use_1x1conv=False)
    assert not result.ok and result.output_shape is None
    assert result.shortcut_shape == (4, c_in, 6, 6)  # the identity: what cannot be added
    for word in words:
        assert word in result.error
    assert f"error: {result.error}" in str(result)
    assert html.escape(result.error) in result._repr_html_()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"size": 0}, ValueError),
        ({"stride": 0}, ValueError),
        ({"in_channels": -1}, ValueError),
        ({"size": 6.0}, TypeError),
        ({"stride": True}, TypeError),
        ({"use_1x1conv": 1}, TypeError),
        ({"batch_size": 0}, ValueError),
    ],
)
def test_residual_shape_refuses_values_that_are_not_sizes(kwargs, error):
    args = {"size": 6, "in_channels": 3, "out_channels": 3} | kwargs
    with pytest.raises(error, match=next(iter(kwargs))):
        residual_shape(**args)


def _stage_shapes_by_forward(model: nn.Module, size: int) -> list[tuple[int, ...]]:
    x = torch.zeros(1, 1, size, size)
    shapes = []
    with torch.no_grad():
        for child in model.children():
            x = child(x)
            shapes.append(tuple(x.shape))
    return shapes


@pytest.mark.parametrize("size", [1, 7, 16, 33, 96, 224])
def test_resnet_shapes_match_a_real_forward(size):
    torch.manual_seed(0)
    model = resnet18().eval()
    result = resnet_shapes(size, model)
    assert result.ok and result.error is None
    assert result.input_shape == (1, 1, size, size)
    assert [r.output_shape for r in result.table] == _stage_shapes_by_forward(model, size)
    assert [r.name for r in result.table] == [n for n, _ in model.named_children()]
    assert str(result.table) in str(result)


def test_resnet_shapes_default_model_is_resnet18_at_224():
    result = resnet_shapes(224)
    rows = {r.name: r.output_shape for r in result.table}
    assert rows["stem"] == (1, 64, 56, 56)
    assert rows["stage4"] == (1, 512, 7, 7)
    assert rows["fc"] == (1, 10)
    assert result.notes == ()
    assert str(trace_shapes(resnet18(), (1, 1, 224, 224))) == str(result.table)


@pytest.mark.parametrize(
    ("size", "useless"),
    [
        (224, []),
        (32, []),
        (31, []),
        (16, ["stage4"]),
        (7, ["stage3", "stage4"]),
        (3, ["stage2", "stage3", "stage4"]),
    ],
)
def test_resnet_shapes_notes_stages_that_cannot_halve_any_more(size, useless):
    result = resnet_shapes(size)
    assert result.ok
    assert [note.split(" ")[0] for note in result.notes] == useless
    for note in result.notes:
        assert "1x1 feature map" in note and "Fix:" in note


def test_resnet_shapes_returns_the_error_for_an_input_that_does_not_fit():
    too_small = nn.Sequential(nn.Conv2d(1, 4, kernel_size=5), nn.Flatten())
    result = resnet_shapes(3, too_small, in_channels=1)
    assert not result.ok and result.table is None
    assert "does not fit" in result.error and "(1, 1, 3, 3)" in result.error
    assert html.escape(result.error) in result._repr_html_()
    assert result.error in str(result)

    colour = resnet18(in_channels=3)
    result = resnet_shapes(224, colour, in_channels=1)
    assert not result.ok and result.table is None
    assert "(N, 3, H, W) but got 1 channels" in result.error


def test_resnet_shapes_refuses_values_that_are_not_sizes():
    with pytest.raises(ValueError, match="size must be at least 1"):
        resnet_shapes(0)
    with pytest.raises(TypeError, match="size"):
        resnet_shapes(22.4)
