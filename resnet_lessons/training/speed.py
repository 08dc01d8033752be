"""What this machine can do, and the fastest exact way to train on it.

Three things live here:

* :func:`cpu_info`: the CPU's model and the vector features that decide training speed
  (AVX2, AVX-512, AVX-512 BF16, AMX on x86; NEON on ARM).
* :class:`SmallMapConv2d` and :func:`use_small_map_convs`: an *exact* rewrite of the
  convolutions whose input map has fewer pixels than the kernel has taps. At 28x28 the
  lecture's ResNet-18 shrinks the picture to 2x2 in stage 3 and 1x1 in stage 4; there a 3x3
  convolution (padding 1) multiplies most of its 9 taps by padding zeros, and oneDNN's
  backward pass for such maps is slow on CPUs without AVX-512 (measured in
  ``benchmarks/README.md``). Written as one matrix product it computes the same numbers
  with only the taps that touch a real pixel.
* :func:`pick_speedups`: which of these (and channels_last, bf16 autocast) a recipe uses on
  a device, with the reason, so ``fit`` can say what it picked.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# --------------------------------------------------------------------------- the CPU


@dataclass(frozen=True)
class CPUInfo:
    """The CPU's name and the features that matter for training speed."""

    model: str  # e.g. "AMD EPYC 7B13"
    arch: str  # platform.machine(): "x86_64", "arm64", "aarch64", ...
    features: tuple[str, ...]  # of FEATURES, those present
    threads: int  # torch.get_num_threads(): the threads PyTorch computes with
    cores: int  # os.cpu_count(): logical CPUs the OS reports

    @property
    def native_bf16(self) -> bool:
        """Whether bfloat16 matrix products run natively (AVX-512 BF16 or AMX)."""
        return "avx512_bf16" in self.features or "amx" in self.features

    @property
    def kind(self) -> str:
        """A short name for the class of CPU: what the README's measured figures are keyed by."""
        if self.native_bf16:
            return "AVX-512 BF16" + (" + AMX" if "amx" in self.features else "")
        if "avx512" in self.features:
            return "AVX-512 (no BF16)"
        if "avx2" in self.features:
            return "AVX2"
        if "neon" in self.features:
            return "ARM NEON"
        return self.arch or "unknown"

    def describe(self) -> str:
        """One line: ``AMD EPYC 7B13 (x86_64, AVX2; 2 threads of 2 CPUs)``."""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''} of {self.cores} CPUs"
        return f"{self.model} ({self.arch}, {self.kind}; {threads})"


#: The features :func:`cpu_info` reports, by the names it uses.
FEATURES = ("avx2", "avx512", "avx512_bf16", "amx", "neon")


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _features_from_flags(flags: set[str], arch: str) -> tuple[str, ...]:
    found = set()
    if "avx2" in flags:
        found.add("avx2")
    if "avx512f" in flags:
        found.add("avx512")
    if "avx512_bf16" in flags:
        found.add("avx512_bf16")
    if "amx_bf16" in flags or "amx_tile" in flags:
        found.add("amx")
    if "asimd" in flags or "neon" in flags or arch in ("arm64", "aarch64"):
        found.add("neon")  # every 64-bit ARM CPU has NEON (Advanced SIMD)
    return tuple(name for name in FEATURES if name in found)


