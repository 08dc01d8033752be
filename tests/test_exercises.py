"""The exercise checkers: the reference passes, correct code written differently passes, and
each deliberately wrong implementation gets exactly the hint for its mistake."""

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from resnet_lessons import Bottleneck, Residual, conv_output_size, resnet18, resnet_block
from resnet_lessons.exercises import (
    NOT_DONE,
    RESNET18_PARAMS,
    Feedback,
    check_bottleneck,
    check_conv_output_size,
    check_preactivation,
    check_residual,
    check_resnet18,
    check_resnet_block,
    check_shape,
)
from resnet_lessons.preactivation import PreActResidual


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny forwards: one thread is much faster than several fighting over a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_hint(feedback: Feedback, hint: str) -> None:
    assert isinstance(feedback, Feedback)
    assert not feedback and not feedback.passed, feedback
    assert feedback.hint == hint, feedback
    assert feedback.message and "Traceback" not in feedback.message


def assert_passes(feedback: Feedback) -> None:
    assert feedback and feedback.passed and feedback.hint is None, feedback


# --- Feedback ---------------------------------------------------------------------------


def test_feedback_is_truthy_only_when_passed_and_renders_in_both_forms():
    good = Feedback("formula", True, "Right.")
    bad = Feedback("formula", False, "You forgot the + 1 <here>.", "forgot_plus_one")
    todo = Feedback("formula", False, "Fill it in.", NOT_DONE)
    assert good and not bad and not todo
    assert str(good) == "formula: PASSED. Right."
    assert str(bad).startswith("formula: NOT YET RIGHT.")
    assert str(todo).startswith("formula: NOT DONE YET.")
    assert "#2e7d32" in good._repr_html_() and "#c62828" in bad._repr_html_()
    assert "&lt;here&gt;" in bad._repr_html_()  # the message is escaped
    assert "not done yet" in todo._repr_html_()


# --- the formula ------------------------------------------------------------------------


def _formula(n, k, s=1, p=0, d=1):
    return math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1


