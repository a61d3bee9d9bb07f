"""Speech under recording conditions: accuracy, CER and WER on held-out voices, one condition at a time.

    python benchmarks/speech_robustness.py                        # trains the three recipes, then the table
    python benchmarks/speech_robustness.py --runs cnn=RUN ...     # evaluates runs already trained (LABEL=RUN)

The test material is spoken afresh by espeak-ng with each run's own test voices (never heard in
training), at the recipe's speeds, at pitch 50: every keyword of a keyword run (660 clips for
spoken-words), or 8 seeded digit strings per voice and speed for spoken-digits-ctc (240). Each
utterance is trimmed to its speech, peak-normalised to 0.7 of full scale and, for "clean", placed
between 0.25 s of digital silence either side. Each other condition changes one thing:

    no leading silence     the recording starts on the first sample of speech
    1 s leading silence    1 s of digital silence before it
    gain -20 dB / +6 dB    quieter; louder and clipped at full scale (+6 dB takes the 0.7 peak to 1.4)
    tempo 0.85 / 1.15      slower / faster at the same pitch (phase vocoder, 512-sample frames)
    white N dB             white Gaussian noise over the whole clip at N dB SNR to the speech
    babble N dB            six other utterances of the material, summed, at N dB SNR
    reverb                 a room impulse response: direct path, six early reflections in 5-40 ms, a
                           low-passed diffuse tail with RT60 0.5 s at 0 dB direct-to-reverberant

A keyword clip is fitted to the model's clip length as `grove predict` fits a file (the loudest
window of a longer one); an utterance is transcribed whole, greedily. Every random draw is seeded,
so two runs are compared on the same audio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from grove.data.audio.io import fix_length
from grove.data.espeak import speak, to_rate
from grove.data.spoken_words import DIGITS, SPEEDS
from grove.predictor import Predictor
from grove.tasks.ctc import cer, wer

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_line, train_run

RECIPES = ["spoken-words-cnn", "spoken-words-kwt", "spoken-digits-ctc"]
RATE = 16000
PEAK = 0.7
EDGE_S = 0.25
STRINGS_PER_VOICE_SPEED = 8


# -- material ------------------------------------------------------------------------------------


_SPOKEN: dict = {}


def material(predictor: Predictor) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Every condition's clips of the run's test voices (`conditions`), and their labels
    (keywords) or transcripts (digit strings); made once for runs that share them."""
    voices = predictor.data["voices"]["test"]
    speeds = predictor.run.recipe.data.model_extra.get("speeds") or SPEEDS
    key = (predictor.task, tuple(voices), tuple(speeds), tuple(predictor.classes))
    if key not in _SPOKEN:
        pieces, labels = _speak_material(predictor.task, voices, speeds, predictor.classes)
        _SPOKEN[key] = conditions(pieces), labels
    return _SPOKEN[key]


