"""Audio data sets from files: keyword clips in class folders and Speech Commands, transcribed
utterances from manifests and LibriSpeech.

Splits give 1-D float32 waveforms; the bundle's `AudioTransform` turns batches of them into
features on the training device. Every builder takes the nested recipe sections `features:` and
`augment:` (grove.data.audio.options).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from grove.data.audio.features import AudioTransform
from grove.data.audio.io import AUDIO_EXTENSIONS, fix_length, header_length, read_audio
from grove.data.audio.options import parse_augment, parse_features, parse_transcription_augment
from grove.data.audio.transcripts import BLANK, TranscriptionFiles, build_alphabet, read_manifest
from grove.data.base import SPLITS, DataBundle, Split, class_index, unknown_label, wanted_splits
from grove.data.download import COMPLETE, data_dir, extract_archive, fetch
from grove.data.folders import list_files, scan_folders
from grove.errors import GroveError
from grove.registry import register_dataset

BACKGROUND_NOISE = "_background_noise_"
SILENCE, UNKNOWN = "_silence_", "_unknown_"
COMMAND_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")

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
LibriSpeechSubset = Literal[
    "dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360", "train-other-500"
]


# ---------------------------------------------------------------------------------------------
# Split type and bundles (spoken_words builds its bundles here too)


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
# Keyword clips


@register_dataset(modality="audio")
def audio_folder(
    *,
    root: str | Path | None = None,
    sample_rate: int = 16000,
    clip_seconds: float = 1.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    features: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    splits: list[Split] | None = None,
    classes: list[str] | None = None,
):
    """Your own keyword clips in folders: root/<word>/*.wav, or root/{train,val,test}/<word>/*.wav.

    The two layouts of grove.data.folders: split folders are used as they are (val_fraction of
    train/ is held out when there is no val/); in class folders, root/validation_list.txt and
    root/testing_list.txt (paths relative to root) are honoured, else val_fraction and
    test_fraction are held out, a speaker's clips together (Speech Commands' <speaker>_nohash_
    names). `_background_noise_` is not a class. Clips are padded or cut to clip_seconds.
    `splits` builds only those (in split folders only their folders, and train/ where needed, are
    read); `classes` names the words label ids map to, in place of the sorted word folders.
    """
    if root is None:
        raise GroveError("data.root is required for audio_folder: pass data.root=/path/to/clips (with <word>/ folders)")
    feature_options, augment_options = parse_features(features), parse_augment(augment)
    found = scan_folders(
        root,
        AUDIO_EXTENSIONS,
        what="audio files",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        ignore=(BACKGROUND_NOISE,),
        group=_speaker,
        splits=splits,
        classes=classes,
    )
    clip = round(clip_seconds * sample_rate)
    train, val, test = (
        KeywordClips(items, sample_rate, clip) if items else None for items in (found.train, found.val, found.test)
    )
    transform = AudioTransform(sample_rate, feature_options, augment_options)
    return keyword_bundle(train, val, test, found.classes, transform, clip_seconds, layout=found.layout)


def _speaker(rel: str) -> str:
    # Speech Commands names files <speaker>_nohash_<n>.wav: all of a speaker's clips, of every
    # word, share a split (as its own which_set() does); other files are split one by one.
    name = rel.rsplit("/", 1)[-1]
    return name.split("_nohash_")[0] if "_nohash_" in name else rel


@register_dataset(modality="audio")
def speech_commands(
    *,
    root: str | Path | None = None,
    version: Literal[1, 2] = 2,
    classes: Literal[12, 30, 35] | list[str] = 12,
    silence_fraction: float = 0.1,
    unknown_fraction: float = 0.1,
    sample_rate: int = 16000,
    seed: int = 0,
    features: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    splits: list[Split] | None = None,
):
    """Google Speech Commands v1/v2: 1 s clips of 30/35 words (downloads the 2.3 GB archive).

    classes=12 is the standard benchmark: yes no up down left right on off stop go, `_silence_`
    (slices of the background-noise recordings) and `_unknown_` (other words); per split,
    silence and unknown clips number silence_fraction and unknown_fraction of the command clips,
    as TensorFlow's reference input pipeline makes them. classes=35 (v2) or 30 (v1) keeps every
    word. classes may also be the class names themselves, in label order (as a trained run passes
    them back): words not among them are `_unknown_` where that is a class, and `_silence_`
    clips are made where it is one. The official validation_list.txt and testing_list.txt give
    val and test; `splits` builds only those. Looks in `root` (an extracted copy, or a folder
    holding the .tar.gz), else data_dir()/speech_commands.
    """
    if version not in SPEECH_COMMANDS_WORDS:
        raise GroveError(f"Speech Commands version must be 1 or 2, got {version}")
    wanted = wanted_splits(splits)
    feature_options, augment_options = parse_features(features), parse_augment(augment)
    folder = _speech_commands_folder(root, version)
    # The fractions serve only for a copy without the official split lists.
    found = scan_folders(
        folder,
        AUDIO_EXTENSIONS,
        what="audio files",
        val_fraction=0.1,
        test_fraction=0.1,
        seed=seed,
        ignore=(BACKGROUND_NOISE,),
        group=_speaker,
        splits=splits,
    )
    clip = sample_rate  # every Speech Commands clip is at most 1 s
    words = found.classes
    if classes == 12:
        names = [SILENCE, UNKNOWN, *COMMAND_WORDS]
    elif isinstance(classes, list):
        names = list(classes)
        class_index(names)
    elif classes == len(words) and classes == SPEECH_COMMANDS_WORDS[version]:
        names = words
    else:
        raise GroveError(
            f"classes must be 12 (10 commands, _silence_, _unknown_) or {SPEECH_COMMANDS_WORDS[version]} "
            f"(every word of v{version}); got {classes} ({len(words)} word folders in {folder})"
        )
    noise = _background_files(folder, sample_rate, clip) if SILENCE in names and silence_fraction else []
    # Each split draws from its own seed (seed + its place in train, val, test), so building
    # one split alone gives what building all of them gives.
    train, val, test = (
        KeywordClips(
            _keyword_entries(items, words, names, noise, clip, silence_fraction, unknown_fraction, seed + k),
            sample_rate,
            clip,
        )
        if name in wanted and items
        else None
        for k, (name, items) in enumerate(zip(SPLITS, (found.train, found.val, found.test)))
    )
    transform = AudioTransform(sample_rate, feature_options, augment_options)
    return keyword_bundle(train, val, test, names, transform, 1.0, version=version)


def _speech_commands_folder(root, version: int) -> Path:
    folder = Path(root).expanduser() if root else data_dir() / "speech_commands"
    if (folder / "yes").is_dir():
        return folder
    name = f"speech_commands_v0.0{version}"
    extracted = folder / name
    if not (extracted / COMPLETE).exists():
        archive = fetch(
            SPEECH_COMMANDS_URL.format(version=version),
            folder / f"{name}.tar.gz",
            what=f"the Speech Commands v{version} archive",
        )
        extract_archive(archive, extracted)
    return extracted


def _background_files(folder: Path, sample_rate: int, clip: int) -> list[tuple[str, int]]:
    """(path, length in samples at sample_rate) of each background-noise file at least a clip long."""
    noise_dir = folder / BACKGROUND_NOISE
    files = list_files(noise_dir, AUDIO_EXTENSIONS) if noise_dir.is_dir() else []
    lengths = [(f, header_length(f, sample_rate)) for f in files]
    usable = [(f, n) for f, n in lengths if n >= clip]
    if not usable:
        raise GroveError(
            f"the _silence_ class is cut from {noise_dir}/*.wav, and there is no usable file there; "
            "add background noise recordings or set data.silence_fraction=0"
        )
    return usable


def _keyword_entries(
    items, words: list[str], names: list[str], noise, clip: int, silence_fraction: float, unknown_fraction: float,
    seed: int,
) -> list[tuple]:
    """items: (path, index in words) -> (path, index in names); where names has `_unknown_`, the
    other words' clips are its candidates (unknown_fraction of the known clips are drawn), and
    `noise` gives the (path, silence label, offset, volume) entries of _silence_ clips."""
    rng = np.random.default_rng(seed)
    index = {c: i for i, c in enumerate(names) if c not in (SILENCE, UNKNOWN)}
    known = [(f, index[words[w]]) for f, w in items if words[w] in index]
    others = [(f, w) for f, w in items if words[w] not in index]
    if others and UNKNOWN not in names:
        path, w = others[0]
        raise unknown_label(words[w], path, names, given=True)
    unknown = [(f, names.index(UNKNOWN)) for f, _ in others]
    n_unknown = min(len(unknown), math.ceil(len(known) * unknown_fraction))
    picked = [unknown[i] for i in sorted(rng.choice(len(unknown), n_unknown, replace=False))] if n_unknown else []
    silence = []
    for _ in range(math.ceil(len(known) * silence_fraction) if noise else 0):
        path, length = noise[rng.integers(len(noise))]
        silence.append((path, names.index(SILENCE), int(rng.integers(0, length - clip + 1)), float(rng.uniform())))
    return known + picked + silence


# ---------------------------------------------------------------------------------------------
# Transcribed utterances


def _transcribed_files(read, sources: tuple, splits, alphabet, sample_rate, features, augment, **meta) -> DataBundle:
    """The bundle of TranscriptionFiles splits (those in `splits`; `meta` is transcription_bundle's);
    read(source) gives (files, transcripts) for a split's source (a manifest, a subset; None: no such
    split). The alphabet is that of the training transcripts unless given (a trained run's)."""
    feature_options, augment_options = parse_features(features), parse_transcription_augment(augment)
    wanted = wanted_splits(splits)
    lists: dict = {}

    def listed(source):
        if source not in lists:  # the train list serves the alphabet and the train split
            lists[source] = read(source)
        return lists[source]

    if alphabet is None:
        alphabet = build_alphabet(listed(sources[0])[1])
    elif len(alphabet) < 3 or list(alphabet[:2]) != [BLANK, " "] or len(set(alphabet)) != len(alphabet):
        raise GroveError(
            f"classes must be a CTC alphabet: {BLANK!r}, ' ', then distinct characters; got {list(alphabet)[:10]}"
        )
    alphabet = list(alphabet)
    data = [
        TranscriptionFiles(*listed(source), alphabet, sample_rate) if source and name in wanted else None
        for name, source in zip(SPLITS, sources)
    ]
    transform = AudioTransform(sample_rate, feature_options, augment_options)
    return transcription_bundle(*data, alphabet, transform, **meta)


@register_dataset(modality="audio")
def audio_manifest(
    *,
    root: str | Path | None = None,
    train: str = "train.csv",
    val: str = "dev.csv",
    test: str | None = None,
    sample_rate: int = 16000,
    features: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    splits: list[Split] | None = None,
    classes: list[str] | None = None,
):
    """Your own transcribed utterances: CSV (path,transcript) or JSONL manifests per split.

    Manifests are looked up in `root`; audio paths are relative to their manifest. The alphabet
    is the lower-cased characters of the training transcripts (0 = CTC blank, 1 = space); other
    characters in val/test are dropped. `splits` reads only those manifests; `classes` is the
    alphabet (a trained run's), so that the train manifest is not read for it.
    """
    if root is None:
        raise GroveError("data.root is required for audio_manifest: pass data.root=/folder/with/train.csv")
    root = Path(root).expanduser()
    return _transcribed_files(
        lambda name: read_manifest(root / name), (train, val, test), splits, classes, sample_rate, features, augment
    )


@register_dataset(modality="audio")
def librispeech(
    *,
    root: str | Path | None = None,
    subset: LibriSpeechSubset = "train-clean-100",
    val_subset: LibriSpeechSubset = "dev-clean",
    test_subset: LibriSpeechSubset | None = None,
    sample_rate: int = 16000,
    features: dict[str, Any] | None = None,
    augment: dict[str, Any] | None = None,
    splits: list[Split] | None = None,
    classes: list[str] | None = None,
):
    """LibriSpeech read English (OpenSLR 12): subset trains, val_subset validates (downloads them).

    Subsets: dev-clean, dev-other, test-clean, test-other, train-clean-100, train-clean-360,
    train-other-500. Looks for root/LibriSpeech/<subset> (or root/<subset>), else downloads and
    extracts <subset>.tar.gz into root (default data_dir()/librispeech). Character alphabet,
    `splits` and `classes` as audio_manifest: with both, only the asked subsets are read (or
    downloaded).
    """
    folder = Path(root).expanduser() if root else data_dir() / "librispeech"
    subsets = (subset, val_subset, test_subset)
    return _transcribed_files(
        lambda name: _librispeech_subset(folder, name), subsets, splits, classes, sample_rate, features, augment,
        subsets=list(subsets),
    )


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
        where = extract_archive(archive, folder / "LibriSpeech" / subset, member=f"LibriSpeech/{subset}")
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
