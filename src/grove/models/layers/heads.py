"""Output heads: what `reset_classifier` needs to swap a model's last layer for a fresh one.

    self.fc = fresh_head(self.fc, num_classes)   # same input size, bias, device and dtype

    class ResNet(ReplaceableHead, nn.Module):
        head_layer = "fc"                        # reset_classifier replaces self.fc

The new layer gets PyTorch's default initialisation; a model whose head has its own init
(BERT-style normal(0, 0.02), VGG's normal(0, 0.01)) applies it to the returned layer
(`init_head` for a ReplaceableHead).
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


class ReplaceableHead:
    """`reset_classifier` for models whose output layer is the submodule named `head_layer`."""

    head_layer: str  # dotted name, as feature_layer: "fc", "classifier.6"

    def reset_classifier(self, num_classes: int) -> None:
        parent, _, name = self.head_layer.rpartition(".")
        head = fresh_head(self.get_submodule(self.head_layer), num_classes)
        self.init_head(head)
        setattr(self.get_submodule(parent), name, head)  # for an nn.Sequential, name is the index
        self.num_classes = num_classes

    def init_head(self, head: nn.Linear | nn.Conv2d) -> None:
        """Initialises a fresh output layer: PyTorch's default init stands unless a model overrides this."""


def reject_lm_reset(model_name: str, vocab_size: int) -> None:
    """Language models cannot change their output size: it is the vocabulary their input reads."""
    raise ValueError(
        f"{model_name} predicts the next token, so its output is its vocabulary ({vocab_size} tokens) and "
        "reset_classifier cannot change it; build a new model with the new vocab_size instead"
    )


def check_lm_num_classes(model_name: str, num_classes: int | None, vocab_size: int) -> None:
    """A language model's builder takes num_classes only as the vocabulary's size (or None)."""
    if num_classes is not None and num_classes != vocab_size:
        raise ValueError(
            f"{model_name} predicts the next token, so num_classes must equal vocab_size; "
            f"got {num_classes} and {vocab_size}"
        )
