"""Speech recipes: accuracy (or CER/WER) against wall time, data generation included.

    python benchmarks/speech.py                                  # the four speech recipes (~14 min on 2 cores)
    python benchmarks/speech.py spoken-words-cnn                 # a subset, by recipe name
    python benchmarks/speech.py spoken-words-cnn train.epochs=3  # key=value overrides apply to every recipe
    python benchmarks/speech.py --step-times                     # also: ms per step, fp32 vs bf16, per recipe model
    python benchmarks/speech.py --step-times --no-train          # only that

Each recipe is trained through the Python API (`grove.engine.loop.train`), as `grove train RECIPE`
does, with a fresh, empty GROVE_DATA_DIR (unless --cached), so its wall time includes generating
the espeak-ng audio, as on a new machine. The table is read back from each run's summary.json
(test metrics, epochs, training seconds) and metrics.jsonl (samples/s: the median of the logged
training windows, which exclude evaluation).

--step-times times one optimiser step (forward, loss, backward, the recipe's optimiser) of each
recipe's model on a batch of the recipe's own batch size and feature shape, under fp32 and under
bf16 autocast, in interleaved rounds (fp32, bf16, then bf16, fp32 ...); figures are medians over
rounds, so a noisy shared machine hurts both alike. It also times the recipe's AudioTransform
(training mode) on that batch.

On a machine shared with other busy processes, set OMP_WAIT_POLICY=PASSIVE (see RESULTS.md,
"Speech"): torch's OpenMP threads otherwise spin at every parallel region while their partner
thread is descheduled, which made the same run ~4x slower here. The header prints the policy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from grove.config import load_recipe
from grove.engine.build import build_model, build_optimizer, model_options, task_options
from grove.engine.loop import train
from grove.tasks import create_task

RECIPES = ["spoken-words-cnn", "spoken-words-crnn", "spoken-words-kwt", "spoken-digits-ctc"]


# -- whole recipes ------------------------------------------------------------------------------


def run_recipe(name: str, overrides: list[str], runs_dir: str, cached: bool) -> dict:
    """Train one recipe; its figures for the table."""
    recipe, recipe_name = load_recipe(name, [*overrides, f"run.dir={runs_dir}"])
    before = os.environ.get("GROVE_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="grove-speech-data-") if not cached else nullcontext() as fresh:
        if fresh:
            os.environ["GROVE_DATA_DIR"] = fresh
        try:
            started = time.perf_counter()
            summary = train(recipe, recipe_name)
            wall = time.perf_counter() - started
        finally:
            if fresh:
                if before is None:
                    os.environ.pop("GROVE_DATA_DIR", None)
                else:
                    os.environ["GROVE_DATA_DIR"] = before
    run = Path(summary["run"])
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["samples_per_s"] for r in records if r["split"] == "train" and "samples_per_s" in r]
    return {
        "recipe": name,
        "model": summary["model"],
        "wall_s": wall,
        "train_s": summary["train_seconds"],
        "epochs": summary["epochs"],
        "split": summary["split"],
        "accuracy": summary.get("accuracy"),
        "cer": summary.get("cer"),
        "wer": summary.get("wer"),
        "samples_per_s": statistics.median(rates) if rates else float("nan"),
        "precision": summary["speed"]["precision"],
        "run": str(run),
    }


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def print_table(rows: list[dict]) -> None:
    print()
    print("| recipe | model | precision | wall s (incl. data) | train s | epochs | test accuracy | test CER | test WER | samples/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['model']} | {r['precision']} | {r['wall_s']:.0f} | {r['train_s']:.0f} | {r['epochs']} "
            f"| {percent(r['accuracy'])} | {percent(r['cer'])} | {percent(r['wer'])} | {r['samples_per_s']:.0f} |"
        )


# -- step times ---------------------------------------------------------------------------------


def example_batch(recipe, bundle, batch_size: int):
    """A training batch of the recipe's shape: the first items of its training split."""
    if hasattr(bundle.train, "take"):
        return bundle.train.take(torch.arange(batch_size))
    return bundle.train.collate([bundle.train[i] for i in range(batch_size)])


def step_times(name: str, overrides: list[str], rounds: int, steps: int) -> dict:
    from grove.engine.build import build_data

    recipe, _ = load_recipe(name, overrides)
    bundle = build_data(recipe.data)
    task = create_task(recipe.task, bundle.classes, bundle.meta, task_options(recipe, bundle))
    inputs, targets = example_batch(recipe, bundle, recipe.data.batch_size)
    features = bundle.transform(inputs, False)
    torch.manual_seed(0)
    model = build_model(recipe.model.name, model_options(recipe, bundle))
    optimizer = build_optimizer(recipe.optim, model)  # the recipe's, as training builds it

    def one_step(precision: str) -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        with autocast:
            loss, _ = task.step(model, features, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def timed(fn) -> float:
        fn()  # warm-up: first-call allocations and kernel selection
        started = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - started) / steps * 1000

    times = {"fp32": [], "bf16": [], "transform": []}
    for i in range(rounds):
        for precision in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
            times[precision].append(timed(lambda: one_step(precision)))
        times["transform"].append(timed(lambda: bundle.transform(inputs, True)))
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    ratios = [a / b for a, b in zip(times["fp32"], times["bf16"])]
    return {
        "recipe": name,
        "model": recipe.model.name,
        "batch": recipe.data.batch_size,
        "transform_ms": statistics.median(times["transform"]),
        "fp32_ms": fp32,
        "bf16_ms": bf16,
        "bf16_speedup": statistics.median(ratios),
    }


def print_step_table(rows: list[dict]) -> None:
    print()
    print("| recipe | model | batch | transform ms | fp32 ms/step | bf16 ms/step | bf16 speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['model']} | {r['batch']} | {r['transform_ms']:.0f} | {r['fp32_ms']:.0f} "
            f"| {r['bf16_ms']:.0f} | {r['bf16_speedup']:.2f}x |"
        )


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY {wait}, load average {load}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("items", nargs="*", metavar="RECIPE|key=value", help=f"recipes (default: {' '.join(RECIPES)}) and overrides")
    p.add_argument("--runs-dir", default=None, help="where the runs go (default: a temporary folder, removed)")
    p.add_argument("--cached", action="store_true", help="reuse the data cache in GROVE_DATA_DIR instead of generating afresh")
    p.add_argument("--step-times", action="store_true", help="also time one step per model, fp32 against bf16")
    p.add_argument("--no-train", action="store_true", help="skip training the recipes (with --step-times)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds for --step-times")
    p.add_argument("--steps", type=int, default=3, help="steps timed per round for --step-times")
    args = p.parse_args(argv)
    overrides = [x for x in args.items if "=" in x]
    recipes = [x for x in args.items if "=" not in x] or RECIPES

    print(f"# {' '.join(['python', 'benchmarks/speech.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"# {machine()}")
    if not args.no_train:
        rows = []
        with tempfile.TemporaryDirectory(prefix="grove-speech-runs-") as tmp:
            runs_dir = args.runs_dir or tmp
            for name in recipes:
                rows.append(run_recipe(name, overrides, runs_dir, args.cached))
                print(json.dumps(rows[-1]), flush=True)
            print_table(rows)
    if args.step_times:
        step_rows = [step_times(name, overrides, args.rounds, args.steps) for name in recipes]
        print_step_table(step_rows)
    print(f"# done; {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
