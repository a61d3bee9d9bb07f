"""Data sets, registered by name. Nothing here imports models or the engine."""

from grove.data import image  # noqa: F401  (registers the image data sets)
from grove.data import audio, spoken_words  # noqa: F401
from grove.data import text  # noqa: F401
from grove.data.base import DataBundle, TensorData

__all__ = ["DataBundle", "TensorData"]
