import json

import numpy as np
import pytest
import torch

from grove.data import espeak
from grove.data import spoken_words as sw
from grove.data.audio import decode_tokens
from grove.errors import GroveError

needs_espeak = pytest.mark.espeak

VOICES = ["en-us+m3", "en-gb+f3", "en-029+klatt"]
TINY = {
    "words": ["yes", "no", "seven"],
    "voices": VOICES,
    "speeds": (160,),
    "pitches": (50,),
    "val_voices": 1,
    "test_voices": 1,
}


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GROVE_DATA_DIR", str(tmp_path))
    return tmp_path / "spoken_words"


# ---------------------------------------------------------------------------------------------
# Without espeak-ng


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(GroveError, match="espeak-ng is not installed: run scripts/install-system-deps.sh"):
        sw.spoken_words(**TINY)


def test_split_at_pauses_finds_the_spoken_stretches():
    rate = 22050
    samples = np.zeros(rate * 3, dtype=np.int16)
    samples[2205:8820] = 8000  # 0.1-0.4 s
    samples[9261:11025] = 6000  # a 20 ms dip inside the same item
    samples[33075:44100] = -9000  # 1.5-2.0 s, after a long pause
    pieces = espeak.split_at_pauses(samples, rate)
    assert len(pieces) == 2
    assert 8820 - 2205 < len(pieces[0]) < 11025 - 2205 + 2 * 441 and len(pieces[1]) >= 44100 - 33075
    assert espeak.split_at_pauses(np.zeros(rate, np.int16), rate) == []


def test_voice_splits_are_disjoint():
    voices = [f"v{i}" for i in range(20)]
    split = sw.split_voices(voices, 0.1, 3, seed=0)
    assert len(split["val"]) == 2 and len(split["test"]) == 3 and len(split["train"]) == 15
    assert set(split["train"]) | set(split["val"]) | set(split["test"]) == set(voices)
    assert not set(split["val"]) & set(split["test"])
    assert sw.split_voices(voices, 0.1, 3, seed=0) == split
    named = sw.split_voices(voices, ["v4"], 0, seed=0)
    assert named["val"] == ["v4"] and named["test"] == [] and "v4" not in named["train"]
    with pytest.raises(GroveError, match="not generated"):
        sw.split_voices(voices, ["nobody"], 1, seed=0)
    with pytest.raises(GroveError, match="cannot give train and val"):
        sw.split_voices(voices[:2], 1, 1, seed=0)


def test_default_voices_are_accents_times_variants():
    voices = espeak.default_voices()
    assert len(voices) == len(set(voices)) == 96 and "en-gb-scotland+f3" in voices


# ---------------------------------------------------------------------------------------------
# With espeak-ng


def voices_of(bundle):
    return [set(s.voices) if s is not None else set() for s in (bundle.train, bundle.val, bundle.test)]


