import torch

from grove.tasks.classification import ClassificationMetrics, top_k


def test_metrics_from_a_known_confusion():
    metrics = ClassificationMetrics(3, "cpu")
    logits = torch.tensor([[5.0, 1, 0], [0, 5, 1], [0, 5, 1], [1, 0, 5]])
    targets = torch.tensor([0, 1, 2, 2])
    metrics.update(logits, targets, torch.tensor(0.5))
    out = metrics.compute(per_class=True)
    assert out["accuracy"] == 0.75 and out["count"] == 4 and out["loss"] == 0.5
    assert out["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert out["per_class"]["precision"] == [1.0, 0.5, 1.0]
    assert out["per_class"]["recall"] == [1.0, 1.0, 0.5]
    assert out["top5"] == 1.0


def test_top_k_ranks_labels_by_probability():
    ranked = top_k(torch.tensor([[0.0, 2.0, 1.0]]), ["a", "b", "c"], k=2)[0]
    assert [label for label, _ in ranked] == ["b", "c"] and ranked[0][1] > ranked[1][1]
