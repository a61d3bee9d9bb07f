import pytest
import torch

from grove.models.text.rnn_lm import detach_state
from grove.registry import create_model

SMALL = dict(vocab_size=13, n_embd=8, n_hidden=8, n_layers=2)
CELLS = ["lstm", "gru"]


def small_lm(**kw):
    torch.manual_seed(0)
    return create_model("lstm_lm", **{**SMALL, **kw}).eval()


@pytest.mark.parametrize("cell", CELLS)
def test_forward_returns_logits_and_optionally_the_state(cell):
    model = small_lm(cell=cell)
    idx = torch.randint(0, 13, (3, 5))
    assert model(idx).shape == (3, 5, 13)
    logits, state = model(idx, return_state=True)
    assert torch.equal(logits, model(idx))
    h = state[0] if cell == "lstm" else state
    assert isinstance(state, tuple) == (cell == "lstm")
    assert h.shape == (2, 3, 8)


@pytest.mark.parametrize("cell", CELLS)
def test_carried_state_makes_two_halves_equal_the_whole(cell):
    model = small_lm(cell=cell)
    idx = torch.randint(0, 13, (2, 10))
    whole = model(idx)
    first, state = model(idx[:, :4], return_state=True)
    second, _ = model(idx[:, 4:], detach_state(state), return_state=True)
    torch.testing.assert_close(torch.cat((first, second), dim=1), whole, atol=1e-6, rtol=1e-6)
    fresh = model(idx[:, 4:])  # without the state the second half starts from zeros
    assert not torch.allclose(fresh, whole[:, 4:])


@pytest.mark.parametrize("cell", CELLS)
def test_detach_state_cuts_the_graph_and_keeps_values(cell):
    model = small_lm(cell=cell).train()
    _, state = model(torch.randint(0, 13, (2, 4)), return_state=True)
    detached = detach_state(state)
    as_tuple = lambda s: s if isinstance(s, tuple) else (s,)  # noqa: E731
    for before, after in zip(as_tuple(state), as_tuple(detached)):
        assert before.requires_grad and not after.requires_grad and torch.equal(before, after)
    assert detach_state(None) is None
    assert model.detach_state is detach_state  # reachable from the model too


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_generate_equals_argmax_of_full_forward(cell):
    model = small_lm(cell=cell)
    idx = torch.randint(0, 13, (2, 3))
    tokens = list(model.generate(idx, 12, top_k=1))
    assert len(tokens) == 12 and all(t.shape == (2, 1) for t in tokens)
    seq = idx
    for _ in range(12):
        seq = torch.cat((seq, model(seq)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(torch.cat([idx, *tokens], dim=1), seq)


def test_sampled_generate_stays_in_the_vocabulary():
    model = small_lm()
    out = torch.cat(list(model.generate(torch.zeros(4, 1, dtype=torch.long), 30, temperature=1.2, top_p=0.9)), 1)
    assert out.shape == (4, 30) and out.min() >= 0 and out.max() < 13


def test_tie_weights_shares_one_tensor_and_needs_equal_sizes():
    model = small_lm(tie_weights=True)
    assert model.decoder.weight is model.encoder.weight
    assert sum(p.numel() for p in small_lm().parameters()) - sum(p.numel() for p in model.parameters()) == 13 * 8
    with pytest.raises(ValueError, match="n_embd == n_hidden"):
        create_model("lstm_lm", n_embd=8, n_hidden=16, tie_weights=True)


def test_zaremba_uniform_init():
    model = create_model("lstm_lm", vocab_size=50, init_range=0.05)
    for p in model.parameters():
        assert p.abs().max() <= 0.05
    assert model.rnn.weight_hh_l0.abs().max() > 0.04  # the whole range is used, not a narrower default


def test_dropout_only_in_training_and_between_layers():
    model = small_lm(dropout=0.5)
    assert model.rnn.dropout == 0.5
    assert create_model("lstm_lm", n_layers=1, dropout=0.5).rnn.dropout == 0.0  # nothing between layers
    idx = torch.randint(0, 13, (2, 6))
    assert torch.equal(model(idx), model(idx))
    model.train()
    assert not torch.equal(model(idx), model(idx))


def test_zaremba_small_size_and_clear_errors():
    n = sum(p.numel() for p in create_model("lstm_lm").parameters())
    assert 4.5e6 < n < 4.8e6  # 10k x 200 embedding + decoder, 2 x 200-unit LSTM layers
    with pytest.raises(ValueError, match="unknown cell"):
        create_model("lstm_lm", cell="rnn")
    with pytest.raises(ValueError, match="num_classes must equal vocab_size"):
        create_model("lstm_lm", vocab_size=100, num_classes=7)
