"""Shapes: the convolution size formula and per-layer shape traces.

Everything here is pure and instant: traces run on PyTorch's ``meta`` device,
which computes shapes without touching any numbers, so a ResNet-152 at
224x224 takes milliseconds. What the explorers of notebook 02 show (the formula
with numbers, a block's two paths, a network's stages) is built on these in
:mod:`resnet_lessons.readouts`.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._checks import check_int

#: Modules that only group other modules; traces look inside them.
CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def conv_output_size(
    size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output height (or width) of a convolution or pooling layer.

    ``floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``

    >>> conv_output_size(6, 3, stride=2, padding=1)
    3
    >>> conv_output_size(224, 7, stride=2, padding=3)
    112

    Raises ``ValueError`` when an argument is out of range or the kernel does
    not fit in the padded input (the result would be below 1).
    """
    check_int("size", size, 1)
    check_int("kernel_size", kernel_size, 1)
    check_int("stride", stride, 1)
    check_int("padding", padding, 0)
    check_int("dilation", dilation, 1)
    extent = dilation * (kernel_size - 1) + 1  # how many input pixels one output sees
    out = (size + 2 * padding - extent) // stride + 1
    if out < 1:
        need = extent - 2 * padding
        raise ValueError(
            f"a kernel of size {kernel_size}"
            + (f" (dilation {dilation}, spanning {extent} pixels)" if dilation != 1 else "")
            + f" does not fit in an input of size {size} with padding {padding}: "
            f"floor(({size} + 2*{padding} - {extent}) / {stride}) + 1 = {out}. "
            f"Fix: use an input of at least {need} pixels, more padding, or a smaller kernel."
        )
    return out


@dataclass(frozen=True)
class LayerShape:
    """One row of a shape trace."""

    name: str  #: dotted module name, e.g. ``"stage2.0"``
    layer: str  #: the module's type name, e.g. ``"Residual"``
    output_shape: tuple[int, ...] | None  #: None for a module the forward pass never called
    params: int  #: parameters of this module (and its children)


class ShapeTable(Sequence[LayerShape]):
    """The rows of :func:`trace_shapes`; prints as a text table, renders as HTML in Jupyter."""

    def __init__(
        self, rows: Sequence[LayerShape], input_shape: tuple[int, ...], total_params: int
    ) -> None:
        self.rows = list(rows)
        self.input_shape = input_shape
        self.total_params = total_params

    def __getitem__(self, index):  # type: ignore[override]
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[LayerShape]:
        return iter(self.rows)

    def _cells(self) -> list[tuple[str, str, str, str]]:
        cells = [("input", "", format_shape(self.input_shape), "")]
        cells += [
            (r.name, r.layer, format_shape(r.output_shape), f"{r.params:,}") for r in self.rows
        ]
        cells.append(("total", "", "", f"{self.total_params:,}"))
        return cells

    def __str__(self) -> str:
        header = ("name", "layer", "output shape", "params")
        cells = self._cells()
        widths = [max(len(row[i]) for row in [header, *cells]) for i in range(4)]
        lines = []
        for row in [header, *cells]:
            left = [row[i].ljust(widths[i]) for i in range(3)]
            lines.append("  ".join([*left, row[3].rjust(widths[3])]).rstrip())
            if row is header:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(
            f"<th style='text-align:{a}'>{h}</th>"
            for h, a in zip(
                ("name", "layer", "output shape", "params"),
                ("left", "left", "left", "right"),
                strict=True,
            )
        )
        body = []
        for name, layer, shape, params in self._cells():
            bold = " style='font-weight:bold'" if name in ("input", "total") else ""
            shape = f"<code>{html.escape(shape)}</code>" if shape else ""
            body.append(
                f"<tr{bold}><td style='text-align:left'>{html.escape(name)}</td>"
                f"<td style='text-align:left'>{html.escape(layer)}</td>"
                f"<td style='text-align:left'>{shape}</td>"
                f"<td style='text-align:right'>{params}</td></tr>"
            )
        return (
            f"<table class='shape-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )


def format_shape(shape: tuple[int, ...] | None) -> str:
    """``(4, 3, 6, 6) -> '(4, 3, 6, 6)'``, as the readouts print a shape; ``None`` is a layer
    that was not called."""
    if shape is None:
        return "(not called)"
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(
            f"input_shape must be a tuple of sizes such as (1, 1, 224, 224), got {input_shape!r}."
        ) from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(
            f"input_shape must be whole numbers >= 1 such as (1, 1, 224, 224), got {shape}."
        )
    return shape


def modules_at_depth(model: nn.Module, depth: int) -> list[tuple[str, nn.Module]]:
    """Modules ``depth`` levels below ``model`` (or leaves above that), in registration order."""
    found: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module, level: int) -> None:
        children = list(module.named_children())
        if level == depth or not children:
            found.append((prefix, module))
            return
        for name, child in children:
            walk(f"{prefix}.{name}", child, level + 1)

    for name, child in model.named_children():
        walk(name, child, 1)
    return found or [(type(model).__name__, model)]


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules found by looking inside containers only: blocks, convs, pools, linears."""
    found: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        if isinstance(module, CONTAINERS):
            for name, child in module.named_children():
                walk(f"{prefix}.{name}" if prefix else name, child)
        else:
            found.append((prefix, module))

    walk("", model)
    return found


def _run_on_meta(
    model: nn.Module, input_shape: tuple[int, ...], watched: list[tuple[str, nn.Module]]
) -> dict[int, tuple[int, ...]]:
    """Run ``model`` on a meta tensor; return the output shape of each watched module (by id)."""
    shapes: dict[int, tuple[int, ...]] = {}
    names = {id(m): n for n, m in model.named_modules()}
    running: list[str] = []

    def record(module: nn.Module, args: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            shapes[id(module)] = tuple(output.shape)

    def enter(module: nn.Module, args: object) -> None:
        running.append(names.get(id(module), type(module).__name__))

    handles = [m.register_forward_hook(record) for _, m in watched]
    handles += [m.register_forward_pre_hook(enter) for m in model.modules()]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # shapes do not depend on the mode; eval avoids BN's batch-size checks
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:  # BN keeps the shape; on meta its decomposition is most of the time
        m.forward = _shape_only_batch_norm(m)  # type: ignore[method-assign]
    try:
        state = {
            name: torch.empty_like(t, device="meta")
            for name, t in itertools.chain(
                model.named_parameters(remove_duplicate=False),
                model.named_buffers(remove_duplicate=False),
            )
        }
        x = torch.empty(input_shape, device="meta")
        try:
            torch.func.functional_call(model, state, (x,))
        except RuntimeError as err:
            where = running[-1] if running else type(model).__name__
            raise ValueError(
                f"input shape {input_shape} does not fit {where!r}: {str(err).splitlines()[0]} "
                "Fix: use a larger image (or the sizes the lecture uses, such as 96 or 224)."
            ) from None
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
        for m in norms:
            del m.forward
    return shapes


def _shape_only_batch_norm(bn: nn.modules.batchnorm._BatchNorm):
    """A stand-in for ``bn.forward`` that checks the channels and returns its input."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != bn.num_features:
            raise RuntimeError(
                f"{type(bn).__name__}({bn.num_features}) got an input of shape "
                f"{tuple(x.shape)}: expected {bn.num_features} channels."
            )
        return x

    return forward