def _speak_material(task: str, voices: list[str], speeds, classes: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Clean trimmed speech (float32, 16 kHz, peak PEAK) and its labels."""
    rng = np.random.default_rng(0)
    pieces, labels = [], []
    for voice in voices:
        for speed in speeds:
            if task == "ctc":
                texts = [" ".join(DIGITS[d] for d in rng.integers(0, 10, rng.integers(2, 5))) for _ in range(STRINGS_PER_VOICE_SPEED)]
            else:
                texts = list(classes)
            spoken = to_rate(speak(texts, voice, int(speed), 50), RATE)
            pieces += [p / (np.abs(p).max() + 1e-9) * PEAK for p in spoken]
            labels += texts
    return pieces, labels


# -- conditions ----------------------------------------------------------------------------------


def place(speech: np.ndarray, lead_s: float = EDGE_S, trail_s: float = EDGE_S) -> np.ndarray:
    return np.concatenate([np.zeros(round(lead_s * RATE)), speech, np.zeros(round(trail_s * RATE))]).astype(np.float32)


def with_snr(clip: np.ndarray, speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    scale = np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10) / np.mean(noise**2))
    return (clip + noise * scale).astype(np.float32)


def tempo(x: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """x played `rate` times as fast at the same pitch: a phase vocoder (Flanagan & Golden; the
    algorithm of librosa.effects.time_stretch) over Hann-windowed frames, overlap-added back."""
    window = np.hanning(n_fft + 1)[:-1]
    padded = np.pad(x, n_fft // 2)
    starts = range(0, len(padded) - n_fft + 1, hop)
    spec = np.stack([np.fft.rfft(padded[s : s + n_fft] * window) for s in starts], 1)  # (F, T)
    spec = np.pad(spec, ((0, 0), (0, 2)))
    advance = np.linspace(0, np.pi * hop, spec.shape[0])
    phase = np.angle(spec[:, 0])
    steps = np.arange(0, spec.shape[1] - 2, rate)
    out = np.zeros((spec.shape[0], len(steps)), dtype=complex)
    for t, step in enumerate(steps):
        left, right = spec[:, int(step)], spec[:, int(step) + 1]
        frac = step - int(step)
        out[:, t] = ((1 - frac) * np.abs(left) + frac * np.abs(right)) * np.exp(1j * phase)
        delta = np.angle(right) - np.angle(left) - advance
        phase = phase + advance + delta - 2 * np.pi * np.round(delta / (2 * np.pi))
    length = n_fft + hop * (len(steps) - 1)
    y, norm = np.zeros(length), np.zeros(length)
    for t in range(len(steps)):
        y[t * hop : t * hop + n_fft] += np.fft.irfft(out[:, t], n_fft) * window
        norm[t * hop : t * hop + n_fft] += window**2
    y = (y / np.maximum(norm, 1e-8))[n_fft // 2 : -n_fft // 2 or None]
    return (y / (np.abs(y).max() + 1e-9) * PEAK).astype(np.float32)


def room_response(rng: np.random.Generator, rt60_s: float = 0.5) -> np.ndarray:
    taps = round(rt60_s * RATE)
    t = np.arange(taps) / RATE
    tail = rng.standard_normal(taps) * np.exp(-3 * np.log(10) * t / rt60_s)
    for i in range(1, taps):  # a one-pole low-pass: walls absorb high frequencies first
        tail[i] = 0.6 * tail[i - 1] + 0.4 * tail[i]
    tail[: round(0.005 * RATE)] = 0
    tail /= np.sqrt(np.sum(tail**2))  # 0 dB direct-to-reverberant
    rir = tail
    rir[0] = 1.0
    for delay, gain in zip(rng.uniform(0.005, 0.04, 6), rng.uniform(0.2, 0.6, 6)):
        rir[round(delay * RATE)] += gain * rng.choice([-1, 1])
    return rir


def conditions(pieces: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    clean = [place(p) for p in pieces]
    out = {
        "clean": clean,
        "no leading silence": [place(p, 0.0) for p in pieces],
        "1 s leading silence": [place(p, 1.0) for p in pieces],
        "gain -20 dB": [c * np.float32(0.1) for c in clean],
        "gain +6 dB (clipped)": [np.clip(c * np.float32(2.0), -1, 1) for c in clean],
        "tempo 0.85": [place(tempo(p, 0.85)) for p in pieces],
        "tempo 1.15": [place(tempo(p, 1.15)) for p in pieces],
    }
    for snr in (20, 10, 5):
        out[f"white {snr} dB"] = [with_snr(c, p, rng.standard_normal(len(c)), snr) for c, p in zip(clean, pieces)]
    for snr in (20, 10, 5):
        mixed = []
        for i, (c, p) in enumerate(zip(clean, pieces)):
            babble = np.zeros(len(c))
            for j in rng.choice([k for k in range(len(pieces)) if k != i], 6, replace=False):
                other = np.resize(pieces[j], len(c) + RATE)  # looped to cover the clip
                start = int(rng.integers(0, RATE))
                babble += other[start : start + len(c)]
            mixed.append(with_snr(c, p, babble, snr))
        out[f"babble {snr} dB"] = mixed
    rir = room_response(np.random.default_rng(2))
    out["reverb (RT60 0.5 s)"] = []
    for c in clean:
        wet = np.convolve(c, rir)[: len(c) + len(rir) // 2]
        out["reverb (RT60 0.5 s)"].append((wet / np.abs(wet).max() * PEAK).astype(np.float32))
    return out


# -- scoring ---------------------------------------------------------------------------------------


def score(predictor: Predictor, clips: list[np.ndarray], labels: list[str]) -> dict:
    if predictor.task == "ctc":  # in batches of similar lengths: the model masks the padding
        order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
        hyps = {}
        for k in range(0, len(order), 32):
            batch = [torch.from_numpy(clips[i]) for i in order[k : k + 32]]
            audio = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
            with torch.no_grad():
                features = predictor.transform({"audio": audio, "lengths": torch.tensor([len(w) for w in batch])}, False)
                outputs = predictor.model(features["features"], features["lengths"])
            hyps.update(zip(order[k : k + 32], predictor.run.task.decode(outputs)))
        hyps = [hyps[i] for i in range(len(clips))]
        return {"cer": cer(labels, hyps), "wer": wer(labels, hyps)}
    length = round(predictor.data["clip_seconds"] * predictor.data["sample_rate"])
    items = [fix_length(torch.from_numpy(c), length)[None] for c in clips]
    top = [row[0][0] for k in range(0, len(items), 128) for row in predictor.predict_batch(items[k : k + 128], 1, 0)]
    return {"accuracy": float(np.mean([t == label for t, label in zip(top, labels)]))}


def evaluate(run: Path) -> dict:
    predictor = Predictor.load(run, device="cpu")
    clips_by_condition, labels = material(predictor)
    figures = {name: score(predictor, clips, labels) for name, clips in clips_by_condition.items()}
    return {"run": str(run), "recipe": predictor.recipe, "task": predictor.task, "figures": figures}


def table(results: dict[str, dict]) -> str:
    labels = list(results)
    names = list(next(iter(results.values()))["figures"])
    head = "| condition | " + " | ".join(labels) + " |\n|---|" + "---:|" * len(labels)
    rows = []
    for name in names:
        cells = []
        for label in labels:
            f = results[label]["figures"][name]
            cells.append(f"{f['accuracy']:.1%}" if "accuracy" in f else f"{f['cer']:.1%} / {f['wer']:.1%}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], help="LABEL=RUN_DIR; without it the recipes are trained")
    parser.add_argument("--recipes", nargs="*", default=RECIPES)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    runs = dict(entry.split("=", 1) for entry in args.runs)
    work = Path(tempfile.mkdtemp(prefix="grove-robustness-"))
    for recipe in args.recipes if not runs else ():
        runs[recipe] = str(train_run(recipe, work))
    results = {}
    for label, run in runs.items():
        results[label] = evaluate(Path(run))
        print(f"{label}: {json.dumps(results[label]['figures'])}", flush=True)
    by_task: dict[str, dict] = {}
    for label, result in results.items():
        by_task.setdefault(result["task"], {})[label] = result
    for task, group in by_task.items():
        metric = "CER / WER" if task == "ctc" else "accuracy"
        print(f"\n{metric} on held-out voices\n\n{table(group)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