@pytest.mark.parametrize(
    ("fn", "hint"),
    [
        (lambda n, k, s=1, p=0, d=1: (n + 2 * p - d * (k - 1) - 1) // s, "forgot_plus_one"),
        (lambda n, k, s=1, p=0, d=1: (n + p - d * (k - 1) - 1) // s + 1, "padding_one_side"),
        (
            lambda n, k, s=1, p=0, d=1: math.ceil((n + 2 * p - d * (k - 1) - 1) / s) + 1,
            "rounds_up",
        ),
        (lambda n, k, s=1, p=0, d=1: n + 2 * p - d * (k - 1), "ignores_stride"),
        (lambda n, k, s=1, p=0, d=1: (n + 2 * p - k) // s + 1, "ignores_dilation"),
        (lambda n, k, s=1, p=0, d=1: (n + 2 * p - d * (k - 1) - 1) / s + 1, "not_whole_number"),
        (lambda n, k, s=1, p=0, d=1: 7, "wrong_value"),
    ],
)
def test_size_formula_mistakes_get_their_hint(fn, hint):
    assert_hint(check_conv_output_size(fn), hint)


def test_size_formula_passes_the_reference_and_other_correct_forms():
    assert_passes(check_conv_output_size(conv_output_size))
    assert_passes(check_conv_output_size(_formula))
    floats = check_conv_output_size(lambda *a: float(_formula(*a)))
    assert_passes(floats)
    assert "int(" in floats.message


def test_size_formula_reports_stubs_crashes_and_wrong_types():
    def stub(size, kernel_size, stride=1, padding=0, dilation=1):
        raise NotImplementedError

    assert_hint(check_conv_output_size(stub), NOT_DONE)
    assert_hint(check_conv_output_size(None), NOT_DONE)
    crashed = check_conv_output_size(lambda n, k: n)  # too few parameters
    assert_hint(crashed, "crashed")
    assert "TypeError" in crashed.message and "dilation=1" in crashed.message
    assert_hint(check_conv_output_size(lambda *a: None), "wrong_type")
    assert_hint(check_conv_output_size(3), "wrong_type")


# --- the residual block -----------------------------------------------------------------


def student_residual(**mistakes):
    """A correct block written unlike the reference (nn.Sequential, other names, the
    shortcut built first, no conv bias) with the named mistakes switched on."""

    class StudentResidual(nn.Module):
        def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
            super().__init__()
            pad = 0 if mistakes.get("no_padding") else 1
            s2 = stride if mistakes.get("stride_both") else 1
            sc_stride = 1 if mistakes.get("shortcut_no_stride") else stride
            self.skip = (
                nn.Conv2d(in_channels, out_channels, 1, stride=sc_stride) if use_1x1conv else None
            )
            bn = (lambda c: nn.Identity()) if mistakes.get("bn_missing") else nn.BatchNorm2d
            self.first = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride, pad, bias=False),
                bn(out_channels),
            )
            self.second_conv = nn.Conv2d(out_channels, out_channels, 3, s2, pad, bias=False)
            self.second_bn = nn.BatchNorm2d(out_channels)

        def forward(self, x):
            h = self.first(x)
            if not mistakes.get("no_relu_between"):
                h = F.relu(h)
            h = self.second_conv(h)
            identity = x if self.skip is None else self.skip(x)
            if mistakes.get("bn_after_add"):
                return F.relu(self.second_bn(h + identity))
            h = self.second_bn(h)
            if mistakes.get("no_shortcut"):
                return F.relu(h)
            if mistakes.get("relu_before_add"):
                return F.relu(h) + identity
            if mistakes.get("no_final_relu"):
                return h + identity
            return F.relu(h + identity)

    return StudentResidual


def test_residual_passes_the_reference_and_a_block_written_differently():
    assert_passes(check_residual(Residual))
    assert_passes(check_residual(student_residual()))
    torchvision_style = check_residual(lambda *args: Residual(*args, variant="torchvision"))
    assert_hint(torchvision_style, "wrong_output")  # BN on the shortcut: not the lecture's
    assert "torchvision's variant" in torchvision_style.message


@pytest.mark.parametrize(
    "hint",
    [
        "no_padding",
        "stride_both",
        "shortcut_no_stride",
        "relu_before_add",
        "no_final_relu",
        "bn_missing",
        "bn_after_add",
        "no_shortcut",
        "no_relu_between",
    ],
)
def test_each_residual_mistake_gets_exactly_its_hint(hint):
    assert_hint(check_residual(student_residual(**{hint: True})), hint)


def test_residual_hints_for_missing_layers_and_training_mode():
    class No1x1(student_residual()):
        def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
            super().__init__(in_channels, out_channels, False, stride)

    assert_hint(check_residual(No1x1), "no_1x1conv")

    class NoStride(student_residual()):
        def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
            super().__init__(in_channels, out_channels, use_1x1conv, 1)

    assert_hint(check_residual(NoStride), "no_stride")

    class AlwaysEval(student_residual()):
        def forward(self, x):
            self.eval()
            return super().forward(x)

    assert_hint(check_residual(AlwaysEval), "train_mode")

    class OneConv(nn.Module):
        def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1)

        def forward(self, x):
            return self.conv(x)

    assert_hint(check_residual(OneConv), "wrong_layers")


