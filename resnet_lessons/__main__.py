"""Command line: ``python -m resnet_lessons train|figures|doctor``.

``train`` trains the lecture's ResNet-18 on Fashion-MNIST with a recipe and writes
``OUT/metrics.json`` and ``OUT/checkpoint.pt``::

    python -m resnet_lessons train --recipe fast --out runs/fast
    python -m resnet_lessons train --recipe fast --out runs/fast --resume   # after a kill
    python -m resnet_lessons train --minutes 3 --out runs/3min   # sized to this machine
    python -m resnet_lessons doctor   # versions, CPU features, data, expected times
    torchrun --standalone --nproc_per_node=2 -m resnet_lessons train --recipe fast
    torchrun --standalone --nproc_per_node=4 -m resnet_lessons train --batch-size 1024 \
        --scale-lr --sync-bn   # 256 images per process, lr x 4 with warm-up, global BN

Errors (bad flags, missing or corrupt data, an unavailable device) end with one line on
stderr and exit code 2 (bad flags) or 1 (anything else), without a traceback; set
``RESNET_LESSONS_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

#: ``--dist-timeout``'s default: resnet_lessons.training.distributed.DEFAULT_TIMEOUT (not
#: imported here: ``--help`` stays fast without torch).
DIST_TIMEOUT = 600.0

#: Files ``train`` writes in ``--out``.
#: Live points a run takes by default, as many as a notebook's live plot
#: (``resnet_lessons.training.epoch.LIVE_POINTS``; a test keeps the two equal).
LIVE_POINTS = 20
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"


class CommandError(Exception):
    """An error to report as one line on stderr (exit code 1)."""


def _number(convert: Callable[[str], float], minimum: float, *, strict: bool = False):
    """An argparse ``type``: ``convert(text)``, finite and >= ``minimum`` (> with ``strict``)."""
    kind = "a whole number" if convert is int else "a number"
    bound = f"a finite number above {minimum}" if strict else f"at least {minimum}"

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1)
_non_negative_int = _number(int, 0)
_positive_float = _number(float, 0, strict=True)


class _Parser(argparse.ArgumentParser):
    """argparse, but the error is one line: ``resnet_lessons train: error: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m resnet_lessons",
        description="ResNet lessons: train ResNet-18 on Fashion-MNIST, or draw the figures.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train ResNet-18 on Fashion-MNIST",
        description="Train the lecture's ResNet-18 on Fashion-MNIST; writes OUT/metrics.json "
        "and OUT/checkpoint.pt. Runs under torchrun as DistributedDataParallel.",
    )
    train.add_argument(
        "--recipe",
        choices=("fast", "lecture"),
        default="fast",
        help="fast: 28x28 one-cycle recipe for a CPU (default); lecture: the lecture's exact "
        "settings (96x96, lr 0.05, 10 epochs)",
    )
    train.add_argument("--epochs", type=_positive_int, help="override the recipe's epochs")
    train.add_argument(
        "--minutes",
        type=_positive_float,
        help="train for about this long: a short probe measures this machine and the run "
        "takes as many steps as fit (the one-cycle schedule spans exactly those)",
    )
    train.add_argument("--batch-size", type=_positive_int, help="global batch size (all ranks)")
    train.add_argument("--lr", type=_positive_float, help="(peak) learning rate")
    train.add_argument("--resize", type=_positive_int, help="resize images to N x N pixels")
    train.add_argument("--limit-train", type=_positive_int, help="train on the first N images only")
    train.add_argument(
        "--limit-test", type=_positive_int, help="evaluate on the first N test images only"
    )
    train.add_argument("--data-root", help="folder with the Fashion-MNIST files")
    train.add_argument(
        "--out", default="runs/train", help="folder for metrics.json and checkpoint.pt"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists"
    )
    train.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    train.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    train.add_argument(
        "--live-points",
        type=_non_negative_int,
        default=LIVE_POINTS,
        metavar="N",
        help=f"points taken during the run for the training curves, as a notebook's live plot "
        f"takes them (metrics.json's 'points'; a budget counts their time; default "
        f"{LIVE_POINTS}, 0 for none)",
    )
    train.add_argument(
        "--no-progress", action="store_true", help="no progress bar (one line per epoch)"
    )
    _add_parallel_arguments(train)

    doctor = commands.add_parser(
        "doctor",
        help="check this machine: versions, CPU features, data, expected training times",
        description="Check Python and the packages, the CPU (AVX2, AVX-512, BF16, AMX, NEON) "
        "and any GPU, where Fashion-MNIST is, whether JupyterLab draws the widgets; then time "
        "a few training steps and say how long the recipes take here. Exit 1 with the fix "
        "when something essential is missing.",
    )
    doctor.add_argument(
        "--no-probe", action="store_true", help="skip the few seconds of timed training steps"
    )

    figures = commands.add_parser(
        "figures",
        help="draw the figures of img/",
        description="Draw the block and network diagrams the notebooks show.",
    )
    figures.add_argument("--out", default="img", help="folder for the figures (default: img)")
    return parser


