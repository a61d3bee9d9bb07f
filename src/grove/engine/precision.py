"""Numeric precision, memory format, compilation and the host allocator: the speed settings of a run.

`auto` choices follow a check or a probe on the machine that runs them, and every choice carries
its reason (`Speed.reasons`, in summary.json):

- precision on CUDA: bf16 from compute capability 8.0 (Ampere) on, fp16 below it.
- precision on CPU: bf16 only where the CPU has native bf16 (AVX512_BF16 or AMX on x86, the `bf16`
  feature on aarch64, read from /proc/cpuinfo) *and* a short probe on this machine finds bf16
  autocast at least 5% faster than fp32 for the model's family (cnn, rnn, transformer), cached per
  CPU model, torch version and family. oneDNN reports bf16 as supported wherever it can emulate
  it: on an AVX-512 Xeon without AVX512_BF16 that made a char GPT train 3.5x slower than fp32.
- channels_last for image models; torch.compile on CUDA only (on a 2-core CPU it slowed training);
  on CPU a malloc that keeps freed activations (1.1-1.5x faster training steps). Measurements:
  benchmarks/RESULTS.md.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from grove.errors import GroveError
from grove.files import atomic_write
from grove.registry import create_model

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

X86_NATIVE_BF16 = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flag names
PROBE_MARGIN = 1.05  # bf16 must be at least this much faster than fp32 to be chosen
PROBE_CACHE = "precision_probe.json"


@dataclass
class Speed:
    device: str
    precision: str  # fp32, bf16 or fp16
    channels_last: bool
    compile: bool
    keep_freed_memory: bool  # glibc's malloc told to keep freed memory (CPU training)
    # setting -> "value: why", e.g. {"precision": "fp32: CPU has no native bf16 (...)"}
    reasons: dict[str, str] = field(default_factory=dict)

    def autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=DTYPES[self.precision])

    def memory_format(self, x):
        """Image batches in channels_last when that is on; anything else unchanged."""
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def grad_scaler(self):
        """fp16 needs loss scaling; bf16 has fp32's range and does not."""
        return torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    def describe(self) -> dict:
        return {**asdict(self), "label": self.label(), "explain": self.explain()}

    def label(self) -> str:
        """The active settings in a few words, e.g. 'bf16 channels_last freed-memory-kept'."""
        flags = {"channels_last": self.channels_last, "compiled": self.compile, "freed-memory-kept": self.keep_freed_memory}
        return " ".join([self.precision, *(name for name, on in flags.items() if on)])

    def explain(self) -> str:
        """Every setting with its reason, on one line: 'precision fp32: CPU has no native bf16 (...); ...'."""
        return "; ".join(f"{name} {reason}" for name, reason in self.reasons.items())


