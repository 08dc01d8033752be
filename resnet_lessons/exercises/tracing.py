"""The tracing core of the block exercises: build the student's block, run it with hooks
that record which layers ran, and compare its output with the expected wiring computed from
the block's own layers (:class:`BlockSpec` says what one exercise expects).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .feedback import Feedback, describe_error, failure, format_call, not_done, success

# --- 2. blocks: run the student's module and look at what ran -----------------------------


@dataclass
class Trace:
    """What ran in one forward pass: conv and batch-norm layers in order of first use."""

    order: list[tuple[str, nn.Module]] = field(default_factory=list)
    output: object = None
    error: BaseException | None = None

    @property
    def convs(self) -> list[tuple[str, nn.Conv2d]]:
        return [(n, m) for n, m in self.order if isinstance(m, nn.Conv2d)]

    @property
    def norms(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.order if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def run_traced(model: nn.Module, x: torch.Tensor) -> Trace:
    trace = Trace()
    seen: set[int] = set()

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object) -> None:
            if id(module) not in seen:
                seen.add(id(module))
                trace.order.append((name, module))

        return hook

    handles = [
        m.register_forward_pre_hook(record(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm))
    ]
    try:
        with torch.no_grad():
            trace.output = model(x)
    except Exception as err:  # noqa: BLE001 - reported by the caller
        trace.error = err
    finally:
        for h in handles:
            h.remove()
    return trace


def randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Weights that make every mistake visible: BN scales and shifts away from 1 and 0,
    running statistics away from 0 and 1, biases that make ReLU cut something."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=generator))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.weight is not None:
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=generator))
                    m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=generator))
                if m.running_mean is not None:
                    m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=generator))
                    m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))


def build_block(
    exercise: str, cls: object, args: tuple[object, ...], what: str
) -> tuple[nn.Module | None, Feedback | None]:
    """``cls(*args)``, or the feedback that says why it could not be built."""
    label = getattr(cls, "__name__", "cls")
    call = f"{label}({format_call(*args[:2])}, use_1x1conv={args[2]}, stride={args[3]})"
    if isinstance(cls, nn.Module):
        return None, failure(
            exercise,
            "wrong_type",
            f"Pass the class itself ({type(cls).__name__}), not an instance: the checker builds "
            "blocks of several sizes.",
        )
    if not callable(cls):
        return None, failure(exercise, "wrong_type", f"Pass your class; got {cls!r}.")
    try:
        block = cls(*args)
    except NotImplementedError:
        return None, not_done(exercise, what)
    except Exception as err:  # noqa: BLE001 - the student's code
        return None, failure(exercise, "crashed", f"Building {call} raised {describe_error(err)}")
    if not isinstance(block, nn.Module):
        return None, failure(
            exercise,
            "wrong_type",
            f"{call} gave a {type(block).__name__}, not an nn.Module: subclass nn.Module and "
            "call super().__init__() first.",
        )
    return block, None


@dataclass(frozen=True)
class Config:
    in_channels: int
    out_channels: int  # for the bottleneck: mid_channels
    use_1x1conv: bool
    stride: int
    size: int

    @property
    def args(self) -> tuple[int, int, bool, int]:
        return (self.in_channels, self.out_channels, self.use_1x1conv, self.stride)

    def call(self, cls_name: str) -> str:
        return (
            f"{cls_name}({self.in_channels}, {self.out_channels}, "
            f"use_1x1conv={self.use_1x1conv}, stride={self.stride})"
        )

    def input_shape(self) -> tuple[int, int, int, int]:
        return (4, self.in_channels, self.size, self.size)


BLOCK_CONFIGS = tuple(
    Config(c_in, c_out, use_1x1conv, stride, size)
    for c_in, c_out, use_1x1conv, stride in (
        (3, 3, False, 1),
        (3, 6, True, 1),
        (3, 6, True, 2),
        (4, 4, True, 3),
        (3, 5, True, 2),
    )
    for size in (6, 7)
)

BOTTLENECK_CONFIGS = tuple(
    Config(c_in, mid, use_1x1conv, stride, size)
    for c_in, mid, use_1x1conv, stride in (
        (8, 2, False, 1),
        (6, 4, True, 1),
        (6, 4, True, 2),
        (8, 2, True, 3),
    )
    for size in (6, 7)
)


@dataclass
class _Parts:
    """The layers of a student's block, by role: main-path convs in the order they ran,
    the shortcut's 1x1 conv (or None), batch norms in the order they ran."""

    main: list[str]
    shortcut: str | None
    norms: list[str]

    def modules(self, model: nn.Module) -> tuple[list[nn.Module], nn.Module | None, list]:
        named = dict(model.named_modules())
        return (
            [named[n] for n in self.main],
            named[self.shortcut] if self.shortcut else None,
            [named[n] for n in self.norms],
        )


