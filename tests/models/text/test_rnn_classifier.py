import pytest
import torch

from grove.models.text.rnn_classifier import sequence_lengths
from grove.registry import create_model

SMALL = dict(vocab_size=30, num_classes=3, n_embd=8, n_hidden=8)
PAD = 0


def small_rnn(**kw):
    torch.manual_seed(0)
    return create_model("rnn_classifier", **{**SMALL, **kw}).eval()


def padded(rows, length):
    return torch.tensor([row + [PAD] * (length - len(row)) for row in rows])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_padding_does_not_change_the_logits(cell, bidirectional, n_layers):
    model = small_rnn(cell=cell, bidirectional=bidirectional, n_layers=n_layers)
    rows = [[5, 9, 2, 7], [3, 4, 8, 1, 6, 2, 9], [4]]
    short = model(padded(rows, 7))
    torch.testing.assert_close(model(padded(rows, 15)), short, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(padded(rows[:1], 4)), short[:1], atol=1e-5, rtol=1e-5)


def test_backward_direction_reads_from_the_end_of_the_text():
    model = small_rnn()
    a = model(padded([[5, 9, 2, 7]], 6))
    assert not torch.allclose(model(padded([[5, 9, 2, 8]], 6)), a)  # the last token counts
    assert not torch.allclose(model(padded([[6, 9, 2, 7]], 6)), a)  # and the first


def test_lengths_end_at_the_last_non_pad_token():
    idx = torch.tensor([[5, 0, 7, 0, 0], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    assert sequence_lengths(idx, 0).tolist() == [3, 5, 1]


def test_shapes_and_example_input():
    model = small_rnn(bidirectional=True)
    assert model.head.in_features == 16
    assert model(torch.randint(1, 30, (4, 10))).shape == (4, 3)
    x = model.example_input(2)
    assert x.shape == (2, 16) and (x != PAD).all()
    assert torch.isfinite(model(torch.zeros(2, 4, dtype=torch.long))).all()  # all padding: no crash


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown cell"):
        small_rnn(cell="rnn")
    with pytest.raises(ValueError, match="pad_id"):
        small_rnn(pad_id=-1)
