"""Token-id helpers the text models share: pad-id checks, example batches, next-token sampling."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from grove.runtime.decoding import is_greedy


def check_pad_id(pad_id: int, vocab_size: int) -> None:
    if not 0 <= pad_id < vocab_size:
        raise ValueError(f"pad_id must be a token id in [0, {vocab_size}); got {pad_id}")


def example_token_ids(batch_size: int, seq_len: int, vocab_size: int, pad_id: int, device) -> torch.Tensor:
    """Random ids that are never pad_id, so every example is all text."""
    ids = torch.randint(0, vocab_size - 1, (batch_size, seq_len), device=device)
    return ids + (ids >= pad_id).long()  # (B, T), skips over pad_id


def sample_next_token(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Sample one token id per row of logits (B, V) -> (B, 1).

    temperature divides the logits (0 means greedy); top_k keeps the k most likely tokens; top_p
    keeps the smallest set of most likely tokens whose probability reaches p (nucleus sampling).
    top_k=1 and temperature=0 are exactly argmax, with no random draw.
    """
    if is_greedy(temperature, top_k, top_p):
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # the most likely token always stays (mass 0 before it)
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = logits.scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1)  # (B, 1)


class TokenSampler:
    """`generate` for language models, which give `next_token_logits`: one sampled token at a time."""

    def next_token_logits(self, new_ids: torch.Tensor, state) -> tuple[torch.Tensor, object]:
        """(logits (B, V) for the token after new_ids (B, T), the state to pass with the next ids);
        state is None for the prompt, then what the previous call returned."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield max_new_tokens sampled token ids, each (B, 1), continuing idx (B, T).

        Call model.eval() first, or dropout acts while sampling.
        """
        new_ids, state = idx, None
        for _ in range(max_new_tokens):
            logits, state = self.next_token_logits(new_ids, state)
            new_ids = sample_next_token(logits, temperature, top_k, top_p)  # (B, 1)
            yield new_ids
