"""The speech front end: waveform batches to normalised log-mel or MFCC features on the device.

The mel scale is HTK's, mel = 2595 log10(1 + f / 700), with triangles of peak 1 (no area
normalisation): the filterbank of torchaudio's `melscale_fbanks(..., norm=None, mel_scale="htk")`
and librosa's `filters.mel(htk=True, norm=None)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grove.data.audio.augment import (
    FRAME_S,
    add_noise,
    add_silence,
    change_speed,
    frame_mask,
    random_gain,
    random_shift,
    reverberate,
    spec_augment,
)
from grove.data.audio.options import NO_AUGMENT, AugmentOptions, FeatureOptions, as_dict
from grove.errors import GroveError

LOG_FLOOR = 1e-6
SPEECH_DB = 40.0  # a frame is speech when its energy is within 40 dB of the utterance's loudest


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
    samples; 400/160 at 16 kHz are the usual 25 ms windows every 10 ms. The STFT runs in float64:
    a float32 FFT's rounding error is relative to the whole frame's energy, so quiet bins beside
    loud ones carry ~1% error in power (1e-2 in their log), and two FFT implementations (torch's,
    an exported graph's) disagree by that much. In float64 the power is exact to float32 before
    the mel filters (a sum of positive terms) and the log, which run in float32 even under
    autocast: the log of small powers needs the range. With `top_db`, each utterance's log-mel is
    floored that many dB below its loudest cell (librosa's power_to_db(top_db=...)).
    """

    def __init__(self, sample_rate=16000, n_fft=400, hop=160, n_mels=40, f_min=0.0, f_max=None, top_db=None):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.floor = None if top_db is None else top_db * math.log(10) / 10  # dB -> nats of power
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
                wave.double(), self.n_fft, self.hop, window=self.window.double(), center=True, pad_mode="reflect",
                return_complex=True,
            )  # (B, n_fft/2+1, T)
            power = (spec.real.square() + spec.imag.square()).float()
            logmel = torch.log(torch.matmul(self.filters, power) + LOG_FLOOR)  # (B, n_mels, T)
            if self.floor is None:
                return logmel
            return torch.maximum(logmel, logmel.amax((1, 2), keepdim=True) - self.floor)


