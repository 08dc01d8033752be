"""Shapes: the convolution size formula and per-layer shape traces.

Everything here is pure and instant: traces run on PyTorch's ``meta`` device,
which computes shapes without touching any numbers, so a ResNet-152 at
224x224 takes milliseconds. The widgets in :mod:`resnet_lessons.widgets` are
thin wiring over these functions.
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
from .blocks import check_shortcut

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


def _modules_at_depth(model: nn.Module, depth: int) -> list[tuple[str, nn.Module]]:
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
    watched = _modules_at_depth(model, depth)
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


# --- What the stride and channel explorers show (notebook 02, resnet_lessons.widgets) ---------


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
        from .network import resnet18

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
    for row, (_, module) in zip(table, _modules_at_depth(model, 1), strict=True):
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
