"""The nested `features:` and `augment:` sections of every speech data set's recipe.

    data:
      name: spoken_words
      features: {n_mels: 40, n_mfcc: 13}      # MFCCs; without n_mfcc, log-mel features
      augment: {shift_ms: 50, spec_time_masks: 0}

Each section becomes a frozen dataclass whose defaults live here and nowhere else. A key that is
not an option, or a value of the wrong type, is a one-line GroveError naming `data.features.KEY`
or `data.augment.KEY`. Keyword clips and transcribed utterances differ only in their augmentation
defaults (KEYWORD_AUGMENT, TRANSCRIPTION_AUGMENT).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from grove.errors import GroveError, did_you_mean

FEATURES, AUGMENT = "data.features", "data.augment"


@dataclass(frozen=True)
class FeatureOptions:
    """The front end: log-mel (or MFCC) features of short windows of the waveform."""

    n_mels: int = 40  # the usual keyword-spotting and CTC front end (Speech Commands baselines)
    n_mfcc: int | None = None  # None: log-mel features; a number: that many MFCCs of the log-mel
    window_ms: float = 25.0  # 25 ms windows every 10 ms: the standard speech framing
    hop_ms: float = 10.0
    # Each utterance's features to mean 0, std 1 per bin, with the statistics of its speech frames
    # (within SPEECH_DB of its loudest), so they do not depend on how much silence surrounds the
    # speech; "utterance": over every frame (runs made before this option).
    normalize: Literal["speech", "utterance"] = "speech"
    # The log-mel floored at this many dB below the utterance's loudest cell (librosa's top_db), so
    # digital silence and a quiet room's hum look alike; null: no floor (runs made before it).
    top_db: float | None = 50.0

    def __post_init__(self):
        for name in ("n_mels", "window_ms", "hop_ms"):
            if getattr(self, name) <= 0:
                raise GroveError(f"recipe key '{FEATURES}.{name}' must be positive (got {getattr(self, name)})")
        if self.top_db is not None and self.top_db <= 0:
            raise GroveError(f"recipe key '{FEATURES}.top_db' must be positive dB, or null for no floor (got {self.top_db})")
        if self.n_mfcc is not None and not 0 < self.n_mfcc <= self.n_mels:
            raise GroveError(f"recipe key '{FEATURES}.n_mfcc' must be 1 to n_mels ({self.n_mels}), got {self.n_mfcc}")

    @property
    def out_features(self) -> int:
        """Feature bins per frame: what a model takes as `in_features`."""
        return self.n_mfcc or self.n_mels


@dataclass(frozen=True)
class AugmentOptions:
    """Training-time augmentation, for the ways people record: on the waveform, in the order
    applied, a random time shift (fixed-length clips) or added leading/trailing silence
    (utterances), speed perturbation, room reverberation, additive noise and gain with clipping;
    on the normalised features, SpecAugment masks. Ranges are [low, high]; null turns one off."""

    shift_ms: float = 100.0  # clips moved by up to +-100 ms (TensorFlow's Speech Commands pipeline)
    silence_s: float = 0.0  # utterances: up to this much leading (and trailing) silence, each on half
    speed: tuple[float, ...] | None = (0.9, 1.1)  # speed perturbation (Ko et al., 2015)
    reverb_p: float = 0.25  # the share of utterances heard in a synthetic room ...
    reverb_rt60_s: tuple[float, ...] = (0.1, 0.6)  # ... whose RT60 is drawn in this range
    noise_snr_db: tuple[float, ...] | None = (10.0, 50.0)  # white/pink/brown/babble noise at an SNR in it
    gain_db: tuple[float, ...] | float | None = (-20.0, 6.0)  # level change, then clipping at full scale
    spec_time_masks: int = 2  # SpecAugment (Park et al., 2019): masks per utterance ...
    spec_time_width: int = 10  # ... of up to this many frames
    spec_freq_masks: int = 2
    spec_freq_width: int = 5  # feature bins

    def __post_init__(self):
        if isinstance(self.gain_db, (int, float)):  # a single number is +-that (older run directories)
            if self.gain_db < 0:
                raise GroveError(f"recipe key '{AUGMENT}.gain_db' cannot be negative as one number, +-dB (got {self.gain_db})")
            object.__setattr__(self, "gain_db", (-float(self.gain_db), float(self.gain_db)))
        for name in ("shift_ms", "silence_s", "spec_time_masks", "spec_time_width", "spec_freq_masks", "spec_freq_width"):
            if getattr(self, name) < 0:
                raise GroveError(f"recipe key '{AUGMENT}.{name}' cannot be negative (got {getattr(self, name)})")
        if not 0 <= self.reverb_p <= 1:
            raise GroveError(f"recipe key '{AUGMENT}.reverb_p' is a probability, 0 to 1 (got {self.reverb_p})")
        for name, low, high, unit in (
            ("speed", 0.5, 2.0, "rates such as [0.9, 1.1]"),
            ("reverb_rt60_s", 0.01, 3.0, "seconds such as [0.1, 0.6]"),
            ("noise_snr_db", -20.0, 100.0, "dB such as [5, 40]"),
            ("gain_db", -60.0, 40.0, "dB such as [-20, 6]"),
        ):
            bounds = getattr(self, name)
            if bounds is None:  # turned off (reverb_rt60_s cannot be: pydantic refuses null there)
                continue
            if len(bounds) != 2 or not low <= bounds[0] <= bounds[1] <= high:
                raise GroveError(
                    f"recipe key '{AUGMENT}.{name}' must be [low, high] in {unit}, within {low:g} to {high:g} "
                    f"(got {list(bounds)})"
                )
            object.__setattr__(self, name, (float(bounds[0]), float(bounds[1])))


KEYWORD_AUGMENT = AugmentOptions()
# Utterances are not shifted (they are not cut to a clip) but get leading and trailing silence,
# and are long enough for wider masks (the SpecAugment paper's LibriSpeech policy masks up to 27
# bins of 80 and 100 frames).
TRANSCRIPTION_AUGMENT = AugmentOptions(shift_ms=0.0, silence_s=0.5, spec_time_width=20, spec_freq_width=8)
NO_AUGMENT = AugmentOptions(
    shift_ms=0.0, silence_s=0.0, speed=None, reverb_p=0.0, noise_snr_db=None, gain_db=None,
    spec_time_masks=0, spec_time_width=0, spec_freq_masks=0, spec_freq_width=0,
)

Options = TypeVar("Options", FeatureOptions, AugmentOptions)


def parse_features(raw: Mapping[str, Any] | None) -> FeatureOptions:
    """A recipe's `data.features` mapping (None: every default) as FeatureOptions."""
    return _parse(FEATURES, raw, FeatureOptions(), example="{n_mels: 40}")