def test_residual_reports_stubs_crashes_and_wrong_types_without_raising():
    class Stub(nn.Module):
        def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
            super().__init__()
            raise NotImplementedError("write the layers here")

    class NoForward(nn.Module):
        def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
            super().__init__()

    assert_hint(check_residual(Stub), NOT_DONE)
    assert_hint(check_residual(NoForward), NOT_DONE)
    assert_hint(check_residual(None), NOT_DONE)

    class Crashes(student_residual()):
        def forward(self, x):
            return super().forward(x) + torch.ones(5)

    crashed = check_residual(Crashes)
    assert_hint(crashed, "crashed")
    assert "RuntimeError" in crashed.message and "(4, 3, 6, 6)" in crashed.message

    class ReturnsNothing(student_residual()):
        def forward(self, x):
            super().forward(x)

    assert_hint(check_residual(ReturnsNothing), "wrong_return")
    assert "forget return" in check_residual(ReturnsNothing).message

    class BadInit(nn.Module):
        def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
            self.conv = nn.Conv2d(in_channels, out_channels, 3)  # before super().__init__()

    assert_hint(check_residual(BadInit), "crashed")
    assert_hint(check_residual(Residual(3, 3)), "wrong_type")  # an instance, not the class


def test_checkers_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_residual(Residual)
    check_resnet_block(resnet_block)
    assert torch.equal(torch.rand(3), expected)


# --- the bottleneck and the pre-activation block -----------------------------------------


def student_bottleneck(**mistakes):
    class StudentBottleneck(nn.Module):
        def __init__(self, in_channels, mid_channels, use_1x1conv=False, stride=1):
            super().__init__()
            out = mid_channels if mistakes.get("no_expansion") else 4 * mid_channels
            sc_stride = 1 if mistakes.get("shortcut_no_stride") else stride
            s3 = stride if mistakes.get("stride_twice") else 1
            self.body = nn.Sequential(  # the stride on the 3x3, as in torchvision
                nn.Conv2d(in_channels, mid_channels, 1, stride=s3, bias=False),
                nn.BatchNorm2d(mid_channels),
                nn.ReLU(),
                nn.Conv2d(mid_channels, mid_channels, 3, stride, 1, bias=False),
                nn.BatchNorm2d(mid_channels),
                nn.ReLU(),
                nn.Conv2d(mid_channels, out, 1, bias=False),
                nn.BatchNorm2d(out),
            )
            self.proj = nn.Conv2d(in_channels, out, 1, stride=sc_stride) if use_1x1conv else None

        def forward(self, x):
            h = self.body(x)
            identity = x if self.proj is None else self.proj(x)
            if mistakes.get("no_shortcut"):
                return F.relu(h)
            if mistakes.get("relu_before_add"):
                return F.relu(h) + identity
            if mistakes.get("no_final_relu"):
                return h + identity
            return F.relu(h + identity)

    return StudentBottleneck


def test_bottleneck_passes_both_stride_placements():
    assert_passes(check_bottleneck(Bottleneck))  # stride on the first 1x1 (the paper)
    assert_passes(check_bottleneck(student_bottleneck()))  # stride on the 3x3 (torchvision)


@pytest.mark.parametrize(
    "hint",
    [
        "no_expansion",
        "shortcut_no_stride",
        "stride_twice",
        "relu_before_add",
        "no_final_relu",
        "no_shortcut",
    ],
)
def test_each_bottleneck_mistake_gets_exactly_its_hint(hint):
    expected = "stride_both" if hint == "stride_twice" else hint
    assert_hint(check_bottleneck(student_bottleneck(**{hint: True})), expected)


def test_bottleneck_with_bn_on_the_shortcut_is_named_as_torchvisions_variant():
    feedback = check_bottleneck(lambda *args: Bottleneck(*args, variant="torchvision"))
    assert_hint(feedback, "wrong_output")
    assert "torchvision's variant" in feedback.message


