"""Data-parallel training: a world of processes, all-reduce, synchronised batch norm.

Data parallelism (D2L, "Training on Multiple GPUs"): every worker holds a copy of the
network, computes the gradient on its share of each global batch, and an **all-reduce**
sums (then averages) the gradients, so every worker takes the same step. On a laptop the
workers are processes that talk over ``gloo``; on GPUs the same code runs over ``nccl``.

* :func:`run_world` starts N local processes joined in a process group (gloo, a free
  localhost port), runs a function in each and returns what each returned. A worker that
  raises or dies ends it with a :class:`WorkerError` that carries the worker's traceback;
  a timeout ends a hang.
* :func:`ring_all_reduce`: the all-reduce built by hand from sends and receives, the ring
  algorithm (reduce-scatter, then all-gather) that gloo and NCCL use for large tensors.
* :class:`AllReduceBatchNorm`: batch norm whose statistics cover the global batch: each
  layer's per-channel sum, sum of squares and count are all-reduced (differentiably). It
  runs on CPUs with gloo, where PyTorch's :class:`torch.nn.SyncBatchNorm` refuses to;
  :func:`convert_sync_batchnorm` picks PyTorch's under nccl and this one under gloo.
* :func:`process_group`: joins the process group of a ``torchrun`` launch, with a timeout
  on every collective, so a dead or stuck worker ends the run instead of hanging it.
* The experiments of notebook 09: :func:`world_gradients` (in a worker: the gradient of a
  share of the batch, averaged by DDP) against :func:`big_batch_gradients` (one process,
  the whole batch), compared with :func:`relative_difference`; the linear learning-rate
  scaling rule (:func:`scale_lr`, :func:`train_sgd`); the costs (:func:`gradient_bytes`,
  :func:`ring_bytes`, :func:`time_compute_and_all_reduce`, :func:`time_steps`).

Nothing here runs on import; functions meant to run inside a worker say so.
"""

from __future__ import annotations

import contextlib
import copy
import math
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._checks import check_int
from .depth import shuffled_batches
from .recipes import warmup_factor

#: Seconds a collective (all-reduce, barrier, broadcast) may wait for the other workers
#: before it fails: longer than rank 0's slowest evaluation, which the others wait for.
DEFAULT_TIMEOUT = 600.0

#: The loopback address the workers of :func:`run_world` meet at.
LOCALHOST = "127.0.0.1"


# --------------------------------------------------------------------------- a world of processes


