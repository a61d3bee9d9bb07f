"""Decoding one input the way training decoded it, in NumPy: images, audio files. Torch-free.

grove.data.image and grove.data.audio read their files through these functions (wrapping the
arrays as tensors), so a training image, an eager prediction and an exported one are decoded
by the same code:

    read_image(x, size, channels)  path / bytes / PIL image / HxW(xC) uint8 array -> uint8 (C, size, size)
    read_audio(x, sample_rate)     WAV/FLAC/OGG path or bytes -> float32 mono (L,), resampled
    resample(wave, orig, new)      band-limited (Kaiser-windowed sinc), (..., L)
    fix_length(wave, length)       zeros appended, or the loudest window kept
"""

from __future__ import annotations

import functools
import io
import math
import os
from pathlib import Path

import numpy as np

from grove.errors import GroveError

# A file whose peak stays below this (about -80 dBFS) carries no usable speech.
SILENT_PEAK = 1e-4
# Larger images are refused before they are decoded (a small compressed file can hold a huge one).
MAX_PIXELS = 64_000_000
# Audio given as bytes (an upload) is refused past this length before it is decoded.
MAX_UPLOAD_SECONDS = 600
# Outputs computed per block of the resampler: bounds its temporary memory to ~16 MB.
_RESAMPLE_BLOCK = 1 << 22


# ---------------------------------------------------------------------------------------------
# Images