def parse_cpuinfo(text: str, arch: str) -> tuple[str, tuple[str, ...]]:
    """``(model, features)`` from the text of ``/proc/cpuinfo`` (Linux); pure, for tests."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, _features_from_flags(flags, arch)


@functools.lru_cache(maxsize=1)
def _cpu_model_and_features() -> tuple[str, tuple[str, ...]]:
    arch = platform.machine()
    model, features = parse_cpuinfo(_cpuinfo_text(), arch)
    if not model and platform.system() == "Darwin":  # macOS: no /proc
        try:
            model = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            model = ""
    if not features:  # no /proc/cpuinfo: ask PyTorch what it dispatches to
        capability = ""
        try:
            capability = torch.backends.cpu.get_cpu_capability().lower()
        except (AttributeError, RuntimeError):
            pass
        flags = {"avx2"} if "avx2" in capability else set()
        if "avx512" in capability:
            flags |= {"avx2", "avx512f"}
        features = _features_from_flags(flags, arch)
    if "avx512_bf16" not in features and native_bf16("cpu"):  # PyTorch's own check
        features = tuple(sorted({*features, "avx512_bf16"}, key=FEATURES.index))
    return model or platform.processor() or "unknown CPU", features


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CPU with AVX-512 BF16 or AMX, or a
    CUDA GPU that supports it. Elsewhere bf16 is emulated and slower than float32, so a
    recipe's ``bf16=True`` is ignored there."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        # bf16 tensor cores came with compute capability 8.0 (Ampere); on older GPUs it is
        # emulated, which torch.cuda.is_bf16_supported() counts as support in newer PyTorch
        major, _ = torch.cuda.get_device_capability(device)
        return torch.version.hip is not None or major >= 8
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so guarded
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def cpu_info() -> CPUInfo:
    """This machine's CPU: model, architecture, features, threads."""
    model, features = _cpu_model_and_features()
    return CPUInfo(
        model=model,
        arch=platform.machine(),
        features=features,
        threads=torch.get_num_threads(),
        cores=os.cpu_count() or 1,
    )


# --------------------------------------------------------------------------- small maps


