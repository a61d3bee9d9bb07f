"""Where a run's figures go: metrics.jsonl, TensorBoard, and the plots drawn at the end."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: training machines have no display
import matplotlib.pyplot as plt  # noqa: E402

from grove.rundir import RunDir  # noqa: E402


class MetricsLog:
    """Writes on the main process only; on other ranks every call is a no-op."""

    def __init__(self, run: RunDir | None, purge_step: int | None = None):
        self.run = run
        self.records = 0 if run is None else len(run.read_metrics())
        self.writer = None
        if run is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after the checkpoint being resumed.
            self.writer = SummaryWriter(str(run.tensorboard), purge_step=purge_step)

    def log(self, split: str, step: int, epoch: int, figures: dict) -> None:
        if self.run is None:
            return
        scalars = {k: v for k, v in figures.items() if isinstance(v, (int, float))}
        self.run.append_metrics({"split": split, "step": step, "epoch": epoch, **scalars})
        self.records += 1
        for key, value in scalars.items():
            self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(run: RunDir) -> list[str]:
    """One PNG per metric with train and val curves against step; returns the file names."""
    records = run.read_metrics()
    run.plots.mkdir(exist_ok=True)
    names = []
    present = {k for r in records for k in r}
    for metric in [m for m in ("loss", "accuracy", "perplexity", "bits_per_char", "cer", "wer") if m in present]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for split in ("train", "val"):
            points = [(r["step"], r[metric]) for r in records if r["split"] == split and metric in r]
            if points:
                ax.plot(*zip(*points), marker="." if split == "val" else None, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(run.plots / f"{metric}.png", dpi=100)
        plt.close(fig)
        names.append(f"{metric}.png")
    return names


def plot_confusion(matrix: list[list[int]], classes: list[str], path) -> None:
    size = min(4 + 0.35 * len(classes), 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    if len(classes) <= 40:
        ax.set_xticks(range(len(classes)), classes, rotation=90)
        ax.set_yticks(range(len(classes)), classes)
        for i, row in enumerate(matrix):
            for j, n in enumerate(row):
                if n:
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(bins: list[dict], ece: float, path) -> None:
    """A reliability diagram: accuracy per confidence bin (dicts of lower, upper, count, accuracy,
    confidence) against the diagonal of perfect calibration, and the samples per bin below."""
    lowers = [b["lower"] for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    filled = [b for b in bins if b["count"]]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           edgecolor="black", label="accuracy")
    ax.bar([b["lower"] for b in filled], [b["confidence"] - b["accuracy"] for b in filled],
           bottom=[b["accuracy"] for b in filled], width=width, align="edge", color="tab:red", alpha=0.3,
           edgecolor="tab:red", hatch="//", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {ece:.4f} ({len(bins)} bins)")
    ax.legend(loc="upper left")
    hist.bar(lowers, [b["count"] for b in bins], width=width, align="edge", edgecolor="black")
    hist.set_xlabel("confidence")
    hist.set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
