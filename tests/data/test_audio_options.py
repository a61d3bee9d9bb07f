"""The nested data.features / data.augment recipe sections of the speech data sets."""

import numpy as np
import pytest

from grove.config import validate
from grove.data.audio import AudioTransform, AugmentOptions, FeatureOptions, audio_folder, audio_manifest
from grove.data.audio.options import (
    KEYWORD_AUGMENT,
    TRANSCRIPTION_AUGMENT,
    parse_augment,
    parse_features,
    parse_transcription_augment,
)
from grove.errors import GroveError

sf = pytest.importorskip("soundfile")


def test_no_section_means_the_defaults():
    assert parse_features(None) == FeatureOptions() and FeatureOptions().out_features == 40
    assert parse_augment(None) == KEYWORD_AUGMENT
    assert parse_transcription_augment(None) == TRANSCRIPTION_AUGMENT
    assert TRANSCRIPTION_AUGMENT.shift_ms == 0 and TRANSCRIPTION_AUGMENT.spec_time_width == 20


def test_given_keys_override_the_defaults_with_their_types():
    features = parse_features({"n_mels": 64, "n_mfcc": 20, "hop_ms": 20})
    assert features == FeatureOptions(n_mels=64, n_mfcc=20, hop_ms=20.0) and features.out_features == 20
    augment = parse_augment({"shift_ms": 50, "noise_snr_db": [5, 15], "spec_time_masks": 0})
    assert augment.noise_snr_db == (5.0, 15.0) and augment.shift_ms == 50 and augment.spec_time_masks == 0
    assert augment.gain_db == KEYWORD_AUGMENT.gain_db


@pytest.mark.parametrize(
    "parse, raw, message",
    [
        (parse_features, {"n_mel": 64}, "unknown recipe key 'data.features.n_mel' (did you mean 'n_mels'?)"),
        (
            parse_augment,
            {"spec_time_mask": 0},
            "unknown recipe key 'data.augment.spec_time_mask' (did you mean 'spec_time_masks'?)",
        ),
        (parse_augment, {"time_shift": 0.1}, "unknown recipe key 'data.augment.time_shift'"),
        (parse_features, {"n_mels": "forty"}, "recipe key 'data.features.n_mels': input should be a valid integer"),
        (parse_features, {"n_mels": 0}, "recipe key 'data.features.n_mels' must be positive"),
        (parse_features, {"n_mfcc": 50}, "recipe key 'data.features.n_mfcc' must be 1 to n_mels (40)"),
        (parse_augment, {"gain_db": -3}, "recipe key 'data.augment.gain_db' cannot be negative"),
        (parse_augment, {"spec_freq_width": 2.5}, "'data.augment.spec_freq_width': input should be a valid integer"),
        (parse_augment, {"noise_snr_db": [30, 10]}, "recipe key 'data.augment.noise_snr_db' must be [low, high]"),
        (parse_augment, {"noise_snr_db": [10]}, "recipe key 'data.augment.noise_snr_db' must be [low, high]"),
        (parse_features, "mfcc", "recipe key 'data.features' must be a mapping of options"),
        (parse_transcription_augment, {"shift_ms": 10}, "'data.augment.shift_ms' applies to fixed-length keyword"),
        (parse_augment, {"silence_s": 0.5}, "'data.augment.silence_s' applies to transcribed utterances only"),
        (parse_transcription_augment, {"silence_s": -1}, "'data.augment.silence_s' cannot be negative"),
        (parse_augment, {"speed": [1.1, 0.9]}, "'data.augment.speed' must be [low, high] in rates such as [0.9, 1.1]"),
        (parse_augment, {"speed": [0.1, 1.0]}, "'data.augment.speed' must be [low, high] in rates"),
        (parse_augment, {"speed": 1.1}, "'data.augment.speed': input should be a valid tuple"),
        (parse_augment, {"reverb_p": 1.5}, "'data.augment.reverb_p' is a probability, 0 to 1 (got 1.5)"),
        (parse_augment, {"reverb_rt60_s": None}, "'data.augment.reverb_rt60_s': input should be a valid tuple"),
        (parse_augment, {"gain_db": [6, -20]}, "'data.augment.gain_db' must be [low, high] in dB"),
        (parse_features, {"normalize": "global"}, "'data.features.normalize': input should be 'speech' or 'utterance'"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_nested_key(parse, raw, message):
    with pytest.raises(GroveError) as err:
        parse(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_key_lists_the_section_options():
    with pytest.raises(GroveError, match="data.features takes: n_mels, n_mfcc, window_ms, hop_ms"):
        parse_features({"sample_rat": 8000})


def keyword_folder(root):
    t = np.arange(4000) / 16000
    for w, word in enumerate(("yes", "no")):
        for k in range(4):
            (root / word).mkdir(parents=True, exist_ok=True)
            sf.write(str(root / word / f"s{k}_nohash_0.wav"), (0.3 * np.sin(2 * np.pi * (300 + 100 * w) * t)), 16000)
    return root


def test_builders_take_the_sections(tmp_path):
    root = keyword_folder(tmp_path / "kw")
    bundle = audio_folder(
        root=str(root), sample_rate=8000, features={"n_mfcc": 13}, augment={"shift_ms": 20, "gain_db": 0}
    )
    assert bundle.model_defaults["in_features"] == 13
    t = bundle.transform
    assert t.sample_rate == 8000 and (t.n_fft, t.hop) == (200, 80)
    assert t.augment.shift_ms == 20 and t.augment.gain_db == (0, 0) and t.augment.spec_time_masks == 2
    assert AudioTransform.from_dict(bundle.meta["transform"]) == t
    assert bundle.meta["transform"]["features"]["n_mfcc"] == 13
    with pytest.raises(GroveError, match="data.augment.shif_ms' \\(did you mean 'shift_ms'\\?\\)"):
        audio_folder(root=str(root), augment={"shif_ms": 20})


def test_transcription_builders_refuse_a_time_shift(tmp_path):
    (tmp_path / "train.csv").write_text("path,transcript\na.wav,hi\n")
    with pytest.raises(GroveError, match="shift_ms' applies to fixed-length keyword clips only"):
        audio_manifest(root=str(tmp_path), augment={"shift_ms": 10})


def test_recipes_carry_the_sections_and_overrides_reach_into_them():
    from grove.config import load_recipe

    recipe, _ = load_recipe("spoken-words-cnn", ["data.augment.shift_ms=50", "data.features.n_mels=64"])
    options = recipe.data.options()
    assert options["augment"] == {"spec_time_masks": 0, "spec_freq_masks": 0, "shift_ms": 50}
    assert options["features"] == {"n_mels": 64}
    assert parse_augment(options["augment"]) == AugmentOptions(shift_ms=50, spec_time_masks=0, spec_freq_masks=0)
    validate({"model": {"name": "ds_cnn"}, "data": {"name": "spoken_words", "features": {"n_mels": 32}}})
