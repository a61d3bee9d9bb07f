"""Exponential moving average of the weights, evaluated and saved in place of the raw weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema, live = list(self.model.parameters()), list(model.parameters())
        torch._foreach_lerp_(ema, live, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)  # batch-norm statistics are already averages
