"""A world of processes on one machine: :func:`run_world` starts N local processes joined in
a process group (gloo, a free localhost port), runs a function in each and returns what each
returned. A worker that raises or dies ends it with a :class:`WorkerError` that carries the
worker's traceback; a timeout ends a hang. Notebook 09 runs its experiments in it
(:mod:`resnet_lessons.experiments.parallel`).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .._checks import check_int

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
    _check_world(fn, world_size, timeout, threads, backend)

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


def _check_world(
    fn: Callable[..., Any], world_size: int, timeout: float, threads: int, backend: str
) -> None:
    """Refuse what :func:`run_world` cannot run, before any process starts: a function the
    spawned workers cannot import by name, a timeout or a backend that makes no sense."""
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