class WorkerError(RuntimeError):
    """A worker of :func:`run_world` raised or died. ``rank`` says which; ``worker_traceback``
    is the traceback printed in the worker (empty when it died without one)."""

    def __init__(self, message: str, rank: int, worker_traceback: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.worker_traceback = worker_traceback


def run_world(
    fn: Callable[..., Any],
    world_size: int = 2,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    timeout: float = 120.0,
    threads: int = 1,
    backend: str = "gloo",
) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` in ``world_size`` new local processes joined in one process
    group; return what each returned, in rank order.

    Inside ``fn``, ``torch.distributed`` is initialised (``dist.get_rank()``,
    ``dist.all_reduce(...)``, ``DistributedDataParallel``...). The processes are *spawned*
    (fresh interpreters, as ``torchrun`` starts them), so ``fn`` must be importable by name:
    a function of a module, not a lambda or a function defined in a notebook cell; ``args``,
    ``kwargs`` and the results must be picklable. They meet at a free port on 127.0.0.1.

    Args:
        fn: the function each worker runs.
        world_size: how many processes (ranks 0 .. world_size - 1).
        timeout: seconds for the whole run, and for each collective inside it: past it the
            workers are stopped and :class:`TimeoutError` is raised, instead of a hang.
        threads: PyTorch threads per worker (``torch.set_num_threads``): one each suits a
            laptop, whose cores the workers share.
        backend: ``"gloo"`` (CPU tensors); ``"nccl"`` needs one GPU per worker.

    Raises:
        WorkerError: a worker raised (its traceback is in the message) or died (its exit
            code and signal are); the other workers are stopped.
        TimeoutError: not every worker finished within ``timeout`` seconds.
    """
    check_int("world_size", world_size, 1)
    check_int("threads", threads, 1)
    qualname = getattr(fn, "__qualname__", "<lambda>")
    if not callable(fn) or "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(
            f"fn must be a module-level function (the workers import it by name), got {fn!r}."
        )
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" and not hasattr(main, "__file__"):
        raise TypeError(
            f"{fn.__name__} is defined in a notebook or an interactive session, so the worker "
            "processes cannot import it. Put it in a module (a .py file) and import it from there."
        )
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a finite number of seconds above 0, got {timeout!r}.")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' (CPUs) or 'nccl' (GPUs), got {backend!r}.")

    # The parent hosts the rendezvous store on a port the OS picks: no port can be taken twice.
    store = dist.TCPStore(
        LOCALHOST,
        0,
        is_master=True,
        wait_for_workers=False,
        timeout=timedelta(seconds=timeout),
    )
    context = mp.get_context("spawn")
    results: queue.Queue = context.Queue()
    processes = [
        context.Process(
            target=_worker,
            args=(rank, world_size, store.port, fn, tuple(args), dict(kwargs or {}), results),
            kwargs={"backend": backend, "timeout": timeout, "threads": threads},
            daemon=True,
            name=f"run_world-rank{rank}",
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    try:
        return _collect(processes, results, timeout, fn.__name__)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(timeout=10)
        results.close()
        del store


def _worker(
    rank: int,
    world_size: int,
    port: int,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    results: mp.Queue,
    *,
    backend: str,
    timeout: float,
    threads: int,
) -> None:
    """One rank of :func:`run_world`: join the group, run ``fn``, send back its result or
    its traceback (pickled here, so a result that cannot be pickled is reported too)."""
    torch.set_num_threads(threads)
    joined = False
    try:
        limit = timedelta(seconds=timeout)
        store = dist.TCPStore(LOCALHOST, port, is_master=False, timeout=limit)
        dist.init_process_group(
            backend, store=store, rank=rank, world_size=world_size, timeout=limit
        )
        joined = True
        value = fn(*args, **kwargs)
        dist.barrier()  # nobody leaves while another still talks to it
        results.put((rank, "ok", pickle.dumps(value)))
    except BaseException:  # noqa: B036 (everything goes back to the parent, KeyboardInterrupt too)
        results.put((rank, "error", traceback.format_exc()))
    finally:
        if joined:
            dist.destroy_process_group()


def _collect(
    processes: list[mp.Process], results: mp.Queue, timeout: float, name: str
) -> list[Any]:
    """Wait for every worker's result. The first failure ends the wait; a worker that only
    lost contact with another (a gloo error, a timeout) is reported after the root cause,
    a worker that raised or died, if that shows within a second or two."""
    world_size = len(processes)
    deadline = time.monotonic() + timeout
    done: dict[int, Any] = {}
    lost_contact: tuple[int, str] | None = None  # (rank, traceback) of a consequence
    grace = math.inf  # when to stop waiting for the root cause of a lost contact
    while len(done) < world_size:
        try:
            rank, status, payload = results.get(timeout=0.05)
        except queue.Empty:
            dead = [
                r
                for r, p in enumerate(processes)
                if p.exitcode not in (None, 0) or (p.exitcode == 0 and r not in done)
            ]
            if dead:
                try:  # what a worker put just before it exited may still be in the pipe
                    rank, status, payload = results.get(timeout=1.0)
                except queue.Empty:
                    _raise_died(processes, dead[0], name, lost_contact)
            elif lost_contact is not None and time.monotonic() > grace:
                _raise_error(world_size, *lost_contact, name)
            elif time.monotonic() > deadline:
                waiting = ", ".join(str(r) for r in range(world_size) if r not in done)
                raise TimeoutError(
                    f"{name} did not finish within {timeout:g} s in {world_size} processes "
                    f"(still running: rank {waiting}). A worker may be waiting in a "
                    "collective another one never reached; if the work is just slow, raise "
                    "timeout=."
                ) from None
            else:
                continue
        if status == "ok":
            done[rank] = pickle.loads(payload)
        elif _lost_contact(payload) and lost_contact is None:
            lost_contact = (rank, payload)  # wait a little for the root cause
            grace = time.monotonic() + 2.0
            done[rank] = None
        elif not _lost_contact(payload):
            _raise_error(world_size, rank, payload, name)
    if lost_contact is not None:
        _raise_error(world_size, *lost_contact, name)
    return [done[rank] for rank in range(world_size)]


def _lost_contact(worker_traceback: str) -> bool:
    last = worker_traceback.strip().splitlines()[-1] if worker_traceback.strip() else ""
    return "gloo" in last or "NCCL" in last or "Timed out" in last or "DistBackendError" in last


def _raise_error(world_size: int, rank: int, worker_traceback: str, name: str) -> None:
    last = worker_traceback.strip().splitlines()[-1] if worker_traceback.strip() else "an error"
    raise WorkerError(
        f"worker {rank} of {world_size} ({name}) raised {last}\n\n"
        f"Traceback in worker {rank}:\n{worker_traceback}",
        rank,
        worker_traceback,
    )


def _raise_died(
    processes: list[mp.Process], rank: int, name: str, lost_contact: tuple[int, str] | None
) -> None:
    code = processes[rank].exitcode
    then = ""
    if lost_contact is not None:
        then = f" Worker {lost_contact[0]} then lost contact with it."
    raise WorkerError(
        f"worker {rank} of {len(processes)} ({name}) died with {_exit_text(code)} before "
        "returning (what it printed went to this process's stderr); the other workers were "
        f"stopped.{then}",
        rank,
    ) from None


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"signal {-code} (exit code {code})"
    return f"exit code {code}"


def share(batch: int, rank: int, world_size: int) -> slice:
    """This rank's part of a global batch of ``batch`` items: contiguous, sizes differ by <= 1
    (the split :func:`~resnet_lessons.train.fit` uses)."""
    base, extra = divmod(batch, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def distributed() -> tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` unless ``torch.distributed`` is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


def scale_lr(lr: float, batch_size: int, base_batch_size: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): when the batch grows k-fold, multiply the
    learning rate by k. ``lr`` suits ``base_batch_size``; returns the rate for
    ``batch_size``. With k times fewer steps per epoch, each step must go k times further."""
    check_int("batch_size", batch_size)
    check_int("base_batch_size", base_batch_size)
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number above 0, got {lr!r}.")
    return lr * batch_size / base_batch_size


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
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    steps = epochs * (images.shape[0] // batch_size)  # a new shuffle every epoch
    for step, index in enumerate(shuffled_batches(images.shape[0], batch_size, steps, generator)):
        for group in optimizer.param_groups:
            group["lr"] = lr * warmup_factor(step, warmup_steps)
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


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
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()

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
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

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
