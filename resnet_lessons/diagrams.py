"""Figures for ``img/``: the residual block and the ResNet-18 stage diagram, drawn from the code.

Every shape written on a figure comes from :func:`resnet_lessons.trace_shapes`
run on the package's own modules, so the pictures cannot drift from the
network. ``python -m resnet_lessons figures --out img`` calls
:func:`save_figures`.

Drawing uses :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no
global state): the Agg renderer writes the PNG files, and the files carry no
timestamp or version, so the same code gives the same bytes.
"""

from __future__ import annotations

import math
import os
import pathlib

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from torch import nn

from .blocks import Residual
from .network import ResNet, resnet18
from .shapes import trace_shapes

#: Box colours by kind of layer (the same in every figure).
COLOURS = {
    "conv": "#cfe2f3",
    "bn": "#fff2cc",
    "relu": "#d9ead3",
    "shortcut": "#fce5cd",
    "pool": "#ead1dc",
    "fc": "#d9d2e9",
    "io": "#f3f3f3",
}
EDGE = "#404040"
SHAPE_COLOUR = "#555555"
FONT = 13  # points; the figures are ~11 inches wide, so text stays readable when scaled down
DPI = 120

#: The lecture's block experiment: a batch of 4 images, 3 channels, 6x6.
BLOCK_INPUT = (4, 3, 6, 6)
#: The lecture's ResNet-18 trace: one grayscale 224x224 image.
NETWORK_INPUT = (1, 1, 224, 224)


def _fmt(shape: tuple[int, ...] | None) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")" if shape else "?"


