"""Reading audio files: decode WAV/FLAC/OGG to float32 mono, resample, fit clips to a length.

Decoding uses soundfile (libsndfile), imported on first use so `import grove` works where only
image or text data are wanted. Resampling is band-limited (Kaiser-windowed sinc) and runs on the
tensor's device.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from grove.errors import GroveError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
# A file whose peak stays below this (about -80 dBFS) carries no usable speech.
SILENT_PEAK = 1e-4


def _soundfile():
    # Imported on use: `import grove` must work where only image or text data are wanted.
    try:
        import soundfile
    except ImportError:
        raise GroveError("reading audio needs the soundfile package: pip install soundfile") from None
    except OSError as e:  # the wheel's libsndfile (or the system's) failed to load
        raise GroveError(f"soundfile cannot load libsndfile ({e}): run scripts/install-system-deps.sh") from None
    return soundfile


def read_audio(path, sample_rate: int) -> torch.Tensor:
    """float32 mono (L,) at `sample_rate` from a WAV/FLAC/OGG file (channels averaged, resampled).

    Raises a one-line GroveError for a file that is unreadable, empty or silent.
    """
    sf = _soundfile()
    if not os.path.isfile(path):
        raise GroveError(f"cannot read audio {path}: no such file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    # libsndfile reports bad files as LibsndfileError (a RuntimeError), others as OSError or
    # ValueError: all of them mean this file is unusable, not that grove has a bug.
    except Exception as e:
        raise GroveError(f"cannot read audio {path}: {_reason(e)}") from None
    if data.shape[0] == 0:
        raise GroveError(f"cannot read audio {path}: it has no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    peak = float(np.abs(mono).max())
    if not math.isfinite(peak):
        raise GroveError(f"cannot read audio {path}: it contains NaN or infinite samples")
    if peak < SILENT_PEAK:
        raise GroveError(f"cannot read audio {path}: it is silent (peak {peak:.1e})")
    wave = torch.from_numpy(np.ascontiguousarray(mono))
    return resample(wave, rate, sample_rate) if rate != sample_rate else wave


def _reason(e: Exception) -> str:
    # libsndfile's own words ("Format not recognised.") without soundfile's "Error opening <path>".
    text = getattr(e, "error_string", None) or (e.strerror if isinstance(e, OSError) and e.strerror else str(e))
    return " ".join(text.split()).rstrip(".") or type(e).__name__


def resample(
    wave: torch.Tensor,
    orig_rate: int,
    new_rate: int,
    zero_crossings: int = 16,
    rolloff: float = 0.94,
    beta: float = 8.6,
) -> torch.Tensor:
    """Band-limited resampling of (..., L) to (..., ceil(L * new / orig)) on the tensor's device.

    Each output sample is a Kaiser-windowed sinc interpolation of its input neighbours
    (`zero_crossings` lobes each side), low-passed at `rolloff` of the lower Nyquist frequency.
    With the rates reduced by their gcd, output phase j (of `new`) applies one fixed kernel to
    the input every `orig` samples: a strided conv1d with one output channel per phase. Odd
    ratios, whose kernels would not fit in memory, gather each output's taps instead.
    """
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    if orig == new:
        return wave
    shape, length = wave.shape[:-1], wave.shape[-1]
    x = wave.reshape(-1, length).float()
    out_len = -(-length * new // orig)
    cutoff = rolloff * min(orig, new) / orig  # 1 = the input's Nyquist frequency
    half = math.ceil(zero_crossings / cutoff)  # kernel half-width in input samples
    if new * (orig + 2 * half) <= 1 << 22:
        out = _resample_conv(x, orig, new, out_len, cutoff, half, beta)
    else:
        out = _resample_gather(x, orig, new, out_len, cutoff, half, beta)
    return out.reshape(*shape, out_len)


def _sinc_taps(dist: torch.Tensor, cutoff: float, half: int, beta: float) -> torch.Tensor:
    """Low-pass interpolation weights at distances `dist` (input samples) from the output time."""
    window = torch.special.i0(beta * torch.sqrt((1 - (dist / (half + 1)) ** 2).clamp(min=0)))
    return cutoff * torch.sinc(cutoff * dist) * window / torch.special.i0(torch.tensor(beta, dtype=dist.dtype))


def _resample_conv(x, orig, new, out_len, cutoff, half, beta):
    kernels = _phase_kernels(orig, new, cutoff, half, beta).to(x)
    blocks = -(-out_len // new)
    padded = F.pad(x[:, None, :], (half, blocks * orig + half - x.shape[-1]))  # (B, 1, L + pads)
    out = F.conv1d(padded, kernels, stride=orig)  # (B, new, blocks)
    return out.transpose(1, 2).reshape(x.shape[0], -1)[:, :out_len]


@functools.lru_cache(maxsize=4)
def _phase_kernels(orig, new, cutoff, half, beta) -> torch.Tensor:
    """(new, 1, orig + 2h): phase j's taps sit at offset start_j of a window read every orig samples."""
    taps = torch.arange(-half, half + 1, dtype=torch.float64)  # (2h+1,)
    phase = torch.arange(new, dtype=torch.float64) * orig / new  # output j sits at input time j*orig/new
    start = phase.floor()
    weights = _sinc_taps((phase - start)[:, None] - taps, cutoff, half, beta)  # (new, 2h+1)
    kernels = torch.zeros(new, orig + 2 * half, dtype=torch.float64)
    kernels.scatter_(1, start.long()[:, None] + torch.arange(2 * half + 1), weights)
    return kernels.float()[:, None, :]


def _resample_gather(x, orig, new, out_len, cutoff, half, beta):
    taps = torch.arange(-half, half + 1, device=x.device)  # (K,)
    padded = F.pad(x, (half, half + 1))
    out = torch.empty(x.shape[0], out_len, dtype=x.dtype, device=x.device)
    step = max(1, (1 << 22) // (x.shape[0] * len(taps)))  # outputs per gather: ~16 MB of windows
    for n0 in range(0, out_len, step):
        pos = torch.arange(n0, min(n0 + step, out_len), device=x.device) * orig  # input time * new
        base = pos // new
        dist = ((pos % new).double() / new)[:, None] - taps  # (n, K)
        windows = padded[:, base[:, None] + taps + half]  # (B, n, K)
        out[:, n0 : n0 + len(pos)] = (windows * _sinc_taps(dist, cutoff, half, beta).to(x)).sum(-1)
    return out


def fix_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """(L,) -> (length,): zeros appended to a short clip; a long one keeps its loudest window."""
    have = wave.shape[-1]
    if have < length:
        return F.pad(wave, (0, length - have))
    if have == length:
        return wave
    energy = torch.cumsum(F.pad(wave.double() ** 2, (1, 0)), 0)
    start = int(torch.argmax(energy[length:] - energy[:-length]))
    return wave[start : start + length]


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
    sf = _soundfile()
    try:
        info = sf.info(path)
    except Exception:  # as in read_audio: any failure means the file is unreadable; its item says so
        return 0
    return round(info.frames * sample_rate / info.samplerate)

