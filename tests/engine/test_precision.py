import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from grove.config import TrainConfig
from grove.engine.precision import resolve_speed

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is for glibc's malloc")

# A few training steps of the survey's CNN in a fresh process (the setting is process-wide and
# cannot be undone): minor page faults per step, with glibc's defaults or with freed memory kept.
FAULTS_PER_STEP = textwrap.dedent("""
    import resource, sys, torch
    from grove.engine.precision import keep_freed_memory
    from grove.registry import create_model
    if sys.argv[1] == "kept":
        assert keep_freed_memory()
    torch.manual_seed(0)
    model = create_model("seed_cnn", num_classes=10, in_channels=3, image_size=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
""")


def faults_per_step(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


@glibc
def test_kept_freed_memory_stops_the_page_faults_of_every_step():
    default, kept = faults_per_step("default"), faults_per_step("kept")
    assert default > 1000  # glibc hands the activations back and faults them in again
    assert kept < default / 10


@glibc
def test_freed_memory_is_kept_on_cpu_by_default_and_can_be_switched_off():
    cpu = torch.device("cpu")
    assert resolve_speed(TrainConfig(), cpu, image_model=True).keep_freed_memory is True
    assert resolve_speed(TrainConfig(keep_freed_memory=False), cpu, image_model=True).keep_freed_memory is False


def test_auto_settings_on_cpu():
    speed = resolve_speed(TrainConfig(), torch.device("cpu"), image_model=False)
    assert speed.compile is False and speed.channels_last is False
    assert speed.precision in ("bf16", "fp32")


def test_label_names_the_active_settings():
    speed = resolve_speed(TrainConfig(precision="fp32", channels_last=True, keep_freed_memory=False),
                          torch.device("cpu"), image_model=True)
    assert speed.label() == "fp32 channels_last"
    assert speed.describe()["label"] == "fp32 channels_last"
