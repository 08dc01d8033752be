"""Data-parallel training: a world of processes, all-reduce, synchronised batch norm.

Data parallelism (D2L, "Training on Multiple GPUs"): every worker holds a copy of the
network, computes the gradient on its share of each global batch, and an **all-reduce**
sums (then averages) the gradients, so every worker takes the same step. On a laptop the
workers are processes that talk over ``gloo``; on GPUs the same code runs over ``nccl``.

* :func:`run_world` (:mod:`.world`) starts N local processes joined in a process group (gloo, a free
  localhost port), runs a function in each and returns what each returned. A worker that
  raises or dies ends it with a :class:`WorkerError` that carries the worker's traceback;
  a timeout ends a hang.
* :func:`ring_all_reduce`: the all-reduce built by hand from sends and receives, the ring
  algorithm (reduce-scatter, then all-gather) that gloo and NCCL use for large tensors.
* :class:`AllReduceBatchNorm`, :func:`convert_sync_batchnorm`, :func:`process_group` and
  :func:`share` are the trainer's (:mod:`resnet_lessons.training.distributed`), named here
  too because the notebook shows them.
* The experiments of notebook 09: :func:`world_gradients` (in a worker: the gradient of a
  share of the batch, averaged by DDP) against :func:`big_batch_gradients` (one process,
  the whole batch), compared with :func:`relative_difference`; the linear learning-rate
  scaling rule (:func:`scale_lr`, :func:`train_sgd`); the costs (:func:`gradient_bytes`,
  :func:`ring_bytes`, :func:`time_compute_and_all_reduce`, :func:`time_steps`).

Nothing here runs on import; functions meant to run inside a worker say so.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from ..data import shuffled_batches
from ..training.distributed import (
    DEFAULT_TIMEOUT,
    AllReduceBatchNorm,
    all_reduce_sum,
    convert_sync_batchnorm,
    distributed,
    is_communication_error,
    process_group,
    share,
    torchrun_world_size,
)
from ..training.recipes import scale_lr, warmup_schedule
from ..training.steps import run_steps, train_step
from .world import LOCALHOST, WorkerError, run_world

__all__ = [
    "BN_SETTINGS",
    "DEFAULT_TIMEOUT",
    "LOCALHOST",
    "AllReduceBatchNorm",
    "WorkerError",
    "all_reduce_demo",
    "all_reduce_sum",
    "big_batch_gradients",
    "convert_sync_batchnorm",
    "distributed",
    "gradient_bytes",
    "is_communication_error",
    "process_group",
    "relative_difference",
    "ring_all_reduce",
    "ring_bytes",
    "run_world",
    "scale_lr",
    "share",
    "time_compute_and_all_reduce",
    "time_steps",
    "torchrun_world_size",
    "train_sgd",
    "world_gradients",
]

# --------------------------------------------------------------------------- all-reduce by hand


def ring_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks with sends and receives alone; returns the sum (the input
    is left as it was). Run it inside a worker (``torch.distributed`` initialised).

    The ring algorithm: the W ranks stand in a ring and the tensor is cut into W chunks.
    *Reduce-scatter*: W - 1 times, every rank passes one chunk to its right-hand neighbour,
    which adds it to its own; afterwards rank r holds the full sum of chunk r + 1. *All-gather*:
    W - 1 more times, every rank passes a finished chunk on. Each rank sends
    ``2 (W - 1) / W`` times the tensor's size in all, whatever W is: that is why the
    all-reduce of data-parallel training scales to many GPUs. Shapes: any ``(...) -> (...)``.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    flat = tensor.detach().clone().reshape(-1)
    chunks = list(flat.tensor_split(world))  # views into flat, sizes differ by <= 1
    right, left = (rank + 1) % world, (rank - 1) % world
    for step in range(world - 1):  # reduce-scatter
        send, receive = (rank - step) % world, (rank - step - 1) % world
        incoming = torch.empty_like(chunks[receive])
        _exchange(chunks[send], right, incoming, left)
        chunks[receive] += incoming
    for step in range(world - 1):  # all-gather
        send, receive = (rank + 1 - step) % world, (rank - step) % world
        _exchange(chunks[send], right, chunks[receive], left)
    return flat.reshape(tensor.shape)


def _exchange(out: torch.Tensor, to: int, into: torch.Tensor, source: int) -> None:
    """Send ``out`` to rank ``to`` while receiving into ``into`` from rank ``source``."""
    request = dist.isend(out.contiguous(), to)
    dist.recv(into, source)  # into is a contiguous slice of a flat tensor: received in place
    request.wait()


def all_reduce_demo(values: int = 6) -> dict[str, list[float]]:
    """Run in a worker: rank r holds ``[10 r + 1, 10 r + 2, ...]`` (``values`` numbers), sums
    it over the ranks with :func:`ring_all_reduce` and with ``dist.all_reduce``; returns
    ``{"before": ..., "ring": ..., "builtin": ...}`` as lists."""
    rank = dist.get_rank()
    mine = torch.arange(1, values + 1, dtype=torch.float32) + 10 * rank
    builtin = mine.clone()
    dist.all_reduce(builtin)  # gloo's own all-reduce (SUM)
    return {"before": mine.tolist(), "ring": ring_all_reduce(mine).tolist(),
            "builtin": builtin.tolist()}  # fmt: skip


# --------------------------------------------------------------------------- the same gradient


#: The three ways batch norm can run in notebook 09's comparison: name -> (train mode,
#: synchronised). In eval mode BN is a fixed per-channel scale and shift, as if the network
#: had no batch norm; in train mode it normalises with the statistics of the batch it sees.
BN_SETTINGS: dict[str, tuple[bool, bool]] = {
    "BN in eval mode": (False, False),
    "BN per worker": (True, False),
    "synchronised BN": (True, True),
}


def big_batch_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Mapping[str, tuple[bool, bool]] | None = None,
) -> dict[str, list[torch.Tensor]]:
    """In this process, the gradient of the mean cross-entropy over the whole batch, one
    tensor per parameter, for each setting ``name -> (train mode, synchronised)`` (default
    :data:`BN_SETTINGS`; one process has nothing to synchronise, so only the mode counts).
    ``model`` is left unchanged. Shapes: ``images (N, ...)``, ``labels (N,)``."""
    out = {}
    for name, (train, _) in _settings(settings).items():
        copy_ = copy.deepcopy(model).train(train)
        F.cross_entropy(copy_(images), labels).backward()
        out[name] = [p.grad.detach().clone() for p in copy_.parameters()]
    return out


def world_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: Mapping[str, tuple[bool, bool]] | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Run in a worker: for each setting ``name -> (train mode, synchronised)`` (default
    :data:`BN_SETTINGS`), this rank's share of the batch (:func:`share`) goes through
    ``DistributedDataParallel`` of a copy of ``model`` (its batch norms converted by
    :func:`convert_sync_batchnorm` when synchronised); returns the gradients DDP averaged
    over the ranks, the same on every rank. With equal shares that is the gradient of the
    mean loss over the whole batch, if nothing in the network depends on the batch."""
    rank, world = dist.get_rank(), dist.get_world_size()
    part = share(images.shape[0], rank, world)
    out = {}
    for name, (train, synchronised) in _settings(settings).items():
        copy_ = copy.deepcopy(model).train(train)
        if synchronised:
            copy_ = convert_sync_batchnorm(copy_)
        ddp = nn.parallel.DistributedDataParallel(copy_)
        loss = F.cross_entropy(ddp(images[part]), labels[part])  # mean over this rank's share
        loss.backward()  # DDP all-reduces the gradients here and divides them by world
        out[name] = [p.grad.detach().clone() for p in copy_.parameters()]
    return out