def read_image(image, size: int, channels: int) -> np.ndarray:
    """A path, encoded bytes (an upload), PIL image or HxW(xC) array -> uint8 (channels, size, size),
    as training decoded it."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        return load_image(image, size, channels)
    if isinstance(image, (bytes, bytearray)):
        return load_image(io.BytesIO(image), size, channels, name="the uploaded image")
    if isinstance(image, np.ndarray):
        array = image.astype(np.uint8)
        image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    if not isinstance(image, Image.Image):
        raise GroveError(f"cannot predict on a {type(image).__name__}: pass image paths, PIL images, arrays or CxHxW tensors")
    return image_to_array(image, size, channels)


def load_image(path, size: int, channels: int, name: str | None = None) -> np.ndarray:
    """uint8 (channels, size, size) from an image file (or a binary file object, called `name` in
    messages); one-line GroveError if it cannot be read."""
    from PIL import Image

    name = name or f"image {path}"
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise GroveError(f"cannot read {name}: it is {im.width}x{im.height} pixels, more than the "
                                 f"{MAX_PIXELS // 1_000_000} megapixels grove decodes; resize it first")
            # JPEG can decode at 1/2, 1/4 or 1/8 scale for free while staying >= size on each side.
            im.draft("L" if channels == 1 else "RGB", (size, size))
            return image_to_array(im, size, channels)
    except GroveError:
        raise
    # Pillow reports bad files with many types (OSError, SyntaxError, struct.error, EOFError ...);
    # any of them means this file is unusable, not that grove has a bug.
    except Exception as e:
        raise GroveError(f"cannot read {name}: {_image_reason(e)}") from None


def image_to_array(im, size: int, channels: int) -> np.ndarray:
    """Shorter side resized to `size` (bilinear), then center-cropped: uint8 (channels, size, size)."""
    from PIL import Image

    im = im.convert("L" if channels == 1 else "RGB")
    width, height = im.size
    scale = size / min(width, height)
    width, height = max(size, round(width * scale)), max(size, round(height * scale))
    im = im.resize((width, height), Image.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    pixels = np.array(im.crop((left, top, left + size, top + size)))  # (size, size) or (size, size, 3)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _image_reason(e: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):  # its own message repeats the path
        return "not an image Pillow can decode (empty, corrupt or an unknown format)"
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(text.split()) or type(e).__name__


# ---------------------------------------------------------------------------------------------
# Audio


def load_soundfile():
    # Imported on use: grove works where only image or text data are wanted.
    try:
        import soundfile
    except ImportError:
        raise GroveError("reading audio needs the soundfile package: pip install soundfile") from None
    except OSError as e:  # the wheel's libsndfile (or the system's) failed to load
        raise GroveError(f"soundfile cannot load libsndfile ({e}): run scripts/install-system-deps.sh") from None
    return soundfile


def read_audio(path, sample_rate: int) -> np.ndarray:
    """float32 mono (L,) at `sample_rate` from a WAV/FLAC/OGG file, or its bytes (an upload, at
    most MAX_UPLOAD_SECONDS long); channels averaged, resampled.

    Raises a one-line GroveError for a file that is unreadable, empty or silent.
    """
    sf = load_soundfile()
    if isinstance(path, (bytes, bytearray)):
        source, name = io.BytesIO(path), "the uploaded audio"
    elif not os.path.isfile(path):
        raise GroveError(f"cannot read audio {path}: no such file")
    else:
        source, name = str(path), f"audio {path}"
    try:
        with sf.SoundFile(source) as f:
            if isinstance(source, io.BytesIO) and f.frames > MAX_UPLOAD_SECONDS * f.samplerate:
                raise GroveError(f"cannot read {name}: it lasts {f.frames / f.samplerate:.0f} s, more than the "
                                 f"{MAX_UPLOAD_SECONDS} s an upload may; cut it first")
            data, rate = f.read(dtype="float32", always_2d=True), f.samplerate
    except GroveError:
        raise
    # libsndfile reports bad files as LibsndfileError (a RuntimeError), others as OSError or
    # ValueError: all of them mean this file is unusable, not that grove has a bug.
    except Exception as e:
        raise GroveError(f"cannot read {name}: {_audio_reason(e)}") from None
    if data.shape[0] == 0:
        raise GroveError(f"cannot read {name}: it has no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    peak = float(np.abs(mono).max())
    if not math.isfinite(peak):
        raise GroveError(f"cannot read {name}: it contains NaN or infinite samples")
    if peak < SILENT_PEAK:
        raise GroveError(f"cannot read {name}: it is silent (peak {peak:.1e})")
    wave = np.ascontiguousarray(mono)
    return resample(wave, rate, sample_rate) if rate != sample_rate else wave


def _audio_reason(e: Exception) -> str:
    # libsndfile's own words ("Format not recognised.") without soundfile's "Error opening <path>".
    text = getattr(e, "error_string", None) or (e.strerror if isinstance(e, OSError) and e.strerror else str(e))
    return " ".join(text.split()).rstrip(".") or type(e).__name__


def resample(
    wave: np.ndarray,
    orig_rate: int,
    new_rate: int,
    zero_crossings: int = 16,
    rolloff: float = 0.94,
    beta: float = 8.6,
) -> np.ndarray:
    """Band-limited resampling of (..., L) to float32 (..., ceil(L * new / orig)).

    Each output sample is a Kaiser-windowed sinc interpolation of its input neighbours
    (`zero_crossings` lobes each side), low-passed at `rolloff` of the lower Nyquist frequency.
    With the rates reduced by their gcd, output phase j (of `new`) applies one fixed kernel to
    the input every `orig` samples: a strided convolution with one output channel per phase,
    done as a matrix product of input windows and kernels. Odd ratios, whose kernels would not
    fit in memory, gather each output's taps instead.
    """
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    if orig == new:
        return wave
    shape, length = wave.shape[:-1], wave.shape[-1]
    x = np.asarray(wave, dtype=np.float32).reshape(-1, length)
    out_len = -(-length * new // orig)
    cutoff = rolloff * min(orig, new) / orig  # 1 = the input's Nyquist frequency
    half = math.ceil(zero_crossings / cutoff)  # kernel half-width in input samples
    if new * (orig + 2 * half) <= _RESAMPLE_BLOCK:
        out = _resample_conv(x, orig, new, out_len, cutoff, half, beta)
    else:
        out = _resample_gather(x, orig, new, out_len, cutoff, half, beta)
    return out.reshape(*shape, out_len)


def _sinc_taps(dist: np.ndarray, cutoff: float, half: int, beta: float) -> np.ndarray:
    """Low-pass interpolation weights (float64) at distances `dist` (input samples) from the output time."""
    window = np.i0(beta * np.sqrt(np.clip(1 - (dist / (half + 1)) ** 2, 0, None)))
    return cutoff * np.sinc(cutoff * dist) * window / np.i0(beta)


def _resample_conv(x, orig, new, out_len, cutoff, half, beta):
    kernels = _phase_kernels(orig, new, cutoff, half, beta)  # (new, W)
    width = kernels.shape[1]
    blocks = -(-out_len // new)
    padded = np.pad(x, ((0, 0), (half, blocks * orig + half - x.shape[-1])))  # (B, blocks * orig + 2h)
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)[:, ::orig]  # (B, blocks, W), a view
    out = np.empty((x.shape[0], blocks, new), dtype=np.float32)
    step = max(1, _RESAMPLE_BLOCK // (x.shape[0] * width))
    for k0 in range(0, blocks, step):
        # Overlapping windows are copied block by block so the product runs in BLAS.
        out[:, k0 : k0 + step] = np.ascontiguousarray(windows[:, k0 : k0 + step]) @ kernels.T
    return out.reshape(x.shape[0], -1)[:, :out_len]


@functools.lru_cache(maxsize=4)
def _phase_kernels(orig, new, cutoff, half, beta) -> np.ndarray:
    """(new, orig + 2h): phase j's taps sit at offset start_j of a window read every orig samples."""
    taps = np.arange(-half, half + 1, dtype=np.float64)  # (2h+1,)
    phase = np.arange(new, dtype=np.float64) * orig / new  # output j sits at input time j*orig/new
    start = np.floor(phase)
    weights = _sinc_taps((phase - start)[:, None] - taps, cutoff, half, beta)  # (new, 2h+1)
    kernels = np.zeros((new, orig + 2 * half), dtype=np.float64)
    kernels[np.arange(new)[:, None], start.astype(np.int64)[:, None] + np.arange(2 * half + 1)] = weights
    kernels = kernels.astype(np.float32)
    kernels.setflags(write=False)  # shared by every call through the cache
    return kernels


