"""Real speech without a download: words and digit strings spoken by espeak-ng's English voices.

Each item is spoken by every chosen voice (grove.data.espeak: 96 accent+variant voices, several
speeds and pitches), placed and mixed with noise from generators seeded by (seed, voice, speed),
so a data set is the same for the same options and espeak-ng build. It is cached in a folder
data_dir()/spoken_words/<kind>-<hash>/ as one int16 .npz per voice (each written atomically).

Splits are by voice: val and test voices never speak in training. A voice's audio does not depend
on the other voices, so `splits` speaks (or reads from the cache) only the voices of those splits.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grove.data.audio.datasets import keyword_bundle, transcription_bundle
from grove.data.audio.features import AudioTransform
from grove.data.audio.options import parse_augment, parse_features, parse_transcription_augment
from grove.data.audio.transcripts import TranscriptionArrays, build_alphabet, encode_transcript
from grove.data.base import SPLITS, Split, TensorData, relabel, wanted_splits
from grove.data.download import data_dir
from grove.data.espeak import (
    default_voices,
    espeak_version,
    finish_clips,
    job_rng,
    make_job,
    pad_utterance,
    place_word,
    run_jobs,
    to_rate,
)
from grove.errors import GroveError
from grove.files import atomic_file
from grove.registry import register_dataset

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "forward", "backward")
SPEEDS = (130, 165, 200)  # words per minute; espeak-ng's default is 175
PITCHES = (30, 45, 60, 75)  # 0-99; espeak-ng's default is 50
GENERATOR_VERSION = 3  # bump when the generated audio changes, so old caches are not reused


# ---------------------------------------------------------------------------------------------
# The cache


def cache_folder(kind: str, options: dict) -> Path:
    """data_dir()/spoken_words/<kind>-<hash>/, a file per voice; the options include the espeak-ng
    version and every voice chosen."""
    key = json.dumps({"kind": kind, "generator": GENERATOR_VERSION, **options}, sort_keys=True)
    return data_dir() / "spoken_words" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def voice_file(folder: Path, v: int, voice: str) -> Path:
    """The cache file of voice number v: numbered, so two voice names that map to one file name
    cannot collide."""
    return folder / f"{v:03d}_{re.sub(r'[^A-Za-z0-9+._-]', '_', voice)}.npz"


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


def save_cache(path: Path, arrays: dict) -> bool:
    """np.savez to `path`, which appears only once complete (grove.files.atomic_file); False
    (and a warning) when it cannot be written."""
    try:
        with atomic_file(path) as f:
            np.savez(f, **arrays)
    except OSError as e:  # a full or read-only disk costs the cache, not the run
        print(
            f"could not cache the generated audio at {path} ({e}); it will be generated again next time",
            file=sys.stderr,
        )
        return False
    return True


def _cached_voices(
    kind: str, options: dict, voices: list[str], numbers: list[int], keys: set[str], generate, cache: bool
) -> tuple[dict[int, dict], Path | None]:
    """{v: arrays} for the voice numbers asked: read from the cache, the missing ones made by
    generate(missing numbers) -> {v: arrays} in one batch and cached; the cache folder or None."""
    folder = cache_folder(kind, options)
    found = {}
    for v in numbers if cache else ():
        arrays = _load_cache(voice_file(folder, v, voices[v]), keys)
        if arrays is not None:
            found[v] = arrays
    missing = [v for v in numbers if v not in found]
    if missing:
        made = generate(missing)
        for v in missing if cache else ():
            if not save_cache(voice_file(folder, v, voices[v]), made[v]):
                break  # one warning is enough: the next file would fail as this one did
        found.update(made)
    return found, folder if cache else None


def _voice_numbers(voices: list[str], names) -> list[int]:
    """The numbers (places in `voices`) of the voices named."""
    names = set(names)
    return [v for v, voice in enumerate(voices) if voice in names]


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


def _check_speech_options(speeds, pitches, noise_snr_db, sample_rate) -> tuple[list, list, list | None]:
    """(speeds, pitches, noise_snr_db) as plain lists of int, int and float: the cache key must not
    depend on whether a value came as 10 or 10.0, a tuple or a list."""
    if not speeds or not all(80 <= s <= 450 for s in speeds):
        raise GroveError(f"speeds are espeak-ng words per minute, 80 to 450; got {speeds}")
    if not pitches or not all(0 <= p <= 99 for p in pitches):
        raise GroveError(f"pitches are espeak-ng pitches, 0 to 99; got {pitches}")
    if noise_snr_db is not None and (len(noise_snr_db) != 2 or noise_snr_db[0] > noise_snr_db[1]):
        raise GroveError(f"noise_snr_db must be [low, high] in dB or null, got {noise_snr_db}")
    if sample_rate < 8000:
        raise GroveError(f"sample_rate must be at least 8000, got {sample_rate}")
    snr = [float(x) for x in noise_snr_db] if noise_snr_db is not None else None
    return [int(s) for s in speeds], [int(p) for p in pitches], snr


@dataclass(frozen=True)
class Speakers:
    """Who speaks, and how: the options both data sets share, checked; all of them key the cache."""

    espeak: str  # espeak-ng's version: another build may speak differently
    voices: list[str]  # the chosen voices; voice number v is voices[v]
    speeds: list[int]
    pitches: list[int]
    noise_snr_db: list[float] | None
    sample_rate: int
    seed: int


def _speakers(voices, n_voices, speeds, pitches, noise_snr_db, sample_rate, seed: int) -> Speakers:
    speeds, pitches, snr = _check_speech_options(speeds, pitches, noise_snr_db, sample_rate)
    return Speakers(espeak_version(), _choose_voices(voices, n_voices, seed), speeds, pitches, snr, sample_rate, seed)


def _spoken_splits(
    kind: str, speakers: Speakers, options: dict, keys: set[str], generate, take, val_voices, test_voices, splits, cache
) -> tuple[dict[str, list[str]], list, str | None]:
    """(the voices of each split, [train, val, test] data, the cache folder or None).

    Only the voices of the wanted splits speak, or are read from the cache: generate(voice
    numbers) -> {v: arrays} makes those the cache (keyed by the speakers and `options`) lacks;
    take(voice numbers, {v: arrays}) gives a split's data, None for a split not wanted or voiceless.
    """
    chosen = speakers.voices
    split = split_voices(chosen, val_voices, test_voices, speakers.seed)
    wanted = wanted_splits(splits)
    speaking = _voice_numbers(chosen, [voice for name in wanted for voice in split[name]])
    per_voice, folder = _cached_voices(kind, {**asdict(speakers), **options}, chosen, speaking, keys, generate, cache)

    def data(name: str):
        numbers = _voice_numbers(chosen, split[name])
        return take(numbers, per_voice) if name in wanted and numbers else None

    return split, [data(name) for name in SPLITS], str(folder) if folder else None


class VoiceTensorData(TensorData):
    """TensorData whose `voices[i]` names the voice that spoke item i."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, voices: list[str], source: str):
        super().__init__(inputs, targets, source)
        self.voices = voices

    def path(self, i: int) -> str:
        return f"{self.source} #{i} ({self.voices[i]})"


