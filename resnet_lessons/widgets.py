"""Live shape explorers for JupyterLab: sliders wired to the pure functions in ``readouts.py``.

* :func:`residual_explorer`: one :class:`~resnet_lessons.Residual` block. Sliders for
  the input size, the channels in and out and the stride, a checkbox for the 1x1
  conv; it shows the output shape ``(N, C, H, W)``, the stride picture (where the 3x3
  kernel lands, :func:`~resnet_lessons.stride_picture.stride_picture`), the formula with
  the numbers filled in, and the error text for a block that cannot be built.
* :func:`resnet_explorer`: a whole ResNet-18 over an input-size slider, with the
  per-stage shape table.
* :func:`shape_quiz`: answer boxes for shapes worked out by hand, checked as you type
  (:func:`~resnet_lessons.exercises.check_shape`).

Opened before the kernel runs, JupyterLab draws the saved widgets without a kernel behind
them and marks each control with ipywidgets' red "disconnected" icon. Each widget here
carries a :func:`_saved_view_note`: CSS scoped to the widget that hides those icons and
shows one line, "run the notebook", only while the widget is disconnected.

The widgets only wire values to :func:`~resnet_lessons.residual_shape` and
:func:`~resnet_lessons.resnet_shapes` (tested without a browser) through
``observe``; each update is a few milliseconds (shapes on the meta device, the
model built once). This is the only module that imports ipywidgets.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence

import ipywidgets as widgets
from torch import nn

from .exercises import check_shape
from .network import ResNet, resnet18
from .readouts import ResidualShape, ResNetShapes, residual_shape, resnet_shapes
from .shapes import format_shape
from .stride_picture import stride_picture

_STYLE = {"description_width": "8em"}

# ipywidgets 8 gives every view whose model has no live kernel connection the class
# ``jupyter-widgets-disconnected`` and draws an icon in its ``::before``.
_DISCONNECTED = "jupyter-widgets-disconnected"


def _saved_view_note(box_class: str, text: str) -> widgets.HTML:
    """An HTML child (CSS class ``saved-view-note``) for the box of class ``box_class``.

    Its ``<style>`` hides the disconnected icons inside that box and shows ``text`` only
    while the box itself is disconnected (a notebook opened before its cells ran, or a
    restarted kernel); once the cell runs, the note is hidden and takes no room.
    The HTML widget sets its value as ``innerHTML``, so the ``<style>`` applies as written.
    """
    box, off = f".{box_class}", f".{box_class}.{_DISCONNECTED}"
    style = (
        f"{off}::before, {box} .{_DISCONNECTED}::before {{display: none;}} "
        f"{box} .saved-view-text {{display: none;}} "
        f"{off} .saved-view-text {{display: block; line-height: 1.5; padding: 2px 8px; "
        "border-left: 3px solid var(--jp-brand-color1, #1976d2); "
        "color: var(--jp-ui-font-color1, #333); background: var(--jp-layout-color2, #eee);}"
    )
    note = widgets.HTML(f"<style>{style}</style><div class='saved-view-text'>{text}</div>")
    note.add_class("saved-view-note")
    return note


def _slider(description: str, value: int, low: int, high: int) -> widgets.IntSlider:
    # A value beyond the usual range widens the slider instead of being clamped silently.
    return widgets.IntSlider(
        value=value,
        min=low,
        max=max(high, value),
        step=1,
        description=description,
        style=_STYLE,
        layout=widgets.Layout(width="30em"),
    )


def _model_name(model: nn.Module) -> str:
    """``"ResNet-18"`` for the package's ResNets, else the class name."""
    return f"ResNet-{model.depth}" if isinstance(model, ResNet) else type(model).__name__


