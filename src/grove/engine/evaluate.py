"""Evaluation: over a split during training, at the end of a run, and `grove evaluate RUN`."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from grove.data.loader import BatchLoader
from grove.engine.logging import plot_confusion, plot_curves
from grove.engine.precision import Speed
from grove.errors import GroveError
from grove.models.utils import count_params, load_weights
from grove.rundir import SUMMARY, RunDir


@torch.no_grad()
def evaluate(model, loader: BatchLoader, task, transform, speed: Speed, per_class: bool = False) -> dict:
    """The task's metrics over the loader's split, reduced across processes."""
    was_training = model.training
    model.eval()
    metrics = task.metrics(loader.device)
    with getattr(task, "fresh_state", nullcontext)():
        for inputs, targets in loader.epoch(0):
            inputs = speed.memory_format(transform(inputs, False))
            with speed.autocast():
                loss, outputs = task.step(model, inputs, targets)
            metrics.update(outputs, targets, loss)
    metrics.all_reduce()
    model.train(was_training)
    return metrics.compute(per_class=per_class)


def final_report(trainer, run: RunDir) -> dict:
    """Best weights on the test split (val when there is none); summary.json and plots."""
    best = run.checkpoint("best")
    model = trainer.eval_model
    if best is not None:
        weights, _ = run.load_checkpoint("best", with_state=False)
        load_weights(model, weights)
    split, loader = ("test", trainer.test_loader) if trainer.test_loader is not None else ("val", trainer.val_loader)
    figures = evaluate(model, loader, trainer.task, trainer.bundle.transform, trainer.speed, per_class=True)
    p = trainer.progress
    summary = {
        "run": str(run.path),
        "recipe": trainer.recipe_name,
        "model": trainer.recipe.model.name,
        "params": count_params(trainer.model),
        "steps": p.step,
        "epochs": p.epoch,
        "best_step": p.best_step,
        f"best_val_{trainer.task.monitor}": p.best,
        "split": split,
        **{k: v for k, v in figures.items() if k not in ("per_class", "confusion_matrix")},
        "skipped_steps": p.skipped_steps,
        "skipped_files": len(trainer.train_loader.skipped),
        "train_seconds": round(p.train_seconds, 2),
        "processes": trainer.procs.world_size,
        "speed": trainer.speed.describe(),
    }
    if trainer.procs.is_main:
        if hasattr(model, "save_pretrained"):  # Hugging Face models go back out in their own format
            model.save_pretrained(run.path / "hf")
            for name, content in trainer.bundle.files.items():
                (run.path / "hf" / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        details = {k: figures[k] for k in ("per_class", "confusion_matrix") if k in figures}
        run.write_json(SUMMARY, {**summary, **details})
        plot_curves(run)
        if "confusion_matrix" in figures:
            plot_confusion(figures["confusion_matrix"], trainer.bundle.classes, run.plots / f"confusion_{split}.png")
    return summary


def evaluate_run(run_dir: str, split: str = "test", checkpoint: str = "best", device: str = "auto") -> dict:
    """`grove evaluate`: rebuild the data from the run's recipe, load a checkpoint, evaluate a split."""
    from grove.config import validate
    from grove.engine.build import build_data, build_model, build_task
    from grove.engine.precision import pick_device, resolve_speed

    run = RunDir.open(run_dir)
    recipe = validate(run.read_config())
    meta = run.read_json("meta.json")
    bundle = build_data(recipe.data)
    data = {"train": bundle.train, "val": bundle.val, "test": bundle.test}.get(split)
    if data is None:
        available = [name for name in ("train", "val", "test") if getattr(bundle, name) is not None]
        raise GroveError(f"data set '{recipe.data.name}' has no '{split}' split; choose from {', '.join(available)}")
    torch_device = pick_device(device)
    model = build_model(meta["model"]["name"], meta["model"]["options"])
    weights, _ = run.load_checkpoint(checkpoint, with_state=False)
    load_weights(model, weights)
    model.to(torch_device)
    speed = resolve_speed(recipe.train, torch_device, model.example_input(1).dim() == 4)
    speed.compile = False
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    task = build_task(recipe, bundle)
    loader = BatchLoader(data, recipe.data.eval_batch_size or 256, train=False, device=torch_device, strict=recipe.data.strict)
    figures = evaluate(model, loader, task, bundle.transform, speed, per_class=True)
    figures.update(split=split, checkpoint=checkpoint, classes=meta["classes"], skipped_files=len(loader.skipped))
    run.write_json(f"eval_{split}.json", figures)
    if "confusion_matrix" in figures:
        run.plots.mkdir(exist_ok=True)
        plot_confusion(figures["confusion_matrix"], meta["classes"], run.plots / f"confusion_{split}.png")
    return figures
