"""Checkpoints: written atomically, read back as plain data, checked before a resume."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import torch

from .recipes import Recipe

#: Checkpoint format version, stored in the file.
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: to a temporary file beside ``path``, then ``os.replace``,
    so a run killed while writing leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (``weights_only=True``: tensors and plain data
    only, nothing executed). Raises ``ValueError`` for a damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train without resume first.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); delete it or train without "
            "resume."
        ) from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} is not a resnet_lessons checkpoint (version {CHECKPOINT_VERSION})."
        )
    return state


def rng_state() -> dict[str, Any]:
    """The random state of torch (CPU and CUDA) and Python, to store in a checkpoint."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` stored."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resumable(
    state: dict[str, Any],
    recipe: Recipe,
    sizes: dict[str, int],
    seed: int,
    path: str | os.PathLike,
) -> None:
    """Raise a ``ValueError`` naming every setting that differs from the checkpoint's."""
    saved = state["recipe"]
    now = dataclasses.asdict(recipe)
    changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in now.items() if saved.get(k) != v]
    if state["seed"] != seed:
        changed.append(f"seed: {state['seed']} -> {seed}")
    if state["sizes"] != sizes:
        changed.append(f"data sizes: {state['sizes']} -> {sizes}")
    if changed:
        raise ValueError(
            f"cannot resume from {path}: it was trained with other settings "
            f"({'; '.join(changed)}). Use the same settings, or start a fresh run "
            "(another checkpoint file, or without resume)."
        )
