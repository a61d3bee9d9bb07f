"""Recurrent language model after Zaremba, Sutskever & Vinyals (2014), "Recurrent Neural Network Regularization".

embedding -> dropout -> multi-layer LSTM or GRU (dropout between layers) -> dropout -> linear
decoder over the vocabulary. Dropout only on the non-recurrent connections is the paper's point.
`tie_weights` makes the decoder use the embedding matrix (Press & Wolf, 2017; Inan et al., 2017),
which needs n_embd == n_hidden. Names (encoder, rnn, decoder) follow PyTorch's
word_language_model example.

Forward convention — one model call serves both the model contract and truncated BPTT:

    logits = model(idx)                                    # idx (B, T) -> (B, T, vocab_size)
    logits, state = model(idx, state, return_state=True)   # an LMOutput; carry state into the next batch
    state = detach_state(state)                            # (or model.detach_state) between batches

`state` is None (zeros) or what the previous call returned: for "lstm" a tuple (h, c), for "gru"
a tensor h, each (n_layers, B, n_hidden). Carrying it is only right when row b of the next batch
continues row b of this one (TBPTT batching), and it must be reset (None) when B changes.
`generate` is gpt's (`TokenSampler`, models/layers/tokens.py); it carries the state, so it has no
context limit.

Contract: the feature layer is `rnn` (its hooked output is the (out, state) pair nn.LSTM/GRU
return) and `forward_features` returns the top layer's outputs (B, T, n_hidden) before dropout and
the decoder; `reset_classifier` raises ValueError, since the output is the vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from grove.models.layers.contract import LMOutput, TensorSpec
from grove.models.layers.heads import check_lm_num_classes, reject_lm_reset
from grove.models.layers.options import check_choice
from grove.models.layers.specs import token_spec
from grove.models.layers.tokens import TokenSampler
from grove.registry import register_model

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def detach_state(state: State | None) -> State | None:
    """The same state values with the graph behind them cut, so backward stops at the batch boundary."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


class RNNLanguageModel(TokenSampler, nn.Module):
    detach_state = staticmethod(detach_state)
    feature_layer = "rnn"
    embedding_layer = "encoder"

    def __init__(
        self,
        vocab_size: int,
        n_embd: int,
        n_hidden: int,
        n_layers: int,
        dropout: float,
        cell: str,
        tie_weights: bool,
        init_range: float,
    ):
        super().__init__()
        check_choice("cell", cell, CELLS)
        if tie_weights and n_embd != n_hidden:
            raise ValueError(
                f"tie_weights shares one matrix, so it needs n_embd == n_hidden; got {n_embd} and {n_hidden}"
            )
        self.num_classes = vocab_size
        self.vocab_size = vocab_size
        self.encoder = nn.Embedding(vocab_size, n_embd)
        self.drop = nn.Dropout(dropout)
        # nn.LSTM's dropout acts between layers only, and warns when there is just one layer
        self.rnn = CELLS[cell](n_embd, n_hidden, n_layers, dropout=dropout if n_layers > 1 else 0.0, batch_first=True)
        self.decoder = nn.Linear(n_hidden, vocab_size)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        for p in self.parameters():  # Zaremba et al.: every parameter uniform in [-init_range, init_range]
            nn.init.uniform_(p, -init_range, init_range)

    def forward(
        self, idx: torch.Tensor, state: State | None = None, return_state: bool = False
    ) -> torch.Tensor | LMOutput:
        out, state = self._run(idx, state)  # (B, T, n_hidden)
        logits = self.decoder(self.drop(out))  # (B, T, vocab_size)
        return LMOutput(logits, state) if return_state else logits

    def _run(self, idx: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        x = self.drop(self.encoder(idx))  # (B, T, n_embd)
        return self.rnn(x, state)  # (B, T, n_hidden); state: (n_layers, B, n_hidden) per tensor

    def forward_features(self, idx: torch.Tensor) -> torch.Tensor:
        """The top RNN layer's outputs (B, T, n_hidden), from a zero state."""
        return self._run(idx, None)[0]

    def reset_classifier(self, num_classes: int) -> None:
        reject_lm_reset("lstm_lm", self.vocab_size)

    def input_spec(self) -> list[TensorSpec]:
        return [token_spec()]

    def next_token_logits(self, new_ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """For `generate`: the prompt runs once; then each step feeds only the newest token and the
        carried state."""
        logits, state = self(new_ids, state, return_state=True)
        return logits[:, -1, :], state  # (B, vocab_size)

    def example_input(self, batch_size: int) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch_size, 16), device=self.decoder.weight.device)


@register_model(modality="text", family="rnn")
def lstm_lm(
    vocab_size: int = 10000,  # Penn Treebank's word vocabulary, Zaremba et al.'s data
    n_embd: int = 200,  # Zaremba's "small" model: 200 units, 2 layers
    n_hidden: int = 200,
    n_layers: int = 2,
    dropout: float = 0.0,  # the small model has none; "medium" 0.5 (650 units), "large" 0.65 (1500 units)
    cell: str = "lstm",  # "lstm" as in the paper, or "gru"
    tie_weights: bool = False,  # the paper does not tie; tying saves vocab_size * n_hidden and usually helps
    init_range: float = 0.1,  # the small model's uniform init; 0.05 medium, 0.04 large
    num_classes: int | None = None,  # the output size; an LM predicts tokens, so it must be vocab_size
) -> RNNLanguageModel:
    """LSTM/GRU language model (Zaremba et al., 2014) with carried state for truncated BPTT, optional tied weights."""
    check_lm_num_classes("lstm_lm", num_classes, vocab_size)
    return RNNLanguageModel(vocab_size, n_embd, n_hidden, n_layers, dropout, cell, tie_weights, init_range)
