"""Differential privacy's price and what it buys: accuracy, step time and measured leakage.

    python benchmarks/privacy.py                              # every private recipe, epsilon 1 2 4 8 inf
    python benchmarks/privacy.py --recipes digits-cnn-dp --epsilons 8 inf --no-overfit

For each private recipe and each epsilon it trains `grove train RECIPE privacy.epsilon=E` (inf:
the recipe it is the private version of, as shipped: `digits-cnn` for `digits-cnn-dp`), then
audits the run (`grove audit`: loss-threshold and difficulty-calibrated membership inference,
training members against held-out non-members), and prints test accuracy and both attacks' AUC
side by side. A deliberately over-fitted run (sentiment-demo-encoder on 300 reviews for 40 epochs, without
dropout or weight decay) shows what the audit finds when a model does leak.

Step time is measured apart from training, in one process, on the recipe's own model, data and
batch size: rounds of one optimiser step with and without privacy, the order alternating, medians.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from grove.config import load_recipe
from grove.data.loader import BatchLoader
from grove.engine.build import build_data, build_model, build_optimizer, model_options
from grove.privacy import make_private, plan, private_layers
from grove.privacy.audit import audit_run
from grove.rundir import RunDir

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_line, train_run

RECIPES = {  # private recipe -> the recipe it is the private version of
    "digits-cnn-dp": "digits-cnn",
    "sentiment-demo-encoder-dp": "sentiment-demo-encoder",
    "sentiment-demo-minilm-dp": "sentiment-demo-minilm",
}
# Few reviews, many epochs, no dropout or decay: the encoder learns its 300 training reviews by heart.
OVERFIT = ("sentiment-demo-encoder", ["data.n_train=300", "train.epochs=40", "model.dropout=0", "optim.weight_decay=0",
                                      "run.name=overfit"])


def step_times(recipe_name: str, rounds: int = 6) -> tuple[float, float]:
    """Median seconds of one optimiser step of the recipe's model on its own batches, without and
    with privacy; the order alternates round by round, after a warm-up step of each."""
    recipe, _ = load_recipe(recipe_name)
    bundle = build_data(recipe.data)
    options = model_options(recipe, bundle)
    loader = BatchLoader(bundle.train, recipe.data.batch_size, train=True, device=torch.device("cpu"), poisson=True)
    batches = list(loader.epoch(0))[: rounds + 1]
    task_loss = torch.nn.functional.cross_entropy

    def trainer(private: bool):
        torch.manual_seed(0)
        model = build_model(recipe.model.name, options).train()
        if private:
            model, _ = private_layers(model, pretrained=False)
        optimizer = build_optimizer(recipe.optim, model)
        if not private:
            return model, optimizer
        p = plan(recipe.privacy, len(bundle.train), recipe.data.batch_size, 1000)
        return make_private(model, optimizer, p, recipe.data.batch_size, torch.Generator(), distributed=False)

    runs = {False: trainer(False), True: trainer(True)}
    seconds = {False: [], True: []}
    for i, (inputs, targets) in enumerate(batches):
        x = bundle.transform(inputs, True)
        for private in ((False, True) if i % 2 else (True, False)):
            model, optimizer = runs[private]
            start = time.perf_counter()
            task_loss(model(x).float(), targets).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i:  # the first batch warms both up
                seconds[private].append(time.perf_counter() - start)
    return statistics.median(seconds[False]), statistics.median(seconds[True])


def trained(recipe: str, work: Path, overrides: list[str], label: str) -> dict:
    run = RunDir(train_run(recipe, work, overrides, log_name=label))
    summary = run.read_json("summary.json")
    audit = audit_run(run.path)
    return {"accuracy": summary["accuracy"], "epsilon": summary.get("privacy", {}).get("epsilon", math.inf),
            "seconds": summary["train_seconds"], "loss_auc": audit["attacks"]["loss"]["auc"],
            "calibrated_auc": audit["attacks"]["calibrated"]["auc"],
            "tpr": max(a["tpr_at_1pct_fpr"] for a in audit["attacks"].values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--epsilons", nargs="+", default=["1", "2", "4", "8", "inf"])
    p.add_argument("--work", type=Path, help="folder for the runs (default: a temporary one)")
    p.add_argument("--no-overfit", action="store_true", help="leave out the over-fitted run")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="grove-privacy-"))
    work.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    print(f"runs in {work}")

    print("\n| recipe | non-private step | private step | ratio |\n|---|---:|---:|---:|")
    for recipe in args.recipes:
        plain, private = step_times(recipe)
        print(f"| {recipe} | {plain * 1000:.0f} ms | {private * 1000:.0f} ms | {private / plain:.2f}x |", flush=True)

    print("\n| recipe | epsilon | test accuracy | loss attack AUC | calibrated attack AUC | best TPR@1%FPR | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for recipe in args.recipes:
        for eps in args.epsilons:
            if eps == "inf":
                row = trained(RECIPES[recipe], work, [], f"{recipe}-inf")
            else:
                row = trained(recipe, work, [f"privacy.epsilon={eps}", f"run.name={recipe}-eps{eps}"], f"{recipe}-eps{eps}")
            shown = "inf" if math.isinf(row["epsilon"]) else f"{row['epsilon']:.2f}"
            print(f"| {recipe} | {shown} | {row['accuracy']:.2%} | {row['loss_auc']:.3f} | {row['calibrated_auc']:.3f} "
                  f"| {row['tpr']:.3f} | {row['seconds']:.0f} |", flush=True)
    if args.no_overfit:
        return
    row = trained(OVERFIT[0], work, OVERFIT[1], "overfit")
    print(f"| over-fitted {OVERFIT[0]} ({', '.join(OVERFIT[1][:4])}) | inf | {row['accuracy']:.2%} | {row['loss_auc']:.3f} "
          f"| {row['calibrated_auc']:.3f} | {row['tpr']:.3f} | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
