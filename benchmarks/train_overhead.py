"""Training-loop overhead: grove's loop against a plain PyTorch loop, then grove's speed settings.

    python benchmarks/train_overhead.py            # seed_cnn, a tiny 8x8 CNN and resnet18 (~4 min on 2 idle cores)
    python benchmarks/train_overhead.py --quick    # seed_cnn only, fewer rounds (~1.5 min)

Every workload trains the same model (same registry builder, same init seed) on the same in-memory
data (random uint8 images, random labels, registered below as the data set `bench_images`) with

  plain  the survey's listing loop, corrected: model.train(), a fresh random permutation per epoch,
         batches gathered by indexing the in-memory tensors, the same uint8 -> float normalisation
         ((x / 255 - mean) / std), F.cross_entropy, zero_grad / backward / SGD(momentum=0.9).step();
  grove  grove.engine.loop.train() on a recipe with the same settings (fp32, no channels_last, no
         compile, constant lr, weight decay 0, log_every 50). grove draws its batch order from the
         same seeded permutation, so both loops compute the same losses (checked and printed).

How it is timed, fairly on a machine other processes share: every run (plain or grove, each
setting) is a thread, and the runs take turns. A global optimizer step post-hook (torch.optim)
counts the optimiser steps of the running thread; after W warm-up steps it pauses the run every K
steps and hands over to the next run, so in one round every run times a chunk of K steps, all
within a few seconds. A chunk's time runs from the hook that resumed it to the hook that paused it:
K whole iterations of the loop, so everything grove does per step (transform, metrics, progress
bar, logging every log_every steps) is inside, and its setup, evaluation and checkpoints outside.
The order of the runs rotates every round. /proc/stat tells how many cores other processes kept
busy during each round; rounds continue until enough of them were undisturbed (or a time limit),
and the figures come from those. samples/s is the median over rounds; ratios are medians of the
per-round ratios. A second, identical plain run (control) shows how closely two identical runs
agree; matmul runs in the same rounds measure the peak FLOP/s that the MFU column divides by.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
    control: bool = False  # a second, identical plain run: the noise floor of the comparison

    @property
    def name(self) -> str:
        return "+".join([self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile)

    @property
    def label(self) -> str:
        return f"{self.loop} {self.name}{' (control)' if self.control else ''}"

    @property
    def auto(self) -> bool:
        """What precision/channels_last/compile=auto resolve to on a CPU with native bf16."""
        return self.precision == "bf16" and self.channels_last and not self.compile


PLAIN, GROVE, CONTROL = Setting("plain"), Setting("grove"), Setting("plain", control=True)
SPEED = [
    Setting("grove", "bf16"),
    Setting("grove", "fp32", True),
    Setting("grove", "bf16", True),
    Setting("plain", "bf16", True),  # grove's overhead at the recommended settings too
    Setting("grove", "fp32", False, True),
    Setting("grove", "bf16", True, True),
]


@dataclass
class Workload:
    name: str
    model: str
    size: int
    channels: int
    batch: int
    warmup: int  # untimed steps first (compiling happens here)
    chunk: int  # timed steps per turn
    clean_rounds: int  # wanted rounds with no other load on the machine
    max_rounds: int
    time_limit_s: float  # for the timed rounds
    settings: list[Setting]
    model_options: dict = field(default_factory=dict)
    matmuls: int = 2  # per turn of the peak-matmul runs

    @property
    def data_options(self) -> dict:
        # One epoch holds all the steps, so no evaluation or checkpoint comes between them.
        n_train = (self.warmup + self.chunk * (self.max_rounds + 1) + 1) * self.batch
        return {"size": self.size, "channels": self.channels, "n_train": n_train, "n_val": 256, "seed": SEED}

    def model_kwargs(self) -> dict:
        return {"num_classes": 10, "in_channels": self.channels, "image_size": self.size, **self.model_options}

    @property
    def title(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.model_options.items())
        return f"{self.model}{extra} {self.size}x{self.size}x{self.channels} b{self.batch}"


def workloads(quick: bool) -> list[Workload]:
    if quick:
        return [Workload("seed_cnn", "seed_cnn", 32, 3, 128, 8, 10, 5, 30, 60, [PLAIN, GROVE, CONTROL, *SPEED])]
    return [
        # The survey's CNN on CIFAR-shaped images: per-step compute dominates (tens of ms a step).
        Workload("seed_cnn", "seed_cnn", 32, 3, 128, 10, 10, 12, 40, 180, [PLAIN, GROVE, CONTROL, *SPEED]),
        # The digits-cnn recipe's shape (8x8x1, batch 32): about a millisecond a step, so any fixed
        # per-step cost of a loop shows at full size.
        Workload("tiny", "seed_cnn", 8, 1, 32, 30, 50, 20, 120, 60,
                 [PLAIN, GROVE, CONTROL, Setting("grove", "bf16", True), Setting("plain", "bf16", True)], matmuls=1),
        # A heavier model at a small batch; compile is left out (minutes of compiling on 2 cores).
        Workload("resnet18", "resnet18", 32, 3, 32, 3, 2, 8, 40, 150,
                 [PLAIN, GROVE, Setting("grove", "bf16"), Setting("grove", "fp32", True), Setting("grove", "bf16", True)],
                 {"stem": "cifar"}),
    ]


# -- lockstep runs ----------------------------------------------------------------------------------


def cpu_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used so far (busy and stolen jiffies of /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait: float, noise: float) -> float:
    """Sleep until other processes keep at most `noise` cores busy for 2 s, or `max_wait` seconds pass."""
    end = time.perf_counter() + max_wait
    while True:
        t, busy, own = time.perf_counter(), cpu_busy_seconds(), time.process_time()
        time.sleep(2)
        load = (cpu_busy_seconds() - busy - (time.process_time() - own)) / (time.perf_counter() - t)
        if load <= noise or time.perf_counter() > end:
            return load


_RUNNERS: dict[int, "Runner"] = {}  # thread id -> its run, for the optimizer hook


def _on_optimizer_step(*_) -> None:
    runner = _RUNNERS.get(threading.get_ident())
    if runner is not None:
        runner.tick()


class StopRun(Exception):
    """Raised in a paused run's own thread to end it once enough rounds are timed."""


