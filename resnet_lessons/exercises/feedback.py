"""The feedback core: a checker's verdict (:class:`Feedback`) and the sentences it is built from.

Every checker returns a :class:`Feedback` and never raises on wrong student code.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

NOT_DONE = "not_done"  #: the ``hint`` of a stub that is not filled in yet


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


def success(exercise: str, message: str) -> Feedback:
    return Feedback(exercise, True, message, None)


def failure(exercise: str, hint: str, message: str) -> Feedback:
    return Feedback(exercise, False, message, hint)


def not_done(exercise: str, what: str) -> Feedback:
    return failure(exercise, NOT_DONE, f"Fill in {what}, then run this cell again.")


def describe_error(err: BaseException) -> str:
    """``"TypeError: first line of the message"``, at most 300 characters."""
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


def format_call(*args: object, **kwargs: object) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts)
