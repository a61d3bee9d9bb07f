"""The input specs the models share, so the same kind of input has the same name everywhere.

Image sizes are fixed axes (each image model is built for one `image_size`); the batch and the
length of token and frame sequences are dynamic axes, named "batch", "tokens" and "time".
"""

from __future__ import annotations

from grove.models.layers.contract import TensorSpec


def image_spec(in_channels: int, image_size: int) -> TensorSpec:
    return TensorSpec("image", ("batch", in_channels, image_size, image_size), "float32")


def token_spec() -> TensorSpec:
    return TensorSpec("input_ids", ("batch", "tokens"), "int64")


def feature_spec(in_features: int, frames: int | None = None) -> TensorSpec:
    """(batch, in_features, frames) audio features; frames=None makes the time axis dynamic."""
    return TensorSpec("features", ("batch", in_features, "time" if frames is None else frames), "float32")


def lengths_spec() -> TensorSpec:
    return TensorSpec("lengths", ("batch",), "int64")
