"""The stride and channel explorers: the readouts wired to sliders, tested without a browser."""

import base64
import html
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from resnet_lessons import (
    Residual,
    conv_formula,
    conv_output_size,
    residual_shape,
    resnet50,
    resnet_shapes,
)
from resnet_lessons.widgets import ResidualExplorer, residual_explorer, resnet_explorer, shape_quiz


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny forwards: one thread is ~100x faster than several fighting over a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the widgets, without a browser -----------------------------------------------------


def test_residual_explorer_updates_the_readout_when_the_stride_moves():
    explorer = residual_explorer(size=6, in_channels=3, out_channels=6, use_1x1conv=True)
    assert explorer.stride_slider.description == "stride"
    assert "shape-readout" in explorer.readout._dom_classes
    assert explorer.readout.value == "(4, 6, 6, 6)"
    for stride in (2, 3, 4, 1):
        explorer.stride_slider.value = stride
        h = conv_output_size(6, 3, stride, 1)
        assert explorer.readout.value == f"(4, 6, {h}, {h})"
        assert conv_formula(6, 3, stride, 1) in explorer.details.value


def test_residual_explorer_every_control_is_wired():
    explorer = residual_explorer()
    changes = [
        (explorer.size_slider, 13),
        (explorer.conv1x1_box, True),
        (explorer.in_slider, 5),
        (explorer.out_slider, 8),
        (explorer.stride_slider, 3),
    ]
    for control, value in changes:
        control.value = value
        expected = residual_shape(
            explorer.size_slider.value,
            explorer.in_slider.value,
            explorer.out_slider.value,
            explorer.stride_slider.value,
            explorer.conv1x1_box.value,
        )
        assert explorer.result == expected, control.description
        assert explorer.readout.value == "(" + ", ".join(map(str, expected.output_shape)) + ")"
        assert explorer.details.value == expected._repr_html_()
    assert explorer.readout.value == "(4, 8, 5, 5)"


def test_residual_explorer_shows_the_error_for_a_block_that_cannot_be_built(capsys):
    explorer = residual_explorer(size=6, in_channels=3, out_channels=3)
    explorer.out_slider.value = 6  # channels change, no 1x1 conv
    with pytest.raises(ValueError) as err:
        Residual(3, 6)
    assert "ValueError" in explorer.readout.value
    assert not re.search(r"\(\d+, \d+, \d+, \d+\)", explorer.readout.value)  # no shape
    assert html.escape(str(err.value)) in explorer.details.value
    explorer.conv1x1_box.value = True  # the fix the message names
    assert explorer.readout.value == "(4, 6, 6, 6)"
    assert "ValueError" not in explorer.details.value
    assert capsys.readouterr() == ("", "")  # callbacks print nothing


def test_residual_explorer_widens_a_slider_for_a_large_value_and_refuses_bad_ones():
    explorer = residual_explorer(
        size=224, in_channels=64, out_channels=128, stride=2, use_1x1conv=True
    )
    assert explorer.size_slider.value == 224 and explorer.out_slider.value == 128
    assert explorer.readout.value == "(4, 128, 112, 112)"
    with pytest.raises(ValueError, match="stride must be at least 1"):
        ResidualExplorer(stride=0)


def test_resnet_explorer_builds_the_model_once_and_updates_the_table(capsys):
    explorer = resnet_explorer()
    model = explorer.model
    assert "resnet-table" in explorer.table._dom_classes
    assert explorer.summary.value == "input (1, 1, 224, 224) -> stage4 (1, 512, 7, 7) -> fc (1, 10)"
    explorer.size_slider.value = 96
    assert explorer.model is model
    assert explorer.summary.value == "input (1, 1, 96, 96) -> stage4 (1, 512, 3, 3) -> fc (1, 10)"
    assert explorer.table.value == resnet_shapes(96, model)._repr_html_()
    explorer.size_slider.value = 7
    assert "stage3 gets a 1x1 feature map" in explorer.table.value
    assert capsys.readouterr() == ("", "")
    assert "<b>ResNet-18</b>" in explorer.children[0].value
    assert repr(explorer) == f"ResNet-18 explorer (run the cell): {explorer.summary.value}"


def test_explorers_name_the_network_and_show_the_shape_without_a_kernel():
    assert "<b>ResNet-50</b>" in resnet_explorer(model=resnet50()).children[0].value
    block = residual_explorer(6, 3, 6, 2, True)
    # The text a notebook shows where the sliders cannot be drawn (e.g. not yet run).
    assert block._repr_mimebundle_()["text/plain"] == (
        "residual block explorer (run the cell): (4, 6, 3, 3)"
    )


def test_resnet_explorer_shows_the_error_for_an_input_that_does_not_fit():
    explorer = resnet_explorer(size=8, model=nn.Sequential(nn.Conv2d(1, 4, 5), nn.Flatten()))
    assert explorer.summary.value.startswith("input (1, 1, 8, 8)")
    explorer.size_slider.value = 3
    assert "cannot take this input" in explorer.summary.value
    assert "does not fit" in explorer.table.value


