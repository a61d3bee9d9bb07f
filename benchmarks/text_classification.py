"""Pretrained MiniLM-L6 fine-tuned vs. an encoder of the same shape trained from scratch, on the
offline sentiment demo data. Prints test accuracy and wall time of both.

    python benchmarks/text_classification.py
"""

import time

from grove.config import load_recipe
from grove.engine.loop import train


def main() -> None:
    rows = []
    for recipe_name in ("sentiment-demo-encoder", "sentiment-demo-minilm"):
        recipe, name = load_recipe(recipe_name, ["run.dir=runs/bench"])
        start = time.perf_counter()
        summary = train(recipe, name)
        rows.append((recipe_name, recipe.model.name, summary["accuracy"], time.perf_counter() - start))
    print(f"\n{'recipe':<24} {'model':<20} {'test accuracy':>13} {'wall s':>8}")
    for recipe_name, model, accuracy, seconds in rows:
        print(f"{recipe_name:<24} {model:<20} {accuracy:13.4f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