def trace_shapes(model: nn.Module, input_shape: Sequence[int], depth: int = 1) -> ShapeTable:
    """Output shape and parameter count of every layer, on the meta device (instant, no data).

    Args:
        model: any module, e.g. ``resnet18()``. It is not changed.
        input_shape: the input batch's shape, e.g. ``(1, 1, 224, 224)``.
        depth: 1 lists the top-level children (stem, stage1, ...); 2 goes one
            level deeper (the blocks inside each stage), and so on.

    Returns:
        A :class:`ShapeTable` of :class:`LayerShape` rows (``name``, ``layer``,
        ``output_shape``, ``params``) in registration order.

    Raises ``ValueError`` naming the layer when the input does not fit (for
    example an image too small for a kernel, or the wrong number of channels).
    """
    shape = _check_input_shape(input_shape)
    check_int("depth", depth, 1)
    watched = modules_at_depth(model, depth)
    shapes = _run_on_meta(model, shape, watched)
    rows = [
        LayerShape(
            name=name,
            layer=type(module).__name__,
            output_shape=shapes.get(id(module)),
            params=sum(p.numel() for p in module.parameters()),
        )
        for name, module in watched
    ]
    total = sum(p.numel() for p in model.parameters())
    return ShapeTable(rows, shape, total)


def check_channel_progression(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Findings wherever the number of channels shrinks along the network.

    The lecture's rule of thumb: channels grow (64, 128, 256, 512) while the
    height and width shrink; "if channels go from 20 to 10, that's probably a
    bug in your code". The check looks at the feature maps ``(N, C, H, W)``
    between blocks and layers (it looks inside ``nn.Sequential`` containers but
    not inside a block, whose bottleneck squeezes channels on purpose).

    Returns a list of readable strings, empty when the channels never shrink.
    """
    shape = _check_input_shape(input_shape)
    units = _units(model)
    shapes = _run_on_meta(model, shape, units)
    findings = []
    previous: tuple[str, int] | None = ("the input", shape[1]) if len(shape) == 4 else None
    for name, module in units:
        out = shapes.get(id(module))
        if out is None or len(out) != 4:
            continue
        channels = out[1]
        if previous is not None and channels < previous[1]:
            findings.append(
                f"{name} ({type(module).__name__}): channels shrink from {previous[1]} "
                f"(after {previous[0]}) to {channels}. Along a ResNet the channels should grow "
                f"or stay; check the out_channels given to {name}."
            )
        previous = (name, channels)
    return findings


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass on a batch of ``input_shape``, on meta.

    Counts the convolutions and matrix multiplications (linear layers), with
    one multiply-add as 2 FLOPs: a convolution with ``C_in`` input channels,
    a ``k x k`` kernel and an output of shape ``(N, C_out, H', W')`` costs
    ``2 * N * C_out * H' * W' * C_in * k * k``; a linear layer ``in -> out``
    costs ``2 * N * in * out``. Biases, batch norm, ReLU, pooling and the
    residual additions are not counted (together well under 1% for a ResNet).
    Papers often quote multiply-adds instead (the ResNet paper's "1.8 x 10^9
    FLOPs" for ResNet-18): divide by 2 to compare.

    Like :func:`trace_shapes` it runs on the meta device: instant, no data,
    the model is not changed. Raises ``ValueError`` when the input does not fit.
    """
    shape = _check_input_shape(input_shape)
    with FlopCounterMode(display=False) as counter:
        _run_on_meta(model, shape, [])
    return int(counter.get_total_flops())
