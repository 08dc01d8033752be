"""Evaluation: class scores and accuracy of a trained model on uint8 images.

:func:`predict` and :func:`evaluate` put the model in eval mode (batch norm uses its running
statistics) and prepare the images as training does (normalised, resized, NHWC where asked,
bfloat16 autocast where it is native).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .._checks import check_int
from ..data import prepare_batch
from ..runtime import resolve_device
from .speed import native_bf16


def autocast_dtype(device: torch.device | str, bf16: bool) -> torch.dtype | None:
    """The dtype the forward pass is autocast to on ``device``: ``torch.bfloat16`` when the
    recipe asks for ``bf16`` and the device computes it natively (a CUDA GPU with bf16, an
    AVX-512 BF16 or AMX CPU), else ``None`` (float32; MPS always, emulated bf16 is slower)."""
    return torch.bfloat16 if bf16 and native_bf16(device) else None


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """The forward pass's context: ``torch.autocast`` to :func:`autocast_dtype` where there is
    one, else nothing at all (PyTorch 2.2 refuses ``torch.autocast("mps")``, even disabled,
    so an MPS run would stop at its first step)."""
    dtype = autocast_dtype(device, bf16)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` the model in eval mode (batch norm uses its running
    statistics, dropout is off) and without gradients; afterwards back in the mode it was in.
    Every prediction of the package runs inside it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def outputs(model: nn.Module, inputs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """The model's outputs for ``inputs`` as they are, in :func:`eval_mode`: ``(N, ...) ->
    (N, ...)``, all at once or ``batch_size`` at a time."""
    with eval_mode(model):
        if batch_size is None:
            return model(inputs)
        return torch.cat(
            [model(inputs[i : i + batch_size]) for i in range(0, inputs.shape[0], batch_size)]
        )


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device | str | None = None,
    resize: int | None = None,
    batch_size: int = 1000,
    channels_last: bool = False,
    bf16: bool = False,
) -> torch.Tensor:
    """Class scores (logits) for uint8 images: ``(N, 1, 28, 28) -> (N, num_classes)``, float32,
    on the CPU. The model is put in eval mode (BN uses its running statistics) and back."""
    device = _model_device(model) if device is None else resolve_device(device)
    check_int("batch_size", batch_size, 1)
    out = []
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            x = prepare_batch(
                images[start : start + batch_size],
                device,
                resize=resize,
                channels_last=channels_last,
            )
            with autocast(device, bf16):
                out.append(model(x).float().cpu())
    if not out:
        raise ValueError("predict got no images (shape[0] == 0).")
    return torch.cat(out)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    **kwargs: Any,
) -> float:
    """Accuracy (fraction of correct top-1 predictions) on uint8 ``images`` ``(N, 1, 28, 28)``
    with int64 ``labels`` ``(N,)``. Keyword arguments go to :func:`predict`."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels differ in length: {images.shape[0]} vs {labels.shape[0]}."
        )
    scores = predict(model, images, **kwargs)
    return (scores.argmax(dim=1) == labels).float().mean().item()


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timing covers it (a CPU computes synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
