"""GPT: a decoder-only Transformer language model, after nanoGPT's `model.py` (GPT-2's design).

Token embeddings (+ learned positions, or rotary positions inside attention) -> n_layer pre-norm
causal Transformer blocks from grove.models.layers -> final LayerNorm -> a linear head over the
vocabulary, whose weight is the token embedding's when `tie_weights` (GPT-2 does).

    model = create_model("gpt", vocab_size=65)
    logits = model(idx)                              # idx (B, T) int64, T <= block_size -> (B, T, vocab_size)
    for token in model.generate(idx, 100, top_k=50):  # each token (B, 1), yielded as soon as it is sampled
        ...

`generate` runs the prompt once into a KV cache and then feeds one token per step. Once the
sequence is longer than block_size the cache cannot go on (learned positions stop at block_size),
so from then on every step recomputes the last block_size tokens, as nanoGPT does.
The sampling loop is `TokenSampler.generate` (models/layers/tokens.py), which lstm_lm shares;
this model gives it `next_token_logits`.

Contract: the feature layer is the final LayerNorm (`transformer.ln_f`) and `forward_features`
returns its output (B, T, n_embd); `reset_classifier` raises ValueError, since the output is the
vocabulary the embedding reads (and, tied, the very same matrix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from grove.models.layers.attention import KVCache, TransformerBlock
from grove.models.layers.contract import TensorSpec
from grove.models.layers.heads import check_lm_num_classes, reject_lm_reset
from grove.models.layers.options import check_choice
from grove.models.layers.positions import LearnedPositions
from grove.models.layers.specs import token_spec
from grove.models.layers.tokens import TokenSampler
from grove.registry import register_model

POSITIONS = ("learned", "rotary")


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    bias: bool
    positions: str
    tie_weights: bool


class GPT(TokenSampler, nn.Module):
    feature_layer = "transformer.ln_f"
    embedding_layer = "transformer.wte"

    def __init__(self, config: GPTConfig):
        super().__init__()
        check_choice("positions", config.positions, POSITIONS)
        self.config = config
        self.num_classes = config.vocab_size
        rotary = config.positions == "rotary"
        parts = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if not rotary:
            parts["wpe"] = LearnedPositions(config.block_size, config.n_embd)
        parts["drop"] = nn.Dropout(config.dropout)
        parts["h"] = nn.ModuleList(
            TransformerBlock(config.n_embd, config.n_head, 4, config.dropout, rotary, "layer", config.bias)
            for _ in range(config.n_layer)
        )
        parts["ln_f"] = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one tensor: the embedding is the output layer

        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections: GPT-2 scales them by 1/sqrt(2 * n_layer)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameters; non_embedding leaves out the tables that are looked up, not multiplied.

        That is the position table, and the token table too when it is not tied to the head
        (tied, it is the head's matmul weight, so it stays), as in nanoGPT.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token, as nanoGPT's estimate_mfu (PaLM, appendix B).

        6N for the weight matmuls (N = get_num_params(), 2 FLOPs per multiply-add, backward twice
        the forward) plus 12·L·H·Q·T for attention scores and their weighted sum over T = seq_len
        context tokens (default block_size). Forward alone is a third of this.
        """
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.get_num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * T

    def hidden_states(self, idx: torch.Tensor, kv_caches: list[KVCache] | None = None) -> torch.Tensor:
        """The final-LayerNorm output (B, T, n_embd); with kv_caches, idx continues the cached tokens."""
        B, T = idx.shape
        past = 0 if kv_caches is None else kv_caches[0].seq_len
        if past + T > self.config.block_size:
            raise ValueError(
                f"gpt sees at most block_size={self.config.block_size} tokens; got {past + T} "
                "(crop the context, or build the model with a larger block_size)"
            )
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:
            x = self.transformer.wpe(x, offset=past)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, causal=True, kv_cache=None if kv_caches is None else kv_caches[i])  # (B, T, C)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, kv_caches: list[KVCache] | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(idx, kv_caches))  # (B, T, vocab_size)

    def forward_features(self, idx: torch.Tensor) -> torch.Tensor:
        """The final-LayerNorm output (B, T, n_embd) that lm_head reads."""
        return self.hidden_states(idx)

    def reset_classifier(self, num_classes: int) -> None:
        reject_lm_reset("gpt", self.config.vocab_size)

    def input_spec(self) -> list[TensorSpec]:
        return [token_spec()]  # tokens <= block_size

    def next_token_logits(self, new_ids: torch.Tensor, state: tuple | None) -> tuple[torch.Tensor, tuple]:
        """For `generate`; the state is (the context: the last block_size tokens, its KV caches or None)."""
        block_size = self.config.block_size
        if state is None:
            context, caches = new_ids[:, -block_size:], None
        else:
            context, caches = torch.cat((state[0], new_ids), dim=1)[:, -block_size:], state[1]
        if caches is not None and caches[0].seq_len < block_size:
            h = self.hidden_states(context[:, -1:], caches)  # the newest token, attending to the cache
        else:
            # first step, or the context is full: learned positions cannot slide, so recompute
            # the last block_size tokens (a cache is kept only while it has room to grow)
            caches = KVCache.for_layers(self.config.n_layer) if context.shape[1] < block_size else None
            h = self.hidden_states(context, caches)
        return self.lm_head(h[:, -1, :]), (context, caches)  # (B, vocab_size)

    def example_input(self, batch_size: int) -> torch.Tensor:
        T = min(self.config.block_size, 16)
        return torch.randint(0, self.config.vocab_size, (batch_size, T), device=self.lm_head.weight.device)


@register_model(modality="text", family="transformer")
def gpt(
    vocab_size: int = 65,  # Tiny Shakespeare's characters, nanoGPT's character-level data
    block_size: int = 64,  # context length: enough for a few lines of verse, cheap on a CPU
    n_layer: int = 4,  # with n_head and n_embd: ~0.8M parameters, trains on a laptop CPU in minutes
    n_head: int = 4,
    n_embd: int = 128,
    dropout: float = 0.0,  # nanoGPT's default; 0.1-0.2 helps small data sets overfit less
    bias: bool = False,  # nanoGPT: no biases in Linear/LayerNorm is a bit better and faster
    positions: str = "learned",  # "learned" (GPT-2) or "rotary" (RoPE, no length-bound table)
    tie_weights: bool = True,  # GPT-2 shares the embedding and output matrix: fewer parameters, no loss
    num_classes: int | None = None,  # the output size; an LM predicts tokens, so it must be vocab_size
) -> GPT:
    """Decoder-only GPT language model (nanoGPT's structure), learned or rotary positions, KV-cached generation."""
    check_lm_num_classes("gpt", num_classes, vocab_size)
    config = GPTConfig(vocab_size, block_size, n_layer, n_head, n_embd, dropout, bias, positions, tie_weights)
    return GPT(config)
