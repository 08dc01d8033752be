"""Exercise 5 (notebooks 02 and 03): a shape worked out by hand."""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

import torch

from .feedback import Feedback, failure, not_done, success

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
        return not_done(question, "your answer, such as (4, 6, 3, 3)")
    got = _parse_shape(answer)
    if got is None:
        return failure(
            question,
            "format",
            f"Write the shape as numbers in brackets, such as (4, 6, 3, 3); got {answer!r}.",
        )
    if got == want:
        return success(question, f"Right: {want}.")
    dims = _DIMS if len(want) == 4 else tuple(f"dimension {i}" for i in range(len(want)))
    if len(got) != len(want):
        return failure(
            question,
            "wrong_length",
            f"The shape has {len(want)} numbers ({', '.join(dims)}); yours has {len(got)}.",
        )
    wrong = [dims[i] for i in range(len(want)) if got[i] != want[i]]
    message = f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not right."
    if len(want) != 4:
        return failure(question, "wrong_value", message)
    if got[1] != want[1]:
        return failure(
            question,
            "wrong_channels",
            message + " The output has the last conv's out_channels, whatever came in.",
        )
    if got[0] != want[0]:
        return failure(question, "wrong_batch", message + " The batch size N never changes.")
    if stride > 1 and got[2] >= want[2] * stride - (stride - 1):
        return failure(
            question,
            "ignores_stride",
            message + f" Stride {stride} shrinks H and W about {stride}x.",
        )
    if stride > 1 and got[2] == want[2] - 1:
        return failure(
            question,
            "rounds_down",
            message + " With padding 1 a 3x3 conv gives floor((H - 1) / s) + 1, which rounds "
            "H / s up, not down.",
        )
    return failure(
        question, "wrong_size", message + " Use floor((H + 2p - k) / s) + 1 for each layer."
    )