class Runner(threading.Thread):
    """One training run in its own thread, paused every `chunk` steps after `warmup` steps.

    tick() is called after every optimiser step of this thread (or after every unit of work of a
    body that is not a training loop). The first turn runs setup and warm-up; each later turn runs
    one timed chunk; after the last one the run is ended by raising StopRun from tick().
    """

    def __init__(self, name: str, body: Callable[[], object], warmup: int, chunk: int):
        super().__init__(name=name, daemon=True)
        self.body, self.warmup, self.chunk = body, warmup, chunk
        self._go, self._paused = threading.Semaphore(0), threading.Semaphore(0)
        self.ticks = 0
        self.chunk_seconds: list[float] = []  # one per round
        self.first_tick_s = float("nan")  # setup (+ compiling) until the first step ended
        self.stop = False
        self.result, self.error = None, None

    def run(self) -> None:
        _RUNNERS[threading.get_ident()] = self
        self._go.acquire()
        self._began = time.perf_counter()
        try:
            self.result = self.body()
            self.error = RuntimeError(f"{self.name} ended by itself after {self.ticks} steps")
        except StopRun:
            pass
        except BaseException as e:  # handed to the main thread
            self.error = e
        finally:
            _RUNNERS.pop(threading.get_ident(), None)
            self._paused.release()

    def tick(self) -> None:
        self.ticks += 1
        now = time.perf_counter()
        if self.ticks == 1:
            self.first_tick_s = now - self._began
        timed = self.ticks - self.warmup
        if timed < 0 or timed % self.chunk:
            return
        if timed:  # the end of a timed chunk
            self.chunk_seconds.append(now - self._resumed)
        self._paused.release()
        self._go.acquire()
        if self.stop:
            raise StopRun
        self._resumed = time.perf_counter()

    def turn(self) -> None:
        """Let the run go until it pauses or ends (called from the main thread)."""
        self._go.release()
        self._paused.acquire()
        if self.error is not None:
            raise RuntimeError(f"run '{self.name}' failed: {self.error!r}") from self.error