class ResidualExplorer(widgets.VBox):
    """Sliders and checkbox for one ``Residual`` block, the output shape and the formulas.

    The box carries the CSS class ``residual-explorer``. Attributes: the controls
    ``size_slider``, ``in_slider``, ``out_slider``, ``stride_slider`` (description
    ``stride``), ``conv1x1_box``; the ``readout`` Label (CSS class ``shape-readout``)
    with the output shape ``(N, C, H, W)``; ``note``, the :func:`_saved_view_note` shown
    in place of the disconnected icons before the kernel runs; ``picture``, an HTML widget
    (CSS class ``stride-picture-box``) with the stride picture's SVG
    (``svg.stride-picture``, its ``data-windows`` the number of kernel positions);
    the ``details`` HTML with the formulas and any error; ``result``, the latest
    :class:`~resnet_lessons.ResidualShape`.

    Where widgets cannot be drawn (a notebook viewer, an untrusted notebook), the cell
    shows a static copy: the output shape and the stride picture as HTML.
    """

    def __init__(
        self,
        size: int = 6,
        in_channels: int = 3,
        out_channels: int = 3,
        stride: int = 1,
        use_1x1conv: bool = False,
        *,
        batch_size: int = 4,
    ) -> None:
        # Check the values first: a bad one raises here with a clear message.
        first = residual_shape(size, in_channels, out_channels, stride, use_1x1conv, batch_size)
        size_slider = _slider("input size", size, 1, 64)
        in_slider = _slider("in channels", in_channels, 1, 64)
        out_slider = _slider("out channels", out_channels, 1, 64)
        stride_slider = _slider("stride", stride, 1, 4)
        conv1x1_box = widgets.Checkbox(
            value=use_1x1conv,
            description="1x1 conv on the shortcut (use_1x1conv)",
            indent=False,
            layout=widgets.Layout(width="30em", margin="2px 0 2px 8.5em"),  # under the sliders
        )
        readout = widgets.Label()
        readout.add_class("shape-readout")
        details = widgets.HTML()
        details.add_class("shape-details")
        picture = widgets.HTML()
        picture.add_class("stride-picture-box")
        title = widgets.HTML(
            f"<b>Residual block</b> on a batch of {batch_size} images "
            "(N = batch, C = channels, H x W = height x width)"
        )
        output_row = widgets.HBox([widgets.HTML("<b>output shape (N, C, H, W):</b>"), readout])
        note = _saved_view_note(
            "residual-explorer",
            "The saved view of this explorer: run the notebook (Run &gt; Run All Cells) "
            "to move the sliders.",
        )
        super().__init__(
            children=[
                title,
                note,
                size_slider,
                in_slider,
                out_slider,
                stride_slider,
                conv1x1_box,
                output_row,
                picture,
                details,
            ]
        )
        self.add_class("residual-explorer")
        self.batch_size = batch_size
        self.size_slider = size_slider
        self.in_slider = in_slider
        self.out_slider = out_slider
        self.stride_slider = stride_slider
        self.conv1x1_box = conv1x1_box
        self.note = note
        self.readout = readout
        self.details = details
        self.picture = picture
        self.result: ResidualShape = first
        self._show(first)
        for control in (size_slider, in_slider, out_slider, stride_slider, conv1x1_box):
            control.observe(self._update, names="value")

    def __repr__(self) -> str:
        # What a notebook shows where the sliders cannot be drawn (no kernel, untrusted).
        return f"residual block explorer (run the cell): {self.readout.value}"

    def _repr_mimebundle_(self, **kwargs: object) -> dict[str, object]:
        bundle = super()._repr_mimebundle_(**kwargs)
        # A static copy for viewers that cannot draw widgets (JupyterLab prefers the widget).
        # The picture goes in as an <img>: an untrusted notebook's HTML is sanitised, which
        # keeps images but drops inline SVG.
        picture = self._picture
        data = base64.b64encode(picture.svg.encode()).decode("ascii")
        bundle["text/html"] = (
            f"<div class='residual-explorer-static'><p><b>Residual block</b> "
            f"(run the notebook to move the sliders): output shape "
            f"<code>{self.readout.value}</code></p>"
            f"<img class='stride-picture-static' src='data:image/svg+xml;base64,{data}' "
            f"alt='{html.escape(str(picture), quote=True)}'></div>"
        )
        return bundle

    def _update(self, change: object = None) -> None:
        self._show(
            residual_shape(
                self.size_slider.value,
                self.in_slider.value,
                self.out_slider.value,
                self.stride_slider.value,
                self.conv1x1_box.value,
                self.batch_size,
            )
        )

    def _show(self, result: ResidualShape) -> None:
        self.result = result
        if result.ok:
            self.readout.value = format_shape(result.output_shape)
        else:
            self.readout.value = "none: Residual raises a ValueError, see below"
        self._picture = stride_picture(
            result.input_shape[2], result.stride, use_1x1conv=result.use_1x1conv
        )
        self.picture.value = self._picture.svg
        self.details.value = result._repr_html_()


