"""What the benchmarks say about the machine they ran on, and how busy other processes kept it."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from grove.engine import precision


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags (from /proc/cpuinfo where there is one): grove's
    own reading (`grove.engine.precision.cpu_info`), the one `train.precision=auto` decides on."""
    info = precision.cpu_info()
    return info.model, set(info.flags)


def bf16_line() -> str:
    """The CPU's AVX-512 and bf16 hardware in a few words, e.g. 'avx512f, no avx512_bf16/amx_bf16;
    native bf16: no; oneDNN says bf16 supported' (oneDNN's answer, because it can differ)."""
    info = precision.cpu_info()
    native, _ = precision.native_bf16(info)
    if info.arch in ("aarch64", "arm64"):
        isa = "bf16" if "bf16" in info.flags else "no bf16 feature"
    else:
        names = ("avx512f", *precision.X86_NATIVE_BF16)
        missing = [f for f in names if f not in info.flags]
        isa = ", ".join([*(f for f in names if f in info.flags), *(["no " + "/".join(missing)] if missing else [])])
    try:
        onednn = "supported" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "not supported"
    except (AttributeError, RuntimeError):
        onednn = "unknown"
    return f"{isa}; native bf16: {'yes' if native else 'no'}; oneDNN says bf16 {onednn}"


def machine_line() -> str:
    model, _ = cpu_info()
    return (
        f"{model}, {os.cpu_count()} cores ({bf16_line()}), {torch.get_num_threads()} torch threads, "
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


def train_run(recipe: str, work: Path, overrides: list[str] = (), log_name: str | None = None) -> Path:
    """`grove train RECIPE run.dir=work/runs OVERRIDES` in a subprocess; the run's folder.

    Training is not what the benchmarks measure: OpenMP threads that sleep instead of spinning
    keep it from crawling on a shared machine (benchmarks/RESULTS.md, "Speech"); the weights are
    the same. A failure ends the benchmark with the log's last lines.
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "grove", "train", recipe, f"run.dir={work / 'runs'}", *overrides]
    log = work / f"train-{log_name or recipe}.log"
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    text = log.read_text()
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd[2:])}` exited {done.returncode}: " + " | ".join(text.strip().splitlines()[-3:]))
    for line in reversed(text.splitlines()):
        if line.startswith("run directory: "):
            return Path(line.removeprefix("run directory: ").strip())
    raise SystemExit(f"`{' '.join(cmd[2:])}` printed no run directory (see {log})")
