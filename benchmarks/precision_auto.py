"""What `train.precision=auto` costs or gains over fp32 on this CPU, per model family.

    python benchmarks/precision_auto.py                 # four workloads (~2.5 min on 2 cores)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/precision_auto.py   # on a machine other processes share
    python benchmarks/precision_auto.py --seconds 60    # quicker, noisier (at least 3 rounds)
    python benchmarks/precision_auto.py --reprobe       # auto decides with an empty probe cache
    python benchmarks/precision_auto.py --threads 1     # torch threads (default: torch's own)

Run time: 142 s on a 2-core AMD EPYC without AVX-512 (PASSIVE, other processes on 1 of the 2
cores). The rounds stop after --seconds (default 120); the rest is building the models and warming
them up, mostly the one warm-up step of each emulated bf16 setting (15 s for the word GPT there).

For each workload (the survey's CNN, shakespeare-char-lstm's LSTM, shakespeare-char-gpt's GPT, and
ptb-gpt's GPT with a 10,000-word vocabulary) the model is built with grove's registry
(`create_model`), and the settings with grove's `resolve_speed`: fp32, auto (train.precision=auto,
exactly what `grove train` would pick here, with its reason) and bf16 (what auto would cost if it
picked bf16 regardless; "fails" where this CPU's oneDNN has no bf16 kernel). Each setting trains
its own copy of the same initial weights (grove's AdamW from `build_optimizer`, cross-entropy,
speed.autocast() and speed.memory_format as the loop applies them). The settings take turns in
rounds of a few steps (fp32 and auto back to back, taking turns to go first, then bf16), up to
--rounds of them or as many as fit in --seconds, so that all see the same machine; the figures
are median ms per step over rounds and the median of per-round speed ratios (fp32 ms / setting
ms: above 1 is faster than fp32). When auto picks fp32, auto/fp32 compares two
identical settings: its distance from 1.00x is the noise of the machine. Where bf16 is emulated
(its warm-up step over twice fp32's) it runs one step a round, and only while its steps, warm-up
included, add up to under --bf16-budget seconds (default 8): on a CPU without native bf16 a word-GPT
step took 15 s, and then its warm-up step is the figure.

The header prints the CPU model and its bf16 hardware (AVX512_BF16, AMX, aarch64 bf16), and how
busy other processes kept the machine during the rounds (from /proc/stat).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from grove.config import OptimConfig, TrainConfig
from grove.engine.build import build_optimizer
from grove.engine.precision import resolve_speed
from grove.registry import MODELS, create_model

sys.path.insert(0, os.path.dirname(__file__))
from machine import cpu_busy_seconds, machine_line  # noqa: E402

SETTINGS = ("fp32", "auto", "bf16")


@dataclass
class Workload:
    label: str
    model: str  # registry name
    options: dict
    batch: tuple[int, ...]  # images (B, C, H, W) or tokens (B, T)
    classes: int  # logits' size: classes or vocabulary
    steps: int  # steps per setting per round
    times: dict = field(default_factory=dict)  # setting -> seconds per step, one per round
    failed: dict = field(default_factory=dict)  # setting -> why it could not run
    warm_only: set = field(default_factory=set)  # settings timed by their warm-up step alone


WORKLOADS = [
    Workload("seed_cnn 32x32x3, batch 128", "seed_cnn", {"image_size": 32}, (128, 3, 32, 32), 10, 6),
    Workload("lstm_lm 2x256 (shakespeare-char-lstm), 32x64 chars", "lstm_lm",
             {"vocab_size": 65, "n_embd": 128, "n_hidden": 256, "n_layers": 2}, (32, 64), 65, 4),
    Workload("gpt 4x4x128 (shakespeare-char-gpt), 32x64 chars", "gpt",
             {"vocab_size": 65, "block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128}, (32, 64), 65, 4),
    Workload("gpt 4x4x256 rotary (ptb-gpt), vocab 10,000, 8x128 words", "gpt",
             {"vocab_size": 10000, "block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 256,
              "positions": "rotary"}, (8, 128), 10000, 2),
]


class Trainee:
    """One setting of one workload: its own model copy, optimiser and batch."""

    def __init__(self, w: Workload, base: torch.nn.Module, setting: str):
        family = MODELS.get(w.model).tags.get("family")
        precision = "auto" if setting == "auto" else setting
        self.speed = resolve_speed(TrainConfig(precision=precision), torch.device("cpu"), base, family)
        model = copy.deepcopy(base)
        self.model = model.to(memory_format=torch.channels_last) if self.speed.channels_last else model
        self.optimizer = build_optimizer(OptimConfig(name="adamw", lr=1e-3), self.model)
        self.warm_step_s = 0.0  # the last warm-up step's time
        gen = torch.Generator().manual_seed(0)
        if len(w.batch) == 4:
            self.inputs = self.speed.memory_format(torch.randn(w.batch, generator=gen))
            self.targets = torch.randint(0, w.classes, (w.batch[0],), generator=gen)
        else:
            self.inputs = torch.randint(0, w.classes, w.batch, generator=gen)
            self.targets = torch.randint(0, w.classes, w.batch, generator=gen)

    def step(self) -> None:
        with self.speed.autocast():
            logits = self.model(self.inputs)
        loss = F.cross_entropy(logits.float().flatten(0, -2), self.targets.flatten())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def run(workloads: list[Workload], rounds: int, bf16_budget_s: float, rounds_budget_s: float) -> dict:
    """Build every trainee (auto may probe here), then time them in rotating rounds: `rounds` of
    them, or as many as fit in rounds_budget_s seconds, at least 3."""
    trainees: dict[tuple[int, str], Trainee] = {}
    reasons = {}
    for i, w in enumerate(workloads):
        torch.manual_seed(0)
        base = create_model(w.model, **w.options)
        for setting in SETTINGS:
            t = Trainee(w, base, setting)
            try:
                for _ in range(1 if setting == "bf16" else 2):  # warm-up: oneDNN's kernels, AdamW's state
                    start = time.perf_counter()
                    t.step()
                    t.warm_step_s = time.perf_counter() - start
            except RuntimeError as err:
                w.failed[setting] = str(err).splitlines()[0]
                continue
            trainees[i, setting] = t
            w.times[setting] = {}
            if setting == "auto":
                reasons[w.label] = t.speed.reasons["precision"]
    busy0, own0, wall0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    for r in range(rounds):
        for i, w in enumerate(workloads):
            # fp32 and auto back to back, taking turns to go first, so that each round's ratio
            # compares two neighbouring measurements; bf16 after them
            pair = ("fp32", "auto") if r % 2 == 0 else ("auto", "fp32")
            order = [s for s in (*pair, "bf16") if (i, s) in trainees]
            for setting in order:
                t, steps = trainees[i, setting], w.steps
                if setting == "bf16" and t.warm_step_s > 2 * trainees[i, "fp32"].warm_step_s:
                    # emulated bf16, there to show why auto did not pick it: one step a round, while
                    # its steps (warm-up included) take under bf16_budget_s
                    steps = 1
                    if t.warm_step_s + sum(w.times[setting].values()) > bf16_budget_s:
                        continue
                start = time.perf_counter()
                for _ in range(steps):
                    t.step()
                w.times[setting][r] = (time.perf_counter() - start) / steps
        print(f"  round {r + 1}/{rounds} done, {time.perf_counter() - wall0:.0f} s", file=sys.stderr)
        if r >= 2 and time.perf_counter() - wall0 > rounds_budget_s:
            break
    rounds = r + 1
    for (i, setting), t in trainees.items():
        if not workloads[i].times[setting]:  # a bf16 step slower than the whole budget: its warm-up
            workloads[i].times[setting] = {r: t.warm_step_s for r in range(rounds)}
            workloads[i].warm_only.add(setting)
    wall = time.perf_counter() - wall0
    others = (cpu_busy_seconds() - busy0 - (time.process_time() - own0)) / wall
    return {"others": others, "wall": wall, "reasons": reasons, "rounds": rounds}


def ratio(w: Workload, setting: str) -> str:
    if setting in w.failed:
        return "fails"
    fp32, other = w.times["fp32"], w.times[setting]
    per_round = [fp32[r] / other[r] for r in other if r in fp32]
    if setting in w.warm_only:
        note = " (its warm-up step)"
    elif len(per_round) < len(fp32):
        note = f" ({len(per_round)} rounds)"
    else:
        note = ""
    return f"{statistics.median(per_round):.2f}x{note}"


def ms(w: Workload, setting: str) -> str:
    return "fails" if setting in w.failed else f"{statistics.median(w.times[setting].values()) * 1e3:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=120.0, help="stop the rounds after this (at least 3)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bf16-budget", type=float, default=8.0, help="seconds of timed rounds for a slow bf16")
    parser.add_argument("--reprobe", action="store_true", help="decide auto with an empty probe cache")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reprobe:
        os.environ["GROVE_CACHE_DIR"] = tempfile.mkdtemp(prefix="grove-cache-")
    started = time.perf_counter()
    print(f"machine: {machine_line()}")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}, "
          f"up to {args.rounds} rounds or {args.seconds:.0f} s\n")
    figures = run(WORKLOADS, args.rounds, args.bf16_budget, args.seconds)
    print("| workload | auto picked | fp32 ms/step | auto ms/step | bf16 ms/step | auto / fp32 | bf16 / fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for w in WORKLOADS:
        picked = figures["reasons"].get(w.label, "fails").split(":")[0]
        print(f"| {w.label} | {picked} | {ms(w, 'fp32')} | {ms(w, 'auto')} | {ms(w, 'bf16')} "
              f"| **{ratio(w, 'auto')}** | {ratio(w, 'bf16')} |")
    print("\n(speed ratios: fp32 ms / setting ms, median of per-round ratios; above 1 is faster than fp32)")
    print("\nwhy auto picked what it did:")
    for w in WORKLOADS:
        print(f"  {w.label}: {figures['reasons'].get(w.label, w.failed.get('auto'))}")
    for w in WORKLOADS:
        for setting, why in w.failed.items():
            print(f"  {w.label}, {setting} fails: {why}")
    print(f"\nother processes kept {figures['others']:.2f} cores busy during the rounds; "
          f"{figures['rounds']} rounds in {figures['wall']:.0f} s, whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
