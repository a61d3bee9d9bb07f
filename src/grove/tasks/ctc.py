"""CTC transcription: loss, greedy and prefix-beam-search decoding, character and word error rates.

The model maps (features (B, F, T), lengths (B,)) to (log_probs (B, T', V), out_lengths (B,)).
Batches are dicts: inputs {"features", "lengths"}, targets {"tokens" (B, S) padded with the blank
id, "lengths" (B,)}. `alphabet[i]` is the text of id i; id `blank` (0) is never printed.

Decoding is grove.runtime.decoding's (NumPy), shared with the torch-free runtime; the functions
here move tensors to the host for it. Metrics decode greedily. `update` only queues the batch's
argmax paths on the device; they are moved to the host and scored in one go every `FLUSH_EVERY`
batches and before `all_reduce` or `compute`, so a training window costs one host sync per flush
rather than one per step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grove.runtime import decoding
from grove.runtime.decoding import ids_to_text
from grove.tasks.base import Task, sum_across_processes


class CTCTask(Task):
    name = "ctc"
    monitor = "cer"  # the validation metric that picks `best` and drives early stopping
    monitor_mode = "min"

    def __init__(self, alphabet: list[str], blank: int = 0):
        self.alphabet = list(alphabet)
        self.blank = blank

    def step(self, model: nn.Module, inputs: dict, targets: dict):
        """(mean loss, (log_probs, out_lengths)) for one batch."""
        outputs = model(inputs["features"], inputs["lengths"])
        # each utterance's loss over its target length, then the batch mean
        return self._ctc_loss(outputs, targets, "mean"), outputs

    def example_losses(self, outputs, targets: dict) -> torch.Tensor:
        """(B,) each utterance's loss over its target length."""
        return self._ctc_loss(outputs, targets, "none") / targets["lengths"].clamp(min=1)

    def _ctc_loss(self, outputs, targets: dict, reduction: str) -> torch.Tensor:
        log_probs, out_lengths = outputs
        return F.ctc_loss(
            log_probs.transpose(0, 1).float(),  # (T', B, V), as ctc_loss wants
            targets["tokens"],
            out_lengths,
            targets["lengths"],
            blank=self.blank,
            reduction=reduction,
            zero_infinity=True,  # an utterance too short for its transcript gives 0, not inf
        )

    def metrics(self, device) -> CTCMetrics:
        return CTCMetrics(self.alphabet, self.blank, device)

    def decode(self, outputs, beam_width: int = 0) -> list[str]:
        """Transcripts of a batch of model outputs: greedy when beam_width is 0, else prefix beam search."""
        log_probs, lengths = outputs
        if beam_width:
            ids = beam_search_decode(log_probs, lengths, beam_width, self.blank)
        else:
            ids = greedy_decode(log_probs, lengths, self.blank)
        return [ids_to_text(s, self.alphabet, self.blank) for s in ids]


class CTCMetrics:
    FLUSH_EVERY = 32  # batches queued on the device before they are scored on the host

    def __init__(self, alphabet: list[str], blank: int, device):
        self.alphabet = alphabet
        self.blank = blank
        # loss sum, character errors, reference characters, word errors, reference words, utterances
        self.sums = torch.zeros(6, dtype=torch.float64, device=device)
        self._pending: list[tuple[torch.Tensor, ...]] = []

    @torch.no_grad()
    def update(self, outputs, targets: dict, loss: torch.Tensor) -> None:
        log_probs, out_lengths = outputs
        n = log_probs.shape[0]
        self.sums[0] += loss.detach().double() * n
        self.sums[5] += n
        path = log_probs.detach().argmax(-1)  # (B, T')
        self._pending.append((path, out_lengths.detach(), targets["tokens"].detach(), targets["lengths"].detach()))
        if len(self._pending) >= self.FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        errors = [0, 0, 0, 0]
        for path, out_lengths, tokens, token_lengths in self._pending:
            hyps = collapse_paths(path, out_lengths, self.blank)
            refs = [row[:n] for row, n in zip(tokens.tolist(), token_lengths.tolist())]
            for ref, hyp in zip(refs, hyps):
                ref_text = ids_to_text(ref, self.alphabet, self.blank)
                hyp_text = ids_to_text(hyp, self.alphabet, self.blank)
                ref_words, hyp_words = ref_text.split(), hyp_text.split()
                errors[0] += edit_distance(ref_text, hyp_text)
                errors[1] += len(ref_text)
                errors[2] += edit_distance(ref_words, hyp_words)
                errors[3] += len(ref_words)
        self._pending.clear()
        self.sums[1:5] += torch.tensor(errors, dtype=torch.float64, device=self.sums.device)

    def all_reduce(self) -> None:
        self._flush()
        sum_across_processes(self.sums)

    @property
    def count(self) -> int:
        return int(self.sums[5])

    def compute(self, per_class: bool = False) -> dict:
        """Loss per utterance and corpus-level CER and WER (errors over reference length)."""
        self._flush()
        loss, char_err, chars, word_err, words, n = self.sums.cpu().tolist()
        return {
            "loss": loss / max(n, 1),
            "cer": char_err / max(chars, 1),
            "wer": word_err / max(words, 1),
            "count": int(n),
        }


# ---------------------------------------------------------------------------------------------
# Decoding


def collapse_paths(path: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Label sequences of frame-label paths (B, T): merge repeats, then drop blanks, on the host."""
    return decoding.collapse_paths(path.cpu().numpy(), lengths.cpu().numpy(), blank)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path decoding of (B, T, V) log-probs: the most probable frame labels, collapsed."""
    return collapse_paths(log_probs.argmax(-1), lengths, blank)  # argmax on the device: only the path moves


def beam_search_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor, beam_width: int = 8, blank: int = 0
) -> list[list[int]]:
    """CTC prefix beam search over (B, T, V) log-probs (grove.runtime.decoding.beam_search_decode)."""
    scores = log_probs.detach().double().cpu().numpy()
    return decoding.beam_search_decode(scores, lengths.cpu().numpy(), beam_width, blank)


# ---------------------------------------------------------------------------------------------
# Text and error rates


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (strings, or lists of words or ids)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    codes: dict = {}
    a_ids = np.array([codes.setdefault(x, len(codes)) for x in a])
    b_ids = np.array([codes.setdefault(x, len(codes)) for x in b])
    m = len(b_ids)
    offsets = np.arange(m + 1)
    row = offsets.copy()  # distances from the empty prefix of a
    for i, x in enumerate(a_ids, start=1):
        # deletion (from above) or substitution/match (from the diagonal), per column at once;
        # insertions chain along the row: d[j] = min_k<=j (cand[k] + j - k), a running minimum
        cand = np.empty(m + 1, dtype=row.dtype)
        cand[0] = i
        cand[1:] = np.minimum(row[1:] + 1, row[:-1] + (b_ids != x))
        row = np.minimum.accumulate(cand - offsets) + offsets
    return int(row[-1])


def _as_list(texts) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def cer(refs, hyps) -> float:
    """Character error rate: character edits over reference characters, over the whole corpus."""
    refs, hyps = _as_list(refs), _as_list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"cer needs one hypothesis per reference; got {len(refs)} and {len(hyps)}")
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(sum(len(r) for r in refs), 1)


def wer(refs, hyps) -> float:
    """Word error rate: word edits over reference words (split on whitespace), over the whole corpus."""
    refs, hyps = _as_list(refs), _as_list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"wer needs one hypothesis per reference; got {len(refs)} and {len(hyps)}")
    errors = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    return errors / max(sum(len(r.split()) for r in refs), 1)
