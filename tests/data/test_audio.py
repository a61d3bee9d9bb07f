import json
from dataclasses import replace
import math
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile")

from grove.data.audio import (
    MFCC,
    AudioTransform,
    AugmentOptions,
    FeatureOptions,
    LogMel,
    audio_folder,
    audio_manifest,
    build_alphabet,
    collate_transcription,
    decode_tokens,
    fix_length,
    librispeech,
    load_audio_batch,
    mel_filterbank,
    normalize_features,
    read_audio,
    resample,
    speech_commands,
)
from grove.data.audio import datasets
from grove.data.audio.augment import (
    add_noise,
    add_silence,
    band_mask,
    change_speed,
    noise_floor,
    random_gain,
    random_shift,
    reverberate,
    spec_augment,
)
from grove.errors import GroveError

UNREACHABLE = "http://127.0.0.1:9/archive.tar.gz"  # port 9 (discard) refuses at once


def tone(freq, rate, seconds=1.0, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


def write(path, data, rate=16000, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, **kw)
    return path


# ---------------------------------------------------------------------------------------------
# Independent numpy references, written from the published formulas


def ref_hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def ref_mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def ref_filterbank(sr, n_fft, n_mels, fmin=0.0, fmax=None):
    """librosa.filters.mel(htk=True, norm=None) as its source computes it."""
    fmax = sr / 2 if fmax is None else fmax
    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = ref_mel_to_hz(np.linspace(ref_hz_to_mel(fmin), ref_hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    return weights


def ref_logmel(x, sr, n_fft, hop, n_mels):
    """Centred (reflect-padded) frames, periodic Hann window, |rfft|^2, mel, log(+1e-6)."""
    x = np.pad(np.asarray(x, dtype=np.float64), n_fft // 2, mode="reflect")
    frames = np.stack([x[i : i + n_fft] for i in range(0, len(x) - n_fft + 1, hop)])  # (T, n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, n_freqs)
    return np.log(ref_filterbank(sr, n_fft, n_mels) @ power.T + 1e-6)  # (n_mels, T)


# ---------------------------------------------------------------------------------------------
# Features


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax",
    [(16000, 400, 40, 0.0, None), (22050, 1024, 80, 20.0, 8000.0), (8000, 256, 23, 0.0, 4000.0)],
)
def test_mel_filterbank_matches_the_reference(sr, n_fft, n_mels, fmin, fmax):
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sr, fmin, fmax)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.dtype == torch.float32
    np.testing.assert_allclose(fb.numpy(), ref_filterbank(sr, n_fft, n_mels, fmin, fmax), atol=1e-6)


def test_mel_filterbank_rejects_a_band_beyond_nyquist():
    with pytest.raises(GroveError, match="f_max"):
        mel_filterbank(201, 40, 16000, f_max=9000)


def test_logmel_matches_the_reference():
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)) * 0.1
    x[1] += torch.from_numpy(tone(1000, 16000, 0.25))
    out = LogMel(16000, 400, 160, 40)(x)
    assert out.shape == (2, 40, 1 + 4000 // 160)
    for b in range(2):
        np.testing.assert_allclose(out[b].numpy(), ref_logmel(x[b].numpy(), 16000, 400, 160, 40), atol=2e-3, rtol=1e-4)


def test_top_db_floors_the_logmel_below_each_utterances_loudest_cell():
    x = torch.zeros(2, 8000)
    x[:, 4000:] = torch.from_numpy(tone(1000, 16000, 0.25))
    x[1] *= 0.01  # 40 dB quieter: the floor follows the utterance, not full scale
    plain, floored = LogMel(16000, 400, 160, 40)(x), LogMel(16000, 400, 160, 40, top_db=50)(x)
    nats = 50 * math.log(10) / 10
    for b in range(2):
        top = plain[b].max()
        torch.testing.assert_close(floored[b], plain[b].clamp(min=top - nats))
        assert plain[b].min() < top - nats  # digital silence was below the floor
    gap = floored[0].min() - floored[1].min()
    torch.testing.assert_close(gap, torch.tensor(40 * math.log(10) / 10), atol=1e-3, rtol=0)
    mfcc = MFCC(13, top_db=50)
    torch.testing.assert_close(mfcc(x), mfcc.dct @ LogMel(top_db=50)(x))


def test_mfcc_is_the_orthonormal_dct_of_the_logmel():
    scipy_fft = pytest.importorskip("scipy.fft")
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 3200)).astype(np.float32))
    logmel = LogMel(16000, 400, 160, 40)(x).numpy()
    expected = scipy_fft.dct(logmel, type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(MFCC(13, 16000, 400, 160, 40)(x).numpy(), expected, atol=1e-3)


def test_features_stay_float32_under_autocast():
    x = torch.randn(2, 1600)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = LogMel()(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, LogMel()(x))


def test_normalisation_ignores_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10) * 4 + 7
    x[1, :, 6:] = 1000.0  # padding
    out = normalize_features(x, torch.tensor([10, 6]))
    torch.testing.assert_close(out[1:, :, :6], normalize_features(x[1:, :, :6]))
    assert torch.all(out[1, :, 6:] == 0)
    torch.testing.assert_close(out[0].mean(-1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0].std(-1, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_band_mask_marks_exactly_the_bands():
    mask = band_mask(torch.tensor([[2, 7], [0, 0]]), torch.tensor([[3, 0], [1, 4]]), 10)
    assert mask[0].nonzero().flatten().tolist() == [2, 3, 4]
    assert mask[1].nonzero().flatten().tolist() == [0, 1, 2, 3]


def bands(mask_1d):
    """Runs of True as (start, width)."""
    runs, start = [], None
    for i, v in enumerate(mask_1d.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def test_spec_augment_zeroes_whole_frequency_bands_and_time_spans():
    torch.manual_seed(0)
    x = torch.ones(16, 20, 50)
    lengths = torch.tensor([50, 30] * 8)
    out = spec_augment(x, time_masks=2, time_width=8, freq_masks=2, freq_width=5, lengths=lengths)
    masked_any = False
    for b in range(16):
        zero = out[b] == 0
        rows = zero.all(1)  # frequency bands: the whole row
        cols = zero.all(0)  # time spans: the whole column
        assert torch.equal(zero, rows[:, None] | cols[None, :])
        assert len(bands(rows)) <= 2 and rows.sum() <= 2 * 5
        assert len(bands(cols)) <= 2 and cols.sum() <= 2 * 8
        assert not cols[int(lengths[b]) :].any()  # time masks stay inside the utterance
        masked_any |= bool(zero.any())
    assert masked_any
    torch.manual_seed(0)
    assert torch.equal(out, spec_augment(x, 2, 8, 2, 5, lengths))  # the global RNG decides


def test_noise_of_every_kind_comes_at_the_drawn_snr():
    torch.manual_seed(0)
    x = torch.from_numpy(np.stack([tone(300 + 50 * i, 16000) for i in range(16)]))
    noisy = add_noise(x, (10.0, 10.0))
    ratio = (noisy - x).square().mean(1) / x.square().mean(1)
    torch.testing.assert_close(ratio, torch.full((16,), 0.1), rtol=1e-3, atol=0)
    lengths = torch.tensor([16000, 8000] * 8)
    x = x * (torch.arange(16000) < lengths[:, None])
    noisy = add_noise(x, (20.0, 20.0), lengths)
    assert torch.all(noisy[1::2, 8000:] == 0)  # padding stays silent
    ratio = (noisy - x).square().sum(1) / x.square().sum(1)
    torch.testing.assert_close(ratio, torch.full((16,), 0.01), rtol=1e-3, atol=0)


def test_gain_stays_in_its_range_and_clips_at_full_scale():
    torch.manual_seed(0)
    x = torch.from_numpy(np.stack([tone(300, 16000, amplitude=0.1)] * 32))
    gained = random_gain(x, (-20.0, 6.0))
    factor = gained.abs().amax(1) / x.abs().amax(1)
    assert torch.all(factor <= 10 ** (6 / 20) + 1e-4) and torch.all(factor >= 10 ** (-20 / 20) - 1e-4)
    loud = random_gain(x, (30.0, 30.0))
    assert loud.abs().max() == 1.0 and (loud.abs() == 1.0).float().mean() > 0.5


def test_shift_moves_each_clip_within_its_range():
    torch.manual_seed(0)
    ramp = torch.arange(1, 101, dtype=torch.float32).repeat(4, 1)
    shifted = random_shift(ramp, 5)
    for row in shifted:
        nz = row.nonzero().flatten()
        s = int(nz[0]) if row[0] == 0 else -(int(row[0]) - 1)
        assert abs(s) <= 5
        torch.testing.assert_close(
            row, torch.roll(ramp[0], s) * ((torch.arange(100) - s >= 0) & (torch.arange(100) - s < 100))
        )


def test_noise_floor_is_the_quiet_background():
    quiet = torch.full((1, 16000), 0.01)
    quiet[0, 4000:12000] = torch.from_numpy(tone(300, 16000, 0.5, 0.5))
    torch.testing.assert_close(noise_floor(quiet, None, 160), torch.tensor([0.01]))
    padded = torch.cat([quiet, torch.zeros(1, 8000)], 1)  # padding is not background
    torch.testing.assert_close(noise_floor(padded, torch.tensor([16000]), 160), torch.tensor([0.01]))


def test_added_silence_keeps_the_speech_and_its_edges():
    torch.manual_seed(0)
    lengths = torch.tensor([8000, 6000] * 32)
    x = 0.5 + 0.1 * torch.sin(torch.arange(8000) * 0.1).repeat(64, 1)  # "speech", all above 0.3 ...
    x[:, :800] = 0.001  # ... after 50 ms of a quiet background
    x = x * (torch.arange(8000) < lengths[:, None])
    out, new_lengths = add_silence(x, lengths, 4800, 160)
    assert out.shape[1] == int(new_lengths.max()) and torch.all(new_lengths - lengths <= 2 * 4800)
    leads = []
    for row, before, n, total in zip(out, x, lengths, new_lengths):
        lead = int((row > 0.3).nonzero()[0]) - 800
        assert torch.equal(row[lead : lead + n], before[:n])  # the recording itself, unchanged
        assert (row[:lead].abs() < 0.006).all() and (row[lead + n : total].abs() < 0.006).all()
        assert torch.all(row[total:] == 0)  # padding stays padding
        leads.append(lead)
    assert 10 < leads.count(0) < 54 and max(leads) > 2400  # about half keep their start as recorded


def test_speed_scales_frequency_and_length():
    torch.manual_seed(0)
    x = torch.from_numpy(np.stack([tone(400, 16000)] * 8))
    out, lengths = change_speed(x, torch.full((8,), 16000), 0.9, 1.1)
    for row, n in zip(out, lengths):
        rate = 16000 / int(n)
        assert 0.9 - 1e-3 <= rate <= 1.1 + 1e-3 and torch.all(row[n:] == 0)
        assert abs(peak_hz(row[:n].numpy(), 16000) - 400 * rate) < 10
    fixed, none = change_speed(x, None, 1.1, 1.1)  # a clip keeps its length: zeros after it
    assert none is None and fixed.shape == x.shape and torch.all(fixed[:, -1000:] == 0)


def test_reverberation_keeps_the_level_and_adds_a_tail():
    torch.manual_seed(0)
    x = torch.zeros(4, 16000)
    x[:, 1000:1400] = torch.from_numpy(tone(500, 16000, 0.025))
    assert torch.equal(reverberate(x, None, 0.0, (0.2, 0.5), 16000), x)
    wet = reverberate(x, torch.tensor([16000, 16000, 16000, 4000]), 1.0, (0.3, 0.3), 16000)
    torch.testing.assert_close(wet[:3].square().mean(1), x[:3].square().mean(1), rtol=1e-4, atol=0)
    assert wet[:, :1000].abs().max() < 1e-6 and torch.all(wet[3, 4000:] == 0)
    assert torch.all(wet[:3, 2000:3000].abs().amax(1) > 1e-3)  # the room rings after the burst


# ---------------------------------------------------------------------------------------------
# AudioTransform


def test_transform_eval_is_deterministic_and_accepts_int16():
    wave = torch.from_numpy(np.stack([tone(440, 16000), tone(880, 16000, amplitude=0.2)]))
    t = AudioTransform(augment=AugmentOptions())
    out = t(wave, train=False)
    assert out.shape == (2, 40, 101) and out.dtype == torch.float32
    torch.testing.assert_close(out, t(wave, train=False))
    pcm = (wave * 32768).round().clamp(-32768, 32767).to(torch.int16)
    torch.testing.assert_close(t(pcm, train=False), t(pcm.float() / 32768, train=False))
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 40), atol=1e-4, rtol=0)
    assert not torch.equal(t(wave, train=True), out)


def test_transform_mfcc_and_variable_length_batches():
    t = AudioTransform(
        features=FeatureOptions(n_mfcc=13),
        augment=AugmentOptions(spec_time_masks=1, spec_time_width=5, noise_snr_db=(5, 20), speed=None),
    )
    audio = torch.zeros(2, 8000)
    audio[0] = torch.from_numpy(tone(300, 16000, 0.5))
    audio[1, :4800] = torch.from_numpy(tone(500, 16000, 0.3))
    out = t({"audio": audio, "lengths": torch.tensor([8000, 4800])}, train=True)
    assert out["features"].shape == (2, 13, 51)
    assert out["lengths"].tolist() == [51, 31]
    assert torch.all(out["features"][1, :, 31:] == 0)
    assert t(audio, train=False).shape == (2, 13, 51)


def test_transform_round_trips_through_json():
    t = AudioTransform(8000, FeatureOptions(n_mfcc=13), AugmentOptions(noise_snr_db=(5, 20), gain_db=3.0, shift_ms=50))
    d = json.loads(json.dumps(t.to_dict()))
    assert d["features"]["n_mfcc"] == 13 and d["augment"]["noise_snr_db"] == [5.0, 20.0]
    assert AudioTransform.from_dict(d) == t
    assert t.out_features == 13 and (t.n_fft, t.hop) == (200, 80)


def test_transform_reads_the_flat_dict_of_older_run_directories():
    flat = {
        "sample_rate": 16000, "n_mels": 40, "n_fft": 400, "hop": 160, "features": "mfcc", "n_mfcc": 13,
        "spec_time_masks": 2, "spec_time_width": 10, "spec_freq_masks": 2, "spec_freq_width": 5,
        "noise_snr_db": None, "gain_db": 6.0, "shift_ms": 100.0,
    }
    t = AudioTransform.from_dict(flat)
    assert t.features == FeatureOptions(n_mfcc=13, normalize="utterance", top_db=None)  # as those runs were trained
    assert t.augment.gain_db == (-6.0, 6.0) and t.augment.noise_snr_db is None
    assert (t.n_fft, t.hop) == (400, 160)


# ---------------------------------------------------------------------------------------------
# Reading and resampling


def peak_hz(x, rate):
    spectrum = np.abs(np.fft.rfft(np.asarray(x) * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resampling_keeps_a_tone(orig):
    out = resample(torch.from_numpy(tone(440, orig)), orig, 16000)
    assert out.shape == (16000,) and out.dtype == torch.float32
    assert peak_hz(out.numpy(), 16000) == pytest.approx(440, abs=1.0)
    np.testing.assert_allclose(out[300:-300].numpy(), tone(440, 16000)[300:-300], atol=2e-3)


def test_resampling_odd_ratios_and_batches():
    x = torch.from_numpy(tone(300, 3001, 0.5))  # gcd 1 with 4001: kernels too big for the conv path
    out = resample(x, 3001, 4001)
    assert out.shape == (math.ceil(len(x) * 4001 / 3001),)
    np.testing.assert_allclose(out[100:-100].numpy(), tone(300, 4001, 0.5)[: len(out)][100:-100], atol=2e-3)
    batch = torch.randn(2, 3, 1000)
    out = resample(batch, 16000, 8000)
    assert out.shape == (2, 3, 500)
    torch.testing.assert_close(out[1, 2], resample(batch[1, 2], 16000, 8000))


def test_read_audio_resamples_and_mixes_to_mono(tmp_path):
    for rate in (8000, 44100):
        wave = read_audio(write(tmp_path / f"{rate}.wav", tone(440, rate, 0.5), rate), 16000)
        assert wave.shape == (8000,) and wave.dtype == torch.float32
        assert peak_hz(wave.numpy(), 16000) == pytest.approx(440, abs=2.0)
    stereo = np.stack([tone(440, 16000), np.zeros(16000, np.float32)], 1)
    wave = read_audio(write(tmp_path / "stereo.flac", stereo), 16000)
    np.testing.assert_allclose(wave.numpy(), tone(440, 16000) / 2, atol=1e-4)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage that is no wave"), "cannot read audio"),
        (lambda p: p.write_bytes(b""), "cannot read audio"),
        (lambda p: write(p, np.zeros(0, np.float32)), "no samples"),
        (lambda p: write(p, np.zeros(16000, np.float32)), "silent"),
        (lambda p: write(p, np.full(16000, 3e-5, np.float32)), "silent"),
        (lambda p: None, "no such file"),
    ],
    ids=["corrupt", "empty-file", "zero-length-wav", "all-zeros", "near-silent", "missing"],
)
def test_read_audio_refuses_unusable_files(tmp_path, make, reason):
    path = tmp_path / "clip.wav"
    make(path)
    with pytest.raises(GroveError, match=reason) as err:
        read_audio(path, 16000)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_fix_length_pads_or_keeps_the_loudest_second():
    assert fix_length(torch.ones(10), 16).tolist() == [1.0] * 10 + [0.0] * 6
    x = torch.zeros(100)
    x[60:70] = 1.0
    out = fix_length(x, 20)
    assert out.shape == (20,) and out.sum() == 10


def test_load_audio_batch_follows_the_meta(tmp_path):
    path = write(tmp_path / "long.wav", tone(440, 16000, 1.5))
    assert load_audio_batch(path, {"kind": "keywords", "sample_rate": 16000, "clip_seconds": 1.0}).shape == (1, 16000)
    batch = load_audio_batch(path, {"kind": "transcription", "sample_rate": 8000, "clip_seconds": None})
    assert batch["audio"].shape == (1, 12000) and batch["lengths"].tolist() == [12000]


# ---------------------------------------------------------------------------------------------
# Keyword folders and Speech Commands


def make_keyword_folder(root, words=("yes", "no", "up"), speakers=("aa11", "bb22", "cc33", "dd44"), clips=2):
    for w, word in enumerate(words):
        for s, speaker in enumerate(speakers):
            for n in range(clips):
                write(root / word / f"{speaker}_nohash_{n}.wav", tone(200 + 100 * w + 10 * s, 16000, 0.5 + 0.1 * n))
    write(
        root / "_background_noise_" / "white_noise.wav",
        np.random.default_rng(0).uniform(-0.3, 0.3, 48000).astype(np.float32),
    )
    return root


def test_audio_folder_honours_the_split_lists(tmp_path):
    root = make_keyword_folder(tmp_path / "sc")
    (root / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\nno/bb22_nohash_1.wav\n")
    (root / "testing_list.txt").write_text("up/cc33_nohash_0.wav\n\nyes/cc33_nohash_1.wav\n")
    bundle = audio_folder(root=str(root))
    assert bundle.classes == ["no", "up", "yes"]
    rel = lambda split: sorted(Path(split.path(i)).relative_to(root).as_posix() for i in range(len(split)))
    assert rel(bundle.val) == ["no/bb22_nohash_1.wav", "yes/bb22_nohash_0.wav"]
    assert rel(bundle.test) == ["up/cc33_nohash_0.wav", "yes/cc33_nohash_1.wav"]
    assert len(bundle.train) == 24 - 4
    wave, label = bundle.train[0]
    assert wave.shape == (16000,) and bundle.classes[label] == "no"
    assert bundle.model_defaults == {"num_classes": 3, "in_features": 40}
    assert bundle.meta["kind"] == "keywords" and bundle.meta["clip_seconds"] == 1.0
    json.dumps(bundle.meta)
    assert AudioTransform.from_dict(bundle.meta["transform"]) == bundle.transform


def test_audio_folder_seeded_split_keeps_speakers_together(tmp_path):
    root = make_keyword_folder(tmp_path / "sc", speakers=[f"s{i:03d}" for i in range(30)], clips=1)
    bundle = audio_folder(root=str(root), val_fraction=0.2, test_fraction=0.2, seed=3)
    speakers = [
        {Path(s.path(i)).name.split("_nohash_")[0] for i in range(len(s))}
        for s in (bundle.train, bundle.val, bundle.test)
    ]
    assert all(speakers) and not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    again = audio_folder(root=str(root), val_fraction=0.2, test_fraction=0.2, seed=3)
    assert again.val.entries == bundle.val.entries


def test_unreadable_clip_is_none_with_its_path(tmp_path):
    root = make_keyword_folder(tmp_path / "sc")
    (root / "yes" / "zz99_nohash_0.wav").write_bytes(b"not audio")
    (root / "validation_list.txt").write_text("yes/zz99_nohash_0.wav\n")
    bundle = audio_folder(root=str(root), test_fraction=0.0)
    assert len(bundle.val) == 1 and bundle.val[0] is None
    assert bundle.val.path(0).endswith("zz99_nohash_0.wav")


def test_audio_folder_needs_a_root():
    with pytest.raises(GroveError, match="data.root"):
        audio_folder()


def test_speech_commands_twelve_classes(tmp_path):
    root = make_keyword_folder(
        tmp_path / "sc", words=("yes", "no", "cat", "dog", "bed"), speakers=("aa11", "bb22", "cc33"), clips=4
    )
    (root / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\ncat/bb22_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/cc33_nohash_0.wav\n")
    bundle = speech_commands(root=str(root), classes=12)
    assert bundle.classes == [
        "_silence_",
        "_unknown_",
        "yes",
        "no",
        "up",
        "down",
        "left",
        "right",
        "on",
        "off",
        "stop",
        "go",
    ]
    labels = bundle.train.targets
    known = sum(1 for t in labels if t >= 2)
    assert (
        known == 2 * 3 * 4 - 2
        and labels.count(0) == math.ceil(known * 0.1)
        and labels.count(1) == math.ceil(known * 0.1)
    )
    silence = next(i for i, t in enumerate(labels) if t == 0)
    wave, label = bundle.train[silence]
    assert wave.shape == (16000,) and label == 0 and bundle.train.path(silence).endswith("white_noise.wav")
    assert len(bundle.val) >= 1 and len(bundle.test) >= 1
    with pytest.raises(GroveError, match="classes must be 12"):
        speech_commands(root=str(root), classes=35)


def test_speech_commands_extracts_its_archive_once(tmp_path, capsys):
    src = make_keyword_folder(tmp_path / "src", words=("yes", "no"), speakers=("aa11", "bb22"), clips=1)
    (src / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\n")
    (src / "testing_list.txt").write_text("")
    folder = tmp_path / "cache"
    folder.mkdir()
    with tarfile.open(folder / "speech_commands_v0.02.tar.gz", "w:gz") as tar:
        for item in sorted(src.iterdir()):
            tar.add(item, arcname=f"./{item.name}")
    bundle = speech_commands(root=str(folder), classes=12, silence_fraction=0)
    assert (folder / "speech_commands_v0.02" / "yes").is_dir() and "extracting" in capsys.readouterr().err
    assert len(bundle.train) == 3 and len(bundle.val) == 1 and bundle.test is None
    speech_commands(root=str(folder), classes=12, silence_fraction=0)
    assert "extracting" not in capsys.readouterr().err


def test_speech_commands_offline_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "SPEECH_COMMANDS_URL", UNREACHABLE + "?v={version}")
    monkeypatch.setenv("GROVE_DATA_DIR", str(tmp_path))
    with pytest.raises(GroveError, match="could not be downloaded") as err:
        speech_commands()
    assert str(tmp_path / "speech_commands" / "speech_commands_v0.02.tar.gz") in str(err.value)


# ---------------------------------------------------------------------------------------------
# Transcription


def make_manifest_folder(root):
    write(root / "wav" / "a.wav", tone(300, 16000, 0.5))
    write(root / "wav" / "b.wav", tone(400, 8000, 0.25), 8000)
    write(root / "wav" / "c.wav", tone(500, 16000, 0.75))
    (root / "train.csv").write_text('path,transcript\nwav/a.wav,Hello World\nwav/b.wav,"hello, there"\n')
    (root / "dev.jsonl").write_text(json.dumps({"path": "wav/c.wav", "transcript": "Well! there"}) + "\n")
    return root


def test_audio_manifest_builds_an_alphabet_and_pads_batches(tmp_path):
    root = make_manifest_folder(tmp_path / "m")
    bundle = audio_manifest(root=str(root), val="dev.jsonl")
    alphabet = bundle.meta["alphabet"]
    assert alphabet == ["<blank>", " ", ","] + sorted(set("helloworldthere")) and bundle.classes == alphabet
    assert bundle.model_defaults == {"num_classes": len(alphabet), "in_features": 40}
    assert bundle.meta["kind"] == "transcription"
    assert bundle.train.lengths.tolist() == [8000, 4000]
    inputs, targets = bundle.train.collate([bundle.train[0], bundle.train[1]])
    assert inputs["audio"].shape == (2, 8000) and inputs["lengths"].tolist() == [8000, 4000]
    assert targets["tokens"].shape == (2, 12) and targets["lengths"].tolist() == [11, 12]
    assert decode_tokens(targets["tokens"][0], alphabet) == "hello world"
    assert targets["tokens"][0, 11] == 0
    assert decode_tokens(bundle.val[0][1], alphabet) == "well there"  # "!" is not in the alphabet
    features = bundle.transform(inputs, train=False)
    assert features["features"].shape == (2, 40, 51) and features["lengths"].tolist() == [51, 26]
    augmented = bundle.transform(inputs, train=True)  # added silence and speed change the lengths
    frames = augmented["lengths"]
    assert augmented["features"].shape[2] == int(frames.max()) and torch.all(frames >= 26)
    assert torch.all(augmented["features"][1, :, int(frames[1]) :] == 0)
    json.dumps(bundle.meta)


def test_manifest_problems_are_one_line_errors(tmp_path):
    root = make_manifest_folder(tmp_path / "m")
    (root / "bad.csv").write_text("file,transcript\nwav/a.wav,hi\n")
    with pytest.raises(GroveError, match="no path column"):
        audio_manifest(root=str(root), train="bad.csv", val="dev.jsonl")
    (root / "bad.jsonl").write_text('{"path": "wav/a.wav"}\n')
    with pytest.raises(GroveError, match="line 1"):
        audio_manifest(root=str(root), train="bad.jsonl", val="dev.jsonl")
    with pytest.raises(GroveError, match="does not exist"):
        audio_manifest(root=str(root))  # dev.csv is missing


def test_manifest_item_of_a_missing_file_is_none(tmp_path):
    root = make_manifest_folder(tmp_path / "m")
    (root / "dev.csv").write_text("path,transcript\nwav/gone.wav,lost\n")
    bundle = audio_manifest(root=str(root))
    assert bundle.val[0] is None and bundle.val.path(0).endswith("gone.wav") and bundle.val.lengths.tolist() == [0]


def test_librispeech_layout(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    write(chapter / "84-121123-0000.flac", tone(300, 16000, 0.5))
    write(chapter / "84-121123-0001.flac", tone(350, 16000, 0.25))
    (chapter / "84-121123.trans.txt").write_text(
        "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n"
    )
    bundle = librispeech(root=str(tmp_path), subset="dev-clean", val_subset="dev-clean")
    assert len(bundle.train) == 2 and bundle.train.transcripts[0] == "go do you hear"
    assert bundle.train[1][0].shape == (4000,)
    with pytest.raises(GroveError, match="unknown LibriSpeech subset"):
        librispeech(root=str(tmp_path), subset="dev-dirty")


def test_librispeech_offline_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "LIBRISPEECH_URL", UNREACHABLE + "?{subset}")
    with pytest.raises(GroveError, match="could not be downloaded") as err:
        librispeech(root=str(tmp_path), subset="dev-clean")
    assert str(tmp_path / "dev-clean.tar.gz") in str(err.value)


def test_alphabet_reserves_blank_and_space():
    assert build_alphabet(["B a", "c  A"]) == ["<blank>", " ", "a", "b", "c"]


def test_registered_with_descriptions():
    from grove.registry import DATASETS

    for name in ("audio_folder", "speech_commands", "audio_manifest", "librispeech"):
        entry = DATASETS.get(name)
        assert entry.tags["modality"] == "audio" and entry.description


def test_collate_input_is_plain_tensors():
    inputs, targets = collate_transcription(
        [(torch.ones(3), torch.tensor([2, 3])), (torch.ones(5), torch.tensor([], dtype=torch.long))]
    )
    assert (
        inputs["audio"].shape == (2, 5) and targets["tokens"].shape == (2, 2) and targets["lengths"].tolist() == [2, 0]
    )


# ---------------------------------------------------------------------------------------------
# One split, as `grove evaluate` rebuilds it: splits and classes


def built(bundle):
    return [name for name in ("train", "val", "test") if getattr(bundle, name) is not None]


def test_audio_folder_one_split_and_classes(tmp_path):
    root = make_keyword_folder(tmp_path / "sc")
    (root / "testing_list.txt").write_text("up/cc33_nohash_0.wav\nyes/cc33_nohash_1.wav\n")
    full = audio_folder(root=str(root), val_fraction=0.25)
    for split in ("val", "test"):
        one = audio_folder(root=str(root), val_fraction=0.25, splits=[split])
        assert built(one) == [split] and getattr(one, split).entries == getattr(full, split).entries
        assert one.meta == full.meta and one.classes == full.classes
    order = ["yes", "up", "no", "maybe"]
    relabelled = audio_folder(root=str(root), val_fraction=0.25, splits=["val"], classes=order)
    assert relabelled.classes == order and relabelled.model_defaults["num_classes"] == 4
    assert [(f, order.index(full.classes[t])) for f, t in full.val.entries] == relabelled.val.entries
    with pytest.raises(GroveError) as err:
        audio_folder(root=str(root), val_fraction=0.25, splits=["test"], classes=["yes", "no"])
    assert str(err.value) == f"unknown label 'up' in {root / 'up' / 'cc33_nohash_0.wav'}; known classes: 'yes', 'no'"


def test_audio_folder_with_the_runs_classes_needs_no_train_folder(tmp_path):
    make_keyword_folder(tmp_path / "train", speakers=("aa11", "bb22"))
    make_keyword_folder(tmp_path / "val", speakers=("cc33",))
    make_keyword_folder(tmp_path / "test", words=("yes", "no"), speakers=("dd44",))  # no "up": fine
    for split in ("train", "val", "test"):
        (tmp_path / split / "_background_noise_" / "white_noise.wav").unlink()
    full = audio_folder(root=str(tmp_path), classes=["no", "up", "yes"])
    (tmp_path / "train" / "up" / "aa11_nohash_0.wav").write_bytes(b"corrupt")
    shutil.rmtree(tmp_path / "train" / "yes")
    test = audio_folder(root=str(tmp_path), splits=["test"], classes=full.classes)
    assert test.test.entries == full.test.entries and test.meta == full.meta


def test_speech_commands_one_split_and_its_own_class_names(tmp_path):
    root = make_keyword_folder(
        tmp_path / "sc", words=("yes", "no", "cat", "dog", "bed"), speakers=("aa11", "bb22", "cc33"), clips=4
    )
    (root / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\ncat/bb22_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/cc33_nohash_0.wav\ndog/cc33_nohash_1.wav\n")
    full = speech_commands(root=str(root), classes=12)
    # The class names a run saved give back what classes=12 gave, one split or all.
    named = speech_commands(root=str(root), classes=full.classes)
    for split in ("train", "val", "test"):
        assert getattr(named, split).entries == getattr(full, split).entries
        one = speech_commands(root=str(root), classes=full.classes, splits=[split])
        assert built(one) == [split] and getattr(one, split).entries == getattr(full, split).entries
    assert named.meta == full.meta and named.classes == full.classes
    # Without _unknown_ among the classes, only the words named are classes: val has no other word ...
    words = speech_commands(root=str(root), classes=["cat", "yes", "no", "dog"], splits=["val"])
    assert [(Path(f).parent.name, t) for f, t in words.val.entries] == [("cat", 0), ("yes", 1)]
    # ... and train's "bed" clips are an error.
    with pytest.raises(GroveError) as err:
        speech_commands(root=str(root), classes=["cat", "yes", "no", "dog"], splits=["train"])
    assert str(err.value) == (
        f"unknown label 'bed' in {root / 'bed' / 'aa11_nohash_0.wav'}; known classes: 'cat', 'yes', 'no', 'dog'"
    )


def test_audio_manifest_with_the_runs_alphabet_reads_only_its_split(tmp_path):
    root = make_manifest_folder(tmp_path / "m")
    full = audio_manifest(root=str(root), val="dev.jsonl")
    (root / "train.csv").unlink()
    val = audio_manifest(root=str(root), val="dev.jsonl", splits=["val"], classes=full.classes)
    assert val.train is None and val.test is None and val.meta == full.meta and val.classes == full.classes
    assert val.val.files == full.val.files and all(torch.equal(a, b) for a, b in zip(val.val.tokens, full.val.tokens))
    with pytest.raises(GroveError, match="CTC alphabet"):
        audio_manifest(root=str(root), val="dev.jsonl", splits=["val"], classes=["a", "b", "c"])
    with pytest.raises(GroveError, match="does not exist"):  # without the alphabet, train.csv is needed
        audio_manifest(root=str(root), val="dev.jsonl", splits=["val"])


@pytest.mark.parametrize("kind", ["keyword", "transcription"])
def test_every_augmentation_is_the_same_for_the_same_seed(kind):
    from grove.data.audio.options import KEYWORD_AUGMENT, TRANSCRIPTION_AUGMENT

    torch.manual_seed(1)
    audio = torch.randn(6, 8000) * 0.1
    batch = audio if kind == "keyword" else {"audio": audio, "lengths": torch.tensor([8000, 7000, 6000] * 2)}
    augment = KEYWORD_AUGMENT if kind == "keyword" else TRANSCRIPTION_AUGMENT
    transform = AudioTransform(augment=replace(augment, reverb_p=1.0))  # every step in play

    def draw(seed):
        torch.manual_seed(seed)
        out = transform(batch, True)
        return out if kind == "keyword" else torch.cat([out["features"].flatten(), out["lengths"].float()])

    first = draw(0)
    assert torch.equal(first, draw(0)) and not torch.equal(first, draw(1))
    assert not torch.equal(transform.augment_waves(audio, None)[0], audio)
