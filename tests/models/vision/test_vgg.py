import pytest
import torch
import torch.nn.functional as F

from grove.models import count_params
from grove.registry import create_model

# torchvision's vgg11 state dict (torchvision/models/vgg.py, configuration "A"), in order
TORCHVISION_VGG11 = [
    ("features.0.weight", (64, 3, 3, 3)),
    ("features.0.bias", (64,)),
    ("features.3.weight", (128, 64, 3, 3)),
    ("features.3.bias", (128,)),
    ("features.6.weight", (256, 128, 3, 3)),
    ("features.6.bias", (256,)),
    ("features.8.weight", (256, 256, 3, 3)),
    ("features.8.bias", (256,)),
    ("features.11.weight", (512, 256, 3, 3)),
    ("features.11.bias", (512,)),
    ("features.13.weight", (512, 512, 3, 3)),
    ("features.13.bias", (512,)),
    ("features.16.weight", (512, 512, 3, 3)),
    ("features.16.bias", (512,)),
    ("features.18.weight", (512, 512, 3, 3)),
    ("features.18.bias", (512,)),
    ("classifier.0.weight", (4096, 25088)),
    ("classifier.0.bias", (4096,)),
    ("classifier.3.weight", (4096, 4096)),
    ("classifier.3.bias", (4096,)),
    ("classifier.6.weight", (1000, 4096)),
    ("classifier.6.bias", (1000,)),
]
# torchvision's published parameter counts at 1000 classes
PUBLISHED_PARAMS = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
}


def shapes(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_vgg11_names_and_shapes_are_torchvision_s():
    with torch.device("meta"):
        assert shapes(create_model("vgg11")) == TORCHVISION_VGG11


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_torchvision(name):
    with torch.device("meta"):
        assert count_params(create_model(name)) == PUBLISHED_PARAMS[name]


def test_vgg11_bn_puts_a_batch_norm_after_every_conv():
    with torch.device("meta"):
        keys = list(create_model("vgg11_bn").state_dict())
    assert keys[:7] == [
        "features.0.weight",
        "features.0.bias",
        "features.1.weight",
        "features.1.bias",
        "features.1.running_mean",
        "features.1.running_var",
        "features.1.num_batches_tracked",
    ]
    assert "features.26.running_var" in keys and keys[-2:] == ["classifier.6.weight", "classifier.6.bias"]


def torchvision_vgg11(weights, x):
    """torchvision's VGG.forward for configuration "A", written out with the state dict's tensors."""
    for i in (0, 3, 6, 8, 11, 13, 16, 18):
        x = F.relu(F.conv2d(x, weights[f"features.{i}.weight"], weights[f"features.{i}.bias"], padding=1))
        if i in (0, 3, 8, 13, 18):
            x = F.max_pool2d(x, 2, 2)
    x = F.adaptive_avg_pool2d(x, (7, 7)).flatten(1)
    for i in (0, 3):
        x = F.relu(F.linear(x, weights[f"classifier.{i}.weight"], weights[f"classifier.{i}.bias"]))
    return F.linear(x, weights["classifier.6.weight"], weights["classifier.6.bias"])


def test_a_torchvision_state_dict_loads_strictly_and_computes_torchvision_s_function():
    torch.manual_seed(0)
    weights = {k: torch.randn(shape) * 0.02 for k, shape in TORCHVISION_VGG11}
    # 64x64 keeps the test quick; pool_size=7 is torchvision's pool at every size
    model = create_model("vgg11", image_size=64, pool_size=7).eval()
    model.load_state_dict(weights, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), torchvision_vgg11(weights, x), atol=1e-4, rtol=1e-4)


def test_initialisation_is_torchvision_s():
    torch.manual_seed(0)
    model = create_model("vgg11_bn", image_size=32, hidden=256)
    assert model.classifier[0].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert (model.classifier[0].bias == 0).all() and (model.features[0].bias == 0).all()
    assert (model.features[1].weight == 1).all()
    model.reset_classifier(5)
    assert (model.classifier[6].bias == 0).all() and model.classifier[6].weight.std().item() < 0.02


@pytest.mark.parametrize("name", ["vgg11", "vgg16_bn"])
@pytest.mark.parametrize("in_channels, image_size, pools", [(1, 8, 3), (3, 32, 5)])
def test_small_images_keep_the_names_and_drop_the_pools_they_cannot_take(name, in_channels, image_size, pools):
    model = create_model(name, num_classes=10, in_channels=in_channels, image_size=image_size, hidden=32)
    with torch.device("meta"):
        reference = create_model(name)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.features) == pools
    assert model.pool_size == 1 and model.classifier[0].in_features == 512
    out = model(model.example_input(2))
    assert out.shape == (2, 10)


def test_feature_layer_is_the_last_relu_before_the_last_pool():
    with torch.device("meta"):
        assert create_model("vgg16").feature_layer == "features.29"
        assert create_model("vgg16_bn").feature_layer == "features.42"
