"""ResNet-18/34/50 (He et al., 2016) with torchvision's parameter and buffer names.

Names, shapes and initialisation follow torchvision's `resnet.py`, so a torchvision state_dict
loads with `strict=True`. ResNet-50's Bottleneck puts the stride on its 3x3 conv (torchvision's
"v1.5"), which is what torchvision's published weights use. `stem="cifar"` swaps the 7x7/2 conv
and the max pool for one 3x3/1 conv, keeping 32x32 images from shrinking to 1x1 by layer4; the
parameter names stay the same (only conv1's kernel differs).

Contract: the feature layer is `layer4`; `forward_features` returns its map (B, 512e, H/32, W/32)
before the average pool, and `reset_classifier` replaces `fc`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import ImageInput
from grove.models.layers.variants import register_variants

STEMS = ("imagenet", "cifar")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = F.relu(self.bn2(self.conv2(out)))  # (B, planes, H/stride, W/stride)
        out = self.bn3(self.conv3(out))  # (B, 4 * planes, H/stride, W/stride)
        return F.relu(out + identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


def make_stage(block: type, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """`blocks` blocks; the first changes resolution/width, with a 1x1 projection on its shortcut."""
    out_planes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = nn.Sequential(conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out_planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet(ImageInput, ReplaceableHead, nn.Module):
    feature_layer = "layer4"
    head_layer = "fc"

    def __init__(
        self,
        block: type,
        layers: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int,
        image_size: int | None,
        stem: str,
        zero_init_residual: bool,
    ):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"resnet stem must be one of {STEMS}; got '{stem}'")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size if image_size is not None else (32 if stem == "cifar" else 224)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        e = block.expansion
        self.layer1 = make_stage(block, 64, 64, layers[0], stride=1)
        self.layer2 = make_stage(block, 64 * e, 128, layers[1], stride=2)
        self.layer3 = make_stage(block, 128 * e, 256, layers[2], stride=2)
        self.layer4 = make_stage(block, 256 * e, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * e, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # each residual branch starts as zero, so every block starts as the identity
            # (Goyal et al., 2017); torchvision reports ~0.2-0.3% better top-1
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)  # (B, 512e)
        return self.fc(x)  # (B, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); shown for the imagenet stem (the cifar stem keeps H, W: s = 1, not 4)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        x = self.maxpool(x)  # (B, 64, H/4, W/4)
        x = self.layer1(x)  # (B, 64e, H/4, W/4), e = block expansion (1 or 4)
        x = self.layer2(x)  # (B, 128e, H/8, W/8)
        x = self.layer3(x)  # (B, 256e, H/16, W/16)
        return self.layer4(x)  # (B, 512e, H/32, W/32)


def resnet_builder(block: type, layers: tuple[int, int, int, int]) -> Callable[..., ResNet]:
    """The registered builder of one ResNet depth: four stages of `block`s, layers[i] of them in stage i."""

    def build(
        num_classes: int = 1000,  # ImageNet's, so torchvision checkpoints load as they are
        in_channels: int = 3,  # RGB
        # None: 224 for the imagenet stem, 32 for the cifar stem (it only sizes example_input;
        # the adaptive average pool takes any size)
        image_size: int | None = None,
        stem: str = "imagenet",  # torchvision's; "cifar" for 32x32 images
        zero_init_residual: bool = False,  # torchvision's default
    ) -> ResNet:
        return ResNet(block, layers, num_classes, in_channels, image_size, stem, zero_init_residual)

    return build


register_variants(
    {
        "resnet18": (
            resnet_builder(BasicBlock, (2, 2, 2, 2)),
            'ResNet-18 (11.7M params at 1000 classes), torchvision names; stem="cifar" for 32x32 images.',
        ),
        "resnet34": (
            resnet_builder(BasicBlock, (3, 4, 6, 3)),
            'ResNet-34 (21.8M params at 1000 classes), torchvision names; stem="cifar" for 32x32 images.',
        ),
        "resnet50": (
            resnet_builder(Bottleneck, (3, 4, 6, 3)),
            'ResNet-50 v1.5 (25.6M params at 1000 classes), torchvision names; stem="cifar" for 32x32.',
        ),
    },
    modality="image",
    family="cnn",
)
