"""Calibration of a classifier: how far its confidence is from its accuracy.

The confidence of a prediction is its top softmax probability. Predictions are put in 15
equal-width confidence bins, (0, 1/15], (1/15, 2/15] ... (14/15, 1]; the expected calibration error
is the mean gap between each bin's accuracy and mean confidence, weighted by the bin's share of
the samples (Guo et al. 2017, "On Calibration of Modern Neural Networks").
"""

from __future__ import annotations

import torch

N_BINS = 15


def calibration(confidences, correct, n_bins: int = N_BINS) -> dict:
    """{"ece", "count", "bins": [{"lower", "upper", "count", "accuracy", "confidence"}]}; an
    empty bin has accuracy and confidence None."""
    conf = torch.as_tensor(confidences, dtype=torch.float64).flatten()
    hits = torch.as_tensor(correct, dtype=torch.float64).flatten()
    if len(conf) != len(hits):
        raise ValueError(f"{len(conf)} confidences but {len(hits)} correctness flags")
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bucketize (right=False) gives i with edges[i-1] < c <= edges[i]: bin i-1 is (lower, upper].
    index = (torch.bucketize(conf, edges) - 1).clamp(0, n_bins - 1)
    counts = torch.bincount(index, minlength=n_bins).double()
    accuracy = torch.bincount(index, weights=hits, minlength=n_bins) / counts.clamp(min=1)
    confidence = torch.bincount(index, weights=conf, minlength=n_bins) / counts.clamp(min=1)
    n = max(len(conf), 1)
    ece = float((counts / n * (accuracy - confidence).abs()).sum())
    bins = [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": int(counts[b]),
            "accuracy": float(accuracy[b]) if counts[b] else None,
            "confidence": float(confidence[b]) if counts[b] else None,
        }
        for b in range(n_bins)
    ]
    return {"ece": ece, "count": len(conf), "bins": bins}
