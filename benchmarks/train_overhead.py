"""Training-loop overhead: grove's loop against a plain PyTorch loop, then grove's speed settings.

    python benchmarks/train_overhead.py            # seed_cnn, a tiny 8x8 CNN and resnet18 (~7 min on 2 cores)
    python benchmarks/train_overhead.py --quick    # seed_cnn only, fewer steps and repeats (~2 min)

Every workload trains the same model (same registry builder, same init seed) on the same in-memory
data (random uint8 images, random labels, registered below as the data set `bench_images`) with

  plain  the survey's listing loop, corrected: model.train(), a fresh random permutation per epoch,
         batches gathered by indexing the in-memory tensors, the same uint8 -> float normalisation
         ((x / 255 - mean) / std), F.cross_entropy, zero_grad / backward / SGD(momentum=0.9).step();
  grove  grove.engine.loop.train() on a recipe with the same settings (fp32, no channels_last, no
         compile, constant lr, weight decay 0, log_every 50); it also draws its batch order with
         the same seeded permutation, so both loops compute the same losses (checked and printed).

Both are timed the same way: a global optimizer step post-hook (torch.optim) stamps the time of
every optimiser step; samples/s is batch * N / (time of step W+N - time of step W), after W
warm-up steps, so grove's setup, end-of-epoch evaluation, checkpoint and plots fall outside the
window while everything its loop does per step (transform, metrics, progress bar, logging every
log_every steps) falls inside it. Runs are interleaved (plain, grove, ..., then reversed in the
next round) and the figures are medians over rounds; ratios are medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from grove.config import validate
from grove.data.base import DataBundle, TensorData
from grove.data.image import ImageTransform
from grove.engine.loop import train
from grove.registry import create_model, register_dataset

MEAN, STD = 0.5, 0.25  # normalisation constants of the synthetic images (any fixed values do)
SEED = 0
LR = 0.01
LOG_EVERY = 50

# -- the data: random images in memory ---------------------------------------------------------

_DATA: dict = {}


@register_dataset(name="bench_images", modality="vision")
def bench_images(*, size: int = 32, channels: int = 3, n_train: int = 20_000, n_val: int = 256, seed: int = 0):
    """Random uint8 images with random labels (10 classes), in memory: a loader-free benchmark set."""
    key = (size, channels, n_train, n_val, seed)
    if key not in _DATA:
        g = torch.Generator().manual_seed(seed)  # its own generator: the model init is untouched
        n = n_train + n_val
        images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (n,), generator=g)
        _DATA[key] = (TensorData(images[:n_train], labels[:n_train]), TensorData(images[n_train:], labels[n_train:]))
    train_split, val_split = _DATA[key]
    transform = ImageTransform([MEAN] * channels, [STD] * channels)
    return DataBundle(
        train=train_split,
        val=val_split,
        test=None,
        classes=[str(i) for i in range(10)],
        transform=transform,
        meta={"modality": "image", "channels": channels, "image_size": size, "load_size": size,
              "transform": transform.to_dict()},
        model_defaults={"num_classes": 10, "in_channels": channels, "image_size": size},
    )


# -- workloads and settings ----------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    loop: str  # plain or grove
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        parts = [self.precision] + (["channels_last"] if self.channels_last else []) + (["compile"] if self.compile else [])
        return f"{self.loop} {'+'.join(parts)}"


PLAIN, GROVE = Setting("plain"), Setting("grove")


@dataclass
class Workload:
    name: str
    model: str
    size: int
    channels: int
    batch: int
    warmup: int
    steps: int
    rounds: int
    settings: list[Setting]
    model_options: dict = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        # One epoch holds warm-up and window, so no evaluation or checkpoint falls inside the window.
        return (self.warmup + self.steps + 1) * self.batch

    @property
    def data_options(self) -> dict:
        return {"size": self.size, "channels": self.channels, "n_train": self.n_train, "n_val": 256, "seed": SEED}

    def model_kwargs(self) -> dict:
        return {"num_classes": 10, "in_channels": self.channels, "image_size": self.size, **self.model_options}

    @property
    def title(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.model_options.items())
        return f"{self.model}{extra} {self.size}x{self.size}x{self.channels} b{self.batch}"


def workloads(quick: bool) -> list[Workload]:
    speed = [
        Setting("grove", "bf16"),
        Setting("grove", "fp32", True),
        Setting("grove", "bf16", True),
        Setting("plain", "bf16", True),
        Setting("grove", "fp32", False, True),
        Setting("grove", "bf16", True, True),
    ]
    if quick:
        return [Workload("seed_cnn", "seed_cnn", 32, 3, 128, 8, 50, 3, [PLAIN, GROVE, *speed])]
    return [
        # The survey's CNN on CIFAR-shaped images: per-step compute dominates (tens of ms a step).
        Workload("seed_cnn", "seed_cnn", 32, 3, 128, 10, 100, 5, [PLAIN, GROVE, *speed]),
        # The digits-cnn recipe's shape (8x8x1, batch 32): about a millisecond a step, so any
        # fixed per-step cost of the loop shows at full size.
        Workload("tiny", "seed_cnn", 8, 1, 32, 20, 400, 5,
                 [PLAIN, GROVE, Setting("grove", "bf16", True), Setting("plain", "bf16", True)]),
        # A heavier model at a small batch; compile is left out (minutes of compiling on 2 cores).
        Workload("resnet18", "resnet18", 32, 3, 32, 3, 16, 3,
                 [PLAIN, GROVE, Setting("grove", "bf16"), Setting("grove", "fp32", True), Setting("grove", "bf16", True)],
                 {"stem": "cifar"}),
    ]


# -- timing ---------------------------------------------------------------------------------------


def cpu_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used so far (busy and stolen jiffies of /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class StepClock:
    """perf_counter() after every optimiser step of any optimizer, while active.

    At the two steps that bound the timed window it also reads the machine's and this process's
    CPU time, so a run can say how many cores other processes took while it was being timed.
    """

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.times: list[float] = []
        self.marks: list[tuple[float, float, float]] = []

    def _stamp(self, *_) -> None:
        now = time.perf_counter()
        self.times.append(now)
        if len(self.times) in (self.warmup, self.warmup + self.steps):
            self.marks.append((now, cpu_busy_seconds(), time.process_time()))

    def __enter__(self):
        self.handle = register_optimizer_step_post_hook(self._stamp)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def samples_per_s(self, batch: int) -> float:
        t, w, n = self.times, self.warmup, self.steps
        if len(t) < w + n:
            raise RuntimeError(f"only {len(t)} optimiser steps were taken, expected {w + n}")
        return batch * n / (t[w + n - 1] - t[w - 1])

    def cores_elsewhere(self) -> float:
        """Average number of cores busy outside this process during the timed window."""
        (t0, busy0, own0), (t1, busy1, own1) = self.marks
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Sleep until the machine is idle (under `threshold` cores busy) or `max_wait` seconds pass."""
    end = time.perf_counter() + max_wait
    while True:
        t, busy, own = time.perf_counter(), cpu_busy_seconds(), time.process_time()
        time.sleep(0.5)
        load = ((cpu_busy_seconds() - busy) - (time.process_time() - own)) / (time.perf_counter() - t)
        if load < threshold or time.perf_counter() > end:
            return load