def student_preactivation(**mistakes):
    class StudentPreAct(nn.Module):
        def __init__(self, in_channels, out_channels, use_1x1conv=False, stride=1):
            super().__init__()
            self.norm_in = nn.BatchNorm2d(in_channels)
            self.conv_a = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
            self.norm_mid = nn.BatchNorm2d(out_channels)
            self.conv_b = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
            self.proj = nn.Conv2d(in_channels, out_channels, 1, stride) if use_1x1conv else None

        def forward(self, x):
            h = self.conv_b(F.relu(self.norm_mid(self.conv_a(F.relu(self.norm_in(x))))))
            identity = x if self.proj is None else self.proj(x)  # x, not relu(bn(x)): fine
            if mistakes.get("no_shortcut"):
                return h
            if mistakes.get("final_relu"):
                return F.relu(h + identity)
            return h + identity

    return StudentPreAct


def test_preactivation_passes_the_reference_and_either_shortcut_input():
    assert_passes(check_preactivation(PreActResidual))
    assert_passes(check_preactivation(student_preactivation()))


@pytest.mark.parametrize("hint", ["final_relu", "no_shortcut"])
def test_each_preactivation_mistake_gets_exactly_its_hint(hint):
    assert_hint(check_preactivation(student_preactivation(**{hint: True})), hint)


def test_the_original_block_is_not_a_preactivation_block():
    assert_hint(check_preactivation(Residual), "post_activation")


def test_preactivation_reference_shapes_and_clean_identity():
    block = PreActResidual(3, 6, use_1x1conv=True, stride=2)
    assert block(torch.randn(4, 3, 6, 6)).shape == (4, 6, 3, 3)
    identity = PreActResidual(3, 3).eval()
    nn.init.zeros_(identity.conv2.weight)
    nn.init.zeros_(identity.conv2.bias)
    x = torch.randn(2, 3, 5, 5)  # negative values too: no ReLU after the addition
    torch.testing.assert_close(identity(x), x)
    with pytest.raises(ValueError, match="use_1x1conv=True"):
        PreActResidual(3, 6)


# --- the stage builder ------------------------------------------------------------------


def student_stage(mistake=None):
    def build(in_channels, out_channels, num_residuals, first_block=False):
        blocks = []
        for i in range(num_residuals):
            down = (i == 0 and not first_block) or mistake == "downsample_every"
            down = down or (i == 0 and mistake == "first_block_ignored")
            down = down and mistake != "no_downsample"
            keeps = mistake == "channels_unchanged" and i == 0
            c_in = in_channels if i == 0 else out_channels
            c_out = in_channels if keeps else out_channels
            if mistake == "channels_unchanged" and i == 1:
                c_in = in_channels
            stride = 2 if down else 1
            use_1x1conv = stride != 1 or c_in != c_out
            if mistake == "no_1x1conv":
                use_1x1conv = False
            blocks.append(Residual(c_in, c_out, use_1x1conv, stride))
        if mistake == "block_count":
            blocks = blocks[:-1]
        return nn.Sequential(*blocks)

    return build


def test_stage_builder_passes_the_reference_and_a_rewrite():
    assert_passes(check_resnet_block(resnet_block))
    assert_passes(check_resnet_block(student_stage()))


@pytest.mark.parametrize(
    "hint",
    [
        "downsample_every",
        "first_block_ignored",
        "no_downsample",
        "channels_unchanged",
        "no_1x1conv",
        "block_count",
    ],
)
def test_each_stage_mistake_gets_exactly_its_hint(hint):
    assert_hint(check_resnet_block(student_stage(hint)), hint)


def halves_in_the_last_block(in_channels, out_channels, num_residuals, first_block=False):
    """The first block changes the channels at full size; the last one halves the size."""
    blocks = [Residual(in_channels, out_channels, use_1x1conv=in_channels != out_channels)]
    for i in range(1, num_residuals):
        last = i == num_residuals - 1 and not first_block
        blocks.append(Residual(out_channels, out_channels, use_1x1conv=last, stride=1 + last))
    return nn.Sequential(*blocks)


