"""Speech models: keyword spotting (kws.py) and CTC transcription (ctc.py); importing registers them."""

from grove.models.speech import ctc, kws  # noqa: F401
