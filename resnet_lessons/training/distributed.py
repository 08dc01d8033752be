"""The trainer's distributed set-up: ``torchrun``'s process group, each rank's share of a
batch, and batch norm synchronised across the ranks.

* :func:`process_group` joins the process group of a ``torchrun`` launch, with a timeout on
  every collective, so a dead or stuck worker ends the run instead of hanging it;
  :func:`torchrun_world_size` reads how many processes were launched.
* :func:`distributed` says ``(rank, world_size)``; :func:`share` is this rank's part of a
  global batch (the split :func:`~resnet_lessons.training.fit` uses).
* :class:`AllReduceBatchNorm`: batch norm whose statistics cover the global batch: each
  layer's per-channel sum, sum of squares and count are all-reduced (differentiably). It
  runs on CPUs with gloo, where PyTorch's :class:`torch.nn.SyncBatchNorm` refuses to;
  :func:`convert_sync_batchnorm` picks PyTorch's under nccl and this one under gloo.

Notebook 09 (:mod:`resnet_lessons.experiments.parallel`) builds the same ideas by hand.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

#: Seconds a collective (all-reduce, barrier, broadcast) may wait for the other workers
#: before it fails: longer than rank 0's slowest evaluation, which the others wait for.
DEFAULT_TIMEOUT = 600.0


def share(batch: int, rank: int, world_size: int) -> slice:
    """This rank's part of a global batch of ``batch`` items: contiguous, sizes differ by <= 1
    (the split :func:`~resnet_lessons.training.fit` uses)."""
    base, extra = divmod(batch, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def distributed() -> tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` unless ``torch.distributed`` is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --------------------------------------------------------------------------- synchronised BN


class _AllReduceSum(torch.autograd.Function):
    """``y = sum over ranks of x``; its gradient on each rank is the sum of the gradients
    that arrive at ``y`` on every rank (the losses of all ranks depend on ``y``)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks, differentiable (gradients flow back to every
    rank's input). Same shape as ``tensor``."""
    return _AllReduceSum.apply(tensor)


class AllReduceBatchNorm(_BatchNorm):
    """Batch norm over the *global* batch: the statistics of all ranks' shares together.

    In training mode under ``torch.distributed`` (more than one rank), each call all-reduces
    one vector per layer, ``[sum of x, sum of x^2, count]`` per channel, so every rank
    normalises with the mean and variance of the whole global batch, exactly as one process
    with the whole batch would. Gradients flow through the all-reduce. In eval mode, or in a
    single process, it is plain batch norm. The running statistics are updated with the
    global ones (variance unbiased, like :class:`torch.nn.BatchNorm2d`), so every rank keeps
    the same. Same parameters, buffers and state-dict keys as ``nn.BatchNorm1d/2d/3d``.

    Shapes: ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)``, unchanged.
    The statistics are computed in float32 whatever the input's dtype (bfloat16 autocast).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"AllReduceBatchNorm expects (N, C, ...) input with C={self.num_features}, got "
                f"shape {tuple(input.shape)}."
            )
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"AllReduceBatchNorm has {self.num_features} channels but the input has "
                f"{input.shape[1]} (shape {tuple(input.shape)})."
            )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]  # every axis but the channels
        x = input.float() if input.dtype != torch.float64 else input
        # Sums of (x - shift) keep E[x^2] - E[x]^2 accurate in float32 when |mean| >> std.
        # Any shift gives the same result as long as every rank uses the same one: the
        # running mean is the same on every rank (DDP broadcasts rank 0's buffers).
        shift = self._shift(x).detach()  # (C,)
        shape = [1, channels] + [1] * (input.dim() - 2)
        centred = x - shift.view(shape)
        count = x.new_full((1,), input.numel() / channels)
        local = torch.cat([centred.sum(dims), (centred * centred).sum(dims), count])  # (2C + 1,)
        total = all_reduce_sum(local)
        n = total[-1]
        shifted_mean = total[:channels] / n  # (C,)
        var = (total[channels:-1] / n - shifted_mean * shifted_mean).clamp_min(0)  # biased
        out = (centred - shifted_mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(shifted_mean + shift, var, n)
        return out.to(input.dtype)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats and self.running_mean is not None:
            return self.running_mean.float()
        return x.new_zeros(x.shape[1])

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor):
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # a cumulative average, as nn.BatchNorm does
            momentum = 1.0 / float(self.num_batches_tracked)
        else:
            momentum = self.momentum
        unbiased = var * (n / (n - 1).clamp_min(1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


_PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_sync_batchnorm(module: nn.Module, backend: str | None = None) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by batch norm synchronised across
    the ranks; returns the converted module (a new one if ``module`` itself is a batch norm).

    Under ``nccl`` (GPUs) that is PyTorch's :class:`torch.nn.SyncBatchNorm`
    (``nn.SyncBatchNorm.convert_sync_batchnorm``); under ``gloo`` (CPUs), where PyTorch's
    refuses to run ("SyncBatchNorm expected input tensor to be on GPU"), it is
    :class:`AllReduceBatchNorm`. ``backend=None`` takes the backend of the initialised
    process group. Weights, biases and running statistics are kept (the same tensors).
    """
    if backend is None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "convert_sync_batchnorm needs the backend: call it after the process group is "
                "initialised (under torchrun, or inside run_world), or pass backend='gloo' or "
                "backend='nccl'."
            )
        backend = dist.get_backend()
    if backend == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if backend != "gloo":
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}.")
    return _to_all_reduce_bn(module)