@dataclass(frozen=True)
class BlockSpec:
    """What one block exercise expects: its layers and its correct and mistaken wirings."""

    exercise: str
    what: str  # for "not done yet"
    configs: tuple[Config, ...]
    kernels: tuple[int, ...]  # main-path kernel sizes in order
    norms: int
    out_channels: Callable[[Config], int]
    # wiring(x, convs, shortcut, norms, config) -> tensor; several correct ones allowed
    correct: tuple[Callable[..., torch.Tensor], ...]
    mistakes: tuple[tuple[str, Callable[..., torch.Tensor], str], ...]
    order: str  # the layer order in words, for a generic mismatch
    expansion: int = 1  # output channels / out_channels (4 for the bottleneck)


def shortcut_of(x: torch.Tensor, sc: nn.Module | None) -> torch.Tensor:
    return x if sc is None else sc(x)


def _structure(spec: BlockSpec, cfg: Config, trace: Trace, cls_name: str) -> Feedback | str:
    """Check which layers ran; return feedback for a structural mistake, or the parts."""
    name = spec.exercise
    call = cfg.call(cls_name)
    out_ch = spec.out_channels(cfg)
    main, shortcut = _split_convs(spec, cfg, trace)
    kernels = tuple(m.kernel_size[0] for _, m in main)
    if spec.expansion > 1 and main and main[-1][1].out_channels == cfg.out_channels:
        return failure(
            name,
            "no_expansion",
            f"In {call} the last 1x1 conv gives {cfg.out_channels} channels; it should expand "
            f"them 4x, to 4 * mid_channels = {out_ch} (the block's expansion).",
        )
    if kernels != spec.kernels:
        want = ", ".join(f"{k}x{k}" for k in spec.kernels)
        got = ", ".join(f"{k}x{k}" for k in kernels) or "none"
        return failure(
            name,
            "wrong_layers",
            f"{call}: the main path should run the convolutions {want} in this order; yours "
            f"ran {got}. Use nn.Conv2d layers for them.",
        )
    for _, m in main:
        if m.kernel_size == (3, 3) and m.padding == (0, 0):
            h = cfg.size
            return failure(
                name,
                "no_padding",
                f"A 3x3 conv has no padding, so it shrinks every side by 2 pixels (a {h}x{h} "
                f"input gives {h - 2}x{h - 2}, and two such convs {h - 4}x{h - 4}): pass "
                "padding=1 to keep the size.",
            )
    strided = [m for _, m in main if m.stride != (1, 1)]
    if cfg.stride > 1 and len(strided) > 1:
        return failure(
            name,
            "stride_both",
            f"In {call} {len(strided)} convolutions of the main path have the stride, so the "
            f"size shrinks {cfg.stride}x twice: only the first 3x3 conv takes stride="
            f"{cfg.stride}; the second keeps stride 1."
            if spec.expansion == 1
            else f"In {call} {len(strided)} convolutions of the main path are strided: only "
            "one of them (the first 1x1 or the 3x3) takes the stride.",
        )
    if cfg.stride > 1 and not strided:
        return failure(
            name,
            "no_stride",
            f"In {call} no convolution of the main path has stride={cfg.stride}, so the main "
            "path keeps the size: pass stride to the first 3x3 conv.",
        )
    if cfg.use_1x1conv and shortcut is None:
        return failure(
            name,
            "no_1x1conv",
            f"{call}: no 1x1 conv ran on the shortcut. With use_1x1conv=True the shortcut is "
            "nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride) applied to x.",
        )
    if shortcut is not None and cfg.stride > 1 and shortcut[1].stride == (1, 1):
        return failure(
            name,
            "shortcut_no_stride",
            f"In {call} the 1x1 conv on the shortcut has stride 1, so the shortcut keeps the "
            f"{cfg.size}x{cfg.size} size while the main path shrinks it: give the 1x1 conv the "
            f"same stride={cfg.stride}.",
        )
    if len(trace.norms) < spec.norms:
        return failure(
            name,
            "bn_missing",
            f"{call}: {len(trace.norms)} batch norm layer(s) ran; the block needs "
            f"{spec.norms} (nn.BatchNorm2d), in the order {spec.order}.",
        )
    return "ok"


def check_block(spec: BlockSpec, cls: object) -> Feedback:
    name = spec.exercise
    if cls is None or cls is Ellipsis:
        return not_done(name, spec.what)
    cls_name = getattr(cls, "__name__", type(cls).__name__)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        for cfg in spec.configs:
            result = _check_one(spec, cls, cls_name, cfg, generator)
            if result is not None:
                return result
    return success(
        name,
        f"Right: shapes, and outputs given the same weights in training and evaluation mode, "
        f"on {len(spec.configs)} configurations (channels, 1x1 conv, strides 1 to 3, even and "
        "odd sizes).",
    )


