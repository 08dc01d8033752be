"""Argument checks shared by the package, with messages a student can act on, and how
messages write a length of time."""

from __future__ import annotations


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` if it is a whole number >= ``minimum``; else raise with what to pass.

    ``TypeError`` for a non-integer (``True``/``False`` and ``3.0`` included), ``ValueError``
    for one below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return value


def format_seconds(seconds: float) -> str:
    """``180 -> '3 min'``, ``90 -> '1.5 min'``, ``45 -> '45 s'``, ``10800 -> '3.0 h'``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if abs(minutes - round(minutes)) < 0.05 else f"{minutes:.1f} min"
