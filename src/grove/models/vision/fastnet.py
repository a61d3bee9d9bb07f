"""A fast small CIFAR net in the spirit of Keller Jordan's airbench94 (94% on CIFAR-10 in seconds).

What makes it fast to train: a frozen 2x2 conv stem whose filters whiten the image's 2x2 patches
(computed once from data by `init_from_data`), so the first learned layer sees decorrelated,
unit-variance inputs; three wide-but-shallow conv groups that pool early; a global max pool; and a
small fixed output scale that keeps early logits soft. Horizontal-flip test-time augmentation is
built in (eval mode only).

Contract: the feature layer is `groups` (the last conv group); `forward_features` returns its map
(B, widths[-1], h, w) for one view (no TTA) before the global max pool, and `reset_classifier`
replaces `head`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import ImageInput
from grove.registry import register_model

WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4  # airbench's; damps the patch directions with almost no variance
OUTPUT_SCALE = 1 / 9  # airbench's; softer initial logits train faster with its hyperparameters
BN_MOMENTUM = 0.4  # running stats must keep up in runs of only a few hundred steps (airbench)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
    with torch.no_grad():
        # the first in_channels filters start as the identity, so signal passes through the
        # fresh net unchanged (airbench: trains faster than random filters alone)
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, Cin, H, W); pooling before the norm halves the work of norm and activation
        x = self.pool(self.conv1(x))  # (B, Cout, H/2, W/2)
        x = F.gelu(self.norm1(x))
        return F.gelu(self.norm2(self.conv2(x)))


class FastNet(ImageInput, ReplaceableHead, nn.Module):
    feature_layer = "groups"
    head_layer = "head"

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, widths: Sequence[int], tta: bool
    ):
        super().__init__()
        widths = tuple(widths)
        if image_size - WHITEN_KERNEL + 1 < 2 ** len(widths):
            raise ValueError(
                f"fastnet pools by 2 in each of its {len(widths)} groups after a 2x2 stem, so it "
                f"needs image_size >= {2 ** len(widths) + WHITEN_KERNEL - 1}; got {image_size}"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.tta = tta
        patch_dim = in_channels * WHITEN_KERNEL**2
        # one filter per eigenvector of the patch covariance, and its negative, so the GELU
        # after it keeps both signs of every whitened direction
        self.whiten = nn.Conv2d(in_channels, 2 * patch_dim, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        ins = (2 * patch_dim,) + widths[:-1]
        self.groups = nn.Sequential(*(ConvGroup(i, o) for i, o in zip(ins, widths)))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the stem to whiten the 2x2 patches of `x` (B, C, H, W), the transformed train inputs.

        Patches are centred and the bias set to cancel their mean, so the stem's output has zero
        mean and (up to WHITEN_EPS) identity covariance even for unnormalised inputs.
        """
        w = self.whiten.weight
        x = x.to(device=w.device, dtype=torch.float64)
        patches = F.unfold(x, WHITEN_KERNEL)  # (B, C*k*k, L), ordered as the conv weight's C, kh, kw
        patches = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (N, D)
        mean = patches.mean(0)  # (D,)
        centred = patches - mean
        cov = centred.T @ centred / len(centred)  # (D, D)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending; eigenvectors are columns
        filters = eigenvectors.T.flip(0) / torch.sqrt(eigenvalues.flip(0) + WHITEN_EPS)[:, None]  # (D, D)
        bias = -filters @ mean  # (D,)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).view_as(w))
        self.whiten.bias.copy_(torch.cat([bias, -bias]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, S, S); shapes shown for S = 32 and the default widths
        x = F.gelu(self.whiten(x))  # (B, 8C, 31, 31)
        return self.groups(x)  # (B, 256, 3, 3): 31 -> 15 -> 7 -> 3

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).amax(dim=(2, 3))  # (B, 256)
        return self.head(x) * OUTPUT_SCALE  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.tta:
            return self.logits(x)
        # one pass over both views: eval-mode norms use running stats, so batching them is exact
        both = self.logits(torch.cat([x, x.flip(-1)]))  # (2B, num_classes)
        return both.view(2, len(x), -1).mean(0)  # (B, num_classes)


@register_model(modality="image", family="cnn")
def fastnet(
    num_classes: int = 10,  # CIFAR-10, the data set it is tuned for
    in_channels: int = 3,  # RGB
    image_size: int = 32,  # CIFAR's; the widths and output scale are tuned for it
    widths: Sequence[int] = (64, 256, 256),  # airbench94's; one conv group per entry
    tta: bool = True,  # flip TTA in eval mode: airbench gains ~0.5% accuracy for 2x eval compute
) -> FastNet:
    """airbench94-style fast CIFAR CNN: frozen whitening stem, 3 conv groups, flip TTA at eval."""
    return FastNet(num_classes, in_channels, image_size, widths, tta)
