"""Keyword spotting: classify a ~1 s clip of log-mel (or MFCC) features into one of a few words.

Every model here takes (B, F, T) features — F frequency bins (`in_features`), T frames (101 for
1 s at a 10 ms hop) — and returns (B, num_classes) logits:

- `bc_resnet`: BC-ResNet (Kim et al., 2021), broadcasted residual blocks; `scale` 1..8.
- `ds_cnn`: DS-CNN of "Hello Edge" (Zhang et al., 2017), depthwise-separable conv blocks.
- `crnn`: a conv front-end, a bidirectional GRU/LSTM over time and attention pooling.
- `kwt`: Keyword Transformer (Berg et al., 2021), one token per frame (or patch of frames).

Contract: the time axis is dynamic (global pooling takes any clip length) except for kwt, whose
learned positions fix `frames`. Feature layers and `forward_features` (what precedes the pooling
and the classifier):
- bc_resnet: `head`, (B, 4c, F', T) before the mean over frequency and time;
- ds_cnn: `blocks`, (B, C, F/2, T/2) before the mean;
- crnn: `conv` (the last (B, C, F/4, T) time-frequency map); `forward_features` gives the
  bidirectional RNN outputs (B, T, 2H) before attention pooling;
- kwt: `norm`, whose output (B, N+1, D) `forward_features` returns (the head reads token 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grove.models.layers.attention import TransformerBlock
from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import FeatureInput
from grove.models.layers.positions import LearnedPositions
from grove.registry import register_model


def _check_features(x: torch.Tensor, in_features: int, model: str) -> None:
    if x.dim() != 3 or x.shape[1] != in_features:
        raise ValueError(
            f"{model} expects (batch, {in_features} features, frames) inputs; got shape {tuple(x.shape)}"
        )


# ---------------------------------------------------------------------------------------------
# BC-ResNet


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics per frequency sub-band (Chang et al., 2021).

    The F bins are split into `sub_bands` equal groups and each (channel, group) pair is
    normalised on its own, so low and high frequencies keep their own scale.
    """

    def __init__(self, channels: int, sub_bands: int):
        super().__init__()
        self.sub_bands = sub_bands
        self.bn = nn.BatchNorm2d(channels * sub_bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, Fq, T = x.shape
        x = x.reshape(B, C * self.sub_bands, Fq // self.sub_bands, T)  # (B, C*S, F/S, T)
        return self.bn(x).reshape(B, C, Fq, T)


def _sub_bands(freq: int, wanted: int = 5) -> int:
    # The paper's 5 sub-bands need 5 | freq (true for 40 and 80 mel bins); otherwise take the
    # largest band count that divides the bins rather than refusing the input size.
    return max(s for s in range(1, wanted + 1) if freq % s == 0)


class BCResBlock(nn.Module):
    """Broadcasted residual block: a 2-D frequency-wise part and a 1-D temporal part.

    f2: (1x1 conv to change width) -> frequency depthwise 3x1 conv -> SubSpectralNorm
    f1: average over frequency -> temporal depthwise 1x3 dilated conv -> BN -> swish -> 1x1 conv
        -> dropout, broadcast back over frequency and added to f2's output.
    """

    def __init__(self, in_ch: int, out_ch: int, freq: int, freq_stride: int, dilation: int, dropout: float):
        super().__init__()
        self.transition = in_ch != out_ch
        self.f2 = nn.Sequential()
        if self.transition:
            self.f2.append(nn.Conv2d(in_ch, out_ch, 1, bias=False))
            self.f2.append(nn.BatchNorm2d(out_ch))
            self.f2.append(nn.ReLU())
        self.f2.append(
            nn.Conv2d(out_ch, out_ch, (3, 1), (freq_stride, 1), (1, 0), groups=out_ch, bias=False)
        )
        out_freq = (freq - 1) // freq_stride + 1
        self.f2.append(SubSpectralNorm(out_ch, _sub_bands(out_freq)))
        self.f1 = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, (1, 3), 1, (0, dilation), dilation=(1, dilation), groups=out_ch, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.SiLU(),
            nn.Conv2d(out_ch, out_ch, 1, bias=False),
            nn.Dropout2d(dropout),
        )
        self.out_freq = out_freq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, F, T)
        y2 = self.f2(x)  # (B, C, F', T)
        y1 = self.f1(y2.mean(2, keepdim=True))  # (B, C, 1, T)
        y = y2 + y1  # broadcast over frequency
        if not self.transition:
            y = y + x
        return F.relu(y)


