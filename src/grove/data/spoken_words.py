"""Real speech without a download: words and digit strings spoken by espeak-ng's English voices.

A voice is an espeak-ng accent with a variant (`en-gb-scotland+f3`): 8 accents x 12 variants give
96 voices, each speaking at several speeds (-s) and pitches (-p). One espeak-ng call speaks every
item of a (voice, speed) with SSML pauses between them and is split at those pauses (a call per
item where the split disagrees); calls run in parallel. The 22,050 Hz output is resampled, placed
with seeded offsets and levels, and mixed with seeded white/pink/brown noise at a random SNR.
Everything is drawn from generators seeded by (seed, voice, speed), so a data set is the same
for the same options and espeak-ng build, and is cached as one int16 .npz in
data_dir()/spoken_words/ (written atomically).

Splits are by voice: val and test voices never speak in training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import torch

from grove.data.audio import (
    TranscriptionArrays,
    augment_options,
    build_alphabet,
    encode_transcript,
    keyword_bundle,
    make_transform,
    resample,
    transcription_bundle,
)
from grove.data.base import TensorData
from grove.data.download import data_dir
from grove.errors import GroveError
from grove.registry import register_dataset

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "forward", "backward")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Male, female, Klatt-synthesis and rough/breathy variants: timbres as far apart as espeak-ng has.
VARIANTS = ("m1", "m3", "m5", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt3", "croak", "whisper")
SPEEDS = (130, 165, 200)  # words per minute; espeak-ng's default is 175
PITCHES = (30, 45, 60, 75)  # 0-99; espeak-ng's default is 50

ESPEAK_RATE = 22050
GENERATOR_VERSION = 1  # bump when the generated audio changes, so old caches are not reused
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


def _to_rate(pieces: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
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


def _finish(clips: np.ndarray, speech: list[slice], rng: np.random.Generator, noise_snr_db) -> np.ndarray:
    """(n, L) float clips with their speech at a random peak level and noise at a random SNR -> int16."""
    peaks = np.array([np.abs(c[s]).max() for c, s in zip(clips, speech)]) + 1e-9
    clips = clips * (rng.uniform(0.3, 0.9, len(clips)) / peaks)[:, None]
    if noise_snr_db is not None:
        power = np.array([np.mean(np.square(c[s])) for c, s in zip(clips, speech)])
        snr = rng.uniform(*noise_snr_db, len(clips))
        clips = clips + _colored_noise(rng, *clips.shape) * np.sqrt(power / 10 ** (snr / 10))[:, None]
    return np.clip(np.round(clips * 32767), -32768, 32767).astype(np.int16)


def _place_word(word: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, slice]:
    """The word at a random offset in `length` samples (its middle `length` if longer)."""
    if len(word) > length:
        cut = (len(word) - length) // 2
        word = word[cut : cut + length]
    offset = int(rng.integers(0, length - len(word) + 1))
    clip = np.zeros(length, dtype=np.float32)
    clip[offset : offset + len(word)] = word
    return clip, slice(offset, offset + len(word))


def _pad_utterance(speech: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, slice]:
    lead, tail = (int(rng.uniform(0.1, 0.3) * sample_rate) for _ in range(2))
    clip = np.zeros(lead + len(speech) + tail, dtype=np.float32)
    clip[lead : lead + len(speech)] = speech
    return clip, slice(lead, lead + len(speech))


# ---------------------------------------------------------------------------------------------
# Generation and the cache


def _job_rng(seed: int, voice: str, speed: int, kind: int) -> np.random.Generator:
    # Keyed by the voice's name, so a voice's audio does not depend on which other voices are used.
    return np.random.default_rng([seed, zlib.crc32(voice.encode()), speed, kind])


def _job(seed: int, kind: int, voice: str, v: int, speed: int, pitches, texts: list[str], **extra) -> dict:
    """One espeak-ng call's work: texts by voice (number v) at speed, with a seeded pitch and RNG."""
    rng = _job_rng(seed, voice, speed, kind)
    return {
        "voice": voice,
        "v": v,
        "speed": speed,
        "pitch": int(rng.choice(pitches)),
        "rng": rng,
        "texts": texts,
        **extra,
    }


