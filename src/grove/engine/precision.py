"""Device, numeric precision, memory format and compilation: the speed settings of a run.

`auto` choices follow measurements (benchmarks/RESULTS.md): bf16 autocast wherever the hardware
has native bf16 (CUDA, and CPUs with AVX-512 BF16/AMX, where it trained the survey's CNN ~2x faster),
channels_last for image models, torch.compile on CUDA only (on a 2-core CPU it slowed training).
"""

from __future__ import annotations

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
        return asdict(self)


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


def resolve_speed(train_cfg, device: torch.device, image_model: bool) -> Speed:
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
    return Speed(str(device), precision, bool(channels_last and image_model), bool(compile_))
