"""Model-agnostic helpers that only need the model contract."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def estimate_flops(model: nn.Module, batch_size: int = 1) -> int:
    """Forward FLOPs per sample (a multiply-add counts 2), measured on `example_input`."""
    x = model.example_input(batch_size)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // batch_size


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict ready for safetensors: CPU, contiguous, each shared (tied) tensor once."""
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return out


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load `weights_of` output; raises ValueError naming keys that do not fit."""
    own = model.state_dict()
    wrong = [k for k, t in weights.items() if k in own and tuple(t.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(f"weights do not fit the model: {k} is {tuple(weights[k].shape)} in the weights but "
                         f"{tuple(own[k].shape)} in the model ({len(wrong)} tensor(s) differ in shape)")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # A tied tensor was saved under its first name only, and loading that one filled both.
    loaded = {t.untyped_storage().data_ptr() for k, t in model.state_dict().items() if k in weights}
    missing = [k for k in missing if model.state_dict()[k].untyped_storage().data_ptr() not in loaded]
    if missing or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
