import ctypes
import json
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from grove.config import TrainConfig
from grove.engine import precision as P
from grove.engine.precision import CPUInfo, resolve_speed
from grove.errors import GroveError
from grove.registry import create_model

LIBC = ctypes.CDLL("libc.so.6") if platform.libc_ver()[0] == "glibc" else None
glibc = pytest.mark.skipif(LIBC is None, reason="the allocator setting is for glibc's malloc")
CPU = torch.device("cpu")

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
    speed = resolve_speed(TrainConfig(precision="fp32"), CPU, True)
    assert speed.keep_freed_memory is True and speed.reasons["keep_freed_memory"] == "on: auto, cpu"
    speed = resolve_speed(TrainConfig(precision="fp32", keep_freed_memory=False), CPU, True)
    assert speed.keep_freed_memory is False and speed.reasons["keep_freed_memory"] == "off: set in recipe"


# -- the CPU's flags ------------------------------------------------------------------------------

XEON_NO_BF16 = CPUInfo(
    "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "x86_64", frozenset({"avx2", "avx512f", "avx512bw"})
)
EPYC_BF16 = CPUInfo("AMD EPYC 9654 96-Core Processor", "x86_64", frozenset({"avx2", "avx512f", "avx512_bf16"}))


def write_cpuinfo(tmp_path, text: str):
    path = tmp_path / "cpuinfo"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_cpu_info_reads_the_first_processor_of_proc_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    path = write_cpuinfo(tmp_path, """\
        processor\t: 0
        model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
        flags\t\t: fpu avx2 avx512f avx512bw

        processor\t: 1
        model name\t: something else
        flags\t\t: avx512_bf16
    """)
    info = P.cpu_info(path)
    assert info.model == "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz"
    assert info.flags == {"fpu", "avx2", "avx512f", "avx512bw"}
    assert P.native_bf16(info) == (False, "no avx512_bf16/amx_bf16 in /proc/cpuinfo")


