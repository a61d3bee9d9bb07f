"""A BERT-style Transformer encoder for sequence classification, trained from scratch.

token + learned position embeddings -> dropout -> n_layer pre-norm Transformer blocks (bidirectional:
no causal mask; padding keys masked) -> final LayerNorm -> pooling -> dropout -> linear head.
Pooling is "cls" (the first token's vector, BERT's [CLS]; put a class token first if your
tokenizer has one) or "mean" (the mean over the non-padding tokens). BERT's extra tanh pooler is
left out: it matters for BERT's next-sentence pre-training, not for training from scratch.

    logits = model(idx)   # idx (B, T) int64, T <= max_len, right-padded with pad_id -> (B, num_classes)

Padding is invisible: no token attends to a pad_id token and the mean skips them, so the same
text padded to any length gives the same logits. Pad on the right; left padding would shift the
positions of the text. Pre-trained BERT checkpoints belong to the Hugging Face wrappers (hf.py).

Contract: the feature layer is the final LayerNorm `ln_f`, and `forward_features` returns its
output (B, T, n_embd) for every token; pooling (which needs the padding mask) belongs to the head.
"""

from __future__ import annotations

import torch
from torch import nn

from grove.models.layers.attention import TransformerBlock
from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import TokenInput
from grove.models.layers.options import check_choice
from grove.models.layers.positions import LearnedPositions
from grove.models.layers.tokens import check_pad_id
from grove.registry import register_model

POOLINGS = ("cls", "mean")


class EncoderClassifier(TokenInput, ReplaceableHead, nn.Module):
    feature_layer = "ln_f"
    embedding_layer = "tok_emb"
    head_layer = "head"

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float,
        pad_id: int,
        pooling: str,
    ):
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        check_pad_id(pad_id, vocab_size)
        self.num_classes = num_classes
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.example_tokens = min(max_len, 16)
        self.pad_id = pad_id
        self.pooling = pooling
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = LearnedPositions(max_len, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(n_embd, n_head, 4, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):  # BERT's init: normal(0, 0.02), zero biases
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    init_head = _init_weights  # a fresh head starts as the built one did

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(idx)  # (B, T, C)
        pad = idx == self.pad_id  # (B, T), True = padding
        if self.pooling == "cls":
            pooled = x[:, 0]  # (B, C)
        else:
            keep = (~pad).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)  # (B, C)
        return self.head(self.drop(pooled))  # (B, num_classes)

    def forward_features(self, idx: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm's output (B, T, n_embd), one vector per token (padding included)."""
        B, T = idx.shape
        pad = idx == self.pad_id  # (B, T), True = padding
        x = self.drop(self.pos_emb(self.tok_emb(idx)))  # (B, T, C)
        for block in self.blocks:
            x = block(x, key_padding_mask=pad)  # (B, T, C)
        return self.ln_f(x)


@register_model(modality="text", family="transformer")
def encoder_classifier(
    vocab_size: int = 30522,  # BERT's WordPiece vocabulary (bert-base-uncased), the common tokenizer
    num_classes: int = 2,  # binary sentiment (SST-2, IMDb), the usual first text classification task
    max_len: int = 128,  # covers most sentences and short reviews; attention cost grows with its square
    n_layer: int = 4,  # a "BERT-mini"-sized encoder (4 x 256): trains from scratch on one GPU in minutes
    n_head: int = 4,
    n_embd: int = 256,
    dropout: float = 0.1,  # BERT's
    pad_id: int = 0,  # BERT's [PAD] id
    pooling: str = "cls",  # "cls" (first token, as BERT) or "mean" over the non-padding tokens
) -> EncoderClassifier:
    """BERT-style Transformer encoder classifier trained from scratch, padding-masked, cls or mean pooling."""
    return EncoderClassifier(vocab_size, num_classes, max_len, n_layer, n_head, n_embd, dropout, pad_id, pooling)
