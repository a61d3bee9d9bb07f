"""Training-loop overhead: grove's loop against a plain PyTorch loop, then grove's speed settings.

    python benchmarks/train_overhead.py            # seed_cnn, a tiny 8x8 CNN, resnet18, malloc (~8 min, 2 idle cores)
    python benchmarks/train_overhead.py --quick    # seed_cnn only, fewer rounds (~2 min)

Every workload trains the same model (same registry builder, same init seed) on the same in-memory
data (random uint8 images, random labels, registered below as the data set `bench_images`) with

  plain  the survey's listing loop, corrected: model.train(), a fresh random permutation per epoch,
         batches gathered by indexing the in-memory tensors, the same uint8 -> float normalisation
         ((x / 255 - mean) / std), F.cross_entropy, zero_grad / backward / SGD(momentum=0.9).step();
  grove  grove.engine.loop.train() on a recipe with the same settings (fp32, no channels_last, no
         compile, constant lr, weight decay 0, log_every 50). grove draws its batch order from the
         same seeded permutation, so both loops compute the same losses (checked and printed; grove's
         fused SGD rounds differently from torch's default loop, so fp32 losses drift apart by ~1e-4).

How it is timed, fairly on a machine that other processes share: every run (plain or grove, each
setting) is a process of its own, and the runs take turns. A global optimizer step post-hook
(torch.optim) counts a run's optimiser steps; after W warm-up steps it pauses the run every K steps
until the benchmark lets it go on, so in one round every run times a chunk of K steps, all within a
few seconds, in a new random order every round. A chunk's time runs from the resume to the hook
that pauses it: K whole iterations of the loop, so everything grove does per step (transform,
metrics, progress bar, logging every log_every steps) is inside, its setup, evaluation and
checkpoints outside. /proc/stat tells how many cores other processes kept busy during each round;
rounds go on until enough of them were undisturbed (or a time limit), and the figures come from
those. samples/s is the median over rounds; ratios are medians of per-round ratios. A second,
identical plain run (control) shows how closely two identical runs agree; matmul runs in the same
rounds measure the peak FLOP/s that the MFU column divides by.

glibc's malloc hands freed activations back to the kernel and page-faults them in again every step
(thousands of faults a step here). grove turns that off on CPU (train.keep_freed_memory, see
grove.engine.precision.keep_freed_memory), and so does every run process here, plain ones included,
unless --default-malloc is given; a full run also measures what it is worth to grove's loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from grove.config import validate
from grove.data.base import DataBundle, TensorData
from grove.data.image import ImageTransform
from grove.engine.loop import train
from grove.engine.precision import keep_freed_memory
from grove.registry import create_model, register_dataset
from machine import conv_matmul_operands, cpu_busy_seconds, machine_line

MEAN, STD = 0.5, 0.25  # normalisation constants of the synthetic images (any fixed values do)
SEED = 0
LR = 0.01
LOG_EVERY = 50
GAP_S = 0.01  # between turns: a paused run's OpenMP threads stop spinning before the next run starts

# -- the data: random images in memory ---------------------------------------------------------

_DATA: dict = {}


@register_dataset(name="bench_images", modality="image")
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
    loop: str  # plain, grove, or peak (the matmul runs)
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
PEAKS = [Setting("peak", "fp32"), Setting("peak", "bf16")]
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
    settings: list[Setting] = field(default_factory=list)
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
        return [Workload("seed_cnn", "seed_cnn", 32, 3, 128, 8, 10, 6, 30, 60, [PLAIN, GROVE, CONTROL, *SPEED])]
    return [
        # The survey's CNN on CIFAR-shaped images: per-step compute dominates (15-40 ms a step).
        Workload("seed_cnn", "seed_cnn", 32, 3, 128, 10, 10, 20, 60, 180, [PLAIN, GROVE, CONTROL, *SPEED]),
        # The digits-cnn recipe's shape (8x8x1, batch 32): about a millisecond a step, so any fixed
        # per-step cost of a loop shows at full size.
        Workload("tiny", "seed_cnn", 8, 1, 32, 30, 50, 20, 120, 60,
                 [PLAIN, GROVE, CONTROL, Setting("grove", "bf16", True), Setting("plain", "bf16", True)], matmuls=1),
        # A heavier model at a small batch; compile is left out (minutes of compiling on 2 cores).
        Workload("resnet18", "resnet18", 32, 3, 32, 3, 2, 8, 40, 150,
                 [PLAIN, GROVE, Setting("grove", "bf16"), Setting("grove", "fp32", True), Setting("grove", "bf16", True)],
                 {"stem": "cifar"}),
    ]


# -- the loops ---------------------------------------------------------------------------------------


def plain_body(w: Workload, s: Setting, losses: list) -> Callable[[], None]:
    """The survey's listing loop, corrected; tensors already in memory."""

    def body() -> None:
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


