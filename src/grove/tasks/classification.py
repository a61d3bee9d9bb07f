"""Classification: cross-entropy loss, metrics from a confusion matrix, top-k prediction.

Metrics accumulate on the device (no host sync per step); `all_reduce` sums them across
processes, so every rank computes the same figures as one process over the whole split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grove.tasks.base import Task, sum_across_processes


class ClassificationTask(Task):
    name = "classification"
    monitor = "accuracy"  # the validation metric that picks `best` and drives early stopping
    monitor_mode = "max"

    def __init__(self, num_classes: int, label_smoothing: float = 0.0):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
        """(mean loss, logits) for one batch."""
        logits = model(inputs)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
        return loss, logits

    def example_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,) cross-entropy of each example, without label smoothing."""
        return F.cross_entropy(logits.float(), targets, reduction="none")

    def metrics(self, device) -> "ClassificationMetrics":
        return ClassificationMetrics(self.num_classes, device)


class ClassificationMetrics:
    """Confusion matrix, loss and top-5 over batches.

    A training step only records its batch's top-5 indices, targets and loss (one kernel); they are
    folded into the matrix when figures are read, at log intervals. Per-step bookkeeping of a dozen
    small ops cost ~0.1 ms a step, a tenth of a small CNN's step on CPU (benchmarks/train_overhead.py).
    """

    def __init__(self, num_classes: int, device):
        self.num_classes = num_classes
        self.k = min(5, num_classes)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        # loss sum, top-5 hits
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        self.pending.append((logits.topk(self.k, dim=-1).indices, targets, loss.detach()))

    @torch.no_grad()
    def fold(self) -> None:
        """Adds the recorded batches to the confusion matrix and sums."""
        if not self.pending:
            return
        top, targets, losses = zip(*self.pending)
        self.pending = []
        top, sizes = torch.cat(top), torch.tensor([len(t) for t in targets], dtype=torch.float64)
        targets = torch.cat(targets)
        pred = top[:, 0]  # topk is sorted: its first column is the argmax
        self.confusion += torch.bincount(
            targets * self.num_classes + pred, minlength=self.num_classes**2
        ).view(self.num_classes, self.num_classes)
        loss_sum = (torch.stack(losses).double() * sizes.to(self.sums.device)).sum()
        hits = (top == targets[:, None]).any(-1).sum()
        self.sums += torch.stack([loss_sum, hits.double()])

    def all_reduce(self) -> None:
        self.fold()
        sum_across_processes(self.confusion, self.sums)

    @property
    def count(self) -> int:
        self.fold()
        return int(self.confusion.sum())

    def compute(self, per_class: bool = False) -> dict:
        """Headline figures; with per_class, precision/recall/F1 per class and the matrix too."""
        self.fold()
        cm = self.confusion.double().cpu()
        n = cm.sum().clamp(min=1)
        tp = cm.diag()
        precision = tp / cm.sum(0).clamp(min=1)
        recall = tp / cm.sum(1).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        sums = self.sums.cpu()
        out = {
            "loss": float(sums[0] / n),
            "accuracy": float(tp.sum() / n),
            "top5": float(sums[1] / n),
            "macro_f1": float(f1.mean()),
            "count": int(n),
        }
        if per_class:
            out["per_class"] = {
                "precision": precision.tolist(),
                "recall": recall.tolist(),
                "f1": f1.tolist(),
                "support": cm.sum(1).long().tolist(),
            }
            out["confusion_matrix"] = self.confusion.cpu().tolist()
        return out


def top_k(logits: torch.Tensor, classes: list[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """Per sample, the k most probable (label, probability) pairs."""
    probs = logits.float().softmax(-1)
    values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [
        [(classes[i], float(p)) for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(values.tolist(), indices.tolist())
    ]
