"""The Task protocol: what the engine, `grove evaluate` and `load_run` ask of a task.

A task turns a batch into a loss (`step`), keeps running metrics (`metrics`), and names the
validation metric that picks the best checkpoint (`monitor`, `monitor_mode`). Tasks that carry
state across batches (a recurrent language model reading token streams) override the state hooks;
for every other task they are the no-ops below, so the engine calls them unconditionally.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Protocol

import torch
from torch import nn


def sum_across_processes(*tensors: torch.Tensor) -> None:
    """Sums each tensor in place over the processes of a distributed run (nothing to do in one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for tensor in tensors:
            torch.distributed.all_reduce(tensor)


class Metrics(Protocol):
    def update(self, outputs, targets, loss: torch.Tensor) -> None: ...

    def all_reduce(self) -> None: ...

    def compute(self, per_class: bool = False) -> dict: ...


class Task:
    name: str
    monitor: str  # the validation metric that picks `best` and drives early stopping
    monitor_mode: str  # "max" or "min"

    def step(self, model: nn.Module, inputs, targets) -> tuple[torch.Tensor, Any]:
        """(mean loss, model outputs) for one batch."""
        raise NotImplementedError

    def metrics(self, device) -> Metrics:
        raise NotImplementedError

    def example_losses(self, outputs, targets) -> torch.Tensor:
        """(B,) the loss of each example of a batch (membership audits score examples by it)."""
        raise NotImplementedError(f"the {self.name} task has no per-example loss")

    # -- state carried across batches (no-ops unless the task has any) ---------------------------
    def reset(self) -> None:
        """Called at the start of every training epoch."""

    def fresh_state(self):
        """A context in which evaluation runs without disturbing the training state."""
        return nullcontext()

    def state_dict(self) -> dict:
        """Saved per process in every checkpoint."""
        return {}

    def load_state_dict(self, saved: dict, device) -> None:
        """Restores what `state_dict` saved."""
