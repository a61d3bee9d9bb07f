"""Audio data sets: splits hold waveforms; features are computed on the training device.

Splits give 1-D waveforms (float32 from files, int16 for the large in-memory sets); `AudioTransform`
turns a batch of them into per-utterance normalised log-mel or MFCC features (B, F, T) on the
device and augments them when training, so workers move samples only and the same code runs on
CPU and GPU.

The mel scale is HTK's, mel = 2595 log10(1 + f / 700), with triangles of peak 1 (no area
normalisation): the filterbank of torchaudio's `melscale_fbanks(..., norm=None, mel_scale="htk")`
and librosa's `filters.mel(htk=True, norm=None)`.

Transcription data use a character alphabet: index 0 is the CTC blank, 1 the space, then the
sorted characters of the training transcripts (lower-cased).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grove.data.base import DataBundle
from grove.data.download import data_dir, fetch
from grove.errors import GroveError
from grove.registry import register_dataset

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
BACKGROUND_NOISE = "_background_noise_"
SILENCE, UNKNOWN = "_silence_", "_unknown_"
COMMAND_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
BLANK = "<blank>"
# A file whose peak stays below this (about -80 dBFS) carries no usable speech.
SILENT_PEAK = 1e-4
LOG_FLOOR = 1e-6

SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.0{version}.tar.gz"
# No checksum is enforced for Speech Commands: none is published next to the archive. Third-party
# loaders check v0.02 against md5 6b74f3901214cb2c2934e98196829835 (torchaudio) and sha256
# af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58 (mlx-data); unverified here.
SPEECH_COMMANDS_WORDS = {1: 30, 2: 35}

LIBRISPEECH_URL = "https://www.openslr.org/resources/12/{subset}.tar.gz"
# sha256 of the OpenSLR archives, as torchaudio's LIBRISPEECH checks them.
LIBRISPEECH_SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}


# ---------------------------------------------------------------------------------------------
# Reading and resampling


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


# ---------------------------------------------------------------------------------------------
# Features


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """(n_mels, n_freqs) triangular HTK-mel filters over the n_freqs STFT bins 0..sample_rate/2.

    Filter m rises from mel point m to m+1 and falls to m+2, the n_mels+2 points evenly spaced
    in mel between f_min and f_max (default sample_rate/2); peaks are 1.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise GroveError(f"mel filters need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}")
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)  # (n_freqs,)
    points = torch.from_numpy(mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)))
    lower, center, upper = points[:-2, None], points[1:-1, None], points[2:, None]  # (n_mels, 1) each
    rising = (freqs - lower) / (center - lower)
    falling = (upper - freqs) / (upper - center)
    return torch.minimum(rising, falling).clamp(min=0).float()  # (n_mels, n_freqs)


def dct_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) orthonormal DCT-II: rows k of scipy.fft.dct(x, type=2, norm="ortho")."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


class LogMel(nn.Module):
    """(B, L) waveforms -> (B, n_mels, 1 + L // hop) log(mel power + 1e-6).

    Power spectrum of a centred (reflect-padded) STFT with a periodic Hann window of n_fft
    samples; 400/160 at 16 kHz are the usual 25 ms windows every 10 ms. Computed in float32
    even under autocast: the log of small powers needs the range.
    """

    def __init__(self, sample_rate=16000, n_fft=400, hop=160, n_mels=40, f_min=0.0, f_max=None):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer(
            "filters", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max), persistent=False
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wave.device.type, enabled=False):
            wave = wave.float()
            if wave.shape[-1] <= self.n_fft // 2:  # reflect padding needs more samples than it adds
                wave = F.pad(wave, (0, self.n_fft // 2 + 1 - wave.shape[-1]))
            spec = torch.stft(
                wave, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect", return_complex=True
            )  # (B, n_fft/2+1, T)
            power = spec.real.square() + spec.imag.square()
            return torch.log(torch.matmul(self.filters, power) + LOG_FLOOR)  # (B, n_mels, T)


class MFCC(nn.Module):
    """(B, L) waveforms -> (B, n_mfcc, T): the orthonormal DCT-II of `LogMel` over the mel axis."""

    def __init__(self, n_mfcc=13, sample_rate=16000, n_fft=400, hop=160, n_mels=40, f_min=0.0, f_max=None):
        super().__init__()
        if n_mfcc > n_mels:
            raise GroveError(f"n_mfcc ({n_mfcc}) cannot exceed n_mels ({n_mels})")
        self.logmel = LogMel(sample_rate, n_fft, hop, n_mels, f_min, f_max)
        self.register_buffer("dct", dct_matrix(n_mfcc, n_mels), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        logmel = self.logmel(wave)
        with torch.autocast(logmel.device.type, enabled=False):
            return torch.matmul(self.dct, logmel)  # (B, n_mfcc, T)


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, frames) True where frame t < lengths[b]."""
    return torch.arange(frames, device=lengths.device) < lengths[:, None]


def normalize_features(x: torch.Tensor, lengths: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Each utterance's features to mean 0, std 1 over time, per feature; (B, F, T) -> (B, F, T).

    With `lengths` (valid frames per utterance) the statistics ignore padding, and padded frames
    come out as 0.
    """
    if lengths is None:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + eps)
    mask = frame_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)  # (B, 1, T)
    count = lengths.clamp(min=1).to(x.dtype)[:, None, None]
    mean = (x * mask).sum(-1, keepdim=True) / count
    var = ((x - mean).square() * mask).sum(-1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + eps) * mask


