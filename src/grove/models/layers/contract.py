"""The model contract's shared vocabulary: input specs and typed outputs.

Every registered model declares what it takes (`input_spec()`, for export and serving) and, where
it returns more than logits, returns one of the typed outputs below. Both are NamedTuples, so a
caller that unpacks `log_probs, lengths = model(x)` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class TensorSpec:
    """One model input: a name, a shape whose str entries name dynamic axes, and a dtype.

    TensorSpec("image", ("batch", 3, 32, 32), "float32") is a batch of 32x32 RGB images;
    TensorSpec("tokens", ("batch", "time"), "int64") is token ids of any length.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: axis for i, axis in enumerate(self.shape) if isinstance(axis, str)}

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class CTCOutput(NamedTuple):
    log_probs: torch.Tensor  # (B, T', classes), log-softmax over classes (blank is class 0)
    lengths: torch.Tensor  # (B,) valid output frames per utterance


class LMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab_size)
    state: object  # the recurrent state to carry into the next batch (a tensor or a tuple of them)
