"""The stride picture: where a strided 3x3 convolution lands, drawn as SVG (no matplotlib).

For an ``H x H`` input it draws, side by side:

1. the padded input grid (padding cells grey), every position where the ``k x k`` kernel
   lands for the stride (the first one filled, the others outlined, a dot at each centre);
2. the output grid those positions produce, ``floor((H + 2p - k) / s) + 1`` on a side;
3. the 1x1 shortcut's sampled pixels (every ``s``-th pixel of the unpadded input) and the
   grid they produce: with padding 1 they are exactly the centres of the 3x3 windows,
   which is why the two paths of a residual block agree on the size.

:func:`stride_picture` is pure (numbers in, SVG text out) and fast enough to redraw on
every slider move (:mod:`resnet_lessons.widgets`); the SVG carries ``data-windows`` and
``data-output`` so tests can read what it shows.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from ._checks import check_int
from .shapes import conv_output_size

#: Largest input side drawn cell by cell; above it the windows would be too small to see.
MAX_DRAWN = 16

_PAD = "#cfcfcf"  # padding cells
_CELL = "#ffffff"
_LINE = "#9e9e9e"
_HIGHLIGHT = "#f57c00"  # the kernel position being shown, and the output cell it makes
_WINDOW = "#1565c0"  # the other kernel positions
_SAMPLE = "#2e7d32"  # the 1x1 shortcut's pixels


@dataclass(frozen=True)
class StridePicture:
    """What :func:`stride_picture` drew: the numbers and the SVG text."""

    size: int  #: input height and width (square)
    kernel_size: int
    stride: int
    padding: int
    output_size: int  #: floor((size + 2 * padding - kernel_size) / stride) + 1
    windows: int  #: kernel positions, output_size ** 2
    shortcut_samples: int  #: pixels the 1x1 shortcut (padding 0, same stride) reads
    svg: str

    def _repr_html_(self) -> str:
        return self.svg

    def __str__(self) -> str:
        return (
            f"{self.size}x{self.size} input, padding {self.padding}: a {self.kernel_size}x"
            f"{self.kernel_size} kernel with stride {self.stride} lands at {self.windows} "
            f"positions -> {self.output_size}x{self.output_size} output; the 1x1 shortcut "
            f"samples {self.shortcut_samples} pixels"
        )


def stride_picture(
    size: int,
    stride: int,
    *,
    kernel_size: int = 3,
    padding: int = 1,
    use_1x1conv: bool = True,
    cell: int | None = None,
) -> StridePicture:
    """Draw where a ``kernel_size`` x ``kernel_size`` convolution with ``stride`` and
    ``padding`` lands on a ``size`` x ``size`` input, and the 1x1 shortcut beside it.

    ``(size, stride) -> StridePicture`` with ``windows == output_size ** 2`` where
    ``output_size = floor((size + 2 * padding - kernel_size) / stride) + 1``, e.g. 36, 9
    and 4 windows for ``size=6`` and strides 1, 2 and 3.

    Inputs larger than :data:`MAX_DRAWN` are summed up in words (the counts stay exact).
    ``use_1x1conv=False`` labels the third panel as the identity shortcut (it reads every
    pixel at stride 1). ``cell`` is the side of one grid cell in pixels (default: as large
    as fits, at least big enough for a projector). Raises ``ValueError`` as
    :func:`conv_output_size` does when the kernel does not fit.
    """
    check_int("size", size, 1)
    check_int("stride", stride, 1)
    out = conv_output_size(size, kernel_size, stride, padding)
    shortcut = conv_output_size(size, 1, stride, 0)
    padded = size + 2 * padding
    if cell is None:
        cell = max(12, min(30, 260 // padded))
    check_int("cell", cell, 4)
    caption = (
        f"{kernel_size}x{kernel_size} conv, stride {stride}: floor(({size} + 2*{padding} - "
        f"{kernel_size}) / {stride}) + 1 = {out}, so {out * out} windows; 1x1 shortcut, "
        f"stride {stride}: floor(({size} - 1) / {stride}) + 1 = {shortcut}"
    )
    attrs = (
        f"class='stride-picture' data-windows='{out * out}' data-output='{out}' "
        f"data-shortcut='{shortcut * shortcut}' role='img' "
        f"aria-label='{html.escape(caption, quote=True)}'"
    )
    if size > MAX_DRAWN:
        svg = _summary_svg(attrs, caption)
    else:
        svg = _drawn_svg(attrs, caption, size, kernel_size, stride, padding, use_1x1conv, cell)
    return StridePicture(size, kernel_size, stride, padding, out, out * out, shortcut**2, svg)


def _summary_svg(attrs: str, caption: str) -> str:
    """The picture for an input above :data:`MAX_DRAWN`: the caption and why there is no grid."""
    return (
        f"<svg {attrs} xmlns='http://www.w3.org/2000/svg' width='{9 * len(caption)}' "
        "height='44' "
        "font-family='sans-serif' font-size='15'>"
        f"<text x='0' y='18'>{html.escape(caption)}</text>"
        f"<text x='0' y='38' fill='#616161'>(the picture is drawn for inputs up to "
        f"{MAX_DRAWN}x{MAX_DRAWN}; move the input size down to see the windows)</text></svg>"
    )


def _drawn_svg(
    attrs: str,
    caption: str,
    size: int,
    kernel_size: int,
    stride: int,
    padding: int,
    use_1x1conv: bool,
    cell: int,
) -> str:
    """The three panels side by side: the padded input with every kernel position, the conv's
    output, the 1x1 shortcut's samples and their output; the caption below."""
    out = conv_output_size(size, kernel_size, stride, padding)
    shortcut = conv_output_size(size, 1, stride, 0)
    padded = size + 2 * padding
    gap, top = 2 * cell, 28  # space between panels; room for the titles
    x0 = 0
    # Panel 1: the padded input and every kernel position.
    parts = [_title(x0, f"input {size}x{size} + padding {padding}")]
    parts += _padded_input(x0, top, size, padding, cell)
    parts += _windows(x0, top, out, kernel_size, stride, cell)
    x0 += padded * cell + gap
    # Panel 2: the output of the 3x3 conv.
    parts.append(_title(x0, f"output {out}x{out}"))
    parts += _grid(x0, top, out, cell, highlight_first=True, cls="out")
    x0 += max(out * cell, 4 * cell) + gap
    # Panel 3: the 1x1 shortcut's samples on the unpadded input, and its output.
    parts.append(
        _title(x0, f"1x1 shortcut, stride {stride}" if use_1x1conv else "identity shortcut")
    )
    sample_top = top + padding * cell
    parts += _samples(x0, sample_top, size, stride, cell)
    x1 = x0 + size * cell + gap
    parts.append(_title(x1, f"= {shortcut}x{shortcut}"))
    parts += _grid(x1, sample_top, shortcut, cell, highlight_first=True, cls="shortcut-out")
    width = x1 + max(shortcut * cell, 3 * cell) + 4
    height = top + padded * cell + 34
    parts.append(
        f"<text x='0' y='{height - 10}' font-size='15' fill='#212121'>{html.escape(caption)}</text>"
    )
    width = max(width, 9 * len(caption))
    return (
        f"<svg {attrs} xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' font-family='sans-serif'>{''.join(parts)}</svg>"
    )