class VoiceTranscriptionArrays(TranscriptionArrays):
    """TranscriptionArrays whose `voices[i]` names the voice that spoke item i."""

    def __init__(self, *args, voices: list[str]):
        super().__init__(*args)
        self.voices = voices


# ---------------------------------------------------------------------------------------------
# Keyword spotting


def _generate_words(words, clip_seconds, speakers: Speakers, numbers) -> dict[int, dict]:
    """{v: arrays} for the voice numbers v: every word at every speed, (words x speeds) int16 clips."""
    sample_rate, speeds = speakers.sample_rate, speakers.speeds
    length = round(clip_seconds * sample_rate)
    jobs = [
        make_job(speakers.seed, 0, speakers.voices[v], v, speed, speakers.pitches, list(words))
        for v in numbers
        for speed in speeds
    ]

    def finish(job, pieces):
        placed = [place_word(piece, length, job["rng"]) for piece in to_rate(pieces, sample_rate)]
        clips = np.stack([c for c, _ in placed])
        return finish_clips(clips, [s for _, s in placed], job["rng"], speakers.noise_snr_db)

    clips = run_jobs(jobs, finish, f"{len(jobs) * len(words)} spoken-word clips")
    per_voice = {}
    for k, v in enumerate(numbers):
        mine = jobs[k * len(speeds) : (k + 1) * len(speeds)]
        per_voice[v] = {
            "audio": np.concatenate(clips[k * len(speeds) : (k + 1) * len(speeds)]),
            "label": np.tile(np.arange(len(words), dtype=np.int16), len(speeds)),
            "speed": np.repeat(np.array([j["speed"] for j in mine], dtype=np.int16), len(words)),
            "pitch": np.repeat(np.array([j["pitch"] for j in mine], dtype=np.int16), len(words)),
        }
    return per_voice


