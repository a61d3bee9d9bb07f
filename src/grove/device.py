"""Which device a command runs on: `auto` is the local process's GPU when there is one, else the CPU."""

from __future__ import annotations

import torch

from grove.errors import GroveError


def pick_device(name: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """`key` names the setting the value came from, so an error points at what to change."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GroveError(f"{key}: '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GroveError(f"{key}={name} asks for CUDA but no CUDA GPU is visible; use auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device
