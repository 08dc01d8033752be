"""The CUDA and MPS paths, on a machine without either: PyTorch's device queries are faked.

What can be decided without the device is: which device is picked, what the doctor prints,
the recipe notebook 05 trains, the autocast dtype and memory layout `fit` computes with, the
process group backend and the batch norm `--sync-bn` converts to. Running on the device is
`benchmarks/gpu_check.sh`'s job (see benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_lessons import default_device, doctor, resnet18
from resnet_lessons.doctor import check_hardware
from resnet_lessons.runtime import resolve_device
from resnet_lessons.training import (
    FAST,
    LECTURE,
    autocast_dtype,
    backend_for,
    device_name,
    native_bf16,
    pick_speedups,
    rank_device,
    recipe_for,
)
from resnet_lessons.training.distributed import AllReduceBatchNorm, convert_sync_batchnorm
from resnet_lessons.training.evaluation import autocast

ROOT = Path(__file__).resolve().parents[1]
H100 = ("NVIDIA H100 80GB HBM3", (9, 0))
T4 = ("Tesla T4", (7, 5))  # Turing: bf16 only emulated (Colab's free GPU)


@pytest.fixture
def no_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def fake_cuda(monkeypatch, gpu=H100, count=1):
    """torch.cuda answers as on a machine with ``count`` GPUs like ``gpu`` (name, capability).
    ``is_bf16_supported`` says True, as newer PyTorch does for emulated bf16 too."""
    name, capability = gpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.version, "hip", None)


def fake_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


def fake_cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# --------------------------------------------------------------------------- device choice


def test_cuda_comes_first_then_mps_then_the_cpu(monkeypatch):
    fake_cuda(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert default_device() == torch.device("cuda") == resolve_device("auto")
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert device_name(torch.device("cuda")) == "cuda (NVIDIA H100 80GB HBM3)"
    fake_mps(monkeypatch)
    assert default_device() == torch.device("mps") == resolve_device("auto")
    fake_cpu_only(monkeypatch)
    assert default_device() == torch.device("cpu") == resolve_device(None)


def test_asking_for_a_missing_gpu_says_so(monkeypatch):
    fake_mps(monkeypatch)
    with pytest.raises(ValueError, match="'cuda' was asked for but CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("mps") == torch.device("mps")
    fake_cuda(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'mps' was asked for but MPS is not available"):
        resolve_device("mps")


def test_under_torchrun_each_process_takes_its_own_gpu(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device(cuda, rank=7, world=8) == torch.device("cuda", 3)
    monkeypatch.delenv("LOCAL_RANK")
    assert rank_device(cuda, rank=2, world=4) == torch.device("cuda", 2)
    assert rank_device(torch.device("cuda", 1), rank=0, world=2) == torch.device("cuda", 1)
    assert rank_device(cuda, rank=0, world=1) == cuda  # one process: as asked
    assert rank_device(torch.device("cpu"), rank=1, world=2) == torch.device("cpu")


# --------------------------------------------------------------------------- the doctor


def test_the_doctor_names_the_gpu_its_bf16_and_the_recipe(monkeypatch):
    fake_cuda(monkeypatch, H100, count=2)
    gpu = {c.name: c for c in check_hardware()}["gpu"]
    assert gpu.ok
    assert gpu.detail == (
        "CUDA: 2 x NVIDIA H100 80GB HBM3, compute capability 9.0, bf16 autocast native; "
        "notebook 05 trains the lecture recipe"
    )
    fake_cuda(monkeypatch, T4, count=1)
    gpu = {c.name: c for c in check_hardware()}["gpu"]
    assert gpu.detail == (
        "CUDA: Tesla T4, compute capability 7.5, no native bf16 (float32); "
        "notebook 05 trains the lecture recipe"
    )


def test_the_doctor_report_on_a_gpu_is_ready(monkeypatch):
    fake_cuda(monkeypatch, H100)
    monkeypatch.setattr(doctor, "check_data", lambda: doctor.Check("fashion-mnist", True, "here"))
    lines = []
    assert doctor.run(probe=False, out=lines.append) == 0
    report = "\n".join(lines)
    assert "[ok  ] gpu: CUDA: NVIDIA H100 80GB HBM3, compute capability 9.0" in report
    assert report.endswith("summary: ready.")


def test_the_doctor_on_mps_and_on_a_cpu(monkeypatch):
    fake_mps(monkeypatch)
    gpu = {c.name: c for c in check_hardware()}["gpu"]
    assert gpu.detail == (
        "Apple MPS, float32 (no bf16 autocast there); notebook 05 trains the lecture recipe"
    )
    fake_cpu_only(monkeypatch)
    gpu = {c.name: c for c in check_hardware()}["gpu"]
    assert gpu.detail.startswith("none: training runs on the CPU")
    assert "the fast recipe on a time budget" in gpu.detail


# ------------------------------------------------------------- recipe, autocast, layout


def test_notebook_05_trains_the_lecture_recipe_on_a_gpu_and_fast_on_a_cpu():
    assert recipe_for("cuda") is LECTURE
    assert recipe_for(torch.device("cuda", 1)) is LECTURE
    assert recipe_for("mps") is LECTURE
    assert recipe_for("cpu") is FAST


def test_notebook_05_asks_recipe_for_which_recipe_to_train():
    """The notebook decides with recipe_for, so the test above is the notebook's decision."""
    import json

    notebook = json.loads((ROOT / "notebooks" / "05_training.ipynb").read_text())
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert any("recipe = recipe_for(device)" in source for source in code)