@dataclass
class Result:
    samples_per_s: float
    first_step_s: float  # from the call to the first optimiser step: setup (+ compiling)
    window_losses: list[tuple[int, float]]  # (step, mean train loss over the log window ending there)
    cores_elsewhere: float  # other processes' CPU use during the timed window
    logged_samples_per_s: float | None = None  # grove's own metrics.jsonl figure, steady windows


def run_plain(w: Workload, s: Setting) -> Result:
    """The survey's listing loop, corrected; tensors already in memory."""
    torch.use_deterministic_algorithms(False)  # torch's default (a grove run before leaves it on)
    start = time.perf_counter()
    bundle = bench_images(**w.data_options)
    images, labels = bundle.train.inputs, bundle.train.targets
    torch.manual_seed(SEED)
    model = create_model(w.model, **w.model_kwargs())
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    criterion = F.cross_entropy
    mean = torch.full((1, w.channels, 1, 1), MEAN)
    std = torch.full((1, w.channels, 1, 1), STD)
    scale, shift = 1 / (255 * std), -mean / std  # (x / 255 - mean) / std = x * scale + shift
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if s.precision == "bf16" else contextlib.nullcontext
    total, losses = w.warmup + w.steps, []
    steps_per_epoch = len(labels) // w.batch
    with StepClock(w.warmup, w.steps) as clock:
        epoch = 0
        while len(losses) < total:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED * 100_003 + epoch))
            for i in range(steps_per_epoch):
                index = order[i * w.batch : (i + 1) * w.batch]
                inputs = torch.addcmul(shift, images[index].float(), scale)
                if s.channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                optimizer.zero_grad()
                with autocast():
                    outputs = model(inputs)
                    loss = criterion(outputs, labels[index])
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
                if len(losses) == total:
                    break
            epoch += 1
    windows = [
        (end, float(torch.stack(losses[end - LOG_EVERY : end]).double().mean()))
        for end in range(LOG_EVERY, total + 1, LOG_EVERY)
    ]
    return Result(clock.samples_per_s(w.batch), clock.times[0] - start, windows, clock.cores_elsewhere())