@register_dataset(modality="audio")
def spoken_words(
    *,
    words: list[str] | None = None,
    n_voices: int | None = None,
    voices: list[str] | None = None,
    speeds: Sequence[int] = SPEEDS,
    pitches: Sequence[int] = PITCHES,
    noise_snr_db: tuple[float, float] | None = (10.0, 60.0),
    sample_rate: int = 16000,
    clip_seconds: float = 1.0,
    seed: int = 0,
    cache: bool = True,
    val_voices: int | float | list[str] = 0.1,
    test_voices: int | float | list[str] = 0.1,
    features: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    splits: list[Split] | None = None,
    classes: list[str] | None = None,
):
    """Keyword spotting offline: 22 words (digits and commands) by 96 espeak-ng voices (no download).

    The digits zero..nine and yes no up down left right on off stop go forward backward (or
    `words`), each spoken by every voice (`voices`, or n_voices of the 96 accent+variant voices)
    at every speed in `speeds` with a seeded pitch from `pitches`: 6,336 one-second clips by
    default, with noise mixed in at a seeded SNR in noise_snr_db (10 to 60 dB: from a noisy room to
    as good as clean, so models also hear noise-free recordings). val_voices and test_voices (a
    count, a fraction or a list of names) are held out: their voices never speak in training.
    Generated once (needs espeak-ng: scripts/install-system-deps.sh) and cached in
    data_dir()/spoken_words/. Splits hold int16 clips; `voices[i]` names each clip's voice.
    noise_snr_db is the noise in the data; data.augment.noise_snr_db adds more while training.
    `splits` speaks only the voices of those splits; `classes` names the words label ids map to.
    """
    words = list(words) if words is not None else list(DIGITS + COMMANDS)
    if not words or len(set(words)) != len(words) or not all(isinstance(w, str) and w.strip() for w in words):
        raise GroveError(f"words must be distinct non-empty strings, got {words}")
    feature_options, augment_options = parse_features(features), parse_augment(augment)
    speakers = _speakers(voices, n_voices, speeds, pitches, noise_snr_db, sample_rate, seed)

    def take(numbers: list[int], per_voice: dict[int, dict]) -> VoiceTensorData:
        audio = torch.from_numpy(np.concatenate([per_voice[v]["audio"] for v in numbers]))
        labels = torch.from_numpy(np.concatenate([per_voice[v]["label"] for v in numbers]).astype(np.int64))
        voice_names = [speakers.voices[v] for v in numbers for _ in range(len(per_voice[v]["label"]))]
        data = VoiceTensorData(audio, labels, voice_names, "spoken_words")
        return data if classes is None else relabel(data, words, classes)

    split, data, cached = _spoken_splits(
        "words", speakers, {"words": words, "clip_seconds": float(clip_seconds)}, {"audio", "label"},
        lambda numbers: _generate_words(words, clip_seconds, speakers, numbers),
        take, val_voices, test_voices, splits, cache,
    )
    transform = AudioTransform(sample_rate, feature_options, augment_options)
    return keyword_bundle(
        *data, classes or words, transform, clip_seconds, voices=split, generator=speakers.espeak, cache=cached
    )


# ---------------------------------------------------------------------------------------------
# Digit strings for transcription (CTC)


def _generate_sequences(n_utterances, min_digits, max_digits, speakers: Speakers, numbers) -> dict[int, dict]:
    """{v: arrays} for the voice numbers v: the voice's share of the n_utterances digit strings."""
    voices, speeds, sample_rate, seed = speakers.voices, speakers.speeds, speakers.sample_rate, speakers.seed
    jobs = []
    for v in numbers:
        voice = voices[v]
        count = _voice_count(n_utterances, len(voices), v)
        digits_rng = job_rng(seed, voice, 0, 1)
        sequences = [digits_rng.integers(0, 10, digits_rng.integers(min_digits, max_digits + 1)) for _ in range(count)]
        for k, speed in enumerate(speeds):
            mine = sequences[k :: len(speeds)]
            if mine:
                texts = [" ".join(DIGITS[d] for d in seq) for seq in mine]
                jobs.append(make_job(seed, 1, voice, v, speed, speakers.pitches, texts, digits=mine))

    def finish(job, pieces):
        clips = []
        for piece in to_rate(pieces, sample_rate):
            clip, speech = pad_utterance(piece, sample_rate, job["rng"])
            clips.append(finish_clips(clip[None], [speech], job["rng"], speakers.noise_snr_db)[0])
        return clips

    count = sum(len(job["digits"]) for job in jobs)
    done = run_jobs(jobs, finish, f"{count} spoken digit strings")
    per_voice = {}
    for v in numbers:
        mine = [k for k, job in enumerate(jobs) if job["v"] == v]
        clips = [clip for k in mine for clip in done[k]]
        sequences = [seq for k in mine for seq in jobs[k]["digits"]]
        digits = [np.pad(seq, (0, max_digits - len(seq)), constant_values=-1) for seq in sequences]
        per_voice[v] = {
            "samples": np.concatenate(clips),
            "lengths": np.array([len(c) for c in clips], dtype=np.int64),
            "digits": np.array(digits, dtype=np.int8).reshape(len(clips), max_digits),
            "speed": np.array([jobs[k]["speed"] for k in mine for _ in jobs[k]["digits"]], dtype=np.int16),
            "pitch": np.array([jobs[k]["pitch"] for k in mine for _ in jobs[k]["digits"]], dtype=np.int16),
        }
    return per_voice