def lockstep(runners: list[Runner], w: "Workload", noise: float, progress) -> list[float]:
    """Warm every run up, then time rounds (one chunk of every run, order rotating) until
    w.clean_rounds rounds were undisturbed, w.max_rounds were run or w.time_limit_s passed.
    Returns, per round, the cores that other processes kept busy during it."""
    handle = register_optimizer_step_post_hook(_on_optimizer_step)
    elsewhere: list[float] = []
    try:
        for r in runners:
            r.start()
        for r in runners:  # setup and warm-up, one run at a time
            r.turn()
            progress(f"  {r.name:<34} first step {r.first_tick_s:5.1f}s after its start")
        began = time.perf_counter()
        while True:
            k = len(elsewhere) % len(runners)
            t, busy, own = time.perf_counter(), cpu_busy_seconds(), time.process_time()
            for r in runners[k:] + runners[:k]:
                r.turn()
            seconds = time.perf_counter() - t
            elsewhere.append(max(0.0, (cpu_busy_seconds() - busy - (time.process_time() - own)) / seconds))
            clean = sum(e <= noise for e in elsewhere)
            if len(elsewhere) % 10 == 0:
                progress(f"  {len(elsewhere)} rounds, {clean} undisturbed")
            if clean >= w.clean_rounds or len(elsewhere) >= w.max_rounds or time.perf_counter() - began > w.time_limit_s:
                break
        for r in runners:
            r.stop = True
            r.turn()
            r.join()
    finally:
        handle.remove()
    return elsewhere


# -- the two loops ---------------------------------------------------------------------------------


def plain_body(w: Workload, s: Setting, losses: list) -> Callable[[], None]:
    """The survey's listing loop, corrected; tensors already in memory."""

    def body() -> None:
        bundle = bench_images(**w.data_options)
        images, labels = bundle.train.inputs, bundle.train.targets
        torch.manual_seed(SEED)
        model = create_model(w.model, **w.model_kwargs())
        if s.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if s.compile:
            model = torch.compile(model)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        criterion = F.cross_entropy
        mean = torch.full((1, w.channels, 1, 1), MEAN)
        std = torch.full((1, w.channels, 1, 1), STD)
        scale, shift = 1 / (255 * std), -mean / std  # (x / 255 - mean) / std = x * scale + shift
        autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if s.precision == "bf16" else contextlib.nullcontext
        steps_per_epoch = len(labels) // w.batch
        epoch = 0
        while True:  # until the benchmark stops the run
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
            epoch += 1

    return body


def grove_body(w: Workload, s: Setting, run_dir: str) -> Callable[[], dict]:
    """grove.engine.loop.train() on a recipe with the same model, data and settings."""
    recipe = validate({
        "model": {"name": w.model, **w.model_options},
        "data": {"name": "bench_images", "batch_size": w.batch, **w.data_options},
        "optim": {"name": "sgd", "lr": LR, "momentum": 0.9, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "train": {
            "epochs": 1,  # the benchmark stops the run within it
            "precision": s.precision,
            "channels_last": s.channels_last,
            "compile": s.compile,
            "log_every": LOG_EVERY,
            "seed": SEED,
            "device": "cpu",
        },
        "run": {"dir": run_dir, "name": f"{w.name}-{s.loop}-{s.name.replace('+', '-')}"},
    })
    return lambda: train(recipe, "bench")


def matmul_body(dtype: torch.dtype, reps: int) -> Callable[[], None]:
    """The peak: 2048^3 matmuls, `reps` per tick, in the same lockstep as the training runs."""
    n = 2048
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)

    def body() -> None:
        runner = _RUNNERS[threading.get_ident()]
        while True:  # until the benchmark stops the run
            for _ in range(reps):
                a @ b
            runner.tick()

    return body


MATMUL_FLOPS = 2 * 2048**3


# -- the machine and FLOPs ---------------------------------------------------------------------------


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


