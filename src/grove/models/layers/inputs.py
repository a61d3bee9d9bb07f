"""Contract mixins for models fed one kind of input: `input_spec` and `example_input`, read from
the sizes the model keeps as attributes.

    class ResNet(ImageInput, nn.Module): ...          # sets self.in_channels and self.image_size
    class DSCNN(FeatureInput, nn.Module): ...         # sets self.in_features and self.example_frames
    class RNNClassifier(TokenInput, nn.Module): ...   # sets self.vocab_size and self.pad_id

Example inputs are random, on the device (and for floats in the dtype) of the model's parameters.
"""

from __future__ import annotations

import torch

from grove.models.layers.contract import TensorSpec
from grove.models.layers.specs import feature_spec, image_spec, token_spec
from grove.models.layers.tokens import example_token_ids


class ImageInput:
    """For models built for (B, in_channels, image_size, image_size) images."""

    in_channels: int
    image_size: int

    def input_spec(self) -> list[TensorSpec]:
        return [image_spec(self.in_channels, self.image_size)]

    def example_input(self, batch_size: int) -> torch.Tensor:
        p = next(self.parameters())
        size = (batch_size, self.in_channels, self.image_size, self.image_size)
        return torch.randn(size, device=p.device, dtype=p.dtype)


class FeatureInput:
    """For models fed (B, in_features, T) audio features."""

    in_features: int
    example_frames: int
    fixed_frames: bool = False  # True when the model takes exactly example_frames frames

    def input_spec(self) -> list[TensorSpec]:
        return [feature_spec(self.in_features, self.example_frames if self.fixed_frames else None)]

    def example_input(self, batch_size: int) -> torch.Tensor:
        p = next(self.parameters())
        return torch.randn(batch_size, self.in_features, self.example_frames, device=p.device, dtype=p.dtype)


class TokenInput:
    """For models fed (B, T) token ids, right-padded with pad_id; example inputs are all text."""

    vocab_size: int
    pad_id: int
    example_tokens: int = 16

    def input_spec(self) -> list[TensorSpec]:
        return [token_spec()]

    def example_input(self, batch_size: int) -> torch.Tensor:
        device = next(self.parameters()).device
        return example_token_ids(batch_size, self.example_tokens, self.vocab_size, self.pad_id, device)