# -- the CPU --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CPUInfo:
    model: str  # e.g. "AMD EPYC 9654 96-Core Processor"
    arch: str  # platform.machine(): x86_64, aarch64, ...
    flags: frozenset[str]  # x86 "flags" / aarch64 "Features" of /proc/cpuinfo; empty where unreadable


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> CPUInfo:
    """The first processor's model name and feature flags (all processors of a machine share them)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as lines:
            for line in lines:
                key, sep, value = line.partition(":")
                if not sep:
                    if fields:  # the blank line that ends the first processor
                        break
                    continue
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    arm = [f"{k.split()[-1]} {fields[k]}" for k in ("CPU implementer", "CPU part") if k in fields]
    model = (
        fields.get("model name")
        or fields.get("Hardware")
        or (f"{platform.machine()} ({', '.join(arm)})" if arm else "")
        or platform.processor()
        or platform.machine()
        or "unknown CPU"
    )
    flags = fields.get("flags") or fields.get("Features") or ""
    return CPUInfo(model, platform.machine(), frozenset(flags.split()))


def native_bf16(info: CPUInfo) -> tuple[bool, str]:
    """Whether the CPU computes bf16 in hardware, and what says so. Not oneDNN's answer: it reports
    bf16 as supported on every AVX-512 CPU, where it emulates it several times slower than fp32."""
    if not info.flags:
        return False, "its flags are unreadable (no /proc/cpuinfo)"
    if info.arch in ("x86_64", "AMD64", "i386", "i686"):
        found = [f for f in X86_NATIVE_BF16 if f in info.flags]
        if found:
            return True, f"{'+'.join(found)} in /proc/cpuinfo"
        return False, "no avx512_bf16/amx_bf16 in /proc/cpuinfo"
    if info.arch in ("aarch64", "arm64"):
        if "bf16" in info.flags:
            return True, "bf16 in /proc/cpuinfo Features"
        return False, "no bf16 in /proc/cpuinfo Features"
    return False, f"no native bf16 check for {info.arch}"


# -- the probe and its cache ----------------------------------------------------------------------


def cache_dir() -> Path:
    """grove's cache: $GROVE_CACHE_DIR, else $XDG_CACHE_HOME/grove, else ~/.cache/grove."""
    if os.environ.get("GROVE_CACHE_DIR"):
        return Path(os.environ["GROVE_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "grove"
    return Path.home() / ".cache" / "grove"


def probe_key(cpu_model: str, family: str) -> str:
    return f"{cpu_model} | torch {torch.__version__} | {family}"


def read_probe_cache(path: Path) -> dict:
    """The cached probe results; {} for a missing, unreadable or corrupt file (it is rewritten)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_probe_cache(path: Path, key: str, entry: dict) -> None:
    """Add one result, atomically (temp file + os.replace), so a reader never sees half a file.
    A cache that cannot be written costs a probe per run, nothing more."""
    try:
        entries = {**read_probe_cache(path), key: entry}  # re-read: another run may have added one
        atomic_write(path, json.dumps(entries, indent=1, sort_keys=True))
    except OSError:
        pass


def _tokens(batch: int, length: int, vocab: int):
    return lambda model: torch.randint(0, vocab, (batch, length))


# family -> (registered model, its options, input batch): small members of each family at a
# typical CPU training shape, each step 5-50 ms in fp32 on 2 cores.
PROBE_MODELS = {
    "cnn": ("seed_cnn", {"image_size": 32}, lambda model: model.example_input(32)),
    "rnn": ("lstm_lm", {"vocab_size": 256, "n_embd": 128, "n_hidden": 256}, _tokens(16, 64, 256)),
    "transformer": ("gpt", {"vocab_size": 256, "block_size": 64}, _tokens(16, 64, 256)),
}


def probe_bf16_speedup(family: str, budget_s: float = 2.0, max_rounds: int = 9) -> dict:
    """fp32's forward + backward step time over bf16 autocast's, for a small model of `family` on
    this CPU: one warm-up step each, then rounds of one step each, the order alternating, for up to
    `budget_s` (at least 3 rounds); medians. Global RNG state is left as it was."""
    name, options, make_input = PROBE_MODELS[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, **options)
        x = make_input(model)
        if x.dim() == 4:  # image models train channels_last (auto)
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def step_seconds(precision: str) -> float:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext():
                out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            logits.float().logsumexp(-1).mean().backward()  # a cross-entropy's softmax cost
            model.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        times = {"fp32": [], "bf16": []}
        for precision in times:
            try:
                step_seconds(precision)  # oneDNN builds its kernels; the allocator grows
            except RuntimeError as err:  # e.g. oneDNN has no bf16 LSTM for this CPU
                failed = f"{precision} step failed: {str(err).splitlines()[0].split('. ')[0]}"
                return {"speedup": 0.0, "error": failed, "probe_model": name, "measured": time.strftime("%FT%T")}
        deadline = time.perf_counter() + budget_s
        for i in range(max_rounds):
            for precision in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
                times[precision].append(step_seconds(precision))
            if i >= 2 and time.perf_counter() > deadline:
                break
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    return {
        "speedup": fp32 / bf16,
        "fp32_ms": round(fp32 * 1e3, 3),
        "bf16_ms": round(bf16 * 1e3, 3),
        "rounds": len(times["fp32"]),
        "probe_model": name,
        "threads": torch.get_num_threads(),
        "measured": time.strftime("%FT%T"),
    }


def cached_probe(info: CPUInfo, family: str) -> tuple[dict, str]:
    """The probe's result for this CPU, torch and family, from the cache or measured now, and which."""
    path = cache_dir() / PROBE_CACHE
    key = probe_key(info.model, family)
    entry = read_probe_cache(path).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("speedup"), (int, float)) and entry["speedup"] >= 0:
        return entry, f"cached in {path}"
    entry = probe_bf16_speedup(family)
    write_probe_cache(path, key, entry)
    return entry, f"probed now, cached in {path}"


def cpu_auto_precision(family: str | None) -> tuple[str, str]:
    info = cpu_info()
    native, evidence = native_bf16(info)
    if not native:
        return "fp32", f"fp32: CPU has no native bf16 ({evidence})"
    if family not in PROBE_MODELS:
        return "fp32", (
            f"fp32: CPU has native bf16 ({evidence}) but model family {family!r} has no probe; "
            "train.precision=bf16 uses it"
        )
    entry, source = cached_probe(info, family)
    if entry.get("error"):
        return "fp32", f"fp32: native bf16 ({evidence}) but the {family} probe's {entry['error']} ({source})"
    speedup = float(entry["speedup"])
    if all(isinstance(entry.get(k), (int, float)) for k in ("fp32_ms", "bf16_ms")):
        source = f"{entry['fp32_ms']:.1f} vs {entry['bf16_ms']:.1f} ms/step, {source}"
    if speedup >= PROBE_MARGIN:
        return "bf16", (
            f"bf16: native bf16 ({evidence}) and probe {speedup:.2f}x faster than fp32 for {family} ({source})"
        )
    return "fp32", (
        f"fp32: native bf16 ({evidence}) but probe only {speedup:.2f}x fp32's speed for {family}, "
        f"under the {PROBE_MARGIN:.2f}x needed ({source})"
    )


def auto_precision(device: torch.device, family: str | None) -> tuple[str, str]:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return "bf16", f"bf16: CUDA compute capability {major}.{minor} >= 8.0 (native bf16)"
        return "fp16", f"fp16: CUDA compute capability {major}.{minor} < 8.0 (no native bf16)"
    if device.type == "cpu":
        return _same_on_every_rank(lambda: cpu_auto_precision(family))
    return "fp32", f"fp32: auto lowers precision on CPU and CUDA only, not {device.type}"


def _same_on_every_rank(decide):
    """Rank 0's decision on every process: probes are noisy, and ranks must train alike."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return decide()
    decided = [decide() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(decided, src=0)
    return tuple(decided[0])


def resolve_precision(setting: str, device: torch.device, family: str | None) -> tuple[str, str]:
    """The precision and why: 'auto' as the module docstring says; anything else as set."""
    if setting == "auto":
        return auto_precision(device, family)
    if setting == "fp16" and device.type != "cuda":
        raise GroveError("train.precision=fp16 needs a CUDA GPU; use bf16 (or fp32) on CPU")
    reason = f"{setting}: set in recipe"
    if setting == "bf16" and device.type == "cpu":
        native, evidence = native_bf16(cpu_info())
        if not native:
            reason += f" (CPU has no native bf16, {evidence}: emulated, likely slower than fp32)"
    return setting, reason


# -- the allocator --------------------------------------------------------------------------------


def keep_freed_memory() -> bool:
    """Stop glibc's malloc from handing freed activations back to the kernel after every step.

    By default glibc serves large blocks with mmap (past a threshold that adapts as the program
    runs) and trims the top of its heap, so each CPU training step page-faults its activations back
    in: thousands of minor faults a step, an eighth to a third of the step time of the survey's CNN
    (benchmarks/train_overhead.py). Process-wide; returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest: blocks under 32 MiB come from the heap
        and libc.mallopt(m_trim_threshold, 1 << 30)  # keep up to 1 GiB of freed heap
    )