@functools.lru_cache(maxsize=64)
def tap_index(
    size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Which kernel tap joins each output pixel to each input pixel.

    Returns ``(index, (H_out, W_out))`` with ``index`` of shape ``(H_out * W_out, H * W)``:
    ``index[o, i]`` is the tap ``ty * kw + tx`` through which output pixel ``o`` reads input
    pixel ``i``, or ``kh * kw`` (one past the last tap) where ``o`` does not read ``i``.
    Pure and cached: a network asks for the same few sizes again and again.
    """
    (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = size, kernel_size, stride, padding, dilation
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"a {kh}x{kw} kernel with padding {padding} does not fit a {h}x{w} map; "
            "use a larger input or more padding."
        )
    index = torch.full((h_out * w_out, h * w), kh * kw, dtype=torch.long)
    for oy in range(h_out):
        for ox in range(w_out):
            for ty in range(kh):
                iy = oy * sh - ph + ty * dh
                if not 0 <= iy < h:
                    continue
                for tx in range(kw):
                    ix = ox * sw - pw + tx * dw
                    if 0 <= ix < w:
                        index[oy * w_out + ox, iy * w + ix] = ty * kw + tx
    return index, (h_out, w_out)


def small_map_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """``F.conv2d`` (zero padding, one group) as a single matrix product.

    ``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``, the same numbers as ``F.conv2d`` up to
    float rounding. The weight ``(C_out, C_in, kh, kw)`` is spread into a dense matrix
    ``(C_in * H * W, C_out * H_out * W_out)`` whose entries are the taps that connect an input
    pixel to an output pixel (zero where none does); autograd sends each gradient back to
    its tap. Worth it only when ``H * W < kh * kw``: then the matrix is smaller than what the
    convolution computes, most of it padding zeros.
    """
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    index, (h_out, w_out) = tap_index((h, w), (kh, kw), stride, padding, dilation)
    index = index.to(weight.device)
    taps = weight.reshape(c_out, c_in, kh * kw)
    taps = torch.cat([taps, taps.new_zeros(c_out, c_in, 1)], dim=2)  # tap kh*kw is "none"
    dense = taps[:, :, index]  # (C_out, C_in, H_out*W_out, H*W)
    dense = dense.permute(1, 3, 0, 2).reshape(c_in * h * w, c_out * h_out * w_out)
    out = x.reshape(n, c_in * h * w) @ dense.to(x.dtype)  # (N, C_out * H_out * W_out)
    out = out.view(n, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, c_out, 1, 1)
    return out


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that computes maps smaller than its kernel as one matrix product.

    Same parameters, same ``state_dict``, same outputs and gradients (to float rounding):
    only *how* the numbers are computed changes, and only when the input map has fewer
    pixels than the kernel has taps (``H * W < kh * kw``, e.g. 1x1 or 2x2 under a 3x3
    kernel). Made by :func:`use_small_map_convs`, which swaps the class of existing layers.

    A 1x1 convolution with a stride (the shortcut's ``use_1x1conv``) and fewer than 8 input
    channels is computed as a stride-1 one on every ``stride``-th pixel, which is what it
    computes anyway. On a CPU, PyTorch 2.14's kernel for the strided one corrupted memory
    (``double free or corruption``, then a crash) in float32, channels_last, one thread and
    2 or 4 input channels, as in ``narrow_resnet(4)`` under ``OMP_NUM_THREADS=1`` (8 to 64
    channels ran clean, and keep PyTorch's kernel: its weight gradients are summed in
    another order, so the sliced path would change trained results by float rounding).
    """

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        h, w = input.shape[-2:]
        kh, kw = self.kernel_size
        if (
            (kh, kw) == (1, 1)
            and self.stride != (1, 1)
            and self.padding in ((0, 0), "valid")
            and self.in_channels < 8  # where PyTorch's kernel broke (see the class docstring)
        ):
            sh, sw = self.stride
            return F.conv2d(input[:, :, ::sh, ::sw], weight, bias, 1, 0, 1, self.groups)
        if h * w >= kh * kw or self.groups != 1 or self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        padding = self.padding
        if isinstance(padding, str):  # "valid" or "same": let PyTorch work it out
            return super()._conv_forward(input, weight, bias)
        return small_map_conv2d(input, weight, bias, self.stride, padding, self.dilation)


def use_small_map_convs(model: nn.Module, enable: bool = True) -> int:
    """Swap every plain ``nn.Conv2d`` in ``model`` to :class:`SmallMapConv2d` (or back with
    ``enable=False``), in place. Returns how many layers changed. Parameters, buffers and
    the ``state_dict`` stay as they are, so checkpoints and ``from_torchvision`` are
    unaffected; ``isinstance(layer, nn.Conv2d)`` stays true."""
    changed = 0
    for module in model.modules():
        if enable and type(module) is nn.Conv2d:
            module.__class__ = SmallMapConv2d
            changed += 1
        elif not enable and type(module) is SmallMapConv2d:
            module.__class__ = nn.Conv2d
            changed += 1
    return changed


# --------------------------------------------------------------------------- what to use


@dataclass(frozen=True)
class Speedups:
    """How ``fit`` computes (never *what*: the network and its float32 weights are the same)."""

    channels_last: bool  # NHWC memory layout for the convolutions
    bf16: bool  # bfloat16 autocast for the forward pass (float32 weights and gradients)
    small_maps: bool  # SmallMapConv2d for maps smaller than the kernel
    reason: str  # why, in a few words

    def describe(self) -> str:
        """``float32, channels_last, small maps as matrix products (why)``."""
        parts = ["bf16 autocast" if self.bf16 else "float32"]
        parts.append("channels_last" if self.channels_last else "NCHW")
        if self.small_maps:
            parts.append("small maps as matrix products")
        return f"{', '.join(parts)} ({self.reason})"


def pick_speedups(
    device: torch.device | str,
    *,
    channels_last: bool,
    bf16: bool,
    native_bf16: bool,
    info: CPUInfo | None = None,
) -> Speedups:
    """The settings a recipe runs with on ``device``: the fastest *exact* ones measured there.

    ``channels_last`` and ``bf16`` are the recipe's wishes; ``native_bf16`` says whether the
    device computes bf16 natively (elsewhere it is emulated and slower, so it is dropped).
    On every CPU the convolutions run channels_last (NHWC; measured faster than NCHW at
    28 and 96 pixels). On a CPU without native bf16 (AVX2, most laptops) small maps become
    matrix products: 2.5x the images/s of plain float32 NHWC at 28x28 on a 2-core AVX2 CPU.
    On native-bf16 CPUs and on GPUs the rest stays as measured best there before.
    """
    device = torch.device(device)
    use_bf16 = bf16 and native_bf16
    if device.type != "cpu":
        return Speedups(channels_last, use_bf16, False, f"{device.type} device")
    info = info or cpu_info()
    if use_bf16:
        return Speedups(True, True, False, f"{info.kind} CPU: native bf16")
    why = f"{info.kind} CPU, no native bf16" if bf16 else f"{info.kind} CPU, float32 recipe"
    return Speedups(True, False, not native_bf16, why)


def device_name(device: torch.device) -> str:
    """How messages and records name a device: ``cpu (AVX2 CPU)``, ``cuda (NVIDIA H100 ...)``."""
    if device.type == "cpu":
        return f"cpu ({cpu_info().kind})"
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
