import pytest
import torch

from grove.models import count_params
from grove.registry import create_model

SMALL = {
    "bc_resnet": dict(scale=1),
    "ds_cnn": dict(channels=16, n_blocks=2),
    "crnn": dict(channels=8, hidden=16, layers=2),
    "kwt": dict(dim=32, depth=2, heads=2),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_forward_backward_gives_one_row_of_logits_per_clip(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_features=40, **SMALL[name])
    x = torch.randn(3, 40, 101)
    logits = model(x)
    assert logits.shape == (3, 5) and model.num_classes == 5
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.example_input(2).shape == (2, 40, 101)


@pytest.mark.parametrize("name", ["bc_resnet", "ds_cnn", "crnn"])
@pytest.mark.parametrize("in_features,frames", [(80, 98), (20, 37)])
def test_conv_models_take_other_feature_counts_and_clip_lengths(name, in_features, frames):
    model = create_model(name, num_classes=4, in_features=in_features, **SMALL[name]).eval()
    assert model(torch.randn(2, in_features, frames)).shape == (2, 4)


def test_wrong_feature_count_is_a_clear_error():
    model = create_model("ds_cnn", in_features=40, **SMALL["ds_cnn"])
    with pytest.raises(ValueError, match="40 features"):
        model(torch.randn(2, 64, 101))


@pytest.mark.parametrize(
    "scale,expected",
    [(1, 9_200), (1.5, 17_200), (2, 27_300), (3, 54_200), (6, 188_000), (8, 321_000)],
)
def test_bc_resnet_parameter_counts_match_the_paper(scale, expected):
    # Kim et al. 2021, Table 2 (12 classes, 40 mel bins)
    n = count_params(create_model("bc_resnet", num_classes=12, in_features=40, scale=scale))
    assert abs(n - expected) / expected < 0.1, n


def test_bc_resnet_stage_widths_follow_the_scale():
    model = create_model("bc_resnet", scale=8)
    assert model.stem[0].out_channels == 128  # 2 x 64 base channels
    assert model.classifier.in_channels == 256  # 4 x 64


def test_kwt_rejects_other_clip_lengths():
    model = create_model("kwt", frames=101, **SMALL["kwt"])
    with pytest.raises(ValueError, match="built for 101 frames but got 98"):
        model(torch.randn(2, 40, 98))


def test_kwt_patches_group_frames_into_tokens():
    model = create_model("kwt", frames=100, patch_frames=4, **SMALL["kwt"])
    assert model.embed.in_features == 40 * 4
    assert model.positions.max_len == 100 // 4 + 1  # patches + the class token
    assert model(torch.randn(2, 40, 100)).shape == (2, 12)
    with pytest.raises(ValueError, match="multiple of patch_frames"):
        create_model("kwt", frames=101, patch_frames=4)


def test_crnn_lstm_cell_and_bad_cell():
    model = create_model("crnn", cell="lstm", **SMALL["crnn"])
    assert isinstance(model.rnn, torch.nn.LSTM)
    assert model(torch.randn(2, 40, 30)).shape == (2, 12)
    with pytest.raises(ValueError, match="'gru' or 'lstm'"):
        create_model("crnn", cell="rnn")


@pytest.mark.parametrize("name", list(SMALL))
def test_eval_mode_is_deterministic(name):
    model = create_model(name, dropout=0.5, **SMALL[name]).eval()
    x = torch.randn(2, 40, 101)
    assert torch.equal(model(x), model(x))
