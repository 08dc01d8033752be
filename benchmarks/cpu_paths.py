"""Training images per second at 28x28 for each way of computing the same ResNet-18 on a CPU.

    python benchmarks/cpu_paths.py             # ~3 minutes on a 2-core AVX2 laptop
    python benchmarks/cpu_paths.py --compile   # also torch.compile (adds a minute or two)

Side by side, in one process, on the same ``resnet18()`` with float32 weights, batch 256,
SGD with Nesterov momentum (the fast recipe's optimizer), whole training steps (batch
preparation, forward, backward, update), 28x28 images:

* ``NCHW fp32``: PyTorch's defaults, what a student's own loop does;
* ``NHWC fp32``: channels_last, what the fast recipe ran on CPUs without native bf16 before
  the small-map path (the baseline of issue 7);
* ``NHWC + small maps``: channels_last and :class:`resnet_lessons.training.speed.SmallMapConv2d`
  (maps smaller than the kernel as one matrix product): what ``fit`` picks there now;
* ``NHWC + bf16``: channels_last and bf16 autocast, measured only where bf16 is native;
* ``torch.compile`` (``--compile``): the NHWC model compiled by inductor, with its compile
  time, to see whether it pays for itself within a run.

It also times a 2048x2048 float32 matrix product, the machine's practical peak, and reports
the fraction of it each path reaches (3x the forward FLOPs of ``count_flops`` per image:
forward, and a backward pass of about twice the forward). Configurations alternate round by
round; results go to ``benchmarks/results/cpu_paths_<cpu kind>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import load_average, machine, table, write_results  # noqa: E402

from resnet_lessons import count_flops, resnet18  # noqa: E402
from resnet_lessons.data import load_fashion_mnist, prepare_batch  # noqa: E402
from resnet_lessons.training.speed import cpu_info, native_bf16, use_small_map_convs  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The best of ``repeats`` float32 ``n x n`` matrix products, in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def make_step(
    channels_last: bool, small_maps: bool, bf16: bool, compile_: bool, batch_size: int
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = resnet18()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if small_maps:
        use_small_map_convs(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    forward = torch.compile(model) if compile_ else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = forward(x)
        loss = F.cross_entropy(scores.float(), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--out", type=Path, help="JSON file (default: results/cpu_paths_*.json)")
    args = parser.parse_args(argv)

    info = cpu_info()
    before = machine()
    data = load_fashion_mnist()
    images, labels = data.train_images, data.train_labels
    configs = {
        "NCHW fp32": (False, False, False, False),
        "NHWC fp32 (before)": (True, False, False, False),
        "NHWC + small maps (now)": (True, True, False, False),
    }
    if native_bf16("cpu"):
        configs["NHWC + bf16"] = (True, False, True, False)
    rates: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, (cl, small, bf16, _) in configs.items():
            step = make_step(cl, small, bf16, False, args.batch_size)
            x = prepare_batch(images[: args.batch_size], channels_last=cl)
            y = labels[: args.batch_size]
            for _ in range(args.warmup):
                step(x, y)
            start = time.perf_counter()
            for i in range(args.steps):
                start_at = (i * args.batch_size) % (len(labels) - args.batch_size)
                batch = images[start_at : start_at + args.batch_size]
                step(prepare_batch(batch, channels_last=cl), labels[start_at:][: args.batch_size])
            rate = args.steps * args.batch_size / (time.perf_counter() - start)
            rates[name].append(rate)
            print(f"round {r + 1}: {name}: {rate:.1f} images/s (load {load_average()})")

    compiled = None
    if args.compile:
        step = make_step(True, False, False, True, args.batch_size)
        x = prepare_batch(images[: args.batch_size], channels_last=True)
        y = labels[: args.batch_size]
        start = time.perf_counter()
        step(x, y)
        compile_seconds = time.perf_counter() - start
        step(x, y)
        start = time.perf_counter()
        for _ in range(args.steps):
            step(x, y)
        rate = args.steps * args.batch_size / (time.perf_counter() - start)
        compiled = {"compile_seconds": compile_seconds, "images_per_second": rate}
        rates["torch.compile NHWC fp32"] = [rate]
        print(f"torch.compile: first step {compile_seconds:.1f} s, then {rate:.1f} images/s")

    peak = matmul_gflops()
    flops = 3 * count_flops(resnet18(), (1, 1, 28, 28))
    base = statistics.median(rates["NHWC fp32 (before)"])
    rows = []
    for name, values in rates.items():
        med = statistics.median(values)
        rows.append(
            [
                name,
                f"{med:.0f}",
                f"{max(values):.0f}",
                f"{med / base:.2f}x",
                f"{med * flops / 1e9 / peak:.0%}",
            ]
        )
    print()
    print(
        f"Training at 28x28, batch {args.batch_size}, ResNet-18, {info.describe()}; "
        f"matmul {peak:.0f} GFLOP/s; {flops / 1e9:.2f} GFLOP per training image"
    )
    print(table(rows, ["path", "median img/s", "best img/s", "vs before", "of matmul rate"]))
    results = {
        "benchmark": "cpu_paths",
        "cpu_kind": info.kind,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "images_per_second": rates,
        "ratio_to_before": {n: statistics.median(v) / base for n, v in rates.items()},
        "matmul_gflops": peak,
        "gflop_per_training_image": flops / 1e9,
        "torch_compile": compiled,
        "machine_before": before,
        "load_after": load_average(),
    }
    slug = info.kind.lower().replace(" ", "_").replace("-", "").replace("+", "")
    path = write_results(f"cpu_paths_{slug}", results, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