def test_bf16_autocast_only_where_it_is_native(monkeypatch):
    fake_cuda(monkeypatch, H100)
    assert native_bf16("cuda") is True
    assert autocast_dtype("cuda", bf16=True) == torch.bfloat16
    assert autocast_dtype("cuda", bf16=False) is None  # the lecture recipe: float32
    fake_cuda(monkeypatch, T4)  # is_bf16_supported() says True: emulated, slower than float32
    assert native_bf16("cuda") is False
    assert autocast_dtype("cuda", bf16=True) is None
    fake_mps(monkeypatch)
    assert native_bf16("mps") is False and autocast_dtype("mps", bf16=True) is None
    assert native_bf16("cuda") is False  # no CUDA at all


def test_the_forward_pass_context_on_cuda_mps_and_cpu(monkeypatch):
    fake_cuda(monkeypatch, H100)
    context = autocast(torch.device("cuda"), bf16=True)
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    assert isinstance(autocast(torch.device("cuda"), bf16=False), contextlib.nullcontext)
    fake_mps(monkeypatch)
    context = autocast(torch.device("mps"), bf16=True)  # torch 2.2 refuses autocast("mps")
    assert isinstance(context, contextlib.nullcontext)
    with context:
        pass


def test_autocast_dtype_on_this_cpu_follows_its_bf16_support():
    expected = torch.bfloat16 if native_bf16("cpu") else None
    assert autocast_dtype("cpu", bf16=True) == expected
    assert autocast_dtype("cpu", bf16=False) is None


@pytest.mark.parametrize(
    ("gpu", "recipe", "layout", "bf16"),
    [
        (H100, FAST, True, True),  # the fast recipe asks for NHWC and bf16: both, natively
        (T4, FAST, True, False),  # NHWC, but bf16 would be emulated: float32
        (H100, LECTURE, False, False),  # the lecture's recipe: NCHW, float32, as d2l does
    ],
)
def test_memory_layout_and_precision_on_cuda(monkeypatch, gpu, recipe, layout, bf16):
    fake_cuda(monkeypatch, gpu)
    picked = pick_speedups(
        "cuda",
        channels_last=recipe.channels_last,
        bf16=recipe.bf16,
        native_bf16=native_bf16("cuda"),
    )
    assert (picked.channels_last, picked.bf16, picked.small_maps) == (layout, bf16, False)
    assert picked.reason == "cuda device"


def test_memory_layout_and_precision_on_mps(monkeypatch):
    fake_mps(monkeypatch)
    for recipe in (FAST, LECTURE):
        picked = pick_speedups(
            "mps",
            channels_last=recipe.channels_last,
            bf16=recipe.bf16,
            native_bf16=native_bf16("mps"),
        )
        assert (picked.channels_last, picked.bf16, picked.small_maps) == (
            recipe.channels_last,
            False,
            False,
        )


# --------------------------------------------------------------------------- --sync-bn


def test_sync_bn_under_nccl_is_pytorchs_sync_batch_norm():
    backend = backend_for(torch.device("cuda", 0))
    assert backend == "nccl"
    model = convert_sync_batchnorm(resnet18(), backend)
    norms = [m for m in model.modules() if "BatchNorm" in type(m).__name__]
    assert norms and all(type(m) is nn.SyncBatchNorm for m in norms)


def test_sync_bn_under_gloo_is_the_all_reduce_batch_norm():
    for device in ("cpu", "mps"):
        assert backend_for(device) == "gloo"
    model = convert_sync_batchnorm(resnet18(), backend_for("cpu"))
    norms = [m for m in model.modules() if "BatchNorm" in type(m).__name__]
    assert norms and all(type(m) is AllReduceBatchNorm for m in norms)


# --------------------------------------------------------------------------- gpu_check.sh


@pytest.mark.slow  # runs bash
def test_gpu_check_stops_with_a_clear_message_without_a_gpu(tmp_path):
    """On a machine with no CUDA GPU (this one, or CI) the check says so and exits 2."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: run benchmarks/gpu_check.sh itself")
    venv = Path(sys.executable).parent.parent  # the venv running these tests
    if not (venv / "bin" / "python").exists():
        pytest.skip(f"the tests do not run from a venv's bin/python ({sys.executable})")
    env = {**os.environ, "VENV": str(venv), "OUT": str(tmp_path / "out")}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False" in result.stderr
    assert "run `make test` for everything a CPU can check" in result.stderr
    assert not (tmp_path / "out").exists()  # stopped before any step


@pytest.mark.slow  # runs bash
def test_gpu_check_names_a_missing_venv(tmp_path):
    env = {**os.environ, "VENV": str(tmp_path / "nowhere")}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"no Python at {tmp_path / 'nowhere'}/bin/python" in result.stderr


@pytest.mark.slow  # runs bash
def test_gpu_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)