def _resample_gather(x, orig, new, out_len, cutoff, half, beta):
    taps = np.arange(-half, half + 1)  # (K,)
    padded = np.pad(x, ((0, 0), (half, half + 1)))
    out = np.empty((x.shape[0], out_len), dtype=np.float32)
    step = max(1, _RESAMPLE_BLOCK // (x.shape[0] * len(taps)))  # outputs per gather: ~16 MB of windows
    for n0 in range(0, out_len, step):
        pos = np.arange(n0, min(n0 + step, out_len), dtype=np.int64) * orig  # input time * new
        base = pos // new
        dist = ((pos % new) / new)[:, None] - taps  # (n, K)
        windows = padded[:, base[:, None] + taps + half]  # (B, n, K)
        out[:, n0 : n0 + len(pos)] = (windows * _sinc_taps(dist, cutoff, half, beta).astype(np.float32)).sum(-1)
    return out


def fix_length(wave: np.ndarray, length: int) -> np.ndarray:
    """(L,) -> (length,): zeros appended to a short clip; a long one keeps its loudest window."""
    have = wave.shape[-1]
    if have < length:
        return np.pad(wave, (0, length - have))
    if have == length:
        return wave
    # Window energies as differences of a float64 running sum: exact enough over hours of audio.
    energy = np.cumsum(np.pad(wave.astype(np.float64) ** 2, (1, 0)))
    start = int(np.argmax(energy[length:] - energy[:-length]))
    return wave[start : start + length]
