"""From a graph's outputs to answers, in NumPy: class probabilities, CTC transcripts, sampled tokens.

grove.tasks.ctc decodes the eager model's outputs with these same functions (moving its tensors
to the host first), so eager and exported transcripts come from one implementation. Next-token
sampling follows grove.models.layers.tokens.sample_next_token option for option; it draws from a
NumPy Generator instead of torch's RNG, so seeded samples differ between the two, while greedy
choices (temperature 0, top_k 1) are the same.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along `axis`; -inf logits get probability 0."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def top_k(logits: np.ndarray, classes: list[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """Per row of (B, K) logits, the k most probable (label, probability) pairs, best first."""
    probs = softmax(logits.astype(np.float32))
    order = np.argsort(-probs, axis=-1, kind="stable")[:, : min(k, probs.shape[-1])]
    return [[(classes[i], float(row[i])) for i in ranked] for row, ranked in zip(probs, order)]


# ---------------------------------------------------------------------------------------------
# CTC


def collapse_paths(path: np.ndarray, lengths, blank: int = 0) -> list[list[int]]:
    """Label sequences of frame-label paths (B, T): merge repeats, then drop blanks."""
    path = np.asarray(path)
    valid = np.arange(path.shape[1])[None, :] < np.asarray(lengths)[:, None]  # (B, T)
    previous = np.pad(path[:, :-1], ((0, 0), (1, 0)), constant_values=-1)  # (B, T): the label of the frame before
    keep = valid & (path != blank) & (path != previous)
    return [row[k].tolist() for row, k in zip(path, keep)]


def greedy_decode(log_probs: np.ndarray, lengths, blank: int = 0) -> list[list[int]]:
    """Best-path decoding of (B, T, V) log-probs: the most probable frame labels, collapsed."""
    return collapse_paths(np.asarray(log_probs).argmax(-1), lengths, blank)


def beam_search_decode(log_probs: np.ndarray, lengths, beam_width: int = 8, blank: int = 0) -> list[list[int]]:
    """CTC prefix beam search (no language model) over (B, T, V) log-probs.

    Each prefix keeps two log-probabilities: of the paths so far that end in blank and of those
    that end in its last label, because a repeated label extends the prefix only after a blank.
    The search keeps the `beam_width` most probable labellings (summing over their paths), where
    greedy decoding keeps the single most probable path; with peaked posteriors the two agree.
    Runs in Python: about 40 ms for 10 s of audio (250 frames after 4x subsampling, 29 labels)
    at width 8, 0.7 s at width 32, on one CPU core. Use it for prediction and final evaluation;
    the metrics inside the training loop decode greedily.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1; got {beam_width}")
    scores = np.asarray(log_probs, dtype=np.float64)
    return [_prefix_beam_search(scores[i, : int(n)], beam_width, blank) for i, n in enumerate(np.asarray(lengths).tolist())]


def _logaddexp(a: float, b: float) -> float:
    # scalar log(exp(a) + exp(b)); numpy's ufunc costs ~1 us a call on Python floats
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def _prefix_beam_search(scores: np.ndarray, beam_width: int, blank: int) -> list[int]:
    # scores: (T, V) log-probs of one utterance
    neg_inf = -math.inf
    n_top = min(beam_width + 1, scores.shape[1] - 1)
    order = np.argsort(-scores, axis=1)  # (T, V) labels, most probable first
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg_inf)}  # prefix -> (log p_b, log p_nb)
    for frame, ranked_labels in zip(scores.tolist(), order.tolist()):
        # Extending a prefix with label c scores total + frame[c] (p_b + frame[c] when c repeats its
        # last label), so only the frame's beam_width + 1 best labels can give one of the prefix's
        # beam_width best extensions; any other extension is cut below, unless it merges with a
        # prefix already in the beam.
        top = [c for c in ranked_labels[: n_top + 1] if c != blank][:n_top]
        children = defaultdict(list)  # prefix -> labels that extend it into another prefix in the beam
        for prefix in beams:
            if prefix:
                children[prefix[:-1]].append(prefix[-1])
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [neg_inf, neg_inf])
        for prefix, (p_b, p_nb) in beams.items():
            total = _logaddexp(p_b, p_nb)
            last = prefix[-1] if prefix else None
            entry = nxt[prefix]
            entry[0] = _logaddexp(entry[0], total + frame[blank])  # a blank keeps the prefix
            if last is not None:  # the last label repeated without a blank keeps the prefix too
                entry[1] = _logaddexp(entry[1], p_nb + frame[last])
            for c in set(top).union(children.get(prefix, ())):
                child = nxt[prefix + (c,)]
                child[1] = _logaddexp(child[1], (p_b if c == last else total) + frame[c])
        kept = heapq.nlargest(beam_width, nxt.items(), key=lambda item: _logaddexp(item[1][0], item[1][1]))
        beams = {prefix: (p[0], p[1]) for prefix, p in kept}
    best = max(beams.items(), key=lambda item: _logaddexp(item[1][0], item[1][1]))
    return list(best[0])


def ids_to_text(ids, alphabet: list[str], blank: int = 0) -> str:
    """The text of a label sequence; blank ids are skipped."""
    return "".join(alphabet[i] for i in ids if i != blank)


# ---------------------------------------------------------------------------------------------
# Sampling


def is_greedy(temperature: float, top_k: int | None, top_p: float | None) -> bool:
    """Checks the sampling options (ValueError when out of range); True when they mean argmax
    (temperature 0 or top_k 1), which makes no random draw. Shared with the torch sampler."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1; got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p}")
    return temperature == 0 or top_k == 1


def sample_next_token(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Sample one token id per row of logits (B, V) -> int64 (B, 1).

    temperature divides the logits (0 means greedy); top_k keeps the k most likely tokens; top_p
    keeps the smallest set of most likely tokens whose probability reaches p (nucleus sampling).
    top_k=1 and temperature=0 are exactly argmax, with no random draw. `rng` draws (a fresh,
    unseeded Generator when None).
    """
    if is_greedy(temperature, top_k, top_p):
        return logits.argmax(axis=-1, keepdims=True).astype(np.int64)
    logits = logits.astype(np.float32) / np.float32(temperature)
    vocab = logits.shape[-1]
    if top_k is not None:
        k = min(top_k, vocab)
        kth = np.partition(logits, vocab - k, axis=-1)[:, [vocab - k]]  # (B, 1): the k-th largest
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p is not None:
        order = np.argsort(-logits, axis=-1, kind="stable")  # (B, V), most likely first
        sorted_logits = np.take_along_axis(logits, order, axis=-1)
        probs = softmax(sorted_logits)
        mass_before = np.cumsum(probs, axis=-1) - probs  # the most likely token always stays (mass 0 before it)
        sorted_logits = np.where(mass_before >= top_p, -np.inf, sorted_logits)
        np.put_along_axis(logits, order, sorted_logits, axis=-1)
    rng = rng if rng is not None else np.random.default_rng()
    probs = softmax(logits.astype(np.float64))
    # Inverse CDF: the first token whose cumulative probability passes one uniform draw per row.
    cdf = np.cumsum(probs, axis=-1)
    picked = (cdf <= rng.random((len(probs), 1)) * cdf[:, -1:]).sum(-1, keepdims=True)
    last = vocab - 1 - np.argmax(probs[:, ::-1] > 0, axis=-1)[:, None]  # a draw rounded up to the total stays in
    return np.minimum(picked, last).astype(np.int64)  # (B, 1)
