"""The CNN of the survey's listing 4.1 (two conv + pool stages, two linear layers), made correct.

The listing forgot `import torch.nn.functional as F` and hard-coded the flatten size as 64*6*6,
which only fits 24x24 inputs. Here the flatten size follows from `image_size`, any channel count
works, and `flatten(1)` keeps samples apart where `view(-1, 64*6*6)` silently regroups them when
the size is wrong. Layer names and widths are the listing's.

Contract: the feature layer is `conv2` (the last conv, (B, 64, S/2, S/2) before its pool);
`forward_features` returns the pooled map (B, 64, S/4, S/4) that is flattened into fc1, and
`reset_classifier` replaces fc2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import ImageInput
from grove.registry import register_model


class SeedCNN(ImageInput, ReplaceableHead, nn.Module):
    feature_layer = "conv2"
    head_layer = "fc2"

    def __init__(self, num_classes: int, in_channels: int, image_size: int, dropout: float):
        super().__init__()
        if image_size < 4:
            raise ValueError(f"seed_cnn pools twice by 2, so it needs image_size >= 4; got {image_size}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        side = image_size // 2 // 2  # each pooling floors an odd side
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).flatten(1)  # (B, 64 * (S/4)^2)
        x = F.relu(self.fc1(x))  # (B, 128)
        return self.fc2(self.dropout(x))  # (B, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, S, S)
        x = self.pool(F.relu(self.conv1(x)))  # (B, 32, S/2, S/2)
        return self.pool(F.relu(self.conv2(x)))  # (B, 64, S/4, S/4)


@register_model(modality="image", family="cnn")
def seed_cnn(
    num_classes: int = 10,  # the listing's fc2 output (CIFAR-10's classes)
    in_channels: int = 3,  # RGB, as the listing's conv1
    image_size: int = 24,  # the listing's 64*6*6 flatten implies 24x24 inputs
    dropout: float = 0.0,  # the listing has none; before fc2 when set
) -> SeedCNN:
    """The survey's listing 4.1 CNN (2 conv, 2 linear), fixed to fit any image size and channel count."""
    return SeedCNN(num_classes, in_channels, image_size, dropout)
