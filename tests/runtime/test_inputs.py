"""Torch-free decoding of one input, which grove.data reads its files through: the same arrays,
the same one-line errors, and a resampler that is the published Kaiser-windowed sinc."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from grove.data import image as data_image
from grove.data.audio import io as data_audio
from grove.errors import GroveError
from grove.runtime import inputs

sf = pytest.importorskip("soundfile")


def gradient(height, width, channels):
    y, x = np.mgrid[0:height, 0:width]
    planes = [(x * 7 + y * 3) % 256, (x * 2 + y * 11) % 256, (x + y) % 256][:channels]
    return np.stack(planes, -1).astype(np.uint8).squeeze()


def tone(freq, rate, seconds, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize("channels", [1, 3])
def test_images_decode_as_the_data_sets_decode_them(tmp_path, channels):
    array = gradient(30, 47, 3)
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    decoded = inputs.read_image(path, 16, channels)
    assert decoded.shape == (channels, 16, 16) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, data_image.load_image(path, 16, channels).numpy())
    assert np.array_equal(inputs.read_image(Image.open(path), 16, channels), decoded)
    assert np.array_equal(inputs.read_image(array, 16, channels), decoded)
    assert np.array_equal(data_image.image_to_tensor(Image.open(path), 16, channels).numpy(), decoded)


def test_grey_arrays_with_or_without_a_channel_axis():
    grey = gradient(12, 9, 1)
    assert np.array_equal(inputs.read_image(grey[..., None], 8, 1), inputs.read_image(grey, 8, 1))


def test_an_unreadable_image_is_the_data_sets_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(GroveError) as ours:
        inputs.read_image(bad, 8, 1)
    with pytest.raises(GroveError) as theirs:
        data_image.load_image(bad, 8, 1)
    assert str(ours.value) == str(theirs.value) and str(ours.value).startswith(f"cannot read image {bad}: ")
    with pytest.raises(GroveError, match="cannot predict on a dict"):
        inputs.read_image({}, 8, 1)


# ---------------------------------------------------------------------------------------------
# Resampling


def reference_resample(x, orig, new, zero_crossings=16, rolloff=0.94, beta=8.6):
    """Output n at input time t = n * orig / new is the sum over input samples m of
    x[m] * c * sinc(c * (t - m)) * kaiser(t - m), c the cutoff, in float64, one output at a time."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    cutoff = rolloff * min(orig, new) / orig
    half = math.ceil(zero_crossings / cutoff)
    out = np.zeros(-(-len(x) * new // orig))
    for n in range(len(out)):
        t = n * orig / new
        m = np.arange(math.floor(t) - half, math.floor(t) + half + 1)
        inside = (m >= 0) & (m < len(x))
        d = t - m[inside]
        kaiser = np.i0(beta * np.sqrt(np.maximum(0.0, 1 - (d / (half + 1)) ** 2))) / np.i0(beta)
        out[n] = np.sum(x[m[inside]] * cutoff * np.sinc(cutoff * d) * kaiser)
    return out


@pytest.mark.parametrize("orig, new", [(22050, 16000), (8000, 16000), (48000, 16000), (3001, 4001)])
def test_resampling_is_the_windowed_sinc_interpolation(orig, new):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 300).astype(np.float32)
    out = inputs.resample(x, orig, new)
    assert out.dtype == np.float32 and out.shape == (math.ceil(300 * new / orig),)
    np.testing.assert_allclose(out, reference_resample(x.astype(np.float64), orig, new), atol=1e-5)


def test_the_torch_resampler_is_the_numpy_one():
    batch = np.random.default_rng(1).standard_normal((2, 3, 2205)).astype(np.float32)
    out = data_audio.resample(torch.from_numpy(batch), 22050, 16000)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 1600)
    np.testing.assert_allclose(out.numpy(), inputs.resample(batch, 22050, 16000), atol=1e-5)
    assert inputs.resample(batch, 16000, 16000) is batch


# ---------------------------------------------------------------------------------------------
# Audio files and clip length


def test_read_audio_mixes_resamples_and_matches_the_data_sets(tmp_path):
    stereo = np.stack([tone(440, 22050, 0.3), np.zeros(round(22050 * 0.3), np.float32)], 1)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), stereo, 22050)
    wave = inputs.read_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.shape == (math.ceil(len(stereo) * 16000 / 22050),)
    np.testing.assert_allclose(wave[200:-200], tone(440, 16000, 0.3)[: len(wave)][200:-200] / 2, atol=2e-3)
    assert np.array_equal(data_audio.read_audio(path, 16000).numpy(), wave)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage that is no wave"), "cannot read audio"),
        (lambda p: sf.write(str(p), np.zeros(0, np.float32), 16000), "no samples"),
        (lambda p: sf.write(str(p), np.full(800, np.nan, np.float32), 16000, subtype="FLOAT"), "NaN or infinite"),
        (lambda p: sf.write(str(p), np.full(800, 3e-5, np.float32), 16000, subtype="FLOAT"), "silent"),
        (lambda p: None, "no such file"),
    ],
    ids=["corrupt", "empty", "nan", "silent", "missing"],
)
def test_unusable_audio_is_one_line_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "clip.wav"
    make(path)
    with pytest.raises(GroveError, match=reason) as err:
        inputs.read_audio(path, 16000)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_fix_length_pads_or_keeps_the_loudest_window_as_the_data_sets_do():
    assert inputs.fix_length(np.ones(10, np.float32), 16).tolist() == [1.0] * 10 + [0.0] * 6
    x = np.random.default_rng(2).uniform(-0.1, 0.1, 1000).astype(np.float32)
    x[700:750] = 0.9
    out = inputs.fix_length(x, 100)
    assert out.shape == (100,) and np.all(out[np.abs(out) > 0.5] == np.float32(0.9)) and (np.abs(out) > 0.5).sum() == 50
    assert np.array_equal(data_audio.fix_length(torch.from_numpy(x), 100).numpy(), out)
    assert inputs.fix_length(x, 1000) is x