def test_cpu_info_on_aarch64_reads_features_and_names_the_part(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    path = write_cpuinfo(tmp_path, """\
        processor\t: 0
        BogoMIPS\t: 243.75
        Features\t: fp asimd sve bf16 i8mm
        CPU implementer\t: 0x41
        CPU part\t: 0xd40
    """)
    info = P.cpu_info(path)
    assert info.model == "aarch64 (implementer 0x41, part 0xd40)"
    assert P.native_bf16(info) == (True, "bf16 in /proc/cpuinfo Features")


def test_native_bf16_means_avx512_bf16_or_amx_on_x86_not_avx512_alone(tmp_path):
    assert P.native_bf16(XEON_NO_BF16)[0] is False
    assert P.native_bf16(EPYC_BF16) == (True, "avx512_bf16 in /proc/cpuinfo")
    assert P.native_bf16(CPUInfo("Sapphire Rapids", "x86_64", frozenset({"amx_bf16", "amx_tile"})))[0] is True
    assert P.native_bf16(CPUInfo("Graviton2", "aarch64", frozenset({"fp", "asimd"})))[0] is False
    unreadable = P.cpu_info(str(tmp_path / "missing"))
    assert P.native_bf16(unreadable) == (False, "its flags are unreadable (no /proc/cpuinfo)")


# -- auto precision on CPU: flags, then the probe, then the cache -----------------------------------


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A fake probe that records its calls and returns `probe.speedup`; the cache in tmp_path."""
    monkeypatch.setenv("GROVE_CACHE_DIR", str(tmp_path / "cache"))

    class FakeProbe:
        def __init__(self):
            self.speedup = 1.8
            self.calls = []
            self.cache = tmp_path / "cache" / P.PROBE_CACHE

        def __call__(self, family):
            self.calls.append(family)
            return {"speedup": self.speedup, "fp32_ms": 18.0, "bf16_ms": 18.0 / self.speedup}

    fake = FakeProbe()
    monkeypatch.setattr(P, "probe_bf16_speedup", fake)
    return fake


def on_cpu(monkeypatch, info: CPUInfo):
    monkeypatch.setattr(P, "cpu_info", lambda: info)


def test_without_native_bf16_auto_is_fp32_and_nothing_is_probed(probe, monkeypatch):
    on_cpu(monkeypatch, XEON_NO_BF16)
    speed = resolve_speed(TrainConfig(), CPU, create_model("gpt"), "transformer")
    assert speed.precision == "fp32" and probe.calls == [] and not probe.cache.exists()
    assert speed.reasons["precision"] == "fp32: CPU has no native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo)"


@pytest.mark.parametrize(("speedup", "chosen"), [(1.8, "bf16"), (1.05, "bf16"), (1.03, "fp32"), (0.3, "fp32")])
def test_with_native_bf16_auto_follows_the_probe(probe, monkeypatch, speedup, chosen):
    on_cpu(monkeypatch, EPYC_BF16)
    probe.speedup = speedup
    speed = resolve_speed(TrainConfig(), CPU, create_model("seed_cnn"), "cnn")
    assert speed.precision == chosen and probe.calls == ["cnn"]
    reason = speed.reasons["precision"]
    assert reason.startswith(f"{chosen}: native bf16 (avx512_bf16 in /proc/cpuinfo)") and f"{speedup:.2f}x" in reason


def test_the_probe_is_cached_per_cpu_model_torch_version_and_family(probe, monkeypatch):
    on_cpu(monkeypatch, EPYC_BF16)
    first = resolve_speed(TrainConfig(), CPU, True, "cnn")
    again = resolve_speed(TrainConfig(), CPU, True, "cnn")
    assert probe.calls == ["cnn"]  # the second run read the cache
    assert "probed now" in first.reasons["precision"] and "cached in" in again.reasons["precision"]
    assert again.precision == first.precision == "bf16"
    resolve_speed(TrainConfig(), CPU, False, "transformer")
    assert probe.calls == ["cnn", "transformer"]

    other_epyc = "AMD EPYC 9124 16-Core Processor"
    on_cpu(monkeypatch, CPUInfo(other_epyc, "x86_64", EPYC_BF16.flags))
    resolve_speed(TrainConfig(), CPU, True, "cnn")
    version = torch.__version__
    monkeypatch.setattr(torch, "__version__", "9.9.9+cpu")
    resolve_speed(TrainConfig(), CPU, True, "cnn")
    assert probe.calls == ["cnn", "transformer", "cnn", "cnn"]

    cached = json.loads(probe.cache.read_text())
    assert set(cached) == {
        f"{EPYC_BF16.model} | torch {version} | cnn",
        f"{EPYC_BF16.model} | torch {version} | transformer",
        f"{other_epyc} | torch {version} | cnn",
        f"{other_epyc} | torch 9.9.9+cpu | cnn",
    }
    assert all(entry["speedup"] == 1.8 for entry in cached.values())
    assert not list(probe.cache.parent.glob("*.tmp"))  # written through a temp file, replaced in one step


@pytest.mark.parametrize(
    "content", ["{not json", "[1, 2]", '{"AMD EPYC 9654 96-Core Processor | torch %s | cnn": {"speedup": "fast"}}']
)
def test_a_corrupt_cache_is_ignored_and_rewritten(probe, monkeypatch, content):
    on_cpu(monkeypatch, EPYC_BF16)
    probe.cache.parent.mkdir(parents=True)
    probe.cache.write_text(content.replace("%s", torch.__version__))
    assert resolve_speed(TrainConfig(), CPU, True, "cnn").precision == "bf16"
    assert probe.calls == ["cnn"]
    assert json.loads(probe.cache.read_text())[P.probe_key(EPYC_BF16.model, "cnn")]["speedup"] == 1.8


def test_a_cache_that_cannot_be_written_costs_a_probe_not_the_run(probe, monkeypatch, tmp_path):
    on_cpu(monkeypatch, EPYC_BF16)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GROVE_CACHE_DIR", str(tmp_path / "a-file"))
    assert resolve_speed(TrainConfig(), CPU, True, "cnn").precision == "bf16"
    assert resolve_speed(TrainConfig(), CPU, True, "cnn").precision == "bf16"
    assert probe.calls == ["cnn", "cnn"]


def test_a_family_without_a_probe_stays_fp32(probe, monkeypatch):
    on_cpu(monkeypatch, EPYC_BF16)
    speed = resolve_speed(TrainConfig(), CPU, False, None)
    assert speed.precision == "fp32" and probe.calls == [] and "has no probe" in speed.reasons["precision"]


def test_a_failed_probe_step_means_fp32(probe, monkeypatch):
    on_cpu(monkeypatch, EPYC_BF16)
    monkeypatch.setattr(P, "probe_bf16_speedup", lambda family: {"speedup": 0.0, "error": "bf16 step failed: no LSTM"})
    speed = resolve_speed(TrainConfig(), CPU, False, "rnn")
    assert speed.precision == "fp32" and "bf16 step failed: no LSTM" in speed.reasons["precision"]


def test_cache_dir_follows_grove_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("GROVE_CACHE_DIR", str(tmp_path / "g"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert P.cache_dir() == tmp_path / "g"
    monkeypatch.delenv("GROVE_CACHE_DIR")
    assert P.cache_dir() == tmp_path / "x" / "grove"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert P.cache_dir() == tmp_path / "h" / ".cache" / "grove"


def test_every_rank_takes_rank_0s_decision(probe, monkeypatch):
    on_cpu(monkeypatch, EPYC_BF16)
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)

    def broadcast_object_list(objects, src):
        assert src == 0 and objects == [None]
        objects[0] = ["bf16", "bf16: rank 0's probe"]

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast_object_list)
    speed = resolve_speed(TrainConfig(), CPU, True, "cnn")
    assert speed.precision == "bf16" and speed.reasons["precision"] == "bf16: rank 0's probe" and probe.calls == []


def test_the_real_probe_times_both_precisions_and_leaves_the_rng_alone(monkeypatch):
    monkeypatch.setitem(P.PROBE_MODELS, "cnn", ("seed_cnn", {"image_size": 8}, lambda model: model.example_input(4)))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    result = P.probe_bf16_speedup("cnn", budget_s=0.0)
    assert torch.equal(torch.rand(3), expected)
    if "error" not in result:  # this CPU's oneDNN may lack a bf16 kernel; that path is tested above
        assert result["rounds"] == 3 and result["fp32_ms"] > 0 and result["bf16_ms"] > 0 and result["speedup"] > 0


def test_a_probe_step_that_raises_is_reported_not_raised(monkeypatch):
    class NoBF16(torch.nn.Module):
        def forward(self, x):
            if torch.is_autocast_enabled("cpu"):
                raise RuntimeError("could not create a primitive descriptor\nmore")
            return x * 2

    monkeypatch.setattr(P, "create_model", lambda name, **options: NoBF16())
    monkeypatch.setitem(P.PROBE_MODELS, "rnn", ("lstm_lm", {}, lambda model: torch.ones(2, 3, requires_grad=True)))
    result = P.probe_bf16_speedup("rnn")
    assert result["speedup"] == 0.0 and result["error"] == "bf16 step failed: could not create a primitive descriptor"


# -- CUDA, explicit settings, the other settings --------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "chosen"), [((6, 1), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_auto_on_cuda_follows_compute_capability(monkeypatch, capability, chosen):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    speed = resolve_speed(TrainConfig(), torch.device("cuda", 0), True, "cnn")
    assert speed.precision == chosen and speed.compile is True and speed.keep_freed_memory is False
    assert speed.reasons["precision"].startswith(f"{chosen}: CUDA compute capability {capability[0]}.{capability[1]}")
    assert speed.reasons["compile"] == "on: auto, CUDA"


def test_explicit_settings_say_set_in_recipe(monkeypatch):
    on_cpu(monkeypatch, XEON_NO_BF16)
    speed = resolve_speed(TrainConfig(precision="bf16", channels_last=False, compile=False), CPU, True, "cnn")
    assert speed.precision == "bf16"
    assert speed.reasons["precision"].startswith("bf16: set in recipe (CPU has no native bf16")
    assert speed.reasons["channels_last"] == "off: set in recipe" and speed.reasons["compile"] == "off: set in recipe"
    assert resolve_speed(TrainConfig(precision="fp32"), CPU, True).reasons["precision"] == "fp32: set in recipe"
    with pytest.raises(GroveError, match="fp16 needs a CUDA GPU"):
        resolve_speed(TrainConfig(precision="fp16"), CPU, True)


def test_channels_last_follows_the_models_example_input():
    cnn = resolve_speed(TrainConfig(precision="fp32"), CPU, create_model("seed_cnn"), "cnn")
    gpt = resolve_speed(TrainConfig(precision="fp32", channels_last=True), CPU, create_model("gpt"), "transformer")
    assert cnn.channels_last is True and cnn.reasons["channels_last"] == "on: auto, an image model"
    assert gpt.channels_last is False
    assert gpt.reasons["channels_last"] == "off: set in recipe, but the model takes no image batches"
    assert gpt.compile is False and gpt.reasons["compile"].startswith("off: auto, cpu")


def test_label_and_explain_name_the_active_settings():
    speed = resolve_speed(TrainConfig(precision="fp32", channels_last=True, keep_freed_memory=False), CPU, True)
    assert speed.label() == "fp32 channels_last"
    assert speed.explain() == (
        "precision fp32: set in recipe; channels_last on: set in recipe; "
        "compile off: auto, cpu (compiling slowed CPU training); keep_freed_memory off: set in recipe"
    )
    described = speed.describe()
    assert described["label"] == "fp32 channels_last" and described["explain"] == speed.explain()
    assert described["reasons"]["precision"] == "fp32: set in recipe"
    json.dumps(described)  # goes into summary.json