# ---------------------------------------------------------------------------------------------
# Augmentation: global torch RNG of the batch's device (the engine checkpoints it)


def band_mask(starts: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) True inside any band [start, start + width) of (B, n) starts and widths."""
    pos = torch.arange(size, device=starts.device)[None, None, :]  # (1, 1, size)
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])  # (B, n, size)
    return inside.any(1)


def _random_bands(batch: int, count: int, max_width: int, limit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` bands per row, widths uniform in 0..max_width, placed uniformly inside 0..limit."""
    limit = limit.to(torch.float32)[:, None]  # (B, 1)
    widths = (torch.rand(batch, count, device=limit.device) * (torch.clamp(limit, max=max_width) + 1)).floor()
    starts = (torch.rand(batch, count, device=limit.device) * (limit - widths + 1)).floor()
    return starts.long(), widths.long()


def spec_augment(
    x: torch.Tensor,
    time_masks: int = 2,
    time_width: int = 10,
    freq_masks: int = 2,
    freq_width: int = 5,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """SpecAugment (Park et al., 2019) masks on (B, F, T) features: zeros (the mean, after
    normalisation) over `freq_masks` bands of up to `freq_width` bins and `time_masks` spans of up
    to `time_width` frames, each drawn per utterance; time spans stay inside `lengths`."""
    batch, n_freq, n_time = x.shape
    if freq_masks and freq_width:
        full = torch.full((batch,), n_freq, device=x.device)
        mask = band_mask(*_random_bands(batch, freq_masks, freq_width, full), n_freq)  # (B, F)
        x = x.masked_fill(mask[:, :, None], 0.0)
    if time_masks and time_width:
        limit = lengths if lengths is not None else torch.full((batch,), n_time, device=x.device)
        mask = band_mask(*_random_bands(batch, time_masks, time_width, limit), n_time)  # (B, T)
        x = x.masked_fill(mask[:, None, :], 0.0)
    return x


def sample_mask(lengths: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if lengths is None:
        return torch.ones_like(like)
    return frame_mask(lengths, like.shape[-1]).to(like.dtype)


def add_noise(x: torch.Tensor, snr_db: tuple[float, float], lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian noise at an SNR drawn uniformly in `snr_db` per utterance; (B, L) -> (B, L)."""
    mask = sample_mask(lengths, x)
    count = mask.sum(-1).clamp(min=1)
    power = (x.square() * mask).sum(-1) / count  # (B,)
    low, high = snr_db
    snr = low + (high - low) * torch.rand(x.shape[0], device=x.device)
    scale = torch.sqrt(power / 10 ** (snr / 10))[:, None]
    return x + torch.randn_like(x) * scale * mask


def random_gain(x: torch.Tensor, gain_db: float) -> torch.Tensor:
    """Each utterance scaled by a gain drawn uniformly in +-gain_db decibels."""
    db = (torch.rand(x.shape[0], 1, device=x.device) * 2 - 1) * gain_db
    return x * 10 ** (db / 20)


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each clip moved by up to +-max_shift samples (drawn per clip), zeros filling the gap."""
    batch, length = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (batch, 1), device=x.device)
    source = torch.arange(length, device=x.device)[None, :] - shift  # (B, L)
    inside = (source >= 0) & (source < length)
    return x.gather(1, source.clamp(0, length - 1)) * inside


# ---------------------------------------------------------------------------------------------
# The transform every audio data set returns


@dataclass
class AudioTransform:
    """Waveform batch -> normalised features, augmented when training, on the batch's device.

    Input: (B, L) float or int16 (int16 is divided by 32768) for fixed-length clips, or
    {"audio": (B, L), "lengths": (B,) samples} for padded variable-length utterances.
    Output: (B, F, T) features, or {"features": (B, F, T), "lengths": (B,) frames}; F is
    `out_features` (n_mels, or n_mfcc), T = 1 + L // hop.
    Training augmentation, in order: time shift (fixed-length clips only), gain, additive noise
    (on the waveform), then SpecAugment masks (on the normalised features).
    """

    sample_rate: int = 16000
    n_mels: int = 40
    n_fft: int = 400  # 25 ms at 16 kHz
    hop: int = 160  # 10 ms at 16 kHz
    features: str = "logmel"  # "logmel" or "mfcc"
    n_mfcc: int = 13
    spec_time_masks: int = 0
    spec_time_width: int = 0  # frames
    spec_freq_masks: int = 0
    spec_freq_width: int = 0  # feature bins
    noise_snr_db: tuple[float, float] | None = None
    gain_db: float = 0.0
    shift_ms: float = 0.0
    _extractors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.features not in ("logmel", "mfcc"):
            raise GroveError(f"features must be 'logmel' or 'mfcc', got {self.features!r}")
        if self.features == "mfcc" and not 0 < self.n_mfcc <= self.n_mels:
            raise GroveError(f"n_mfcc must be between 1 and n_mels ({self.n_mels}), got {self.n_mfcc}")
        if self.hop <= 0 or self.n_fft <= 0 or self.n_mels <= 0:
            raise GroveError("n_fft, hop and n_mels must be positive")
        if self.noise_snr_db is not None:
            snr = self.noise_snr_db
            if isinstance(snr, (int, float)):
                snr = (snr, snr)
            if len(snr) != 2 or snr[0] > snr[1]:
                raise GroveError(f"noise_snr_db must be [low, high] in dB, got {self.noise_snr_db}")
            self.noise_snr_db = (float(snr[0]), float(snr[1]))
        if min(self.spec_time_masks, self.spec_time_width, self.spec_freq_masks, self.spec_freq_width) < 0:
            raise GroveError("SpecAugment counts and widths cannot be negative")
        if self.gain_db < 0 or self.shift_ms < 0:
            raise GroveError("gain_db and shift_ms cannot be negative")

    @property
    def out_features(self) -> int:
        return self.n_mfcc if self.features == "mfcc" else self.n_mels

    def frames(self, samples):
        """Feature frames of `samples` samples (an int or a tensor of lengths)."""
        return samples // self.hop + 1

    def __call__(self, x, train: bool):
        lengths = None
        if isinstance(x, dict):
            x, lengths = x["audio"], x["lengths"]
        wave = x.float() / 32768 if x.dtype == torch.int16 else x.float()
        if train:
            if lengths is None and self.shift_ms:
                wave = random_shift(wave, round(self.shift_ms * self.sample_rate / 1000))
            if self.gain_db:
                wave = random_gain(wave, self.gain_db)
            if self.noise_snr_db is not None:
                wave = add_noise(wave, self.noise_snr_db, lengths)
        frames = None if lengths is None else self.frames(lengths)
        feats = normalize_features(self._extractor(wave.device)(wave), frames)
        if train:
            feats = spec_augment(
                feats, self.spec_time_masks, self.spec_time_width, self.spec_freq_masks, self.spec_freq_width, frames
            )
        return feats if lengths is None else {"features": feats, "lengths": frames}

    def _extractor(self, device) -> nn.Module:
        if device not in self._extractors:
            if self.features == "mfcc":
                module = MFCC(self.n_mfcc, self.sample_rate, self.n_fft, self.hop, self.n_mels)
            else:
                module = LogMel(self.sample_rate, self.n_fft, self.hop, self.n_mels)
            self._extractors[device] = module.to(device)
        return self._extractors[device]

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        d["noise_snr_db"] = list(self.noise_snr_db) if self.noise_snr_db is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AudioTransform:
        return cls(**d)


def make_transform(sample_rate: int, features: str, n_mels: int, n_mfcc: int, **augment) -> AudioTransform:
    """The transform with 25 ms windows every 10 ms at `sample_rate`."""
    return AudioTransform(
        sample_rate=sample_rate,
        n_mels=n_mels,
        n_fft=round(0.025 * sample_rate),
        hop=round(0.010 * sample_rate),
        features=features,
        n_mfcc=n_mfcc,
        **augment,
    )


# ---------------------------------------------------------------------------------------------
# Transcripts


def normalize_transcript(text: str) -> str:
    """Lower case, runs of white space as one space."""
    return " ".join(str(text).lower().split())


def build_alphabet(transcripts) -> list[str]:
    """[BLANK, " ", sorted characters of the transcripts]; index 0 is reserved for CTC's blank."""
    chars = set()
    for text in transcripts:
        chars.update(normalize_transcript(text))
    chars.discard(" ")
    return [BLANK, " ", *sorted(chars)]


def encode_transcript(text: str, alphabet: list[str]) -> torch.Tensor:
    """Character ids (LongTensor); characters outside the alphabet are dropped."""
    index = {c: i for i, c in enumerate(alphabet) if i > 0}
    return torch.tensor([index[c] for c in normalize_transcript(text) if c in index], dtype=torch.long)


def decode_tokens(ids, alphabet: list[str]) -> str:
    """The text of character ids, blanks (0) skipped; no CTC repeat-collapsing."""
    return "".join(alphabet[int(i)] for i in ids if int(i) > 0)


def collate_transcription(items):
    """[(waveform (L,), tokens (S,)), ...] -> ({"audio": (B, Lmax), "lengths": (B,)},
    {"tokens": (B, Smax) padded with 0 (blank), "lengths": (B,)})."""
    waves = [torch.as_tensor(w) for w, _ in items]
    tokens = [torch.as_tensor(t, dtype=torch.long) for _, t in items]
    audio = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    padded = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=0)
    return (
        {"audio": audio, "lengths": torch.tensor([len(w) for w in waves])},
        {"tokens": padded, "lengths": torch.tensor([len(t) for t in tokens])},
    )


# ---------------------------------------------------------------------------------------------
# Split types


class KeywordClips:
    """Fixed-length clips from files: item i is (float32 (clip_samples,), label), or None when the
    file cannot be read or is silent. An entry with an offset is a `_silence_` clip: that slice of
    a background-noise file, times a volume."""

    def __init__(self, entries: list[tuple], sample_rate: int, clip_samples: int):
        # entries: (path, label) or (path, label, offset, volume)
        self.entries = entries
        self.targets = [e[1] for e in entries]
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self._backgrounds: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        path, label, *slice_ = self.entries[i]
        try:
            if slice_:
                offset, volume = slice_
                noise = self._background(path)[offset : offset + self.clip_samples]
                return fix_length(noise * volume, self.clip_samples), label
            return fix_length(read_audio(path, self.sample_rate), self.clip_samples), label
        except GroveError:
            return None

    def _background(self, path: str) -> torch.Tensor:
        if path not in self._backgrounds:  # a minute of noise, read once per worker
            self._backgrounds[path] = read_audio(path, self.sample_rate)
        return self._backgrounds[path]

    def path(self, i: int) -> str:
        return self.entries[i][0]


class TranscriptionFiles:
    """Utterances from files: item i is (float32 (L,), character ids (S,)), or None when the file
    cannot be read. `lengths` holds each file's length in samples (from its header, 0 when
    unreadable) for length bucketing; `collate` pads a batch."""

    collate = staticmethod(collate_transcription)

    def __init__(self, files: list[str], transcripts: list[str], alphabet: list[str], sample_rate: int):
        self.files = files
        self.transcripts = [normalize_transcript(t) for t in transcripts]
        self.tokens = [encode_transcript(t, alphabet) for t in self.transcripts]
        self.sample_rate = sample_rate
        self.lengths = torch.tensor([_header_length(f, sample_rate) for f in files], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return read_audio(self.files[i], self.sample_rate), self.tokens[i]
        except GroveError:
            return None

    def path(self, i: int) -> str:
        return self.files[i]


class TranscriptionArrays:
    """Utterances held in memory as one int16 sample array: item i is (float32 (L,), character ids
    (S,)); `lengths`, `collate` and `path(i)` as for TranscriptionFiles. `names[i]` says where an
    utterance came from."""

    collate = staticmethod(collate_transcription)

    def __init__(
        self, samples: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor, tokens: list, names: list[str]
    ):
        self.samples = samples  # (N_total,) int16
        self.offsets = offsets
        self.lengths = lengths
        self.tokens = tokens
        self.names = names

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int):
        start = int(self.offsets[i])
        return self.samples[start : start + int(self.lengths[i])].float() / 32768, self.tokens[i]

    def path(self, i: int) -> str:
        return self.names[i]


def _header_length(path: str, sample_rate: int) -> int:
    sf = _soundfile()
    try:
        info = sf.info(path)
    except Exception:  # as in read_audio: any failure means the file is unreadable; its item says so
        return 0
    return round(info.frames * sample_rate / info.samplerate)


# ---------------------------------------------------------------------------------------------
# Bundles


def keyword_bundle(train, val, test, classes, transform: AudioTransform, clip_seconds: float, **meta) -> DataBundle:
    return DataBundle(
        train=train,
        val=val,
        test=test,
        classes=list(classes),
        transform=transform,
        meta={
            "modality": "audio",
            "kind": "keywords",
            "sample_rate": transform.sample_rate,
            "clip_seconds": clip_seconds,
            "transform": transform.to_dict(),
            **meta,
        },
        model_defaults={"num_classes": len(classes), "in_features": transform.out_features},
    )


def transcription_bundle(train, val, test, alphabet, transform: AudioTransform, **meta) -> DataBundle:
    return DataBundle(
        train=train,
        val=val,
        test=test,
        classes=list(alphabet),
        transform=transform,
        meta={
            "modality": "audio",
            "kind": "transcription",
            "sample_rate": transform.sample_rate,
            "clip_seconds": None,
            "transform": transform.to_dict(),
            "alphabet": list(alphabet),
            **meta,
        },
        model_defaults={"num_classes": len(alphabet), "in_features": transform.out_features},
    )


# ---------------------------------------------------------------------------------------------
# Keyword folders and Speech Commands


def _audio_files(folder: Path) -> list[str]:
    files = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(parent, n) for n in names if n.lower().endswith(AUDIO_EXTENSIONS)]
    return sorted(files)


