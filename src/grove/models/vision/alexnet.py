"""AlexNet (Krizhevsky et al., 2012) as torchvision builds it, with torchvision's parameter names.

torchvision's variant is the one of "One weird trick" (Krizhevsky, 2014): 64-192-384-256-256
conv widths, no local response norm, an adaptive 6x6 average pool and a 4096-4096 classifier.
At the default configuration (3 channels, 224x224, 1000 classes) the names and shapes are
torchvision's (features.0/3/6/8/10, classifier.1/4/6), so its state dicts load with strict=True.

Small images (digits' 8x8, CIFAR's 32x32) would vanish under the 11x11/4 stem and three 3x3/2 max
pools, so the network adapts without renaming anything:
- `stem="small"` (the default below 64 pixels) makes features.0 a 3x3/1 conv;
- a max pool whose input is smaller than its 3x3 window becomes an Identity at the same index;
- the average pool's size defaults to min(6, the final map's side), so small maps are not blown
  up to 6x6 (pass pool_size=6 to keep torchvision's classifier.1 shape at any image size);
- `hidden` sets the classifier's width (torchvision's 4096 is far too wide for 10 classes of 8x8).
ReLUs are not in-place (torchvision's are): explanation and privacy hooks need each layer's output.
Initialisation is He-normal (fan_in, for ReLU) with zero biases, where torchvision keeps PyTorch's
default, which shrinks the signal by about sqrt(3) per layer: with no batch norm, eight such layers
left digits-alexnet at chance (10% after 20 epochs); He init reached 98.6%. Loaded weights are
unaffected.

Contract: the feature layer is `features.11`, the last conv's ReLU (B, 256, h, w) before the last
max pool; `forward_features` returns the `features` output before the average pool;
`reset_classifier` replaces classifier.6.
"""

from __future__ import annotations

import torch
from torch import nn

from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import ImageInput
from grove.registry import register_model

STEMS = ("imagenet", "small")
TORCHVISION_POOL = 6  # torchvision's AdaptiveAvgPool2d((6, 6))
POOL_KERNEL, POOL_STRIDE = 3, 2


class AlexNet(ImageInput, ReplaceableHead, nn.Module):
    feature_layer = "features.11"
    head_layer = "classifier.6"

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        stem: str,
        pool_size: int | None,
        hidden: int,
        dropout: float,
    ):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"alexnet stem must be one of {STEMS}; got '{stem}'")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        if stem == "imagenet":
            conv1 = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
            side = (image_size + 2 * 2 - 11) // 4 + 1
        else:
            conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
            side = image_size
        if side < 1:
            raise ValueError(f"alexnet's 11x11/4 stem needs image_size >= 7; got {image_size} (use stem='small')")
        pool1, side = self._max_pool(side)
        pool2, side = self._max_pool(side)
        pool3, side = self._max_pool(side)
        self.features = nn.Sequential(
            conv1,  # 0
            nn.ReLU(),
            pool1,  # 2
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
            nn.ReLU(),
            pool2,  # 5
            nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
            nn.ReLU(),  # 11: the feature layer
            pool3,  # 12
        )
        self.pool_size = pool_size if pool_size is not None else min(TORCHVISION_POOL, side)
        self.avgpool = nn.AdaptiveAvgPool2d((self.pool_size, self.pool_size))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * self.pool_size**2, hidden),  # 1
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),  # 4
            nn.ReLU(),
            nn.Linear(hidden, num_classes),  # 6
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                self._init_layer(m)

    @staticmethod
    def _init_layer(layer: nn.Conv2d | nn.Linear) -> None:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(layer.bias)

    init_head = _init_layer  # a fresh head starts as the built one did

    @staticmethod
    def _max_pool(side: int) -> tuple[nn.Module, int]:
        """torchvision's 3x3/2 max pool and the side after it, or an Identity where the map is too small."""
        if side < POOL_KERNEL:
            return nn.Identity(), side
        return nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE), (side - POOL_KERNEL) // POOL_STRIDE + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)  # (B, 256 * p * p)
        return self.classifier(x)  # (B, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, S, S) -> (B, 256, 6, 6) at 224x224 with the imagenet stem


@register_model(modality="image", family="cnn")
def alexnet(
    num_classes: int = 1000,  # ImageNet's, so torchvision checkpoints load as they are
    in_channels: int = 3,  # RGB
    image_size: int = 224,  # torchvision's training crop
    stem: str | None = None,  # "imagenet" (11x11/4) or "small" (3x3/1); None: imagenet from 64 pixels up
    pool_size: int | None = None,  # average-pool output side; None: min(6, final map side)
    hidden: int = 4096,  # classifier width, torchvision's; a few hundred suits small data sets
    dropout: float = 0.5,  # torchvision's, before both hidden layers
) -> AlexNet:
    """AlexNet (61.1M params at 1000 classes), torchvision names; adapts its stem and pools to small images."""
    if stem is None:
        stem = "imagenet" if image_size >= 64 else "small"
    return AlexNet(num_classes, in_channels, image_size, stem, pool_size, hidden, dropout)
