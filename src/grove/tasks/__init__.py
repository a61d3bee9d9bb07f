"""Tasks: loss, metrics and decoding for classification, language modelling and CTC transcription.

`create_task` builds one from what a run directory records (task name, classes, data meta and the
task's options), so training and every later command build the same task the same way.
"""

from __future__ import annotations

from grove.tasks.base import Task

TASKS = ("classification", "lm", "ctc")


def create_task(name: str, classes: list[str], data_meta: dict, options: dict | None = None) -> Task:
    """`options`: label_smoothing (classification), stateful (lm: carry recurrent state across batches)."""
    options = options or {}
    if name == "lm":
        from grove.tasks.lm import LanguageModelTask

        return LanguageModelTask(stateful=options.get("stateful", False), chars_per_token=data_meta.get("chars_per_token"))
    if name == "ctc":
        from grove.tasks.ctc import CTCTask

        return CTCTask(alphabet=data_meta["alphabet"])
    if name == "classification":
        from grove.tasks.classification import ClassificationTask

        return ClassificationTask(len(classes), label_smoothing=options.get("label_smoothing", 0.0))
    raise ValueError(f"unknown task '{name}'; grove's tasks are {', '.join(TASKS)}")


__all__ = ["TASKS", "Task", "create_task"]
