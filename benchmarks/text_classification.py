"""Pretrained MiniLM-L6 fine-tuned vs. encoders trained from scratch (the recipe's, and one of
MiniLM-L6's own shape: 6 layers, 12 heads, 384 dims) on the offline sentiment demo data. Prints
parameters, test accuracy and wall time of each.

    python benchmarks/text_classification.py
"""

import tempfile
import time

from grove.config import load_recipe
from grove.engine.loop import train

RUNS = [
    ("sentiment-demo-encoder", []),
    ("sentiment-demo-encoder", ["model.n_layer=6", "model.n_head=12", "model.n_embd=384"]),
    ("sentiment-demo-minilm", []),
]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="grove-bench-") as run_dir:
        for recipe_name, overrides in RUNS:
            recipe, name = load_recipe(recipe_name, [f"run.dir={run_dir}", *overrides])
            start = time.perf_counter()
            summary = train(recipe, name)
            seconds = time.perf_counter() - start
            rows.append((recipe_name, " ".join(overrides) or "(recipe)", summary["params"], summary["accuracy"], seconds))
    print(f"\n{'recipe':<24} {'overrides':<48} {'params':>11} {'test accuracy':>13} {'wall s':>7}")
    for recipe_name, overrides, params, accuracy, seconds in rows:
        print(f"{recipe_name:<24} {overrides:<48} {params:>11,} {accuracy:13.4f} {seconds:7.1f}")


if __name__ == "__main__":
    main()
