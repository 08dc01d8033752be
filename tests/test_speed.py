"""Small maps as matrix products (exact), CPU features, and what fit picks for a device."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lessons import resnet18
from resnet_lessons.training.speed import (
    CPUInfo,
    SmallMapConv2d,
    parse_cpuinfo,
    pick_speedups,
    small_map_conv2d,
    tap_index,
    use_small_map_convs,
)


def test_a_1x1_map_under_a_3x3_kernel_reads_only_the_centre_tap():
    index, out = tap_index((1, 1), (3, 3), (1, 1), (1, 1), (1, 1))
    assert out == (1, 1)
    assert index.tolist() == [[4]]  # tap (1, 1): the other 8 only ever see padding


def test_a_2x2_map_with_stride_2_reads_the_lower_right_taps():
    index, out = tap_index((2, 2), (3, 3), (2, 2), (1, 1), (1, 1))
    assert out == (1, 1)
    # input pixels (0,0), (0,1), (1,0), (1,1) meet taps (1,1), (1,2), (2,1), (2,2)
    assert index.tolist() == [[4, 5, 7, 8]]


def test_a_2x2_map_with_stride_1_uses_every_tap_once_per_neighbour():
    index, out = tap_index((2, 2), (3, 3), (1, 1), (1, 1), (1, 1))
    assert out == (2, 2)
    assert index[0].tolist() == [4, 5, 7, 8]  # output (0,0) reads all four pixels
    assert index[3].tolist() == [0, 1, 3, 4]  # output (1,1) reads them through the top-left
    assert int((index < 9).sum()) == 16  # 4 outputs x 4 inputs, never padding


def test_a_kernel_that_does_not_fit_says_so():
    with pytest.raises(ValueError, match="does not fit a 1x1 map"):
        tap_index((1, 1), (3, 3), (1, 1), (0, 0), (1, 1))


@pytest.mark.parametrize("size", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel,padding", [(3, 1), (1, 0), (2, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_small_map_conv_equals_conv2d_forward_and_backward(size, stride, kernel, padding, bias):
    torch.manual_seed(size * 100 + stride * 10 + kernel)
    x = torch.randn(5, 6, size, size, requires_grad=True)
    w = torch.randn(7, 6, kernel, kernel, requires_grad=True)
    b = torch.randn(7, requires_grad=True) if bias else None
    ours = small_map_conv2d(x, w, b, (stride, stride), (padding, padding), (1, 1))
    ref = F.conv2d(x, w, b, stride, padding)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(ref)
    params = [x, w] + ([b] if bias else [])
    ours_grads = torch.autograd.grad(ours, params, upstream)
    ref_grads = torch.autograd.grad(ref, params, upstream)
    for mine, theirs in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_a_strided_1x1_conv_is_computed_on_every_other_pixel(size, memory_format):
    """The shortcut's 1x1 stride-2 conv: the same outputs and gradients (float64, exact up
    to rounding) as nn.Conv2d, by way of a sliced input."""
    torch.manual_seed(size)
    plain = nn.Conv2d(4, 8, 1, stride=2).double().to(memory_format=memory_format)
    fast = copy.deepcopy(plain)
    assert use_small_map_convs(fast) == 1
    x = torch.randn(3, 4, size, size, dtype=torch.float64).contiguous(memory_format=memory_format)
    outs, grads = [], []
    for conv in (plain, fast):
        xi = x.detach().requires_grad_()
        out = conv(xi)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), [xi, conv.weight, conv.bias]))
    assert outs[1].shape == (3, 8, (size + 1) // 2, (size + 1) // 2)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


CRASHED_ON_ONE_THREAD = """
import torch
from torch import nn
from resnet_lessons.training.speed import use_small_map_convs
torch.set_num_threads(1)
conv = nn.Conv2d(4, 8, 1, stride=2).to(memory_format=torch.channels_last)
use_small_map_convs(conv)
for _ in range(300):
    x = torch.randn(16, 4, 14, 14).contiguous(memory_format=torch.channels_last)
    conv(x.requires_grad_()).square().mean().backward()