@register_dataset(modality="audio")
def spoken_digit_sequences(
    *,
    n_utterances: int = 3000,
    min_digits: int = 2,
    max_digits: int = 4,
    n_voices: int | None = None,
    voices: list[str] | None = None,
    speeds: Sequence[int] = SPEEDS,
    pitches: Sequence[int] = PITCHES,
    noise_snr_db: tuple[float, float] | None = (10.0, 60.0),
    sample_rate: int = 16000,
    seed: int = 0,
    cache: bool = True,
    val_voices: int | float | list[str] = 0.1,
    test_voices: int | float | list[str] = 0.1,
    features: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    splits: list[Split] | None = None,
):
    """Transcription offline: strings of 2-4 spoken digits ("three seven one") by 96 espeak-ng voices.

    n_utterances strings, shared evenly among the voices (as spoken_words: speeds, seeded
    pitches, noise at a seeded SNR, by-voice val/test, cached). Transcripts are the digit words;
    the alphabet (0 = CTC blank, 1 = space, then letters) is that of the ten digit words, the
    same for every option. Splits give (float32 waveform, character ids) items and `collate`;
    `splits` speaks only the voices of those splits.
    """
    if not 1 <= min_digits <= max_digits <= 20:
        raise GroveError(f"need 1 <= min_digits <= max_digits <= 20, got {min_digits} and {max_digits}")
    feature_options, augment_options = parse_features(features), parse_transcription_augment(augment)
    speakers = _speakers(voices, n_voices, speeds, pitches, noise_snr_db, sample_rate, seed)
    n_chosen = len(speakers.voices)
    if n_utterances < n_chosen:
        raise GroveError(f"n_utterances ({n_utterances}) must be at least the number of voices ({n_chosen})")
    alphabet = build_alphabet(DIGITS)
    # Utterance i of the data set is numbered as in one array of every voice, in voice order, so
    # an item's name does not depend on which splits were built.
    first = np.cumsum([0] + [_voice_count(n_utterances, n_chosen, v) for v in range(n_chosen)])

    def take(numbers: list[int], per_voice: dict[int, dict]) -> VoiceTranscriptionArrays:
        lengths = np.concatenate([per_voice[v]["lengths"] for v in numbers])
        texts = [" ".join(DIGITS[d] for d in row if d >= 0) for v in numbers for row in per_voice[v]["digits"]]
        voice_names = [speakers.voices[v] for v in numbers for _ in per_voice[v]["lengths"]]
        ids = [int(first[v]) + i for v in numbers for i in range(len(per_voice[v]["lengths"]))]
        return VoiceTranscriptionArrays(
            torch.from_numpy(np.concatenate([per_voice[v]["samples"] for v in numbers])),
            torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)),
            torch.from_numpy(lengths),
            [encode_transcript(text, alphabet) for text in texts],
            [f"spoken_digit_sequences #{i} ({voice}: {text})" for i, voice, text in zip(ids, voice_names, texts)],
            voices=voice_names,
        )

    split, data, cached = _spoken_splits(
        "digits", speakers, {"n_utterances": n_utterances, "min_digits": min_digits, "max_digits": max_digits},
        {"samples", "lengths", "digits"},
        lambda numbers: _generate_sequences(n_utterances, min_digits, max_digits, speakers, numbers),
        take, val_voices, test_voices, splits, cache,
    )
    transform = AudioTransform(sample_rate, feature_options, augment_options)
    return transcription_bundle(*data, alphabet, transform, voices=split, generator=speakers.espeak, cache=cached)


def _voice_count(n_utterances: int, n_voices: int, v: int) -> int:
    """How many of the n_utterances digit strings voice number v speaks: an even share."""
    return n_utterances // n_voices + (v < n_utterances % n_voices)
