"""Acoustic models for transcription with CTC: features in, per-frame character log-probabilities out.

    log_probs, out_lengths = model(features, lengths)   # a CTCOutput (a NamedTuple)
    # features (B, F, T) log-mel/MFCC; lengths (B,) valid frames per utterance (None = all T)
    # log_probs (B, T', num_classes), log_softmax over characters; out_lengths (B,) valid of T'

Each model subsamples time (T' ~ T / subsample) with strided convolutions, so every later layer
runs on fewer frames; `out_lengths` follows from the conv arithmetic. Frames past an utterance's
length never reach its valid frames: they are zeroed before every convolution, left out of the
RNN by packing (under torch.export, by per-direction runs that match it: `run_rnn` in
models/layers/rnn.py), and masked out of attention. So, in eval mode, padding an utterance more
does not change its valid log-probs (tests check this).

- `conv_rnn_ctc`: a small DeepSpeech2 (Amodei et al., 2016): 2-D conv front-end, bidirectional
  LSTM/GRU, linear to characters.
- `transformer_ctc`: conv subsampling, then Conformer blocks (Gulati et al., 2020) or plain
  pre-norm Transformer blocks, linear to characters.

Contract: inputs are features (batch, in_features, "time") and lengths ("batch",) int64;
`example_input` gives the features alone (every frame valid). `forward_features(features,
lengths)` returns the encoder output (B, T', D) before the output layer (its valid frames are the
out_lengths forward returns); the feature layer is `rnn` for conv_rnn_ctc (hooked output, in eager
mode: the (PackedSequence, state) pair) and the final `norm` for transformer_ctc (an Identity after
Conformer blocks, which end in their own LayerNorm). `reset_classifier` replaces `fc`; the blank
stays class 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grove.models.layers.attention import MLP, MultiHeadAttention, TransformerBlock
from grove.models.layers.contract import CTCOutput, TensorSpec
from grove.models.layers.heads import ReplaceableHead
from grove.models.layers.inputs import FeatureInput
from grove.models.layers.rnn import run_rnn
from grove.models.layers.specs import lengths_spec
from grove.registry import register_model


def frame_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def strided_length(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    # a kernel-3, padding-1 conv with this stride: floor((L + 2 - 3) / s) + 1
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


class ConvSubsampling(nn.Module):
    """Two 3x3 conv + BN + ReLU layers; both halve frequency, and time by `subsample` (2 or 4) overall.

    (B, F, T) features -> (B, T', channels * F'), with each conv's input zeroed past its length.
    """

    def __init__(self, in_features: int, channels: int, subsample: int):
        super().__init__()
        if subsample not in (2, 4):
            raise ValueError(f"subsample must be 2 or 4 (time strides of the two convs); got {subsample}")
        self.time_strides = (2, 2 if subsample == 4 else 1)
        self.convs = nn.ModuleList()
        for i, t_stride in enumerate(self.time_strides):
            self.convs.append(
                nn.Sequential(
                    nn.Conv2d(1 if i == 0 else channels, channels, 3, (2, t_stride), 1, bias=False),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(),
                )
            )
        freq = in_features
        for _ in self.time_strides:
            freq = (freq - 1) // 2 + 1
        self.out_features = channels * freq

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.unsqueeze(1)  # (B, 1, F, T)
        for conv, t_stride in zip(self.convs, self.time_strides):
            x = x * frame_mask(lengths, x.shape[-1])[:, None, None, :].to(x.dtype)
            x = conv(x)  # (B, C, F/2, T/stride)
            lengths = strided_length(lengths, t_stride)
        x = x.flatten(1, 2).transpose(1, 2)  # (B, T', C*F')
        return x, lengths


class _CTCModel(FeatureInput, ReplaceableHead, nn.Module):
    """Shared contract parts: lengths default, input spec, example input, output layer `fc`."""

    in_features: int
    num_classes: int
    fc: nn.Linear
    head_layer = "fc"
    # Example inputs are features only (2 s of frames): `forward` treats every frame as valid when
    # lengths is None, so model(example_input(n)) works wherever a single input tensor is expected.
    example_frames = 200

    def forward_features(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(features, self._lengths(features, lengths))[0]  # (B, T', D)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> CTCOutput:
        h, out_lengths = self.encode(features, self._lengths(features, lengths))  # (B, T', D)
        return CTCOutput(self.output_layer(h).log_softmax(-1), out_lengths)  # (B, T', num_classes)

    def input_spec(self) -> list[TensorSpec]:
        return [*super().input_spec(), lengths_spec()]

    def _lengths(self, features: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if features.dim() != 3 or features.shape[1] != self.in_features:
            raise ValueError(
                f"expected (batch, {self.in_features} features, frames) inputs; got shape {tuple(features.shape)}"
            )
        if lengths is None:
            return torch.full((features.shape[0],), features.shape[2], dtype=torch.long, device=features.device)
        return lengths.to(device=features.device, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Conv + bidirectional RNN (DeepSpeech2-like)


class ConvRNNCTC(_CTCModel):
    feature_layer = "rnn"

    def __init__(
        self, num_classes: int, in_features: int, channels: int, hidden: int, layers: int,
        cell: str, dropout: float, subsample: int,
    ):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"conv_rnn_ctc cell must be 'gru' or 'lstm'; got '{cell}'")
        self.num_classes = num_classes
        self.in_features = in_features
        self.subsample = subsample
        self.frontend = ConvSubsampling(in_features, channels, subsample)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(
            self.frontend.out_features, hidden, layers, batch_first=True, bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, out_lengths = self.frontend(features, lengths)  # (B, T', C*F')
        # Packing keeps padding out of the backward direction (it needs the lengths on the host);
        # under torch.export, run_rnn gets the same outputs without packing.
        h, _ = run_rnn(self.rnn, x, out_lengths)  # (B, T', 2H), zero past out_lengths
        return h, out_lengths

    def output_layer(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(h))


@register_model(modality="audio", family="rnn")
def conv_rnn_ctc(
    num_classes: int = 29,  # blank, space, a-z, apostrophe
    in_features: int = 40,  # 40 log-mel bins
    channels: int = 64,  # conv front-end width
    hidden: int = 192,  # per direction
    layers: int = 3,  # stacked bidirectional layers (DeepSpeech2 used 3 to 7)
    cell: str = "lstm",  # "lstm" or "gru"
    dropout: float = 0.1,  # between RNN layers and before the output layer
    subsample: int = 2,  # time stride of the front-end: 2 keeps enough frames per character
) -> ConvRNNCTC:
    """Small DeepSpeech2-style CTC model: conv front-end, bidirectional LSTM/GRU, characters."""
    return ConvRNNCTC(num_classes, in_features, channels, hidden, layers, cell, dropout, subsample)


# ---------------------------------------------------------------------------------------------
# Conformer / Transformer


class ConvModule(nn.Module):
    """Conformer convolution module: pointwise + GLU, depthwise conv, BN, swish, pointwise."""

    def __init__(self, dim: int, kernel_size: int, dropout: float):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel must be odd so frames stay centred; got {kernel_size}")
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.bn = nn.BatchNorm1d(dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D); valid: (B, T) bool
        x = x.transpose(1, 2)  # (B, D, T)
        x = F.glu(self.pointwise_in(x), dim=1)  # (B, D, T)
        x = x * valid[:, None, :].to(x.dtype)  # padding must not leak into valid frames
        x = F.silu(self.bn(self.depthwise(x)))  # (B, D, T)
        x = self.pointwise_out(x)
        return self.dropout(x.transpose(1, 2))  # (B, T, D)


class ConformerBlock(nn.Module):
    """x + FFN/2, x + MHSA, x + conv, x + FFN/2, LayerNorm (Gulati et al., 2020, Fig. 1)."""

    def __init__(self, dim: int, heads: int, conv_kernel: int, dropout: float):
        super().__init__()
        self.ln_ff1 = nn.LayerNorm(dim)
        self.ff1 = MLP(dim, 4 * dim, dropout, activation="silu")
        self.ln_attn = nn.LayerNorm(dim)
        # Rotary positions stand in for the paper's Transformer-XL relative positions: both make
        # scores depend on distance, and neither limits the utterance length.
        self.attn = MultiHeadAttention(dim, heads, dropout, rotary=True)
        self.ln_conv = nn.LayerNorm(dim)
        self.conv = ConvModule(dim, conv_kernel, dropout)
        self.ln_ff2 = nn.LayerNorm(dim)
        self.ff2 = MLP(dim, 4 * dim, dropout, activation="silu")
        self.ln_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D) throughout
        x = x + 0.5 * self.ff1(self.ln_ff1(x))
        x = x + self.attn(self.ln_attn(x), key_padding_mask=~valid)
        x = x + self.conv(self.ln_conv(x), valid)
        x = x + 0.5 * self.ff2(self.ln_ff2(x))
        return self.ln_out(x)


class TransformerCTC(_CTCModel):
    feature_layer = "norm"

    def __init__(
        self, num_classes: int, in_features: int, dim: int, depth: int, heads: int,
        conv_kernel: int, conformer: bool, dropout: float, subsample: int,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.in_features = in_features
        self.subsample = subsample
        self.conformer = conformer
        self.frontend = ConvSubsampling(in_features, dim, subsample)
        self.proj = nn.Linear(self.frontend.out_features, dim)
        self.dropout = nn.Dropout(dropout)
        if conformer:
            self.blocks = nn.ModuleList([ConformerBlock(dim, heads, conv_kernel, dropout) for _ in range(depth)])
        else:
            self.blocks = nn.ModuleList(
                [TransformerBlock(dim, heads, dropout=dropout, rotary=True) for _ in range(depth)]
            )
        # Conformer blocks end in their own LayerNorm; pre-norm Transformer blocks need a final one
        self.norm = nn.Identity() if conformer else nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, out_lengths = self.frontend(features, lengths)  # (B, T', C*F')
        x = self.dropout(self.proj(x))  # (B, T', D)
        valid = frame_mask(out_lengths, x.shape[1])  # (B, T')
        for block in self.blocks:
            if self.conformer:
                x = block(x, valid)
            else:
                x = block(x, key_padding_mask=~valid)
        return self.norm(x), out_lengths

    def output_layer(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h)


@register_model(modality="audio", family="transformer")
def transformer_ctc(
    num_classes: int = 29,  # blank, space, a-z, apostrophe
    in_features: int = 40,  # 40 log-mel bins
    dim: int = 144,  # Conformer-S's width
    depth: int = 4,  # a quarter of Conformer-S's 16 blocks: small data, CPU-trainable
    heads: int = 4,  # Conformer-S's heads
    conv_kernel: int = 15,  # time context of the depthwise conv (the paper found 32 best at 16 blocks)
    conformer: bool = True,  # False: plain pre-norm Transformer blocks
    dropout: float = 0.1,  # the paper's residual dropout
    subsample: int = 4,  # the paper's 4x (40 ms frames)
) -> TransformerCTC:
    """Conformer (or Transformer) CTC model: conv subsampling, attention + conv blocks, characters."""
    return TransformerCTC(num_classes, in_features, dim, depth, heads, conv_kernel, conformer, dropout, subsample)
