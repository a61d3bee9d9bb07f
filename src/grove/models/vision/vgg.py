"""VGG-11/13/16 (Simonyan & Zisserman, 2015), plain and batch-normalised, with torchvision's names.

Stacks of 3x3 convs (+ BatchNorm in the _bn variants) and ReLUs, a 2x2 max pool after each of
five stages, an adaptive 7x7 average pool and a 4096-4096 classifier. At the default configuration
(3 channels, 224x224, 1000 classes) the names, shapes and initialisation are torchvision's
(features.N, classifier.0/3/6), so its state dicts load with strict=True.

Small images adapt without renaming anything:
- a max pool whose input is already 1x1 becomes an Identity at the same index (8x8 digits keep
  three of the five pools; 32x32 CIFAR keeps all five and ends at 1x1);
- the average pool's size defaults to min(7, the final map's side), so a 1x1 map is not copied
  into 7x7 = 49 identical features (pass pool_size=7 for torchvision's classifier.0 shape at any
  image size, e.g. to fine-tune its weights on smaller images);
- `hidden` sets the classifier's width (torchvision's 4096; 512 is the usual CIFAR VGG).
ReLUs are not in-place (torchvision's are): explanation and privacy hooks need each layer's output.

Contract: the feature layer is the last ReLU of `features` (features.29 for vgg16, features.42 for
vgg16_bn), before the last max pool; `forward_features` returns the `features` output before the
average pool; `reset_classifier` replaces classifier.6.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import ImageInput
from grove.models.layers.variants import register_variants

# torchvision's configurations: conv widths, "M" = 2x2 max pool
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # vgg11
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # vgg13
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # vgg16
}
TORCHVISION_POOL = 7  # torchvision's AdaptiveAvgPool2d((7, 7))


def make_features(config: list[int | str], in_channels: int, image_size: int, batch_norm: bool):
    """torchvision's make_layers, with pools left out (as Identity) once the map is 1x1.

    Returns the layers and the side of the map they output.
    """
    layers: list[nn.Module] = []
    channels, side = in_channels, image_size
    for v in config:
        if v == "M":
            if side >= 2:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                side //= 2
            else:
                layers.append(nn.Identity())
            continue
        layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU())
        channels = v
    return nn.Sequential(*layers), side


class VGG(ImageInput, ReplaceableHead, nn.Module):
    head_layer = "classifier.6"

    def __init__(
        self,
        config: list[int | str],
        batch_norm: bool,
        num_classes: int,
        in_channels: int,
        image_size: int,
        pool_size: int | None,
        hidden: int,
        dropout: float,
    ):
        super().__init__()
        if image_size < 1:
            raise ValueError(f"vgg needs image_size >= 1; got {image_size}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.features, side = make_features(config, in_channels, image_size, batch_norm)
        last_relu = max(i for i, m in enumerate(self.features) if isinstance(m, nn.ReLU))
        self.feature_layer = f"features.{last_relu}"
        self.pool_size = pool_size if pool_size is not None else min(TORCHVISION_POOL, side)
        self.avgpool = nn.AdaptiveAvgPool2d((self.pool_size, self.pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(512 * self.pool_size**2, hidden),  # 0
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),  # 3
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),  # 6
        )
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                self._init_linear(m)

    @staticmethod
    def _init_linear(layer: nn.Linear) -> None:
        nn.init.normal_(layer.weight, 0, 0.01)
        nn.init.zeros_(layer.bias)

    init_head = _init_linear  # a fresh head starts as the built one did

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)  # (B, 512 * p * p)
        return self.classifier(x)  # (B, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, S, S) -> (B, 512, S/32, S/32) when all five pools act


def vgg_builder(config: str, batch_norm: bool) -> Callable[..., VGG]:
    """The registered builder of one VGG: torchvision's configuration `config`, with or without batch norm."""

    def build(
        num_classes: int = 1000,  # ImageNet's, so torchvision checkpoints load as they are
        in_channels: int = 3,  # RGB
        image_size: int = 224,  # torchvision's training crop; smaller images drop the pools they cannot take
        pool_size: int | None = None,  # min(7, final map side); 7 keeps torchvision's classifier.0 at any size
        hidden: int = 4096,  # torchvision's classifier width; 512 is the usual CIFAR choice
        dropout: float = 0.5,  # torchvision's, after both hidden layers
    ) -> VGG:
        return VGG(CONFIGS[config], batch_norm, num_classes, in_channels, image_size, pool_size, hidden, dropout)

    return build


register_variants(
    {
        "vgg11": (
            vgg_builder("A", False),
            "VGG-11 (configuration A, 132.9M params at 1000 classes), torchvision names; adapts to small images.",
        ),
        "vgg11_bn": (
            vgg_builder("A", True),
            "VGG-11 with batch norm after every conv, torchvision names; adapts to small images.",
        ),
        "vgg13": (
            vgg_builder("B", False),
            "VGG-13 (configuration B, 133.0M params at 1000 classes), torchvision names; adapts to small images.",
        ),
        "vgg13_bn": (
            vgg_builder("B", True),
            "VGG-13 with batch norm after every conv, torchvision names; adapts to small images.",
        ),
        "vgg16": (
            vgg_builder("D", False),
            "VGG-16 (configuration D, 138.4M params at 1000 classes), torchvision names; adapts to small images.",
        ),
        "vgg16_bn": (
            vgg_builder("D", True),
            "VGG-16 with batch norm after every conv, torchvision names; adapts to small images.",
        ),
    },
    modality="image",
    family="cnn",
)
