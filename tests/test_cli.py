"""The command line: `python -m resnet_lessons train`, its errors, resume after a kill, torchrun."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import torch

from resnet_lessons.__main__ import leave, main, under_torchrun
from resnet_lessons.data import FILES, find_fashion_mnist
from resnet_lessons.training.budget import Plan

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--limit-train", "256", "--limit-test", "128", "--batch-size", "64", "--no-progress"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # the CPU is shared: one thread per process avoids thrashing
    env.pop("RESNET_LESSONS_DEBUG", None)
    return env


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "resnet_lessons", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--epochs", "-1"], "--epochs: must be at least 1, got -1"),
        (["train", "--epochs", "two"], "--epochs: expected a whole number, got 'two'"),
        (["train", "--batch-size", "0"], "--batch-size: must be at least 1"),
        (["train", "--lr", "-0.1"], "--lr: must be a finite number above 0"),
        (["train", "--lr", "nan"], "--lr: must be a finite number above 0"),
        (["train", "--resize", "-96"], "--resize"),
        (["train", "--limit-train", "-5"], "--limit-train"),
        (["train", "--seed", "-1"], "--seed: must be at least 0, got -1"),
        (["train", "--minutes", "0"], "--minutes: must be a finite number above 0, got 0"),
        (["train", "--minutes", "three"], "--minutes: expected a number, got 'three'"),
        (["doctor", "--fast"], "unrecognized arguments: --fast"),
        (["train", "--recipe", "slow"], "invalid choice: 'slow'"),
        (["train", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["train", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["fly"], "invalid choice: 'fly'"),
        ([], "required: command"),
        (["train", "--dist-timeout", "0"], "--dist-timeout: must be a finite number above 0"),
        (["train", "--dist-timeout", "soon"], "--dist-timeout: expected a number, got 'soon'"),
        (["train", "--sync-bn", "yes"], "unrecognized arguments: yes"),
    ],
)
def test_bad_flags_end_with_one_line(args, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert_one_line_error(
        subprocess.CompletedProcess(args, 2, captured.out, captured.err), fragment
    )


@pytest.mark.slow
def test_bad_flags_in_a_real_process():
    result = run_cli("train", "--epochs", "-1")
    assert result.returncode == 2
    assert_one_line_error(result, "--epochs: must be at least 1, got -1")


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--recipe", "--epochs", "--minutes", "--batch-size", "--lr", "--resize",
                 "--limit-train", "--data-root", "--out", "--resume", "--device",
                 "--seed"):  # fmt: skip
        assert flag in help_text


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(tmp_path):
    result = run_cli("train", "--device", "cuda", "--out", str(tmp_path), *SMALL)
    assert result.returncode == 1
    assert_one_line_error(result, "CUDA is not available")


@pytest.mark.slow
def test_too_many_images_asked_for(tmp_path):
    result = run_cli("train", "--limit-train", "70000", "--out", str(tmp_path))
    assert_one_line_error(result, "--limit-train 70000 is more than the 60000 images")


@pytest.mark.slow
def test_a_batch_too_small_for_batch_norm(tmp_path):
    result = run_cli("train", "--batch-size", "1", "--out", str(tmp_path), *SMALL[:4])
    assert_one_line_error(result, "batch_size=1")


def _copy_data(to: Path) -> Path:
    source = find_fashion_mnist(download=False)
    to.mkdir()
    for name, _ in FILES.values():
        shutil.copy(source / f"{name}.gz", to / f"{name}.gz")
    return to


@pytest.mark.slow
def test_corrupt_data_names_the_file(tmp_path):
    folder = _copy_data(tmp_path / "data")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:100])  # truncated download
    result = run_cli("train", "--data-root", str(folder), "--out", str(tmp_path / "out"), *SMALL)
    assert result.returncode == 1
    assert_one_line_error(result, "t10k-labels-idx1-ubyte.gz")
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_a_data_root_without_data(tmp_path):
    result = run_cli("train", "--data-root", str(tmp_path), "--out", str(tmp_path / "out"), *SMALL)
    assert_one_line_error(result, f"--data-root {tmp_path}")


@pytest.mark.slow
def test_no_data_anywhere(tmp_path):
    """Offline, nothing found: the one line says where it looked and how to get the data."""
    code = (
        "import pathlib, sys, torchvision.datasets as tv\n"
        "import resnet_lessons.data as data\n"
        "data.DEBIAN_DIR = pathlib.Path('/nonexistent/fashion-mnist')\n"
        "def offline(self): raise RuntimeError('no internet')\n"
        "tv.FashionMNIST.download = offline\n"
        "from resnet_lessons.__main__ import main\n"
        f"sys.exit(main(['train', '--out', 'out', *{SMALL!r}]))\n"
    )
    env = _env()
    env.pop("RESNET_LESSONS_DATA", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert_one_line_error(result, "Fashion-MNIST not found", "apt-get install")


@pytest.mark.slow
def test_train_writes_metrics_and_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--recipe", "fast", "--epochs", "2", "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "fast"
    assert [e["epoch"] for e in metrics["history"]] == [1, 2]
    for entry in metrics["history"]:
        assert set(entry) == {"epoch", "train_loss", "train_acc", "test_acc", "seconds"}
        assert 0 <= entry["test_acc"] <= 1 and entry["seconds"] > 0
    assert metrics["test_acc"] == metrics["history"][-1]["test_acc"]
    assert len(metrics["points"]) >= 2 and metrics["points"][-1]["epoch"] == 2  # live points
    assert metrics["points"][-1]["test_acc"] == metrics["test_acc"]  # the whole test set
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["history"] == metrics["history"]
    assert result.stdout.count("epoch ") == 2  # --no-progress: one line per epoch


@pytest.mark.slow
def test_lecture_recipe_with_overrides(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train", "--recipe", "lecture", "--epochs", "1", "--resize", "32", "--lr", "0.1",
        "--seed", "3", "--out", str(out), *SMALL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "lecture" and len(metrics["history"]) == 1


@pytest.mark.slow
def test_resume_after_a_kill(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--epochs", "3", "--out", str(out), "--limit-train", "640",
            "--limit-test", "128", "--batch-size", "64", "--no-progress"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "resnet_lessons", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    checkpoint = out / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # no chance to clean up, like a closed laptop
    process.communicate()
    assert checkpoint.exists(), "no checkpoint was written before the kill"
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    before = torch.load(checkpoint, map_location="cpu", weights_only=True)["history"]
    assert 1 <= len(before) < 3

    result = run_cli(*args, "--resume")
    assert result.returncode == 0, result.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert history[: len(before)] == before  # the epochs before the kill, intact
    # only the epochs after the kill were trained again
    assert result.stdout.count("epoch ") == 3 - len(before)


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    stdout, stderr = _train_on_two_processes(out, "--epochs", "2")  # about 9 s here
    assert "Traceback" not in stderr
    assert stdout.count("wrote ") == 1  # rank 0 alone writes
    assert stdout.count("epoch 1:") == 1  # ... and logs
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    assert [e["epoch"] for e in metrics["history"]] == [1, 2]
    for entry in metrics["history"]:
        # the loss and accuracy cover both ranks' shares of all 256 images
        assert 0 < entry["train_loss"] < 20 and 0 <= entry["train_acc"] <= 1
        assert 0 <= entry["test_acc"] <= 1
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert not any(key.startswith("module.") for key in state["model"])  # no DDP wrapper


@pytest.mark.slow
def test_torchrun_on_a_budget_revises_one_plan_for_both_processes(tmp_path):
    """Rank 0 probes and, after a tenth of the steps (and 30% and 60%), re-plans; rank 1
    follows every plan (a rank that took another number of steps would hang DDP, or fail
    this)."""
    out = tmp_path / "ddp"
    stdout, _ = _train_on_two_processes(out, "--minutes", "0.5")  # about 35 s here
    plan = json.loads((out / "metrics.json").read_text())["plan"]
    assert plan["revised_at"] >= 10 and plan["steps"] > plan["revised_at"]
    assert stdout.count(f"after {plan['revised_at']} steps: ~") == 1  # rank 0 says it once
    assert 1 <= stdout.count("after ") <= 3
    last = stdout[stdout.index(f"after {plan['revised_at']} steps: ~") :].splitlines()[0]
    assert f"; {plan['steps']} steps, not " in last or f"the {plan['steps']} steps stand" in last
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["plan"] == plan
    epochs = json.loads((out / "metrics.json").read_text())["history"][-1]["epoch"]
    assert epochs == pytest.approx(plan["steps"] / plan["steps_per_epoch"], abs=0.01)


@pytest.mark.slow
def test_figures_subcommand(tmp_path):
    pytest.importorskip("resnet_lessons.diagrams")
    from resnet_lessons import diagrams

    if not hasattr(diagrams, "save_figures"):
        pytest.skip("resnet_lessons.diagrams.save_figures is not written yet")
    result = run_cli("figures", "--out", str(tmp_path / "img"))
    assert result.returncode == 0, result.stderr
    assert any((tmp_path / "img").iterdir())


@pytest.mark.slow
def test_minutes_and_epochs_together_are_refused(tmp_path):
    result = run_cli("train", "--minutes", "1", "--epochs", "2", "--out", str(tmp_path), *SMALL)
    assert result.returncode == 1
    assert_one_line_error(result, "--minutes 1 and --epochs 2 both set the length", "give one")


@pytest.mark.slow
def test_train_on_a_budget_records_its_plan_and_resume_follows_it(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--minutes", "0.25", "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    plan = metrics["plan"]
    assert plan["budget"] == 15 and plan["steps"] >= 1 and plan["batch_size"] == 64
    # the probe's plan in one line, even --no-progress, then (after a tenth of its steps, at
    # least 10) the revision the stored plan and plan_text describe
    first = next(line for line in result.stdout.splitlines() if line.startswith("this CPU"))
    assert "15 s is ~" in first
    assert metrics["plan_text"] == Plan.from_dict(plan).describe()
    if plan["revised_at"]:
        assert f"after {plan['revised_at']} steps: ~" in result.stdout
    else:  # too few steps to revise
        assert metrics["plan_text"] == first
    assert metrics["speedups"] and metrics["cpu_kind"] and metrics["device"] == "cpu"
    epochs = plan["steps"] / plan["steps_per_epoch"]
    assert metrics["history"][-1]["epoch"] == pytest.approx(epochs, abs=0.01)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["plan"] == plan
    again = run_cli("train", "--minutes", "5", "--resume", "--out", str(out), *SMALL)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "metrics.json").read_text())["plan"] == plan  # not re-planned


@pytest.mark.slow
def test_doctor_reports_and_passes_here():
    result = run_cli("doctor", "--no-probe")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("python", "torch", "torchvision", "ipywidgets", "jupyterlab", "cpu", "gpu"):
        assert f"] {name}:" in result.stdout
    assert "[ok  ] fashion-mnist: found in" in result.stdout
    assert "summary: ready" in result.stdout


@pytest.mark.slow
def test_doctor_without_data_fails_with_the_fix(tmp_path):
    code = (
        "import pathlib, sys\n"
        "import resnet_lessons.data as data\n"
        "data.DEBIAN_DIR = pathlib.Path('/nonexistent/fashion-mnist')\n"
        "from resnet_lessons.__main__ import main\n"
        "sys.exit(main(['doctor', '--no-probe']))\n"
    )
    env = _env()
    env.pop("RESNET_LESSONS_DATA", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert result.returncode == 1, result.stdout
    assert "[FAIL] fashion-mnist: not found" in result.stdout
    assert "fix: " in result.stdout and "apt-get install dataset-fashion-mnist" in result.stdout
    assert "1 essential check(s) failed: fashion-mnist" in result.stdout


@pytest.mark.slow
# --------------------------------------------------------------------------- data parallel flags


def test_help_lists_the_parallel_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--sync-bn", "--scale-lr", "--dist-timeout", "Goyal", "torchrun"):
        assert flag in help_text


@pytest.mark.parametrize("world_size", [None, "1"])
def test_sync_bn_without_torchrun_is_refused(tmp_path, monkeypatch, capsys, world_size):
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    assert main(["train", "--sync-bn", "--out", str(tmp_path), *SMALL]) == 1
    captured = capsys.readouterr()
    assert_one_line_error(
        subprocess.CompletedProcess([], 1, captured.out, captured.err),
        "--sync-bn synchronises batch norm across processes, but this run has one process",
        f"WORLD_SIZE={world_size or 'unset'}",
        "torchrun --nproc_per_node=N",
    )
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow
def test_scale_lr_multiplies_the_lr_and_warms_the_lecture_recipe_up(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train", "--recipe", "lecture", "--epochs", "1", "--resize", "32", "--scale-lr",
        "--out", str(out), *SMALL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["lr"] == pytest.approx(0.05 * 64 / 256)  # the lecture's 0.05 for 256 images
    assert metrics["scale_lr"] == {"base_lr": 0.05, "base_batch_size": 256, "factor": 0.25}
    assert metrics["schedule"] == "warmup"  # constant became linear warm-up, then constant
    assert metrics["batch_size"] == 64 and metrics["sync_bn"] is False
    assert metrics["batch_norm"] == "BatchNorm2d" and metrics["backend"] is None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(port: int, host: bool, out: Path, *args: str) -> subprocess.Popen:
    """One of two `torchrun --nnodes=2` launches on this machine, meeting at a c10d
    rendezvous on localhost (on two machines: the first one's address instead)."""
    return _launch(
        "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=test", f"--rdzv_conf=is_host={int(host)}",
        "--local_addr=127.0.0.1", "-m", "resnet_lessons", "train", "--out", str(out), *args,
    )  # fmt: skip


def _train_on_two_processes(out: Path, *args: str) -> tuple[str, str]:
    """``torchrun --nproc_per_node=2 -m resnet_lessons train ARGS --out OUT`` on the small
    data; fails the test unless it exits 0. Returns (stdout, stderr)."""
    launch = _launch("--standalone", "--nproc_per_node=2", "-m", "resnet_lessons", "train",
                     *args, "--out", str(out), *SMALL)  # fmt: skip
    try:
        [(stdout, stderr)] = _finish([launch], timeout=240)
    finally:
        _kill([launch])
    assert launch.returncode == 0, stderr[-3000:]
    return stdout, stderr


def _launch(*torchrun_args: str) -> subprocess.Popen:
    """``torchrun ARGS`` with its output piped, in a session of its own: :func:`_kill`
    reaches the workers it starts too."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *torchrun_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        start_new_session=True,
    )  # fmt: skip


def _kill(nodes: list[subprocess.Popen]) -> None:
    """Kill each launch with the workers it started (nothing left holding the pipes)."""
    for node in nodes:
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _session(sid: int) -> str:
    """One line per live process of session ``sid`` (a launch and its workers): pid, state,
    the kernel function it waits in, its threads' names and its command (Linux /proc)."""
    lines = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
            if int(fields[3]) != sid:  # fields: state, ppid, pgrp, session, ...
                continue
            proc = stat.parent
            threads = sorted(t.read_text().strip() for t in proc.glob("task/*/comm"))
            wchan = (proc / "wchan").read_text()
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[-200:]
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        lines.append(f"pid {proc.name} {fields[0]} in {wchan or '-'}; threads {threads}; {command}")
    return "\n".join(lines) or "(no process left)"


def _finish(nodes: list[subprocess.Popen], timeout: float) -> list[tuple[str, str]]:
    """Every launch's (stdout, stderr), read all at once (a launch whose pipes nobody reads
    can block on them); past ``timeout`` s the launches are killed and the test fails with
    each one's live processes (:func:`_session`) and what it and its workers printed."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        futures = [pool.submit(node.communicate) for node in nodes]
        _, pending = wait(futures, timeout=timeout)
        if pending:
            processes = [_session(node.pid) for node in nodes]  # what hangs, before the kill
            _kill(nodes)
            report = "\n".join(
                f"--- launch {i} ({'still running' if f in pending else f'exit {n.returncode}'})"
                f"\n{ps}\nstdout: {f.result()[0][-1500:]}\nstderr: {f.result()[1][-1500:]}"
                for i, (n, f, ps) in enumerate(zip(nodes, futures, processes, strict=True))
            )
            pytest.fail(f"the launches did not all end within {timeout:g} s\n{report}")
        return [future.result() for future in futures]


class _Stream(io.StringIO):
    """A stream that remembers what had been written when it was last flushed."""

    flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


def test_a_torchrun_worker_leaves_hard_after_flushing(monkeypatch):
    out, err, exits = _Stream(), _Stream(), []

    def fake_exit(code):
        exits.append((code, out.flushed, err.flushed))
        raise SystemExit(code)

    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(os, "_exit", fake_exit)
    out.write("test accuracy 0.8")
    err.write("a warning")
    with pytest.raises(SystemExit):
        leave(3, hard=True)
    assert exits == [(3, "test accuracy 0.8", "a warning")]  # flushed, then os._exit
    with pytest.raises(SystemExit) as ended:
        leave(0, hard=False)
    assert ended.value.code == 0 and len(exits) == 1  # an ordinary exit: sys.exit


@pytest.mark.parametrize(
    "world_size, expected", [(None, False), ("1", False), ("2", True), ("eight", False)]
)
def test_under_torchrun(monkeypatch, world_size, expected):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if world_size is not None:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    assert under_torchrun() is expected


@pytest.mark.slow
def test_two_nodes_on_one_machine_with_sync_bn(tmp_path):
    out = tmp_path / "two_nodes"
    port = _free_port()
    args = ["--epochs", "1", "--sync-bn", "--scale-lr", *SMALL]
    nodes = [_node(port, host, out, *args) for host in (True, False)]
    try:
        outputs = _finish(nodes, timeout=240)  # about 10 s here; torchrun waits 300 s
    finally:
        _kill(nodes)
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr
    assert sum(stdout.count("wrote ") for stdout, _ in outputs) == 1  # rank 0 alone writes
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["backend"] == "gloo"
    assert metrics["sync_bn"] is True and metrics["batch_norm"] == "AllReduceBatchNorm"
    assert metrics["lr"] == pytest.approx(0.1 * 64 / 256) and metrics["schedule"] == "onecycle"
    assert metrics["dist_timeout"] == 600
    assert [e["epoch"] for e in metrics["history"]] == [1]


def _worker_with_rank(launchers: list[subprocess.Popen], rank: int) -> int:
    """The pid of the worker process that torchrun started with RANK=rank (Linux /proc)."""
    for launcher in launchers:
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        for child in children:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return int(child)
    raise AssertionError(f"no worker with RANK={rank} among the launchers' children")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds workers in Linux /proc")
def test_a_killed_worker_ends_a_two_node_run_with_a_clear_error(tmp_path):
    out = tmp_path / "killed"
    port = _free_port()
    args = ["--epochs", "3", "--limit-train", "2048", "--limit-test", "128", "--batch-size",
            "64", "--no-progress", "--dist-timeout", "20"]  # fmt: skip
    nodes = [_node(port, host, out, *args) for host in (True, False)]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until both workers run
            try:
                victim = _worker_with_rank(nodes, 1)
                _worker_with_rank(nodes, 0)
                break
            except (AssertionError, OSError):
                time.sleep(0.2)
        while time.monotonic() < deadline and not (out / "checkpoint.pt").exists():
            time.sleep(0.2)  # rank 0 checkpoints after epoch 1: both ranks are training now
        assert (out / "checkpoint.pt").exists(), "the run did not finish its first epoch"
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        outputs = _finish(nodes, timeout=120)
    finally:
        _kill(nodes)
    assert time.monotonic() - killed < 60  # both launches ended: no hang
    assert all(node.returncode != 0 for node in nodes)
    stderr = "".join(err for _, err in outputs)
    assert "exitcode  : -9" in stderr and "(SIGKILL)" in stderr  # torchrun names the root cause
    errors = [line for line in stderr.splitlines() if line.startswith("error: rank 0 of 2")]
    assert len(errors) == 1, stderr[-3000:]  # rank 0's one line says what happened
    assert "lost contact with the other processes" in errors[0]
    assert not (out / "metrics.json").exists()


def test_the_command_line_takes_as_many_live_points_as_a_notebook():
    """``train --live-points`` defaults to the live plot's number without importing torch."""
    from resnet_lessons.__main__ import LIVE_POINTS
    from resnet_lessons.training.epoch import LIVE_POINTS as DRAWN

    assert LIVE_POINTS == DRAWN