def grove_body(w: Workload, s: Setting, run_dir: str, keep: bool) -> Callable[[], dict]:
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
            "keep_freed_memory": keep,
            "log_every": LOG_EVERY,
            "seed": SEED,
            "device": "cpu",
        },
        "run": {"dir": run_dir, "name": f"{w.name}-{s.loop}-{s.name.replace('+', '-')}"},
    })
    return lambda: train(recipe, "bench")


def peak_body(w: Workload, s: Setting, tick: Callable[[], None]) -> Callable[[], None]:
    """The peak: 2048 x 2048 x 2048 matrix products, w.matmuls per step, as 1x1 convolutions
    (machine.conv_matmul_operands); torch.mm's fp32 BLAS reaches under half of that on this AMD
    CPU and would overstate MFU."""
    x, weight = conv_matmul_operands(2048, torch.bfloat16 if s.precision == "bf16" else torch.float32)

    def body() -> None:
        with torch.no_grad():
            while True:  # until the benchmark stops the run
                for _ in range(w.matmuls):
                    F.conv2d(x, weight)
                tick()

    return body


MATMUL_FLOPS = 2 * 2048**3


# -- one run, in its own process ---------------------------------------------------------------------


class StopRun(Exception):
    """Raised in a paused run to end it once enough rounds are timed."""


def serve_run(job: dict, keep: bool) -> None:
    """The run process: wait for "go", then train, pausing after the warm-up and after every chunk
    ("paused" on stdout, then the next line on stdin: "go" goes on, anything else stops the run);
    at the end print one JSON line with the chunk times and the training losses."""
    w = Workload(**job["workload"])
    s = Setting(**job["setting"])
    control = sys.stdout
    state = {"ticks": 0, "resumed": 0.0, "first": float("nan")}
    seconds: list[float] = []

    def wait_for_turn() -> None:
        control.write("paused\n")
        control.flush()
        if sys.stdin.readline().strip() != "go":
            raise StopRun
        state["resumed"] = time.perf_counter()

    def tick(*_) -> None:
        now = time.perf_counter()
        state["ticks"] += 1
        if state["ticks"] == 1:
            state["first"] = now - began
        timed = state["ticks"] - w.warmup
        if timed >= 0 and timed % w.chunk == 0:
            if timed:
                seconds.append(now - state["resumed"])
            wait_for_turn()

    losses: list[torch.Tensor] = []
    if s.loop == "plain":
        body = plain_body(w, s, losses)
    elif s.loop == "grove":
        body = grove_body(w, s, job["run_dir"], keep)
    else:
        body = peak_body(w, s, tick)
    sys.stdin.readline()  # the first "go"
    began = time.perf_counter()
    handle = register_optimizer_step_post_hook(tick)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        try:
            body()
        except StopRun:
            pass
    handle.remove()
    if s.loop == "plain":
        windows = [(end, float(torch.stack(losses[end - LOG_EVERY : end]).double().mean()))
                   for end in range(LOG_EVERY, len(losses) + 1, LOG_EVERY)]
    elif s.loop == "grove":
        files = Path(job["run_dir"]).glob(f"{w.name}-{s.loop}-{s.name.replace('+', '-')}/*/metrics.jsonl")
        records = [json.loads(line) for file in files for line in file.read_text().splitlines()]
        windows = [(r["step"], r["loss"]) for r in records if r["split"] == "train" and r["step"] % LOG_EVERY == 0]
    else:
        windows = []
    control.write(json.dumps({"chunk_seconds": seconds, "first_step_s": state["first"], "window_losses": windows}) + "\n")
    control.flush()


class Run:
    """The benchmark's handle on one run process."""

    def __init__(self, w: Workload, s: Setting, run_dir: str, default_malloc: bool):
        self.setting = s
        job = {"workload": {**asdict(w), "settings": []}, "setting": asdict(s), "run_dir": run_dir}
        self.log = Path(run_dir) / f"{w.name}-{s.loop}-{s.name}{'-control' if s.control else ''}.log"
        argv = [sys.executable, __file__, "--serve", json.dumps(job)] + (["--default-malloc"] if default_malloc else [])
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        self.result: dict = {}

    def _send(self, line: str) -> str:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        return self.proc.stdout.readline().strip()

    def turn(self) -> None:
        """Let the run go until it pauses again."""
        if self._send("go") != "paused":
            self.proc.wait()
            tail = "\n".join(self.log.read_text().splitlines()[-15:])
            raise RuntimeError(f"run '{self.setting.label}' failed (exit {self.proc.returncode}):\n{tail}")

    def finish(self) -> dict:
        self.result = json.loads(self._send("stop"))
        self.proc.wait()
        return self.result

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, IndexError, ValueError):
            return 0.0


