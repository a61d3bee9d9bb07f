import itertools
import math
import random

import pytest
import torch

from grove.registry import create_model
from grove.tasks.ctc import (
    CTCMetrics,
    CTCTask,
    beam_search_decode,
    cer,
    edit_distance,
    greedy_decode,
    ids_to_text,
    wer,
)

ALPHABET = ["_", " ", "a", "b", "c", "t", "h"]  # id 0 is the blank


def log_posteriors(rows):
    return torch.tensor(rows, dtype=torch.float64).log()[None]  # (1, T, V)


def one_hot_path(path, vocab, peak=0.97):
    """(T, V) posteriors whose most probable frame labels are `path`."""
    rest = (1 - peak) / (vocab - 1)
    probs = torch.full((len(path), vocab), rest, dtype=torch.float64)
    probs[torch.arange(len(path)), torch.tensor(path)] = peak
    return probs.log()


# ---------------------------------------------------------------------------------------------
# decoding


def test_greedy_merges_repeats_drops_blanks_and_stops_at_the_length():
    path = [2, 2, 0, 2, 3, 3, 0, 0, 5, 4]
    log_probs = torch.stack([one_hot_path(path, 6), one_hot_path(path, 6)])
    assert greedy_decode(log_probs, torch.tensor([10, 6])) == [[2, 2, 3, 5, 4], [2, 2, 3]]


def test_beam_search_finds_the_most_probable_labelling_where_greedy_does_not():
    # best path is blank-blank (0.36), but "a" has a a + a _ + _ a = 0.16 + 0.24 + 0.24 = 0.64
    log_probs = log_posteriors([[0.6, 0.4], [0.6, 0.4]])
    lengths = torch.tensor([2])
    assert greedy_decode(log_probs, lengths) == [[]]
    assert beam_search_decode(log_probs, lengths, beam_width=2) == [[1]]
    assert beam_search_decode(log_probs, lengths, beam_width=1) == [[]]


def test_beam_search_needs_a_blank_between_repeated_labels():
    # "aa" needs a blank between the two a's; a a a alone is just "a"
    log_probs = log_posteriors([[0.05, 0.95], [0.9, 0.1], [0.05, 0.95]])
    assert beam_search_decode(log_probs, torch.tensor([3]), beam_width=4) == [[1, 1]]
    log_probs = log_posteriors([[0.05, 0.95], [0.05, 0.95], [0.05, 0.95]])
    assert beam_search_decode(log_probs, torch.tensor([3]), beam_width=4) == [[1]]


def labelling_probabilities(probs):
    """Brute force: the probability of every labelling, summed over all its paths."""
    out = {}
    T, V = len(probs), len(probs[0])
    for path in itertools.product(range(V), repeat=T):
        labels = tuple(c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c))
        p = math.prod(probs[t][c] for t, c in enumerate(path))
        out[labels] = out.get(labels, 0.0) + p
    return out


@pytest.mark.parametrize("seed", range(5))
def test_wide_beam_matches_brute_force_labelling_search(seed):
    torch.manual_seed(seed)
    probs = torch.rand(5, 3, dtype=torch.float64).softmax(-1) ** 2
    probs = probs / probs.sum(-1, keepdim=True)
    totals = labelling_probabilities(probs.tolist())
    best = max(totals, key=totals.get)
    found = beam_search_decode(probs.log()[None], torch.tensor([5]), beam_width=64)[0]
    assert tuple(found) == best
    assert sum(totals.values()) == pytest.approx(1.0)


def test_beam_width_one_equals_greedy_on_peaked_posteriors():
    random.seed(0)
    batch = []
    for _ in range(4):
        batch.append(one_hot_path([random.choice([0, 0, 1, 2, 3]) for _ in range(30)], 6))
    log_probs = torch.stack(batch)
    lengths = torch.tensor([30, 25, 12, 1])
    assert beam_search_decode(log_probs, lengths, beam_width=1) == greedy_decode(log_probs, lengths)
    assert beam_search_decode(log_probs, lengths, beam_width=8) == greedy_decode(log_probs, lengths)


def test_beam_width_must_be_positive():
    with pytest.raises(ValueError, match="beam_width"):
        beam_search_decode(torch.zeros(1, 2, 3), torch.tensor([2]), beam_width=0)


# ---------------------------------------------------------------------------------------------
# text and error rates


def plain_edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_edit_distance_on_known_pairs():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3 and edit_distance("", "") == 0
    assert edit_distance("flaw", "lawn") == 2
    assert edit_distance("the cat sat".split(), "the cat sit on".split()) == 2
    assert edit_distance([1, 2, 3], [1, 3]) == 1


def test_edit_distance_matches_the_textbook_dynamic_programme():
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("abc") for _ in range(rng.randint(0, 12)))
        assert edit_distance(a, b) == plain_edit_distance(a, b), (a, b)


