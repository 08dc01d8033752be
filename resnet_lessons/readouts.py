"""Readouts: what the stride and channel explorers of notebook 02 show, worked out with the
size formula.

* :func:`conv_formula`: ``floor((H + 2p - k) / s) + 1`` with the numbers filled in;
* :func:`residual_shape`: a :class:`~resnet_lessons.Residual` block's two paths for one
  input shape, the formulas behind them, and the error text of a block that cannot be built;
* :func:`resnet_shapes`: a whole network's per-stage shapes for one input size, with a note
  for each stage that can no longer halve anything.

All are pure and take milliseconds (arithmetic, or :func:`~resnet_lessons.shapes.trace_shapes`
on the meta device), so :mod:`resnet_lessons.widgets` can call them on every slider move and
the tests can check them without a browser.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from torch import nn

from ._checks import check_int
from .blocks import check_shortcut
from .network import resnet18
from .shapes import ShapeTable, conv_output_size, format_shape, modules_at_depth, trace_shapes


def conv_formula(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> str:
    """The size formula with the numbers filled in, e.g. ``"floor((6 + 2*1 - 3) / 2) + 1 = 3"``.

    The result is :func:`conv_output_size` (same checks, same errors), so the
    text and the number can never disagree.
    """
    out = conv_output_size(size, kernel_size, stride, padding)
    return f"floor(({size} + 2*{padding} - {kernel_size}) / {stride}) + 1 = {out}"


@dataclass(frozen=True)
class ResidualShape:
    """What a :class:`~resnet_lessons.Residual` block does to one input shape (from
    :func:`residual_shape`): the shape of each path, the formulas behind them, and
    the error text when the block cannot be built.

    Both paths must end with the same shape, because the block adds them:
    ``main_shape`` (two 3x3 convs) and ``shortcut_shape`` (identity or 1x1 conv).
    """

    input_shape: tuple[int, int, int, int]  #: (N, C_in, H, W), square: H == W
    in_channels: int
    out_channels: int
    stride: int
    use_1x1conv: bool
    main_shape: tuple[int, int, int, int]  #: after conv1 (stride) and conv2 (stride 1)
    shortcut_shape: tuple[int, int, int, int]  #: after the identity or the 1x1 conv
    formulas: tuple[tuple[str, str], ...]  #: (step, formula with numbers) for H (and W)
    output_shape: tuple[int, int, int, int] | None  #: None when the block cannot be built
    error: str | None  #: the ValueError text Residual raises, or None

    @property
    def ok(self) -> bool:
        """True when ``Residual(...)`` can be built and its output is ``output_shape``."""
        return self.error is None

    @property
    def call(self) -> str:
        """The constructor call this describes, e.g. ``"Residual(3, 6, use_1x1conv=True, ...)"``."""
        return (
            f"Residual({self.in_channels}, {self.out_channels}, "
            f"use_1x1conv={self.use_1x1conv}, stride={self.stride})"
        )

    def __str__(self) -> str:
        width = max(len(step) for step, _ in self.formulas)
        lines = [f"{self.call} on {format_shape(self.input_shape)}"]
        lines += [f"  {step.ljust(width)} : {formula}" for step, formula in self.formulas]
        lines.append(f"  main path {format_shape(self.main_shape)}")
        lines.append(f"  shortcut  {format_shape(self.shortcut_shape)}")
        if self.error is None:
            lines.append(f"  output    {format_shape(self.output_shape)}")
        else:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td style='text-align:left; padding-right:1.5em'>{html.escape(step)}</td>"
            f"<td style='text-align:left'><code>{html.escape(formula)}</code></td></tr>"
            for step, formula in self.formulas
        )
        paths = (
            f"main path <code>{format_shape(self.main_shape)}</code> + "
            f"shortcut <code>{format_shape(self.shortcut_shape)}</code>"
        )
        if self.error is None:
            verdict = (
                f"<p>{paths} = output <b><code>{format_shape(self.output_shape)}</code></b></p>"
            )
        else:
            verdict = (
                f"<p>{paths}: cannot be added.</p>"
                "<div class='shape-error' style='border-left:4px solid "
                "var(--jp-error-color1, #d32f2f); padding:2px 8px; "
                "white-space:normal; max-width:60em'>"
                f"<b>ValueError</b>: {html.escape(self.error)}</div>"
            )
        return (
            f"<div class='residual-shape' style='line-height:1.5'>"
            f"<p><code>{html.escape(self.call)}</code> on "
            f"<code>{format_shape(self.input_shape)}</code>: H and W follow "
            "<code>floor((H + 2p - k) / s) + 1</code></p>"
            f"<table><tbody>{rows}</tbody></table>{verdict}</div>"
        )


def residual_shape(
    size: int,
    in_channels: int,
    out_channels: int,
    stride: int = 1,
    use_1x1conv: bool = False,
    batch_size: int = 4,
) -> ResidualShape:
    """The shapes inside ``Residual(in_channels, out_channels, use_1x1conv, stride)`` for an
    input ``(batch_size, in_channels, size, size)``, worked out with the formula.

    ``(N, C_in, H, W) -> (N, C_out, floor((H + 2*1 - 3) / s) + 1, ...)``: the first
    3x3 conv (padding 1) applies the stride, the second (stride 1, padding 1) keeps
    the size; the shortcut is the identity ``(N, C_in, H, W)`` or a 1x1 conv
    (padding 0) with the same stride, ``floor((H + 2*0 - 1) / s) + 1``, which is the
    same number, so the two paths can be added.

    A combination ``Residual`` refuses (the channels change or the stride is above
    1 without the 1x1 conv) is not raised but returned: ``error`` holds the text
    of the ``ValueError`` the block raises and ``output_shape`` is None. Arguments
    that are not sizes at all (0, negative, not whole numbers) raise.
    """
    for name, value in (
        ("size", size),
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("stride", stride),
        ("batch_size", batch_size),
    ):
        check_int(name, value, 1)
    if not isinstance(use_1x1conv, bool):
        raise TypeError(f"use_1x1conv must be True or False, got {use_1x1conv!r}.")
    h1 = conv_output_size(size, 3, stride, 1)
    h2 = conv_output_size(h1, 3, 1, 1)
    formulas = [
        (f"conv1 3x3, padding 1, stride {stride}", conv_formula(size, 3, stride, 1)),
        ("conv2 3x3, padding 1, stride 1", conv_formula(h1, 3, 1, 1)),
    ]
    if use_1x1conv:
        hs = conv_output_size(size, 1, stride, 0)
        shortcut_shape = (batch_size, out_channels, hs, hs)
        formulas.append((f"shortcut 1x1 conv, stride {stride}", conv_formula(size, 1, stride, 0)))
    else:
        shortcut_shape = (batch_size, in_channels, size, size)
        formulas.append(("shortcut identity", f"keeps H = W = {size}"))
    main_shape = (batch_size, out_channels, h2, h2)
    try:
        check_shortcut("Residual", in_channels, out_channels, use_1x1conv, stride)
    except ValueError as err:
        error: str | None = str(err)
    else:
        error = None
    return ResidualShape(
        input_shape=(batch_size, in_channels, size, size),
        in_channels=in_channels,
        out_channels=out_channels,
        stride=stride,
        use_1x1conv=use_1x1conv,
        main_shape=main_shape,
        shortcut_shape=shortcut_shape,
        formulas=tuple(formulas),
        output_shape=main_shape if error is None else None,
        error=error,
    )


@dataclass(frozen=True)
class ResNetShapes:
    """The per-stage shapes of a whole network for one input size (from :func:`resnet_shapes`)."""

    input_shape: tuple[int, int, int, int]  #: (N, C, size, size)
    table: ShapeTable | None  #: one row per stage; None when the input does not fit
    error: str | None  #: why the input does not fit (the network's own message), or None
    notes: tuple[str, ...] = ()  #: warnings for inputs that fit but make stages useless

    @property
    def ok(self) -> bool:
        """True when the whole network runs on ``input_shape``."""
        return self.error is None

    def __str__(self) -> str:
        parts = [str(self.table) if self.table is not None else f"error: {self.error}"]
        parts += [f"note: {note}" for note in self.notes]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        if self.table is not None:
            body = self.table._repr_html_()
        else:
            body = (
                f"<p>input <code>{format_shape(self.input_shape)}</code></p>"
                "<div class='shape-error' style='border-left:4px solid "
                "var(--jp-error-color1, #d32f2f); padding:2px 8px; max-width:60em'>"
                f"<b>ValueError</b>: {html.escape(self.error or '')}</div>"
            )
        notes = "".join(
            "<div class='shape-note' style='border-left:4px solid "
            "var(--jp-warn-color1, #f57c00); padding:2px 8px; margin-top:4px; max-width:60em'>"
            f"{html.escape(note)}</div>"
            for note in self.notes
        )
        style = "<style>.resnet-shapes td, .resnet-shapes th {padding: 1px 0.8em 1px 0}</style>"
        return f"<div class='resnet-shapes' style='line-height:1.5'>{style}{body}{notes}</div>"


def _downsamples(module: nn.Module) -> bool:
    """Whether any convolution or pooling layer inside ``module`` has a stride above 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            stride = m.stride if isinstance(m.stride, tuple) else (m.stride,)
            if any(s > 1 for s in stride):
                return True
    return False