def _check_one(
    spec: BlockSpec, cls: object, cls_name: str, cfg: Config, generator: torch.Generator
) -> Feedback | None:
    name = spec.exercise
    call = cfg.call(cls_name)
    block, problem = build_block(name, cls, cfg.args, spec.what)
    if problem is not None:
        return problem
    assert block is not None
    randomize(block, generator)
    x = torch.randn(cfg.input_shape(), generator=generator)
    block.eval()
    trace = run_traced(block, x)
    if isinstance(trace.error, NotImplementedError):
        return not_done(name, spec.what)
    found = _structure(spec, cfg, trace, cls_name)
    if isinstance(found, Feedback):
        return found
    if trace.error is not None:
        return failure(
            name,
            "crashed",
            f"{call} on an input of shape {cfg.input_shape()} raised {describe_error(trace.error)}",
        )
    out = trace.output
    if not isinstance(out, torch.Tensor):
        return failure(
            name,
            "wrong_return",
            f"forward returned {type(out).__name__}, not a tensor"
            + (": did you forget return?" if out is None else "."),
        )
    h = math.ceil(cfg.size / cfg.stride)
    want = (4, spec.out_channels(cfg), h, h)
    if tuple(out.shape) != want:
        return failure(
            name,
            "wrong_shape",
            f"{call} on {cfg.input_shape()} gives {tuple(out.shape)}; it should give {want}.",
        )
    main, shortcut = _split_convs(spec, cfg, trace)
    parts = _Parts(
        main=[n for n, _ in main],
        shortcut=shortcut[0] if shortcut else None,
        norms=[n for n, _ in trace.norms],
    )
    wrong = _compare_outputs(spec, cfg, call, x, out, parts.modules(block))
    if wrong is not None:
        return wrong
    return _check_training_mode(spec, cfg, call, x, block, parts)


def _compare_outputs(
    spec: BlockSpec, cfg: Config, call: str, x: torch.Tensor, out: torch.Tensor, modules: tuple
) -> Feedback | None:
    """In evaluation mode: the block's output against the correct wirings of its own layers,
    then against the known mistakes; ``None`` when it is right."""
    name = spec.exercise
    convs, sc, norms = modules
    with torch.no_grad():
        candidates = [wiring(x, convs, sc, norms, cfg) for wiring in spec.correct]
        if not any(_close(out, c) for c in candidates):
            for hint, wiring, sentence in spec.mistakes:
                try:
                    matches = _close(out, wiring(x, convs, sc, norms, cfg))
                except RuntimeError:
                    matches = False
                if matches:
                    return failure(name, hint, sentence)
            diff = min((out - c).abs().max().item() for c in candidates)
            return failure(
                name,
                "wrong_output",
                f"{call}: the shapes are right, but with the same weights the output differs "
                f"from the reference's (by up to {diff:.3g}, evaluation mode). Check the "
                f"order: {spec.order}."
                + (
                    " (Batch norm on the 1x1 shortcut is torchvision's variant; the lecture's "
                    "shortcut is the 1x1 conv alone.)"
                    if len(norms) > spec.norms
                    else ""
                ),
            )
    return None


def _check_training_mode(
    spec: BlockSpec, cfg: Config, call: str, x: torch.Tensor, block: nn.Module, parts: _Parts
) -> Feedback | None:
    """In training mode batch norm normalises with the batch's statistics: the block must
    follow its mode. ``None`` when it does."""
    name = spec.exercise
    mine, reference = copy.deepcopy(block).train(), copy.deepcopy(block).train()
    try:
        with torch.no_grad():
            got = mine(x)
    except Exception as err:  # noqa: BLE001 - the student's code
        return failure(name, "crashed", f"{call} in training mode raised {describe_error(err)}")
    convs, sc, norms = parts.modules(reference)
    with torch.no_grad():
        candidates = [wiring(x, convs, sc, norms, cfg) for wiring in spec.correct]
    if not isinstance(got, torch.Tensor) or not any(_close(got, c) for c in candidates):
        return failure(
            name,
            "train_mode",
            f"{call} is right in evaluation mode but not in training mode: let each "
            "nn.BatchNorm2d follow the block's mode (no .eval() or training=False inside "
            "forward).",
        )
    return None


def _split_convs(
    spec: BlockSpec, cfg: Config, trace: Trace
) -> tuple[list[tuple[str, nn.Conv2d]], tuple[str, nn.Conv2d] | None]:
    """The main-path convs in the order they ran, and the shortcut's 1x1 conv (or None)."""
    convs = trace.convs
    if not cfg.use_1x1conv:
        return convs, None
    if len(spec.kernels) == 2:  # in a basic block any 1x1 conv is the shortcut
        ones = [(n, m) for n, m in convs if m.kernel_size == (1, 1)]
    else:  # the bottleneck's shortcut reads the block's input and gives its output channels
        out_ch = spec.out_channels(cfg)
        ones = [
            (n, m)
            for n, m in convs
            if m.kernel_size == (1, 1)
            and m.in_channels == cfg.in_channels
            and m.out_channels == out_ch
        ]
    shortcut = ones[-1] if ones else None
    return [(n, m) for n, m in convs if shortcut is None or n != shortcut[0]], shortcut


def _close(a: object, b: torch.Tensor) -> bool:
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5))
    )
