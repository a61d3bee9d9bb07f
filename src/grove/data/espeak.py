"""Speech from espeak-ng: its English voices, one call speaking many items, and mixing the result.

A voice is an espeak-ng accent with a variant (`en-gb-scotland+f3`): 8 accents x 12 variants give
96 voices, each speaking at several speeds (-s) and pitches (-p). One espeak-ng call speaks every
item of a (voice, speed) with SSML pauses between them and is split at those pauses (a call per
item where the split disagrees); calls run in parallel. The 22,050 Hz output is resampled, placed
with seeded offsets and levels, and mixed with seeded white/pink/brown noise at a random SNR.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from xml.sax.saxutils import escape

import numpy as np
import torch

from grove.data.audio.io import resample
from grove.errors import GroveError

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Male, female, Klatt-synthesis and rough/breathy variants: timbres as far apart as espeak-ng has.
VARIANTS = ("m1", "m3", "m5", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt3", "croak", "whisper")

ESPEAK_RATE = 22050
PAUSE_MS = 600  # SSML break between the items of one call
MIN_GAP_S = 0.3  # a quiet stretch this long separates items; pauses inside a word stay under 0.1 s
LOUD_DB = -40  # a 10 ms frame is speech when its energy is within 40 dB of the loudest frame
INSTALL_HINT = "espeak-ng is not installed: run scripts/install-system-deps.sh (or apt-get install espeak-ng)"


# ---------------------------------------------------------------------------------------------
# espeak-ng


def espeak_version() -> str:
    if shutil.which("espeak-ng") is None:
        raise GroveError(INSTALL_HINT)
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30, check=False)
    return " ".join(out.stdout.split()) or "unknown"


def default_voices() -> list[str]:
    return [f"{accent}+{variant}" for accent in ACCENTS for variant in VARIANTS]


def _espeak(text: str, voice: str, speed: int, pitch: int, ssml: bool) -> np.ndarray:
    """int16 samples at 22,050 Hz of `text` spoken by `voice`."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", *(["-m"] if ssml else []), text]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    except FileNotFoundError:
        raise GroveError(INSTALL_HINT) from None
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        detail = " ".join(proc.stderr.decode(errors="replace").split())[-200:] or f"exit status {proc.returncode}"
        raise GroveError(f"espeak-ng could not speak with voice {voice}: {detail}")
    return _pcm16(proc.stdout)


def _pcm16(wav: bytes) -> np.ndarray:
    """The samples of espeak-ng's streamed WAV: mono 16-bit PCM whose sizes say 'unknown'
    (0x7fffffff), so the data chunk is taken to run to the end."""
    channels, rate, bits = struct.unpack_from("<HIxxxxxxH", wav, 22)
    data = wav.find(b"data", 12)
    if wav[:4] != b"RIFF" or data < 0 or (channels, rate, bits) != (1, ESPEAK_RATE, 16):
        raise GroveError(f"espeak-ng wrote unexpected audio ({channels} channels, {rate} Hz, {bits} bit)")
    body = wav[data + 8 :]
    return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.int16)


def split_at_pauses(samples: np.ndarray, rate: int = ESPEAK_RATE) -> list[np.ndarray]:
    """The spoken stretches of `samples`, cut where it stays quiet for MIN_GAP_S or longer."""
    frame = rate // 100
    n = len(samples) // frame
    if n == 0:
        return []
    energy = np.square(samples[: n * frame].astype(np.float64)).reshape(n, frame).mean(1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (LOUD_DB / 10))
    if len(loud) == 0:
        return []
    cuts = np.flatnonzero(np.diff(loud) > MIN_GAP_S * 100)
    firsts, lasts = loud[np.r_[0, cuts + 1]], loud[np.r_[cuts, len(loud) - 1]]
    margin = frame  # 10 ms either side keeps soft onsets and releases
    return [samples[max(0, a * frame - margin) : (b + 1) * frame + margin] for a, b in zip(firsts, lasts)]


def speak(texts: list[str], voice: str, speed: int, pitch: int) -> list[np.ndarray]:
    """Each text spoken by `voice` as int16 at 22,050 Hz, trimmed to its spoken stretch."""
    ssml = "<speak>" + "".join(f'{escape(t)}<break time="{PAUSE_MS}ms"/>' for t in texts) + "</speak>"
    pieces = split_at_pauses(_espeak(ssml, voice, speed, pitch, ssml=True))
    if len(pieces) == len(texts):
        return pieces
    # A voice paused inside an item (or ran two together): fall back to one call per item.
    pieces = []
    for text in texts:
        stretch = split_at_pauses(_espeak(escape(text), voice, speed, pitch, ssml=False))
        if not stretch:
            raise GroveError(f"espeak-ng voice {voice} produced silence for {text!r}")
        pieces.append(np.concatenate(stretch) if len(stretch) > 1 else stretch[0])
    return pieces



