"""What every data set builder returns, and the in-memory split type.

A builder is registered with `@register_dataset` and returns a `DataBundle`. Splits are either a
`TensorData` (everything in memory; the loader indexes it on the training device, no workers) or a
map-style dataset whose `__getitem__` returns `(input, target)`, or `None` for an unreadable file,
and whose `path(i)` names the file behind item i (so the loader can count or report it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


class TensorData:
    """A split held in memory as two tensors; `take(idx)` gathers a batch in one indexing op."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor):
        if len(inputs) != len(targets):
            raise ValueError("inputs and targets differ in length")
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.inputs[i], self.targets[i]

    def take(self, index: torch.Tensor):
        return self.inputs[index], self.targets[index]

    def to(self, device) -> "TensorData":
        return TensorData(self.inputs.to(device), self.targets.to(device))


@dataclass
class DataBundle:
    """Splits plus what the rest of grove needs to know about them.

    transform(x, train) runs on batches on the training device (augmentation and normalisation),
    so it is the same code on CPU and GPU; `meta` is JSON-able and is saved in the run directory so
    that evaluate/predict can rebuild the transform and name the classes without the data.
    """

    train: Any
    val: Any
    test: Any | None
    classes: list[str]
    transform: Callable[[torch.Tensor, bool], torch.Tensor]
    meta: dict = field(default_factory=dict)
    # Model options the data decides (in_channels, image_size, num_classes ...); a recipe's own
    # model options take precedence.
    model_defaults: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)