class ResNetExplorer(widgets.VBox):
    """An input-size slider for a whole network and its per-stage shape table.

    The box carries the CSS class ``resnet-explorer``. Attributes: ``size_slider``;
    ``summary`` (Label, CSS class ``resnet-readout``) with the shape reaching the
    classifier; ``table`` (HTML, CSS class ``resnet-table``); ``note``, the
    :func:`_saved_view_note`; ``model``, built once; ``result``, the latest
    :class:`~resnet_lessons.ResNetShapes`.
    """

    def __init__(
        self, size: int = 224, model: nn.Module | None = None, *, batch_size: int = 1
    ) -> None:
        self.model = resnet18() if model is None else model  # built once, traced per update
        first = resnet_shapes(size, self.model, batch_size=batch_size)
        size_slider = _slider("input size", size, 1, 512)
        summary = widgets.Label()
        summary.add_class("resnet-readout")
        table = widgets.HTML()
        table.add_class("resnet-table")
        title = widgets.HTML(
            f"<b>{_model_name(self.model)}</b>: the output shape of each stage "
            "for a square input image"
        )
        note = _saved_view_note(
            "resnet-explorer",
            "The saved view of this explorer: run the notebook (Run &gt; Run All Cells) "
            "to move the slider.",
        )
        super().__init__(children=[title, note, size_slider, summary, table])
        self.add_class("resnet-explorer")
        self.note = note
        self.batch_size = batch_size
        self.size_slider = size_slider
        self.summary = summary
        self.table = table
        self.result: ResNetShapes = first
        self._show(first)
        size_slider.observe(self._update, names="value")

    def __repr__(self) -> str:
        # What a notebook shows where the sliders cannot be drawn (no kernel, untrusted).
        return f"{_model_name(self.model)} explorer (run the cell): {self.summary.value}"

    def _update(self, change: object = None) -> None:
        self._show(resnet_shapes(self.size_slider.value, self.model, batch_size=self.batch_size))

    def _show(self, result: ResNetShapes) -> None:
        self.result = result
        if result.table is None:
            self.summary.value = "the network cannot take this input (see below)"
        else:
            rows = [r for r in result.table if r.output_shape is not None]
            # The last feature map before global average pooling squeezes it to 1x1.
            maps = [r for r in rows if len(r.output_shape) == 4 and "Pool" not in r.layer]
            parts = [f"input {format_shape(result.input_shape)}"]
            parts += [f"{r.name} {format_shape(r.output_shape)}" for r in (maps[-1:] + rows[-1:])]
            self.summary.value = " -> ".join(parts)
        self.table.value = result._repr_html_()


class ShapeQuiz(widgets.VBox):
    """Answer boxes for shapes worked out by hand, each checked as the student types.

    ``questions`` is a list of ``(question, expected shape)`` or ``(question, expected
    shape, stride)`` (the stride lets the feedback say when it was ignored). Each row has
    a Text box (CSS class ``quiz-answer``) and an HTML verdict (CSS class
    ``quiz-feedback``) from :func:`~resnet_lessons.exercises.check_shape`. Attributes:
    ``answers`` (the Text boxes), ``verdicts`` (the HTML widgets), ``feedback`` (the
    latest :class:`~resnet_lessons.exercises.Feedback` of each row), ``note`` (the
    :func:`_saved_view_note`, the first child).
    """

    def __init__(self, questions: Sequence[tuple]) -> None:
        if not questions:
            raise ValueError("shape_quiz needs at least one (question, expected shape) pair.")
        rows, self.answers, self.verdicts = [], [], []
        self.questions = [(q[0], tuple(q[1]), q[2] if len(q) > 2 else 1) for q in questions]
        for question, _expected, _stride in self.questions:
            answer = widgets.Text(placeholder="(N, C, H, W)", layout=widgets.Layout(width="12em"))
            answer.add_class("quiz-answer")
            verdict = widgets.HTML()
            verdict.add_class("quiz-feedback")
            label = widgets.HTML(f"{question}", layout=widgets.Layout(width="28em"))
            rows.append(widgets.HBox([label, answer, verdict]))
            self.answers.append(answer)
            self.verdicts.append(verdict)
        self.note = _saved_view_note(
            "shape-quiz",
            "The saved view of this quiz: run the notebook (Run &gt; Run All Cells) to type "
            "and check your answers.",
        )
        super().__init__(children=[self.note, *rows])
        self.add_class("shape-quiz")
        self.feedback = [None] * len(self.questions)
        for i, answer in enumerate(self.answers):
            answer.observe(lambda change, i=i: self._check(i), names="value")
            self._check(i)

    def _check(self, i: int) -> None:
        question, expected, stride = self.questions[i]
        feedback = check_shape(self.answers[i].value, expected, question="answer", stride=stride)
        self.feedback[i] = feedback
        self.verdicts[i].value = "" if feedback.hint == "not_done" else feedback._repr_html_()

    def __repr__(self) -> str:
        # What a notebook shows where the boxes cannot be drawn: the questions, never the answers.
        lines = [f"shape quiz, {len(self.questions)} questions (run the notebook to answer them):"]
        for number, (question, _expected, _stride) in enumerate(self.questions, start=1):
            lines.append(f"  {number}. {html.unescape(re.sub(r'<[^>]+>', '', question))}")
        return "\n".join(lines)

    def _repr_mimebundle_(self, **kwargs: object) -> dict[str, object]:
        bundle = super()._repr_mimebundle_(**kwargs)
        # A static copy for viewers that cannot draw widgets: the questions, no answers.
        items = "".join(f"<li>{question}</li>" for question, _expected, _stride in self.questions)
        bundle["text/html"] = (
            "<div class='shape-quiz-static'><p><b>Shape quiz</b> (run the notebook to type "
            f"your answers): what is the output shape (N, C, H, W) of</p><ol>{items}</ol></div>"
        )
        return bundle


# The explorers are their own factories: ``residual_explorer(size=6, ...)`` builds one.
residual_explorer = ResidualExplorer
resnet_explorer = ResNetExplorer
shape_quiz = ShapeQuiz
