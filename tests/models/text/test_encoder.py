import pytest
import torch

from grove.registry import create_model

SMALL = dict(vocab_size=30, num_classes=3, max_len=16, n_layer=2, n_head=2, n_embd=16)
PAD = 0


def small_encoder(**kw):
    torch.manual_seed(0)
    return create_model("encoder_classifier", **{**SMALL, **kw}).eval()


def padded(rows, length):
    return torch.tensor([row + [PAD] * (length - len(row)) for row in rows])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_the_logits(pooling):
    model = small_encoder(pooling=pooling)
    rows = [[5, 9, 2, 7], [3, 4, 8, 1, 6, 2, 9]]
    short = model(padded(rows, 7))
    for length in (9, 16):
        torch.testing.assert_close(model(padded(rows, length)), short, atol=1e-5, rtol=1e-5)
    alone = model(padded(rows[:1], 4))  # no padding at all, batch of one
    torch.testing.assert_close(alone, short[:1], atol=1e-5, rtol=1e-5)


def test_pad_tokens_are_really_ignored_not_just_constant():
    model = small_encoder(pooling="mean")
    a = model(padded([[5, 9, 2, 7]], 8))
    changed = padded([[5, 9, 2, 7]], 8)
    changed[0, 5] = 11  # a real token where padding was changes the result
    assert not torch.allclose(model(changed), a)


def test_logits_per_sequence_and_example_input():
    model = small_encoder()
    assert model(torch.randint(1, 30, (4, 10))).shape == (4, 3)
    x = model.example_input(2)
    assert x.shape == (2, 16) and (x != PAD).all() and x.max() < 30


def test_all_padding_row_stays_finite():
    model = small_encoder(pooling="mean")
    assert torch.isfinite(model(torch.zeros(2, 5, dtype=torch.long))).all()


def test_longer_than_max_len_and_bad_options_are_clear_errors():
    model = small_encoder()
    with pytest.raises(ValueError, match="16 learned positions"):
        model(torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown pooling"):
        small_encoder(pooling="max")
    with pytest.raises(ValueError, match="pad_id"):
        small_encoder(pad_id=30)


def test_default_size():
    n = sum(p.numel() for p in create_model("encoder_classifier").parameters())
    assert 10e6 < n < 11.5e6  # 30522 x 256 embedding (7.8M) + 4 x 0.79M blocks
