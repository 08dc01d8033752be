"""Exercise 1 (notebook 02): the size formula of a convolution."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from .feedback import Feedback, describe_error, failure, format_call, not_done, success

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
        return not_done(name, "your conv_output_size")
    if not callable(fn):
        return failure(name, "wrong_type", f"Pass your function itself; got {fn!r}.")
    cases = _size_cases()
    answers = []
    for case in cases:
        try:
            answers.append(fn(*case))
        except NotImplementedError:
            return not_done(name, "the body of your conv_output_size")
        except Exception as err:  # noqa: BLE001 - the student's code: report, never raise
            size, k, s, p, d = case
            return failure(
                name,
                "crashed",
                f"fn({format_call(size, k, s, p, d)}) (size={size}, kernel_size={k}, stride={s}, "
                f"padding={p}, dilation={d}) raised {describe_error(err)}. It should return "
                f"{_reference_size(*case)}; the signature is "
                "(size, kernel_size, stride=1, padding=0, dilation=1).",
            )
    for case, answer in zip(cases, answers, strict=True):
        if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
            return failure(
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
        return success(
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
            return failure(name, hint, sentence + _size_example(cases, answers, wrong[0]))
    fractional = [i for i in wrong if float(answers[i]) != math.floor(float(answers[i]))]
    if fractional:
        return failure(
            name,
            "not_whole_number",
            "Your answer is not always a whole number: / divides exactly, but a kernel either "
            "fits or not, so round down with // (or math.floor)."
            + _size_example(cases, answers, fractional[0]),
        )
    return failure(
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
