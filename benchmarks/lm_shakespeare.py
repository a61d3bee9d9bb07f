"""Language models on Tiny Shakespeare: validation loss against wall time, tokens/s and MFU.

    python benchmarks/lm_shakespeare.py                      # both recipes, 300 s budget each (~6 min)
    python benchmarks/lm_shakespeare.py --budget 120         # stop each run after 120 s of wall time
    python benchmarks/lm_shakespeare.py --recipes shakespeare-char-gpt --threads 1
    python benchmarks/lm_shakespeare.py --ablation           # ms per training step: precision, attention, AdamW

Each recipe (`shakespeare-char-gpt`, `shakespeare-char-lstm` by default) trains exactly as
`grove train RECIPE` does, through grove's Python API (`grove.engine.loop.train`), offline from
the Tiny Shakespeare file in the data directory. The script reads the run's metrics.jsonl and
prints, per recipe, every validation point as (wall seconds, step, val loss):

  wall s      seconds from the call to train() (data loading and tokenizing included) to the end
              of the optimiser step whose weights were evaluated; evaluations before it count
  tokens/s    training tokens per step / the median time between optimiser steps (the steady
              rate; evaluation pauses fall outside the median)
  FLOPs/token training FLOPs (forward + backward) per token: `model.flops_per_token()` for gpt
              (6 x non-embedding parameters + attention, nanoGPT's estimate); for the LSTM
              6 x non-embedding parameters (LSTM and decoder weights: every weight does one
              multiply-add per token forward and two backward; the embedding is a lookup)
  peak        FLOP/s of a 2048^3 matrix product, fp32 and bf16, the faster of torch.mm and a
              1x1 convolution (machine.peak_matmul_flops), measured in this process at the same
              thread count, before the runs and after them (the larger is kept)
  MFU         FLOPs/token x tokens/s / the measured peak of the run's precision

`--ablation` instead times one training step of each recipe's model (batch 32 x 64 tokens, random
tokens, cross-entropy, backward, clipping, AdamW) under the settings the recipes choose between:
fp32 against bf16 autocast; for the GPT also attention computed in bf16 (plain SDPA under
autocast, grove before this benchmark) against fp32 attention (grove's `attend` on CPU), and
torch's for-loop AdamW against the fused one grove builds. Settings are interleaved round by
round; figures are medians. Then causal SDPA alone at a few shapes, bf16 against fp32.

`--budget S` stops a run that is still training S seconds after it started; the table then ends
at the last evaluation within the budget. The machine line gives the CPU, the threads torch used,
and how many cores other processes took on average while each run trained (these machines are
shared, so compare figures taken together).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from grove.config import load_recipe
from grove.engine.loop import train
from grove.engine.precision import resolve_speed
from grove.registry import MODELS
from grove.rundir import RunDir, load_run
from machine import cpu_busy_seconds, machine_line, peak_matmul_flops

RECIPES = ("shakespeare-char-gpt", "shakespeare-char-lstm")
TARGET = 1.88  # nanoGPT's published val loss for the 4-layer, 4-head, 128-dim, context-64 model


class BudgetReached(Exception):
    pass


class StepClock:
    """perf_counter() after every optimiser step; raises BudgetReached once the budget is spent."""

    def __init__(self, budget: float | None):
        self.budget = budget
        self.start = time.perf_counter()
        self.times: list[float] = []

    def _stamp(self, *_) -> None:
        now = time.perf_counter()
        self.times.append(now - self.start)
        if self.budget is not None and now - self.start > self.budget:
            raise BudgetReached

    def __enter__(self):
        self.handle = register_optimizer_step_post_hook(self._stamp)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def median_step_seconds(self, skip: int = 10) -> float:
        gaps = [b - a for a, b in zip(self.times[skip:], self.times[skip + 1 :])]
        return statistics.median(gaps)


def flops_per_token(model) -> tuple[int, str]:
    if hasattr(model, "flops_per_token"):
        return model.flops_per_token(), "model.flops_per_token()"
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    return 6 * non_embedding, "6 x non-embedding params"


def tokens_per_step(config: dict, data_meta: dict) -> int:
    if data_meta["layout"] == "stream":
        return data_meta["rows"] * data_meta["bptt"]  # one batch is rows streams x bptt steps
    return config["data"]["batch_size"] * data_meta["block_size"]


def run_recipe(name: str, overrides: list[str], budget: float | None, run_dir: Path) -> dict:
    recipe, recipe_name = load_recipe(name, [*overrides, f"run.dir={run_dir}"])
    busy0, own0 = cpu_busy_seconds(), time.process_time()
    stopped = False
    with StepClock(budget) as clock:
        try:
            train(recipe, recipe_name)
        except BudgetReached:
            stopped = True
    wall = time.perf_counter() - clock.start
    others = (cpu_busy_seconds() - busy0 - (time.process_time() - own0)) / wall
    run = RunDir(max((run_dir / recipe_name).iterdir()))  # the newest run of this recipe
    loaded = load_run(run.path, device="cpu")
    model = loaded.model
    flops, flops_rule = flops_per_token(model)
    vals = [(clock.times[r["step"] - 1], r["step"], r["loss"]) for r in run.read_metrics() if r["split"] == "val"]
    tokens = tokens_per_step(loaded.recipe.to_dict(), loaded.meta.data)
    return {
        "name": name,
        "run": run.path,
        "vals": vals,
        "steps": len(clock.times),
        "wall": wall,
        "stopped": stopped,
        "tokens_per_s": tokens / clock.median_step_seconds(),
        "tokens_per_step": tokens,
        "flops": flops,
        "flops_rule": flops_rule,
        # as the run chose it (the probe result is cached, so this repeats the run's choice)
        "precision": resolve_speed(recipe.train, loaded.device, model, MODELS.get(recipe.model.name).tags.get("family")).precision,
        "params": sum(p.numel() for p in model.parameters()),
        "others": others,
    }


def ablation(rounds: int = 5, steps: int = 10) -> None:
    """Median ms per training step of each recipe's model under the settings the recipes choose between."""
    import contextlib

    import torch.nn.functional as F

    import grove.models.layers.attention as attention
    from grove.registry import create_model

    grove_attend = attention.attend

    def bf16_attend(q, k, v, mask, dropout_p, is_causal):  # SDPA as autocast leaves it: bf16 on CPU
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)

    gpt = dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64)
    lstm = dict(vocab_size=65, n_embd=128, n_hidden=256, n_layers=2)
    # label -> (model, options, precision, attention, fused AdamW)
    settings = {
        "gpt fp32": ("gpt", gpt, "fp32", grove_attend, True),
        "gpt bf16, bf16 attention": ("gpt", gpt, "bf16", bf16_attend, True),
        "gpt bf16, fp32 attention": ("gpt", gpt, "bf16", grove_attend, True),
        "gpt bf16, fp32 attention, for-loop AdamW": ("gpt", gpt, "bf16", grove_attend, False),
        "lstm fp32": ("lstm_lm", lstm, "fp32", grove_attend, True),
        "lstm bf16": ("lstm_lm", lstm, "bf16", grove_attend, True),
    }
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 65, (32, 64), generator=g), torch.randint(0, 65, (32, 64), generator=g)

    def setup(name, options, fused):
        torch.manual_seed(0)
        model = create_model(name, **options)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)

    def time_steps(model, optimizer, precision, attend) -> float:
        attention.attend = attend
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        start = time.perf_counter()
        for _ in range(steps):
            with cast:
                logits = model(x)
            F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        attention.attend = grove_attend
        return (time.perf_counter() - start) / steps

    built = {label: setup(name, options, fused) for label, (name, options, _, _, fused) in settings.items()}
    times: dict[str, list[float]] = {label: [] for label in settings}
    busy0, own0, t0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    for r in range(rounds + 1):  # round 0 warms up
        for label in list(settings)[:: 1 if r % 2 else -1]:
            _, _, precision, attend, _ = settings[label]
            seconds = time_steps(*built[label], precision, attend)
            if r:
                times[label].append(seconds)
    others = (cpu_busy_seconds() - busy0 - (time.process_time() - own0)) / (time.perf_counter() - t0)
    print(f"ms per training step, batch 32 x 64 tokens, median of {rounds} rounds of {steps} steps "
          f"(other processes took {others:.1f} cores on average)")
    for label, values in times.items():
        ms = statistics.median(values) * 1e3
        print(f"  {label:<42} {ms:7.1f} ms   {32 * 64 / ms * 1e3:8,.0f} tokens/s")

    # Causal SDPA alone, forward + backward, bf16 inputs: in bf16, or in fp32 as grove's attend does.
    print("causal SDPA forward + backward, ms (B, heads, T, head_dim): bf16 | fp32 (grove on CPU) | ratio")
    for shape in [(32, 4, 64, 32), (32, 4, 128, 64), (16, 8, 256, 64), (8, 8, 512, 64)]:
        q, k, v = (torch.randn(shape, dtype=torch.bfloat16, generator=g).requires_grad_() for _ in range(3))
        grad = torch.randn(shape, dtype=torch.bfloat16, generator=g)
        ms = {}
        for label, attend in (("bf16", bf16_attend), ("fp32", grove_attend)):
            runs = []
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(3):
                    attend(q, k, v, None, 0.0, True).backward(grad)
                runs.append((time.perf_counter() - start) / 3 * 1e3)
            ms[label] = statistics.median(runs)
        print(f"  {str(shape):<18} {ms['bf16']:7.1f} | {ms['fp32']:7.1f} | {ms['bf16'] / ms['fp32']:4.1f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES))
    p.add_argument("--budget", type=float, default=300.0, help="wall seconds per run (0: no limit)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--run-dir", type=Path, help="where the runs go (default: a new temporary folder)")
    p.add_argument("--ablation", action="store_true", help="time one training step per setting instead of training")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="overrides applied to every recipe")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ablation:
        print(f"machine: {machine_line()}")
        ablation()
        return 0
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="grove-lm-bench-"))

    peaks = {"fp32": peak_matmul_flops(torch.float32), "bf16": peak_matmul_flops(torch.bfloat16)}
    results = [run_recipe(name, args.overrides, args.budget or None, run_dir) for name in args.recipes]
    after = {"fp32": peak_matmul_flops(torch.float32), "bf16": peak_matmul_flops(torch.bfloat16)}
    peaks = {k: max(v, after[k]) for k, v in peaks.items()}

    print(f"machine: {machine_line()}")
    print(f"measured peak matmul (2048^3): fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")
    for r in results:
        print()
        print(f"{r['name']}  ({r['params']:,} params, {r['precision']}, {r['tokens_per_step']} tokens/step; "
              f"other processes took {r['others']:.1f} cores on average)")
        print(f"  {'wall s':>7}  {'step':>5}  {'val loss':>8}")
        for wall, step, loss in r["vals"]:
            print(f"  {wall:7.1f}  {step:5d}  {loss:8.4f}")
        reached = next(((w, s) for w, s, loss in r["vals"] if loss <= TARGET), None)
        end = "stopped at the budget" if r["stopped"] else "finished"
        print(f"  {end} after {r['steps']} steps, {r['wall']:.1f} s wall"
              + (f"; val loss <= {TARGET} first at step {reached[1]} ({reached[0]:.1f} s)" if reached else
                 f"; val loss never <= {TARGET}"))
        achieved = r["flops"] * r["tokens_per_s"]
        print(f"  tokens/s {r['tokens_per_s']:,.0f} | FLOPs/token {r['flops'] / 1e6:.2f}M ({r['flops_rule']}) | "
              f"{achieved / 1e9:.1f} GFLOP/s | MFU {achieved / peaks[r['precision']]:.1%} of the {r['precision']} peak")
        print(f"  run: {r['run']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
