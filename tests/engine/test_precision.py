import ctypes
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from grove.config import TrainConfig
from grove.engine.precision import resolve_speed

LIBC = ctypes.CDLL("libc.so.6") if platform.libc_ver()[0] == "glibc" else None
glibc = pytest.mark.skipif(LIBC is None, reason="the allocator setting is for glibc's malloc")

# In a fresh process (the setting is process-wide and cannot be undone): how many of a training
# step's worth of blocks (1-16 MiB) glibc serves with mmap, which hands them back to the kernel
# on free, so that the next step page-faults them in again (benchmarks/RESULTS.md).
MMAPPED_BLOCKS = textwrap.dedent("""
    import ctypes, sys
    from grove.engine.precision import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                         "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "kept":
        assert keep_freed_memory()
    before = libc.mallinfo2().hblks
    blocks = [libc.malloc(mib << 20) for mib in (1, 2, 4, 8, 16)]
    print(libc.mallinfo2().hblks - before)
    for block in blocks:
        libc.free(block)
""")


def mmapped_blocks(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", MMAPPED_BLOCKS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not hasattr(LIBC, "mallinfo2"), reason="needs glibc 2.33 or newer (mallinfo2)")
def test_kept_freed_memory_serves_activation_sized_blocks_from_the_heap():
    assert mmapped_blocks("default") == 5  # glibc's defaults: every one mmapped, unmapped on free
    assert mmapped_blocks("kept") == 0


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