class MFCC(nn.Module):
    """(B, L) waveforms -> (B, n_mfcc, T): the orthonormal DCT-II of `LogMel` over the mel axis."""

    def __init__(self, n_mfcc=13, sample_rate=16000, n_fft=400, hop=160, n_mels=40, f_min=0.0, f_max=None, top_db=None):
        super().__init__()
        if n_mfcc > n_mels:
            raise GroveError(f"n_mfcc ({n_mfcc}) cannot exceed n_mels ({n_mels})")
        self.logmel = LogMel(sample_rate, n_fft, hop, n_mels, f_min, f_max, top_db)
        self.register_buffer("dct", dct_matrix(n_mfcc, n_mels), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        logmel = self.logmel(wave)
        with torch.autocast(logmel.device.type, enabled=False):
            return torch.matmul(self.dct, logmel)  # (B, n_mfcc, T)


def frame_energy(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """(B, L) -> (B, 1 + L // hop) mean square of the n_fft samples each STFT frame centres on
    (zeros beyond the ends)."""
    padded = wave if wave.shape[-1] > n_fft // 2 else F.pad(wave, (0, n_fft // 2 + 1 - wave.shape[-1]))
    energy = F.avg_pool1d(padded.square()[:, None], n_fft, hop, padding=n_fft // 2)[:, 0]
    return energy[:, : 1 + wave.shape[-1] // hop]


def speech_frames(energy: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) True for the valid frames whose energy is within SPEECH_DB of the row's loudest."""
    valid = torch.ones_like(energy, dtype=torch.bool) if lengths is None else frame_mask(lengths, energy.shape[-1])
    loudest = energy.masked_fill(~valid, 0).amax(-1, keepdim=True)
    return valid & (energy >= loudest * 10 ** (-SPEECH_DB / 10))


def normalize_features(
    x: torch.Tensor, lengths: torch.Tensor | None = None, speech: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Each utterance's features to mean 0, std 1 over time, per feature; (B, F, T) -> (B, F, T).

    With `lengths` (valid frames per utterance) the statistics ignore padding, and padded frames
    come out as 0. With `speech` ((B, T) bool, `speech_frames`) they are those of the speech
    frames alone, so leading or trailing silence of any length leaves the speech's features as
    they are.
    """
    if lengths is None and speech is None:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + eps)
    valid = None if lengths is None else frame_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)  # (B, 1, T)
    stats = valid if speech is None else speech[:, None, :].to(x.dtype)
    count = stats.sum(-1, keepdim=True).clamp(min=1)
    mean = (x * stats).sum(-1, keepdim=True) / count
    var = ((x - mean).square() * stats).sum(-1, keepdim=True) / count
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if valid is None else out * valid


@dataclass
class AudioTransform:
    """Waveform batch -> normalised features, augmented when training, on the batch's device.

    Input: (B, L) float or int16 (int16 is divided by 32768) for fixed-length clips, or
    {"audio": (B, L), "lengths": (B,) samples} for padded variable-length utterances.
    Output: (B, F, T) features, or {"features": (B, F, T), "lengths": (B,) frames}; F is
    `out_features` (n_mels, or n_mfcc), T = 1 + L // hop.
    Training augmentation: `augment_waves` on the waveform, then SpecAugment masks on the
    normalised features; an utterance's lengths follow its added silence and speed.
    """

    sample_rate: int = 16000
    features: FeatureOptions = FeatureOptions()
    augment: AugmentOptions = NO_AUGMENT
    _extractors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_fft(self) -> int:
        return round(self.features.window_ms * self.sample_rate / 1000)

    @property
    def hop(self) -> int:
        return round(self.features.hop_ms * self.sample_rate / 1000)

    @property
    def out_features(self) -> int:
        return self.features.out_features

    def frames(self, samples):
        """Feature frames of `samples` samples (an int or a tensor of lengths)."""
        return samples // self.hop + 1

    def __call__(self, x, train: bool):
        lengths = None
        if isinstance(x, dict):
            x, lengths = x["audio"], x["lengths"]
        wave = x.float() / 32768 if x.dtype == torch.int16 else x.float()
        if train:
            wave, lengths = self.augment_waves(wave, lengths)
        frames = None if lengths is None else self.frames(lengths)
        speech = None
        if self.features.normalize == "speech":
            speech = speech_frames(frame_energy(wave, self.n_fft, self.hop), frames)
        feats = normalize_features(self._extractor(wave.device)(wave), frames, speech)
        if train:
            aug = self.augment
            feats = spec_augment(
                feats, aug.spec_time_masks, aug.spec_time_width, aug.spec_freq_masks, aug.spec_freq_width, frames
            )
        return feats if lengths is None else {"features": feats, "lengths": frames}

    def augment_waves(self, wave: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The waveform augmentation of training, in order: time shift (fixed-length clips) or
        added silence (utterances), speed, reverberation, noise, gain and clipping."""
        aug, rate = self.augment, self.sample_rate
        if lengths is None and aug.shift_ms:
            wave = random_shift(wave, round(aug.shift_ms * rate / 1000))
        if lengths is not None and aug.silence_s:
            wave, lengths = add_silence(wave, lengths, round(aug.silence_s * rate), round(FRAME_S * rate))
        if aug.speed is not None and aug.speed != (1.0, 1.0):
            wave, lengths = change_speed(wave, lengths, *aug.speed)
        if aug.reverb_p:
            wave = reverberate(wave, lengths, aug.reverb_p, aug.reverb_rt60_s, rate)
        if aug.noise_snr_db is not None:
            wave = add_noise(wave, aug.noise_snr_db, lengths)
        if aug.gain_db is not None:
            wave = random_gain(wave, aug.gain_db)
        return wave, lengths

    def _extractor(self, device) -> nn.Module:
        if device not in self._extractors or torch.compiler.is_exporting():
            n_mels, n_mfcc = self.features.n_mels, self.features.n_mfcc
            if n_mfcc:
                module = MFCC(n_mfcc, self.sample_rate, self.n_fft, self.hop, n_mels, top_db=self.features.top_db)
            else:
                module = LogMel(self.sample_rate, self.n_fft, self.hop, n_mels, top_db=self.features.top_db)
            if torch.compiler.is_exporting():  # the tracer's tensors must not stay in the cache
                return module.to(device)
            self._extractors[device] = module.to(device)
        return self._extractors[device]

    def to_dict(self) -> dict:
        return {"sample_rate": self.sample_rate, "features": as_dict(self.features), "augment": as_dict(self.augment)}

    @classmethod
    def from_dict(cls, d: dict) -> AudioTransform:
        if not isinstance(d.get("features"), dict):
            d = _nested(d)
        # A run written before `normalize` and `top_db` existed normalised over every frame, unfloored.
        features = {"normalize": "utterance", "top_db": None, **d["features"]}
        return cls(d["sample_rate"], FeatureOptions(**features), AugmentOptions(**d["augment"]))


def _nested(flat: dict) -> dict:
    """The to_dict of a run directory written before the options were nested (one flat mapping,
    window and hop in samples, features "logmel" or "mfcc")."""
    rate = flat["sample_rate"]
    features = {
        "n_mels": flat["n_mels"],
        "n_mfcc": flat["n_mfcc"] if flat["features"] == "mfcc" else None,
        "window_ms": flat["n_fft"] * 1000 / rate,
        "hop_ms": flat["hop"] * 1000 / rate,
    }
    augment = {f.name: flat[f.name] for f in fields(AugmentOptions) if f.name in flat}
    return {"sample_rate": rate, "features": features, "augment": augment}