def _to_all_reduce_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, _PLAIN_BATCH_NORMS):
        synced = AllReduceBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=module.running_mean.device if module.running_mean is not None else None,
        )
        if module.affine:
            synced.weight = module.weight
            synced.bias = module.bias
        if module.track_running_stats:
            synced.running_mean = module.running_mean
            synced.running_var = module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        converted = _to_all_reduce_bn(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


# --------------------------------------------------------------------------- torchrun


def torchrun_world_size() -> int:
    """The number of processes ``torchrun`` launched (its ``WORLD_SIZE``); 1 without torchrun."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"WORLD_SIZE={text!r} is not a whole number; torchrun sets it (unset it otherwise)."
        ) from None


def backend_for(device: torch.device | str) -> str:
    """The process group backend :func:`process_group` joins for ``device``: ``"nccl"`` on
    CUDA GPUs, ``"gloo"`` on anything else (CPU tensors)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(
    device: torch.device, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[tuple[int, int]]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1), join the process group for the time of the
    ``with`` block: ``nccl`` on CUDA (each process on GPU ``LOCAL_RANK``), ``gloo`` otherwise.
    Yields ``(rank, world_size)``: ``(0, 1)`` without torchrun, where it does nothing.

    Every collective (gradient all-reduce, barrier, broadcast) fails after ``timeout``
    seconds without the other ranks, so a worker that dies or stops ends the run with an
    error instead of a hang. A group that is already initialised is used as it is.
    """
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a finite number of seconds above 0, got {timeout!r}.")
    world = torchrun_world_size()
    if world <= 1 or dist.is_initialized():
        yield (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout))
    rank = dist.get_rank()
    try:
        yield rank, world
    except RuntimeError as error:
        if not is_communication_error(error):
            raise
        raise RuntimeError(
            f"rank {rank} of {world} lost contact with the other processes: one of them died, "
            f"was killed, or did not answer within the {timeout:g} s timeout (torchrun's "
            f"report names the first process that failed). {dist.get_backend()} said: "
            f"{' '.join(str(error).split())}"
        ) from error
    finally:
        dist.destroy_process_group()


def is_communication_error(error: BaseException) -> bool:
    """True for the errors a collective raises when another process is gone or too slow
    (torch's ``DistError`` family, or a gloo or NCCL transport error or timeout)."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return "gloo" in text or "NCCL" in text or "Timed out" in text
