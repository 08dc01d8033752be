"""Training images per second: the lecture's input pipeline against ours, at 96x96, same model.

    python benchmarks/throughput.py            # ~5 minutes on a 2-core laptop
    python benchmarks/throughput.py --steps 4 --rounds 1   # a quick look

Side by side, in one process, on the same ResNet-18 (``resnet18()``, the lecture's variant),
batch 256, SGD lr 0.05, counting whole training steps (data, forward, backward, update):

* ``lecture``: what students run: ``torchvision.datasets.FashionMNIST`` + ``DataLoader``
  (``num_workers=4`` as ``d2l.load_data_fashion_mnist``) + ``Compose([Resize(96), ToTensor()])``:
  every image through PIL, one at a time; NCHW, float32.
* ``ours fp32``: the uint8 tensors in memory, a batch = one indexing operation, normalised and
  resized on the device with ``F.interpolate`` (``resnet_lessons.data.prepare_batch``).
* ``ours channels_last``: the same, with the model in NHWC memory layout.
* ``ours cl+bf16``: NHWC and bfloat16 autocast (what ``Recipe(channels_last=True, bf16=True)``
  does): the ``ours`` of the issue.

``--clock cpu --threads 1`` counts this process's CPU time instead of the wall time (with the
DataLoader's work done in-process): a load-robust estimate for a shared machine.

Configurations alternate round by round, so a neighbour's load hits all of them alike; the
table shows the median and the best round. Results go to ``benchmarks/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine, table, write_results  # noqa: E402

from resnet_lessons import resnet18  # noqa: E402
from resnet_lessons.data import (  # noqa: E402
    FILES,
    find_fashion_mnist,
    iterate_batches,
    load_fashion_mnist,
    prepare_batch,
)


def torchvision_root(source: Path, into: Path) -> Path:
    """A folder torchvision's ``FashionMNIST(root, download=False)`` accepts: it wants the
    un-gzipped files in ``root/FashionMNIST/raw``."""
    raw = into / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, _ in FILES.values():
        gz = source / f"{name}.gz"
        if gz.exists():
            with gzip.open(gz) as f_in, open(raw / name, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
        else:
            (raw / name).symlink_to(source / name)
    return into


def lecture_batches(root: Path, batch_size: int, size: int, workers: int) -> Iterator:
    """The lecture's ``load_data_fashion_mnist(batch_size, resize=size)`` training iterator."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    trans = transforms.Compose([transforms.Resize(size), transforms.ToTensor()])
    train = datasets.FashionMNIST(str(root), train=True, transform=trans, download=False)
    loader = DataLoader(
        train,
        batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    while True:
        yield from loader


def our_batches(batch_size: int, size: int, channels_last: bool) -> Iterator:
    data = load_fashion_mnist()
    generator = torch.Generator().manual_seed(0)
    while True:
        for images, labels in iterate_batches(
            data.train_images, data.train_labels, batch_size, shuffle=True, generator=generator
        ):
            yield prepare_batch(images, "cpu", resize=size, channels_last=channels_last), labels


def make_step(channels_last: bool, bf16: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = resnet18()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = model(x)
        loss = F.cross_entropy(scores.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(
    batches: Iterator, step: Callable, steps: int, warmup: int, clock: Callable[[], float]
) -> float:
    """Images per second over ``steps`` training steps (data included), after ``warmup``."""
    for _ in range(warmup):
        step(*next(batches))
    images = 0
    start = clock()
    for _ in range(steps):
        x, y = next(batches)
        step(x, y)
        images += y.shape[0]
    return images / (clock() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96, help="image side (default 96)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (d2l: 4)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (the real thing, on a quiet machine); cpu: this process's "
        "CPU time, with --workers 0 so the PIL work is counted too: robust to neighbours' "
        "load, and with --threads 1 an estimate of the per-core cost",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default results/throughput.json)")
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.clock == "cpu" and args.workers:
        print("--clock cpu: using --workers 0 (the workers' CPU time would not be counted)")
        args.workers = 0
    if args.threads:
        torch.set_num_threads(args.threads)

    before = machine()
    configs = {
        "lecture (torchvision + DataLoader + PIL Resize, fp32)": (None, False, False),
        "ours fp32": ("ours", False, False),
        "ours channels_last": ("ours", True, False),
        "ours cl+bf16": ("ours", True, True),
    }
    rates: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(find_fashion_mnist(download=False), Path(tmp))
        lecture = lecture_batches(root, args.batch_size, args.size, args.workers)
        ours = {cl: our_batches(args.batch_size, args.size, cl) for cl in (False, True)}
        for r in range(args.rounds):
            for name, (kind, cl, bf16) in configs.items():
                batches = lecture if kind is None else ours[cl]
                rate = measure(batches, make_step(cl, bf16), args.steps, args.warmup, clock)
                rates[name].append(rate)
                print(f"round {r + 1}: {name}: {rate:.1f} images/s (load {load_average()})")
        del lecture  # stops the DataLoader workers

    base = statistics.median(rates[next(iter(configs))])
    base_best = max(rates[next(iter(configs))])
    rows = []
    for name, values in rates.items():
        med, best = statistics.median(values), max(values)
        rows.append(
            [name, f"{med:.1f}", f"{best:.1f}", f"{med / base:.2f}x", f"{best / base_best:.2f}x"]
        )
    header = ["pipeline", "median img/s", "best img/s", "ratio (median)", "ratio (best)"]
    print()
    print(
        f"Training throughput at {args.size}x{args.size}, batch {args.batch_size}, ResNet-18, "
        f"{args.clock} clock, {torch.get_num_threads()} threads, {args.workers} workers"
    )
    print(table(rows, header))
    results = {
        "benchmark": "throughput",
        "size": args.size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "workers": args.workers,
        "clock": args.clock,
        "images_per_second": rates,
        "ratio_median": {n: statistics.median(v) / base for n, v in rates.items()},
        "ratio_best": {n: max(v) / base_best for n, v in rates.items()},
        "machine_before": before,
        "load_after": load_average(),
    }
    name = "throughput" if args.clock == "wall" else "throughput_cpu_clock"
    path = write_results(name, results, args.out)
    print(
        f"\nwrote {path} (load average before {before['load_average_1min']}, "
        f"after {load_average()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