def _run_jobs(jobs: list[dict], finish, label: str) -> list:
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


def cache_path(kind: str, options: dict) -> Path:
    """data_dir()/spoken_words/<kind>-<hash>.npz; the options include the espeak-ng version."""
    key = json.dumps({"kind": kind, "generator": GENERATOR_VERSION, **options}, sort_keys=True)
    return data_dir() / "spoken_words" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _load_cache(path: Path, keys: set[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if keys <= arrays.keys():
            return arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    print(f"{path} is unreadable or incomplete; generating it again", file=sys.stderr)
    return None


def save_cache(path: Path, arrays: dict) -> None:
    """np.savez to a temporary file beside `path`, renamed over it only once complete."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a data cache is not
        os.replace(tmp, path)
        tmp = None
    except OSError as e:  # a full or read-only disk costs the cache, not the run
        print(
            f"could not cache the generated audio at {path} ({e}); it will be generated again next time",
            file=sys.stderr,
        )
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _cached(kind: str, options: dict, keys: set[str], build, cache: bool) -> tuple[dict, Path | None]:
    path = cache_path(kind, options)
    arrays = _load_cache(path, keys) if cache else None
    if arrays is None:
        arrays = build()
        if cache:
            save_cache(path, arrays)
    return arrays, path if cache else None


# ---------------------------------------------------------------------------------------------
# Options and splits


def _choose_voices(voices, n_voices, seed: int) -> list[str]:
    pool = list(voices) if voices is not None else default_voices()
    if not pool or len(set(pool)) != len(pool) or not all(isinstance(v, str) and v for v in pool):
        raise GroveError(f"voices must be distinct espeak-ng voice names (accent+variant), got {voices}")
    if n_voices is None:
        return pool
    if not 1 <= n_voices <= len(pool):
        raise GroveError(f"n_voices must be between 1 and {len(pool)}, got {n_voices}")
    picked = np.random.default_rng(seed).choice(len(pool), n_voices, replace=False)
    return [pool[i] for i in sorted(picked)]


def split_voices(voices: list[str], val_voices, test_voices, seed: int) -> dict[str, list[str]]:
    """{"train", "val", "test"} -> voice names; val/test are a count, a fraction or a list of names."""
    order = [voices[i] for i in np.random.default_rng(seed + 1).permutation(len(voices))]
    chosen = {}
    for name, option in (("test", test_voices), ("val", val_voices)):
        free = [v for v in order if v not in chosen.get("test", [])]
        if isinstance(option, (list, tuple)):
            unknown = sorted(set(option) - set(voices))
            if unknown:
                raise GroveError(f"{name}_voices names voices that are not generated: {', '.join(unknown)}")
            chosen[name] = [v for v in voices if v in set(option)]
        elif isinstance(option, float) and 0 < option < 1:
            chosen[name] = free[: max(1, round(option * len(voices)))]
        elif isinstance(option, int) and not isinstance(option, bool) and option >= 0:
            chosen[name] = free[:option]
        else:
            raise GroveError(f"{name}_voices must be a count, a fraction in (0, 1) or a list of voices, got {option!r}")
    if set(chosen["val"]) & set(chosen["test"]):
        raise GroveError(f"voices {sorted(set(chosen['val']) & set(chosen['test']))} are both val and test voices")
    held = set(chosen["val"]) | set(chosen["test"])
    chosen["train"] = [v for v in voices if v not in held]
    if not chosen["train"] or not chosen["val"]:
        raise GroveError(
            f"{len(voices)} voices cannot give train and val voices of their own "
            f"(val_voices={val_voices!r}, test_voices={test_voices!r}): use more voices or hold out fewer"
        )
    return {k: chosen[k] for k in ("train", "val", "test")}


def _check_speech_options(speeds, pitches, noise_snr_db, sample_rate) -> None:
    if not speeds or not all(80 <= s <= 450 for s in speeds):
        raise GroveError(f"speeds are espeak-ng words per minute, 80 to 450; got {speeds}")
    if not pitches or not all(0 <= p <= 99 for p in pitches):
        raise GroveError(f"pitches are espeak-ng pitches, 0 to 99; got {pitches}")
    if noise_snr_db is not None and (len(noise_snr_db) != 2 or noise_snr_db[0] > noise_snr_db[1]):
        raise GroveError(f"noise_snr_db must be [low, high] in dB or null, got {noise_snr_db}")
    if sample_rate < 8000:
        raise GroveError(f"sample_rate must be at least 8000, got {sample_rate}")


class VoiceTensorData(TensorData):
    """TensorData whose `voices[i]` names the voice that spoke item i."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, voices: list[str]):
        super().__init__(inputs, targets)
        self.voices = voices


class VoiceTranscriptionArrays(TranscriptionArrays):
    """TranscriptionArrays whose `voices[i]` names the voice that spoke item i."""

    def __init__(self, *args, voices: list[str]):
        super().__init__(*args)
        self.voices = voices


# ---------------------------------------------------------------------------------------------
# Keyword spotting


def _generate_words(words, voices, speeds, pitches, noise_snr_db, sample_rate, clip_seconds, seed) -> dict:
    length = round(clip_seconds * sample_rate)
    jobs = [_job(seed, 0, voice, v, speed, pitches, list(words)) for v, voice in enumerate(voices) for speed in speeds]

    def finish(job, pieces):
        placed = [_place_word(piece, length, job["rng"]) for piece in _to_rate(pieces, sample_rate)]
        return _finish(np.stack([c for c, _ in placed]), [s for _, s in placed], job["rng"], noise_snr_db)

    audio = np.concatenate(_run_jobs(jobs, finish, f"{len(jobs) * len(words)} spoken-word clips"))
    label = np.tile(np.arange(len(words), dtype=np.int16), len(jobs))
    voice_ids, speed_of, pitch_of = (
        np.repeat(np.array([j[k] for j in jobs], dtype=np.int16), len(words)) for k in ("v", "speed", "pitch")
    )
    return {
        "audio": audio,
        "label": label,
        "voice": voice_ids,
        "speed": speed_of,
        "pitch": pitch_of,
        "voices": np.array(voices),
        "words": np.array(words),
    }


@register_dataset(modality="speech")
def spoken_words(
    *,
    words=None,
    n_voices=None,
    voices=None,
    speeds=SPEEDS,
    pitches=PITCHES,
    noise_snr_db=(10, 30),
    sample_rate=16000,
    clip_seconds=1.0,
    seed=0,
    cache=True,
    val_voices=0.1,
    test_voices=0.1,
    features="logmel",
    n_mels=40,
    n_mfcc=13,
    spec_time_masks=2,
    spec_time_width=10,
    spec_freq_masks=2,
    spec_freq_width=5,
    augment_snr_db=None,
    gain_db=6.0,
    shift_ms=100.0,
):
    """Keyword spotting offline: 22 words (digits and commands) by 96 espeak-ng voices (no download).

    The digits zero..nine and yes no up down left right on off stop go forward backward (or
    `words`), each spoken by every voice (`voices`, or n_voices of the 96 accent+variant voices)
    at every speed in `speeds` with a seeded pitch from `pitches`: 6,336 one-second clips by
    default, with noise mixed in at a seeded SNR in noise_snr_db. val_voices and test_voices (a
    count, a fraction or a list of names) are held out: their voices never speak in training.
    Generated once (needs espeak-ng: scripts/install-system-deps.sh) and cached in
    data_dir()/spoken_words/. Splits hold int16 clips; `voices[i]` names each clip's voice.
    augment_snr_db adds noise again while training, as the transform's noise_snr_db.
    """
    words = list(words) if words is not None else list(DIGITS + COMMANDS)
    if not words or len(set(words)) != len(words) or not all(isinstance(w, str) and w.strip() for w in words):
        raise GroveError(f"words must be distinct non-empty strings, got {words}")
    _check_speech_options(speeds, pitches, noise_snr_db, sample_rate)
    espeak = espeak_version()
    chosen = _choose_voices(voices, n_voices, seed)
    snr = list(noise_snr_db) if noise_snr_db is not None else None
    options = {
        "espeak": espeak,
        "words": words,
        "voices": chosen,
        "speeds": list(speeds),
        "pitches": list(pitches),
        "noise_snr_db": snr,
        "sample_rate": sample_rate,
        "clip_seconds": clip_seconds,
        "seed": seed,
    }
    arrays, path = _cached(
        "words",
        options,
        {"audio", "label", "voice"},
        lambda: _generate_words(words, chosen, speeds, pitches, snr, sample_rate, clip_seconds, seed),
        cache,
    )
    split = split_voices(chosen, val_voices, test_voices, seed)
    audio, labels = torch.from_numpy(arrays["audio"]), torch.from_numpy(arrays["label"].astype(np.int64))
    voice_of = [chosen[v] for v in arrays["voice"]]

    def take(names: list[str]) -> VoiceTensorData | None:
        if not names:
            return None
        wanted = set(names)
        index = torch.tensor([i for i, v in enumerate(voice_of) if v in wanted], dtype=torch.long)
        return VoiceTensorData(audio[index], labels[index], [voice_of[i] for i in index.tolist()])

    augment = augment_options(
        spec_time_masks, spec_time_width, spec_freq_masks, spec_freq_width, augment_snr_db, gain_db, shift_ms
    )
    transform = make_transform(sample_rate, features, n_mels, n_mfcc, **augment)
    splits = [take(split[name]) for name in ("train", "val", "test")]
    cached = str(path) if path else None
    return keyword_bundle(*splits, words, transform, clip_seconds, voices=split, generator=espeak, cache=cached)


# ---------------------------------------------------------------------------------------------
# Digit strings for transcription (CTC)


def _generate_sequences(
    n_utterances, min_digits, max_digits, voices, speeds, pitches, noise_snr_db, sample_rate, seed
) -> dict:
    jobs = []
    for v, voice in enumerate(voices):
        count = n_utterances // len(voices) + (v < n_utterances % len(voices))
        digits_rng = _job_rng(seed, voice, 0, 1)
        sequences = [digits_rng.integers(0, 10, digits_rng.integers(min_digits, max_digits + 1)) for _ in range(count)]
        for k, speed in enumerate(speeds):
            mine = sequences[k :: len(speeds)]
            if mine:
                texts = [" ".join(DIGITS[d] for d in seq) for seq in mine]
                jobs.append(_job(seed, 1, voice, v, speed, pitches, texts, digits=mine))

    def finish(job, pieces):
        clips = []
        for piece in _to_rate(pieces, sample_rate):
            clip, speech = _pad_utterance(piece, sample_rate, job["rng"])
            clips.append(_finish(clip[None], [speech], job["rng"], noise_snr_db)[0])
        return clips

    clips = [clip for done in _run_jobs(jobs, finish, f"{n_utterances} spoken digit strings") for clip in done]
    digits = [np.pad(seq, (0, max_digits - len(seq)), constant_values=-1) for job in jobs for seq in job["digits"]]
    voice_ids, speed_of, pitch_of = ([job[k] for job in jobs for _ in job["digits"]] for k in ("v", "speed", "pitch"))
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    return {
        "samples": np.concatenate(clips),
        "offsets": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        "lengths": lengths,
        "digits": np.array(digits, dtype=np.int8).reshape(len(clips), max_digits),
        "voice": np.array(voice_ids, dtype=np.int16),
        "speed": np.array(speed_of, dtype=np.int16),
        "pitch": np.array(pitch_of, dtype=np.int16),
        "voices": np.array(voices),
    }


@register_dataset(modality="speech")
def spoken_digit_sequences(
    *,
    n_utterances=3000,
    min_digits=2,
    max_digits=4,
    n_voices=None,
    voices=None,
    speeds=SPEEDS,
    pitches=PITCHES,
    noise_snr_db=(10, 30),
    sample_rate=16000,
    seed=0,
    cache=True,
    val_voices=0.1,
    test_voices=0.1,
    features="logmel",
    n_mels=40,
    n_mfcc=13,
    spec_time_masks=2,
    spec_time_width=20,
    spec_freq_masks=2,
    spec_freq_width=8,
    augment_snr_db=None,
    gain_db=6.0,
):
    """Transcription offline: strings of 2-4 spoken digits ("three seven one") by 96 espeak-ng voices.

    n_utterances strings, shared evenly among the voices (as spoken_words: speeds, seeded
    pitches, noise at a seeded SNR, by-voice val/test, cached). Transcripts are the digit words;
    the alphabet (0 = CTC blank, 1 = space, then letters) is that of the ten digit words, the
    same for every option. Splits give (float32 waveform, character ids) items and `collate`.
    """
    if not 1 <= min_digits <= max_digits <= 20:
        raise GroveError(f"need 1 <= min_digits <= max_digits <= 20, got {min_digits} and {max_digits}")
    _check_speech_options(speeds, pitches, noise_snr_db, sample_rate)
    espeak = espeak_version()
    chosen = _choose_voices(voices, n_voices, seed)
    if n_utterances < len(chosen):
        raise GroveError(f"n_utterances ({n_utterances}) must be at least the number of voices ({len(chosen)})")
    snr = list(noise_snr_db) if noise_snr_db is not None else None
    options = {
        "espeak": espeak,
        "n_utterances": n_utterances,
        "min_digits": min_digits,
        "max_digits": max_digits,
        "voices": chosen,
        "speeds": list(speeds),
        "pitches": list(pitches),
        "noise_snr_db": snr,
        "sample_rate": sample_rate,
        "seed": seed,
    }
    arrays, path = _cached(
        "digits",
        options,
        {"samples", "offsets", "lengths", "digits", "voice"},
        lambda: _generate_sequences(
            n_utterances, min_digits, max_digits, chosen, speeds, pitches, snr, sample_rate, seed
        ),
        cache,
    )
    alphabet = build_alphabet(DIGITS)
    transcripts = [" ".join(DIGITS[d] for d in row if d >= 0) for row in arrays["digits"]]
    voice_of = [chosen[v] for v in arrays["voice"]]
    samples = torch.from_numpy(arrays["samples"])
    offsets, lengths = torch.from_numpy(arrays["offsets"]), torch.from_numpy(arrays["lengths"])
    split = split_voices(chosen, val_voices, test_voices, seed)

    def take(names: list[str]) -> VoiceTranscriptionArrays | None:
        if not names:
            return None
        wanted = set(names)
        index = [i for i, v in enumerate(voice_of) if v in wanted]
        return VoiceTranscriptionArrays(
            samples,
            offsets[index],
            lengths[index],
            [encode_transcript(transcripts[i], alphabet) for i in index],
            [f"spoken_digit_sequences #{i} ({voice_of[i]}: {transcripts[i]})" for i in index],
            voices=[voice_of[i] for i in index],
        )

    augment = augment_options(
        spec_time_masks, spec_time_width, spec_freq_masks, spec_freq_width, augment_snr_db, gain_db, 0.0
    )
    transform = make_transform(sample_rate, features, n_mels, n_mfcc, **augment)
    splits = [take(split[name]) for name in ("train", "val", "test")]
    cached = str(path) if path else None
    return transcription_bundle(*splits, alphabet, transform, voices=split, generator=espeak, cache=cached)
