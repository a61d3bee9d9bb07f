"""The CNN of the survey's listing 4.1 (two conv + pool stages, two linear layers), made correct.

The listing forgot `import torch.nn.functional as F` and hard-coded the flatten size as 64*6*6,
which only fits 24x24 inputs. Here the flatten size follows from `image_size`, any channel count
works, and `flatten(1)` keeps samples apart where `view(-1, 64*6*6)` silently regroups them when
the size is wrong. Layer names and widths are the listing's by default; `widths` and
`activation` change them (private training prefers fewer weights and tanh: Papernot et al.,
"Tempered sigmoid activations for deep learning with differential privacy", 2021).

Contract: the feature layer is `conv2` (the last conv, (B, C2, S/2, S/2) before its pool);
`forward_features` returns the pooled map (B, C2, S/4, S/4) that is flattened into fc1, and
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

    def __init__(self, num_classes: int, in_channels: int, image_size: int, dropout: float,
                 widths: tuple[int, int, int], activation: str):
        super().__init__()
        if image_size < 4:
            raise ValueError(f"seed_cnn pools twice by 2, so it needs image_size >= 4; got {image_size}")
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"seed_cnn's widths are (conv1, conv2, fc1) channels, three positive numbers; got {widths}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"seed_cnn's activation is one of {', '.join(ACTIVATIONS)}; got {activation!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        c1, c2, hidden = widths
        self.act = ACTIVATIONS[activation]
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        side = image_size // 2 // 2  # each pooling floors an odd side
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).flatten(1)  # (B, C2 * (S/4)^2)
        x = self.act(self.fc1(x))  # (B, hidden)
        return self.fc2(self.dropout(x))  # (B, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, S, S)
        x = self.pool(self.act(self.conv1(x)))  # (B, C1, S/2, S/2)
        return self.pool(self.act(self.conv2(x)))  # (B, C2, S/4, S/4)


ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}


@register_model(modality="image", family="cnn")
def seed_cnn(
    num_classes: int = 10,  # the listing's fc2 output (CIFAR-10's classes)
    in_channels: int = 3,  # RGB, as the listing's conv1
    image_size: int = 24,  # the listing's 64*6*6 flatten implies 24x24 inputs
    dropout: float = 0.0,  # the listing has none; before fc2 when set
    widths: tuple[int, int, int] = (32, 64, 128),  # conv1, conv2 channels and fc1 units: the listing's
    activation: str = "relu",  # or "tanh"
) -> SeedCNN:
    """The survey's listing 4.1 CNN (2 conv, 2 linear), fixed to fit any image size and channel count."""
    return SeedCNN(num_classes, in_channels, image_size, dropout, tuple(widths), activation)
