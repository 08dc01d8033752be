"""Exercises that check themselves: each checker runs the student's code against the
package's reference and, when it is wrong, names the likely mistake in one sentence.

Every checker returns a :class:`Feedback` (truthy when correct, with ``.passed``,
``.message`` and ``.hint``, the key of the mistake it found) and never raises on wrong
student code: a crash, a wrong return type or a stub that raises ``NotImplementedError``
("not done yet") is reported, not re-raised. The checkers leave PyTorch's global random
state as they found it, so a notebook's seeded numbers do not change.

* :func:`check_conv_output_size`: the size formula ``floor((H + 2p - d(k-1) - 1) / s) + 1``.
* :func:`check_residual`: the lecture's block (shapes, then outputs given the same weights,
  in training and evaluation mode).
* :func:`check_resnet_block`: the stage builder and its ``first_block`` rule.
* :func:`check_resnet18`: the whole network (per-stage shapes, 11,178,378 parameters).
* :func:`check_bottleneck`, :func:`check_preactivation`: the two stretch exercises.
* :func:`check_shape`: a shape worked out by hand, such as ``"(4, 6, 3, 3)"``.
"""

from __future__ import annotations

import copy
import html
import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .network import resnet18

NOT_DONE = "not_done"  #: the ``hint`` of a stub that is not filled in yet

#: The lecture's ResNet-18 (1 input channel, 10 classes).
RESNET18_PARAMS = 11_178_378


@dataclass(frozen=True)
class Feedback:
    """A checker's verdict: truthy when the exercise is solved.

    ``hint`` names the mistake found (``"forgot_plus_one"``, ``"no_padding"``, ...),
    ``"not_done"`` for a stub that is not filled in yet, ``None`` when passed. In a
    notebook it renders as a short coloured verdict; ``str()`` gives plain text.
    """

    exercise: str  #: what was checked, e.g. ``"conv_output_size"``
    passed: bool
    message: str  #: one or two sentences: what is right, or the likely mistake and the fix
    hint: str | None = None

    def __bool__(self) -> bool:
        return self.passed

    @property
    def status(self) -> str:
        """``"passed"``, ``"not done yet"`` or ``"not yet right"``."""
        if self.passed:
            return "passed"
        return "not done yet" if self.hint == NOT_DONE else "not yet right"

    def __str__(self) -> str:
        return f"{self.exercise}: {self.status.upper()}. {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour, mark = {
            "passed": ("#2e7d32", "&#10004;"),  # green tick
            "not done yet": ("#757575", "&#9998;"),  # grey pencil
            "not yet right": ("#c62828", "&#10008;"),  # red cross
        }[self.status]
        return (
            f"<div class='exercise-feedback' style='border-left:6px solid {colour}; "
            "padding:4px 10px; margin:2px 0; max-width:60em; line-height:1.5'>"
            f"<b style='color:{colour}'>{mark} {html.escape(self.exercise)}: "
            f"{html.escape(self.status)}</b><br>{html.escape(self.message)}</div>"
        )


def _passed(exercise: str, message: str) -> Feedback:
    return Feedback(exercise, True, message, None)


def _failed(exercise: str, hint: str, message: str) -> Feedback:
    return Feedback(exercise, False, message, hint)


def _not_done(exercise: str, what: str) -> Feedback:
    return _failed(exercise, NOT_DONE, f"Fill in {what}, then run this cell again.")


def _describe(err: BaseException) -> str:
    """``"TypeError: first line of the message"``, at most 300 characters."""
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


def _call(*args: object, **kwargs: object) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts)


# --- 1. the size formula ----------------------------------------------------------------


def _reference_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


