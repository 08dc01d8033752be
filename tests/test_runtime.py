"""Seeding, device choice, and the promise that nothing runs on import."""

import subprocess
import sys

import pytest
import torch

from resnet_lessons import default_device, set_seed


def test_set_seed_repeats():
    set_seed(3)
    a = torch.randn(5)
    set_seed(3)
    assert torch.equal(a, torch.randn(5))


@pytest.mark.parametrize(("seed", "exc"), [(-1, ValueError), (2**32, ValueError), ("1", TypeError)])
def test_set_seed_bad(seed, exc):
    with pytest.raises(exc, match="seed"):
        set_seed(seed)


def test_default_device_is_usable():
    device = default_device()
    assert device.type in ("cuda", "mps", "cpu")
    assert torch.zeros(1, device=device).device.type == device.type


@pytest.mark.slow
def test_import_has_no_side_effects():
    code = (
        "import torch, random, matplotlib\n"
        "s = torch.random.get_rng_state(); r = random.getstate()\n"
        "rc = dict(matplotlib.rcParams)\n"
        "import resnet_lessons, resnet_lessons.shapes\n"
        "assert torch.equal(s, torch.random.get_rng_state()) and r == random.getstate()\n"
        "assert rc == dict(matplotlib.rcParams)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "" and out.stderr == ""


def test_device_name_says_the_cpu_kind():
    from resnet_lessons.training.speed import cpu_info, device_name

    assert device_name(torch.device("cpu")) == f"cpu ({cpu_info().kind})"
    assert device_name(torch.device("meta")) == "meta"
