"""Training-time augmentation of waveform and feature batches, on the batch's device.

Waveform batches are (B, L) at full scale +-1, with `lengths` (B,) valid samples for padded
variable-length utterances (None: every row is a fixed-length clip). Each function draws its
randomness per utterance from the global torch RNG of the batch's device, which the engine
checkpoints, so a resumed run draws the same augmentation as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch

FRAME_S = 0.01  # 10 ms frames for the noise-floor estimate


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, frames) True where frame t < lengths[b]."""
    return torch.arange(frames, device=lengths.device) < lengths[:, None]


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


def _uniform(batch: int, low: float, high: float, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, device=device)


def _lengths_of(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    return lengths if lengths is not None else torch.full((x.shape[0],), x.shape[1], device=x.device)


def _fft_size(n: int) -> int:
    """The power of two at or above n: a fast FFT size (a length with a large prime factor is slow)."""
    return 1 << max(0, n - 1).bit_length()


def _power(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean square of each row over its mask."""
    return (x.square() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each clip moved by up to +-max_shift samples (drawn per clip), zeros filling the gap."""
    batch, length = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (batch, 1), device=x.device)
    source = torch.arange(length, device=x.device)[None, :] - shift  # (B, L)
    inside = (source >= 0) & (source < length)
    return x.gather(1, source.clamp(0, length - 1)) * inside


def noise_floor(x: torch.Tensor, lengths: torch.Tensor | None, frame: int) -> torch.Tensor:
    """(B,) RMS of each utterance's quietest 10% of `frame`-sample frames: its background level."""
    batch, length = x.shape
    n = max(1, length // frame)
    energy = torch.nn.functional.pad(x, (0, n * frame - length)) if length < frame else x[:, : n * frame]
    energy = energy.reshape(batch, n, -1).square().mean(-1)  # (B, n)
    frames = (_lengths_of(x, lengths) // frame).clamp(min=1, max=n)
    energy = energy.masked_fill(~frame_mask(frames, n), math.inf).sort(-1).values
    return energy.gather(1, (frames[:, None] - 1) // 10).squeeze(1).sqrt()


def add_silence(
    x: torch.Tensor, lengths: torch.Tensor, max_samples: int, frame: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Half the utterances get leading silence of up to `max_samples` samples (uniform), and half
    (drawn apart) trailing silence; the other edges stay as recorded, right on the speech where it
    was. The silence is white noise at up to the utterance's own background level (`noise_floor`,
    times a factor drawn in 0..1): from a recorder's digital silence to the room's hum.
    (B, L), (B,) -> (B, L'), (B,) with the new lengths."""
    batch, length = x.shape
    draw = torch.rand(batch, 5, device=x.device)
    lead = (draw[:, 0] * (max_samples + 1)).floor().long() * (draw[:, 1] < 0.5)
    trail = (draw[:, 2] * (max_samples + 1)).floor().long() * (draw[:, 3] < 0.5)
    new_lengths = lengths + lead + trail
    width = int(new_lengths.max())
    source = torch.arange(width, device=x.device)[None, :] - lead[:, None]  # (B, L')
    speech = (source >= 0) & (source < lengths[:, None])
    out = x.gather(1, source.clamp(0, length - 1)) * speech
    silence = frame_mask(new_lengths, width) & ~speech
    floor = (noise_floor(x, lengths, frame) * draw[:, 4])[:, None]
    return out + torch.randn(batch, width, device=x.device) * floor * silence, new_lengths


def change_speed(
    x: torch.Tensor, lengths: torch.Tensor | None, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Speed perturbation (Ko et al., 2015): each utterance played at a rate drawn in [low, high]
    (rate and pitch change together), by linear interpolation. A fixed-length clip keeps its
    length (zeros after a sped-up clip, a slowed one cut); an utterance's length becomes
    ceil(n / rate)."""
    batch, length = x.shape
    rate = _uniform(batch, low, high, x.device)[:, None]  # (B, 1)
    n = _lengths_of(x, lengths)[:, None]
    if lengths is None:
        new_lengths, width = None, length
    else:
        new_lengths = torch.ceil(lengths / rate[:, 0]).long().clamp(min=1)
        width = int(new_lengths.max())
    source = torch.arange(width, device=x.device)[None, :] * rate  # (B, L') fractional positions
    left = source.floor().long()
    frac = (source - left).to(x.dtype)
    inside = left < n
    left = left.clamp(max=length - 1)
    right = torch.minimum(left + 1, n - 1).clamp(max=length - 1)
    out = x.gather(1, left) * (1 - frac) + x.gather(1, right) * frac
    return out * inside, new_lengths


def reverberate(
    x: torch.Tensor, lengths: torch.Tensor | None, p: float, rt60_s: tuple[float, float], sample_rate: int
) -> torch.Tensor:
    """A fraction p of the utterances convolved with a synthetic room impulse response: a direct
    path, then Gaussian noise decaying by 60 dB over an RT60 drawn in rt60_s, at a
    direct-to-reverberant ratio drawn in 0..10 dB; the result keeps the utterance's level."""
    batch, length = x.shape
    chosen = torch.rand(batch, device=x.device) < p
    rt60 = _uniform(batch, *rt60_s, x.device)[:, None]
    drr_db = _uniform(batch, 0.0, 10.0, x.device)[:, None]
    taps = max(2, round(rt60_s[1] * sample_rate))
    t = torch.arange(taps, device=x.device)[None, :] / sample_rate
    tail = torch.randn(batch, taps, device=x.device) * torch.exp(-3 * math.log(10) * t / rt60)
    rows = chosen.nonzero().flatten()  # only the chosen rows are convolved
    if len(rows) == 0:
        return x
    tail = tail[rows]
    tail[:, 0] = 0
    tail = tail * torch.rsqrt(tail.square().sum(-1, keepdim=True) * 10 ** (drr_db[rows] / 10))
    rir = tail.index_fill(1, torch.tensor([0], device=x.device), 1.0)
    size = _fft_size(length + taps)
    dry = x[rows].float()
    wet = torch.fft.irfft(torch.fft.rfft(dry, size) * torch.fft.rfft(rir, size), size)[:, :length]
    mask = sample_mask(lengths, x)[rows]
    wet = wet * mask * torch.sqrt(_power(dry, mask) / _power(wet, mask).clamp(min=1e-12))[:, None]
    return x.index_copy(0, rows, wet.to(x.dtype))


def _colored(white: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """(B, L) white noise shaped to power 1/f^exponent per row (0 white, 1 pink, 2 brown)."""
    length = white.shape[1]
    size = _fft_size(length)
    spectrum = torch.fft.rfft(white, size)
    freqs = torch.arange(spectrum.shape[1], device=white.device).clamp(min=1).to(white.dtype)
    return torch.fft.irfft(spectrum * freqs[None, :] ** (-exponent[:, None] / 2), size)[:, :length]


def add_noise(x: torch.Tensor, snr_db: tuple[float, float], lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Noise at an SNR drawn uniformly in `snr_db` per utterance, of one of four kinds drawn per
    utterance: white, pink or brown noise, or babble (three other utterances of the batch summed;
    white in a batch of one). (B, L) -> (B, L)."""
    batch = x.shape[0]
    mask = sample_mask(lengths, x)
    kind = torch.randint(0, 4, (batch,), device=x.device)
    noise = _colored(torch.randn_like(x), kind.clamp(max=2).to(x.dtype))
    if batch > 1:
        babble = sum(x.roll(k, 0) for k in range(1, min(4, batch)))
        noise = torch.where((kind == 3)[:, None], babble, noise)
    noise = noise * mask
    snr = _uniform(batch, *snr_db, x.device)
    scale = torch.sqrt(_power(x, mask) / 10 ** (snr / 10) / _power(noise, mask).clamp(min=1e-12))[:, None]
    return x + noise * scale


def random_gain(x: torch.Tensor, gain_db: tuple[float, float]) -> torch.Tensor:
    """Each utterance scaled by a gain drawn uniformly in [low, high] decibels, then clipped to
    full scale (+-1) as a recorder clips."""
    db = _uniform(x.shape[0], *gain_db, x.device)[:, None]
    return (x * 10 ** (db / 20)).clamp(-1.0, 1.0)
