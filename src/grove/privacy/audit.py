"""Membership-inference audits: how much a trained run's model gives away about its training data.

An attack scores examples so that training examples (members) should score higher than examples
the model never saw (non-members); how well the scores tell the two apart is the leakage:
- loss threshold (Yeom et al. 2018): the score is -loss under the run's model, since training
  drives the loss of what it trains on down;
- difficulty calibrated (Watson et al. 2022): the score is an example's loss under a reference
  model trained like the run's on other data, minus its loss under the run's model, so examples
  that are easy (or hard) for any model are not taken for members (or non-members).
Each attack is summed up by its ROC AUC (0.5: chance) and its true-positive rate at 1% false
positives (Carlini et al. 2022: what an attack finds confidently matters more than on average).
A low AUC shows no leakage to these attacks, not privacy: only differential privacy's ε bounds
what every attack can learn.

Non-members are the held-out split (test, or val where there is none). The reference model
trains on a seeded half of it, and the other half are the non-members, so the reference never
saw an audited example. Members are a seeded sample of the train split of the same size.
Language models over token streams are not audited: their training windows overlap, so
membership is not a property of one example.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from grove.data.base import DataBundle
from grove.data.loader import BatchLoader
from grove.engine.build import build_split
from grove.errors import GroveError
from grove.rundir import SUMMARY, LoadedRun, load_run

AUDIT = "audit.json"  # in the run directory
MIN_HELD_OUT = 20  # held-out examples below which the figures are noise
LOW_FPR = 0.01


def audit_run(run_dir: str | Path, checkpoint: str = "best", members: int = 1000, seed: int = 0,
              device: str = "auto", reference: bool = True, reference_steps: int = 300) -> dict:
    """Both attacks (the loss attack alone without `reference`) on a run's checkpoint; the figures
    are also written to RUN/audit.json.

    `members` caps how many training examples are audited, as many as the non-members; `seed`
    draws them and the reference model's half of the held-out split; the reference model trains
    for at most `reference_steps` steps.
    """
    for option, value in (("--members", members), ("--reference-steps", reference_steps)):
        if value < 1:
            raise GroveError(f"{option} must be at least 1, got {value}")
    loaded = load_run(run_dir, checkpoint, device)
    if not (loaded.dir.path / SUMMARY).is_file():
        raise GroveError(f"{loaded.dir.path} has no {SUMMARY}: the run is still training or was stopped before it "
                         f"ended; audit a finished run (`grove train --resume {loaded.dir.path}` finishes this one)")
    if loaded.meta.task == "lm":
        raise GroveError("a language model trains on windows of one token stream, so membership of a window is "
                         "not defined per example: audit a classification or ctc run")
    data_cfg = loaded.recipe.data
    _, train_split = build_split(data_cfg, "train", loaded.dir, loaded.meta)
    split, held_out = build_split(data_cfg, None, loaded.dir, loaded.meta)
    if len(held_out) < MIN_HELD_OUT:
        raise GroveError(f"the {split} split has {len(held_out)} examples; a membership audit needs at least "
                         f"{MIN_HELD_OUT} held-out ones to compare the training examples with")

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(held_out), generator=generator)
    half = len(order) // 2
    outside, kept = (order[:half], order[half:]) if reference else (None, order)
    n = min(len(kept), members, len(train_split))
    drawn_members = torch.randperm(len(train_split), generator=generator)[:n]
    audited = [subset(train_split, drawn_members), subset(held_out, kept[:n])]
    (member_loss, member_hits), (non_member_loss, non_member_hits) = (example_losses(loaded, d) for d in audited)

    result = {"run": str(loaded.dir.path), "checkpoint": checkpoint, "split": split, "seed": seed,
              "members": len(member_loss), "non_members": len(non_member_loss)}
    if member_hits is not None:
        rates = {"members": float(member_hits.mean()), "non_members": float(non_member_hits.mean())}
        result["accuracy"] = {**rates, "gap": rates["members"] - rates["non_members"]}
    # Each attack's mean losses are those of the model its score starts from.
    attacks = {"loss": {**attack_figures(-member_loss, -non_member_loss), **mean_losses(member_loss, non_member_loss)}}
    if reference:
        reference_set = subset(held_out, outside)
        (ref_member, ref_non_member), steps = reference_losses(loaded, reference_set, audited, reference_steps)
        # A reference that did not learn (worse than guessing) calibrates nothing.
        chance = math.log(len(loaded.meta.classes)) if loaded.task.name == "classification" else math.inf
        attacks["calibrated"] = {
            **attack_figures(ref_member - member_loss, ref_non_member - non_member_loss),
            **mean_losses(ref_member, ref_non_member),
            "reference": {"examples": len(reference_set), "steps": steps, "learned": bool(ref_non_member.mean() < chance)},
        }
    result["attacks"] = attacks
    loaded.dir.write_json(AUDIT, result)
    return result


def attack_figures(member_scores: np.ndarray, non_member_scores: np.ndarray) -> dict:
    """ROC AUC and TPR at 1% FPR of scores that should be higher for members."""
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(non_member_scores))]
    scores = np.r_[member_scores, non_member_scores]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    # roc_curve starts at (0, 0), so some threshold always passes
    return {"auc": float(roc_auc_score(labels, scores)), "tpr_at_1pct_fpr": float(tpr[fpr <= LOW_FPR].max())}


def mean_losses(member_loss: np.ndarray, non_member_loss: np.ndarray) -> dict:
    return {"members_loss": float(member_loss.mean()), "non_members_loss": float(non_member_loss.mean())}


@torch.no_grad()
def example_losses(loaded: LoadedRun, data) -> tuple[np.ndarray, np.ndarray | None]:
    """Per example of `data`, in order: the loss under the run's model (fp32, no label smoothing)
    and, for classification, whether its top label is right."""
    loader = BatchLoader(data, loaded.recipe.data.eval_batch_size or 256, train=False, device=loaded.device,
                         strict=loaded.recipe.data.strict)
    losses, hits = [], []
    for inputs, targets in loader.epoch(0):
        _, outputs = loaded.task.step(loaded.model, loaded.transform(inputs, False), targets)
        losses.append(loaded.task.example_losses(outputs, targets))
        if loaded.task.name == "classification":
            hits.append(outputs.argmax(-1) == targets)
    return torch.cat(losses).cpu().numpy(), torch.cat(hits).cpu().numpy() if hits else None


def reference_losses(loaded: LoadedRun, train_on, audited: list, max_steps: int) -> tuple[list[np.ndarray], int]:
    """The losses of each of `audited` under a reference model trained with the run's recipe on
    `train_on` alone, for at most `max_steps` steps; and the steps it took. A private run's
    reference is private too: calibration compares the run with a model trained the same way (and
    the clipped steps of a private recipe's learning rate would diverge without clipping)."""
    from grove.engine.loop import train

    recipe, meta = loaded.recipe, loaded.meta
    t, d = recipe.train, recipe.data
    batch = min(d.batch_size, len(train_on) // 2) // t.grad_accum * t.grad_accum or t.grad_accum
    data_dir = loaded.dir.path / "data"
    bundle = DataBundle(
        train=train_on, val=train_on, test=None, classes=meta.classes, transform=loaded.transform, meta=meta.data,
        model_defaults=meta.model.options,
        files={f.name: f.read_bytes() for f in sorted(data_dir.glob("*")) if f.is_file()},
    )
    with tempfile.TemporaryDirectory(prefix="grove-audit-") as folder:
        update = {
            "data": d.model_copy(update={"batch_size": batch}),
            # compile off: a few hundred steps do not pay back the compile time
            "train": t.model_copy(update={"max_steps": min(t.max_steps or max_steps, max_steps), "compile": False,
                                          "device": str(loaded.device)}),
            "run": recipe.run.model_copy(update={"dir": folder, "name": "reference"}),
        }
        with contextlib.redirect_stdout(io.StringIO()):  # the loop's report of a run about to vanish
            summary = train(recipe.model_copy(update=update), "reference", bundle=bundle)
        trained = load_run(summary["run"], "last", str(loaded.device))
        return [example_losses(trained, data)[0] for data in audited], summary["steps"]


class Subset:
    """Items `index` of a split read item by item (files, or arrays with a `collate`), keeping what
    the loader asks of the split: `__getitem__`, `path`, `collate` and `lengths`."""

    def __init__(self, data, index: torch.Tensor):
        self.data, self.index = data, index
        if hasattr(data, "collate"):
            self.collate = data.collate
        if getattr(data, "lengths", None) is not None:
            self.lengths = torch.as_tensor(data.lengths)[index.cpu()]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.data[int(self.index[i])]

    def path(self, i: int) -> str:
        return self.data.path(int(self.index[i]))


class InMemorySubset(Subset):
    """Items `index` of a split held in memory: `take` gathers a batch on the split's device."""

    def take(self, index: torch.Tensor):
        return self.data.take(self.index[index])

    def to(self, device) -> "InMemorySubset":
        moved = copy.copy(self)
        moved.data, moved.index = self.data.to(device), self.index.to(device)
        return moved


def subset(data, index: torch.Tensor) -> Subset:
    """Items `index` of a split, as a split the loader reads the way it reads `data`."""
    return (InMemorySubset if hasattr(data, "take") else Subset)(data, index)
