import pytest
import torch

from grove.registry import create_model


@pytest.mark.parametrize("image_size", [8, 24, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_any_size_and_channel_count_gives_one_row_per_sample(image_size, in_channels):
    model = create_model("seed_cnn", num_classes=5, in_channels=in_channels, image_size=image_size)
    x = torch.randn(3, in_channels, image_size, image_size)
    assert model(x).shape == (3, 5)
    assert model.example_input(2).shape == (2, in_channels, image_size, image_size)


def test_odd_size_floors_through_both_poolings():
    model = create_model("seed_cnn", image_size=27)  # 27 -> 13 -> 6: the listing's 64*6*6
    assert model.fc1.in_features == 64 * 6 * 6
    assert model(torch.randn(2, 3, 27, 27)).shape == (2, 10)


def test_listing_defaults_and_layer_names():
    model = create_model("seed_cnn")
    assert model.fc1.in_features == 64 * 6 * 6 and model.num_classes == 10
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"conv1", "conv2", "fc1", "fc2"}


def test_too_small_image_is_a_clear_error():
    with pytest.raises(ValueError, match="image_size >= 4"):
        create_model("seed_cnn", image_size=3)


def test_dropout_acts_only_in_training():
    model = create_model("seed_cnn", dropout=0.5).eval()
    x = torch.randn(4, 3, 24, 24)
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))