# -- all of them ----------------------------------------------------------------------------------


def _onoff(on: bool) -> str:
    return "on" if on else "off"


def resolve_speed(train_cfg, device: torch.device, model: torch.nn.Module | bool, family: str | None = None) -> Speed:
    """The run's speed settings and why; the allocator one is process-wide and applied here.

    `model` is the model to train (an image model is one whose example input is 4-D), or, for a
    caller without one, whether it takes image batches. `family` is the model's registry tag
    (cnn, rnn, transformer): the CPU precision probe is per family, and None means no probe.
    """
    image_model = model if isinstance(model, bool) else model.example_input(1).dim() == 4
    reasons = {}
    precision, reasons["precision"] = resolve_precision(train_cfg.precision, device, family)

    channels_last = train_cfg.channels_last
    if channels_last == "auto":
        channels_last = image_model
        reasons["channels_last"] = f"{_onoff(image_model)}: auto, {'an' if image_model else 'not an'} image model"
    elif channels_last and not image_model:
        channels_last = False
        reasons["channels_last"] = "off: set in recipe, but the model takes no image batches"
    else:
        reasons["channels_last"] = f"{_onoff(channels_last)}: set in recipe"

    compile_ = train_cfg.compile
    if compile_ == "auto":
        compile_ = device.type == "cuda"
        slower = f"off: auto, {device.type} (compiling slowed CPU training)"
        reasons["compile"] = "on: auto, CUDA" if compile_ else slower
    else:
        reasons["compile"] = f"{_onoff(compile_)}: set in recipe"

    keep = train_cfg.keep_freed_memory
    source = "set in recipe"
    if keep == "auto":
        keep, source = device.type == "cpu", f"auto, {device.type}"
    kept = bool(keep) and keep_freed_memory()
    not_glibc = ", but the C library is not glibc" if keep and not kept else ""
    reasons["keep_freed_memory"] = f"{_onoff(kept)}: {source}{not_glibc}"
    return Speed(str(device), precision, bool(channels_last), bool(compile_), kept, reasons)