class BCResNet(FeatureInput, ReplaceableHead, nn.Module):
    # blocks per stage, and the stages whose first block halves frequency (the paper's Table 1)
    stage_blocks = (2, 2, 4, 4)
    stride_stages = (1, 2)
    feature_layer = "head"
    head_layer = "classifier"

    def __init__(self, num_classes: int, in_features: int, scale: float, dropout: float):
        super().__init__()
        self.num_classes = num_classes
        self.in_features = in_features
        self.example_frames = 101
        base = int(8 * scale)  # BC-ResNet-1 has 8 base channels; BC-ResNet-k has 8k
        widths = [2 * base, base, int(1.5 * base), 2 * base, int(2.5 * base), 4 * base]
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 5, (2, 1), 2, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        freq = (in_features - 1) // 2 + 1
        self.blocks = nn.Sequential()
        for stage, n in enumerate(self.stage_blocks):
            stride = 2 if stage in self.stride_stages else 1
            for i in range(n):
                in_ch = widths[stage] if i == 0 else widths[stage + 1]
                block = BCResBlock(in_ch, widths[stage + 1], freq, stride if i == 0 else 1, 2**stage, dropout)
                self.blocks.append(block)
                freq = block.out_freq
        c = widths[-2]
        self.head = nn.Sequential(
            # a 5x5 depthwise conv without frequency padding folds the last 5 bins together
            nn.Conv2d(c, c, 5, padding=(0, 2), groups=c, bias=False) if freq >= 5 else nn.Identity(),
            nn.Conv2d(c, widths[-1], 1, bias=False),
            nn.BatchNorm2d(widths[-1]),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3), keepdim=True)  # (B, 4c, 1, 1)
        return self.classifier(x).flatten(1)  # (B, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_features, "bc_resnet")
        x = self.stem(x.unsqueeze(1))  # (B, 2c, F/2, T)
        x = self.blocks(x)  # (B, 2.5c, F/8, T)
        return self.head(x)  # (B, 4c, F/8 - 4, T)


@register_model(modality="audio", family="cnn")
def bc_resnet(
    num_classes: int = 12,  # Speech Commands v2's 10 words + unknown + silence
    in_features: int = 40,  # the paper's 40 log-mel bins
    scale: float = 8,  # BC-ResNet-8, the paper's most accurate (~321k params); 1 gives ~9.2k
    dropout: float = 0.1,  # the paper's spatial dropout in every block
) -> BCResNet:
    """BC-ResNet keyword spotter (Kim et al. 2021): broadcasted residual blocks, `scale` 1 to 8."""
    return BCResNet(num_classes, in_features, scale, dropout)


# ---------------------------------------------------------------------------------------------
# DS-CNN


class DepthwiseSeparable(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.depthwise(x)))
        return F.relu(self.bn2(self.pointwise(x)))


class DSCNN(FeatureInput, ReplaceableHead, nn.Module):
    feature_layer = "blocks"
    head_layer = "fc"

    def __init__(self, num_classes: int, in_features: int, channels: int, n_blocks: int, dropout: float):
        super().__init__()
        self.num_classes = num_classes
        self.in_features = in_features
        self.example_frames = 101
        # Hello Edge's first layer: a 10 (time) x 4 (frequency) conv with stride 2 in both
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels, (4, 10), stride=2, padding=(1, 4), bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[DepthwiseSeparable(channels) for _ in range(n_blocks)])
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3))  # (B, C)
        return self.fc(self.dropout(x))  # (B, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_features, "ds_cnn")
        x = self.stem(x.unsqueeze(1))  # (B, C, F/2, T/2)
        return self.blocks(x)  # (B, C, F/2, T/2)


@register_model(modality="audio", family="cnn")
def ds_cnn(
    num_classes: int = 12,  # Speech Commands v2's 10 words + unknown + silence
    in_features: int = 40,  # 40 log-mel bins (Hello Edge used 10 MFCCs; any count works)
    channels: int = 64,  # DS-CNN-S's width
    n_blocks: int = 4,  # DS-CNN-S's depth
    dropout: float = 0.2,  # before the classifier
) -> DSCNN:
    """DS-CNN keyword spotter of "Hello Edge" (Zhang et al. 2017): depthwise-separable conv blocks."""
    return DSCNN(num_classes, in_features, channels, n_blocks, dropout)


# ---------------------------------------------------------------------------------------------
# CRNN