def test_error_rates_on_known_strings():
    assert wer("the cat sat", "the cat sit on") == pytest.approx(2 / 3)
    assert cer("the cat sat", "the cat sit on") == pytest.approx(4 / 11)  # a->i, +" on"
    assert wer(["a b", "c d e"], ["a b", "c e"]) == pytest.approx(1 / 5)  # corpus level, not mean
    assert cer("", "") == 0.0
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        wer(["a"], ["a", "b"])


def test_ids_to_text_skips_blanks():
    assert ids_to_text([5, 2, 0, 1, 4, 2, 5], ALPHABET) == "ta cat"


# ---------------------------------------------------------------------------------------------
# task and metrics


def batch_from_texts(texts, frames_per_char=3):
    """Posteriors that spell each text (char, then blanks) and matching padded targets."""
    ids = [[ALPHABET.index(c) for c in t] for t in texts]
    T = max(len(s) for s in ids) * frames_per_char
    rows, lengths = [], []
    for s in ids:
        path = [x for c in s for x in [c] + [0] * (frames_per_char - 1)]
        lengths.append(len(path))
        rows.append(one_hot_path(path + [0] * (T - len(path)), len(ALPHABET)))
    tokens = torch.zeros(len(ids), max(len(s) for s in ids), dtype=torch.long)
    for i, s in enumerate(ids):
        tokens[i, : len(s)] = torch.tensor(s)
    targets = {"tokens": tokens, "lengths": torch.tensor([len(s) for s in ids])}
    return (torch.stack(rows).float(), torch.tensor(lengths)), targets


def test_metrics_score_decoded_batches_against_targets():
    task = CTCTask(ALPHABET)
    metrics = task.metrics("cpu")
    outputs, targets = batch_from_texts(["hat cat", "a bat"])
    metrics.update(outputs, targets, torch.tensor(0.5))
    # second batch: decoded "a cab" against reference "a cat": 1 char, 1 word wrong
    hyp_outputs, _ = batch_from_texts(["a cab"])
    _, ref_targets = batch_from_texts(["a cat"])
    metrics.update(hyp_outputs, ref_targets, torch.tensor(2.0))
    metrics.all_reduce()  # no process group: only flushes
    figures = metrics.compute()
    assert figures["count"] == 3
    assert figures["loss"] == pytest.approx((0.5 * 2 + 2.0) / 3)
    assert figures["cer"] == pytest.approx(1 / (7 + 5 + 5))
    assert figures["wer"] == pytest.approx(1 / (2 + 2 + 2))
    assert task.decode(hyp_outputs) == ["a cab"]
    assert task.decode(hyp_outputs, beam_width=4) == ["a cab"]


def test_metrics_flush_in_chunks_and_give_the_same_figures():
    outputs, targets = batch_from_texts(["a cab", "tab"])
    _, refs = batch_from_texts(["a cat", "tab"])
    metrics = CTCMetrics(ALPHABET, 0, "cpu")
    for _ in range(CTCMetrics.FLUSH_EVERY + 3):
        metrics.update(outputs, refs, torch.tensor(1.0))
    assert len(metrics._pending) == 3  # the first FLUSH_EVERY batches were scored already
    assert metrics.compute()["cer"] == pytest.approx(1 / 8)
    assert metrics.compute()["count"] == 2 * (CTCMetrics.FLUSH_EVERY + 3)
    assert targets["lengths"].tolist() == [5, 3]


def test_step_gives_a_finite_loss_and_gradients():
    torch.manual_seed(0)
    model = create_model("conv_rnn_ctc", num_classes=len(ALPHABET), in_features=16, channels=8, hidden=16, layers=1)
    task = CTCTask(ALPHABET)
    assert (task.name, task.monitor, task.monitor_mode) == ("ctc", "cer", "min")
    inputs = {"features": torch.randn(3, 16, 40), "lengths": torch.tensor([40, 33, 20])}
    targets = {"tokens": torch.tensor([[5, 2, 5, 0], [3, 1, 4, 2], [2, 0, 0, 0]]), "lengths": torch.tensor([3, 4, 1])}
    loss, (log_probs, out_lengths) = task.step(model, inputs, targets)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    assert out_lengths.tolist() == [20, 17, 10] and log_probs.shape == (3, 20, len(ALPHABET))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    metrics = task.metrics("cpu")
    metrics.update((log_probs, out_lengths), targets, loss)
    figures = metrics.compute()
    assert set(figures) == {"loss", "cer", "wer", "count"} and figures["count"] == 3


def test_too_short_output_gives_zero_loss_not_inf():
    task = CTCTask(ALPHABET)
    model = create_model("transformer_ctc", num_classes=len(ALPHABET), in_features=16, dim=16, depth=1, heads=2)
    inputs = {"features": torch.randn(1, 16, 8), "lengths": torch.tensor([8])}  # 2 output frames
    targets = {"tokens": torch.tensor([[2, 3, 4, 5, 2]]), "lengths": torch.tensor([5])}
    loss, _ = task.step(model, inputs, targets)
    assert torch.isfinite(loss)