def parse_augment(raw: Mapping[str, Any] | None) -> AugmentOptions:
    """A keyword data set's `data.augment` mapping (None: every default) as AugmentOptions over
    KEYWORD_AUGMENT; added silence is refused, since a clip's word is placed by its time shift."""
    return _parse_augment(
        raw, KEYWORD_AUGMENT, "silence_s", "{shift_ms: 50, spec_time_masks: 0}",
        "applies to transcribed utterances only; a keyword clip's word is moved inside its clip by shift_ms",
    )


def parse_transcription_augment(raw: Mapping[str, Any] | None) -> AugmentOptions:
    """A transcription data set's `data.augment` as AugmentOptions over TRANSCRIPTION_AUGMENT; a
    time shift is refused, since variable-length utterances get added silence instead."""
    return _parse_augment(
        raw, TRANSCRIPTION_AUGMENT, "shift_ms", "{silence_s: 0.5, spec_time_masks: 0}",
        "applies to fixed-length keyword clips only; transcribed utterances are not shifted but get "
        "leading and trailing silence (silence_s)",
    )


def _parse_augment(raw, defaults: AugmentOptions, refused: str, example: str, why: str) -> AugmentOptions:
    options = _parse(AUGMENT, raw, defaults, example=example)
    if getattr(options, refused):
        raise GroveError(f"recipe key '{AUGMENT}.{refused}' {why}: remove it")
    return options


def _parse(section: str, raw: Mapping[str, Any] | None, defaults: Options, example: str) -> Options:
    if raw is None:
        return defaults
    if not isinstance(raw, Mapping):
        hint = " (MFCC features are data.features.n_mfcc=13)" if section == FEATURES and raw == "mfcc" else ""
        raise GroveError(f"recipe key '{section}' must be a mapping of options such as {example}, got {raw!r}{hint}")
    names = [f.name for f in fields(defaults)]
    for key in raw:
        if key not in names:
            raise GroveError(
                f"unknown recipe key '{section}.{key}'{did_you_mean(key, names)}; {section} takes: {', '.join(names)}"
            )
    try:
        # pydantic checks each value against its field's type (YAML lists become tuples); the
        # dataclass's own __post_init__ then checks ranges.
        return TypeAdapter(type(defaults)).validate_python({**as_dict(defaults), **raw})
    except ValidationError as err:
        error = err.errors()[0]
        key = ".".join(str(part) for part in error["loc"][:1])
        raise GroveError(f"recipe key '{section}.{key}': {error['msg'][0].lower()}{error['msg'][1:]} (got {raw.get(key)!r})") from None


def as_dict(options: FeatureOptions | AugmentOptions) -> dict:
    """The options as JSON-able values (tuples as lists), by field name."""
    return {f.name: _plain(getattr(options, f.name)) for f in fields(options)}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
