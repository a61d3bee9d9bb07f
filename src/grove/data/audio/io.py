"""Reading audio files: decode WAV/FLAC/OGG to float32 mono, resample, fit clips to a length.

The decoding, resampling and fitting are grove.runtime.inputs' NumPy functions, shared with the
torch-free runtime so an exported model hears a file exactly as training did; these wrap their
arrays as tensors. Decoding uses soundfile (libsndfile), imported on first use so `import grove`
works where only image or text data are wanted.
"""

from __future__ import annotations

import torch

from grove.runtime import inputs

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def read_audio(path, sample_rate: int) -> torch.Tensor:
    """float32 mono (L,) at `sample_rate` from a WAV/FLAC/OGG file (channels averaged, resampled).

    Raises a one-line GroveError for a file that is unreadable, empty or silent.
    """
    return torch.from_numpy(inputs.read_audio(path, sample_rate))


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int, **options) -> torch.Tensor:
    """Band-limited resampling of (..., L) to float32 (..., ceil(L * new / orig)); the options and
    the maths are grove.runtime.inputs.resample's (Kaiser-windowed sinc)."""
    out = inputs.resample(wave.detach().cpu().numpy(), orig_rate, new_rate, **options)
    return torch.from_numpy(out).to(wave.device)


def fix_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """(L,) -> (length,): zeros appended to a short clip; a long one keeps its loudest window."""
    return torch.from_numpy(inputs.fix_length(wave.numpy(), length))


def load_audio_batch(path, meta: dict):
    """One file as the batch a model's transform expects (for `grove predict`): a keyword clip is
    fitted to the data's clip length -> (1, L); a transcription input is {"audio": (1, L),
    "lengths": (1,)}. `meta` is the DataBundle's meta saved in the run directory."""
    wave = read_audio(path, meta["sample_rate"])
    if meta.get("kind") == "transcription":
        return {"audio": wave[None], "lengths": torch.tensor([len(wave)])}
    return fix_length(wave, round(meta["clip_seconds"] * meta["sample_rate"]))[None]


def header_length(path: str, sample_rate: int) -> int:
    """A file's length in samples at `sample_rate`, from its header alone; 0 when unreadable."""
    sf = inputs.load_soundfile()
    try:
        info = sf.info(path)
    except Exception:  # as in read_audio: any failure means the file is unreadable; its item says so
        return 0
    return round(info.frames * sample_rate / info.samplerate)

