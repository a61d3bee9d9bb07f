"""NumPy decoding: CTC greedy and beam search (shared with grove.tasks.ctc), class probabilities,
and next-token sampling with grove.models.layers.tokens' options and messages."""

import itertools
import math

import numpy as np
import pytest
import torch

from grove.models.layers import tokens
from grove.runtime import decoding
from grove.tasks import ctc
from grove.tasks.classification import top_k as torch_top_k


def one_hot_path(path, vocab, peak=0.97):
    """(T, V) log-posteriors whose most probable frame labels are `path`."""
    probs = np.full((len(path), vocab), (1 - peak) / (vocab - 1))
    probs[np.arange(len(path)), path] = peak
    return np.log(probs)


# ---------------------------------------------------------------------------------------------
# CTC


def test_greedy_merges_repeats_drops_blanks_and_stops_at_the_length():
    path = [2, 2, 0, 2, 3, 3, 0, 0, 5, 4]
    log_probs = np.stack([one_hot_path(path, 6), one_hot_path(path, 6)])
    assert decoding.greedy_decode(log_probs, np.array([10, 6])) == [[2, 2, 3, 5, 4], [2, 2, 3]]
    assert decoding.ids_to_text([2, 0, 3], ["_", " ", "a", "b"]) == "ab"


def test_beam_search_sums_paths_where_greedy_takes_the_best_one():
    # best path is blank-blank (0.36), but "a" has a a + a _ + _ a = 0.16 + 0.24 + 0.24 = 0.64
    log_probs = np.log([[[0.6, 0.4], [0.6, 0.4]]])
    assert decoding.greedy_decode(log_probs, [2]) == [[]]
    assert decoding.beam_search_decode(log_probs, [2], beam_width=2) == [[1]]
    with pytest.raises(ValueError, match="beam_width must be at least 1"):
        decoding.beam_search_decode(log_probs, [2], beam_width=0)


@pytest.mark.parametrize("seed", range(3))
def test_wide_beam_finds_the_brute_force_labelling(seed):
    probs = np.random.default_rng(seed).dirichlet(np.ones(3), size=5) ** 2
    probs /= probs.sum(-1, keepdims=True)
    totals = {}
    for path in itertools.product(range(3), repeat=5):
        labels = tuple(c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c))
        totals[labels] = totals.get(labels, 0.0) + math.prod(probs[t, c] for t, c in enumerate(path))
    found = decoding.beam_search_decode(np.log(probs)[None], [5], beam_width=64)[0]
    assert tuple(found) == max(totals, key=totals.get)


def test_the_task_decodes_tensors_through_the_same_functions():
    rng = np.random.default_rng(0)
    log_probs = np.log(rng.dirichlet(np.ones(7) * 0.3, size=(3, 40)))  # (B, T, V), fairly peaked
    lengths = np.array([40, 23, 1])
    as_tensors = torch.from_numpy(log_probs).float(), torch.from_numpy(lengths)
    assert ctc.greedy_decode(*as_tensors) == decoding.greedy_decode(log_probs.astype(np.float32), lengths)
    assert ctc.beam_search_decode(*as_tensors, beam_width=4) == decoding.beam_search_decode(
        log_probs.astype(np.float32), lengths, beam_width=4)
    assert ctc.ids_to_text is decoding.ids_to_text


# ---------------------------------------------------------------------------------------------
# Probabilities


def test_top_k_matches_the_eager_classification_helper():
    logits = np.random.default_rng(1).standard_normal((4, 10)).astype(np.float32) * 3
    classes = [f"c{i}" for i in range(10)]
    ours, eager = decoding.top_k(logits, classes, 3), torch_top_k(torch.from_numpy(logits), classes, 3)
    assert [[label for label, _ in row] for row in ours] == [[label for label, _ in row] for row in eager]
    np.testing.assert_allclose([[p for _, p in row] for row in ours], [[p for _, p in row] for row in eager], atol=1e-6)
    assert len(decoding.top_k(logits, classes, 50)[0]) == 10


def test_softmax_gives_masked_logits_zero_probability():
    probs = decoding.softmax(np.array([[1.0, -np.inf, 1.0]]))
    np.testing.assert_allclose(probs, [[0.5, 0.0, 0.5]])


# ---------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("options", [dict(temperature=0), dict(top_k=1), dict(temperature=2.0, top_k=1)])
def test_greedy_options_are_argmax_without_a_draw(options):
    logits = np.random.default_rng(2).standard_normal((3, 20)).astype(np.float32)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    out = decoding.sample_next_token(logits, rng=rng, **options)
    assert out.shape == (3, 1) and out.dtype == np.int64
    assert out[:, 0].tolist() == logits.argmax(-1).tolist()
    assert rng.bit_generator.state == before


@pytest.mark.parametrize("options", [dict(temperature=-1), dict(top_k=0), dict(top_p=0), dict(top_p=1.5)])
def test_bad_options_say_what_the_eager_sampler_says(options):
    with pytest.raises(ValueError) as ours:
        decoding.sample_next_token(np.zeros((1, 4), np.float32), **options)
    with pytest.raises(ValueError) as eager:
        tokens.sample_next_token(torch.zeros(1, 4), **options)
    assert str(ours.value) == str(eager.value)


def draws(logits, n=2000, seed=0, **options):
    rng = np.random.default_rng(seed)
    batch = np.repeat(np.asarray(logits, np.float32)[None], n, axis=0)
    return decoding.sample_next_token(batch, rng=rng, **options)[:, 0]


def test_top_k_and_top_p_keep_only_the_most_likely_tokens():
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    assert set(draws(logits, top_k=2)) == {0, 1}
    assert set(draws(logits, top_p=0.75)) == {0, 1}  # 0.5 before token 1 is below 0.75, 0.8 before token 2 is not
    assert set(draws(logits, top_p=0.45)) == {0}
    assert set(draws(logits, top_k=3, top_p=0.9)) == {0, 1, 2}


def test_plain_sampling_follows_the_softmax_and_the_seed():
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    counts = np.bincount(draws(logits, n=20000), minlength=4) / 20000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.015)
    sharp = np.bincount(draws(logits, n=20000, temperature=0.5), minlength=4) / 20000
    expected = decoding.softmax(logits / 0.5)
    np.testing.assert_allclose(sharp, expected, atol=0.015)
    assert np.array_equal(draws(logits, seed=3), draws(logits, seed=3))
    assert not np.array_equal(draws(logits, seed=3), draws(logits, seed=4))
