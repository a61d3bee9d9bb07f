"""Explanations, measured: how faithful each method is, and what it costs per input.

For each run (trained here unless --runs gives them: digits-cnn, spoken-words-cnn and
sentiment-demo-encoder by default), the first --n held-out test inputs are explained by every
method that applies, and the table shows, per method:
- the deletion area: the explained probability as the features ranked highest are removed first
  (grove/explain/deletion.py), averaged over the inputs, beside the area for random orders; a
  ratio under 0.5 is the target for the recommended (auto) method;
- ms per input for the attribution alone, one input at a time (as `grove explain FILE` does),
  and per input in batches of --batch with the deletion score (as the report does).

    python benchmarks/explain.py                      # trains the three recipes first
    python benchmarks/explain.py --runs RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import grove
from grove.engine.build import build_split
from grove.explain import AUTO_METHOD, METHODS, attribution, explain_items
from grove.errors import GroveError

sys.path.insert(0, os.path.dirname(__file__))
from machine import machine_line, train_run  # noqa: E402

RECIPES = ["digits-cnn", "spoken-words-cnn", "sentiment-demo-encoder"]


def held_out(predictor, n: int) -> list:
    """The first n test inputs, in the form `predictor.read` gives."""
    run = predictor.run
    split, data = build_split(run.recipe.data, "test", run.dir, run.meta)
    items = []
    for i in range(len(data)):
        x, _ = data[i]
        if x is None:  # an unreadable file the split skips
            continue
        items.append(x.tolist() if predictor.modality == "text" else x[None])
        if len(items) == n:
            break
    return items


def attribution_ms(predictor, items: list, method: str) -> float:
    """Mean ms of the attribution alone for one input at a time, after one warm-up input (text:
    the whole explanation, whose attribution is one call among small ones)."""
    p = predictor
    forward = lambda v: p.model(v).float().softmax(-1)  # noqa: E731
    times = []
    with torch.enable_grad():
        for item in items[:33]:
            start = time.perf_counter()
            if p.modality == "text":
                explain_items(p, [item], ["x"], method)
            else:
                x = p.transform(item, False)
                attribution.dense(p.model, forward, x, forward(x).argmax(-1), method)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.mean(times[1:] or times))


def measure(run: Path, n: int, batch: int) -> list[dict]:
    predictor = grove.load(run, device="cpu")
    items = held_out(predictor, n)
    names = [str(i) for i in range(len(items))]
    rows = []
    for method in METHODS[1:]:
        try:
            start = time.perf_counter()
            explanations = []
            for k in range(0, len(items), batch):
                explanations += explain_items(predictor, items[k : k + batch], names[k : k + batch], method)
            batched = 1000 * (time.perf_counter() - start) / len(items)
        except GroveError:
            continue  # the method does not apply to this model
        single = attribution_ms(predictor, items, method)
        auc = float(np.mean([e.deletion["auc"] for e in explanations]))
        random = float(np.mean([e.deletion["random_auc"] for e in explanations]))
        rows.append({"recipe": predictor.recipe, "method": method + (" (auto)" if method == AUTO_METHOD else ""),
                     "inputs": len(items), "deletion": auc, "random": random, "ratio": auc / random,
                     "ms_single": single, "ms_batched": batched})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, help="trained run directories (default: train RECIPES here)")
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--n", type=int, default=100, help="held-out inputs per run")
    parser.add_argument("--batch", type=int, default=16, help="inputs per explain_items call, with the deletion score")
    parser.add_argument("--work", type=Path, help="where trained runs go (default: a temporary folder)")
    args = parser.parse_args()

    runs = args.runs
    if not runs:
        work = args.work or Path(tempfile.mkdtemp(prefix="grove-explain-"))
        work.mkdir(parents=True, exist_ok=True)
        runs = []
        for recipe in args.recipes:
            start = time.perf_counter()
            runs.append(train_run(recipe, work))
            print(f"trained {recipe} in {time.perf_counter() - start:.0f} s -> {runs[-1]}", file=sys.stderr)
    print(machine_line())
    print(f"{'recipe':<24} {'method':<18} {'inputs':>6} {'deletion':>8} {'random':>7} {'ratio':>6} "
          f"{'ms/input':>9} {'ms/input batched+deletion':>26}")
    for run in runs:
        for r in measure(run, args.n, args.batch):
            print(f"{r['recipe']:<24} {r['method']:<18} {r['inputs']:>6} {r['deletion']:>8.3f} {r['random']:>7.3f} "
                  f"{r['ratio']:>6.2f} {r['ms_single']:>9.1f} {r['ms_batched']:>26.1f}")


if __name__ == "__main__":
    main()
