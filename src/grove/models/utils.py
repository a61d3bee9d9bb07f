"""Model-agnostic helpers that only need the model contract."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def estimate_flops(model: nn.Module, batch_size: int = 1) -> int:
    """Forward FLOPs per sample (a multiply-add counts 2), measured on `example_input`."""
    x = model.example_input(batch_size)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // batch_size