def _padded_input(x0: int, top: int, size: int, padding: int, cell: int) -> list[str]:
    """The input's cells, padding cells grey, as ``padded x padded`` rectangles."""
    padded = size + 2 * padding
    parts = []
    for r in range(padded):
        for c in range(padded):
            is_pad = not (padding <= r < padding + size and padding <= c < padding + size)
            parts.append(
                f"<rect class='{'pad' if is_pad else 'pixel'}' x='{x0 + c * cell}' "
                f"y='{top + r * cell}' width='{cell}' height='{cell}' "
                f"fill='{_PAD if is_pad else _CELL}' stroke='{_LINE}'/>"
            )
    return parts


def _windows(x0: int, top: int, out: int, kernel_size: int, stride: int, cell: int) -> list[str]:
    """Every position of the kernel (the first filled, the others outlined), a dot at each
    centre."""
    parts = []
    inset = max(2, cell // 6)
    for i in range(out):
        for j in range(out):
            first = i == 0 and j == 0
            x, y = x0 + j * stride * cell, top + i * stride * cell
            side = kernel_size * cell
            parts.append(
                f"<rect class='window{' highlighted' if first else ''}' "
                f"x='{x + inset}' y='{y + inset}' width='{side - 2 * inset}' "
                f"height='{side - 2 * inset}' rx='3' "
                + (
                    f"fill='{_HIGHLIGHT}' fill-opacity='0.35' stroke='{_HIGHLIGHT}' "
                    "stroke-width='4'/>"
                    if first
                    else f"fill='none' stroke='{_WINDOW}' stroke-width='2' stroke-opacity='0.7'/>"
                )
            )
            centre = (kernel_size // 2) * cell + cell / 2
            parts.append(
                f"<circle class='centre' cx='{x + centre}' cy='{y + centre}' "
                f"r='{max(2, cell // 6)}' fill='{_HIGHLIGHT if first else _WINDOW}'/>"
            )
    return parts


def _samples(x0: int, top: int, size: int, stride: int, cell: int) -> list[str]:
    """The unpadded input with every ``stride``-th pixel (the 1x1 shortcut's reads) filled."""
    parts = []
    for r in range(size):
        for c in range(size):
            sampled = r % stride == 0 and c % stride == 0
            first = r == 0 and c == 0
            colour = _HIGHLIGHT if first else _SAMPLE
            parts.append(
                f"<rect class='{'sampled' if sampled else 'pixel'}' x='{x0 + c * cell}' "
                f"y='{top + r * cell}' width='{cell}' height='{cell}' "
                f"fill='{colour if sampled else _CELL}' fill-opacity='{0.8 if sampled else 1}' "
                f"stroke='{_LINE}'/>"
            )
    return parts


def _title(x: float, text: str) -> str:
    return (
        f"<text x='{x}' y='18' font-size='16' font-weight='bold' fill='#212121'>"
        f"{html.escape(text)}</text>"
    )


def _grid(x0: float, y0: float, n: int, cell: int, *, highlight_first: bool, cls: str) -> list[str]:
    return [
        f"<rect class='{cls}' x='{x0 + c * cell}' y='{y0 + r * cell}' width='{cell}' "
        f"height='{cell}' stroke='{_LINE}' fill='"
        + (_HIGHLIGHT if highlight_first and r == 0 and c == 0 else "#e3f2fd")
        + "'/>"
        for r in range(n)
        for c in range(n)
    ]