def _add_parallel_arguments(train: argparse.ArgumentParser) -> None:
    """``train``'s flags for a run of several processes under torchrun."""
    parallel = train.add_argument_group(
        "data parallel (under torchrun; --batch-size is the global batch of all processes)"
    )
    parallel.add_argument(
        "--sync-bn",
        action="store_true",
        help="synchronised batch norm: normalise with the statistics of the global batch, "
        "not each process's share (PyTorch's SyncBatchNorm under nccl on GPUs; on CPUs with "
        "gloo the package's all-reduce version). Needs torchrun with 2 or more processes",
    )
    parallel.add_argument(
        "--scale-lr",
        action="store_true",
        help="linear scaling rule (Goyal et al. 2017): multiply the learning rate (the "
        "recipe's, or --lr) by the global batch size / the recipe's batch size, and warm "
        "it up (the fast recipe's one-cycle already does; the lecture recipe gets a linear "
        "warm-up over its first quarter of the steps)",
    )
    parallel.add_argument(
        "--dist-timeout",
        type=_positive_float,
        default=DIST_TIMEOUT,
        metavar="SECONDS",
        help="how long a process waits for the others in a collective before the run ends "
        f"with an error instead of hanging (default {DIST_TIMEOUT:g}; more than rank 0's "
        "slowest evaluation, which the others wait for)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "doctor":
            from .doctor import run

            return run(probe=not args.no_probe)
        return _figures(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, TypeError, OSError, RuntimeError) as error:
        if os.environ.get("RESNET_LESSONS_DEBUG"):
            raise  # the full traceback, for debugging
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1


def _figures(args: argparse.Namespace) -> int:
    from .diagrams import save_figures

    out = Path(args.out)
    written = save_figures(out)
    if written:
        for path in written:
            print(path)
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from . import resnet18, set_seed
    from .runtime import resolve_device
    from .training import fit
    from .training.distributed import convert_sync_batchnorm, process_group, torchrun_world_size

    if args.minutes is not None and args.epochs is not None:
        raise CommandError(
            f"--minutes {args.minutes:g} and --epochs {args.epochs} both set the length of the "
            "run; give one of them"
        )
    world = torchrun_world_size()
    if args.sync_bn and world <= 1:
        raise CommandError(
            "--sync-bn synchronises batch norm across processes, but this run has one process "
            f"(WORLD_SIZE={os.environ.get('WORLD_SIZE', 'unset')}); launch it with torchrun "
            "--nproc_per_node=N (N >= 2) ... -m resnet_lessons train --sync-bn, or drop --sync-bn"
        )
    recipe, batch_size, lr, scaling = _recipe_and_lr(args)
    device = resolve_device(args.device)  # before anything slow: a clear error for 'cuda'
    out = Path(args.out)
    checkpoint = out / CHECKPOINT_FILE
    with process_group(device, timeout=args.dist_timeout) as (rank, world):
        data = _load_data(args)
        resume = args.resume and checkpoint.exists()
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            if not args.resume and checkpoint.exists():
                checkpoint.unlink()  # a fresh run: do not leave an old, unrelated checkpoint

        def report(entry: dict[str, float]) -> None:
            if args.no_progress:
                print(
                    f"epoch {entry['epoch']}: loss {entry['train_loss']:.4f}, "
                    f"train acc {entry['train_acc']:.4f}, test acc {entry['test_acc']:.4f}, "
                    f"{entry['seconds']:.1f} s",
                    flush=True,
                )

        set_seed(args.seed)
        model = resnet18()
        backend = dist.get_backend() if dist.is_initialized() else None
        if args.sync_bn:
            model = convert_sync_batchnorm(model, backend)
        history = fit(
            model,
            data,
            recipe,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=lr,
            resize=args.resize,
            device=device,
            seed=args.seed,
            checkpoint=checkpoint,
            resume=resume,
            progress=not args.no_progress,
            plot=False,
            on_epoch=report,
            budget=None if args.minutes is None else args.minutes * 60,
            verbose=True,
            live_points=args.live_points,
        )
        if rank == 0:
            chosen = {"batch_size": batch_size, "lr": lr, "schedule": recipe.schedule,
                      "scale_lr": scaling}  # fmt: skip
            metrics = _metrics(args, history, device, world, backend, model, data, chosen)
            _write_json(out / METRICS_FILE, metrics)
            print(
                f"test accuracy {history[-1]['test_acc']:.4f}; wrote {out / METRICS_FILE}",
                flush=True,
            )
    return 0


def _recipe_and_lr(args: argparse.Namespace) -> tuple[Any, int, float, dict | None]:
    """The recipe, batch size and learning rate the flags ask for; with ``--scale-lr`` the
    learning rate scaled to the batch (and warmed up), and how it was scaled."""
    import dataclasses

    from .training.recipes import get_recipe, scale_lr

    recipe = get_recipe(args.recipe)
    batch_size = args.batch_size or recipe.batch_size
    lr = args.lr or recipe.lr
    scaling = None
    if args.scale_lr:
        scaled = scale_lr(lr, batch_size, recipe.batch_size)
        scaling = {"base_lr": lr, "base_batch_size": recipe.batch_size,
                   "factor": batch_size / recipe.batch_size}  # fmt: skip
        lr = scaled
        if recipe.schedule == "constant":  # the onecycle schedule warms up already
            recipe = dataclasses.replace(recipe, schedule="warmup")
    return recipe, batch_size, lr, scaling


def _load_data(args: argparse.Namespace) -> Any:
    """Fashion-MNIST from ``--data-root`` (or where it is found), cut to ``--limit-*``."""
    from .data import find_fashion_mnist, load_fashion_mnist

    if args.data_root is not None:
        root = Path(args.data_root).resolve()
        found = find_fashion_mnist(root).resolve()
        if found != root and root not in found.parents:  # found elsewhere: say so
            raise CommandError(
                f"--data-root {args.data_root}: no Fashion-MNIST files there (they were "
                f"found in {found} instead); give the folder that holds the four .gz files"
            )
    data = load_fashion_mnist(args.data_root)
    n_train = len(data.train_labels)
    n_test = len(data.test_labels)
    for flag, limit, available in (
        ("--limit-train", args.limit_train, n_train),
        ("--limit-test", args.limit_test, n_test),
    ):
        if limit is not None and limit > available:
            raise CommandError(f"{flag} {limit} is more than the {available} images there are")
    return data.subset(args.limit_train, args.limit_test)


def _metrics(args, history, device, world, backend, model, data, chosen) -> dict:
    """What ``metrics.json`` records about a finished run (rank 0); ``chosen``: the batch
    size, learning rate, schedule and lr scaling the run used."""
    from .training.speed import cpu_info

    plan = history.plan
    return {
        "recipe": args.recipe,
        "device": device.type,
        "machine": cpu_info().describe() if device.type == "cpu" else device.type,
        "cpu_kind": cpu_info().kind if device.type == "cpu" else None,
        "speedups": history.speedups.describe() if history.speedups else None,
        "plan": plan.to_dict() if plan is not None else None,
        "plan_text": plan.describe() if plan is not None else None,
        "history": list(history),
        "points": list(history.points),
        "test_acc": history[-1]["test_acc"],
        "processes": world,
        "backend": backend,
        **chosen,
        "sync_bn": args.sync_bn,
        "batch_norm": _batch_norm_kind(model),
        "dist_timeout": args.dist_timeout if world > 1 else None,
        "train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
    }


def _batch_norm_kind(model) -> str | None:
    """The class name of the model's batch norm layers (``BatchNorm2d``, ``SyncBatchNorm``,
    ``AllReduceBatchNorm``), or None without any."""
    from torch.nn.modules.batchnorm import _NormBase

    kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _NormBase)})
    return ", ".join(kinds) or None


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def under_torchrun() -> bool:
    """True in a worker that ``torchrun`` started for a run of several processes."""
    if "WORLD_SIZE" not in os.environ:
        return False  # no torch import for that (torchrun's workers have torch loaded)
    from .training.distributed import torchrun_world_size

    try:
        return torchrun_world_size() > 1
    except ValueError:
        return False  # main() reports the bad value


def leave(code: int, *, hard: bool) -> NoReturn:
    """Exit with ``code``; with ``hard``, skip the interpreter's teardown (``os._exit``)
    once stdout and stderr are flushed.

    Why a torchrun worker leaves hard: ``DistributedDataParallel`` keeps the gloo process
    group, and its three threads, alive after ``destroy_process_group`` (measured with
    torch 2.14.1: none are left without DDP, three with it). Tearing the interpreter down
    with those threads running can hang (pytorch/pytorch#190489: C++ threads taking the GIL
    while Python finalises). One CI run showed that symptom: rank 0 wrote metrics.json, its
    last line came out (flushed at teardown), and its launch never ended, so the test gave
    up after 300 s (155 two-node runs here, on AVX2, did not repeat it). Nothing is left to
    do by then: the files are written and closed, the process group is destroyed.
    """
    if not hard:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


if __name__ == "__main__":
    leave(main(), hard=under_torchrun())
