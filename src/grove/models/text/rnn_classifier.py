"""A recurrent sequence classifier: embedding -> packed LSTM/GRU -> final hidden states -> linear.

    logits = model(idx)   # idx (B, T) int64, right-padded with pad_id -> (B, num_classes)

Each sequence's length is the position of its last non-pad token + 1 (so a pad_id inside the text
is read as a token), and the padded batch is packed (`pack_padded_sequence`, unsorted), so the
recurrence stops at each sequence's own end: the same text padded to any length gives the same
logits. The features are the last layer's final hidden state, of both directions when
bidirectional (the backward direction's final state is the one at the first token).
Packing needs the lengths on the CPU, so on a GPU each forward makes one small device-to-host copy.
Under torch.export the same states come from unpacked per-direction runs instead (`run_rnn`,
models/layers/rnn.py), since packed sequences cannot be exported.

Contract: the feature layer is `rnn` (its hooked output, in eager mode, is the (PackedSequence,
state) pair), and `forward_features` returns the final hidden states (B, dirs * n_hidden) that
the head reads.
"""

from __future__ import annotations

import torch
from torch import nn

from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import TokenInput
from grove.models.layers.options import check_choice
from grove.models.layers.rnn import run_rnn
from grove.models.layers.tokens import check_pad_id
from grove.registry import register_model

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def sequence_lengths(idx: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B,) position of the last non-pad token + 1; at least 1, so an all-pad row still packs."""
    positions = torch.arange(1, idx.shape[1] + 1, device=idx.device)  # (T,)
    return (positions * (idx != pad_id)).amax(dim=1).clamp(min=1)  # (B,)


class RNNClassifier(TokenInput, ReplaceableHead, nn.Module):
    feature_layer = "rnn"
    embedding_layer = "embedding"
    head_layer = "head"

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        n_embd: int,
        n_hidden: int,
        n_layers: int,
        cell: str,
        bidirectional: bool,
        dropout: float,
        pad_id: int,
    ):
        super().__init__()
        check_choice("cell", cell, CELLS)
        check_pad_id(pad_id, vocab_size)
        self.num_classes = num_classes
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.n_directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, n_embd)
        self.drop = nn.Dropout(dropout)
        # nn.LSTM's dropout acts between layers only, and warns when there is just one layer
        self.rnn = CELLS[cell](
            n_embd, n_hidden, n_layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if n_layers > 1 else 0.0,
        )
        self.head = nn.Linear(self.n_directions * n_hidden, num_classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(idx)))  # (B, num_classes)

    def forward_features(self, idx: torch.Tensor) -> torch.Tensor:
        """The last layer's final hidden states (B, dirs * n_hidden), both directions side by side."""
        B, T = idx.shape
        lengths = sequence_lengths(idx, self.pad_id)  # (B,)
        x = self.drop(self.embedding(idx))  # (B, T, n_embd)
        _, h = run_rnn(self.rnn, x, lengths)  # h: (n_layers * dirs, B, n_hidden), in the batch's order
        last = h[-self.n_directions :]  # (dirs, B, n_hidden): the last layer
        return last.transpose(0, 1).reshape(B, -1)  # (B, dirs * n_hidden)


@register_model(modality="text", family="rnn")
def rnn_classifier(
    vocab_size: int = 30522,  # BERT's WordPiece vocabulary, so it shares tokenizers with the encoder
    num_classes: int = 2,  # binary sentiment (SST-2, IMDb)
    n_embd: int = 128,  # small enough to train from scratch on ~10k sentences without overfitting at once
    n_hidden: int = 128,
    n_layers: int = 1,  # one bidirectional layer is the usual strong baseline for sentence classification
    cell: str = "lstm",  # "lstm" or "gru" (fewer parameters, often as good)
    bidirectional: bool = True,  # reads both ways, so the features see the start and the end of the text
    dropout: float = 0.1,  # on embeddings, between layers, and before the head
    pad_id: int = 0,  # BERT's [PAD] id
) -> RNNClassifier:
    """Bidirectional LSTM/GRU sequence classifier over packed (padding-free) sequences."""
    return RNNClassifier(vocab_size, num_classes, n_embd, n_hidden, n_layers, cell, bidirectional, dropout, pad_id)
