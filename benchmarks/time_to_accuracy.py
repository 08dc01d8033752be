"""Wall time of a whole training run to 0.90 / 0.91 / 0.92 test accuracy.

    python benchmarks/time_to_accuracy.py                     # the fast recipe (~3 minutes)
    python benchmarks/time_to_accuracy.py --recipe lecture    # hours on a CPU
    python benchmarks/time_to_accuracy.py -- --epochs 5 --batch-size 128   # extra train flags

Runs ``python -m resnet_lessons train --recipe RECIPE`` in a fresh process (start-up, imports
and data loading count), reads its ``metrics.json``, and reports, for each threshold, the
first epoch whose test accuracy reaches it and the wall time from the process's start to the
end of that epoch (start-up + the epochs' ``seconds``, evaluation included). Goal on a 2-core
laptop: 0.92 within 180 s (the bar: 0.91 within 240 s). Results go to
``benchmarks/results/time_to_accuracy_RECIPE.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import ROOT, load_average, machine, table, write_results  # noqa: E402

THRESHOLDS = (0.90, 0.91, 0.92)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="fast", choices=("fast", "lecture"))
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS for the run (default: torch's choice, one per core); use 1 when "
        "other processes keep a core busy: two threads sharing one core wait on each other",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default results/...)")
    parser.add_argument("train_args", nargs="*", help="more flags for the train command")
    args = parser.parse_args(argv)

    before = machine()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "resnet_lessons", "train", "--recipe", args.recipe,
            "--out", tmp, "--no-progress", *args.train_args,
        ]  # fmt: skip
        print("$ " + " ".join(command[1:]).replace(tmp, "OUT"), flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, env=env, cwd=ROOT)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            print(f"training failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())

    history = metrics["history"]
    startup = wall - sum(entry["seconds"] for entry in history)
    elapsed, reached = startup, {}
    for entry in history:
        elapsed += entry["seconds"]
        entry["wall_at_end"] = round(elapsed, 1)
        for threshold in THRESHOLDS:
            if threshold not in reached and entry["test_acc"] >= threshold:
                reached[threshold] = (entry["epoch"], elapsed)

    rows = [
        [
            f"{entry['epoch']}",
            f"{entry['train_loss']:.4f}",
            f"{entry['train_acc']:.4f}",
            f"{entry['test_acc']:.4f}",
            f"{entry['seconds']:.1f}",
            f"{entry['wall_at_end']:.1f}",
        ]
        for entry in history
    ]
    print()
    print(f"Recipe {args.recipe}: start-up {startup:.1f} s, whole run {wall:.1f} s wall")
    print(table(rows, ["epoch", "train loss", "train acc", "test acc", "epoch s", "wall s"]))
    print()
    rows = [
        [f"{t:.2f}", f"{reached[t][0]}" if t in reached else "-",
         f"{reached[t][1]:.1f}" if t in reached else "not reached"]
        for t in THRESHOLDS
    ]  # fmt: skip
    print(table(rows, ["test accuracy", "epoch", "wall s to reach it"]))
    results = {
        "benchmark": "time_to_accuracy",
        "recipe": args.recipe,
        "train_args": args.train_args,
        "threads": args.threads,
        "wall_seconds": wall,
        "startup_seconds": startup,
        "final_test_acc": metrics["test_acc"],
        "history": history,
        "time_to": {f"{t:.2f}": (reached[t][1] if t in reached else None) for t in THRESHOLDS},
        "machine_before": before,
        "load_after": load_average(),
    }
    path = write_results(f"time_to_accuracy_{args.recipe}", results, args.out)
    print(f"\nwrote {path} (load average before {before['load_average_1min']}, "
          f"after {load_average()})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
