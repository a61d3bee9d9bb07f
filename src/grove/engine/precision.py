"""Device, numeric precision, memory format, compilation and the host allocator: the speed settings of a run.

`auto` choices follow measurements (benchmarks/RESULTS.md): bf16 autocast wherever the hardware
has native bf16 (CUDA, and CPUs with AVX-512 BF16/AMX, where it trained the survey's CNN ~2x faster),
channels_last for image models, torch.compile on CUDA only (on a 2-core CPU it slowed training),
and on CPU a malloc that keeps freed activations (1.1-1.5x faster training steps).
"""

from __future__ import annotations

import ctypes
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from grove.errors import GroveError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Speed:
    device: str
    precision: str  # fp32, bf16 or fp16
    channels_last: bool
    compile: bool
    keep_freed_memory: bool  # glibc's malloc told to keep freed memory (CPU training)

    def autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=DTYPES[self.precision])

    def memory_format(self, x):
        """Image batches in channels_last when that is on; anything else unchanged."""
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def grad_scaler(self):
        """fp16 needs loss scaling; bf16 has fp32's range and does not."""
        return torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    def describe(self) -> dict:
        return {**asdict(self), "label": self.label()}

    def label(self) -> str:
        """The active settings in a few words, e.g. 'bf16 channels_last freed-memory-kept'."""
        flags = {"channels_last": self.channels_last, "compiled": self.compile, "freed-memory-kept": self.keep_freed_memory}
        return " ".join([self.precision, *(name for name, on in flags.items() if on)])


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GroveError(f"recipe key 'train.device': '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GroveError("train.device asks for CUDA but no CUDA GPU is visible; use train.device=auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def keep_freed_memory() -> bool:
    """Stop glibc's malloc from handing freed activations back to the kernel after every step.

    By default glibc serves large blocks with mmap (past a threshold that adapts as the program
    runs) and trims the top of its heap, so each CPU training step page-faults its activations back
    in: thousands of minor faults a step, an eighth to a third of the step time of the survey's CNN
    (benchmarks/train_overhead.py). Process-wide; returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest: blocks under 32 MiB come from the heap
        and libc.mallopt(m_trim_threshold, 1 << 30)  # keep up to 1 GiB of freed heap
    )


def resolve_speed(train_cfg, device: torch.device, image_model: bool) -> Speed:
    """The run's speed settings; the allocator one is process-wide and applied here."""
    precision = train_cfg.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise GroveError("train.precision=fp16 needs a CUDA GPU; use bf16 (or fp32) on CPU")
    channels_last = train_cfg.channels_last
    if channels_last == "auto":
        channels_last = image_model
    compile_ = train_cfg.compile
    if compile_ == "auto":
        compile_ = device.type == "cuda"
    keep = train_cfg.keep_freed_memory
    if keep == "auto":
        keep = device.type == "cpu"
    keep = bool(keep) and keep_freed_memory()
    return Speed(str(device), precision, bool(channels_last and image_model), bool(compile_), keep)
