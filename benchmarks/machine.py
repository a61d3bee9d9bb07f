"""What the benchmarks say about the machine they ran on, and how busy other processes kept it."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def machine_line() -> str:
    model, flags = cpu_info()
    isa = ", ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "no AVX-512"
    return (
        f"{model}, {os.cpu_count()} cores ({isa}), {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def cpu_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used so far (busy and stolen jiffies of
    /proc/stat; NaN elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def conv_matmul_operands(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands that make F.conv2d(x, weight) an n x n x n matrix product: a 1x1 channels_last
    convolution, which runs on oneDNN's kernels as the models' layers do."""
    x = torch.randn(1, n, 32, n // 32).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(n, n, 1, 1).to(dtype).contiguous(memory_format=torch.channels_last)
    return x, weight


def peak_matmul_flops(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best FLOP/s of an n x n x n matrix product over `seconds`, timed in batches of 4 products,
    done both ways torch can: torch.mm (BLAS) and a 1x1 convolution (oneDNN). The faster one is
    the peak: on AMD CPUs torch.mm's fp32 reaches under half of oneDNN's."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    x, weight = conv_matmul_operands(n, dtype)
    best = 0.0
    with torch.no_grad():
        for product in (lambda: a @ b, lambda: F.conv2d(x, weight)):
            for _ in range(2):
                product()
            end = time.perf_counter() + seconds / 2
            while time.perf_counter() < end:
                t = time.perf_counter()
                for _ in range(4):
                    product()
                best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best