class CRNN(FeatureInput, ReplaceableHead, nn.Module):
    feature_layer = "conv"
    head_layer = "fc"

    def __init__(
        self, num_classes: int, in_features: int, channels: int, hidden: int, layers: int, cell: str, dropout: float
    ):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"crnn cell must be 'gru' or 'lstm'; got '{cell}'")
        self.num_classes = num_classes
        self.in_features = in_features
        self.example_frames = 101
        # two conv blocks, each halving frequency only: time resolution is left to the RNN
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d((2, 1)),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d((2, 1)),
        )
        freq = in_features // 2 // 2
        if freq < 1:
            raise ValueError(f"crnn halves frequency twice, so it needs in_features >= 4; got {in_features}")
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(
            channels * freq, hidden, layers, batch_first=True, bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.attention = nn.Linear(2 * hidden, 1)  # one score per frame for attention pooling
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_features(x)  # (B, T, 2H)
        weights = self.attention(h).softmax(1)  # (B, T, 1)
        pooled = (weights * h).sum(1)  # (B, 2H)
        return self.fc(self.dropout(pooled))  # (B, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_features, "crnn")
        x = self.conv(x.unsqueeze(1))  # (B, C, F/4, T)
        x = x.flatten(1, 2).transpose(1, 2)  # (B, T, C*F/4)
        return self.rnn(x)[0]  # (B, T, 2H)


@register_model(modality="audio", family="rnn")
def crnn(
    num_classes: int = 12,  # Speech Commands v2's 10 words + unknown + silence
    in_features: int = 40,  # 40 log-mel bins
    channels: int = 32,  # conv front-end width
    hidden: int = 64,  # per direction
    layers: int = 2,  # stacked bidirectional layers
    cell: str = "gru",  # "gru" or "lstm"
    dropout: float = 0.1,  # between RNN layers and before the classifier
) -> CRNN:
    """Conv front-end + bidirectional GRU/LSTM with attention pooling, for keyword spotting."""
    return CRNN(num_classes, in_features, channels, hidden, layers, cell, dropout)


# ---------------------------------------------------------------------------------------------
# Keyword Transformer


class KWT(FeatureInput, ReplaceableHead, nn.Module):
    feature_layer = "norm"
    head_layer = "head"
    fixed_frames = True

    def __init__(
        self, num_classes: int, in_features: int, frames: int, patch_frames: int,
        dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float,
    ):
        super().__init__()
        if frames % patch_frames:
            raise ValueError(f"kwt needs frames ({frames}) to be a multiple of patch_frames ({patch_frames})")
        self.num_classes = num_classes
        self.in_features = in_features
        self.frames = frames
        self.example_frames = frames
        self.patch_frames = patch_frames
        self.embed = nn.Linear(in_features * patch_frames, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = LearnedPositions(frames // patch_frames + 1, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            [TransformerBlock(dim, heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])  # (B, num_classes), from the class token

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_features, "kwt")
        B, Fq, T = x.shape
        if T != self.frames:
            # learned positions fix the clip length; cropping or padding would change what was heard
            raise ValueError(
                f"kwt was built for {self.frames} frames but got {T}; build it with frames={T} "
                f"or crop/pad the clips to {self.frames} frames"
            )
        x = x.transpose(1, 2).reshape(B, T // self.patch_frames, self.patch_frames * Fq)  # (B, N, p*F)
        x = self.embed(x)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, N+1, D)
        x = self.dropout(self.positions(x))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, N+1, D)


@register_model(modality="audio", family="transformer")
def kwt(
    num_classes: int = 12,  # Speech Commands v2's 10 words + unknown + silence
    in_features: int = 40,  # the paper's 40 MFCCs (log-mel works the same)
    frames: int = 101,  # 1 s at a 10 ms hop; inputs must have exactly this many frames
    patch_frames: int = 1,  # the paper's time-domain patches: one frame per token
    dim: int = 64,  # KWT-1's width
    depth: int = 6,  # half of KWT-1's 12 blocks: trains faster at nearly the same accuracy
    heads: int = 1,  # KWT-1's single head
    mlp_ratio: float = 4,  # KWT-1's 256-wide MLP over 64 channels
    dropout: float = 0.0,  # the paper regularises with augmentation instead
) -> KWT:
    """Keyword Transformer (Berg et al. 2021): frame tokens, a class token, pre-norm Transformer blocks."""
    return KWT(num_classes, in_features, frames, patch_frames, dim, depth, heads, mlp_ratio, dropout)