# ---------------------------------------------------------------------------------------------
# Mixing


def to_rate(pieces: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    """int16 pieces at 22,050 Hz -> float32 at sample_rate, resampled as one padded batch."""
    longest = max(len(p) for p in pieces)
    batch = torch.zeros(len(pieces), longest)
    for i, p in enumerate(pieces):
        batch[i, : len(p)] = torch.from_numpy(p.astype(np.float32) / 32768)
    out = resample(batch, ESPEAK_RATE, sample_rate).numpy()
    return [out[i, : -(-len(p) * sample_rate // ESPEAK_RATE)] for i, p in enumerate(pieces)]


def _colored_noise(rng: np.random.Generator, count: int, length: int) -> np.ndarray:
    """(count, length) unit-power noise, each row white, pink or brown (power as 1/f^0, 1/f, 1/f^2)."""
    exponent = rng.integers(0, 3, (count, 1))
    bins = length // 2 + 1
    spectrum = rng.standard_normal((count, bins)) + 1j * rng.standard_normal((count, bins))
    freqs = np.maximum(np.arange(bins, dtype=np.float64), 1.0)
    noise = np.fft.irfft(spectrum * freqs ** (-exponent / 2), n=length, axis=1)
    return noise / (np.sqrt(np.mean(noise**2, axis=1, keepdims=True)) + 1e-12)


def finish_clips(clips: np.ndarray, speech: list[slice], rng: np.random.Generator, noise_snr_db) -> np.ndarray:
    """(n, L) float clips with their speech at a random peak level and noise at a random SNR -> int16."""
    peaks = np.array([np.abs(c[s]).max() for c, s in zip(clips, speech)]) + 1e-9
    clips = clips * (rng.uniform(0.3, 0.9, len(clips)) / peaks)[:, None]
    if noise_snr_db is not None:
        power = np.array([np.mean(np.square(c[s])) for c, s in zip(clips, speech)])
        snr = rng.uniform(*noise_snr_db, len(clips))
        clips = clips + _colored_noise(rng, *clips.shape) * np.sqrt(power / 10 ** (snr / 10))[:, None]
    return np.clip(np.round(clips * 32767), -32768, 32767).astype(np.int16)


def place_word(word: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, slice]:
    """The word at a random offset in `length` samples (its middle `length` if longer)."""
    if len(word) > length:
        cut = (len(word) - length) // 2
        word = word[cut : cut + length]
    offset = int(rng.integers(0, length - len(word) + 1))
    clip = np.zeros(length, dtype=np.float32)
    clip[offset : offset + len(word)] = word
    return clip, slice(offset, offset + len(word))


def pad_utterance(speech: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, slice]:
    """The utterance with 0 to 0.3 s (uniform) before and after it, or (a quarter of the time,
    each end drawn apart) nothing: a recording may start or stop right on the speech. Training's
    data.augment.silence_s adds longer stretches."""
    lead, tail = (0 if rng.random() < 0.25 else int(rng.uniform(0.0, 0.3) * sample_rate) for _ in range(2))
    clip = np.zeros(lead + len(speech) + tail, dtype=np.float32)
    clip[lead : lead + len(speech)] = speech
    return clip, slice(lead, lead + len(speech))



# ---------------------------------------------------------------------------------------------
# Parallel calls



def job_rng(seed: int, voice: str, speed: int, kind: int) -> np.random.Generator:
    # Keyed by the voice's name, so a voice's audio does not depend on which other voices are used.
    return np.random.default_rng([seed, zlib.crc32(voice.encode()), speed, kind])


def make_job(seed: int, kind: int, voice: str, v: int, speed: int, pitches, texts: list[str], **extra) -> dict:
    """One espeak-ng call's work: texts by voice (number v) at speed, with a seeded pitch and RNG."""
    rng = job_rng(seed, voice, speed, kind)
    return {
        "voice": voice,
        "v": v,
        "speed": speed,
        "pitch": int(rng.choice(pitches)),
        "rng": rng,
        "texts": texts,
        **extra,
    }


def run_jobs(jobs: list[dict], finish, label: str) -> list:
    """finish(job, pieces) for every job, its texts spoken by espeak-ng; jobs run in parallel
    threads (espeak-ng processes, and numpy and torch release the GIL); results in job order."""
    started = time.perf_counter()
    print(f"generating {label} with espeak-ng ({len(jobs)} calls)...", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(
            pool.map(lambda job: finish(job, speak(job["texts"], job["voice"], job["speed"], job["pitch"])), jobs)
        )
    print(f"generated {label} in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return results
