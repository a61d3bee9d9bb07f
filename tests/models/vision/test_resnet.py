import pytest
import torch

from grove.models import count_params
from grove.registry import create_model

# torchvision's published parameter counts for 1000 classes (torchvision cannot be imported here)
PUBLISHED_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_torchvision(name):
    assert count_params(create_model(name, num_classes=1000)) == PUBLISHED_PARAMS[name]


def test_resnet50_state_dict_keys_are_torchvision_s():
    keys = list(create_model("resnet50").state_dict())
    assert len(keys) == 320
    assert keys[:7] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
    ]
    for key in ["layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.bias"]:
        assert key in keys
    assert keys[-2:] == ["fc.weight", "fc.bias"]


def test_resnet50_puts_stride_on_the_3x3_conv():
    block = create_model("resnet50").layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


def test_cifar_stem_keeps_names_and_takes_small_images():
    imagenet, cifar = create_model("resnet18"), create_model("resnet18", num_classes=10, stem="cifar")
    assert list(imagenet.state_dict()) == list(cifar.state_dict())
    assert cifar.conv1.weight.shape == (64, 3, 3, 3)
    assert cifar.image_size == 32 and imagenet.image_size == 224
    cifar.eval()
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert cifar(torch.randn(2, 3, 8, 8)).shape == (2, 10)  # the adaptive average pool


def test_explicit_image_size_and_channels():
    model = create_model("resnet18", num_classes=4, in_channels=1, image_size=64)
    x = model.example_input(2)
    assert x.shape == (2, 1, 64, 64) and model(x).shape == (2, 4)


def test_zero_init_residual_zeroes_the_last_norm_of_every_block():
    basic = create_model("resnet18", zero_init_residual=True)
    bottleneck = create_model("resnet50", zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for layer in [basic.layer1, basic.layer4] for b in layer)
    assert all(b.bn3.weight.abs().sum() == 0 for b in bottleneck.layer3)
    assert create_model("resnet18").layer1[0].bn2.weight.eq(1).all()


def test_state_dict_loads_strictly_into_another_instance():
    a = create_model("resnet18", num_classes=10, stem="cifar")
    a.train()
    a(torch.randn(4, 3, 32, 32))  # move the running stats off their initial values
    b = create_model("resnet18", num_classes=10, stem="cifar")
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_unknown_stem_is_a_clear_error():
    with pytest.raises(ValueError, match="stem must be one of"):
        create_model("resnet18", stem="tiny")