def resnet_shapes(
    size: int,
    model: nn.Module | None = None,
    *,
    in_channels: int | None = None,
    batch_size: int = 1,
) -> ResNetShapes:
    """The per-stage output shapes of ``model`` (default: ``resnet18()``) on a
    ``(batch_size, in_channels, size, size)`` input, on the meta device (milliseconds).

    Build the model once and pass it in when calling this repeatedly (a slider):
    building a ResNet-18 takes far longer than tracing it.

    ``in_channels`` defaults to ``model.in_channels`` (1 for the lecture's
    Fashion-MNIST network). An input the network cannot take is returned, not
    raised: ``error`` holds the network's message and ``table`` is None. An input
    it takes but shrinks to 1x1 before a downsampling stage gets a ``note`` per
    stage that cannot halve anything any more. Arguments that are not sizes at
    all (0, negative, not whole numbers) raise.
    """
    check_int("size", size, 1)
    check_int("batch_size", batch_size, 1)
    if model is None:
        model = resnet18(in_channels=1 if in_channels is None else in_channels)
    if in_channels is None:
        in_channels = getattr(model, "in_channels", 1)
    check_int("in_channels", in_channels, 1)
    shape = (batch_size, in_channels, size, size)
    try:
        table = trace_shapes(model, shape)
    except ValueError as err:
        return ResNetShapes(input_shape=shape, table=None, error=str(err))
    notes = []
    spatial: tuple[int, ...] = (size, size)
    for row, (_, module) in zip(table, modules_at_depth(model, 1), strict=True):
        out = row.output_shape
        if out is None or len(out) != 4:
            continue
        if spatial == (1, 1) and _downsamples(module):
            notes.append(
                f"{row.name} gets a 1x1 feature map, so its stride-2 layers cannot shrink it "
                "any more (floor((1 + 2*1 - 3) / 2) + 1 = 1): from here on each channel is "
                "a single pixel. Fix: use a larger input, such as 96 or 224."
            )
        spatial = out[2:]
    return ResNetShapes(input_shape=shape, table=table, error=None, notes=tuple(notes))
