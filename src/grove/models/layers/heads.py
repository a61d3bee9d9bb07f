"""Output heads: what `reset_classifier` needs to swap a model's last layer for a fresh one.

    self.fc = fresh_head(self.fc, num_classes)   # same input size, bias, device and dtype

The new layer gets PyTorch's default initialisation; a model whose head has its own init
(BERT-style normal(0, 0.02), VGG's normal(0, 0.01)) applies it to the returned layer.
"""

from __future__ import annotations

from torch import nn


def check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")


def fresh_head(old: nn.Linear | nn.Conv2d, num_classes: int) -> nn.Linear | nn.Conv2d:
    """A freshly initialised layer like `old` (a Linear or a 1x1 Conv2d) with num_classes outputs."""
    check_num_classes(num_classes)
    weight = old.weight
    factory = dict(bias=old.bias is not None, device=weight.device, dtype=weight.dtype)
    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, num_classes, **factory)
    if isinstance(old, nn.Conv2d) and old.kernel_size == (1, 1):
        return nn.Conv2d(old.in_channels, num_classes, 1, **factory)
    raise TypeError(f"fresh_head replaces a Linear or 1x1 Conv2d output layer, not {type(old).__name__}")


def reject_lm_reset(model_name: str, vocab_size: int) -> None:
    """Language models cannot change their output size: it is the vocabulary their input reads."""
    raise ValueError(
        f"{model_name} predicts the next token, so its output is its vocabulary ({vocab_size} tokens) and "
        "reset_classifier cannot change it; build a new model with the new vocab_size instead"
    )
