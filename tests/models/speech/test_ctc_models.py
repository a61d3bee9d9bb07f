import pytest
import torch

from grove.registry import create_model

SMALL = {
    "conv_rnn_ctc": dict(channels=8, hidden=16, layers=2),
    "transformer_ctc": dict(dim=32, depth=2, heads=2, conv_kernel=5),
}
VARIANTS = [
    ("conv_rnn_ctc", dict(cell="lstm", subsample=2)),
    ("conv_rnn_ctc", dict(cell="gru", subsample=4)),
    ("transformer_ctc", dict(conformer=True, subsample=4)),
    ("transformer_ctc", dict(conformer=False, subsample=2)),
]


def build(name, **options):
    torch.manual_seed(0)
    return create_model(name, num_classes=6, in_features=16, **{**SMALL[name], **options})


def expected_lengths(lengths, subsample):
    # two kernel-3, padding-1 convs with time strides (2, 2) or (2, 1)
    out = (lengths - 1) // 2 + 1
    return (out - 1) // 2 + 1 if subsample == 4 else out


@pytest.mark.parametrize("name,options", VARIANTS)
def test_forward_backward_shapes_and_lengths(name, options):
    model = build(name, **options)
    lengths = torch.tensor([37, 20, 1])
    log_probs, out_lengths = model(torch.randn(3, 16, 37), lengths)
    T_out = expected_lengths(37, options["subsample"])
    assert log_probs.shape == (3, T_out, 6)
    assert out_lengths.tolist() == [expected_lengths(n, options["subsample"]) for n in lengths.tolist()]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, T_out), atol=1e-5)  # log_softmax
    log_probs.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name,options", VARIANTS)
def test_extra_padding_does_not_change_valid_frames(name, options):
    model = build(name, **options).eval()
    torch.manual_seed(1)
    utterance = torch.randn(16, 29)
    short = torch.randn(16, 11)
    tight = torch.stack([utterance, torch.nn.functional.pad(short, (0, 18), value=3.0)])
    # much more padding, and junk (not zeros) in it: it must be masked, not merely small
    loose = torch.randn(2, 16, 60) * 5
    loose[0, :, :29] = utterance
    loose[1, :, :11] = short
    lengths = torch.tensor([29, 11])
    with torch.no_grad():
        a, a_len = model(tight, lengths)
        b, b_len = model(loose, lengths)
    assert torch.equal(a_len, b_len)
    for i, n in enumerate(a_len.tolist()):
        torch.testing.assert_close(a[i, :n], b[i, :n], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(SMALL))
def test_lengths_default_to_every_frame(name):
    model = build(name).eval()
    x = torch.randn(2, 16, 24)
    with torch.no_grad():
        implicit, implicit_len = model(x)
        explicit, explicit_len = model(x, torch.tensor([24, 24]))
    assert torch.equal(implicit, explicit) and torch.equal(implicit_len, explicit_len)
    assert model.example_input(3).shape == (3, 16, 200)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="subsample must be 2 or 4"):
        build("conv_rnn_ctc", subsample=3)
    with pytest.raises(ValueError, match="'gru' or 'lstm'"):
        build("conv_rnn_ctc", cell="rnn")
    with pytest.raises(ValueError, match="conv_kernel must be odd"):
        build("transformer_ctc", conv_kernel=4)
    with pytest.raises(ValueError, match="16 features"):
        build("conv_rnn_ctc")(torch.randn(2, 40, 30), torch.tensor([30, 30]))


def test_default_sizes():
    conformer = create_model("transformer_ctc")
    assert conformer.num_classes == 29 and len(conformer.blocks) == 4
    assert type(conformer.blocks[0]).__name__ == "ConformerBlock"
    assert create_model("conv_rnn_ctc").rnn.hidden_size == 192
