"""What the benchmarks say about the machine they ran on, and how busy other processes kept it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


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
