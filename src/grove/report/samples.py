"""What the report keeps of each evaluated batch, through `evaluate`'s `on_batch` hook.

Each collector is called with a batch as the loader gave it (before the transform), the model's
outputs and the targets, during the one evaluation pass that also gives the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grove.runtime.decoding import ids_to_text
from grove.tasks.ctc import greedy_decode


@dataclass
class Mistake:
    position: int  # in evaluation order over the split
    item: object  # as Predictor.read gives it: image (1, C, H, W) uint8, clip (1, L), token ids
    target: int
    predicted: int
    confidence: float  # the probability of `predicted`


class ClassifierSamples:
    """Every sample's confidence and correctness (for calibration), and the `keep` most confident
    mistakes with their inputs. `pad_id`: text batches are padded with it at the end."""

    def __init__(self, keep: int = 8, pad_id: int | None = None):
        self.keep = keep
        self.pad_id = pad_id
        self.confidences: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []
        self.mistakes: list[Mistake] = []
        self.seen = 0

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        probs = logits.float().softmax(-1)
        predicted = logits.topk(1, dim=-1).indices[:, 0]  # the prediction the metrics count (topk's first)
        confidence = probs.gather(1, predicted[:, None])[:, 0]
        correct = predicted == targets
        self.confidences.append(confidence.cpu())
        self.correct.append(correct.cpu())
        wrong = (~correct).nonzero()[:, 0]
        for i in wrong[confidence[wrong].argsort(descending=True)[: self.keep]].tolist():
            self.mistakes.append(Mistake(self.seen + i, self._item(inputs, i), int(targets[i]), int(predicted[i]),
                                         float(confidence[i])))
        self.mistakes = sorted(self.mistakes, key=lambda m: -m.confidence)[: self.keep]
        self.seen += len(targets)

    def _item(self, inputs: torch.Tensor, i: int):
        if self.pad_id is None:
            return inputs[i : i + 1].cpu().clone()
        ids = inputs[i].tolist()
        while ids and ids[-1] == self.pad_id:
            ids.pop()
        return ids


class TranscriptSamples:
    """Reference and greedy-decoded hypothesis (the decoding the metrics score) of the first
    `keep` utterances."""

    def __init__(self, alphabet: list[str], keep: int = 10, blank: int = 0):
        self.alphabet, self.keep, self.blank = alphabet, keep, blank
        self.pairs: list[tuple[str, str]] = []

    @torch.no_grad()
    def __call__(self, inputs, outputs, targets: dict) -> None:
        room = self.keep - len(self.pairs)
        if room <= 0:
            return
        log_probs, lengths = outputs
        hyps = greedy_decode(log_probs[:room], lengths[:room], self.blank)
        refs = [row[:n] for row, n in zip(targets["tokens"][:room].tolist(), targets["lengths"][:room].tolist())]
        text = lambda ids: ids_to_text(ids, self.alphabet, self.blank)  # noqa: E731
        self.pairs += [(text(ref), text(hyp)) for ref, hyp in zip(refs, hyps)]


class PromptSamples:
    """The first `length` tokens of `count` rows of the first batch: prompts taken from the split."""

    def __init__(self, count: int = 3, length: int = 24):
        self.count, self.length = count, length
        self.prompts: list[list[int]] = []

    def __call__(self, inputs: torch.Tensor, outputs, targets) -> None:
        if self.prompts:
            return
        rows = sorted({r * len(inputs) // self.count for r in range(self.count)})  # spread over the batch
        self.prompts = [inputs[r, : self.length].tolist() for r in rows]