print("ok")
"""


@pytest.mark.slow
def test_the_strided_1x1_conv_that_crashed_pytorch_on_one_thread_runs():
    """Without the slicing, this float32 channels_last loop crashed PyTorch 2.14.1 on a
    2-core AVX2 CPU within its 300 steps (heap corruption in the strided 1x1 kernel's
    backward pass, with 2 or 4 input channels and one thread)."""
    result = subprocess.run(
        [sys.executable, "-c", CRASHED_ON_ONE_THREAD], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_resnet18_with_small_map_convs_is_the_same_network():
    torch.manual_seed(0)
    plain = resnet18()
    fast = resnet18()
    fast.load_state_dict(plain.state_dict())
    assert use_small_map_convs(fast) == sum(isinstance(m, nn.Conv2d) for m in plain.modules())
    assert all(isinstance(m, nn.Conv2d) for m in fast.modules() if isinstance(m, SmallMapConv2d))
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(8, 1, 28, 28)  # 28x28: stage 3 runs at 2x2, stage 4 at 1x1
    y = torch.randint(0, 10, (8,))
    for model in (plain, fast):
        F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
    assert use_small_map_convs(fast, enable=False) > 0
    assert not any(isinstance(m, SmallMapConv2d) for m in fast.modules())


def test_channels_last_input_works():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    use_small_map_convs(conv)
    x = torch.randn(3, 4, 2, 2).contiguous(memory_format=torch.channels_last)
    ref = F.conv2d(x.contiguous(), conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-5)


INTEL_SPR = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
AMD_ZEN3 = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse avx avx2 fma
"""
ARM = """processor\t: 0
Features\t: fp asimd evtstrm aes crc32
CPU part\t: 0xd0c
"""


def test_cpuinfo_is_read_for_each_kind_of_cpu():
    assert parse_cpuinfo(INTEL_SPR, "x86_64") == (
        "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
        ("avx2", "avx512", "avx512_bf16", "amx"),
    )
    assert parse_cpuinfo(AMD_ZEN3, "x86_64") == ("AMD EPYC 7B13", ("avx2",))
    assert parse_cpuinfo(ARM, "aarch64")[1] == ("neon",)


def _info(*features: str) -> CPUInfo:
    return CPUInfo("test CPU", "x86_64", tuple(features), threads=2, cores=2)


def test_cpu_kinds():
    assert _info("avx2").kind == "AVX2"
    assert _info("avx2", "avx512").kind == "AVX-512 (no BF16)"
    assert _info("avx2", "avx512", "avx512_bf16", "amx").kind == "AVX-512 BF16 + AMX"
    assert not _info("avx2").native_bf16 and _info("avx512_bf16").native_bf16
    assert "AVX2; 2 threads of 2 CPUs" in _info("avx2").describe()


def test_what_the_fast_recipe_picks_on_each_device():
    avx2 = pick_speedups(
        "cpu", channels_last=True, bf16=True, native_bf16=False, info=_info("avx2")
    )
    assert (avx2.channels_last, avx2.bf16, avx2.small_maps) == (True, False, True)
    assert "small maps as matrix products" in avx2.describe()
    assert "no native bf16" in avx2.describe()
    bf16 = pick_speedups(
        "cpu", channels_last=True, bf16=True, native_bf16=True, info=_info("avx512_bf16")
    )  # as measured best there before: unchanged
    assert (bf16.channels_last, bf16.bf16, bf16.small_maps) == (True, True, False)
    lecture = pick_speedups(
        "cpu", channels_last=False, bf16=False, native_bf16=False, info=_info("avx2")
    )
    assert lecture.channels_last and not lecture.bf16  # NHWC on every CPU; fp32 stays fp32


def test_gpus_keep_the_recipe_settings():
    gpu = pick_speedups(torch.device("cuda"), channels_last=False, bf16=True, native_bf16=True)
    assert (gpu.channels_last, gpu.bf16, gpu.small_maps) == (False, True, False)
