"""Position information for Transformers: learned absolute positions and rotary embeddings.

- `LearnedPositions(max_len, dim)`: one trained vector per position (GPT-2, BERT). Called as
  `pos(x, offset=0)` on token embeddings x (B, T, dim) it adds the rows of positions
  offset..offset+T-1. Sequences cannot be longer than `max_len`. It takes the batch rather than a
  length so that per-example gradients (differentially private training) see a batch-first input.
- `RotaryEmbedding(head_dim, base=10000)` + `apply_rotary(x, cos, sin)`: RoPE (Su et al., 2021)
  rotates each query/key head by an angle proportional to its position, so their dot product
  depends only on the distance between the two positions. No parameters and no length limit:
  cos/sin are cached for the longest sequence seen so far and grown on demand. Pairs are
  (i, i + head_dim/2) ("rotate half", as GPT-NeoX and Hugging Face Llama), not interleaved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LearnedPositions(nn.Module):
    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)  # GPT-2 / BERT position table init

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        seq_len = x.shape[1]
        if offset + seq_len > self.max_len:
            raise ValueError(
                f"positions {offset}..{offset + seq_len - 1} do not fit the {self.max_len} learned "
                f"positions; crop or split the input to at most {self.max_len} tokens"
            )
        # a lookup, not a slice: a view of a parameter made under no_grad has requires_grad but
        # no grad_fn, which trips module hooks such as FlopCounterMode's
        positions = torch.arange(offset, offset + seq_len, device=self.weight.device)  # (T,)
        return x + F.embedding(positions, self.weight)  # (B, T, dim) + (T, dim)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings rotate pairs of channels, so head_dim must be even; got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        # buffers, not parameters, and not saved: they follow .to(device) and are recomputed exactly
        self.register_buffer("cos_cached", torch.empty(0, head_dim), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0, head_dim), persistent=False)

    def _grow(self, length: int) -> None:
        # computed in float32 from scratch, so model.to(bfloat16) cannot coarsen the angles
        length = max(length, 2 * self.cos_cached.shape[0])  # amortise regrowth while decoding
        device = self.cos_cached.device
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        freqs = torch.outer(torch.arange(length, device=device).float(), inv_freq)  # (L, hs/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (L, hs)
        self.cos_cached = emb.cos()
        self.sin_cached = emb.sin()

    def forward(self, seq_len: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions offset..offset+seq_len-1, each (T, head_dim), float32."""
        end = offset + seq_len
        if end > self.cos_cached.shape[0] or self.cos_cached.dtype != torch.float32:
            self._grow(end)
        return self.cos_cached[offset:end], self.sin_cached[offset:end]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, head_dim) by the angles of its positions; computed in float32, returned in x's dtype."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