@needs_espeak
def test_spoken_words_split_by_voice(data_dir):
    bundle = sw.spoken_words(**TINY)
    train, val, test = voices_of(bundle)
    assert len(train) == len(val) == len(test) == 1 and not (train & val or train & test or val & test)
    assert bundle.meta["voices"] == {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.inputs.dtype == torch.int16 and split.inputs.shape == (3, 16000)
        assert split.targets.tolist() == [0, 1, 2]
        assert split.inputs.abs().amax(1).min() > 3000  # speech, not silence
    assert bundle.classes == ["yes", "no", "seven"]
    assert bundle.model_defaults == {"num_classes": 3, "in_features": 40}
    features = bundle.transform(bundle.train.inputs, train=True)
    assert features.shape == (3, 40, 101) and torch.isfinite(features).all()
    json.dumps(bundle.meta)


@needs_espeak
def test_spoken_words_is_deterministic_and_reuses_its_cache(data_dir, monkeypatch):
    first = sw.spoken_words(**TINY, cache=False)
    assert not data_dir.exists()
    second = sw.spoken_words(**TINY, cache=False)
    assert torch.equal(first.train.inputs, second.train.inputs) and torch.equal(first.test.inputs, second.test.inputs)

    cached = sw.spoken_words(**TINY)
    (folder,) = data_dir.iterdir()
    assert cached.meta["cache"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["000_en-us+m3.npz", "001_en-gb+f3.npz", "002_en-029+klatt.npz"]
    assert torch.equal(cached.val.inputs, first.val.inputs)

    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng ran although the cache was there")

    monkeypatch.setattr(espeak, "_espeak", no_espeak)
    again = sw.spoken_words(**TINY)
    assert torch.equal(again.train.inputs, first.train.inputs)
    # Another seed is another data set: new noise and levels, and espeak-ng runs again.
    with pytest.raises(AssertionError, match="espeak-ng ran"):
        sw.spoken_words(**{**TINY, "seed": 1})


@needs_espeak
def test_cache_is_written_atomically(data_dir, monkeypatch):
    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        real_savez(file, **{k: v[:1] for k, v in arrays.items()})  # part of the data is written...
        raise OSError(28, "No space left on device")  # ...then the disk fills up

    monkeypatch.setattr(sw.np, "savez", savez_then_fail)
    bundle = sw.spoken_words(**TINY)  # the data are still usable
    assert len(bundle.train) == 3
    # neither a half-written cache nor its temporary file
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []
    monkeypatch.setattr(sw.np, "savez", real_savez)

    sw.spoken_words(**TINY)
    (folder,) = data_dir.iterdir()
    paths = sorted(folder.iterdir())
    assert len(paths) == 3 and not any(p.name.startswith(".") for p in paths)
    paths[0].write_bytes(paths[0].read_bytes()[:1000])  # a cache file cut short (by hand) is made again
    again = sw.spoken_words(**TINY)
    assert len(again.train) == 3 and paths[0].stat().st_size > 1000


@needs_espeak
def test_spoken_digit_sequences(data_dir):
    bundle = sw.spoken_digit_sequences(
        n_utterances=6, voices=VOICES, speeds=(160,), pitches=(50,), val_voices=1, test_voices=1
    )
    train, val, test = voices_of(bundle)
    assert len(train) == len(val) == len(test) == 1 and not (train & val or train & test or val & test)
    alphabet = bundle.meta["alphabet"]
    assert alphabet[:2] == ["<blank>", " "] and bundle.meta["kind"] == "transcription"
    assert len(bundle.train) == 2
    items = [bundle.train[i] for i in range(2)]
    for (wave, tokens), name in zip(items, bundle.train.names):
        words = decode_tokens(tokens, alphabet).split()
        assert 2 <= len(words) <= 4 and set(words) <= set(sw.DIGITS) and " ".join(words) in name
        assert 0.5 < len(wave) / 16000 < 4
    inputs, targets = bundle.train.collate(items)
    assert (
        inputs["audio"].shape == (2, int(bundle.train.lengths.max()))
        and inputs["lengths"].tolist() == bundle.train.lengths.tolist()
    )
    assert targets["tokens"].shape[0] == 2 and (targets["lengths"] > 0).all()
    out = bundle.transform(inputs, train=False)
    assert out["features"].shape[:2] == (2, 40) and out["lengths"].tolist() == (inputs["lengths"] // 160 + 1).tolist()
    again = sw.spoken_digit_sequences(
        n_utterances=6, voices=VOICES, speeds=(160,), pitches=(50,), val_voices=1, test_voices=1
    )
    assert torch.equal(again.train.samples, bundle.train.samples)
    assert len(list(data_dir.iterdir())) == 1


# ---------------------------------------------------------------------------------------------
# One split, as `grove evaluate` builds it


def spoken(monkeypatch):
    """The voices espeak-ng speaks with from now on."""
    calls = []
    real = espeak._espeak

    def recording(text, voice, *args, **kwargs):
        calls.append(voice)
        return real(text, voice, *args, **kwargs)

    monkeypatch.setattr(espeak, "_espeak", recording)
    return calls


@needs_espeak
def test_spoken_words_one_split_speaks_only_its_voices(data_dir, monkeypatch):
    full = sw.spoken_words(**TINY, cache=False)
    calls = spoken(monkeypatch)
    test = sw.spoken_words(**TINY, splits=["test"])
    assert set(calls) == set(full.meta["voices"]["test"])
    assert test.train is None and test.val is None
    assert torch.equal(test.test.inputs, full.test.inputs) and torch.equal(test.test.targets, full.test.targets)
    assert test.test.voices == full.test.voices and test.test.path(0) == full.test.path(0)
    assert {**test.meta, "cache": None} == full.meta and test.classes == full.classes
    (folder,) = data_dir.iterdir()
    assert len(list(folder.iterdir())) == 1  # the test voice's file

    calls.clear()
    cached = sw.spoken_words(**TINY)  # the other voices are spoken now, the test voice is read
    assert set(calls) == set(full.meta["voices"]["train"]) | set(full.meta["voices"]["val"])
    assert test.meta == cached.meta and torch.equal(cached.train.inputs, full.train.inputs)
    calls.clear()
    val = sw.spoken_words(**TINY, splits=["val"])
    assert calls == [] and torch.equal(val.val.inputs, full.val.inputs) and val.test is None


@needs_espeak
def test_spoken_words_classes_relabel_by_word(data_dir):
    full = sw.spoken_words(**TINY)
    order = ["seven", "yes", "no", "maybe"]  # a class without clips is fine
    relabelled = sw.spoken_words(**TINY, splits=["val"], classes=order)
    assert relabelled.classes == order and relabelled.model_defaults["num_classes"] == 4
    assert relabelled.val.targets.tolist() == [order.index(full.classes[t]) for t in full.val.targets]
    assert torch.equal(relabelled.val.inputs, full.val.inputs) and relabelled.val.voices == full.val.voices
    with pytest.raises(GroveError) as err:
        sw.spoken_words(**TINY, splits=["val"], classes=["yes", "no"])
    message = str(err.value)
    assert "\n" not in message and "'seven'" in message and "spoken_words #2" in message and "'yes', 'no'" in message


@needs_espeak
def test_spoken_digit_sequences_one_split(data_dir, monkeypatch):
    options = {"n_utterances": 7, "voices": VOICES, "speeds": (160, 200), "pitches": (50,), "val_voices": 1,
               "test_voices": 1}
    full = sw.spoken_digit_sequences(**options, cache=False)
    calls = spoken(monkeypatch)
    test = sw.spoken_digit_sequences(**options, splits=["test"])
    assert set(calls) == set(full.meta["voices"]["test"]) and test.train is None and test.val is None
    assert len(test.test) == len(full.test) and test.test.names == full.test.names
    for i in range(len(full.test)):
        (wave, tokens), (expected_wave, expected_tokens) = test.test[i], full.test[i]
        assert torch.equal(wave, expected_wave) and torch.equal(tokens, expected_tokens)
    assert {**test.meta, "cache": None} == full.meta and test.classes == full.classes


# ---------------------------------------------------------------------------------------------
# Where an utterance starts


def test_some_generated_utterances_start_right_on_the_speech():
    rng = np.random.default_rng(0)
    placed = [espeak.pad_utterance(np.ones(1600, np.float32), 16000, rng) for _ in range(400)]
    leads = np.array([speech.start for _, speech in placed])
    tails = np.array([len(clip) - speech.stop for clip, speech in placed])
    for edge in (leads, tails):  # a quarter right on the speech, the rest 0 to 0.3 s away
        assert 0.18 < np.mean(edge == 0) < 0.32 and edge.max() > 0.25 * 16000 and edge.max() <= 0.3 * 16000
    assert np.mean((leads == 0) & (tails == 0)) < 0.12  # the two ends are drawn apart


@needs_espeak
def test_leading_silence_leaves_the_features_of_the_speech_as_they_are():
    # A recording that starts on its first word and the same with 1 s of silence before it must
    # look the same to the model where the speech is: per-utterance statistics over every frame
    # made the first word's features depend on the silence, and a model heard "four four two seven".
    from grove.data.audio import AudioTransform, FeatureOptions

    speech = espeak.to_rate(espeak.speak(["four two seven"], "en-us", 175, 50), 16000)[0]
    starts_on_it = torch.from_numpy(speech / np.abs(speech).max() * 0.7)[None]
    after_silence = torch.cat([torch.zeros(1, 16000), starts_on_it], 1)
    for normalize, same in (("speech", True), ("utterance", False)):
        transform = AudioTransform(features=FeatureOptions(normalize=normalize))
        plain, padded = transform(starts_on_it, False), transform(after_silence, False)[..., 100:]
        gap = (plain - padded)[..., 2:-2].abs().mean()  # frames clear of the edges of the STFT padding
        assert (gap < 0.02) == same, (normalize, float(gap))
