"""How faithful an explanation is: the deletion curve.

The explained probability is measured as the features an explanation ranks highest are removed
first (replaced by the baseline: the mean colour or feature, or the baseline token), in STEPS equal
steps from none to all; the same is done in random orders. The area under each curve (fraction
removed 0..1 against probability) is reported: a faithful explanation finds the evidence first, so
its area is well below the random one's.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

STEPS = 20
RANDOM_ORDERS = 3


@torch.no_grad()
def deletion(score: Callable, remove: Callable, heat: torch.Tensor, removable: torch.Tensor, seed: int = 0) -> dict:
    """`heat` ranks the features (any shape); `removable` (same shape, bool) says which count;
    `remove(mask)` -> inputs with the features under each mask (N, *heat.shape) removed;
    `score(inputs)` -> (N,) the explained probability. Returns the two areas and curves."""
    candidates = removable.flatten().nonzero()[:, 0].cpu()
    n = len(candidates)
    if n == 0:
        return {"auc": None, "random_auc": None, "fractions": [], "curve": [], "random_curve": []}
    flat = heat.flatten().float().cpu()[candidates]
    generator = torch.Generator().manual_seed(seed)
    orders = [candidates[flat.argsort(descending=True, stable=True)]]
    orders += [candidates[torch.randperm(n, generator=generator)] for _ in range(RANDOM_ORDERS)]
    counts = [round(k * n / STEPS) for k in range(STEPS + 1)]
    masks = torch.zeros(len(orders), STEPS + 1, heat.numel(), dtype=torch.bool)
    for i, order in enumerate(orders):
        for k, count in enumerate(counts):
            masks[i, k, order[:count]] = True
    masks = masks.reshape(-1, *heat.shape).to(heat.device)
    scores = score(remove(masks)).float().cpu().reshape(len(orders), STEPS + 1).numpy()
    fractions = np.array(counts) / n
    ranked, random = scores[0], scores[1:].mean(0)
    return {"auc": area(fractions, ranked), "random_auc": area(fractions, random), "fractions": fractions.tolist(),
            "curve": ranked.tolist(), "random_curve": random.tolist()}


def area(x: np.ndarray, y: np.ndarray) -> float:
    """The trapezoid rule's area under y(x)."""
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())