# -- lockstep ------------------------------------------------------------------------------------------


def wait_for_idle(max_wait: float, noise: float) -> float:
    """Sleep until other processes keep at most `noise` cores busy for 2 s, or `max_wait` seconds pass."""
    end = time.perf_counter() + max_wait
    while True:
        t, busy, own = time.perf_counter(), cpu_busy_seconds(), time.process_time()
        time.sleep(2)
        load = (cpu_busy_seconds() - busy - (time.process_time() - own)) / (time.perf_counter() - t)
        if load <= noise or time.perf_counter() > end:
            return load


def lockstep(runs: list[Run], w: Workload, noise: float, progress) -> list[float]:
    """Warm every run up, then time rounds (one chunk of every run, in a new random order) until
    w.clean_rounds rounds were undisturbed, w.max_rounds were run or w.time_limit_s passed.
    Returns, per round, the cores that other processes kept busy during it."""
    for r in runs:  # setup and warm-up, one run at a time
        r.turn()
    elsewhere: list[float] = []
    began, order, shuffle = time.perf_counter(), list(runs), random.Random(SEED).shuffle

    def ours() -> float:
        return time.process_time() + sum(r.cpu_seconds() for r in runs)

    while True:
        shuffle(order)  # no run always follows the same one
        t, busy, own = time.perf_counter(), cpu_busy_seconds(), ours()
        for r in order:
            time.sleep(GAP_S)
            r.turn()
        elsewhere.append(max(0.0, (cpu_busy_seconds() - busy - (ours() - own)) / (time.perf_counter() - t)))
        clean = sum(e <= noise for e in elsewhere)
        if len(elsewhere) % 10 == 0:
            progress(f"  {len(elsewhere)} rounds, {clean} undisturbed")
        if clean >= w.clean_rounds or len(elsewhere) >= w.max_rounds or time.perf_counter() - began > w.time_limit_s:
            break
    for r in runs:
        r.finish()
        progress(f"  {r.setting.label:<34} first step {r.result['first_step_s']:5.1f}s after its start")
    return elsewhere


# -- FLOPs ---------------------------------------------------------------------------


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
    window_losses: list[tuple[int, float]]  # (step, mean train loss over the log window ending there)


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


def run_workload(w: Workload, run_dir: str, noise: float, default_malloc: bool, progress) -> WorkloadResult:
    runs = [Run(w, s, run_dir, default_malloc) for s in [*w.settings, *PEAKS]]
    try:
        elsewhere = lockstep(runs, w, noise, progress)
    finally:
        for r in runs:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
    clean = [i for i, e in enumerate(elsewhere) if e <= noise]
    disturbed = len(clean) < min(3, w.clean_rounds)
    use = list(range(len(elsewhere))) if disturbed else clean
    measured = [
        Measured(r.setting, [w.chunk * w.batch / r.result["chunk_seconds"][i] for i in use],
                 [tuple(x) for x in r.result["window_losses"]])
        for r in runs if r.setting.loop != "peak"
    ]
    peak = {r.setting.precision: [w.chunk * w.matmuls * MATMUL_FLOPS / r.result["chunk_seconds"][i] for i in use]
            for r in runs if r.setting.loop == "peak"}
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
                first, second, name = by[PLAIN], m, f"{s.name}, plain again (control)"
            elif s.loop == "plain" and twin is not None:
                first, second, name = m, twin, s.name
            else:
                continue
            a, b = median(first.samples_per_s), median(second.samples_per_s)
            ratio = median([y / x for x, y in zip(first.samples_per_s, second.samples_per_s)])
            extra_us = (1 / b - 1 / a) * w.batch * 1e6
            progress(f"| {w.title} | {name} | {a:.0f} | {b:.0f} | {ratio:.3f}x | {extra_us:+.0f} us |")
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
        which = "all rounds: too few were undisturbed" if res.disturbed else f"undisturbed: <= {noise} cores elsewhere"
        progress(f"{res.workload.name}: {res.used} of {res.rounds} rounds used ({which}); other processes kept "
                 f"{res.elsewhere:.2f} cores busy in them (median); {res.flops_per_sample / 1e6:.1f} MFLOP/sample; "
                 f"peak matmul fp32 {median(res.peak['fp32']) / 1e9:.0f}, bf16 {median(res.peak['bf16']) / 1e9:.0f} GFLOP/s")


# -- what glibc's default malloc costs --------------------------------------------------------------