#: (hint, formula a student might have written, sentence naming the mistake)
_SIZE_MISTAKES: tuple[tuple[str, Callable[[int, int, int, int, int], float], str], ...] = (
    (
        "forgot_plus_one",
        lambda n, k, s, p, d: (n + 2 * p - d * (k - 1) - 1) // s,
        "You forgot the + 1 at the end: a kernel that fits exactly once still gives one output "
        "(floor((H + 2p - k) / s) + 1).",
    ),
    (
        "padding_one_side",
        lambda n, k, s, p, d: (n + p - d * (k - 1) - 1) // s + 1,
        "You added the padding on one side only: padding p adds p pixels at the top AND at "
        "the bottom, so the padded input is H + 2p.",
    ),
    (
        "rounds_up",
        lambda n, k, s, p, d: -(-(n + 2 * p - d * (k - 1) - 1) // s) + 1,
        "You round up instead of down: a kernel position that would stick out of the padded "
        "input does not count, so use floor (// in Python), not ceil.",
    ),
    (
        "ignores_stride",
        lambda n, k, s, p, d: n + 2 * p - d * (k - 1) - 1 + 1,
        "Your answer ignores the stride: with stride s the kernel jumps s pixels, so divide "
        "(H + 2p - k) by s (rounding down) before adding 1.",
    ),
    (
        "ignores_dilation",
        lambda n, k, s, p, d: (n + 2 * p - k) // s + 1,
        "Your answer ignores the dilation: a kernel of size k with dilation d spans "
        "d * (k - 1) + 1 pixels, so use that in place of k.",
    ),
)


def _size_cases() -> list[tuple[int, int, int, int, int]]:
    cases = []
    for size in (1, 2, 3, 5, 6, 7, 8, 13, 28, 32, 56, 224):
        for k in (1, 2, 3, 5, 7):
            for s in (1, 2, 3, 4):
                for p in (0, 1, 2, 3):
                    for d in (1, 2, 3):
                        if _reference_size(size, k, s, p, d) >= 1:
                            cases.append((size, k, s, p, d))
    return cases


def check_conv_output_size(fn: Callable[..., int] | None) -> Feedback:
    """Check ``fn(size, kernel_size, stride=1, padding=0, dilation=1)`` against the formula.

    It is called (positionally) on a few thousand combinations of sizes, kernels,
    strides, paddings and dilations for which a convolution exists. Hints name the
    mistake that explains every wrong answer: a missing ``+ 1``, padding on one side,
    rounding up, an ignored stride or dilation, or an answer that is not a whole number.
    """
    name = "conv_output_size"
    if fn is None or fn is Ellipsis:
        return _not_done(name, "your conv_output_size")
    if not callable(fn):
        return _failed(name, "wrong_type", f"Pass your function itself; got {fn!r}.")
    cases = _size_cases()
    answers = []
    for case in cases:
        try:
            answers.append(fn(*case))
        except NotImplementedError:
            return _not_done(name, "the body of your conv_output_size")
        except Exception as err:  # noqa: BLE001 - the student's code: report, never raise
            size, k, s, p, d = case
            return _failed(
                name,
                "crashed",
                f"fn({_call(size, k, s, p, d)}) (size={size}, kernel_size={k}, stride={s}, "
                f"padding={p}, dilation={d}) raised {_describe(err)}. It should return "
                f"{_reference_size(*case)}; the signature is "
                "(size, kernel_size, stride=1, padding=0, dilation=1).",
            )
    for case, answer in zip(cases, answers, strict=True):
        if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
            return _failed(
                name,
                "wrong_type",
                f"fn{case} returned {answer!r} ({type(answer).__name__}); return the size, "
                "a whole number such as 3"
                + (" (did you forget return?)." if answer is None else "."),
            )
    expected = [_reference_size(*case) for case in cases]
    wrong = [i for i, (a, e) in enumerate(zip(answers, expected, strict=True)) if a != e]
    if not wrong:
        floats = any(not isinstance(a, numbers.Integral) for a in answers)
        return _passed(
            name,
            f"Right on all {len(cases)} combinations of size, kernel, stride, padding and "
            "dilation."
            + (
                " (It returns floats such as 3.0; int(...) makes them whole numbers.)"
                if floats
                else ""
            ),
        )
    for hint, mistake, sentence in _SIZE_MISTAKES:
        if all(answers[i] == mistake(*cases[i]) for i in wrong):
            return _failed(name, hint, sentence + _size_example(cases, answers, wrong[0]))
    fractional = [i for i in wrong if float(answers[i]) != math.floor(float(answers[i]))]
    if fractional:
        return _failed(
            name,
            "not_whole_number",
            "Your answer is not always a whole number: / divides exactly, but a kernel either "
            "fits or not, so round down with // (or math.floor)."
            + _size_example(cases, answers, fractional[0]),
        )
    return _failed(
        name,
        "wrong_value",
        f"Wrong for {len(wrong)} of {len(cases)} combinations; compare your formula with "
        "floor((H + 2p - d(k - 1) - 1) / s) + 1." + _size_example(cases, answers, wrong[0]),
    )


def _size_example(cases: list[tuple[int, ...]], answers: list[object], i: int) -> str:
    size, k, s, p, d = cases[i]
    return (
        f" For example size={size}, kernel_size={k}, stride={s}, padding={p}, dilation={d}: "
        f"you return {answers[i]!r}, the answer is {_reference_size(size, k, s, p, d)}."
    )


# --- 2. blocks: run the student's module and look at what ran -----------------------------


@dataclass
class _Trace:
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


def _run_traced(model: nn.Module, x: torch.Tensor) -> _Trace:
    trace = _Trace()
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


def _randomize(model: nn.Module, generator: torch.Generator) -> None:
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


def _build(
    exercise: str, cls: object, args: tuple[object, ...], what: str
) -> tuple[nn.Module | None, Feedback | None]:
    """``cls(*args)``, or the feedback that says why it could not be built."""
    label = getattr(cls, "__name__", "cls")
    call = f"{label}({_call(*args[:2])}, use_1x1conv={args[2]}, stride={args[3]})"
    if isinstance(cls, nn.Module):
        return None, _failed(
            exercise,
            "wrong_type",
            f"Pass the class itself ({type(cls).__name__}), not an instance: the checker builds "
            "blocks of several sizes.",
        )
    if not callable(cls):
        return None, _failed(exercise, "wrong_type", f"Pass your class; got {cls!r}.")
    try:
        block = cls(*args)
    except NotImplementedError:
        return None, _not_done(exercise, what)
    except Exception as err:  # noqa: BLE001 - the student's code
        return None, _failed(exercise, "crashed", f"Building {call} raised {_describe(err)}")
    if not isinstance(block, nn.Module):
        return None, _failed(
            exercise,
            "wrong_type",
            f"{call} gave a {type(block).__name__}, not an nn.Module: subclass nn.Module and "
            "call super().__init__() first.",
        )
    return block, None


@dataclass(frozen=True)
class _Config:
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


_BLOCK_CONFIGS = tuple(
    _Config(c_in, c_out, use_1x1conv, stride, size)
    for c_in, c_out, use_1x1conv, stride in (
        (3, 3, False, 1),
        (3, 6, True, 1),
        (3, 6, True, 2),
        (4, 4, True, 3),
        (3, 5, True, 2),
    )
    for size in (6, 7)
)

_BOTTLENECK_CONFIGS = tuple(
    _Config(c_in, mid, use_1x1conv, stride, size)
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
class _BlockSpec:
    """What one block exercise expects: its layers and its correct and mistaken wirings."""

    exercise: str
    what: str  # for "not done yet"
    configs: tuple[_Config, ...]
    kernels: tuple[int, ...]  # main-path kernel sizes in order
    norms: int
    out_channels: Callable[[_Config], int]
    # wiring(x, convs, shortcut, norms, config) -> tensor; several correct ones allowed
    correct: tuple[Callable[..., torch.Tensor], ...]
    mistakes: tuple[tuple[str, Callable[..., torch.Tensor], str], ...]
    order: str  # the layer order in words, for a generic mismatch


def _shortcut(x: torch.Tensor, sc: nn.Module | None) -> torch.Tensor:
    return x if sc is None else sc(x)


def _residual_main(x, c, n, relu_between=True):  # noqa: ANN001, ANN202 - private wiring
    h = n[0](c[0](x))
    return n[1](c[1](F.relu(h) if relu_between else h))


_RESIDUAL = _BlockSpec(
    exercise="Residual block",
    what="your block's __init__ and forward",
    configs=_BLOCK_CONFIGS,
    kernels=(3, 3),
    norms=2,
    out_channels=lambda cfg: cfg.out_channels,
    correct=(lambda x, c, sc, n, cfg: F.relu(_residual_main(x, c, n) + _shortcut(x, sc)),),
    mistakes=(
        (
            "relu_before_add",
            lambda x, c, sc, n, cfg: F.relu(_residual_main(x, c, n)) + _shortcut(x, sc),
            "The ReLU comes before the addition: apply it after adding the shortcut, "
            "relu(bn2(conv2(...)) + shortcut(x)).",
        ),
        (
            "no_final_relu",
            lambda x, c, sc, n, cfg: _residual_main(x, c, n) + _shortcut(x, sc),
            "The final ReLU is missing: the block returns relu(main path + shortcut).",
        ),
        (
            "bn_after_add",
            lambda x, c, sc, n, cfg: F.relu(n[1](c[1](F.relu(n[0](c[0](x)))) + _shortcut(x, sc))),
            "The second batch norm comes after the addition: it belongs to the main path, "
            "right after the second conv and before the shortcut is added.",
        ),
        (
            "no_shortcut",
            lambda x, c, sc, n, cfg: F.relu(_residual_main(x, c, n)),
            "The shortcut is never added: the output should be relu(main path + shortcut(x)), "
            "where the shortcut is x itself or the 1x1 conv of x.",
        ),
        (
            "no_relu_between",
            lambda x, c, sc, n, cfg: F.relu(_residual_main(x, c, n, False) + _shortcut(x, sc)),
            "The ReLU between the two convolutions is missing: conv1 -> BN -> ReLU -> conv2 -> BN.",
        ),
    ),
    order="conv1 (3x3, stride) -> BN -> ReLU -> conv2 (3x3) -> BN, add the shortcut, ReLU",
)


def _bottleneck_main(x, c, n):  # noqa: ANN001, ANN202 - private wiring
    h = F.relu(n[0](c[0](x)))
    h = F.relu(n[1](c[1](h)))
    return n[2](c[2](h))


_BOTTLENECK = _BlockSpec(
    exercise="Bottleneck block",
    what="your bottleneck's __init__ and forward",
    configs=_BOTTLENECK_CONFIGS,
    kernels=(1, 3, 1),
    norms=3,
    out_channels=lambda cfg: 4 * cfg.out_channels,
    correct=(lambda x, c, sc, n, cfg: F.relu(_bottleneck_main(x, c, n) + _shortcut(x, sc)),),
    mistakes=(
        (
            "relu_before_add",
            lambda x, c, sc, n, cfg: F.relu(_bottleneck_main(x, c, n)) + _shortcut(x, sc),
            "The ReLU comes before the addition: apply it after adding the shortcut.",
        ),
        (
            "no_final_relu",
            lambda x, c, sc, n, cfg: _bottleneck_main(x, c, n) + _shortcut(x, sc),
            "The final ReLU is missing: the block returns relu(main path + shortcut).",
        ),
        (
            "no_shortcut",
            lambda x, c, sc, n, cfg: F.relu(_bottleneck_main(x, c, n)),
            "The shortcut is never added: the output should be relu(main path + shortcut(x)).",
        ),
    ),
    order="1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 (4x channels) -> BN, add, ReLU",
)


def _preact_main(x, c, n):  # noqa: ANN001, ANN202 - private wiring
    return c[1](F.relu(n[1](c[0](F.relu(n[0](x))))))


def _preact_shortcut(x, sc, n, pre_activated):  # noqa: ANN001, ANN202 - private wiring
    if sc is None:
        return x
    return sc(F.relu(n[0](x))) if pre_activated else sc(x)


_PREACTIVATION = _BlockSpec(
    exercise="Pre-activation block",
    what="your pre-activation block's __init__ and forward",
    configs=_BLOCK_CONFIGS,
    kernels=(3, 3),
    norms=2,
    out_channels=lambda cfg: cfg.out_channels,
    # He et al.'s code feeds the 1x1 shortcut the pre-activated input; x itself is fine too.
    correct=(
        lambda x, c, sc, n, cfg: _preact_main(x, c, n) + _preact_shortcut(x, sc, n, True),
        lambda x, c, sc, n, cfg: _preact_main(x, c, n) + _preact_shortcut(x, sc, n, False),
    ),
    mistakes=(
        (
            "final_relu",
            lambda x, c, sc, n, cfg: F.relu(
                _preact_main(x, c, n) + _preact_shortcut(x, sc, n, True)
            ),
            "There is a ReLU after the addition: the pre-activation block returns "
            "main path + shortcut as it is, so the identity path stays clean.",
        ),
        (
            "final_relu",
            lambda x, c, sc, n, cfg: F.relu(
                _preact_main(x, c, n) + _preact_shortcut(x, sc, n, False)
            ),
            "There is a ReLU after the addition: the pre-activation block returns "
            "main path + shortcut as it is, so the identity path stays clean.",
        ),
        (
            "no_shortcut",
            lambda x, c, sc, n, cfg: _preact_main(x, c, n),
            "The shortcut is never added: the output should be main path + shortcut(x).",
        ),
    ),
    order="BN -> ReLU -> conv1 (3x3, stride) -> BN -> ReLU -> conv2 (3x3), add the shortcut",
)


def _structure(spec: _BlockSpec, cfg: _Config, trace: _Trace, cls_name: str) -> Feedback | str:
    """Check which layers ran; return feedback for a structural mistake, or the parts."""
    name = spec.exercise
    call = cfg.call(cls_name)
    out_ch = spec.out_channels(cfg)
    main, shortcut = _split_convs(spec, cfg, trace)
    kernels = tuple(m.kernel_size[0] for _, m in main)
    if spec is _BOTTLENECK and main and main[-1][1].out_channels == cfg.out_channels:
        return _failed(
            name,
            "no_expansion",
            f"In {call} the last 1x1 conv gives {cfg.out_channels} channels; it should expand "
            f"them 4x, to 4 * mid_channels = {out_ch} (the block's expansion).",
        )
    if kernels != spec.kernels:
        want = ", ".join(f"{k}x{k}" for k in spec.kernels)
        got = ", ".join(f"{k}x{k}" for k in kernels) or "none"
        return _failed(
            name,
            "wrong_layers",
            f"{call}: the main path should run the convolutions {want} in this order; yours "
            f"ran {got}. Use nn.Conv2d layers for them.",
        )
    for _, m in main:
        if m.kernel_size == (3, 3) and m.padding == (0, 0):
            h = cfg.size
            return _failed(
                name,
                "no_padding",
                f"A 3x3 conv has no padding, so it shrinks every side by 2 pixels (a {h}x{h} "
                f"input gives {h - 2}x{h - 2}, and two such convs {h - 4}x{h - 4}): pass "
                "padding=1 to keep the size.",
            )
    strided = [m for _, m in main if m.stride != (1, 1)]
    if cfg.stride > 1 and len(strided) > 1:
        return _failed(
            name,
            "stride_both",
            f"In {call} {len(strided)} convolutions of the main path have the stride, so the "
            f"size shrinks {cfg.stride}x twice: only the first 3x3 conv takes stride="
            f"{cfg.stride}; the second keeps stride 1."
            if spec is not _BOTTLENECK
            else f"In {call} {len(strided)} convolutions of the main path are strided: only "
            "one of them (the first 1x1 or the 3x3) takes the stride.",
        )
    if cfg.stride > 1 and not strided:
        return _failed(
            name,
            "no_stride",
            f"In {call} no convolution of the main path has stride={cfg.stride}, so the main "
            "path keeps the size: pass stride to the first 3x3 conv.",
        )
    if cfg.use_1x1conv and shortcut is None:
        return _failed(
            name,
            "no_1x1conv",
            f"{call}: no 1x1 conv ran on the shortcut. With use_1x1conv=True the shortcut is "
            "nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride) applied to x.",
        )
    if shortcut is not None and cfg.stride > 1 and shortcut[1].stride == (1, 1):
        return _failed(
            name,
            "shortcut_no_stride",
            f"In {call} the 1x1 conv on the shortcut has stride 1, so the shortcut keeps the "
            f"{cfg.size}x{cfg.size} size while the main path shrinks it: give the 1x1 conv the "
            f"same stride={cfg.stride}.",
        )
    if len(trace.norms) < spec.norms:
        return _failed(
            name,
            "bn_missing",
            f"{call}: {len(trace.norms)} batch norm layer(s) ran; the block needs "
            f"{spec.norms} (nn.BatchNorm2d), in the order {spec.order}.",
        )
    return "ok"


def _check_block(spec: _BlockSpec, cls: object) -> Feedback:
    name = spec.exercise
    if cls is None or cls is Ellipsis:
        return _not_done(name, spec.what)
    cls_name = getattr(cls, "__name__", type(cls).__name__)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        for cfg in spec.configs:
            result = _check_one(spec, cls, cls_name, cfg, generator)
            if result is not None:
                return result
    return _passed(
        name,
        f"Right: shapes, and outputs given the same weights in training and evaluation mode, "
        f"on {len(spec.configs)} configurations (channels, 1x1 conv, strides 1 to 3, even and "
        "odd sizes).",
    )


def _check_one(
    spec: _BlockSpec, cls: object, cls_name: str, cfg: _Config, generator: torch.Generator
) -> Feedback | None:
    name = spec.exercise
    call = cfg.call(cls_name)
    block, problem = _build(name, cls, cfg.args, spec.what)
    if problem is not None:
        return problem
    assert block is not None
    _randomize(block, generator)
    x = torch.randn(cfg.input_shape(), generator=generator)
    block.eval()
    trace = _run_traced(block, x)
    if isinstance(trace.error, NotImplementedError):
        return _not_done(name, spec.what)
    found = _structure(spec, cfg, trace, cls_name)
    if isinstance(found, Feedback):
        return found
    if trace.error is not None:
        return _failed(
            name,
            "crashed",
            f"{call} on an input of shape {cfg.input_shape()} raised {_describe(trace.error)}",
        )
    out = trace.output
    if not isinstance(out, torch.Tensor):
        return _failed(
            name,
            "wrong_return",
            f"forward returned {type(out).__name__}, not a tensor"
            + (": did you forget return?" if out is None else "."),
        )
    h = math.ceil(cfg.size / cfg.stride)
    want = (4, spec.out_channels(cfg), h, h)
    if tuple(out.shape) != want:
        return _failed(
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
    convs, sc, norms = parts.modules(block)
    with torch.no_grad():
        candidates = [wiring(x, convs, sc, norms, cfg) for wiring in spec.correct]
        if not any(_close(out, c) for c in candidates):
            for hint, wiring, sentence in spec.mistakes:
                try:
                    matches = _close(out, wiring(x, convs, sc, norms, cfg))
                except RuntimeError:
                    matches = False
                if matches:
                    return _failed(name, hint, sentence)
            diff = min((out - c).abs().max().item() for c in candidates)
            return _failed(
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
    # Training mode: batch norm normalises with the batch's statistics.
    mine, reference = copy.deepcopy(block).train(), copy.deepcopy(block).train()
    try:
        with torch.no_grad():
            got = mine(x)
    except Exception as err:  # noqa: BLE001 - the student's code
        return _failed(name, "crashed", f"{call} in training mode raised {_describe(err)}")
    convs, sc, norms = parts.modules(reference)
    with torch.no_grad():
        candidates = [wiring(x, convs, sc, norms, cfg) for wiring in spec.correct]
    if not isinstance(got, torch.Tensor) or not any(_close(got, c) for c in candidates):
        return _failed(
            name,
            "train_mode",
            f"{call} is right in evaluation mode but not in training mode: let each "
            "nn.BatchNorm2d follow the block's mode (no .eval() or training=False inside "
            "forward).",
        )
    return None


def _split_convs(
    spec: _BlockSpec, cfg: _Config, trace: _Trace
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


def check_residual(cls: type[nn.Module] | None) -> Feedback:
    """Check a residual block class with the lecture's signature
    ``(in_channels, out_channels, use_1x1conv=False, stride=1)``.

    It builds the block for several configurations and checks, on inputs of shape
    ``(4, C_in, H, W)``, the layers that run, the output shape, and the output against
    the reference ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` computed with the
    block's own weights (set to random values), in evaluation and training mode. Layer
    names and order in ``__init__`` are free; ``nn.Sequential`` is fine.

    Hints: no padding on the 3x3 convs, the stride on both 3x3 convs, the 1x1 shortcut
    without the stride, ReLU before the addition, no final ReLU, batch norm missing or
    after the addition, the shortcut never added, no ReLU between the convs.
    """
    return _check_block(_RESIDUAL, cls)


def check_bottleneck(cls: type[nn.Module] | None) -> Feedback:
    """Check a bottleneck block class ``(in_channels, mid_channels, use_1x1conv=False,
    stride=1)`` whose output has ``4 * mid_channels`` channels (ResNet-50's block).

    The stride may sit on the first 1x1 conv (the original paper) or on the 3x3 conv
    (torchvision's "v1.5"). Hints: no 4x expansion, layers in the wrong order, the 3x3
    without padding, the stride missing or twice, the shortcut without the stride, ReLU
    before the addition, no final ReLU, the shortcut never added.
    """
    return _check_block(_BOTTLENECK, cls)


def check_preactivation(cls: type[nn.Module] | None) -> Feedback:
    """Check He et al.'s (2016) pre-activation block ``(in_channels, out_channels,
    use_1x1conv=False, stride=1)``: ``BN -> ReLU -> conv -> BN -> ReLU -> conv``, plus the
    shortcut, no ReLU after the addition (reference:
    :class:`resnet_lessons.preactivation.PreActResidual`).

    The 1x1 shortcut may read ``x`` or the pre-activated ``relu(bn1(x))``. Hints: the
    original (post-activation) order, a ReLU after the addition, the shortcut never
    added, and the structural ones of :func:`check_residual`.
    """
    name = _PREACTIVATION.exercise
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        with torch.random.fork_rng(devices=[]):
            block, problem = _build(name, cls, (3, 6, True, 2), _PREACTIVATION.what)
            if problem is None and block is not None:
                trace = _run_traced(block.eval(), torch.randn(4, 3, 6, 6))
                if trace.order and isinstance(trace.order[0][1], nn.Conv2d):
                    return _failed(
                        name,
                        "post_activation",
                        "Your block starts with a convolution, like the original block: the "
                        "pre-activation block puts batch norm and ReLU before each conv "
                        "(BN -> ReLU -> conv, twice) and adds the shortcut with no ReLU after.",
                    )
            if problem is not None and problem.hint == NOT_DONE:
                return problem
    return _check_block(_PREACTIVATION, cls)


# --- 3. the stage builder ---------------------------------------------------------------

_STAGE_CASES = (  # (in_channels, out_channels, num_residuals, first_block, size)
    (4, 8, 2, False, 8),
    (4, 4, 2, True, 8),
    (4, 8, 3, False, 7),
    (8, 16, 1, False, 8),
)


def check_resnet_block(fn: Callable[..., nn.Module] | None) -> Feedback:
    """Check a stage builder ``fn(in_channels, out_channels, num_residuals,
    first_block=False)`` that returns the stage (e.g. an ``nn.Sequential`` of blocks).

    Each stage runs on a small batch ``(2, C_in, H, H)``: it must give
    ``(2, out_channels, H', H')`` with ``H' = H`` when ``first_block`` else ``ceil(H / 2)``,
    and hold ``num_residuals`` blocks. Hints: downsampling in every block instead of the
    first, downsampling in the first stage too (the ``first_block`` rule), no downsampling
    at all, channels not changed by the first block, the 1x1 conv missing, the wrong
    number of blocks.
    """
    name = "resnet_block"
    if fn is None or fn is Ellipsis:
        return _not_done(name, "your stage builder")
    if not callable(fn):
        return _failed(name, "wrong_type", f"Pass your function itself; got {fn!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for c_in, c_out, n, first_block, size in _STAGE_CASES:
            result = _check_stage(fn, c_in, c_out, n, first_block, size)
            if result is not None:
                return result
    return _passed(
        name,
        f"Right on {len(_STAGE_CASES)} stages: the first block changes the channels and "
        "halves the size (unless first_block), the others keep the shape.",
    )


def _check_stage(
    fn: Callable[..., nn.Module], c_in: int, c_out: int, n: int, first_block: bool, size: int
) -> Feedback | None:
    name = "resnet_block"
    call = f"resnet_block({c_in}, {c_out}, {n}, first_block={first_block})"
    try:
        stage = fn(c_in, c_out, n, first_block)
    except NotImplementedError:
        return _not_done(name, "your stage builder")
    except Exception as err:  # noqa: BLE001 - the student's code
        text = _describe(err)
        if "use_1x1conv" in text:
            return _failed(
                name,
                "no_1x1conv",
                f"{call} raised {text} The first block of a stage changes the channels (and "
                "the size), so it needs use_1x1conv=True.",
            )
        return _failed(name, "crashed", f"{call} raised {text}")
    if not isinstance(stage, nn.Module):
        return _failed(
            name,
            "wrong_type",
            f"{call} returned {type(stage).__name__}; return the blocks as one module, "
            "nn.Sequential(*blocks)" + (" (did you forget return?)." if stage is None else "."),
        )
    blocks = list(stage.children()) if isinstance(stage, nn.Sequential) else []
    if blocks and len(blocks) != n:
        return _failed(
            name,
            "block_count",
            f"{call} holds {len(blocks)} blocks; a stage with num_residuals={n} holds {n}.",
        )
    shapes: list[tuple[int, ...]] = []
    handles = [
        b.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape))) for b in blocks
    ]
    x = torch.randn(2, c_in, size, size)
    try:
        with torch.no_grad():
            out = stage.eval()(x)
    except NotImplementedError:
        return _not_done(name, "your stage builder")
    except Exception as err:  # noqa: BLE001 - the student's code
        return _failed(name, "crashed", f"{call} on {tuple(x.shape)} raised {_describe(err)}")
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        return _failed(name, "wrong_return", f"{call} returned {type(out).__name__} on a batch.")
    h = size if first_block else math.ceil(size / 2)
    want = (2, c_out, h, h)
    sizes = [size] + [s[2] for s in shapes if len(s) == 4]
    halvings = sum(1 for a, b in zip(sizes, sizes[1:], strict=False) if b < a)
    if first_block and tuple(out.shape[2:]) != (size, size):
        return _failed(
            name,
            "first_block_ignored",
            f"{call} gives {tuple(out.shape)}, but with first_block=True the stage keeps the "
            f"{size}x{size} size: the first stage follows the stem's max pool, which has just "
            "halved it, so no block of it downsamples (stride 1, no 1x1 conv unless the "
            "channels change).",
        )
    if not first_block and (halvings > 1 or (not blocks and tuple(out.shape[2:]) < (h, h))):
        return _failed(
            name,
            "downsample_every",
            f"{call} gives {tuple(out.shape)}: every block downsamples. Only the first block "
            f"of a stage has stride 2 (and the 1x1 conv); the rest use stride 1.",
        )
    if not first_block and tuple(out.shape[2:]) == (size, size) and size > 1:
        return _failed(
            name,
            "no_downsample",
            f"{call} gives {tuple(out.shape)}: nothing halves the size. The first block of a "
            "stage (unless first_block=True) uses stride=2 and use_1x1conv=True.",
        )
    if shapes and c_in != c_out and shapes[0][1] == c_in:
        return _failed(
            name,
            "channels_unchanged",
            f"In {call} the first block keeps {c_in} channels: it is the one that changes "
            f"them, Residual({c_in}, {c_out}, use_1x1conv=True, stride=2); the rest take "
            f"{c_out} in and out.",
        )
    if tuple(out.shape) != want:
        return _failed(
            name,
            "wrong_shape",
            f"{call} on {tuple(x.shape)} gives {tuple(out.shape)}; it should give {want}.",
        )
    return None


# --- 4. the whole network ---------------------------------------------------------------


def _stage_shapes(model: nn.Module, size: int) -> tuple[list[tuple[str, tuple[int, ...]]], object]:
    """(name, output shape) of each top-level child on a (1, 1, size, size) batch, and the
    output (or the exception)."""
    found: list[tuple[str, tuple[int, ...]]] = []
    children = list(model.named_children())
    handles = [
        child.register_forward_hook(
            lambda m, a, out, name=name: (
                found.append((name, tuple(out.shape))) if isinstance(out, torch.Tensor) else None
            )
        )
        for name, child in children
    ]
    training = model.training
    try:
        with torch.no_grad():
            out: object = model.eval()(torch.randn(1, 1, size, size))
    except Exception as err:  # noqa: BLE001 - reported by the caller
        out = err
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return found, out


def check_resnet18(model: nn.Module | Callable[[], nn.Module] | None) -> Feedback:
    """Check a whole ResNet-18 (1 input channel, 10 classes) against the lecture's.

    ``model`` is the network (or a function or class that builds it). On inputs
    ``(1, 1, 224, 224)`` and ``(1, 1, 96, 96)`` it compares the output shape of each part
    with the reference (stem, stage1 ... stage4, pooling, fc) and names the first stage
    whose shape is wrong and what it should be; then the parameter count, 11,178,378.
    """
    name = "ResNet-18"
    if model is None or model is Ellipsis:
        return _not_done(name, "your network")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if not isinstance(model, nn.Module):
            if not callable(model):
                return _failed(name, "wrong_type", f"Pass your network; got {model!r}.")
            try:
                model = model()
            except NotImplementedError:
                return _not_done(name, "your network")
            except Exception as err:  # noqa: BLE001 - the student's code
                return _failed(name, "crashed", f"Building the network raised {_describe(err)}")
            if not isinstance(model, nn.Module):
                return _failed(
                    name, "wrong_type", f"Building the network gave a {type(model).__name__}."
                )
        reference = resnet18()
        for size in (224, 96):
            result = _compare_network(model, reference, size)
            if result is not None:
                return result
    count = sum(p.numel() for p in model.parameters())
    if count != RESNET18_PARAMS:
        return _failed(
            name,
            "param_count",
            f"Every shape is right, but the network has {count:,} parameters, "
            f"{count - RESNET18_PARAMS:+,} against the lecture's {RESNET18_PARAMS:,}. Common "
            "causes: convolutions with bias=False, batch norm on the 1x1 shortcut, or a 1x1 "
            "conv where the identity would do.",
        )
    return _passed(
        name,
        f"Right: every stage's shape at 224x224 and 96x96 and {RESNET18_PARAMS:,} parameters, "
        "as in the lecture.",
    )


def _compare_network(model: nn.Module, reference: nn.Module, size: int) -> Feedback | None:
    name = "ResNet-18"
    want, _ = _stage_shapes(reference, size)
    got, out = _stage_shapes(model, size)
    x_shape = (1, 1, size, size)
    if isinstance(out, NotImplementedError):
        return _not_done(name, "your network")
    if isinstance(out, BaseException) and (not got or len(list(model.children())) != len(want)):
        after = f" after your '{got[-1][0]}' gave {got[-1][1]}" if got else ""
        return _failed(name, "crashed", f"On {x_shape} your network raised {_describe(out)}{after}")
    if len(list(model.children())) == len(want):
        for (ref_name, ref_shape), (my_name, my_shape) in zip(want, got, strict=True):
            if my_shape != ref_shape and (ref_name, ref_shape) == want[-1]:
                break  # only the output is wrong: said below
            if my_shape != ref_shape:
                return _failed(
                    name,
                    "stage_shape",
                    f"On {x_shape} the first wrong part is {ref_name} (your '{my_name}'): it "
                    f"gives {my_shape}; it should give {ref_shape}."
                    + _why_stage(ref_name, want, ref_shape, my_shape),
                )
    elif not isinstance(out, BaseException):
        position = 0
        for ref_name, ref_shape in want:
            where = [i for i, (_, s) in enumerate(got) if s == ref_shape and i >= position]
            if not where:
                after = got[position - 1] if position else None
                return _failed(
                    name,
                    "stage_shape",
                    f"On {x_shape} no part of your network gives {ref_name}'s {ref_shape}"
                    + (f" (after your '{after[0]}', {after[1]}" if after else " (")
                    + (f", comes {got[position][1]})." if position < len(got) else ").")
                    + _why_stage(
                        ref_name, want, ref_shape, got[position][1] if position < len(got) else None
                    ),
                )
            position = where[0] + 1
    if isinstance(out, BaseException):
        return _failed(name, "crashed", f"On {x_shape} your network raised {_describe(out)}")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, 10):
        shown = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return _failed(
            name,
            "output_shape",
            f"On {x_shape} your network returns {shown}; it should return (1, 10), one score "
            "per class.",
        )
    return None


def _why_stage(
    ref_name: str,
    want: list[tuple[str, tuple[int, ...]]],
    ref_shape: tuple[int, ...],
    my_shape: tuple[int, ...] | None,
) -> str:
    if my_shape is None or len(my_shape) != 4 or len(ref_shape) != 4:
        return ""
    if my_shape[1] != ref_shape[1]:
        return f" Its channels should be {ref_shape[1]}."
    if my_shape[2] < ref_shape[2]:
        if ref_name == "stage1":
            return " stage1 keeps the stem's size (first_block=True: no stride there)."
        return " It halves the size once too often: only its first block has stride 2."
    if my_shape[2] > ref_shape[2]:
        if ref_name == "stem":
            return " The stem divides by 4: 7x7 conv with stride 2, then 3x3 max pool stride 2."
        return " Its first block should halve the size (stride 2 with the 1x1 conv)."
    return ""


# --- 5. shapes by hand ------------------------------------------------------------------

_DIMS = ("N (batch)", "C (channels)", "H (height)", "W (width)")


def _parse_shape(answer: object) -> tuple[int, ...] | None:
    if isinstance(answer, str):
        numbers_ = re.findall(r"-?\d+", answer)
        if not numbers_ or re.search(r"[^\d\s,()\[\]x×-]", answer):
            return None
        return tuple(int(n) for n in numbers_)
    if isinstance(answer, (tuple, list, torch.Size)):
        if all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in answer):
            return tuple(int(a) for a in answer)
    return None


def check_shape(
    answer: object, expected: Sequence[int], *, question: str = "shape", stride: int = 1
) -> Feedback:
    """Check a shape worked out by hand, e.g. ``check_shape("(4, 6, 3, 3)", (4, 6, 3, 3))``.

    ``answer`` is a string such as ``"(4, 6, 3, 3)"`` or a tuple; ``""`` or ``None`` is "not
    done yet". The feedback names the dimensions that are wrong; for the height and width
    it says whether the stride (``stride``) was ignored or the size rounded down instead
    of up.
    """
    want = tuple(int(e) for e in expected)
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return _not_done(question, "your answer, such as (4, 6, 3, 3)")
    got = _parse_shape(answer)
    if got is None:
        return _failed(
            question,
            "format",
            f"Write the shape as numbers in brackets, such as (4, 6, 3, 3); got {answer!r}.",
        )
    if got == want:
        return _passed(question, f"Right: {want}.")
    dims = _DIMS if len(want) == 4 else tuple(f"dimension {i}" for i in range(len(want)))
    if len(got) != len(want):
        return _failed(
            question,
            "wrong_length",
            f"The shape has {len(want)} numbers ({', '.join(dims)}); yours has {len(got)}.",
        )
    wrong = [dims[i] for i in range(len(want)) if got[i] != want[i]]
    message = f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not right."
    if len(want) != 4:
        return _failed(question, "wrong_value", message)
    if got[1] != want[1]:
        return _failed(
            question,
            "wrong_channels",
            message + " The output has the last conv's out_channels, whatever came in.",
        )
    if got[0] != want[0]:
        return _failed(question, "wrong_batch", message + " The batch size N never changes.")
    if stride > 1 and got[2] >= want[2] * stride - (stride - 1):
        return _failed(
            question,
            "ignores_stride",
            message + f" Stride {stride} shrinks H and W about {stride}x.",
        )
    if stride > 1 and got[2] == want[2] - 1:
        return _failed(
            question,
            "rounds_down",
            message + " With padding 1 a 3x3 conv gives floor((H - 1) / s) + 1, which rounds "
            "H / s up, not down.",
        )
    return _failed(
        question, "wrong_size", message + " Use floor((H + 2p - k) / s) + 1 for each layer."
    )
