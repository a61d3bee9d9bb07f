import pytest
import torch
import torch.nn.functional as F

from grove.models import count_params
from grove.registry import create_model

# torchvision's alexnet state dict (torchvision/models/alexnet.py), in order
TORCHVISION_ALEXNET = [
    ("features.0.weight", (64, 3, 11, 11)),
    ("features.0.bias", (64,)),
    ("features.3.weight", (192, 64, 5, 5)),
    ("features.3.bias", (192,)),
    ("features.6.weight", (384, 192, 3, 3)),
    ("features.6.bias", (384,)),
    ("features.8.weight", (256, 384, 3, 3)),
    ("features.8.bias", (256,)),
    ("features.10.weight", (256, 256, 3, 3)),
    ("features.10.bias", (256,)),
    ("classifier.1.weight", (4096, 9216)),
    ("classifier.1.bias", (4096,)),
    ("classifier.4.weight", (4096, 4096)),
    ("classifier.4.bias", (4096,)),
    ("classifier.6.weight", (1000, 4096)),
    ("classifier.6.bias", (1000,)),
]


def shapes(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_names_shapes_and_count_are_torchvision_s():
    with torch.device("meta"):
        model = create_model("alexnet")
    assert shapes(model) == TORCHVISION_ALEXNET
    assert count_params(model) == 61_100_840  # torchvision's published figure


def torchvision_alexnet(weights, x):
    """torchvision's AlexNet.forward, written out with the state dict's tensors."""
    w = lambda i, part="features": (weights[f"{part}.{i}.weight"], weights[f"{part}.{i}.bias"])  # noqa: E731
    x = F.max_pool2d(F.relu(F.conv2d(x, *w(0), stride=4, padding=2)), 3, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, *w(3), padding=2)), 3, 2)
    x = F.relu(F.conv2d(x, *w(6), padding=1))
    x = F.relu(F.conv2d(x, *w(8), padding=1))
    x = F.max_pool2d(F.relu(F.conv2d(x, *w(10), padding=1)), 3, 2)
    x = F.adaptive_avg_pool2d(x, (6, 6)).flatten(1)
    x = F.relu(F.linear(x, *w(1, "classifier")))
    x = F.relu(F.linear(x, *w(4, "classifier")))
    return F.linear(x, *w(6, "classifier"))


def test_a_torchvision_state_dict_loads_strictly_and_computes_torchvision_s_function():
    torch.manual_seed(0)
    weights = {k: torch.randn(shape) * 0.02 for k, shape in TORCHVISION_ALEXNET}
    model = create_model("alexnet").eval()
    model.load_state_dict(weights, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), torchvision_alexnet(weights, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("in_channels, image_size", [(1, 8), (3, 32), (3, 64)])
def test_small_images_keep_the_names_and_train(in_channels, image_size):
    model = create_model("alexnet", num_classes=10, in_channels=in_channels, image_size=image_size, hidden=32)
    with torch.device("meta"):
        reference = create_model("alexnet")
    assert list(model.state_dict()) == list(reference.state_dict())
    out = model(model.example_input(2))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_small_stem_below_64_pixels_and_pools_that_do_not_fit_become_identity():
    digits = create_model("alexnet", in_channels=1, image_size=8, hidden=32)
    assert digits.features[0].kernel_size == (3, 3) and isinstance(digits.features[12], torch.nn.Identity)
    assert digits.pool_size == 1
    assert create_model("alexnet", image_size=64, hidden=32).features[0].kernel_size == (11, 11)
    with pytest.raises(ValueError, match="stem"):
        create_model("alexnet", stem="big")


def test_pool_size_keeps_torchvision_s_classifier_at_any_size():
    model = create_model("alexnet", image_size=32, pool_size=6)
    assert model.classifier[1].weight.shape == (4096, 9216)
    assert model(model.example_input(1)).shape == (1, 1000)
