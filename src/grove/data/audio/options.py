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
from typing import Any, TypeVar

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

    def __post_init__(self):
        for name in ("n_mels", "window_ms", "hop_ms"):
            if getattr(self, name) <= 0:
                raise GroveError(f"recipe key '{FEATURES}.{name}' must be positive (got {getattr(self, name)})")
        if self.n_mfcc is not None and not 0 < self.n_mfcc <= self.n_mels:
            raise GroveError(f"recipe key '{FEATURES}.n_mfcc' must be 1 to n_mels ({self.n_mels}), got {self.n_mfcc}")

    @property
    def out_features(self) -> int:
        """Feature bins per frame: what a model takes as `in_features`."""
        return self.n_mfcc or self.n_mels


@dataclass(frozen=True)
class AugmentOptions:
    """Training-time augmentation, in the order applied: on the waveform a random time shift (fixed
    -length clips only), gain and additive noise; on the normalised features, SpecAugment masks."""

    shift_ms: float = 100.0  # clips moved by up to +-100 ms (TensorFlow's Speech Commands pipeline)
    gain_db: float = 6.0  # level drawn in +-6 dB
    noise_snr_db: tuple[float, ...] | None = None  # [low, high]: Gaussian noise at an SNR drawn in it
    spec_time_masks: int = 2  # SpecAugment (Park et al., 2019): masks per utterance ...
    spec_time_width: int = 10  # ... of up to this many frames
    spec_freq_masks: int = 2
    spec_freq_width: int = 5  # feature bins

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "noise_snr_db" and value < 0:
                raise GroveError(f"recipe key '{AUGMENT}.{f.name}' cannot be negative (got {value})")
        snr = self.noise_snr_db
        if snr is not None:
            if len(snr) != 2 or snr[0] > snr[1]:
                raise GroveError(f"recipe key '{AUGMENT}.noise_snr_db' must be [low, high] in dB (got {list(snr)})")
            object.__setattr__(self, "noise_snr_db", (float(snr[0]), float(snr[1])))


KEYWORD_AUGMENT = AugmentOptions()
# Utterances are not shifted (they are not cut to a clip), and are long enough for wider masks
# (the SpecAugment paper's LibriSpeech policy masks up to 27 bins of 80 and 100 frames).
TRANSCRIPTION_AUGMENT = AugmentOptions(shift_ms=0.0, spec_time_width=20, spec_freq_width=8)
NO_AUGMENT = AugmentOptions(0.0, 0.0, None, 0, 0, 0, 0)

Options = TypeVar("Options", FeatureOptions, AugmentOptions)


def parse_features(raw: Mapping[str, Any] | None) -> FeatureOptions:
    """A recipe's `data.features` mapping (None: every default) as FeatureOptions."""
    return _parse(FEATURES, raw, FeatureOptions(), example="{n_mels: 40}")


def parse_augment(raw: Mapping[str, Any] | None, defaults: AugmentOptions = KEYWORD_AUGMENT) -> AugmentOptions:
    """A recipe's `data.augment` mapping (None: every default) as AugmentOptions over `defaults`."""
    return _parse(AUGMENT, raw, defaults, example="{shift_ms: 50, spec_time_masks: 0}")


def parse_transcription_augment(raw: Mapping[str, Any] | None) -> AugmentOptions:
    """As parse_augment with TRANSCRIPTION_AUGMENT's defaults; a time shift is refused, since
    variable-length utterances are never shifted."""
    options = parse_augment(raw, TRANSCRIPTION_AUGMENT)
    if options.shift_ms:
        raise GroveError(
            f"recipe key '{AUGMENT}.shift_ms' applies to fixed-length keyword clips only; "
            "transcribed utterances are not shifted: remove it"
        )
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