def _settings(settings: Mapping[str, tuple[bool, bool]] | None) -> Mapping[str, tuple[bool, bool]]:
    settings = BN_SETTINGS if settings is None else settings
    for name, value in settings.items():
        if not (isinstance(value, tuple) and len(value) == 2):
            raise TypeError(
                f"setting {name!r} must be a pair (train mode, synchronised), got {value!r}."
            )
    return settings


def relative_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """How far gradient ``a`` is from gradient ``b``, relative to the size of ``b``:
    ``||a - b|| / ||b||`` over all the tensors together (one tensor per parameter), as if the
    gradients were two long vectors. About 1e-7 is float32 rounding; 1 is as large as the
    gradient itself."""
    if len(a) != len(b):
        raise ValueError(f"the two gradient lists differ in length: {len(a)} vs {len(b)}.")
    difference = norm = 0.0
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            raise ValueError(f"gradient shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}.")
        difference += (x.double() - y.double()).square().sum().item()
        norm += y.double().square().sum().item()
    if norm == 0:
        raise ValueError("gradient b is zero everywhere; there is nothing to compare against.")
    return math.sqrt(difference / norm)


# --------------------------------------------------------------------------- the learning rate


def train_sgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    lr: float,
    epochs: int = 1,
    warmup_steps: int = 0,
    momentum: float = 0.9,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` in place with SGD for ``epochs`` passes over ``images``; return each
    step's loss (before its update).

    ``warmup_steps`` > 0 ramps the learning rate linearly from ``lr / 25`` to ``lr`` over that
    many steps, then keeps it (Goyal et al.'s gradual warm-up). The order of the images is
    drawn from ``seed``, so runs with different batch sizes see the same images in the same
    order. The last, incomplete batch of an epoch is dropped.

    Shapes: ``images (N, ...)`` as the model takes them, ``labels (N,)`` int64.
    """
    check_int("batch_size", batch_size)
    check_int("epochs", epochs)
    check_int("warmup_steps", warmup_steps, 0)
    if batch_size > images.shape[0]:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {images.shape[0]} images; use a "
            "smaller batch or more images."
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    schedule = warmup_schedule(optimizer, warmup_steps)  # lr * warmup_factor(step)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * (images.shape[0] // batch_size)  # a new shuffle every epoch
    indices = shuffled_batches(images.shape[0], batch_size, steps, generator)
    batches = ((images[i], labels[i]) for i in indices)
    return run_steps(model, optimizer, batches, scheduler=schedule)


# --------------------------------------------------------------------------- costs


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of gradient one step all-reduces: every trainable parameter's size."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def ring_bytes(n_bytes: float, world_size: int) -> float:
    """Bytes each of ``world_size`` workers sends (and receives) in a ring all-reduce of
    ``n_bytes``: ``2 (W - 1) / W * n_bytes``, less than twice the gradient however many
    workers there are."""
    check_int("world_size", world_size)
    return 2 * (world_size - 1) / world_size * n_bytes


def time_compute_and_all_reduce(
    cases: Mapping[str, tuple[nn.Module, torch.Tensor, torch.Tensor, int]],
) -> dict[str, dict[str, float]]:
    """Run in a worker: for each case ``name -> (model, images, labels, repeats)``, the median
    seconds of this rank's forward and backward pass on its share of the batch
    (``"compute"``, no communication), of one ``dist.all_reduce`` of a buffer the size of
    the model's gradient (``"all_reduce"``), and of a whole DDP training step
    (``"ddp_step"``: compute, all-reduce and SGD update), plus the gradient's ``"bytes"``.
    Each is timed ``repeats`` times after one untimed warm-up, all ranks starting together."""
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}
    for name, (model, images, labels, repeats) in cases.items():
        check_int("repeats", repeats)
        part = share(images.shape[0], rank, world)
        out[name] = _time_case(model, images[part], labels[part], repeats)
    return out


def _time_case(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int
) -> dict[str, float]:
    buffer = torch.zeros(gradient_bytes(model) // 4)  # float32 gradients, flattened

    def compute() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def ddp_step() -> None:
        train_step(ddp, optimizer, x, y)

    return {
        "compute": _median_seconds(compute, repeats),
        "all_reduce": _median_seconds(lambda: dist.all_reduce(buffer), repeats),
        "ddp_step": _median_seconds(ddp_step, repeats),
        "bytes": float(buffer.numel() * 4),
    }


def time_steps(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, repeats: int = 3
) -> float:
    """Median seconds of one SGD step (forward, backward, update) on the whole batch, in this
    process: the one-process baseline for :func:`time_compute_and_all_reduce`."""
    check_int("repeats", repeats)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        train_step(model, optimizer, images, labels)

    return _median_seconds(step, repeats)


def _median_seconds(work: Callable[[], Any], repeats: int) -> float:
    work()  # warm-up: first calls allocate memory and pick kernels
    if dist.is_initialized():
        dist.barrier()  # all ranks start timing together
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
