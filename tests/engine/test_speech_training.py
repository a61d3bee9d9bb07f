"""Speech end to end on tiny espeak-ng data: train, evaluate, predict from WAV files, resume.

Each run here is a few words (or digit strings) by a handful of voices and a model of at most a
few thousand parameters: the point is the plumbing (run directory, CLI, audio files,
checkpoints), not accuracy, so transcripts may well be empty.
"""

import json
import re
import subprocess

import numpy as np
import pytest
import yaml

from conftest import run_grove, same_final_weights, train_killed_and_resumed
from grove.config import validate
from grove.engine.loop import train
from grove.rundir import RunDir

pytestmark = [pytest.mark.espeak, pytest.mark.e2e]

VOICES = ["en-us+m3", "en-gb+f3", "en-029+klatt", "en-us+f1", "en-gb-scotland+m1"]
WORDS = ["yes", "no", "seven"]
SPOKEN = {"voices": VOICES, "speeds": [160], "pitches": [50], "val_voices": 1, "test_voices": 1}

KEYWORDS = {
    "model": {"name": "ds_cnn", "channels": 8, "n_blocks": 1},
    "data": {"name": "spoken_words", "words": WORDS, **SPOKEN, "batch_size": 3, "eval_batch_size": 8},
    "optim": {"name": "adamw", "lr": 0.01},
    "train": {"epochs": 2, "precision": "fp32", "log_every": 2},
}
DIGITS = {
    "task": "ctc",
    "model": {"name": "conv_rnn_ctc", "channels": 4, "hidden": 8, "layers": 1},
    "data": {"name": "spoken_digit_sequences", "n_utterances": 10, **SPOKEN, "batch_size": 2, "eval_batch_size": 4},
    "optim": {"name": "adamw", "lr": 0.01},
    "train": {"epochs": 2, "precision": "fp32", "log_every": 2},
}


@pytest.fixture(scope="module", autouse=True)
def data_dir(tmp_path_factory):
    """Generated audio goes to a temporary GROVE_DATA_DIR, for this process and the `grove` it starts."""
    path = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GROVE_DATA_DIR", str(path))
        yield path


def train_recipe(raw: dict, base) -> RunDir:
    summary = train(validate({**raw, "run": {"dir": str(base)}}), "speech-test")
    return RunDir(summary["run"])


@pytest.fixture(scope="module")
def keyword_run(tmp_path_factory):
    return train_recipe(KEYWORDS, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def ctc_run(tmp_path_factory):
    return train_recipe(DIGITS, tmp_path_factory.mktemp("runs"))


def write_wav(path, samples, rate: int):
    import soundfile

    soundfile.write(str(path), samples, rate)
    return path


def espeak_wav(path, text: str):
    """`text` as espeak-ng writes it: a 22,050 Hz WAV, which predict must resample to 16 kHz."""
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, timeout=60)
    return path


def test_keyword_run_directory(keyword_run):
    run = keyword_run
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "summary.json"):
        assert (run.path / name).is_file(), name
    assert run.checkpoint("best") is not None and run.checkpoint("last") is not None
    meta = run.read_json("meta.json")
    assert meta["classes"] == WORDS and meta["data"]["kind"] == "keywords" and meta["data"]["sample_rate"] == 16000
    summary = run.read_json("summary.json")
    assert summary["split"] == "test" and 0 <= summary["accuracy"] <= 1 and summary["epochs"] == 2
    assert {r["split"] for r in run.read_metrics()} == {"train", "val"}


def test_keyword_predict_and_evaluate(keyword_run, tmp_path):
    import soundfile

    from grove.data.spoken_words import spoken_words

    data = spoken_words(words=WORDS, **SPOKEN)  # the run's data set, from the cache
    clip = write_wav(tmp_path / "clip.wav", data.test.inputs[0].numpy(), 16000)
    spoken = espeak_wav(tmp_path / "espeak.wav", "seven")
    assert soundfile.info(str(spoken)).samplerate == 22050
    result = run_grove("predict", keyword_run.path, clip, spoken, "--top-k", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, file in zip(lines, (clip, spoken)):
        assert re.fullmatch(rf"{re.escape(str(file))}: (yes|no|seven) [01]\.\d{{3}}, (yes|no|seven) [01]\.\d{{3}}", line)

    evaluated = run_grove("evaluate", keyword_run.path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith("test: loss") and "accuracy" in evaluated.stdout
    assert f"({len(data.test)} samples)" in evaluated.stdout and "confusion matrix" in evaluated.stdout


def test_ctc_predict_and_evaluate(ctc_run, tmp_path):
    meta = ctc_run.read_json("meta.json")
    assert meta["task"] == "ctc" and meta["data"]["kind"] == "transcription"
    assert ctc_run.read_json("summary.json")["split"] == "test"
    spoken = espeak_wav(tmp_path / "digits.wav", "four two")
    result = run_grove("predict", ctc_run.path, spoken, "--json")
    assert result.returncode == 0, result.stderr
    (out,) = json.loads(result.stdout)
    # An untrained model may well print nothing but blanks: the transcript is letters of the alphabet.
    assert out["input"] == str(spoken) and isinstance(out["transcript"], str)
    assert set(out["transcript"]) <= set(meta["data"]["alphabet"][1:])
    plain = run_grove("predict", ctc_run.path, spoken, "--beam-width", "0")
    assert plain.returncode == 0 and plain.stdout.startswith(f"{spoken}: ") and plain.stdout.count("\n") == 1

    evaluated = run_grove("evaluate", ctc_run.path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert re.match(r"test: loss \d+\.\d{4}  cer \d+\.\d{4}  wer \d+\.\d{4}  \(\d+ samples\)", evaluated.stdout)


def zero_length_wav(path):
    return write_wav(path, np.zeros(0, dtype=np.float32), 16000)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt not really a wav file"), "cannot read audio"),
        (lambda p: p.write_bytes(b""), "cannot read audio"),
        (zero_length_wav, "it has no samples"),
    ],
    ids=["corrupt", "empty-file", "zero-length"],
)
@pytest.mark.parametrize("which", ["keyword", "ctc"])
def test_predict_on_an_unusable_wav_is_one_line(request, which, make, reason, tmp_path):
    run = request.getfixturevalue(f"{which}_run")
    bad = tmp_path / "bad.wav"
    make(bad)
    result = run_grove("predict", run.path, bad)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and reason in result.stderr and str(bad) in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# Resume

RESUME = {
    **KEYWORDS,
    "train": {"epochs": 12, "precision": "fp32", "log_every": 2, "checkpoint_every": 3},
}


def metric_records(run: RunDir) -> list:
    return [(r["split"], r["step"], r["epoch"], r["loss"], r["accuracy"]) for r in run.read_metrics()]


@pytest.mark.e2e
def test_sigkill_then_resume_of_a_speech_run_gives_identical_weights(tmp_path, keyword_run):
    # keyword_run has generated (and cached) the audio, so both runs below start training at once.
    recipe = tmp_path / "tiny-words.yaml"
    recipe.write_text(yaml.safe_dump(RESUME))
    full_run, cut_run = train_killed_and_resumed(tmp_path, [recipe], 7)
    assert same_final_weights(full_run, cut_run)
    assert metric_records(full_run) == metric_records(cut_run)
    assert full_run.read_json("summary.json")["accuracy"] == cut_run.read_json("summary.json")["accuracy"]
