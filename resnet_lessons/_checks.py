"""Argument checks shared by the package, with messages a student can act on."""

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