def test_downsampling_at_the_end_of_the_stage_is_named_with_the_block_and_the_fix():
    feedback = check_resnet_block(halves_in_the_last_block)
    assert_hint(feedback, "downsample_at_end")
    assert "resnet_block(4, 8, 2, first_block=False)" in feedback.message
    assert "the first block gives (2, 8, 8, 8)" in feedback.message  # its output, full size
    assert "block 2 of 2 (the last) halves it to 4x4" in feedback.message
    assert "stride=2 and use_1x1conv=True" in feedback.message  # the fix
    assert "Right" not in feedback.message
    assert_hint(check_resnet_block(partial(resnet_block, downsample="end")), "downsample_at_end")


def test_downsampling_in_a_middle_block_names_that_block():
    def halves_in_the_middle(in_channels, out_channels, num_residuals, first_block=False):
        if num_residuals != 3:  # right on the stages of two blocks
            return resnet_block(in_channels, out_channels, num_residuals, first_block)
        blocks = [Residual(in_channels, out_channels, use_1x1conv=in_channels != out_channels)]
        for i in range(1, num_residuals):
            down = i == 1 and not first_block
            blocks.append(Residual(out_channels, out_channels, down, 1 + down))
        return nn.Sequential(*blocks)

    feedback = check_resnet_block(halves_in_the_middle)
    assert_hint(feedback, "downsample_at_end")
    assert "resnet_block(4, 8, 3, first_block=False)" in feedback.message
    assert "block 2 of 3 halves it to 4x4" in feedback.message


def test_stage_praise_states_what_was_checked():
    praise = check_resnet_block(resnet_block).message
    assert praise.startswith("Right on 4 stages, checked block by block")
    assert "the first block gives the stage's output shape" in praise
    assert "the blocks after it keep that shape" in praise

    class Wrapped(nn.Module):  # right output, but its blocks are hidden from the checker
        def __init__(self, *args):
            super().__init__()
            self.body = resnet_block(*args)

        def forward(self, x):
            return self.body(x)

    hidden = check_resnet_block(lambda *args: Wrapped(*args))
    assert_passes(hidden)
    assert "each gives the right output shape" in hidden.message
    assert "not checked one by one" in hidden.message
    assert "first block" not in hidden.message  # it could not see which block downsamples


def test_a_later_block_with_another_shape_is_named():
    def widens_then_narrows(in_channels, out_channels, num_residuals, first_block=False):
        stride = 1 if first_block else 2
        blocks = [
            Residual(in_channels, out_channels, in_channels != out_channels or stride > 1, stride)
        ]
        if num_residuals == 3:  # a middle block with twice the channels, then back
            blocks += [
                Residual(out_channels, 2 * out_channels, True),
                Residual(2 * out_channels, out_channels, True),
            ]
        else:
            blocks += [Residual(out_channels, out_channels) for _ in range(num_residuals - 1)]
        return nn.Sequential(*blocks)

    feedback = check_resnet_block(widens_then_narrows)
    assert_hint(feedback, "wrong_shape")
    assert "block 2 of 3 gives (2, 16, 4, 4)" in feedback.message


def test_stage_builder_reports_stubs_and_wrong_returns():
    def stub(in_channels, out_channels, num_residuals, first_block=False):
        raise NotImplementedError

    assert_hint(check_resnet_block(stub), NOT_DONE)
    returns_list = check_resnet_block(lambda *a: [Residual(a[0], a[1], True, 2)])
    assert_hint(returns_list, "wrong_type")
    assert "nn.Sequential" in returns_list.message
    assert_hint(check_resnet_block(lambda *a: None), "wrong_type")


# --- the whole network ------------------------------------------------------------------


def test_resnet18_passes_the_reference_and_a_flat_rewrite():
    assert_passes(check_resnet18(resnet18()))
    assert_passes(check_resnet18(resnet18))  # a builder is built first
    reference = resnet18()
    flat = nn.Sequential(*reference.stem, *reference.stage1, *reference.stage2,
                         *reference.stage3, *reference.stage4, reference.avgpool,
                         nn.Flatten(), reference.fc)  # fmt: skip
    assert_passes(check_resnet18(flat))