def train_flops_per_sample(w: Workload) -> float:
    """Forward + backward FLOPs of one training sample (convolutions and matmuls, as MFU counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(w.model, **w.model_kwargs())
    x = torch.randn(8, w.channels, w.size, w.size)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    return counter.get_total_flops() / 8


# -- one workload ------------------------------------------------------------------------------------


@dataclass
class Measured:
    setting: Setting
    samples_per_s: list[float]  # per round used
    first_step_s: float
    window_losses: list[tuple[int, float]]  # (step, mean train loss over the log window ending there)
    logged_samples_per_s: float | None = None  # grove's own metrics.jsonl figure (steady windows)


@dataclass
class WorkloadResult:
    workload: Workload
    measured: list[Measured]
    peak: dict[str, list[float]]  # matmul FLOP/s per precision, per round used
    flops_per_sample: float
    rounds: int  # timed rounds run
    used: int  # rounds the figures come from
    disturbed: bool  # too few undisturbed rounds: figures from all rounds
    elsewhere: float  # median cores busy in other processes over the rounds used


def run_workload(w: Workload, run_dir: str, noise: float, progress) -> WorkloadResult:
    runners, plain_losses = {}, {}
    for s in w.settings:
        if s.loop == "plain":
            plain_losses[s] = []
            body = plain_body(w, s, plain_losses[s])
        else:
            body = grove_body(w, s, run_dir)
        runners[s] = Runner(s.label, body, w.warmup, w.chunk)
    # The peak matmul FLOP/s, in the same lockstep as the training runs.
    peaks = {p: Runner(f"peak matmul {p}", matmul_body(getattr(torch, dtype), w.matmuls), 1, 1)
             for p, dtype in (("fp32", "float32"), ("bf16", "bfloat16"))}
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        elsewhere = lockstep([*runners.values(), *peaks.values()], w, noise, progress)
    clean = [i for i, e in enumerate(elsewhere) if e <= noise]
    disturbed = len(clean) < min(3, w.clean_rounds)
    use = list(range(len(elsewhere))) if disturbed else clean
    measured = []
    for s, r in runners.items():
        m = Measured(s, [w.chunk * w.batch / r.chunk_seconds[i] for i in use], r.first_tick_s, [])
        if s.loop == "plain":
            losses = plain_losses[s]
            m.window_losses = [
                (end, float(torch.stack(losses[end - LOG_EVERY : end]).double().mean()))
                for end in range(LOG_EVERY, len(losses) + 1, LOG_EVERY)
            ]
        else:
            files = Path(run_dir).glob(f"{w.name}-{s.loop}-{s.name.replace('+', '-')}/*/metrics.jsonl")
            records = [json.loads(line) for file in files for line in file.read_text().splitlines()]
            logs = [x for x in records if x["split"] == "train" and x["step"] % LOG_EVERY == 0]
            m.window_losses = [(x["step"], x["loss"]) for x in logs]
            steady = [x["samples_per_s"] for x in logs if x["step"] - LOG_EVERY >= w.warmup]
            m.logged_samples_per_s = statistics.median(steady) if steady else None
        measured.append(m)
    peak = {p: [w.matmuls * MATMUL_FLOPS / r.chunk_seconds[i] for i in use] for p, r in peaks.items()}
    return WorkloadResult(w, measured, peak, train_flops_per_sample(w), len(elsewhere), len(use), disturbed,
                          median([elsewhere[i] for i in use]))


# -- report ------------------------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def check_same_losses(res: WorkloadResult, progress) -> None:
    """grove and the plain loop at the same settings must compute the same training losses."""
    by = {m.setting: m for m in res.measured}
    for s, m in by.items():
        twin = by.get(Setting("grove", s.precision, s.channels_last, s.compile))
        if s.loop != "plain" or s.control or twin is None:
            continue
        grove = dict(twin.window_losses)
        diffs = [abs(loss - grove[k]) for k, loss in m.window_losses if k in grove]
        if diffs:
            progress(f"  same losses, plain vs grove at {s.name}: max |difference| of {len(diffs)} "
                     f"log-window means = {max(diffs):.1e}")


def report(results: list[WorkloadResult], noise: float, progress) -> None:
    progress(f"\nmachine: {machine_line()}")
    progress("\nLoop overhead at identical settings (samples/s: median over rounds; grove/plain: median of "
             "per-round ratios; extra: grove's extra time per step, from the medians)\n")
    progress("| workload | settings | plain samples/s | grove samples/s | grove/plain | extra per step |")
    progress("|---|---|---:|---:|---:|---:|")
    for res in results:
        w, by = res.workload, {m.setting: m for m in res.measured}
        for s, m in by.items():
            twin = by.get(Setting("grove", s.precision, s.channels_last, s.compile))
            if s.control:  # the same plain loop twice: how far apart two identical runs measure
                twin, first, second = m, by[PLAIN], "plain again (control)"
            elif s.loop == "plain" and twin is not None:
                first, second = m, ""
            else:
                continue
            plain, grove = median(first.samples_per_s), median(twin.samples_per_s)
            ratio = median([g / p for g, p in zip(twin.samples_per_s, first.samples_per_s)])
            extra_us = (1 / grove - 1 / plain) * w.batch * 1e6
            name = f"{s.name}, {second}" if second else s.name
            progress(f"| {w.title} | {name} | {plain:.0f} | {grove:.0f} | {ratio:.3f}x | {extra_us:+.0f} us |")
    progress("\ngrove's speed settings (speedup: median of per-round ratios to grove fp32 on the same workload; "
             "MFU: model FLOP/s over the peak matmul FLOP/s of the same precision, measured in the same rounds)\n")
    progress("| workload | grove settings | samples/s | speedup | MFU |")
    progress("|---|---|---:|---:|---:|")
    for res in results:
        w, by = res.workload, {m.setting: m for m in res.measured}
        base = by[GROVE].samples_per_s
        for s, m in by.items():
            if s.loop != "grove":
                continue
            speedup = median([a / b for a, b in zip(m.samples_per_s, base)])
            mfu = median([x * res.flops_per_sample / p for x, p in zip(m.samples_per_s, res.peak[s.precision])])
            progress(f"| {w.title} | {s.name}{' (auto)' if s.auto else ''} | {median(m.samples_per_s):.0f} | "
                     f"{speedup:.2f}x | {mfu:.1%} |")
    progress("\n(auto) = what train.precision/channels_last/compile=auto resolve to on this CPU.")
    for res in results:
        which = "all rounds: too few were undisturbed" if res.disturbed else f"the undisturbed rounds (<= {noise} cores elsewhere)"
        progress(f"{res.workload.name}: {res.used} of {res.rounds} rounds used ({which}); other processes kept "
                 f"{res.elsewhere:.2f} cores busy in them (median); peak matmul fp32 {median(res.peak['fp32']) / 1e9:.0f}, "
                 f"bf16 {median(res.peak['bf16']) / 1e9:.0f} GFLOP/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seed_cnn only, fewer rounds")
    parser.add_argument("--only", help="comma-separated workloads to run: seed_cnn, tiny, resnet18")
    parser.add_argument("--rounds", type=int, help="undisturbed timed rounds wanted per workload")
    parser.add_argument("--time-limit", type=float, help="seconds of timed rounds per workload at most")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait, before each workload, for other processes to leave the CPU (default 120)")
    parser.add_argument("--noise", type=float, default=0.1,
                        help="a round during which other processes kept more cores than this busy is disturbed "
                        "and left out when enough others are not (default 0.1)")
    args = parser.parse_args()

    def progress(line: str) -> None:
        print(line, file=sys.__stdout__, flush=True)

    progress(f"machine: {machine_line()}")
    chosen = workloads(args.quick)
    if args.only:
        chosen = [w for w in chosen if w.name in args.only.split(",")]
    for w in chosen:
        w.clean_rounds = args.rounds or w.clean_rounds
        w.max_rounds = max(w.max_rounds, w.clean_rounds)
        w.time_limit_s = args.time_limit or w.time_limit_s
    results = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="grove-bench-") as run_dir:
        for w in chosen:
            progress(f"\n== {w.title}: {w.warmup} warm-up steps, then rounds of {w.chunk} timed steps per run "
                     f"until {w.clean_rounds} undisturbed rounds ({w.max_rounds} rounds or {w.time_limit_s:.0f}s at most)")
            load = wait_for_idle(args.wait, args.noise)
            if load > args.noise:
                progress(f"  (other processes keep {load:.1f} cores busy; starting anyway)")
            res = run_workload(w, run_dir, args.noise, progress)
            for m in res.measured:
                logged = f"   (grove's own log: {m.logged_samples_per_s:.0f})" if m.logged_samples_per_s else ""
                progress(f"  {m.setting.label:<34} {median(m.samples_per_s):8.0f} samples/s "
                         f"(rounds {min(m.samples_per_s):.0f}-{max(m.samples_per_s):.0f}){logged}")
            check_same_losses(res, progress)
            results.append(res)
    progress(f"\ntotal time {time.perf_counter() - began:.0f}s")
    report(results, args.noise, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