def _read_list(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def _hash_unit(seed: int, key: str) -> float:
    """A stable number in [0, 1) for `key`: the same file lands in the same split as files are added."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _speaker(rel: str) -> str:
    # Speech Commands names files <speaker>_nohash_<n>.wav: all of a speaker's clips, of every
    # word, share a split (as its own which_set() does); other files are split one by one.
    name = rel.rsplit("/", 1)[-1]
    return name.split("_nohash_")[0] if "_nohash_" in name else rel


def scan_keyword_folder(root: Path, val_fraction: float, test_fraction: float, seed: int):
    """({split: [(path, word), ...]}, words) for root/<word>/*.wav.

    root/validation_list.txt and root/testing_list.txt (paths relative to root) decide val and
    test when present; otherwise a seeded hash of the speaker (Speech Commands' `<speaker>_nohash_`
    prefix, else the file) holds out val_fraction and test_fraction.
    """
    if not root.is_dir():
        raise GroveError(f"{root} is not a folder: expected {root}/<word>/<clip>.wav")
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise GroveError(f"{name} must be in [0, 1), got {fraction}")
    words = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != BACKGROUND_NOISE
    )
    val_list, test_list = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    test_share = 0.0 if test_list is not None else test_fraction
    val_share = 0.0 if val_list is not None else val_fraction
    splits = {"train": [], "val": [], "test": []}
    for word in words:
        for file in _audio_files(root / word):
            rel = Path(file).relative_to(root).as_posix()
            u = _hash_unit(seed, _speaker(rel))
            if test_list is not None and rel in test_list or u < test_share:
                splits["test"].append((file, word))
            elif val_list is not None and rel in val_list or u < test_share + val_share:
                splits["val"].append((file, word))
            else:
                splits["train"].append((file, word))
    if not any(splits.values()):
        raise GroveError(f"no audio ({' '.join(AUDIO_EXTENSIONS)}) in {root}: expected {root}/<word>/<clip>.wav")
    for name in ("train", "val"):
        if not splits[name]:
            raise GroveError(
                f"the {name} split of {root} is empty: add clips, or check validation_list.txt/val_fraction"
            )
    return splits, words


def augment_options(
    spec_time_masks, spec_time_width, spec_freq_masks, spec_freq_width, noise_snr_db, gain_db, shift_ms
):
    """A builder's augmentation options, as AudioTransform's keyword arguments."""
    return {
        "spec_time_masks": spec_time_masks,
        "spec_time_width": spec_time_width,
        "spec_freq_masks": spec_freq_masks,
        "spec_freq_width": spec_freq_width,
        "noise_snr_db": noise_snr_db,
        "gain_db": gain_db,
        "shift_ms": shift_ms,
    }


@register_dataset(modality="speech")
def audio_folder(
    *,
    root=None,
    sample_rate=16000,
    clip_seconds=1.0,
    val_fraction=0.1,
    test_fraction=0.1,
    seed=0,
    features="logmel",
    n_mels=40,
    n_mfcc=13,
    spec_time_masks=2,
    spec_time_width=10,
    spec_freq_masks=2,
    spec_freq_width=5,
    noise_snr_db=None,
    gain_db=6.0,
    shift_ms=100.0,
):
    """Your own keyword clips in folders, root/<word>/*.wav (the Speech Commands layout).

    root/validation_list.txt and root/testing_list.txt (one path relative to root per line) are
    honoured when present, else val_fraction and test_fraction are held out by a seeded hash of
    the speaker. `_background_noise_` is not a class. Clips are padded or cut to clip_seconds.
    """
    if root is None:
        raise GroveError("data.root is required for audio_folder: pass data.root=/path/to/clips (with <word>/ folders)")
    root = Path(root).expanduser()
    splits, words = scan_keyword_folder(root, val_fraction, test_fraction, seed)
    index = {w: i for i, w in enumerate(words)}
    clip = round(clip_seconds * sample_rate)
    train, val, test = (
        KeywordClips([(f, index[w]) for f, w in splits[name]], sample_rate, clip) if splits[name] else None
        for name in ("train", "val", "test")
    )
    augment = augment_options(
        spec_time_masks, spec_time_width, spec_freq_masks, spec_freq_width, noise_snr_db, gain_db, shift_ms
    )
    transform = make_transform(sample_rate, features, n_mels, n_mfcc, **augment)
    return keyword_bundle(train, val, test, words, transform, clip_seconds)


@register_dataset(modality="speech")
def speech_commands(
    *,
    root=None,
    version=2,
    classes=12,
    silence_fraction=0.1,
    unknown_fraction=0.1,
    sample_rate=16000,
    seed=0,
    features="logmel",
    n_mels=40,
    n_mfcc=13,
    spec_time_masks=2,
    spec_time_width=10,
    spec_freq_masks=2,
    spec_freq_width=5,
    noise_snr_db=None,
    gain_db=6.0,
    shift_ms=100.0,
):
    """Google Speech Commands v1/v2: 1 s clips of 30/35 words (downloads the 2.3 GB archive).

    classes=12 is the standard benchmark: yes no up down left right on off stop go, `_silence_`
    (slices of the background-noise recordings) and `_unknown_` (other words); per split,
    silence and unknown clips number silence_fraction and unknown_fraction of the command clips,
    as TensorFlow's reference input pipeline makes them. classes=35 (v2) or 30 (v1) keeps every
    word. The official validation_list.txt and testing_list.txt give val and test. Looks in
    `root` (an extracted copy, or a folder holding the .tar.gz), else data_dir()/speech_commands.
    """
    if version not in SPEECH_COMMANDS_WORDS:
        raise GroveError(f"Speech Commands version must be 1 or 2, got {version}")
    folder = _speech_commands_folder(root, version)
    splits, words = scan_keyword_folder(folder, 0.1, 0.1, seed)  # the fractions serve only without the lists
    clip = sample_rate  # every Speech Commands clip is at most 1 s
    if classes == 12:
        names = [SILENCE, UNKNOWN, *COMMAND_WORDS]
        noise = _background_files(folder, sample_rate, clip) if silence_fraction else []
        split_data = [
            KeywordClips(
                _twelve_class_entries(splits[s], noise, clip, silence_fraction, unknown_fraction, seed + k),
                sample_rate,
                clip,
            )
            for k, s in enumerate(("train", "val", "test"))
        ]
    elif classes == len(words) and classes == SPEECH_COMMANDS_WORDS[version]:
        names = words
        index = {w: i for i, w in enumerate(words)}
        split_data = [
            KeywordClips([(f, index[w]) for f, w in splits[s]], sample_rate, clip) for s in ("train", "val", "test")
        ]
    else:
        raise GroveError(
            f"classes must be 12 (10 commands, _silence_, _unknown_) or {SPEECH_COMMANDS_WORDS[version]} "
            f"(every word of v{version}); got {classes} ({len(words)} word folders in {folder})"
        )
    augment = augment_options(
        spec_time_masks, spec_time_width, spec_freq_masks, spec_freq_width, noise_snr_db, gain_db, shift_ms
    )
    transform = make_transform(sample_rate, features, n_mels, n_mfcc, **augment)
    train, val, test = split_data
    return keyword_bundle(train, val, test if len(test) else None, names, transform, 1.0, version=version)


def _speech_commands_folder(root, version: int) -> Path:
    folder = Path(root).expanduser() if root else data_dir() / "speech_commands"
    if (folder / "yes").is_dir():
        return folder
    name = f"speech_commands_v0.0{version}"
    extracted = folder / name
    if not (extracted / ".grove-complete").exists():
        archive = fetch(
            SPEECH_COMMANDS_URL.format(version=version),
            folder / f"{name}.tar.gz",
            what=f"the Speech Commands v{version} archive",
        )
        extract_once(archive, extracted)
    return extracted


def _background_files(folder: Path, sample_rate: int, clip: int) -> list[tuple[str, int]]:
    """(path, length in samples at sample_rate) of each background-noise file at least a clip long."""
    noise_dir = folder / BACKGROUND_NOISE
    files = _audio_files(noise_dir) if noise_dir.is_dir() else []
    lengths = [(f, _header_length(f, sample_rate)) for f in files]
    usable = [(f, n) for f, n in lengths if n >= clip]
    if not usable:
        raise GroveError(
            f"the _silence_ class is cut from {noise_dir}/*.wav, and there is no usable file there; "
            "add background noise recordings or set data.silence_fraction=0"
        )
    return usable


def _twelve_class_entries(
    items, noise, clip: int, silence_fraction: float, unknown_fraction: float, seed: int
) -> list[tuple]:
    rng = np.random.default_rng(seed)
    commands = {w: i + 2 for i, w in enumerate(COMMAND_WORDS)}  # 0 _silence_, 1 _unknown_
    known = [(f, commands[w]) for f, w in items if w in commands]
    unknown = [(f, 1) for f, w in items if w not in commands]
    n_unknown = min(len(unknown), math.ceil(len(known) * unknown_fraction))
    picked = [unknown[i] for i in sorted(rng.choice(len(unknown), n_unknown, replace=False))] if n_unknown else []
    silence = []
    for _ in range(math.ceil(len(known) * silence_fraction) if noise else 0):
        path, length = noise[rng.integers(len(noise))]
        silence.append((path, 0, int(rng.integers(0, length - clip + 1)), float(rng.uniform())))
    return known + picked + silence


def extract_once(archive: Path, dest: Path, member: str | None = None) -> Path:
    """Extract `archive` (or its folder `member`) to `dest`, unless done already; all or nothing.

    The archive goes to a temporary folder beside dest, which is renamed into place with a marker
    file once complete, so an interrupted extraction is redone on the next run.
    """
    marker = dest / ".grove-complete"
    if marker.exists():
        return dest
    tmp = dest.parent / f".{dest.name}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        print(f"extracting {archive} to {dest}", flush=True)
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")  # refuses absolute paths, .. and device files
            else:
                tar.extractall(tmp)
        source = tmp / member if member else tmp
        if not source.is_dir():
            raise GroveError(
                f"{archive} has no folder {member}: it is not the expected archive; delete it and run again"
            )
        (source / marker.name).touch()
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise GroveError(f"cannot extract {archive} ({_reason(e)}); delete it and run again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ---------------------------------------------------------------------------------------------
# Transcription: manifests and LibriSpeech


def read_manifest(path: Path) -> tuple[list[str], list[str]]:
    """(audio paths, transcripts) from a CSV (header with path,transcript) or JSONL manifest;
    relative audio paths are relative to the manifest's folder."""
    if not path.is_file():
        raise GroveError(f"manifest {path} does not exist")
    base = path.parent
    rows = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise GroveError(
                    f"{path} line {number} is not JSON ({e.msg}); a JSONL manifest has one object per line"
                ) from None
            if not isinstance(row, dict) or not {"path", "transcript"} <= row.keys():
                raise GroveError(f'{path} line {number} lacks "path" or "transcript"; each line needs both keys')
            rows.append((row["path"], row["transcript"]))
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("path", "transcript") if c not in columns]
            if missing:
                raise GroveError(
                    f"{path} has no {' or '.join(missing)} column (its columns: {', '.join(columns) or 'none'}); "
                    "a CSV manifest needs a header with path,transcript"
                )
            for row in reader:
                row = {k.strip(): v for k, v in row.items() if k is not None}
                rows.append((row["path"], row["transcript"] or ""))
    if not rows:
        raise GroveError(f"manifest {path} lists no utterances")
    files = [str(p) if os.path.isabs(p) else str(base / p) for p, _ in rows]
    return files, [t for _, t in rows]


def _transcription_splits(split_lists, sample_rate):
    """[(files, transcripts) or None] * 3 -> (alphabet, [TranscriptionFiles or None] * 3)."""
    alphabet = build_alphabet(split_lists[0][1])
    return alphabet, [TranscriptionFiles(*s, alphabet, sample_rate) if s else None for s in split_lists]


@register_dataset(modality="speech")
def audio_manifest(
    *,
    root=None,
    train="train.csv",
    val="dev.csv",
    test=None,
    sample_rate=16000,
    features="logmel",
    n_mels=40,
    n_mfcc=13,
    spec_time_masks=2,
    spec_time_width=20,
    spec_freq_masks=2,
    spec_freq_width=8,
    noise_snr_db=None,
    gain_db=6.0,
):
    """Your own transcribed utterances: CSV (path,transcript) or JSONL manifests per split.

    Manifests are looked up in `root`; audio paths are relative to their manifest. The alphabet
    is the lower-cased characters of the training transcripts (0 = CTC blank, 1 = space); other
    characters in val/test are dropped.
    """
    if root is None:
        raise GroveError("data.root is required for audio_manifest: pass data.root=/folder/with/train.csv")
    root = Path(root).expanduser()
    lists = [read_manifest(root / name) if name else None for name in (train, val, test)]
    alphabet, splits = _transcription_splits(lists, sample_rate)
    augment = augment_options(
        spec_time_masks, spec_time_width, spec_freq_masks, spec_freq_width, noise_snr_db, gain_db, 0.0
    )
    transform = make_transform(sample_rate, features, n_mels, n_mfcc, **augment)
    return transcription_bundle(*splits, alphabet, transform)


@register_dataset(modality="speech")
def librispeech(
    *,
    root=None,
    subset="train-clean-100",
    val_subset="dev-clean",
    test_subset=None,
    sample_rate=16000,
    features="logmel",
    n_mels=40,
    n_mfcc=13,
    spec_time_masks=2,
    spec_time_width=20,
    spec_freq_masks=2,
    spec_freq_width=8,
    noise_snr_db=None,
    gain_db=6.0,
):
    """LibriSpeech read English (OpenSLR 12): subset trains, val_subset validates (downloads them).

    Subsets: dev-clean, dev-other, test-clean, test-other, train-clean-100, train-clean-360,
    train-other-500. Looks for root/LibriSpeech/<subset> (or root/<subset>), else downloads and
    extracts <subset>.tar.gz into root (default data_dir()/librispeech). Character alphabet as
    audio_manifest.
    """
    folder = Path(root).expanduser() if root else data_dir() / "librispeech"
    lists = [_librispeech_subset(folder, s) if s else None for s in (subset, val_subset, test_subset)]
    alphabet, splits = _transcription_splits(lists, sample_rate)
    augment = augment_options(
        spec_time_masks, spec_time_width, spec_freq_masks, spec_freq_width, noise_snr_db, gain_db, 0.0
    )
    transform = make_transform(sample_rate, features, n_mels, n_mfcc, **augment)
    return transcription_bundle(*splits, alphabet, transform, subsets=[subset, val_subset, test_subset])


def _librispeech_subset(folder: Path, subset: str) -> tuple[list[str], list[str]]:
    if subset not in LIBRISPEECH_SHA256:
        raise GroveError(f"unknown LibriSpeech subset '{subset}'; choose one of: {', '.join(LIBRISPEECH_SHA256)}")
    found = [p for p in (folder / "LibriSpeech" / subset, folder / subset) if p.is_dir()]
    if found:
        where = found[0]
    else:
        archive = fetch(
            LIBRISPEECH_URL.format(subset=subset),
            folder / f"{subset}.tar.gz",
            sha256=LIBRISPEECH_SHA256[subset],
            what=f"LibriSpeech {subset}",
        )
        where = extract_once(archive, folder / "LibriSpeech" / subset, member=f"LibriSpeech/{subset}")
    files, transcripts = [], []
    for parent, dirs, names in os.walk(where):
        dirs.sort()
        for name in sorted(n for n in names if n.endswith(".trans.txt")):
            for line in (Path(parent) / name).read_text(encoding="utf-8").splitlines():
                utterance, _, text = line.strip().partition(" ")
                if utterance:
                    files.append(os.path.join(parent, utterance + ".flac"))
                    transcripts.append(text)
    if not files:
        raise GroveError(f"no *.trans.txt transcripts under {where}: it is not a LibriSpeech subset folder")
    return files, transcripts
