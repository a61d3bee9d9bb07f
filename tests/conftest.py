import os
import subprocess
import sys
from pathlib import Path

import pytest


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


@pytest.fixture
def grove_cli():
    return run_grove
