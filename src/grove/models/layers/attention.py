"""Multi-head self-attention and the Transformer block, shared by the text and speech models.

    attn = MultiHeadAttention(dim, n_heads, dropout=0.0, bias=True, rotary=False)
    y = attn(x, attn_mask=None, key_padding_mask=None, causal=False, kv_cache=None)  # x, y: (B, T, dim)

    block = TransformerBlock(dim, n_heads, mlp_ratio=4, dropout=0.0, rotary=False, norm="layer",
                             bias=True, norm_first=True, activation="gelu")
    x = block(x, attn_mask=None, key_padding_mask=None, causal=False, kv_cache=None)  # same arguments

Attention runs through `F.scaled_dot_product_attention` (SDPA), so CUDA picks flash or
memory-efficient kernels. SDPA can use flash kernels only when it gets no explicit mask: that is
the case with no mask at all, or with `causal=True` alone and no cached keys.

Masks, in any combination (they are merged into one):
- `key_padding_mask`: (B, S) bool, True = padding; no query attends to that key. S is the number
  of keys: T, or the cache length + T when decoding with a cache.
- `causal=True`: the query at position i attends to keys at positions <= i, where positions count
  the cached keys too, so a chunk of new tokens decoded after a cache sees the whole cache.
- `attn_mask`: SDPA's convention, broadcastable to (B, n_heads, T, S): a bool mask where True means
  MAY attend (the opposite of nn.MultiheadAttention's bool masks), or a float mask added to the scores.
A query whose keys are all masked gets a zero output, not NaN.

Rotary positions (`rotary=True`, see positions.py) rotate q and k by their positions before the
scores; with a cache, positions continue from the cache length. Learned or sinusoidal positions
are added to the input by the model instead.

Incremental decoding: give each attention layer its own `KVCache` (`KVCache.for_layers(n)`); each
call appends that call's keys and values to it and attends over everything cached, so a decoder
runs its prompt once and then one token per call. The cache holds tensors of the batch it was
filled with; start new caches for a new batch.

Attention maps for explanations (attention rollout): SDPA does not return its weights, so
`attn.attention_weights(x, ...)` and `block.attention_weights(x, ...)` recompute the (B, nh, T, T)
softmax probabilities from the same projections and masks (no cache, no dropout), outside the
training path.

Parameter names follow nanoGPT (attn.c_attn, attn.c_proj, ln_1, ln_2, mlp.c_fc, mlp.c_proj).
This module is self-attention only (q, k and v all come from x).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grove.models.layers.options import check_choice
from grove.models.layers.positions import RotaryEmbedding, apply_rotary

NORMS = ("layer", "rms")
ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}


class KVCache:
    """The keys and values one attention layer has seen so far, for incremental decoding."""

    def __init__(self):
        self.k: torch.Tensor | None = None  # (B, nh, S, hs)
        self.v: torch.Tensor | None = None  # (B, nh, S, hs)

    @classmethod
    def for_layers(cls, n_layers: int) -> list[KVCache]:
        return [cls() for _ in range(n_layers)]

    @property
    def seq_len(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys and values (B, nh, T, hs); returns all of them (B, nh, S + T, hs)."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat((self.k, k), dim=2)
            self.v = torch.cat((self.v, v), dim=2)
        return self.k, self.v


def merge_masks(
    n_queries: int,
    n_keys: int,
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    causal: bool,
    device: torch.device,
) -> tuple[torch.Tensor | None, bool]:
    """One SDPA mask from the three kinds of mask; returns (attn_mask for SDPA, is_causal for SDPA)."""
    past = n_keys - n_queries  # cached keys before the first query
    if causal and attn_mask is None and key_padding_mask is None and past == 0:
        return None, True  # SDPA's own causal path keeps the flash kernels
    keep = None  # bool, True = may attend
    if causal and n_queries > 1:  # a single new query may see every key, so it needs no mask
        keep = torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=past)  # (T, S)
    if key_padding_mask is not None:
        if key_padding_mask.shape[-1] != n_keys:
            raise ValueError(
                f"key_padding_mask covers {key_padding_mask.shape[-1]} keys but there are {n_keys} "
                "(with a KV cache it must cover the cached keys too)"
            )
        not_pad = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        keep = not_pad if keep is None else keep & not_pad
    if attn_mask is None or keep is None:
        return (keep if attn_mask is None else attn_mask), False
    if attn_mask.dtype == torch.bool:
        return attn_mask & keep, False
    return torch.where(keep, attn_mask, float("-inf")), False


def attend(q, k, v, mask, dropout_p: float, is_causal: bool) -> torch.Tensor:
    """SDPA over (B, nh, T, hs) inputs; bf16 inputs on a CPU are computed in fp32.

    On CPU, SDPA's bf16 backward is slow: forward + backward in fp32 was 1.6-5x faster than in bf16
    at T=64-128, even at T=256 and ~10% slower at T=512 (torch 2.13, benchmarks/RESULTS.md), and it
    made shakespeare-char-gpt's bf16 training step 1.7x faster. Autocast would cast fp32 inputs
    straight back to bf16, so it is switched off around the call.
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
    if mask is not None and mask.is_floating_point():
        mask = mask.float()
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
        )
    return y.to(q.dtype)


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0, bias: bool = True, rotary: bool = False):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"attention splits dim={dim} into n_heads={n_heads} equal heads; make dim a multiple")
        self.dim = dim
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.dropout = dropout
        self.c_attn = nn.Linear(dim, 3 * dim, bias=bias)  # q, k and v in one matmul
        self.c_proj = nn.Linear(dim, dim, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.rope = RotaryEmbedding(self.head_dim) if rotary else None

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        past = 0 if kv_cache is None else kv_cache.seq_len
        q, k, v = self.project(x, past)  # 3 x (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # (B, nh, S, hs), S = past + T
        mask, is_causal = merge_masks(T, k.shape[2], attn_mask, key_padding_mask, causal, x.device)
        y = attend(q, k, v, mask, self.dropout if self.training else 0.0, is_causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def project(self, x: torch.Tensor, past: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of x (B, T, dim), each (B, nh, T, hs); rotary positions start at past."""
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.dim, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        if self.rope is not None:
            cos, sin = self.rope(T, offset=past)  # (T, hs) each
            q = apply_rotary(q, cos, sin)
            k = apply_rotary(k, cos, sin)
        return q, k, v

    def attention_weights(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """The softmax attention probabilities (B, nh, T, T) that forward(x, ...) uses; fp32, rows sum to 1.

        Recomputed from the same projections and masks, since SDPA does not return them; a query
        whose keys are all masked gets a zero row, as forward gives it a zero output.
        """
        T = x.shape[1]
        q, k, _ = self.project(x)
        mask, is_causal = merge_masks(T, T, attn_mask, key_padding_mask, causal, x.device)
        if is_causal:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, T, T)
        if mask is not None and mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        elif mask is not None:
            scores = scores + mask.float()
        return scores.softmax(dim=-1).nan_to_num(0.0)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, bias: bool = True, activation: str = "gelu"):
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        self.c_fc = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = ACTIVATIONS[activation]()
        self.c_proj = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.c_fc(x))  # (B, T, hidden)
        return self.dropout(self.c_proj(x))  # (B, T, dim)


def make_norm(norm: str, dim: int, bias: bool = True) -> nn.Module:
    check_choice("norm", norm, NORMS)
    return nn.LayerNorm(dim, bias=bias) if norm == "layer" else nn.RMSNorm(dim)


class TransformerBlock(nn.Module):
    """Self-attention then an MLP, each with a residual connection.

    Pre-norm by default (x + attn(norm(x)); x + mlp(norm(x))), which trains stably without warm-up
    tricks; `norm_first=False` gives the original post-norm block (norm(x + attn(x)); ...).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_ratio: float = 4,
        dropout: float = 0.0,
        rotary: bool = False,
        norm: str = "layer",
        bias: bool = True,
        norm_first: bool = True,
        activation: str = "gelu",
    ):
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = make_norm(norm, dim, bias)
        self.attn = MultiHeadAttention(dim, n_heads, dropout, bias, rotary)
        self.ln_2 = make_norm(norm, dim, bias)
        self.mlp = MLP(dim, int(mlp_ratio * dim), dropout, bias, activation)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        # x: (B, T, dim) throughout
        if self.norm_first:
            x = x + self.attn(self.ln_1(x), attn_mask, key_padding_mask, causal, kv_cache)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, attn_mask, key_padding_mask, causal, kv_cache))
        return self.ln_2(x + self.mlp(x))

    def attention_weights(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """This block's attention probabilities (B, nh, T, T) for its input x (see MultiHeadAttention)."""
        attn_input = self.ln_1(x) if self.norm_first else x
        return self.attn.attention_weights(attn_input, attn_mask, key_padding_mask, causal)