def run_grove(w: Workload, s: Setting, run_dir: str) -> Result:
    """grove.engine.loop.train() on a recipe with the same model, data and settings."""
    recipe = validate({
        "model": {"name": w.model, **w.model_options},
        "data": {"name": "bench_images", "batch_size": w.batch, **w.data_options},
        "optim": {"name": "sgd", "lr": LR, "momentum": 0.9, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "train": {
            "epochs": 1,
            "max_steps": w.warmup + w.steps,
            "precision": s.precision,
            "channels_last": s.channels_last,
            "compile": s.compile,
            "log_every": LOG_EVERY,
            "seed": SEED,
            "device": "cpu",
        },
        "run": {"dir": run_dir, "name": f"{w.name}-{s.label.replace(' ', '-').replace('+', '-')}"},
    })
    start = time.perf_counter()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        with StepClock(w.warmup, w.steps) as clock:
            summary = train(recipe, "bench")
    records = [json.loads(line) for line in (Path(summary["run"]) / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    windows = [(r["step"], r["loss"]) for r in train_records if r["step"] % LOG_EVERY == 0]
    # grove's own figure, from log windows that lie wholly after the warm-up
    logged = [r["samples_per_s"] for r in train_records if r["step"] % LOG_EVERY == 0 and r["step"] - LOG_EVERY >= w.warmup]
    return Result(
        clock.samples_per_s(w.batch),
        clock.times[0] - start,
        windows,
        clock.cores_elsewhere(),
        statistics.median(logged) if logged else None,
    )


# -- FLOPs and the machine -------------------------------------------------------------------------


def machine_line() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    isa = ", ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "no AVX-512"
    return (
        f"{model}, {os.cpu_count()} cores ({isa}), {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def peak_matmul_flops(dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Measured peak: best FLOP/s of a 2048^3 matmul on this machine."""
    n = 2048
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def train_flops_per_sample(w: Workload) -> float:
    """Forward + backward FLOPs of one training sample (convolutions and matmuls, as MFU counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(w.model, **w.model_kwargs())
    x = torch.randn(8, w.channels, w.size, w.size)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    return counter.get_total_flops() / 8


# -- main ------------------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seed_cnn only, fewer steps and rounds")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per workload (default 5, resnet18 3, quick 3)")
    parser.add_argument("--only", help="comma-separated workload names to run (seed_cnn, tiny, resnet18)")
    parser.add_argument("--noise", type=float, default=0.2,
                        help="a run whose timed window saw other processes keep more cores than this busy is "
                        "disturbed: it is repeated, and left out of the figures when its round has clean runs (default 0.2)")
    parser.add_argument("--retries", type=int, default=3, help="repeats of a disturbed run; the least disturbed is kept")
    parser.add_argument("--max-wait", type=float, default=60.0,
                        help="seconds to wait for an idle machine before each run (default 60)")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    print(f"machine: {machine_line()}")
    wait_for_quiet(args.max_wait)
    peaks = {"fp32": peak_matmul_flops(torch.float32), "bf16": peak_matmul_flops(torch.bfloat16)}
    print(f"peak matmul (2048^3, measured): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    chosen = workloads(args.quick)
    if args.only:
        chosen = [w for w in chosen if w.name in args.only.split(",")]
    tables = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="grove-bench-") as run_dir:
        for w in chosen:
            rounds = args.rounds or w.rounds
            flops = train_flops_per_sample(w)
            print(f"\n== {w.title}: {w.warmup} warm-up + {w.steps} timed steps, {rounds} interleaved rounds, "
                  f"{flops / 1e6:.1f} MFLOP/sample (fwd+bwd)")
            results: dict[Setting, list[Result]] = {s: [] for s in w.settings}
            for r in range(rounds):
                order = w.settings if r % 2 == 0 else w.settings[::-1]
                for s in order:
                    res = measure(w, s, run_dir, args)
                    results[s].append(res)
                    logged = f"(its own log {res.logged_samples_per_s:.0f})" if res.logged_samples_per_s else ""
                    print(f"  round {r + 1} {s.label:<32} {res.samples_per_s:8.0f} samples/s {logged:<20} "
                          f"first step after {res.first_step_s:4.1f}s, {res.cores_elsewhere:.2f} cores busy elsewhere",
                          flush=True)
            tables.append((w, results, flops))
            check_same_losses(w, results)
    print(f"\ntotal time {time.perf_counter() - began:.0f}s")
    print_tables(tables, peaks, args.noise)
    return 0


def measure(w: Workload, s: Setting, run_dir: str, args) -> Result:
    """One run, repeated (up to --retries times) while other processes disturbed its timed window."""
    best = None
    for _ in range(1 + args.retries):
        wait_for_quiet(args.max_wait)
        gc.collect()
        res = run_plain(w, s) if s.loop == "plain" else run_grove(w, s, run_dir)
        if best is None or res.cores_elsewhere < best.cores_elsewhere:
            best = res
        if res.cores_elsewhere <= args.noise:
            break
    return best


def check_same_losses(w: Workload, results: dict) -> None:
    """grove and the plain loop at the same settings must compute the same training losses."""
    for s in w.settings:
        twin = Setting("grove", s.precision, s.channels_last, s.compile)
        if s.loop != "plain" or twin not in results:
            continue
        plain = dict(results[s][0].window_losses)
        grove = dict(results[twin][0].window_losses)
        diffs = [abs(plain[k] - grove[k]) for k in plain if k in grove]
        if diffs:
            print(f"  same losses, plain vs grove at {settings_name(s)}: "
                  f"max |difference| of {len(diffs)} window means = {max(diffs):.2e}")


def settings_name(s: Setting) -> str:
    return s.label.split(" ", 1)[1]


def paired(a: list[Result], b: list[Result], noise: float) -> tuple[list[float], list[float], list[float], bool]:
    """samples/s of a and b and the per-round ratios a/b, from rounds where neither run was disturbed
    (all rounds, flagged, when there are none)."""
    rounds = [(x, y) for x, y in zip(a, b) if x.cores_elsewhere <= noise and y.cores_elsewhere <= noise]
    disturbed = not rounds
    rounds = rounds or list(zip(a, b))
    xs, ys = [x.samples_per_s for x, _ in rounds], [y.samples_per_s for _, y in rounds]
    return xs, ys, [x / y for x, y in rounds], disturbed


def print_tables(tables, peaks, noise: float) -> None:
    print(f"\nmachine: {machine_line()}")
    print("\nLoop overhead at identical settings: median samples/s; grove/plain is the median of per-round "
          "ratios; rounds = undisturbed rounds used")
    print("\n| workload | settings | plain samples/s | grove samples/s | grove/plain | grove's extra time per step | rounds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    flagged = False
    for w, results, _ in tables:
        for s in w.settings:
            twin = Setting("grove", s.precision, s.channels_last, s.compile)
            if s.loop != "plain" or twin not in results:
                continue
            grove, plain, ratios, disturbed = paired(results[twin], results[s], noise)
            flagged |= disturbed
            extra_us = (1 / median(grove) - 1 / median(plain)) * w.batch * 1e6
            print(f"| {w.title} | {settings_name(s)} | {median(plain):.0f} | {median(grove):.0f} | "
                  f"{median(ratios):.3f}x | {extra_us:+.0f} us | {len(ratios)}{'*' if disturbed else ''} |")
    print("\ngrove's speed settings: speedup is the median of per-round ratios to grove fp32 on the same workload; "
          "MFU against the measured peak matmul FLOP/s of the same precision")
    print("\n| workload | grove settings | samples/s | range | speedup | MFU | rounds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for w, results, flops in tables:
        for s in w.settings:
            if s.loop != "grove":
                continue
            sps, _, ratios, disturbed = paired(results[s], results[GROVE], noise)
            flagged |= disturbed
            auto = " (auto)" if s.precision == "bf16" and s.channels_last and not s.compile else ""
            print(f"| {w.title} | {settings_name(s)}{auto} | {median(sps):.0f} | {min(sps):.0f}-{max(sps):.0f} | "
                  f"{median(ratios):.2f}x | {median(sps) * flops / peaks[s.precision]:.1%} | "
                  f"{len(ratios)}{'*' if disturbed else ''} |")
    print("\n(auto) = what precision/channels_last/compile=auto resolve to on this CPU.")
    if flagged:
        print(f"* every round of this row was disturbed (other processes kept > {noise} cores busy); "
              "its figure is unreliable")


if __name__ == "__main__":
    sys.exit(main())