def single_run(spec: str, keep: bool) -> dict:
    """One run alone in this process (for --malloc-effect): samples/s and minor page faults per step."""
    loop, name = spec.split(":")
    s = Setting(loop, "bf16" if "bf16" in name else "fp32", "channels_last" in name, "compile" in name)
    w = Workload("seed_cnn", "seed_cnn", 32, 3, 128, 10, 100, 1, 1, 0, [s])
    marks = []

    def stamp(*_) -> None:
        marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
        if len(marks) == w.warmup + w.chunk:
            raise StopRun

    handle = register_optimizer_step_post_hook(stamp)
    with tempfile.TemporaryDirectory(prefix="grove-bench-") as run_dir, open(os.devnull, "w") as sink:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            try:
                (plain_body(w, s, []) if loop == "plain" else grove_body(w, s, run_dir, keep))()
            except StopRun:
                pass
    handle.remove()
    (t0, f0), (t1, f1) = marks[w.warmup - 1], marks[-1]
    return {"samples_per_s": w.chunk * w.batch / (t1 - t0), "faults_per_step": (f1 - f0) / w.chunk}


def malloc_effect(args, progress, reps: int = 3) -> list[str]:
    """grove's loop alone in fresh processes, with glibc's default malloc and with freed memory kept."""
    specs = ["grove:fp32", "grove:bf16+channels_last"]
    progress(f"\n== what glibc's default malloc costs: seed_cnn 32x32x3 b128, grove's loop alone in a fresh process, "
             f"10 warm-up + 100 timed steps, {reps} interleaved repeats")
    got: dict[tuple[str, str], list[dict]] = {(spec, mode): [] for spec in specs for mode in ("default", "kept")}
    for r in range(reps):
        for spec in specs:
            for mode in ("default", "kept") if r % 2 == 0 else ("kept", "default"):
                wait_for_idle(min(args.wait, 30), args.noise)
                cmd = [sys.executable, __file__, "--single", spec] + (["--default-malloc"] if mode == "default" else [])
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                got[spec, mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
                x = got[spec, mode][-1]
                progress(f"  {spec.replace(':', ' '):<26} {mode:<8} {x['samples_per_s']:6.0f} samples/s, "
                         f"{x['faults_per_step']:6.0f} page faults per step")
    lines = [
        "| grove settings | glibc default: samples/s | page faults per step | freed memory kept: samples/s "
        "| page faults per step | speedup |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for spec in specs:
        d, k = got[spec, "default"], got[spec, "kept"]
        speedup = median([b["samples_per_s"] / a["samples_per_s"] for a, b in zip(d, k)])
        lines.append(
            f"| {spec.split(':')[1]} | {median([x['samples_per_s'] for x in d]):.0f} | "
            f"{median([x['faults_per_step'] for x in d]):.0f} | {median([x['samples_per_s'] for x in k]):.0f} | "
            f"{median([x['faults_per_step'] for x in k]):.0f} | {speedup:.2f}x |"
        )
    return lines


# -- main ------------------------------------------------------------------------------------------


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
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc's malloc defaults in the runs (freed activations go back to the kernel)")
    parser.add_argument("--malloc-effect", action="store_true",
                        help="also time grove's loop in fresh processes with and without glibc's defaults "
                        "(on by default in a full run)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: be one run process (JSON job)
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: one run alone, e.g. grove:fp32
    args = parser.parse_args()

    kept = not args.default_malloc and keep_freed_memory()
    if args.serve:
        serve_run(json.loads(args.serve), kept)
        return 0
    if args.single:
        print(json.dumps(single_run(args.single, kept)))
        return 0

    def progress(line: str) -> None:
        print(line, flush=True)

    progress(f"machine: {machine_line()}")
    progress("malloc in the runs: " + ("freed memory kept (M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 1 GiB)"
                                       if kept else "glibc defaults"))
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
            res = run_workload(w, run_dir, args.noise, not kept, progress)
            for m in res.measured:
                progress(f"  {m.setting.label:<34} {median(m.samples_per_s):8.0f} samples/s "
                         f"(rounds {min(m.samples_per_s):.0f}-{max(m.samples_per_s):.0f})")
            check_same_losses(res, progress)
            results.append(res)
    malloc_lines = []
    if args.malloc_effect or not (args.quick or args.only):
        malloc_lines = malloc_effect(args, progress)
    progress(f"\ntotal time {time.perf_counter() - began:.0f}s")
    report(results, args.noise, progress)
    if malloc_lines:
        progress("\nWhat glibc's default malloc costs grove's loop (each run alone in a fresh process; medians of "
                 "3; speedup: median of paired ratios)\n")
        for line in malloc_lines:
            progress(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