def _box(
    ax: Axes, x: float, y: float, w: float, h: float, text: str, kind: str, size: float = FONT
) -> None:
    """A rounded box centred on (x, y)."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.08",
            facecolor=COLOURS[kind],
            edgecolor=EDGE,
            linewidth=1.2,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def _arrow(ax: Axes, points: list[tuple[float, float]]) -> None:
    """Straight segments through ``points`` with an arrow head at the end."""
    for start, end in zip(points[:-2], points[1:-1], strict=True):
        ax.plot([start[0], end[0]], [start[1], end[1]], color=EDGE, linewidth=1.3)
    ax.add_patch(
        FancyArrowPatch(
            points[-2],
            points[-1],
            arrowstyle="-|>",
            mutation_scale=13,
            color=EDGE,
            linewidth=1.3,
            shrinkA=0,
            shrinkB=0,
        )
    )


def _draw_block(ax: Axes, block: Residual, input_shape: tuple[int, ...], title: str) -> None:
    """One residual block, drawn bottom (input) to top (output), shapes from a trace."""
    trace = {row.name: row.output_shape for row in trace_shapes(block, input_shape)}
    out_shape = trace_shapes(nn.Sequential(block), input_shape)[0].output_shape
    k1, s1 = block.conv1.kernel_size[0], block.conv1.stride[0]
    k2 = block.conv2.kernel_size[0]
    stride_note = f", stride {s1}" if s1 != 1 else ""
    main = [  # (label, kind, shape after it)
        (f"{k1}x{k1} conv{stride_note}", "conv", trace["conv1"]),
        ("batch norm", "bn", trace["bn1"]),
        ("ReLU", "relu", trace["bn1"]),
        (f"{k2}x{k2} conv", "conv", trace["conv2"]),
        ("batch norm", "bn", trace["bn2"]),
    ]
    x, w, h, step = 0.0, 2.7, 0.56, 0.9
    y_in = 0.0
    ax.text(x, y_in, f"input x\n{_fmt(input_shape)}", ha="center", va="center", fontsize=FONT)
    y = y_in + step
    _arrow(ax, [(x, y_in + 0.4), (x, y - h / 2)])
    for i, (label, kind, shape) in enumerate(main):
        _box(ax, x, y, w, h, label, kind)
        ax.text(
            x - w / 2 - 0.15,
            y,
            _fmt(shape),
            ha="right",
            va="center",
            fontsize=FONT - 1,
            color=SHAPE_COLOUR,
        )
        if i < len(main) - 1:
            _arrow(ax, [(x, y + h / 2), (x, y + step - h / 2)])
        y += step
    y_plus, r = y, 0.2
    _arrow(ax, [(x, y - step + h / 2), (x, y_plus - r)])
    ax.add_patch(Circle((x, y_plus), r, facecolor="white", edgecolor=EDGE, linewidth=1.3))
    ax.text(x, y_plus - 0.01, "+", ha="center", va="center", fontsize=FONT + 5)
    y_relu = y_plus + step
    _arrow(ax, [(x, y_plus + r), (x, y_relu - h / 2)])
    _box(ax, x, y_relu, w, h, "ReLU", "relu")
    y_out = y_relu + step
    _arrow(ax, [(x, y_relu + h / 2), (x, y_out - 0.4)])
    ax.text(x, y_out, f"output\n{_fmt(out_shape)}", ha="center", va="center", fontsize=FONT)

    # The shortcut: from the input, up the right-hand side, into the "+".
    xs = x + w / 2 + 1.05
    start = (x + 0.75, y_in)
    if block.use_1x1conv:
        conv = block.shortcut[0]
        y_sc = (y_in + y_plus) / 2
        _arrow(ax, [start, (xs, y_in), (xs, y_sc - h / 2)])
        label = f"1x1 conv\nstride {conv.stride[0]}"
        _box(ax, xs, y_sc, 1.6, h + 0.36, label, "shortcut")
        ax.text(
            xs + 0.1,
            y_sc + h / 2 + 0.45,
            _fmt(trace["shortcut"]),
            ha="left",
            va="center",
            fontsize=FONT - 1,
            color=SHAPE_COLOUR,
        )
        _arrow(ax, [(xs, y_sc + h / 2 + 0.15), (xs, y_plus), (x + r, y_plus)])
    else:
        _arrow(ax, [start, (xs, y_in), (xs, y_plus), (x + r, y_plus)])
        ax.text(
            xs + 0.12,
            (y_in + y_plus) / 2,
            "identity",
            ha="left",
            va="center",
            fontsize=FONT,
            rotation=90,
        )
    ax.set_title(title, fontsize=FONT + 1, pad=8)
    ax.set_xlim(-3.55, 4.0)
    ax.set_ylim(y_in - 0.4, y_out + 0.4)
    ax.set_aspect("equal")
    ax.axis("off")


def residual_block_figure() -> Figure:
    """The lecture's two blocks side by side: identity shortcut, and 1x1 conv with stride 2.

    Left: ``Residual(3, 3)`` keeps ``(4, 3, 6, 6)``. Right:
    ``Residual(3, 6, use_1x1conv=True, stride=2)`` gives ``(4, 6, 3, 3)``; the
    1x1 convolution reshapes the shortcut so the two branches can be added.
    """
    fig = Figure(figsize=(11, 6.9), dpi=DPI)
    left, right = fig.subplots(1, 2)
    c = BLOCK_INPUT[1]
    _draw_block(left, Residual(c, c), BLOCK_INPUT, f"Residual({c}, {c})\nidentity shortcut")
    _draw_block(
        right,
        Residual(c, 2 * c, use_1x1conv=True, stride=2),
        BLOCK_INPUT,
        f"Residual({c}, {2 * c}, use_1x1conv=True, stride=2)\n1x1 conv on the shortcut",
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.0, wspace=0.05)
    return fig


def _stage_details(model: ResNet) -> dict[str, tuple[str, str]]:
    """For each top-level part of ``model``: (title, what it does), read from its modules."""
    conv, pool = model.stem[0], model.stem[3]
    details = {
        "stem": (
            "stem",
            f"{conv.kernel_size[0]}x{conv.kernel_size[0]} conv, s{conv.stride[0]}\n"
            f"BN, ReLU\n{pool.kernel_size}x{pool.kernel_size} pool, s{pool.stride}",
        ),
        "avgpool": ("avg pool", "global\naverage"),
        "flatten": ("flatten", ""),
        "fc": ("fc", f"{model.fc.in_features} -> {model.fc.out_features}"),
    }
    for i in range(1, 5):
        stage = getattr(model, f"stage{i}")
        first = stage[0]
        strided = f"first block:\nstride {first.stride}\n+ 1x1 conv"  # only the first block
        how = strided if first.stride != 1 else "size kept"
        details[f"stage{i}"] = (f"stage{i}", f"{len(stage)} x {type(first).__name__}\n{how}")
    return details


def resnet18_stages_figure() -> Figure:
    """ResNet-18 on a ``(1, 1, 224, 224)`` image: the stem, four stages, pooling and fc.

    Each slab's height grows with the feature map's height and width, and its
    depth with the channels (both on a log scale), so the picture shows the
    rule: channels double while the size halves. Shapes come from ``trace_shapes``.
    """
    model = resnet18(in_channels=NETWORK_INPUT[1])
    table = trace_shapes(model, NETWORK_INPUT)
    details = _stage_details(model)
    rows = [("input", "", NETWORK_INPUT)]
    rows += [(*details[r.name], r.output_shape) for r in table if r.name != "flatten"]

    fig = Figure(figsize=(11, 4.6), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    gap, w, top = 1.5, 0.55, 0.0  # slabs hang from y = top so the arrows line up
    tallest = 0.0
    for i, (title, _, shape) in enumerate(rows):
        x = i * gap
        size = shape[2] if len(shape) == 4 else 1
        h = 0.3 + 0.25 * math.log2(size)  # 224 -> 2.25, 56 -> 1.75, 7 -> 1.0, 1 -> 0.3
        d = 0.05 * math.log2(max(shape[1], 2))  # 1 -> 0.05, 64 -> 0.3, 512 -> 0.45
        tallest = max(tallest, h)
        kind = {"input": "io", "fc": "fc"}.get(title, "pool" if "pool" in title else "conv")
        face = {"facecolor": COLOURS[kind], "edgecolor": EDGE, "linewidth": 1.1}
        y0 = top - h
        ax.fill(  # top face
            [x - w / 2, x - w / 2 + d, x + w / 2 + d, x + w / 2],
            [top, top + d, top + d, top],
            **face,
        )
        ax.fill(  # side face
            [x + w / 2, x + w / 2 + d, x + w / 2 + d, x + w / 2], [top, top + d, y0 + d, y0], **face
        )
        ax.fill([x - w / 2, x + w / 2, x + w / 2, x - w / 2], [top, top, y0, y0], **face)
        ax.text(
            x + d / 2, top + 0.62, title, ha="center", va="bottom", fontsize=FONT, weight="bold"
        )
        dims = " x ".join(str(s) for s in shape[1:])
        ax.text(x + d / 2, y0 - 0.1, dims, ha="center", va="top", fontsize=FONT - 1)
        if i < len(rows) - 1:
            y = top - 0.2
            _arrow(ax, [(x + w / 2 + d + 0.06, y), (x + gap - w / 2 - 0.06, y)])
    row = top - tallest - 0.55  # what each part does, one row for all
    for i, (_, what, _) in enumerate(rows):
        ax.text(
            i * gap + 0.1,
            row,
            what,
            ha="center",
            va="top",
            fontsize=FONT - 2,
            color=SHAPE_COLOUR,
            linespacing=1.3,
        )
    ax.text(
        -w / 2,
        row - 1.25,
        "slab height: height and width of the feature map; slab depth: channels (both log scale)",
        ha="left",
        va="top",
        fontsize=FONT - 2,
        color=SHAPE_COLOUR,
        style="italic",
    )
    ax.set_xlim(-0.75, (len(rows) - 1) * gap + 0.95)
    ax.set_ylim(row - 1.6, top + 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


#: File name -> function drawing it.
FIGURES = {
    "residual_block.png": residual_block_figure,
    "resnet18_stages.png": resnet18_stages_figure,
}


def save_figures(out_dir: str | os.PathLike = "img") -> list[pathlib.Path]:
    """Draw every figure in :data:`FIGURES` into ``out_dir`` as PNG; return the paths.

    The directory is created if needed; existing files are overwritten. The
    PNGs carry no software version or date, so the same code gives the same
    files.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in FIGURES.items():
        path = out / name
        draw().savefig(path, format="png", metadata={"Software": None})
        paths.append(path)
    return paths