@pytest.mark.slow
def test_the_package_imports_without_ipywidgets():
    code = (
        "import sys; sys.modules['ipywidgets'] = None\n"  # importing it now raises ImportError
        "import resnet_lessons\n"
        "print(resnet_lessons.residual_shape(6, 3, 3).output_shape)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "(4, 3, 6, 6)"


# --- the stride picture and the shape quiz ------------------------------------------------


def _windows(svg: str) -> int:
    return int(re.search(r"data-windows='(\d+)'", svg).group(1))


def test_the_stride_picture_follows_the_sliders():
    from resnet_lessons.stride_picture import stride_picture

    explorer = residual_explorer(size=6, in_channels=3, out_channels=6, use_1x1conv=True)
    assert "stride-picture-box" in explorer.picture._dom_classes
    assert explorer.picture in explorer.children
    for stride, windows in ((1, 36), (2, 9), (3, 4)):
        explorer.stride_slider.value = stride
        assert _windows(explorer.picture.value) == windows
        assert explorer.picture.value == stride_picture(6, stride).svg
    explorer.size_slider.value = 7
    assert _windows(explorer.picture.value) == 9  # stride 3 on 7x7: floor(6 / 3) + 1 = 3
    explorer.conv1x1_box.value = False  # an error state still draws the picture
    assert "identity shortcut" in explorer.picture.value


def test_the_explorer_has_a_static_copy_for_viewers_without_widgets():
    bundle = residual_explorer(6, 3, 6, 2, True)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    static = bundle["text/html"]
    assert "(4, 6, 3, 3)" in static
    assert "lands at 9 positions" in static  # the picture's alt text
    data = re.search(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", static).group(1)
    assert "data-windows='9'" in base64.b64decode(data).decode()


def test_shape_quiz_checks_each_answer_as_it_is_typed(capsys):
    quiz = shape_quiz([("Residual(3, 6, True, 2) on (4, 3, 6, 6)", (4, 6, 3, 3), 2),
                       ("Residual(3, 3) on (4, 3, 6, 6)", (4, 3, 6, 6))])  # fmt: skip
    assert len(quiz.answers) == 2 and quiz.verdicts[0].value == ""  # nothing typed yet
    assert quiz.feedback[0].hint == "not_done"
    quiz.answers[0].value = "(4, 6, 6, 6)"
    assert quiz.feedback[0].hint == "ignores_stride" and "#c62828" in quiz.verdicts[0].value
    quiz.answers[0].value = "(4, 6, 3, 3)"
    assert quiz.feedback[0].passed and "passed" in quiz.verdicts[0].value
    quiz.answers[1].value = "4, 3, 6, 6"
    assert quiz.feedback[1].passed
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ValueError, match="at least one"):
        shape_quiz([])


def test_shape_quiz_static_fallback_shows_the_questions_and_no_answer():
    quiz = shape_quiz([("<code>Residual(3, 6, use_1x1conv=True, stride=2)</code> on "
                        "<code>(4, 3, 6, 6)</code>", (4, 6, 3, 3), 2)])  # fmt: skip
    text = repr(quiz)
    assert "1. Residual(3, 6, use_1x1conv=True, stride=2) on (4, 3, 6, 6)" in text
    page = quiz._repr_mimebundle_()["text/html"]
    assert "<li><code>Residual(3, 6, use_1x1conv=True, stride=2)</code>" in page
    quiz.answers[0].value = "(4, 6, 3, 3)"  # a right answer typed in is not shown either
    for shown in (repr(quiz), quiz._repr_mimebundle_()["text/html"]):
        assert "(4, 6, 3, 3)" not in shown


@pytest.mark.parametrize(
    ("make", "box_class", "words"),
    [
        (lambda: residual_explorer(size=6), "residual-explorer", "move the sliders"),
        (lambda: resnet_explorer(size=32), "resnet-explorer", "move the slider"),
        (lambda: shape_quiz([("a block", (1, 1, 1, 1))]), "shape-quiz", "type and check"),
    ],
)
def test_saved_view_note_replaces_the_disconnected_icons_inside_its_widget_only(
    make, box_class, words
):
    """Before the kernel runs, JupyterLab draws the saved widgets with the class
    ``jupyter-widgets-disconnected`` on every view (an icon in its ``::before``). The note's
    CSS hides those icons and shows one line while the box is disconnected; every rule is
    scoped to the widget's own class, so nothing else on the page changes. The browser test
    checks that JupyterLab applies it."""
    widget = make()
    note = widget.note
    assert note in widget.children[:2], "the note sits at the top of the widget"
    assert "saved-view-note" in note._dom_classes
    match = re.fullmatch(
        r"<style>(.*)</style><div class='saved-view-text'>(.*)</div>", note.value, re.S
    )
    assert match, note.value
    css, text = match.groups()
    assert "run the notebook" in text and words in text
    rules = dict(re.findall(r"\s*([^{}]+?)\s*\{([^}]*)\}", css))
    assert rules, css
    for selectors in rules:
        for selector in selectors.split(","):
            assert selector.strip().startswith(f".{box_class}"), f"unscoped: {selector!r}"
    off = f".{box_class}.jupyter-widgets-disconnected"
    icons = f"{off}::before, .{box_class} .jupyter-widgets-disconnected::before"
    assert rules[icons].strip() == "display: none;"
    assert rules[f".{box_class} .saved-view-text"].strip() == "display: none;"
    assert rules[f"{off} .saved-view-text"].startswith("display: block;")