def test_resnet18_names_the_first_stage_with_a_wrong_shape():
    model = resnet18()
    model.stage1 = resnet_block(64, 64, 2, first_block=False)  # the first_block rule broken
    feedback = check_resnet18(model)
    assert_hint(feedback, "stage_shape")
    assert "stage1" in feedback.message and "(1, 64, 56, 56)" in feedback.message
    assert "first_block=True" in feedback.message

    model = resnet18()
    model.stage3 = resnet_block(128, 256, 2, first_block=True)  # forgot to downsample
    model.stage3[0] = Residual(128, 256, use_1x1conv=True)
    feedback = check_resnet18(model)
    assert_hint(feedback, "stage_shape")
    assert "stage3" in feedback.message and "(1, 256, 14, 14)" in feedback.message


def test_resnet18_hints_for_the_parameter_count_and_the_output():
    no_bias = resnet18(variant="torchvision")  # same shapes, other parameters
    feedback = check_resnet18(no_bias)
    assert_hint(feedback, "param_count")
    count = sum(p.numel() for p in no_bias.parameters())
    assert f"{count - RESNET18_PARAMS:+,}" in feedback.message

    model = resnet18(num_classes=1000)
    assert_hint(check_resnet18(model), "output_shape")
    assert_hint(check_resnet18(None), NOT_DONE)
    assert_hint(check_resnet18(nn.Module()), NOT_DONE)  # no forward yet
    crashed = check_resnet18(resnet18(in_channels=3))
    assert_hint(crashed, "crashed")
    assert "ValueError" in crashed.message


# --- shapes by hand ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        ("(4, 6, 3, 3)", None),
        ([4, 6, 3, 3], None),
        ("4, 6, 3, 3", None),
        ("", NOT_DONE),
        (None, NOT_DONE),
        ("four by six", "format"),
        ("(4, 6, 3)", "wrong_length"),
        ("(4, 3, 3, 3)", "wrong_channels"),
        ("(1, 6, 3, 3)", "wrong_batch"),
        ("(4, 6, 6, 6)", "ignores_stride"),
        ("(4, 6, 5, 5)", "ignores_stride"),
        ("(4, 6, 2, 2)", "rounds_down"),
    ],
)
def test_shapes_by_hand(answer, hint):
    feedback = check_shape(answer, (4, 6, 3, 3), question="block", stride=2)
    if hint is None:
        assert_passes(feedback)
    else:
        assert_hint(feedback, hint)


# --- the notebooks' exercises -----------------------------------------------------------

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0[1-4]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_end_with_exercises_stub_check_and_hidden_solution(path):
    """Each of notebooks 01-04 ends with 2-3 exercises: a stub whose saved check says "not
    done yet", and a hidden worked solution that asserts its check passes (nbval runs it)."""
    cells = json.loads(path.read_text())["cells"]
    start = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises"))
    tail = cells[start:]
    exercises = [c for c in tail if "".join(c["source"]).startswith("### Exercise")]
    assert 2 <= len(exercises) <= 3
    saved = [
        "".join(o.get("data", {}).get("text/plain", ""))
        for c in tail
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    ]
    not_done = [text for text in saved if "NOT DONE YET" in text]
    hidden = [c for c in tail if c["metadata"].get("jupyter", {}).get("source_hidden")]
    solutions = [c for c in hidden if "assert feedback, feedback.message" in "".join(c["source"])]
    quizzes = [c for c in tail if "shape_quiz(" in "".join(c["source"])]
    assert len(not_done) + len(quizzes) == len(exercises)
    assert len(solutions) == len(exercises)
    for cell in solutions:
        outputs = "".join(
            "".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", ""))
            for o in cell["outputs"]
        )
        assert "PASSED" in outputs or "passed" in outputs, outputs
