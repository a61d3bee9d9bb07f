"""Training-time augmentation of waveform and feature batches, on the batch's device.

Randomness comes from the global torch RNG of the batch's device, which the engine checkpoints,
so a resumed run draws the same augmentation as an uninterrupted one.
"""

from __future__ import annotations

import torch


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


