"""Attributions with Captum: how much each part of an input moved the explained probability.

Two kinds of input, one function each:
- dense inputs, (B, C, H, W) normalised images or (B, F, T) normalised log-mel features:
  `dense(...)` with ig, saliency, gradcam (on the model's feature layer), occlusion, or attention
  (rollout, for vision transformers);
- token ids (B, T): `tokens(...)` with ig (layer Integrated Gradients on the token embedding),
  saliency (gradient x embedding) or occlusion (each token replaced by the baseline token).
`forward(x)` returns the probabilities the target indexes (B, K). The baseline, for Integrated
Gradients and for occlusion, is 0 for dense inputs (the training data's mean colour or feature:
inputs are normalised) and the baseline token for token ids.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from grove.errors import GroveError

IG_STEPS = 32  # Gauss-Legendre points: completeness within 1% on grove's models (tests/explain)


def dense(model, forward, x: torch.Tensor, target: torch.Tensor, method: str) -> torch.Tensor:
    """Attributions shaped as x (gradcam and attention: one map broadcast over the channels)."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    size = x.shape[-2:]
    x = x.detach().requires_grad_()  # Captum's gradient methods take inputs that ask for gradients
    if method == "ig":
        return IntegratedGradients(forward).attribute(x, baselines=0.0, target=target, n_steps=IG_STEPS)
    if method == "saliency":
        return Saliency(forward).attribute(x, target=target, abs=True)
    if method == "occlusion":
        window, stride = occlusion_window(x)
        return Occlusion(forward).attribute(x, sliding_window_shapes=window, strides=stride, baselines=0.0, target=target)
    if method == "gradcam":
        layer = model.get_submodule(model.feature_layer)
        cam = LayerGradCam(forward, layer).attribute(x, target=target, relu_attributions=True)
        heat = LayerAttribution.interpolate(cam.detach(), tuple(size), "bilinear")  # (B, 1, *size)
        return heat.expand_as(x) if x.dim() == 4 else heat[:, 0]
    if method == "attention":
        grid = attention_rollout(model, x)[:, None]  # (B, 1, h, w)
        return F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False).expand_as(x)
    raise ValueError(f"unknown method {method!r}")


def tokens(embedding, forward, ids: torch.Tensor, target: torch.Tensor, method: str, baseline: torch.Tensor) -> torch.Tensor:
    """Per-token attributions (B, T); `baseline` is ids with every explained token replaced."""
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients, Occlusion

    if method == "ig":
        attr = LayerIntegratedGradients(forward, embedding).attribute(
            ids, baselines=baseline, target=target, n_steps=IG_STEPS)
        return attr.sum(-1)
    if method == "saliency":
        return LayerGradientXActivation(forward, embedding).attribute(ids, target=target).sum(-1)
    if method == "occlusion":
        # Captum's occlusion mixes inputs as x * (1 - mask) + baseline * mask: exact for integers.
        return Occlusion(forward).attribute(ids, sliding_window_shapes=(1,), baselines=baseline, target=target)
    raise ValueError(f"unknown method {method!r}")


def check_method(model, modality: str, method: str) -> None:
    """A GroveError saying which methods do fit, for one that does not fit the model."""
    name = type(model).__name__
    if modality == "text" and method in ("gradcam", "attention"):
        raise GroveError(f"{method} does not apply to text: use ig, saliency or occlusion")
    if method == "gradcam" and not feature_map(model):
        raise GroveError(f"gradcam needs a convolutional feature map, and {name}'s feature layer "
                         f"'{model.feature_layer}' gives none: use ig, saliency or occlusion")
    if method == "attention" and not hasattr(model, "attention_maps"):
        raise GroveError(f"attention rollout needs a vision transformer; {name} is not one: use ig, or gradcam for a CNN")


def feature_map(model) -> bool:
    """Whether the model's feature layer gives a (B, C, h, w) map, as Grad-CAM needs."""
    if model.input_spec()[0].name not in ("image", "features"):
        return False
    shapes = []
    layer = model.get_submodule(model.feature_layer)
    handle = layer.register_forward_hook(lambda m, args, out: shapes.append(getattr(out, "shape", None)))
    try:
        with torch.no_grad():
            model(model.example_input(1).to(next(model.parameters()).device))
    finally:
        handle.remove()
    return bool(shapes) and shapes[-1] is not None and len(shapes[-1]) == 4


def attention_rollout(model, x: torch.Tensor) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): (B, h, w) over the patch grid.

    Each block's head-averaged attention, with the residual path as an identity, is multiplied
    through the blocks; the class token's row (or the mean of the patch rows, for mean pooling)
    says how much every patch reached the pooled representation.
    """
    with torch.no_grad():
        maps = model.attention_maps(x)  # depth x (B, heads, N+1, N+1)
    n = maps[0].shape[-1]
    eye = torch.eye(n, device=x.device)
    rollout = eye.expand(x.shape[0], n, n)
    for attention in maps:
        a = 0.5 * attention.mean(1) + 0.5 * eye  # (B, N+1, N+1)
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    pool = getattr(getattr(model, "config", None), "pool", "cls")
    patches = rollout[:, 0, 1:] if pool == "cls" else rollout[:, 1:, 1:].mean(1)  # (B, N)
    side = math.isqrt(n - 1)
    return patches.reshape(-1, side, side)


def occlusion_window(x: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sliding window and strides: about an eighth of each spatial side, moved by half of it."""
    sides = [max(1, s // 8) for s in x.shape[-2:]]
    strides = [max(1, s // 2) for s in sides]
    if x.dim() == 4:  # images: the window spans every channel
        return (x.shape[1], *sides), (x.shape[1], *strides)
    return tuple(sides), tuple(strides)
