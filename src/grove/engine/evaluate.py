"""Evaluation: over a split during training, at the end of a run, and `grove evaluate RUN`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from grove.data.loader import BatchLoader
from grove.engine.logging import plot_confusion, plot_curves
from grove.engine.precision import Speed
from grove.models.utils import load_weights
from grove.registry import MODELS
from grove.rundir import SUMMARY, RunDir, load_run
from grove.tasks import Task


@torch.no_grad()
def evaluate(model, loader: BatchLoader, task, transform, speed: Speed, per_class: bool = False,
             on_batch: Callable | None = None) -> dict:
    """The task's metrics over the loader's split, reduced across processes.

    `on_batch(inputs, outputs, targets)`, when given, sees every batch as the loader gave it
    (before the transform) with the model's outputs, so per-sample figures (grove report's
    calibration and mistakes) come from the same pass as the metrics.
    """
    was_training = model.training
    model.eval()
    metrics = task.metrics(loader.device)
    with task.fresh_state():
        for inputs, targets in loader.epoch(0):
            x = speed.memory_format(transform(inputs, False))
            with speed.autocast():
                loss, outputs = task.step(model, x, targets)
            metrics.update(outputs, targets, loss)
            if on_batch is not None:
                on_batch(inputs, outputs, targets)
    metrics.all_reduce()
    model.train(was_training)
    return metrics.compute(per_class=per_class)


@dataclass
class FinishedRun:
    """A run that has just trained, as the final report sees it."""

    run: RunDir
    recipe_name: str
    model_name: str
    model: torch.nn.Module  # the weights evaluation uses (the EMA copy under EMA)
    task: Task
    transform: Callable
    speed: Speed
    progress: dict  # the loop's Progress, as a dict
    params: int
    eval_split: str  # "test", or "val" when the data set has no test split
    eval_loader: BatchLoader
    skipped_files: set[str]  # unreadable files skipped while training and validating
    processes: int
    is_main: bool
    classes: list[str]
    data_files: dict  # files the data set saved in the run (a tokenizer ...)
    privacy: dict | None = None  # the privacy plan's figures (grove/privacy) of a private run


def final_report(result: FinishedRun) -> dict:
    """Best weights on the test split (val when there is none); summary.json, skipped_files.txt, plots."""
    run, model, p = result.run, result.model, result.progress
    if run.checkpoint("best") is not None:
        weights, _ = run.load_checkpoint("best", with_state=False)
        load_weights(model, weights)
    figures = evaluate(model, result.eval_loader, result.task, result.transform, result.speed, per_class=True)
    skipped = result.skipped_files | result.eval_loader.skipped
    summary = {
        "run": str(run.path),
        "recipe": result.recipe_name,
        "model": result.model_name,
        "params": result.params,
        "steps": p["step"],
        "epochs": p["epoch"],
        "best_step": p["best_step"],
        f"best_val_{result.task.monitor}": p["best"],
        "split": result.eval_split,
        **{k: v for k, v in figures.items() if k not in ("per_class", "confusion_matrix")},
        "skipped_steps": p["skipped_steps"],
        "skipped_files": len(skipped),
        "train_seconds": round(p["train_seconds"], 2),
        "processes": result.processes,
        "speed": result.speed.describe(),
    }
    if result.privacy:
        summary["privacy"] = result.privacy
    if result.is_main:
        if hasattr(model, "save_pretrained"):  # Hugging Face models go back out in their own format
            model.save_pretrained(run.path / "hf")
            for name, content in result.data_files.items():
                (run.path / "hf" / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        details = {k: figures[k] for k in ("per_class", "confusion_matrix") if k in figures}
        run.write_json(SUMMARY, {**summary, **details})
        run.write_skipped(skipped)
        plot_curves(run)
        if "confusion_matrix" in figures:
            plot_confusion(figures["confusion_matrix"], result.classes, run.plots / f"confusion_{result.eval_split}.png")
    return summary


def evaluate_run(run_dir: str, split: str | None = None, checkpoint: str = "best", device: str = "auto",
                 on_batch: Callable | None = None) -> dict:
    """`grove evaluate`: a checkpoint of a run on one split, rebuilt from the run directory alone
    (`on_batch` as in `evaluate`)."""
    from grove.engine.build import build_split
    from grove.engine.precision import resolve_speed

    loaded = load_run(run_dir, checkpoint, device)
    recipe = loaded.recipe
    split, data = build_split(recipe.data, split, loaded.dir, loaded.meta)
    model = loaded.model
    speed = resolve_speed(recipe.train, loaded.device, model, MODELS.get(recipe.model.name).tags.get("family"))
    speed.compile = False
    speed.reasons["compile"] = "off: evaluation runs the eager model"
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = BatchLoader(data, recipe.data.eval_batch_size or 256, train=False, device=loaded.device, strict=recipe.data.strict)
    figures = evaluate(model, loader, loaded.task, loaded.transform, speed, per_class=True, on_batch=on_batch)
    figures.update(split=split, checkpoint=checkpoint, classes=loaded.classes, skipped_files=len(loader.skipped))
    loaded.dir.write_json(f"eval_{split}.json", figures)
    if "confusion_matrix" in figures:
        loaded.dir.plots.mkdir(exist_ok=True)
        plot_confusion(figures["confusion_matrix"], loaded.classes, loaded.dir.plots / f"confusion_{split}.png")
    return figures
